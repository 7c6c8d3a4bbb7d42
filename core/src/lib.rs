//! An allocation-free, sans-IO token cache for Azure managed identities.
//!
//! The core turns inputs into bytes to send and bytes received into typed outcomes, and keeps
//! a fixed-capacity cache of tokens keyed by (endpoint flavour, identity, resource). It never
//! reads a clock, opens a socket or allocates: `now` (milliseconds since the Unix epoch) and
//! storage are arguments, and the caller does the I/O.
#![no_std]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(test)]
extern crate std;

mod arm;
mod cache;
mod http;
mod identity;
mod policy;
mod request;
mod response;
mod storage;
mod time;

pub use cache::{
    CacheError, Done, Feed, Key, Lookup, MemoryUse, NewError, Stats, Ticket, TokenCache, Transport,
};
pub use http::{parse_response, HttpError, Parsed, Response, RetryAfter, MAX_HEADERS};
pub use policy::{
    Config, ConfigError, ARC_DEFAULT_KEY_DIR, MAX_IN_FLIGHT, MAX_KEY_DIR_LEN, MAX_RATE,
    MIN_TOKEN_BYTES,
};
pub use request::{
    arc_key_path, check_arc_key, write_request, ArcError, Endpoint, EndpointError, Method,
    RequestDescriptor, RequestError, ARC_KEY_DIR_LINUX, ARC_KEY_DIR_WINDOWS, ARC_MAX_KEY_LEN,
    IMDS_TOKEN_PATH,
};
pub use response::{
    classify, parse_token_body, BodyError, Classified, ErrorBody, ErrorDetail, Failure,
    FailureKind, OutcomeClass, TimeField, TokenBody, MAX_CODE_LEN, MAX_DESCRIPTION_LEN,
};
pub use storage::{ArrayStorage, SliceStorage, Slot, Storage, StorageError, BLOCK_SIZE};
pub use time::{parse_expires_on, parse_http_date, parse_seconds, TimeError, YEAR_2001};

pub use identity::{
    Flavour, Identity, IdentityError, IdentityKind, Resource, ResourceError, GUID_LEN,
    MAX_RESOURCE_ID_LEN, MAX_RESOURCE_LEN,
};
