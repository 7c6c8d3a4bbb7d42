//! D12: `fork` in a process that uses clients. `pthread_atfork` handlers hold every client's
//! lock across the fork, so the child never inherits a lock held by a thread it does not
//! have; the child then drops live tickets and restarts its refresher lazily.

use std::sync::{Once, Weak};

use parking_lot::{Condvar, Mutex};

use crate::pool::Pool;
use crate::shared::Shared;

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
        lock_for_fork(&shared);
    }
    std::mem::forget(clients);
}

fn release(child: bool) {
    // SAFETY: `prepare` locked CLIENTS on this thread and forgot the guard.
    unsafe { CLIENTS.force_unlock() };
    for shared in CLIENTS.lock().iter().filter_map(Weak::upgrade) {
        unlock_after_fork(&shared, child);
    }
}

extern "C" fn parent() {
    release(false);
}

extern "C" fn child() {
    release(true);
}

/// D12 `prepare`: hold the lock across `fork` so the child gets it in a known state.
fn lock_for_fork(shared: &Shared) {
    // The pools before the state: workers take them in that order.
    shared.pools.iter().for_each(|p| std::mem::forget(p.lock()));
    std::mem::forget(shared.state.lock());
}

/// D12 `parent` / `child`: release the lock taken by [`lock_for_fork`]; in the child, drop
/// the tickets of threads that are gone and let the refresher restart lazily.
fn unlock_after_fork(shared: &Shared, child: bool) {
    if child {
        forget_parent_threads(shared);
    }
    // SAFETY: `lock_for_fork` locked it on this thread (the forking thread, which is the only
    // thread in the child) and forgot the guard; nothing else can hold it now.
    unsafe {
        shared.state.force_unlock();
        shared.pools.iter().for_each(|p| p.force_unlock());
    }
    if child {
        // A thread of the parent may have held it at the fork; none exists here.
        if shared.refresher_thread.is_locked() {
            // SAFETY: the child has one thread, this one, which does not hold it.
            unsafe { shared.refresher_thread.force_unlock() };
        }
        reset_child(shared);
    }
}

/// The child's copy of parking_lot's wait queues still lists the parent's threads that were
/// parked on our locks and condition variables. An unlock could hand a lock to one of them
/// (parking_lot's fair hand-off), and it would stay locked for good: the child hung in
/// `fork_child_keeps_serving`. They are dropped from the queues, before any unlock here.
fn forget_parent_threads(shared: &Shared) {
    let forget = |key: usize| {
        // SAFETY: `key` is the address parking_lot parks under for that lock or condition
        // variable (`&RawMutex` / `&Condvar` as usize), so the queue holds only its waiters;
        // "unparking" a thread that does not exist in the child writes to its copied memory,
        // which nothing reads.
        unsafe { parking_lot_core::unpark_all(key, parking_lot_core::DEFAULT_UNPARK_TOKEN) };
    };
    // SAFETY: `raw` only gives the address; the locks are not touched through it.
    unsafe {
        forget(shared.state.raw() as *const _ as usize);
        forget(shared.refresher_thread.raw() as *const _ as usize);
        shared
            .pools
            .iter()
            .for_each(|p| forget(p.raw() as *const _ as usize));
    }
    let condvars = shared.stripes.iter().chain(&shared.jobs_ready);
    for c in condvars.chain([&shared.completions, &shared.refresher]) {
        forget(c as *const Condvar as usize);
    }
}

/// The child's reset: tickets released (their threads do not exist here), queue cleared,
/// refresher to be restarted on the next miss, the worker pool emptied. Tokens are kept.
pub(crate) fn reset_child(shared: &Shared) {
    // The workers and the callers their jobs would answer live in the parent.
    for pool in &shared.pools {
        *pool.lock() = Pool::default();
    }
    let mut state = shared.state.lock();
    // A host table's tickets are every process's: the parent's fetches go on, and a ticket of
    // a thread that is gone lapses with its lease, as a dead process's does.
    #[cfg(target_os = "linux")]
    let host = shared.host.is_some();
    #[cfg(not(target_os = "linux"))]
    let host = false;
    if !host {
        state.cache.release_all_tickets();
    }
    state.queue.clear();
    state.refresher_pid = 0;
}
