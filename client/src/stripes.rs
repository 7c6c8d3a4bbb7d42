//! A counter that threads add to without sharing a cache line: each thread adds to its own
//! stripe, and reading sums the stripes. The hit path counts with it, so hits on many cores
//! never contend on one counter.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Stripes per counter: more than the cores a cache usually serves; threads beyond that
/// share stripes (still correct, a little slower).
const STRIPES: usize = 16;

/// One stripe on a cache line of its own (128 bytes: adjacent-line prefetch on x86).
#[repr(align(128))]
#[derive(Default)]
struct Stripe(AtomicU64);

/// A striped event counter.
#[derive(Default)]
pub(crate) struct Counter([Stripe; STRIPES]);

/// Hands each thread its stripe, round-robin, the first time it counts.
static NEXT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static MINE: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn my_stripe() -> usize {
    MINE.with(|mine| {
        if mine.get() == usize::MAX {
            mine.set(NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES);
        }
        mine.get()
    })
}

impl Counter {
    /// Counts one event on this thread's stripe.
    pub(crate) fn add_one(&self) {
        // Relaxed: a count, read only as a total; no other memory depends on it.
        self.0[my_stripe()].0.fetch_add(1, Ordering::Relaxed);
    }

    /// The events counted so far, on every stripe.
    pub(crate) fn sum(&self) -> u64 {
        self.0.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_add_up() {
        let c = Counter::default();
        std::thread::scope(|s| {
            for _ in 0..20 {
                s.spawn(|| (0..1000).for_each(|_| c.add_one()));
            }
        });
        assert_eq!(c.sum(), 20_000);
    }
}
