//! Where the client reads `now_ms` from (D1): the wall clock, or a clock a test injects so that
//! the driver runs on fake time.

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// The wall clock in milliseconds since the Unix epoch (D1), 0 if it reads before 1970: the
/// default [`Clock`], and the `now_ms` the C ABI and the Python wheel read.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The clock of [`ClientConfig::clock`](crate::ClientConfig::clock): what the client passes
/// the core as `now_ms` (token expiry, refresh times, backoff, the budget's window). The default
/// is the wall clock ([`now_ms`]).
///
/// Only `now_ms` comes from it: the deadline of a blocking call and the per-attempt timeouts
/// are real time limits on sockets and waits, measured on the monotonic clock. A waiter
/// sleeps (in real time) until the clock says its retry is due, so a clock that stands still
/// suits calls that never wait for a retry.
#[derive(Clone, Default)]
pub struct Clock(Source);

#[derive(Clone, Default)]
enum Source {
    /// [`now_ms`], called directly (the hit path pays no indirect call).
    #[default]
    Wall,
    /// A clock given by the user.
    Custom(Arc<dyn Fn() -> u64 + Send + Sync>),
}

impl Clock {
    /// The wall clock (the default).
    pub fn wall() -> Self {
        Self(Source::Wall)
    }

    /// A clock reading `now_ms` (epoch milliseconds) from `f`, which must not panic. The core
    /// clamps what it reads to be non-decreasing.
    pub fn new(f: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        Self(Source::Custom(Arc::new(f)))
    }

    /// Now, in epoch milliseconds.
    pub fn now_ms(&self) -> u64 {
        match &self.0 {
            Source::Wall => now_ms(),
            Source::Custom(f) => f(),
        }
    }
}

/// Names the kind of clock; a custom one's closure cannot be shown.
impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Source::Wall => f.write_str("Clock(wall)"),
            Source::Custom(_) => f.write_str("Clock(custom)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn a_custom_clock_is_read() {
        let t = Arc::new(AtomicU64::new(1_700_000_000_000));
        let fake = Clock::new({
            let t = t.clone();
            move || t.load(Ordering::Relaxed)
        });
        assert_eq!(fake.now_ms(), 1_700_000_000_000);
        t.fetch_add(2500, Ordering::Relaxed);
        assert_eq!(fake.now_ms(), 1_700_000_002_500);
        assert_eq!(format!("{fake:?}"), "Clock(custom)");
    }

    #[test]
    #[cfg_attr(miri, ignore = "reads the wall clock, which Miri's isolation forbids")]
    fn the_default_is_the_wall_clock() {
        let wall = Clock::default();
        assert_eq!(format!("{wall:?}"), "Clock(wall)");
        // The wall clock is after 2020 (1577836800000 ms) on any machine that runs this.
        assert!(wall.now_ms() > 1_577_836_800_000);
    }
}
