//! The word the table is made of (D15): `AtomicU64` where the target has 64-bit atomics, else
//! `AtomicU32` (a `cfg(loom)` test build swaps in loom's). Every access to the table is an
//! atomic load or store of one of these words, so a reader racing the writer is never a data
//! race; the seqlock in [`super::slot`] decides whether what it read was consistent.
//!
//! Also the views the table is read through: [`Lanes`] (`u32` entries packed into words: the
//! index) and byte ranges of words (the arena, little-endian).

#[cfg(not(all(loom, test)))]
pub(crate) use core::sync::atomic::{fence, Ordering};
#[cfg(all(loom, test))]
pub(crate) use loom::sync::atomic::{fence, Ordering};

/// One word of a cache's storage. Caller memory for
/// [`TokenCache::with_words`](crate::TokenCache::with_words) is a slice of these,
/// [`StorageLayout::words`](crate::StorageLayout::words) long; fresh words are `Word::new(0)`.
#[cfg(all(loom, test))]
pub type Word = loom::sync::atomic::AtomicU64;
/// One word of a cache's storage. Caller memory for
/// [`TokenCache::with_words`](crate::TokenCache::with_words) is a slice of these,
/// [`StorageLayout::words`](crate::StorageLayout::words) long; fresh words are `Word::new(0)`.
#[cfg(all(not(all(loom, test)), target_has_atomic = "64"))]
pub type Word = core::sync::atomic::AtomicU64;
/// One word of a cache's storage. Caller memory for
/// [`TokenCache::with_words`](crate::TokenCache::with_words) is a slice of these,
/// [`StorageLayout::words`](crate::StorageLayout::words) long; fresh words are `Word::new(0)`.
#[cfg(all(not(all(loom, test)), not(target_has_atomic = "64")))]
pub type Word = core::sync::atomic::AtomicU32;

/// The value a [`Word`] holds.
#[cfg(any(all(loom, test), target_has_atomic = "64"))]
pub(crate) type Val = u64;
/// The value a [`Word`] holds.
#[cfg(not(any(all(loom, test), target_has_atomic = "64")))]
pub(crate) type Val = u32;

/// Bytes in a [`Word`].
pub const WORD_BYTES: usize = core::mem::size_of::<Val>();
/// `u32` lanes in a word.
pub(crate) const LANES: usize = WORD_BYTES / 4;

/// A fresh word (`const`, for arrays of words in a `static`).
#[cfg(not(all(loom, test)))]
#[allow(clippy::declare_interior_mutable_const)] // each use is a new word, as intended
pub(crate) const ZERO: Word = Word::new(0);

/// Loads a word the writer reads back or a reader copies: Relaxed. The writer is the only
/// thread that stores these words (it holds the caller's lock), so it reads its own last
/// store; a reader's copy is validated by the slot's sequence (see `slot`), which supplies
/// the ordering.
#[inline]
pub(crate) fn load(w: &Word) -> Val {
    w.load(Ordering::Relaxed)
}

/// Stores a word inside a write section (or into memory no reader reaches yet): Relaxed; the
/// section's Release fence and Release end order it for readers.
#[inline]
pub(crate) fn store(w: &Word, v: Val) {
    put(w, v, Ordering::Relaxed)
}

/// Every store of the writer goes through here, so that a loom model can stop the writer
/// after its k-th store (a crash: see `crash`).
#[inline]
pub(crate) fn put(w: &Word, v: Val, order: Ordering) {
    #[cfg(all(loom, test))]
    if !crash::store_allowed() {
        return;
    }
    w.store(v, order)
}

/// A writer that crashes after a number of stores (loom models only): the stores after it
/// never happen, which is all that a reader can tell of a crash.
#[cfg(all(loom, test))]
pub(crate) mod crash {
    use core::cell::Cell;

    loom::thread_local! {
        static LEFT: Cell<usize> = Cell::new(usize::MAX);
        static DONE: Cell<usize> = Cell::new(0);
    }

    /// Lets the calling thread make `n` more stores, then none.
    pub(crate) fn after(n: usize) {
        LEFT.with(|l| l.set(n));
        DONE.with(|d| d.set(0));
    }

    /// Stores the calling thread made since [`after`].
    pub(crate) fn stores() -> usize {
        DONE.with(Cell::get)
    }

    pub(super) fn store_allowed() -> bool {
        LEFT.with(|l| {
            let n = l.get();
            l.set(n.saturating_sub(1));
            DONE.with(|d| d.set(d.get() + 1));
            n > 0
        })
    }
}

/// `u32` entries packed [`LANES`] to a word (the index).
#[derive(Clone, Copy)]
pub(crate) struct Lanes<'a> {
    pub(crate) words: &'a [Word],
}

// With `u32` words (no 64-bit atomics) a lane is a whole word: the shifts are by 0.
#[cfg_attr(
    not(target_has_atomic = "64"),
    allow(clippy::modulo_one, clippy::unnecessary_cast)
)]
impl<'a> Lanes<'a> {
    pub(crate) fn new(words: &'a [Word]) -> Self {
        Self { words }
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.words.len() * LANES
    }

    /// Entry `i` with the given ordering (`i < len`).
    #[inline]
    pub(crate) fn get_with(&self, i: usize, order: Ordering) -> u32 {
        let w = self.words[i / LANES].load(order);
        (w >> (32 * (i % LANES))) as u32
    }

    /// Entry `i`, Relaxed (the writer's own reads).
    #[inline]
    pub(crate) fn get(&self, i: usize) -> u32 {
        self.get_with(i, Ordering::Relaxed)
    }

    /// Sets entry `i` with a Release store of its word: a reader that loads the entry with
    /// Acquire then sees the slot as the writer left it before this store (a new entry's slot
    /// is complete before the index points at it). Only the writer stores, so the
    /// read-modify-write of the word loses nothing.
    #[inline]
    pub(crate) fn set(&self, i: usize, v: u32) {
        let shift = 32 * (i % LANES);
        let word = &self.words[i / LANES];
        let mask = Val::from(u32::MAX) << shift;
        let old = word.load(Ordering::Relaxed);
        put(
            word,
            (old & !mask) | (Val::from(v) << shift),
            Ordering::Release,
        );
    }
}

/// Copies `out.len()` bytes from byte offset `at` of `words` (little-endian), one Relaxed load
/// per word touched. `false` when the range is outside `words` (a torn read of a racing
/// writer's bookkeeping can ask for one; nothing is copied then).
pub(crate) fn load_bytes(words: &[Word], at: usize, out: &mut [u8]) -> bool {
    let Some(end) = at.checked_add(out.len()) else {
        return false;
    };
    if end > words.len() * WORD_BYTES {
        return false;
    }
    // A partial first word, then whole words (fixed-size copies the compiler turns into one
    // store each, not a `memmove` call per word), then a partial last word.
    let (mut w, off) = (at / WORD_BYTES, at % WORD_BYTES);
    let mut rest = out;
    if off != 0 {
        let n = (WORD_BYTES - off).min(rest.len());
        let bytes = load(&words[w]).to_le_bytes();
        let (head, tail) = rest.split_at_mut(n);
        head.copy_from_slice(&bytes[off..off + n]);
        rest = tail;
        w += 1;
    }
    // Four words a step, from one bounds-checked slice: the loop is store-bound.
    let mut quads = rest.chunks_exact_mut(4 * WORD_BYTES);
    for quad in &mut quads {
        let src = &words[w..w + 4];
        let (a, b) = quad.split_at_mut(2 * WORD_BYTES);
        let (a0, a1) = a.split_at_mut(WORD_BYTES);
        let (b0, b1) = b.split_at_mut(WORD_BYTES);
        a0.copy_from_slice(&load(&src[0]).to_le_bytes());
        a1.copy_from_slice(&load(&src[1]).to_le_bytes());
        b0.copy_from_slice(&load(&src[2]).to_le_bytes());
        b1.copy_from_slice(&load(&src[3]).to_le_bytes());
        w += 4;
    }
    let mut chunks = quads.into_remainder().chunks_exact_mut(WORD_BYTES);
    for chunk in &mut chunks {
        chunk.copy_from_slice(&load(&words[w]).to_le_bytes());
        w += 1;
    }
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        let n = tail.len();
        tail.copy_from_slice(&load(&words[w]).to_le_bytes()[..n]);
    }
    true
}

/// Writes `bytes` at byte offset `at` of `words` (the writer only; the range is inside).
/// Whole words are stored; a partial word at either end is read, merged and stored.
pub(crate) fn store_bytes(words: &[Word], at: usize, bytes: &[u8]) {
    let (mut i, mut pos) = (0, at);
    while i < bytes.len() {
        let (w, off) = (pos / WORD_BYTES, pos % WORD_BYTES);
        let n = (WORD_BYTES - off).min(bytes.len() - i);
        let mut b = if n == WORD_BYTES {
            [0; WORD_BYTES]
        } else {
            load(&words[w]).to_le_bytes()
        };
        b[off..off + n].copy_from_slice(&bytes[i..i + n]);
        store(&words[w], Val::from_le_bytes(b));
        i += n;
        pos += n;
    }
}

/// Zeroes `len` bytes at byte offset `at` of `words` (wiping, D13).
pub(crate) fn zero_bytes(words: &[Word], at: usize, len: usize) {
    const ZEROS: [u8; 64] = [0; 64];
    let (mut done, mut pos) = (0, at);
    while done < len {
        let n = (len - done).min(ZEROS.len());
        store_bytes(words, pos, &ZEROS[..n]);
        done += n;
        pos += n;
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// Every offset and length within three words, against a plain byte array: the partial
    /// first word, the whole words and the partial last word all land where they belong.
    #[test]
    fn bytes_round_trip_at_every_offset_and_length() {
        let span = 3 * WORD_BYTES;
        for at in 0..span {
            for len in 0..=span - at {
                let words: [Word; 3] = core::array::from_fn(|_| Word::new(0));
                let mut expect = [0u8; 3 * 8];
                let bytes: [u8; 3 * 8] = core::array::from_fn(|i| i as u8 + 1);
                store_bytes(&words, at, &bytes[..len]);
                expect[at..at + len].copy_from_slice(&bytes[..len]);
                let mut all = [0u8; 3 * 8];
                assert!(load_bytes(&words, 0, &mut all[..span]));
                assert_eq!(&all[..span], &expect[..span], "store at {at}, {len} bytes");
                let mut out = [0xAAu8; 3 * 8];
                assert!(load_bytes(&words, at, &mut out[..len]));
                assert_eq!(&out[..len], &bytes[..len], "load at {at}, {len} bytes");
                assert!(out[len..].iter().all(|b| *b == 0xAA), "nothing past {len}");
            }
        }
        let mut one = [0u8; 1];
        assert!(
            !load_bytes(&[Word::new(0)], WORD_BYTES, &mut one),
            "outside"
        );
    }
}
