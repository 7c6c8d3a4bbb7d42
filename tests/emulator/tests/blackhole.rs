//! Blackholes (connects time out) and refused ports, in the library and on the command line.
//! Every address here is on loopback.

use std::io::{BufRead, BufReader, ErrorKind};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use imds_emulator::{Blackhole, Refused};

/// The bound on each connect; a blackhole must run it out.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);

fn connect_error(addr: SocketAddr) -> ErrorKind {
    match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
        Ok(_) => panic!("connected to {addr}"),
        Err(e) => e.kind(),
    }
}

#[test]
fn a_blackhole_times_connects_out_until_dropped() {
    let hole = Blackhole::start().unwrap();
    let addr = hole.addr();
    assert!(addr.ip().is_loopback());
    assert_eq!(hole.url(), format!("http://{addr}"));
    // Every connect times out: none is refused, none is accepted.
    for _ in 0..2 {
        assert_eq!(connect_error(addr), ErrorKind::TimedOut);
    }
    drop(hole);
    assert_eq!(connect_error(addr), ErrorKind::ConnectionRefused);
}

#[test]
fn a_refused_port_refuses_and_is_held() {
    let refused = Refused::start().unwrap();
    let addr = refused.addr();
    assert_eq!(connect_error(addr), ErrorKind::ConnectionRefused);
    // The port stays reserved: nobody else can listen on it meanwhile.
    assert!(std::net::TcpListener::bind(addr).is_err());
    drop(refused);
    assert!(std::net::TcpListener::bind(addr).is_ok());
}

#[test]
fn only_loopback_addresses() {
    let any: SocketAddr = "0.0.0.0:0".parse().unwrap();
    assert_eq!(
        Blackhole::bind(any).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        Refused::bind(any).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
}

/// Runs the binary with these arguments, reads the first stdout line, checks the connect
/// error on its address, and stops it with SIGTERM (exit status 0).
fn cli(mode: &str, expect: ErrorKind) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_imds-emulator"))
        .args(["--mode", mode, "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.strip_suffix('\n').expect("a whole first line");
    let addr: SocketAddr = url
        .strip_prefix("http://")
        .expect("http://127.0.0.1:PORT")
        .parse()
        .unwrap();
    assert!(addr.ip().is_loopback());
    let kind = connect_error(addr);
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert_eq!(kind, expect, "{mode}");
    assert!(status.success(), "{status:?}");
}

#[test]
fn cli_blackhole_and_refused() {
    cli("blackhole", ErrorKind::TimedOut);
    cli("refused", ErrorKind::ConnectionRefused);
}
