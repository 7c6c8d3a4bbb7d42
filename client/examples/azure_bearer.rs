//! Our credential where the Azure SDK for Rust wants one: an `Arc<dyn TokenCredential>` behind
//! azure_core's `BearerTokenAuthorizationPolicy`, which authorizes a request to Key Vault.
//!
//! The endpoint comes from the environment as on Azure; against the bundled emulator:
//!
//! ```text
//! cargo run --release -p imds-emulator -- --port 8079 &
//! AZURE_POD_IDENTITY_AUTHORITY_HOST=http://127.0.0.1:8079 \
//!     cargo run -p imds-cache-client --features azure_core --example azure_bearer
//! ```
//!
//! The last policy stands in for a transport (an SDK client brings its own): it shows what
//! would be sent, the header's scheme and length, never the token.

use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use azure_core::http::headers::{Headers, AUTHORIZATION};
use azure_core::http::policies::auth::BearerTokenAuthorizationPolicy;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{AsyncRawResponse, Context, Method, Request, StatusCode, Url};
use imds_cache_client::ManagedIdentityCredential;

/// Prints the request instead of sending it.
#[derive(Debug)]
struct ShowRequest;

#[async_trait::async_trait]
impl Policy for ShowRequest {
    async fn send(
        &self,
        _: &Context,
        request: &mut Request,
        _: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let auth = request
            .headers()
            .get_optional_str(&AUTHORIZATION)
            .unwrap_or("");
        let (scheme, token) = auth.split_once(' ').unwrap_or(("none", ""));
        println!(
            "{} {}: Authorization: {scheme} <{} bytes>",
            request.method(),
            request.url(),
            token.len()
        );
        Ok(AsyncRawResponse::from_bytes(
            StatusCode::Ok,
            Headers::new(),
            Vec::new(),
        ))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The system-assigned identity; `ManagedIdentityCredentialOptions::user_assigned_id` picks
    // a user-assigned one, as in azure_identity.
    let credential: Arc<dyn TokenCredential> = ManagedIdentityCredential::new(None)?;
    let policies: Vec<Arc<dyn Policy>> = vec![
        Arc::new(BearerTokenAuthorizationPolicy::new(
            credential,
            ["https://vault.azure.net/.default"],
        )),
        Arc::new(ShowRequest),
    ];
    let url = Url::parse("https://example.vault.azure.net/secrets/db-password?api-version=7.4")?;
    // Any executor drives it; the credential brings no runtime.
    futures::executor::block_on(async {
        for _ in 0..3 {
            let mut request = Request::new(url.clone(), Method::Get);
            policies[0]
                .send(&Context::new(), &mut request, &policies[1..])
                .await?;
        }
        Ok::<_, azure_core::Error>(())
    })?;
    Ok(())
}
