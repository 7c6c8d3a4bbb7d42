//! The arena's blocks: chains of blocks per entry, read and written through cursors, taken
//! from and given back to a free list.

use zeroize::Zeroize;

use super::{Alloc, Parts, NIL};

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

/// A write position in a chain.
pub(crate) struct Cursor {
    pub(crate) block: u32,
    pub(crate) at: usize,
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
}
