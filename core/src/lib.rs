//! An allocation-free, sans-IO token cache for Azure managed identities.
//!
//! The core turns inputs into bytes to send and bytes received into typed outcomes, and keeps
//! a fixed-capacity cache of tokens keyed by (endpoint flavour, identity, resource). It never
//! reads a clock, opens a socket or allocates: `now_ms` (milliseconds since the Unix epoch) and
//! storage are arguments, and the caller does the I/O.
//!
//! ```
//! use imds_cache::{Config, Done, Endpoint, Feed, Flavour, Identity, Key, Lookup, Resource};
//! use imds_cache::{ArrayStorage, TokenCache};
//!
//! // 64 entries, 512 blocks of 256 bytes; `const`, so it can also be a `static`.
//! let mut cache = TokenCache::<ArrayStorage<64, 512>>::new(Config::DEFAULT);
//! let key = Key {
//!     flavour: Flavour::Imds,
//!     identity: Identity::SYSTEM,
//!     resource: Resource::from_scopes(&["https://vault.azure.net/.default"]).unwrap(),
//! };
//! let now = 1_700_000_000_000; // ms since the epoch: the caller owns the clock
//! let mut token = [0u8; 16 * 1024];
//! let Lookup::Fetch(ticket) = cache.lookup(&key, now, &mut token).unwrap() else { panic!() };
//!
//! // The request to send, written into a caller buffer.
//! let mut request = [0u8; 2048];
//! let to = cache.request_at(ticket, &Endpoint::IMDS, now, &mut request).unwrap();
//! assert!(request[..to.len].starts_with(b"GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net"));
//!
//! // The bytes received, fed as they arrive (the caller keeps them).
//! let mut response = b"HTTP/1.1 200 OK\r\nContent-Length: 51\r\n\r\n\
//!     {\"access_token\":\"eyJ0eXAi...\",\"expires_in\":\"86399\"}".to_vec();
//! let Feed::Done(Done::Token { .. }) = cache.feed(ticket, &mut response, now).unwrap() else { panic!() };
//!
//! // From now on, lookups are hits that copy the token into the caller's buffer.
//! let Lookup::Hit { len, refresh: None, .. } = cache.lookup(&key, now + 1, &mut token).unwrap() else { panic!() };
//! assert_eq!(&token[..len], b"eyJ0eXAi...");
//! ```
#![no_std]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(test)]
extern crate std;

mod arm;
mod cache;
mod http;
mod identity;
mod json;
mod policy;
mod request;
mod response;
mod storage;
mod time;

pub use cache::{
    BadWriterState, CacheError, Done, Feed, Key, Lease, Lookup, MemoryUse, NewError, Peek, Reader,
    Stats, Ticket, TokenCache, Transport, WriterState,
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
#[cfg(not(all(loom, test)))]
pub use storage::ArrayStorage;
pub use storage::{
    layout, layout_blocks, BufferStorage, SliceStorage, Storage, StorageError, StorageLayout, Word,
    BLOCK_SIZE, DEFAULT_BYTES_PER_ENTRY, WORD_BYTES,
};
pub use time::{parse_expires_on, parse_http_date, parse_seconds, TimeError, YEAR_2001_S};

pub use arm::{parse_arm_identity, ArmError, ArmIdentities, UserAssigned, ARM_MAX_DEPTH};
pub use identity::{
    Flavour, Identity, IdentityError, IdentityKind, Resource, ResourceError, GUID_LEN,
    MAX_RESOURCE_ID_LEN, MAX_RESOURCE_LEN,
};
