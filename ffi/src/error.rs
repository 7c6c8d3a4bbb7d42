//! The driver's error: what a caller of `get_token` can be told.

use std::fmt;

use imds_cache::{ErrorDetail, Failure, IdentityError, NewError, RequestError, ResourceError};

/// Why a token could not be had.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// No managed-identity endpoint here (refused or unreachable at first contact), or an
    /// environment this credential must not serve (AKS workload identity).
    Unavailable(&'static str),
    /// The endpoint refused (a terminal D7 outcome), with its error text when this call saw it.
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

impl std::error::Error for Error {}
