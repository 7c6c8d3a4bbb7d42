//! Shared state: configuration, identities, token cache, faults, throttle window, statistics.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::fault::{ActiveRule, Fault, FaultRule};
use crate::identity::Identity;
use crate::tls::TlsSetup;
use crate::{Config, Mode, Transport};

/// A snapshot of what the emulator saw.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    /// The emulator's clock (Unix seconds).
    pub now: u64,
    /// Seconds the clock was advanced by.
    pub clock_offset_secs: u64,
    /// Requests to non-control paths.
    pub requests: u64,
    /// Answers by status (`"200"`, `"429"`, …); faults that send no status count as
    /// `"reset"` and `"hang"`.
    pub statuses: BTreeMap<String, u64>,
    /// 429s sent by the throttle.
    pub throttled: u64,
    /// All 429s sent (throttle and faults).
    pub sent_429: u64,
    /// Requests that a fault rule applied to.
    pub faults_injected: u64,
    /// Tokens minted.
    pub tokens_minted: u64,
    /// Non-control requests in flight now.
    pub current_concurrency: u64,
    /// Most non-control requests in flight at once, from accept to the last byte written,
    /// throttled ones included (what the client sent).
    pub max_concurrency: u64,
    /// Most requests admitted by the throttle in flight at once.
    pub max_admitted_concurrency: u64,
    /// Most non-control request arrivals in any window of `window_ms` (throttled included).
    pub max_window_arrivals: u64,
    /// Most requests admitted in any window of `window_ms`.
    pub max_window_admitted: u64,
    /// TLS handshakes that failed: the client refused the certificate (a wrong thumbprint),
    /// spoke plain HTTP to the HTTPS port, or went away. Such connections send no request.
    pub tls_handshake_failures: u64,
    /// Per (identity, resource) counters, for requests whose identity was resolved.
    pub keys: Vec<KeyStats>,
}

impl Stats {
    /// Answers sent with this status.
    pub fn status(&self, status: u16) -> u64 {
        self.statuses.get(&status.to_string()).copied().unwrap_or(0)
    }

    /// The counters of one key (identity name such as `system` or `uai-3`, and resource).
    pub fn key(&self, identity: &str, resource: &str) -> Option<&KeyStats> {
        self.keys
            .iter()
            .find(|k| k.identity == identity && k.resource == resource)
    }
}

/// Counters of one (identity, resource) key.
#[derive(Clone, Debug, Default, Serialize)]
pub struct KeyStats {
    /// Identity name (`system`, `uai-N`).
    pub identity: String,
    /// The identity's client id.
    pub client_id: String,
    /// The resource as requested.
    pub resource: String,
    /// Requests seen for this key.
    pub requests: u64,
    /// Answers by status.
    pub statuses: BTreeMap<String, u64>,
    /// Most requests for this key in flight at once.
    pub max_concurrency: u64,
    /// Tokens minted for this key.
    pub tokens_minted: u64,
}

/// A token the emulator minted.
#[derive(Clone, Debug, Serialize)]
pub struct IssuedToken {
    /// Identity name (`system`, `uai-N`).
    pub identity: String,
    /// The identity's client id.
    pub client_id: String,
    /// The resource as requested (the `aud` claim).
    pub resource: String,
    /// The token.
    pub token: String,
    /// `iat` claim.
    pub iat: u64,
    /// `nbf` claim.
    pub nbf: u64,
    /// `exp` claim (`expires_on`).
    pub exp: u64,
    /// The fault it was minted for (`expired`, `oversized`), if any.
    pub fault: Option<String>,
}

/// A cached token.
#[derive(Clone, Debug)]
pub(crate) struct Cached {
    pub(crate) token: Arc<str>,
    pub(crate) nbf: u64,
    pub(crate) exp: u64,
}

pub(crate) type Key = (usize, String);

#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) offset: u64,
    pub(crate) faults: Vec<ActiveRule>,
    pub(crate) cache: HashMap<Key, Cached>,
    pub(crate) tokens: Vec<IssuedToken>,
    pub(crate) serial: u64,
    stats: Stats,
    keys: HashMap<Key, KeyStats>,
    key_in_flight: HashMap<Key, u64>,
    arrivals: VecDeque<Instant>,
    admitted: VecDeque<Instant>,
    admitted_in_flight: u64,
    pub(crate) arc_keys: Vec<(PathBuf, String)>,
}

impl State {
    pub(crate) fn set_faults(&mut self, faults: Vec<FaultRule>) {
        self.faults = faults
            .into_iter()
            .map(|rule| ActiveRule {
                rule,
                gone_until: None,
            })
            .collect();
    }

    pub(crate) fn add_fault(&mut self, rule: FaultRule) {
        self.faults.push(ActiveRule {
            rule,
            gone_until: None,
        });
    }

    pub(crate) fn reset_stats(&mut self) {
        self.stats = Stats::default();
        self.keys.clear();
        self.tokens.clear();
        self.arrivals.clear();
        self.admitted.clear();
    }

    pub(crate) fn reset_all(&mut self) {
        self.reset_stats();
        self.cache.clear();
        self.faults.clear();
        self.offset = 0;
    }

    pub(crate) fn count_status(&mut self, status: &str, key: Option<&Key>) {
        *self.stats.statuses.entry(status.to_string()).or_default() += 1;
        if status == "429" {
            self.stats.sent_429 += 1;
        }
        if let Some(k) = key {
            if let Some(ks) = self.keys.get_mut(k) {
                *ks.statuses.entry(status.to_string()).or_default() += 1;
            }
        }
    }

    pub(crate) fn count_tls_failure(&mut self) {
        self.stats.tls_handshake_failures += 1;
    }

    /// Takes the first fault rule matching (identity, resource), consuming one use.
    pub(crate) fn take_fault(
        &mut self,
        identity: Option<&Identity>,
        resource: Option<&str>,
    ) -> Option<Fault> {
        self.take_matching(identity, resource, |_| true)
    }

    /// Takes the first rule that applies to a request answered before any validation (only
    /// `unreachable_403` does: a proxy in front of the endpoint), consuming one use.
    pub(crate) fn take_proxy_fault(&mut self) -> Option<Fault> {
        self.take_matching(None, None, |f| matches!(f, Fault::Unreachable403))
    }

    fn take_matching(
        &mut self,
        identity: Option<&Identity>,
        resource: Option<&str>,
        applies: impl Fn(&Fault) -> bool,
    ) -> Option<Fault> {
        let now = Instant::now();
        // Drop gone windows that are over.
        self.faults
            .retain(|a| a.gone_until.map_or(true, |until| now < until));
        let idx = self.faults.iter().position(|a| {
            let r = &a.rule;
            let id_ok = match (&r.identity, identity) {
                (None, _) => true,
                (Some(s), Some(id)) => id.matches(s),
                (Some(_), None) => false,
            };
            let res_ok = match (&r.resource, resource) {
                (None, _) => true,
                (Some(s), Some(res)) => s == res,
                (Some(_), None) => false,
            };
            id_ok && res_ok && applies(&r.fault)
        })?;
        let active = &mut self.faults[idx];
        let fault = active.rule.fault.clone();
        if let Fault::Gone { window_ms } = fault {
            if active.gone_until.is_none() {
                active.gone_until = Some(now + Duration::from_millis(window_ms));
            }
        } else if let Some(c) = active.rule.count.as_mut() {
            *c = c.saturating_sub(1);
            if *c == 0 {
                self.faults.remove(idx);
            }
        }
        self.stats.faults_injected += 1;
        Some(fault)
    }

    pub(crate) fn log_token(&mut self, t: IssuedToken, key: &Key) {
        self.stats.tokens_minted += 1;
        if let Some(ks) = self.keys.get_mut(key) {
            ks.tokens_minted += 1;
        }
        self.tokens.push(t);
    }

    /// Registers a request for a resolved key; returns nothing, see `key_done`.
    pub(crate) fn key_start(&mut self, key: &Key, identity: &Identity) {
        let ks = self.keys.entry(key.clone()).or_insert_with(|| KeyStats {
            identity: identity.name.clone(),
            client_id: identity.client_id.clone(),
            resource: key.1.clone(),
            ..KeyStats::default()
        });
        ks.requests += 1;
        let f = self.key_in_flight.entry(key.clone()).or_default();
        *f += 1;
        ks.max_concurrency = ks.max_concurrency.max(*f);
    }

    pub(crate) fn key_done(&mut self, key: &Key) {
        if let Some(f) = self.key_in_flight.get_mut(key) {
            *f = f.saturating_sub(1);
            if *f == 0 {
                self.key_in_flight.remove(key);
            }
        }
    }
}

/// State shared by every thread.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) cfg: Config,
    pub(crate) identities: Vec<Identity>,
    by_client: HashMap<String, usize>,
    by_object: HashMap<String, usize>,
    by_resource: HashMap<String, usize>,
    pub(crate) arc_dir: PathBuf,
    created_arc_dir: bool,
    /// Base URL of the token listener (`http://…` or `https://…`).
    pub(crate) url: String,
    /// Base URL of the plain-HTTP control listener (the token listener's when that is plain).
    pub(crate) control_url: String,
    /// The certificate and thumbprints, in HTTPS modes and in Service Fabric mode.
    pub(crate) tls: Option<TlsSetup>,
    state: Mutex<State>,
    pub(crate) shutdown: AtomicBool,
    pub(crate) connections: Mutex<usize>,
    pub(crate) connections_cv: Condvar,
    /// In flight from accept (every connection, control ones until recognised).
    pub(crate) accepted: AtomicU64,
}

static ARC_DIRS: AtomicU64 = AtomicU64::new(0);

/// The sockets an emulator serves.
#[derive(Debug)]
pub(crate) struct Listeners {
    /// Token endpoint and control API (over TLS in HTTPS modes).
    pub(crate) main: TcpListener,
    /// Control API over plain HTTP, when `main` speaks TLS.
    pub(crate) control: Option<TcpListener>,
}

/// `scheme://127.0.0.1:PORT` for a bound address (an unspecified address becomes loopback).
pub(crate) fn base_url(scheme: &str, addr: std::net::SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("{scheme}://127.0.0.1:{}", addr.port())
    } else if addr.is_ipv6() {
        format!("{scheme}://[{}]:{}", addr.ip(), addr.port())
    } else {
        format!("{scheme}://{addr}")
    }
}

impl Shared {
    pub(crate) fn new(cfg: Config) -> io::Result<(Shared, Listeners)> {
        if cfg.rate == 0 || cfg.concurrency == 0 || cfg.window_ms == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "rate, concurrency and window must be positive",
            ));
        }
        let https = cfg.transport() == Transport::Https;
        let tls = if https || cfg.mode == Mode::ServiceFabric {
            Some(TlsSetup::new(https, cfg.wrong_thumbprint)?)
        } else {
            None
        };
        let listener = TcpListener::bind(cfg.bind)?;
        let url = base_url(if https { "https" } else { "http" }, listener.local_addr()?);
        let (control, control_url) = if https {
            let c = TcpListener::bind(std::net::SocketAddr::new(cfg.bind.ip(), 0))?;
            let u = base_url("http", c.local_addr()?);
            (Some(c), u)
        } else {
            (None, url.clone())
        };
        let identities: Vec<Identity> = (0..=cfg.identities).map(Identity::user_assigned).collect();
        let mut by_client = HashMap::new();
        let mut by_object = HashMap::new();
        let mut by_resource = HashMap::new();
        for id in &identities {
            if id.is_system() && !cfg.system_assigned {
                continue;
            }
            by_client.insert(id.client_id.to_ascii_lowercase(), id.index);
            by_object.insert(id.object_id.to_ascii_lowercase(), id.index);
            if !id.is_system() {
                by_resource.insert(id.resource_id.to_ascii_lowercase(), id.index);
            }
        }
        let (arc_dir, created_arc_dir) = match &cfg.arc_key_dir {
            Some(d) => {
                std::fs::create_dir_all(d)?;
                (std::path::absolute(d)?, false)
            }
            None if cfg.mode == Mode::Arc => {
                let d = std::env::temp_dir().join(format!(
                    "imds-emulator-arc-{}-{}",
                    std::process::id(),
                    ARC_DIRS.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&d)?;
                (d, true)
            }
            None => (PathBuf::new(), false),
        };
        let mut state = State::default();
        state.set_faults(cfg.faults.clone());
        Ok((
            Shared {
                cfg,
                identities,
                by_client,
                by_object,
                by_resource,
                arc_dir,
                created_arc_dir,
                url,
                control_url,
                tls,
                state: Mutex::new(state),
                shutdown: AtomicBool::new(false),
                connections: Mutex::new(0),
                connections_cv: Condvar::new(),
                accepted: AtomicU64::new(0),
            },
            Listeners {
                main: listener,
                control,
            },
        ))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn is_shutdown(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }

    pub(crate) fn begin_shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        self.connections_cv.notify_all();
    }

    pub(crate) fn cleanup(&self) {
        let keys = std::mem::take(&mut self.lock().arc_keys);
        for (path, _) in keys {
            let _ = std::fs::remove_file(path);
        }
        if self.created_arc_dir {
            let _ = std::fs::remove_dir(&self.arc_dir);
        }
    }

    pub(crate) fn now(&self) -> u64 {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        real + self.lock().offset
    }

    pub(crate) fn enabled_identities(&self) -> Vec<Identity> {
        self.identities
            .iter()
            .filter(|i| !i.is_system() || self.cfg.system_assigned)
            .cloned()
            .collect()
    }

    pub(crate) fn system_enabled(&self) -> bool {
        self.cfg.system_assigned
    }

    pub(crate) fn by_client_id(&self, s: &str) -> Option<&Identity> {
        self.by_client
            .get(&s.to_ascii_lowercase())
            .map(|&i| &self.identities[i])
    }

    pub(crate) fn by_object_id(&self, s: &str) -> Option<&Identity> {
        self.by_object
            .get(&s.to_ascii_lowercase())
            .map(|&i| &self.identities[i])
    }

    pub(crate) fn by_resource_id(&self, s: &str) -> Option<&Identity> {
        self.by_resource
            .get(&s.to_ascii_lowercase())
            .map(|&i| &self.identities[i])
    }

    /// Counts a non-control request and decides whether the throttle admits it.
    pub(crate) fn admit(&self, now: Instant) -> bool {
        let window = Duration::from_millis(self.cfg.window_ms);
        let mut st = self.lock();
        st.stats.requests += 1;
        let all = self.accepted.load(Ordering::SeqCst);
        st.stats.max_concurrency = st.stats.max_concurrency.max(all);
        while st
            .arrivals
            .front()
            .is_some_and(|&t| now.duration_since(t) >= window)
        {
            st.arrivals.pop_front();
        }
        while st
            .admitted
            .front()
            .is_some_and(|&t| now.duration_since(t) >= window)
        {
            st.admitted.pop_front();
        }
        st.arrivals.push_back(now);
        st.stats.max_window_arrivals = st.stats.max_window_arrivals.max(st.arrivals.len() as u64);
        let limit = u64::from(self.cfg.rate) + u64::from(self.cfg.slack);
        let ok = !self.cfg.throttle
            || ((st.admitted.len() as u64) < limit
                && st.admitted_in_flight < u64::from(self.cfg.concurrency));
        if ok {
            st.admitted.push_back(now);
            st.stats.max_window_admitted =
                st.stats.max_window_admitted.max(st.admitted.len() as u64);
            st.admitted_in_flight += 1;
            st.stats.max_admitted_concurrency =
                st.stats.max_admitted_concurrency.max(st.admitted_in_flight);
        } else {
            st.stats.throttled += 1;
        }
        ok
    }

    /// The last byte of an admitted request was written (or it was abandoned).
    pub(crate) fn admitted_done(&self) {
        let mut st = self.lock();
        st.admitted_in_flight = st.admitted_in_flight.saturating_sub(1);
    }

    pub(crate) fn stats(&self) -> Stats {
        let st = self.lock();
        let mut s = st.stats.clone();
        s.clock_offset_secs = st.offset;
        s.current_concurrency = self.accepted.load(Ordering::SeqCst);
        let mut keys: Vec<(&Key, &KeyStats)> = st.keys.iter().collect();
        keys.sort_by(|a, b| a.0.cmp(b.0));
        s.keys = keys.into_iter().map(|(_, v)| v.clone()).collect();
        drop(st);
        s.now = self.now();
        s
    }
}

/// Environment variables that point SDKs at the emulator.
pub(crate) fn env_hints(shared: &Shared) -> Vec<(String, String)> {
    let url = shared.url.as_str();
    let token_url = format!("{url}{}", shared.cfg.mode.token_path());
    let secret = shared.cfg.secret.clone();
    let v = |k: &str, v: String| (k.to_string(), v);
    let system_client = shared.identities[0].client_id.clone();
    match shared.cfg.mode {
        Mode::Imds => vec![v("AZURE_POD_IDENTITY_AUTHORITY_HOST", url.to_string())],
        Mode::AppService2019 => vec![
            v("IDENTITY_ENDPOINT", token_url.to_string()),
            v("IDENTITY_HEADER", secret),
        ],
        Mode::Msi2017 => vec![
            v("MSI_ENDPOINT", token_url.to_string()),
            v("MSI_SECRET", secret),
        ],
        Mode::AzureMl => vec![
            v("MSI_ENDPOINT", token_url.to_string()),
            v("MSI_SECRET", secret),
            v("DEFAULT_IDENTITY_CLIENT_ID", system_client),
        ],
        Mode::CloudShell => vec![v("MSI_ENDPOINT", token_url.to_string())],
        Mode::Arc => vec![
            v("IDENTITY_ENDPOINT", token_url.to_string()),
            v("IMDS_ENDPOINT", url.to_string()),
        ],
        Mode::VmExt => vec![v("MSI_ENDPOINT", token_url.to_string())],
        Mode::ServiceFabric => vec![
            v("IDENTITY_ENDPOINT", token_url.to_string()),
            v("IDENTITY_HEADER", secret),
            v(
                "IDENTITY_SERVER_THUMBPRINT",
                shared
                    .tls
                    .as_ref()
                    .map(|t| t.advertised.clone())
                    .unwrap_or_default(),
            ),
        ],
    }
}
