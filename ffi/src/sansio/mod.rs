//! The sans-IO handle: the core cache carved out of caller memory, driven by the caller's own
//! event loop (D5, D6). Nothing here allocates.
//!
//! Memory layout, from `mem` (aligned to `IMDS_CACHE_STORAGE_ALIGN`):
//!
//! ```text
//! [ SansIo header | slots: [Slot; n] | index: [u32; 2n] | links: [u32; b] | arena: [u8; 256 b] | endpoint text ]
//! ```
//!
//! Soundness: `imds_cache_sansio_init` zeroes the whole range before anything reads it, so every
//! region holds initialised values (all-zero is a valid `Slot`, `u32` and `u8`); the regions
//! are disjoint and each is reached only through its own [`Raw`] view, which makes a slice
//! from its raw pointer on each use, so no two live `&mut` overlap; the header is reached
//! only through `&SansIo`, whose mutable part is behind an `UnsafeCell` guarded by the `busy`
//! flag (one call at a time, others get `BUSY`). The caller promises not to touch, move or
//! free the memory until `imds_cache_sansio_deinit`, which wipes it.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use ::imds_cache::{Endpoint, Flavour, Identity, Key, Resource, Stats, TokenCache};

use crate::imds_cache_result;
use crate::settings::endpoint_of;

mod functions;
mod layout;
mod types;

pub use functions::*;
pub use layout::*;
pub use types::*;

use layout::{Raw, RawStorage};

/// The value of `live` while the handle is initialised (the memory is zeroed by
/// `imds_cache_sansio_deinit`, and by `imds_cache_sansio_init` before anything else).
const LIVE: u32 = 1;

/// A sans-IO token cache: the core alone, in memory the caller provides. Opaque; made by
/// `imds_cache_sansio_init` in memory of `imds_cache_sansio_storage_size` bytes, ended by
/// `imds_cache_sansio_deinit`. Allocates nothing, starts no thread, does no I/O: the caller's
/// event loop does. One call at a time (an overlapping call gets `IMDS_CACHE_RESULT_BUSY`).
///
/// This is the header at the start of the handle's memory.
pub struct imds_cache_sansio {
    /// `LIVE` from init to deinit: a best-effort check against use after `_deinit`.
    live: AtomicU32,
    busy: AtomicBool,
    /// Set when a panic unwound through a call: the cache may be inconsistent.
    poisoned: AtomicBool,
    /// Bytes of the caller's memory in use (wiped by deinit).
    len: usize,
    inner: UnsafeCell<Inner>,
}

struct Inner {
    cache: TokenCache<RawStorage>,
    flavour: Flavour,
    /// The endpoint's URL, secret and default client id, one after the other (UTF-8).
    text: Raw<u8>,
    url_len: usize,
    secret_len: Option<usize>,
    client_id_len: Option<usize>,
}

impl Inner {
    /// The endpoint, borrowing the handle's text, and the cache (disjoint borrows).
    fn parts(&mut self) -> Result<(&mut TokenCache<RawStorage>, Endpoint<'_>), imds_cache_result> {
        let text = std::str::from_utf8(self.text.as_ref())
            .map_err(|_| imds_cache_result::InvalidEndpoint)?;
        let url = &text[..self.url_len];
        let mut at = self.url_len;
        let secret = self.secret_len.map(|n| {
            at += n;
            &text[at - n..at]
        });
        let client_id = self.client_id_len.map(|n| &text[at..at + n]);
        let endpoint = endpoint_of(self.flavour, url, secret, client_id)
            .map_err(|_| imds_cache_result::InvalidEndpoint)?;
        Ok((&mut self.cache, endpoint))
    }

    fn key<'k>(&self, identity: Identity<'k>, resource: Resource<'k>) -> Key<'k> {
        Key {
            flavour: self.flavour,
            identity,
            resource,
        }
    }
}

impl imds_cache_sansio {
    /// Runs `f` on the inner state, one call at a time.
    fn with<T>(
        &self,
        f: impl FnOnce(&mut Inner) -> Result<T, imds_cache_result>,
    ) -> Result<T, imds_cache_result> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(imds_cache_result::Panic);
        }
        if self
            .busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(imds_cache_result::Busy);
        }
        struct Release<'a>(&'a imds_cache_sansio);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    self.0.poisoned.store(true, Ordering::Release);
                }
                self.0.busy.store(false, Ordering::Release);
            }
        }
        let _release = Release(self);
        // SAFETY: the busy flag is ours, so no other reference to the inner state exists.
        f(unsafe { &mut *self.inner.get() })
    }

    pub(crate) fn invalidate(
        &self,
        identity: &Identity<'_>,
        resource: &Resource<'_>,
    ) -> Result<bool, imds_cache_result> {
        // `now_ms` 0: the core keeps its own (non-decreasing) clock, so a caller's fake clock is
        // not disturbed.
        self.with(|inner| {
            let key = inner.key(*identity, *resource);
            Ok(inner.cache.invalidate(&key, 0))
        })
    }

    pub(crate) fn stats(&self) -> Result<Stats, imds_cache_result> {
        self.with(|inner| Ok(inner.cache.stats()))
    }

    pub(crate) fn flavour(&self) -> Result<Flavour, imds_cache_result> {
        self.with(|inner| Ok(inner.flavour))
    }
}

/// The live handle behind `cache`.
///
/// # Safety
/// `cache` is NULL or the memory of a handle made by `imds_cache_sansio_init` (ended or not:
/// `_deinit` leaves it zeroed, which this refuses), readable for its header.
pub(crate) unsafe fn sansio<'a>(
    cache: *const imds_cache_sansio,
) -> Result<&'a imds_cache_sansio, imds_cache_result> {
    crate::non_null(cache)?;
    // SAFETY: not NULL and readable for the header (contract); the word is read alone, as an
    // atomic, before anything else of the header is trusted.
    let live = unsafe { &*std::ptr::addr_of!((*cache).live) };
    if live.load(Ordering::Acquire) != LIVE {
        return Err(imds_cache_result::InvalidHandle);
    }
    // SAFETY: a live handle: `imds_cache_sansio_init` wrote a valid header, which stays until
    // `_deinit`.
    Ok(unsafe { &*cache })
}
