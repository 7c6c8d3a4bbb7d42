//! The `imds-emulator` binary: first line of stdout, flags, clean exit on SIGTERM/SIGINT.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use imds_emulator::Identity;

fn spawn(args: &[&str]) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_imds-emulator"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.strip_suffix('\n').expect("a whole first line");
    let port = url
        .strip_prefix("http://127.0.0.1:")
        .expect("http://127.0.0.1:PORT");
    assert!(port.bytes().all(|b| b.is_ascii_digit()), "{url}");
    (child, format!("127.0.0.1:{port}").parse().unwrap())
}

fn stop(mut child: Child, signal: &str) {
    let ok = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status:?}");
            return;
        }
        assert!(Instant::now() < deadline, "did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn imds_mode_prints_url_serves_and_exits_on_sigterm() {
    let (child, addr) = spawn(&["--mode", "imds", "--identities", "1000", "--port", "0"]);
    let r = get(addr, "/control/identities", &[]);
    assert_eq!(r.json()["identities"].as_array().unwrap().len(), 1_001);
    let u = Identity::user_assigned(1000);
    let r = imds(addr, ARM, &format!("&client_id={}", u.client_id));
    assert_eq!(r.status, 200);
    assert_eq!(r.str("client_id"), u.client_id);
    stop(child, "-TERM");
}

#[test]
fn flags_reach_the_server_and_sigint_stops_it() {
    let (child, addr) = spawn(&[
        "--mode",
        "appservice2019",
        "--secret",
        "s3cret",
        "--token-lifetime",
        "900",
        "--token-size",
        "3000",
        "--throttle",
        "on",
        "--rate",
        "2",
        "--slack",
        "0",
        "--window-ms",
        "60000",
        "--concurrency",
        "5",
        "--fault",
        "kind=status,status=503,count=1",
    ]);
    let target = format!("/msi/token?resource={}&api-version=2019-08-01", enc(VAULT));
    let h = [("X-IDENTITY-HEADER", "s3cret")];
    assert_eq!(get(addr, &target, &h).status, 503);
    let r = get(addr, &target, &h);
    assert_eq!(r.status, 200);
    let t = r.str("access_token");
    assert!((3_000..=3_002).contains(&t.len()));
    let c = jwt(&t).1;
    assert_eq!(num(&c["exp"]) - num(&c["iat"]), 900);
    assert_eq!(get(addr, &target, &h).status, 429);
    let cfg = get(addr, "/control/config", &[]).json();
    assert_eq!(cfg["env"]["IDENTITY_HEADER"], "s3cret");
    stop(child, "-INT");
}

#[test]
fn bad_arguments_exit_with_2() {
    for args in [
        &["--mode", "nope"][..],
        &["--port"][..],
        &["--fault", "kind=bogus"][..],
        &["--frobnicate"][..],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_imds-emulator"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty());
    }
    let out = Command::new(env!("CARGO_BIN_EXE_imds-emulator"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--arc-key-dir"));
}

/// Spawns the binary and returns it with its first `n` stdout lines.
fn spawn_lines(args: &[&str], n: usize) -> (Child, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_imds-emulator"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let lines = (0..n)
        .map(|_| {
            let mut l = String::new();
            out.read_line(&mut l).unwrap();
            l.strip_suffix('\n').expect("a whole line").to_string()
        })
        .collect();
    (child, lines)
}

fn addr_of(url: &str, scheme: &str) -> SocketAddr {
    url.strip_prefix(scheme)
        .and_then(|a| a.strip_prefix("://"))
        .unwrap_or_else(|| panic!("{url} is not {scheme}://"))
        .parse()
        .unwrap()
}

#[test]
fn service_fabric_prints_url_thumbprint_and_control_url() {
    let (child, lines) = spawn_lines(&["--mode", "service-fabric"], 3);
    let addr = addr_of(&lines[0], "https");
    let thumb = lines[1]
        .strip_prefix("thumbprint ")
        .expect("thumbprint HEX");
    assert_eq!(thumb.len(), 40);
    let control = addr_of(
        lines[2].strip_prefix("control ").expect("control URL"),
        "http",
    );
    let cfg = get(control, "/control/config", &[]).json();
    assert_eq!(cfg["thumbprint"], thumb);
    assert_eq!(cfg["url"], lines[0].as_str());
    let secret = cfg["secret"].as_str().unwrap().to_string();
    let target = format!(
        "/metadata/identity/oauth2/token?api-version=2019-07-01-preview&resource={}",
        enc(VAULT)
    );
    let r = tls::get(addr, thumb, &target, &[("secret", &secret)]);
    assert_eq!(r.status, 200, "{}", r.text());
    stop(child, "-TERM");

    // --plain: HTTP, still a thumbprint, no separate control port.
    let (child, lines) = spawn_lines(&["--mode", "service-fabric", "--plain"], 2);
    let addr = addr_of(&lines[0], "http");
    assert!(lines[1].starts_with("thumbprint "), "{lines:?}");
    assert_eq!(get(addr, &target, &[("secret", &secret)]).status, 200);
    stop(child, "-TERM");

    // --wrong-thumbprint: the advertised one is not the served one.
    let (child, lines) = spawn_lines(&["--mode", "service-fabric", "--wrong-thumbprint"], 3);
    let advertised = lines[1].strip_prefix("thumbprint ").unwrap().to_string();
    let control = addr_of(lines[2].strip_prefix("control ").unwrap(), "http");
    let cfg = get(control, "/control/config", &[]).json();
    assert_ne!(cfg["served_thumbprint"], advertised.as_str());
    stop(child, "-TERM");

    let out = Command::new(env!("CARGO_BIN_EXE_imds-emulator"))
        .args(["--mode", "service-fabric", "--tls", "--plain"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
