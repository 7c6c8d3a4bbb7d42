//! Fault torture: 16 threads ask for random keys while the emulator, in its
//! own process, injects random faults. Checked: every call returns within its deadline; every
//! token returned is one the emulator issued for that exact key and had at least 60 s left;
//! one request per key at a time; the budget held; memory is flat once warm (RSS from half the
//! run, at most 60 s in, to the end: within 2 MiB); no issued token's signature (nor any JWT
//! header) in any error's Display or Debug, nor in the client's or its statistics' Debug (the
//! driver writes no log of its own). `TORTURE_SECS` sets the duration (default 30).

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use imds_cache::{Flavour, Identity, Resource};
use imds_cache_client::{Client, ClientConfig, OwnedEndpoint, SourceSpec};

const RESOURCES: [&str; 3] = [
    "https://management.azure.com",
    "https://vault.azure.net",
    "https://storage.azure.com",
];

/// The emulator binary, built if this test run has not built it yet.
fn emulator_binary() -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    for profile in ["debug", "release"] {
        let path = format!("{root}/target/{profile}/imds-emulator");
        if std::path::Path::new(&path).exists() {
            return path;
        }
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let ok = Command::new(cargo)
        .args(["build", "-q", "-p", "imds-emulator"])
        .current_dir(root)
        .status()
        .expect("cargo runs");
    assert!(ok.success(), "building the emulator");
    format!("{root}/target/debug/imds-emulator")
}

struct Emulator {
    child: Child,
    url: String,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(identities: usize) -> Emulator {
    let mut child = Command::new(emulator_binary())
        .args(["--identities", &identities.to_string(), "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("emulator starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    Emulator {
        child,
        url: line.trim().to_string(),
    }
}

fn control(url: &str, method: &str, path: &str, body: &str) -> serde_json::Value {
    let host = url.trim_start_matches("http://");
    let mut s = TcpStream::connect(host).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or("null");
    serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A fixed-key SipHash of a token.
fn digest(token: &[u8]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    token.hash(&mut h);
    h.finish()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

const FAULTS: [&str; 14] = [
    r#"{"kind":"status","status":404,"count":3}"#,
    r#"{"kind":"status","status":500,"count":3}"#,
    r#"{"kind":"status","status":503,"count":2}"#,
    r#"{"kind":"too_many_requests","retry_after":1,"count":2}"#,
    r#"{"kind":"gone","window_ms":1500}"#,
    r#"{"kind":"delay","ms":300,"count":5}"#,
    r#"{"kind":"hang","ms":1500,"count":1}"#,
    r#"{"kind":"reset","count":3}"#,
    r#"{"kind":"truncate","count":3}"#,
    r#"{"kind":"non_json","count":1}"#,
    r#"{"kind":"malformed_json","count":1}"#,
    r#"{"kind":"trickle","chunk":64,"interval_ms":20,"count":2}"#,
    r#"{"kind":"wrong_client_id","count":1}"#,
    r#"{"kind":"expired","count":1}"#,
];

#[test]
fn sixteen_threads_under_random_faults() {
    let secs: u64 = std::env::var("TORTURE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let emulator = start(40);
    let url = emulator.url.clone();
    let listed = control(&url, "GET", "/control/identities", "");
    let ids: Vec<String> = listed["identities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["client_id"].as_str().unwrap().to_string())
        .collect();
    let deadline_each = Duration::from_secs(3);
    let client = Client::with_config(ClientConfig {
        source: SourceSpec::Explicit(OwnedEndpoint {
            flavour: Flavour::Imds,
            url: url.clone(),
            secret: None,
            default_client_id: None,
        }),
        deadline: deadline_each,
        attempt_timeout: Duration::from_millis(800),
        ..ClientConfig::default()
    })
    .unwrap();
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let mut rss_warm = 0;
    let results = std::thread::scope(|s| {
        // Chaos: a new random fault every 250 ms, for a random identity or for all.
        s.spawn(|| {
            let mut rng = 0x2545_f491_4f6c_dd1du64;
            while !stop.load(Ordering::Relaxed) {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let fault = FAULTS[(rng % FAULTS.len() as u64) as usize];
                let rule = if rng % 3 == 0 {
                    fault.to_string()
                } else {
                    let who = format!(
                        r#","identity":"{}"}}"#,
                        ids[(rng >> 8) as usize % ids.len()]
                    );
                    fault.trim_end_matches('}').to_string() + &who
                };
                control(&url, "POST", "/control/faults", &rule);
                std::thread::sleep(Duration::from_millis(250));
            }
        });
        let workers: Vec<_> = (0..16u64)
            .map(|t| {
                let (client, ids, stop) = (&client, &ids, &stop);
                s.spawn(move || {
                    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (t + 1);
                    let mut buf = vec![0u8; 16 * 1024];
                    // Digests, not copies, of the tokens seen: the RSS check below measures
                    // the client, not this bookkeeping (1.9 KB per distinct token otherwise).
                    let mut seen: HashMap<(usize, usize), HashSet<u64>> = HashMap::new();
                    // Every distinct error text (Display and Debug): searched for tokens below.
                    let mut messages: HashSet<String> = HashSet::new();
                    let (mut calls, mut ok, mut slowest) = (0u64, 0u64, Duration::ZERO);
                    while !stop.load(Ordering::Relaxed) {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        let (i, r) = ((rng % ids.len() as u64) as usize, (rng >> 32) as usize % 3);
                        let id = Identity::client_id(&ids[i]).unwrap();
                        let call = Instant::now();
                        let got = client.get_token_into(
                            &id,
                            &Resource::new(RESOURCES[r]).unwrap(),
                            &mut buf,
                        );
                        let took = call.elapsed();
                        slowest = slowest.max(took);
                        calls += 1;
                        match got {
                            Ok((len, expires_on_s)) => {
                                ok += 1;
                                assert!(
                                    expires_on_s >= now_secs() + 60,
                                    "a token with under 60 s left"
                                );
                                seen.entry((i, r)).or_default().insert(digest(&buf[..len]));
                            }
                            Err(e) => {
                                messages.insert(e.to_string());
                                messages.insert(format!("{e:?}"));
                            }
                        }
                    }
                    (seen, messages, calls, ok, slowest)
                })
            })
            .collect();
        // Warm once the threads, their stacks and the allocator's arenas have grown: half the
        // run, at least 3 s and at most 60 s (a 25-minute run grew 2 MiB in its first two
        // minutes, then 16 KiB in the last sixteen).
        std::thread::sleep(Duration::from_secs((secs / 2).clamp(3, 60)));
        rss_warm = rss_kib();
        while started.elapsed() < Duration::from_secs(secs) {
            std::thread::sleep(Duration::from_millis(200));
        }
        stop.store(true, Ordering::Relaxed);
        workers
            .into_iter()
            .map(|w| w.join().expect("no worker panicked"))
            .collect::<Vec<_>>()
    });
    let rss_end = rss_kib();

    // Every token returned was issued by the emulator for that exact key.
    let issued = control(&url, "GET", "/control/tokens", "");
    let mut by_key: HashMap<(String, String), HashSet<String>> = HashMap::new();
    for t in issued.as_array().unwrap() {
        let key = (
            t["client_id"].as_str().unwrap().to_ascii_lowercase(),
            t["resource"].as_str().unwrap().to_string(),
        );
        by_key
            .entry(key)
            .or_default()
            .insert(t["token"].as_str().unwrap().to_string());
    }
    let (mut calls, mut ok, mut slowest, mut distinct) = (0, 0, Duration::ZERO, 0);
    // What the client ever prints: its errors, its Debug and its statistics' Debug.
    let mut printed: HashSet<String> = HashSet::new();
    printed.insert(format!("{client:?}"));
    printed.insert(format!("{:?}", client.stats()));
    for (seen, messages, c, o, s) in results {
        printed.extend(messages);
        calls += c;
        ok += o;
        slowest = slowest.max(s);
        for ((i, r), tokens) in seen {
            let key = (ids[i].to_ascii_lowercase(), RESOURCES[r].to_string());
            for token in tokens {
                distinct += 1;
                assert!(
                    by_key
                        .get(&key)
                        .is_some_and(|set| set.iter().any(|t| digest(t.as_bytes()) == token)),
                    "a token not issued for {key:?}"
                );
            }
        }
    }
    // No issued token, nor a fragment of one (its signature, the part unique to it), nor any
    // JWT header, in anything the client printed.
    let mut fragments = 0;
    for token in by_key.values().flatten() {
        let signature = token.rsplit('.').next().unwrap_or(token);
        for text in &printed {
            assert!(
                !text.contains(signature) && !text.contains("eyJ"),
                "token text in client output: {text}"
            );
        }
        fragments += 1;
    }
    let stats = control(&url, "GET", "/control/stats", "");
    let per_key_max = stats["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["max_concurrency"].as_u64().unwrap())
        .max()
        .unwrap_or(0);
    println!(
        "torture {secs} s: {calls} calls, {ok} with a token ({distinct} distinct tokens checked), slowest call {slowest:?}; \
         emulator: {} requests, {} faults injected, max {} arrivals in a window, max {} in flight, per-key max {per_key_max}; \
         RSS warm {rss_warm} KiB, end {rss_end} KiB; {} distinct error and Debug texts searched for {fragments} issued tokens",
        stats["requests"], stats["faults_injected"], stats["max_window_arrivals"], stats["max_concurrency"],
        printed.len()
    );
    assert!(ok > 0 && calls > ok / 2);
    assert!(
        slowest < deadline_each + Duration::from_millis(500),
        "a call overran its deadline: {slowest:?}"
    );
    assert_eq!(
        per_key_max, 1,
        "single-flight: one request per key at a time"
    );
    assert!(
        stats["max_window_arrivals"].as_u64().unwrap() <= 21,
        "the budget held"
    );
    assert!(
        rss_end.saturating_sub(rss_warm) <= 2048,
        "RSS grew {} KiB",
        rss_end - rss_warm
    );
}
