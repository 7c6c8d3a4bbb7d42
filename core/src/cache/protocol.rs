//! A ticket's life (D5, D6): handed out, its request written, its response fed (or its
//! transport failed, or it is cancelled or lapses), Arc's challenge answered.

use super::key::MAX_KEY_LEN;
use super::{CacheError, Done, Feed, Key, Lease, Ticket, TokenCache, Transport};
use crate::http::{self, HttpError, Parsed};
use crate::identity::Flavour;
use crate::request::{self, Endpoint, RequestDescriptor};
use crate::response::{self, Classified, ErrorDetail, Failure, FailureKind};
use crate::storage::Storage;

/// Bytes allowed for a response beyond the token (D2).
const RESPONSE_SLACK: usize = 4096;

impl<S: Storage> TokenCache<S> {
    /// Writes the request for `ticket` to `endpoint` into `out` (D6). The endpoint carries
    /// the secrets read from the environment now (D11). The request's start is counted
    /// against the budget from `now_ms` rather than from when the ticket was handed out, which
    /// keeps the budget true at the endpoint when a driver waits (for a lock, a thread)
    /// between the two.
    pub fn request_at<'e>(
        &mut self,
        ticket: Ticket,
        endpoint: &Endpoint<'e>,
        now_ms: u64,
        out: &mut [u8],
    ) -> Result<RequestDescriptor<'e>, CacheError> {
        let now_ms = self.clock(now_ms);
        let descriptor = self.write_request(ticket, endpoint, None, out)?;
        let flavour = self.slot(ticket.slot).flavour as usize;
        if let Some(b) = self.budgets.get_mut(flavour) {
            b.restamp(ticket.to_bits(), now_ms);
        }
        Ok(descriptor)
    }

    fn write_request<'e>(
        &mut self,
        ticket: Ticket,
        endpoint: &Endpoint<'e>,
        authorization: Option<&[u8]>,
        out: &mut [u8],
    ) -> Result<RequestDescriptor<'e>, CacheError> {
        let now_ms = self.last_now_ms;
        let s = self.live(ticket, now_ms)?;
        let slot = self.slot(s);
        let mut buf = [0u8; MAX_KEY_LEN];
        let key = self
            .read_key(&slot, &mut buf)
            .ok_or(CacheError::StaleTicket)?;
        if key.flavour != endpoint.flavour {
            return Err(CacheError::WrongEndpoint);
        }
        request::write_request(endpoint, &key.identity, &key.resource, authorization, out)
            .map_err(CacheError::Request)
    }

    /// The key of a live ticket, decoded into `buf` (which must hold the encoded key; 1028
    /// bytes always do).
    pub fn ticket_key<'b>(
        &mut self,
        ticket: Ticket,
        buf: &'b mut [u8],
    ) -> Result<Key<'b>, CacheError> {
        let s = self.live(ticket, self.last_now_ms)?;
        self.read_key(&self.slot(s), buf)
            .ok_or(CacheError::StaleTicket)
    }

    /// Feeds every byte of the response received so far (D6). Once the response is complete
    /// the bytes may be rearranged in place (chunked bodies are joined), so keep feeding the
    /// same buffer only while the answer is `NeedMore`.
    pub fn feed<'b>(
        &mut self,
        ticket: Ticket,
        bytes: &'b mut [u8],
        now_ms: u64,
    ) -> Result<Feed<'b>, CacheError> {
        self.receive(ticket, bytes, false, now_ms)
    }

    /// The connection closed after `bytes`: a body delimited by the close ends here, anything
    /// else incomplete is `Truncated` (a retry).
    pub fn eof<'b>(
        &mut self,
        ticket: Ticket,
        bytes: &'b mut [u8],
        now_ms: u64,
    ) -> Result<Done<'b>, CacheError> {
        match self.receive(ticket, bytes, true, now_ms)? {
            Feed::Done(done) => Ok(done),
            Feed::NeedMore => Ok(self.settle(
                ticket,
                Failure::new(FailureKind::Truncated),
                None,
                ErrorDetail::default(),
                now_ms,
            )?),
        }
    }

    fn receive<'b>(
        &mut self,
        ticket: Ticket,
        bytes: &'b mut [u8],
        eof: bool,
        now_ms: u64,
    ) -> Result<Feed<'b>, CacheError> {
        let now_ms = self.clock(now_ms);
        let s = self.live(ticket, now_ms)?;
        let max = self.config.max_token_bytes + RESPONSE_SLACK;
        let response = match http::parse_response(bytes, eof, max) {
            Ok(Parsed::NeedMore) => return Ok(Feed::NeedMore),
            Ok(Parsed::Done(r)) => r,
            Err(e) => {
                let kind = match e {
                    HttpError::TooLarge => FailureKind::TokenTooLarge,
                    HttpError::Truncated => FailureKind::Truncated,
                    _ => FailureKind::MalformedResponse,
                };
                let done = self.settle(
                    ticket,
                    Failure::new(kind),
                    None,
                    ErrorDetail::default(),
                    now_ms,
                )?;
                return Ok(Feed::Done(done));
            }
        };
        let slot = self.slot(s);
        let flavour = Flavour::from_u8(slot.flavour).unwrap_or(Flavour::Imds);
        let request_secs = slot.issued_at_ms / 1000;
        let done = match response::classify(
            flavour,
            &response,
            request_secs,
            self.config.max_token_bytes,
        ) {
            Classified::Token(body) => self.store(ticket, s, &body, now_ms)?,
            Classified::Challenge(challenge) => {
                let answered = slot.answered();
                match request::arc_key_path(challenge, self.config.arc_key_dir()) {
                    Ok(path) if !answered => {
                        self.slot_mut(s).set_challenged();
                        Done::NeedKeyFile { path }
                    }
                    _ => {
                        let f = Failure {
                            kind: FailureKind::BadChallenge,
                            status: response.status,
                        };
                        self.settle(ticket, f, None, ErrorDetail::default(), now_ms)?
                    }
                }
            }
            Classified::Failure {
                mut failure,
                retry_after,
                body,
            } => {
                if !self.ever_ok(flavour as usize) {
                    failure.kind = failure.kind.at_first_contact(response.body);
                }
                self.settle(ticket, failure, retry_after, body.detail(), now_ms)?
            }
        };
        Ok(Feed::Done(done))
    }

    /// Whether a token ever came from `flavour`'s endpoint (D20: before that, failures that
    /// mean "no managed identity here" are `Unavailable`).
    fn ever_ok(&self, flavour: usize) -> bool {
        self.budgets.get(flavour).is_some_and(|b| b.ever_ok)
    }

    /// Arc's second step: `key` is the key file's contents; writes the second request (with
    /// `Authorization: Basic <key>`) into `out`. It counts against the budget.
    pub fn complete_challenge<'e>(
        &mut self,
        ticket: Ticket,
        endpoint: &Endpoint<'e>,
        key: &[u8],
        now_ms: u64,
        out: &mut [u8],
    ) -> Result<RequestDescriptor<'e>, CacheError> {
        let now_ms = self.clock(now_ms);
        let s = self.live(ticket, now_ms)?;
        let slot = self.slot(s);
        if !slot.challenged() {
            return Err(CacheError::NoChallenge);
        }
        let key = match request::check_arc_key(key) {
            Ok(k) => k,
            Err(e) => {
                let f = Failure::new(FailureKind::BadChallenge);
                let _ = self.settle(ticket, f, None, ErrorDetail::default(), now_ms)?;
                return Err(CacheError::ArcKey(e));
            }
        };
        let flavour = Flavour::Arc as usize;
        self.budgets[flavour]
            .check_rate(&self.config, now_ms)
            .map_err(|retry_at_ms| CacheError::Throttled { retry_at_ms })?;
        let descriptor = self.write_request(ticket, endpoint, Some(key), out)?;
        self.budgets[flavour].record_start(now_ms);
        self.slot_mut(s).set_answered();
        Ok(descriptor)
    }

    /// The transport failed for `ticket` (D20: refused, unreachable or timed out before any
    /// token was ever received from that endpoint means "unavailable", at once).
    pub fn fail(
        &mut self,
        ticket: Ticket,
        transport: Transport,
        now_ms: u64,
    ) -> Result<Done<'static>, CacheError> {
        let now_ms = self.clock(now_ms);
        let s = self.live(ticket, now_ms)?;
        let flavour = self.slot(s).flavour as usize;
        let kind = match transport {
            Transport::Refused | Transport::Unreachable if !self.ever_ok(flavour) => {
                FailureKind::Unavailable
            }
            Transport::ConnectTimeout if !self.ever_ok(flavour) => FailureKind::UnavailableTimeout,
            Transport::ConnectTimeout => FailureKind::ConnectTimeout,
            _ => FailureKind::ConnectionLost,
        };
        self.settle(
            ticket,
            Failure::new(kind),
            None,
            ErrorDetail::default(),
            now_ms,
        )
    }

    /// Gives a ticket back without an outcome: the next lookup may fetch at once.
    pub fn cancel(&mut self, ticket: Ticket) -> Result<(), CacheError> {
        let s = self.live(ticket, self.last_now_ms)?;
        self.release(s, ticket);
        Ok(())
    }

    /// The live ticket of `key`'s entry and when it was handed out, if a fetch holds the
    /// entry's lease: for a driver that can tell the holder is gone before the lease runs out
    /// (a process that died while it fetched) and then ends it with
    /// [`end_lease`](Self::end_lease).
    pub fn lease_of(&mut self, key: &Key<'_>, now_ms: u64) -> Option<Lease> {
        let now_ms = self.clock(now_ms);
        let s = self.find(key, key.hash())?;
        let slot = self.slot(s);
        slot.live_ticket(now_ms).then_some(Lease {
            ticket: Ticket {
                slot: s,
                generation: slot.generation,
            },
            issued_at_ms: slot.issued_at_ms,
        })
    }

    /// Ends `ticket`'s lease now, as if it had run out (counted as a lapse): its holder is
    /// gone. The next lookup hands out a ticket of the next generation; the old one is stale.
    pub fn end_lease(&mut self, ticket: Ticket) -> Result<(), CacheError> {
        let s = self.live(ticket, self.last_now_ms)?;
        self.release(s, ticket);
        self.stats.lease_lapses += 1;
        Ok(())
    }

    /// The slot of a live ticket, or `StaleTicket` (counted).
    pub(super) fn live(&mut self, ticket: Ticket, now_ms: u64) -> Result<u32, CacheError> {
        let ok = self
            .storage
            .slots()
            .get(ticket.slot as usize)
            .is_some_and(|slot| {
                slot.occupied() && slot.generation == ticket.generation && slot.live_ticket(now_ms)
            });
        if ok {
            Ok(ticket.slot)
        } else {
            self.stats.stale_tickets += 1;
            Err(CacheError::StaleTicket)
        }
    }

    /// Ends a lapsed lease: its ticket becomes stale and another caller may fetch.
    pub(super) fn lapse(&mut self, s: u32, now_ms: u64) {
        let slot = self.slot(s);
        if slot.lease_until_ms != 0 && slot.lease_until_ms <= now_ms {
            let ticket = Ticket {
                slot: s,
                generation: slot.generation,
            };
            self.release(s, ticket);
            self.stats.lease_lapses += 1;
        }
    }

    /// Ends a ticket: a new generation, so the old one is stale.
    pub(super) fn release(&mut self, s: u32, ticket: Ticket) {
        let flavour = self.slot(s).flavour as usize;
        if let Some(b) = self.budgets.get_mut(flavour) {
            b.end(ticket.to_bits());
        }
        let mut e = self.slot_mut(s);
        e.lease_until_ms = 0;
        e.generation = e.generation.wrapping_add(1);
        e.end_challenge();
    }

    /// Hands out a ticket for slot `s` (the budget was checked).
    pub(super) fn issue(&mut self, s: u32, now_ms: u64) -> Ticket {
        let lease_until_ms = now_ms.saturating_add(self.config.fetch_timeout_ms);
        let mut e = self.slot_mut(s);
        e.generation = e.generation.wrapping_add(1);
        e.lease_until_ms = lease_until_ms;
        e.issued_at_ms = now_ms;
        let (ticket, flavour) = (
            Ticket {
                slot: s,
                generation: e.generation,
            },
            e.flavour,
        );
        drop(e);
        if let Some(b) = self.budgets.get_mut(flavour as usize) {
            b.begin(ticket.to_bits(), now_ms, lease_until_ms);
        }
        self.stats.fetches += 1;
        ticket
    }

    /// A ticket if the budget allows one (a refresh is optional: a full budget skips it).
    pub(super) fn try_issue(&mut self, s: u32, now_ms: u64) -> Option<Ticket> {
        let flavour = self.slot(s).flavour as usize;
        if self.budgets[flavour].check(&self.config, now_ms).is_err() {
            self.stats.throttled += 1;
            return None;
        }
        Some(self.issue(s, now_ms))
    }
}
