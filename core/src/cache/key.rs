//! What a token is cached under (D3), and the key's bytes in the arena: a header of
//! [`KEY_HEADER`] bytes (flavour, selector kind, selector length as u16 LE), the selector,
//! then the resource. Also the key hash the index is probed with.

use crate::identity::{Flavour, Identity, IdentityKind, Resource};
use crate::storage::{copy_chain, Links, Slot, Word};

/// Bytes of a key's header in the arena: flavour, kind, selector length (u16 LE).
pub(super) const KEY_HEADER: usize = 4;
/// Longest encoded key.
pub(super) const MAX_KEY_LEN: usize =
    KEY_HEADER + crate::MAX_RESOURCE_ID_LEN + crate::MAX_RESOURCE_LEN;

/// What a token is cached under (D3): the endpoint flavour, the identity and the resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key<'a> {
    /// Which kind of endpoint the token comes from.
    pub flavour: Flavour,
    /// Which identity.
    pub identity: Identity<'a>,
    /// Which resource (audience).
    pub resource: Resource<'a>,
}

impl Key<'_> {
    /// The key's hash. Selectors compare ignoring ASCII case (D3), so they are hashed with
    /// bit 5 set in every byte: equal-ignoring-case selectors hash alike (a few other bytes
    /// fold together too, which only costs a full comparison). The bytes are read a word at a
    /// time straight from the key (no folded copy); selector and resource are hashed
    /// independently, then combined.
    #[inline]
    pub(super) fn hash(&self) -> u32 {
        let sel = self.identity.value().as_bytes();
        let resource = self.resource.as_str().as_bytes();
        let head = u64::from(self.flavour as u8)
            | u64::from(self.identity.kind() as u8) << 8
            | (sel.len() as u64) << 16
            | (resource.len() as u64) << 32;
        let h_sel = absorb(head ^ HASH_SEED, sel, 0x2020_2020_2020_2020);
        let h_res = absorb(HASH_SEED.rotate_left(32), resource, 0);
        let h = folded_multiply(h_sel ^ HASH_K, h_res ^ HASH_SEED);
        (h ^ (h >> 32)) as u32
    }

    pub(super) fn encoded_len(&self) -> usize {
        KEY_HEADER + self.identity.value().len() + self.resource.as_str().len()
    }

    /// Calls `f` with the key's bytes in the arena, piece by piece ([`encoded_len`] of them).
    ///
    /// [`encoded_len`]: Self::encoded_len
    pub(super) fn encode(&self, mut f: impl FnMut(&[u8])) {
        let sel = self.identity.value().as_bytes();
        f(&[self.flavour as u8, self.identity.kind() as u8]);
        f(&(sel.len() as u16).to_le_bytes());
        f(sel);
        f(self.resource.as_str().as_bytes());
    }

    /// The key whose arena bytes are `bytes` (as [`encode`](Self::encode) wrote them), or
    /// `None` when they do not hold one.
    pub(super) fn decode(bytes: &[u8]) -> Option<Key<'_>> {
        let flavour = Flavour::from_u8(bytes[0])?;
        let kind = IdentityKind::from_u8(bytes[1])?;
        let sel_len = u16::from_le_bytes([bytes[2], bytes[3]]) as usize;
        let (sel, resource) = bytes[KEY_HEADER..].split_at(sel_len);
        let identity = Identity::new(kind, core::str::from_utf8(sel).ok()?).ok()?;
        let resource = Resource::new(core::str::from_utf8(resource).ok()?).ok()?;
        Some(Key {
            flavour,
            identity,
            resource,
        })
    }
}

/// Constants of the key hash (digits of pi, as in rustc-hash and foldhash).
const HASH_SEED: u64 = 0x243f_6a88_85a3_08d3;
const HASH_K: u64 = 0x1319_8a2e_0370_7344;
const HASH_K2: u64 = 0xa409_3822_299f_31d0;

/// The 128-bit product of `a` and `b`, its halves xor-ed.
#[inline]
fn folded_multiply(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// The little-endian word of 8 bytes at `at` (the caller checked `at + 8 <= bytes.len()`).
#[inline]
fn word(bytes: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(w)
}

/// Mixes `bytes` into `h` 16 at a time, every word OR-ed with `fold`. A tail of under 16
/// bytes is read as the last 16 (overlapping), or as two overlapping 8- or 4-byte words, so
/// every read is a whole word of the input (the length is mixed in by the caller).
#[inline]
fn absorb(mut h: u64, bytes: &[u8], fold: u64) -> u64 {
    let len = bytes.len();
    let (a, b) = if len >= 16 {
        let mut at = 0;
        while at + 16 < len {
            h = folded_multiply(
                (word(bytes, at) | fold) ^ h,
                (word(bytes, at + 8) | fold) ^ HASH_K,
            );
            at += 16;
        }
        (word(bytes, len - 16), word(bytes, len - 8))
    } else if len >= 8 {
        (word(bytes, 0), word(bytes, len - 8))
    } else if len >= 4 {
        let w = |at: usize| {
            let mut w = [0u8; 4];
            w.copy_from_slice(&bytes[at..at + 4]);
            u64::from(u32::from_le_bytes(w))
        };
        (w(0), w(len - 4))
    } else if len > 0 {
        let (x, y, z) = (bytes[0], bytes[len / 2], bytes[len - 1]);
        (u64::from(x) | u64::from(y) << 8, u64::from(z))
    } else {
        (0, 0)
    };
    folded_multiply((a | fold) ^ h, (b | fold) ^ HASH_K2)
}

/// Whether the entry's key bytes are `key` (D3: selector compared ignoring ASCII case,
/// resource byte for byte): the full key, copied out of the arena with word loads. `None`
/// when the chain does not hold `key_len` bytes (a reader racing the writer; it retries).
#[inline]
pub(super) fn key_matches(
    arena: &[Word],
    links: Links<'_>,
    block: usize,
    slot: &Slot,
    key: &Key<'_>,
) -> Option<bool> {
    let len = slot.key_len as usize;
    if len != key.encoded_len() || slot.flavour != key.flavour as u8 || len > MAX_KEY_LEN {
        return Some(false);
    }
    let mut buf = [0u8; MAX_KEY_LEN];
    let stored = &mut buf[..len];
    if !copy_chain(arena, links, block, slot.head, 0, stored) {
        return None;
    }
    let sel = key.identity.value().as_bytes();
    let resource = key.resource.as_str().as_bytes();
    let (header, rest) = stored.split_at(KEY_HEADER);
    let (stored_sel, stored_resource) = rest.split_at(sel.len());
    Some(
        header[0] == key.flavour as u8
            && header[1] == key.identity.kind() as u8
            && header[2..4] == (sel.len() as u16).to_le_bytes()
            && stored_resource == resource
            && stored_sel.eq_ignore_ascii_case(sel),
    )
}
