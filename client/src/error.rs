//! The driver's error: what a caller of `get_token` can be told.

use std::fmt;

use imds_cache::{
    ErrorDetail, Failure, IdentityError, NewError, OutcomeClass, RequestError, ResourceError,
};

/// Why a token could not be had.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// An environment this credential must not serve (AKS workload identity), or no
    /// endpoint configured. (No endpoint answering at first contact is a `Failed` whose kind
    /// is of the `Unavailable` class: see [`is_unavailable`](Self::is_unavailable).)
    Unavailable(&'static str),
    /// The endpoint refused (a terminal D7 outcome) or is not there (D20's first-contact
    /// failures), with its error text when this call saw it.
    Failed {
        /// What failed.
        failure: Failure,
        /// The error body's code and description (empty when another caller's fetch failed).
        detail: Box<ErrorDetail>,
    },
    /// The deadline passed before a token could be had.
    Deadline {
        /// The last failure seen, if any.
        last: Option<Failure>,
    },
    /// The caller's buffer is shorter than the token.
    BufferTooSmall {
        /// The token's length.
        needed: usize,
    },
    /// Every entry of the cache has a fetch in flight: nothing can be evicted.
    CacheFull,
    /// The identity selector is malformed.
    Identity(IdentityError),
    /// The resource or scope is malformed.
    Resource(ResourceError),
    /// The endpoint configuration (URL, secret) is malformed.
    Endpoint(&'static str),
    /// The request could not be written (e.g. a selector the flavour does not support).
    Request(RequestError),
    /// The configuration or storage size is out of bounds.
    Config(NewError),
    /// Something this build does not do (Service Fabric's pinned TLS).
    Unsupported(&'static str),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unavailable(why) => write!(f, "managed identity unavailable: {why}"),
            Self::Failed { failure, detail } => {
                write!(f, "{failure}")?;
                if !detail.code.is_empty() || !detail.description.is_empty() {
                    write!(f, ": {} {}", detail.code, detail.description)?;
                }
                Ok(())
            }
            Self::Deadline { last: Some(last) } => {
                write!(f, "deadline passed; last failure: {last}")
            }
            Self::Deadline { last: None } => f.write_str("deadline passed"),
            Self::BufferTooSmall { needed } => write!(f, "token needs a buffer of {needed} bytes"),
            Self::CacheFull => f.write_str("cache is full: every entry has a fetch in flight"),
            Self::Identity(e) => e.fmt(f),
            Self::Resource(e) => e.fmt(f),
            Self::Endpoint(why) => write!(f, "endpoint configuration: {why}"),
            Self::Request(e) => e.fmt(f),
            Self::Config(e) => e.fmt(f),
            Self::Unsupported(what) => write!(f, "unsupported: {what}"),
        }
    }
}

impl Error {
    /// The codes [`code`](Self::code) gives for every variant but `Failed` (whose code is its
    /// failure kind's, [`imds_cache::FailureKind::code`]): the C result enum and the Python
    /// exceptions' `code` are checked against this list.
    pub const CODES: &'static [&'static str] = &[
        "unavailable",
        "deadline",
        "buffer_too_small",
        "cache_full",
        "invalid_identity",
        "invalid_resource",
        "invalid_endpoint",
        "request_error",
        "invalid_config",
        "unsupported",
    ];

    /// Whether no managed identity can be had here: a credential chain moves on to the next
    /// credential.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Unavailable(_) | Self::Unsupported(_) => true,
            Self::Failed { failure, .. } => failure.kind.class() == OutcomeClass::Unavailable,
            _ => false,
        }
    }

    /// A stable snake_case code for the error: never changes for a variant, never reused.
    /// A failed fetch has its failure kind's code (`bad_request`, `server_error`, …).
    pub const fn code(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "unavailable",
            Self::Failed { failure, .. } => failure.kind.code(),
            Self::Deadline { .. } => "deadline",
            Self::BufferTooSmall { .. } => "buffer_too_small",
            Self::CacheFull => "cache_full",
            Self::Identity(_) => "invalid_identity",
            Self::Resource(_) => "invalid_resource",
            Self::Endpoint(_) => "invalid_endpoint",
            Self::Request(_) => "request_error",
            Self::Config(_) => "invalid_config",
            Self::Unsupported(_) => "unsupported",
        }
    }
}

/// The core's error underneath, where there is one (a malformed selector, resource, request
/// or configuration). An endpoint's refusal is no error type of its own: its `Failure` and
/// text are in the variant.
impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Identity(e) => Some(e),
            Self::Resource(e) => Some(e),
            Self::Request(e) => Some(e),
            Self::Config(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn codes_are_listed_and_unique() {
        use imds_cache::{FailureKind, IdentityError};
        let every = [
            Error::Unavailable("x"),
            Error::Deadline { last: None },
            Error::BufferTooSmall { needed: 1 },
            Error::CacheFull,
            Error::Identity(IdentityError::Empty),
            Error::Resource(ResourceError::Empty),
            Error::Endpoint("x"),
            Error::Request(RequestError::MissingSecret),
            Error::Config(NewError::Storage(imds_cache::StorageError::SlotCount)),
            Error::Unsupported("x"),
        ];
        // One variant per listed code, in order; `Failed` is the one left out.
        let codes: Vec<&str> = every.iter().map(Error::code).collect();
        assert_eq!(codes, Error::CODES);
        for code in Error::CODES {
            assert_eq!(Error::CODES.iter().filter(|c| *c == code).count(), 1);
        }
        let failed = Error::Failed {
            failure: Failure::new(FailureKind::ServerError),
            detail: Box::default(),
        };
        assert_eq!(failed.code(), "server_error");
    }

    #[test]
    fn source_is_the_core_error() {
        let e = Error::Resource(ResourceError::Empty);
        let source = e.source().expect("a source");
        assert_eq!(source.to_string(), ResourceError::Empty.to_string());
        assert!(Error::CacheFull.source().is_none());
        assert!(Error::Deadline { last: None }.source().is_none());
    }
}
