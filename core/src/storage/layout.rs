//! Sizing storage for a capacity (D4): the one place that turns "entries" and "bytes per
//! entry" into the words of a cache's storage and where each part of it goes, so that
//! drivers, the C ABI and bindings do not each compute them.

use super::slot::SLOT_WORDS;
use super::word::{LANES, WORD_BYTES};
use super::{StorageError, BLOCK_SIZE, INDEX_PER_SLOT, MIN_BLOCK_SIZE, NIL};

/// Arena bytes per entry that suit today's tokens (1.4–2 KB) with their key (up to ~500
/// bytes): 10 blocks.
pub const DEFAULT_BYTES_PER_ENTRY: usize = 2560;

/// Index words per slot.
pub(crate) const INDEX_WORDS_PER_SLOT: usize = INDEX_PER_SLOT / LANES;

// D4: at most 128 bytes of bookkeeping per slot (slot and index words).
const _: () = assert!((SLOT_WORDS + INDEX_WORDS_PER_SLOT) * WORD_BYTES <= 128);

/// The storage of a cache of a given capacity, from [`layout`] (or [`layout_blocks`]): one
/// region of [`words`](Self::words) [`Word`](crate::Word)s, to give
/// [`TokenCache::with_words`](crate::TokenCache::with_words) /
/// [`BufferStorage::new`](crate::BufferStorage::new) together with this layout.
///
/// The region holds, in this order, the slot table, the index, the block links and the
/// arena; the offsets say where each starts, in words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StorageLayout {
    /// Slots: the capacity.
    pub slots: usize,
    /// Index entries: two per slot.
    pub index_len: usize,
    /// Arena blocks.
    pub blocks: usize,
    /// Bytes per block ([`BLOCK_SIZE`] from [`layout`]).
    pub block_size: usize,
    /// Arena bytes: `blocks * block_size`.
    pub arena_len: usize,
    /// Word offset of the index (the slots start at 0).
    pub index_offset: usize,
    /// Word offset of the links (one word per block).
    pub links_offset: usize,
    /// Word offset of the arena.
    pub arena_offset: usize,
    /// Words of the whole region: the length of the caller's `[Word]`.
    pub words: usize,
    /// Bytes of the whole region (`words * WORD_BYTES`), at most `isize::MAX`.
    pub total_bytes: usize,
}

impl StorageLayout {
    /// The alignment a region must start at: that of a [`Word`](crate::Word).
    pub const ALIGN: usize = WORD_BYTES;
    /// Words of one slot.
    pub const SLOT_WORDS: usize = SLOT_WORDS;
}

/// The storage of a cache holding `capacity` entries of `bytes_per_entry` arena bytes each on
/// average (an entry takes whole blocks of [`BLOCK_SIZE`]: key and token bytes together,
/// rounded up). The arena has `capacity * bytes_per_entry` bytes rounded up to whole blocks.
///
/// Errors: [`StorageError::SlotCount`] for a capacity of 0 or of `u32::MAX` and more,
/// [`StorageError::ArenaShape`] for no arena (`bytes_per_entry` 0) or `u32::MAX` blocks and
/// more, [`StorageError::TooLarge`] when the bytes overflow `usize` or exceed `isize::MAX`.
///
/// ```
/// use imds_cache::{layout, Config, TokenCache, Word};
/// let l = layout(64, 2560).unwrap();
/// assert_eq!((l.slots, l.index_len, l.blocks, l.arena_len), (64, 128, 640, 640 * 256));
/// let words: Vec<Word> = (0..l.words).map(|_| Word::new(0)).collect();
/// let cache = TokenCache::with_words(Config::DEFAULT, l, words.into_boxed_slice()).unwrap();
/// assert_eq!(cache.capacity(), 64);
///
/// // `const`, so it can size an owning cache too.
/// use imds_cache::{ArrayStorage, StorageLayout};
/// const L: StorageLayout = match layout(16, 512) {
///     Ok(l) => l,
///     Err(_) => panic!("bad layout"),
/// };
/// let owned = TokenCache::<ArrayStorage<{ L.slots }, { L.blocks }>>::new(Config::DEFAULT);
/// assert_eq!(owned.capacity(), 16);
/// ```
pub const fn layout(
    capacity: usize,
    bytes_per_entry: usize,
) -> Result<StorageLayout, StorageError> {
    let Some(bytes) = capacity.checked_mul(bytes_per_entry) else {
        return Err(StorageError::TooLarge);
    };
    layout_blocks(capacity, bytes.div_ceil(BLOCK_SIZE), BLOCK_SIZE)
}

/// The storage of a cache of `capacity` slots and `blocks` arena blocks of `block_size` bytes
/// (a multiple of 8, at least 64). Errors as [`layout`]; a bad block size is
/// [`StorageError::ArenaShape`].
pub const fn layout_blocks(
    capacity: usize,
    blocks: usize,
    block_size: usize,
) -> Result<StorageLayout, StorageError> {
    /// The value, or `TooLarge` when the arithmetic overflowed.
    macro_rules! checked {
        ($e:expr) => {
            match $e {
                Some(v) => v,
                None => return Err(StorageError::TooLarge),
            }
        };
    }
    if capacity == 0 || capacity >= NIL as usize {
        return Err(StorageError::SlotCount);
    }
    if blocks == 0 || blocks >= NIL as usize || block_size < MIN_BLOCK_SIZE || block_size % 8 != 0 {
        return Err(StorageError::ArenaShape);
    }
    let index_len = checked!(capacity.checked_mul(INDEX_PER_SLOT));
    let arena_len = checked!(blocks.checked_mul(block_size));
    let index_offset = checked!(capacity.checked_mul(SLOT_WORDS));
    let links_offset = checked!(index_offset.checked_add(index_len / LANES));
    let arena_offset = checked!(links_offset.checked_add(blocks));
    let words = checked!(arena_offset.checked_add(arena_len / WORD_BYTES));
    let total_bytes = checked!(words.checked_mul(WORD_BYTES));
    if total_bytes > isize::MAX as usize {
        return Err(StorageError::TooLarge);
    }
    Ok(StorageLayout {
        slots: capacity,
        index_len,
        blocks,
        block_size,
        arena_len,
        index_offset,
        links_offset,
        arena_offset,
        words,
        total_bytes,
    })
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::{BufferStorage, Word};
    use std::vec::Vec;

    #[test]
    fn lengths_and_offsets() {
        let l = layout(4096, DEFAULT_BYTES_PER_ENTRY).unwrap();
        let slots = 4096 * SLOT_WORDS;
        let index = 8192 / LANES;
        let arena = 40_960 * 256 / WORD_BYTES;
        assert_eq!(
            l,
            StorageLayout {
                slots: 4096,
                index_len: 8192,
                blocks: 40_960,
                block_size: 256,
                arena_len: 40_960 * 256,
                index_offset: slots,
                links_offset: slots + index,
                arena_offset: slots + index + 40_960,
                words: slots + index + 40_960 + arena,
                total_bytes: (slots + index + 40_960 + arena) * WORD_BYTES,
            }
        );
        // Bytes per entry are an average: the arena is rounded up once, not per entry.
        assert_eq!(layout(3, 100).unwrap().blocks, 2);
        assert_eq!(layout(1, 1).unwrap().blocks, 1);
        assert_eq!(StorageLayout::ALIGN, core::mem::align_of::<Word>());
    }

    #[test]
    fn out_of_range_is_an_error() {
        use StorageError::*;
        assert_eq!(layout(0, 2560), Err(SlotCount));
        assert_eq!(layout(u32::MAX as usize, 256), Err(SlotCount));
        assert_eq!(layout(1, 0), Err(ArenaShape));
        assert_eq!(layout(2, usize::MAX), Err(TooLarge));
        assert_eq!(layout(1 << 20, 1 << 20), Err(ArenaShape));
        assert_eq!(layout_blocks(1, 1, 60), Err(ArenaShape));
        assert_eq!(layout_blocks(1, 1, 100), Err(ArenaShape));
        assert!(layout_blocks(1, 1, 64).is_ok());
    }

    #[test]
    fn buffer_storage_accepts_exactly_these_lengths() {
        for (capacity, bytes) in [(1, 1), (64, 2560), (100, 300)] {
            let l = layout(capacity, bytes).unwrap();
            let shape = |words: usize, l: StorageLayout| {
                let w: Vec<Word> = (0..words).map(|_| Word::new(0)).collect();
                BufferStorage::new(w, l).map(|_| ())
            };
            assert_eq!(shape(l.words, l), Ok(()));
            assert_eq!(shape(l.words - 1, l), Err(StorageError::RegionLength));
            assert_eq!(shape(l.words + 1, l), Err(StorageError::RegionLength));
            let forged = StorageLayout {
                arena_offset: l.arena_offset + 1,
                ..l
            };
            assert_eq!(shape(l.words, forged), Err(StorageError::ArenaShape));
        }
    }
}
