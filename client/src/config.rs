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
    /// Whether the table and the request budget are this process's or the host's.
    pub share: Share,
    /// The directory of the host's files ([`Share::Host`]); `None`: `$IMDS_CACHE_DIR`, else
    /// `$XDG_RUNTIME_DIR/imds-cache`, else `/run/user/<uid>/imds-cache`.
    pub share_dir: Option<std::path::PathBuf>,
}

/// Who shares a client's tokens and request budget.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Share {
    /// [`Share::Host`] when `IMDS_CACHE_SHARE=host`, else [`Share::Process`]: read once, when
    /// the client is made.
    #[default]
    FromEnv,
    /// This process's own table; one budget per endpoint for every client of the process.
    Process,
    /// One table and one budget for every process of this user on the host (Linux): the
    /// table in a file every process maps, hits read from it without a lock or a system
    /// call. When the files cannot be trusted or used, the client keeps a table of its own
    /// and says why once (a [`NotShared`](crate::events::Event::NotShared) event, else a line
    /// on stderr): sharing never fails a call.
    Host,
}

impl Share {
    /// What [`Share::FromEnv`] means in this environment.
    pub(crate) fn resolve(self, env: impl Fn(&str) -> Option<String>) -> Share {
        match self {
            Share::FromEnv => match env("IMDS_CACHE_SHARE").as_deref() {
                Some("host") => Share::Host,
                _ => Share::Process,
            },
            other => other,
        }
    }
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
            .field("share", &self.share)
            .field("share_dir", &self.share_dir)
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
            share: Share::FromEnv,
            share_dir: None,
        }
    }
}
