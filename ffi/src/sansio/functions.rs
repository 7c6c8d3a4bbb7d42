//! The sans-IO calls (D5, D6): lookup, the request for a ticket, feeding its response (or
//! its transport's failure), Arc's challenge, cancelling, the refresh timer, and the
//! handle's counters. Each runs one at a time on the handle and allocates nothing.

use ::imds_cache::{CacheError, Feed, Lookup, RequestError, Ticket, Transport};

use super::types::info;
use super::{
    imds_cache_failure, imds_cache_lookup_answer, imds_cache_lookup_kind, imds_cache_outcome,
    imds_cache_outcome_kind, imds_cache_refresh, imds_cache_request_info,
};
use super::{imds_cache_sansio, sansio};
use crate::identity::{identity_of, imds_cache_identity, resource_of};
use crate::result::from_cache_error;
use crate::stats::imds_cache_stats;
use crate::{bytes, bytes_mut, guard, imds_cache_result, non_null, put, write_bytes_out};

/// Looks up the token of `identity` and `(resource, resource_len)` at `now_ms` (D5), copying
/// a usable token into `out_buf`.
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
pub unsafe extern "C" fn imds_cache_sansio_lookup(
    cache: *mut imds_cache_sansio,
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
                expires_on_ms,
                refresh,
            } => (
                imds_cache_lookup_answer {
                    ticket: refresh.map_or(0, Ticket::to_bits),
                    has_ticket: refresh.is_some(),
                    token_len: len,
                    expires_on_s: expires_on_ms / 1000,
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
            Lookup::Pending { retry_at_ms } => (
                imds_cache_lookup_answer {
                    retry_at_ms,
                    ..imds_cache_lookup_answer::new(K::Pending)
                },
                0,
            ),
            Lookup::Throttled { retry_at_ms } => (
                imds_cache_lookup_answer {
                    retry_at_ms,
                    ..imds_cache_lookup_answer::new(K::Throttled)
                },
                0,
            ),
            Lookup::Failed { error, retry_at_ms } => (
                imds_cache_lookup_answer {
                    retry_at_ms,
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
/// `now_ms`. A ticket that is not live is `IMDS_CACHE_RESULT_STALE_TICKET`.
///
/// # Safety
/// `cache` is a live handle; `out_buf` valid for `out_len` bytes (or NULL when that is 0);
/// `out_written` and `out_info` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_sansio_request(
    cache: *mut imds_cache_sansio,
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
                Err(CacheError::Request(RequestError::BufferTooSmall { needed })) => {
                    Ok(Err(needed))
                }
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
/// As `imds_cache_sansio_feed`.
unsafe fn receive(
    cache: *mut imds_cache_sansio,
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
///  allocates nothing.
///
/// # Safety
/// `cache` is a live handle; `bytes` valid for reads and writes of `bytes_len` bytes (or NULL
/// when that is 0); `out_outcome` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_sansio_feed(
    cache: *mut imds_cache_sansio,
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
/// `*out_outcome` is never NEED_MORE.
///
/// # Safety
/// As `imds_cache_sansio_feed`.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_sansio_eof(
    cache: *mut imds_cache_sansio,
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
/// no token ever came from it (D7).
///
/// # Safety
/// `cache` is a live handle; `out_outcome` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_sansio_fail(
    cache: *mut imds_cache_sansio,
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
/// request (with `Authorization: Basic <key>`) into `out_buf` as `imds_cache_sansio_request` does.
/// Send it and feed its response with the same ticket. It counts against the budget: when the
/// budget has no room yet the result is `IMDS_CACHE_RESULT_THROTTLED` (try again shortly). An
/// unusable key is `IMDS_CACHE_RESULT_INVALID_ARC_KEY` and fails the ticket; a ticket not
/// waiting for a key is `IMDS_CACHE_RESULT_NO_CHALLENGE`.
///
/// # Safety
/// `cache` is a live handle; `key` valid for `key_len` bytes; `out_buf` valid for `out_len`
/// bytes (or NULL when that is 0); `out_written` and `out_info` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_sansio_complete_challenge(
    cache: *mut imds_cache_sansio,
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
                Err(CacheError::Request(RequestError::BufferTooSmall { needed })) => {
                    Ok(Err(needed))
                }
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
///
///
/// # Safety
/// `cache` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_sansio_cancel(
    cache: *mut imds_cache_sansio,
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
/// O(capacity).
///
/// # Safety
/// `cache` is a live handle; `out_refresh` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_sansio_poll_refresh(
    cache: *mut imds_cache_sansio,
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
/// end), epoch milliseconds, or 0 when nothing is scheduled. O(capacity).
///
/// # Safety
/// `cache` is a live handle; `out_ms` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_sansio_next_deadline(
    cache: *mut imds_cache_sansio,
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
        unsafe { write_bytes_out(kind.as_str().as_bytes(), buf, len, out_written) }
    })
}

/// Drops the cached token of `identity` and `(resource, resource_len)` (after a downstream 401
/// or a claims challenge; its bytes are wiped): the next lookup fetches a new one.
/// `*out_dropped` (which may be NULL) tells whether a token was dropped.
///
/// # Safety
/// `cache` is a live handle; `identity` a valid identity whose bytes are valid; `resource`
/// valid for `resource_len` bytes; `out_dropped` NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_sansio_invalidate(
    cache: *mut imds_cache_sansio,
    identity: *const imds_cache_identity,
    resource: *const u8,
    resource_len: usize,
    out_dropped: *mut bool,
) -> imds_cache_result {
    guard(|| {
        // SAFETY: forwarded contract (for each call below).
        let s = unsafe { sansio(cache)? };
        let identity = unsafe { identity_of(identity)? };
        let resource = unsafe { resource_of(resource, resource_len)? };
        let dropped = s.invalidate(&identity, &resource)?;
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
pub unsafe extern "C" fn imds_cache_sansio_get_stats(
    cache: *mut imds_cache_sansio,
    out_stats: *mut imds_cache_stats,
) -> imds_cache_result {
    guard(|| {
        // SAFETY: forwarded contract.
        let stats = unsafe { sansio(cache)? }.stats()?;
        // SAFETY: valid by contract.
        unsafe { put(out_stats, stats.into()) }
    })
}

/// Writes the endpoint flavour the handle was made for (a value of `imds_cache_flavour`) to
/// `*out_flavour`.
///
/// # Safety
/// `cache` is a live handle; `out_flavour` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_sansio_flavour_of(
    cache: *mut imds_cache_sansio,
    out_flavour: *mut u32,
) -> imds_cache_result {
    guard(|| {
        // SAFETY: forwarded contract.
        let flavour = unsafe { sansio(cache)? }.flavour()?;
        // SAFETY: valid by contract.
        unsafe {
            put(
                out_flavour,
                crate::imds_cache_flavour::from_core(flavour) as u32,
            )
        }
    })
}
