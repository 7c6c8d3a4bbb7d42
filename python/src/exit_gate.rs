//! The door between native code and the interpreter, closed at exit.
//!
//! Once the interpreter is finalizing, a thread other than the finalizing one that takes the
//! GIL is ended by CPython with `pthread_exit`. Through Rust frames that aborts the process
//! ("FATAL: exception not rethrown", or `PyGILState_Release: thread state must be current`
//! for a thread that had no Python state). Two kinds of threads are at risk: the driver's
//! (the worker pool answering asyncio waiters, the refresher logging), which take the GIL
//! from outside Python, and Python's daemon threads waiting in this module with the GIL
//! released (a blocking `get_token` at exit).
//!
//! So every stay of a thread in native code is counted, and `atexit` (which runs before
//! finalization starts, on the thread that will finalize) closes the gate and waits, with the
//! GIL released, until the count is zero. After that no thread enters: a driver thread skips
//! what it would have done in Python (nobody waits for it any more), a Python thread gets a
//! `RuntimeError`, and a thread that was waiting with the GIL released parks instead of
//! taking the GIL back (the process is ending; CPython 3.14 parks such threads itself). The
//! finalizing thread itself is never stopped.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

/// The top bit: the gate is closed. The rest: threads inside native code now.
static GATE: AtomicUsize = AtomicUsize::new(0);
const CLOSED: usize = 1 << (usize::BITS - 1);

/// How long exit waits for threads inside: a logging handler that blocks for longer than
/// this is not ours to wait for.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

thread_local! {
    /// Set on the thread that closed the gate: it finalizes, and is never turned away.
    static CLOSER: Cell<bool> = const { Cell::new(false) };
}

/// A thread's stay inside native code; leaving is dropping it.
pub(crate) struct Inside(());

impl Drop for Inside {
    fn drop(&mut self) {
        GATE.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts this thread in, unless the gate is closed (the finalizing thread always gets in).
pub(crate) fn enter() -> Option<Inside> {
    // SeqCst pairs with `_close_gate`: either it sees this thread counted and waits for it,
    // or this thread sees the gate closed and stays out.
    if GATE.fetch_add(1, Ordering::SeqCst) & CLOSED != 0 && !CLOSER.get() {
        GATE.fetch_sub(1, Ordering::SeqCst);
        return None;
    }
    Some(Inside(()))
}

/// [`enter`] for a call from Python: a `RuntimeError` when the interpreter is exiting.
pub(crate) fn enter_from_python() -> PyResult<Inside> {
    enter().ok_or_else(|| PyRuntimeError::new_err("imds_cache: the interpreter is exiting"))
}

/// Runs `f` with the GIL on a driver thread, unless the interpreter is exiting (`None`).
pub(crate) fn with_gil<R>(f: impl for<'py> FnOnce(Python<'py>) -> R) -> Option<R> {
    let _inside = enter()?;
    Some(Python::with_gil(f))
}

/// Whether the gate is closed (the interpreter is exiting).
pub(crate) fn closed() -> bool {
    GATE.load(Ordering::Relaxed) & CLOSED != 0
}

/// For a thread counted in (the `Inside` proves it) and about to take the GIL back: if the
/// gate has closed meanwhile, it leaves the count and never returns (see the module doc).
pub(crate) fn park_if_closed(_: &Inside) {
    if GATE.load(Ordering::SeqCst) & CLOSED == 0 || CLOSER.get() {
        return;
    }
    GATE.fetch_sub(1, Ordering::SeqCst);
    loop {
        std::thread::park();
    }
}

/// `py.allow_threads(f)` for a thread inside: parks instead of taking the GIL back when the
/// interpreter started exiting while `f` ran.
pub(crate) fn allow_threads<T: Send>(
    py: Python<'_>,
    inside: &Inside,
    f: impl Send + FnOnce() -> T,
) -> T {
    py.allow_threads(move || {
        let out = f();
        park_if_closed(inside);
        out
    })
}

/// Drops `value` with the GIL released (it may join a refresher that waits for the GIL to
/// log); once the gate is closed no driver thread takes the GIL, so it is dropped in place.
pub(crate) fn drop_released<T: Send>(value: T) {
    Python::with_gil(|py| match enter() {
        Some(inside) => allow_threads(py, &inside, move || drop(value)),
        None => drop(value),
    });
}

/// `atexit`: closes the gate and waits, with the GIL released, for the threads inside native
/// code to leave or park.
#[pyfunction]
pub(crate) fn _close_gate(py: Python<'_>) {
    CLOSER.set(true);
    GATE.fetch_or(CLOSED, Ordering::SeqCst);
    py.allow_threads(|| {
        let until = Instant::now() + DRAIN_LIMIT;
        while GATE.load(Ordering::SeqCst) & !CLOSED != 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
}
