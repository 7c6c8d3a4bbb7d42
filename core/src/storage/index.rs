//! The open-addressing index over the slot table: linear probing, tags from the hash,
//! backward-shift deletion. Entries are `u32` lanes of words; the writer stores them with
//! Release and a reader loads them with Acquire (see [`Lanes::set`]).

use super::word::{Lanes, Ordering};
use super::{Parts, SlotWords};

/// An index entry is a slot number plus one in its low bits (as many as the slot count needs)
/// and, above them, a tag: the low bits of the slot's hash, so that a probe skips a slot whose
/// hash differs without reading it. `(slot mask, tag of hash)`.
#[inline]
fn entry_parts(slots: usize, hash: u32) -> (u32, u32) {
    let bits = usize::BITS - slots.leading_zeros();
    (
        ((1u64 << bits) - 1) as u32,
        (u64::from(hash) << bits) as u32,
    )
}

/// Index position of `hash` in an index of `len` entries (multiply-shift range reduction).
fn home(len: usize, hash: u32) -> usize {
    ((u64::from(hash) * len as u64) >> 32) as usize
}

/// Calls `is_key` with each slot whose index entry carries `hash`'s tag, in probe order,
/// until it says yes: O(1) on average (linear probing at a load factor of at most one half).
/// `is_key` compares the full key, never the hash alone. Entries are loaded with `order`:
/// Acquire for a reader (the slot it then reads is at least as new as the entry), Relaxed
/// for the writer. A slot number out of range (a reader seeing an index being rewritten) is
/// skipped.
#[inline]
pub(crate) fn find(
    slots: usize,
    index: Lanes<'_>,
    hash: u32,
    order: Ordering,
    mut is_key: impl FnMut(u32) -> bool,
) -> Option<u32> {
    let len = index.len();
    let (mask, tag) = entry_parts(slots, hash);
    let mut i = home(len, hash);
    for _ in 0..len {
        let e = index.get_with(i, order);
        if e == 0 {
            return None;
        }
        if e & !mask == tag {
            let s = (e & mask) - 1;
            if (s as usize) < slots && is_key(s) {
                return Some(s);
            }
        }
        i = if i + 1 == len { 0 } else { i + 1 };
    }
    None
}

impl Parts<'_> {
    /// Index position of `hash`.
    fn home(&self, hash: u32) -> usize {
        home(self.index.len(), hash)
    }

    fn hash(slots: SlotWords<'_>, s: u32) -> u32 {
        slots.load(s).hash
    }

    /// The index entry of slot `s` (its hash is set) and the mask of an entry's slot bits.
    fn entry(&self, s: u32) -> (u32, u32) {
        let (mask, tag) = entry_parts(self.slots.len(), Self::hash(self.slots, s));
        ((s + 1) | tag, mask)
    }

    /// Adds slot `s` (with its hash already set) to the index. The index is never full: it
    /// has twice as many entries as slots.
    pub(crate) fn index_insert(&mut self, s: u32) {
        let len = self.index.len();
        let mut i = self.home(Self::hash(self.slots, s));
        while self.index.get(i) != 0 {
            i = (i + 1) % len;
        }
        self.index.set(i, self.entry(s).0);
    }

    /// Removes slot `s` from the index (backward-shift deletion, no tombstones). A reader
    /// probing meanwhile may miss an entry being moved: it answers `Miss`, never a wrong hit.
    pub(crate) fn index_remove(&mut self, s: u32) {
        let len = self.index.len();
        let (entry, mask) = self.entry(s);
        let mut i = self.home(Self::hash(self.slots, s));
        while self.index.get(i) != entry {
            if self.index.get(i) == 0 {
                return;
            }
            i = (i + 1) % len;
        }
        let mut hole = i;
        let mut j = (i + 1) % len;
        while self.index.get(j) != 0 {
            let moved = (self.index.get(j) & mask) - 1;
            let home = self.home(Self::hash(self.slots, moved));
            // Move j into the hole if its home is not strictly between the hole and j.
            let dist_home = (j + len - home) % len;
            let dist_hole = (j + len - hole) % len;
            if dist_home >= dist_hole {
                self.index.set(hole, self.index.get(j));
                hole = j;
            }
            j = (j + 1) % len;
        }
        self.index.set(hole, 0);
    }
}
