//! The Rust agent of `make demo`: warms 1000 identities × 3 resources from the emulator
//! through the std driver, hammers the warm cache from several threads, and reports.
//!
//! The endpoint comes from the environment as on a real VM (D11): point
//! `AZURE_POD_IDENTITY_AUTHORITY_HOST` at the emulator. Flags: `--rate N --window MS
//! --in-flight N` (the client's budget), `--seconds S`, `--threads T`. Exit code 0 only when
//! every check of the report holds.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use imds_cache::{Config, Identity, Resource};
use imds_cache_client::{Client, ClientConfig};

const RESOURCES: [&str; 3] = [
    "https://management.azure.com",
    "https://vault.azure.net",
    "https://storage.azure.com",
];

fn main() {
    match run() {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("rust agent: {e}");
            std::process::exit(2);
        }
    }
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A GET on the emulator's control API, as JSON.
fn control(authority: &str, path: &str) -> Result<serde_json::Value, String> {
    let host = authority
        .trim_start_matches("http://")
        .trim_end_matches('/');
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

fn run() -> Result<bool, String> {
    let authority = std::env::var("AZURE_POD_IDENTITY_AUTHORITY_HOST")
        .map_err(|_| "set AZURE_POD_IDENTITY_AUTHORITY_HOST to the emulator's URL")?;
    let (seconds, threads) = (arg("--seconds", 5), arg("--threads", 4) as usize);
    let mut cache = Config::DEFAULT;
    cache.rate = arg("--rate", 20) as u32;
    cache.rate_window_ms = arg("--window", 1000);
    cache.in_flight = arg("--in-flight", 5) as u32;
    let client = Client::with_config(ClientConfig {
        cache: cache.clone(),
        ..ClientConfig::default()
    })
    .map_err(|e| e.to_string())?;

    let listed = control(&authority, "/control/identities")?;
    let client_ids: Vec<String> = listed["identities"]
        .as_array()
        .ok_or("no identities")?
        .iter()
        .filter(|i| i["kind"] == "user_assigned")
        .filter_map(|i| i["client_id"].as_str().map(String::from))
        .collect();
    let identities: Vec<Identity<'_>> = client_ids
        .iter()
        .map(|id| Identity::client_id(id))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let resources: Vec<Resource<'_>> = RESOURCES
        .iter()
        .map(|r| Resource::new(r).expect("valid"))
        .collect();
    let keys = identities.len() * resources.len();
    let per_second = cache.rate as f64 * 1000.0 / cache.rate_window_ms as f64;
    println!(
        "rust agent: {} identities × {} resources = {keys} keys; budget {} requests per {} ms (≈ {per_second:.0}/s), {} in flight",
        identities.len(),
        resources.len(),
        cache.rate,
        cache.rate_window_ms,
        cache.in_flight
    );

    // Cold start.
    let started = Instant::now();
    let deadline = started + Duration::from_secs(30 + (keys as f64 / per_second) as u64 * 2);
    let (report, errors) = client.prefetch(&identities, &resources, deadline, |p| {
        if p.done % 500 == 0 || p.done == p.total {
            eprint!("\r  prefetch {}/{}", p.done, p.total);
        }
    });
    eprintln!();
    let cold = started.elapsed();
    if let Some((i, e)) = errors.first() {
        println!("  first prefetch error (key {i}): {e}");
    }
    let seen = control(&authority, "/control/stats")?;
    let requests = seen["requests"].as_u64().unwrap_or(0);

    // Hot phase: random keys from a pre-generated sequence, several threads.
    let before = client.stats();
    let hot_started = Instant::now();
    let end = hot_started + Duration::from_secs(seconds);
    let mut latencies: Vec<u64> = Vec::new();
    let mut failures = 0u64;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (client, identities, resources) = (&client, &identities, &resources);
                s.spawn(move || {
                    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (t as u64 + 1);
                    let mut buf = vec![0u8; 16 * 1024];
                    let mut lat = Vec::with_capacity(4_000_000);
                    let mut failed = 0u64;
                    while Instant::now() < end {
                        for _ in 0..256 {
                            rng ^= rng << 13;
                            rng ^= rng >> 7;
                            rng ^= rng << 17;
                            let k = (rng % (identities.len() * resources.len()) as u64) as usize;
                            let call = Instant::now();
                            let r = client.get_token_into(
                                &identities[k / 3],
                                &resources[k % 3],
                                &mut buf,
                            );
                            lat.push(call.elapsed().as_nanos() as u64);
                            failed += u64::from(r.is_err());
                        }
                    }
                    (lat, failed)
                })
            })
            .collect();
        for h in handles {
            let (lat, failed) = h.join().expect("hammer thread");
            latencies.extend(lat);
            failures += failed;
        }
    });
    let hot = hot_started.elapsed();
    let after = client.stats();
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0)
    };
    let (hits, misses) = (after.hits - before.hits, after.misses - before.misses);
    let hit_rate = hits as f64 / (hits + misses).max(1) as f64;
    let seen = control(&authority, "/control/stats")?;
    let sent_429 = seen["sent_429"].as_u64().unwrap_or(u64::MAX);

    let checks = [
        ("cold start: every key fetched", report.ok == keys),
        (
            "cold start: the emulator saw exactly one request per key",
            requests == keys as u64,
        ),
        ("hot phase: no call failed", failures == 0),
        ("hot phase: every call a hit", hit_rate == 1.0),
        (
            "throttling events: none (no 429 from the emulator)",
            sent_429 == 0,
        ),
    ];
    println!(
        "  cold start     {requests} requests seen by the emulator for {keys} keys in {:.2} s",
        cold.as_secs_f64()
    );
    println!(
        "  hot phase      {} calls in {:.1} s on {threads} threads ({:.1} M calls/s); p50 {} ns, p99 {} ns; hit rate {:.4}",
        latencies.len(),
        hot.as_secs_f64(),
        latencies.len() as f64 / hot.as_secs_f64() / 1e6,
        pct(0.50),
        pct(0.99),
        hit_rate
    );
    println!(
        "  throttling     {sent_429} responses 429; {} lookups held back by the client's budget",
        after.throttled
    );
    let mut ok = true;
    for (what, held) in checks {
        println!("  [{}] {what}", if held { "ok" } else { "FAILED" });
        ok &= held;
    }
    Ok(ok)
}
