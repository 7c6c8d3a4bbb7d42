//! The sans-IO handle's memory: where each region goes in the caller's memory, and the
//! functions that size it, carve the cache out of it and wipe it.

use std::ffi::c_void;
use std::mem::{align_of, size_of};
use std::ptr::NonNull;
use std::sync::atomic::{compiler_fence, AtomicBool, AtomicU32, Ordering};

use ::imds_cache::{BufferStorage, StorageLayout, TokenCache, Word};

use super::{imds_cache_sansio, sansio, Inner, LIVE};
use crate::config::imds_cache_config;
use crate::settings::{endpoint_of, Settings};
use crate::{guard, imds_cache_result, non_null, put};

/// The alignment `imds_cache_sansio_init` needs for its memory (8: `malloc`, `aligned_alloc`
/// and a `uint64_t` array all provide it).
pub const IMDS_CACHE_STORAGE_ALIGN: usize = 8;

const _: () = {
    assert!(align_of::<imds_cache_sansio>() <= IMDS_CACHE_STORAGE_ALIGN);
    assert!(align_of::<Word>() <= IMDS_CACHE_STORAGE_ALIGN);
};

/// A view of `len` initialised `T`s at `ptr`, inside the handle's memory.
///
/// Invariant (established by `imds_cache_sansio_init`, the only place that makes one): `ptr`
/// is aligned and valid for reads and writes of `len` initialised `T`s until
/// `imds_cache_sansio_deinit`,
/// and no other `Raw` or reference covers any of them. A slice is made from it only for the
/// duration of a borrow of the `Raw` itself, so slices from one `Raw` never overlap in time
/// with a mutable one.
pub(super) struct Raw<T> {
    pub(super) ptr: NonNull<T>,
    pub(super) len: usize,
}

impl<T> AsRef<[T]> for Raw<T> {
    fn as_ref(&self) -> &[T] {
        // SAFETY: the type's invariant; the slice's lifetime is a shared borrow of `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> AsMut<[T]> for Raw<T> {
    fn as_mut(&mut self) -> &mut [T] {
        // SAFETY: the type's invariant; the slice's lifetime is a unique borrow of `self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

pub(super) type RawStorage = BufferStorage<Raw<Word>>;

/// Where each region goes.
struct Layout {
    /// Where the table's words start, and the core's layout of them.
    words: usize,
    table: StorageLayout,
    text: usize,
    text_len: usize,
    total: usize,
}

/// The handle's header, then the table's words (the core's `layout`: the one home of its
/// sizing), then the endpoint's text.
fn layout(c: &Settings) -> Result<Layout, imds_cache_result> {
    let bad = imds_cache_result::InvalidConfig;
    let table = ::imds_cache::layout(c.capacity, c.bytes_per_entry).map_err(|_| bad)?;
    let (_, url, secret, client_id) = c.endpoint_parts();
    let text_len = url.len() + secret.map_or(0, str::len) + client_id.map_or(0, str::len);
    let words = size_of::<imds_cache_sansio>()
        .checked_next_multiple_of(StorageLayout::ALIGN)
        .ok_or(bad)?;
    let text = words.checked_add(table.total_bytes).ok_or(bad)?;
    let total = text.checked_add(text_len).ok_or(bad)?;
    if total > isize::MAX as usize {
        return Err(bad);
    }
    Ok(Layout {
        words,
        table,
        text,
        text_len,
        total,
    })
}

/// The configuration behind `config`, or the defaults for NULL (neither allocates).
///
/// # Safety
/// `config` is NULL or a live configuration.
unsafe fn config_or_default(config: *const imds_cache_config, default: &Settings) -> &Settings {
    if config.is_null() {
        default
    } else {
        // SAFETY: a live configuration by contract.
        unsafe { &(*config).inner }
    }
}

/// Writes to `*out_size` how many bytes `imds_cache_sansio_init` needs for `config` (NULL
/// means the defaults: 4096 entries, about 10.8 MB). The memory must also be aligned to
/// `IMDS_CACHE_STORAGE_ALIGN`. An out-of-bounds size is `IMDS_CACHE_RESULT_INVALID_CONFIG`.
///
/// # Safety
/// `config` is NULL or a live configuration; `out_size` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_sansio_storage_size(
    config: *const imds_cache_config,
    out_size: *mut usize,
) -> imds_cache_result {
    guard(|| {
        let default = Settings::default();
        // SAFETY: forwarded contract.
        let c = unsafe { config_or_default(config, &default) };
        let total = layout(c)?.total;
        // SAFETY: valid by contract.
        unsafe { put(out_size, total) }
    })
}

/// Makes a sans-IO handle inside `mem` (`len` bytes, at least
/// `imds_cache_sansio_storage_size`, aligned to `IMDS_CACHE_STORAGE_ALIGN`): a cache sized and
/// tuned by `config` (NULL means the defaults) for the endpoint it names (IMDS at
/// 169.254.169.254 when it names none: this handle reads no environment; see
/// `imds_cache_config_set_endpoint_from_env`). The configuration's timeouts and refresher
/// setting are the blocking handle's and are not used here. Allocates nothing, starts no
/// thread, does no I/O: the caller's event loop does (lookup, request, feed).
///
/// On success `*out_cache` is the handle (the same address as `mem`). Until
/// `imds_cache_sansio_deinit` the memory belongs to the handle: do not read, write, move or
/// free it. Calls on the handle must not overlap (one event loop; an overlapping call gets
/// `IMDS_CACHE_RESULT_BUSY`). `config` is copied and may be freed at once. Calling this on
/// memory that holds a live handle resets it.
///
/// # Safety
/// `mem` is valid for reads and writes of `len` bytes until `imds_cache_sansio_deinit`;
/// `config` is
/// NULL or a live configuration; `out_cache` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_sansio_init(
    mem: *mut c_void,
    len: usize,
    config: *const imds_cache_config,
    out_cache: *mut *mut imds_cache_sansio,
) -> imds_cache_result {
    guard(|| {
        non_null(mem)?;
        non_null(out_cache)?;
        if mem as usize % IMDS_CACHE_STORAGE_ALIGN != 0 {
            return Err(imds_cache_result::Misaligned);
        }
        let default = Settings::default();
        // SAFETY: forwarded contract.
        let c = unsafe { config_or_default(config, &default) };
        c.cache
            .validate()
            .map_err(|_| imds_cache_result::InvalidConfig)?;
        let l = layout(c)?;
        if len < l.total {
            return Err(imds_cache_result::StorageTooSmall);
        }
        let (flavour, url, secret, client_id) = c.endpoint_parts();
        endpoint_of(flavour, url, secret, client_id)
            .map_err(|_| imds_cache_result::InvalidEndpoint)?;
        let base = mem.cast::<u8>();
        // SAFETY: `mem` is valid for `len >= l.total` bytes (contract); every offset below is
        // within `l.total` (computed by `layout` with checked arithmetic) and aligned for its
        // type (`mem` is aligned to 8, the words' offset to a word). Zeroing first makes every
        // region initialised (all-zero atomic words are valid, and an empty table); the
        // header, the words and the text are disjoint.
        let cache = unsafe {
            std::ptr::write_bytes(base, 0, l.total);
            let mut at = base.add(l.text);
            for part in [Some(url), secret, client_id].into_iter().flatten() {
                std::ptr::copy_nonoverlapping(part.as_ptr(), at, part.len());
                at = at.add(part.len());
            }
            let words = Raw {
                ptr: NonNull::new_unchecked(base.add(l.words).cast::<Word>()),
                len: l.table.words,
            };
            TokenCache::with_words(c.cache.clone(), l.table, words)
                .map_err(|_| imds_cache_result::InvalidConfig)?
        };
        let header = imds_cache_sansio {
            live: AtomicU32::new(LIVE),
            busy: AtomicBool::new(false),
            poisoned: AtomicBool::new(false),
            len: l.total,
            inner: std::cell::UnsafeCell::new(Inner {
                cache,
                flavour,
                // SAFETY: within the zeroed range, after the table's words.
                text: Raw {
                    ptr: unsafe { NonNull::new_unchecked(base.add(l.text)) },
                    len: l.text_len,
                },
                url_len: url.len(),
                secret_len: secret.map(str::len),
                client_id_len: client_id.map(str::len),
            }),
        };
        let handle = mem.cast::<imds_cache_sansio>();
        // SAFETY: the header region is `size_of::<imds_cache_sansio>()` bytes at `mem`,
        // aligned, and nothing else refers to it.
        unsafe { handle.write(header) };
        // SAFETY: valid by contract.
        unsafe { put(out_cache, handle) }
    })
}

/// Ends the sans-IO handle `cache` and wipes every byte of its memory (tokens included): the
/// memory is the caller's again. NULL is `IMDS_CACHE_RESULT_NULL_POINTER`; memory that holds
/// no live handle (already ended) is `IMDS_CACHE_RESULT_INVALID_HANDLE`; a call in progress on
/// the handle makes it `IMDS_CACHE_RESULT_BUSY`. Must not race other calls on the handle.
///
/// # Safety
/// `cache` is NULL or the memory of a handle made by `imds_cache_sansio_init`.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_sansio_deinit(
    cache: *mut imds_cache_sansio,
) -> imds_cache_result {
    guard(|| {
        // SAFETY: forwarded contract.
        let s = unsafe { sansio(cache)? };
        if s.busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(imds_cache_result::Busy);
        }
        let total = s.len;
        // SAFETY: the busy flag is ours, so nothing else uses the inner state; it is dropped
        // once, then every byte of the handle is overwritten through the caller's pointer
        // (`s` is not used again).
        unsafe {
            std::ptr::drop_in_place(s.inner.get());
            std::ptr::write_bytes(cache.cast::<u8>(), 0, total);
        }
        compiler_fence(Ordering::SeqCst);
        Ok(())
    })
}
