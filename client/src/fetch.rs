//! One fetch: the request legs of a ticket (two for Arc's challenge) over a socket, each
//! response fed to the core as it arrives, the lock held only while the core works, and the
//! outcome told to the observer and to the waiters.

use std::io::Read;
use std::time::{Duration, Instant};

use imds_cache::{
    arc_key_path, parse_response, ArcError, CacheError, Done, ErrorDetail, Failure, FailureKind,
    Feed, Key, Parsed, RequestError, Ticket, Transport, ARC_MAX_KEY_LEN,
};

use crate::error::ArcKeyError;
use crate::events::Event;
use crate::http::{self, OpenError};
use crate::shared::{stripe, Shared};
use crate::source;
use crate::wipe::{BufferKind, Wiped};
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
        #[cfg(target_os = "linux")]
        if let Some(host) = &self.host {
            host.hold_lease(ticket.slot());
        }
        let outcome = self.exchange(ticket, deadline, &told);
        #[cfg(target_os = "linux")]
        if let Some(host) = &self.host {
            host.drop_lease(ticket.slot());
            host.notify();
        }
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
        let pin = match self.pin(&endpoint) {
            Ok(p) => p,
            Err(e) => return Err(self.abandon(ticket, e)),
        };
        let left = deadline.map_or(Duration::MAX, |d| {
            d.saturating_duration_since(Instant::now())
        });
        if left.is_zero() {
            let _ = self.lock().cache.cancel(ticket);
            return Ok(None);
        }
        let timeouts = http::Timeouts {
            connect: self.config.connect_timeout.min(left),
            attempt: self.config.attempt_timeout.min(left),
        };
        #[cfg(target_os = "linux")]
        let gate = self.budgets.gate(&endpoint.to_string());
        #[cfg(target_os = "linux")]
        let Some(_permit) = self.permit(&gate, ticket, deadline) else {
            return Ok(None);
        };
        let max = self.config.cache.max_token_bytes + 4096 + 1;
        // D13: the request carries the secret header (and Arc's key in the second leg), the
        // response the token; both are wiped when they go, on every path out.
        let mut request = Wiped::new(8192, BufferKind::Request);
        let first = self
            .lock()
            .cache
            .request_at(ticket, &endpoint, self.now_ms(), &mut request);
        let mut to = match first {
            Ok(d) => d,
            // The lease ended before the request was written (it lapsed while this fetch
            // waited for a permit, or another process took it over): another caller owns the
            // key now, and this one waits for that fetch.
            Err(CacheError::StaleTicket) => return Ok(None),
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
            let pin = if to.tls { pin } else { None };
            let sent = &request[..to.len];
            let mut conn = match http::Connection::open(to.host, to.port, pin, sent, timeouts) {
                Ok(c) => c,
                Err(OpenError::Transport(t)) => {
                    // The guard goes with the statement: settled without the lock.
                    let done = self.lock().cache.fail(ticket, t, self.now_ms());
                    return Ok(self.settle(done, told));
                }
                Err(OpenError::Tls(refused)) => {
                    // Settled as a lost connection, so that the endpoint is asked again only
                    // after the core's backoff; this caller gets the refusal at once.
                    let _ = self
                        .lock()
                        .cache
                        .fail(ticket, Transport::Reset, self.now_ms());
                    return Err(Error::Tls(refused));
                }
            };
            // Grown (wiping each old copy) up to the bound: most responses fit the first 4 KiB.
            let mut received = Wiped::new(max.min(4096), BufferKind::Response);
            let mut len = 0;
            let key_file = loop {
                if len == received.len() {
                    received.grow(max.min(len * 2));
                }
                let read = match received.get_mut(len..) {
                    Some(free) if !free.is_empty() => conn.read_into(free),
                    _ => Ok(0),
                };
                let mut state = self.lock();
                let now_ms = self.now_ms();
                let done = match read {
                    Err(t) => state.cache.fail(ticket, t, now_ms),
                    Ok(0) => state.cache.eof(ticket, &mut received[..len], now_ms),
                    Ok(n) => {
                        len += n;
                        match state.cache.feed(ticket, &mut received[..len], now_ms) {
                            Ok(Feed::NeedMore) => continue,
                            Ok(Feed::Done(done)) => Ok(done),
                            Err(e) => Err(e),
                        }
                    }
                };
                drop(state);
                if let Ok(Done::NeedKeyFile { path }) = done {
                    break path.to_string();
                }
                // A Retry-After or a 410 window holds back every client that shares the
                // budget, not only this key.
                #[cfg(target_os = "linux")]
                if let Ok(Done::Retry {
                    failure,
                    retry_at_ms,
                    ..
                }) = &done
                {
                    if matches!(failure.status, 410 | 429) {
                        gate.block_until(*retry_at_ms);
                    }
                }
                let settled = self.settle(done, told);
                let bad_challenge = settled
                    .as_ref()
                    .is_some_and(|(f, _)| f.kind == FailureKind::BadChallenge);
                if bad_challenge {
                    if let Some(e) = self.challenge_refusal(&mut received[..len]) {
                        return Err(e);
                    }
                }
                return Ok(settled);
            };
            let key = read_arc_key(&key_file);
            // An unreadable key file fails the ticket the way a bad key does.
            let bytes: &[u8] = match &key {
                Ok((key, len)) => &key[..*len],
                Err(_) => b"\x00",
            };
            let answered = self.answer_challenge(ticket, &endpoint, bytes, &mut request);
            let cause = match (answered, key) {
                // The key's copy is wiped as it goes; the request holding it is wiped with
                // `request`.
                (Ok(next), Ok(_)) => {
                    to = next;
                    continue;
                }
                (_, Err(cause)) => Some(cause),
                (Err(Some(ArcError::KeyTooLong)), Ok(_)) => Some(ArcKeyError::TooLarge),
                (Err(Some(e)), Ok(_)) => Some(ArcKeyError::Contents(e)),
                (Err(None), Ok(_)) => None,
            };
            let failed = self.bad_challenge(told);
            return match cause {
                Some(cause) => Err(Error::ArcKey {
                    path: printable(&key_file),
                    cause,
                }),
                None => Ok(failed),
            };
        }
    }

    /// Waits for the endpoint's shared budget to allow a request start, holding `ticket`
    /// while the wait is short. A longer one (a Retry-After or 410 window another client
    /// saw) is waited out without the ticket, and so is a wait past the caller's deadline:
    /// `None`, the ticket given back, and the caller looks up again.
    #[cfg(target_os = "linux")]
    fn permit(
        &self,
        gate: &std::sync::Arc<crate::host::budget::Gate>,
        ticket: Ticket,
        deadline: Option<Instant>,
    ) -> Option<crate::host::budget::Permit> {
        // A quarter of the lease: the ticket is still live when the wait ends.
        let hold_ms = self.config.cache.fetch_timeout_ms / 4;
        let mut holding = true;
        loop {
            let seen = gate.released();
            let now_ms = self.now_ms();
            let retry_at_ms = match gate.try_start(&self.config.cache, now_ms) {
                Ok(permit) if holding => return Some(permit),
                // The ticket went back: the caller looks up again (and may hit).
                Ok(_) => return None,
                Err(at) => at,
            };
            let wake = Instant::now() + self.until(retry_at_ms);
            let past_deadline = deadline.is_some_and(|d| wake >= d);
            if holding && (past_deadline || retry_at_ms.saturating_sub(now_ms) > hold_ms) {
                let _ = self.lock().cache.cancel(ticket);
                holding = false;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return None;
            }
            let until = deadline.map_or(wake, |d| wake.min(d));
            gate.wait(
                seen,
                until
                    .saturating_duration_since(Instant::now())
                    .clamp(Duration::from_millis(1), Duration::from_millis(100)),
            );
        }
    }

    /// The certificate an HTTPS `endpoint` must present: the configured thumbprint, else (for
    /// an endpoint from the environment) `IDENTITY_SERVER_THUMBPRINT`. `None` for plain HTTP.
    fn pin(&self, endpoint: &imds_cache::Endpoint<'_>) -> Result<Option<http::Pin>, Error> {
        if !endpoint.tls {
            return Ok(None);
        }
        #[cfg(feature = "service-fabric-tls")]
        {
            let from_env = || {
                self.explicit
                    .is_none()
                    .then(|| source::thumbprint_from(&source::process_env))
                    .flatten()
            };
            let missing = if self.explicit.is_some() {
                // This client never validates a certificate chain: HTTPS is only ever pinned.
                Error::Unsupported(
                    "an HTTPS endpoint needs the thumbprint of its certificate \
                     (ClientConfig::server_thumbprint): no CA validation is built in",
                )
            } else {
                Error::Endpoint(source::THUMBPRINT_VAR)
            };
            let hex = self
                .config
                .server_thumbprint
                .clone()
                .or_else(from_env)
                .ok_or(missing)?;
            crate::tls::Thumbprint::parse(&hex)
                .map(Some)
                .ok_or(Error::Endpoint(
                    "the server thumbprint is not 40 hex digits (a SHA-1 thumbprint)",
                ))
        }
        #[cfg(not(feature = "service-fabric-tls"))]
        Err(Error::Unsupported(
            "HTTPS endpoints are not built in: enable the service-fabric-tls feature",
        ))
    }

    /// Why the core refused Arc's challenge, when it was for the key file's path (outside the
    /// folder, not `.key`, …); `None` when the endpoint challenged again after the key was sent.
    fn challenge_refusal(&self, received: &mut [u8]) -> Option<Error> {
        let max = received.len();
        let Ok(Parsed::Done(response)) = parse_response(received, true, max) else {
            return None;
        };
        let header = response.www_authenticate?;
        let cause = match arc_key_path(header, self.config.cache.arc_key_dir()) {
            Ok(_) => return None,
            Err(ArcError::WrongDirectory) => ArcKeyError::OutsideFolder,
            Err(e) => ArcKeyError::Challenge(e),
        };
        let path = header.split_once('=').map_or(header, |(_, p)| p);
        Some(Error::ArcKey {
            path: printable(path.trim_matches(|c| c == ' ' || c == '"')),
            cause,
        })
    }

    /// Arc's second leg: the request with the key, written into `request` (once more after
    /// the budget frees up if it had no room). `Err(Some(_))` when the key's contents are
    /// refused, `Err(None)` when the challenge cannot be answered otherwise.
    fn answer_challenge<'e>(
        &self,
        ticket: Ticket,
        endpoint: &imds_cache::Endpoint<'e>,
        key: &[u8],
        request: &mut [u8],
    ) -> Result<imds_cache::RequestDescriptor<'e>, Option<ArcError>> {
        let next =
            self.lock()
                .cache
                .complete_challenge(ticket, endpoint, key, self.now_ms(), request);
        let next = match next {
            Err(CacheError::Throttled { retry_at_ms }) => {
                std::thread::sleep(self.until(retry_at_ms));
                self.lock()
                    .cache
                    .complete_challenge(ticket, endpoint, key, self.now_ms(), request)
            }
            other => other,
        };
        next.map_err(|e| match e {
            CacheError::ArcKey(e) => Some(e),
            _ => None,
        })
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
                Done::Token { expires_on_ms, .. } => Some(Event::Token {
                    key,
                    expires_on_s: expires_on_ms / 1000,
                    refresh,
                }),
                Done::Retry {
                    failure,
                    retry_at_ms,
                    ..
                } => Some(Event::Retry {
                    key,
                    failure,
                    retry_at_ms,
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
        let _ = self.lock().cache.cancel(ticket);
        e
    }
}

fn request_error(e: CacheError) -> RequestError {
    match e {
        CacheError::Request(r) => r,
        _ => RequestError::InvalidEndpoint,
    }
}

/// A path for an error message: control characters (which the core refuses in a key path)
/// shown as `?`, so that the message cannot forge a log line.
fn printable(path: &str) -> String {
    path.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Reads Arc's key file: a regular file opened without following a symlink, at most 4096
/// bytes, into a buffer wiped when dropped; the length read comes with it. The core has
/// already checked the folder and the `.key` extension.
fn read_arc_key(path: &str) -> Result<(Wiped, usize), ArcKeyError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |e: std::io::Error| ArcKeyError::from_io(&e);
    // O_NONBLOCK: a FIFO put in the key's place must not hang the open.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.file_type().is_file() {
        return Err(ArcKeyError::NotAFile);
    }
    if meta.len() > ARC_MAX_KEY_LEN as u64 {
        return Err(ArcKeyError::TooLarge);
    }
    let mut key = Wiped::new(ARC_MAX_KEY_LEN + 1, BufferKind::ArcKey);
    let mut len = 0;
    while len < key.len() {
        match file.read(&mut key[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io(e)),
        }
    }
    // It grew after the check.
    if len > ARC_MAX_KEY_LEN {
        return Err(ArcKeyError::TooLarge);
    }
    Ok((key, len))
}
