//! Requests to the token endpoint, written into a caller buffer (D6).
//!
//! [`write_request`] writes the request line, the headers and any body for one endpoint
//! flavour into a caller buffer and answers a [`RequestDescriptor`] that says where to send
//! it. Every query value is percent-encoded (everything but the unreserved set
//! `A-Z a-z 0-9 - . _ ~`), every header value that comes from outside (secrets, Arc's key) is
//! checked for CR/LF and control characters, and a short buffer is reported with the exact
//! size needed, never filled with a partial request that looks complete.
//!
//! [`endpoint`] holds where requests go ([`Endpoint`], parsed from the environment's URLs),
//! [`write`] the request itself, and [`arc`] Arc's challenge helpers: [`arc_key_path`] checks
//! the key-file path named by the `WWW-Authenticate` header and [`check_arc_key`] the file's
//! contents.

mod arc;
mod endpoint;
mod write;

pub use arc::{
    arc_key_path, check_arc_key, ArcError, ARC_KEY_DIR_LINUX, ARC_KEY_DIR_WINDOWS, ARC_MAX_KEY_LEN,
};
pub use endpoint::{Endpoint, EndpointError, IMDS_TOKEN_PATH};
pub use write::{write_request, Method, RequestDescriptor, RequestError};

/// A byte of the unreserved set (RFC 3986): never percent-encoded, and all a DNS name holds.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// A byte of visible ASCII (0x21–0x7E): what a path, an Arc key and a header token may hold.
fn is_visible(b: &u8) -> bool {
    (0x21..=0x7e).contains(b)
}

#[cfg(test)]
mod tests;
