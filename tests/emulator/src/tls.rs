//! HTTPS for the emulator: a self-signed certificate made at start, its thumbprint as Azure
//! writes `IDENTITY_SERVER_THUMBPRINT`, and the rustls server configuration that serves it.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;

/// A certificate the emulator made, with its private key.
pub(crate) struct Generated {
    pub(crate) der: Vec<u8>,
    pub(crate) pem: String,
    key_der: Vec<u8>,
}

impl std::fmt::Debug for Generated {
    // The key stays out of Debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generated")
            .field("thumbprint", &thumbprint(&self.der))
            .finish_non_exhaustive()
    }
}

/// Makes a self-signed certificate for `localhost`, `127.0.0.1` and `::1`. Clients of Service
/// Fabric pin its thumbprint and check neither a CA chain nor the host name, so the names only
/// help tools that do check them.
pub(crate) fn generate(common_name: &str) -> io::Result<Generated> {
    let key = rcgen::KeyPair::generate().map_err(io::Error::other)?;
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string()]).map_err(io::Error::other)?;
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    let cert = params.self_signed(&key).map_err(io::Error::other)?;
    Ok(Generated {
        der: cert.der().to_vec(),
        pem: cert.pem(),
        key_der: key.serialize_der(),
    })
}

/// The thumbprint Azure puts in `IDENTITY_SERVER_THUMBPRINT`: SHA-1 of the DER certificate,
/// 40 upper-case hex digits (Windows' `X509Certificate2.Thumbprint` format).
pub fn thumbprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, der);
    digest.as_ref().iter().map(|b| format!("{b:02X}")).collect()
}

/// The rustls configuration that serves `cert` (TLS 1.2 and 1.3, no client certificates).
pub(crate) fn server_config(cert: &Generated) -> io::Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_der.clone()));
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(cert.der.clone())], key)
        .map_err(io::Error::other)?;
    Ok(Arc::new(config))
}

/// What the emulator serves over TLS and what it tells clients to expect.
#[derive(Debug)]
pub(crate) struct TlsSetup {
    /// The served certificate.
    pub(crate) served: Generated,
    /// Thumbprint of the served certificate.
    pub(crate) served_thumbprint: String,
    /// The thumbprint advertised in `IDENTITY_SERVER_THUMBPRINT` (the served one, or that of
    /// another certificate when the emulator is told to advertise a wrong one).
    pub(crate) advertised: String,
    /// `None` when the emulator serves plain HTTP (only the thumbprint is advertised).
    pub(crate) config: Option<Arc<ServerConfig>>,
}

impl TlsSetup {
    /// Makes the certificate(s); `serve` builds the TLS configuration, `wrong` advertises the
    /// thumbprint of a second certificate that is never served.
    pub(crate) fn new(serve: bool, wrong: bool) -> io::Result<TlsSetup> {
        let served = generate("imds-emulator")?;
        let served_thumbprint = thumbprint(&served.der);
        let advertised = if wrong {
            thumbprint(&generate("imds-emulator (not served)")?.der)
        } else {
            served_thumbprint.clone()
        };
        let config = if serve {
            Some(server_config(&served)?)
        } else {
            None
        };
        Ok(TlsSetup {
            served,
            served_thumbprint,
            advertised,
            config,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprint_is_upper_case_sha1_hex() {
        // SHA-1("abc"), FIPS 180-2 appendix A.1.
        assert_eq!(
            thumbprint(b"abc"),
            "A9993E364706816ABA3E25717850C26C9CD0D89D"
        );
    }

    #[test]
    fn wrong_thumbprint_differs_from_the_served_one() {
        let t = TlsSetup::new(true, true).unwrap();
        assert_ne!(t.advertised, t.served_thumbprint);
        assert_eq!(t.served_thumbprint, thumbprint(&t.served.der));
        let t = TlsSetup::new(false, false).unwrap();
        assert_eq!(t.advertised, t.served_thumbprint);
        assert!(t.config.is_none());
    }
}
