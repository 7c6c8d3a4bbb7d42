//! Cold start: 1,000 identities × 3 resources fetched through the std driver from the
//! emulator binary, from an empty cache — wall time and the requests the emulator saw (which
//! must be exactly one per key).
//!
//! Runs the raised limits (emulator 500 requests/s and 16 in flight; client 125 per 250 ms,
//! 16 in flight — the core counts at most 128 starts per window) and, with `--real-limits`,
//! also IMDS's own (20/s and 5 in flight on both sides, ≈ 2.5 minutes).
//!
//! ```text
//! cold_start [--real-limits] [--identities N] [--emulator PATH]
//! ```
//!
//! The emulator is `target/release/imds-emulator` (`cargo build --release -p imds-emulator`)
//! unless `--emulator` says otherwise; each run starts its own on a free port and stops it.
//! Writes `target/bench/cold_start.json`; exits 1 when a check fails.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use imds_cache::{Config, Flavour, Identity, Resource};
use imds_cache_benches::{target_dir, write_result, RESOURCES};
use imds_cache_client::{Client, ClientConfig, OwnedEndpoint, SourceSpec};

/// One side's limits.
struct Limits {
    name: &'static str,
    emulator_rate: u32,
    emulator_concurrency: u32,
    client_rate: u32,
    client_window_ms: u64,
    client_in_flight: u32,
}

const RAISED: Limits = Limits {
    name: "raised (500/s, 16 in flight)",
    emulator_rate: 500,
    emulator_concurrency: 16,
    client_rate: 125,
    client_window_ms: 250,
    client_in_flight: 16,
};

const REAL: Limits = Limits {
    name: "IMDS's real (20/s, 5 in flight)",
    emulator_rate: 20,
    emulator_concurrency: 5,
    client_rate: 20,
    client_window_ms: 1000,
    client_in_flight: 5,
};

/// The emulator process, stopped when dropped.
struct Emulator {
    child: Child,
    url: String,
}

impl Emulator {
    fn start(path: &PathBuf, identities: usize, limits: &Limits) -> Result<Self, String> {
        let mut child = Command::new(path)
            .args(["--mode", "imds", "--port", "0", "--token-size", "1900"])
            .args(["--identities", &identities.to_string()])
            .args(["--rate", &limits.emulator_rate.to_string()])
            .args(["--concurrency", &limits.emulator_concurrency.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!(
                    "{}: {e} (cargo build --release -p imds-emulator)",
                    path.display()
                )
            })?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut url = String::new();
        let read = BufReader::new(stdout).read_line(&mut url);
        let emulator = Emulator {
            child,
            url: url.trim().to_string(),
        };
        match read {
            Ok(_) if emulator.url.starts_with("http://") => Ok(emulator),
            _ => Err("the emulator did not print its URL".into()),
        }
    }

    /// A GET on the control API, as JSON.
    fn control(&self, path: &str) -> Result<serde_json::Value, String> {
        let host = self.url.trim_start_matches("http://").trim_end_matches('/');
        let mut s = TcpStream::connect(host).map_err(|e| format!("{host}: {e}"))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .map_err(|e| e.to_string())?;
        let mut text = String::new();
        s.read_to_string(&mut text).map_err(|e| e.to_string())?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .ok_or("no body")?;
        serde_json::from_str(body).map_err(|e| e.to_string())
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// One cold start; returns its JSON row and whether its checks held.
fn run(
    path: &PathBuf,
    identities: usize,
    limits: &Limits,
) -> Result<(serde_json::Value, bool), String> {
    let emulator = Emulator::start(path, identities, limits)?;
    let mut cache = Config::DEFAULT;
    cache.rate = limits.client_rate;
    cache.rate_window_ms = limits.client_window_ms;
    cache.in_flight = limits.client_in_flight;
    let client = Client::with_config(ClientConfig {
        cache,
        source: SourceSpec::Explicit(OwnedEndpoint {
            flavour: Flavour::Imds,
            url: emulator.url.clone(),
            secret: None,
            default_client_id: None,
        }),
        ..ClientConfig::default()
    })
    .map_err(|e| e.to_string())?;
    let ids: Vec<String> = (1..=identities)
        .map(|i| imds_emulator::Identity::user_assigned(i).client_id)
        .collect();
    let identities_: Vec<Identity<'_>> = ids
        .iter()
        .map(|id| Identity::client_id(id).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let resources: Vec<Resource<'_>> = RESOURCES
        .iter()
        .map(|r| Resource::new(r).unwrap())
        .collect();
    let keys = identities_.len() * resources.len();
    let per_second = limits.client_rate as f64 * 1000.0 / limits.client_window_ms as f64;
    let floor = keys as f64 / per_second;
    println!(
        "cold start, {} limits: {keys} keys (floor at {per_second:.0}/s: {floor:.1} s)",
        limits.name
    );

    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(60.0 + floor * 2.0);
    let (report, errors) = client.prefetch(&identities_, &resources, deadline, |p| {
        if p.done % 250 == 0 || p.done == p.total {
            eprint!("\r  {}/{}", p.done, p.total);
        }
    });
    eprintln!();
    let wall = started.elapsed().as_secs_f64();
    if let Some((i, e)) = errors.first() {
        println!("  first error (key {i}): {e}");
    }
    let stats = emulator.control("/control/stats")?;
    let n = |k: &str| stats[k].as_u64().unwrap_or(u64::MAX);
    let (requests, sent_429) = (n("requests"), n("sent_429"));
    let checks = [
        ("every key fetched", report.ok == keys),
        ("exactly one request per key", requests == keys as u64),
        ("no 429 from the emulator", sent_429 == 0),
    ];
    println!(
        "  {wall:.2} s wall ({:.2} × the floor), {requests} requests for {keys} keys, {sent_429} × 429, most arrivals in a window {}, most in flight {}",
        wall / floor,
        n("max_window_arrivals"),
        n("max_concurrency"),
    );
    let mut ok = true;
    for (what, held) in checks {
        println!("  [{}] {what}", if held { "ok" } else { "FAILED" });
        ok &= held;
    }
    let row = serde_json::json!({
        "limits": limits.name,
        "keys": keys,
        "ok": report.ok,
        "wall_s": wall,
        "floor_s": floor,
        "requests": requests,
        "sent_429": sent_429,
        "max_window_arrivals": n("max_window_arrivals"),
        "max_concurrency": n("max_concurrency"),
    });
    Ok((row, ok))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let identities = arg(&args, "--identities")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let path = arg(&args, "--emulator")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("release/imds-emulator"));
    let mut runs = vec![&RAISED];
    if args.iter().any(|a| a == "--real-limits") {
        runs.push(&REAL);
    }
    let mut rows = Vec::new();
    let mut ok = true;
    for limits in runs {
        match run(&path, identities, limits) {
            Ok((row, held)) => {
                rows.push(row);
                ok &= held;
            }
            Err(e) => {
                eprintln!("cold start ({}): {e}", limits.name);
                ok = false;
            }
        }
    }
    // Keep an earlier real-limits row when this run did not redo it.
    if rows.len() == 1 {
        if let Ok(old) = std::fs::read(imds_cache_benches::result_path("cold_start")) {
            if let Ok(serde_json::Value::Array(old)) = serde_json::from_slice(&old) {
                rows.extend(
                    old.into_iter()
                        .filter(|r| r["limits"] == REAL.name)
                        .map(|mut r| {
                            r["earlier_run"] = true.into();
                            r
                        }),
                );
            }
        }
    }
    if let Err(e) = write_result("cold_start", &serde_json::Value::Array(rows)) {
        eprintln!("could not write the result: {e}");
    }
    if !ok {
        std::process::exit(1);
    }
}
