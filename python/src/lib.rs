//! `imds_cache._imds_cache`: the native module of the Python wheel, a thin pyo3 layer over
//! the std driver (`imds-cache-ffi`). The public Python API lives in the `imds_cache`
//! package, which re-exports what it needs from here.
//!
//! Waiting never holds the GIL. Both paths hand a miss to the driver's worker pool: a blocking
//! call waits for the answer inside `allow_threads`, in slices between which signal handlers
//! run (Ctrl-C interrupts it); the asyncio path's callback takes the GIL only to schedule the
//! result on the event loop with `loop.call_soon_threadsafe`.
//!
//! The driver's events (requests, retries, throttling, refreshes) go to
//! `logging.getLogger("imds_cache")`, taking the GIL on the driver's thread only when the
//! logger is enabled for the event's level. Never a token: the events carry none.

mod exit_gate;

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use imds_cache::{
    Config, Failure, FailureKind, Flavour, Identity, IdentityKind, OutcomeClass, Resource, Stats,
};
use imds_cache_ffi::{
    Callback, Client, ClientConfig, Error, Event, Observer, OwnedEndpoint, SourceSpec,
};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyDict, PyString, PyTuple, PyType};
use zeroize::Zeroize;

/// The Python exception classes, defined in `imds_cache._errors`.
static UNAVAILABLE: GILOnceCell<Py<PyType>> = GILOnceCell::new();
static FAILED: GILOnceCell<Py<PyType>> = GILOnceCell::new();

thread_local! {
    /// Where a token lands before it becomes a Python `str`; wiped after each use.
    static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

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

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

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
fn read_log_gate(py: Python<'_>) -> PyResult<u8> {
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

/// An identity for log records, as `_common.describe` writes it (selectors are not secrets).
fn describe(identity: &Identity<'_>) -> String {
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
        Event::Failed { .. } => WARNING,
        _ => DEBUG,
    }
}

/// The driver's observer: logs an event to `imds_cache` if the logger wants it.
fn log_event(event: &Event<'_>) {
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
    let key = event.key();
    let who = describe(&key.identity);
    let resource = key.resource.as_str();
    let flavour = flavour_name(key.flavour);
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
            expires_on,
            refresh,
            ..
        } => (
            "%stoken received for %s, %s: expires_on=%d",
            (renew(refresh), who, resource, expires_on)
                .into_pyobject(py)?
                .into_any(),
        ),
        Event::Retry {
            failure,
            retry_at,
            refresh,
            ..
        } => (
            "%srequest for %s, %s failed: %s; retrying in %.1f s",
            (
                renew(refresh),
                who,
                resource,
                failure.to_string(),
                secs(retry_at),
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
        Event::Throttled { retry_at, .. } => (
            "throttled: request for %s, %s waits for the %s request budget (up to %.1f s)",
            (who, resource, flavour, secs(retry_at))
                .into_pyobject(py)?
                .into_any(),
        ),
        Event::Refresh { .. } => (
            "background refresh of %s, %s",
            (who, resource).into_pyobject(py)?.into_any(),
        ),
        _ => return Ok(()),
    };
    let call = (level, format).into_pyobject(py)?.add(args)?;
    logger
        .getattr("log")?
        .call(call.downcast_into::<PyTuple>()?, None)?;
    Ok(())
}

/// The Python names of the flavours (`flavour=` of the credential, `Binding.flavour`).
const FLAVOURS: [(&str, Flavour); 7] = [
    ("imds", Flavour::Imds),
    ("app_service_2019", Flavour::AppService2019),
    ("msi_2017", Flavour::Msi2017),
    ("arc", Flavour::Arc),
    ("cloud_shell", Flavour::CloudShell),
    ("service_fabric", Flavour::ServiceFabric),
    ("vm_extension", Flavour::VmExtension),
];

fn flavour_name(f: Flavour) -> &'static str {
    FLAVOURS
        .iter()
        .find(|(_, g)| *g == f)
        .map_or("unknown", |(n, _)| n)
}

/// Where a client's tokens come from: detected (per flavour) or given.
#[derive(Clone, PartialEq, Eq)]
enum Source {
    Auto(Flavour),
    Explicit(OwnedEndpoint),
}

/// The snake_case name of a failure kind, used as the error `.code` when the endpoint sent
/// none.
fn kind_code(kind: FailureKind) -> String {
    let mut out = String::new();
    for (i, c) in format!("{kind:?}").chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The Python exception for a driver error: `CredentialUnavailableError` when there is no
/// managed identity to be had here (D11, an unassigned identity), `ManagedIdentityError`
/// for the rest, `ValueError` for malformed input.
fn to_pyerr(py: Python<'_>, e: Error, flavour: Flavour) -> PyErr {
    let message = format!("ManagedIdentityCredential: {e}");
    let (unavailable, code, description, status): (bool, String, String, Option<u16>) = match &e {
        Error::Unavailable(why) => (true, "unavailable".into(), (*why).into(), None),
        Error::Unsupported(what) => (true, "unsupported".into(), (*what).into(), None),
        Error::Failed { failure, detail } => {
            let Failure { kind, status } = *failure;
            // IMDS answers 400 for an identity that is not assigned here (as azure-identity
            // reads it); Service Fabric 404s.
            let not_assigned = (flavour == Flavour::Imds && status == 400)
                || kind == FailureKind::IdentityNotFound;
            let code = if detail.code.is_empty() {
                kind_code(kind)
            } else {
                detail.code.to_string()
            };
            let description = if detail.description.is_empty() {
                kind.as_str().to_string()
            } else {
                detail.description.to_string()
            };
            (
                not_assigned,
                code,
                description,
                (status != 0).then_some(status),
            )
        }
        Error::Deadline { last } => (
            false,
            "deadline".into(),
            match last {
                Some(f) => format!("deadline passed; last failure: {f}"),
                None => "deadline passed".into(),
            },
            last.and_then(|f| (f.status != 0).then_some(f.status)),
        ),
        Error::Identity(i) => return PyValueError::new_err(format!("identity: {i}")),
        Error::Resource(r) => return PyValueError::new_err(format!("scope: {r}")),
        Error::CacheFull => (false, "cache_full".into(), e.to_string(), None),
        Error::BufferTooSmall { .. } => (false, "buffer_too_small".into(), e.to_string(), None),
        Error::Endpoint(_) => (false, "endpoint".into(), e.to_string(), None),
        Error::Request(_) => (false, "request".into(), e.to_string(), None),
        Error::Config(_) => (false, "config".into(), e.to_string(), None),
        _ => (false, "error".into(), e.to_string(), None),
    };
    let cell = if unavailable { &UNAVAILABLE } else { &FAILED };
    let name = if unavailable {
        "CredentialUnavailableError"
    } else {
        "ManagedIdentityError"
    };
    let made = cell.import(py, "imds_cache._errors", name).and_then(|cls| {
        let kwargs = PyDict::new(py);
        kwargs.set_item("code", code)?;
        kwargs.set_item("description", description)?;
        kwargs.set_item("status", status)?;
        cls.call((message,), Some(&kwargs))
    });
    match made {
        Ok(value) => PyErr::from_value(value),
        Err(err) => err,
    }
}

/// The token in `buf[..len]` as a Python `str`; the buffer is wiped.
fn take_token<'py>(py: Python<'py>, buf: &mut [u8], len: usize) -> PyResult<Bound<'py, PyString>> {
    let text = std::str::from_utf8(&buf[..len])
        .map(|t| PyString::new(py, t))
        .map_err(|_| PyRuntimeError::new_err("the token is not UTF-8"));
    buf[..len].zeroize();
    text
}

/// Seconds (a Python float) as a duration; negative or non-finite values are refused.
fn seconds(name: &str, value: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| PyValueError::new_err(format!("{name} must be a non-negative number")))
}

fn millis(name: &str, value: f64) -> PyResult<u64> {
    Ok(seconds(name, value)?.as_millis() as u64)
}

/// A token cache shared by credentials: one driver client per endpoint (the flavour
/// detected from the environment, or an endpoint given explicitly), all with this
/// configuration.
#[pyclass(module = "imds_cache._imds_cache", frozen, weakref)]
struct TokenCache {
    config: ClientConfig,
    clients: std::sync::Mutex<Vec<(Source, Arc<Client>)>>,
}

impl TokenCache {
    fn client(&self, source: Source) -> Result<Arc<Client>, Error> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, c)) = clients.iter().find(|(s, _)| *s == source) {
            return Ok(c.clone());
        }
        let spec = match &source {
            Source::Auto(_) => SourceSpec::Auto,
            Source::Explicit(e) => SourceSpec::Explicit(e.clone()),
        };
        let client = Arc::new(Client::with_config(ClientConfig {
            source: spec,
            ..self.config.clone()
        })?);
        // The driver detected again; file the client under what it found.
        let source = match source {
            Source::Auto(_) => Source::Auto(client.flavour()),
            s => s,
        };
        clients.push((source, client.clone()));
        Ok(client)
    }

    fn source(
        flavour: Option<&str>,
        endpoint: Option<String>,
        secret: Option<String>,
        default_client_id: Option<String>,
    ) -> PyResult<Result<Source, Error>> {
        let named = match flavour {
            None => None,
            Some(name) => Some(
                FLAVOURS
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, f)| *f)
                    .ok_or_else(|| {
                        PyValueError::new_err(format!(
                            "unknown flavour {name:?}: one of {}",
                            FLAVOURS.map(|(n, _)| n).join(", ")
                        ))
                    })?,
            ),
        };
        Ok(match (endpoint, named) {
            (Some(url), flavour) => Ok(Source::Explicit(OwnedEndpoint {
                flavour: flavour.unwrap_or(Flavour::Imds),
                url,
                secret,
                default_client_id,
            })),
            (None, Some(Flavour::VmExtension)) => Ok(Source::Explicit(OwnedEndpoint {
                flavour: Flavour::VmExtension,
                url: String::new(),
                secret: None,
                default_client_id: None,
            })),
            (None, Some(_)) => {
                return Err(PyValueError::new_err(
                    "flavour= needs endpoint= (only vm_extension has a fixed address)",
                ))
            }
            (None, None) => imds_cache_ffi::detect_flavour().map(Source::Auto),
        })
    }
}

fn stats_dict<'py>(py: Python<'py>, s: &Stats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in [
        ("hits", s.hits),
        ("misses", s.misses),
        ("fetches", s.fetches),
        ("coalesced", s.coalesced),
        ("refreshes", s.refreshes),
        ("tokens", s.tokens),
        ("failures_retry", s.failures_retry),
        ("failures_terminal", s.failures_terminal),
        ("failures_unavailable", s.failures_unavailable),
        ("evictions", s.evictions),
        ("throttled", s.throttled),
        ("stale_tickets", s.stale_tickets),
        ("lease_lapses", s.lease_lapses),
    ] {
        d.set_item(k, v)?;
    }
    Ok(d)
}

fn add(a: &mut Stats, b: &Stats) {
    a.hits += b.hits;
    a.misses += b.misses;
    a.fetches += b.fetches;
    a.coalesced += b.coalesced;
    a.refreshes += b.refreshes;
    a.tokens += b.tokens;
    a.failures_retry += b.failures_retry;
    a.failures_terminal += b.failures_terminal;
    a.failures_unavailable += b.failures_unavailable;
    a.evictions += b.evictions;
    a.throttled += b.throttled;
    a.stale_tickets += b.stale_tickets;
    a.lease_lapses += b.lease_lapses;
}

/// An identity selector as Python gives it: kind name and value.
fn identity_of<'a>(kind: &str, value: &'a str) -> PyResult<Identity<'a>> {
    let identity = match kind {
        "system" => Ok(Identity::SYSTEM),
        "client_id" => Identity::client_id(value),
        "object_id" => Identity::object_id(value),
        "resource_id" => Identity::resource_id(value),
        other => {
            return Err(PyValueError::new_err(format!(
                "unknown identity kind {other:?}"
            )))
        }
    };
    identity.map_err(|e| PyValueError::new_err(format!("{kind}: {e}")))
}

#[pymethods]
impl TokenCache {
    #[new]
    #[pyo3(signature = (*, capacity = 4096, max_token_bytes = 16384, rate = 20, rate_window = 1.0,
        in_flight = 5, deadline = 90.0, connect_timeout = 1.0, attempt_timeout = 10.0,
        backoff = 1.0, gone_interval = 10.0, negative_ttl = 30.0, refresh_margin = 300.0,
        min_lifetime = 60.0, eager_retry = 30.0, refresher = true, verify_client_id = true, arc_key_dir = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        capacity: usize,
        max_token_bytes: usize,
        rate: u32,
        rate_window: f64,
        in_flight: u32,
        deadline: f64,
        connect_timeout: f64,
        attempt_timeout: f64,
        backoff: f64,
        gone_interval: f64,
        negative_ttl: f64,
        refresh_margin: f64,
        min_lifetime: f64,
        eager_retry: f64,
        refresher: bool,
        verify_client_id: bool,
        arc_key_dir: Option<&str>,
    ) -> PyResult<Self> {
        if capacity == 0 {
            return Err(PyValueError::new_err("capacity must be at least 1"));
        }
        let mut cache = Config {
            max_token_bytes,
            rate,
            rate_window_ms: millis("rate_window", rate_window)?,
            in_flight,
            backoff_initial_ms: millis("backoff", backoff)?,
            gone_interval_ms: millis("gone_interval", gone_interval)?,
            negative_ttl_ms: millis("negative_ttl", negative_ttl)?,
            refresh_margin_ms: millis("refresh_margin", refresh_margin)?,
            min_lifetime_ms: millis("min_lifetime", min_lifetime)?,
            eager_retry_ms: millis("eager_retry", eager_retry)?,
            verify_client_id,
            ..Config::DEFAULT
        };
        if let Some(dir) = arc_key_dir {
            cache
                .arc_key_dir
                .push_str(dir)
                .map_err(|_| PyValueError::new_err("arc_key_dir is too long"))?;
        }
        cache
            .validate()
            .map_err(|e| PyValueError::new_err(format!("{e}")))?;
        Ok(Self {
            config: ClientConfig {
                cache,
                capacity,
                // A key of up to ~600 bytes plus a token: tokens are 1.4–2 KB today.
                bytes_per_entry: 2560,
                source: SourceSpec::Auto,
                deadline: seconds("deadline", deadline)?,
                connect_timeout: seconds("connect_timeout", connect_timeout)?,
                attempt_timeout: seconds("attempt_timeout", attempt_timeout)?,
                refresher,
                events: Some(Observer::new(log_event)),
            },
            clients: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// A binding of one identity to this cache, at the detected or the given endpoint.
    #[pyo3(signature = (kind, value, *, flavour = None, endpoint = None, secret = None,
        default_client_id = None))]
    fn bind(
        &self,
        kind: &str,
        value: Option<String>,
        flavour: Option<&str>,
        endpoint: Option<String>,
        secret: Option<String>,
        default_client_id: Option<String>,
    ) -> PyResult<Binding> {
        let value = value.unwrap_or_default();
        let identity = identity_of(kind, &value)?;
        let kind = identity.kind();
        let source = Self::source(flavour, endpoint, secret, default_client_id)?;
        let client = match source {
            Ok(source) => match self.client(source) {
                Ok(c) => Ok(c),
                Err(Error::Config(e)) => return Err(PyValueError::new_err(format!("{e}"))),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        Ok(Binding {
            client,
            kind,
            value,
            max_token_bytes: self.config.cache.max_token_bytes,
            deadline: self.config.deadline,
        })
    }

    /// The core's counters, summed over this cache's endpoints.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let mut total = Stats::default();
        for (_, c) in self
            .clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            add(&mut total, &c.stats());
        }
        stats_dict(py, &total)
    }

    /// Warms every (identity, resource) pair within the budget; `identities` are
    /// `(kind, value)` pairs. Returns `(ok, total, [(index, error)…])`; the GIL is released.
    #[pyo3(signature = (identities, resources, *, timeout = 90.0, flavour = None,
        endpoint = None, secret = None))]
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn prefetch(
        &self,
        py: Python<'_>,
        identities: Vec<(String, Option<String>)>,
        resources: Vec<String>,
        timeout: f64,
        flavour: Option<&str>,
        endpoint: Option<String>,
        secret: Option<String>,
    ) -> PyResult<(usize, usize, Vec<(usize, PyObject)>)> {
        let inside = exit_gate::enter_from_python()?;
        let deadline = Instant::now() + seconds("timeout", timeout)?;
        let _ = read_log_gate(py);
        let source = Self::source(flavour, endpoint, secret, None)?;
        let values: Vec<(String, String)> = identities
            .into_iter()
            .map(|(k, v)| (k, v.unwrap_or_default()))
            .collect();
        let ids = values
            .iter()
            .map(|(k, v)| identity_of(k, v))
            .collect::<PyResult<Vec<_>>>()?;
        let res = resources
            .iter()
            .map(|r| Resource::from_scopes(&[r.as_str()]))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| PyValueError::new_err(format!("resource: {e}")))?;
        let client = source
            .and_then(|s| self.client(s))
            .map_err(|e| to_pyerr(py, e, Flavour::Imds))?;
        let flavour = client.flavour();
        // Each finished key checks the gate: a prefetch in a daemon thread parks at exit.
        let (report, errors) = exit_gate::allow_threads(py, &inside, || {
            client.prefetch(&ids, &res, deadline, |_| exit_gate::park_if_closed(&inside))
        });
        let errors = errors
            .into_iter()
            .map(|(i, e)| (i, to_pyerr(py, e, flavour).into_value(py).into_any()))
            .collect();
        Ok((report.ok, report.total, errors))
    }

    /// D12: in a child after `fork` (the driver's own `pthread_atfork` handler already did
    /// it; calling again is harmless).
    fn atfork_child(&self) {
        // A fork in the middle of `client()` leaves the mutex poisoned-free but possibly
        // locked by a thread that is gone: never block here.
        if let Ok(clients) = self.clients.try_lock() {
            for (_, c) in clients.iter() {
                c.atfork_child();
            }
        }
    }

    /// Flavours of the endpoints this cache has clients for.
    fn flavours(&self) -> Vec<&'static str> {
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(_, c)| flavour_name(c.flavour()))
            .collect()
    }
}

impl Drop for TokenCache {
    fn drop(&mut self) {
        let clients = std::mem::take(self.clients.get_mut().unwrap_or_else(|p| p.into_inner()));
        if !clients.is_empty() {
            // The last client of an endpoint joins its refresher, which may wait for the GIL.
            exit_gate::drop_released(clients);
        }
    }
}

/// One identity at one endpoint of a cache: what a credential holds.
#[pyclass(module = "imds_cache._imds_cache", frozen)]
struct Binding {
    /// The driver client, or why there is none (D11: AKS workload identity).
    client: Result<Arc<Client>, Error>,
    kind: IdentityKind,
    value: String,
    max_token_bytes: usize,
    /// The cache's overall deadline, for waits on the worker pool.
    deadline: Duration,
}

impl Binding {
    fn parts<'s>(
        &'s self,
        py: Python<'_>,
        scope: &'s str,
    ) -> PyResult<(&'s Arc<Client>, Identity<'s>, Resource<'s>)> {
        let client = self
            .client
            .as_ref()
            .map_err(|e| to_pyerr(py, e.clone(), Flavour::Imds))?;
        let identity = Identity::new(self.kind, &self.value)
            .map_err(|e| PyValueError::new_err(format!("identity: {e}")))?;
        let resource = Resource::from_scopes(&[scope])
            .map_err(|e| PyValueError::new_err(format!("scope: {e}")))?;
        Ok((client, identity, resource))
    }

    /// The first step of both paths: `lookup` (a `get_token_or_notify`) runs on this thread's
    /// token buffer; a hit becomes `(token, expires_on)` and the buffer is wiped, `None` means
    /// the notify callback will answer.
    fn hit_or_notify<'py>(
        &self,
        py: Python<'py>,
        flavour: Flavour,
        lookup: impl FnOnce(&mut [u8]) -> Result<Option<(usize, u64)>, Error>,
    ) -> PyResult<Option<(Bound<'py, PyString>, u64)>> {
        BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            if buf.len() < self.max_token_bytes {
                buf.resize(self.max_token_bytes, 0);
            }
            match lookup(&mut buf[..]) {
                Ok(Some((len, expires_on))) => {
                    Ok(Some((take_token(py, &mut buf, len)?, expires_on)))
                }
                Ok(None) => Ok(None),
                Err(e) => Err(to_pyerr(py, e, flavour)),
            }
        })
    }
}

#[pymethods]
impl Binding {
    /// The token for `scope` and its expiry (epoch seconds); `bypass` drops the cached token
    /// first (a claims challenge). A hit returns at once. A miss goes to the driver's worker
    /// pool and this thread waits for its answer with the GIL released, in slices of 100 ms
    /// between which Python's signal handlers run: Ctrl-C raises `KeyboardInterrupt` here at
    /// once, while the fetch goes on and fills the cache for the next call.
    #[pyo3(signature = (scope, bypass = false))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        scope: PyBackedStr,
        bypass: bool,
    ) -> PyResult<(Bound<'py, PyString>, u64)> {
        let inside = exit_gate::enter_from_python()?;
        let (client, identity, resource) = self.parts(py, &scope)?;
        let _ = read_log_gate(py);
        let deadline = Instant::now() + self.deadline;
        let (tx, rx) = mpsc::sync_channel(1);
        let notify: Callback = Box::new(move |result| {
            // Nobody waits any more (interrupted): the copy is wiped, the cache keeps its own.
            if let Err(mpsc::SendError(Ok((mut token, _)))) = tx.send(result) {
                token.zeroize();
            }
        });
        let hit = self.hit_or_notify(py, client.flavour(), |out| {
            exit_gate::allow_threads(py, &inside, || {
                if bypass {
                    client.invalidate(&identity, &resource);
                }
                client.get_token_or_notify(&identity, &resource, out, deadline, notify)
            })
        })?;
        if let Some(hit) = hit {
            return Ok(hit);
        }
        let mut rx = rx;
        loop {
            let (back, got) = exit_gate::allow_threads(py, &inside, move || {
                let got = rx.recv_timeout(Duration::from_millis(100));
                (rx, got)
            });
            rx = back;
            match got {
                Ok(Ok((mut token, expires_on))) => {
                    let len = token.len();
                    return Ok((take_token(py, &mut token, len)?, expires_on));
                }
                Ok(Err(e)) => return Err(to_pyerr(py, e, client.flavour())),
                Err(mpsc::RecvTimeoutError::Timeout) => py.check_signals()?,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(PyRuntimeError::new_err("the driver dropped the call"))
                }
            }
        }
    }

    /// The asyncio path: a hit returns `(token, expires_on)` at once; otherwise `None`, and
    /// a driver worker later calls `call_soon_threadsafe(done, (token, expires_on), None)` or
    /// `call_soon_threadsafe(done, None, error)` (no thread per call).
    #[pyo3(signature = (scope, bypass, call_soon_threadsafe, done))]
    fn get_or_notify<'py>(
        &self,
        py: Python<'py>,
        scope: PyBackedStr,
        bypass: bool,
        call_soon_threadsafe: PyObject,
        done: PyObject,
    ) -> PyResult<Option<(Bound<'py, PyString>, u64)>> {
        let (client, identity, resource) = self.parts(py, &scope)?;
        let _ = read_log_gate(py);
        let flavour = client.flavour();
        let deadline = Instant::now() + self.deadline;
        if bypass {
            client.invalidate(&identity, &resource);
        }
        let notify: Callback = Box::new(move |result| {
            // At exit nobody awaits the answer: the token copy is wiped, the cache keeps its own.
            let mut result = Some(result);
            exit_gate::with_gil(|py| {
                let Some(result) = result.take() else { return };
                let (value, error) = match result {
                    Ok((mut token, expires_on)) => {
                        let len = token.len();
                        let value = take_token(py, &mut token, len)
                            .map(|t| (t, expires_on).into_pyobject(py).map(|v| v.into_any()));
                        match value {
                            Ok(Ok(v)) => (v, py.None().into_bound(py)),
                            Ok(Err(e)) | Err(e) => (
                                py.None().into_bound(py),
                                e.into_value(py).into_bound(py).into_any(),
                            ),
                        }
                    }
                    Err(e) => (
                        py.None().into_bound(py),
                        to_pyerr(py, e, flavour)
                            .into_value(py)
                            .into_bound(py)
                            .into_any(),
                    ),
                };
                // A closed loop cannot take the answer: nobody is waiting any more.
                let _ = call_soon_threadsafe.call1(py, (done, value, error));
            });
            if let Some(Ok((mut token, _))) = result {
                token.zeroize();
            }
        });
        self.hit_or_notify(py, flavour, |out| {
            client.get_token_or_notify(&identity, &resource, out, deadline, notify)
        })
    }

    /// When the cached token of `scope` is due for refresh (epoch seconds, with the cache's
    /// per-key jitter), or `None` when none is held.
    fn refresh_on(&self, py: Python<'_>, scope: PyBackedStr) -> PyResult<Option<u64>> {
        let (client, identity, resource) = self.parts(py, &scope)?;
        Ok(client.refresh_on(&identity, &resource))
    }

    /// Drops the cached token of `scope` (after a downstream 401); `True` if there was one.
    fn invalidate(&self, py: Python<'_>, scope: PyBackedStr) -> PyResult<bool> {
        let (client, identity, resource) = self.parts(py, &scope)?;
        Ok(client.invalidate(&identity, &resource))
    }

    /// The endpoint flavour (`None` when no endpoint can serve here).
    #[getter]
    fn flavour(&self) -> Option<&'static str> {
        self.client.as_ref().ok().map(|c| flavour_name(c.flavour()))
    }
}

impl Drop for Binding {
    fn drop(&mut self) {
        let client = std::mem::replace(&mut self.client, Err(Error::CacheFull));
        // Only the last holder's drop joins the refresher.
        if let Ok(client) = client {
            if Arc::strong_count(&client) == 1 {
                exit_gate::drop_released(client);
            }
        }
    }
}

/// The module: `TokenCache`, `Binding`, `__version__` (the Cargo version), `_close_gate`
/// (registered with `atexit`, see [`exit_gate`]).
#[pymodule]
fn _imds_cache(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<TokenCache>()?;
    m.add_class::<Binding>()?;
    m.add_function(wrap_pyfunction!(exit_gate::_close_gate, m)?)?;
    let close = m.getattr("_close_gate")?;
    m.py()
        .import("atexit")?
        .call_method1("register", (close,))?;
    Ok(())
}
