//! Where the token endpoint is: an [`Endpoint`] from a URL or an IMDS authority, checked.

use core::fmt;

use super::is_unreserved;
use crate::identity::Flavour;

/// The token path of IMDS (and of Arc's HIMDS and an `AZURE_POD_IDENTITY_AUTHORITY_HOST`).
pub const IMDS_TOKEN_PATH: &str = "/metadata/identity/oauth2/token";

/// Why an endpoint URL or authority was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndpointError {
    /// The scheme is not `http://` or `https://`.
    UnsupportedScheme,
    /// The URL has no host.
    MissingHost,
    /// The host is not a DNS name, an IPv4 address or a bracketed IPv6 address.
    InvalidHost,
    /// The port is empty, not a number, 0 or above 65535.
    InvalidPort,
    /// The URL carries user information (`user@host`).
    UserInfo,
    /// The URL carries a query (`?`) or a fragment (`#`).
    QueryOrFragment,
    /// The path contains a space, a control character or a non-ASCII byte.
    InvalidPath,
    /// An IMDS authority has a path; only `scheme://host[:port]` with an optional `/` is allowed.
    AuthorityHasPath,
}

impl EndpointError {
    /// A short description of the error.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::UnsupportedScheme => "endpoint scheme is not http or https",
            Self::MissingHost => "endpoint URL has no host",
            Self::InvalidHost => "endpoint host is not a DNS name or an IP address",
            Self::InvalidPort => "endpoint port is not a number from 1 to 65535",
            Self::UserInfo => "endpoint URL carries user information",
            Self::QueryOrFragment => "endpoint URL carries a query or a fragment",
            Self::InvalidPath => "endpoint path contains a space, control or non-ASCII character",
            Self::AuthorityHasPath => "IMDS authority has a path (only scheme://host[:port])",
        }
    }
}

impl fmt::Display for EndpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl core::error::Error for EndpointError {}

/// Where the token endpoint is, and the per-endpoint values that go into its requests.
///
/// Built from a URL ([`Endpoint::from_url`], for `IDENTITY_ENDPOINT` / `MSI_ENDPOINT` values
/// such as `http://localhost:4141/MSI/token`), from an IMDS authority
/// ([`Endpoint::imds_authority`], for `AZURE_POD_IDENTITY_AUTHORITY_HOST`), or taken from the
/// constants [`Endpoint::IMDS`] and [`Endpoint::VM_EXTENSION`]. The fields are public;
/// [`write_request`](crate::write_request) checks the host and path again before it writes them.
///
/// `Debug` shows whether a secret is set, never its value.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Endpoint<'a> {
    /// The wire form the endpoint speaks.
    pub flavour: Flavour,
    /// The host to connect to: a DNS name, an IPv4 address, or an IPv6 address without its
    /// brackets (the `Host` header adds them).
    pub host: &'a str,
    /// The TCP port.
    pub port: u16,
    /// Whether the connection uses TLS (`https`).
    pub tls: bool,
    /// The request path, starting with `/`, without query.
    pub path: &'a str,
    /// IDENTITY_HEADER / MSI_SECRET value, read by the driver when the request is built.
    pub secret: Option<&'a str>,
    /// Azure ML's DEFAULT_IDENTITY_CLIENT_ID: sent as `clientid` for the system identity on Msi2017.
    pub default_client_id: Option<&'a str>,
}

impl fmt::Debug for Endpoint<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("flavour", &self.flavour)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("path", &self.path)
            .field("secret", &self.secret.map(|_| "<redacted>"))
            .field("default_client_id", &self.default_client_id)
            .finish()
    }
}

/// `scheme://host:port/path` (IPv6 hosts in brackets): what an error message names. Never
/// the secret.
impl fmt::Display for Endpoint<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}{}", self.host, self.port, self.path)
        } else {
            write!(f, "{scheme}://{}:{}{}", self.host, self.port, self.path)
        }
    }
}

impl Endpoint<'static> {
    /// IMDS on VMs and scale sets: `http://169.254.169.254/metadata/identity/oauth2/token`.
    pub const IMDS: Endpoint<'static> = Endpoint {
        flavour: Flavour::Imds,
        host: "169.254.169.254",
        port: 80,
        tls: false,
        path: IMDS_TOKEN_PATH,
        secret: None,
        default_client_id: None,
    };

    /// The retired VM extension: `http://localhost:50342/oauth2/token`.
    pub const VM_EXTENSION: Endpoint<'static> = Endpoint {
        flavour: Flavour::VmExtension,
        host: "localhost",
        port: 50342,
        tls: false,
        path: "/oauth2/token",
        secret: None,
        default_client_id: None,
    };
}

impl<'a> Endpoint<'a> {
    /// An endpoint from a URL: `http` or `https` (any case), a host (a bracketed IPv6 address
    /// is accepted), an optional port (default 80 or 443) and an optional path (default `/`).
    /// A query, a fragment or user information is refused. `secret` and `default_client_id`
    /// start as `None`.
    ///
    /// ```
    /// use imds_cache::{Endpoint, Flavour};
    /// let e = Endpoint::from_url(Flavour::AppService2019, "http://localhost:4141/MSI/token").unwrap();
    /// assert_eq!((e.host, e.port, e.path, e.tls), ("localhost", 4141, "/MSI/token", false));
    /// ```
    pub fn from_url(flavour: Flavour, url: &'a str) -> Result<Self, EndpointError> {
        let (tls, rest) = if let Some(rest) = strip_prefix_ignore_case(url, "http://") {
            (false, rest)
        } else if let Some(rest) = strip_prefix_ignore_case(url, "https://") {
            (true, rest)
        } else {
            return Err(EndpointError::UnsupportedScheme);
        };
        if rest.bytes().any(|b| b == b'?' || b == b'#') {
            return Err(EndpointError::QueryOrFragment);
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if !valid_path(path) {
            return Err(EndpointError::InvalidPath);
        }
        let (host, port) = parse_authority(authority, if tls { 443 } else { 80 })?;
        Ok(Endpoint {
            flavour,
            host,
            port,
            tls,
            path,
            secret: None,
            default_client_id: None,
        })
    }

    /// An IMDS endpoint at an authority `scheme://host[:port]`, as given by
    /// `AZURE_POD_IDENTITY_AUTHORITY_HOST`: trailing `/`s are stripped and the path
    /// `/metadata/identity/oauth2/token` is used. Any other path is refused
    /// ([`EndpointError::AuthorityHasPath`]).
    ///
    /// ```
    /// use imds_cache::Endpoint;
    /// let e = Endpoint::imds_authority("http://127.0.0.1:8080/").unwrap();
    /// assert_eq!((e.host, e.port, e.path), ("127.0.0.1", 8080, "/metadata/identity/oauth2/token"));
    /// ```
    pub fn imds_authority(authority: &'a str) -> Result<Self, EndpointError> {
        let trimmed = authority.trim_end_matches('/');
        let mut endpoint = Self::from_url(Flavour::Imds, trimmed)?;
        if endpoint.path != "/" {
            return Err(EndpointError::AuthorityHasPath);
        }
        endpoint.path = IMDS_TOKEN_PATH;
        Ok(endpoint)
    }
}

fn strip_prefix_ignore_case<'s>(s: &'s str, prefix: &str) -> Option<&'s str> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

/// `host[:port]` or `[v6][:port]` into the connect host and the port.
fn parse_authority(authority: &str, default_port: u16) -> Result<(&str, u16), EndpointError> {
    if authority.contains('@') {
        return Err(EndpointError::UserInfo);
    }
    if authority.is_empty() {
        return Err(EndpointError::MissingHost);
    }
    let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
        let end = inner.find(']').ok_or(EndpointError::InvalidHost)?;
        let host = &inner[..end];
        let after = &inner[end + 1..];
        let port = if after.is_empty() {
            None
        } else {
            Some(after.strip_prefix(':').ok_or(EndpointError::InvalidHost)?)
        };
        if !host.contains(':') {
            return Err(EndpointError::InvalidHost);
        }
        (host, port)
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(EndpointError::MissingHost);
    }
    if !valid_host(host) {
        return Err(EndpointError::InvalidHost);
    }
    let port = match port {
        None => default_port,
        Some(p) => parse_port(p).ok_or(EndpointError::InvalidPort)?,
    };
    Ok((host, port))
}

fn parse_port(p: &str) -> Option<u16> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = p.bytes().fold(0u32, |n, b| n * 10 + u32::from(b - b'0'));
    match u16::try_from(n) {
        Ok(0) | Err(_) => None,
        Ok(port) => Some(port),
    }
}

/// A DNS name / IPv4 address (`A-Z a-z 0-9 - . _ ~`), or an IPv6 address without brackets
/// (hex digits, `:` and `.`, with at least one `:`).
pub(super) fn valid_host(host: &str) -> bool {
    if host.is_empty() {
        return false;
    }
    if host.contains(':') {
        host.bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
    } else {
        host.bytes().all(is_unreserved)
    }
}

/// A request path: starts with `/`, visible ASCII only, no `?` or `#`.
pub(super) fn valid_path(path: &str) -> bool {
    path.starts_with('/')
        && path
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b'?' && b != b'#')
}
