//! The open-addressing index over the slot table: linear probing, tags from the hash,
//! backward-shift deletion.

use super::{Parts, Slot};

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

/// Finds the slot with `hash` for which `is_key` says yes: O(1) on average (linear probing at
/// a load factor of at most one half), comparing the full key, never the hash alone. Probes
/// whose tag differs are skipped without reading their slot.
#[inline]
pub(crate) fn find(
    slots: &[Slot],
    index: &[u32],
    hash: u32,
    mut is_key: impl FnMut(&Slot) -> bool,
) -> Option<u32> {
    let len = index.len();
    let (mask, tag) = entry_parts(slots.len(), hash);
    let mut i = home(len, hash);
    for _ in 0..len {
        let e = index[i];
        if e == 0 {
            return None;
        }
        if e & !mask == tag {
            let s = (e & mask) - 1;
            let slot = &slots[s as usize];
            if slot.hash == hash && is_key(slot) {
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

    /// The index entry of slot `s` (its hash is set) and the mask of an entry's slot bits.
    fn entry(&self, s: u32) -> (u32, u32) {
        let (mask, tag) = entry_parts(self.slots.len(), self.slots[s as usize].hash);
        ((s + 1) | tag, mask)
    }

    /// Adds slot `s` (with its hash already set) to the index. The index is never full: it
    /// has twice as many entries as slots.
    pub(crate) fn index_insert(&mut self, s: u32) {
        let len = self.index.len();
        let mut i = self.home(self.slots[s as usize].hash);
        while self.index[i] != 0 {
            i = (i + 1) % len;
        }
        self.index[i] = self.entry(s).0;
    }

    /// Removes slot `s` from the index (backward-shift deletion, no tombstones).
    pub(crate) fn index_remove(&mut self, s: u32) {
        let len = self.index.len();
        let (entry, mask) = self.entry(s);
        let mut i = self.home(self.slots[s as usize].hash);
        while self.index[i] != entry {
            if self.index[i] == 0 {
                return;
            }
            i = (i + 1) % len;
        }
        let mut hole = i;
        let mut j = (i + 1) % len;
        while self.index[j] != 0 {
            let home = self.home(self.slots[((self.index[j] & mask) - 1) as usize].hash);
            // Move j into the hole if its home is not strictly between the hole and j.
            let dist_home = (j + len - home) % len;
            let dist_hole = (j + len - hole) % len;
            if dist_home >= dist_hole {
                self.index[hole] = self.index[j];
                hole = j;
            }
            j = (j + 1) % len;
        }
        self.index[hole] = 0;
    }
}
