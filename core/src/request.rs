//! Requests to the token endpoint, written into a caller buffer (D6).
//!
//! [`write_request`] writes the request line, the headers and any body for one endpoint
//! flavour into a caller buffer and answers a [`RequestDescriptor`] that says where to send
//! it. Every query value is percent-encoded (everything but the unreserved set
//! `A-Z a-z 0-9 - . _ ~`), every header value that comes from outside (secrets, Arc's key) is
//! checked for CR/LF and control characters, and a short buffer is reported with the exact
//! size needed, never filled with a partial request that looks complete.
//!
//! The module also holds Arc's challenge helpers: [`arc_key_path`] checks the key-file path
//! named by the `WWW-Authenticate` header and [`check_arc_key`] the file's contents.

use core::fmt;

use crate::identity::{Flavour, Identity, IdentityKind, Resource};

/// The `User-Agent` sent with every request.
const USER_AGENT: &str = concat!("imds-cache/", env!("CARGO_PKG_VERSION"));

/// The token path of IMDS (and of Arc's HIMDS and an `AZURE_POD_IDENTITY_AUTHORITY_HOST`).
pub const IMDS_TOKEN_PATH: &str = "/metadata/identity/oauth2/token";

/// The HTTP method of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// `GET` (every flavour but Cloud Shell).
    Get,
    /// `POST` with a form body (Cloud Shell).
    Post,
}

impl Method {
    /// The method as written in the request line.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

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
/// [`write_request`] checks the host and path again before it writes them.
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
fn valid_host(host: &str) -> bool {
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
fn valid_path(path: &str) -> bool {
    path.starts_with('/')
        && path
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b'?' && b != b'#')
}

/// Where and how to send the request written by [`write_request`] (D6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestDescriptor<'a> {
    /// The host to connect to (an IPv6 address without brackets).
    pub host: &'a str,
    /// The TCP port to connect to.
    pub port: u16,
    /// Whether to speak TLS (always true for Service Fabric).
    pub tls: bool,
    /// The request method (already written into the request bytes).
    pub method: Method,
    /// Bytes written into `out`: the request line, the headers and any body.
    pub len: usize,
}

/// Why a request could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestError {
    /// The output buffer is too short; `needed` is the exact size of the whole request.
    BufferTooSmall {
        /// The number of bytes the request takes.
        needed: usize,
    },
    /// This endpoint flavour cannot select a user-assigned identity this way.
    UnsupportedSelector,
    /// The flavour needs a secret header (IDENTITY_HEADER / MSI_SECRET) and none, or an empty one, was given.
    MissingSecret,
    /// The secret contains a control character, CR/LF, a non-ASCII byte, or leading/trailing spaces.
    InvalidHeaderValue,
    /// Service Fabric must be reached over `https`.
    NeedsTls,
    /// The Arc key is empty, longer than 4096 bytes, or not visible ASCII.
    InvalidAuthorization,
    /// An Arc key was given for a flavour other than Arc.
    UnexpectedAuthorization,
    /// DEFAULT_IDENTITY_CLIENT_ID is not a GUID.
    InvalidDefaultClientId,
    /// The endpoint's host or path cannot be written into a request.
    InvalidEndpoint,
}

impl RequestError {
    /// A short description of the error.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::BufferTooSmall { .. } => "request buffer too small",
            Self::UnsupportedSelector => "this endpoint cannot select the identity this way",
            Self::MissingSecret => "endpoint needs a secret header and none was given",
            Self::InvalidHeaderValue => "secret header value contains a forbidden character",
            Self::NeedsTls => "Service Fabric endpoint must use https",
            Self::InvalidAuthorization => "Arc key is empty, too long or not visible ASCII",
            Self::UnexpectedAuthorization => "an Arc key was given for a non-Arc endpoint",
            Self::InvalidDefaultClientId => "DEFAULT_IDENTITY_CLIENT_ID is not a GUID",
            Self::InvalidEndpoint => "endpoint host or path cannot be written into a request",
        }
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BufferTooSmall { needed } => {
                write!(f, "request buffer too small ({needed} bytes needed)")
            }
            other => f.write_str(other.as_str()),
        }
    }
}

impl core::error::Error for RequestError {}

/// What differs between flavours, decided and checked before anything is written.
struct Plan<'x> {
    method: Method,
    api_version: Option<&'static str>,
    selector: Option<(&'static str, &'x str)>,
    metadata: bool,
    secret: Option<(&'static str, &'x str)>,
    authorization: Option<&'x [u8]>,
}

fn plan<'x>(
    endpoint: &Endpoint<'x>,
    identity: &Identity<'x>,
    authorization: Option<&'x [u8]>,
) -> Result<Plan<'x>, RequestError> {
    use IdentityKind::{ClientId, ObjectId, ResourceId, System};
    let kind = identity.kind();
    let value = identity.value();
    let system_only = |kind: IdentityKind| match kind {
        System => Ok(None),
        _ => Err(RequestError::UnsupportedSelector),
    };
    let need_secret = || -> Result<&'x str, RequestError> {
        let s = endpoint
            .secret
            .filter(|s| !s.is_empty())
            .ok_or(RequestError::MissingSecret)?;
        if valid_secret(s) {
            Ok(s)
        } else {
            Err(RequestError::InvalidHeaderValue)
        }
    };
    if authorization.is_some() && endpoint.flavour != Flavour::Arc {
        return Err(RequestError::UnexpectedAuthorization);
    }
    let mut p = Plan {
        method: Method::Get,
        api_version: None,
        selector: None,
        metadata: false,
        secret: None,
        authorization: None,
    };
    match endpoint.flavour {
        Flavour::Imds => {
            p.api_version = Some("2018-02-01");
            p.metadata = true;
            p.selector = match kind {
                System => None,
                ClientId => Some(("client_id", value)),
                ObjectId => Some(("object_id", value)),
                ResourceId => Some(("msi_res_id", value)),
            };
        }
        Flavour::AppService2019 => {
            p.api_version = Some("2019-08-01");
            p.selector = match kind {
                System => None,
                ClientId => Some(("client_id", value)),
                ObjectId => Some(("principal_id", value)),
                ResourceId => Some(("mi_res_id", value)),
            };
            p.secret = Some(("X-IDENTITY-HEADER", need_secret()?));
        }
        Flavour::Msi2017 => {
            p.api_version = Some("2017-09-01");
            p.selector = match kind {
                System => match endpoint.default_client_id {
                    None => None,
                    Some(id) => {
                        Identity::client_id(id)
                            .map_err(|_| RequestError::InvalidDefaultClientId)?;
                        Some(("clientid", id))
                    }
                },
                ClientId => Some(("clientid", value)),
                ObjectId | ResourceId => return Err(RequestError::UnsupportedSelector),
            };
            p.secret = Some(("secret", need_secret()?));
        }
        Flavour::Arc => {
            p.api_version = Some("2020-06-01");
            p.metadata = true;
            p.selector = system_only(kind)?;
            if let Some(key) = authorization {
                if key.is_empty() || key.len() > ARC_MAX_KEY_LEN || !key.iter().all(is_visible) {
                    return Err(RequestError::InvalidAuthorization);
                }
                p.authorization = Some(key);
            }
        }
        Flavour::CloudShell => {
            p.method = Method::Post;
            p.metadata = true;
            p.selector = system_only(kind)?;
        }
        Flavour::ServiceFabric => {
            if !endpoint.tls {
                return Err(RequestError::NeedsTls);
            }
            p.api_version = Some("2019-07-01-preview");
            p.selector = system_only(kind)?;
            p.secret = Some(("Secret", need_secret()?));
        }
        Flavour::VmExtension => {
            p.metadata = true;
            p.selector = match kind {
                System => None,
                ClientId => Some(("client_id", value)),
                ObjectId => Some(("object_id", value)),
                ResourceId => return Err(RequestError::UnsupportedSelector),
            };
        }
    }
    Ok(p)
}

/// A secret header value: printable ASCII (space allowed inside), no leading/trailing space.
fn valid_secret(s: &str) -> bool {
    let b = s.as_bytes();
    b.iter().all(|&c| (0x20..=0x7e).contains(&c))
        && b.first() != Some(&b' ')
        && b.last() != Some(&b' ')
}

fn is_visible(b: &u8) -> bool {
    (0x21..=0x7e).contains(b)
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Length of `s` once percent-encoded.
fn encoded_len(s: &str) -> usize {
    s.bytes()
        .map(|b| if is_unreserved(b) { 1 } else { 3 })
        .sum()
}

/// Writes into a buffer while it has room and counts every byte, so that a short buffer still
/// yields the exact size needed.
struct Writer<'b> {
    buf: &'b mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        let end = self.pos.saturating_add(bytes.len());
        if let Some(dst) = self.buf.get_mut(self.pos..end) {
            dst.copy_from_slice(bytes);
        }
        self.pos = end;
    }

    fn put_str(&mut self, s: &str) {
        self.put(s.as_bytes());
    }

    fn put_encoded(&mut self, s: &str) {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        for b in s.bytes() {
            if is_unreserved(b) {
                self.put(&[b]);
            } else {
                self.put(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0x0f)]]);
            }
        }
    }

    fn put_decimal(&mut self, mut n: usize) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.put(&digits[i..]);
    }

    fn header(&mut self, name: &str, value: &[u8]) {
        self.put_str(name);
        self.put(b": ");
        self.put(value);
        self.put(b"\r\n");
    }
}

/// Writes the request for `identity` and `resource` to `endpoint` into `out`.
///
/// The request line, the headers (`Host`, the flavour's own headers, `User-Agent`,
/// `Connection: close`) and any body are written as one HTTP/1.1 request; the descriptor says
/// where to send it and how many bytes of `out` it takes. `authorization` is Arc's key-file
/// contents (checked with [`check_arc_key`]) for the second request of its challenge, sent as
/// `Authorization: Basic {key}`; it is an error for any other flavour.
///
/// Every check is made before anything is written. When `out` is too short the answer is
/// [`RequestError::BufferTooSmall`] with the exact size of the request; `out` may then hold a
/// prefix of it, which must not be sent. A buffer of exactly that size succeeds.
///
/// ```
/// use imds_cache::{write_request, Endpoint, Identity, Resource};
/// let mut buf = [0u8; 512];
/// let r = Resource::new("https://management.azure.com").unwrap();
/// let d = write_request(&Endpoint::IMDS, &Identity::SYSTEM, &r, None, &mut buf).unwrap();
/// assert!(buf[..d.len].starts_with(
///     b"GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fmanagement.azure.com HTTP/1.1\r\n"));
/// ```
pub fn write_request<'a>(
    endpoint: &Endpoint<'a>,
    identity: &Identity<'_>,
    resource: &Resource<'_>,
    authorization: Option<&[u8]>,
    out: &mut [u8],
) -> Result<RequestDescriptor<'a>, RequestError> {
    if !valid_host(endpoint.host) || !valid_path(endpoint.path) {
        return Err(RequestError::InvalidEndpoint);
    }
    let p = plan(endpoint, identity, authorization)?;
    let mut w = Writer { buf: out, pos: 0 };

    // Request line.
    w.put_str(p.method.as_str());
    w.put(b" ");
    w.put_str(endpoint.path);
    let mut sep = b'?';
    let mut param = |w: &mut Writer<'_>, name: &str, value: &str, encode: bool| {
        w.put(&[sep]);
        sep = b'&';
        w.put_str(name);
        w.put(b"=");
        if encode {
            w.put_encoded(value);
        } else {
            w.put_str(value);
        }
    };
    if p.method == Method::Get {
        if let Some(v) = p.api_version {
            param(&mut w, "api-version", v, false);
        }
        param(&mut w, "resource", resource.as_str(), true);
        if let Some((name, value)) = p.selector {
            param(&mut w, name, value, true);
        }
    }
    w.put(b" HTTP/1.1\r\n");

    // Host.
    w.put(b"Host: ");
    let v6 = endpoint.host.contains(':');
    if v6 {
        w.put(b"[");
    }
    w.put_str(endpoint.host);
    if v6 {
        w.put(b"]");
    }
    let default_port = if endpoint.tls { 443 } else { 80 };
    if endpoint.port != default_port {
        w.put(b":");
        w.put_decimal(usize::from(endpoint.port));
    }
    w.put(b"\r\n");

    if p.metadata {
        w.header("Metadata", b"true");
    }
    if let Some((name, value)) = p.secret {
        w.header(name, value.as_bytes());
    }
    if let Some(key) = p.authorization {
        w.put(b"Authorization: Basic ");
        w.put(key);
        w.put(b"\r\n");
    }
    let body_len = if p.method == Method::Post {
        let len = "resource=".len() + encoded_len(resource.as_str());
        w.header("Content-Type", b"application/x-www-form-urlencoded");
        w.put(b"Content-Length: ");
        w.put_decimal(len);
        w.put(b"\r\n");
        Some(len)
    } else {
        None
    };
    w.header("User-Agent", USER_AGENT.as_bytes());
    w.header("Connection", b"close");
    w.put(b"\r\n");
    if body_len.is_some() {
        w.put(b"resource=");
        w.put_encoded(resource.as_str());
    }

    if w.pos > w.buf.len() {
        return Err(RequestError::BufferTooSmall { needed: w.pos });
    }
    Ok(RequestDescriptor {
        host: endpoint.host,
        port: endpoint.port,
        tls: endpoint.tls || endpoint.flavour == Flavour::ServiceFabric,
        method: p.method,
        len: w.pos,
    })
}

// ---------------------------------------------------------------------------------------------
// Arc's challenge
// ---------------------------------------------------------------------------------------------

/// The largest Arc key file accepted, in bytes (as every SDK enforces).
pub const ARC_MAX_KEY_LEN: usize = 4096;

/// The directory HIMDS writes its key files to on Linux.
pub const ARC_KEY_DIR_LINUX: &str = "/var/opt/azcmagent/tokens";

/// The directory HIMDS writes its key files to on Windows (`%ProgramData%` expanded to its
/// default value).
pub const ARC_KEY_DIR_WINDOWS: &str = r"C:\ProgramData\AzureConnectedMachineAgent\Tokens";

/// Why Arc's challenge or key file was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ArcError {
    /// The `WWW-Authenticate` scheme is not `Basic`.
    NotBasic,
    /// The challenge is not `Basic realm=<path>` with exactly one `=` and balanced quotes.
    MalformedChallenge,
    /// The path contains a control character or NUL.
    ControlCharacter,
    /// The path is not absolute (`/…` or a drive path `C:\…`).
    RelativePath,
    /// The path has a `.` or `..` component.
    DotComponent,
    /// The file is not directly in the key directory.
    WrongDirectory,
    /// The file name does not end in `.key` or has an empty stem.
    NotAKeyFile,
    /// The key file is empty.
    EmptyKey,
    /// The key file is longer than 4096 bytes.
    KeyTooLong,
    /// The key contains a byte that is not visible ASCII (0x21–0x7E) besides one trailing newline.
    KeyNotPrintable,
}

impl ArcError {
    /// A short description of the error.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::NotBasic => "Arc challenge scheme is not Basic",
            Self::MalformedChallenge => "Arc challenge is not Basic realm=<path>",
            Self::ControlCharacter => "Arc key path contains a control character",
            Self::RelativePath => "Arc key path is not absolute",
            Self::DotComponent => "Arc key path has a . or .. component",
            Self::WrongDirectory => "Arc key file is not in the key directory",
            Self::NotAKeyFile => "Arc key file name does not end in .key",
            Self::EmptyKey => "Arc key file is empty",
            Self::KeyTooLong => "Arc key file is longer than 4096 bytes",
            Self::KeyNotPrintable => "Arc key contains a byte that is not visible ASCII",
        }
    }
}

impl fmt::Display for ArcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl core::error::Error for ArcError {}

/// Whether `dir` is a Windows path: it starts with a drive (`C:`) or contains a `\`.
fn is_windows_dir(dir: &str) -> bool {
    let b = dir.as_bytes();
    (b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':') || b.contains(&b'\\')
}

/// A path is absolute when it starts with `/` (Unix) or with a drive, `C:\` or `C:/`
/// (Windows). On Windows, UNC and drive-relative paths (`\\server\…`, `\dir`) are refused.
fn is_absolute(path: &str, windows: bool) -> bool {
    let b = path.as_bytes();
    if windows {
        b.len() >= 3
            && b[0].is_ascii_alphabetic()
            && b[1] == b':'
            && (b[2] == b'\\' || b[2] == b'/')
    } else {
        b.first() == Some(&b'/')
    }
}

/// The key-file path of Arc's challenge, checked against the key directory.
///
/// `www_authenticate` is the header value, `Basic realm=<path>`: the scheme is compared
/// without case, the value must hold exactly one `=` (the split point), spaces around the
/// parts are trimmed and one pair of surrounding double quotes is stripped. The path must be
/// absolute, free of control characters and of `.`/`..` components, name a file directly in
/// `key_dir` (the parent folder compared exactly, byte for byte; `/` and `\` both count as
/// separators, so [`ARC_KEY_DIR_WINDOWS`] works), and end in `.key` with a non-empty stem.
///
/// ```
/// use imds_cache::{arc_key_path, ARC_KEY_DIR_LINUX};
/// let p = arc_key_path("Basic realm=/var/opt/azcmagent/tokens/a1b2.key", ARC_KEY_DIR_LINUX);
/// assert_eq!(p, Ok("/var/opt/azcmagent/tokens/a1b2.key"));
/// ```
pub fn arc_key_path<'h>(www_authenticate: &'h str, key_dir: &str) -> Result<&'h str, ArcError> {
    let value = www_authenticate.trim_matches(' ');
    let (scheme, params) = value.split_once(' ').ok_or(ArcError::MalformedChallenge)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(ArcError::NotBasic);
    }
    if params.bytes().filter(|&b| b == b'=').count() != 1 {
        return Err(ArcError::MalformedChallenge);
    }
    let (name, path) = params.split_once('=').ok_or(ArcError::MalformedChallenge)?;
    if !name.trim_matches(' ').eq_ignore_ascii_case("realm") {
        return Err(ArcError::MalformedChallenge);
    }
    let mut path = path.trim_matches(' ');
    if let Some(inner) = path.strip_prefix('"') {
        path = inner
            .strip_suffix('"')
            .ok_or(ArcError::MalformedChallenge)?;
    } else if path.ends_with('"') {
        return Err(ArcError::MalformedChallenge);
    }
    if path.is_empty() {
        return Err(ArcError::MalformedChallenge);
    }
    if path.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err(ArcError::ControlCharacter);
    }
    let windows = is_windows_dir(key_dir);
    let is_sep = |c: char| c == '/' || (windows && c == '\\');
    if !is_absolute(path, windows) {
        return Err(ArcError::RelativePath);
    }
    if path.split(is_sep).any(|c| c == "." || c == "..") {
        return Err(ArcError::DotComponent);
    }
    let dir = key_dir.strip_suffix(is_sep).unwrap_or(key_dir);
    let cut = path.rfind(is_sep).ok_or(ArcError::RelativePath)?;
    let (parent, file) = (&path[..cut], &path[cut + 1..]);
    if dir.is_empty() || parent != dir {
        return Err(ArcError::WrongDirectory);
    }
    // Unix: a `\` in a name is a plain character, but no key file has one. Windows: a `:`
    // would name an alternate data stream.
    if file.contains('\\') || (windows && file.contains(':')) {
        return Err(ArcError::NotAKeyFile);
    }
    match file.strip_suffix(".key") {
        Some(stem) if !stem.is_empty() => Ok(path),
        _ => Err(ArcError::NotAKeyFile),
    }
}

/// Checks the contents of Arc's key file and returns the key to send.
///
/// Empty or longer than [`ARC_MAX_KEY_LEN`] bytes is an error; one trailing `\n` or `\r\n` is
/// trimmed; what remains must be non-empty visible ASCII (0x21–0x7E), so that it cannot break
/// out of the `Authorization` header.
pub fn check_arc_key(contents: &[u8]) -> Result<&[u8], ArcError> {
    if contents.is_empty() {
        return Err(ArcError::EmptyKey);
    }
    if contents.len() > ARC_MAX_KEY_LEN {
        return Err(ArcError::KeyTooLong);
    }
    let key = contents
        .strip_suffix(b"\r\n")
        .or_else(|| contents.strip_suffix(b"\n"))
        .unwrap_or(contents);
    if key.is_empty() {
        return Err(ArcError::EmptyKey);
    }
    if !key.iter().all(is_visible) {
        return Err(ArcError::KeyNotPrintable);
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    const UA: &str = concat!("User-Agent: imds-cache/", env!("CARGO_PKG_VERSION"), "\r\n");
    const CID: &str = "fe83865b-495e-4ec7-9574-12b264882c9f";
    const OID: &str = "5e29463d-71da-4fe0-8e69-999b57db23b0";
    const RID: &str = "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1";
    const RID_ENC: &str = "%2Fsubscriptions%2F0000%2FresourceGroups%2Frg%2Fproviders%2FMicrosoft.ManagedIdentity%2FuserAssignedIdentities%2Fid1";
    const ARM: &str = "https://management.azure.com/";
    const SECRET: &str = "853b9a84-5bfa-4b22-a3f3-0b9a43d9ad8a";

    fn ep(flavour: Flavour, url: &'static str) -> Endpoint<'static> {
        let mut e = Endpoint::from_url(flavour, url).unwrap();
        e.secret = Some(SECRET);
        e
    }

    fn id(kind: IdentityKind) -> Identity<'static> {
        let v = match kind {
            IdentityKind::System => "",
            IdentityKind::ClientId => CID,
            IdentityKind::ObjectId => OID,
            IdentityKind::ResourceId => RID,
        };
        Identity::new(kind, v).unwrap()
    }

    fn write(
        e: &Endpoint<'_>,
        kind: IdentityKind,
        auth: Option<&[u8]>,
    ) -> Result<std::string::String, RequestError> {
        let mut buf = [0u8; 8192];
        let r = Resource::new(ARM).unwrap();
        let d = write_request(e, &id(kind), &r, auth, &mut buf)?;
        assert_eq!(d.host, e.host);
        assert_eq!(d.port, e.port);
        Ok(std::string::String::from_utf8(buf[..d.len].to_vec()).unwrap())
    }

    /// Header lines common to every request, after the flavour's own.
    fn tail() -> std::string::String {
        std::format!("{UA}Connection: close\r\n\r\n")
    }

    #[test]
    fn exact_request_bytes_per_flavour() {
        use IdentityKind::*;
        let imds = Endpoint::IMDS;
        let app = ep(Flavour::AppService2019, "http://localhost:4141/MSI/token");
        let msi = ep(Flavour::Msi2017, "http://localhost:7071/msi/token");
        let mut ml = msi;
        ml.default_client_id = Some(OID);
        let arc = Endpoint::from_url(
            Flavour::Arc,
            "http://localhost:40342/metadata/identity/oauth2/token",
        )
        .unwrap();
        let sf = ep(
            Flavour::ServiceFabric,
            "https://localhost:2377/metadata/identity/oauth2/token",
        );
        let vmx = Endpoint::VM_EXTENSION;
        const Q: &str = "resource=https%3A%2F%2Fmanagement.azure.com%2F";
        let t = tail();
        #[rustfmt::skip]
        let cases: Vec<(&Endpoint<'_>, IdentityKind, Option<&[u8]>, std::string::String)> = std::vec![
            (&imds, System, None, std::format!("GET /metadata/identity/oauth2/token?api-version=2018-02-01&{Q} HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\n{t}")),
            (&imds, ClientId, None, std::format!("GET /metadata/identity/oauth2/token?api-version=2018-02-01&{Q}&client_id={CID} HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\n{t}")),
            (&imds, ObjectId, None, std::format!("GET /metadata/identity/oauth2/token?api-version=2018-02-01&{Q}&object_id={OID} HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\n{t}")),
            (&imds, ResourceId, None, std::format!("GET /metadata/identity/oauth2/token?api-version=2018-02-01&{Q}&msi_res_id={RID_ENC} HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\n{t}")),
            (&app, System, None, std::format!("GET /MSI/token?api-version=2019-08-01&{Q} HTTP/1.1\r\nHost: localhost:4141\r\nX-IDENTITY-HEADER: {SECRET}\r\n{t}")),
            (&app, ClientId, None, std::format!("GET /MSI/token?api-version=2019-08-01&{Q}&client_id={CID} HTTP/1.1\r\nHost: localhost:4141\r\nX-IDENTITY-HEADER: {SECRET}\r\n{t}")),
            (&app, ObjectId, None, std::format!("GET /MSI/token?api-version=2019-08-01&{Q}&principal_id={OID} HTTP/1.1\r\nHost: localhost:4141\r\nX-IDENTITY-HEADER: {SECRET}\r\n{t}")),
            (&app, ResourceId, None, std::format!("GET /MSI/token?api-version=2019-08-01&{Q}&mi_res_id={RID_ENC} HTTP/1.1\r\nHost: localhost:4141\r\nX-IDENTITY-HEADER: {SECRET}\r\n{t}")),
            (&msi, System, None, std::format!("GET /msi/token?api-version=2017-09-01&{Q} HTTP/1.1\r\nHost: localhost:7071\r\nsecret: {SECRET}\r\n{t}")),
            (&msi, ClientId, None, std::format!("GET /msi/token?api-version=2017-09-01&{Q}&clientid={CID} HTTP/1.1\r\nHost: localhost:7071\r\nsecret: {SECRET}\r\n{t}")),
            (&ml, System, None, std::format!("GET /msi/token?api-version=2017-09-01&{Q}&clientid={OID} HTTP/1.1\r\nHost: localhost:7071\r\nsecret: {SECRET}\r\n{t}")),
            (&ml, ClientId, None, std::format!("GET /msi/token?api-version=2017-09-01&{Q}&clientid={CID} HTTP/1.1\r\nHost: localhost:7071\r\nsecret: {SECRET}\r\n{t}")),
            (&arc, System, None, std::format!("GET /metadata/identity/oauth2/token?api-version=2020-06-01&{Q} HTTP/1.1\r\nHost: localhost:40342\r\nMetadata: true\r\n{t}")),
            (&arc, System, Some(b"0123abcd"), std::format!("GET /metadata/identity/oauth2/token?api-version=2020-06-01&{Q} HTTP/1.1\r\nHost: localhost:40342\r\nMetadata: true\r\nAuthorization: Basic 0123abcd\r\n{t}")),
            (&sf, System, None, std::format!("GET /metadata/identity/oauth2/token?api-version=2019-07-01-preview&{Q} HTTP/1.1\r\nHost: localhost:2377\r\nSecret: {SECRET}\r\n{t}")),
            (&vmx, System, None, std::format!("GET /oauth2/token?{Q} HTTP/1.1\r\nHost: localhost:50342\r\nMetadata: true\r\n{t}")),
            (&vmx, ClientId, None, std::format!("GET /oauth2/token?{Q}&client_id={CID} HTTP/1.1\r\nHost: localhost:50342\r\nMetadata: true\r\n{t}")),
            (&vmx, ObjectId, None, std::format!("GET /oauth2/token?{Q}&object_id={OID} HTTP/1.1\r\nHost: localhost:50342\r\nMetadata: true\r\n{t}")),
        ];
        for (e, kind, auth, want) in cases {
            assert_eq!(
                write(e, kind, auth).as_deref(),
                Ok(want.as_str()),
                "{:?} {kind:?}",
                e.flavour
            );
        }
    }

    #[test]
    fn cloud_shell_posts_a_form() {
        let e =
            Endpoint::from_url(Flavour::CloudShell, "http://localhost:50342/oauth2/token").unwrap();
        let body = "resource=https%3A%2F%2Fmanagement.azure.com%2F";
        let want = std::format!(
            "POST /oauth2/token HTTP/1.1\r\nHost: localhost:50342\r\nMetadata: true\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n{}{body}",
            body.len(),
            tail()
        );
        assert_eq!(
            write(&e, IdentityKind::System, None).as_deref(),
            Ok(want.as_str())
        );
        let mut buf = [0u8; 512];
        let r = Resource::new(ARM).unwrap();
        let d = write_request(&e, &Identity::SYSTEM, &r, None, &mut buf).unwrap();
        assert_eq!(d.method, Method::Post);
        assert!(!d.tls);
    }

    #[test]
    fn descriptors() {
        let r = Resource::new(ARM).unwrap();
        let mut buf = [0u8; 1024];
        let d = write_request(&Endpoint::IMDS, &Identity::SYSTEM, &r, None, &mut buf).unwrap();
        assert_eq!(
            (d.host, d.port, d.tls, d.method),
            ("169.254.169.254", 80, false, Method::Get)
        );
        let sf = ep(
            Flavour::ServiceFabric,
            "https://localhost:2377/metadata/identity/oauth2/token",
        );
        let d = write_request(&sf, &Identity::SYSTEM, &r, None, &mut buf).unwrap();
        assert_eq!((d.host, d.port, d.tls), ("localhost", 2377, true));
    }

    #[test]
    fn host_header_forms() {
        let r = Resource::new("x").unwrap();
        let cases: &[(&str, &str)] = &[
            ("http://169.254.169.254/t", "Host: 169.254.169.254\r\n"),
            ("http://h:80/t", "Host: h\r\n"),
            ("http://h:443/t", "Host: h:443\r\n"),
            ("https://h:443/t", "Host: h\r\n"),
            ("https://h:80/t", "Host: h:80\r\n"),
            ("http://[::1]:8080/t", "Host: [::1]:8080\r\n"),
            ("http://[fe80::1]/t", "Host: [fe80::1]\r\n"),
        ];
        for (url, want) in cases {
            let e = Endpoint::from_url(Flavour::Imds, url).unwrap();
            let mut buf = [0u8; 512];
            let d = write_request(&e, &Identity::SYSTEM, &r, None, &mut buf).unwrap();
            let s = core::str::from_utf8(&buf[..d.len]).unwrap();
            assert!(s.contains(want), "{url}: {s}");
        }
    }

    #[test]
    fn percent_encoding() {
        let mut w = Writer {
            buf: &mut [0u8; 256],
            pos: 0,
        };
        w.put_encoded("aZ09-._~ /:?#[]@!$&'()*+,;=%\u{e9}");
        let got = core::str::from_utf8(&w.buf[..w.pos]).unwrap();
        assert_eq!(
            got,
            "aZ09-._~%20%2F%3A%3F%23%5B%5D%40%21%24%26%27%28%29%2A%2B%2C%3B%3D%25%C3%A9"
        );
        assert_eq!(encoded_len("aZ09-._~ /:?#[]@!$&'()*+,;=%\u{e9}"), got.len());
        // Resource and ARM id in a real request.
        let s = write(&Endpoint::IMDS, IdentityKind::ResourceId, None).unwrap();
        assert!(s.contains(
            "resource=https%3A%2F%2Fmanagement.azure.com%2F&msi_res_id=%2Fsubscriptions%2F"
        ));
    }

    #[test]
    fn unsupported_selectors() {
        use IdentityKind::*;
        let msi = ep(Flavour::Msi2017, "http://localhost:7071/msi/token");
        let arc = Endpoint::from_url(Flavour::Arc, "http://localhost:40342/t").unwrap();
        let cs = Endpoint::from_url(Flavour::CloudShell, "http://localhost:50342/t").unwrap();
        let sf = ep(Flavour::ServiceFabric, "https://localhost:2377/t");
        let vmx = Endpoint::VM_EXTENSION;
        let cases: &[(&Endpoint<'_>, IdentityKind)] = &[
            (&msi, ObjectId),
            (&msi, ResourceId),
            (&arc, ClientId),
            (&arc, ObjectId),
            (&arc, ResourceId),
            (&cs, ClientId),
            (&cs, ObjectId),
            (&cs, ResourceId),
            (&sf, ClientId),
            (&sf, ObjectId),
            (&sf, ResourceId),
            (&vmx, ResourceId),
        ];
        for (e, kind) in cases {
            assert_eq!(
                write(e, *kind, None),
                Err(RequestError::UnsupportedSelector),
                "{:?} {kind:?}",
                e.flavour
            );
        }
    }

    #[test]
    fn flavour_checks() {
        use IdentityKind::System;
        let mut app = ep(Flavour::AppService2019, "http://localhost:4141/MSI/token");
        let arc = Endpoint::from_url(Flavour::Arc, "http://localhost:40342/t").unwrap();
        let sf_http = ep(Flavour::ServiceFabric, "http://localhost:2377/t");
        let mut ml = ep(Flavour::Msi2017, "http://localhost:7071/msi/token");
        ml.default_client_id = Some("not-a-guid");
        #[rustfmt::skip]
        let cases: &[(Endpoint<'_>, Option<&[u8]>, RequestError)] = &[
            (Endpoint { secret: None, ..app }, None, RequestError::MissingSecret),
            (Endpoint { secret: Some(""), ..app }, None, RequestError::MissingSecret),
            (Endpoint { secret: None, flavour: Flavour::Msi2017, ..app }, None, RequestError::MissingSecret),
            (Endpoint { secret: None, ..sf_http }, None, RequestError::NeedsTls),
            (Endpoint { secret: None, tls: true, ..sf_http }, None, RequestError::MissingSecret),
            (sf_http, None, RequestError::NeedsTls),
            (Endpoint::IMDS, Some(b"key"), RequestError::UnexpectedAuthorization),
            (app, Some(b"key"), RequestError::UnexpectedAuthorization),
            (arc, Some(b""), RequestError::InvalidAuthorization),
            (ml, None, RequestError::InvalidDefaultClientId),
            (Endpoint { host: "", ..Endpoint::IMDS }, None, RequestError::InvalidEndpoint),
            (Endpoint { path: "t", ..Endpoint::IMDS }, None, RequestError::InvalidEndpoint),
            (Endpoint { path: "/t?x=1", ..Endpoint::IMDS }, None, RequestError::InvalidEndpoint),
        ];
        for (e, auth, want) in cases {
            assert_eq!(write(e, System, *auth), Err(*want), "{e:?}");
        }
        // The secret is ignored by flavours that do not send one.
        app.flavour = Flavour::Imds;
        assert!(!write(&app, System, None).unwrap().contains(SECRET));
    }

    #[test]
    fn header_injection_refused() {
        use IdentityKind::System;
        let app = ep(Flavour::AppService2019, "http://localhost:4141/MSI/token");
        let arc = Endpoint::from_url(Flavour::Arc, "http://localhost:40342/t").unwrap();
        #[rustfmt::skip]
        let cases: &[(Endpoint<'_>, Option<&[u8]>, RequestError)] = &[
            (Endpoint { secret: Some("abc\r\nX-Forwarded-For: 1.2.3.4"), ..app }, None, RequestError::InvalidHeaderValue),
            (Endpoint { secret: Some("abc\n"), ..app }, None, RequestError::InvalidHeaderValue),
            (Endpoint { secret: Some("abc\0"), ..app }, None, RequestError::InvalidHeaderValue),
            (Endpoint { secret: Some("abc\t"), ..app }, None, RequestError::InvalidHeaderValue),
            (Endpoint { secret: Some("ab\u{7f}"), ..app }, None, RequestError::InvalidHeaderValue),
            (Endpoint { secret: Some("\u{e9}t\u{e9}"), ..app }, None, RequestError::InvalidHeaderValue),
            (Endpoint { secret: Some(" abc"), ..app }, None, RequestError::InvalidHeaderValue),
            (Endpoint { secret: Some("abc "), ..app }, None, RequestError::InvalidHeaderValue),
            (arc, Some(b"key\r\nX-Forwarded-For: 1.2.3.4"), RequestError::InvalidAuthorization),
            (arc, Some(b"key\n"), RequestError::InvalidAuthorization),
            (arc, Some(b"k y"), RequestError::InvalidAuthorization),
            (arc, Some(b"k\xffy"), RequestError::InvalidAuthorization),
            (Endpoint { host: "h\r\nX: y", ..Endpoint::IMDS }, None, RequestError::InvalidEndpoint),
            (Endpoint { path: "/t HTTP/1.1\r\nX: y", ..Endpoint::IMDS }, None, RequestError::InvalidEndpoint),
        ];
        for (e, auth, want) in cases {
            assert_eq!(write(e, System, *auth), Err(*want), "{e:?}");
        }
        let long = [b'a'; ARC_MAX_KEY_LEN + 1];
        assert_eq!(
            write(&arc, System, Some(&long)),
            Err(RequestError::InvalidAuthorization)
        );
        assert!(write(&arc, System, Some(&long[..ARC_MAX_KEY_LEN])).is_ok());
        // A secret with an inner space is a valid header value.
        assert!(write(
            &Endpoint {
                secret: Some("a b"),
                ..app
            },
            System,
            None
        )
        .is_ok());
        // No request ever carries X-Forwarded-For.
        for f in Flavour::ALL {
            let mut e = ep(f, "https://localhost:1/t");
            e.flavour = f;
            if let Ok(s) = write(&e, System, None) {
                assert!(!s.to_ascii_lowercase().contains("x-forwarded-for"));
            }
        }
    }

    #[test]
    fn buffer_too_small_reports_exact_size() {
        let r = Resource::new(ARM).unwrap();
        let cs =
            Endpoint::from_url(Flavour::CloudShell, "http://localhost:50342/oauth2/token").unwrap();
        let arc = Endpoint::from_url(Flavour::Arc, "http://[::1]:40342/t").unwrap();
        let cases: &[(Endpoint<'_>, Identity<'_>, Option<&[u8]>)] = &[
            (Endpoint::IMDS, id(IdentityKind::ResourceId), None),
            (cs, Identity::SYSTEM, None),
            (arc, Identity::SYSTEM, Some(b"abcdef")),
        ];
        for (e, i, auth) in cases {
            let mut big = [0u8; 2048];
            let full = write_request(e, i, &r, *auth, &mut big).unwrap().len;
            for short in [0, 1, 10, full / 2, full - 1] {
                let mut buf = std::vec![0u8; short];
                assert_eq!(
                    write_request(e, i, &r, *auth, &mut buf),
                    Err(RequestError::BufferTooSmall { needed: full }),
                    "{short}"
                );
            }
            let mut exact = std::vec![0u8; full];
            let d = write_request(e, i, &r, *auth, &mut exact).unwrap();
            assert_eq!(d.len, full);
            assert_eq!(exact[..], big[..full]);
        }
    }

    #[test]
    fn endpoint_from_url() {
        type R = Result<(&'static str, u16, bool, &'static str), EndpointError>;
        use EndpointError::*;
        #[rustfmt::skip]
        let cases: &[(&str, R)] = &[
            ("http://localhost:4141/MSI/token", Ok(("localhost", 4141, false, "/MSI/token"))),
            ("http://127.0.0.1:40342/metadata/identity/oauth2/token", Ok(("127.0.0.1", 40342, false, "/metadata/identity/oauth2/token"))),
            ("https://localhost:2377/metadata/identity/oauth2/token", Ok(("localhost", 2377, true, "/metadata/identity/oauth2/token"))),
            ("http://169.254.129.7:8081/msi/token", Ok(("169.254.129.7", 8081, false, "/msi/token"))),
            ("HTTP://Host", Ok(("Host", 80, false, "/"))),
            ("https://host", Ok(("host", 443, true, "/"))),
            ("https://host/", Ok(("host", 443, true, "/"))),
            ("http://[::1]:8080/a", Ok(("::1", 8080, false, "/a"))),
            ("http://[fe80::1:2]", Ok(("fe80::1:2", 80, false, "/"))),
            ("http://h:65535/", Ok(("h", 65535, false, "/"))),
            ("ftp://h/", Err(UnsupportedScheme)),
            ("localhost:4141/MSI/token", Err(UnsupportedScheme)),
            ("http:/h", Err(UnsupportedScheme)),
            ("http://", Err(MissingHost)),
            ("http:///path", Err(MissingHost)),
            ("http://:80/", Err(MissingHost)),
            ("http://h:0/", Err(InvalidPort)),
            ("http://h:65536/", Err(InvalidPort)),
            ("http://h:/", Err(InvalidPort)),
            ("http://h:8a/", Err(InvalidPort)),
            ("http://h:+80/", Err(InvalidPort)),
            ("http://h:000080/", Err(InvalidPort)),
            ("http://user:pw@h/", Err(UserInfo)),
            ("http://h/t?x=1", Err(QueryOrFragment)),
            ("http://h/t#f", Err(QueryOrFragment)),
            ("http://h?x", Err(QueryOrFragment)),
            ("http://h/a b", Err(InvalidPath)),
            ("http://h/a\r\nX: y", Err(InvalidPath)),
            ("http://h/\u{e9}", Err(InvalidPath)),
            ("http://h\r\nX: y/", Err(InvalidHost)),
            ("http://h%41/", Err(InvalidHost)),
            ("http://[::1/", Err(InvalidHost)),
            ("http://[::1]x/", Err(InvalidHost)),
            ("http://[1.2.3.4]/", Err(InvalidHost)),
            ("http://[::g]/", Err(InvalidHost)),
            ("http://a:b:c/", Err(InvalidPort)),
            ("http://\u{e9}/", Err(InvalidHost)),
        ];
        for (url, want) in cases {
            let got = Endpoint::from_url(Flavour::AppService2019, url)
                .map(|e| (e.host, e.port, e.tls, e.path));
            assert_eq!(got, *want, "{url:?}");
        }
        let e = Endpoint::from_url(Flavour::Arc, "http://h/").unwrap();
        assert_eq!(
            (e.flavour, e.secret, e.default_client_id),
            (Flavour::Arc, None, None)
        );
    }

    #[test]
    fn imds_authority() {
        type R = Result<(&'static str, u16, bool), EndpointError>;
        #[rustfmt::skip]
        let cases: &[(&str, R)] = &[
            ("http://169.254.169.254", Ok(("169.254.169.254", 80, false))),
            ("http://127.0.0.1:8080/", Ok(("127.0.0.1", 8080, false))),
            ("http://127.0.0.1:8080//", Ok(("127.0.0.1", 8080, false))),
            ("https://emulator:8443", Ok(("emulator", 8443, true))),
            ("http://h/metadata", Err(EndpointError::AuthorityHasPath)),
            ("http://h/metadata/identity/oauth2/token", Err(EndpointError::AuthorityHasPath)),
            ("127.0.0.1:8080", Err(EndpointError::UnsupportedScheme)),
            ("http://h?x", Err(EndpointError::QueryOrFragment)),
        ];
        for (a, want) in cases {
            let got = Endpoint::imds_authority(a).map(|e| {
                assert_eq!(e.path, IMDS_TOKEN_PATH);
                assert_eq!(e.flavour, Flavour::Imds);
                (e.host, e.port, e.tls)
            });
            assert_eq!(got, *want, "{a:?}");
        }
    }

    #[test]
    fn endpoint_debug_hides_secret() {
        let e = ep(Flavour::AppService2019, "http://localhost:4141/MSI/token");
        let s = std::format!("{e:?}");
        assert!(!s.contains(SECRET), "{s}");
        assert!(s.contains("redacted"));
    }

    #[test]
    fn arc_key_paths() {
        use ArcError::*;
        const L: &str = ARC_KEY_DIR_LINUX;
        const W: &str = ARC_KEY_DIR_WINDOWS;
        #[rustfmt::skip]
        let cases: &[(&str, &str, Result<&str, ArcError>)] = &[
            ("Basic realm=/var/opt/azcmagent/tokens/abc.key", L, Ok("/var/opt/azcmagent/tokens/abc.key")),
            ("basic REALM=/var/opt/azcmagent/tokens/abc.key", L, Ok("/var/opt/azcmagent/tokens/abc.key")),
            ("  Basic realm = /var/opt/azcmagent/tokens/abc.key  ", L, Ok("/var/opt/azcmagent/tokens/abc.key")),
            ("Basic realm=\"/var/opt/azcmagent/tokens/abc.key\"", L, Ok("/var/opt/azcmagent/tokens/abc.key")),
            ("Basic realm=/var/opt/azcmagent/tokens/abc.key", "/var/opt/azcmagent/tokens/", Ok("/var/opt/azcmagent/tokens/abc.key")),
            ("Basic realm=/var/opt/azcmagent/tokens/a.b.key", L, Ok("/var/opt/azcmagent/tokens/a.b.key")),
            (r"Basic realm=C:\ProgramData\AzureConnectedMachineAgent\Tokens\abc.key", W, Ok(r"C:\ProgramData\AzureConnectedMachineAgent\Tokens\abc.key")),
            (r#"Basic realm="C:\ProgramData\AzureConnectedMachineAgent\Tokens\abc.key""#, W, Ok(r"C:\ProgramData\AzureConnectedMachineAgent\Tokens\abc.key")),
            ("Bearer realm=/var/opt/azcmagent/tokens/abc.key", L, Err(NotBasic)),
            ("Basic", L, Err(MalformedChallenge)),
            ("Basic realm", L, Err(MalformedChallenge)),
            ("Basic realm=", L, Err(MalformedChallenge)),
            ("Basic realm=\"\"", L, Err(MalformedChallenge)),
            ("Basic foo=/var/opt/azcmagent/tokens/abc.key", L, Err(MalformedChallenge)),
            ("Basic realm=/var/opt/azcmagent/tokens/a=b.key", L, Err(MalformedChallenge)),
            ("Basic realm==/var/opt/azcmagent/tokens/abc.key", L, Err(MalformedChallenge)),
            ("Basic realm=\"/var/opt/azcmagent/tokens/abc.key", L, Err(MalformedChallenge)),
            ("Basic realm=/var/opt/azcmagent/tokens/abc.key\"", L, Err(MalformedChallenge)),
            ("Basic realm=/var/opt/azcmagent/tokens/abc.key\0.key", L, Err(ControlCharacter)),
            ("Basic realm=/var/opt/azcmagent/tokens/ab\nc.key", L, Err(ControlCharacter)),
            ("Basic realm=abc.key", L, Err(RelativePath)),
            ("Basic realm=var/opt/azcmagent/tokens/abc.key", L, Err(RelativePath)),
            (r"Basic realm=\ProgramData\AzureConnectedMachineAgent\Tokens\abc.key", W, Err(RelativePath)),
            (r"Basic realm=\\server\share\Tokens\abc.key", W, Err(RelativePath)),
            ("Basic realm=/var/opt/azcmagent/tokens/../tokens/abc.key", L, Err(DotComponent)),
            ("Basic realm=/var/opt/azcmagent/tokens/../../../etc/shadow.key", L, Err(DotComponent)),
            ("Basic realm=/var/opt/azcmagent/tokens/./abc.key", L, Err(DotComponent)),
            (r"Basic realm=C:\ProgramData\AzureConnectedMachineAgent\Tokens\..\abc.key", W, Err(DotComponent)),
            ("Basic realm=/etc/abc.key", L, Err(WrongDirectory)),
            ("Basic realm=/var/opt/azcmagent/tokens/sub/abc.key", L, Err(WrongDirectory)),
            ("Basic realm=/var/opt/azcmagent/tokensx/abc.key", L, Err(WrongDirectory)),
            ("Basic realm=/var/opt/azcmagent/Tokens/abc.key", L, Err(WrongDirectory)),
            ("Basic realm=/var/opt/azcmagent/tokens\\abc.key", L, Err(WrongDirectory)),
            ("Basic realm=/var/opt/azcmagent/tokens/x\\abc.key", L, Err(NotAKeyFile)),
            (r"Basic realm=C:\ProgramData\AzureConnectedMachineAgent\Tokens/abc.key", W, Ok(r"C:\ProgramData\AzureConnectedMachineAgent\Tokens/abc.key")),
            ("Basic realm=C:/ProgramData/AzureConnectedMachineAgent/Tokens/abc.key", W, Err(WrongDirectory)),
            (r"Basic realm=C:\ProgramData\AzureConnectedMachineAgent\Tokens\abc.key:ads.key", W, Err(NotAKeyFile)),
            (r"Basic realm=C:\ProgramData\AzureConnectedMachineAgent\tokens\abc.key", W, Err(WrongDirectory)),
            (r"Basic realm=C:\ProgramData\AzureConnectedMachineAgent\Tokens\abc.key", r"C:\ProgramData\AzureConnectedMachineAgent\Tokens\", Ok(r"C:\ProgramData\AzureConnectedMachineAgent\Tokens\abc.key")),
            ("Basic realm=/var/opt/azcmagent/tokens/abc.key", W, Err(RelativePath)),
            (r"Basic realm=C:\ProgramData\AzureConnectedMachineAgent\Tokens\abc.key", L, Err(RelativePath)),
            (r"Basic realm=D:\ProgramData\AzureConnectedMachineAgent\Tokens\abc.key", W, Err(WrongDirectory)),
            ("Basic realm=/var/opt/azcmagent/tokens/abc.txt", L, Err(NotAKeyFile)),
            ("Basic realm=/var/opt/azcmagent/tokens/abc", L, Err(NotAKeyFile)),
            ("Basic realm=/var/opt/azcmagent/tokens/.key", L, Err(NotAKeyFile)),
            ("Basic realm=/var/opt/azcmagent/tokens/abc.KEY", L, Err(NotAKeyFile)),
            ("Basic realm=/var/opt/azcmagent/tokens/", L, Err(NotAKeyFile)),
        ];
        for (header, dir, want) in cases {
            assert_eq!(arc_key_path(header, dir), *want, "{header:?} in {dir:?}");
        }
        // A relative key directory never matches.
        assert_eq!(
            arc_key_path("Basic realm=/abc.key", ""),
            Err(ArcError::WrongDirectory)
        );
    }

    #[test]
    fn arc_keys() {
        use ArcError::*;
        type Key<'k> = Result<&'k [u8], ArcError>;
        let long = [b'k'; ARC_MAX_KEY_LEN + 1];
        let mut max_nl = [b'k'; ARC_MAX_KEY_LEN];
        max_nl[ARC_MAX_KEY_LEN - 1] = b'\n';
        #[rustfmt::skip]
        let cases: &[(&[u8], Key<'_>)] = &[
            (b"0123456789abcdef", Ok(b"0123456789abcdef")),
            (b"abc\n", Ok(b"abc")),
            (b"abc\r\n", Ok(b"abc")),
            (b"a+/=~!", Ok(b"a+/=~!")),
            (b"", Err(EmptyKey)),
            (b"\n", Err(EmptyKey)),
            (b"\r\n", Err(EmptyKey)),
            (b"abc\n\n", Err(KeyNotPrintable)),
            (b"abc\r", Err(KeyNotPrintable)),
            (b"a\r\nb", Err(KeyNotPrintable)),
            (b"a b", Err(KeyNotPrintable)),
            (b" abc", Err(KeyNotPrintable)),
            (b"abc\0", Err(KeyNotPrintable)),
            (b"ab\x7f", Err(KeyNotPrintable)),
            (b"\xef\xbb\xbfabc", Err(KeyNotPrintable)),
            (&long, Err(KeyTooLong)),
            (&long[..ARC_MAX_KEY_LEN], Ok(&long[..ARC_MAX_KEY_LEN])),
            (&max_nl, Ok(&max_nl[..ARC_MAX_KEY_LEN - 1])),
        ];
        for (input, want) in cases {
            assert_eq!(
                check_arc_key(input),
                *want,
                "{:?}",
                std::string::String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn errors_display() {
        assert_eq!(
            std::format!("{}", RequestError::BufferTooSmall { needed: 42 }),
            "request buffer too small (42 bytes needed)"
        );
        assert_eq!(
            std::format!("{}", RequestError::NeedsTls),
            RequestError::NeedsTls.as_str()
        );
        assert_eq!(
            std::format!("{}", ArcError::NotBasic),
            ArcError::NotBasic.as_str()
        );
        assert_eq!(
            std::format!("{}", EndpointError::UserInfo),
            EndpointError::UserInfo.as_str()
        );
        assert_eq!(Method::Post.as_str(), "POST");
    }
}
