//! The worker pool: calls that go on off the caller's thread (the asyncio path's misses and
//! `prefetch`), run by a few threads spawned on demand and gone when idle.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use imds_cache::{Identity, IdentityKind, Key, Lookup, OutcomeClass, Resource, Ticket};
use parking_lot::{Condvar, Mutex};
use zeroize::Zeroize;

use crate::refresher::Without;
use crate::shared::{Deadline, Shared};
use crate::Error;

/// Most worker threads per pool; more calls queue.
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

impl OwnedKey {
    /// The owned form of `identity` and `resource`.
    pub(crate) fn new(identity: &Identity<'_>, resource: &Resource<'_>) -> Self {
        Self {
            kind: identity.kind(),
            value: identity.value().to_string(),
            resource: resource.as_str().to_string(),
        }
    }
}

/// Who hears how a pooled call ended.
pub(crate) enum Reply {
    /// A caller of `get_token_or_notify`, told the owned token.
    Notify(Callback),
    /// Key number `index` of a `prefetch`, told only whether a token is now cached.
    Warm { index: usize, into: Arc<Warmed> },
    /// A refresh a hit handed over when the client has no background refresher: nobody
    /// waits for it.
    Refresh,
}

impl Reply {
    fn send(self, result: Result<(&[u8], u64), Error>) {
        match self {
            Reply::Notify(done) => done(result.map(|(token, exp)| (token.to_vec(), exp))),
            Reply::Warm { index, into } => into.push(index, result.map(|_| ())),
            Reply::Refresh => {}
        }
    }
}

/// Where a `prefetch`'s pooled keys report, for the caller's thread to collect.
#[derive(Default)]
pub(crate) struct Warmed {
    done: Mutex<VecDeque<(usize, Result<(), Error>)>>,
    ready: Condvar,
}

impl Warmed {
    fn push(&self, index: usize, result: Result<(), Error>) {
        self.done.lock().push_back((index, result));
        self.ready.notify_one();
    }

    /// The next key that finished, waiting for one.
    pub(crate) fn next(&self) -> (usize, Result<(), Error>) {
        let mut done = self.done.lock();
        loop {
            if let Some(one) = done.pop_front() {
                return one;
            }
            self.ready.wait(&mut done);
        }
    }
}

/// A call that waits off the caller's thread.
pub(crate) struct Job {
    ticket: Option<Ticket>,
    key: OwnedKey,
    deadline: Instant,
    reply: Reply,
}

/// The workers that run [`Job`]s: spawned on demand up to [`MAX_WORKERS`], gone when idle.
#[derive(Default)]
pub(crate) struct Pool {
    jobs: VecDeque<Job>,
    workers: usize,
    idle: usize,
}

impl Shared {
    /// The first step of a pooled call, on the caller's thread: a hit is copied into `out`
    /// and returned (`reply` is dropped unsent), an answer known at once (a negative-cached
    /// failure) comes back as an error, and anything else goes on in the pool (`Ok(None)`:
    /// `reply` will be sent).
    pub(crate) fn start(
        self: &Arc<Self>,
        key: &Key<'_>,
        out: &mut [u8],
        deadline: Instant,
        reply: Reply,
    ) -> Result<Option<(usize, u64)>, Error> {
        if let Some(hit) = self.peek(key, self.now_ms(), out) {
            return Ok(Some(hit));
        }
        let mut state = self.lock();
        let ticket = match state
            .cache
            .lookup(key, self.now_ms(), out)
            .map_err(|_| Error::CacheFull)?
        {
            Lookup::Hit {
                len,
                expires_on_ms,
                refresh,
            } => {
                if let Some(ticket) = refresh {
                    self.hand_off_refresh(state, ticket, key, deadline, Without::Pool);
                }
                return Ok(Some((len, expires_on_ms / 1000)));
            }
            Lookup::BufferTooSmall { needed } => return Err(Error::BufferTooSmall { needed }),
            Lookup::Failed { error, .. } if error.kind.class() != OutcomeClass::Retry => {
                return Err(Error::Failed {
                    failure: error,
                    detail: Box::default(),
                })
            }
            Lookup::Fetch(ticket) => Some(ticket),
            Lookup::Pending { .. } | Lookup::Throttled { .. } | Lookup::Failed { .. } => None,
        };
        drop(state);
        self.submit(Job {
            ticket,
            key: OwnedKey::new(&key.identity, &key.resource),
            deadline,
            reply,
        });
        Ok(None)
    }

    /// Queues a call in its pool; starts a worker if none is idle and the pool has room.
    /// Runs the refresh of `ticket` for `key` on the pool, nobody waiting for it.
    pub(crate) fn submit_refresh(
        self: &Arc<Self>,
        ticket: Ticket,
        key: &Key<'_>,
        deadline: Instant,
    ) {
        self.submit(Job {
            ticket: Some(ticket),
            key: OwnedKey::new(&key.identity, &key.resource),
            deadline,
            reply: Reply::Refresh,
        });
    }

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
        match run_job(&shared, &job, &mut buf) {
            Ok((len, expires_on_s)) => {
                job.reply.send(Ok((&buf[..len], expires_on_s)));
                // The worker's buffer is the driver's own: its copy is wiped here (D13).
                buf[..len].zeroize();
            }
            Err(e) => job.reply.send(Err(e)),
        }
    }
}

/// The rest of a pooled call: the fetch its ticket asks for, then D5 until a token or an
/// error. The token lands in `buf`.
fn run_job(shared: &Arc<Shared>, job: &Job, buf: &mut [u8]) -> Result<(usize, u64), Error> {
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
    shared.get(&key, buf, Deadline::At(job.deadline), attempts, last)
}
