//! What the cache answers: tickets, lookups, fetch outcomes, errors and counters.

use core::fmt;

use crate::policy::ConfigError;
use crate::request::{ArcError, RequestError};
use crate::response::{ErrorDetail, Failure};
use crate::storage::StorageError;

/// A fetch's hold on an entry (see [`TokenCache::lease_of`](crate::TokenCache::lease_of)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The holder's ticket.
    pub ticket: Ticket,
    /// When it was handed out (ms).
    pub issued_at_ms: u64,
}

/// A claim to fetch one key's token: (slot, generation), with a lease (D5).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ticket {
    pub(super) slot: u32,
    pub(super) generation: u32,
}

impl Ticket {
    /// The ticket as one integer (for a C ABI or a map key).
    pub const fn to_bits(self) -> u64 {
        (self.slot as u64) << 32 | self.generation as u64
    }

    /// The slot of the entry the ticket is for (for a driver that keeps something per slot,
    /// such as a lock of its own).
    pub const fn slot(self) -> u32 {
        self.slot
    }

    /// A ticket from [`to_bits`](Self::to_bits); an unknown one is refused as stale on use.
    pub const fn from_bits(bits: u64) -> Self {
        Self {
            slot: (bits >> 32) as u32,
            generation: bits as u32,
        }
    }
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ticket({}#{})", self.slot, self.generation)
    }
}

/// The answer to a lookup (D5). Times are ms since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Lookup {
    /// The token is in the caller's buffer (`len` bytes). If `refresh` is set, this caller is
    /// asked to refresh it (in the background) while using it.
    Hit {
        /// Token length.
        len: usize,
        /// Expiry, ms.
        expires_on_ms: u64,
        /// A refresh this caller should perform.
        refresh: Option<Ticket>,
    },
    /// No usable token: fetch one with this ticket.
    Fetch(Ticket),
    /// Another caller is fetching and there is no valid token; ask again at `retry_at_ms` at the
    /// latest (when that fetch's lease ends) or when it completes.
    Pending {
        /// When the other fetch's lease ends.
        retry_at_ms: u64,
    },
    /// The endpoint's request budget is spent until `retry_at_ms`.
    Throttled {
        /// When a request may start.
        retry_at_ms: u64,
    },
    /// The last fetch failed; no new one before `retry_at_ms` (backoff or negative cache).
    Failed {
        /// What went wrong.
        error: Failure,
        /// When a fetch may be tried again.
        retry_at_ms: u64,
    },
    /// The token does not fit in the buffer; `needed` bytes would.
    BufferTooSmall {
        /// The token's length.
        needed: usize,
    },
}

/// The answer to a [`peek`](crate::Reader::peek): a lock-free look at the table (D15).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Peek {
    /// A usable token (the same rule as [`Lookup::Hit`]: more than the minimum lifetime left)
    /// is in the caller's buffer, `len` bytes.
    Hit {
        /// Token length.
        len: usize,
        /// Expiry, ms.
        expires_on_ms: u64,
        /// This caller, and no other for this refresh, should call
        /// [`TokenCache::lookup`](crate::TokenCache::lookup) (behind the writer's lock) to take
        /// the refresh ticket; the token in the buffer is good meanwhile.
        refresh_due: bool,
    },
    /// The token does not fit in the buffer; `needed` bytes would. Nothing was copied.
    BufferTooSmall {
        /// The token's length.
        needed: usize,
    },
    /// No usable token could be read: none is cached, it is too close to expiry, or the
    /// writer kept changing the entry; ask [`TokenCache::lookup`](crate::TokenCache::lookup).
    Miss,
}

/// The answer to feeding response bytes.
// `Done` carries the error text (≈ 600 bytes) by value: the core has no heap to box it in,
// and one is returned per response, not per lookup.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
#[must_use]
pub enum Feed<'b> {
    /// The response is not complete: call again with more bytes.
    NeedMore,
    /// The ticket is finished (or, for `NeedKeyFile`, waits for the Arc key).
    Done(Done<'b>),
}

/// How a fetch ended.
#[derive(Debug)]
pub enum Done<'b> {
    /// A token was stored.
    Token {
        /// Its length.
        len: usize,
        /// Its expiry, ms.
        expires_on_ms: u64,
    },
    /// A transient failure: a lookup after `retry_at_ms` hands out a new ticket.
    Retry {
        /// What went wrong.
        failure: Failure,
        /// When to try again.
        retry_at_ms: u64,
        /// The error body's code and description.
        detail: ErrorDetail,
    },
    /// A terminal failure (or "unavailable"), negative-cached until `retry_at_ms`.
    Failed {
        /// What went wrong.
        failure: Failure,
        /// Until when it is remembered.
        retry_at_ms: u64,
        /// The error body's code and description.
        detail: ErrorDetail,
    },
    /// Arc's challenge: read the key file at `path` and call
    /// [`TokenCache::complete_challenge`](crate::TokenCache::complete_challenge) with its bytes. The ticket stays live.
    NeedKeyFile {
        /// The key file (checked to be in the configured folder, ending `.key`).
        path: &'b str,
    },
}

/// How the transport failed, as the driver saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// The connection was refused.
    Refused,
    /// No route to the endpoint (network or host unreachable).
    Unreachable,
    /// Connecting took longer than the connect timeout.
    ConnectTimeout,
    /// The connection was reset, or reading took longer than the attempt's deadline.
    Reset,
}

/// Errors of cache operations (as opposed to fetch outcomes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CacheError {
    /// No entry could be evicted (all have live tickets) or the arena cannot hold the entry.
    CacheFull,
    /// The ticket is not live: completed, cancelled, lapsed or unknown.
    StaleTicket,
    /// The endpoint given is not of the key's flavour.
    WrongEndpoint,
    /// The ticket is not waiting for an Arc key.
    NoChallenge,
    /// The endpoint's budget has no room for the challenge's second request yet.
    Throttled {
        /// When a request may start.
        retry_at_ms: u64,
    },
    /// The request could not be written.
    Request(RequestError),
    /// The Arc key file is unusable (the ticket has failed).
    ArcKey(ArcError),
}

impl CacheError {
    /// Every [`code`](Self::code), for mirror tests in the C and Python layers.
    pub const CODES: &'static [&'static str] = &[
        "cache_full",
        "stale_ticket",
        "wrong_endpoint",
        "no_challenge",
        "throttled",
        "request",
        "arc_key",
    ];

    /// A stable snake_case name for the error's variant (`cache_full`, `stale_ticket`, …);
    /// the payload of `Request` and `ArcKey` has its own description. Never changes for a
    /// variant, never reused.
    pub const fn code(&self) -> &'static str {
        match self {
            Self::CacheFull => "cache_full",
            Self::StaleTicket => "stale_ticket",
            Self::WrongEndpoint => "wrong_endpoint",
            Self::NoChallenge => "no_challenge",
            Self::Throttled { .. } => "throttled",
            Self::Request(_) => "request",
            Self::ArcKey(_) => "arc_key",
        }
    }

    /// A short description of the error.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::CacheFull => "cache is full: nothing can be evicted",
            Self::StaleTicket => "ticket is not live (completed, cancelled or lapsed)",
            Self::WrongEndpoint => "endpoint flavour differs from the key's",
            Self::NoChallenge => "ticket is not waiting for an Arc key",
            Self::Throttled { .. } => "request budget spent",
            Self::Request(e) => e.as_str(),
            Self::ArcKey(e) => e.as_str(),
        }
    }
}

impl fmt::Display for CacheError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl core::error::Error for CacheError {}

/// Counters of what the cache did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Lookups answered with a token.
    pub hits: u64,
    /// Lookups without a usable token.
    pub misses: u64,
    /// Tickets handed out (fetches and refreshes).
    pub fetches: u64,
    /// Lookups told `Pending` because another caller was fetching.
    pub coalesced: u64,
    /// Refresh tickets handed out with a hit or by `poll_refresh`.
    pub refreshes: u64,
    /// Tokens stored.
    pub tokens: u64,
    /// Transient failures.
    pub failures_retry: u64,
    /// Terminal failures.
    pub failures_terminal: u64,
    /// "Unavailable" outcomes.
    pub failures_unavailable: u64,
    /// Entries evicted to make room.
    pub evictions: u64,
    /// Lookups told `Throttled`, and refreshes skipped for the budget.
    pub throttled: u64,
    /// Completions refused because their ticket was no longer live.
    pub stale_tickets: u64,
    /// Tickets whose lease lapsed.
    pub lease_lapses: u64,
}

impl Stats {
    /// The counters by name, in declaration order: the one list the C struct, Python's
    /// `stats()` dict and the reports are checked against.
    pub const fn fields(&self) -> [(&'static str, u64); 13] {
        [
            ("hits", self.hits),
            ("misses", self.misses),
            ("fetches", self.fetches),
            ("coalesced", self.coalesced),
            ("refreshes", self.refreshes),
            ("tokens", self.tokens),
            ("failures_retry", self.failures_retry),
            ("failures_terminal", self.failures_terminal),
            ("failures_unavailable", self.failures_unavailable),
            ("evictions", self.evictions),
            ("throttled", self.throttled),
            ("stale_tickets", self.stale_tickets),
            ("lease_lapses", self.lease_lapses),
        ]
    }

    /// Adds `other`'s counters to these (several caches' totals).
    pub fn add(&mut self, other: &Stats) {
        let Stats {
            hits,
            misses,
            fetches,
            coalesced,
            refreshes,
            tokens,
            failures_retry,
            failures_terminal,
            failures_unavailable,
            evictions,
            throttled,
            stale_tickets,
            lease_lapses,
        } = *other;
        self.hits += hits;
        self.misses += misses;
        self.fetches += fetches;
        self.coalesced += coalesced;
        self.refreshes += refreshes;
        self.tokens += tokens;
        self.failures_retry += failures_retry;
        self.failures_terminal += failures_terminal;
        self.failures_unavailable += failures_unavailable;
        self.evictions += evictions;
        self.throttled += throttled;
        self.stale_tickets += stale_tickets;
        self.lease_lapses += lease_lapses;
    }
}

/// Where the cache's memory goes (for sizing and the D4 budget).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryUse {
    /// Entries held.
    pub entries: usize,
    /// Slot table capacity.
    pub slots: usize,
    /// Bytes of bookkeeping per slot (slot + index entries).
    pub overhead_per_slot: usize,
    /// Arena blocks in use.
    pub blocks_used: usize,
    /// Bytes of those blocks (including their links).
    pub block_bytes: usize,
    /// Key and token bytes stored in them.
    pub data_bytes: usize,
}

impl MemoryUse {
    /// Block bytes not holding data, as a fraction of block bytes.
    pub fn waste(&self) -> f64 {
        if self.block_bytes == 0 {
            0.0
        } else {
            (self.block_bytes - self.data_bytes) as f64 / self.block_bytes as f64
        }
    }
}

/// Why a cache could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NewError {
    /// The configuration is out of bounds.
    Config(ConfigError),
    /// The storage is malformed.
    Storage(StorageError),
}

impl fmt::Display for NewError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(e) => e.fmt(f),
            Self::Storage(e) => e.fmt(f),
        }
    }
}

impl core::error::Error for NewError {}
