//! The cache's counters, as both handles report them.

use ::imds_cache::Stats;

/// The cache's counters (the core's `Stats`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct imds_cache_stats {
    /// Lookups answered with a token.
    pub hits: u64,
    /// Lookups without a usable token.
    pub misses: u64,
    /// Tickets handed out (fetches and refreshes).
    pub fetches: u64,
    /// Lookups told to wait because another caller was fetching the same key.
    pub coalesced: u64,
    /// Refreshes handed out with a hit or by `imds_cache_sansio_poll_refresh`.
    pub refreshes: u64,
    /// Tokens stored.
    pub tokens: u64,
    /// Transient failures (retried).
    pub failures_retry: u64,
    /// Terminal failures.
    pub failures_terminal: u64,
    /// "Unavailable" outcomes.
    pub failures_unavailable: u64,
    /// Entries evicted to make room.
    pub evictions: u64,
    /// Lookups told the budget is spent, and refreshes skipped for it.
    pub throttled: u64,
    /// Completions refused because their ticket was no longer live.
    pub stale_tickets: u64,
    /// Tickets whose lease lapsed.
    pub lease_lapses: u64,
}

impl From<Stats> for imds_cache_stats {
    fn from(s: Stats) -> Self {
        Self {
            hits: s.hits,
            misses: s.misses,
            fetches: s.fetches,
            coalesced: s.coalesced,
            refreshes: s.refreshes,
            tokens: s.tokens,
            failures_retry: s.failures_retry,
            failures_terminal: s.failures_terminal,
            failures_unavailable: s.failures_unavailable,
            evictions: s.evictions,
            throttled: s.throttled,
            stale_tickets: s.stale_tickets,
            lease_lapses: s.lease_lapses,
        }
    }
}
