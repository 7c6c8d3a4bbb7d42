//! The background refresher: one thread per client that renews tokens before they expire, so
//! that hot paths never wait on the endpoint.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use imds_cache::{Key, Ticket};

use crate::events::Event;
use crate::shared::{Locked, Shared};

/// Where the refresh a hit came with runs when there is no background refresher.
pub(crate) enum Without {
    /// On the caller's thread, before it returns (a blocking call: the token it copied out
    /// stays valid whatever the refresh does).
    Caller,
    /// On the worker pool, so that the caller (an event loop) is not held up.
    Pool,
}

impl Shared {
    /// Sees to the refresh ticket a hit for `key` came with, releasing `state`: the
    /// background refresher's queue when there is one, else `without`.
    pub(crate) fn hand_off_refresh(
        self: &Arc<Self>,
        mut state: Locked<'_>,
        ticket: Ticket,
        key: &Key<'_>,
        deadline: Instant,
        without: Without,
    ) {
        if self.config.refresher {
            state.queue.push_back(ticket);
            drop(state);
            self.refresher.notify_one();
            return;
        }
        drop(state);
        match without {
            Without::Caller => {
                let _ = self.fetch(ticket, Some(key), Some(deadline), 1, true);
            }
            Without::Pool => self.submit_refresh(ticket, key, deadline),
        }
    }

    /// Starts the refresher if this process has none (at creation, and lazily after `fork`).
    pub(crate) fn ensure_refresher(self: &Arc<Self>) {
        if !self.config.refresher {
            return;
        }
        let pid = std::process::id();
        {
            let mut state = self.state.lock();
            if state.refresher_pid == pid || state.stopping {
                return;
            }
            state.refresher_pid = pid;
        }
        let weak = Arc::downgrade(self);
        let handle = std::thread::Builder::new()
            .name("imds-cache-refresher".into())
            .spawn(move || refresher(weak))
            .ok();
        // A handle from before a fork names a thread of the parent: forget it.
        *self.refresher_thread.lock() = handle;
    }
}

/// The refresher: takes refresh tickets handed out with hits, and polls for due refreshes
/// at the cache's next deadline. Ends when the client is dropped.
fn refresher(weak: Weak<Shared>) {
    // The ticket's key, decoded only for an observer (1028 bytes hold any key).
    let mut key_buf = Vec::new();
    loop {
        let Some(shared) = weak.upgrade() else { return };
        let ticket = {
            let mut state = shared.lock();
            if state.stopping || state.refresher_pid != std::process::id() {
                return;
            }
            match state.queue.pop_front() {
                Some(t) => Some(t),
                None => match state.cache.poll_refresh(shared.now_ms()) {
                    Ok(t) => Some(t),
                    Err(next) => {
                        let wake = next
                            .map_or(Duration::from_secs(60), |at| shared.until(at))
                            .min(Duration::from_secs(60));
                        shared.wait_refresher(&mut state, wake.max(Duration::from_millis(1)));
                        None
                    }
                },
            }
        };
        let Some(ticket) = ticket else { continue };
        if shared.config.events.is_none() {
            let _ = shared.fetch(ticket, None, None, 1, true);
            continue;
        }
        key_buf.resize(1028, 0);
        // A ticket lapsed meanwhile has no key: its fetch fails at once, untold.
        let key = shared
            .state
            .lock()
            .cache
            .ticket_key(ticket, &mut key_buf)
            .ok();
        if let Some(key) = &key {
            shared.emit(&Event::Refresh { key: *key });
        }
        let _ = shared.fetch(ticket, key.as_ref(), None, 1, true);
    }
}
