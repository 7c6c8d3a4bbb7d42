//! The blocking handle `imds_cache`: the driver (`imds_cache_client::Client`: sockets, the
//! wall clock, locks, a refresher thread, a worker pool) behind `imds_cache_new` and
//! `imds_cache_free`.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use ::imds_cache::{Identity, Resource};
use imds_cache_client::{Client, Error};

use crate::config::imds_cache_config;
use crate::identity::{identity_of, imds_cache_identity, imds_cache_str, resource_of};
use crate::result::from_error;
use crate::settings::Settings;
use crate::stats::imds_cache_stats;
use crate::{bytes_mut, guard, imds_cache_result, non_null, put, write_bytes_out};

/// The blocking token cache. Opaque; made by `imds_cache_new`, freed by `imds_cache_free`.
/// Thread-safe: any number of threads may call it at once (except `imds_cache_free`).
pub struct imds_cache {
    client: Client,
    /// The configured deadline of blocking calls.
    deadline: Duration,
}

/// The handle behind `cache`.
///
/// # Safety
/// `cache` is NULL or a live handle from `imds_cache_new`.
unsafe fn handle<'a>(cache: *const imds_cache) -> Result<&'a imds_cache, imds_cache_result> {
    non_null(cache)?;
    // SAFETY: not NULL; a live handle by contract, shared (its methods take `&self`).
    Ok(unsafe { &*cache })
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

/// Makes a blocking handle: the driver over a cache sized by `config` (NULL means the
/// defaults), with its endpoint from the configuration or detected from the environment
/// (D11). Starts the background refresher unless the configuration turned it off, and
/// registers `pthread_atfork` handlers (D12).
///
/// On success `*out_cache` owns the handle: free it with `imds_cache_free`. The configuration
/// is copied and may be freed at once. The handle is thread-safe: any number of threads may
/// call it at once (except `imds_cache_free`). Fails with `IMDS_CACHE_RESULT_UNAVAILABLE` in
/// an AKS workload-identity environment, `IMDS_CACHE_RESULT_INVALID_ENDPOINT` when the
/// environment's endpoint is incomplete, `IMDS_CACHE_RESULT_UNSUPPORTED` for an explicit
/// HTTPS endpoint (the configuration cannot pin its certificate: use `imds_cache_sansio` with
/// your own TLS). Service Fabric found in the environment is spoken to over TLS, accepting
/// only the certificate `IDENTITY_SERVER_THUMBPRINT` names.
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
        let settings = if config.is_null() {
            Settings::default()
        } else {
            // SAFETY: not NULL; a live configuration by contract.
            unsafe { &*config }.inner.clone()
        };
        let config = settings.client_config();
        if let imds_cache_client::SourceSpec::Explicit(e) = &config.source {
            // The C configuration has no setter for a certificate's thumbprint, and this
            // library never validates a certificate chain: an explicit HTTPS endpoint is the
            // sans-IO handle's, with the caller's TLS.
            if e.endpoint().map_err(from_error)?.tls {
                return Err(imds_cache_result::Unsupported);
            }
        }
        let client = Client::with_config(config).map_err(from_error)?;
        let handle = Box::new(imds_cache {
            client,
            deadline: settings.deadline,
        });
        // SAFETY: checked not NULL; valid by contract.
        unsafe { put(out_cache, Box::into_raw(handle)) }
    })
}

/// Frees a blocking handle: stops and joins its refresher, wipes its tokens. NULL does
/// nothing. Must not race any other call on the same handle; the handle is invalid
/// afterwards.
///
/// # Safety
/// `cache` is NULL or a live handle from `imds_cache_new`, not freed yet.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_free(cache: *mut imds_cache) {
    let _ = std::panic::catch_unwind(AssertUnwindSafe(|| {
        if !cache.is_null() {
            // SAFETY: made by Box::into_raw in imds_cache_new; freed once (contract).
            drop(unsafe { Box::from_raw(cache) });
        }
    }));
}

/// Gets the token for `identity` and the resource `(resource, resource_len)` (e.g.
/// `https://management.azure.com`, compared byte for byte), blocking: a cached token at once,
/// else a fetch within the budget with retries (D7), single-flight with other callers of the
/// same key, until the configured deadline.
///
/// On success the token (not NUL-terminated) is in `out_buf[0..*out_written]` and its expiry
/// (Unix epoch seconds) in `*out_expires_on_s` (which may be NULL). If the token is longer than
/// `out_len`, `*out_written` is set to its length and the result is
/// `IMDS_CACHE_RESULT_BUFFER_TOO_SMALL`; `(NULL, 0)` asks for the length (after fetching the
/// token if needed). The copy in `out_buf` is the caller's to wipe (D13). A hit allocates
/// nothing and does no I/O. After a failure, `imds_cache_last_error` gives its text (with the
/// endpoint's own error, if it sent one).
///
/// # Safety
/// `cache` is a live handle; `identity` a valid identity whose bytes are valid; `resource`
/// valid for `resource_len` bytes; `out_buf` valid for `out_len` bytes (or NULL when that is
/// 0); `out_written` valid for a write; `out_expires_on_s` NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_get_token(
    cache: *const imds_cache,
    identity: *const imds_cache_identity,
    resource: *const u8,
    resource_len: usize,
    out_buf: *mut u8,
    out_len: usize,
    out_written: *mut usize,
    out_expires_on_s: *mut u64,
) -> imds_cache_result {
    let mut told = false;
    let result = guard(|| {
        // SAFETY: forwarded contract (for each call below).
        let client = &unsafe { handle(cache)? }.client;
        non_null(out_written)?;
        let identity = unsafe { identity_of(identity)? };
        let resource = unsafe { resource_of(resource, resource_len)? };
        let out = unsafe { bytes_mut(out_buf, out_len)? };
        let got = client.get_token_into(&identity, &resource, out);
        if let Err(e) = &got {
            remember(format_args!("{}", client.explain(e, &identity)));
            told = true;
        }
        match got {
            Ok((len, expires_on_s)) => {
                // SAFETY: checked not NULL / NULL allowed; valid by contract.
                unsafe {
                    out_written.write(len);
                    if !out_expires_on_s.is_null() {
                        out_expires_on_s.write(expires_on_s);
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
/// driver's error, with the endpoint's own error code and description when it sent them, the
/// identity and the endpoint's URL (e.g. `HTTP 400 bad request (…): invalid_request Identity
/// not found (identity client_id=…, endpoint http://169.254.169.254:80/metadata/identity/oauth2/token)`),
/// never a token or a secret. A successful call leaves it as it was; no failure yet on this thread is 0 bytes.
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
/// deadline), on the handle's worker pool. The result is `IMDS_CACHE_RESULT_OK` when the call ran, even
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
        let full = unsafe { handle(cache)? };
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
        let (progress, errors) = full.client.prefetch(&ids, &res, deadline, |_| {});
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
/// or a claims challenge; its bytes are wiped): the next call fetches a new one.
/// `*out_dropped` (which may be NULL) tells whether a token was dropped.
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
        let client = &unsafe { handle(cache)? }.client;
        let identity = unsafe { identity_of(identity)? };
        let resource = unsafe { resource_of(resource, resource_len)? };
        let dropped = client.invalidate(&identity, &resource);
        if !out_dropped.is_null() {
            // SAFETY: not NULL; valid by contract.
            unsafe { out_dropped.write(dropped) };
        }
        Ok(())
    })
}

/// Writes the cache's counters to `*out_stats`.
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
        let stats = unsafe { handle(cache)? }.client.stats();
        non_null(out_stats)?;
        // SAFETY: checked not NULL; valid by contract.
        unsafe { put(out_stats, stats.into()) }
    })
}

/// Writes the endpoint flavour the handle gets tokens from (a value of `imds_cache_flavour`)
/// to `*out_flavour`.
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
        let flavour = unsafe { handle(cache)? }.client.flavour();
        // SAFETY: valid by contract.
        unsafe {
            put(
                out_flavour,
                crate::imds_cache_flavour::from_core(flavour) as u32,
            )
        }
    })
}

/// D12: call in the child after `fork()` (the library also registers a `pthread_atfork`
/// handler that does this; calling it again is harmless). The child keeps the tokens, drops
/// the fetches of threads that do not exist in it, and restarts its refresher on the next
/// miss. (A sans-IO handle has no threads and needs no such call: cancel the tickets your
/// event loop held instead.)
///
/// # Safety
/// `cache` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_atfork_child(cache: *const imds_cache) -> imds_cache_result {
    guard(|| {
        // SAFETY: forwarded contract.
        unsafe { handle(cache)? }.client.atfork_child();
        Ok(())
    })
}
