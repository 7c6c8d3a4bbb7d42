//! What a C configuration holds, in the ABI's own terms: the sans-IO handle is made from it
//! directly, the blocking handle from the driver's `ClientConfig` that `imds_cache_new` turns
//! it into.

use std::fmt;
use std::time::Duration;

use ::imds_cache::{Config, Endpoint, EndpointError, Flavour};
use imds_cache_client::{ClientConfig, OwnedEndpoint, Share, SourceSpec};

/// IMDS's authority when none is given.
pub(crate) const IMDS_AUTHORITY: &str = "http://169.254.169.254";

/// The contents of an `imds_cache_config`. Always valid: the setters refuse a value that
/// would make it otherwise.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    /// The core's policy (budget, lease, backoff, limits).
    pub(crate) cache: Config,
    /// Entries the cache holds.
    pub(crate) capacity: usize,
    /// Arena bytes per entry, on average.
    pub(crate) bytes_per_entry: usize,
    /// The endpoint set explicitly; `None`: detected from the environment by
    /// `imds_cache_new`, IMDS for the sans-IO handle (which reads no environment).
    pub(crate) endpoint: Option<EndpointSpec>,
    /// The blocking handle's overall deadline per call.
    pub(crate) deadline: Duration,
    /// The blocking handle's connect timeout per attempt.
    pub(crate) connect_timeout: Duration,
    /// The blocking handle's read time per attempt.
    pub(crate) attempt_timeout: Duration,
    /// Whether the blocking handle runs a refresher thread.
    pub(crate) refresher: bool,
    /// Whether the blocking handle's table and budget are the process's or the host's.
    pub(crate) share: Share,
}

/// An endpoint given explicitly: the URL is the token URL, or IMDS's authority.
#[derive(Clone)]
pub(crate) struct EndpointSpec {
    pub(crate) flavour: Flavour,
    pub(crate) url: String,
    /// `IDENTITY_HEADER` / `MSI_SECRET`.
    pub(crate) secret: Option<String>,
    /// Azure ML's `DEFAULT_IDENTITY_CLIENT_ID`.
    pub(crate) default_client_id: Option<String>,
}

/// The secret is never shown.
impl fmt::Debug for EndpointSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointSpec")
            .field("flavour", &self.flavour)
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("default_client_id", &self.default_client_id)
            .finish()
    }
}

/// The driver's defaults (DESIGN.md), which the C API documents as its own.
impl Default for Settings {
    fn default() -> Self {
        let d = ClientConfig::default();
        Self {
            cache: d.cache,
            capacity: d.capacity,
            bytes_per_entry: d.bytes_per_entry,
            endpoint: None,
            deadline: d.deadline,
            connect_timeout: d.connect_timeout,
            attempt_timeout: d.attempt_timeout,
            refresher: d.refresher,
            share: d.share,
        }
    }
}

impl Settings {
    /// The blocking driver's configuration (for `imds_cache_new` only).
    pub(crate) fn client_config(&self) -> ClientConfig {
        let source = match &self.endpoint {
            None => SourceSpec::Auto,
            Some(e) => SourceSpec::Explicit(OwnedEndpoint {
                flavour: e.flavour,
                url: e.url.clone(),
                secret: e.secret.clone(),
                default_client_id: e.default_client_id.clone(),
            }),
        };
        ClientConfig {
            cache: self.cache.clone(),
            capacity: self.capacity,
            bytes_per_entry: self.bytes_per_entry,
            source,
            deadline: self.deadline,
            connect_timeout: self.connect_timeout,
            attempt_timeout: self.attempt_timeout,
            refresher: self.refresher,
            share: self.share,
            ..ClientConfig::default()
        }
    }

    /// The endpoint's parts for the sans-IO handle (IMDS when none is set).
    pub(crate) fn endpoint_parts(&self) -> (Flavour, &str, Option<&str>, Option<&str>) {
        match &self.endpoint {
            Some(e) => (
                e.flavour,
                &e.url,
                e.secret.as_deref(),
                e.default_client_id.as_deref(),
            ),
            None => (Flavour::Imds, "", None, None),
        }
    }
}

/// The core's endpoint from its parts (TLS allowed: a sans-IO caller may speak it).
pub(crate) fn endpoint_of<'a>(
    flavour: Flavour,
    url: &'a str,
    secret: Option<&'a str>,
    default_client_id: Option<&'a str>,
) -> Result<Endpoint<'a>, EndpointError> {
    let mut e = match flavour {
        Flavour::Imds if url.is_empty() => Endpoint::IMDS,
        Flavour::Imds => Endpoint::imds_authority(url)?,
        Flavour::VmExtension if url.is_empty() => Endpoint::VM_EXTENSION,
        _ => Endpoint::from_url(flavour, url)?,
    };
    e.secret = secret;
    e.default_client_id = default_client_id;
    Ok(e)
}
