//! How the client's hit scales with threads (`make bench-scaling`, part of `make bench`):
//! `Client::get_token_into` on 1,000 identities × 3 resources, all warm, from 1 and 2 threads,
//! same key and different keys (each thread its own uniform random sequence over the 3,000).
//!
//! Rounds alternate 1 thread and 2 threads back to back (the machine's load drifts slower
//! than a round), each a fixed window of calls counted by every thread; the ratio of a round
//! is its 2-thread calls/s over its 1-thread calls/s, and the figure is the median of the
//! rounds' ratios. Latency comes from a separate pass in which every 8th call is timed alone
//! (p50 and p99 over all threads). Writes `target/bench/hit_scaling.json` for the table and
//! ends with the line `hit scaling: 2 threads = X.XXx 1 thread (same key), Y.YYx (different
//! keys)`.
//!
//! `HIT_SCALING_ROUNDS` (default 7) and `HIT_SCALING_WINDOW_MS` (default 300) size the run.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use imds_cache::{Identity, Resource};
use imds_cache_benches::{key_sequence, warm_driver, write_result, RESOURCES, TOKEN_LEN};
use imds_cache_client::Client;
use serde_json::json;

const IDENTITIES: usize = 1_000;
const SEQUENCE: usize = 1 << 16;
/// One call in this many is timed in the latency pass.
const SAMPLE_EVERY: usize = 8;

struct Keys<'a> {
    identities: Vec<Identity<'a>>,
    resources: Vec<Resource<'a>>,
    /// Per thread: a key sequence, or `None` for the same key on every call.
    sequences: Vec<Vec<u32>>,
}

impl Keys<'_> {
    fn call(&self, client: &Client, seq: Option<&[u32]>, at: usize, out: &mut [u8]) {
        let k = seq.map_or(0, |s| s[at & (SEQUENCE - 1)] as usize);
        let (len, _) = client
            .get_token_into(&self.identities[k / 3], &self.resources[k % 3], out)
            .expect("a hit");
        black_box(len);
    }
}

/// Calls per second of `threads` threads calling until `window` has passed.
fn rate(client: &Client, keys: &Keys<'_>, threads: usize, same: bool, window: Duration) -> f64 {
    let stop = AtomicBool::new(false);
    let barrier = Barrier::new(threads + 1);
    let (calls, elapsed) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (stop, barrier) = (&stop, &barrier);
                s.spawn(move || {
                    let seq = (!same).then(|| &keys.sequences[t][..]);
                    let mut out = vec![0u8; 16 * 1024];
                    let mut at = 0usize;
                    barrier.wait();
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..64 {
                            keys.call(client, seq, at, &mut out);
                            at += 1;
                        }
                    }
                    at
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        std::thread::sleep(window);
        stop.store(true, Ordering::Relaxed);
        let calls: usize = handles.into_iter().map(|h| h.join().expect("caller")).sum();
        (calls, start.elapsed())
    });
    calls as f64 / elapsed.as_secs_f64()
}

/// Per-call latencies (ns) of `threads` threads making `calls` calls each, every
/// `SAMPLE_EVERY`th one timed.
fn latencies(
    client: &Client,
    keys: &Keys<'_>,
    threads: usize,
    same: bool,
    calls: usize,
) -> Vec<u64> {
    let barrier = Barrier::new(threads);
    let mut all: Vec<u64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let barrier = &barrier;
                s.spawn(move || {
                    let seq = (!same).then(|| &keys.sequences[t][..]);
                    let mut out = vec![0u8; 16 * 1024];
                    let mut timed = Vec::with_capacity(calls / SAMPLE_EVERY + 1);
                    barrier.wait();
                    for at in 0..calls {
                        if at % SAMPLE_EVERY == 0 {
                            let start = Instant::now();
                            keys.call(client, seq, at, &mut out);
                            timed.push(start.elapsed().as_nanos() as u64);
                        } else {
                            keys.call(client, seq, at, &mut out);
                        }
                    }
                    timed
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("caller"))
            .collect()
    });
    all.sort_unstable();
    all
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let rounds = env_or("HIT_SCALING_ROUNDS", 7).max(1) as usize;
    let window = Duration::from_millis(env_or("HIT_SCALING_WINDOW_MS", 300).max(10));
    let (_emulator, client, ids) = warm_driver(IDENTITIES, TOKEN_LEN);
    let keys = Keys {
        identities: ids
            .iter()
            .map(|id| Identity::client_id(id).unwrap())
            .collect(),
        resources: RESOURCES
            .iter()
            .map(|r| Resource::new(r).unwrap())
            .collect(),
        sequences: (0..2)
            .map(|t| key_sequence(ids.len() * RESOURCES.len(), SEQUENCE, 77 + t))
            .collect(),
    };
    let before = client.stats();
    let mut report = serde_json::Map::new();
    let mut ratios = Vec::new();
    for (name, same) in [("same_key", true), ("different_keys", false)] {
        let (mut one, mut two, mut round_ratios) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            let r1 = rate(&client, &keys, 1, same, window);
            let r2 = rate(&client, &keys, 2, same, window);
            one.push(r1);
            two.push(r2);
            round_ratios.push(r2 / r1);
        }
        let ratio = median(round_ratios.clone());
        let lat1 = latencies(&client, &keys, 1, same, 400_000);
        let lat2 = latencies(&client, &keys, 2, same, 400_000);
        let (p50_1, p99_1) = (percentile(&lat1, 0.50), percentile(&lat1, 0.99));
        let (p50_2, p99_2) = (percentile(&lat2, 0.50), percentile(&lat2, 0.99));
        println!(
            "{name}: 1 thread {:.2} M calls/s, 2 threads {:.2} M calls/s (median of {rounds} \
             rounds), ratio {ratio:.2}x; latency 1 thread p50 {p50_1} ns p99 {p99_1} ns, \
             2 threads p50 {p50_2} ns p99 {p99_2} ns",
            median(one.clone()) / 1e6,
            median(two.clone()) / 1e6,
        );
        report.insert(
            name.into(),
            json!({
                "calls_per_s_1_thread": one,
                "calls_per_s_2_threads": two,
                "round_ratios": round_ratios,
                "ratio": ratio,
                "p50_ns_1_thread": p50_1,
                "p99_ns_1_thread": p99_1,
                "p50_ns_2_threads": p50_2,
                "p99_ns_2_threads": p99_2,
            }),
        );
        ratios.push(ratio);
    }
    let stats = client.stats();
    assert_eq!(stats.misses, before.misses, "every measured call was a hit");
    report.insert("rounds".into(), json!(rounds));
    report.insert("window_ms".into(), json!(window.as_millis() as u64));
    match write_result("hit_scaling", &serde_json::Value::Object(report)) {
        Ok(path) => println!("wrote {}", path.display()),
        Err(e) => eprintln!("could not write the result: {e}"),
    }
    println!(
        "hit scaling: 2 threads = {:.2}x 1 thread (same key), {:.2}x (different keys)",
        ratios[0], ratios[1]
    );
}
