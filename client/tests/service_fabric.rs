//! Service Fabric over HTTPS against the emulator's TLS mode: the certificate is accepted only
//! when its SHA-1 thumbprint is the pinned one; a wrong thumbprint and a plain-HTTP endpoint
//! are typed errors, never a request sent in the clear.
#![cfg(feature = "service-fabric-tls")]

use std::time::Duration;

use imds_cache::{Flavour, Identity, RequestError, Resource};
use imds_cache_client::{Client, ClientConfig, Error, OwnedEndpoint, SourceSpec, TlsError};
use imds_emulator::{Config, Emulator, Mode, Transport};

const ARM: &str = "https://management.azure.com";

fn emulator(tweak: impl FnOnce(&mut Config)) -> Emulator {
    let mut config = Config::new(Mode::ServiceFabric);
    tweak(&mut config);
    Emulator::start(config).expect("emulator starts")
}

/// A client for `url` pinned to `thumbprint`.
fn client(e: &Emulator, url: String, thumbprint: Option<&str>) -> Result<Client, Error> {
    Client::with_config(ClientConfig {
        source: SourceSpec::Explicit(OwnedEndpoint {
            flavour: Flavour::ServiceFabric,
            url,
            secret: Some(e.secret().to_string()),
            default_client_id: None,
        }),
        server_thumbprint: thumbprint.map(str::to_string),
        refresher: false,
        deadline: Duration::from_secs(20),
        ..ClientConfig::default()
    })
}

fn get(c: &Client) -> Result<(Vec<u8>, u64), Error> {
    c.get_token(&Identity::SYSTEM, &Resource::new(ARM).unwrap())
}

#[test]
fn the_pinned_certificate_gives_a_token_in_either_case() {
    let e = emulator(|_| {});
    let pin = e.thumbprint().expect("a certificate").to_string();
    assert!(e.url().starts_with("https://"));
    for thumbprint in [pin.clone(), pin.to_lowercase()] {
        let c = client(&e, e.token_url(), Some(&thumbprint)).unwrap();
        let (token, _) = get(&c).expect("a token over TLS");
        let minted = e.tokens();
        assert_eq!(
            token,
            minted.last().expect("minted").token.as_bytes(),
            "the token the emulator minted"
        );
    }
    assert_eq!(e.stats().requests, 2);
    assert_eq!(e.stats().tls_handshake_failures, 0);
}

#[test]
fn a_wrong_thumbprint_is_refused_before_any_request() {
    let e = emulator(|c| c.wrong_thumbprint = true);
    let advertised = e.thumbprint().unwrap().to_string();
    let served = e.served_thumbprint().unwrap().to_string();
    assert_ne!(advertised, served);
    let c = client(&e, e.token_url(), Some(&advertised)).unwrap();
    let err = get(&c).unwrap_err();
    assert_eq!(
        err,
        Error::Tls(TlsError::ThumbprintMismatch { got: served }),
        "{err}"
    );
    assert_eq!(err.code(), "tls");
    assert!(err.to_string().contains("certificate thumbprint mismatch"));
    assert!(!err.is_unavailable());
    // The emulator counts the failed handshake once its side sees the alert.
    for _ in 0..500 {
        if e.stats().tls_handshake_failures > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let stats = e.stats();
    assert_eq!(stats.requests, 0, "nothing sent to an unpinned server");
    // One handshake for the call: the refusal is not retried within it.
    assert_eq!(stats.tls_handshake_failures, 1);
}

#[test]
fn plain_http_where_tls_is_due_is_a_typed_error() {
    let e = emulator(|c| c.transport = Some(Transport::Http));
    let pin = e.thumbprint().unwrap().to_string();
    assert!(e.url().starts_with("http://"));
    // An http:// URL for Service Fabric: refused before anything is sent.
    let c = client(&e, e.token_url(), Some(&pin)).unwrap();
    assert_eq!(get(&c), Err(Error::Request(RequestError::NeedsTls)));
    // https:// to the plain port: the handshake meets plain HTTP.
    let https = e.token_url().replacen("http://", "https://", 1);
    let c = client(&e, https, Some(&pin)).unwrap();
    assert_eq!(get(&c), Err(Error::Tls(TlsError::NotTls)));
    assert_eq!(
        e.stats().requests,
        0,
        "no token request went out in the clear"
    );
}

#[test]
fn an_https_endpoint_needs_a_well_formed_pin() {
    let e = emulator(|_| {});
    let c = client(&e, e.token_url(), None).unwrap();
    assert!(matches!(get(&c), Err(Error::Unsupported(_))));
    for bad in ["", "3E59", "not hex at all, but forty characters long"] {
        let c = client(&e, e.token_url(), Some(bad)).unwrap();
        assert!(matches!(get(&c), Err(Error::Endpoint(_))), "{bad:?}");
    }
    assert_eq!(e.stats().requests, 0);
    assert_eq!(e.stats().tls_handshake_failures, 0, "never connected");
}

/// The only test here that reads the environment: Service Fabric detected from its three
/// variables, the thumbprint read when the request is built.
#[test]
fn service_fabric_from_the_environment() {
    let e = emulator(|_| {});
    let vars = e.env();
    assert!(vars.iter().any(|(k, _)| k == "IDENTITY_SERVER_THUMBPRINT"));
    for (k, v) in &vars {
        std::env::set_var(k, v);
    }
    let c = Client::with_config(ClientConfig {
        refresher: false,
        ..ClientConfig::default()
    })
    .unwrap();
    assert_eq!(c.flavour(), Flavour::ServiceFabric);
    let got = get(&c);
    // A wrong pin in the environment is read at the next request.
    std::env::set_var("IDENTITY_SERVER_THUMBPRINT", "00".repeat(20));
    let c2 = Client::with_config(ClientConfig {
        refresher: false,
        ..ClientConfig::default()
    })
    .unwrap();
    let refused = get(&c2);
    for (k, _) in &vars {
        std::env::remove_var(k);
    }
    assert!(got.is_ok(), "{got:?}");
    assert!(
        matches!(
            refused,
            Err(Error::Tls(TlsError::ThumbprintMismatch { .. }))
        ),
        "{refused:?}"
    );
}
