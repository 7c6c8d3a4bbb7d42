//! [`Client`]: the blocking client and its public methods. The work is done by the modules
//! around it: the shared state and D5's waits (`shared`), one fetch (`fetch`), the worker
//! pool (`pool`), the refresher (`refresher`) and fork handling (`fork`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use imds_cache::{Flavour, Identity, Key, NewError, Resource, Stats, TokenCache, Word};
use parking_lot::{Condvar, Mutex};
use zeroize::Zeroize;

use crate::config::ClientConfig;
use crate::config::Share;
use crate::future::GetToken;
use crate::pool::{Callback, Pool, Reply, Warmed};
use crate::shared::{Cache, Deadline, Shared, State, TableWords};

/// A host table and the host's budgets.
#[cfg(target_os = "linux")]
type HostParts = (Arc<crate::host::table::HostTable>, crate::host::Budgets);
#[cfg(not(target_os = "linux"))]
type HostParts = std::convert::Infallible;
use crate::source::{self, SourceSpec};
use crate::Error;

/// The blocking client. Use it from many threads (`&self`); share it in an `Arc`.
pub struct Client {
    pub(crate) shared: Arc<Shared>,
}

/// Shows the flavour, the configuration (secrets redacted) and the counters; never a token.
impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("flavour", &self.shared.flavour)
            .field("config", &self.shared.config)
            .field("stats", &self.stats())
            .finish()
    }
}

/// What `prefetch` reports as it goes and at the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Keys finished (with a token or an error).
    pub done: usize,
    /// Keys with a token.
    pub ok: usize,
    /// Keys asked for.
    pub total: usize,
}

impl Client {
    /// A client with the default configuration, its endpoint detected from the environment.
    pub fn new() -> Result<Self, Error> {
        Self::with_config(ClientConfig::default())
    }

    /// A client with `config`.
    pub fn with_config(config: ClientConfig) -> Result<Self, Error> {
        let (flavour, explicit) = match &config.source {
            SourceSpec::Auto => (source::detect_flavour()?, None),
            SourceSpec::Explicit(e) => (e.flavour, Some(e.clone())),
        };
        let layout = imds_cache::layout(config.capacity, config.bytes_per_entry)
            .map_err(|e| Error::Config(NewError::Storage(e)))?;
        let share = config.share.resolve(|name| std::env::var(name).ok());
        // The canonical URL (the one requests go to, whose budget a fetch takes), so that an
        // authority, a token URL and the environment's setting name one table and one budget.
        let owned = match &explicit {
            Some(e) => Ok(e.clone()),
            None => source::from_env(flavour, &source::process_env),
        };
        let endpoint = owned
            .ok()
            .and_then(|e| e.endpoint().ok().map(|e| e.to_string()))
            .unwrap_or_else(|| flavour.name().to_string());
        let (cache, host, refused) = Self::table(&config, layout, share, &endpoint)?;
        let reader = cache.reader();
        #[cfg(target_os = "linux")]
        let (table, budgets) = match host {
            Some((table, budgets)) => (Some(table), budgets),
            None => (None, crate::host::Budgets::process()),
        };
        let shared = Arc::new(Shared {
            reader,
            peek_hits: crate::stripes::Counter::default(),
            state: Mutex::new(State {
                cache,
                queue: VecDeque::with_capacity(64),
                stopping: false,
                refresher_pid: 0,
            }),
            stripes: std::array::from_fn(|_| Condvar::new()),
            completions: Condvar::new(),
            refresher: Condvar::new(),
            flavour,
            explicit,
            config,
            refresher_thread: Mutex::new(None),
            pools: [Mutex::new(Pool::default()), Mutex::new(Pool::default())],
            jobs_ready: [Condvar::new(), Condvar::new()],
            #[cfg(target_os = "linux")]
            budgets,
            #[cfg(target_os = "linux")]
            host: table,
        });
        if let Some(reason) = refused {
            if shared.config.events.is_some() {
                shared.emit(&crate::events::Event::NotShared { reason: &reason });
            } else {
                eprintln!("imds-cache: WARNING: host sharing is off, this process keeps its own cache: {reason}");
            }
        }
        crate::fork::register(Arc::downgrade(&shared));
        shared.ensure_refresher();
        Ok(Client { shared })
    }

    /// The client's table: the host's when it shares one and can ([`Share::Host`]), else its
    /// own; with the reason it could not share, if it was asked to.
    #[allow(clippy::type_complexity)]
    fn table(
        config: &ClientConfig,
        layout: imds_cache::StorageLayout,
        share: Share,
        endpoint: &str,
    ) -> Result<(Cache, Option<HostParts>, Option<String>), Error> {
        let refused = if share == Share::Host {
            #[cfg(target_os = "linux")]
            match crate::host::open_cache(config, layout, endpoint) {
                Ok((cache, table, budgets)) => return Ok((cache, Some((table, budgets)), None)),
                Err(reason) => Some(reason),
            }
            #[cfg(not(target_os = "linux"))]
            Some(format!("sharing needs Linux (endpoint {endpoint})"))
        } else {
            None
        };
        let words: Arc<[Word]> = (0..layout.words).map(|_| Word::new(0)).collect();
        let cache =
            TokenCache::with_words(config.cache.clone(), layout, TableWords::Process(words))
                .map_err(Error::Config)?;
        Ok((cache, None, refused))
    }

    /// The endpoint flavour tokens come from.
    pub fn flavour(&self) -> Flavour {
        self.shared.flavour
    }

    /// The URL tokens come from (`scheme://host:port/path`, never a secret), read from the
    /// environment as a request would be; `None` when it is not configured.
    pub fn endpoint_url(&self) -> Option<String> {
        let owned = match &self.shared.explicit {
            Some(e) => e.clone(),
            None => source::from_env(self.shared.flavour, &source::process_env).ok()?,
        };
        owned.endpoint().ok().map(|e| e.to_string())
    }

    /// `error` as a message a user can act on: what went wrong, the identity asked for and
    /// the endpoint asked (`… (identity client_id=…, endpoint http://…)`). Never a secret.
    pub fn explain(&self, error: &Error, identity: &Identity<'_>) -> String {
        match (error, self.endpoint_url()) {
            (Error::Identity(_) | Error::Resource(_), _) => error.to_string(),
            (_, Some(url)) => format!("{error} (identity {identity}, endpoint {url})"),
            (_, None) => format!(
                "{error} (identity {identity}, {} endpoint)",
                self.shared.flavour.name()
            ),
        }
    }

    /// The cache's counters.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// The key of `identity` and `resource` at this client's endpoint.
    fn key<'k>(&self, identity: &Identity<'k>, resource: &Resource<'k>) -> Key<'k> {
        Key {
            flavour: self.shared.flavour,
            identity: *identity,
            resource: *resource,
        }
    }

    /// The token for `identity` and `resource`, copied into `out`: `(length, expires_on in
    /// epoch seconds)`. A hit allocates nothing and does no I/O. The copy in `out` is the
    /// caller's to wipe (D13).
    pub fn get_token_into(
        &self,
        identity: &Identity<'_>,
        resource: &Resource<'_>,
        out: &mut [u8],
    ) -> Result<(usize, u64), Error> {
        let key = self.key(identity, resource);
        let deadline = Deadline::After(self.shared.config.deadline);
        self.shared.get(&key, out, deadline, 0, None)
    }

    /// [`get_token_into`](Self::get_token_into) with an explicit deadline.
    pub fn get_token_until(
        &self,
        identity: &Identity<'_>,
        resource: &Resource<'_>,
        out: &mut [u8],
        deadline: Instant,
    ) -> Result<(usize, u64), Error> {
        self.shared.get(
            &self.key(identity, resource),
            out,
            Deadline::At(deadline),
            0,
            None,
        )
    }

    /// The asyncio path: a hit is copied into `out` and returned at once (`Ok(Some(..))`,
    /// `done` is dropped uncalled); otherwise the call goes on on a worker thread of a small
    /// pool (never a thread per call) and `Ok(None)` says `done` will be called with the
    /// owned token. Errors known at once (a negative-cached failure) come back directly.
    pub fn get_token_or_notify(
        &self,
        identity: &Identity<'_>,
        resource: &Resource<'_>,
        out: &mut [u8],
        deadline: Instant,
        done: Callback,
    ) -> Result<Option<(usize, u64)>, Error> {
        let key = self.key(identity, resource);
        self.shared.start(&key, out, deadline, Reply::Notify(done))
    }

    /// [`get_token_into`](Self::get_token_into) returning an owned token.
    pub fn get_token(
        &self,
        identity: &Identity<'_>,
        resource: &Resource<'_>,
    ) -> Result<(Vec<u8>, u64), Error> {
        let mut buf = vec![0u8; self.shared.config.cache.max_token_bytes];
        let (len, expires_on_s) = self.get_token_into(identity, resource, &mut buf)?;
        buf.truncate(len);
        Ok((buf, expires_on_s))
    }

    /// When the cached token of `identity` and `resource` is due for refresh (epoch seconds),
    /// if a usable one is held: a caller keeping its own copy may reuse it until then.
    pub fn refresh_on_s(&self, identity: &Identity<'_>, resource: &Resource<'_>) -> Option<u64> {
        let key = self.key(identity, resource);
        let now_ms = self.shared.now_ms();
        self.shared
            .state
            .lock()
            .cache
            .refresh_on_ms(&key, now_ms)
            .map(|ms| ms / 1000)
    }

    /// Drops the token of `identity` and `resource` (after a downstream 401 or a claims
    /// challenge): the next call fetches a new one.
    pub fn invalidate(&self, identity: &Identity<'_>, resource: &Resource<'_>) -> bool {
        let key = self.key(identity, resource);
        let now_ms = self.shared.now_ms();
        self.shared.lock().cache.invalidate(&key, now_ms)
    }

    /// Warms every (identity, resource) pair within the budget; returns when all are done or
    /// at `deadline`. Cached keys are answered on the calling thread; the others go to the
    /// worker pool, at most `in_flight` at a time (the budget's, so no more threads wait than
    /// can fetch). `progress` is called on the calling thread after each key.
    pub fn prefetch(
        &self,
        identities: &[Identity<'_>],
        resources: &[Resource<'_>],
        deadline: Instant,
        mut progress: impl FnMut(Progress),
    ) -> (Progress, Vec<(usize, Error)>) {
        let mut report = Progress {
            done: 0,
            ok: 0,
            total: identities.len() * resources.len(),
        };
        let mut errors = Vec::new();
        let mut tally = |report: &mut Progress, index: usize, result: Result<(), Error>| {
            report.done += 1;
            match result {
                Ok(()) => report.ok += 1,
                Err(e) => errors.push((index, e)),
            }
            progress(*report);
        };
        let warmed = Arc::new(Warmed::default());
        let most = (self.shared.config.cache.in_flight as usize).max(1);
        let mut pooled = 0;
        let mut buf = vec![0u8; self.shared.config.cache.max_token_bytes];
        let pairs = identities
            .iter()
            .flat_map(|i| resources.iter().map(move |r| (i, r)));
        for (index, (identity, resource)) in pairs.enumerate() {
            if pooled == most {
                let (index, result) = warmed.next();
                pooled -= 1;
                tally(&mut report, index, result);
            }
            let key = self.key(identity, resource);
            let reply = Reply::Warm {
                index,
                into: warmed.clone(),
            };
            match self.shared.start(&key, &mut buf, deadline, reply) {
                Ok(Some((len, _))) => {
                    // A copy of a token in a buffer of ours (D13).
                    buf[..len].zeroize();
                    tally(&mut report, index, Ok(()));
                }
                Ok(None) => pooled += 1,
                Err(e) => tally(&mut report, index, Err(e)),
            }
        }
        // Every pooled key reports by `deadline` (its calls stop there).
        for _ in 0..pooled {
            let (index, result) = warmed.next();
            tally(&mut report, index, result);
        }
        (report, errors)
    }

    /// D12, in a child after `fork`: drop the tickets of threads that do not exist here; the
    /// refresher restarts on the next miss. Registered with `pthread_atfork` automatically;
    /// calling it again is harmless.
    pub fn atfork_child(&self) {
        crate::fork::reset_child(&self.shared);
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.refresher.notify_all();
        self.shared.jobs_ready.iter().for_each(|c| {
            c.notify_all();
        });
        if let Some(handle) = self.shared.refresher_thread.lock().take() {
            if self.shared.lock().refresher_pid == std::process::id() {
                let _ = handle.join();
            }
        }
    }
}

impl Client {
    /// `f` of the token of `identity` and `resource` and its expiry (epoch seconds) if the
    /// lock-free read finds one; the bytes are wiped when `f` returns. `None` sends the caller
    /// to the full path (a miss, a due refresh, a token being written).
    #[cfg(feature = "azure_core")]
    pub(crate) fn peek_with<T>(
        &self,
        identity: &Identity<'_>,
        resource: &Resource<'_>,
        f: impl FnOnce(&[u8], u64) -> T,
    ) -> Option<T> {
        crate::future::peek_with(&self.shared, &self.key(identity, resource), f)
    }

    /// The token for `identity` and `resource`, as a future that any executor can drive (the
    /// crate starts no runtime). A hit resolves on the first poll, by the blocking call's
    /// path; a miss, or another caller's fetch of the same key, goes on in the worker pool
    /// (as [`get_token_or_notify`](Self::get_token_or_notify)) and wakes the task when it
    /// ends. The deadline is [`ClientConfig::deadline`]. Dropping the future does not stop a
    /// fetch it started: the token still fills the cache.
    pub fn get_token_async<'a>(
        &'a self,
        identity: &Identity<'a>,
        resource: &Resource<'a>,
    ) -> GetToken<'a> {
        GetToken::new(&self.shared, self.key(identity, resource))
    }
}
