//! The table's bookkeeping (D4): finding an entry by key, adding one, removing one, and
//! choosing what to evict.

use super::key::{key_matches, Key};
use super::{CacheError, TokenCache};
use crate::storage::{read_chain, Cursor, Slot, Storage, NIL};

impl<S: Storage> TokenCache<S> {
    pub(super) fn slot(&self, s: u32) -> Slot {
        self.storage.slots()[s as usize]
    }

    pub(super) fn slot_mut(&mut self, s: u32) -> &mut Slot {
        &mut self.storage.parts().slots[s as usize]
    }

    /// A token that may be handed out: present, with at least `min_lifetime_ms` left (D8).
    pub(super) fn usable(&self, slot: &Slot, now: u64) -> bool {
        slot.has_token() && slot.expires_on > now.saturating_add(self.config.min_lifetime_ms)
    }

    pub(super) fn find(&mut self, key: &Key<'_>, hash: u32) -> Option<u32> {
        let parts = self.storage.parts();
        let (slots, index) = (&*parts.slots, &*parts.index);
        let (arena, links, size) = (&*parts.arena, &*parts.links, self.block_size);
        crate::storage::find(slots, index, hash, |slot| {
            key_matches(arena, links, size, slot, key)
        })
    }

    /// Adds an entry for `key`, evicting if needed (D4).
    pub(super) fn insert(&mut self, key: &Key<'_>, hash: u32, now: u64) -> Result<u32, CacheError> {
        let key_len = key.encoded_len();
        let blocks = key_len.div_ceil(self.block_size).max(1) as u32;
        let s = loop {
            if self.alloc.free_blocks >= blocks {
                if let Some(s) = self.storage.parts().alloc_slot(&mut self.alloc) {
                    break s;
                }
            }
            self.evict(NIL, now)?;
        };
        let mut parts = self.storage.parts();
        let head = parts.alloc_chain(&mut self.alloc, blocks);
        let mut cursor = Cursor { block: head, at: 0 };
        key.encode(|piece| parts.write(&mut cursor, piece));
        let generation = parts.slots[s as usize].generation;
        let (key_len, flavour) = (key_len as u16, key.flavour as u8);
        parts.slots[s as usize] = Slot::new_entry(hash, generation, head, key_len, flavour);
        parts.index_insert(s);
        Ok(s)
    }

    /// Removes entry `s`: out of the index, bytes wiped, slot freed.
    pub(super) fn remove(&mut self, s: u32) {
        let mut parts = self.storage.parts();
        parts.index_remove(s);
        let head = parts.slots[s as usize].head;
        parts.free_chain(&mut self.alloc, head);
        parts.free_slot(&mut self.alloc, s);
    }

    /// Evicts one entry other than `keep` (D4): one without a usable token first, else the
    /// first not recently used one in CLOCK order; never one with a live ticket.
    pub(super) fn evict(&mut self, keep: u32, now: u64) -> Result<(), CacheError> {
        let n = self.storage.slots().len() as u32;
        let evictable =
            |s: u32, slot: &Slot| s != keep && slot.occupied() && !slot.live_ticket(now);
        let victim = (0..n).find(|&s| {
            let slot = self.slot(s);
            evictable(s, &slot) && !self.usable(&slot, now)
        });
        let victim = victim.or_else(|| {
            for _ in 0..2 * n {
                let s = self.hand;
                self.hand = (self.hand + 1) % n;
                let slot = self.slot(s);
                if !evictable(s, &slot) {
                    continue;
                }
                if slot.referenced() {
                    self.slot_mut(s).set_referenced(false);
                } else {
                    return Some(s);
                }
            }
            None
        });
        let s = victim.ok_or(CacheError::CacheFull)?;
        self.lapse(s, now);
        self.remove(s);
        self.stats.evictions += 1;
        Ok(())
    }

    pub(super) fn read_key<'b>(&self, slot: &Slot, buf: &'b mut [u8]) -> Option<Key<'b>> {
        let len = slot.key_len as usize;
        let buf = buf.get_mut(..len)?;
        let (arena, links) = self.storage.arena();
        let mut at = 0;
        read_chain(arena, links, self.block_size, slot.head, 0, len, |piece| {
            buf[at..at + piece.len()].copy_from_slice(piece);
            at += piece.len();
        });
        Key::decode(buf)
    }
}
