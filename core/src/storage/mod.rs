//! Where the cache keeps its entries (D4, D15): a slot table, an open-addressing index over
//! it, and one arena in fixed blocks chained per entry, all of it atomic [`Word`]s so that a
//! reader can copy a token while the writer works (see [`slot`] for the seqlock).
//!
//! Memory, per entry: a slot is [`StorageLayout::SLOT_WORDS`] words (96 bytes with 64-bit
//! words: sequence, refresh claim, CLOCK bit and nine 64-bit fields) and the index holds two
//! `u32` per slot (8 bytes), so 104 bytes of overhead per slot. Key and token bytes live in
//! the arena in blocks of [`BLOCK_SIZE`] bytes, each with a one-word link; an entry wastes
//! less than one block at its end. For a 1.9 KB token and a ~100-byte key that is 8 blocks
//! (2048 bytes + 64 of links) for ~2000 bytes of data: ≈ 2.4 % lost in the last block plus
//! 3 % for links, well under 12 %. The test `memory_budget_for_4096_entries` measures it.
//! [`layout`] sizes the region for a capacity.

mod arena;
mod index;
mod layout;
mod slot;
mod word;

pub(crate) use arena::{chain_is_run, copy_chain, Cursor, Links};
pub(crate) use index::find;
pub(crate) use layout::INDEX_WORDS_PER_SLOT;
pub use layout::{layout, layout_blocks, StorageLayout, DEFAULT_BYTES_PER_ENTRY};
pub(crate) use slot::{Slot, SlotMut, SlotWords, CLAIM, REFERENCED, SEQ, SLOT_WORDS};
#[cfg(all(loom, test))]
pub(crate) use word::crash;
pub(crate) use word::{fence, load, load_bytes as load_bytes_run, Lanes, Ordering, Val};
pub use word::{Word, WORD_BYTES};

/// Default arena block size.
pub const BLOCK_SIZE: usize = 256;
/// Index entries (`u32`) per slot: the index is kept at most half full.
pub(crate) const INDEX_PER_SLOT: usize = 2;
/// Smallest block size [`layout_blocks`] accepts.
pub(crate) const MIN_BLOCK_SIZE: usize = 64;
/// "No block" / "no slot" marker in links.
pub(crate) const NIL: u32 = u32::MAX;

/// The words of a storage, split into its parts.
#[doc(hidden)]
pub struct Regions<'a> {
    slots: &'a [Word],
    index: &'a [Word],
    links: &'a [Word],
    arena: &'a [Word],
    block_size: usize,
}

/// Storage for a cache: implemented by [`BufferStorage`] (one region of caller memory, sized
/// at run time by [`layout`]), [`ArrayStorage`] (const-generic, can be a `static`) and shared
/// references to either (so that a [`Reader`](crate::Reader) and the cache can hold the
/// same storage). Sealed.
pub trait Storage: sealed::Sealed {
    /// The storage's words, split into its parts.
    #[doc(hidden)]
    fn regions(&self) -> Regions<'_>;
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
    /// No blocks, too many, or a block size under 64 bytes or not a multiple of 8; or a
    /// layout whose offsets do not follow from its counts.
    ArenaShape,
    /// The storage asked of [`layout`] would not fit in the address space.
    TooLarge,
    /// The region is not [`StorageLayout::words`] words long.
    RegionLength,
}

impl StorageError {
    /// A short description of the error.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::SlotCount => "slot count must be 1..u32::MAX",
            Self::ArenaShape => {
                "arena must be 1..u32::MAX blocks of 64 or more bytes (multiple of 8)"
            }
            Self::TooLarge => "storage size does not fit in the address space",
            Self::RegionLength => "region must be exactly layout.words words long",
        }
    }
}

impl core::fmt::Display for StorageError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl core::error::Error for StorageError {}

/// Storage in one region of words laid out by a [`StorageLayout`]: borrowed caller memory
/// ([`SliceStorage`], the C ABI's way), or any owning or shared container (`Box<[Word]>`,
/// `Arc<[Word]>`) in a std driver. Cloning it (when `R` is `Clone`, as `&[Word]` and
/// `Arc<[Word]>` are) shares the words: that is how a [`Reader`](crate::Reader) is made.
#[derive(Clone)]
pub struct BufferStorage<R> {
    words: R,
    layout: StorageLayout,
}

/// Storage over borrowed caller memory.
pub type SliceStorage<'a> = BufferStorage<&'a [Word]>;

impl<R: AsRef<[Word]>> BufferStorage<R> {
    /// Storage over `words`, laid out by `layout` (from [`layout`] or [`layout_blocks`]):
    /// exactly `layout.words` words. Their contents are reset when a cache is made over them.
    pub fn new(words: R, layout: StorageLayout) -> Result<Self, StorageError> {
        let expected = layout_blocks(layout.slots, layout.blocks, layout.block_size)?;
        if expected != layout {
            return Err(StorageError::ArenaShape);
        }
        if words.as_ref().len() != layout.words {
            return Err(StorageError::RegionLength);
        }
        Ok(Self { words, layout })
    }
}

impl<R> sealed::Sealed for BufferStorage<R> {}

impl<R: AsRef<[Word]>> Storage for BufferStorage<R> {
    fn regions(&self) -> Regions<'_> {
        let l = &self.layout;
        let w = self.words.as_ref();
        Regions {
            slots: &w[..l.index_offset],
            index: &w[l.index_offset..l.links_offset],
            links: &w[l.links_offset..l.arena_offset],
            arena: &w[l.arena_offset..l.words],
            block_size: l.block_size,
        }
    }
}

impl<T: Storage> sealed::Sealed for &T {}

impl<T: Storage> Storage for &T {
    fn regions(&self) -> Regions<'_> {
        (**self).regions()
    }
}

/// Owning storage with its capacity in the type: `SLOTS` entries and `BLOCKS` arena blocks of
/// [`BLOCK_SIZE`] bytes. `const fn new()`, so it (or a cache over it) can be a `static`; a
/// `&'static ArrayStorage` is storage too, shared by a cache and its readers.
#[cfg(not(all(loom, test)))]
pub struct ArrayStorage<const SLOTS: usize, const BLOCKS: usize> {
    slots: [[Word; SLOT_WORDS]; SLOTS],
    index: [[Word; INDEX_WORDS_PER_SLOT]; SLOTS],
    links: [Word; BLOCKS],
    arena: [[Word; BLOCK_SIZE / WORD_BYTES]; BLOCKS],
}

#[cfg(not(all(loom, test)))]
impl<const SLOTS: usize, const BLOCKS: usize> ArrayStorage<SLOTS, BLOCKS> {
    /// Empty storage.
    #[allow(clippy::declare_interior_mutable_const)] // each use is a new array, as intended
    pub const fn new() -> Self {
        use word::ZERO;
        const SLOT: [Word; SLOT_WORDS] = [ZERO; SLOT_WORDS];
        const INDEX: [Word; INDEX_WORDS_PER_SLOT] = [ZERO; INDEX_WORDS_PER_SLOT];
        const BLOCK: [Word; BLOCK_SIZE / WORD_BYTES] = [ZERO; BLOCK_SIZE / WORD_BYTES];
        Self {
            slots: [SLOT; SLOTS],
            index: [INDEX; SLOTS],
            links: [ZERO; BLOCKS],
            arena: [BLOCK; BLOCKS],
        }
    }
}

#[cfg(not(all(loom, test)))]
impl<const SLOTS: usize, const BLOCKS: usize> Default for ArrayStorage<SLOTS, BLOCKS> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(not(all(loom, test)))]
impl<const SLOTS: usize, const BLOCKS: usize> sealed::Sealed for ArrayStorage<SLOTS, BLOCKS> {}

#[cfg(not(all(loom, test)))]
impl<const SLOTS: usize, const BLOCKS: usize> Storage for ArrayStorage<SLOTS, BLOCKS> {
    fn regions(&self) -> Regions<'_> {
        Regions {
            slots: self.slots.as_flattened(),
            index: self.index.as_flattened(),
            links: &self.links,
            arena: self.arena.as_flattened(),
            block_size: BLOCK_SIZE,
        }
    }
}

/// A storage with its parts at hand: what the cache holds. Reads go through `&self`; changes
/// through [`parts`](Self::parts) and [`parts_for`](Self::parts_for) (`&mut self`: one writer).
pub(crate) struct Table<S> {
    storage: S,
}

impl<S: Storage> Table<S> {
    /// A table over `storage`, all of whose words are reset to zero (an empty table: every
    /// slot free, every index entry empty).
    pub(crate) fn reset(storage: S) -> Self {
        let r = storage.regions();
        for part in [r.slots, r.index, r.links, r.arena] {
            part.iter().for_each(|w| w.store(0, Ordering::Relaxed));
        }
        // Publishes the zeroes before the table is handed to readers (which get it through
        // something that synchronises anyway: a thread spawn, a lock, an `Arc`).
        fence(Ordering::Release);
        Self { storage }
    }

    /// A table over storage that already holds one (written by another cache over the same
    /// words, as when processes share a mapped file), or known to be all zeroes
    /// (`ArrayStorage::new`).
    pub(crate) const fn fresh(storage: S) -> Self {
        Self { storage }
    }

    pub(crate) fn storage(&self) -> &S {
        &self.storage
    }

    pub(crate) fn slots(&self) -> SlotWords<'_> {
        SlotWords {
            words: self.storage.regions().slots,
        }
    }

    pub(crate) fn index(&self) -> Lanes<'_> {
        Lanes::new(self.storage.regions().index)
    }

    /// The arena's words, its links and the block size.
    pub(crate) fn arena(&self) -> (&[Word], Links<'_>, usize) {
        let r = self.storage.regions();
        (r.arena, Links { words: r.links }, r.block_size)
    }

    /// The parts, to change them.
    pub(crate) fn parts(&mut self) -> Parts<'_> {
        let r = self.storage.regions();
        Parts {
            slots: SlotWords { words: r.slots },
            index: Lanes::new(r.index),
            links: Links { words: r.links },
            arena: r.arena,
            block_size: r.block_size,
            section: NIL,
            staged: None,
        }
    }

    /// The parts, with a write section of slot `s` open until they drop: every change made
    /// through them (to `s`, its chain, or blocks it will point at) is one change for readers.
    pub(crate) fn parts_for(&mut self, s: u32) -> Parts<'_> {
        let mut parts = self.parts();
        parts.slots.begin(s);
        parts.section = s;
        parts
    }

    /// Empties the table in place: each slot is cleared in a write section (an odd sequence
    /// left by a writer that died is closed, never reset, so a reader mid-copy sees a change),
    /// with its generation moved on so that old tickets are stale; then the index, links and
    /// arena are zeroed. Returns how many slots held an entry.
    pub(crate) fn clear(&mut self) -> usize {
        let slots = self.slots();
        let mut occupied = 0;
        for s in 0..slots.len() as u32 {
            if load(&slots.of(s)[SEQ]) % 2 == 0 {
                slots.begin(s);
            }
            let old = slots.load(s);
            occupied += usize::from(old.occupied());
            slots.store_in_section(s, &old, &old.cleared());
            slots.end(s);
        }
        let r = self.storage.regions();
        for part in [r.index, r.links, r.arena] {
            part.iter().for_each(|w| w.store(0, Ordering::Relaxed));
        }
        fence(Ordering::Release);
        occupied
    }

    /// Wipes the table for good (D13): every slot's sequence is left odd, so a reader that
    /// outlives the cache misses, then every word of the arena is zeroed.
    pub(crate) fn wipe(&mut self) {
        let slots = self.slots();
        for s in 0..slots.len() as u32 {
            if load(&slots.of(s)[SEQ]) % 2 == 0 {
                slots.begin(s);
            }
        }
        let (arena, _, _) = self.arena();
        arena.iter().for_each(|w| w.store(0, Ordering::Relaxed));
    }
}

/// The storage parts the writer works on (see [`Table::parts_for`]).
pub(crate) struct Parts<'a> {
    pub(crate) slots: SlotWords<'a>,
    pub(crate) index: Lanes<'a>,
    pub(crate) links: Links<'a>,
    pub(crate) arena: &'a [Word],
    block_size: usize,
    /// The slot whose write section these parts hold open, or `NIL`.
    section: u32,
    /// A slot being edited: (slot, as read, as changed); stored when the parts drop.
    staged: Option<(u32, Slot, Slot)>,
}

impl Parts<'_> {
    /// Edits slot `s`; the change is stored when the parts drop (or another slot is edited).
    pub(crate) fn slot_mut(&mut self, s: u32) -> &mut Slot {
        if self.staged.is_some_and(|(t, _, _)| t != s) {
            self.flush();
        }
        let slots = self.slots;
        let (_, _, slot) = self.staged.get_or_insert_with(|| {
            let slot = slots.load(s);
            (s, slot, slot)
        });
        slot
    }

    /// Stores the edited slot: inside the open section if it is that slot's, else in a
    /// section of its own.
    fn flush(&mut self) {
        if let Some((s, old, slot)) = self.staged.take() {
            if s == self.section {
                self.slots.store_in_section(s, &old, &slot);
            } else {
                self.slots.write(s, &slot);
            }
        }
    }
}

impl Drop for Parts<'_> {
    fn drop(&mut self) {
        self.flush();
        if self.section != NIL {
            self.slots.end(self.section);
        }
    }
}

/// Free-list and bump state of the arena and the slot table (kept in the cache, not the
/// storage: only the writer uses it).
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
