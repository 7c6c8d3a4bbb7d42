//! The fixed-capacity token cache: lookup, tickets, single-flight, refresh, retry, budget,
//! eviction (D3–D9, D13).
//!
//! Call order, as a driver sees it (quinn-proto style: every input carries `now_ms`, in ms):
//!
//! 1. [`TokenCache::lookup`] answers a [`Lookup`]. On `Hit` use the token (and if it carries a
//!    refresh ticket, refresh in the background); on `Fetch` go on with 2; on `Pending`,
//!    `Throttled` or `Failed` wait until `retry_at_ms` (or a completion) and look up again.
//! 2. [`TokenCache::request_at`] writes the request for the ticket; send it.
//! 3. Feed every byte received so far to [`TokenCache::feed`] until it answers
//!    [`Feed::Done`]; call [`TokenCache::eof`] when the peer closes first, or
//!    [`TokenCache::fail`] when the transport fails. For Arc, `Done(NeedKeyFile)` asks for the
//!    key file: read it and call [`TokenCache::complete_challenge`], then send and feed again.
//! 4. A driver with a background refresher calls [`TokenCache::poll_refresh`] at
//!    [`TokenCache::next_deadline`].
//!
//! Hits without a lock (D15): every method above is a *writer* and takes `&mut self`, so a
//! driver keeps the cache behind its lock. [`TokenCache::reader`] hands out a [`Reader`] over
//! the same storage whose [`Reader::peek`] takes `&self` and no lock: it copies a usable
//! token while the writer works, and sends a caller to `lookup` only on a miss or when
//! `refresh_due` says this caller is the one to take the refresh ticket.
//!
//! The core never retries on its own: a retry is a new ticket handed out by a lookup after the
//! backoff.
//!
//! The type and its lookups are here; the rest of its methods are grouped by what they do:
//! [`protocol`] (tickets, requests, responses), [`settle`] (turning an outcome into slot
//! state), [`table`] (finding, adding and evicting entries) and [`key`] (how a key is laid
//! out in the arena).

mod answers;
mod handover;
mod key;
mod peek;
mod protocol;
mod settle;
mod table;

use core::fmt;

use crate::identity::Flavour;
use crate::policy::{Budget, Config, Rng};
#[cfg(not(all(loom, test)))]
use crate::storage::ArrayStorage;
#[cfg(not(all(loom, test)))]
use crate::storage::NIL;
use crate::storage::{
    Alloc, BufferStorage, Slot, Storage, StorageLayout, Table, Word, INDEX_WORDS_PER_SLOT,
    SLOT_WORDS, WORD_BYTES,
};

pub use answers::{
    CacheError, Done, Feed, Lease, Lookup, MemoryUse, NewError, Peek, Stats, Ticket, Transport,
};
pub use handover::{BadWriterState, WriterState};
pub use key::Key;
pub use peek::Reader;

use settle::failure_of;

/// The token cache over a [`Storage`]. See the module documentation for the call order.
pub struct TokenCache<S: Storage> {
    storage: Table<S>,
    config: Config,
    budgets: [Budget; Flavour::COUNT],
    stats: Stats,
    alloc: Alloc,
    last_now_ms: u64,
    rng: Rng,
    hand: u32,
    block_size: usize,
    /// Other caches share the table (see [`attach_words`](TokenCache::attach_words)): it is
    /// theirs too, so dropping this one leaves it alone.
    shared: bool,
}

impl<R: AsRef<[Word]>> TokenCache<BufferStorage<R>> {
    /// A cache over one region of words sized at run time: caller memory (`&[Word]`) or an
    /// owning or shared container (`Box<[Word]>`, `Arc<[Word]>`), exactly `layout.words`
    /// long ([`crate::layout`] gives the layout for a capacity). The words are reset.
    pub fn with_words(config: Config, layout: StorageLayout, words: R) -> Result<Self, NewError> {
        let storage = BufferStorage::new(words, layout).map_err(NewError::Storage)?;
        Self::with_storage(config, storage)
    }
}

impl<R: AsRef<[Word]>> TokenCache<BufferStorage<R>> {
    /// A cache over words that already hold a table another cache wrote (a region that
    /// processes share): nothing is reset. It holds no writer state until
    /// [`resume`](Self::resume) gives it the last writer's, which it must before its first
    /// write. Dropping it leaves the table to the others.
    pub fn attach_words(config: Config, layout: StorageLayout, words: R) -> Result<Self, NewError> {
        config.validate().map_err(NewError::Config)?;
        let storage = BufferStorage::new(words, layout).map_err(NewError::Storage)?;
        let storage = Table::fresh(storage);
        let (_, links, block_size) = storage.arena();
        let blocks = links.len() as u32;
        Ok(Self {
            block_size,
            storage,
            rng: Rng::new(config.seed),
            config,
            budgets: [Budget::EMPTY; Flavour::COUNT],
            stats: Stats::default(),
            alloc: Alloc::new(blocks),
            last_now_ms: 0,
            hand: 0,
            shared: true,
        })
    }
}

#[cfg(not(all(loom, test)))]
impl<const SLOTS: usize, const BLOCKS: usize> TokenCache<ArrayStorage<SLOTS, BLOCKS>> {
    /// An owning cache of `SLOTS` entries and `BLOCKS` × 256 bytes of arena; `const`, so it
    /// can be a `static` (behind the lock of your choice). An invalid `config` or zero
    /// capacities fail to compile when used in a `const`/`static`.
    pub const fn new(config: Config) -> Self {
        assert!(SLOTS > 0 && SLOTS < NIL as usize && BLOCKS > 0 && BLOCKS < NIL as usize);
        Self {
            storage: Table::fresh(ArrayStorage::new()),
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
            last_now_ms: 0,
            hand: 0,
            block_size: crate::storage::BLOCK_SIZE,
            shared: false,
        }
    }
}

impl<S: Storage> fmt::Debug for TokenCache<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("entries", &self.alloc.len)
            .field("capacity", &self.capacity())
            .field("free_blocks", &self.alloc.free_blocks)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<S: Storage> Drop for TokenCache<S> {
    /// Wipes the arena (D13); a [`Reader`] that outlives the cache misses from then on. A
    /// shared table is left to the caches that share it.
    fn drop(&mut self) {
        if !self.shared {
            self.storage.wipe();
        }
    }
}

impl<S: Storage> TokenCache<S> {
    /// A cache over `storage` (any [`Storage`]: a [`BufferStorage`], or a shared reference to
    /// storage that readers will share, such as a `&'static ArrayStorage`). Its words are
    /// reset.
    pub fn with_storage(config: Config, storage: S) -> Result<Self, NewError> {
        config.validate().map_err(NewError::Config)?;
        let storage = Table::reset(storage);
        let (_, links, block_size) = storage.arena();
        let blocks = links.len() as u32;
        Ok(Self {
            block_size,
            storage,
            rng: Rng::new(config.seed),
            config,
            budgets: [Budget::EMPTY; Flavour::COUNT],
            stats: Stats::default(),
            alloc: Alloc::new(blocks),
            last_now_ms: 0,
            hand: 0,
            shared: false,
        })
    }

    /// A reader of this cache's storage, for hits without the writer's lock (D15): see
    /// [`Reader::peek`]. It shares the storage (`S` is a shared handle: `&[Word]`,
    /// `Arc<[Word]>`, `&'static ArrayStorage`), so it can live in another thread while this
    /// cache stays behind the driver's lock.
    pub fn reader(&self) -> Reader<S>
    where
        S: Clone,
    {
        Reader::new(self.storage.storage().clone(), self.config.min_lifetime_ms)
    }

    /// Looks `key` up without changing anything but a CLOCK bit and, once per refresh, the
    /// refresh claim: what [`Reader::peek`] answers, for a caller that holds the cache.
    pub fn peek(&self, key: &Key<'_>, now_ms: u64, out: &mut [u8]) -> Peek {
        self.storage
            .peek(key, now_ms, self.config.min_lifetime_ms, out)
    }

    /// Says that other caches share this cache's table (a cache made with
    /// [`with_words`](TokenCache::with_words) over a region others will attach to): dropping
    /// this cache then leaves the table, tokens included, to them.
    pub fn share_table(&mut self) {
        self.shared = true;
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

    /// Requests in flight to `flavour`'s endpoint at `now_ms`.
    pub fn in_flight(&self, flavour: Flavour, now_ms: u64) -> u32 {
        self.budgets[flavour as usize].in_flight(now_ms)
    }

    /// Clamps time to be non-decreasing (D1).
    fn clock(&mut self, now_ms: u64) -> u64 {
        self.last_now_ms = self.last_now_ms.max(now_ms);
        self.last_now_ms
    }

    /// Looks `key` up at `now_ms`, copying a usable token into `out` (D5). O(1) on average.
    pub fn lookup(
        &mut self,
        key: &Key<'_>,
        now_ms: u64,
        out: &mut [u8],
    ) -> Result<Lookup, CacheError> {
        let now_ms = self.clock(now_ms);
        let hash = key.hash();
        let Some(s) = self.find(key, hash) else {
            self.stats.misses += 1;
            if let Err(retry_at_ms) = self.budgets[key.flavour as usize].check(&self.config, now_ms)
            {
                self.stats.throttled += 1;
                return Ok(Lookup::Throttled { retry_at_ms });
            }
            let s = self.insert(key, hash, now_ms)?;
            return Ok(Lookup::Fetch(self.issue(s, now_ms)));
        };
        let mut slot = self.slot(s);
        if slot.lease_until_ms != 0 && slot.lease_until_ms <= now_ms {
            self.lapse(s, now_ms);
            slot = self.slot(s);
        }
        if self.usable(&slot, now_ms) {
            let len = slot.token_len as usize;
            let Some(out) = out.get_mut(..len) else {
                return Ok(Lookup::BufferTooSmall { needed: len });
            };
            self.storage.copy_token(&slot, out);
            let slots = self.storage.slots();
            if !slots.referenced(s) {
                slots.set_referenced(s, true);
            }
            self.stats.hits += 1;
            let refresh = if now_ms >= slot.refresh_on_ms
                && !slot.live_ticket(now_ms)
                && now_ms >= slot.retry_at_ms
            {
                self.try_issue(s, now_ms)
                    .inspect(|_| self.stats.refreshes += 1)
            } else {
                None
            };
            if refresh.is_none() {
                // A reader that claimed this refresh (`refresh_due`) sent its caller here for
                // nothing: let the next one claim it.
                self.storage.unclaim(s, slot.generation);
            }
            return Ok(Lookup::Hit {
                len,
                expires_on_ms: slot.expires_on_ms,
                refresh,
            });
        }
        self.stats.misses += 1;
        if slot.live_ticket(now_ms) {
            self.stats.coalesced += 1;
            return Ok(Lookup::Pending {
                retry_at_ms: slot.lease_until_ms,
            });
        }
        if now_ms < slot.retry_at_ms {
            if let Some(error) = failure_of(&slot) {
                return Ok(Lookup::Failed {
                    error,
                    retry_at_ms: slot.retry_at_ms,
                });
            }
        }
        let flavour = key.flavour as usize;
        match self.budgets[flavour].check(&self.config, now_ms) {
            Ok(()) => Ok(Lookup::Fetch(self.issue(s, now_ms))),
            Err(retry_at_ms) => {
                self.stats.throttled += 1;
                Ok(Lookup::Throttled { retry_at_ms })
            }
        }
    }

    /// When `key`'s token is due for refresh (ms), if it holds a usable one: lets a caller
    /// that keeps its own copy (the Python credential) reuse it until then.
    pub fn refresh_on_ms(&mut self, key: &Key<'_>, now_ms: u64) -> Option<u64> {
        let now_ms = self.clock(now_ms);
        let s = self.find(key, key.hash())?;
        let slot = self.slot(s);
        self.usable(&slot, now_ms).then_some(slot.refresh_on_ms)
    }

    /// Gives back every live ticket (D12: after `fork`, the threads that held them do not exist
    /// in the child). Tokens are kept.
    pub fn release_all_tickets(&mut self) {
        for s in 0..self.storage.slots().len() as u32 {
            let slot = self.slot(s);
            if slot.occupied() && slot.lease_until_ms != 0 {
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
    pub fn invalidate(&mut self, key: &Key<'_>, now_ms: u64) -> bool {
        let now_ms = self.clock(now_ms);
        let Some(s) = self.find(key, key.hash()) else {
            return false;
        };
        let slot = self.slot(s);
        let had = slot.has_token();
        if slot.live_ticket(now_ms) {
            let mut parts = self.storage.parts_for(s);
            parts.wipe_from(slot.head, slot.key_len as usize);
            parts.slot_mut(s).drop_token();
        } else {
            self.remove(s);
        }
        had
    }

    /// The earliest time something is due: a refresh, a retry of a refresh, or a lease end.
    /// `None` when nothing is scheduled. O(capacity).
    pub fn next_deadline(&self) -> Option<u64> {
        let now_ms = self.last_now_ms;
        self.storage
            .slots()
            .iter()
            .filter(|s| s.occupied())
            .filter_map(|s| {
                if s.lease_until_ms != 0 {
                    Some(s.lease_until_ms)
                } else if self.usable(&s, now_ms) {
                    Some(s.refresh_on_ms.max(s.retry_at_ms))
                } else {
                    None
                }
            })
            .min()
    }

    /// For a background refresher: hands out a refresh ticket for one due entry, or says when
    /// to call again (`Err(Some(t))`), or that nothing is scheduled (`Err(None)`). Lapsed
    /// leases are released on the way. O(capacity).
    pub fn poll_refresh(&mut self, now_ms: u64) -> Result<Ticket, Option<u64>> {
        let now_ms = self.clock(now_ms);
        let mut due = None;
        for s in 0..self.storage.slots().len() as u32 {
            let slot = self.slot(s);
            if !slot.occupied() {
                continue;
            }
            self.lapse(s, now_ms);
            if due.is_none()
                && self.usable(&slot, now_ms)
                && slot.lease_until_ms <= now_ms
                && now_ms >= slot.refresh_on_ms.max(slot.retry_at_ms)
            {
                due = Some(s);
            }
        }
        if let Some(s) = due {
            let flavour = self.slot(s).flavour as usize;
            if let Err(retry_at_ms) = self.budgets[flavour].check(&self.config, now_ms) {
                self.stats.throttled += 1;
                return Err(Some(retry_at_ms));
            }
            self.stats.refreshes += 1;
            return Ok(self.issue(s, now_ms));
        }
        Err(self.next_deadline())
    }

    /// Where the memory goes now. O(capacity).
    pub fn memory(&self) -> MemoryUse {
        let slots = self.storage.slots();
        let block = self.block_size;
        let (mut blocks_used, mut data_bytes) = (0, 0);
        for s in slots.iter().filter(Slot::occupied) {
            let data = s.key_len as usize + s.token_len as usize;
            blocks_used += data.div_ceil(block).max(1);
            data_bytes += data;
        }
        MemoryUse {
            entries: self.alloc.len as usize,
            slots: slots.len(),
            overhead_per_slot: (SLOT_WORDS + INDEX_WORDS_PER_SLOT) * WORD_BYTES,
            blocks_used,
            block_bytes: blocks_used * (block + WORD_BYTES),
            data_bytes,
        }
    }
}

#[cfg(all(test, not(loom)))]
mod concurrent_tests;
#[cfg(all(test, not(loom)))]
mod handover_tests;
#[cfg(all(test, loom))]
mod loom_tests;
#[cfg(all(test, not(loom)))]
mod tests;
