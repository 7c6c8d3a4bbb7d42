//! Service Fabric mode: HTTPS with a pinned self-signed certificate, its wire format and
//! errors, a wrong advertised thumbprint, plain HTTP where TLS is due, and `--tls` elsewhere.

mod common;

use std::time::{Duration, Instant};

use common::*;
use imds_emulator::{Config, Emulator, Identity, Mode, Transport};

const SF_VERSION: &str = "2019-07-01-preview";

fn start(f: impl FnOnce(&mut Config)) -> Emulator {
    let mut c = Config::new(Mode::ServiceFabric);
    f(&mut c);
    Emulator::start(c).unwrap()
}

fn target(resource: &str, extra: &str) -> String {
    format!(
        "/metadata/identity/oauth2/token?api-version={SF_VERSION}&resource={}{extra}",
        enc(resource)
    )
}

fn sf_get(emu: &Emulator, target: &str, secret: Option<&str>) -> Resp {
    let h: Vec<(&str, &str)> = secret.map(|s| ("secret", s)).into_iter().collect();
    tls::get(emu.addr(), emu.thumbprint().unwrap(), target, &h)
}

fn env(emu: &Emulator, k: &str) -> String {
    emu.env()
        .into_iter()
        .find(|(n, _)| n == k)
        .unwrap_or_else(|| panic!("{k} not in {:?}", emu.env()))
        .1
}

/// The nested error's code.
fn code(r: &Resp) -> String {
    r.json()["error"]["code"].as_str().unwrap().to_string()
}

/// Waits (bounded) until the server has counted `n` failed handshakes.
fn handshake_failures(emu: &Emulator, n: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = emu.stats().tls_handshake_failures;
        if seen >= n || Instant::now() > deadline {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn https_with_the_advertised_thumbprint_gets_a_token() {
    let emu = start(|_| {});
    assert!(emu.is_https());
    assert!(emu.url().starts_with("https://127.0.0.1:"), "{}", emu.url());
    let thumb = emu.thumbprint().unwrap().to_string();
    assert_eq!(thumb.len(), 40);
    assert!(thumb
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)));
    assert_eq!(thumb, sha1_of(emu.certificate_der().unwrap()));
    assert_eq!(emu.served_thumbprint(), Some(thumb.as_str()));
    assert!(emu
        .certificate_pem()
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(env(&emu, "IDENTITY_ENDPOINT"), emu.token_url());
    assert!(emu.token_url().starts_with("https://"));
    assert_eq!(env(&emu, "IDENTITY_HEADER"), emu.secret());
    assert_eq!(env(&emu, "IDENTITY_SERVER_THUMBPRINT"), thumb);

    let (raw, cert) = tls::exchange(
        emu.addr(),
        &thumb,
        &request("GET", &target(VAULT, ""), &[("secret", emu.secret())], b""),
    )
    .unwrap();
    assert_eq!(tls::sha1_hex(&cert), thumb, "the certificate on the wire");
    let r = parse(raw);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.keys(),
        ["token_type", "access_token", "expires_on", "resource"]
    );
    let m = r.json();
    assert!(m["expires_on"].is_u64(), "expires_on is a number");
    assert_eq!(r.str("resource"), VAULT);
    let claims = jwt(&r.str("access_token")).1;
    assert_eq!(claims["aud"], VAULT);
    assert_eq!(claims["oid"], Identity::system().object_id.as_str());
    assert_eq!(num(&m["expires_on"]), num(&claims["exp"]));
    // MSAL .NET's api-version and a `principalId` selector.
    let u1 = Identity::user_assigned(1);
    let emu = start(|c| c.identities = 1);
    let r = sf_get(
        &emu,
        &target(VAULT, &format!("&principalId={}", u1.object_id)).replace(SF_VERSION, "2020-05-01"),
        Some(emu.secret()),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(jwt(&r.str("access_token")).1["oid"], u1.object_id.as_str());
    let stats = emu.stats();
    assert_eq!((stats.requests, stats.tls_handshake_failures), (1, 0));
}

fn sha1_of(der: &[u8]) -> String {
    tls::sha1_hex(der)
}

#[test]
fn errors_are_nested_and_unknown_identities_are_404() {
    let emu = start(|c| c.identities = 1);
    let secret = emu.secret().to_string();
    let r = sf_get(&emu, &target(VAULT, ""), None);
    assert_eq!((r.status, code(&r).as_str()), (400, "SecretHeaderNotFound"));
    assert_eq!(
        r.json()["error"]["message"],
        "Secret is not found in the request headers."
    );
    let inner = r.text();
    assert!(
        inner.starts_with(r#"{"error":{"correlationId":""#),
        "{inner}"
    );
    // An unknown authentication code is a 404, like an unknown identity: terminal.
    let r = sf_get(&emu, &target(VAULT, ""), Some("not-the-secret"));
    assert_eq!(
        (r.status, code(&r).as_str()),
        (404, "ManagedIdentityNotFound")
    );
    let r = sf_get(
        &emu,
        &target(VAULT, "&principalId=00000000-0000-4000-8000-000000000000"),
        Some(&secret),
    );
    assert_eq!(
        (r.status, code(&r).as_str()),
        (404, "ManagedIdentityNotFound")
    );
    let r = sf_get(
        &emu,
        &target(VAULT, "").replace(SF_VERSION, "2017-09-01"),
        Some(&secret),
    );
    assert_eq!((r.status, code(&r).as_str()), (400, "InvalidApiVersion"));
    let r = sf_get(
        &emu,
        &format!("/metadata/identity/oauth2/token?api-version={SF_VERSION}"),
        Some(&secret),
    );
    assert_eq!((r.status, code(&r).as_str()), (400, "ArgumentNullOrEmpty"));
    let r = sf_get(&emu, "/msi/token", Some(&secret));
    assert_eq!(r.status, 404);
    // No identity assigned to the application.
    let emu = start(|c| c.system_assigned = false);
    let r = sf_get(&emu, &target(VAULT, ""), Some(emu.secret()));
    assert_eq!(
        (r.status, code(&r).as_str()),
        (404, "ManagedIdentityNotFound")
    );
    // Faults answer in Service Fabric's shape too.
    emu.add_fault(imds_emulator::FaultRule::parse("kind=status,status=500").unwrap());
    let r = sf_get(&emu, &target(VAULT, ""), Some(emu.secret()));
    assert_eq!((r.status, code(&r).as_str()), (500, "InternalServerError"));
}

#[test]
fn a_wrong_advertised_thumbprint_is_refused_by_a_pinning_client() {
    let emu = start(|c| c.wrong_thumbprint = true);
    let advertised = emu.thumbprint().unwrap().to_string();
    let served = emu.served_thumbprint().unwrap().to_string();
    assert_ne!(advertised, served);
    assert_eq!(served, sha1_of(emu.certificate_der().unwrap()));
    assert_eq!(env(&emu, "IDENTITY_SERVER_THUMBPRINT"), advertised);
    let req = request("GET", &target(VAULT, ""), &[("secret", emu.secret())], b"");
    let err = tls::exchange(emu.addr(), &advertised, &req).unwrap_err();
    assert!(err.to_string().contains("thumbprint mismatch"), "{err}");
    assert_eq!(handshake_failures(&emu, 1), 1);
    assert_eq!(emu.stats().requests, 0, "no request reached the endpoint");
    // The served certificate's own thumbprint is accepted.
    let (raw, _) = tls::exchange(emu.addr(), &served, &req).unwrap();
    assert_eq!(parse(raw).status, 200);
    // The control API is plain HTTP on its own port, and reports both thumbprints.
    let cfg = get(emu.control_addr(), "/control/config", &[]).json();
    assert_eq!(cfg["thumbprint"], advertised.as_str());
    assert_eq!(cfg["served_thumbprint"], served.as_str());
    assert_eq!(cfg["tls"], true);
    assert_eq!(cfg["url"], emu.url().as_str());
    assert_eq!(cfg["control_url"], emu.control_url().as_str());
    assert_eq!(
        cfg["env"]["IDENTITY_SERVER_THUMBPRINT"],
        advertised.as_str()
    );
}

#[test]
fn plain_http_on_the_https_port_is_no_http_answer() {
    let emu = start(|_| {});
    let raw = exchange(emu.addr(), &request("GET", &target(VAULT, ""), &[], b"")).unwrap();
    assert!(
        !raw.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&raw)
    );
    assert_eq!(handshake_failures(&emu, 1), 1);
    assert_eq!(emu.stats().requests, 0);
}

#[test]
fn plain_mode_advertises_a_thumbprint_and_answers_http() {
    let emu = start(|c| c.transport = Some(Transport::Http));
    assert!(!emu.is_https());
    assert!(emu.url().starts_with("http://127.0.0.1:"));
    assert_eq!(emu.control_url(), emu.url());
    let thumb = emu.thumbprint().expect("advertised over plain HTTP too");
    assert_eq!(thumb.len(), 40);
    assert_eq!(emu.served_thumbprint(), None);
    assert_eq!(env(&emu, "IDENTITY_SERVER_THUMBPRINT"), thumb);
    assert!(env(&emu, "IDENTITY_ENDPOINT").starts_with("http://"));
    let r = get(emu.addr(), &target(VAULT, ""), &[("secret", emu.secret())]);
    assert_eq!(r.status, 200);
    // A client that speaks TLS to it gets a prompt plain-HTTP 400, which is no TLS answer.
    let req = request("GET", &target(VAULT, ""), &[("secret", emu.secret())], b"");
    assert!(tls::exchange(emu.addr(), thumb, &req).is_err());
    let raw = exchange(
        emu.addr(),
        &[0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x00, 0x00, 0x00],
    )
    .unwrap();
    assert!(
        raw.starts_with(b"HTTP/1.1 400 "),
        "{:?}",
        String::from_utf8_lossy(&raw)
    );
    assert_eq!(emu.stats().requests, 1, "only the plain GET was a request");
}

#[test]
fn tls_serves_other_modes_too() {
    let emu = Emulator::start(Config {
        transport: Some(Transport::Https),
        ..Config::new(Mode::Imds)
    })
    .unwrap();
    assert!(emu.url().starts_with("https://"));
    let thumb = emu.thumbprint().unwrap().to_string();
    let r = tls::get(
        emu.addr(),
        &thumb,
        &imds_target(ARM, ""),
        &[("Metadata", "true")],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.str("resource"), ARM);
    let url = emu.url();
    let auth = emu
        .env()
        .into_iter()
        .find(|(k, _)| k == "AZURE_POD_IDENTITY_AUTHORITY_HOST")
        .unwrap()
        .1;
    assert_eq!(auth, url);
    assert_eq!(
        get(emu.control_addr(), "/control/stats", &[]).json()["requests"],
        1
    );
}
