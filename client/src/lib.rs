//! The std driver over the `imds-cache` core: sockets, the clock, locks, environment
//! detection (D11), a worker pool, a background refresher and fork handling (D12). Rust's
//! blocking API; the C ABI (`imds-cache-ffi`) and the Python wheel are thin skins over it.
//!
//! Blocking, into the caller's buffer (a hit allocates nothing):
//!
//! ```no_run
//! use imds_cache::{Identity, Resource};
//! let client = imds_cache_client::Client::new()?; // endpoint detected from the environment
//! let resource = Resource::from_scopes(&["https://vault.azure.net/.default"])?;
//! let mut buf = [0u8; 16 * 1024];
//! let (len, expires_on_s) = client.get_token_into(&Identity::SYSTEM, &resource, &mut buf)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Async, on any executor: the crate starts no runtime; fetches run on the client's worker
//! threads and wake the task when they end.
//!
//! ```no_run
//! use imds_cache::{Identity, Resource};
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = imds_cache_client::Client::new()?;
//! let resource = Resource::from_scopes(&["https://vault.azure.net/.default"])?;
//! let token = client.get_token_async(&Identity::SYSTEM, &resource).await?;
//! println!("{token:?}"); // the length and the expiry, never the token
//! # Ok(()) }
//! ```
//!
#![cfg_attr(
    feature = "azure_core",
    doc = r#"
As the Azure SDK for Rust's credential (feature `azure_core`), where an SDK client takes an
`Arc<dyn TokenCredential>`:

```no_run
use std::sync::Arc;
use azure_core::credentials::TokenCredential;
use imds_cache_client::{ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId};
# async fn run() -> azure_core::Result<()> {
let options = ManagedIdentityCredentialOptions {
    user_assigned_id: Some(UserAssignedId::ClientId("00000000-0000-0000-0000-000000000001".into())),
    ..Default::default()
};
let credential: Arc<dyn TokenCredential> = ManagedIdentityCredential::new(Some(options))?;
let token = credential.get_token(&["https://storage.azure.com/.default"], None).await?;
# let _ = token; Ok(()) }
```
"#
)]
//!
//! `now_ms` comes from [`ClientConfig::clock`]: the wall clock ([`now_ms`]) unless a test
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
#[cfg(target_os = "linux")]
mod host;
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
pub use config::{ClientConfig, Share};
pub use error::{ArcKeyError, Error, TlsError};
pub use events::{Event, Observer};
pub use future::GetToken;
/// Test-only views of a client's host table (the `test-hooks` feature).
#[cfg(all(feature = "test-hooks", target_os = "linux"))]
#[doc(hidden)]
pub use host::hooks as host_hooks;
pub use pool::{Callback, OwnedKey};
pub use source::{detect_endpoint, detect_flavour, OwnedEndpoint, SourceSpec};
pub use token::Token;
/// Test-only observers of the buffers a fetch wipes (the `test-hooks` feature).
#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub use wipe::{hooks as test_hooks, BufferKind};
