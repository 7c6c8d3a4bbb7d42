//! The C types of the sans-IO calls: what a lookup answers, where to send a request, how
//! feeding a response ended, and why a fetch failed.

use ::imds_cache::{
    Done, Failure, FailureKind, Method, RequestDescriptor, MAX_CODE_LEN, MAX_DESCRIPTION_LEN,
};

/// Longest error code kept in an outcome.
pub const IMDS_CACHE_MAX_ERROR_CODE_LEN: usize = 64;
/// Longest error description kept in an outcome (longer ones are cut: diagnostic text).
pub const IMDS_CACHE_MAX_ERROR_DESCRIPTION_LEN: usize = 512;

const _: () = {
    assert!(IMDS_CACHE_MAX_ERROR_CODE_LEN == MAX_CODE_LEN);
    assert!(IMDS_CACHE_MAX_ERROR_DESCRIPTION_LEN == MAX_DESCRIPTION_LEN);
};

/// What a lookup answered.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum imds_cache_lookup_kind {
    /// The token is in the buffer. If `has_ticket`, this caller is asked to refresh it in the
    /// background with `ticket` while using it.
    Hit = 1,
    /// No usable token: fetch one with `ticket` (`imds_cache_sansio_request`, then feed).
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
/// retried, 20–35 are terminal, 40–43 mean no endpoint is here.
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
    /// Connecting timed out at first contact: no managed-identity endpoint here.
    UnavailableTimeout = 41,
    /// A proxy answered 403 "unreachable network" at first contact (Docker Desktop).
    UnavailableProxy = 42,
    /// A 2xx that is not JSON at first contact: no managed-identity endpoint here.
    UnavailableNotJson = 43,
    /// A failure this header does not know (a newer core).
    Other = 99,
}

impl imds_cache_failure {
    pub(crate) fn from_core(k: FailureKind) -> Self {
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
            K::UnavailableTimeout => Self::UnavailableTimeout,
            K::UnavailableProxy => Self::UnavailableProxy,
            K::UnavailableNotJson => Self::UnavailableNotJson,
            _ => Self::Other,
        }
    }

    /// The core's kind for a C caller's number (none for 0, 99 and unknown numbers).
    pub(crate) fn to_core(v: u32) -> Option<FailureKind> {
        FailureKind::ALL
            .iter()
            .copied()
            .find(|k| Self::from_core(*k) as u32 == v)
    }
}

/// The answer of `imds_cache_sansio_lookup`. Fields not named by `kind` are 0.
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
    pub expires_on_s: u64,
    /// PENDING, THROTTLED, FAILED: when to ask again, epoch milliseconds.
    pub retry_at_ms: u64,
    /// FAILED: what failed.
    pub failure: imds_cache_failure,
    /// FAILED: the HTTP status, or 0 when no response was received.
    pub status: u16,
}

impl imds_cache_lookup_answer {
    pub(super) fn new(kind: imds_cache_lookup_kind) -> Self {
        Self {
            kind,
            ticket: 0,
            has_ticket: false,
            token_len: 0,
            expires_on_s: 0,
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

/// Where to send the request bytes written by `imds_cache_sansio_request` or
/// `imds_cache_sansio_complete_challenge` (D6). The method, headers and any body are already in the
/// bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct imds_cache_request_info {
    /// The host to connect to (an IPv6 address without brackets), not NUL-terminated. Borrowed
    /// from the handle: valid until `imds_cache_sansio_deinit`.
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

pub(super) fn info(d: &RequestDescriptor<'_>) -> imds_cache_request_info {
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
    /// `imds_cache_sansio_complete_challenge`. The ticket stays live.
    NeedKeyFile = 4,
}

/// The outcome of `imds_cache_sansio_feed`, `imds_cache_sansio_eof` and `imds_cache_sansio_fail`. Fields not named
/// by `kind` are 0.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct imds_cache_outcome {
    /// How it ended.
    pub kind: imds_cache_outcome_kind,
    /// TOKEN: the token's length.
    pub token_len: usize,
    /// TOKEN: its expiry, Unix epoch seconds.
    pub expires_on_s: u64,
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
    pub(super) fn new(kind: imds_cache_outcome_kind) -> Self {
        Self {
            kind,
            token_len: 0,
            expires_on_s: 0,
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

    pub(super) fn from_done(done: &Done<'_>) -> Self {
        use imds_cache_outcome_kind as O;
        match done {
            Done::Token { len, expires_on_ms } => Self {
                token_len: *len,
                expires_on_s: expires_on_ms / 1000,
                ..Self::new(O::Token)
            },
            Done::Retry {
                failure,
                retry_at_ms,
                detail,
            }
            | Done::Failed {
                failure,
                retry_at_ms,
                detail,
            } => {
                let kind = if matches!(done, Done::Retry { .. }) {
                    O::Retry
                } else {
                    O::Failed
                };
                let mut o = Self::failed(kind, failure, *retry_at_ms);
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

    fn failed(kind: imds_cache_outcome_kind, failure: &Failure, retry_at_ms: u64) -> Self {
        Self {
            retry_at_ms,
            failure: imds_cache_failure::from_core(failure.kind),
            status: failure.status,
            ..Self::new(kind)
        }
    }
}

/// How the caller's transport failed (for `imds_cache_sansio_fail`).
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

/// What `imds_cache_sansio_poll_refresh` answered.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct imds_cache_refresh {
    /// Whether an entry is due: refresh it with `ticket` (`imds_cache_sansio_request`, then feed).
    pub has_ticket: bool,
    /// The refresh ticket.
    pub ticket: u64,
    /// When nothing is due: when to call again, epoch milliseconds (0: nothing scheduled).
    pub next_ms: u64,
}
