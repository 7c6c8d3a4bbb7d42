//! Handing the writer's role between caches that share one storage (several processes mapping
//! one file): the bookkeeping a writer keeps outside the storage words travels as a
//! [`WriterState`], and a writer that died inside a write leaves a table that [`repair`]
//! empties.
//!
//! The driver that shares a table does, under its cross-process lock: `resume` with the state
//! the last writer stored, mark the table dirty, write, store `writer_state`, clear the mark.
//! A mark found set means a writer died mid-write: `repair`.
//!
//! [`repair`]: TokenCache::repair

use super::TokenCache;
use crate::storage::{Alloc, Storage, NIL};

/// The writer's free lists, bump pointers and entry count, as three words to keep beside a
/// shared table. Opaque: only [`TokenCache::resume`] reads it back, and checks it first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriterState([u64; 3]);

impl WriterState {
    /// The state as words, to store.
    pub const fn to_words(self) -> [u64; 3] {
        self.0
    }

    /// A state read back from words (checked when resumed).
    pub const fn from_words(words: [u64; 3]) -> Self {
        Self(words)
    }
}

/// A [`WriterState`] that does not fit the table: the words were not written by a cache over
/// this table (or were torn by a crash). [`TokenCache::repair`] makes the table usable again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadWriterState;

impl core::fmt::Display for BadWriterState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("writer state does not fit the table")
    }
}

impl core::error::Error for BadWriterState {}

fn pair(low: u32, high: u32) -> u64 {
    u64::from(low) | u64::from(high) << 32
}

fn halves(word: u64) -> (u32, u32) {
    (word as u32, (word >> 32) as u32)
}

impl<S: Storage> TokenCache<S> {
    /// This cache's writer state, for the next writer of a shared table.
    pub fn writer_state(&self) -> WriterState {
        let a = &self.alloc;
        WriterState([
            pair(a.free_block, a.block_bump),
            pair(a.free_blocks, a.free_slot),
            pair(a.slot_bump, a.len),
        ])
    }

    /// Takes over the writer's role from the cache that stored `state` over the same table.
    /// A state that cannot be this table's is refused and nothing changes.
    pub fn resume(&mut self, state: WriterState) -> Result<(), BadWriterState> {
        let (free_block, block_bump) = halves(state.0[0]);
        let (free_blocks, free_slot) = halves(state.0[1]);
        let (slot_bump, len) = halves(state.0[2]);
        let slots = self.storage.slots().len() as u32;
        let (_, links, _) = self.storage.arena();
        let blocks = links.len() as u32;
        let fits = (free_block == NIL || free_block < blocks)
            && block_bump <= blocks
            && free_blocks <= blocks
            && (free_slot == NIL || free_slot < slots)
            && slot_bump <= slots
            && len <= slot_bump;
        if !fits {
            return Err(BadWriterState);
        }
        self.alloc = Alloc {
            free_block,
            block_bump,
            free_blocks,
            free_slot,
            slot_bump,
            len,
        };
        Ok(())
    }

    /// Empties a table whose last writer died inside a write: every slot is cleared in a write
    /// section of its own (a half-written one's odd sequence included, so sequences only ever
    /// grow and a reader mid-copy sees the change), tickets become stale (generations move
    /// on), the index, links and arena are zeroed (the arena holds tokens: wiped). Returns
    /// the entries dropped. Dropping all entries rather than only the torn one keeps this
    /// free of scratch memory; each key costs one request to fetch again.
    pub fn repair(&mut self) -> usize {
        let dropped = self.storage.clear();
        let (_, links, _) = self.storage.arena();
        self.alloc = Alloc::new(links.len() as u32);
        self.hand = 0;
        dropped
    }
}
