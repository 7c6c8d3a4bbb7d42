//! The sans-IO handle: the core cache carved out of caller memory, driven by the caller's own
//! event loop (D5, D6). Nothing here allocates.
//!
//! Memory layout, from `mem` (aligned to [`IMDS_CACHE_STORAGE_ALIGN`]):
//!
//! ```text
//! [ SansIo header | slots: [Slot; n] | index: [u32; 2n] | links: [u32; b] | arena: [u8; 256 b] | endpoint text ]
//! ```
//!
//! Soundness: `imds_cache_init` zeroes the whole range before anything reads it, so every
//! region holds initialised values (all-zero is a valid `Slot`, `u32` and `u8`); the regions
//! are disjoint and each is reached only through its own [`Raw`] view, which makes a slice
//! from its raw pointer on each use, so no two live `&mut` overlap; the header is reached
//! only through `&SansIo`, whose mutable part is behind an `UnsafeCell` guarded by the `busy`
//! flag (one call at a time, others get `BUSY`). The caller promises not to touch, move or
//! free the memory until `imds_cache_deinit`, which wipes it.

use std::cell::UnsafeCell;
use std::ffi::c_void;
use std::mem::{align_of, size_of};
use std::ptr::NonNull;
use std::sync::atomic::{compiler_fence, AtomicBool, AtomicU64, Ordering};

use ::imds_cache::{
    BufferStorage, Done, Endpoint, Failure, FailureKind, Feed, Flavour, Identity, Key, Lookup,
    Method, RequestDescriptor, Resource, Slot, Stats, Ticket, TokenCache, Transport, BLOCK_SIZE,
    MAX_CODE_LEN, MAX_DESCRIPTION_LEN,
};

use super::config::{endpoint_of, imds_cache_config};
use super::handle::{from_cache_error, handle, imds_cache, resource_of, Handle, MAGIC_SANSIO};
use super::identity::{identity_of, imds_cache_identity};
use super::{bytes, bytes_mut, guard, imds_cache_result, non_null, put};
use crate::{ClientConfig, SourceSpec};

/// The alignment `imds_cache_init` needs for its memory (8: `malloc`, `aligned_alloc` and a
/// `uint64_t` array all provide it).
pub const IMDS_CACHE_STORAGE_ALIGN: usize = 8;
/// Longest error code kept in an outcome.
pub const IMDS_CACHE_MAX_ERROR_CODE_LEN: usize = 64;
/// Longest error description kept in an outcome (longer ones are cut: diagnostic text).
pub const IMDS_CACHE_MAX_ERROR_DESCRIPTION_LEN: usize = 512;

const _: () = {
    assert!(align_of::<SansIo>() <= IMDS_CACHE_STORAGE_ALIGN);
    assert!(align_of::<Slot>() <= IMDS_CACHE_STORAGE_ALIGN);
    assert!(IMDS_CACHE_MAX_ERROR_CODE_LEN == MAX_CODE_LEN);
    assert!(IMDS_CACHE_MAX_ERROR_DESCRIPTION_LEN == MAX_DESCRIPTION_LEN);
};

/// A view of `len` initialised `T`s at `ptr`, inside the handle's memory.
///
/// Invariant (established by `imds_cache_init`, the only place that makes one): `ptr` is
/// aligned and valid for reads and writes of `len` initialised `T`s until `imds_cache_deinit`,
/// and no other `Raw` or reference covers any of them. A slice is made from it only for the
/// duration of a borrow of the `Raw` itself, so slices from one `Raw` never overlap in time
/// with a mutable one.
struct Raw<T> {
    ptr: NonNull<T>,
    len: usize,
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

type RawStorage = BufferStorage<Raw<Slot>, Raw<u32>, Raw<u8>, Raw<u32>>;

/// The header at the start of a sans-IO handle's memory.
#[repr(C)]
pub(crate) struct SansIo {
    magic: AtomicU64,
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

impl SansIo {
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
        struct Release<'a>(&'a SansIo);
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
        // `now` 0: the core keeps its own (non-decreasing) clock, so a caller's fake clock is
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

/// Where each region goes.
struct Layout {
    slots: usize,
    n_slots: usize,
    index: usize,
    links: usize,
    n_blocks: usize,
    arena: usize,
    text: usize,
    text_len: usize,
    total: usize,
}

/// The endpoint parts a configuration names (IMDS when it names none).
fn endpoint_parts(c: &ClientConfig) -> (Flavour, &str, Option<&str>, Option<&str>) {
    match &c.source {
        SourceSpec::Explicit(e) => (
            e.flavour,
            &e.url,
            e.secret.as_deref(),
            e.default_client_id.as_deref(),
        ),
        SourceSpec::Auto => (Flavour::Imds, "", None, None),
    }
}

fn layout(c: &ClientConfig) -> Result<Layout, imds_cache_result> {
    let bad = imds_cache_result::InvalidConfig;
    let n_slots = c.capacity;
    let n_blocks = n_slots
        .checked_mul(c.bytes_per_entry)
        .ok_or(bad)?
        .div_ceil(BLOCK_SIZE);
    if n_slots == 0 || n_slots >= u32::MAX as usize || n_blocks == 0 {
        return Err(bad);
    }
    if n_blocks >= u32::MAX as usize {
        return Err(bad);
    }
    let (_, url, secret, client_id) = endpoint_parts(c);
    let text_len = url.len() + secret.map_or(0, str::len) + client_id.map_or(0, str::len);
    let up = |at: usize, align: usize| at.checked_next_multiple_of(align).ok_or(bad);
    let add = |at: usize, n: usize, size: usize| {
        n.checked_mul(size)
            .and_then(|b| at.checked_add(b))
            .ok_or(bad)
    };
    let slots = up(size_of::<SansIo>(), align_of::<Slot>())?;
    let index = up(add(slots, n_slots, size_of::<Slot>())?, align_of::<u32>())?;
    let links = add(index, 2 * n_slots, size_of::<u32>())?;
    let arena = add(links, n_blocks, size_of::<u32>())?;
    let text = add(arena, n_blocks, BLOCK_SIZE)?;
    let total = add(text, text_len, 1)?;
    if total > isize::MAX as usize {
        return Err(bad);
    }
    Ok(Layout {
        slots,
        n_slots,
        index,
        links,
        n_blocks,
        arena,
        text,
        text_len,
        total,
    })
}

/// The configuration behind `config`, or the defaults for NULL (neither allocates).
///
/// # Safety
/// `config` is NULL or a live configuration.
unsafe fn config_or_default(
    config: *const imds_cache_config,
    default: &ClientConfig,
) -> &ClientConfig {
    if config.is_null() {
        default
    } else {
        // SAFETY: a live configuration by contract.
        unsafe { &(*config).inner }
    }
}

/// Writes to `*out_size` how many bytes `imds_cache_init` needs for `config` (NULL means the
/// defaults: 4096 entries, about 10.8 MB). The memory must also be aligned to
/// `IMDS_CACHE_STORAGE_ALIGN`. An out-of-bounds size is `IMDS_CACHE_RESULT_INVALID_CONFIG`.
///
/// # Safety
/// `config` is NULL or a live configuration; `out_size` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_storage_size(
    config: *const imds_cache_config,
    out_size: *mut usize,
) -> imds_cache_result {
    guard(|| {
        let default = ClientConfig::default();
        // SAFETY: forwarded contract.
        let c = unsafe { config_or_default(config, &default) };
        let total = layout(c)?.total;
        // SAFETY: valid by contract.
        unsafe { put(out_size, total) }
    })
}

/// Makes a sans-IO handle inside `mem` (`len` bytes, at least `imds_cache_storage_size`,
/// aligned to `IMDS_CACHE_STORAGE_ALIGN`): a cache sized and tuned by `config` (NULL means the
/// defaults) for the endpoint it names (IMDS at 169.254.169.254 when it names none: this
/// handle reads no environment; see `imds_cache_config_set_endpoint_from_env`). Allocates
/// nothing, starts no thread, does no I/O: the caller's event loop does (lookup, request,
/// feed). `get_token`, `prefetch` and `atfork_child` answer `IMDS_CACHE_RESULT_UNSUPPORTED`.
///
/// On success `*out_cache` is the handle (the same address as `mem`). Until
/// `imds_cache_deinit(mem)` the memory belongs to the handle: do not read, write, move or free
/// it. Calls on the handle must not overlap (one event loop; an overlapping call gets
/// `IMDS_CACHE_RESULT_BUSY`). `config` is copied and may be freed at once. Calling this on
/// memory that holds a live handle resets it.
///
/// # Safety
/// `mem` is valid for reads and writes of `len` bytes until `imds_cache_deinit`; `config` is
/// NULL or a live configuration; `out_cache` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_init(
    mem: *mut c_void,
    len: usize,
    config: *const imds_cache_config,
    out_cache: *mut *mut imds_cache,
) -> imds_cache_result {
    guard(|| {
        non_null(mem)?;
        non_null(out_cache)?;
        if mem as usize % IMDS_CACHE_STORAGE_ALIGN != 0 {
            return Err(imds_cache_result::Misaligned);
        }
        let default = ClientConfig::default();
        // SAFETY: forwarded contract.
        let c = unsafe { config_or_default(config, &default) };
        c.cache
            .validate()
            .map_err(|_| imds_cache_result::InvalidConfig)?;
        let l = layout(c)?;
        if len < l.total {
            return Err(imds_cache_result::StorageTooSmall);
        }
        let (flavour, url, secret, client_id) = endpoint_parts(c);
        endpoint_of(flavour, url, secret, client_id)
            .map_err(|_| imds_cache_result::InvalidEndpoint)?;
        let base = mem.cast::<u8>();
        // SAFETY: `mem` is valid for `len >= l.total` bytes (contract); every offset below is
        // within `l.total` (computed by `layout` with checked arithmetic) and aligned for its
        // type (`mem` is aligned to 8 and each offset to its type's alignment). Zeroing first
        // makes every region initialised; the regions are disjoint.
        let cache = unsafe {
            std::ptr::write_bytes(base, 0, l.total);
            let mut at = base.add(l.text);
            for part in [Some(url), secret, client_id].into_iter().flatten() {
                std::ptr::copy_nonoverlapping(part.as_ptr(), at, part.len());
                at = at.add(part.len());
            }
            let raw = |offset: usize, len: usize| Raw {
                ptr: NonNull::new_unchecked(base.add(offset)),
                len,
            };
            let cast = |r: Raw<u8>| Raw {
                ptr: r.ptr.cast::<u32>(),
                len: r.len,
            };
            TokenCache::with_slices(
                c.cache.clone(),
                Raw {
                    ptr: NonNull::new_unchecked(base.add(l.slots).cast::<Slot>()),
                    len: l.n_slots,
                },
                cast(raw(l.index, 2 * l.n_slots)),
                raw(l.arena, l.n_blocks * BLOCK_SIZE),
                cast(raw(l.links, l.n_blocks)),
            )
            .map_err(|_| imds_cache_result::InvalidConfig)?
        };
        let header = SansIo {
            magic: AtomicU64::new(MAGIC_SANSIO),
            busy: AtomicBool::new(false),
            poisoned: AtomicBool::new(false),
            len: l.total,
            inner: UnsafeCell::new(Inner {
                cache,
                flavour,
                // SAFETY: within the zeroed range, after the arena.
                text: Raw {
                    ptr: unsafe { NonNull::new_unchecked(base.add(l.text)) },
                    len: l.text_len,
                },
                url_len: url.len(),
                secret_len: secret.map(str::len),
                client_id_len: client_id.map(str::len),
            }),
        };
        // SAFETY: the header region is `size_of::<SansIo>()` bytes at `mem`, aligned, and
        // nothing else refers to it.
        unsafe { mem.cast::<SansIo>().write(header) };
        // SAFETY: valid by contract.
        unsafe { put(out_cache, mem.cast::<imds_cache>()) }
    })
}

/// Ends the sans-IO handle in `mem` and wipes every byte it used (tokens included): the
/// memory is the caller's again. NULL is `IMDS_CACHE_RESULT_NULL_POINTER`; a full handle is
/// `IMDS_CACHE_RESULT_UNSUPPORTED` (use `imds_cache_free`); a call in progress on the handle
/// makes it `IMDS_CACHE_RESULT_BUSY`. Must not race other calls on the handle.
///
/// # Safety
/// `mem` is NULL or the memory of a live handle made by `imds_cache_init`.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_deinit(mem: *mut c_void) -> imds_cache_result {
    guard(|| {
        // SAFETY: forwarded contract.
        let s = match unsafe { handle(mem.cast::<imds_cache>())? } {
            Handle::SansIo(s) => s,
            Handle::Full(_) => return Err(imds_cache_result::Unsupported),
        };
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
            std::ptr::write_bytes(mem.cast::<u8>(), 0, total);
        }
        compiler_fence(Ordering::SeqCst);
        Ok(())
    })
}

/// The sans-IO handle behind `cache`, or `Unsupported` for a full one.
///
/// # Safety
/// As `handle`.
unsafe fn sansio<'a>(cache: *const imds_cache) -> Result<&'a SansIo, imds_cache_result> {
    // SAFETY: forwarded contract.
    match unsafe { handle(cache)? } {
        Handle::SansIo(s) => Ok(s),
        Handle::Full(_) => Err(imds_cache_result::Unsupported),
    }
}

/// What a lookup answered.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum imds_cache_lookup_kind {
    /// The token is in the buffer. If `has_ticket`, this caller is asked to refresh it in the
    /// background with `ticket` while using it.
    Hit = 1,
    /// No usable token: fetch one with `ticket` (`imds_cache_request`, then feed).
    Fetch = 2,
    /// Another caller is fetching and no valid token exists: ask again when it completes or
    /// at `retry_at_ms` at the latest.
    Pending = 3,
    /// The endpoint's request budget is spent until `retry_at_ms`.
    Throttled = 4,
    /// The last fetch failed (`failure`, `status`): no new one before `retry_at_ms`.
    Failed = 5,
}

/// Why a fetch failed (the core's `FailureKind`; the numbers are part of the ABI). 1–8 are
/// retried, 20–35 are terminal, 40 means no endpoint is here.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum imds_cache_failure {
    /// No failure.
    None = 0,
    /// 404 (IMDS updating): retried.
    NotFound = 1,
    /// 408: retried.
    RequestTimeout = 2,
    /// 429 throttled by the endpoint: retried.
    TooManyRequests = 3,
    /// 410 (IMDS being updated): retried every 10 s for at least 70 s.
    Gone = 4,
    /// A 5xx status: retried.
    ServerError = 5,
    /// Connecting timed out: retried.
    ConnectTimeout = 6,
    /// The connection was reset or timed out: retried.
    ConnectionLost = 7,
    /// The response was cut short: retried.
    Truncated = 8,
    /// 400: the identity or resource is not available here.
    BadRequest = 20,
    /// 401 without an Arc challenge.
    Unauthorized = 21,
    /// 403.
    Forbidden = 22,
    /// Service Fabric's 404: unknown identity.
    IdentityNotFound = 23,
    /// 405.
    MethodNotAllowed = 24,
    /// Another status that is not a token.
    UnexpectedStatus = 25,
    /// A 2xx whose body is not a token object.
    NotJson = 26,
    /// A 2xx without an access token.
    MissingToken = 27,
    /// The token or response is larger than the configured maximum.
    TokenTooLarge = 28,
    /// The echoed client id is not the one asked for.
    ClientIdMismatch = 29,
    /// The token expires too soon to be used.
    ExpiredOnArrival = 30,
    /// A time field of the body is malformed.
    BadExpiry = 31,
    /// `token_type` is not Bearer.
    NotBearer = 32,
    /// The HTTP response is malformed.
    MalformedResponse = 33,
    /// Arc's challenge or its key file is unusable.
    BadChallenge = 34,
    /// No room in the cache for the token.
    CacheFull = 35,
    /// No managed-identity endpoint is reachable here.
    Unavailable = 40,
    /// A failure this header does not know (a newer core).
    Other = 99,
}

impl imds_cache_failure {
    fn from_core(k: FailureKind) -> Self {
        use FailureKind as K;
        match k {
            K::NotFound => Self::NotFound,
            K::RequestTimeout => Self::RequestTimeout,
            K::TooManyRequests => Self::TooManyRequests,
            K::Gone => Self::Gone,
            K::ServerError => Self::ServerError,
            K::ConnectTimeout => Self::ConnectTimeout,
            K::ConnectionLost => Self::ConnectionLost,
            K::Truncated => Self::Truncated,
            K::BadRequest => Self::BadRequest,
            K::Unauthorized => Self::Unauthorized,
            K::Forbidden => Self::Forbidden,
            K::IdentityNotFound => Self::IdentityNotFound,
            K::MethodNotAllowed => Self::MethodNotAllowed,
            K::UnexpectedStatus => Self::UnexpectedStatus,
            K::NotJson => Self::NotJson,
            K::MissingToken => Self::MissingToken,
            K::TokenTooLarge => Self::TokenTooLarge,
            K::ClientIdMismatch => Self::ClientIdMismatch,
            K::ExpiredOnArrival => Self::ExpiredOnArrival,
            K::BadExpiry => Self::BadExpiry,
            K::NotBearer => Self::NotBearer,
            K::MalformedResponse => Self::MalformedResponse,
            K::BadChallenge => Self::BadChallenge,
            K::CacheFull => Self::CacheFull,
            K::Unavailable => Self::Unavailable,
            _ => Self::Other,
        }
    }

    /// The core's kind for a C caller's number (none for 0, 99 and unknown numbers).
    fn to_core(v: u32) -> Option<FailureKind> {
        use FailureKind as K;
        const ALL: [FailureKind; 25] = [
            K::NotFound,
            K::RequestTimeout,
            K::TooManyRequests,
            K::Gone,
            K::ServerError,
            K::ConnectTimeout,
            K::ConnectionLost,
            K::Truncated,
            K::BadRequest,
            K::Unauthorized,
            K::Forbidden,
            K::IdentityNotFound,
            K::MethodNotAllowed,
            K::UnexpectedStatus,
            K::NotJson,
            K::MissingToken,
            K::TokenTooLarge,
            K::ClientIdMismatch,
            K::ExpiredOnArrival,
            K::BadExpiry,
            K::NotBearer,
            K::MalformedResponse,
            K::BadChallenge,
            K::CacheFull,
            K::Unavailable,
        ];
        ALL.into_iter().find(|k| Self::from_core(*k) as u32 == v)
    }
}

/// The answer of `imds_cache_lookup`. Fields not named by `kind` are 0.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct imds_cache_lookup_answer {
    /// What the lookup answered.
    pub kind: imds_cache_lookup_kind,
    /// FETCH: the ticket to fetch with; HIT: the refresh ticket when `has_ticket`.
    pub ticket: u64,
    /// Whether `ticket` holds a ticket (always for FETCH).
    pub has_ticket: bool,
    /// HIT: the token's length (as `*out_written`).
    pub token_len: usize,
    /// HIT: the token's expiry, Unix epoch seconds.
    pub expires_on: u64,
    /// PENDING, THROTTLED, FAILED: when to ask again, epoch milliseconds.
    pub retry_at_ms: u64,
    /// FAILED: what failed.
    pub failure: imds_cache_failure,
    /// FAILED: the HTTP status, or 0 when no response was received.
    pub status: u16,
}

impl imds_cache_lookup_answer {
    fn new(kind: imds_cache_lookup_kind) -> Self {
        Self {
            kind,
            ticket: 0,
            has_ticket: false,
            token_len: 0,
            expires_on: 0,
            retry_at_ms: 0,
            failure: imds_cache_failure::None,
            status: 0,
        }
    }
}

/// The request method.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum imds_cache_method {
    /// GET (every flavour but Cloud Shell).
    Get = 0,
    /// POST with a form body (Cloud Shell).
    Post = 1,
}

/// Where to send the request bytes written by `imds_cache_request` or
/// `imds_cache_complete_challenge` (D6). The method, headers and any body are already in the
/// bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct imds_cache_request_info {
    /// The host to connect to (an IPv6 address without brackets), not NUL-terminated. Borrowed
    /// from the handle: valid until `imds_cache_deinit`.
    pub host: *const u8,
    /// Its length.
    pub host_len: usize,
    /// The TCP port.
    pub port: u16,
    /// Whether to speak TLS (Service Fabric): the caller's TLS, with its pinned certificate.
    pub tls: bool,
    /// The method written.
    pub method: imds_cache_method,
}

fn info(d: &RequestDescriptor<'_>) -> imds_cache_request_info {
    imds_cache_request_info {
        host: d.host.as_ptr(),
        host_len: d.host.len(),
        port: d.port,
        tls: d.tls,
        method: match d.method {
            Method::Post => imds_cache_method::Post,
            _ => imds_cache_method::Get,
        },
    }
}

/// How feeding a response ended.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum imds_cache_outcome_kind {
    /// The response is not complete: read more and feed every byte received so far again.
    NeedMore = 0,
    /// A token was stored: look up again to get it.
    Token = 1,
    /// A transient failure: a lookup after `retry_at_ms` hands out a new ticket.
    Retry = 2,
    /// A terminal failure (or `IMDS_CACHE_FAILURE_UNAVAILABLE`), remembered until
    /// `retry_at_ms`.
    Failed = 3,
    /// Arc's challenge: read the key file at `key_path` and pass its contents to
    /// `imds_cache_complete_challenge`. The ticket stays live.
    NeedKeyFile = 4,
}

/// The outcome of `imds_cache_feed`, `imds_cache_eof` and `imds_cache_fail`. Fields not named
/// by `kind` are 0.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct imds_cache_outcome {
    /// How it ended.
    pub kind: imds_cache_outcome_kind,
    /// TOKEN: the token's length.
    pub token_len: usize,
    /// TOKEN: its expiry, Unix epoch seconds.
    pub expires_on: u64,
    /// RETRY, FAILED: when a new fetch may start, epoch milliseconds.
    pub retry_at_ms: u64,
    /// RETRY, FAILED: what failed.
    pub failure: imds_cache_failure,
    /// RETRY, FAILED: the HTTP status, or 0.
    pub status: u16,
    /// NEED_KEY_FILE: the key file's path, not NUL-terminated, borrowed from the response
    /// bytes that were fed (valid while they are).
    pub key_path: *const u8,
    /// Its length.
    pub key_path_len: usize,
    /// RETRY, FAILED: the error body's code (`invalid_request`, ...), not NUL-terminated.
    pub error_code: [u8; IMDS_CACHE_MAX_ERROR_CODE_LEN],
    /// Its length.
    pub error_code_len: usize,
    /// RETRY, FAILED: the error body's description, cut at 512 bytes.
    pub error_description: [u8; IMDS_CACHE_MAX_ERROR_DESCRIPTION_LEN],
    /// Its length.
    pub error_description_len: usize,
}

impl imds_cache_outcome {
    fn new(kind: imds_cache_outcome_kind) -> Self {
        Self {
            kind,
            token_len: 0,
            expires_on: 0,
            retry_at_ms: 0,
            failure: imds_cache_failure::None,
            status: 0,
            key_path: std::ptr::null(),
            key_path_len: 0,
            error_code: [0; IMDS_CACHE_MAX_ERROR_CODE_LEN],
            error_code_len: 0,
            error_description: [0; IMDS_CACHE_MAX_ERROR_DESCRIPTION_LEN],
            error_description_len: 0,
        }
    }

    fn from_done(done: &Done<'_>) -> Self {
        use imds_cache_outcome_kind as O;
        match done {
            Done::Token { len, expires_on } => Self {
                token_len: *len,
                expires_on: expires_on / 1000,
                ..Self::new(O::Token)
            },
            Done::Retry {
                failure,
                retry_at,
                detail,
            }
            | Done::Failed {
                failure,
                retry_at,
                detail,
            } => {
                let kind = if matches!(done, Done::Retry { .. }) {
                    O::Retry
                } else {
                    O::Failed
                };
                let mut o = Self::failed(kind, failure, *retry_at);
                let code = detail.code.as_bytes();
                let description = detail.description.as_bytes();
                o.error_code[..code.len()].copy_from_slice(code);
                o.error_code_len = code.len();
                o.error_description[..description.len()].copy_from_slice(description);
                o.error_description_len = description.len();
                o
            }
            Done::NeedKeyFile { path } => Self {
                key_path: path.as_ptr(),
                key_path_len: path.len(),
                ..Self::new(O::NeedKeyFile)
            },
        }
    }

    fn failed(kind: imds_cache_outcome_kind, failure: &Failure, retry_at: u64) -> Self {
        Self {
            retry_at_ms: retry_at,
            failure: imds_cache_failure::from_core(failure.kind),
            status: failure.status,
            ..Self::new(kind)
        }
    }
}

/// How the caller's transport failed (for `imds_cache_fail`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum imds_cache_transport {
    /// The connection was refused.
    Refused = 1,
    /// No route to the endpoint.
    Unreachable = 2,
    /// Connecting took longer than the caller's connect timeout (1 s recommended).
    ConnectTimeout = 3,
    /// The connection was reset, or reading took longer than the caller's attempt deadline
    /// (10 s recommended).
    Reset = 4,
}

/// What `imds_cache_poll_refresh` answered.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct imds_cache_refresh {
    /// Whether an entry is due: refresh it with `ticket` (`imds_cache_request`, then feed).
    pub has_ticket: bool,
    /// The refresh ticket.
    pub ticket: u64,
    /// When nothing is due: when to call again, epoch milliseconds (0: nothing scheduled).
    pub next_ms: u64,
}

/// Looks up the token of `identity` and `(resource, resource_len)` at `now_ms` (D5), copying
/// a usable token into `out_buf`. Sans-IO handles only.
///
/// On success `*out_answer` says what to do (see `imds_cache_lookup_kind`), and on a HIT the
/// token is in `out_buf[0..*out_written]` (`*out_written` is 0 otherwise). A token longer than
/// `out_len` is `IMDS_CACHE_RESULT_BUFFER_TOO_SMALL` with `*out_written` set to its length.
/// `IMDS_CACHE_RESULT_CACHE_FULL` when a new entry cannot get a slot. The copy in `out_buf` is
/// the caller's to wipe (D13). O(1) on average; allocates nothing.
///
/// # Safety
/// `cache` is a live handle; `identity` a valid identity whose bytes are valid; `resource`
/// valid for `resource_len` bytes; `out_buf` valid for `out_len` bytes (or NULL when that is
/// 0); `out_written` and `out_answer` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_lookup(
    cache: *mut imds_cache,
    identity: *const imds_cache_identity,
    resource: *const u8,
    resource_len: usize,
    now_ms: u64,
    out_buf: *mut u8,
    out_len: usize,
    out_written: *mut usize,
    out_answer: *mut imds_cache_lookup_answer,
) -> imds_cache_result {
    guard(|| {
        // SAFETY: forwarded contract (for each call below).
        let s = unsafe { sansio(cache)? };
        non_null(out_written)?;
        non_null(out_answer)?;
        let identity = unsafe { identity_of(identity)? };
        let resource = unsafe { resource_of(resource, resource_len)? };
        let out = unsafe { bytes_mut(out_buf, out_len)? };
        let lookup = s.with(|inner| {
            let key = inner.key(identity, resource);
            inner
                .cache
                .lookup(&key, now_ms, out)
                .map_err(from_cache_error)
        })?;
        use imds_cache_lookup_kind as K;
        let (answer, written) = match lookup {
            Lookup::Hit {
                len,
                expires_on,
                refresh,
            } => (
                imds_cache_lookup_answer {
                    ticket: refresh.map_or(0, Ticket::to_bits),
                    has_ticket: refresh.is_some(),
                    token_len: len,
                    expires_on: expires_on / 1000,
                    ..imds_cache_lookup_answer::new(K::Hit)
                },
                len,
            ),
            Lookup::Fetch(t) => (
                imds_cache_lookup_answer {
                    ticket: t.to_bits(),
                    has_ticket: true,
                    ..imds_cache_lookup_answer::new(K::Fetch)
                },
                0,
            ),
            Lookup::Pending { retry_at } => (
                imds_cache_lookup_answer {
                    retry_at_ms: retry_at,
                    ..imds_cache_lookup_answer::new(K::Pending)
                },
                0,
            ),
            Lookup::Throttled { retry_at } => (
                imds_cache_lookup_answer {
                    retry_at_ms: retry_at,
                    ..imds_cache_lookup_answer::new(K::Throttled)
                },
                0,
            ),
            Lookup::Failed { error, retry_at } => (
                imds_cache_lookup_answer {
                    retry_at_ms: retry_at,
                    failure: imds_cache_failure::from_core(error.kind),
                    status: error.status,
                    ..imds_cache_lookup_answer::new(K::Failed)
                },
                0,
            ),
            Lookup::BufferTooSmall { needed } => {
                // SAFETY: checked not NULL; valid by contract.
                unsafe { out_written.write(needed) };
                return Err(imds_cache_result::BufferTooSmall);
            }
        };
        // SAFETY: checked not NULL; valid by contract.
        unsafe {
            out_written.write(written);
            out_answer.write(answer);
        }
        Ok(())
    })
}

/// Writes the request for `ticket` (from a FETCH, or a refresh ticket) into `out_buf` at
/// `now_ms` (D6): `out_buf[0..*out_written]` is the whole HTTP/1.1 request (request line,
/// headers with `Metadata: true` and any secret, body) and `*out_info` says where to send it.
/// 8 KiB always suffice; a short buffer is `IMDS_CACHE_RESULT_BUFFER_TOO_SMALL` with
/// `*out_written` set to the size needed. The request's start counts against the budget from
/// `now_ms`. A ticket that is not live is `IMDS_CACHE_RESULT_STALE_TICKET`. Sans-IO only.
///
/// # Safety
/// `cache` is a live handle; `out_buf` valid for `out_len` bytes (or NULL when that is 0);
/// `out_written` and `out_info` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_request(
    cache: *mut imds_cache,
    ticket: u64,
    now_ms: u64,
    out_buf: *mut u8,
    out_len: usize,
    out_written: *mut usize,
    out_info: *mut imds_cache_request_info,
) -> imds_cache_result {
    guard(|| {
        // SAFETY: forwarded contract (for each call below).
        let s = unsafe { sansio(cache)? };
        non_null(out_written)?;
        non_null(out_info)?;
        let out = unsafe { bytes_mut(out_buf, out_len)? };
        let ticket = Ticket::from_bits(ticket);
        let written = s.with(|inner| {
            let (cache, endpoint) = inner.parts()?;
            match cache.request_at(ticket, &endpoint, now_ms, out) {
                Ok(d) => Ok(Ok((d.len, info(&d)))),
                Err(::imds_cache::CacheError::Request(
                    ::imds_cache::RequestError::BufferTooSmall { needed },
                )) => Ok(Err(needed)),
                Err(e) => Err(from_cache_error(e)),
            }
        })?;
        // SAFETY: checked not NULL; valid by contract.
        unsafe {
            match written {
                Ok((len, i)) => {
                    out_written.write(len);
                    out_info.write(i);
                    Ok(())
                }
                Err(needed) => {
                    out_written.write(needed);
                    Err(imds_cache_result::BufferTooSmall)
                }
            }
        }
    })
}

/// Shared body of feed and eof.
///
/// # Safety
/// As `imds_cache_feed`.
unsafe fn receive(
    cache: *mut imds_cache,
    ticket: u64,
    bytes: *mut u8,
    bytes_len: usize,
    now_ms: u64,
    eof: bool,
    out_outcome: *mut imds_cache_outcome,
) -> imds_cache_result {
    guard(|| {
        // SAFETY: forwarded contract (for each call below).
        let s = unsafe { sansio(cache)? };
        non_null(out_outcome)?;
        let received = unsafe { bytes_mut(bytes, bytes_len)? };
        let ticket = Ticket::from_bits(ticket);
        let outcome = s.with(|inner| {
            let done = if eof {
                inner.cache.eof(ticket, received, now_ms)
            } else {
                match inner.cache.feed(ticket, received, now_ms) {
                    Ok(Feed::NeedMore) => {
                        return Ok(imds_cache_outcome::new(imds_cache_outcome_kind::NeedMore))
                    }
                    Ok(Feed::Done(d)) => Ok(d),
                    Err(e) => Err(e),
                }
            };
            done.map(|d| imds_cache_outcome::from_done(&d))
                .map_err(from_cache_error)
        })?;
        // SAFETY: checked not NULL; valid by contract.
        unsafe { put(out_outcome, outcome) }
    })
}

/// Feeds every byte of the response received so far for `ticket` (`bytes[0..bytes_len]`, from
/// the first byte on: the core re-parses from the start, so keep the bytes and append). Until
/// `*out_outcome` is `IMDS_CACHE_OUTCOME_KIND_NEED_MORE` read more and feed again; on any other
/// outcome the ticket is done (for NEED_KEY_FILE, waiting for the Arc key). Once the response
/// is complete its bytes may be rearranged in place (chunked bodies are joined). A response
/// larger than the configured token size plus 4 KiB fails the ticket (TOKEN_TOO_LARGE).
/// Sans-IO only; allocates nothing.
///
/// # Safety
/// `cache` is a live handle; `bytes` valid for reads and writes of `bytes_len` bytes (or NULL
/// when that is 0); `out_outcome` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_feed(
    cache: *mut imds_cache,
    ticket: u64,
    bytes: *mut u8,
    bytes_len: usize,
    now_ms: u64,
    out_outcome: *mut imds_cache_outcome,
) -> imds_cache_result {
    // SAFETY: forwarded contract.
    unsafe { receive(cache, ticket, bytes, bytes_len, now_ms, false, out_outcome) }
}

/// The peer closed the connection after `bytes[0..bytes_len]` (every byte received): a body
/// delimited by the close ends here; anything else incomplete is TRUNCATED (retried).
/// `*out_outcome` is never NEED_MORE. Sans-IO only.
///
/// # Safety
/// As `imds_cache_feed`.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_eof(
    cache: *mut imds_cache,
    ticket: u64,
    bytes: *mut u8,
    bytes_len: usize,
    now_ms: u64,
    out_outcome: *mut imds_cache_outcome,
) -> imds_cache_result {
    // SAFETY: forwarded contract.
    unsafe { receive(cache, ticket, bytes, bytes_len, now_ms, true, out_outcome) }
}

/// The transport failed for `ticket` (`transport`, a value of `imds_cache_transport`): the
/// ticket ends with a retry, or "unavailable" when the endpoint refused or was unreachable and
/// no token ever came from it (D7). Sans-IO only.
///
/// # Safety
/// `cache` is a live handle; `out_outcome` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_fail(
    cache: *mut imds_cache,
    ticket: u64,
    transport: u32,
    now_ms: u64,
    out_outcome: *mut imds_cache_outcome,
) -> imds_cache_result {
    guard(|| {
        // SAFETY: forwarded contract.
        let s = unsafe { sansio(cache)? };
        non_null(out_outcome)?;
        let transport = match transport {
            1 => Transport::Refused,
            2 => Transport::Unreachable,
            3 => Transport::ConnectTimeout,
            4 => Transport::Reset,
            _ => return Err(imds_cache_result::InvalidArgument),
        };
        let ticket = Ticket::from_bits(ticket);
        let outcome = s.with(|inner| {
            inner
                .cache
                .fail(ticket, transport, now_ms)
                .map(|d| imds_cache_outcome::from_done(&d))
                .map_err(from_cache_error)
        })?;
        // SAFETY: checked not NULL; valid by contract.
        unsafe { put(out_outcome, outcome) }
    })
}

/// Arc's second step: `(key, key_len)` is the contents of the key file named by the
/// NEED_KEY_FILE outcome (read it as a regular file of at most 4096 bytes); writes the second
/// request (with `Authorization: Basic <key>`) into `out_buf` as `imds_cache_request` does.
/// Send it and feed its response with the same ticket. It counts against the budget: when the
/// budget has no room yet the result is `IMDS_CACHE_RESULT_THROTTLED` (try again shortly). An
/// unusable key is `IMDS_CACHE_RESULT_INVALID_ARC_KEY` and fails the ticket; a ticket not
/// waiting for a key is `IMDS_CACHE_RESULT_NO_CHALLENGE`. Sans-IO only.
///
/// # Safety
/// `cache` is a live handle; `key` valid for `key_len` bytes; `out_buf` valid for `out_len`
/// bytes (or NULL when that is 0); `out_written` and `out_info` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_complete_challenge(
    cache: *mut imds_cache,
    ticket: u64,
    key: *const u8,
    key_len: usize,
    now_ms: u64,
    out_buf: *mut u8,
    out_len: usize,
    out_written: *mut usize,
    out_info: *mut imds_cache_request_info,
) -> imds_cache_result {
    guard(|| {
        // SAFETY: forwarded contract (for each call below).
        let s = unsafe { sansio(cache)? };
        non_null(out_written)?;
        non_null(out_info)?;
        let key = unsafe { bytes(key, key_len)? };
        let out = unsafe { bytes_mut(out_buf, out_len)? };
        let ticket = Ticket::from_bits(ticket);
        let written = s.with(|inner| {
            let (cache, endpoint) = inner.parts()?;
            match cache.complete_challenge(ticket, &endpoint, key, now_ms, out) {
                Ok(d) => Ok(Ok((d.len, info(&d)))),
                Err(::imds_cache::CacheError::Request(
                    ::imds_cache::RequestError::BufferTooSmall { needed },
                )) => Ok(Err(needed)),
                Err(e) => Err(from_cache_error(e)),
            }
        })?;
        // SAFETY: checked not NULL; valid by contract.
        unsafe {
            match written {
                Ok((len, i)) => {
                    out_written.write(len);
                    out_info.write(i);
                    Ok(())
                }
                Err(needed) => {
                    out_written.write(needed);
                    Err(imds_cache_result::BufferTooSmall)
                }
            }
        }
    })
}

/// Gives `ticket` back without an outcome (the request was abandoned): the next lookup of its
/// key may fetch at once. A ticket that is not live is `IMDS_CACHE_RESULT_STALE_TICKET`.
/// Sans-IO only.
///
/// # Safety
/// `cache` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_cancel(
    cache: *mut imds_cache,
    ticket: u64,
) -> imds_cache_result {
    guard(|| {
        // SAFETY: forwarded contract.
        let s = unsafe { sansio(cache)? };
        s.with(|inner| {
            inner
                .cache
                .cancel(Ticket::from_bits(ticket))
                .map_err(from_cache_error)
        })
    })
}

/// For an event loop's timer: hands out a refresh ticket for one entry due at `now_ms`, or
/// says when to call again (`*out_refresh`). Lapsed leases are released on the way.
/// O(capacity). Sans-IO only.
///
/// # Safety
/// `cache` is a live handle; `out_refresh` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_poll_refresh(
    cache: *mut imds_cache,
    now_ms: u64,
    out_refresh: *mut imds_cache_refresh,
) -> imds_cache_result {
    guard(|| {
        // SAFETY: forwarded contract.
        let s = unsafe { sansio(cache)? };
        non_null(out_refresh)?;
        let refresh = s.with(|inner| {
            Ok(match inner.cache.poll_refresh(now_ms) {
                Ok(t) => imds_cache_refresh {
                    has_ticket: true,
                    ticket: t.to_bits(),
                    next_ms: 0,
                },
                Err(next) => imds_cache_refresh {
                    has_ticket: false,
                    ticket: 0,
                    next_ms: next.unwrap_or(0),
                },
            })
        })?;
        // SAFETY: checked not NULL; valid by contract.
        unsafe { put(out_refresh, refresh) }
    })
}

/// Writes to `*out_ms` the earliest time something is due (a refresh, a retry of one, a lease
/// end), epoch milliseconds, or 0 when nothing is scheduled. O(capacity). Sans-IO only.
///
/// # Safety
/// `cache` is a live handle; `out_ms` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_next_deadline(
    cache: *mut imds_cache,
    out_ms: *mut u64,
) -> imds_cache_result {
    guard(|| {
        // SAFETY: forwarded contract.
        let s = unsafe { sansio(cache)? };
        non_null(out_ms)?;
        let next = s.with(|inner| Ok(inner.cache.next_deadline().unwrap_or(0)))?;
        // SAFETY: checked not NULL; valid by contract.
        unsafe { put(out_ms, next) }
    })
}

/// Writes the description of `failure` (a value of `imds_cache_failure`) into `buf`, as
/// `imds_cache_result_message` does. 0 and unknown values are
/// `IMDS_CACHE_RESULT_INVALID_ARGUMENT`.
///
/// # Safety
/// `buf` is valid for `len` bytes (or NULL when `len` is 0); `out_written` is valid for a
/// write.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_failure_message(
    failure: u32,
    buf: *mut u8,
    len: usize,
    out_written: *mut usize,
) -> imds_cache_result {
    guard(|| {
        let kind =
            imds_cache_failure::to_core(failure).ok_or(imds_cache_result::InvalidArgument)?;
        // SAFETY: forwarded contract.
        unsafe { super::write_bytes_out(kind.as_str().as_bytes(), buf, len, out_written) }
    })
}
