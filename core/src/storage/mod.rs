//! Where the cache keeps its entries (D4): a slot table, an open-addressing index over it, and
//! one byte arena in fixed blocks chained per entry.
//!
//! Memory, per entry: a [`Slot`] is 72 bytes (`repr(C)`, no padding) and the index holds two
//! `u32` per slot (8 bytes), so 80 bytes of overhead per slot. Key and token bytes live in the
//! arena in blocks of [`BLOCK_SIZE`] bytes, each with a 4-byte link; an entry wastes less than
//! one block at its end. For a 1.9 KB token and a ~100-byte key that is 8 blocks (2048 bytes)
//! for ~2000 bytes of data: ≈ 2.4 % lost in the last block plus 1.6 % for links, well under
//! 12 %. The test `memory_budget_for_4096_entries` measures it. [`layout`] sizes the four
//! buffers for a capacity.

mod arena;
mod index;
mod layout;
mod slot;

use zeroize::Zeroize;

pub(crate) use arena::{chain_is_run, read_chain, Cursor};
pub(crate) use index::find;
pub use layout::{layout, StorageLayout, DEFAULT_BYTES_PER_ENTRY};
pub use slot::Slot;

/// Default arena block size.
pub const BLOCK_SIZE: usize = 256;
/// Index entries (`u32`) per slot: the index is kept at most half full.
pub(crate) const INDEX_PER_SLOT: usize = 2;
/// Smallest block size [`BufferStorage::new`] accepts.
pub(crate) const MIN_BLOCK_SIZE: usize = 64;
/// "No block" / "no slot" marker in links.
pub(crate) const NIL: u32 = u32::MAX;

/// The storage parts the cache works on.
pub struct Parts<'a> {
    pub(crate) slots: &'a mut [Slot],
    pub(crate) index: &'a mut [u32],
    pub(crate) arena: &'a mut [u8],
    pub(crate) links: &'a mut [u32],
}

/// Storage for a cache: implemented by [`SliceStorage`] (caller memory, sized at run time) and
/// [`ArrayStorage`] (const-generic, can be a `static`). Sealed.
pub trait Storage: sealed::Sealed {
    /// The parts, mutably.
    fn parts(&mut self) -> Parts<'_>;
    /// The slot table, for read-only scans.
    fn slots(&self) -> &[Slot];
    /// The arena and its block links, for reading.
    fn arena(&self) -> (&[u8], &[u32]);
}

mod sealed {
    pub trait Sealed {}
}

/// Why caller-provided storage was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StorageError {
    /// No slots, or more than `u32::MAX - 1`.
    SlotCount,
    /// The index must have at least twice as many entries as there are slots.
    IndexTooSmall,
    /// The arena is not `links.len()` blocks of at least 64 bytes each, or is empty.
    ArenaShape,
    /// The storage asked of [`layout`] would not fit in the address space.
    TooLarge,
}

impl StorageError {
    /// A short description of the error.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::SlotCount => "slot count must be 1..u32::MAX",
            Self::IndexTooSmall => "index must hold at least two entries per slot",
            Self::ArenaShape => "arena must be links.len() blocks of at least 64 bytes",
            Self::TooLarge => "storage size does not fit in the address space",
        }
    }
}

impl core::fmt::Display for StorageError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl core::error::Error for StorageError {}

/// Storage in four buffers sized at run time: borrowed caller memory ([`SliceStorage`], the
/// C ABI's way) or any owning container (`Vec`, `Box<[T]>`) in a std driver.
pub struct BufferStorage<S, I, A, L> {
    slots: S,
    index: I,
    arena: A,
    links: L,
}

/// Storage over borrowed caller memory.
pub type SliceStorage<'a> =
    BufferStorage<&'a mut [Slot], &'a mut [u32], &'a mut [u8], &'a mut [u32]>;

impl<S, I, A, L> BufferStorage<S, I, A, L>
where
    S: AsMut<[Slot]> + AsRef<[Slot]>,
    I: AsMut<[u32]> + AsRef<[u32]>,
    A: AsMut<[u8]> + AsRef<[u8]>,
    L: AsMut<[u32]> + AsRef<[u32]>,
{
    /// Storage over four buffers. Their contents are reset; `index.len() >= 2 * slots.len()`;
    /// `arena.len()` is a multiple of `links.len()`, giving the block size (≥ 64). [`layout`]
    /// gives the lengths for a capacity.
    pub fn new(mut slots: S, mut index: I, arena: A, links: L) -> Result<Self, StorageError> {
        let (n_slots, n_index) = (slots.as_ref().len(), index.as_ref().len());
        let (n_arena, n_links) = (arena.as_ref().len(), links.as_ref().len());
        if n_slots == 0 || n_slots >= NIL as usize {
            return Err(StorageError::SlotCount);
        }
        if n_index < INDEX_PER_SLOT * n_slots {
            return Err(StorageError::IndexTooSmall);
        }
        if n_links == 0
            || n_links >= NIL as usize
            || n_arena % n_links != 0
            || n_arena / n_links < MIN_BLOCK_SIZE
        {
            return Err(StorageError::ArenaShape);
        }
        slots.as_mut().fill(Slot::EMPTY);
        index.as_mut().fill(0);
        Ok(Self {
            slots,
            index,
            arena,
            links,
        })
    }
}

impl<S, I, A, L> sealed::Sealed for BufferStorage<S, I, A, L> {}

impl<S, I, A, L> Storage for BufferStorage<S, I, A, L>
where
    S: AsMut<[Slot]> + AsRef<[Slot]>,
    I: AsMut<[u32]> + AsRef<[u32]>,
    A: AsMut<[u8]> + AsRef<[u8]>,
    L: AsMut<[u32]> + AsRef<[u32]>,
{
    fn parts(&mut self) -> Parts<'_> {
        Parts {
            slots: self.slots.as_mut(),
            index: self.index.as_mut(),
            arena: self.arena.as_mut(),
            links: self.links.as_mut(),
        }
    }

    fn slots(&self) -> &[Slot] {
        self.slots.as_ref()
    }

    fn arena(&self) -> (&[u8], &[u32]) {
        (self.arena.as_ref(), self.links.as_ref())
    }
}

/// Owning storage with its capacity in the type: `SLOTS` entries and `BLOCKS` arena blocks of
/// [`BLOCK_SIZE`] bytes. `const fn new()`, so a cache can be a `static`.
pub struct ArrayStorage<const SLOTS: usize, const BLOCKS: usize> {
    slots: [Slot; SLOTS],
    index: [[u32; INDEX_PER_SLOT]; SLOTS],
    arena: [[u8; BLOCK_SIZE]; BLOCKS],
    links: [u32; BLOCKS],
}

impl<const SLOTS: usize, const BLOCKS: usize> ArrayStorage<SLOTS, BLOCKS> {
    /// Empty storage.
    pub const fn new() -> Self {
        Self {
            slots: [Slot::EMPTY; SLOTS],
            index: [[0; INDEX_PER_SLOT]; SLOTS],
            arena: [[0; BLOCK_SIZE]; BLOCKS],
            links: [NIL; BLOCKS],
        }
    }
}

impl<const SLOTS: usize, const BLOCKS: usize> Default for ArrayStorage<SLOTS, BLOCKS> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const SLOTS: usize, const BLOCKS: usize> sealed::Sealed for ArrayStorage<SLOTS, BLOCKS> {}

impl<const SLOTS: usize, const BLOCKS: usize> Storage for ArrayStorage<SLOTS, BLOCKS> {
    fn parts(&mut self) -> Parts<'_> {
        Parts {
            slots: &mut self.slots,
            index: self.index.as_flattened_mut(),
            arena: self.arena.as_flattened_mut(),
            links: &mut self.links,
        }
    }

    fn slots(&self) -> &[Slot] {
        &self.slots
    }

    fn arena(&self) -> (&[u8], &[u32]) {
        (self.arena.as_flattened(), &self.links)
    }
}

impl<const SLOTS: usize, const BLOCKS: usize> Drop for ArrayStorage<SLOTS, BLOCKS> {
    fn drop(&mut self) {
        self.arena.as_flattened_mut().zeroize();
    }
}

/// Free-list and bump state of the arena and the slot table (kept in the cache, not the
/// storage, so that storage can be plain memory).
#[derive(Clone, Debug)]
pub(crate) struct Alloc {
    pub(crate) free_block: u32,
    pub(crate) block_bump: u32,
    pub(crate) free_blocks: u32,
    pub(crate) free_slot: u32,
    pub(crate) slot_bump: u32,
    pub(crate) len: u32,
}

impl Alloc {
    pub(crate) const fn new(blocks: u32) -> Self {
        Self {
            free_block: NIL,
            block_bump: 0,
            free_blocks: blocks,
            free_slot: NIL,
            slot_bump: 0,
            len: 0,
        }
    }
}
