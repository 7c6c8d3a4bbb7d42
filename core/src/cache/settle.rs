//! How an outcome lands in its slot: a token stored (never losing a valid one, D13) or a
//! failure classified and remembered with its next-attempt time (D7).

use super::key::MAX_KEY_LEN;
use super::{CacheError, Done, Ticket, TokenCache};
use crate::http;
use crate::policy;
use crate::response::{ErrorDetail, Failure, FailureKind, OutcomeClass, TokenBody};
use crate::storage::{chain_is_run, Cursor, Slot, Storage};

/// How to treat a failure once classified.
struct Disposition {
    class: OutcomeClass,
    retry_at_ms: u64,
}

impl<S: Storage> TokenCache<S> {
    /// Stores a token that arrived for `ticket` (slot `s`): checks the echo and the remaining
    /// lifetime, writes it into a fresh chain, then wipes the old one, so a failure to find
    /// room keeps the old token (D13: never lose a valid token).
    pub(super) fn store<'b>(
        &mut self,
        ticket: Ticket,
        s: u32,
        body: &TokenBody<'_>,
        now_ms: u64,
    ) -> Result<Done<'b>, CacheError> {
        let slot = self.slot(s);
        let expires_on_ms = body.expires_on_s.saturating_mul(1000);
        let mut buf = [0u8; MAX_KEY_LEN];
        let key = self
            .read_key(&slot, &mut buf)
            .ok_or(CacheError::StaleTicket)?;
        let reject = if self.config.verify_client_id && !body.client_id_matches(&key.identity) {
            Some(FailureKind::ClientIdMismatch)
        } else if expires_on_ms <= now_ms.saturating_add(self.config.min_lifetime_ms) {
            Some(FailureKind::ExpiredOnArrival)
        } else {
            None
        };
        if let Some(kind) = reject {
            let f = Failure { kind, status: 200 };
            return self.settle(ticket, f, None, ErrorDetail::default(), now_ms);
        }
        let key_len = slot.key_len as usize;
        let len = body.token_len();
        let blocks = (key_len + len).div_ceil(self.block_size) as u32;
        let needed = if !slot.has_token() {
            blocks.saturating_sub(self.storage.parts().chain_len(slot.head))
        } else {
            blocks
        };
        while self.alloc.free_blocks < needed {
            if self.evict(s, now_ms).is_err() {
                let f = Failure {
                    kind: FailureKind::CacheFull,
                    status: 200,
                };
                return self.settle(ticket, f, None, ErrorDetail::default(), now_ms);
            }
        }
        let keys = self.alloc.len;
        let hash = slot.hash;
        let mut parts = self.storage.parts_for(s);
        // A first token extends the key's chain; a refresh writes a new chain and only then
        // wipes the old one, so the old token stays valid until the new one is in place.
        let head = if !slot.has_token() {
            let have = parts.chain_len(slot.head);
            parts.extend_chain(&mut self.alloc, slot.head, blocks.saturating_sub(have));
            slot.head
        } else {
            let head = parts.alloc_chain(&mut self.alloc, blocks);
            let mut cursor = Cursor { block: head, at: 0 };
            parts.write(&mut cursor, &buf[..key_len]);
            parts.free_chain(&mut self.alloc, slot.head);
            head
        };
        let mut cursor = parts.cursor_at(head, key_len);
        body.pieces(|piece| parts.write(&mut cursor, piece));
        let refresh_on_ms = policy::refresh_on_ms(
            &self.config,
            hash,
            slot.issued_at_ms,
            expires_on_ms,
            body.refresh_in_s,
            keys,
        );
        let run = chain_is_run(parts.links, head);
        let e = parts.slot_mut(s);
        e.head = head;
        e.token_len = len as u32;
        e.expires_on_ms = expires_on_ms;
        e.refresh_on_ms = refresh_on_ms;
        e.set_token(run);
        e.attempts = 0;
        e.failure = 0;
        e.failure_status = 0;
        e.retry_at_ms = 0;
        e.gone_since_ms = 0;
        drop(parts);
        self.release(s, ticket);
        if let Some(b) = self.budgets.get_mut(slot.flavour as usize) {
            b.ever_ok = true;
        }
        self.stats.tokens += 1;
        Ok(Done::Token { len, expires_on_ms })
    }

    /// Ends `ticket` with a failure: decides when to try again (D7) and remembers it. A token
    /// that is still valid is kept.
    pub(super) fn settle<'b>(
        &mut self,
        ticket: Ticket,
        failure: Failure,
        retry_after: Option<http::RetryAfter>,
        detail: ErrorDetail,
        now_ms: u64,
    ) -> Result<Done<'b>, CacheError> {
        let s = ticket.slot;
        let slot = self.slot(s);
        let d = self.dispose(&slot, failure, retry_after, now_ms);
        let mut e = self.slot_mut(s);
        e.attempts = e.attempts.saturating_add(1);
        e.failure = failure.kind as u8;
        e.failure_status = failure.status;
        e.retry_at_ms = d.retry_at_ms;
        if failure.kind == FailureKind::Gone {
            if e.gone_since_ms == 0 {
                e.gone_since_ms = now_ms;
            }
        } else {
            e.gone_since_ms = 0;
        }
        drop(e);
        self.release(s, ticket);
        let retry_at_ms = d.retry_at_ms;
        Ok(match d.class {
            OutcomeClass::Retry => {
                self.stats.failures_retry += 1;
                Done::Retry {
                    failure,
                    retry_at_ms,
                    detail,
                }
            }
            OutcomeClass::Terminal => {
                self.stats.failures_terminal += 1;
                Done::Failed {
                    failure,
                    retry_at_ms,
                    detail,
                }
            }
            OutcomeClass::Unavailable => {
                self.stats.failures_unavailable += 1;
                Done::Failed {
                    failure,
                    retry_at_ms,
                    detail,
                }
            }
        })
    }

    /// The class and next-attempt time of a failure for `slot` at `now_ms`.
    fn dispose(
        &mut self,
        slot: &Slot,
        failure: Failure,
        retry_after: Option<http::RetryAfter>,
        now_ms: u64,
    ) -> Disposition {
        let c = &self.config;
        let mut class = failure.kind.class();
        let mut delay = match class {
            OutcomeClass::Retry if failure.kind == FailureKind::Gone => {
                let since = if slot.gone_since_ms == 0 {
                    now_ms
                } else {
                    slot.gone_since_ms
                };
                if now_ms.saturating_sub(since) >= c.gone_window_ms {
                    // 410s for longer than the update window: give up for now.
                    class = OutcomeClass::Terminal;
                    c.negative_ttl_ms
                } else {
                    c.gone_interval_ms
                }
            }
            OutcomeClass::Retry => match retry_after {
                Some(ra) => policy::retry_after_ms(c, ra, now_ms),
                None => {
                    let attempt = u32::from(slot.attempts) + 1;
                    policy::backoff_ms(c, attempt, self.rng.next())
                }
            },
            OutcomeClass::Terminal | OutcomeClass::Unavailable => c.negative_ttl_ms,
        };
        if self.usable(slot, now_ms) {
            // A failed eager refresh: the token still serves; try again no sooner than this.
            delay = delay.max(self.config.eager_retry_ms);
        }
        Disposition {
            class,
            retry_at_ms: now_ms.saturating_add(delay),
        }
    }
}

/// The failure remembered in a slot, if any.
pub(super) fn failure_of(slot: &Slot) -> Option<Failure> {
    let kind = FailureKind::from_u8(slot.failure)?;
    Some(Failure {
        kind,
        status: slot.failure_status,
    })
}
