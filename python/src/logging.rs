//! The driver's events as records of `logging.getLogger("imds_cache")`, made on the driver's
//! threads and only when the logger is enabled for the event's level: with logging at
//! WARNING, requests and retries cost no GIL. Never a token: the events carry none.

use std::sync::atomic::{AtomicU64, Ordering};

use imds_cache::{Identity, IdentityKind, OutcomeClass};
use imds_cache_client::{now_ms, Event};
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::PyTuple;

use crate::exit_gate;

/// `logging.getLogger("imds_cache")`: loggers are never replaced, so one lookup does.
static LOGGER: GILOnceCell<Py<PyAny>> = GILOnceCell::new();

/// The lowest of DEBUG/INFO/WARNING the logger was last seen enabled for (low byte; 255 for
/// none) and when (epoch ms, above it): driver events below it are dropped without taking
/// the GIL. Re-read on each call into the cache and at most a second after the last look,
/// so a level set later takes effect soon. 0: never read.
static LOG_GATE: AtomicU64 = AtomicU64::new(0);

const DEBUG: u8 = 10;
const INFO: u8 = 20;
const WARNING: u8 = 30;

fn logger(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    LOGGER
        .get_or_try_init(py, || {
            Ok(py
                .import("logging")?
                .call_method1("getLogger", ("imds_cache",))?
                .unbind())
        })
        .map(|l| l.bind(py))
}

/// Reads the logger's levels into [`LOG_GATE`] (`isEnabledFor` honours `logging.disable`);
/// returns the lowest enabled one.
pub(crate) fn read_log_gate(py: Python<'_>) -> PyResult<u8> {
    let logger = logger(py)?;
    let mut lowest = 255u8;
    for level in [WARNING, INFO, DEBUG] {
        if logger.call_method1("isEnabledFor", (level,))?.is_truthy()? {
            lowest = level;
        }
    }
    LOG_GATE.store(now_ms() << 8 | u64::from(lowest), Ordering::Relaxed);
    Ok(lowest)
}

/// Whether an event of `level` may be logged, as far as the last look at the logger says.
fn log_gate_open(level: u8) -> bool {
    let gate = LOG_GATE.load(Ordering::Relaxed);
    gate == 0 || level >= gate as u8 || now_ms().saturating_sub(gate >> 8) > 1000
}

/// An identity for log records and error messages (selectors are not secrets).
pub(crate) fn describe(identity: &Identity<'_>) -> String {
    let kind = match identity.kind() {
        IdentityKind::System => return "system-assigned".into(),
        IdentityKind::ClientId => "client_id",
        IdentityKind::ObjectId => "object_id",
        IdentityKind::ResourceId => "resource_id",
    };
    format!("{kind}={}", identity.value())
}

/// The level an event is logged at: requests, tokens and refreshes DEBUG; retries and
/// throttling INFO (they are expected and handled); terminal failures WARNING, "no endpoint
/// here" INFO (a chained credential meets it on every machine outside Azure, and the
/// credential's own record of the failed call stays a WARNING).
fn event_level(event: &Event<'_>) -> u8 {
    match event {
        Event::Retry { .. } | Event::Throttled { .. } => INFO,
        Event::Failed { failure, .. } if failure.kind.class() == OutcomeClass::Unavailable => INFO,
        Event::Failed { .. } | Event::NotShared { .. } => WARNING,
        _ => DEBUG,
    }
}

/// The driver's observer: logs an event to `imds_cache` if the logger wants it.
pub(crate) fn log_event(event: &Event<'_>) {
    let level = event_level(event);
    if exit_gate::closed() || !log_gate_open(level) {
        return;
    }
    exit_gate::with_gil(|py| {
        // A failing handler is logging's business (`Handler.handleError`), not the cache's.
        let _ = log_in_python(py, event, level);
    });
}

fn log_in_python(py: Python<'_>, event: &Event<'_>, level: u8) -> PyResult<()> {
    if level < read_log_gate(py)? {
        return Ok(());
    }
    let logger = logger(py)?;
    let call = |format: &str, args: Bound<'_, PyAny>| -> PyResult<()> {
        let call = (level, format).into_pyobject(py)?.add(args)?;
        logger
            .getattr("log")?
            .call(call.downcast_into::<PyTuple>()?, None)?;
        Ok(())
    };
    let Some(key) = event.key() else {
        return match *event {
            Event::NotShared { reason } => call(
                "host sharing is off, this process keeps its own cache: %s",
                (reason,).into_pyobject(py)?.into_any(),
            ),
            _ => Ok(()),
        };
    };
    let who = describe(&key.identity);
    let resource = key.resource.as_str();
    let flavour = key.flavour.name();
    let secs = |at_ms: u64| at_ms.saturating_sub(now_ms()) as f64 / 1000.0;
    let renew = |refresh: bool| if refresh { "refresh " } else { "" };
    let (format, args): (&str, Bound<'_, PyAny>) = match *event {
        Event::Request {
            attempt, refresh, ..
        } => (
            "%srequest for %s, %s to %s (attempt %d)",
            (renew(refresh), who, resource, flavour, attempt)
                .into_pyobject(py)?
                .into_any(),
        ),
        Event::Token {
            expires_on_s,
            refresh,
            ..
        } => (
            "%stoken received for %s, %s: expires_on=%d",
            (renew(refresh), who, resource, expires_on_s)
                .into_pyobject(py)?
                .into_any(),
        ),
        Event::Retry {
            failure,
            retry_at_ms,
            refresh,
            ..
        } => (
            "%srequest for %s, %s failed: %s; retrying in %.1f s",
            (
                renew(refresh),
                who,
                resource,
                failure.to_string(),
                secs(retry_at_ms),
            )
                .into_pyobject(py)?
                .into_any(),
        ),
        Event::Failed {
            failure, refresh, ..
        } => (
            "%srequest for %s, %s failed: %s",
            (renew(refresh), who, resource, failure.to_string())
                .into_pyobject(py)?
                .into_any(),
        ),
        Event::Throttled { retry_at_ms, .. } => (
            "throttled: request for %s, %s waits for the %s request budget (up to %.1f s)",
            (who, resource, flavour, secs(retry_at_ms))
                .into_pyobject(py)?
                .into_any(),
        ),
        Event::Refresh { .. } => (
            "background refresh of %s, %s",
            (who, resource).into_pyobject(py)?.into_any(),
        ),
        _ => return Ok(()),
    };
    call(format, args)
}
