//! What a complete response means (D7): a token, Arc's challenge, or a failure of a kind
//! whose class decides retry, negative caching or "unavailable".

use core::fmt;

use super::{parse_token_body, BodyError, ErrorBody, TokenBody};
use crate::http::{self, RetryAfter};
use crate::identity::Flavour;

/// What went wrong with a fetch, precisely enough to choose the class of D7.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum FailureKind {
    /// 404 from an endpoint other than Service Fabric (IMDS updating): retried.
    NotFound = 1,
    /// 408 request timeout: retried.
    RequestTimeout = 2,
    /// 429 throttled by the endpoint: retried.
    TooManyRequests = 3,
    /// 410 IMDS being updated: retried every 10 s for at least 70 s.
    Gone = 4,
    /// A 5xx status: retried.
    ServerError = 5,
    /// The connection could not be made in time: retried.
    ConnectTimeout = 6,
    /// The connection was reset or the response did not arrive in time: retried.
    ConnectionLost = 7,
    /// The connection closed before the response was complete: retried.
    Truncated = 8,
    /// 400: the identity or resource is not available here.
    BadRequest = 20,
    /// 401 without an Arc challenge.
    Unauthorized = 21,
    /// 403 (e.g. a proxy on the IMDS address).
    Forbidden = 22,
    /// 404 from Service Fabric: unknown identity.
    IdentityNotFound = 23,
    /// 405 wrong method.
    MethodNotAllowed = 24,
    /// Any other status that is not a token.
    UnexpectedStatus = 25,
    /// A 2xx whose body is not a token object.
    NotJson = 26,
    /// A 2xx without an `access_token`, or an empty one.
    MissingToken = 27,
    /// A token or response larger than `max_token_bytes` allows.
    TokenTooLarge = 28,
    /// The body's `client_id` is not the client id that was asked for.
    ClientIdMismatch = 29,
    /// The token has less than the minimum lifetime left when it arrives.
    ExpiredOnArrival = 30,
    /// A time field in the body is malformed.
    BadExpiry = 31,
    /// `token_type` is not Bearer.
    NotBearer = 32,
    /// The HTTP response is malformed.
    MalformedResponse = 33,
    /// Arc's challenge names a key file outside the rules, or the key file is unusable.
    BadChallenge = 34,
    /// The cache has no room for the token (every other entry has a live ticket).
    CacheFull = 35,
    /// The endpoint refused or could not be reached at first contact: no managed identity here.
    Unavailable = 40,
    /// Connecting timed out at first contact (a host with no route to the endpoint drops
    /// the connect): no managed identity here.
    UnavailableTimeout = 41,
    /// A 403 saying the network is unreachable at first contact (Docker Desktop's proxy on
    /// the IMDS address): no managed identity here.
    UnavailableProxy = 42,
    /// A 2xx that is not JSON at first contact (something else answers at the address): no
    /// managed identity here.
    UnavailableNotJson = 43,
}

/// The class of an outcome (D7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutcomeClass {
    /// Transient: retried with backoff.
    Retry,
    /// Permanent for this request: negative-cached.
    Terminal,
    /// No managed-identity endpoint here: at once, no retry.
    Unavailable,
}

impl FailureKind {
    /// The D7 class of this failure.
    pub const fn class(self) -> OutcomeClass {
        match self as u8 {
            1..=8 => OutcomeClass::Retry,
            40..=43 => OutcomeClass::Unavailable,
            _ => OutcomeClass::Terminal,
        }
    }

    /// Every kind, in the order declared (and of their numbers), for tables and mirror tests
    /// in the C and Python layers.
    pub const ALL: &'static [FailureKind] = &[
        Self::NotFound,
        Self::RequestTimeout,
        Self::TooManyRequests,
        Self::Gone,
        Self::ServerError,
        Self::ConnectTimeout,
        Self::ConnectionLost,
        Self::Truncated,
        Self::BadRequest,
        Self::Unauthorized,
        Self::Forbidden,
        Self::IdentityNotFound,
        Self::MethodNotAllowed,
        Self::UnexpectedStatus,
        Self::NotJson,
        Self::MissingToken,
        Self::TokenTooLarge,
        Self::ClientIdMismatch,
        Self::ExpiredOnArrival,
        Self::BadExpiry,
        Self::NotBearer,
        Self::MalformedResponse,
        Self::BadChallenge,
        Self::CacheFull,
        Self::Unavailable,
        Self::UnavailableTimeout,
        Self::UnavailableProxy,
        Self::UnavailableNotJson,
    ];

    /// The kind for a stored discriminant, if it names one.
    pub(crate) fn from_u8(v: u8) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| *k as u8 == v)
    }

    /// A stable snake_case name for the kind (`not_found`, `token_too_large`, …): the error
    /// code the C and Python layers show when the endpoint sent none. Never changes for a
    /// kind, never reused.
    pub const fn code(self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::RequestTimeout => "request_timeout",
            Self::TooManyRequests => "too_many_requests",
            Self::Gone => "gone",
            Self::ServerError => "server_error",
            Self::ConnectTimeout => "connect_timeout",
            Self::ConnectionLost => "connection_lost",
            Self::Truncated => "truncated",
            Self::BadRequest => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::IdentityNotFound => "identity_not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::UnexpectedStatus => "unexpected_status",
            Self::NotJson => "not_json",
            Self::MissingToken => "missing_token",
            Self::TokenTooLarge => "token_too_large",
            Self::ClientIdMismatch => "client_id_mismatch",
            Self::ExpiredOnArrival => "expired_on_arrival",
            Self::BadExpiry => "bad_expiry",
            Self::NotBearer => "not_bearer",
            Self::MalformedResponse => "malformed_response",
            Self::BadChallenge => "bad_challenge",
            Self::CacheFull => "cache_full",
            Self::Unavailable => "unavailable",
            Self::UnavailableTimeout => "unavailable_timeout",
            Self::UnavailableProxy => "unavailable_proxy",
            Self::UnavailableNotJson => "unavailable_not_json",
        }
    }

    /// A short description of the failure; [`Failure`]'s `Display` adds the HTTP status.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NotFound => "not found (the endpoint is being updated)",
            Self::RequestTimeout => "request timeout",
            Self::TooManyRequests => "too many requests (throttled)",
            Self::Gone => "gone (the endpoint is being updated)",
            Self::ServerError => "server error",
            Self::ConnectTimeout => "connecting to the endpoint timed out",
            Self::ConnectionLost => "the connection was reset or timed out",
            Self::Truncated => "the response was cut short",
            Self::BadRequest => "bad request (identity or resource not available here)",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::IdentityNotFound => "identity not found",
            Self::MethodNotAllowed => "method not allowed",
            Self::UnexpectedStatus => "unexpected status",
            Self::NotJson => "the body is not a token object",
            Self::MissingToken => "the body has no access token",
            Self::TokenTooLarge => "the token is larger than max_token_bytes",
            Self::ClientIdMismatch => "the token is for another client id than asked",
            Self::ExpiredOnArrival => "the token expires too soon to be used",
            Self::BadExpiry => "a time field of the token body is malformed",
            Self::NotBearer => "token_type is not Bearer",
            Self::MalformedResponse => "the HTTP response is malformed",
            Self::BadChallenge => "the Arc challenge or its key file is unusable",
            Self::CacheFull => "no room in the cache for the token",
            Self::Unavailable => "no managed-identity endpoint is reachable",
            Self::UnavailableTimeout => {
                "no managed-identity endpoint here: connecting timed out at first contact"
            }
            Self::UnavailableProxy => {
                "no managed-identity endpoint here: a proxy answered that the network is unreachable"
            }
            Self::UnavailableNotJson => {
                "no managed-identity endpoint here: the address answered with something other than JSON"
            }
        }
    }

    /// What this failure means at first contact with an endpoint, before any token came
    /// from it (D20): the failures a machine without a managed identity produces become
    /// "unavailable" at once; the rest keep their kind. `body` is the response body, if any.
    pub fn at_first_contact(self, body: &[u8]) -> Self {
        match self {
            Self::ConnectTimeout => Self::UnavailableTimeout,
            Self::Forbidden if contains_ignore_case(body, b"unreachable") => Self::UnavailableProxy,
            Self::NotJson => Self::UnavailableNotJson,
            kind => kind,
        }
    }
}

/// Whether `needle` (lower-case ASCII) occurs in `haystack`, ASCII case ignored.
fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty()
        && haystack
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

/// A failed fetch: what happened and the HTTP status, if any (0 otherwise).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failure {
    /// What happened.
    pub kind: FailureKind,
    /// The HTTP status, or 0 when no response was received.
    pub status: u16,
}

impl Failure {
    /// A failure without an HTTP status.
    pub const fn new(kind: FailureKind) -> Self {
        Self { kind, status: 0 }
    }
}

/// `HTTP 400 bad request (…)` when a status was received (written once), else the kind's
/// description.
impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.status != 0 {
            write!(f, "HTTP {} ", self.status)?;
        }
        f.write_str(self.kind.as_str())
    }
}

/// What a complete response means.
#[derive(Debug)]
pub enum Classified<'a> {
    /// A token.
    Token(TokenBody<'a>),
    /// Arc's challenge: the `WWW-Authenticate` value naming the key file.
    Challenge(&'a str),
    /// A failure; `retry_after` as the server sent it; the error body's text.
    Failure {
        /// What failed.
        failure: Failure,
        /// The server's `Retry-After`, if any.
        retry_after: Option<RetryAfter>,
        /// The parsed error body.
        body: ErrorBody<'a>,
    },
}

/// Classifies a complete response from `flavour`'s endpoint (D7). `request_at_s` is in epoch
/// seconds; a token larger than `max_token_bytes` is a failure, never truncated.
pub fn classify<'a>(
    flavour: Flavour,
    response: &http::Response<'a>,
    request_at_s: u64,
    max_token_bytes: usize,
) -> Classified<'a> {
    let status = response.status;
    let fail = |kind| Classified::Failure {
        failure: Failure { kind, status },
        retry_after: response.retry_after,
        body: ErrorBody::parse(response.body),
    };
    match status {
        200..=299 => match parse_token_body(response.body, request_at_s) {
            Ok(token) if token.token_len() > max_token_bytes => fail(FailureKind::TokenTooLarge),
            Ok(token) => Classified::Token(token),
            Err(e) => fail(match e {
                BodyError::NotJson => FailureKind::NotJson,
                BodyError::MissingToken | BodyError::EmptyToken | BodyError::BadToken => {
                    FailureKind::MissingToken
                }
                BodyError::MissingExpiry | BodyError::Time(..) => FailureKind::BadExpiry,
                BodyError::NotBearer => FailureKind::NotBearer,
            }),
        },
        401 if flavour == Flavour::Arc => match response.www_authenticate {
            Some(challenge) if is_basic_realm(challenge) => Classified::Challenge(challenge),
            _ => fail(FailureKind::Unauthorized),
        },
        400 => fail(FailureKind::BadRequest),
        401 => fail(FailureKind::Unauthorized),
        403 => fail(FailureKind::Forbidden),
        404 if flavour == Flavour::ServiceFabric => fail(FailureKind::IdentityNotFound),
        404 => fail(FailureKind::NotFound),
        405 => fail(FailureKind::MethodNotAllowed),
        408 => fail(FailureKind::RequestTimeout),
        410 => fail(FailureKind::Gone),
        429 => fail(FailureKind::TooManyRequests),
        500..=599 => fail(FailureKind::ServerError),
        _ => fail(FailureKind::UnexpectedStatus),
    }
}

fn is_basic_realm(v: &str) -> bool {
    let v = v.trim_start();
    v.get(..6).is_some_and(|s| s.eq_ignore_ascii_case("basic "))
        && v[6..]
            .trim_start()
            .get(..6)
            .is_some_and(|s| s.eq_ignore_ascii_case("realm="))
}
