//! One entry's bookkeeping in the slot table, its state bits, and taking and freeing slots.

use super::{Alloc, Parts, NIL};

/// The slot holds an entry (else it is free, or on the free list).
const OCCUPIED: u8 = 1;
/// The entry was used since the CLOCK hand last passed (D4).
const REFERENCED: u8 = 2;
/// The entry holds a token (else only its key).
const HAS_TOKEN: u8 = 4;
/// The live ticket got Arc's challenge and waits for the key file.
const CHALLENGED: u8 = 8;
/// The live ticket answered Arc's challenge: a second challenge is refused.
const ANSWERED: u8 = 16;
/// The chain is laid out front to back in the arena (see [`chain_is_run`]): a hit copies the
/// token with one slice copy, without reading links.
///
/// [`chain_is_run`]: super::chain_is_run
const RUN: u8 = 32;

/// One cache entry's bookkeeping. Holds no key or token bytes (those are in the arena), so its
/// `Debug` shows nothing secret. Laid out (`repr(C)`) with what a hit reads first, in 48
/// bytes, and the fetch bookkeeping after.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct Slot {
    /// Expiry of the token (ms).
    pub(crate) expires_on: u64,
    /// When to refresh the token (ms).
    pub(crate) refresh_on: u64,
    /// Lease end of the live ticket; 0 when there is none.
    pub(crate) lease_until: u64,
    /// No new fetch before this (backoff, negative cache, eager-refresh spacing).
    pub(crate) retry_at: u64,
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
    /// Request time of the live ticket (D1).
    pub(crate) issued_at: u64,
    /// Time of the first 410 of the current run of 410s; 0 when none.
    pub(crate) gone_since: u64,
}

/// The memory figures of the module documentation count on this size.
const _: () = assert!(core::mem::size_of::<Slot>() == 72);

impl Slot {
    /// An unused slot, for initialising caller-provided storage: `[Slot::EMPTY; N]`.
    pub const EMPTY: Slot = Slot {
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
        expires_on: 0,
        refresh_on: 0,
        lease_until: 0,
        issued_at: 0,
        retry_at: 0,
        gone_since: 0,
    };

    /// A new entry's slot: occupied, recently used, no token yet.
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
            flags: OCCUPIED | REFERENCED,
            flavour,
            ..Slot::EMPTY
        }
    }

    pub(crate) fn occupied(&self) -> bool {
        self.flags & OCCUPIED != 0
    }

    pub(crate) fn live_ticket(&self, now: u64) -> bool {
        self.lease_until > now
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

    /// Whether the chain is laid out front to back, so the token is one slice of the arena.
    pub(crate) fn is_run(&self) -> bool {
        self.flags & RUN != 0
    }

    /// Whether the entry was used since the CLOCK hand last passed.
    pub(crate) fn referenced(&self) -> bool {
        self.flags & REFERENCED != 0
    }

    /// Sets or clears the CLOCK bit.
    pub(crate) fn set_referenced(&mut self, on: bool) {
        if on {
            self.flags |= REFERENCED;
        } else {
            self.flags &= !REFERENCED;
        }
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

impl Parts<'_> {
    /// Takes a free slot, if any.
    pub(crate) fn alloc_slot(&mut self, alloc: &mut Alloc) -> Option<u32> {
        let s = if alloc.free_slot != NIL {
            let s = alloc.free_slot;
            alloc.free_slot = self.slots[s as usize].head;
            s
        } else if (alloc.slot_bump as usize) < self.slots.len() {
            alloc.slot_bump += 1;
            alloc.slot_bump - 1
        } else {
            return None;
        };
        alloc.len += 1;
        Some(s)
    }

    /// Returns slot `s` (already out of the index, chain freed) to the free list.
    pub(crate) fn free_slot(&mut self, alloc: &mut Alloc, s: u32) {
        let generation = self.slots[s as usize].generation.wrapping_add(1);
        self.slots[s as usize] = Slot {
            generation,
            head: alloc.free_slot,
            ..Slot::EMPTY
        };
        alloc.free_slot = s;
        alloc.len -= 1;
    }
}
