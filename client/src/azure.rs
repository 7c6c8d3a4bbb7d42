//! [`ManagedIdentityCredential`]: the client as azure_core's [`TokenCredential`], for the Azure
//! SDK for Rust (feature `azure_core`; azure_core 1.x needs Rust 1.88 or later).
//!
//! Its names follow azure_identity's `ManagedIdentityCredential` (`new(Option<options>)`,
//! `user_assigned_id: Option<UserAssignedId>`), so switching is a change of import. Unlike
//! azure_identity's, every credential built without a client of its own shares one cache in
//! the process, a hit takes no async lock, and no scope's fetch holds up another scope.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use azure_core::credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions};
use azure_core::error::ErrorKind;
use azure_core::time::OffsetDateTime;
use imds_cache::{Identity, IdentityKind, Resource};
use parking_lot::Mutex;

use crate::{Client, Error};

/// A user-assigned identity, by one of its three names (azure_identity's spellings).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UserAssignedId {
    /// The client (application) id, a GUID.
    ClientId(String),
    /// The object (principal) id, a GUID.
    ObjectId(String),
    /// The ARM resource id
    /// (`/subscriptions/…/resourceGroups/…/providers/Microsoft.ManagedIdentity/userAssignedIdentities/…`).
    ResourceId(String),
}

/// How a [`ManagedIdentityCredential`] is built.
#[derive(Clone, Debug, Default)]
pub struct ManagedIdentityCredentialOptions {
    /// The user-assigned identity to ask for; `None` is the system-assigned identity.
    pub user_assigned_id: Option<UserAssignedId>,
    /// The client (and so the cache) tokens come from; `None` is one client per process,
    /// shared by every credential built without one, its endpoint read from the environment.
    pub client: Option<Arc<Client>>,
}

/// Tokens of one managed identity for the Azure SDK for Rust: an azure_core
/// [`TokenCredential`] over a [`Client`]. The scope is turned into a resource by the
/// `/.default` rule (exactly one scope); a hit is answered on the first poll.
pub struct ManagedIdentityCredential {
    client: Arc<Client>,
    kind: IdentityKind,
    /// The selector text (empty for the system identity); checked when the credential is built.
    value: String,
}

/// The identity and the client; never a token.
impl fmt::Debug for ManagedIdentityCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagedIdentityCredential")
            .field("identity", &self.identity())
            .field("client", &self.client)
            .finish()
    }
}

/// The client credentials share when they are given none, made on first use. A failure is not
/// kept: the next credential tries again (the environment may have been fixed meanwhile).
static SHARED_CLIENT: Mutex<Option<Arc<Client>>> = Mutex::new(None);

fn shared_client() -> Result<Arc<Client>, Error> {
    let mut shared = SHARED_CLIENT.lock();
    if let Some(client) = &*shared {
        return Ok(client.clone());
    }
    let client = Arc::new(Client::new()?);
    *shared = Some(client.clone());
    Ok(client)
}

impl ManagedIdentityCredential {
    /// A credential for the identity `options` names (the system-assigned one by default). A
    /// malformed selector, or no client to be had from the environment, is an error of kind
    /// [`ErrorKind::Credential`] here, not at the first `get_token`.
    pub fn new(options: Option<ManagedIdentityCredentialOptions>) -> azure_core::Result<Arc<Self>> {
        let options = options.unwrap_or_default();
        let (kind, value) = match options.user_assigned_id {
            None => (IdentityKind::System, String::new()),
            Some(UserAssignedId::ClientId(id)) => (IdentityKind::ClientId, id),
            Some(UserAssignedId::ObjectId(id)) => (IdentityKind::ObjectId, id),
            Some(UserAssignedId::ResourceId(id)) => (IdentityKind::ResourceId, id),
        };
        Identity::new(kind, &value).map_err(|e| credential_error(Error::Identity(e), None))?;
        let client = match options.client {
            Some(client) => client,
            None => shared_client().map_err(|e| credential_error(e, None))?,
        };
        Ok(Arc::new(Self {
            client,
            kind,
            value,
        }))
    }

    /// The client tokens come from (for its statistics, or to invalidate a token).
    pub fn client(&self) -> &Arc<Client> {
        &self.client
    }

    fn identity(&self) -> Identity<'_> {
        // Checked in `new`; the system identity if it ever were not.
        Identity::new(self.kind, &self.value).unwrap_or(Identity::SYSTEM)
    }
}

/// `error` for azure_core, with the client's explanation (identity, endpoint) as its message
/// and the error itself as its source.
fn credential_error(error: Error, explained: Option<String>) -> azure_core::Error {
    let message = explained.unwrap_or_else(|| error.to_string());
    azure_core::Error::with_error(ErrorKind::Credential, error, message)
}

/// The owned form azure_core wants, from the token's bytes. The `String` inside the
/// [`Secret`] is azure_core's to keep; the bytes given are ours, wiped by the caller.
fn access_token(bytes: &[u8], expires_on_s: u64) -> azure_core::Result<AccessToken> {
    let text = std::str::from_utf8(bytes).map_err(|_| {
        azure_core::Error::with_message(ErrorKind::DataConversion, "the token is not UTF-8")
    })?;
    let expires_on = i64::try_from(expires_on_s)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .ok_or_else(|| {
            azure_core::Error::with_message(ErrorKind::DataConversion, "expires_on out of range")
        })?;
    Ok(AccessToken::new(Secret::new(text.to_owned()), expires_on))
}

#[async_trait]
impl TokenCredential for ManagedIdentityCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let resource = Resource::from_scopes(scopes)
            .map_err(|e| credential_error(Error::Resource(e), None))?;
        let identity = self.identity();
        // A hit: the token goes from the table to azure_core's String with one copy between.
        if let Some(token) = self.client.peek_with(&identity, &resource, access_token) {
            return token;
        }
        match self.client.get_token_async(&identity, &resource).await {
            Ok(token) => access_token(token.secret(), token.expires_on_s()),
            Err(e) => {
                let explained = self.client.explain(&e, &identity);
                Err(credential_error(e, Some(explained)))
            }
        }
    }
}
