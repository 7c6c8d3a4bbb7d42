//! A TLS client that accepts exactly the certificate whose SHA-1 thumbprint it is given (no CA
//! chain, no host name), as Service Fabric clients do; its hash is computed here, apart from
//! the emulator's code.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};

/// SHA-1 of `der` in upper-case hex.
pub fn sha1_hex(der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, der);
    d.as_ref().iter().map(|b| format!("{b:02X}")).collect()
}

#[derive(Debug)]
struct Pin {
    thumbprint: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pin {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if sha1_hex(end_entity).eq_ignore_ascii_case(&self.thumbprint) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("thumbprint mismatch".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Sends `request` over TLS to `addr`, accepting only the certificate with `thumbprint`, and
/// reads until the server closes. Also returns the server's certificate (DER).
pub fn exchange(
    addr: SocketAddr,
    thumbprint: &str,
    request: &[u8],
) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)
        .map_err(io::Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pin {
            thumbprint: thumbprint.to_string(),
            provider,
        }))
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").map_err(io::Error::other)?;
    let conn = ClientConnection::new(Arc::new(config), name).map_err(io::Error::other)?;
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut tls = StreamOwned::new(conn, tcp);
    tls.write_all(request)?;
    tls.flush()?;
    let mut out = Vec::new();
    tls.read_to_end(&mut out)?;
    let cert = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    Ok((out, cert))
}

/// A GET over pinned TLS.
pub fn get(
    addr: SocketAddr,
    thumbprint: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> super::Resp {
    let (raw, _) = exchange(
        addr,
        thumbprint,
        &super::request("GET", target, headers, b""),
    )
    .unwrap();
    super::parse(raw)
}
