//! Service Fabric's HTTPS: its endpoint presents a self-signed certificate, and a client must
//! accept exactly the one whose SHA-1 thumbprint `IDENTITY_SERVER_THUMBPRINT` names. No CA
//! chain and no host name are checked (the certificate names neither reliably); the
//! handshake's signature is still verified with the certificate's key, so a server that
//! merely replays the pinned certificate cannot complete the handshake.

use std::fmt;
use std::io;
use std::net::TcpStream;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConnection, DigitallySignedStruct, SignatureScheme};

use crate::error::TlsError;

/// A certificate's SHA-1 thumbprint, the form Windows and Azure write (40 hex digits).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Thumbprint([u8; 20]);

impl Thumbprint {
    /// 40 hex digits in either case; anything else is `None`.
    pub(crate) fn parse(hex: &str) -> Option<Self> {
        let b = hex.as_bytes();
        if b.len() != 40 {
            return None;
        }
        let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        let mut out = [0u8; 20];
        for (i, pair) in b.chunks_exact(2).enumerate() {
            out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
        }
        Some(Self(out))
    }

    /// The thumbprint of a DER certificate.
    fn of(der: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, der);
        let mut out = [0u8; 20];
        out.copy_from_slice(digest.as_ref());
        Self(out)
    }
}

/// Upper-case hex, as Windows shows it.
impl fmt::Display for Thumbprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02X}"))
    }
}

impl fmt::Debug for Thumbprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The server presented another certificate than the pinned one (carried through rustls's
/// error to the driver).
#[derive(Debug)]
struct Mismatch(Thumbprint);

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "certificate thumbprint {} is not the pinned one", self.0)
    }
}

impl std::error::Error for Mismatch {}

/// Accepts the end-entity certificate whose thumbprint is `want`; verifies the handshake's
/// signatures with the provider's algorithms.
#[derive(Debug)]
struct Pinned {
    want: Thumbprint,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = Thumbprint::of(end_entity.as_ref());
        if got == self.want {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                rustls::OtherError(Arc::new(Mismatch(got))),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A TLS connection over `tcp`, its handshake done, that accepts only the certificate `pin`.
/// The socket's timeouts bound the handshake as they bound the reads. An I/O failure during
/// the handshake is `Err(None)` (the caller's transient "reset"); a refusal is
/// `Err(Some(why))`.
pub(crate) fn connect(
    tcp: TcpStream,
    host: &str,
    pin: Thumbprint,
) -> Result<rustls::StreamOwned<ClientConnection, TcpStream>, Option<TlsError>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(Pinned {
        want: pin,
        algorithms: provider.signature_verification_algorithms,
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Some(TlsError::Handshake(e.to_string())))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    // The name is only sent as SNI (not checked); an IP address sends none.
    let name = ServerName::try_from(host.to_string()).map_err(|_| {
        Some(TlsError::Handshake(format!(
            "{host} is not a TLS server name"
        )))
    })?;
    let conn = ClientConnection::new(Arc::new(config), name)
        .map_err(|e| Some(TlsError::Handshake(e.to_string())))?;
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        if let Err(e) = stream.conn.complete_io(&mut stream.sock) {
            return Err(refusal(&e));
        }
    }
    Ok(stream)
}

/// What a failed handshake means: rustls's own error is a refusal, anything else is I/O.
fn refusal(e: &io::Error) -> Option<TlsError> {
    let tls = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some(match tls {
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => {
            match other.0.downcast_ref::<Mismatch>() {
                Some(Mismatch(got)) => TlsError::ThumbprintMismatch {
                    got: got.to_string(),
                },
                None => TlsError::Handshake(tls.to_string()),
            }
        }
        // Bytes that are no TLS record: most likely a plain-HTTP server.
        rustls::Error::InvalidMessage(_) => TlsError::NotTls,
        other => TlsError::Handshake(other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprints_parse_in_either_case_and_nothing_else() {
        let upper = "3E59E0E10C56CFF39C92FFF82DDA8992F10A4A69";
        let t = Thumbprint::parse(upper).unwrap();
        assert_eq!(Thumbprint::parse(&upper.to_lowercase()), Some(t));
        assert_eq!(t.to_string(), upper);
        for bad in [
            "",
            &upper[..39],
            &format!("{upper}0"),
            &upper.replace('E', "G"),
            "3E:59:E0:E1:0C:56:CF:F3:9C:92:FF:F8:2D:DA:89:92:F1:0A:4A:69",
            &format!(" {}", &upper[1..]),
        ] {
            assert_eq!(Thumbprint::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "ring probes CPU features with assembly, which Miri cannot run"
    )]
    fn the_thumbprint_is_the_sha1_of_the_der() {
        // SHA-1("abc"), FIPS 180's test vector.
        assert_eq!(
            Thumbprint::of(b"abc").to_string(),
            "A9993E364706816ABA3E25717850C26C9CD0D89D"
        );
    }
}
