//! Throttling (DESIGN.md D9) over TCP: the sliding window of request starts and the
//! in-flight limit.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use imds_emulator::{Config, Emulator, Fault, FaultRule};

const E5_429: &str = r#"{"error":"too_many_requests","error_description":"Too many requests"}"#;

fn burst(emu: &Emulator, n: usize) -> (usize, usize, Duration) {
    let start = Instant::now();
    let (mut ok, mut throttled) = (0, 0);
    for _ in 0..n {
        let r = imds(emu.addr(), ARM, "");
        match r.status {
            200 => ok += 1,
            429 => {
                assert_eq!(r.text(), E5_429);
                throttled += 1;
            }
            s => panic!("unexpected {s}"),
        }
    }
    (ok, throttled, start.elapsed())
}

#[test]
fn window_admits_rate_plus_slack() {
    // A long window makes the count exact whatever the machine's speed.
    let emu = Emulator::start(Config {
        window_ms: 60_000,
        ..Config::default()
    })
    .unwrap();
    let (ok, throttled, _) = burst(&emu, 30);
    assert_eq!((ok, throttled), (21, 9));
    let s = emu.stats();
    assert_eq!(s.max_window_admitted, 21);
    assert_eq!(s.max_window_arrivals, 30);
    assert_eq!((s.throttled, s.sent_429, s.status(429)), (9, 9, 9));
    drop(emu);

    let emu = Emulator::start(Config {
        window_ms: 60_000,
        rate: 3,
        slack: 0,
        ..Config::default()
    })
    .unwrap();
    assert_eq!(burst(&emu, 5).0, 3);
}

#[test]
fn thirty_quick_requests_in_the_default_window() {
    let emu = Emulator::start(Config::default()).unwrap();
    let (ok, throttled, elapsed) = burst(&emu, 30);
    let s = emu.stats();
    // Never more than 20 + 1 admitted in any 1000 ms window.
    assert!(s.max_window_admitted <= 21, "{}", s.max_window_admitted);
    assert_eq!(ok + throttled, 30);
    if elapsed < Duration::from_millis(900) {
        assert_eq!((ok, throttled), (21, 9));
    }
    // The window slides: a second later requests are admitted again.
    std::thread::sleep(Duration::from_millis(1_050));
    assert_eq!(imds(emu.addr(), ARM, "").status, 200);
}

#[test]
fn concurrency_limit_counts_until_the_last_byte() {
    let emu = Emulator::start(Config::default()).unwrap();
    emu.add_fault(FaultRule::new(Fault::Hang { ms: None }).times(5));
    let req = request("GET", &imds_target(ARM, ""), &[("Metadata", "true")], b"");
    let mut held = Vec::new();
    for _ in 0..5 {
        let mut s = TcpStream::connect(emu.addr()).unwrap();
        s.write_all(&req).unwrap();
        held.push(s);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while emu.stats().statuses.get("hang").copied().unwrap_or(0) < 5 {
        assert!(Instant::now() < deadline, "hanging requests not seen");
        std::thread::sleep(Duration::from_millis(5));
    }
    let s = emu.stats();
    assert_eq!(s.max_admitted_concurrency, 5);
    assert_eq!(s.current_concurrency, 5);
    // A sixth request while five are in flight.
    let r = imds(emu.addr(), ARM, "");
    assert_eq!(r.status, 429);
    assert_eq!(r.text(), E5_429);
    assert_eq!(emu.stats().max_concurrency, 6);
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    while emu.stats().current_concurrency > 0 {
        assert!(Instant::now() < deadline, "hanging requests not released");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(imds(emu.addr(), ARM, "").status, 200);
    let s = emu.stats();
    assert_eq!(s.max_admitted_concurrency, 5);
    assert_eq!(s.key("system", ARM).unwrap().max_concurrency, 5);
}

#[test]
fn throttle_off_still_measures() {
    let emu = Emulator::start(Config {
        throttle: false,
        window_ms: 60_000,
        ..Config::default()
    })
    .unwrap();
    let (ok, throttled, _) = burst(&emu, 30);
    assert_eq!((ok, throttled), (30, 0));
    let s = emu.stats();
    assert_eq!(
        (s.max_window_arrivals, s.max_window_admitted, s.throttled),
        (30, 30, 0)
    );

    // Control requests are neither throttled nor counted.
    let emu = Emulator::start(Config {
        window_ms: 60_000,
        rate: 1,
        slack: 0,
        ..Config::default()
    })
    .unwrap();
    for _ in 0..5 {
        assert_eq!(get(emu.addr(), "/control/stats", &[]).status, 200);
    }
    assert_eq!(imds(emu.addr(), ARM, "").status, 200);
    assert_eq!(imds(emu.addr(), ARM, "").status, 429);
    assert_eq!(emu.stats().requests, 2);
}
