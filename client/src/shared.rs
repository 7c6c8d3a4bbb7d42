//! The state every handle of one client shares: the core cache behind one lock, the condition
//! variables waiters sleep on, and D5's protocol for one key, blocking.
//!
//! A hit takes no lock: it peeks at the table's words (the core's seqlock reader), copies the
//! token into the caller's buffer and returns: no allocation, no I/O, no shared counter (hits
//! are counted in per-thread stripes). Everything else takes the lock: a miss gets a ticket
//! from the core and does the fetch itself with the lock released, so other keys never wait;
//! callers of the same key wait on a condition variable (striped by key) until the fetch
//! completes. The one caller a peek sends for a due refresh takes the refresh ticket under the
//! lock and hands it to the refresher thread, so hot paths never wait on IMDS.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use imds_cache::{
    BufferStorage, ErrorDetail, Failure, Flavour, Key, Lookup, OutcomeClass, Peek, Reader, Ticket,
    TokenCache, Word,
};
use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::config::ClientConfig;
use crate::events::Event;
#[cfg(target_os = "linux")]
use crate::host::table::HostTable;
use crate::pool::Pool;
use crate::refresher::Without;
use crate::source::OwnedEndpoint;
use crate::Error;

/// The table's words, shared by the writer (behind the lock) and the lock-free readers: this
/// process's own, or mapped from the host's file.
#[derive(Clone)]
pub(crate) enum TableWords {
    Process(Arc<[Word]>),
    #[cfg(target_os = "linux")]
    Host(Arc<HostTable>),
}

impl AsRef<[Word]> for TableWords {
    fn as_ref(&self) -> &[Word] {
        match self {
            TableWords::Process(words) => words,
            #[cfg(target_os = "linux")]
            TableWords::Host(table) => table.as_ref().as_ref(),
        }
    }
}

pub(crate) type Words = BufferStorage<TableWords>;
pub(crate) type Cache = TokenCache<Words>;

/// Condition variables that waiters of one key share with a few other keys.
pub(crate) const STRIPES: usize = 64;

/// What the lock guards.
pub(crate) struct State {
    pub(crate) cache: Cache,
    /// Refresh tickets handed out with hits, for the refresher.
    pub(crate) queue: VecDeque<Ticket>,
    pub(crate) stopping: bool,
    /// The process the refresher thread runs in (D12: after `fork` the child has none).
    pub(crate) refresher_pid: u32,
}

pub(crate) struct Shared {
    /// Reads the table without the lock (hits).
    pub(crate) reader: Reader<Words>,
    /// Hits answered by `reader`, per thread stripe (the core counts the locked path's).
    pub(crate) peek_hits: crate::stripes::Counter,
    pub(crate) state: Mutex<State>,
    pub(crate) stripes: [Condvar; STRIPES],
    /// Woken on every completion: callers waiting for budget.
    pub(crate) completions: Condvar,
    /// Wakes the refresher.
    pub(crate) refresher: Condvar,
    pub(crate) flavour: Flavour,
    pub(crate) explicit: Option<OwnedEndpoint>,
    pub(crate) config: ClientConfig,
    pub(crate) refresher_thread: Mutex<Option<JoinHandle<()>>>,
    /// Two pools: one for calls that hold a ticket (at most `in_flight` of them, so they never
    /// wait behind callers waiting for those very fetches), one for calls that wait.
    pub(crate) pools: [Mutex<Pool>; 2],
    pub(crate) jobs_ready: [Condvar; 2],
    /// The host's table, when this client shares it: writes take its write lock too, and
    /// waits for a key sleep on its futex (the fetch may be another process's).
    #[cfg(target_os = "linux")]
    pub(crate) host: Option<Arc<HostTable>>,
    /// The endpoints' request budgets: this process's, or the host's.
    #[cfg(target_os = "linux")]
    pub(crate) budgets: crate::host::Budgets,
}

/// The client's lock: the process's mutex, and with a host table its write lock, held for
/// the core's work only (never across I/O).
pub(crate) struct Locked<'a> {
    guard: MutexGuard<'a, State>,
    #[cfg(target_os = "linux")]
    host: Option<&'a HostTable>,
}

impl std::ops::Deref for Locked<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.guard
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.guard
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        if let Some(host) = self.host {
            host.leave(&self.guard.cache);
        }
    }
}

/// A call's deadline. `After` is read from the clock only once the call has to fetch or wait, so
/// a hit reads one clock (the wall clock of D1), not two.
#[derive(Clone, Copy)]
pub(crate) enum Deadline {
    At(Instant),
    After(Duration),
}

impl Deadline {
    /// The deadline as an instant, fixed the first time it is asked for.
    pub(crate) fn instant(&mut self) -> Instant {
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

/// The condition variable of `key`'s stripe.
pub(crate) fn stripe(key: &Key<'_>) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (key.flavour as u8, key.identity.kind() as u8).hash(&mut h);
    for b in key.identity.value().bytes() {
        h.write_u8(b.to_ascii_lowercase());
    }
    key.resource.as_str().hash(&mut h);
    (h.finish() % STRIPES as u64) as usize
}

impl Shared {
    /// Takes the client's lock (see [`Locked`]).
    pub(crate) fn lock(&self) -> Locked<'_> {
        #[cfg_attr(not(target_os = "linux"), allow(unused_mut))]
        let mut guard = self.state.lock();
        #[cfg(target_os = "linux")]
        let host = self.host.as_deref();
        #[cfg(target_os = "linux")]
        if let Some(host) = host {
            host.enter(&mut guard.cache);
        }
        Locked {
            guard,
            #[cfg(target_os = "linux")]
            host,
        }
    }

    /// Waits on `condvar` until `at` with the lock released. With a host table the wake-up
    /// may come from another process: the wait is on the table's futex instead, at most
    /// 100 ms at a time (the caller looks again either way).
    pub(crate) fn wait_until(&self, locked: &mut Locked<'_>, condvar: &Condvar, at: Instant) {
        #[cfg(target_os = "linux")]
        if let Some(host) = locked.host {
            let seen = host.changes();
            host.leave(&locked.guard.cache);
            let timeout = at
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100));
            MutexGuard::unlocked(&mut locked.guard, || host.wait_for_change(seen, timeout));
            host.enter(&mut locked.guard.cache);
            return;
        }
        condvar.wait_until(&mut locked.guard, at);
    }

    /// Waits on the refresher's condition variable for `timeout`, with the lock released
    /// (only this process's refresher is woken through it).
    pub(crate) fn wait_refresher(&self, locked: &mut Locked<'_>, timeout: Duration) {
        #[cfg(target_os = "linux")]
        if let Some(host) = locked.host {
            host.leave(&locked.guard.cache);
            self.refresher.wait_for(&mut locked.guard, timeout);
            host.enter(&mut locked.guard.cache);
            return;
        }
        self.refresher.wait_for(&mut locked.guard, timeout);
    }

    /// With a host table: ends the lease of `key`'s fetch when the process that held it died
    /// (its lease byte is free), so that this caller fetches now rather than when the lease
    /// runs out. Whether it did.
    #[cfg(target_os = "linux")]
    fn take_over_from_the_dead(&self, state: &mut Locked<'_>, key: &Key<'_>) -> bool {
        use crate::host::table::LEASE_GRACE_MS;
        let Some(host) = state.host else {
            return false;
        };
        let now_ms = self.now_ms();
        let Some(lease) = state.cache.lease_of(key, now_ms) else {
            return false;
        };
        if now_ms < lease.issued_at_ms.saturating_add(LEASE_GRACE_MS)
            || !host.lease_holder_gone(lease.ticket.slot())
        {
            return false;
        }
        state.cache.end_lease(lease.ticket).is_ok()
    }

    /// The lock-free hit: `Some` when the table holds a usable token for `key` and no
    /// refresh is due on it (the one caller told a refresh is due goes on to the locked path,
    /// which hands the refresh ticket out); `None` otherwise.
    pub(crate) fn peek(&self, key: &Key<'_>, now_ms: u64, out: &mut [u8]) -> Option<(usize, u64)> {
        match self.reader.peek(key, now_ms, out) {
            Peek::Hit {
                len,
                expires_on_ms,
                refresh_due: false,
            } => {
                self.peek_hits.add_one();
                Some((len, expires_on_ms / 1000))
            }
            _ => None,
        }
    }

    /// The core's counters, with the lock-free hits added.
    pub(crate) fn stats(&self) -> imds_cache::Stats {
        let mut stats = self.lock().cache.stats();
        stats.hits += self.peek_hits.sum();
        stats
    }

    /// `now_ms` for the core (D1), from the configured clock.
    pub(crate) fn now_ms(&self) -> u64 {
        self.config.clock.now_ms()
    }

    /// Real time from now until `at` (epoch ms, on the configured clock).
    pub(crate) fn until(&self, at: u64) -> Duration {
        Duration::from_millis(at.saturating_sub(self.now_ms()))
    }

    /// Tells the observer, if any. Callers hold no lock (the observer may take the GIL); a
    /// panicking observer must not take the client down with it.
    pub(crate) fn emit(&self, event: &Event<'_>) {
        if let Some(observer) = &self.config.events {
            observer.tell(event);
        }
    }

    /// D5's protocol, blocking, for one key; `attempts` is the fetches the call already made.
    pub(crate) fn get(
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
        let deadline_error = |last: Option<(Failure, ErrorDetail)>| Error::Deadline {
            last: last.map(|l| l.0),
        };
        let now_ms = shared.now_ms();
        if let Some(hit) = shared.peek(key, now_ms, out) {
            return Ok(hit);
        }
        loop {
            let mut state = shared.lock();
            // The only error a lookup has is CacheFull.
            let answer = state
                .cache
                .lookup(key, shared.now_ms(), out)
                .map_err(|_| Error::CacheFull)?;
            let wait_until = match answer {
                Lookup::Hit {
                    len,
                    expires_on_ms,
                    refresh,
                } => {
                    if let Some(ticket) = refresh {
                        let deadline = deadline.instant();
                        shared.hand_off_refresh(state, ticket, key, deadline, Without::Caller);
                    }
                    return Ok((len, expires_on_ms / 1000));
                }
                Lookup::BufferTooSmall { needed } => return Err(Error::BufferTooSmall { needed }),
                Lookup::Fetch(ticket) => {
                    let deadline = deadline.instant();
                    if Instant::now() >= deadline {
                        // No time left for a request: the ticket goes back (fetching would
                        // cancel it and the next lookup would hand it out again).
                        let _ = state.cache.cancel(ticket);
                        return Err(deadline_error(last));
                    }
                    drop(state);
                    shared.ensure_refresher();
                    attempts = attempts.saturating_add(1);
                    last = shared
                        .fetch(ticket, Some(key), Some(deadline), attempts, false)?
                        .or(last);
                    continue;
                }
                Lookup::Pending { retry_at_ms } => {
                    let deadline = deadline.instant();
                    if Instant::now() >= deadline {
                        return Err(deadline_error(last));
                    }
                    #[cfg(target_os = "linux")]
                    if shared.take_over_from_the_dead(&mut state, key) {
                        continue;
                    }
                    let wake = (Instant::now() + shared.until(retry_at_ms)).min(deadline);
                    shared.wait_until(&mut state, &shared.stripes[stripe(key)], wake);
                    continue;
                }
                Lookup::Throttled { retry_at_ms } => {
                    // The budget frees up at `retry_at_ms` at the latest (the in-flight cap's
                    // answer is a lease end), usually sooner: wait for a completion.
                    let deadline = deadline.instant();
                    if Instant::now() >= deadline {
                        return Err(deadline_error(last));
                    }
                    if !throttle_told && shared.config.events.is_some() {
                        // Told with the lock released; then look again (a completion may
                        // have come meanwhile).
                        throttle_told = true;
                        drop(state);
                        shared.emit(&Event::Throttled {
                            key: *key,
                            retry_at_ms,
                        });
                        continue;
                    }
                    let wake = (Instant::now() + shared.until(retry_at_ms)).min(deadline);
                    shared.wait_until(&mut state, &shared.completions, wake);
                    continue;
                }
                Lookup::Failed { error, retry_at_ms } => {
                    let detail = last
                        .take()
                        .filter(|(f, _)| *f == error)
                        .map(|(_, d)| d)
                        .unwrap_or_default();
                    match error.kind.class() {
                        OutcomeClass::Unavailable | OutcomeClass::Terminal => {
                            return Err(Error::Failed {
                                failure: error,
                                detail: Box::new(detail),
                            })
                        }
                        OutcomeClass::Retry => {
                            last = Some((error, detail));
                            retry_at_ms
                        }
                    }
                }
            };
            let wake = Instant::now() + shared.until(wait_until);
            if wake >= deadline.instant() {
                return Err(deadline_error(last));
            }
            shared.wait_until(&mut state, &shared.completions, wake);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use imds_cache::{Identity, Resource};
    use imds_emulator::{Config, Emulator, Mode};

    use crate::{Client, ClientConfig, OwnedEndpoint, SourceSpec};

    /// A hit is answered while another thread holds the client's lock: the hit path takes
    /// none. (Bounded: a hit that waited for the lock would be caught after 30 s.)
    #[test]
    #[cfg_attr(miri, ignore = "talks to the emulator over a socket")]
    fn a_hit_never_waits_for_the_lock() {
        let e = Emulator::start(Config::new(Mode::Imds)).expect("emulator");
        let client = Client::with_config(ClientConfig {
            source: SourceSpec::Explicit(OwnedEndpoint {
                flavour: imds_cache::Flavour::Imds,
                url: e.url(),
                secret: None,
                default_client_id: None,
            }),
            refresher: false,
            ..ClientConfig::default()
        })
        .expect("client");
        let resource = Resource::new("https://management.azure.com").expect("resource");
        let first = client
            .get_token(&Identity::SYSTEM, &resource)
            .expect("token");
        let hits = client.stats().hits;
        let held = client.shared.state.lock();
        let (tx, rx) = mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut out = [0u8; 16 * 1024];
                let got = client.get_token_into(&Identity::SYSTEM, &resource, &mut out);
                let _ = tx.send(got.map(|(len, _)| out[..len].to_vec()));
            });
            let answer = rx.recv_timeout(Duration::from_secs(30));
            drop(held);
            let token = answer
                .expect("a hit while the lock is held")
                .expect("a token");
            assert_eq!(token, first.0.as_slice());
        });
        assert_eq!(e.stats().requests, 1);
        // Counted, though the core never saw the hit.
        assert_eq!(client.stats().hits, hits + 1);
    }

    /// A fetch whose lease was ended before its request was written (taken over by another
    /// process, say) sends nothing and returns no error: the caller goes on to wait for the
    /// key's new owner instead of failing.
    #[test]
    #[cfg_attr(miri, ignore = "talks to the emulator over a socket")]
    fn a_fetch_whose_lease_was_taken_over_sends_nothing_and_fails_no_one() {
        let e = Emulator::start(Config::new(Mode::Imds)).expect("emulator");
        let client = Client::with_config(ClientConfig {
            source: SourceSpec::Explicit(OwnedEndpoint {
                flavour: imds_cache::Flavour::Imds,
                url: e.url(),
                secret: None,
                default_client_id: None,
            }),
            refresher: false,
            ..ClientConfig::default()
        })
        .expect("client");
        let resource = Resource::new("https://management.azure.com").expect("resource");
        let shared = &client.shared;
        let key = imds_cache::Key {
            flavour: shared.flavour,
            identity: Identity::SYSTEM,
            resource,
        };
        let ticket = {
            let mut state = shared.state.lock();
            let mut out = [0u8; 16 * 1024];
            let lookup = state.cache.lookup(&key, shared.now_ms(), &mut out);
            let Ok(imds_cache::Lookup::Fetch(ticket)) = lookup else {
                panic!("a cold key hands out a ticket");
            };
            state
                .cache
                .end_lease(ticket)
                .expect("a live ticket's lease ends");
            ticket
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let outcome = shared.fetch(ticket, Some(&key), Some(deadline), 1, false);
        assert!(matches!(outcome, Ok(None)), "{outcome:?}");
        assert_eq!(e.stats().requests, 0, "a stale ticket sends no request");
        client
            .get_token(&Identity::SYSTEM, &resource)
            .expect("the next call fetches the key");
        assert_eq!(e.stats().requests, 1);
    }
}
