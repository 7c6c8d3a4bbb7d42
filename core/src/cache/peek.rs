//! Hits without a lock (D15): [`Reader::peek`] reads an entry with the seqlock protocol while
//! the writer (behind the driver's lock) may be changing it.
//!
//! The reader probes the index (Acquire loads), loads the slot's sequence (Acquire), copies
//! the slot, the key and the token with Relaxed word loads, runs an Acquire fence and loads
//! the sequence again: the copy is whole when both loads read the same even value. Why, in
//! the terms of crossbeam-utils' `seq_lock`: the writer opens each section with a Relaxed odd
//! store and a Release fence, so if any word the reader copied was stored after that point,
//! the reader's Acquire fence synchronises with the writer's and the second load reads the
//! odd value or a later one; and the writer closes a section with a Release store of the
//! even value, so a first load that reads it makes every store of the section visible. A
//! torn copy (odd or changed sequence, or a chain that leaves the arena) is tried again, at
//! most [`RETRIES`] times, then answered `Miss`; what it put in the caller's buffer is wiped.

use super::answers::Peek;
use super::key::{key_matches, Key};
use super::table::usable;
use crate::storage::{fence, load, Ordering, Storage, Table, Val, CLAIM, REFERENCED, SEQ};

/// Torn copies tried again before a peek answers `Miss`.
pub(crate) const RETRIES: usize = 3;

/// A lock-free reader of a cache's storage (from [`TokenCache::reader`]): `Sync`, so any
/// number of threads can [`peek`](Self::peek) at once, while the one cache that owns the
/// storage writes behind the driver's lock.
///
/// [`TokenCache::reader`]: crate::TokenCache::reader
pub struct Reader<S: Storage> {
    table: Table<S>,
    min_lifetime_ms: u64,
}

impl<S: Storage> core::fmt::Debug for Reader<S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Reader").finish_non_exhaustive()
    }
}

impl<S: Storage> Reader<S> {
    pub(super) fn new(storage: S, min_lifetime_ms: u64) -> Self {
        Self {
            table: Table::fresh(storage),
            min_lifetime_ms,
        }
    }

    /// Looks `key` up at `now_ms` without a lock (D15), copying a usable token into `out`.
    ///
    /// `Hit` follows `lookup`'s rules (more than the minimum lifetime left, full key
    /// compared); `refresh_due` is true for exactly one caller per refresh (a compare-and-swap
    /// on the slot's claim word once the refresh time has come, no ticket is live and no
    /// retry is pending), and that caller should call `lookup` to take the ticket. A hit
    /// writes no shared memory except the CLOCK bit, and that only when it is clear. `Miss`
    /// sends the caller to `lookup`; under concurrency a miss is always possible (the writer
    /// kept changing the entry), never a token that the key did not hold. `now_ms` is not
    /// clamped as the writer's clock is: pass a clock that does not go back. O(1) on average;
    /// copies the token word by word.
    pub fn peek(&self, key: &Key<'_>, now_ms: u64, out: &mut [u8]) -> Peek {
        self.table.peek(key, now_ms, self.min_lifetime_ms, out)
    }
}

/// What one read of one candidate slot found.
enum Read {
    /// Validated: the slot holds another key.
    Other,
    /// Validated answer for the key.
    Found(Peek),
    /// The writer changed the slot meanwhile.
    Torn,
}

impl<S: Storage> Table<S> {
    pub(super) fn peek(
        &self,
        key: &Key<'_>,
        now_ms: u64,
        min_lifetime_ms: u64,
        out: &mut [u8],
    ) -> Peek {
        let hash = key.hash();
        for _ in 0..=RETRIES {
            let mut torn = false;
            let mut answer = Peek::Miss;
            let index = self.index();
            crate::storage::find(
                self.slots().len(),
                index,
                hash,
                Ordering::Acquire,
                |s| match self.read(s, hash, key, now_ms, min_lifetime_ms, out) {
                    Read::Other => false,
                    Read::Found(found) => {
                        answer = found;
                        true
                    }
                    Read::Torn => {
                        torn = true;
                        true
                    }
                },
            );
            if !torn {
                return answer;
            }
        }
        Peek::Miss
    }

    /// Reads slot `s` for `key` under its sequence.
    fn read(
        &self,
        s: u32,
        hash: u32,
        key: &Key<'_>,
        now_ms: u64,
        min_lifetime_ms: u64,
        out: &mut [u8],
    ) -> Read {
        let slots = self.slots();
        let words = slots.of(s);
        // Acquire: pairs with the Release end of the section that stored this value, so the
        // words copied below are at least that section's.
        let seq = words[SEQ].load(Ordering::Acquire);
        if seq % 2 == 1 {
            return Read::Torn;
        }
        let slot = slots.load(s);
        let (arena, links, size) = self.arena();
        let is_key = slot.occupied()
            && slot.hash == hash
            && match key_matches(arena, links, size, &slot, key) {
                Some(is) => is,
                None => return wiped(out, 0),
            };
        let usable = is_key && usable(&slot, now_ms, min_lifetime_ms);
        let len = slot.token_len as usize;
        let copied = if usable && len <= out.len() {
            if !self.copy_token(&slot, &mut out[..len]) {
                return wiped(out, len);
            }
            len
        } else {
            0
        };
        // Acquire fence, then a Relaxed re-load (crossbeam-utils' `validate_read`): if any
        // copied word was stored inside a later section, the fence synchronises with that
        // section's Release fence and this load sees its odd sequence or a later one.
        fence(Ordering::Acquire);
        if load(&words[SEQ]) != seq {
            return wiped(out, copied);
        }
        if !is_key {
            return Read::Other;
        }
        if !usable {
            return Read::Found(Peek::Miss);
        }
        if len > out.len() {
            return Read::Found(Peek::BufferTooSmall { needed: len });
        }
        // The CLOCK bit (D4), set only when clear: a hit writes no shared line otherwise.
        // Relaxed: a lost race with the writer's clearing costs one bit of approximate LRU.
        if load(&words[REFERENCED]) == 0 {
            words[REFERENCED].store(1, Ordering::Relaxed);
        }
        let refresh_due = now_ms >= slot.refresh_on_ms
            && !slot.live_ticket(now_ms)
            && now_ms >= slot.retry_at_ms
            && claim(&words[CLAIM], slot.generation);
        Read::Found(Peek::Hit {
            len,
            expires_on_ms: slot.expires_on_ms,
            refresh_due,
        })
    }
}

/// Wipes the `n` bytes a torn read put in the caller's buffer.
fn wiped(out: &mut [u8], n: usize) -> Read {
    out[..n].iter_mut().for_each(|b| *b = 0);
    Read::Torn
}

/// Claims the refresh of the token at `generation`: true for the one caller whose
/// compare-and-swap stores it. Relaxed: the claim arbitrates between readers and publishes
/// nothing; the writer gives it back (`unclaim`) when the claimer's lookup took no ticket,
/// and a new generation (a ticket issued or ended) makes it stale by itself.
fn claim(word: &crate::storage::Word, generation: u32) -> bool {
    let mine = Val::from(generation.wrapping_add(1));
    let seen = load(word);
    seen != mine
        && word
            .compare_exchange(seen, mine, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}
