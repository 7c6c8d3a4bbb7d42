//! One entry's bookkeeping in the slot table, its state bits, its words and its sequence
//! (the seqlock of D15), and taking and freeing slots.
//!
//! A slot is [`SLOT_WORDS`] words: its sequence, two words readers may write (the refresh
//! claim and the CLOCK bit), then nine 64-bit fields (one word each, or two on a target
//! without 64-bit atomics). The writer changes a slot only inside a *write section*: the
//! sequence goes odd, the words are stored, the sequence goes even (crossbeam-utils'
//! `seq_lock`, with one writer: the caller's lock orders writers, so the writer's own
//! sequence loads are Relaxed).

use core::ops::{Deref, DerefMut};

use super::word::{fence, load, put, store, Ordering, Val, Word, WORD_BYTES};
use super::{Alloc, Parts, NIL};

/// The slot holds an entry (else it is free, or on the free list).
const OCCUPIED: u8 = 1;
/// The entry holds a token (else only its key).
const HAS_TOKEN: u8 = 4;
/// The live ticket got Arc's challenge and waits for the key file.
const CHALLENGED: u8 = 8;
/// The live ticket answered Arc's challenge: a second challenge is refused.
const ANSWERED: u8 = 16;
/// The chain is laid out front to back in the arena (see [`chain_is_run`]): a hit copies the
/// token as one range of words, without reading links.
///
/// [`chain_is_run`]: super::chain_is_run
const RUN: u8 = 32;

/// Word of the sequence: even when the slot is stable, odd while the writer changes it.
pub(crate) const SEQ: usize = 0;
/// Word of the refresh claim: the generation a reader claimed the refresh at (see `peek`).
pub(crate) const CLAIM: usize = 1;
/// Word of the CLOCK bit (D4): non-zero when the entry was used since the hand passed.
pub(crate) const REFERENCED: usize = 2;
/// Words of one 64-bit field.
const FIELD_WORDS: usize = 8 / WORD_BYTES;
/// 64-bit fields of a slot.
const FIELDS: usize = 9;
/// Words of one slot.
pub(crate) const SLOT_WORDS: usize = 3 + FIELDS * FIELD_WORDS;

/// One cache entry's bookkeeping, as read from (or to be written to) its words. Holds no key
/// or token bytes (those are in the arena), so its `Debug` shows nothing secret.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Slot {
    /// Expiry of the token (ms).
    pub(crate) expires_on_ms: u64,
    /// When to refresh the token (ms).
    pub(crate) refresh_on_ms: u64,
    /// Lease end of the live ticket; 0 when there is none.
    pub(crate) lease_until_ms: u64,
    /// No new fetch before this (backoff, negative cache, eager-refresh spacing).
    pub(crate) retry_at_ms: u64,
    /// Request time of the live ticket (D1).
    pub(crate) issued_at_ms: u64,
    /// Time of the first 410 of the current run of 410s; 0 when none.
    pub(crate) gone_since_ms: u64,
    pub(crate) hash: u32,
    /// First arena block of the entry's chain (key bytes, then token bytes), or the next free
    /// slot while the slot is on the free list.
    pub(crate) head: u32,
    pub(crate) token_len: u32,
    pub(crate) key_len: u16,
    /// State bits, read and set through the methods below.
    flags: u8,
    /// The key's flavour (also in the key bytes), for the per-endpoint budget.
    pub(crate) flavour: u8,
    pub(crate) generation: u32,
    pub(crate) failure_status: u16,
    pub(crate) attempts: u8,
    pub(crate) failure: u8,
}

impl Slot {
    /// An unused slot.
    pub(crate) const EMPTY: Slot = Slot {
        hash: 0,
        generation: 0,
        head: NIL,
        token_len: 0,
        key_len: 0,
        flags: 0,
        attempts: 0,
        failure: 0,
        failure_status: 0,
        flavour: 0,
        expires_on_ms: 0,
        refresh_on_ms: 0,
        lease_until_ms: 0,
        issued_at_ms: 0,
        retry_at_ms: 0,
        gone_since_ms: 0,
    };

    /// The slot cleared, with its generation moved on (so that its tickets are stale).
    pub(crate) fn cleared(&self) -> Slot {
        Slot {
            generation: self.generation.wrapping_add(1),
            ..Slot::EMPTY
        }
    }

    /// A new entry's slot: occupied, no token yet.
    pub(crate) fn new_entry(
        hash: u32,
        generation: u32,
        head: u32,
        key_len: u16,
        flavour: u8,
    ) -> Slot {
        Slot {
            hash,
            generation,
            head,
            key_len,
            flags: OCCUPIED,
            flavour,
            ..Slot::EMPTY
        }
    }

    /// The slot's nine 64-bit fields, in word order.
    fn fields(&self) -> [u64; FIELDS] {
        [
            self.expires_on_ms,
            self.refresh_on_ms,
            self.lease_until_ms,
            self.retry_at_ms,
            self.issued_at_ms,
            self.gone_since_ms,
            u64::from(self.hash) | u64::from(self.head) << 32,
            u64::from(self.token_len)
                | u64::from(self.key_len) << 32
                | u64::from(self.flags) << 48
                | u64::from(self.flavour) << 56,
            u64::from(self.generation)
                | u64::from(self.failure_status) << 32
                | u64::from(self.attempts) << 48
                | u64::from(self.failure) << 56,
        ]
    }

    fn from_fields(f: [u64; FIELDS]) -> Slot {
        Slot {
            expires_on_ms: f[0],
            refresh_on_ms: f[1],
            lease_until_ms: f[2],
            retry_at_ms: f[3],
            issued_at_ms: f[4],
            gone_since_ms: f[5],
            hash: f[6] as u32,
            head: (f[6] >> 32) as u32,
            token_len: f[7] as u32,
            key_len: (f[7] >> 32) as u16,
            flags: (f[7] >> 48) as u8,
            flavour: (f[7] >> 56) as u8,
            generation: f[8] as u32,
            failure_status: (f[8] >> 32) as u16,
            attempts: (f[8] >> 48) as u8,
            failure: (f[8] >> 56) as u8,
        }
    }

    pub(crate) fn occupied(&self) -> bool {
        self.flags & OCCUPIED != 0
    }

    pub(crate) fn live_ticket(&self, now_ms: u64) -> bool {
        self.lease_until_ms > now_ms
    }

    /// Whether a token is stored (usable or not: see the cache's `usable`).
    pub(crate) fn has_token(&self) -> bool {
        self.flags & HAS_TOKEN != 0
    }

    /// Marks a token stored in the chain; `run` says whether the chain is laid out front to
    /// back.
    pub(crate) fn set_token(&mut self, run: bool) {
        let run = if run { RUN } else { 0 };
        self.flags = (self.flags & !RUN) | HAS_TOKEN | run;
    }

    /// Forgets the token (the caller wipes its bytes); the key stays.
    pub(crate) fn drop_token(&mut self) {
        self.flags &= !HAS_TOKEN;
        self.token_len = 0;
    }

    /// Whether the chain is laid out front to back, so the token is one range of the arena.
    pub(crate) fn is_run(&self) -> bool {
        self.flags & RUN != 0
    }

    /// Whether the live ticket waits for Arc's key file.
    pub(crate) fn challenged(&self) -> bool {
        self.flags & CHALLENGED != 0
    }

    /// Whether the live ticket already answered Arc's challenge.
    pub(crate) fn answered(&self) -> bool {
        self.flags & ANSWERED != 0
    }

    /// The live ticket got Arc's challenge.
    pub(crate) fn set_challenged(&mut self) {
        self.flags |= CHALLENGED;
    }

    /// The live ticket answered Arc's challenge.
    pub(crate) fn set_answered(&mut self) {
        self.flags = (self.flags & !CHALLENGED) | ANSWERED;
    }

    /// The ticket ended: no challenge pending or answered.
    pub(crate) fn end_challenge(&mut self) {
        self.flags &= !(CHALLENGED | ANSWERED);
    }
}

/// The slot table's words.
#[derive(Clone, Copy)]
pub(crate) struct SlotWords<'a> {
    pub(crate) words: &'a [Word],
}

impl<'a> SlotWords<'a> {
    /// Number of slots.
    pub(crate) fn len(&self) -> usize {
        self.words.len() / SLOT_WORDS
    }

    /// The words of slot `s` (`s < len`).
    pub(crate) fn of(&self, s: u32) -> &'a [Word] {
        let at = s as usize * SLOT_WORDS;
        &self.words[at..at + SLOT_WORDS]
    }

    /// Slot `s` as its words hold it now: Relaxed loads. The writer reads its own stores;
    /// a reader calls this between `seq` and `validate`, which decide whether it is whole.
    #[allow(clippy::useless_conversion)] // a word is a `u32` where 64-bit atomics are missing
    pub(crate) fn load(&self, s: u32) -> Slot {
        let w = self.of(s);
        let mut f = [0u64; FIELDS];
        for (i, v) in f.iter_mut().enumerate() {
            let at = 3 + i * FIELD_WORDS;
            *v = (0..FIELD_WORDS).fold(0, |v, k| v | u64::from(load(&w[at + k])) << (32 * k));
        }
        Slot::from_fields(f)
    }

    /// Slot `s`, if there is one.
    pub(crate) fn get(&self, s: usize) -> Option<Slot> {
        (s < self.len()).then(|| self.load(s as u32))
    }

    /// Every slot, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = Slot> + 'a {
        let this = *self;
        (0..this.len() as u32).map(move |s| this.load(s))
    }

    /// Stores `slot` into slot `s`'s words; only inside a write section of `s`. Only the
    /// fields that changed are stored.
    pub(crate) fn store_in_section(&self, s: u32, old: &Slot, slot: &Slot) {
        let w = self.of(s);
        let (old, new) = (old.fields(), slot.fields());
        for i in (0..FIELDS).filter(|&i| old[i] != new[i]) {
            let at = 3 + i * FIELD_WORDS;
            for k in 0..FIELD_WORDS {
                store(&w[at + k], (new[i] >> (32 * k)) as Val);
            }
        }
    }

    /// Opens a write section of slot `s`: its sequence goes odd. Relaxed load: only the
    /// writer stores sequences. The store is Relaxed and followed by a Release fence, so that
    /// a reader whose data loads see any store the writer makes after this point, and that
    /// then runs its Acquire fence, sees the odd sequence (or a later one) on its re-check
    /// (crossbeam-utils' `SeqLock::write`).
    pub(crate) fn begin(&self, s: u32) {
        let seq = &self.of(s)[SEQ];
        store(seq, load(seq).wrapping_add(1));
        fence(Ordering::Release);
    }

    /// Closes the write section of slot `s`: the sequence goes even with Release, so a reader
    /// whose first (Acquire) sequence load reads it sees every store of the section.
    pub(crate) fn end(&self, s: u32) {
        let seq = &self.of(s)[SEQ];
        put(seq, load(seq).wrapping_add(1), Ordering::Release);
    }

    /// Stores `slot` into slot `s` in a section of its own.
    pub(crate) fn write(&self, s: u32, slot: &Slot) {
        let old = self.load(s);
        if old != *slot {
            self.begin(s);
            self.store_in_section(s, &old, slot);
            self.end(s);
        }
    }

    /// Edits slot `s`: the change is stored, in a write section, when the guard drops.
    pub(crate) fn edit(&self, s: u32) -> SlotMut<'a> {
        let slot = self.load(s);
        SlotMut {
            slots: *self,
            s,
            old: slot,
            slot,
        }
    }

    /// Whether the CLOCK bit of slot `s` is set.
    pub(crate) fn referenced(&self, s: u32) -> bool {
        load(&self.of(s)[REFERENCED]) != 0
    }

    /// Sets or clears the CLOCK bit of slot `s` (the writer's side; a reader only sets it,
    /// and only when clear, see `peek`). A lost race with a reader loses one bit of
    /// approximate LRU, nothing else.
    pub(crate) fn set_referenced(&self, s: u32, on: bool) {
        store(&self.of(s)[REFERENCED], Val::from(on));
    }

    /// Clears slot `s`'s sequence-independent words (claim and CLOCK bit) for a new entry.
    fn clear_reader_words(&self, s: u32) {
        let w = self.of(s);
        store(&w[CLAIM], 0);
        store(&w[REFERENCED], 0);
    }
}

/// A slot being edited (see [`SlotWords::edit`]): dereferences to the slot; its changes are
/// stored, in one write section, when it drops.
pub(crate) struct SlotMut<'a> {
    slots: SlotWords<'a>,
    s: u32,
    old: Slot,
    slot: Slot,
}

impl Deref for SlotMut<'_> {
    type Target = Slot;
    fn deref(&self) -> &Slot {
        &self.slot
    }
}

impl DerefMut for SlotMut<'_> {
    fn deref_mut(&mut self) -> &mut Slot {
        &mut self.slot
    }
}

impl Drop for SlotMut<'_> {
    fn drop(&mut self) {
        if self.old != self.slot {
            self.slots.begin(self.s);
            self.slots.store_in_section(self.s, &self.old, &self.slot);
            self.slots.end(self.s);
        }
    }
}

impl Parts<'_> {
    /// Takes a free slot, if any.
    pub(crate) fn alloc_slot(&mut self, alloc: &mut Alloc) -> Option<u32> {
        let s = if alloc.free_slot != NIL {
            let s = alloc.free_slot;
            alloc.free_slot = self.slots.load(s).head;
            s
        } else if (alloc.slot_bump as usize) < self.slots.len() {
            alloc.slot_bump += 1;
            alloc.slot_bump - 1
        } else {
            return None;
        };
        self.slots.clear_reader_words(s);
        alloc.len += 1;
        Some(s)
    }

    /// Returns slot `s` (already out of the index, chain freed) to the free list; stored when
    /// the parts drop.
    pub(crate) fn free_slot(&mut self, alloc: &mut Alloc, s: u32) {
        let cleared = self.slots.load(s).cleared();
        *self.slot_mut(s) = Slot {
            head: alloc.free_slot,
            ..cleared
        };
        alloc.free_slot = s;
        alloc.len -= 1;
    }
}
