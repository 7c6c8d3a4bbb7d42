//! A global allocator counting the allocations made on the calling thread while it watches.
//!
//! Included by path (`#[path = …] mod counting_alloc;`) from `client/tests/alloc.rs` and
//! `benches/tests/zero_alloc.rs`, never from `common/mod.rs`: including it installs the
//! allocator, which only the zero-allocation tests want.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;

struct Counting;

thread_local! {
    static WATCHING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; the bookkeeping touches only `const`
// thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if WATCHING.with(Cell::get) {
            COUNT.with(|c| c.set(c.get() + 1));
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if WATCHING.with(Cell::get) {
            COUNT.with(|c| c.set(c.get() + 1));
        }
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocations made on this thread by `f` (other threads are not counted).
pub(crate) fn allocations<R>(f: impl FnOnce() -> R) -> u64 {
    COUNT.with(|c| c.set(0));
    WATCHING.with(|w| w.set(true));
    black_box(f());
    WATCHING.with(|w| w.set(false));
    COUNT.with(Cell::get)
}
