//! The std driver over the `imds-cache` core: sockets, the wall clock, locks, a background
//! refresher, and (in the C ABI issue) the C functions over it.
//!
//! ```no_run
//! use imds_cache::{Identity, Resource};
//! let client = imds_cache_ffi::Client::new()?; // endpoint detected from the environment
//! let resource = Resource::from_scopes(&["https://vault.azure.net/.default"])?;
//! let mut buf = [0u8; 16 * 1024];
//! let (len, expires_on) = client.get_token_into(&Identity::SYSTEM, &resource, &mut buf)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod capi;
mod client;
mod error;
pub mod events;
mod fork;
mod http;
mod source;

pub use client::{Callback, Client, ClientConfig, OwnedKey, Progress};
pub use error::Error;
pub use events::{Event, Observer};
pub use source::{detect_flavour, OwnedEndpoint, SourceSpec};
