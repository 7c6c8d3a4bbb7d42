//! The arena's blocks: chains of blocks per entry, read and written through cursors, taken
//! from and given back to a free list. Links are one word per block (the next block, or
//! [`NIL`]); bytes are packed little-endian into the arena's words.

use super::word::{load, load_bytes, store, store_bytes, zero_bytes, Val, Word};
use super::{Alloc, Parts, NIL};

/// The block links: one word per block.
#[derive(Clone, Copy)]
pub(crate) struct Links<'a> {
    pub(crate) words: &'a [Word],
}

impl Links<'_> {
    /// Blocks in the arena.
    pub(crate) fn len(&self) -> usize {
        self.words.len()
    }

    /// The block after `b`: [`NIL`] at a chain's end, `None` when `b` is not a block (a
    /// reader following a chain a writer is changing).
    #[inline]
    pub(crate) fn next(&self, b: u32) -> Option<u32> {
        self.words.get(b as usize).map(|w| load(w) as u32)
    }

    fn at(&self, b: u32) -> u32 {
        load(&self.words[b as usize]) as u32
    }

    fn set(&self, b: u32, next: u32) {
        store(&self.words[b as usize], Val::from(next));
    }
}

/// Copies `out.len()` bytes from `offset` bytes into the chain starting at `head` (blocks of
/// `size` bytes) into `out`, following at most as many links as the bytes need. `false` when
/// the chain ends early or leaves the arena: a reader racing a writer can see that, and
/// retries; the writer never does.
pub(crate) fn copy_chain(
    arena: &[Word],
    links: Links<'_>,
    size: usize,
    head: u32,
    offset: usize,
    out: &mut [u8],
) -> bool {
    let (mut b, mut skip) = (head, offset);
    while skip >= size {
        match links.next(b) {
            Some(next) => b = next,
            None => return false,
        }
        skip -= size;
    }
    let mut at = 0;
    while at < out.len() {
        if b as usize >= links.len() {
            return false;
        }
        let n = (size - skip).min(out.len() - at);
        if !load_bytes(arena, b as usize * size + skip, &mut out[at..at + n]) {
            return false;
        }
        at += n;
        skip = 0;
        if at < out.len() {
            b = links.at(b);
        }
    }
    true
}

/// Whether the chain at `head` is laid out front to back: each block's successor is the next
/// block of the arena.
pub(crate) fn chain_is_run(links: Links<'_>, head: u32) -> bool {
    let mut b = head;
    while b != NIL {
        let next = links.at(b);
        if next != NIL && Some(next) != b.checked_add(1) {
            return false;
        }
        b = next;
    }
    true
}

/// A write position in a chain.
pub(crate) struct Cursor {
    pub(crate) block: u32,
    pub(crate) at: usize,
}

impl Parts<'_> {
    /// Takes `n` blocks off the free list (or the bump region) and chains them.
    /// The caller has checked that `alloc.free_blocks >= n`.
    /// Chained in allocation order, so fresh blocks are read front to back in memory.
    pub(crate) fn alloc_chain(&mut self, alloc: &mut Alloc, n: u32) -> u32 {
        let (mut head, mut tail) = (NIL, NIL);
        for _ in 0..n {
            let b = if alloc.free_block != NIL {
                let b = alloc.free_block;
                alloc.free_block = self.links.at(b);
                b
            } else {
                alloc.block_bump += 1;
                alloc.block_bump - 1
            };
            self.links.set(b, NIL);
            if tail == NIL {
                head = b;
            } else {
                self.links.set(tail, b);
            }
            tail = b;
        }
        alloc.free_blocks -= n;
        head
    }

    /// Number of blocks in a chain.
    pub(crate) fn chain_len(&mut self, mut b: u32) -> u32 {
        let mut n = 0;
        while b != NIL {
            n += 1;
            b = self.links.at(b);
        }
        n
    }

    /// Appends `n` blocks to the chain at `head` (the caller checked they are free).
    pub(crate) fn extend_chain(&mut self, alloc: &mut Alloc, head: u32, n: u32) {
        if n == 0 {
            return;
        }
        let mut tail = head;
        while self.links.at(tail) != NIL {
            tail = self.links.at(tail);
        }
        let extra = self.alloc_chain(alloc, n);
        self.links.set(tail, extra);
    }

    /// A cursor `offset` bytes into the chain at `head`.
    pub(crate) fn cursor_at(&self, head: u32, mut offset: usize) -> Cursor {
        let size = self.block_size;
        let mut block = head;
        while offset > size && block != NIL {
            block = self.links.at(block);
            offset -= size;
        }
        Cursor { block, at: offset }
    }

    /// Wipes and frees a chain. The chain goes onto the free list whole and in its order, so
    /// the next chain of that length takes the same blocks in the same order (a chain laid out
    /// front to back stays so). No slot may point at the chain any more, or the caller holds
    /// the write section of the one that does.
    pub(crate) fn free_chain(&mut self, alloc: &mut Alloc, head: u32) {
        let size = self.block_size;
        let mut b = head;
        while b != NIL {
            zero_bytes(self.arena, b as usize * size, size);
            alloc.free_blocks += 1;
            let next = self.links.at(b);
            if next == NIL {
                self.links.set(b, alloc.free_block);
                alloc.free_block = head;
            }
            b = next;
        }
    }

    /// Writes `bytes` at the cursor and moves it on; the chain was sized for them.
    pub(crate) fn write(&mut self, cursor: &mut Cursor, mut bytes: &[u8]) {
        let size = self.block_size;
        while !bytes.is_empty() && cursor.block != NIL {
            if cursor.at == size {
                cursor.block = self.links.at(cursor.block);
                cursor.at = 0;
                continue;
            }
            let n = (size - cursor.at).min(bytes.len());
            let at = cursor.block as usize * size + cursor.at;
            store_bytes(self.arena, at, &bytes[..n]);
            cursor.at += n;
            bytes = &bytes[n..];
        }
    }

    /// Wipes the chain's bytes from `offset` to its end.
    pub(crate) fn wipe_from(&mut self, head: u32, offset: usize) {
        let size = self.block_size;
        let (mut b, mut skip) = (head, offset);
        while b != NIL {
            let from = skip.min(size);
            zero_bytes(self.arena, b as usize * size + from, size - from);
            skip = skip.saturating_sub(size);
            b = self.links.at(b);
        }
    }
}
