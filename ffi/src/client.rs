//! The blocking client: the core cache behind one lock, the wall clock, the sockets, and a
//! background refresher.
//!
//! A hit takes the lock, copies the token into the caller's buffer and returns: no
//! allocation, no I/O. A miss gets a ticket from the core and does the fetch itself with the
//! lock released, so other keys never wait; callers of the same key wait on a condition
//! variable (striped by key) until the fetch completes. A hit that carries a refresh ticket
//! hands it to the refresher thread, so hot paths never wait on IMDS.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use std::io::Read;

use imds_cache::{
    BufferStorage, CacheError, Config, Done, ErrorDetail, Failure, FailureKind, Feed, Flavour,
    Identity, IdentityKind, Key, Lookup, OutcomeClass, RequestError, Resource, Slot, Stats, Ticket,
    TokenCache, ARC_MAX_KEY_LEN,
};
use parking_lot::{Condvar, Mutex};
use zeroize::Zeroize;

use crate::events::{Event, Observer};
use crate::http;
use crate::source::{self, OwnedEndpoint, SourceSpec};
use crate::Error;

type Cache = TokenCache<BufferStorage<Box<[Slot]>, Box<[u32]>, Box<[u8]>, Box<[u32]>>>;

/// Condition variables that waiters of one key share with a few other keys.
const STRIPES: usize = 64;

/// How a [`Client`] is set up.
#[derive(Clone)]
pub struct ClientConfig {
    /// The core's policy (budget, backoff, lease, limits).
    pub cache: Config,
    /// Entries the cache holds.
    pub capacity: usize,
    /// Arena bytes per entry, on average (2 KiB tokens need 2 KiB + the key).
    pub bytes_per_entry: usize,
    /// Where tokens come from.
    pub source: SourceSpec,
    /// Overall deadline of a blocking call (D7: 90 s, longer than the 410 window).
    pub deadline: Duration,
    /// Connect timeout per attempt (1 s).
    pub connect_timeout: Duration,
    /// Total time for one attempt's reads (10 s): a trickle is cut.
    pub attempt_timeout: Duration,
    /// Run the background refresher.
    pub refresher: bool,
    /// Told of requests, outcomes, throttling and refreshes (for logs); `None` costs nothing.
    pub events: Option<Observer>,
}

/// Shows whether an observer is set, not the closure.
impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("cache", &self.cache)
            .field("capacity", &self.capacity)
            .field("bytes_per_entry", &self.bytes_per_entry)
            .field("source", &self.source)
            .field("deadline", &self.deadline)
            .field("connect_timeout", &self.connect_timeout)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("refresher", &self.refresher)
            .field("events", &self.events.is_some())
            .finish()
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            cache: Config::DEFAULT,
            capacity: 4096,
            bytes_per_entry: 2560,
            source: SourceSpec::Auto,
            deadline: Duration::from_secs(90),
            connect_timeout: Duration::from_secs(1),
            attempt_timeout: Duration::from_secs(10),
            refresher: true,
            events: None,
        }
    }
}

struct State {
    cache: Cache,
    /// Refresh tickets handed out with hits, for the refresher.
    queue: VecDeque<Ticket>,
    stopping: bool,
    /// The process the refresher thread runs in (D12: after `fork` the child has none).
    refresher_pid: u32,
}

pub(crate) struct Shared {
    state: Mutex<State>,
    stripes: [Condvar; STRIPES],
    /// Woken on every completion: callers waiting for budget.
    completions: Condvar,
    /// Wakes the refresher.
    refresher: Condvar,
    flavour: Flavour,
    explicit: Option<OwnedEndpoint>,
    config: ClientConfig,
    refresher_thread: Mutex<Option<JoinHandle<()>>>,
    /// Two pools: one for calls that hold a ticket (at most `in_flight` of them, so they never
    /// wait behind callers waiting for those very fetches), one for calls that wait.
    pools: [Mutex<Pool>; 2],
    jobs_ready: [Condvar; 2],
}

/// A call that waits off the caller's thread (the asyncio path).
struct Job {
    ticket: Option<Ticket>,
    key: OwnedKey,
    deadline: Instant,
    done: Callback,
}

/// The workers that run [`Job`]s: spawned on demand up to [`MAX_WORKERS`], gone when idle.
#[derive(Default)]
struct Pool {
    jobs: VecDeque<Job>,
    workers: usize,
    idle: usize,
}

/// Most worker threads for waiting calls; more calls queue.
const MAX_WORKERS: usize = 16;

/// What a waiting call is told when it ends: the token and its expiry (epoch seconds).
pub type Callback = Box<dyn FnOnce(Result<(Vec<u8>, u64), Error>) + Send>;

/// A key with owned text, for calls that outlive the caller's borrow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedKey {
    /// How the identity is selected.
    pub kind: IdentityKind,
    /// The selector text (empty for the system identity).
    pub value: String,
    /// The resource.
    pub resource: String,
}

/// The blocking client. Use it from many threads (`&self`); share it in an `Arc`.
pub struct Client {
    shared: Arc<Shared>,
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

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A call's deadline. `After` is read from the clock only once the call has to fetch or wait, so
/// a hit reads one clock (the wall clock of D1), not two.
#[derive(Clone, Copy)]
enum Deadline {
    At(Instant),
    After(Duration),
}

impl Deadline {
    /// The deadline as an instant, fixed the first time it is asked for.
    fn instant(&mut self) -> Instant {
        match *self {
            Deadline::At(at) => at,
            Deadline::After(d) => {
                let at = Instant::now() + d;
                *self = Deadline::At(at);
                at
            }
        }
    }
}

/// Milliseconds from now until `at` (epoch ms), as a duration.
fn until(at: u64) -> Duration {
    Duration::from_millis(at.saturating_sub(now_ms()))
}

impl Client {
    /// A client with the default configuration, its endpoint detected from the environment.
    pub fn new() -> Result<Self, Error> {
        Self::with_config(ClientConfig::default())
    }

    /// A client with `config`.
    pub fn with_config(config: ClientConfig) -> Result<Self, Error> {
        let (flavour, explicit) = match &config.source {
            SourceSpec::Auto => (source::detect(&source::process_env)?, None),
            SourceSpec::Explicit(e) => (e.flavour, Some(e.clone())),
        };
        let blocks = (config.capacity.max(1) * config.bytes_per_entry).div_ceil(256);
        let cache = TokenCache::with_slices(
            config.cache.clone(),
            vec![Slot::EMPTY; config.capacity].into_boxed_slice(),
            vec![0u32; 2 * config.capacity].into_boxed_slice(),
            vec![0u8; blocks * 256].into_boxed_slice(),
            vec![0u32; blocks].into_boxed_slice(),
        )
        .map_err(Error::Config)?;
        let shared = Arc::new(Shared {
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
        });
        crate::fork::register(Arc::downgrade(&shared));
        shared.ensure_refresher();
        Ok(Client { shared })
    }

    /// The endpoint flavour tokens come from.
    pub fn flavour(&self) -> Flavour {
        self.shared.flavour
    }

    /// The cache's counters.
    pub fn stats(&self) -> Stats {
        self.shared.state.lock().cache.stats()
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
        let shared = &self.shared;
        let mut state = shared.state.lock();
        let ticket = match state
            .cache
            .lookup(&key, now_ms(), out)
            .map_err(|_| Error::CacheFull)?
        {
            Lookup::Hit {
                len,
                expires_on,
                refresh,
            } => {
                if let Some(ticket) = refresh {
                    state.queue.push_back(ticket);
                    shared.refresher.notify_one();
                }
                return Ok(Some((len, expires_on / 1000)));
            }
            Lookup::BufferTooSmall { needed } => return Err(Error::BufferTooSmall { needed }),
            Lookup::Failed { error, .. } if error.kind.class() == OutcomeClass::Unavailable => {
                return Err(Error::Unavailable(error.kind.as_str()))
            }
            Lookup::Failed { error, .. } if error.kind.class() == OutcomeClass::Terminal => {
                return Err(Error::Failed {
                    failure: error,
                    detail: Box::default(),
                })
            }
            Lookup::Fetch(ticket) => Some(ticket),
            Lookup::Pending { .. } | Lookup::Throttled { .. } | Lookup::Failed { .. } => None,
        };
        drop(state);
        let key = OwnedKey {
            kind: identity.kind(),
            value: identity.value().to_string(),
            resource: resource.as_str().to_string(),
        };
        shared.submit(Job {
            ticket,
            key,
            deadline,
            done,
        });
        Ok(None)
    }

    /// [`get_token_into`](Self::get_token_into) returning an owned token.
    pub fn get_token(
        &self,
        identity: &Identity<'_>,
        resource: &Resource<'_>,
    ) -> Result<(Vec<u8>, u64), Error> {
        let mut buf = vec![0u8; self.shared.config.cache.max_token_bytes];
        let (len, expires_on) = self.get_token_into(identity, resource, &mut buf)?;
        buf.truncate(len);
        Ok((buf, expires_on))
    }

    /// When the cached token of `identity` and `resource` is due for refresh (epoch seconds),
    /// if a usable one is held: a caller keeping its own copy may reuse it until then.
    pub fn refresh_on(&self, identity: &Identity<'_>, resource: &Resource<'_>) -> Option<u64> {
        let key = self.key(identity, resource);
        self.shared
            .state
            .lock()
            .cache
            .refresh_on(&key, now_ms())
            .map(|ms| ms / 1000)
    }

    /// Drops the token of `identity` and `resource` (after a downstream 401 or a claims
    /// challenge): the next call fetches a new one.
    pub fn invalidate(&self, identity: &Identity<'_>, resource: &Resource<'_>) -> bool {
        let key = self.key(identity, resource);
        self.shared.state.lock().cache.invalidate(&key, now_ms())
    }

    /// Warms every (identity, resource) pair within the budget, with up to `in_flight`
    /// fetches at once; returns when all are done or at `deadline`. `progress` is called on
    /// the calling thread after each key.
    pub fn prefetch(
        &self,
        identities: &[Identity<'_>],
        resources: &[Resource<'_>],
        deadline: Instant,
        mut progress: impl FnMut(Progress),
    ) -> (Progress, Vec<(usize, Error)>) {
        let keys: Vec<(Identity<'_>, Resource<'_>)> = identities
            .iter()
            .flat_map(|i| resources.iter().map(move |r| (*i, *r)))
            .collect();
        let total = keys.len();
        let next = AtomicUsize::new(0);
        let workers = (self.shared.config.cache.in_flight as usize).clamp(1, total.max(1));
        let (tx, rx) = mpsc::channel::<(usize, Result<(), Error>)>();
        let mut report = Progress {
            done: 0,
            ok: 0,
            total,
        };
        let mut errors = Vec::new();
        std::thread::scope(|scope| {
            for _ in 0..workers {
                let tx = tx.clone();
                let (keys, next) = (&keys, &next);
                scope.spawn(move || {
                    let mut buf = vec![0u8; self.shared.config.cache.max_token_bytes];
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((identity, resource)) = keys.get(i) else {
                            return;
                        };
                        let r = self.get_token_until(identity, resource, &mut buf, deadline);
                        if tx.send((i, r.map(|_| ()))).is_err() {
                            return;
                        }
                    }
                });
            }
            drop(tx);
            for (i, result) in rx {
                report.done += 1;
                match result {
                    Ok(()) => report.ok += 1,
                    Err(e) => errors.push((i, e)),
                }
                progress(report);
            }
        });
        (report, errors)
    }

    /// D12, in a child after `fork`: drop the tickets of threads that do not exist here; the
    /// refresher restarts on the next miss. Registered with `pthread_atfork` automatically;
    /// calling it again is harmless.
    pub fn atfork_child(&self) {
        reset_child(&self.shared);
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.shared.state.lock().stopping = true;
        self.shared.refresher.notify_all();
        self.shared.jobs_ready.iter().for_each(|c| {
            c.notify_all();
        });
        if let Some(handle) = self.shared.refresher_thread.lock().take() {
            if self.shared.state.lock().refresher_pid == std::process::id() {
                let _ = handle.join();
            }
        }
    }
}

/// A pool worker: runs queued calls; leaves after 30 s without work or when the client goes.
fn worker(weak: Weak<Shared>, which: usize) {
    let mut buf = Vec::new();
    loop {
        let Some(shared) = weak.upgrade() else { return };
        let job = {
            let mut pool = shared.pools[which].lock();
            loop {
                if let Some(job) = pool.jobs.pop_front() {
                    break Some(job);
                }
                if shared.state.lock().stopping {
                    break None;
                }
                pool.idle += 1;
                let timed_out = shared.jobs_ready[which]
                    .wait_for(&mut pool, Duration::from_secs(30))
                    .timed_out();
                pool.idle -= 1;
                if timed_out && pool.jobs.is_empty() {
                    break None;
                }
            }
        };
        let Some(job) = job else {
            shared.pools[which].lock().workers -= 1;
            return;
        };
        buf.resize(shared.config.cache.max_token_bytes, 0);
        let result = run_job(&shared, &job, &mut buf);
        (job.done)(result);
    }
}

fn run_job(shared: &Arc<Shared>, job: &Job, buf: &mut [u8]) -> Result<(Vec<u8>, u64), Error> {
    let identity = Identity::new(job.key.kind, &job.key.value).map_err(Error::Identity)?;
    let resource = Resource::new(&job.key.resource).map_err(Error::Resource)?;
    let key = Key {
        flavour: shared.flavour,
        identity,
        resource,
    };
    let attempts = u32::from(job.ticket.is_some());
    let mut last = None;
    if let Some(ticket) = job.ticket {
        shared.ensure_refresher();
        // A failure's detail (the endpoint's error text) goes on to the error `get` returns.
        last = shared.fetch(ticket, Some(&key), Some(job.deadline), 1, false)?;
    }
    let deadline = Deadline::At(job.deadline);
    let (len, expires_on) = shared.get(&key, buf, deadline, attempts, last)?;
    let token = buf[..len].to_vec();
    // The worker's buffer is the driver's own: its copy is wiped here (D13).
    buf[..len].zeroize();
    Ok((token, expires_on))
}

impl Shared {
    /// D5's protocol, blocking, for one key; `attempts` is the fetches the call already made.
    fn get(
        self: &Arc<Self>,
        key: &Key<'_>,
        out: &mut [u8],
        mut deadline: Deadline,
        mut attempts: u32,
        mut last: Option<(Failure, ErrorDetail)>,
    ) -> Result<(usize, u64), Error> {
        let shared = self;
        // The observer hears of a call's throttling once, not on every wake-up.
        let mut throttle_told = false;
        loop {
            let mut state = shared.state.lock();
            // The only error a lookup has is CacheFull.
            let answer = state
                .cache
                .lookup(key, now_ms(), out)
                .map_err(|_| Error::CacheFull)?;
            let wait_until = match answer {
                Lookup::Hit {
                    len,
                    expires_on,
                    refresh,
                } => {
                    if let Some(ticket) = refresh {
                        if shared.config.refresher {
                            state.queue.push_back(ticket);
                            shared.refresher.notify_one();
                        } else {
                            // No refresher: this caller refreshes before it returns (the
                            // token in `out` stays valid whatever the refresh does).
                            drop(state);
                            let deadline = deadline.instant();
                            let _ = shared.fetch(ticket, Some(key), Some(deadline), 1, true);
                        }
                    }
                    return Ok((len, expires_on / 1000));
                }
                Lookup::BufferTooSmall { needed } => return Err(Error::BufferTooSmall { needed }),
                Lookup::Fetch(ticket) => {
                    drop(state);
                    shared.ensure_refresher();
                    attempts = attempts.saturating_add(1);
                    let deadline = deadline.instant();
                    last = shared
                        .fetch(ticket, Some(key), Some(deadline), attempts, false)?
                        .or(last);
                    continue;
                }
                Lookup::Pending { retry_at } => {
                    let deadline = deadline.instant();
                    if Instant::now() >= deadline {
                        return Err(Error::Deadline {
                            last: last.map(|l| l.0),
                        });
                    }
                    let wake = (Instant::now() + until(retry_at)).min(deadline);
                    shared.stripes[stripe(key)].wait_until(&mut state, wake);
                    continue;
                }
                Lookup::Throttled { retry_at } => {
                    // The budget frees up at `retry_at` at the latest (the in-flight cap's
                    // answer is a lease end), usually sooner: wait for a completion.
                    let deadline = deadline.instant();
                    if Instant::now() >= deadline {
                        return Err(Error::Deadline {
                            last: last.map(|l| l.0),
                        });
                    }
                    if !throttle_told && shared.config.events.is_some() {
                        // Told with the lock released; then look again (a completion may
                        // have come meanwhile).
                        throttle_told = true;
                        drop(state);
                        shared.emit(&Event::Throttled {
                            key: *key,
                            retry_at,
                        });
                        continue;
                    }
                    let wake = (Instant::now() + until(retry_at)).min(deadline);
                    shared.completions.wait_until(&mut state, wake);
                    continue;
                }
                Lookup::Failed { error, retry_at } => {
                    let detail = last
                        .take()
                        .filter(|(f, _)| *f == error)
                        .map(|(_, d)| d)
                        .unwrap_or_default();
                    match error.kind.class() {
                        OutcomeClass::Unavailable => {
                            return Err(Error::Unavailable(error.kind.as_str()))
                        }
                        OutcomeClass::Terminal => {
                            return Err(Error::Failed {
                                failure: error,
                                detail: Box::new(detail),
                            })
                        }
                        OutcomeClass::Retry => {
                            last = Some((error, detail));
                            retry_at
                        }
                    }
                }
            };
            let wake = Instant::now() + until(wait_until);
            if wake >= deadline.instant() {
                return Err(Error::Deadline {
                    last: last.map(|l| l.0),
                });
            }
            shared.completions.wait_until(&mut state, wake);
        }
    }

    /// Queues a call in its pool; starts a worker if none is idle and the pool has room.
    fn submit(self: &Arc<Self>, job: Job) {
        let which = usize::from(job.ticket.is_some());
        let mut pool = self.pools[which].lock();
        pool.jobs.push_back(job);
        if pool.idle == 0 && pool.workers < MAX_WORKERS {
            pool.workers += 1;
            let weak = Arc::downgrade(self);
            let spawned = std::thread::Builder::new()
                .name("imds-cache-worker".into())
                .spawn(move || worker(weak, which));
            if spawned.is_err() {
                pool.workers -= 1;
            }
        }
        drop(pool);
        self.jobs_ready[which].notify_one();
    }

    /// Starts the refresher if this process has none (at creation, and lazily after `fork`).
    fn ensure_refresher(self: &Arc<Self>) {
        if !self.config.refresher {
            return;
        }
        let pid = std::process::id();
        {
            let mut state = self.state.lock();
            if state.refresher_pid == pid || state.stopping {
                return;
            }
            state.refresher_pid = pid;
        }
        let weak = Arc::downgrade(self);
        let handle = std::thread::Builder::new()
            .name("imds-cache-refresher".into())
            .spawn(move || refresher(weak))
            .ok();
        // A handle from before a fork names a thread of the parent: forget it.
        *self.refresher_thread.lock() = handle;
    }

    /// Tells the observer, if any. Callers hold no lock (the observer may take the GIL); a
    /// panicking observer must not take the client down with it.
    fn emit(&self, event: &Event<'_>) {
        if let Some(observer) = &self.config.events {
            observer.tell(event);
        }
    }

    /// Performs one fetch for `ticket` and settles it in the cache; returns the failure and
    /// its text when it failed. Wakes the waiters.
    /// `deadline` is the waiting caller's: no attempt runs past it. `key` is the ticket's
    /// (`None` from the refresher without an observer: every stripe is woken); `attempt` and
    /// `refresh` are for the observer.
    fn fetch(
        &self,
        ticket: Ticket,
        key: Option<&Key<'_>>,
        deadline: Option<Instant>,
        attempt: u32,
        refresh: bool,
    ) -> Result<Option<(Failure, ErrorDetail)>, Error> {
        let told = Told {
            key,
            attempt,
            refresh,
        };
        let outcome = self.exchange(ticket, deadline, &told);
        match key {
            Some(key) => {
                self.stripes[stripe(key)].notify_all();
            }
            None => self.stripes.iter().for_each(|c| {
                c.notify_all();
            }),
        }
        self.completions.notify_all();
        // A new token (or retry time) may be due before the refresher's planned wake-up.
        self.refresher.notify_one();
        outcome
    }

    /// The request legs of one ticket (two for Arc), each response fed to the cache as it
    /// arrives, with the lock held only while the cache works.
    fn exchange(
        &self,
        ticket: Ticket,
        deadline: Option<Instant>,
        told: &Told<'_, '_>,
    ) -> Result<Option<(Failure, ErrorDetail)>, Error> {
        let owned = match &self.explicit {
            Some(e) => Ok(e.clone()),
            None => source::from_env(self.flavour, &source::process_env),
        };
        let endpoint = match owned
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|o| o.endpoint())
        {
            Ok(e) => e,
            Err(e) => return Err(self.abandon(ticket, e)),
        };
        let left = deadline.map_or(Duration::MAX, |d| {
            d.saturating_duration_since(Instant::now())
        });
        if left.is_zero() {
            let _ = self.state.lock().cache.cancel(ticket);
            return Ok(None);
        }
        let timeouts = http::Timeouts {
            connect: self.config.connect_timeout.min(left),
            attempt: self.config.attempt_timeout.min(left),
        };
        let max = self.config.cache.max_token_bytes + 4096 + 1;
        let mut request = vec![0u8; 8192];
        let first = self
            .state
            .lock()
            .cache
            .request_at(ticket, &endpoint, now_ms(), &mut request);
        let mut to = match first {
            Ok(d) => d,
            Err(e) => return Err(self.abandon(ticket, Error::Request(request_error(e)))),
        };
        if let Some(key) = told.key {
            self.emit(&Event::Request {
                key: *key,
                attempt: told.attempt.max(1),
                refresh: told.refresh,
            });
        }
        loop {
            let mut conn =
                match http::Connection::open(to.host, to.port, &request[..to.len], timeouts) {
                    Ok(c) => c,
                    Err(t) => {
                        // The guard goes with the statement: settled without the lock.
                        let done = self.state.lock().cache.fail(ticket, t, now_ms());
                        return Ok(self.settle(done, told));
                    }
                };
            let mut received = Vec::with_capacity(4096);
            let key_file = loop {
                let read = conn.read_into(&mut received, max);
                let mut state = self.state.lock();
                let now = now_ms();
                let done = match read {
                    Err(t) => state.cache.fail(ticket, t, now),
                    Ok(0) => state.cache.eof(ticket, &mut received, now),
                    Ok(_) => match state.cache.feed(ticket, &mut received, now) {
                        Ok(Feed::NeedMore) => continue,
                        Ok(Feed::Done(done)) => Ok(done),
                        Err(e) => Err(e),
                    },
                };
                drop(state);
                match done {
                    Ok(Done::NeedKeyFile { path }) => break path.to_string(),
                    other => return Ok(self.settle(other, told)),
                }
            };
            let key = match read_arc_key(&key_file) {
                Ok(k) => k,
                // An unreadable key file fails the ticket the way a bad key does.
                Err(_) => b"\x00".to_vec(),
            };
            let next = self.state.lock().cache.complete_challenge(
                ticket,
                &endpoint,
                &key,
                now_ms(),
                &mut request,
            );
            to = match next {
                Ok(d) => d,
                Err(CacheError::Throttled { retry_at }) => {
                    std::thread::sleep(until(retry_at));
                    match self.state.lock().cache.complete_challenge(
                        ticket,
                        &endpoint,
                        &key,
                        now_ms(),
                        &mut request,
                    ) {
                        Ok(d) => d,
                        Err(_) => return Ok(self.bad_challenge(told)),
                    }
                }
                Err(_) => return Ok(self.bad_challenge(told)),
            };
        }
    }

    /// Arc's challenge could not be answered: the ticket has failed.
    fn bad_challenge(&self, told: &Told<'_, '_>) -> Option<(Failure, ErrorDetail)> {
        let failure = Failure::new(FailureKind::BadChallenge);
        if let Some(key) = told.key {
            self.emit(&Event::Failed {
                key: *key,
                failure,
                refresh: told.refresh,
            });
        }
        Some((failure, ErrorDetail::default()))
    }

    /// The failure of a finished ticket, if it failed; the observer is told the outcome.
    /// Called without the lock.
    fn settle(
        &self,
        done: Result<Done<'_>, CacheError>,
        told: &Told<'_, '_>,
    ) -> Option<(Failure, ErrorDetail)> {
        if let (Some(key), Ok(done)) = (told.key, &done) {
            let (key, refresh) = (*key, told.refresh);
            let event = match *done {
                Done::Token { expires_on, .. } => Some(Event::Token {
                    key,
                    expires_on: expires_on / 1000,
                    refresh,
                }),
                Done::Retry {
                    failure, retry_at, ..
                } => Some(Event::Retry {
                    key,
                    failure,
                    retry_at,
                    refresh,
                }),
                Done::Failed { failure, .. } => Some(Event::Failed {
                    key,
                    failure,
                    refresh,
                }),
                Done::NeedKeyFile { .. } => None,
            };
            if let Some(event) = event {
                self.emit(&event);
            }
        }
        match done {
            Ok(
                Done::Retry {
                    failure, detail, ..
                }
                | Done::Failed {
                    failure, detail, ..
                },
            ) => Some((failure, detail)),
            Ok(_) => None,
            // The lease lapsed while we fetched: another caller owns the key now.
            Err(_) => None,
        }
    }

    /// Gives the ticket back when no request could be built (a configuration error, which
    /// the waiting caller gets at once: retrying cannot mend it).
    fn abandon(&self, ticket: Ticket, e: Error) -> Error {
        let _ = self.state.lock().cache.cancel(ticket);
        e
    }
}

/// What a fetch tells the observer besides its outcome.
struct Told<'r, 'k> {
    /// The ticket's key; `None` from the refresher when nobody listens (it is not decoded).
    key: Option<&'r Key<'k>>,
    attempt: u32,
    refresh: bool,
}

fn request_error(e: CacheError) -> RequestError {
    match e {
        CacheError::Request(r) => r,
        _ => RequestError::InvalidEndpoint,
    }
}

/// Reads Arc's key file: a regular file (not a symlink), at most 4096 bytes. The core has
/// already checked the folder and the `.key` extension.
fn read_arc_key(path: &str) -> std::io::Result<Vec<u8>> {
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.file_type().is_file() || meta.len() > ARC_MAX_KEY_LEN as u64 {
        return Err(std::io::Error::other(
            "not a regular key file of at most 4096 bytes",
        ));
    }
    let mut key = Vec::with_capacity(ARC_MAX_KEY_LEN + 1);
    std::io::Read::take(std::fs::File::open(path)?, ARC_MAX_KEY_LEN as u64 + 1)
        .read_to_end(&mut key)?;
    Ok(key)
}

/// The refresher: takes refresh tickets handed out with hits, and polls for due refreshes
/// at the cache's next deadline. Ends when the client is dropped.
fn refresher(weak: Weak<Shared>) {
    // The ticket's key, decoded only for an observer (1028 bytes hold any key).
    let mut key_buf = Vec::new();
    loop {
        let Some(shared) = weak.upgrade() else { return };
        let ticket = {
            let mut state = shared.state.lock();
            if state.stopping || state.refresher_pid != std::process::id() {
                return;
            }
            match state.queue.pop_front() {
                Some(t) => Some(t),
                None => match state.cache.poll_refresh(now_ms()) {
                    Ok(t) => Some(t),
                    Err(next) => {
                        let wake = next
                            .map_or(Duration::from_secs(60), until)
                            .min(Duration::from_secs(60));
                        shared
                            .refresher
                            .wait_for(&mut state, wake.max(Duration::from_millis(1)));
                        None
                    }
                },
            }
        };
        let Some(ticket) = ticket else { continue };
        if shared.config.events.is_none() {
            let _ = shared.fetch(ticket, None, None, 1, true);
            continue;
        }
        key_buf.resize(1028, 0);
        // A ticket lapsed meanwhile has no key: its fetch fails at once, untold.
        let key = shared
            .state
            .lock()
            .cache
            .ticket_key(ticket, &mut key_buf)
            .ok();
        if let Some(key) = &key {
            shared.emit(&Event::Refresh { key: *key });
        }
        let _ = shared.fetch(ticket, key.as_ref(), None, 1, true);
    }
}

/// The condition variable of `key`'s stripe.
fn stripe(key: &Key<'_>) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (key.flavour as u8, key.identity.kind() as u8).hash(&mut h);
    for b in key.identity.value().bytes() {
        h.write_u8(b.to_ascii_lowercase());
    }
    key.resource.as_str().hash(&mut h);
    (h.finish() % STRIPES as u64) as usize
}

/// D12 `prepare`: hold the lock across `fork` so the child gets it in a known state.
pub(crate) fn lock_for_fork(shared: &Shared) {
    // The pools before the state: workers take them in that order.
    shared.pools.iter().for_each(|p| std::mem::forget(p.lock()));
    std::mem::forget(shared.state.lock());
}

/// D12 `parent` / `child`: release the lock taken by [`lock_for_fork`]; in the child, drop
/// the tickets of threads that are gone and let the refresher restart lazily.
pub(crate) fn unlock_after_fork(shared: &Shared, child: bool) {
    if child {
        forget_parent_threads(shared);
    }
    // SAFETY: `lock_for_fork` locked it on this thread (the forking thread, which is the only
    // thread in the child) and forgot the guard; nothing else can hold it now.
    unsafe {
        shared.state.force_unlock();
        shared.pools.iter().for_each(|p| p.force_unlock());
    }
    if child {
        // A thread of the parent may have held it at the fork; none exists here.
        if shared.refresher_thread.is_locked() {
            // SAFETY: the child has one thread, this one, which does not hold it.
            unsafe { shared.refresher_thread.force_unlock() };
        }
        reset_child(shared);
    }
}

/// The child's copy of parking_lot's wait queues still lists the parent's threads that were
/// parked on our locks and condition variables. An unlock could hand a lock to one of them
/// (parking_lot's fair hand-off), and it would stay locked for good: the child hung in
/// `fork_child_keeps_serving`. They are dropped from the queues, before any unlock here.
fn forget_parent_threads(shared: &Shared) {
    let forget = |key: usize| {
        // SAFETY: `key` is the address parking_lot parks under for that lock or condition
        // variable (`&RawMutex` / `&Condvar` as usize), so the queue holds only its waiters;
        // "unparking" a thread that does not exist in the child writes to its copied memory,
        // which nothing reads.
        unsafe { parking_lot_core::unpark_all(key, parking_lot_core::DEFAULT_UNPARK_TOKEN) };
    };
    // SAFETY: `raw` only gives the address; the locks are not touched through it.
    unsafe {
        forget(shared.state.raw() as *const _ as usize);
        forget(shared.refresher_thread.raw() as *const _ as usize);
        shared
            .pools
            .iter()
            .for_each(|p| forget(p.raw() as *const _ as usize));
    }
    let condvars = shared.stripes.iter().chain(&shared.jobs_ready);
    for c in condvars.chain([&shared.completions, &shared.refresher]) {
        forget(c as *const Condvar as usize);
    }
}

/// The child's reset: tickets released (their threads do not exist here), queue cleared,
/// refresher to be restarted on the next miss, the worker pool emptied. Tokens are kept.
pub(crate) fn reset_child(shared: &Shared) {
    // The workers and the callers their jobs would answer live in the parent.
    for pool in &shared.pools {
        *pool.lock() = Pool::default();
    }
    let mut state = shared.state.lock();
    state.cache.release_all_tickets();
    state.queue.clear();
    state.refresher_pid = 0;
}
