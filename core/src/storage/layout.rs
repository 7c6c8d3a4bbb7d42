//! Sizing storage for a capacity (D4): the one place that turns "entries" and "bytes per
//! entry" into the lengths of the four buffers, so that drivers, the C ABI and bindings do not
//! each compute them.

use core::mem::{align_of, size_of};

use super::{Slot, StorageError, BLOCK_SIZE, INDEX_PER_SLOT, NIL};

/// Arena bytes per entry that suit today's tokens (1.4–2 KB) with their key (up to ~500
/// bytes): 10 blocks.
pub const DEFAULT_BYTES_PER_ENTRY: usize = 2560;

/// The buffers of a cache of a given capacity, from [`layout`]: the lengths to give
/// [`TokenCache::with_slices`](crate::TokenCache::with_slices) /
/// [`BufferStorage::new`](crate::BufferStorage::new), and where each buffer goes when all four
/// share one region.
///
/// In one region the buffers follow each other in the order slots, index, links, arena; a
/// region that starts at an address aligned to [`StorageLayout::ALIGN`] then needs no padding
/// between them (every offset is aligned for its buffer's type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StorageLayout {
    /// Length of the slot table (`[Slot]`): the capacity.
    pub slots: usize,
    /// Length of the index (`[u32]`): two entries per slot.
    pub index_len: usize,
    /// Arena blocks of [`BLOCK_SIZE`] bytes; also the length of the links (`[u32]`).
    pub blocks: usize,
    /// Length of the arena in bytes (`[u8]`): `blocks * BLOCK_SIZE`.
    pub arena_len: usize,
    /// Byte offset of the index in a shared region (the slots start at 0).
    pub index_offset: usize,
    /// Byte offset of the links in a shared region.
    pub links_offset: usize,
    /// Byte offset of the arena in a shared region.
    pub arena_offset: usize,
    /// Bytes of all four buffers together (the region's size), at most `isize::MAX`.
    pub total_bytes: usize,
}

impl StorageLayout {
    /// The alignment a shared region must start at: that of [`Slot`].
    pub const ALIGN: usize = align_of::<Slot>();
}

// The index and the links follow the slots and each other without padding.
const _: () = assert!(size_of::<Slot>() % align_of::<u32>() == 0);

/// The storage of a cache holding `capacity` entries of `bytes_per_entry` arena bytes each on
/// average (an entry takes whole blocks of [`BLOCK_SIZE`]: key and token bytes together,
/// rounded up). The arena has `capacity * bytes_per_entry` bytes rounded up to whole blocks.
///
/// Errors: [`StorageError::SlotCount`] for a capacity of 0 or of `u32::MAX` and more,
/// [`StorageError::ArenaShape`] for no arena (`bytes_per_entry` 0) or `u32::MAX` blocks and
/// more, [`StorageError::TooLarge`] when the bytes overflow `usize` or exceed `isize::MAX`.
///
/// ```
/// use imds_cache::{layout, Config, Slot, TokenCache};
/// let l = layout(64, 2560).unwrap();
/// assert_eq!((l.slots, l.index_len, l.blocks, l.arena_len), (64, 128, 640, 640 * 256));
/// let cache = TokenCache::with_slices(
///     Config::DEFAULT,
///     vec![Slot::EMPTY; l.slots],
///     vec![0u32; l.index_len],
///     vec![0u8; l.arena_len],
///     vec![0u32; l.blocks],
/// )
/// .unwrap();
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
    let blocks = checked!(capacity.checked_mul(bytes_per_entry)).div_ceil(BLOCK_SIZE);
    if blocks == 0 || blocks >= NIL as usize {
        return Err(StorageError::ArenaShape);
    }
    let index_len = checked!(capacity.checked_mul(INDEX_PER_SLOT));
    let arena_len = checked!(blocks.checked_mul(BLOCK_SIZE));
    let index_offset = checked!(capacity.checked_mul(size_of::<Slot>()));
    let index_bytes = checked!(index_len.checked_mul(size_of::<u32>()));
    let links_offset = checked!(index_offset.checked_add(index_bytes));
    let links_bytes = checked!(blocks.checked_mul(size_of::<u32>()));
    let arena_offset = checked!(links_offset.checked_add(links_bytes));
    let total_bytes = checked!(arena_offset.checked_add(arena_len));
    if total_bytes > isize::MAX as usize {
        return Err(StorageError::TooLarge);
    }
    Ok(StorageLayout {
        slots: capacity,
        index_len,
        blocks,
        arena_len,
        index_offset,
        links_offset,
        arena_offset,
        total_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BufferStorage;
    use std::vec;

    #[test]
    fn lengths_and_offsets() {
        let l = layout(4096, DEFAULT_BYTES_PER_ENTRY).unwrap();
        let (slots, index, links) = (4096 * 72, 8192 * 4, 40_960 * 4);
        assert_eq!(
            l,
            StorageLayout {
                slots: 4096,
                index_len: 8192,
                blocks: 40_960,
                arena_len: 40_960 * 256,
                index_offset: slots,
                links_offset: slots + index,
                arena_offset: slots + index + links,
                total_bytes: slots + index + links + 40_960 * 256,
            }
        );
        // Bytes per entry are an average: the arena is rounded up once, not per entry.
        assert_eq!(layout(3, 100).unwrap().blocks, 2);
        assert_eq!(layout(1, 1).unwrap().blocks, 1);
        assert_eq!(StorageLayout::ALIGN, 8);
        for l in [layout(1, 1).unwrap(), layout(77, 1000).unwrap()] {
            assert_eq!(l.index_offset % align_of::<u32>(), 0);
            assert_eq!(l.links_offset % align_of::<u32>(), 0);
        }
    }

    #[test]
    fn out_of_range_is_an_error() {
        use StorageError::*;
        assert_eq!(layout(0, 2560), Err(SlotCount));
        assert_eq!(layout(u32::MAX as usize, 256), Err(SlotCount));
        assert_eq!(layout(1, 0), Err(ArenaShape));
        assert_eq!(layout(2, usize::MAX), Err(TooLarge));
        assert_eq!(layout(1, usize::MAX), Err(ArenaShape)); // more than u32::MAX blocks
        assert_eq!(layout(1 << 20, 1 << 20), Err(ArenaShape));
        #[cfg(target_pointer_width = "64")]
        assert_eq!(
            layout(u32::MAX as usize - 1, 256).map(|l| l.blocks),
            Ok(u32::MAX as usize - 1)
        );
    }

    #[test]
    fn buffer_storage_accepts_exactly_these_lengths() {
        for (capacity, bytes) in [(1, 1), (64, 2560), (100, 300)] {
            let l = layout(capacity, bytes).unwrap();
            let shape = |slots: usize, index: usize, blocks: usize| {
                BufferStorage::new(
                    vec![Slot::EMPTY; slots],
                    vec![0u32; index],
                    vec![0u8; blocks * BLOCK_SIZE],
                    vec![0u32; blocks],
                )
                .map(|_| ())
            };
            assert_eq!(shape(l.slots, l.index_len, l.blocks), Ok(()));
            assert_eq!(
                shape(l.slots, l.index_len - 1, l.blocks),
                Err(StorageError::IndexTooSmall)
            );
        }
    }
}
