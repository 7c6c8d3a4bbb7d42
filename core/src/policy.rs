//! The numbers that decide when to fetch, refresh and retry (D7, D8, D9), and the per-endpoint
//! request budget.

use core::fmt;

use crate::http::RetryAfter;

/// Largest configurable request rate per window (the budget keeps one timestamp per start).
pub const MAX_RATE: u32 = 128;
/// Largest configurable number of requests in flight per endpoint.
pub const MAX_IN_FLIGHT: u32 = 32;
/// Smallest allowed `max_token_bytes` (D2).
pub const MIN_TOKEN_BYTES: usize = 8 * 1024;
/// Longest Arc key folder the configuration holds.
pub const MAX_KEY_DIR_LEN: usize = 256;

/// The Arc key folder of this platform.
#[cfg(windows)]
pub const ARC_DEFAULT_KEY_DIR: &str = crate::request::ARC_KEY_DIR_WINDOWS;
/// The Arc key folder of this platform.
#[cfg(not(windows))]
pub const ARC_DEFAULT_KEY_DIR: &str = crate::request::ARC_KEY_DIR_LINUX;

/// Tunables of the cache; [`Config::DEFAULT`] holds the values of DESIGN.md D2, D5, D7–D9.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Largest token accepted; a larger one is `TokenTooLarge`, never truncated. ≥ 8 KiB.
    pub max_token_bytes: usize,
    /// Lease of a ticket: after it another caller may fetch and a late completion is stale.
    pub fetch_timeout_ms: u64,
    /// A token with less than this left is never handed out (60 s).
    pub min_lifetime_ms: u64,
    /// Refresh no later than this before expiry (5 min).
    pub refresh_margin_ms: u64,
    /// First retry delay (1 s); doubles per failure.
    pub backoff_initial_ms: u64,
    /// Largest retry delay (16 s).
    pub backoff_max_ms: u64,
    /// Jitter applied to retry delays, in percent either way (20).
    pub jitter_percent: u8,
    /// Retry interval while the endpoint answers 410 (10 s).
    pub gone_interval_ms: u64,
    /// How long 410s are retried after the first one (70 s).
    pub gone_window_ms: u64,
    /// Cap on a server's `Retry-After` (60 s).
    pub retry_after_max_ms: u64,
    /// How long a terminal failure is remembered (30 s).
    pub negative_ttl_ms: u64,
    /// A failed refresh of a still-valid token is tried again no sooner than this (30 s).
    pub eager_retry_ms: u64,
    /// Request starts allowed per endpoint in any `rate_window_ms` (20).
    pub rate: u32,
    /// The sliding window of the rate (1000 ms).
    pub rate_window_ms: u64,
    /// Extra time a start is counted for beyond the window (50 ms), so that jitter between
    /// sending and arriving (scheduling, the endpoint's accept queue) cannot put more than
    /// `rate` arrivals in one of the endpoint's windows.
    pub rate_margin_ms: u64,
    /// Requests in flight allowed per endpoint (5).
    pub in_flight: u32,
    /// Refuse a token whose echoed `client_id` differs from the one asked for.
    pub verify_client_id: bool,
    /// Seed of the jitter generator: randomness is an input, not something the core finds.
    pub seed: u64,
    /// Folder the Arc key file must be in; empty means the platform's default.
    pub arc_key_dir: heapless::String<MAX_KEY_DIR_LEN>,
}

impl Config {
    /// The defaults of DESIGN.md.
    pub const DEFAULT: Config = Config {
        max_token_bytes: 16 * 1024,
        fetch_timeout_ms: 30_000,
        min_lifetime_ms: 60_000,
        refresh_margin_ms: 300_000,
        backoff_initial_ms: 1_000,
        backoff_max_ms: 16_000,
        jitter_percent: 20,
        gone_interval_ms: 10_000,
        gone_window_ms: 70_000,
        retry_after_max_ms: 60_000,
        negative_ttl_ms: 30_000,
        eager_retry_ms: 30_000,
        rate: 20,
        rate_window_ms: 1_000,
        rate_margin_ms: 50,
        in_flight: 5,
        verify_client_id: true,
        seed: 0x9e37_79b9_7f4a_7c15,
        arc_key_dir: heapless::String::new(),
    };

    /// Checks the values against their bounds.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_token_bytes < MIN_TOKEN_BYTES || self.max_token_bytes > u32::MAX as usize / 2 {
            return Err(ConfigError::MaxTokenBytes);
        }
        if self.rate == 0 || self.rate > MAX_RATE || self.rate_window_ms == 0 {
            return Err(ConfigError::Rate);
        }
        if self.in_flight == 0 || self.in_flight > MAX_IN_FLIGHT {
            return Err(ConfigError::InFlight);
        }
        if self.jitter_percent > 100 {
            return Err(ConfigError::Jitter);
        }
        if self.fetch_timeout_ms == 0 || self.backoff_initial_ms == 0 {
            return Err(ConfigError::ZeroDuration);
        }
        Ok(())
    }

    /// The Arc key folder in force.
    pub fn arc_key_dir(&self) -> &str {
        if self.arc_key_dir.is_empty() {
            ARC_DEFAULT_KEY_DIR
        } else {
            &self.arc_key_dir
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why a configuration was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// `max_token_bytes` is below 8 KiB or absurdly large.
    MaxTokenBytes,
    /// `rate` is 0 or above [`MAX_RATE`], or the window is 0.
    Rate,
    /// `in_flight` is 0 or above [`MAX_IN_FLIGHT`].
    InFlight,
    /// `jitter_percent` is above 100.
    Jitter,
    /// A duration that must be positive is 0.
    ZeroDuration,
}

impl ConfigError {
    /// A short description of the error.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::MaxTokenBytes => "max_token_bytes must be at least 8 KiB",
            Self::Rate => "rate must be 1..=128 per non-zero window",
            Self::InFlight => "in_flight must be 1..=32",
            Self::Jitter => "jitter_percent must be at most 100",
            Self::ZeroDuration => "fetch timeout and backoff must be positive",
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl core::error::Error for ConfigError {}

/// Delay before retry number `attempt` (1-based): doubling from the initial delay up to the
/// cap, then moved by up to ±`jitter_percent` using `random`.
pub(crate) fn backoff_ms(config: &Config, attempt: u32, random: u64) -> u64 {
    let doublings = attempt.saturating_sub(1).min(32);
    let base = config
        .backoff_initial_ms
        .saturating_mul(1u64 << doublings)
        .min(config.backoff_max_ms);
    jitter(base, config.jitter_percent, random)
}

fn jitter(base: u64, percent: u8, random: u64) -> u64 {
    let span = base / 100 * u64::from(percent) + base % 100 * u64::from(percent) / 100;
    if span == 0 {
        return base;
    }
    // random in [0, 2·span] shifted to [-span, +span]
    base - span + random % (2 * span + 1)
}

/// The delay a `Retry-After` asks for, capped, and never below the first backoff step so a
/// `Retry-After: 0` cannot make a hot loop.
pub(crate) fn retry_after_ms(config: &Config, retry_after: RetryAfter, now_ms: u64) -> u64 {
    let wanted = match retry_after {
        RetryAfter::Seconds(s) => s.saturating_mul(1000),
        RetryAfter::EpochSeconds(epoch) => epoch.saturating_mul(1000).saturating_sub(now_ms),
    };
    wanted.clamp(config.backoff_initial_ms, config.retry_after_max_ms)
}

/// When a token fetched at `request_at_ms` should be refreshed (D8).
///
/// `refresh_in` (seconds) wins if the server gave one; else half the lifetime for lifetimes of
/// two hours or more; else expiry minus the margin. Then moved earlier by the key's own jitter,
/// `key_hash mod max(10 % of lifetime, keys ÷ rate)`, and never later than expiry minus the
/// margin, so 1000 identities fetched in the same second do not all refresh in the same second.
pub(crate) fn refresh_on_ms(
    config: &Config,
    key_hash: u32,
    request_at_ms: u64,
    expires_on_ms: u64,
    refresh_in_s: Option<u64>,
    keys: u32,
) -> u64 {
    let lifetime = expires_on_ms.saturating_sub(request_at_ms);
    let latest = expires_on_ms.saturating_sub(config.refresh_margin_ms);
    let base = match refresh_in_s {
        Some(s) => request_at_ms.saturating_add(s.saturating_mul(1000)),
        None if lifetime >= 7_200_000 => request_at_ms + lifetime / 2,
        None => latest,
    };
    let spread_by_rate = u64::from(keys) * config.rate_window_ms / u64::from(config.rate.max(1));
    let spread = (lifetime / 10).max(spread_by_rate).max(1);
    let jitter = u64::from(mix(key_hash)) % spread;
    base.min(latest).saturating_sub(jitter).max(request_at_ms)
}

/// A 32-bit finaliser (murmur3's) so neighbouring hashes land far apart.
pub(crate) fn mix(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// A small deterministic generator (xorshift64*) seeded from [`Config::seed`].
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) const fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x2545_f491_4f6c_dd1d
        } else {
            seed
        })
    }

    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// One request in flight: which ticket, and when its lease lapses.
#[derive(Clone, Copy, Debug)]
struct Flight {
    ticket: u64,
    lease_until_ms: u64,
}

/// No ticket owns this start (see [`Start::owner`]).
const NO_OWNER: u64 = u64::MAX;

/// Room for every start that can be inside one window: `rate` handed out, plus the starts a
/// restamp moves into the window (at most one per request in flight).
const STARTS: usize = (MAX_RATE + MAX_IN_FLIGHT) as usize;

/// A request start: when, and the ticket whose request it is while that can still move it.
#[derive(Clone, Copy, Debug)]
struct Start {
    at: u64,
    owner: u64,
}

/// The request budget of one endpoint (D9): request starts in a sliding window and requests in
/// flight.
#[derive(Clone, Debug)]
pub(crate) struct Budget {
    /// The last starts, in no order (a restamp moves one later than those after it): a new
    /// start takes the place of the earliest, so none inside the window is ever dropped.
    starts: [Start; STARTS],
    /// How many of `starts` are in use.
    len: usize,
    flights: [Flight; MAX_IN_FLIGHT as usize],
    /// A token has been received from this endpoint (so refusals are no longer "unavailable").
    pub(crate) ever_ok: bool,
}

impl Budget {
    pub(crate) const EMPTY: Budget = Budget {
        starts: [Start {
            at: 0,
            owner: NO_OWNER,
        }; STARTS],
        len: 0,
        flights: [Flight {
            ticket: 0,
            lease_until_ms: 0,
        }; MAX_IN_FLIGHT as usize],
        ever_ok: false,
    };

    /// `Err(retry_at)` when one more start now would exceed the rate: `rate` starts are still
    /// inside the window (widened by the margin), counted by their times.
    pub(crate) fn check_rate(&self, config: &Config, now_ms: u64) -> Result<(), u64> {
        let rate = config.rate.min(MAX_RATE) as usize;
        let span = config.rate_window_ms.saturating_add(config.rate_margin_ms);
        let mut live = [0u64; STARTS];
        let mut n = 0;
        for s in self.starts[..self.len]
            .iter()
            .filter(|s| s.at.saturating_add(span) > now_ms)
        {
            live[n] = s.at;
            n += 1;
        }
        if n < rate {
            return Ok(());
        }
        // One more start fits once `n - rate + 1` of the live starts have left the window.
        let live = &mut live[..n];
        live.sort_unstable();
        Err(live[n - rate].saturating_add(span))
    }

    /// `Err(retry_at)` when the in-flight cap is reached (retry_at: the first lease to lapse).
    pub(crate) fn check_in_flight(&self, config: &Config, now_ms: u64) -> Result<(), u64> {
        let mut live = 0;
        let mut first_free = u64::MAX;
        for f in self.flights.iter().filter(|f| f.lease_until_ms > now_ms) {
            live += 1;
            first_free = first_free.min(f.lease_until_ms);
        }
        if live < config.in_flight {
            Ok(())
        } else {
            Err(first_free)
        }
    }

    /// Both checks.
    pub(crate) fn check(&self, config: &Config, now_ms: u64) -> Result<(), u64> {
        self.check_in_flight(config, now_ms)?;
        self.check_rate(config, now_ms)
    }

    /// Records a request start that no ticket will move.
    pub(crate) fn record_start(&mut self, now_ms: u64) {
        self.record(now_ms, NO_OWNER);
    }

    /// Records a start in a free place, or in the earliest start's.
    fn record(&mut self, now_ms: u64, owner: u64) {
        let i = if self.len < STARTS {
            self.len += 1;
            self.len - 1
        } else {
            let mut earliest = 0;
            for (i, s) in self.starts.iter().enumerate() {
                if s.at < self.starts[earliest].at {
                    earliest = i;
                }
            }
            earliest
        };
        self.starts[i] = Start { at: now_ms, owner };
    }

    /// Records a new request in flight (after [`check`](Self::check) said yes).
    pub(crate) fn begin(&mut self, ticket: u64, now_ms: u64, lease_until_ms: u64) {
        self.record(now_ms, ticket);
        if let Some(f) = self.flights.iter_mut().find(|f| f.lease_until_ms <= now_ms) {
            *f = Flight {
                ticket,
                lease_until_ms,
            };
        }
    }

    /// The request of `ticket` is being written now: its start moves to `now_ms`, closer to the
    /// moment it reaches the endpoint (a driver may wait for a lock or a thread in between).
    /// A start that newer ones have replaced is recorded anew.
    pub(crate) fn restamp(&mut self, ticket: u64, now_ms: u64) {
        if !self
            .flights
            .iter()
            .any(|f| f.ticket == ticket && f.lease_until_ms > now_ms)
        {
            return;
        }
        match self.starts[..self.len]
            .iter_mut()
            .find(|s| s.owner == ticket)
        {
            Some(s) => s.at = s.at.max(now_ms),
            None => self.record(now_ms, ticket),
        }
    }

    /// The request of `ticket` is over (its start still counts).
    pub(crate) fn end(&mut self, ticket: u64) {
        for f in self.flights.iter_mut().filter(|f| f.ticket == ticket) {
            f.lease_until_ms = 0;
        }
        for s in self.starts[..self.len]
            .iter_mut()
            .filter(|s| s.owner == ticket)
        {
            s.owner = NO_OWNER;
        }
    }

    /// How many requests are in flight now.
    pub(crate) fn in_flight(&self, now_ms: u64) -> u32 {
        self.flights
            .iter()
            .filter(|f| f.lease_until_ms > now_ms)
            .count() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_within_jitter() {
        let c = Config::DEFAULT;
        let mut rng = Rng::new(7);
        for (attempt, base) in [
            (1, 1000u64),
            (2, 2000),
            (3, 4000),
            (4, 8000),
            (5, 16000),
            (6, 16000),
            (40, 16000),
        ] {
            for _ in 0..200 {
                let d = backoff_ms(&c, attempt, rng.next());
                assert!(
                    d >= base * 8 / 10 && d <= base * 12 / 10,
                    "attempt {attempt}: {d}"
                );
            }
        }
        let no_jitter = Config {
            jitter_percent: 0,
            ..Config::DEFAULT
        };
        assert_eq!(backoff_ms(&no_jitter, 3, 12345), 4000);
    }

    #[test]
    fn jitter_reaches_both_ends() {
        let (mut lo, mut hi) = (u64::MAX, 0);
        let mut rng = Rng::new(1);
        for _ in 0..10_000 {
            let d = jitter(1000, 20, rng.next());
            lo = lo.min(d);
            hi = hi.max(d);
        }
        assert!(lo < 820 && hi > 1180, "{lo}..{hi}");
    }

    #[test]
    fn retry_after_is_capped_and_floored() {
        let c = Config::DEFAULT;
        let now_ms = 1_700_000_000_000;
        assert_eq!(retry_after_ms(&c, RetryAfter::Seconds(5), now_ms), 5000);
        assert_eq!(retry_after_ms(&c, RetryAfter::Seconds(0), now_ms), 1000);
        assert_eq!(
            retry_after_ms(&c, RetryAfter::Seconds(3600), now_ms),
            60_000
        );
        assert_eq!(
            retry_after_ms(&c, RetryAfter::EpochSeconds(1_700_000_007), now_ms),
            7000
        );
        assert_eq!(
            retry_after_ms(&c, RetryAfter::EpochSeconds(1_600_000_000), now_ms),
            1000
        );
    }

    #[test]
    fn refresh_time_rules() {
        let c = Config::DEFAULT;
        let t = 1_700_000_000_000u64;
        let h = 3_600_000;
        // 24 h token: half-life, moved earlier by at most 10 % of the lifetime.
        for hash in [0u32, 1, 77, u32::MAX] {
            let r = refresh_on_ms(&c, hash, t, t + 24 * h, None, 1);
            assert!(
                r <= t + 12 * h && r >= t + 12 * h - 24 * h / 10,
                "{hash}: {r}"
            );
        }
        // 1 h token: expiry − 5 min, minus up to 6 min.
        let r = refresh_on_ms(&c, 5, t, t + h, None, 1);
        assert!(r <= t + h - 300_000 && r >= t + h - 300_000 - 360_000);
        // refresh_in wins, but never after expiry − 5 min.
        let r = refresh_on_ms(&c, 0, t, t + 24 * h, Some(600), 1);
        assert!(r <= t + 600_000);
        let r = refresh_on_ms(&c, 0, t, t + h, Some(86_400), 1);
        assert!(r <= t + h - 300_000);
        // A token shorter than the margin is due at once, not before it was asked for.
        assert_eq!(refresh_on_ms(&c, 9, t, t + 200_000, None, 1), t);
    }

    #[test]
    fn budget_window_and_in_flight() {
        let c = Config::DEFAULT;
        let mut b = Budget::EMPTY;
        let now_ms = 10_000;
        for i in 0..5 {
            assert_eq!(b.check(&c, now_ms), Ok(()));
            b.begin(i, now_ms, now_ms + 30_000);
        }
        assert_eq!(b.check(&c, now_ms), Err(now_ms + 30_000), "5 in flight");
        b.end(3);
        assert_eq!(b.in_flight(now_ms), 4);
        assert_eq!(b.check(&c, now_ms), Ok(()));
        // Fill the window: 20 starts.
        for _ in 0..15 {
            b.record_start(now_ms + 10);
        }
        assert_eq!(
            b.check_rate(&c, now_ms + 500),
            Err(now_ms + 1050),
            "window + margin"
        );
        assert_eq!(b.check_rate(&c, now_ms + 1049), Err(now_ms + 1050));
        assert_eq!(b.check_rate(&c, now_ms + 1050), Ok(()));
        // After the leases lapse, flights are free again.
        assert_eq!(b.in_flight(now_ms + 30_000), 0);
    }

    #[test]
    fn a_restamped_start_outlives_older_starts() {
        let c = Config {
            rate: MAX_RATE,
            ..Config::DEFAULT
        };
        let mut b = Budget::EMPTY;
        b.begin(1, 0, 100_000);
        for _ in 0..STARTS {
            b.record_start(10);
        }
        // Ticket 1's start was the earliest and has been replaced: its request starts now, so
        // it is recorded anew.
        b.restamp(1, 5_000);
        assert_eq!(b.starts.iter().filter(|s| s.at == 5_000).count(), 1);
        // A restamped start is never replaced while earlier ones remain (the ring once dropped
        // it by age of hand-out and let a 21st start into the window).
        for _ in 0..MAX_RATE - 1 {
            b.record_start(5_000);
        }
        b.restamp(1, 5_010);
        assert_eq!(b.check_rate(&c, 5_010), Err(5_000 + 1_050));
        assert_eq!(b.starts.iter().filter(|s| s.at >= 5_000).count(), 128);
        // Once over, the request's start stays counted but no longer moves.
        b.end(1);
        b.restamp(1, 6_000);
        assert!(b.starts.iter().all(|s| s.at != 6_000));
    }

    #[test]
    fn restamped_starts_count_by_time_not_order() {
        let c = Config::DEFAULT;
        let mut b = Budget::EMPTY;
        b.begin(1, 0, 100_000);
        for _ in 0..19 {
            b.record_start(10);
        }
        b.restamp(1, 900);
        // The 19 starts at 10 left the window; the restamped one at 900 has not.
        assert_eq!(b.check_rate(&c, 1_100), Ok(()));
        for _ in 0..19 {
            b.record_start(1_100);
        }
        assert_eq!(b.check_rate(&c, 1_100), Err(900 + 1_050));
        assert_eq!(b.check_rate(&c, 1_950), Ok(()));
    }
}
