//! The std driver over the `imds-cache` core: sockets, the clock, locks, environment
//! detection (D11), a worker pool, a background refresher and fork handling (D12). Rust's
//! blocking API; the C ABI (`imds-cache-ffi`) and the Python wheel are thin skins over it.
//!
//! ```no_run
//! use imds_cache::{Identity, Resource};
//! let client = imds_cache_client::Client::new()?; // endpoint detected from the environment
//! let resource = Resource::from_scopes(&["https://vault.azure.net/.default"])?;
//! let mut buf = [0u8; 16 * 1024];
//! let (len, expires_on) = client.get_token_into(&Identity::SYSTEM, &resource, &mut buf)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! `now` comes from [`ClientConfig::clock`]: the wall clock ([`now_ms`]) unless a test
//! injects a fake one.

mod api;
#[cfg(feature = "azure_core")]
mod azure;
mod clock;
mod config;
mod error;
pub mod events;
mod fetch;
mod fork;
mod future;
mod http;
mod pool;
mod refresher;
mod shared;
mod source;
mod stripes;
#[cfg(feature = "service-fabric-tls")]
mod tls;
mod token;
mod wipe;

pub use api::{Client, Progress};
#[cfg(feature = "azure_core")]
#[cfg_attr(docsrs, doc(cfg(feature = "azure_core")))]
pub use azure::{ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId};
pub use clock::{now_ms, Clock};
pub use config::ClientConfig;
pub use error::{ArcKeyError, Error, TlsError};
pub use events::{Event, Observer};
pub use future::GetToken;
pub use pool::{Callback, OwnedKey};
pub use source::{detect_endpoint, detect_flavour, OwnedEndpoint, SourceSpec};
pub use token::Token;
/// Test-only observers of the buffers a fetch wipes (the `test-hooks` feature).
#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub use wipe::{hooks as test_hooks, BufferKind};
