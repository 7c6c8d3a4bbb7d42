//! `TokenCache`: one driver client per endpoint (the flavour detected from the environment,
//! or an endpoint given explicitly), all with one configuration, shared by credentials.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use imds_cache::{Config, Flavour, Identity, Resource, Stats};
use imds_cache_client::{Client, ClientConfig, Error, Observer, OwnedEndpoint, Share, SourceSpec};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::binding::{identity_of, Binding};
use crate::clock::FakeClock;
use crate::errors::to_pyerr;
use crate::{exit_gate, logging};

/// Where a client's tokens come from: detected (per flavour) or given.
#[derive(Clone, PartialEq, Eq)]
enum Source {
    Auto(Flavour),
    Explicit(OwnedEndpoint),
}

/// The cache's settings as Python names them, in seconds, with the Rust defaults: the one
/// list `DEFAULTS` (read by `imds_cache.TokenCache`'s signature) and `new` are made from.
pub(crate) fn defaults(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let c = ClientConfig::default();
    let k = &c.cache;
    let s = |ms: u64| ms as f64 / 1000.0;
    let d = PyDict::new(py);
    d.set_item("capacity", c.capacity)?;
    d.set_item("max_token_bytes", k.max_token_bytes)?;
    d.set_item("rate", k.rate)?;
    d.set_item("rate_window_s", s(k.rate_window_ms))?;
    d.set_item("in_flight", k.in_flight)?;
    d.set_item("deadline_s", c.deadline.as_secs_f64())?;
    d.set_item("connect_timeout_s", c.connect_timeout.as_secs_f64())?;
    d.set_item("attempt_timeout_s", c.attempt_timeout.as_secs_f64())?;
    d.set_item("backoff_s", s(k.backoff_initial_ms))?;
    d.set_item("gone_interval_s", s(k.gone_interval_ms))?;
    d.set_item("negative_ttl_s", s(k.negative_ttl_ms))?;
    d.set_item("refresh_margin_s", s(k.refresh_margin_ms))?;
    d.set_item("min_lifetime_s", s(k.min_lifetime_ms))?;
    d.set_item("eager_retry_s", s(k.eager_retry_ms))?;
    d.set_item("refresher", c.refresher)?;
    d.set_item("verify_client_id", k.verify_client_id)?;
    Ok(d)
}

/// Seconds (a Python float) as a duration; negative or non-finite values are refused.
pub(crate) fn seconds(name: &str, value: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| PyValueError::new_err(format!("{name} must be a non-negative number")))
}

fn millis(name: &str, value: f64) -> PyResult<u64> {
    Ok(seconds(name, value)?.as_millis() as u64)
}

/// A token cache shared by credentials.
#[pyclass(module = "imds_cache._imds_cache", frozen, weakref)]
pub(crate) struct TokenCache {
    config: ClientConfig,
    clients: Mutex<Vec<(Source, Arc<Client>)>>,
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
            Some(name) => Some(Flavour::from_name(name).ok_or_else(|| {
                let names: Vec<&str> = Flavour::ALL.iter().map(|f| f.name()).collect();
                PyValueError::new_err(format!(
                    "unknown flavour {name:?}: one of {}",
                    names.join(", ")
                ))
            })?),
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
            (None, None) => imds_cache_client::detect_flavour().map(Source::Auto),
        })
    }

    fn each_client(&self) -> Vec<Arc<Client>> {
        let clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients.iter().map(|(_, c)| c.clone()).collect()
    }
}

#[pymethods]
impl TokenCache {
    /// Every setting is required: `imds_cache.TokenCache` fills them from `DEFAULTS`.
    #[new]
    #[pyo3(signature = (*, capacity, max_token_bytes, rate, rate_window_s, in_flight, deadline_s,
        connect_timeout_s, attempt_timeout_s, backoff_s, gone_interval_s, negative_ttl_s, refresh_margin_s,
        min_lifetime_s, eager_retry_s, refresher, verify_client_id, arc_key_dir = None,
        share = "process", share_dir = None, clock = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        capacity: usize,
        max_token_bytes: usize,
        rate: u32,
        rate_window_s: f64,
        in_flight: u32,
        deadline_s: f64,
        connect_timeout_s: f64,
        attempt_timeout_s: f64,
        backoff_s: f64,
        gone_interval_s: f64,
        negative_ttl_s: f64,
        refresh_margin_s: f64,
        min_lifetime_s: f64,
        eager_retry_s: f64,
        refresher: bool,
        verify_client_id: bool,
        arc_key_dir: Option<&str>,
        share: &str,
        share_dir: Option<std::path::PathBuf>,
        clock: Option<PyRef<'_, FakeClock>>,
    ) -> PyResult<Self> {
        let share = match share {
            "process" => Share::Process,
            "host" => Share::Host,
            _ => {
                return Err(PyValueError::new_err(
                    "share must be \"process\" or \"host\"",
                ))
            }
        };
        if capacity == 0 {
            return Err(PyValueError::new_err("capacity must be at least 1"));
        }
        let mut cache = Config {
            max_token_bytes,
            rate,
            rate_window_ms: millis("rate_window_s", rate_window_s)?,
            in_flight,
            backoff_initial_ms: millis("backoff_s", backoff_s)?,
            gone_interval_ms: millis("gone_interval_s", gone_interval_s)?,
            negative_ttl_ms: millis("negative_ttl_s", negative_ttl_s)?,
            refresh_margin_ms: millis("refresh_margin_s", refresh_margin_s)?,
            min_lifetime_ms: millis("min_lifetime_s", min_lifetime_s)?,
            eager_retry_ms: millis("eager_retry_s", eager_retry_s)?,
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
                source: SourceSpec::Auto,
                deadline: seconds("deadline_s", deadline_s)?,
                connect_timeout: seconds("connect_timeout_s", connect_timeout_s)?,
                attempt_timeout: seconds("attempt_timeout_s", attempt_timeout_s)?,
                refresher,
                events: Some(Observer::new(logging::log_event)),
                clock: clock.map(|c| c.clock()).unwrap_or_default(),
                share,
                share_dir,
                ..ClientConfig::default()
            },
            clients: Mutex::new(Vec::new()),
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
        let kind = identity_of(kind, &value)?.kind();
        let source = Self::source(flavour, endpoint, secret, default_client_id)?;
        let client = match source {
            Ok(source) => match self.client(source) {
                Ok(c) => Ok(c),
                Err(Error::Config(e)) => return Err(PyValueError::new_err(format!("{e}"))),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        Ok(Binding::new(
            client,
            kind,
            value,
            self.config.cache.max_token_bytes,
            self.config.deadline,
        ))
    }

    /// The core's counters (`STATS_FIELDS`), summed over this cache's endpoints.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let mut total = Stats::default();
        for c in self.each_client() {
            total.add(&c.stats());
        }
        let d = PyDict::new(py);
        for (name, value) in total.fields() {
            d.set_item(name, value)?;
        }
        Ok(d)
    }

    /// Warms every (identity, resource) pair within the budget; `identities` are
    /// `(kind, value)` pairs. Returns `(ok, total, [(index, error)…])`; the GIL is released.
    #[pyo3(signature = (identities, resources, *, timeout_s = 90.0, flavour = None,
        endpoint = None, secret = None))]
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn prefetch(
        &self,
        py: Python<'_>,
        identities: Vec<(String, Option<String>)>,
        resources: Vec<String>,
        timeout_s: f64,
        flavour: Option<&str>,
        endpoint: Option<String>,
        secret: Option<String>,
    ) -> PyResult<(usize, usize, Vec<(usize, PyObject)>)> {
        let inside = exit_gate::enter_from_python()?;
        let deadline = Instant::now() + seconds("timeout_s", timeout_s)?;
        let _ = logging::read_log_gate(py);
        let source = Self::source(flavour, endpoint, secret, None)?;
        let values: Vec<(String, String)> = identities
            .into_iter()
            .map(|(k, v)| (k, v.unwrap_or_default()))
            .collect();
        let ids = values
            .iter()
            .map(|(k, v)| identity_of(k, v))
            .collect::<PyResult<Vec<Identity<'_>>>>()?;
        let res = resources
            .iter()
            .map(|r| Resource::from_scopes(&[r.as_str()]))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| PyValueError::new_err(format!("resource: {e}")))?;
        let client = source
            .and_then(|s| self.client(s))
            .map_err(|e| to_pyerr(py, e, None))?;
        // Each finished key checks the gate: a prefetch in a daemon thread parks at exit.
        let (report, errors) = exit_gate::allow_threads(py, &inside, || {
            client.prefetch(&ids, &res, deadline, |_| exit_gate::park_if_closed(&inside))
        });
        let errors = errors
            .into_iter()
            .map(|(i, e)| {
                let at = ids.get(i / res.len().max(1)).map(|id| (&*client, id));
                (i, to_pyerr(py, e, at).into_value(py).into_any())
            })
            .collect();
        Ok((report.ok, report.total, errors))
    }

    /// D12: in a child after `fork` (the driver's own `pthread_atfork` handler already did
    /// it; calling again is harmless).
    /// Now on this cache's clock, epoch seconds: the wall clock, or the `FakeClock` it was
    /// made with. The credentials' memo compares its refresh times with this.
    fn now_s(&self) -> f64 {
        self.config.clock.now_ms() as f64 / 1000.0
    }

    fn atfork_child(&self) {
        // A fork in the middle of `client()` leaves the mutex possibly locked by a thread
        // that is gone: never block here.
        if let Ok(clients) = self.clients.try_lock() {
            for (_, c) in clients.iter() {
                c.atfork_child();
            }
        }
    }

    /// Flavours of the endpoints this cache has clients for.
    fn flavours(&self) -> Vec<&'static str> {
        self.each_client()
            .iter()
            .map(|c| c.flavour().name())
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
