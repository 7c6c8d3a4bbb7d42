//! The C ABI: `include/imds_cache.h` is generated from this module by cbindgen.
//!
//! Conventions (rustls-ffi's, written once here and in `ffi/README.md`, kept by every
//! function):
//!
//! * Every function returns an [`imds_cache_result`] (except `_free`, which returns nothing,
//!   and [`imds_cache_now_ms`]). The numbers are explicit and never reused;
//!   [`imds_cache_result_message`] describes each one.
//! * Strings are `(const uint8_t *, size_t)` pairs, never NUL-terminated; a length of 0 allows
//!   a NULL pointer. Strings going in must be UTF-8 (identities and resources are ASCII).
//! * The object comes first, then the inputs, then the outputs. Every output buffer is
//!   followed by its length and a `size_t *out_written`.
//! * Out-params are written only on success. The one exception is
//!   `IMDS_CACHE_RESULT_BUFFER_TOO_SMALL`, which sets `*out_written` to the size needed;
//!   `(NULL, 0)` is the size query.
//! * Every pointer is checked: a NULL where a value is needed is
//!   `IMDS_CACHE_RESULT_NULL_POINTER`, never a crash.
//! * No panic crosses the boundary: each body runs under `catch_unwind` and a panic becomes
//!   `IMDS_CACHE_RESULT_PANIC`.
//! * Handles made with `_new` are freed with `_free` (NULL does nothing); the sans-IO handle
//!   lives in caller memory (`imds_cache_init` / `imds_cache_deinit`). `_free` and `_deinit`
//!   must not race other calls on the same handle.
//! * Token copies written into caller buffers are the caller's to wipe (DESIGN.md D13).

#![allow(non_camel_case_types)]

use std::panic::{catch_unwind, AssertUnwindSafe};

mod config;
mod handle;
mod identity;
mod sansio;

pub use config::*;
pub use handle::*;
pub use identity::*;
pub use sansio::*;

/// The version of the library, as in `Cargo.toml` (`IMDS_CACHE_VERSION` in the header).
pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Every outcome of a C function. The numbers are part of the ABI: explicit, and never reused
/// for another meaning once released.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum imds_cache_result {
    /// Success.
    Ok = 0,
    /// A required pointer argument is NULL (or a non-empty buffer's pointer is NULL).
    NullPointer = 1,
    /// An argument is out of range (an unknown enum value, an empty string where one is
    /// required, a length above `PTRDIFF_MAX`).
    InvalidArgument = 2,
    /// The output buffer is too short: `*out_written` holds the size needed.
    BufferTooSmall = 3,
    /// The call does not apply to this kind of handle (`get_token` on a sans-IO handle, the
    /// sans-IO calls on a full handle) or this build does not support it.
    Unsupported = 4,
    /// The pointer is not a live handle (freed, deinitialised, or not a handle at all; this is
    /// a best-effort check).
    InvalidHandle = 5,
    /// Another call is using this sans-IO handle right now: calls on one sans-IO handle must
    /// not overlap.
    Busy = 6,
    /// The memory given to `imds_cache_init` is not aligned to `IMDS_CACHE_STORAGE_ALIGN`.
    Misaligned = 7,
    /// The memory given to `imds_cache_init` is smaller than `imds_cache_storage_size` says.
    StorageTooSmall = 8,
    /// A configuration value is out of bounds.
    InvalidConfig = 9,
    /// An identity selector is malformed (client or object id not a GUID, malformed ARM
    /// resource id, unknown kind, not UTF-8).
    InvalidIdentity = 10,
    /// A resource is empty, longer than 512 bytes, contains a control character or space, or
    /// is not UTF-8.
    InvalidResource = 11,
    /// An endpoint URL or secret is malformed.
    InvalidEndpoint = 12,
    /// An ARM `identity` property is malformed.
    InvalidArmIdentity = 13,
    /// Every entry of the cache has a fetch in flight: nothing can be evicted.
    CacheFull = 100,
    /// The ticket is not live: completed, cancelled, lapsed or unknown.
    StaleTicket = 101,
    /// The ticket is not waiting for an Arc key.
    NoChallenge = 102,
    /// The endpoint's request budget has no room for this request yet.
    Throttled = 103,
    /// The Arc key file's contents are unusable (the ticket has failed).
    InvalidArcKey = 104,
    /// This endpoint flavour cannot select the identity this way.
    UnsupportedSelector = 105,
    /// The endpoint needs a secret header and none was given.
    MissingSecret = 106,
    /// The request could not be written for another reason (see the message).
    RequestFailed = 107,
    /// No managed-identity endpoint is here (refused or unreachable at first contact), or the
    /// environment must not be served (AKS workload identity).
    Unavailable = 200,
    /// The endpoint refused the request for good (a terminal outcome: 400, 403, a malformed
    /// token, ...); negative-cached for a while.
    Failed = 201,
    /// The deadline passed before a token could be had (retries kept failing or waiting).
    Deadline = 202,
    /// A panic was caught at the boundary (a bug: please report it).
    Panic = 900,
}

impl imds_cache_result {
    /// Every result, for tests and the message table.
    pub const fn all() -> [imds_cache_result; 26] {
        use imds_cache_result::*;
        [
            Ok,
            NullPointer,
            InvalidArgument,
            BufferTooSmall,
            Unsupported,
            InvalidHandle,
            Busy,
            Misaligned,
            StorageTooSmall,
            InvalidConfig,
            InvalidIdentity,
            InvalidResource,
            InvalidEndpoint,
            InvalidArmIdentity,
            CacheFull,
            StaleTicket,
            NoChallenge,
            Throttled,
            InvalidArcKey,
            UnsupportedSelector,
            MissingSecret,
            RequestFailed,
            Unavailable,
            Failed,
            Deadline,
            Panic,
        ]
    }

    /// The result a C caller's integer names, if any.
    pub fn from_u32(code: u32) -> Option<Self> {
        Self::all().into_iter().find(|r| *r as u32 == code)
    }

    /// What the result means.
    pub const fn message(self) -> &'static str {
        use imds_cache_result::*;
        match self {
            Ok => "success",
            NullPointer => "a required pointer argument is NULL",
            InvalidArgument => "an argument is out of range",
            BufferTooSmall => "the output buffer is too small; *out_written holds the size needed",
            Unsupported => "not supported on this kind of handle",
            InvalidHandle => "not a live imds_cache handle",
            Busy => "another call is using this sans-IO handle",
            Misaligned => "memory is not aligned to IMDS_CACHE_STORAGE_ALIGN",
            StorageTooSmall => "memory is smaller than imds_cache_storage_size",
            InvalidConfig => "a configuration value is out of bounds",
            InvalidIdentity => "the identity selector is malformed",
            InvalidResource => "the resource is empty, too long, or contains a control character",
            InvalidEndpoint => "the endpoint URL or secret is malformed",
            InvalidArmIdentity => "the ARM identity property is malformed",
            CacheFull => "the cache is full: every entry has a fetch in flight",
            StaleTicket => "the ticket is not live (completed, cancelled or lapsed)",
            NoChallenge => "the ticket is not waiting for an Arc key",
            Throttled => "the request budget is spent for now",
            InvalidArcKey => "the Arc key file is unusable",
            UnsupportedSelector => "this endpoint cannot select the identity this way",
            MissingSecret => "the endpoint needs a secret header and none was given",
            RequestFailed => "the request could not be written",
            Unavailable => "no managed-identity endpoint is available here",
            Failed => "the endpoint refused the token request",
            Deadline => "the deadline passed before a token could be had",
            Panic => "a panic was caught at the C boundary (a bug)",
        }
    }
}

/// Runs `f`, turning a panic into [`imds_cache_result::Panic`] (the panic boundary of every
/// function with a result).
pub(crate) fn guard(f: impl FnOnce() -> Result<(), imds_cache_result>) -> imds_cache_result {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => imds_cache_result::Ok,
        Ok(Err(e)) => e,
        Err(_) => imds_cache_result::Panic,
    }
}

/// Fails with `NullPointer` when `p` is NULL.
pub(crate) fn non_null<T>(p: *const T) -> Result<(), imds_cache_result> {
    if p.is_null() {
        Err(imds_cache_result::NullPointer)
    } else {
        Ok(())
    }
}

/// Writes `value` through a checked out-pointer.
///
/// # Safety
/// `out` is NULL or valid for a write of `T` and aligned.
pub(crate) unsafe fn put<T>(out: *mut T, value: T) -> Result<(), imds_cache_result> {
    non_null(out)?;
    // SAFETY: not NULL; valid and aligned by the caller's contract.
    unsafe { out.write(value) };
    Ok(())
}

/// The bytes of an input `(pointer, length)` pair: empty for length 0 (whatever the pointer).
///
/// # Safety
/// When `len > 0` and `ptr` is not NULL, `ptr` is valid for reads of `len` bytes for `'a`,
/// and nothing writes them meanwhile.
pub(crate) unsafe fn bytes<'a>(ptr: *const u8, len: usize) -> Result<&'a [u8], imds_cache_result> {
    if len == 0 {
        return Ok(&[]);
    }
    non_null(ptr)?;
    if len > isize::MAX as usize {
        return Err(imds_cache_result::InvalidArgument);
    }
    // SAFETY: not NULL, length in bounds, valid by the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// The bytes of an output `(pointer, length)` pair: empty for length 0 (whatever the pointer).
///
/// # Safety
/// When `len > 0` and `ptr` is not NULL, `ptr` is valid for reads and writes of `len` bytes
/// for `'a`, and nothing else accesses them meanwhile.
pub(crate) unsafe fn bytes_mut<'a>(
    ptr: *mut u8,
    len: usize,
) -> Result<&'a mut [u8], imds_cache_result> {
    if len == 0 {
        return Ok(&mut []);
    }
    non_null(ptr)?;
    if len > isize::MAX as usize {
        return Err(imds_cache_result::InvalidArgument);
    }
    // SAFETY: not NULL, length in bounds, valid and unaliased by the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts_mut(ptr, len) })
}

/// Copies `src` into the caller's `(buf, len)` and sets `*out_written`; on a short buffer
/// sets `*out_written` to the size needed and fails with `BufferTooSmall`.
///
/// # Safety
/// As [`bytes_mut`] for `(buf, len)`; `out_written` is NULL or valid for a write.
pub(crate) unsafe fn write_bytes_out(
    src: &[u8],
    buf: *mut u8,
    len: usize,
    out_written: *mut usize,
) -> Result<(), imds_cache_result> {
    non_null(out_written)?;
    // SAFETY: forwarded contract.
    let out = unsafe { bytes_mut(buf, len)? };
    if src.len() > out.len() {
        // SAFETY: checked not NULL above; valid by contract.
        unsafe { out_written.write(src.len()) };
        return Err(imds_cache_result::BufferTooSmall);
    }
    out[..src.len()].copy_from_slice(src);
    // SAFETY: as above.
    unsafe { out_written.write(src.len()) };
    Ok(())
}

/// Writes the description of `result` (a value of `imds_cache_result`) into `buf`.
///
/// The text is ASCII, not NUL-terminated; `*out_written` is its length. `(NULL, 0)` asks for
/// the length (`IMDS_CACHE_RESULT_BUFFER_TOO_SMALL`, with `*out_written` set).
///
/// # Safety
/// `buf` is valid for `len` bytes (or NULL when `len` is 0); `out_written` is valid for a
/// write. An unknown `result` is `IMDS_CACHE_RESULT_INVALID_ARGUMENT` and writes nothing.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_result_message(
    result: u32,
    buf: *mut u8,
    len: usize,
    out_written: *mut usize,
) -> imds_cache_result {
    guard(|| {
        let r = imds_cache_result::from_u32(result).ok_or(imds_cache_result::InvalidArgument)?;
        // SAFETY: forwarded contract.
        unsafe { write_bytes_out(r.message().as_bytes(), buf, len, out_written) }
    })
}

/// Writes the library's version (`"0.1.0"`, the same text as `IMDS_CACHE_VERSION`) into
/// `buf`: not NUL-terminated, `*out_written` is its length; `(NULL, 0)` is the size query.
///
/// # Safety
/// `buf` is valid for `len` bytes (or NULL when `len` is 0); `out_written` is valid for a
/// write.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_version(
    buf: *mut u8,
    len: usize,
    out_written: *mut usize,
) -> imds_cache_result {
    // SAFETY: forwarded contract.
    guard(|| unsafe { write_bytes_out(VERSION.as_bytes(), buf, len, out_written) })
}

/// The wall clock in milliseconds since the Unix epoch: the `now_ms` that the sans-IO calls
/// take (DESIGN.md D1). Never fails; 0 if the clock is before 1970.
#[no_mangle]
pub extern "C" fn imds_cache_now_ms() -> u64 {
    catch_unwind(crate_now_ms).unwrap_or(0)
}

pub(crate) fn crate_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
