//! How a [`Client`](crate::Client) is set up.

use std::time::Duration;

use imds_cache::Config;

use crate::clock::Clock;
use crate::events::Observer;
use crate::source::SourceSpec;

/// How a [`Client`](crate::Client) is set up.
#[derive(Clone)]
pub struct ClientConfig {
    /// The core's policy (budget, backoff, lease, limits).
    pub cache: Config,
    /// Entries the cache holds.
    pub capacity: usize,
    /// Arena bytes per entry, on average (2 KiB tokens need 2 KiB + the key).
    pub bytes_per_entry: usize,
    /// Where tokens come from.
    pub source: SourceSpec,
    /// The SHA-1 thumbprint (40 hex digits, any case) of the only certificate an HTTPS
    /// endpoint may present: Service Fabric's `IDENTITY_SERVER_THUMBPRINT`. With
    /// [`SourceSpec::Auto`] the variable is read when each request is built unless this is set;
    /// an explicit HTTPS endpoint without it is `Error::Unsupported` at each call.
    pub server_thumbprint: Option<String>,
    /// Overall deadline of a blocking call (D7: 90 s, longer than the 410 window).
    pub deadline: Duration,
    /// Connect timeout per attempt (1 s).
    pub connect_timeout: Duration,
    /// Total time for one attempt's reads (10 s): a trickle is cut.
    pub attempt_timeout: Duration,
    /// Run the background refresher.
    pub refresher: bool,
    /// Told of requests, outcomes, throttling and refreshes (for logs); `None` costs nothing.
    pub events: Option<Observer>,
    /// Where `now_ms` comes from: the wall clock unless a test injects a fake one.
    pub clock: Clock,
}

/// Shows whether an observer is set, not the closure.
impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("cache", &self.cache)
            .field("capacity", &self.capacity)
            .field("bytes_per_entry", &self.bytes_per_entry)
            .field("source", &self.source)
            .field("server_thumbprint", &self.server_thumbprint)
            .field("deadline", &self.deadline)
            .field("connect_timeout", &self.connect_timeout)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("refresher", &self.refresher)
            .field("events", &self.events.is_some())
            .field("clock", &self.clock)
            .finish()
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            cache: Config::DEFAULT,
            capacity: 4096,
            bytes_per_entry: 2560,
            source: SourceSpec::Auto,
            server_thumbprint: None,
            deadline: Duration::from_secs(90),
            connect_timeout: Duration::from_secs(1),
            attempt_timeout: Duration::from_secs(10),
            refresher: true,
            events: None,
            clock: Clock::default(),
        }
    }
}
