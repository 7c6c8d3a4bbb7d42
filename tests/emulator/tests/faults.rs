//! Fault injection over TCP, through the library handle and the control API.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use imds_emulator::{Config, Emulator, Fault, FaultRule, Identity, Mode};
use serde_json::Value;

fn emu() -> Emulator {
    Emulator::start(Config {
        identities: 2,
        ..Config::default()
    })
    .unwrap()
}

fn raw_imds(emu: &Emulator) -> Vec<u8> {
    let req = request("GET", &imds_target(ARM, ""), &[("Metadata", "true")], b"");
    exchange(emu.addr(), &req).unwrap()
}

#[test]
fn statuses_with_counts() {
    let emu = emu();
    emu.set_faults(vec![
        FaultRule::new(Fault::Status {
            status: 404,
            retry_after: None,
        })
        .times(2),
        FaultRule::new(Fault::Status {
            status: 500,
            retry_after: None,
        })
        .times(1),
        FaultRule::new(Fault::Status {
            status: 503,
            retry_after: Some(2),
        })
        .times(1),
    ]);
    let r = imds(emu.addr(), ARM, "");
    assert_eq!(
        (r.status, r.text().as_str()),
        (
            404,
            r#"{"error":"not_found","error_description":"Not found"}"#
        )
    );
    assert_eq!(imds(emu.addr(), ARM, "").status, 404);
    let r = imds(emu.addr(), ARM, "");
    assert_eq!(
        (r.status, r.text().as_str()),
        (
            500,
            r#"{"error":"server_error","error_description":"Server error"}"#
        )
    );
    let r = imds(emu.addr(), ARM, "");
    assert_eq!(r.status, 503);
    assert_eq!(r.header("Retry-After"), Some("2"));
    assert_eq!(imds(emu.addr(), ARM, "").status, 200);
    assert!(emu.faults().is_empty());
    let s = emu.stats();
    assert_eq!(s.faults_injected, 4);
    assert_eq!(
        (s.status(404), s.status(500), s.status(503), s.status(200)),
        (2, 1, 1, 1)
    );
}

#[test]
fn too_many_requests_with_retry_after() {
    let emu = emu();
    emu.add_fault(
        FaultRule::new(Fault::TooManyRequests {
            retry_after: Some(7),
        })
        .times(1),
    );
    let r = imds(emu.addr(), ARM, "");
    assert_eq!(r.status, 429);
    assert_eq!(r.header("Retry-After"), Some("7"));
    assert_eq!(
        r.text(),
        r#"{"error":"too_many_requests","error_description":"Too many requests"}"#
    );
    let s = emu.stats();
    assert_eq!((s.sent_429, s.throttled), (1, 0));
}

#[test]
fn gone_for_a_window() {
    let emu = emu();
    emu.add_fault(FaultRule::new(Fault::Gone { window_ms: 2_500 }));
    let first = Instant::now();
    assert_eq!(imds(emu.addr(), ARM, "").status, 410);
    assert_eq!(imds(emu.addr(), VAULT, "").status, 410);
    std::thread::sleep(Duration::from_millis(2_600).saturating_sub(first.elapsed()));
    assert_eq!(imds(emu.addr(), ARM, "").status, 200);
    assert!(emu.faults().is_empty());
    assert_eq!(emu.stats().status(410), 2);
}

#[test]
fn delay_then_answer() {
    let emu = emu();
    emu.add_fault(FaultRule::new(Fault::Delay { ms: 300 }).times(1));
    let t = Instant::now();
    assert_eq!(imds(emu.addr(), ARM, "").status, 200);
    assert!(t.elapsed() >= Duration::from_millis(300));
}

#[test]
fn reset_is_seen_as_an_error_or_eof() {
    let emu = emu();
    emu.add_fault(FaultRule::new(Fault::Reset).times(1));
    let req = request("GET", &imds_target(ARM, ""), &[("Metadata", "true")], b"");
    let res = exchange(emu.addr(), &req);
    match res {
        Ok(bytes) => assert!(bytes.is_empty()),
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset),
    }
    assert_eq!(emu.stats().statuses["reset"], 1);
}

#[test]
fn truncated_body() {
    let emu = emu();
    emu.add_fault(FaultRule::new(Fault::Truncate { bytes: Some(100) }).times(1));
    let raw = raw_imds(&emu);
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let declared: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(raw.len() - end, 100);
    assert!(declared > 1_500);
    // Default: half the body.
    emu.add_fault(FaultRule::new(Fault::Truncate { bytes: None }).times(1));
    let raw = raw_imds(&emu);
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(raw.len() - end < declared / 2 + 100);
}

#[test]
fn non_json_malformed_and_oversized() {
    let emu = emu();
    emu.add_fault(FaultRule::new(Fault::NonJson).times(1));
    let r = imds(emu.addr(), ARM, "");
    assert_eq!(r.status, 200);
    assert!(r.header("Content-Type").unwrap().starts_with("text/html"));
    assert!(serde_json::from_slice::<Value>(&r.body).is_err());

    emu.add_fault(FaultRule::new(Fault::MalformedJson).times(1));
    let r = imds(emu.addr(), ARM, "");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("Content-Type"),
        Some("application/json; charset=utf-8")
    );
    assert!(serde_json::from_slice::<Value>(&r.body).is_err());

    emu.add_fault(FaultRule::new(Fault::Oversized { bytes: 40_000 }).times(1));
    let r = imds(emu.addr(), ARM, "");
    assert_eq!(r.status, 200);
    let t = r.str("access_token");
    assert!(t.len() >= 40_000);
    assert_eq!(jwt(&t).1["aud"], ARM);
    assert!(r.body.len() > 40_000);
    let issued = emu.tokens();
    assert_eq!(issued.last().unwrap().fault.as_deref(), Some("oversized"));
    // The oversized token is not cached.
    assert_ne!(imds(emu.addr(), ARM, "").str("access_token"), t);
}

#[test]
fn slow_trickle() {
    let emu = emu();
    emu.add_fault(
        FaultRule::new(Fault::Trickle {
            chunk: 400,
            interval_ms: 40,
        })
        .times(1),
    );
    let req = request("GET", &imds_target(ARM, ""), &[("Metadata", "true")], b"");
    let mut s = TcpStream::connect(emu.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(&req).unwrap();
    let t = Instant::now();
    let mut all = Vec::new();
    let mut reads = 0;
    let mut buf = [0u8; 8192];
    loop {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        reads += 1;
        all.extend_from_slice(&buf[..n]);
    }
    let pieces = all.len().div_ceil(400);
    assert!(pieces >= 5);
    assert!(reads >= 2);
    assert!(t.elapsed() >= Duration::from_millis(40 * (pieces as u64 - 1)));
    let r = parse(all);
    assert_eq!(r.status, 200);
    assert!(r.json()["access_token"].is_string());
}

#[test]
fn wrong_client_id_and_expired_token() {
    let emu = emu();
    let sys = Identity::system();
    emu.add_fault(FaultRule::new(Fault::WrongClientId).times(1));
    let r = imds(emu.addr(), ARM, "");
    assert_eq!(r.status, 200);
    let echoed = r.str("client_id");
    assert_ne!(echoed, sys.client_id);
    assert!(emu.identities().iter().all(|i| i.client_id != echoed));
    assert_eq!(
        jwt(&r.str("access_token")).1["appid"],
        sys.client_id.as_str()
    );

    emu.add_fault(FaultRule::new(Fault::Expired).times(1));
    let r = imds(emu.addr(), VAULT, "");
    assert_eq!(r.status, 200);
    let j = r.json();
    assert!(num(&j["expires_on"]) < emu.now());
    assert_eq!(j["expires_in"], "0");
    assert!(num(&jwt(&r.str("access_token")).1["exp"]) < emu.now());
    assert_eq!(
        emu.tokens().last().unwrap().fault.as_deref(),
        Some("expired")
    );
    // Not cached: the next request gets a valid token.
    let r = imds(emu.addr(), VAULT, "");
    assert!(num(&r.json()["expires_on"]) > emu.now());
}

#[test]
fn chunked_and_eof_framing() {
    let emu = emu();
    emu.add_fault(FaultRule::new(Fault::Chunked).times(1));
    let raw = raw_imds(&emu);
    let text = String::from_utf8_lossy(&raw).to_string();
    assert!(text.contains("Transfer-Encoding: chunked\r\n"));
    assert!(!text.contains("Content-Length"));
    let r = parse(raw);
    assert_eq!(r.status, 200);
    assert_eq!(r.keys().len(), 8);

    emu.add_fault(FaultRule::new(Fault::EofBody).times(1));
    let raw = raw_imds(&emu);
    let text = String::from_utf8_lossy(&raw).to_string();
    assert!(!text.contains("Content-Length") && !text.contains("Transfer-Encoding"));
    let r = parse(raw);
    assert!(r.json()["access_token"].is_string());

    // Chunked everywhere, as an option: even the 88-byte error.
    let emu = Emulator::start(Config {
        chunked: true,
        ..Config::default()
    })
    .unwrap();
    let r = get(emu.addr(), &imds_target(ARM, ""), &[]);
    assert_eq!(r.header("Transfer-Encoding"), Some("chunked"));
    assert_eq!(r.body.len(), 88);
}

#[test]
fn hang_until_the_client_gives_up_or_the_limit() {
    let emu = emu();
    emu.add_fault(FaultRule::new(Fault::Hang { ms: None }).times(1));
    let req = request("GET", &imds_target(ARM, ""), &[("Metadata", "true")], b"");
    let mut s = TcpStream::connect(emu.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    s.write_all(&req).unwrap();
    let mut buf = [0u8; 64];
    let e = s.read(&mut buf).unwrap_err();
    assert!(matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut
    ));
    drop(s);

    emu.add_fault(FaultRule::new(Fault::Hang { ms: Some(200) }).times(1));
    let t = Instant::now();
    assert!(raw_imds(&emu).is_empty());
    assert!(t.elapsed() >= Duration::from_millis(200));
    assert_eq!(emu.stats().statuses["hang"], 2);
}

#[test]
fn faults_per_key() {
    let emu = emu();
    let u1 = Identity::user_assigned(1);
    emu.add_fault(
        FaultRule::new(Fault::Status {
            status: 500,
            retry_after: None,
        })
        .times(1)
        .for_identity("uai-1"),
    );
    emu.add_fault(
        FaultRule::new(Fault::Status {
            status: 503,
            retry_after: None,
        })
        .times(2)
        .for_resource(VAULT),
    );
    let sel = format!("&client_id={}", u1.client_id);
    assert_eq!(imds(emu.addr(), ARM, "").status, 200);
    assert_eq!(imds(emu.addr(), ARM, &sel).status, 500);
    assert_eq!(imds(emu.addr(), ARM, &sel).status, 200);
    assert_eq!(imds(emu.addr(), VAULT, &sel).status, 503);
    assert_eq!(imds(emu.addr(), VAULT, "").status, 503);
    assert_eq!(imds(emu.addr(), VAULT, "").status, 200);
    let s = emu.stats();
    assert_eq!(s.key("uai-1", ARM).unwrap().statuses["500"], 1);
    assert_eq!(s.key("system", VAULT).unwrap().statuses["503"], 1);
    // Requests that fail the header check never consume a fault.
    emu.add_fault(
        FaultRule::new(Fault::Status {
            status: 500,
            retry_after: None,
        })
        .times(1),
    );
    assert_eq!(get(emu.addr(), &imds_target(ARM, ""), &[]).status, 400);
    assert_eq!(imds(emu.addr(), ARM, "").status, 500);
}

#[test]
fn control_api_for_faults() {
    let emu = emu();
    let a = emu.addr();
    let r = post(
        a,
        "/control/faults",
        &[("Content-Type", "application/json")],
        br#"[{"kind":"status","status":404,"count":1},{"kind":"too_many_requests","retry_after":3,"count":1,"identity":"system"}]"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        serde_json::from_slice::<Vec<Value>>(&r.body).unwrap().len(),
        2
    );
    let r = post(a, "/control/faults?kind=delay&ms=10&count=1", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let listed: Vec<Value> = serde_json::from_slice(&get(a, "/control/faults", &[]).body).unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[2]["kind"], "delay");
    assert_eq!(imds(a, ARM, "").status, 404);
    assert_eq!(imds(a, ARM, "").header("Retry-After"), Some("3"));
    assert_eq!(imds(a, ARM, "").status, 200);
    assert!(emu.faults().is_empty());

    assert_eq!(post(a, "/control/faults?kind=nope", &[], b"").status, 400);
    assert_eq!(post(a, "/control/faults", &[], b"{not json").status, 400);
    post(a, "/control/faults?kind=reset", &[], b"");
    post(
        a,
        "/control/faults?kind=gone&window_ms=1000&replace=true",
        &[],
        b"",
    );
    assert_eq!(emu.faults().len(), 1);
    let r = parse(exchange(a, &request("DELETE", "/control/faults", &[], b"")).unwrap());
    assert_eq!(r.status, 200);
    assert!(emu.faults().is_empty());
    post(a, "/control/faults?kind=reset", &[], b"");
    assert_eq!(post(a, "/control/faults/clear", &[], b"").status, 200);
    assert_eq!(imds(a, ARM, "").status, 200);
}

#[test]
fn faults_from_the_start_and_in_other_modes() {
    let emu = Emulator::start(Config {
        faults: vec![FaultRule::parse("kind=status,status=503,count=1").unwrap()],
        ..Config::new(Mode::AppService2019)
    })
    .unwrap();
    let secret = emu.secret().to_string();
    let target = format!("/msi/token?resource={}&api-version=2019-08-01", enc(VAULT));
    let r = get(
        emu.addr(),
        &target,
        &[("X-IDENTITY-HEADER", secret.as_str())],
    );
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["statusCode"], 503);
    assert_eq!(
        get(
            emu.addr(),
            &target,
            &[("X-IDENTITY-HEADER", secret.as_str())]
        )
        .status,
        200
    );
}

#[test]
fn unreachable_403_is_docker_desktops_answer_to_every_request() {
    const MSG: &str = "connecting to 169.254.169.254:80: connecting to 169.254.169.254:80: dial tcp 169.254.169.254:80: connectex: A socket operation was attempted to an unreachable network.";
    let emu = emu();
    // Through the control API, in query form; three requests get it.
    let r = post(
        emu.addr(),
        "/control/faults?kind=unreachable_403&count=3",
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // A token request, a probe without `Metadata: true` (else E6), an unknown path (else 404).
    for target in [
        imds_target(ARM, ""),
        imds_target(ARM, ""),
        "/nope".to_string(),
    ] {
        let h: &[(&str, &str)] = if target == "/nope" {
            &[]
        } else {
            &[("Metadata", "true")]
        };
        let raw = exchange(emu.addr(), &request("GET", &target, h, b"")).unwrap();
        let head = format!("HTTP/1.0 403 {MSG}\r\n");
        assert!(
            raw.starts_with(head.as_bytes()),
            "{}",
            String::from_utf8_lossy(&raw)
        );
        let r = parse(raw);
        assert_eq!((r.status, r.text().as_str()), (403, MSG));
        assert!(r.text().contains("unreachable"));
        assert_eq!(r.header("Content-Type"), None);
    }
    let r = get(emu.addr(), &imds_target(ARM, ""), &[]);
    assert_eq!(r.status, 400, "the rule is used up: E6 again");
    let s = emu.stats();
    assert_eq!((s.status(403), s.faults_injected), (3, 3));
}
