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
mod http;
mod identity;
mod request;
mod time;

pub use identity::{
    Flavour, Identity, IdentityError, IdentityKind, Resource, ResourceError, GUID_LEN,
    MAX_RESOURCE_ID_LEN, MAX_RESOURCE_LEN,
};
