//! The C ABI of imds-cache: `include/imds_cache.h` is generated from this crate by cbindgen,
//! and the crate builds `libimds_cache` (static and shared) and nothing a Rust crate links:
//! Rust users take `imds-cache-client`, whose `Client` the blocking handle wraps.
//!
//! Two handle types, one per object (rustls-ffi's rule, never a run-time tag):
//! `imds_cache` (blocking: environment detection, sockets, retries, a refresher; made by
//! `imds_cache_new`, freed by `imds_cache_free`) and `imds_cache_sansio` (the core alone, in
//! caller memory: `imds_cache_sansio_storage_size`, `_init`, `_deinit`; the caller's event
//! loop does the I/O).
//!
//! Conventions (rustls-ffi's, written once here and in `ffi/README.md`, kept by every
//! function):
//!
//! * Every function returns an [`imds_cache_result`] (except `imds_cache_free`,
//!   `imds_cache_config_free`, which return nothing, and [`imds_cache_now_ms`]). The numbers
//!   are explicit and never reused; [`imds_cache_result_message`] describes each one.
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
//! * Objects made with `_new` are freed with `_free` (NULL does nothing); the sans-IO handle
//!   lives in caller memory (`imds_cache_sansio_init` / `imds_cache_sansio_deinit`). `_free`
//!   and `_deinit` must not race other calls on the same handle.
//! * Token copies written into caller buffers are the caller's to wipe (DESIGN.md D13).

#![allow(non_camel_case_types)]

use std::panic::{catch_unwind, AssertUnwindSafe};

mod blocking;
mod config;
mod identity;
mod result;
mod sansio;
mod settings;
mod stats;
#[cfg(test)]
mod tests;

pub use blocking::*;
pub use config::*;
pub use identity::*;
pub use result::*;
pub use sansio::*;
pub use stats::*;

/// The version of the library, as in `Cargo.toml` (`IMDS_CACHE_VERSION` in the header).
pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");

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
/// Writes the library's version (the same text as `IMDS_CACHE_VERSION`, e.g. `"0.1.0"`) into
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
    catch_unwind(imds_cache_client::now_ms).unwrap_or(0)
}
