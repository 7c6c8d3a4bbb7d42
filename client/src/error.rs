//! The driver's error: what a caller of `get_token` can be told.

use std::fmt;

use imds_cache::{
    ArcError, ErrorDetail, Failure, IdentityError, NewError, OutcomeClass, RequestError,
    ResourceError,
};

/// Why a token could not be had.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// An environment this credential must not serve (AKS workload identity), or no
    /// endpoint configured. (No endpoint answering at first contact is a `Failed` whose kind
    /// is of the `Unavailable` class: see [`is_unavailable`](Self::is_unavailable).)
    Unavailable(&'static str),
    /// The endpoint refused (a terminal D7 outcome) or is not there (D20's first-contact
    /// failures), with its error text when this call saw it.
    Failed {
        /// What failed.
        failure: Failure,
        /// The error body's code and description (empty when another caller's fetch failed).
        detail: Box<ErrorDetail>,
    },
    /// The deadline passed before a token could be had.
    Deadline {
        /// The last failure seen, if any.
        last: Option<Failure>,
    },
    /// The caller's buffer is shorter than the token.
    BufferTooSmall {
        /// The token's length.
        needed: usize,
    },
    /// Every entry of the cache has a fetch in flight: nothing can be evicted.
    CacheFull,
    /// The identity selector is malformed.
    Identity(IdentityError),
    /// The resource or scope is malformed.
    Resource(ResourceError),
    /// The endpoint configuration (URL, secret) is malformed.
    Endpoint(&'static str),
    /// The request could not be written (e.g. a selector the flavour does not support).
    Request(RequestError),
    /// The configuration or storage size is out of bounds.
    Config(NewError),
    /// Something this build does not do: Service Fabric's pinned TLS without the
    /// `service-fabric-tls` feature, or an HTTPS endpoint without a pinned thumbprint.
    Unsupported(&'static str),
    /// TLS with the endpoint failed for good: its certificate is not the pinned one, or it
    /// does not speak TLS. Not retried within the call (retrying cannot change what the server
    /// presents, and a man in the middle must not be waited out); the next call tries again
    /// after the core's backoff.
    Tls(TlsError),
    /// Arc's key file could not be used: which file, and why.
    ArcKey {
        /// The key file's path as the challenge named it.
        path: String,
        /// Why it could not be used.
        cause: ArcKeyError,
    },
}

/// Why TLS with the endpoint failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsError {
    /// The server's certificate is not the one `IDENTITY_SERVER_THUMBPRINT` names.
    ThumbprintMismatch {
        /// The thumbprint of the certificate the server presented (upper-case hex).
        got: String,
    },
    /// The endpoint did not answer in TLS (a plain-HTTP server on an `https://` URL).
    NotTls,
    /// The handshake failed otherwise (rustls's description).
    Handshake(String),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ThumbprintMismatch { got } => write!(
                f,
                "certificate thumbprint mismatch: the server presented {got}, not the certificate \
                 IDENTITY_SERVER_THUMBPRINT names"
            ),
            Self::NotTls => f.write_str("the endpoint does not speak TLS (plain HTTP?)"),
            Self::Handshake(why) => write!(f, "TLS handshake failed: {why}"),
        }
    }
}

impl std::error::Error for TlsError {}

/// Why Arc's key file could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ArcKeyError {
    /// Reading it was refused (`EACCES`): only members of the `himds` group may read it.
    PermissionDenied,
    /// It does not exist.
    NotFound,
    /// It is longer than 4096 bytes.
    TooLarge,
    /// The challenge named a file outside the configured key folder.
    OutsideFolder,
    /// It is not a regular file (a symlink, a directory, a FIFO).
    NotAFile,
    /// The challenge or the path broke another rule (relative, `..`, not `.key`, malformed).
    Challenge(ArcError),
    /// Its contents are not a usable key (empty, or not visible ASCII).
    Contents(ArcError),
    /// Reading it failed otherwise.
    Io(std::io::ErrorKind),
}

impl ArcKeyError {
    /// The cause of an I/O error opening or reading the file.
    pub(crate) fn from_io(e: &std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::PermissionDenied => Self::PermissionDenied,
            std::io::ErrorKind::NotFound => Self::NotFound,
            // O_NOFOLLOW on a symlink.
            _ if e.raw_os_error() == Some(libc::ELOOP) => Self::NotAFile,
            kind => Self::Io(kind),
        }
    }
}

/// `Error::ArcKey`'s text: what happened to which file, and what to do about it.
fn arc_key_text(f: &mut fmt::Formatter<'_>, path: &str, cause: &ArcKeyError) -> fmt::Result {
    match cause {
        ArcKeyError::PermissionDenied => write!(
            f,
            "permission denied reading {path}: is this user in the himds group?"
        ),
        ArcKeyError::NotFound => write!(f, "Arc key file {path} not found"),
        ArcKeyError::TooLarge => write!(f, "Arc key file {path} is larger than 4096 bytes"),
        ArcKeyError::OutsideFolder => write!(
            f,
            "Arc key file {path} is outside the key folder (set arc_key_dir if HIMDS uses another)"
        ),
        ArcKeyError::NotAFile => write!(f, "Arc key file {path} is not a regular file"),
        ArcKeyError::Challenge(e) | ArcKeyError::Contents(e) => write!(f, "{e}: {path}"),
        ArcKeyError::Io(kind) => write!(f, "reading Arc key file {path}: {kind}"),
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unavailable(why) => write!(f, "managed identity unavailable: {why}"),
            Self::Failed { failure, detail } => {
                write!(f, "{failure}")?;
                if !detail.code.is_empty() || !detail.description.is_empty() {
                    write!(f, ": {} {}", detail.code, detail.description)?;
                }
                Ok(())
            }
            Self::Deadline { last: Some(last) } => {
                write!(f, "deadline passed; last failure: {last}")
            }
            Self::Deadline { last: None } => f.write_str("deadline passed"),
            Self::BufferTooSmall { needed } => write!(f, "token needs a buffer of {needed} bytes"),
            Self::CacheFull => f.write_str("cache is full: every entry has a fetch in flight"),
            Self::Identity(e) => e.fmt(f),
            Self::Resource(e) => e.fmt(f),
            Self::Endpoint(why) => write!(f, "endpoint configuration: {why}"),
            Self::Request(e) => e.fmt(f),
            Self::Config(e) => e.fmt(f),
            Self::Unsupported(what) => write!(f, "unsupported: {what}"),
            Self::Tls(e) => e.fmt(f),
            Self::ArcKey { path, cause } => arc_key_text(f, path, cause),
        }
    }
}

impl Error {
    /// One error of each variant but `Failed`, in the order of [`CODES`](Self::CODES): the
    /// samples the C and Python layers' mirror tests map one by one.
    #[doc(hidden)]
    pub fn examples() -> Vec<Error> {
        vec![
            Error::Unavailable("x"),
            Error::Deadline { last: None },
            Error::BufferTooSmall { needed: 1 },
            Error::CacheFull,
            Error::Identity(imds_cache::IdentityError::Empty),
            Error::Resource(ResourceError::Empty),
            Error::Endpoint("x"),
            Error::Request(RequestError::MissingSecret),
            Error::Config(NewError::Storage(imds_cache::StorageError::SlotCount)),
            Error::Unsupported("x"),
            Error::Tls(TlsError::NotTls),
            Error::ArcKey {
                path: "/p.key".into(),
                cause: ArcKeyError::NotFound,
            },
        ]
    }

    /// The codes [`code`](Self::code) gives for every variant but `Failed` (whose code is its
    /// failure kind's, [`imds_cache::FailureKind::code`]): the C result enum and the Python
    /// exceptions' `code` are checked against this list.
    pub const CODES: &'static [&'static str] = &[
        "unavailable",
        "deadline",
        "buffer_too_small",
        "cache_full",
        "invalid_identity",
        "invalid_resource",
        "invalid_endpoint",
        "request_error",
        "invalid_config",
        "unsupported",
        "tls",
        "arc_key",
    ];

    /// Whether no managed identity can be had here: a credential chain moves on to the next
    /// credential.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Unavailable(_) | Self::Unsupported(_) => true,
            Self::Failed { failure, .. } => failure.kind.class() == OutcomeClass::Unavailable,
            _ => false,
        }
    }

    /// A stable snake_case code for the error: never changes for a variant, never reused.
    /// A failed fetch has its failure kind's code (`bad_request`, `server_error`, …).
    pub const fn code(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "unavailable",
            Self::Failed { failure, .. } => failure.kind.code(),
            Self::Deadline { .. } => "deadline",
            Self::BufferTooSmall { .. } => "buffer_too_small",
            Self::CacheFull => "cache_full",
            Self::Identity(_) => "invalid_identity",
            Self::Resource(_) => "invalid_resource",
            Self::Endpoint(_) => "invalid_endpoint",
            Self::Request(_) => "request_error",
            Self::Config(_) => "invalid_config",
            Self::Unsupported(_) => "unsupported",
            Self::Tls(_) => "tls",
            Self::ArcKey { .. } => "arc_key",
        }
    }
}

/// The core's error underneath, where there is one (a malformed selector, resource, request
/// or configuration). An endpoint's refusal is no error type of its own: its `Failure` and
/// text are in the variant.
impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Identity(e) => Some(e),
            Self::Resource(e) => Some(e),
            Self::Request(e) => Some(e),
            Self::Config(e) => Some(e),
            Self::Tls(e) => Some(e),
            Self::ArcKey {
                cause: ArcKeyError::Challenge(e) | ArcKeyError::Contents(e),
                ..
            } => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn codes_are_listed_and_unique() {
        use imds_cache::FailureKind;
        let every = Error::examples();
        // One variant per listed code, in order; `Failed` is the one left out.
        let codes: Vec<&str> = every.iter().map(Error::code).collect();
        assert_eq!(codes, Error::CODES);
        for code in Error::CODES {
            assert_eq!(Error::CODES.iter().filter(|c| *c == code).count(), 1);
        }
        let failed = Error::Failed {
            failure: Failure::new(FailureKind::ServerError),
            detail: Box::default(),
        };
        assert_eq!(failed.code(), "server_error");
    }

    #[test]
    fn arc_key_errors_say_which_file_and_why() {
        let io = |errno| ArcKeyError::from_io(&std::io::Error::from_raw_os_error(errno));
        assert_eq!(io(libc::EACCES), ArcKeyError::PermissionDenied);
        assert_eq!(io(libc::ENOENT), ArcKeyError::NotFound);
        assert_eq!(io(libc::ELOOP), ArcKeyError::NotAFile);
        assert!(matches!(io(libc::EIO), ArcKeyError::Io(_)));
        let text = |cause| {
            Error::ArcKey {
                path: "/var/opt/azcmagent/tokens/a.key".into(),
                cause,
            }
            .to_string()
        };
        assert_eq!(
            text(ArcKeyError::PermissionDenied),
            "permission denied reading /var/opt/azcmagent/tokens/a.key: is this user in the \
             himds group?"
        );
        assert!(text(ArcKeyError::NotFound).contains("not found"));
        assert!(text(ArcKeyError::TooLarge).contains("larger than 4096 bytes"));
        assert!(text(ArcKeyError::OutsideFolder).contains("outside the key folder"));
        let contents = Error::ArcKey {
            path: "/k.key".into(),
            cause: ArcKeyError::Contents(ArcError::EmptyKey),
        };
        assert_eq!(
            contents.source().unwrap().to_string(),
            "Arc key file is empty"
        );
        let tls = Error::Tls(TlsError::ThumbprintMismatch { got: "AB".into() });
        assert!(
            tls.to_string().contains("certificate thumbprint mismatch"),
            "{tls}"
        );
        assert!(
            !tls.is_unavailable(),
            "a pinned endpoint that answers is there"
        );
    }

    #[test]
    fn source_is_the_core_error() {
        let e = Error::Resource(ResourceError::Empty);
        let source = e.source().expect("a source");
        assert_eq!(source.to_string(), ResourceError::Empty.to_string());
        assert!(Error::CacheFull.source().is_none());
        assert!(Error::Deadline { last: None }.source().is_none());
    }
}
