use super::write::{encoded_len, Writer};
use super::*;
use crate::identity::{Flavour, Identity, IdentityKind, Resource};
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
    let e = Endpoint::from_url(Flavour::CloudShell, "http://localhost:50342/oauth2/token").unwrap();
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
    assert!(
        s.contains("resource=https%3A%2F%2Fmanagement.azure.com%2F&msi_res_id=%2Fsubscriptions%2F")
    );
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

#[test]
fn an_endpoint_shows_its_url_and_never_its_secret() {
    let mut e =
        Endpoint::from_url(Flavour::AppService2019, "http://127.0.0.1:8081/msi/token").unwrap();
    e.secret = Some("s3cr3t-header");
    let shown = std::format!("{e}");
    assert_eq!(shown, "http://127.0.0.1:8081/msi/token");
    assert_eq!(
        std::format!("{}", Endpoint::IMDS),
        "http://169.254.169.254:80/metadata/identity/oauth2/token"
    );
    let v6 = Endpoint::from_url(Flavour::AppService2019, "https://[::1]:8443/t").unwrap();
    assert_eq!(std::format!("{v6}"), "https://[::1]:8443/t");
}
