//! The fixed-capacity token cache: lookup, tickets, single-flight, refresh, retry, budget,
//! eviction (D3–D9, D13).
//!
//! Call order, as a driver sees it (quinn-proto style: every input carries `now`, in ms):
//!
//! 1. [`TokenCache::lookup`] answers a [`Lookup`]. On `Hit` use the token (and if it carries a
//!    refresh ticket, refresh in the background); on `Fetch` go on with 2; on `Pending`,
//!    `Throttled` or `Failed` wait until `retry_at` (or a completion) and look up again.
//! 2. [`TokenCache::request`] writes the request for the ticket; send it.
//! 3. Feed every byte received so far to [`TokenCache::feed`] until it answers
//!    [`Feed::Done`]; call [`TokenCache::eof`] when the peer closes first, or
//!    [`TokenCache::fail`] when the transport fails. For Arc, `Done(NeedKeyFile)` asks for the
//!    key file: read it and call [`TokenCache::complete_challenge`], then send and feed again.
//! 4. A driver with a background refresher calls [`TokenCache::poll_refresh`] at
//!    [`TokenCache::next_deadline`].
//!
//! The core never retries on its own: a retry is a new ticket handed out by a lookup after the
//! backoff.

use core::fmt;

use crate::http::{self, HttpError, Parsed};
use crate::identity::{Flavour, Identity, IdentityKind, Resource};
use crate::policy::{self, Budget, Config, ConfigError, Rng};
use crate::request::{self, ArcError, Endpoint, RequestDescriptor, RequestError};
use crate::response::{
    self, Classified, ErrorDetail, Failure, FailureKind, OutcomeClass, TokenBody,
};
use crate::storage::{
    read_chain, Alloc, ArrayStorage, BufferStorage, Cursor, Slot, Storage, StorageError, ANSWERED,
    CHALLENGED, HAS_TOKEN, NIL, OCCUPIED, REFERENCED, RUN,
};

/// Bytes of a key's header in the arena: flavour, kind, selector length (u16 LE).
const KEY_HEADER: usize = 4;
/// Longest encoded key.
const MAX_KEY_LEN: usize = KEY_HEADER + crate::MAX_RESOURCE_ID_LEN + crate::MAX_RESOURCE_LEN;
/// Bytes allowed for a response beyond the token (D2).
const RESPONSE_SLACK: usize = 4096;

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
    fn hash(&self) -> u32 {
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

    fn encoded_len(&self) -> usize {
        KEY_HEADER + self.identity.value().len() + self.resource.as_str().len()
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

/// A claim to fetch one key's token: (slot, generation), with a lease (D5).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ticket {
    slot: u32,
    generation: u32,
}

impl Ticket {
    /// The ticket as one integer (for a C ABI or a map key).
    pub const fn to_bits(self) -> u64 {
        (self.slot as u64) << 32 | self.generation as u64
    }

    /// A ticket from [`to_bits`](Self::to_bits); an unknown one is refused as stale on use.
    pub const fn from_bits(bits: u64) -> Self {
        Self {
            slot: (bits >> 32) as u32,
            generation: bits as u32,
        }
    }
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ticket({}#{})", self.slot, self.generation)
    }
}

/// The answer to a lookup (D5). Times are ms since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Lookup {
    /// The token is in the caller's buffer (`len` bytes). If `refresh` is set, this caller is
    /// asked to refresh it (in the background) while using it.
    Hit {
        /// Token length.
        len: usize,
        /// Expiry, ms.
        expires_on: u64,
        /// A refresh this caller should perform.
        refresh: Option<Ticket>,
    },
    /// No usable token: fetch one with this ticket.
    Fetch(Ticket),
    /// Another caller is fetching and there is no valid token; ask again at `retry_at` at the
    /// latest (when that fetch's lease ends) or when it completes.
    Pending {
        /// When the other fetch's lease ends.
        retry_at: u64,
    },
    /// The endpoint's request budget is spent until `retry_at`.
    Throttled {
        /// When a request may start.
        retry_at: u64,
    },
    /// The last fetch failed; no new one before `retry_at` (backoff or negative cache).
    Failed {
        /// What went wrong.
        error: Failure,
        /// When a fetch may be tried again.
        retry_at: u64,
    },
    /// The token does not fit in the buffer; `needed` bytes would.
    BufferTooSmall {
        /// The token's length.
        needed: usize,
    },
}

/// The answer to feeding response bytes.
// `Done` carries the error text (≈ 600 bytes) by value: the core has no heap to box it in,
// and one is returned per response, not per lookup.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
#[must_use]
pub enum Feed<'b> {
    /// The response is not complete: call again with more bytes.
    NeedMore,
    /// The ticket is finished (or, for `NeedKeyFile`, waits for the Arc key).
    Done(Done<'b>),
}

/// How a fetch ended.
#[derive(Debug)]
pub enum Done<'b> {
    /// A token was stored.
    Token {
        /// Its length.
        len: usize,
        /// Its expiry, ms.
        expires_on: u64,
    },
    /// A transient failure: a lookup after `retry_at` hands out a new ticket.
    Retry {
        /// What went wrong.
        failure: Failure,
        /// When to try again.
        retry_at: u64,
        /// The error body's code and description.
        detail: ErrorDetail,
    },
    /// A terminal failure (or "unavailable"), negative-cached until `retry_at`.
    Failed {
        /// What went wrong.
        failure: Failure,
        /// Until when it is remembered.
        retry_at: u64,
        /// The error body's code and description.
        detail: ErrorDetail,
    },
    /// Arc's challenge: read the key file at `path` and call
    /// [`TokenCache::complete_challenge`] with its bytes. The ticket stays live.
    NeedKeyFile {
        /// The key file (checked to be in the configured folder, ending `.key`).
        path: &'b str,
    },
}

/// How the transport failed, as the driver saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// The connection was refused.
    Refused,
    /// No route to the endpoint (network or host unreachable).
    Unreachable,
    /// Connecting took longer than the connect timeout.
    ConnectTimeout,
    /// The connection was reset, or reading took longer than the attempt's deadline.
    Reset,
}

/// Errors of cache operations (as opposed to fetch outcomes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CacheError {
    /// No entry could be evicted (all have live tickets) or the arena cannot hold the entry.
    CacheFull,
    /// The ticket is not live: completed, cancelled, lapsed or unknown.
    StaleTicket,
    /// The endpoint given is not of the key's flavour.
    WrongEndpoint,
    /// The ticket is not waiting for an Arc key.
    NoChallenge,
    /// The endpoint's budget has no room for the challenge's second request yet.
    Throttled {
        /// When a request may start.
        retry_at: u64,
    },
    /// The request could not be written.
    Request(RequestError),
    /// The Arc key file is unusable (the ticket has failed).
    ArcKey(ArcError),
}

impl CacheError {
    /// A short description of the error.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::CacheFull => "cache is full: nothing can be evicted",
            Self::StaleTicket => "ticket is not live (completed, cancelled or lapsed)",
            Self::WrongEndpoint => "endpoint flavour differs from the key's",
            Self::NoChallenge => "ticket is not waiting for an Arc key",
            Self::Throttled { .. } => "request budget spent",
            Self::Request(e) => e.as_str(),
            Self::ArcKey(e) => e.as_str(),
        }
    }
}

impl fmt::Display for CacheError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl core::error::Error for CacheError {}

/// Counters of what the cache did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Lookups answered with a token.
    pub hits: u64,
    /// Lookups without a usable token.
    pub misses: u64,
    /// Tickets handed out (fetches and refreshes).
    pub fetches: u64,
    /// Lookups told `Pending` because another caller was fetching.
    pub coalesced: u64,
    /// Refresh tickets handed out with a hit or by `poll_refresh`.
    pub refreshes: u64,
    /// Tokens stored.
    pub tokens: u64,
    /// Transient failures.
    pub failures_retry: u64,
    /// Terminal failures.
    pub failures_terminal: u64,
    /// "Unavailable" outcomes.
    pub failures_unavailable: u64,
    /// Entries evicted to make room.
    pub evictions: u64,
    /// Lookups told `Throttled`, and refreshes skipped for the budget.
    pub throttled: u64,
    /// Completions refused because their ticket was no longer live.
    pub stale_tickets: u64,
    /// Tickets whose lease lapsed.
    pub lease_lapses: u64,
}

/// Where the cache's memory goes (for sizing and the D4 budget).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryUse {
    /// Entries held.
    pub entries: usize,
    /// Slot table capacity.
    pub slots: usize,
    /// Bytes of bookkeeping per slot (slot + index entries).
    pub overhead_per_slot: usize,
    /// Arena blocks in use.
    pub blocks_used: usize,
    /// Bytes of those blocks (including their links).
    pub block_bytes: usize,
    /// Key and token bytes stored in them.
    pub data_bytes: usize,
}

impl MemoryUse {
    /// Block bytes not holding data, as a fraction of block bytes.
    pub fn waste(&self) -> f64 {
        if self.block_bytes == 0 {
            0.0
        } else {
            (self.block_bytes - self.data_bytes) as f64 / self.block_bytes as f64
        }
    }
}

/// The token cache over a [`Storage`]. See the module documentation for the call order.
pub struct TokenCache<S: Storage> {
    storage: S,
    config: Config,
    budgets: [Budget; Flavour::COUNT],
    stats: Stats,
    alloc: Alloc,
    last_now: u64,
    rng: Rng,
    hand: u32,
    block_size: usize,
}

impl<S, I, A, L> TokenCache<BufferStorage<S, I, A, L>>
where
    S: AsMut<[Slot]> + AsRef<[Slot]>,
    I: AsMut<[u32]> + AsRef<[u32]>,
    A: AsMut<[u8]> + AsRef<[u8]>,
    L: AsMut<[u32]> + AsRef<[u32]>,
{
    /// A cache over buffers sized at run time: caller memory (`&mut [T]`) or owning
    /// containers (see [`BufferStorage::new`] for the shapes).
    pub fn with_slices(
        config: Config,
        slots: S,
        index: I,
        arena: A,
        links: L,
    ) -> Result<Self, NewError> {
        config.validate().map_err(NewError::Config)?;
        let storage = BufferStorage::new(slots, index, arena, links).map_err(NewError::Storage)?;
        Ok(Self::from_storage(config, storage))
    }
}

impl<const SLOTS: usize, const BLOCKS: usize> TokenCache<ArrayStorage<SLOTS, BLOCKS>> {
    /// An owning cache of `SLOTS` entries and `BLOCKS` × 256 bytes of arena; `const`, so it
    /// can be a `static` (behind the lock of your choice). An invalid `config` or zero
    /// capacities fail to compile when used in a `const`/`static`.
    pub const fn new(config: Config) -> Self {
        assert!(SLOTS > 0 && SLOTS < NIL as usize && BLOCKS > 0 && BLOCKS < NIL as usize);
        Self {
            storage: ArrayStorage::new(),
            rng: Rng::new(config.seed),
            config,
            budgets: [Budget::EMPTY; Flavour::COUNT],
            stats: Stats {
                hits: 0,
                misses: 0,
                fetches: 0,
                coalesced: 0,
                refreshes: 0,
                tokens: 0,
                failures_retry: 0,
                failures_terminal: 0,
                failures_unavailable: 0,
                evictions: 0,
                throttled: 0,
                stale_tickets: 0,
                lease_lapses: 0,
            },
            alloc: Alloc::new(BLOCKS as u32),
            last_now: 0,
            hand: 0,
            block_size: crate::storage::BLOCK_SIZE,
        }
    }
}

/// Why a cache could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NewError {
    /// The configuration is out of bounds.
    Config(ConfigError),
    /// The storage is malformed.
    Storage(StorageError),
}

impl fmt::Display for NewError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(e) => e.fmt(f),
            Self::Storage(e) => e.fmt(f),
        }
    }
}

impl core::error::Error for NewError {}

impl<S: Storage> fmt::Debug for TokenCache<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("entries", &self.alloc.len)
            .field("capacity", &self.storage.slots().len())
            .field("free_blocks", &self.alloc.free_blocks)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<S: Storage> Drop for TokenCache<S> {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.storage.parts().arena.zeroize();
    }
}

/// How to treat a failure once classified.
struct Disposition {
    class: OutcomeClass,
    retry_at: u64,
}

impl<S: Storage> TokenCache<S> {
    fn from_storage(config: Config, storage: S) -> Self {
        let (arena, links) = storage.arena();
        let (blocks, block_size) = (links.len() as u32, arena.len() / links.len());
        Self {
            block_size,
            storage,
            rng: Rng::new(config.seed),
            config,
            budgets: [Budget::EMPTY; Flavour::COUNT],
            stats: Stats::default(),
            alloc: Alloc::new(blocks),
            last_now: 0,
            hand: 0,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Counters since creation.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Number of entries held.
    pub fn len(&self) -> usize {
        self.alloc.len as usize
    }

    /// Whether the cache holds no entry.
    pub fn is_empty(&self) -> bool {
        self.alloc.len == 0
    }

    /// Slot capacity.
    pub fn capacity(&self) -> usize {
        self.storage.slots().len()
    }

    /// Requests in flight to `flavour`'s endpoint at `now`.
    pub fn in_flight(&self, flavour: Flavour, now: u64) -> u32 {
        self.budgets[flavour as usize].in_flight(now)
    }

    /// Clamps time to be non-decreasing (D1).
    fn clock(&mut self, now: u64) -> u64 {
        self.last_now = self.last_now.max(now);
        self.last_now
    }

    /// Looks `key` up at `now`, copying a usable token into `out` (D5). O(1) on average.
    pub fn lookup(
        &mut self,
        key: &Key<'_>,
        now: u64,
        out: &mut [u8],
    ) -> Result<Lookup, CacheError> {
        let now = self.clock(now);
        let hash = key.hash();
        let Some(s) = self.find(key, hash) else {
            self.stats.misses += 1;
            if let Err(retry_at) = self.budgets[key.flavour as usize].check(&self.config, now) {
                self.stats.throttled += 1;
                return Ok(Lookup::Throttled { retry_at });
            }
            let s = self.insert(key, hash, now)?;
            return Ok(Lookup::Fetch(self.issue(s, now)));
        };
        let mut slot = self.slot(s);
        if slot.lease_until != 0 && slot.lease_until <= now {
            self.lapse(s, now);
            slot = self.slot(s);
        }
        if self.usable(&slot, now) {
            let len = slot.token_len as usize;
            let Some(out) = out.get_mut(..len) else {
                return Ok(Lookup::BufferTooSmall { needed: len });
            };
            let (arena, links) = self.storage.arena();
            let size = self.block_size;
            let start = slot.head as usize * size + slot.key_len as usize;
            match arena.get(start..start + len) {
                // Laid out front to back: one copy, no links read.
                Some(token) if slot.flags & RUN != 0 => out.copy_from_slice(token),
                _ => {
                    let mut at = 0;
                    let offset = slot.key_len as usize;
                    read_chain(arena, links, size, slot.head, offset, len, |piece| {
                        out[at..at + piece.len()].copy_from_slice(piece);
                        at += piece.len();
                    });
                }
            }
            if slot.flags & REFERENCED == 0 {
                self.slot_mut(s).flags |= REFERENCED;
            }
            self.stats.hits += 1;
            let refresh =
                if now >= slot.refresh_on && !slot.live_ticket(now) && now >= slot.retry_at {
                    self.try_issue(s, now)
                        .inspect(|_| self.stats.refreshes += 1)
                } else {
                    None
                };
            return Ok(Lookup::Hit {
                len,
                expires_on: slot.expires_on,
                refresh,
            });
        }
        self.stats.misses += 1;
        if slot.live_ticket(now) {
            self.stats.coalesced += 1;
            return Ok(Lookup::Pending {
                retry_at: slot.lease_until,
            });
        }
        if now < slot.retry_at {
            if let Some(error) = failure_of(&slot) {
                return Ok(Lookup::Failed {
                    error,
                    retry_at: slot.retry_at,
                });
            }
        }
        let flavour = key.flavour as usize;
        match self.budgets[flavour].check(&self.config, now) {
            Ok(()) => Ok(Lookup::Fetch(self.issue(s, now))),
            Err(retry_at) => {
                self.stats.throttled += 1;
                Ok(Lookup::Throttled { retry_at })
            }
        }
    }

    /// Writes the request for `ticket` to `endpoint` into `out` (D6). The endpoint carries
    /// the secrets read from the environment now (D11).
    pub fn request<'e>(
        &mut self,
        ticket: Ticket,
        endpoint: &Endpoint<'e>,
        out: &mut [u8],
    ) -> Result<RequestDescriptor<'e>, CacheError> {
        self.request_at(ticket, endpoint, self.last_now, out)
    }

    /// [`request`](Self::request) at `now`: the request's start is counted against the budget
    /// from `now` rather than from when the ticket was handed out, which keeps the budget true
    /// at the endpoint when a driver waits (for a lock, a thread) between the two.
    pub fn request_at<'e>(
        &mut self,
        ticket: Ticket,
        endpoint: &Endpoint<'e>,
        now: u64,
        out: &mut [u8],
    ) -> Result<RequestDescriptor<'e>, CacheError> {
        let now = self.clock(now);
        let descriptor = self.write_request(ticket, endpoint, None, out)?;
        let flavour = self.slot(ticket.slot).flavour as usize;
        if let Some(b) = self.budgets.get_mut(flavour) {
            b.restamp(ticket.to_bits(), now);
        }
        Ok(descriptor)
    }

    fn write_request<'e>(
        &mut self,
        ticket: Ticket,
        endpoint: &Endpoint<'e>,
        authorization: Option<&[u8]>,
        out: &mut [u8],
    ) -> Result<RequestDescriptor<'e>, CacheError> {
        let now = self.last_now;
        let s = self.live(ticket, now)?;
        let slot = self.slot(s);
        let mut buf = [0u8; MAX_KEY_LEN];
        let key = self
            .read_key(&slot, &mut buf)
            .ok_or(CacheError::StaleTicket)?;
        if key.flavour != endpoint.flavour {
            return Err(CacheError::WrongEndpoint);
        }
        request::write_request(endpoint, &key.identity, &key.resource, authorization, out)
            .map_err(CacheError::Request)
    }

    /// The key of a live ticket, decoded into `buf` (which must hold the encoded key; 1028
    /// bytes always do).
    pub fn ticket_key<'b>(
        &mut self,
        ticket: Ticket,
        buf: &'b mut [u8],
    ) -> Result<Key<'b>, CacheError> {
        let s = self.live(ticket, self.last_now)?;
        self.read_key(&self.slot(s), buf)
            .ok_or(CacheError::StaleTicket)
    }

    /// Feeds every byte of the response received so far (D6). Once the response is complete
    /// the bytes may be rearranged in place (chunked bodies are joined), so keep feeding the
    /// same buffer only while the answer is `NeedMore`.
    pub fn feed<'b>(
        &mut self,
        ticket: Ticket,
        bytes: &'b mut [u8],
        now: u64,
    ) -> Result<Feed<'b>, CacheError> {
        self.receive(ticket, bytes, false, now)
    }

    /// The connection closed after `bytes`: a body delimited by the close ends here, anything
    /// else incomplete is `Truncated` (a retry).
    pub fn eof<'b>(
        &mut self,
        ticket: Ticket,
        bytes: &'b mut [u8],
        now: u64,
    ) -> Result<Done<'b>, CacheError> {
        match self.receive(ticket, bytes, true, now)? {
            Feed::Done(done) => Ok(done),
            Feed::NeedMore => Ok(self.settle(
                ticket,
                Failure::new(FailureKind::Truncated),
                None,
                ErrorDetail::default(),
                now,
            )?),
        }
    }

    fn receive<'b>(
        &mut self,
        ticket: Ticket,
        bytes: &'b mut [u8],
        eof: bool,
        now: u64,
    ) -> Result<Feed<'b>, CacheError> {
        let now = self.clock(now);
        let s = self.live(ticket, now)?;
        let max = self.config.max_token_bytes + RESPONSE_SLACK;
        let response = match http::parse_response(bytes, eof, max) {
            Ok(Parsed::NeedMore) => return Ok(Feed::NeedMore),
            Ok(Parsed::Done(r)) => r,
            Err(e) => {
                let kind = match e {
                    HttpError::TooLarge => FailureKind::TokenTooLarge,
                    HttpError::Truncated => FailureKind::Truncated,
                    _ => FailureKind::MalformedResponse,
                };
                let done = self.settle(
                    ticket,
                    Failure::new(kind),
                    None,
                    ErrorDetail::default(),
                    now,
                )?;
                return Ok(Feed::Done(done));
            }
        };
        let slot = self.slot(s);
        let flavour = Flavour::from_u8(slot.flavour).unwrap_or(Flavour::Imds);
        let request_secs = slot.issued_at / 1000;
        let done = match response::classify(
            flavour,
            &response,
            request_secs,
            self.config.max_token_bytes,
        ) {
            Classified::Token(body) => self.store(ticket, s, &body, now)?,
            Classified::Challenge(challenge) => {
                let answered = slot.flags & ANSWERED != 0;
                match request::arc_key_path(challenge, self.config.arc_key_dir()) {
                    Ok(path) if !answered => {
                        self.storage.parts().slots[s as usize].flags |= CHALLENGED;
                        Done::NeedKeyFile { path }
                    }
                    _ => {
                        let f = Failure {
                            kind: FailureKind::BadChallenge,
                            status: response.status,
                        };
                        self.settle(ticket, f, None, ErrorDetail::default(), now)?
                    }
                }
            }
            Classified::Failure {
                failure,
                retry_after,
                body,
            } => self.settle(ticket, failure, retry_after, body.detail(), now)?,
        };
        Ok(Feed::Done(done))
    }

    /// Arc's second step: `key` is the key file's contents; writes the second request (with
    /// `Authorization: Basic <key>`) into `out`. It counts against the budget.
    pub fn complete_challenge<'e>(
        &mut self,
        ticket: Ticket,
        endpoint: &Endpoint<'e>,
        key: &[u8],
        now: u64,
        out: &mut [u8],
    ) -> Result<RequestDescriptor<'e>, CacheError> {
        let now = self.clock(now);
        let s = self.live(ticket, now)?;
        let slot = self.slot(s);
        if slot.flags & CHALLENGED == 0 {
            return Err(CacheError::NoChallenge);
        }
        let key = match request::check_arc_key(key) {
            Ok(k) => k,
            Err(e) => {
                let f = Failure::new(FailureKind::BadChallenge);
                let _ = self.settle(ticket, f, None, ErrorDetail::default(), now)?;
                return Err(CacheError::ArcKey(e));
            }
        };
        let flavour = Flavour::Arc as usize;
        self.budgets[flavour]
            .check_rate(&self.config, now)
            .map_err(|retry_at| CacheError::Throttled { retry_at })?;
        let descriptor = self.write_request(ticket, endpoint, Some(key), out)?;
        self.budgets[flavour].record_start(now);
        let flags = &mut self.storage.parts().slots[s as usize].flags;
        *flags = (*flags & !CHALLENGED) | ANSWERED;
        Ok(descriptor)
    }

    /// The transport failed for `ticket` (D7: refused or unreachable before any token was
    /// ever received from that endpoint means "unavailable", at once).
    pub fn fail(
        &mut self,
        ticket: Ticket,
        transport: Transport,
        now: u64,
    ) -> Result<Done<'static>, CacheError> {
        let now = self.clock(now);
        let s = self.live(ticket, now)?;
        let flavour = self.slot(s).flavour as usize;
        let ever_ok = self.budgets.get(flavour).is_some_and(|b| b.ever_ok);
        let kind = match transport {
            Transport::Refused | Transport::Unreachable if !ever_ok => FailureKind::Unavailable,
            Transport::ConnectTimeout => FailureKind::ConnectTimeout,
            _ => FailureKind::ConnectionLost,
        };
        self.settle(
            ticket,
            Failure::new(kind),
            None,
            ErrorDetail::default(),
            now,
        )
    }

    /// Gives a ticket back without an outcome: the next lookup may fetch at once.
    pub fn cancel(&mut self, ticket: Ticket) -> Result<(), CacheError> {
        let s = self.live(ticket, self.last_now)?;
        self.release(s, ticket);
        Ok(())
    }

    /// When `key`'s token is due for refresh (ms), if it holds a usable one: lets a caller
    /// that keeps its own copy (the Python credential) reuse it until then.
    pub fn refresh_on(&mut self, key: &Key<'_>, now: u64) -> Option<u64> {
        let now = self.clock(now);
        let s = self.find(key, key.hash())?;
        let slot = self.slot(s);
        self.usable(&slot, now).then_some(slot.refresh_on)
    }

    /// Gives back every live ticket (D12: after `fork`, the threads that held them do not exist
    /// in the child). Tokens are kept.
    pub fn release_all_tickets(&mut self) {
        for s in 0..self.storage.slots().len() as u32 {
            let slot = self.slot(s);
            if slot.occupied() && slot.lease_until != 0 {
                self.release(
                    s,
                    Ticket {
                        slot: s,
                        generation: slot.generation,
                    },
                );
            }
        }
    }

    /// Drops `key`'s token (after a downstream 401 or a claims challenge); its bytes are wiped.
    /// Returns whether a token was dropped.
    pub fn invalidate(&mut self, key: &Key<'_>, now: u64) -> bool {
        let now = self.clock(now);
        let Some(s) = self.find(key, key.hash()) else {
            return false;
        };
        let slot = self.slot(s);
        let had = slot.flags & HAS_TOKEN != 0;
        if slot.live_ticket(now) {
            let mut parts = self.storage.parts();
            parts.wipe_from(slot.head, slot.key_len as usize);
            let e = &mut parts.slots[s as usize];
            e.flags &= !HAS_TOKEN;
            e.token_len = 0;
        } else {
            self.remove(s);
        }
        had
    }

    /// The earliest time something is due: a refresh, a retry of a refresh, or a lease end.
    /// `None` when nothing is scheduled. O(capacity).
    pub fn next_deadline(&self) -> Option<u64> {
        let now = self.last_now;
        self.storage
            .slots()
            .iter()
            .filter(|s| s.occupied())
            .filter_map(|s| {
                if s.lease_until != 0 {
                    Some(s.lease_until)
                } else if self.usable(s, now) {
                    Some(s.refresh_on.max(s.retry_at))
                } else {
                    None
                }
            })
            .min()
    }

    /// For a background refresher: hands out a refresh ticket for one due entry, or says when
    /// to call again (`Err(Some(t))`), or that nothing is scheduled (`Err(None)`). Lapsed
    /// leases are released on the way. O(capacity).
    pub fn poll_refresh(&mut self, now: u64) -> Result<Ticket, Option<u64>> {
        let now = self.clock(now);
        let mut due = None;
        for s in 0..self.storage.slots().len() as u32 {
            let slot = self.slot(s);
            if !slot.occupied() {
                continue;
            }
            self.lapse(s, now);
            if due.is_none()
                && self.usable(&slot, now)
                && slot.lease_until <= now
                && now >= slot.refresh_on.max(slot.retry_at)
            {
                due = Some(s);
            }
        }
        if let Some(s) = due {
            let flavour = self.slot(s).flavour as usize;
            if let Err(retry_at) = self.budgets[flavour].check(&self.config, now) {
                self.stats.throttled += 1;
                return Err(Some(retry_at));
            }
            self.stats.refreshes += 1;
            return Ok(self.issue(s, now));
        }
        Err(self.next_deadline())
    }

    /// Where the memory goes now. O(capacity).
    pub fn memory(&self) -> MemoryUse {
        let slots = self.storage.slots();
        let block = self.block_size;
        let (mut blocks_used, mut data_bytes) = (0, 0);
        for s in slots.iter().filter(|s| s.occupied()) {
            let data = s.key_len as usize + s.token_len as usize;
            blocks_used += data.div_ceil(block).max(1);
            data_bytes += data;
        }
        MemoryUse {
            entries: self.alloc.len as usize,
            slots: slots.len(),
            overhead_per_slot: core::mem::size_of::<Slot>() + 2 * core::mem::size_of::<u32>(),
            blocks_used,
            block_bytes: blocks_used * (block + core::mem::size_of::<u32>()),
            data_bytes,
        }
    }

    fn slot(&self, s: u32) -> Slot {
        self.storage.slots()[s as usize]
    }

    fn slot_mut(&mut self, s: u32) -> &mut Slot {
        &mut self.storage.parts().slots[s as usize]
    }

    /// A token that may be handed out: present, with at least `min_lifetime_ms` left (D8).
    fn usable(&self, slot: &Slot, now: u64) -> bool {
        slot.flags & HAS_TOKEN != 0
            && slot.expires_on > now.saturating_add(self.config.min_lifetime_ms)
    }

    /// The slot of a live ticket, or `StaleTicket` (counted).
    fn live(&mut self, ticket: Ticket, now: u64) -> Result<u32, CacheError> {
        let ok = self
            .storage
            .slots()
            .get(ticket.slot as usize)
            .is_some_and(|slot| {
                slot.occupied() && slot.generation == ticket.generation && slot.live_ticket(now)
            });
        if ok {
            Ok(ticket.slot)
        } else {
            self.stats.stale_tickets += 1;
            Err(CacheError::StaleTicket)
        }
    }

    /// Ends a lapsed lease: its ticket becomes stale and another caller may fetch.
    fn lapse(&mut self, s: u32, now: u64) {
        let slot = self.slot(s);
        if slot.lease_until != 0 && slot.lease_until <= now {
            let ticket = Ticket {
                slot: s,
                generation: slot.generation,
            };
            self.release(s, ticket);
            self.stats.lease_lapses += 1;
        }
    }

    /// Ends a ticket: a new generation, so the old one is stale.
    fn release(&mut self, s: u32, ticket: Ticket) {
        let flavour = self.slot(s).flavour as usize;
        if let Some(b) = self.budgets.get_mut(flavour) {
            b.end(ticket.to_bits());
        }
        let e = self.slot_mut(s);
        e.lease_until = 0;
        e.generation = e.generation.wrapping_add(1);
        e.flags &= !(CHALLENGED | ANSWERED);
    }

    /// Hands out a ticket for slot `s` (the budget was checked).
    fn issue(&mut self, s: u32, now: u64) -> Ticket {
        let lease_until = now.saturating_add(self.config.fetch_timeout_ms);
        let e = self.slot_mut(s);
        e.generation = e.generation.wrapping_add(1);
        e.lease_until = lease_until;
        e.issued_at = now;
        let (ticket, flavour) = (
            Ticket {
                slot: s,
                generation: e.generation,
            },
            e.flavour,
        );
        if let Some(b) = self.budgets.get_mut(flavour as usize) {
            b.begin(ticket.to_bits(), now, lease_until);
        }
        self.stats.fetches += 1;
        ticket
    }

    /// A ticket if the budget allows one (a refresh is optional: a full budget skips it).
    fn try_issue(&mut self, s: u32, now: u64) -> Option<Ticket> {
        let flavour = self.slot(s).flavour as usize;
        if self.budgets[flavour].check(&self.config, now).is_err() {
            self.stats.throttled += 1;
            return None;
        }
        Some(self.issue(s, now))
    }

    fn find(&mut self, key: &Key<'_>, hash: u32) -> Option<u32> {
        let parts = self.storage.parts();
        let (slots, index) = (&*parts.slots, &*parts.index);
        let (arena, links, size) = (&*parts.arena, &*parts.links, self.block_size);
        crate::storage::find(slots, index, hash, |slot| {
            key_matches(arena, links, size, slot, key)
        })
    }

    /// Adds an entry for `key`, evicting if needed (D4).
    fn insert(&mut self, key: &Key<'_>, hash: u32, now: u64) -> Result<u32, CacheError> {
        let key_len = key.encoded_len();
        let blocks = key_len.div_ceil(self.block_size).max(1) as u32;
        let s = loop {
            if self.alloc.free_blocks >= blocks {
                if let Some(s) = self.storage.parts().alloc_slot(&mut self.alloc) {
                    break s;
                }
            }
            self.evict(NIL, now)?;
        };
        let mut parts = self.storage.parts();
        let head = parts.alloc_chain(&mut self.alloc, blocks);
        let mut cursor = Cursor { block: head, at: 0 };
        let sel = key.identity.value().as_bytes();
        parts.write(&mut cursor, &[key.flavour as u8, key.identity.kind() as u8]);
        parts.write(&mut cursor, &(sel.len() as u16).to_le_bytes());
        parts.write(&mut cursor, sel);
        parts.write(&mut cursor, key.resource.as_str().as_bytes());
        let generation = parts.slots[s as usize].generation;
        parts.slots[s as usize] = Slot {
            hash,
            generation,
            head,
            key_len: key_len as u16,
            flags: OCCUPIED | REFERENCED,
            flavour: key.flavour as u8,
            ..Slot::EMPTY
        };
        parts.index_insert(s);
        Ok(s)
    }

    /// Removes entry `s`: out of the index, bytes wiped, slot freed.
    fn remove(&mut self, s: u32) {
        let mut parts = self.storage.parts();
        parts.index_remove(s);
        let head = parts.slots[s as usize].head;
        parts.free_chain(&mut self.alloc, head);
        parts.free_slot(&mut self.alloc, s);
    }

    /// Evicts one entry other than `keep` (D4): one without a usable token first, else the
    /// first not recently used one in CLOCK order; never one with a live ticket.
    fn evict(&mut self, keep: u32, now: u64) -> Result<(), CacheError> {
        let n = self.storage.slots().len() as u32;
        let evictable =
            |s: u32, slot: &Slot| s != keep && slot.occupied() && !slot.live_ticket(now);
        let victim = (0..n).find(|&s| {
            let slot = self.slot(s);
            evictable(s, &slot) && !self.usable(&slot, now)
        });
        let victim = victim.or_else(|| {
            for _ in 0..2 * n {
                let s = self.hand;
                self.hand = (self.hand + 1) % n;
                let slot = self.slot(s);
                if !evictable(s, &slot) {
                    continue;
                }
                if slot.flags & REFERENCED != 0 {
                    self.slot_mut(s).flags &= !REFERENCED;
                } else {
                    return Some(s);
                }
            }
            None
        });
        let s = victim.ok_or(CacheError::CacheFull)?;
        self.lapse(s, now);
        self.remove(s);
        self.stats.evictions += 1;
        Ok(())
    }

    fn read_key<'b>(&self, slot: &Slot, buf: &'b mut [u8]) -> Option<Key<'b>> {
        let len = slot.key_len as usize;
        let buf = buf.get_mut(..len)?;
        let (arena, links) = self.storage.arena();
        let mut at = 0;
        read_chain(arena, links, self.block_size, slot.head, 0, len, |piece| {
            buf[at..at + piece.len()].copy_from_slice(piece);
            at += piece.len();
        });
        let flavour = Flavour::from_u8(buf[0])?;
        let kind = IdentityKind::from_u8(buf[1])?;
        let sel_len = u16::from_le_bytes([buf[2], buf[3]]) as usize;
        let (sel, resource) = buf[KEY_HEADER..].split_at(sel_len);
        let identity = Identity::new(kind, core::str::from_utf8(sel).ok()?).ok()?;
        let resource = Resource::new(core::str::from_utf8(resource).ok()?).ok()?;
        Some(Key {
            flavour,
            identity,
            resource,
        })
    }

    /// Stores a token that arrived for `ticket` (slot `s`): checks the echo and the remaining
    /// lifetime, writes it into a fresh chain, then wipes the old one, so a failure to find
    /// room keeps the old token (D13: never lose a valid token).
    fn store<'b>(
        &mut self,
        ticket: Ticket,
        s: u32,
        body: &TokenBody<'_>,
        now: u64,
    ) -> Result<Done<'b>, CacheError> {
        let slot = self.slot(s);
        let expires_on = body.expires_on.saturating_mul(1000);
        let mut buf = [0u8; MAX_KEY_LEN];
        let key = self
            .read_key(&slot, &mut buf)
            .ok_or(CacheError::StaleTicket)?;
        let reject = if self.config.verify_client_id && !body.client_id_matches(&key.identity) {
            Some(FailureKind::ClientIdMismatch)
        } else if expires_on <= now.saturating_add(self.config.min_lifetime_ms) {
            Some(FailureKind::ExpiredOnArrival)
        } else {
            None
        };
        if let Some(kind) = reject {
            let f = Failure { kind, status: 200 };
            return self.settle(ticket, f, None, ErrorDetail::default(), now);
        }
        let key_len = slot.key_len as usize;
        let len = body.token_len();
        let blocks = (key_len + len).div_ceil(self.block_size) as u32;
        let needed = if slot.flags & HAS_TOKEN == 0 {
            blocks.saturating_sub(self.storage.parts().chain_len(slot.head))
        } else {
            blocks
        };
        while self.alloc.free_blocks < needed {
            if self.evict(s, now).is_err() {
                let f = Failure {
                    kind: FailureKind::CacheFull,
                    status: 200,
                };
                return self.settle(ticket, f, None, ErrorDetail::default(), now);
            }
        }
        let keys = self.alloc.len;
        let hash = slot.hash;
        let mut parts = self.storage.parts();
        // A first token extends the key's chain; a refresh writes a new chain and only then
        // wipes the old one, so the old token stays valid until the new one is in place.
        let head = if slot.flags & HAS_TOKEN == 0 {
            let have = parts.chain_len(slot.head);
            parts.extend_chain(&mut self.alloc, slot.head, blocks.saturating_sub(have));
            slot.head
        } else {
            let head = parts.alloc_chain(&mut self.alloc, blocks);
            let mut cursor = Cursor { block: head, at: 0 };
            parts.write(&mut cursor, &buf[..key_len]);
            parts.free_chain(&mut self.alloc, slot.head);
            head
        };
        let mut cursor = parts.cursor_at(head, key_len);
        body.pieces(|piece| parts.write(&mut cursor, piece));
        let refresh_on = policy::refresh_on(
            &self.config,
            hash,
            slot.issued_at,
            expires_on,
            body.refresh_in,
            keys,
        );
        let run = if crate::storage::chain_is_run(parts.links, head) {
            RUN
        } else {
            0
        };
        let e = &mut parts.slots[s as usize];
        e.head = head;
        e.token_len = len as u32;
        e.expires_on = expires_on;
        e.refresh_on = refresh_on;
        e.flags = (e.flags & !RUN) | HAS_TOKEN | run;
        e.attempts = 0;
        e.failure = 0;
        e.failure_status = 0;
        e.retry_at = 0;
        e.gone_since = 0;
        self.release(s, ticket);
        if let Some(b) = self.budgets.get_mut(slot.flavour as usize) {
            b.ever_ok = true;
        }
        self.stats.tokens += 1;
        Ok(Done::Token { len, expires_on })
    }

    /// Ends `ticket` with a failure: decides when to try again (D7) and remembers it. A token
    /// that is still valid is kept.
    fn settle<'b>(
        &mut self,
        ticket: Ticket,
        failure: Failure,
        retry_after: Option<http::RetryAfter>,
        detail: ErrorDetail,
        now: u64,
    ) -> Result<Done<'b>, CacheError> {
        let s = ticket.slot;
        let slot = self.slot(s);
        let d = self.dispose(&slot, failure, retry_after, now);
        let e = self.slot_mut(s);
        e.attempts = e.attempts.saturating_add(1);
        e.failure = failure.kind as u8;
        e.failure_status = failure.status;
        e.retry_at = d.retry_at;
        if failure.kind == FailureKind::Gone {
            if e.gone_since == 0 {
                e.gone_since = now;
            }
        } else {
            e.gone_since = 0;
        }
        self.release(s, ticket);
        let retry_at = d.retry_at;
        Ok(match d.class {
            OutcomeClass::Retry => {
                self.stats.failures_retry += 1;
                Done::Retry {
                    failure,
                    retry_at,
                    detail,
                }
            }
            OutcomeClass::Terminal => {
                self.stats.failures_terminal += 1;
                Done::Failed {
                    failure,
                    retry_at,
                    detail,
                }
            }
            OutcomeClass::Unavailable => {
                self.stats.failures_unavailable += 1;
                Done::Failed {
                    failure,
                    retry_at,
                    detail,
                }
            }
        })
    }

    /// The class and next-attempt time of a failure for `slot` at `now`.
    fn dispose(
        &mut self,
        slot: &Slot,
        failure: Failure,
        retry_after: Option<http::RetryAfter>,
        now: u64,
    ) -> Disposition {
        let c = &self.config;
        let mut class = failure.kind.class();
        let mut delay = match class {
            OutcomeClass::Retry if failure.kind == FailureKind::Gone => {
                let since = if slot.gone_since == 0 {
                    now
                } else {
                    slot.gone_since
                };
                if now.saturating_sub(since) >= c.gone_window_ms {
                    // 410s for longer than the update window: give up for now.
                    class = OutcomeClass::Terminal;
                    c.negative_ttl_ms
                } else {
                    c.gone_interval_ms
                }
            }
            OutcomeClass::Retry => match retry_after {
                Some(ra) => policy::retry_after_ms(c, ra, now),
                None => {
                    let attempt = u32::from(slot.attempts) + 1;
                    policy::backoff_ms(c, attempt, self.rng.next())
                }
            },
            OutcomeClass::Terminal | OutcomeClass::Unavailable => c.negative_ttl_ms,
        };
        if self.usable(slot, now) {
            // A failed eager refresh: the token still serves; try again no sooner than this.
            delay = delay.max(self.config.eager_retry_ms);
        }
        Disposition {
            class,
            retry_at: now.saturating_add(delay),
        }
    }
}

/// The failure remembered in a slot, if any.
fn failure_of(slot: &Slot) -> Option<Failure> {
    let kind = FailureKind::from_u8(slot.failure)?;
    Some(Failure {
        kind,
        status: slot.failure_status,
    })
}

/// Whether the entry's key bytes are `key` (D3: selector compared ignoring ASCII case,
/// resource byte for byte). Keys of up to one block (nearly all) compare as three slices.
#[inline]
fn key_matches(arena: &[u8], links: &[u32], block: usize, slot: &Slot, key: &Key<'_>) -> bool {
    let len = slot.key_len as usize;
    if len != key.encoded_len() || slot.flavour != key.flavour as u8 {
        return false;
    }
    let sel = key.identity.value().as_bytes();
    let resource = key.resource.as_str().as_bytes();
    let same = |stored: &[u8]| {
        let (header, rest) = stored.split_at(KEY_HEADER);
        let (stored_sel, stored_resource) = rest.split_at(sel.len());
        header[1] == key.identity.kind() as u8
            && stored_resource == resource
            && stored_sel.eq_ignore_ascii_case(sel)
    };
    let start = slot.head as usize * block;
    if len <= block {
        return arena.get(start..start + len).is_some_and(same);
    }
    let mut buf = [0u8; MAX_KEY_LEN];
    let mut at = 0;
    read_chain(arena, links, block, slot.head, 0, len, |piece| {
        buf[at..at + piece.len()].copy_from_slice(piece);
        at += piece.len();
    });
    same(&buf[..len])
}

#[cfg(test)]
mod tests;
