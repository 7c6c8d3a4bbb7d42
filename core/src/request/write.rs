//! Writing one request: the flavour's plan (method, query, headers), checked before anything
//! is written, then the bytes, counted so that a short buffer still yields the size needed.

use core::fmt;

use super::endpoint::{valid_host, valid_path};
use super::{is_unreserved, is_visible, Endpoint, ARC_MAX_KEY_LEN};
use crate::identity::{Flavour, Identity, IdentityKind, Resource};

/// The `User-Agent` sent with every request.
const USER_AGENT: &str = concat!("imds-cache/", env!("CARGO_PKG_VERSION"));

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

/// Length of `s` once percent-encoded.
pub(super) fn encoded_len(s: &str) -> usize {
    s.bytes()
        .map(|b| if is_unreserved(b) { 1 } else { 3 })
        .sum()
}

/// Writes into a buffer while it has room and counts every byte, so that a short buffer still
/// yields the exact size needed.
pub(super) struct Writer<'b> {
    pub(super) buf: &'b mut [u8],
    pub(super) pos: usize,
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

    pub(super) fn put_encoded(&mut self, s: &str) {
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
/// contents (checked with [`check_arc_key`](crate::check_arc_key)) for the second request of its challenge, sent as
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
