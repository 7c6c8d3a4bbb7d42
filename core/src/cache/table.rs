//! The table's bookkeeping (D4): finding an entry by key, adding one, removing one, and
//! choosing what to evict. All of it is the writer's (`&mut self`, behind the driver's lock);
//! each change to a slot is a write section of that slot (see `storage::slot`).

use super::key::{key_matches, Key};
use super::{CacheError, TokenCache};
use crate::storage::{
    copy_chain, load_bytes_run, Cursor, Ordering, Slot, SlotMut, Storage, Table, Val, CLAIM, NIL,
};

impl<S: Storage> TokenCache<S> {
    pub(super) fn slot(&self, s: u32) -> Slot {
        self.storage.slots().load(s)
    }

    /// Edits slot `s`; the change is stored, in one write section, when the guard drops.
    pub(super) fn slot_mut(&mut self, s: u32) -> SlotMut<'_> {
        self.storage.slots().edit(s)
    }

    /// A token that may be handed out: present, with at least `min_lifetime_ms` left (D8).
    pub(super) fn usable(&self, slot: &Slot, now_ms: u64) -> bool {
        usable(slot, now_ms, self.config.min_lifetime_ms)
    }

    pub(super) fn find(&mut self, key: &Key<'_>, hash: u32) -> Option<u32> {
        let slots = self.storage.slots();
        let (arena, links, size) = self.storage.arena();
        crate::storage::find(
            slots.len(),
            self.storage.index(),
            hash,
            Ordering::Relaxed,
            |s| {
                let slot = slots.load(s);
                slot.hash == hash && key_matches(arena, links, size, &slot, key) == Some(true)
            },
        )
    }

    /// Adds an entry for `key`, evicting if needed (D4). The slot is complete before the
    /// index points at it.
    pub(super) fn insert(
        &mut self,
        key: &Key<'_>,
        hash: u32,
        now_ms: u64,
    ) -> Result<u32, CacheError> {
        let key_len = key.encoded_len();
        let blocks = key_len.div_ceil(self.block_size).max(1) as u32;
        let s = loop {
            if self.alloc.free_blocks >= blocks {
                if let Some(s) = self.storage.parts().alloc_slot(&mut self.alloc) {
                    break s;
                }
            }
            self.evict(NIL, now_ms)?;
        };
        let mut parts = self.storage.parts_for(s);
        let head = parts.alloc_chain(&mut self.alloc, blocks);
        let mut cursor = Cursor { block: head, at: 0 };
        key.encode(|piece| parts.write(&mut cursor, piece));
        let generation = parts.slots.load(s).generation;
        let (key_len, flavour) = (key_len as u16, key.flavour as u8);
        *parts.slot_mut(s) = Slot::new_entry(hash, generation, head, key_len, flavour);
        parts.slots.set_referenced(s, true);
        drop(parts);
        self.storage.parts().index_insert(s);
        Ok(s)
    }

    /// Removes entry `s`: out of the index, bytes wiped, slot freed, in one write section.
    pub(super) fn remove(&mut self, s: u32) {
        let mut parts = self.storage.parts_for(s);
        parts.index_remove(s);
        let head = parts.slots.load(s).head;
        parts.free_chain(&mut self.alloc, head);
        parts.free_slot(&mut self.alloc, s);
    }

    /// Evicts one entry other than `keep` (D4): one without a usable token first, else the
    /// first not recently used one in CLOCK order; never one with a live ticket.
    pub(super) fn evict(&mut self, keep: u32, now_ms: u64) -> Result<(), CacheError> {
        let n = self.storage.slots().len() as u32;
        let evictable =
            |s: u32, slot: &Slot| s != keep && slot.occupied() && !slot.live_ticket(now_ms);
        let victim = (0..n).find(|&s| {
            let slot = self.slot(s);
            evictable(s, &slot) && !self.usable(&slot, now_ms)
        });
        let victim = victim.or_else(|| {
            let slots = self.storage.slots();
            for _ in 0..2 * n {
                let s = self.hand;
                self.hand = (self.hand + 1) % n;
                if !evictable(s, &slots.load(s)) {
                    continue;
                }
                if slots.referenced(s) {
                    slots.set_referenced(s, false);
                } else {
                    return Some(s);
                }
            }
            None
        });
        let s = victim.ok_or(CacheError::CacheFull)?;
        self.lapse(s, now_ms);
        self.remove(s);
        self.stats.evictions += 1;
        Ok(())
    }

    pub(super) fn read_key<'b>(&self, slot: &Slot, buf: &'b mut [u8]) -> Option<Key<'b>> {
        let len = slot.key_len as usize;
        let buf = buf.get_mut(..len)?;
        let (arena, links, size) = self.storage.arena();
        if !copy_chain(arena, links, size, slot.head, 0, buf) {
            return None;
        }
        Key::decode(buf)
    }
}

/// A token that may be handed out at `now_ms`: present, with more than `min_lifetime_ms` left
/// (D8). The one rule for `lookup` and `peek`.
pub(super) fn usable(slot: &Slot, now_ms: u64, min_lifetime_ms: u64) -> bool {
    slot.has_token() && slot.expires_on_ms > now_ms.saturating_add(min_lifetime_ms)
}

impl<S: Storage> Table<S> {
    /// Copies `slot`'s token into `out` (its length): one range of words when the chain is
    /// laid out front to back, else block by block. `false` when the chain does not hold it
    /// (only a reader racing the writer sees that).
    pub(super) fn copy_token(&self, slot: &Slot, out: &mut [u8]) -> bool {
        let (arena, links, size) = self.arena();
        let offset = slot.key_len as usize;
        if slot.is_run() {
            let start = (slot.head as usize)
                .saturating_mul(size)
                .saturating_add(offset);
            return load_bytes_run(arena, start, out);
        }
        copy_chain(arena, links, size, slot.head, offset, out)
    }

    /// Gives back a refresh claim a reader took at `generation` (see `peek`), so that the
    /// next reader past the refresh time claims it again.
    pub(super) fn unclaim(&self, s: u32, generation: u32) {
        let claim = &self.slots().of(s)[CLAIM];
        // Relaxed: the claim only arbitrates between readers; it publishes nothing.
        let _ = claim.compare_exchange(
            Val::from(generation.wrapping_add(1)),
            0,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
}
