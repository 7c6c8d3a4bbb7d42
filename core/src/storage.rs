//! Where the cache keeps its entries (D4): a slot table, an open-addressing index over it, and
//! one byte arena in fixed blocks chained per entry.
//!
//! Memory, per entry: a [`Slot`] is 72 bytes (`repr(C)`, no padding) and the index holds two `u32` per slot (8 bytes),
//! so 80 bytes of overhead per slot. Key and token bytes live in the arena in blocks of
//! [`BLOCK_SIZE`] bytes, each with a 4-byte link; an entry wastes less than one block at its
//! end. For a 1.9 KB token and a ~100-byte key that is 8 blocks (2048 bytes) for ~2000 bytes of
//! data: ≈ 2.4 % lost in the last block plus 1.6 % for links, well under 12 %. The test
//! `memory_budget_for_4096_entries` measures it.

use zeroize::Zeroize;

/// Default arena block size.
pub const BLOCK_SIZE: usize = 256;
/// "No block" / "no slot" marker in links.
pub(crate) const NIL: u32 = u32::MAX;

/// Flag bits of a slot.
pub(crate) const OCCUPIED: u8 = 1;
pub(crate) const REFERENCED: u8 = 2;
pub(crate) const HAS_TOKEN: u8 = 4;
pub(crate) const CHALLENGED: u8 = 8;
pub(crate) const ANSWERED: u8 = 16;
/// The chain is laid out front to back in the arena (see [`chain_is_run`]): a hit copies the
/// token with one slice copy, without reading links.
pub(crate) const RUN: u8 = 32;

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
    pub(crate) flags: u8,
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

    pub(crate) fn occupied(&self) -> bool {
        self.flags & OCCUPIED != 0
    }

    pub(crate) fn live_ticket(&self, now: u64) -> bool {
        self.lease_until > now
    }
}

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
}

impl StorageError {
    /// A short description of the error.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::SlotCount => "slot count must be 1..u32::MAX",
            Self::IndexTooSmall => "index must hold at least two entries per slot",
            Self::ArenaShape => "arena must be links.len() blocks of at least 64 bytes",
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
    /// `arena.len()` is a multiple of `links.len()`, giving the block size (≥ 64).
    pub fn new(mut slots: S, mut index: I, arena: A, links: L) -> Result<Self, StorageError> {
        let (n_slots, n_index) = (slots.as_ref().len(), index.as_ref().len());
        let (n_arena, n_links) = (arena.as_ref().len(), links.as_ref().len());
        if n_slots == 0 || n_slots >= NIL as usize {
            return Err(StorageError::SlotCount);
        }
        if n_index < 2 * n_slots {
            return Err(StorageError::IndexTooSmall);
        }
        if n_links == 0
            || n_links >= NIL as usize
            || n_arena % n_links != 0
            || n_arena / n_links < 64
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
    index: [[u32; 2]; SLOTS],
    arena: [[u8; BLOCK_SIZE]; BLOCKS],
    links: [u32; BLOCKS],
}

impl<const SLOTS: usize, const BLOCKS: usize> ArrayStorage<SLOTS, BLOCKS> {
    /// Empty storage.
    pub const fn new() -> Self {
        Self {
            slots: [Slot::EMPTY; SLOTS],
            index: [[0; 2]; SLOTS],
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

/// Calls `f` with the bytes `offset..offset + len` of the chain starting at `head` (blocks of
/// `size` bytes), piece by piece: a run of blocks that follow each other in the arena is one
/// piece, so a chain laid out front to back is copied in one go.
pub(crate) fn read_chain(
    arena: &[u8],
    links: &[u32],
    size: usize,
    head: u32,
    offset: usize,
    len: usize,
    mut f: impl FnMut(&[u8]),
) {
    let (mut b, mut skip, mut left) = (head, offset, len);
    while b != NIL && skip >= size {
        skip -= size;
        b = links[b as usize];
    }
    while b != NIL && left > 0 {
        let start = b as usize * size + skip;
        let (mut last, mut n) = (b, size - skip);
        while n < left {
            let next = links[last as usize];
            if Some(next) != last.checked_add(1) || next == NIL {
                break;
            }
            last = next;
            n += size;
        }
        let n = n.min(left);
        f(&arena[start..start + n]);
        left -= n;
        skip = 0;
        b = links[last as usize];
    }
}

/// Whether the chain at `head` is laid out front to back: each block's successor is the next
/// block of the arena.
pub(crate) fn chain_is_run(links: &[u32], head: u32) -> bool {
    let mut b = head;
    while b != NIL {
        let next = links[b as usize];
        if next != NIL && Some(next) != b.checked_add(1) {
            return false;
        }
        b = next;
    }
    true
}

/// An index entry is a slot number plus one in its low bits (as many as the slot count needs)
/// and, above them, a tag: the low bits of the slot's hash, so that a probe skips a slot whose
/// hash differs without reading it. `(slot mask, tag of hash)`.
#[inline]
fn entry_parts(slots: usize, hash: u32) -> (u32, u32) {
    let bits = usize::BITS - slots.leading_zeros();
    (
        ((1u64 << bits) - 1) as u32,
        (u64::from(hash) << bits) as u32,
    )
}

/// Index position of `hash` in an index of `len` entries (multiply-shift range reduction).
fn home(len: usize, hash: u32) -> usize {
    ((u64::from(hash) * len as u64) >> 32) as usize
}

/// Finds the slot with `hash` for which `is_key` says yes: O(1) on average (linear probing at
/// a load factor of at most one half), comparing the full key, never the hash alone. Probes
/// whose tag differs are skipped without reading their slot.
#[inline]
pub(crate) fn find(
    slots: &[Slot],
    index: &[u32],
    hash: u32,
    mut is_key: impl FnMut(&Slot) -> bool,
) -> Option<u32> {
    let len = index.len();
    let (mask, tag) = entry_parts(slots.len(), hash);
    let mut i = home(len, hash);
    for _ in 0..len {
        let e = index[i];
        if e == 0 {
            return None;
        }
        if e & !mask == tag {
            let s = (e & mask) - 1;
            let slot = &slots[s as usize];
            if slot.hash == hash && is_key(slot) {
                return Some(s);
            }
        }
        i = if i + 1 == len { 0 } else { i + 1 };
    }
    None
}

/// A write position in a chain.
pub(crate) struct Cursor {
    pub(crate) block: u32,
    pub(crate) at: usize,
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

impl Parts<'_> {
    pub(crate) fn block_size(&self) -> usize {
        self.arena.len() / self.links.len()
    }

    fn block(&mut self, b: u32) -> &mut [u8] {
        let size = self.block_size();
        let start = b as usize * size;
        &mut self.arena[start..start + size]
    }

    /// Takes `n` blocks off the free list (or the bump region) and chains them.
    /// The caller has checked that `alloc.free_blocks >= n`.
    /// Chained in allocation order, so fresh blocks are read front to back in memory.
    pub(crate) fn alloc_chain(&mut self, alloc: &mut Alloc, n: u32) -> u32 {
        let (mut head, mut tail) = (NIL, NIL);
        for _ in 0..n {
            let b = if alloc.free_block != NIL {
                let b = alloc.free_block;
                alloc.free_block = self.links[b as usize];
                b
            } else {
                alloc.block_bump += 1;
                alloc.block_bump - 1
            };
            self.links[b as usize] = NIL;
            if tail == NIL {
                head = b;
            } else {
                self.links[tail as usize] = b;
            }
            tail = b;
        }
        alloc.free_blocks -= n;
        head
    }

    /// Number of blocks in a chain.
    pub(crate) fn chain_len(&self, mut b: u32) -> u32 {
        let mut n = 0;
        while b != NIL {
            n += 1;
            b = self.links[b as usize];
        }
        n
    }

    /// Appends `n` blocks to the chain at `head` (the caller checked they are free).
    pub(crate) fn extend_chain(&mut self, alloc: &mut Alloc, head: u32, n: u32) {
        if n == 0 {
            return;
        }
        let mut tail = head;
        while self.links[tail as usize] != NIL {
            tail = self.links[tail as usize];
        }
        let extra = self.alloc_chain(alloc, n);
        self.links[tail as usize] = extra;
    }

    /// A cursor `offset` bytes into the chain at `head`.
    pub(crate) fn cursor_at(&self, head: u32, mut offset: usize) -> Cursor {
        let size = self.block_size();
        let mut block = head;
        while offset > size && block != NIL {
            block = self.links[block as usize];
            offset -= size;
        }
        Cursor { block, at: offset }
    }

    /// Wipes and frees a chain. The chain goes onto the free list whole and in its order, so
    /// the next chain of that length takes the same blocks in the same order (a chain laid out
    /// front to back stays so).
    pub(crate) fn free_chain(&mut self, alloc: &mut Alloc, head: u32) {
        let mut b = head;
        while b != NIL {
            self.block(b).zeroize();
            alloc.free_blocks += 1;
            let next = self.links[b as usize];
            if next == NIL {
                self.links[b as usize] = alloc.free_block;
                alloc.free_block = head;
            }
            b = next;
        }
    }

    /// Writes `bytes` at the cursor and moves it on; the chain was sized for them.
    pub(crate) fn write(&mut self, cursor: &mut Cursor, mut bytes: &[u8]) {
        let size = self.block_size();
        while !bytes.is_empty() && cursor.block != NIL {
            if cursor.at == size {
                cursor.block = self.links[cursor.block as usize];
                cursor.at = 0;
                continue;
            }
            let n = (size - cursor.at).min(bytes.len());
            let at = cursor.at;
            self.block(cursor.block)[at..at + n].copy_from_slice(&bytes[..n]);
            cursor.at += n;
            bytes = &bytes[n..];
        }
    }

    /// Wipes the chain's bytes from `offset` to its end.
    pub(crate) fn wipe_from(&mut self, head: u32, offset: usize) {
        let size = self.block_size();
        let (mut b, mut skip) = (head, offset);
        while b != NIL {
            let block = self.block(b);
            block[skip.min(size)..].zeroize();
            skip = skip.saturating_sub(size);
            b = self.links[b as usize];
        }
    }

    /// Index position of `hash`.
    fn home(&self, hash: u32) -> usize {
        home(self.index.len(), hash)
    }

    /// The index entry of slot `s` (its hash is set) and the mask of an entry's slot bits.
    fn entry(&self, s: u32) -> (u32, u32) {
        let (mask, tag) = entry_parts(self.slots.len(), self.slots[s as usize].hash);
        ((s + 1) | tag, mask)
    }

    /// Adds slot `s` (with its hash already set) to the index. The index is never full: it
    /// has twice as many entries as slots.
    pub(crate) fn index_insert(&mut self, s: u32) {
        let len = self.index.len();
        let mut i = self.home(self.slots[s as usize].hash);
        while self.index[i] != 0 {
            i = (i + 1) % len;
        }
        self.index[i] = self.entry(s).0;
    }

    /// Removes slot `s` from the index (backward-shift deletion, no tombstones).
    pub(crate) fn index_remove(&mut self, s: u32) {
        let len = self.index.len();
        let (entry, mask) = self.entry(s);
        let mut i = self.home(self.slots[s as usize].hash);
        while self.index[i] != entry {
            if self.index[i] == 0 {
                return;
            }
            i = (i + 1) % len;
        }
        let mut hole = i;
        let mut j = (i + 1) % len;
        while self.index[j] != 0 {
            let home = self.home(self.slots[((self.index[j] & mask) - 1) as usize].hash);
            // Move j into the hole if its home is not strictly between the hole and j.
            let dist_home = (j + len - home) % len;
            let dist_hole = (j + len - hole) % len;
            if dist_home >= dist_hole {
                self.index[hole] = self.index[j];
                hole = j;
            }
            j = (j + 1) % len;
        }
        self.index[hole] = 0;
    }

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
