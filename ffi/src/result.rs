//! The result of every C function: one enum with explicit, never reused numbers, its
//! messages, and the mapping from the driver's and the core's errors.

use ::imds_cache::{CacheError, OutcomeClass, RequestError};
use imds_cache_client::Error;

use crate::{guard, write_bytes_out};

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
    /// This build does not support it (an HTTPS endpoint on the blocking handle).
    Unsupported = 4,
    /// The memory is not a live sans-IO handle (never initialised, or deinitialised; this is a
    /// best-effort check).
    InvalidHandle = 5,
    /// Another call is using this sans-IO handle right now: calls on one sans-IO handle must
    /// not overlap.
    Busy = 6,
    /// The memory given to `imds_cache_sansio_init` is not aligned to
    /// `IMDS_CACHE_STORAGE_ALIGN`.
    Misaligned = 7,
    /// The memory given to `imds_cache_sansio_init` is smaller than
    /// `imds_cache_sansio_storage_size` says.
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
    /// The Arc key file is unreadable (permission denied: the `himds` group; not found; too
    /// large; outside the key folder) or its contents are unusable (the ticket has failed).
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
    /// TLS with the endpoint failed: its certificate is not the one
    /// `IDENTITY_SERVER_THUMBPRINT` names, or it does not speak TLS.
    Tls = 203,
    /// A panic was caught at the boundary (a bug: please report it).
    Panic = 900,
}

impl imds_cache_result {
    /// Every result, for tests and the message table.
    pub const fn all() -> [imds_cache_result; 27] {
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
            Tls,
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
            Unsupported => "not supported by this build",
            InvalidHandle => "not a live imds_cache_sansio handle",
            Busy => "another call is using this sans-IO handle",
            Misaligned => "memory is not aligned to IMDS_CACHE_STORAGE_ALIGN",
            StorageTooSmall => "memory is smaller than imds_cache_sansio_storage_size",
            InvalidConfig => "a configuration value is out of bounds",
            InvalidIdentity => "the identity selector is malformed",
            InvalidResource => "the resource is empty, too long, or contains a control character",
            InvalidEndpoint => "the endpoint URL or secret is malformed",
            InvalidArmIdentity => "the ARM identity property is malformed",
            CacheFull => "the cache is full: every entry has a fetch in flight",
            StaleTicket => "the ticket is not live (completed, cancelled or lapsed)",
            NoChallenge => "the ticket is not waiting for an Arc key",
            Throttled => "the request budget is spent for now",
            InvalidArcKey => "the Arc key file is unreadable or unusable",
            UnsupportedSelector => "this endpoint cannot select the identity this way",
            MissingSecret => "the endpoint needs a secret header and none was given",
            RequestFailed => "the request could not be written",
            Unavailable => "no managed-identity endpoint is available here",
            Failed => "the endpoint refused the token request",
            Deadline => "the deadline passed before a token could be had",
            Tls => "TLS with the endpoint failed (certificate thumbprint mismatch, or no TLS)",
            Panic => "a panic was caught at the C boundary (a bug)",
        }
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
        Error::Tls(_) => R::Tls,
        Error::ArcKey { .. } => R::InvalidArcKey,
        // A kind of error newer than this mapping: the call failed.
        _ => R::Failed,
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
