//! One fetch: the request legs of a ticket (two for Arc's challenge) over a socket, each
//! response fed to the core as it arrives, the lock held only while the core works, and the
//! outcome told to the observer and to the waiters.

use std::io::Read;
use std::time::{Duration, Instant};

use imds_cache::{
    CacheError, Done, ErrorDetail, Failure, FailureKind, Feed, Key, RequestError, Ticket,
    ARC_MAX_KEY_LEN,
};
use zeroize::Zeroize;

use crate::events::Event;
use crate::http;
use crate::shared::{stripe, Shared};
use crate::source;
use crate::Error;

/// What a fetch tells the observer besides its outcome.
struct Told<'r, 'k> {
    /// The ticket's key; `None` from the refresher when nobody listens (it is not decoded).
    key: Option<&'r Key<'k>>,
    attempt: u32,
    refresh: bool,
}

impl Shared {
    /// Performs one fetch for `ticket` and settles it in the cache; returns the failure and
    /// its text when it failed. Wakes the waiters.
    /// `deadline` is the waiting caller's: no attempt runs past it. `key` is the ticket's
    /// (`None` from the refresher without an observer: every stripe is woken); `attempt` and
    /// `refresh` are for the observer.
    pub(crate) fn fetch(
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
            .request_at(ticket, &endpoint, self.now(), &mut request);
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
                        let done = self.state.lock().cache.fail(ticket, t, self.now());
                        return Ok(self.settle(done, told));
                    }
                };
            let mut received = Vec::with_capacity(4096);
            let key_file = loop {
                let read = conn.read_into(&mut received, max);
                let mut state = self.state.lock();
                let now = self.now();
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
            let mut key = match read_arc_key(&key_file) {
                Ok(k) => k,
                // An unreadable key file fails the ticket the way a bad key does.
                Err(_) => b"\x00".to_vec(),
            };
            let next = self.answer_challenge(ticket, &endpoint, &key, &mut request);
            key.zeroize();
            to = match next {
                Some(d) => d,
                None => return Ok(self.bad_challenge(told)),
            };
        }
    }

    /// Arc's second leg: the request with the key, written into `request` (once more after
    /// the budget frees up if it had no room). `None` when the challenge cannot be answered.
    fn answer_challenge<'e>(
        &self,
        ticket: Ticket,
        endpoint: &imds_cache::Endpoint<'e>,
        key: &[u8],
        request: &mut [u8],
    ) -> Option<imds_cache::RequestDescriptor<'e>> {
        let next =
            self.state
                .lock()
                .cache
                .complete_challenge(ticket, endpoint, key, self.now(), request);
        match next {
            Ok(d) => Some(d),
            Err(CacheError::Throttled { retry_at }) => {
                std::thread::sleep(self.until(retry_at));
                self.state
                    .lock()
                    .cache
                    .complete_challenge(ticket, endpoint, key, self.now(), request)
                    .ok()
            }
            Err(_) => None,
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
