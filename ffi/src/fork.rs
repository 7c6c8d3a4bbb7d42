//! D12: `fork` in a process that uses clients. `pthread_atfork` handlers hold every client's
//! lock across the fork, so the child never inherits a lock held by a thread it does not
//! have; the child then drops live tickets and restarts its refresher lazily.

use std::sync::{Once, Weak};

use parking_lot::Mutex;

use crate::client::{self, Shared};

static CLIENTS: Mutex<Vec<Weak<Shared>>> = Mutex::new(Vec::new());
static INSTALL: Once = Once::new();

/// Remembers a client for the fork handlers (installed on first use).
pub(crate) fn register(shared: Weak<Shared>) {
    INSTALL.call_once(|| {
        // SAFETY: the handlers are `extern "C"` functions without arguments that only touch
        // this module's statics; registering them has no other precondition.
        unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
    });
    let mut clients = CLIENTS.lock();
    clients.retain(|w| w.strong_count() > 0);
    clients.push(shared);
}

extern "C" fn prepare() {
    let clients = CLIENTS.lock();
    for shared in clients.iter().filter_map(Weak::upgrade) {
        client::lock_for_fork(&shared);
    }
    std::mem::forget(clients);
}

fn release(child: bool) {
    // SAFETY: `prepare` locked CLIENTS on this thread and forgot the guard.
    unsafe { CLIENTS.force_unlock() };
    for shared in CLIENTS.lock().iter().filter_map(Weak::upgrade) {
        client::unlock_after_fork(&shared, child);
    }
}

extern "C" fn parent() {
    release(false);
}

extern "C" fn child() {
    release(true);
}
