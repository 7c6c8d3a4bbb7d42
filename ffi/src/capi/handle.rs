//! The handle: `imds_cache_new` makes a full one (the std driver: sockets, clock, locks, a
//! refresher thread) and `imds_cache_init` a sans-IO one in caller memory. Both begin with a
//! magic number, so every call can tell them apart (and refuse the other kind's calls).

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ::imds_cache::{CacheError, Identity, OutcomeClass, RequestError, Resource, Stats};

use super::config::imds_cache_config;
use super::identity::{identity_of, imds_cache_identity, imds_cache_str};
use super::sansio::SansIo;
use super::{bytes, bytes_mut, guard, imds_cache_result, non_null, put, write_bytes_out};
use crate::{Client, ClientConfig, Error};

/// A token cache. Opaque. Either a full handle (`imds_cache_new`, freed with
/// `imds_cache_free`; thread-safe) or a sans-IO handle living in caller memory
/// (`imds_cache_init`, ended with `imds_cache_deinit`; one call at a time).
pub struct imds_cache {
    _opaque: [u8; 0],
}

/// First word of a full handle.
pub(crate) const MAGIC_FULL: u64 = u64::from_be_bytes(*b"imdsFULL");
/// First word of a sans-IO handle.
pub(crate) const MAGIC_SANSIO: u64 = u64::from_be_bytes(*b"imdsSANS");

/// A full handle: the magic, then the driver.
#[repr(C)]
pub(crate) struct Full {
    magic: AtomicU64,
    client: Client,
    /// The configured deadline of blocking calls.
    deadline: Duration,
}

/// What a handle pointer refers to.
pub(crate) enum Handle<'a> {
    Full(&'a Full),
    SansIo(&'a SansIo),
}

/// The handle behind `cache`, by its magic number.
///
/// # Safety
/// `cache` is NULL or a live handle (a best-effort check refuses other pointers that are
/// readable for 8 bytes).
pub(crate) unsafe fn handle<'a>(cache: *const imds_cache) -> Result<Handle<'a>, imds_cache_result> {
    non_null(cache)?;
    if cache as usize % std::mem::align_of::<AtomicU64>() != 0 {
        return Err(imds_cache_result::InvalidHandle);
    }
    // SAFETY: a live handle starts with an AtomicU64 (both kinds are repr(C) with it first).
    let magic = unsafe { &*(cache as *const AtomicU64) }.load(Ordering::Acquire);
    match magic {
        // SAFETY: the magic says which struct this is; it lives until free/deinit, which must
        // not race this call.
        MAGIC_FULL => Ok(Handle::Full(unsafe { &*(cache as *const Full) })),
        // SAFETY: as above.
        MAGIC_SANSIO => Ok(Handle::SansIo(unsafe { &*(cache as *const SansIo) })),
        _ => Err(imds_cache_result::InvalidHandle),
    }
}

/// The full handle's client, or `Unsupported` for a sans-IO handle.
///
/// # Safety
/// As [`handle`].
unsafe fn full<'a>(cache: *const imds_cache) -> Result<&'a Full, imds_cache_result> {
    // SAFETY: forwarded contract.
    match unsafe { handle(cache)? } {
        Handle::Full(f) => Ok(f),
        Handle::SansIo(_) => Err(imds_cache_result::Unsupported),
    }
}

/// The result code of a driver error.
pub(crate) fn from_error(e: Error) -> imds_cache_result {
    use imds_cache_result as R;
    match e {
        Error::Unavailable(_) => R::Unavailable,
        Error::Failed { failure, .. } => match failure.kind.class() {
            OutcomeClass::Unavailable => R::Unavailable,
            _ => R::Failed,
        },
        Error::Deadline { .. } => R::Deadline,
        Error::BufferTooSmall { .. } => R::BufferTooSmall,
        Error::CacheFull => R::CacheFull,
        Error::Identity(_) => R::InvalidIdentity,
        Error::Resource(_) => R::InvalidResource,
        Error::Endpoint(_) => R::InvalidEndpoint,
        Error::Request(r) => from_request_error(r),
        Error::Config(_) => R::InvalidConfig,
        Error::Unsupported(_) => R::Unsupported,
    }
}

pub(crate) fn from_request_error(e: RequestError) -> imds_cache_result {
    use imds_cache_result as R;
    match e {
        RequestError::BufferTooSmall { .. } => R::BufferTooSmall,
        RequestError::UnsupportedSelector => R::UnsupportedSelector,
        RequestError::MissingSecret => R::MissingSecret,
        RequestError::InvalidAuthorization => R::InvalidArcKey,
        RequestError::InvalidHeaderValue | RequestError::InvalidDefaultClientId => {
            R::InvalidEndpoint
        }
        _ => R::RequestFailed,
    }
}

pub(crate) fn from_cache_error(e: CacheError) -> imds_cache_result {
    use imds_cache_result as R;
    match e {
        CacheError::CacheFull => R::CacheFull,
        CacheError::StaleTicket => R::StaleTicket,
        CacheError::NoChallenge => R::NoChallenge,
        CacheError::Throttled { .. } => R::Throttled,
        CacheError::Request(r) => from_request_error(r),
        CacheError::ArcKey(_) => R::InvalidArcKey,
        _ => R::RequestFailed,
    }
}

/// A resource from `(ptr, len)`, validated.
///
/// # Safety
/// As [`bytes`].
pub(crate) unsafe fn resource_of<'a>(
    ptr: *const u8,
    len: usize,
) -> Result<Resource<'a>, imds_cache_result> {
    // SAFETY: forwarded contract.
    let b = unsafe { bytes(ptr, len)? };
    let s = std::str::from_utf8(b).map_err(|_| imds_cache_result::InvalidResource)?;
    Resource::new(s).map_err(|_| imds_cache_result::InvalidResource)
}

/// The cache's counters (the core's `Stats`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct imds_cache_stats {
    /// Lookups answered with a token.
    pub hits: u64,
    /// Lookups without a usable token.
    pub misses: u64,
    /// Tickets handed out (fetches and refreshes).
    pub fetches: u64,
    /// Lookups told to wait because another caller was fetching the same key.
    pub coalesced: u64,
    /// Refreshes handed out with a hit or by `imds_cache_poll_refresh`.
    pub refreshes: u64,
    /// Tokens stored.
    pub tokens: u64,
    /// Transient failures (retried).
    pub failures_retry: u64,
    /// Terminal failures.
    pub failures_terminal: u64,
    /// "Unavailable" outcomes.
    pub failures_unavailable: u64,
    /// Entries evicted to make room.
    pub evictions: u64,
    /// Lookups told the budget is spent, and refreshes skipped for it.
    pub throttled: u64,
    /// Completions refused because their ticket was no longer live.
    pub stale_tickets: u64,
    /// Tickets whose lease lapsed.
    pub lease_lapses: u64,
}

impl From<Stats> for imds_cache_stats {
    fn from(s: Stats) -> Self {
        Self {
            hits: s.hits,
            misses: s.misses,
            fetches: s.fetches,
            coalesced: s.coalesced,
            refreshes: s.refreshes,
            tokens: s.tokens,
            failures_retry: s.failures_retry,
            failures_terminal: s.failures_terminal,
            failures_unavailable: s.failures_unavailable,
            evictions: s.evictions,
            throttled: s.throttled,
            stale_tickets: s.stale_tickets,
            lease_lapses: s.lease_lapses,
        }
    }
}

/// What `imds_cache_prefetch` did.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct imds_cache_prefetch_report {
    /// Keys asked for (identities × resources).
    pub total: usize,
    /// Keys that have a token now.
    pub ok: usize,
    /// Keys that failed (or were not reached before the deadline).
    pub failed: usize,
    /// The result of the first key that failed (`IMDS_CACHE_RESULT_OK` when none did).
    pub first_error: imds_cache_result,
}

/// Makes a full handle: the blocking driver over a cache sized by `config` (NULL means the
/// defaults), with its endpoint from the configuration or detected from the environment
/// (D11). Starts the background refresher unless the configuration turned it off, and
/// registers `pthread_atfork` handlers (D12).
///
/// On success `*out_cache` owns the handle: free it with `imds_cache_free`. The configuration
/// is copied and may be freed at once. The handle is thread-safe: any number of threads may
/// call it at once (except `imds_cache_free`). Fails with `IMDS_CACHE_RESULT_UNAVAILABLE` in
/// an AKS workload-identity environment, `IMDS_CACHE_RESULT_INVALID_ENDPOINT` when the
/// environment's endpoint is incomplete, `IMDS_CACHE_RESULT_UNSUPPORTED` for an HTTPS
/// endpoint (Service Fabric: use the sans-IO handle with your own TLS).
///
/// # Safety
/// `config` is NULL or a live configuration; `out_cache` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_new(
    config: *const imds_cache_config,
    out_cache: *mut *mut imds_cache,
) -> imds_cache_result {
    guard(|| {
        non_null(out_cache)?;
        let config = if config.is_null() {
            ClientConfig::default()
        } else {
            // SAFETY: not NULL; a live configuration by contract.
            unsafe { &*config }.inner.clone()
        };
        if let crate::SourceSpec::Explicit(e) = &config.source {
            e.endpoint().map_err(from_error)?;
        }
        let deadline = config.deadline;
        let client = Client::with_config(config).map_err(from_error)?;
        let full = Box::new(Full {
            magic: AtomicU64::new(MAGIC_FULL),
            client,
            deadline,
        });
        // SAFETY: checked not NULL; valid by contract.
        unsafe { put(out_cache, Box::into_raw(full).cast::<imds_cache>()) }
    })
}

/// Frees a full handle: stops and joins its refresher, wipes its tokens. NULL does nothing; a
/// sans-IO handle is left alone (end it with `imds_cache_deinit`). Must not race any other
/// call on the same handle; the handle is invalid afterwards.
///
/// # Safety
/// `cache` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_free(cache: *mut imds_cache) {
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: forwarded contract.
        if let Ok(Handle::Full(_)) = unsafe { handle(cache) } {
            let full = cache.cast::<Full>();
            // SAFETY: a full handle, made by Box::into_raw in imds_cache_new; freed once.
            unsafe {
                (*full).magic.store(0, Ordering::Release);
                drop(Box::from_raw(full));
            }
        }
    });
}

/// Gets the token for `identity` and the resource `(resource, resource_len)` (e.g.
/// `https://management.azure.com`, compared byte for byte), blocking: a cached token at once,
/// else a fetch within the budget with retries (D7), single-flight with other callers of the
/// same key, until the configured deadline. Full handles only (a sans-IO handle answers
/// `IMDS_CACHE_RESULT_UNSUPPORTED`).
///
/// On success the token (not NUL-terminated) is in `out_buf[0..*out_written]` and its expiry
/// (Unix epoch seconds) in `*out_expires_on` (which may be NULL). If the token is longer than
/// `out_len`, `*out_written` is set to its length and the result is
/// `IMDS_CACHE_RESULT_BUFFER_TOO_SMALL`; `(NULL, 0)` asks for the length (after fetching the
/// token if needed). The copy in `out_buf` is the caller's to wipe (D13). A hit allocates
/// nothing and does no I/O. After a failure, `imds_cache_last_error` gives its text (with the
/// endpoint's own error, if it sent one).
///
/// # Safety
/// `cache` is a live handle; `identity` a valid identity whose bytes are valid; `resource`
/// valid for `resource_len` bytes; `out_buf` valid for `out_len` bytes (or NULL when that is
/// 0); `out_written` valid for a write; `out_expires_on` NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_get_token(
    cache: *const imds_cache,
    identity: *const imds_cache_identity,
    resource: *const u8,
    resource_len: usize,
    out_buf: *mut u8,
    out_len: usize,
    out_written: *mut usize,
    out_expires_on: *mut u64,
) -> imds_cache_result {
    let mut told = false;
    let result = guard(|| {
        // SAFETY: forwarded contract (for each call below).
        let client = &unsafe { full(cache)? }.client;
        non_null(out_written)?;
        let identity = unsafe { identity_of(identity)? };
        let resource = unsafe { resource_of(resource, resource_len)? };
        let out = unsafe { bytes_mut(out_buf, out_len)? };
        let got = client.get_token_into(&identity, &resource, out);
        if let Err(e) = &got {
            remember(format_args!("{e}"));
            told = true;
        }
        match got {
            Ok((len, expires_on)) => {
                // SAFETY: checked not NULL / NULL allowed; valid by contract.
                unsafe {
                    out_written.write(len);
                    if !out_expires_on.is_null() {
                        out_expires_on.write(expires_on);
                    }
                }
                Ok(())
            }
            Err(Error::BufferTooSmall { needed }) => {
                // SAFETY: checked not NULL.
                unsafe { out_written.write(needed) };
                Err(imds_cache_result::BufferTooSmall)
            }
            Err(e) => Err(from_error(e)),
        }
    });
    if result != imds_cache_result::Ok && !told {
        remember(format_args!("{}", result.message()));
    }
    result
}

thread_local! {
    /// The text of the last failed `imds_cache_get_token` on this thread (never a token).
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

fn remember(text: fmt::Arguments<'_>) {
    LAST_ERROR.with(|last| {
        let mut last = last.borrow_mut();
        last.clear();
        let _ = last.write_fmt(text);
    });
}

/// Writes the text of the last `imds_cache_get_token` that failed on the calling thread: the
/// driver's error, with the endpoint's own error code and description when it sent them
/// (e.g. `endpoint answered 400 (…) (HTTP 400): invalid_request Identity not found`), never a
/// token. A successful call leaves it as it was; no failure yet on this thread is 0 bytes.
/// The text is UTF-8, not NUL-terminated; `(NULL, 0)` asks for the length
/// (`IMDS_CACHE_RESULT_BUFFER_TOO_SMALL`, with `*out_written` set).
///
/// # Safety
/// `buf` is valid for `len` bytes (or NULL when `len` is 0); `out_written` is valid for a
/// write.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_last_error(
    buf: *mut u8,
    len: usize,
    out_written: *mut usize,
) -> imds_cache_result {
    guard(|| {
        LAST_ERROR.with(|last| {
            // SAFETY: forwarded contract.
            unsafe { write_bytes_out(last.borrow().as_bytes(), buf, len, out_written) }
        })
    })
}

/// Warms the cache with every (identity, resource) pair, up to the budget's `in_flight` fetches
/// at once, blocking until all are done or `timeout_ms` has passed (0 means the configured
/// deadline). Full handles only. The result is `IMDS_CACHE_RESULT_OK` when the call ran, even
/// if some keys failed: `*out_report` says how many, and the first failure's result. A
/// malformed identity or resource fails the call before anything is fetched.
///
/// # Safety
/// `cache` is a live handle; `identities` is valid for `n_identities` entries and `resources`
/// for `n_resources` (each may be NULL when its count is 0), with their bytes valid;
/// `out_report` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_prefetch(
    cache: *const imds_cache,
    identities: *const imds_cache_identity,
    n_identities: usize,
    resources: *const imds_cache_str,
    n_resources: usize,
    timeout_ms: u64,
    out_report: *mut imds_cache_prefetch_report,
) -> imds_cache_result {
    guard(|| {
        // SAFETY: forwarded contract (for each call below).
        let full = unsafe { full(cache)? };
        non_null(out_report)?;
        let ids: Vec<Identity<'_>> = (0..n_identities)
            .map(|i| {
                non_null(identities)?;
                unsafe { identity_of(identities.add(i)) }
            })
            .collect::<Result<_, _>>()?;
        let res: Vec<Resource<'_>> = (0..n_resources)
            .map(|i| {
                non_null(resources)?;
                let s = unsafe { resources.add(i).read() };
                unsafe { resource_of(s.ptr, s.len) }
            })
            .collect::<Result<_, _>>()?;
        let deadline = if timeout_ms == 0 {
            Instant::now() + full.deadline
        } else {
            Instant::now() + Duration::from_millis(timeout_ms)
        };
        let (progress, errors) = prefetch_off_thread(&full.client, &ids, &res, deadline);
        let first_error = errors
            .into_iter()
            .min_by_key(|(i, _)| *i)
            .map_or(imds_cache_result::Ok, |(_, e)| from_error(e));
        let report = imds_cache_prefetch_report {
            total: progress.total,
            ok: progress.ok,
            failed: progress.total - progress.ok,
            first_error,
        };
        // SAFETY: checked not NULL; valid by contract.
        unsafe { put(out_report, report) }
    })
}

/// Drops the cached token of `identity` and `(resource, resource_len)` (after a downstream 401
/// or a claims challenge; its bytes are wiped): the next call fetches a new one. Works on both
/// kinds of handle. `*out_dropped` (which may be NULL) tells whether a token was dropped.
///
/// # Safety
/// `cache` is a live handle; `identity` a valid identity whose bytes are valid; `resource`
/// valid for `resource_len` bytes; `out_dropped` NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_invalidate(
    cache: *const imds_cache,
    identity: *const imds_cache_identity,
    resource: *const u8,
    resource_len: usize,
    out_dropped: *mut bool,
) -> imds_cache_result {
    guard(|| {
        // SAFETY: forwarded contract (for each call below).
        let handle = unsafe { handle(cache)? };
        let identity = unsafe { identity_of(identity)? };
        let resource = unsafe { resource_of(resource, resource_len)? };
        let dropped = match handle {
            Handle::Full(f) => f.client.invalidate(&identity, &resource),
            Handle::SansIo(s) => s.invalidate(&identity, &resource)?,
        };
        if !out_dropped.is_null() {
            // SAFETY: not NULL; valid by contract.
            unsafe { out_dropped.write(dropped) };
        }
        Ok(())
    })
}

/// Writes the cache's counters to `*out_stats`. Works on both kinds of handle.
///
/// # Safety
/// `cache` is a live handle; `out_stats` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_get_stats(
    cache: *const imds_cache,
    out_stats: *mut imds_cache_stats,
) -> imds_cache_result {
    guard(|| {
        // SAFETY: forwarded contract.
        let stats = match unsafe { handle(cache)? } {
            Handle::Full(f) => f.client.stats(),
            Handle::SansIo(s) => s.stats()?,
        };
        non_null(out_stats)?;
        // SAFETY: checked not NULL; valid by contract.
        unsafe { put(out_stats, stats.into()) }
    })
}

/// Writes the endpoint flavour the handle gets tokens from (a value of `imds_cache_flavour`)
/// to `*out_flavour`. Works on both kinds of handle.
///
/// # Safety
/// `cache` is a live handle; `out_flavour` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_flavour_of(
    cache: *const imds_cache,
    out_flavour: *mut u32,
) -> imds_cache_result {
    guard(|| {
        // SAFETY: forwarded contract.
        let flavour = match unsafe { handle(cache)? } {
            Handle::Full(f) => f.client.flavour(),
            Handle::SansIo(s) => s.flavour()?,
        };
        // SAFETY: valid by contract.
        unsafe {
            put(
                out_flavour,
                super::imds_cache_flavour::from_core(flavour) as u32,
            )
        }
    })
}

/// D12: call in the child after `fork()` (the library also registers a `pthread_atfork`
/// handler that does this; calling it again is harmless). The child keeps the tokens, drops
/// the fetches of threads that do not exist in it, and restarts its refresher on the next
/// miss. Full handles only; a sans-IO handle answers `IMDS_CACHE_RESULT_UNSUPPORTED` (it has
/// no threads: cancel the tickets your event loop held instead).
///
/// # Safety
/// `cache` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_atfork_child(cache: *const imds_cache) -> imds_cache_result {
    guard(|| {
        // SAFETY: forwarded contract.
        unsafe { full(cache)? }.client.atfork_child();
        Ok(())
    })
}

/// `Client::prefetch` run on a helper thread, joined before returning. `prefetch` uses
/// `std::thread::scope`, which gives the calling thread a std thread handle that lives until
/// that thread's TLS is torn down; on a C caller's main thread that is never, and valgrind
/// reports it as "possibly lost". A helper thread's handle is freed when it ends.
fn prefetch_off_thread(
    client: &Client,
    ids: &[Identity<'_>],
    res: &[Resource<'_>],
    deadline: Instant,
) -> (crate::Progress, Vec<(usize, Error)>) {
    type Out = (crate::Progress, Vec<(usize, Error)>);
    struct Job<'a> {
        client: &'a Client,
        ids: &'a [Identity<'a>],
        res: &'a [Resource<'a>],
        deadline: Instant,
    }
    /// The job's address, sent to the helper.
    struct SendPtr(*const Job<'static>);
    // SAFETY: the pointee is only read, by the helper, while this function waits for it.
    unsafe impl Send for SendPtr {}
    let job = Job {
        client,
        ids,
        res,
        deadline,
    };
    let ptr = SendPtr((&job as *const Job<'_>).cast::<Job<'static>>());
    let run = move || -> Out {
        let ptr = ptr;
        // SAFETY: `job` outlives the helper: the spawning thread joins it before `job` goes
        // out of scope, whatever the helper does (a panic is caught by `join`).
        let job = unsafe { &*ptr.0 };
        job.client.prefetch(job.ids, job.res, job.deadline, |_| {})
    };
    match std::thread::Builder::new()
        .name("imds-cache-prefetch".into())
        .spawn(run)
    {
        Ok(handle) => match handle.join() {
            Ok(out) => out,
            Err(panic) => std::panic::resume_unwind(panic),
        },
        // No thread to be had: run here.
        Err(_) => client.prefetch(ids, res, deadline, |_| {}),
    }
}
