//! What a [`Client`](crate::Client) tells an observer as it works: requests, their outcomes,
//! calls held back by the budget, background refreshes. For logs and metrics (the Python
//! wheel's `logging.getLogger("imds_cache")`); the cache works the same without one.
//!
//! An event names the key (flavour, identity selector, resource: none of them a secret) and
//! never carries token bytes or a secret header value.

use std::fmt;
use std::panic::{AssertUnwindSafe, RefUnwindSafe, UnwindSafe};
use std::sync::Arc;

use imds_cache::{Failure, Key};

/// The observer of [`ClientConfig::events`](crate::ClientConfig::events). It is called on the
/// thread doing the work (a caller, a pool worker, the refresher), never while the client
/// holds a lock, so it may block or take other locks (the GIL); it is never called on a hit.
#[derive(Clone)]
pub struct Observer(Arc<dyn Fn(&Event<'_>) + Send + Sync>);

impl Observer {
    /// An observer calling `f`.
    pub fn new(f: impl Fn(&Event<'_>) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// Tells `event`. A panic in the observer is caught and ignored: logging must not take
    /// the client (or the thread that refreshes for everyone) down.
    pub(crate) fn tell(&self, event: &Event<'_>) {
        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| (self.0)(event)));
    }
}

/// The client catches the observer's panics itself (see `tell`) and no client state lives in
/// it, so a config holding one stays usable across the C ABI's `catch_unwind`.
impl UnwindSafe for Observer {}
impl RefUnwindSafe for Observer {}

/// The closure cannot be shown.
impl fmt::Debug for Observer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Observer")
    }
}

/// Something the client did. Times are epoch seconds (`expires_on_s`, like
/// [`Client::get_token`](crate::Client::get_token)) or epoch milliseconds (`retry_at_ms`, like
/// the core).
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum Event<'a> {
    /// A request for `key`'s token is being sent. `attempt` counts the fetches of this call
    /// (1 for the first; a background refresh is 1); `refresh` says a usable token is held
    /// and this renews it. Arc's answer to its challenge belongs to the same attempt.
    Request {
        /// The key fetched.
        key: Key<'a>,
        /// 1 for a call's first fetch, 2 for its first retry, …
        attempt: u32,
        /// A still-usable token is being renewed.
        refresh: bool,
    },
    /// A token was received and stored.
    Token {
        /// The key fetched.
        key: Key<'a>,
        /// The token's expiry, epoch seconds.
        expires_on_s: u64,
        /// A still-usable token was renewed.
        refresh: bool,
    },
    /// The request failed in a way that is retried (D7): a 5xx, 429, 410, a reset…
    Retry {
        /// The key fetched.
        key: Key<'a>,
        /// What failed (its kind and HTTP status, 0 without a response).
        failure: Failure,
        /// When a new request may start, epoch milliseconds.
        retry_at_ms: u64,
        /// A still-usable token was being renewed (it is kept).
        refresh: bool,
    },
    /// The request failed for good (a terminal D7 outcome, or no endpoint here).
    Failed {
        /// The key fetched.
        key: Key<'a>,
        /// What failed.
        failure: Failure,
        /// A still-usable token was being renewed (it is kept).
        refresh: bool,
    },
    /// A call's request is held back by the endpoint's budget (rate or in-flight cap). Told
    /// once per call, not on every wake-up.
    Throttled {
        /// The key waited for.
        key: Key<'a>,
        /// When the budget frees up at the latest, epoch milliseconds.
        retry_at_ms: u64,
    },
    /// The background refresher starts renewing `key`'s token ([`Event::Request`] follows).
    Refresh {
        /// The key renewed.
        key: Key<'a>,
    },
    /// [`Share::Host`](crate::Share::Host) was asked for, but the host's files could not be
    /// trusted or used: this client keeps a table of its own. Told once, when it is made.
    NotShared {
        /// Which file or directory, and what is wrong with it.
        reason: &'a str,
    },
}

impl<'a> Event<'a> {
    /// The key the event is about, if it is about one.
    pub fn key(&self) -> Option<&Key<'a>> {
        match self {
            Self::Request { key, .. }
            | Self::Token { key, .. }
            | Self::Retry { key, .. }
            | Self::Failed { key, .. }
            | Self::Throttled { key, .. }
            | Self::Refresh { key } => Some(key),
            Self::NotShared { .. } => None,
        }
    }
}
