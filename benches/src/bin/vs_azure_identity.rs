//! What the criterion bench `vs_azure_identity` does not measure, our `ManagedIdentityCredential`
//! against azure_identity's, both through azure_core's `TokenCredential` on tokio (2 workers),
//! against the emulator in App Service 2019 mode (azure_identity has no IMDS override):
//!
//! * **cached calls/s**: 1 and 8 tasks, rounds of ours then theirs back to back (the median
//!   of the rounds' calls/s, and of their ratios);
//! * **cold start**: 8 tasks each asking for the same 30 keys (10 identities × 3 scopes) in its
//!   own order, against a fresh emulator: the requests it saw per key, and the most in flight;
//! * **scope independence**: while a fetch of one scope is held 1 s at the emulator, how long a
//!   hit for another scope of the same credential takes;
//! * **memory**: heap bytes still allocated (a counting allocator) once 1,000 identities × 3
//!   scopes are cached, with the emulator in a child process so that its own memory does not
//!   count (`target/release/imds-emulator`, or `--emulator PATH`).
//!
//! Writes `target/bench/vs_azure_identity.json` and prints a Markdown table.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use azure_core::credentials::TokenCredential;
use imds_cache::{Config, Flavour};
use imds_cache_benches::azure::{
    cached_calls, emulator, our_client, ours, point_azure_identity_at, point_azure_identity_to,
    runtime, theirs, user_ids, SCOPE,
};
use imds_cache_benches::{target_dir, write_result};
use imds_cache_client::{
    Client, ClientConfig, ManagedIdentityCredential, ManagedIdentityCredentialOptions,
    OwnedEndpoint, SourceSpec, UserAssignedId,
};
use imds_emulator::{Fault, FaultRule};
use serde_json::json;

/// Heap bytes allocated and not yet freed, by every thread.
static LIVE: AtomicIsize = AtomicIsize::new(0);

struct Counting;

// SAFETY: forwards every call to the system allocator; only counts the sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded: `ptr` was allocated by `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: forwarded: `ptr` was allocated by `System` with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const SCOPES: [&str; 3] = [
    SCOPE,
    "https://vault.azure.net/.default",
    "https://storage.azure.com/.default",
];

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Cached calls/s of `credential` from `tasks` tasks making `calls` calls in all.
fn calls_per_s(
    rt: &tokio::runtime::Runtime,
    credential: &Arc<dyn TokenCredential>,
    tasks: u64,
    calls: u64,
) -> f64 {
    let start = Instant::now();
    cached_calls(rt, credential, tasks, calls);
    calls as f64 / start.elapsed().as_secs_f64()
}

/// `tasks` tasks each asking every credential for every scope, each task from its own
/// starting point, all at once.
fn cold_start(
    rt: &tokio::runtime::Runtime,
    credentials: &[Arc<dyn TokenCredential>],
    tasks: usize,
) {
    let keys = credentials.len() * SCOPES.len();
    rt.block_on(async {
        let handles: Vec<_> = (0..tasks)
            .map(|t| {
                let credentials = credentials.to_vec();
                tokio::spawn(async move {
                    for i in 0..keys {
                        let k = (i + t * keys / tasks) % keys;
                        let scope = SCOPES[k % SCOPES.len()];
                        credentials[k / SCOPES.len()]
                            .get_token(&[scope], None)
                            .await
                            .expect("a token");
                    }
                })
            })
            .collect();
        for h in handles {
            h.await.expect("task");
        }
    });
}

/// How long a hit for `SCOPE` takes while a fetch of the vault scope is held at the emulator.
fn hit_during_other_fetch(rt: &tokio::runtime::Runtime, ours_side: bool) -> Duration {
    let mut delay = FaultRule::new(Fault::Delay { ms: 1000 });
    delay.resource = Some("https://vault.azure.net".into());
    delay.count = Some(1);
    let e = emulator(0, vec![delay]);
    let client;
    let credential = if ours_side {
        client = our_client(&e, 64, false);
        ours(&client, None)
    } else {
        point_azure_identity_at(&e);
        theirs(None)
    };
    rt.block_on(async {
        credential.get_token(&[SCOPE], None).await.expect("warm");
        let before = e.stats().requests;
        let slow = {
            let credential = credential.clone();
            tokio::spawn(async move { credential.get_token(&[SCOPES[1]], None).await })
        };
        // The vault request is at the emulator (held there for 1 s) before the hit is asked.
        while e.stats().requests == before {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let start = Instant::now();
        credential.get_token(&[SCOPE], None).await.expect("a hit");
        let waited = start.elapsed();
        slow.await.expect("task").expect("the vault token");
        waited
    })
}

/// The emulator as a child process, stopped when dropped.
struct ChildEmulator {
    child: Child,
    url: String,
}

impl ChildEmulator {
    fn start(path: &PathBuf, identities: usize) -> Self {
        let mut child = Command::new(path)
            .args([
                "--mode",
                "appservice2019",
                "--port",
                "0",
                "--throttle",
                "off",
            ])
            .args([
                "--token-size",
                "1800",
                "--identities",
                &identities.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (cargo build --release -p imds-emulator)",
                    path.display()
                )
            });
        let mut url = String::new();
        let stdout = child.stdout.take().expect("stdout");
        BufReader::new(stdout).read_line(&mut url).expect("the URL");
        let url = url.trim().trim_end_matches('/').to_string();
        assert!(
            url.starts_with("http://127.0.0.1"),
            "the emulator said {url:?}"
        );
        Self { child, url }
    }
}

impl Drop for ChildEmulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until no thread is still freeing memory (a client's worker and refresher threads
/// let go of its arena after it is dropped): the live bytes stay put for 250 ms, 10 s at most.
fn settle() {
    let give_up = Instant::now() + Duration::from_secs(10);
    let mut last = LIVE.load(Ordering::Relaxed);
    let mut still = 0;
    while still < 5 && Instant::now() < give_up {
        std::thread::sleep(Duration::from_millis(50));
        let now = LIVE.load(Ordering::Relaxed);
        still = if now == last { still + 1 } else { 0 };
        last = now;
    }
}

/// Heap bytes held once `ids.len()` identities × 3 scopes are cached through `make`'s
/// credentials (the credentials included), measured from a settled heap.
fn memory(
    rt: &tokio::runtime::Runtime,
    ids: &[String],
    make: impl Fn(&str) -> Arc<dyn TokenCredential>,
) -> isize {
    settle();
    let before = LIVE.load(Ordering::Relaxed);
    let credentials: Vec<_> = ids.iter().map(|id| make(id)).collect();
    cold_start(rt, &credentials, 8);
    let held = LIVE.load(Ordering::Relaxed) - before;
    drop(credentials);
    held
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let emulator_path = args
        .iter()
        .position(|a| a == "--emulator")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("release/imds-emulator"));
    let rt = runtime();
    let mut report = serde_json::Map::new();

    // Cached calls/s.
    let e = emulator(0, Vec::new());
    point_azure_identity_at(&e);
    let client = our_client(&e, 64, false);
    let (mine, other) = (ours(&client, None), theirs(None));
    for c in [&mine, &other] {
        rt.block_on(c.get_token(&[SCOPE], None)).expect("warm");
    }
    let before = e.stats().requests;
    let mut cached = Vec::new();
    for tasks in [1u64, 8] {
        let (mut a, mut b, mut r) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..5 {
            let x = calls_per_s(&rt, &mine, tasks, 400_000);
            let y = calls_per_s(&rt, &other, tasks, 400_000);
            a.push(x);
            b.push(y);
            r.push(x / y);
        }
        let row = json!({
            "tasks": tasks,
            "ours_calls_per_s": median(a),
            "theirs_calls_per_s": median(b),
            "ratio": median(r),
        });
        cached.push(row);
    }
    assert_eq!(e.stats().requests, before, "every measured call was a hit");
    drop((mine, other, client, e));
    report.insert("cached".into(), json!(cached));

    // Cold start: 8 tasks × 30 keys, a fresh emulator for each side.
    let mut cold = serde_json::Map::new();
    for side in ["ours", "azure_identity"] {
        let e = emulator(10, Vec::new());
        let ids = user_ids(&e);
        let client = our_client(&e, 64, false);
        point_azure_identity_at(&e);
        let credentials: Vec<Arc<dyn TokenCredential>> = ids
            .iter()
            .map(|id| match side {
                "ours" => ours(&client, Some(id)),
                _ => theirs(Some(id)),
            })
            .collect();
        let start = Instant::now();
        cold_start(&rt, &credentials, 8);
        let wall = start.elapsed();
        let s = e.stats();
        let keys = ids.len() * SCOPES.len();
        cold.insert(
            side.into(),
            json!({
                "keys": keys,
                "requests": s.requests,
                "requests_per_key": s.requests as f64 / keys as f64,
                "max_in_flight": s.max_concurrency,
                "wall_ms": wall.as_millis() as u64,
            }),
        );
    }
    report.insert("cold_start".into(), serde_json::Value::Object(cold));

    // A hit for one scope while another scope's fetch is held.
    let waited_ours = hit_during_other_fetch(&rt, true);
    let waited_theirs = hit_during_other_fetch(&rt, false);
    report.insert(
        "hit_during_other_fetch_us".into(),
        json!({
            "ours": waited_ours.as_micros() as u64,
            "azure_identity": waited_theirs.as_micros() as u64,
        }),
    );

    // Memory: 1,000 identities × 3 scopes, the emulator in a child process.
    let child = ChildEmulator::start(&emulator_path, 1000);
    let ids: Vec<String> = (1..=1000)
        .map(|i| imds_emulator::Identity::user_assigned(i).client_id)
        .collect();
    let token_url = format!("{}/msi/token", child.url);
    let secret = imds_emulator::Config::default().secret;
    let ours_bytes = {
        let mut cache = Config::DEFAULT;
        cache.rate = 128;
        cache.rate_window_ms = 100;
        cache.in_flight = 16;
        settle();
        let before = LIVE.load(Ordering::Relaxed);
        let client = Arc::new(
            Client::with_config(ClientConfig {
                cache,
                capacity: 3000,
                bytes_per_entry: 2048,
                source: SourceSpec::Explicit(OwnedEndpoint {
                    flavour: Flavour::AppService2019,
                    url: token_url.clone(),
                    secret: Some(secret.clone()),
                    default_client_id: None,
                }),
                ..ClientConfig::default()
            })
            .expect("client"),
        );
        let client_bytes = LIVE.load(Ordering::Relaxed) - before;
        let held = memory(&rt, &ids, |id| {
            ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                user_assigned_id: Some(UserAssignedId::ClientId(id.to_string())),
                client: Some(client.clone()),
            }))
            .expect("credential")
        });
        client_bytes + held
    };
    point_azure_identity_to(&token_url, &secret);
    let theirs_bytes = memory(&rt, &ids, |id| theirs(Some(id)));
    drop(child);
    report.insert(
        "memory_bytes_3000_tokens".into(),
        json!({ "ours": ours_bytes, "azure_identity": theirs_bytes }),
    );

    let report = serde_json::Value::Object(report);
    if let Err(e) = write_result("vs_azure_identity", &report) {
        eprintln!("could not write the result: {e}");
    }
    print_table(&report);
}

fn print_table(r: &serde_json::Value) {
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
    println!("| measure | imds-cache | azure_identity 1.0 | ratio |");
    println!("| --- | ---: | ---: | ---: |");
    for row in r["cached"].as_array().into_iter().flatten() {
        println!(
            "| cached `get_token` calls/s, {} task(s), median of 5 paired rounds | {:.0} k | {:.0} k | {:.2}× |",
            row["tasks"],
            f(&row["ours_calls_per_s"]) / 1e3,
            f(&row["theirs_calls_per_s"]) / 1e3,
            f(&row["ratio"])
        );
    }
    let c = &r["cold_start"];
    println!(
        "| cold start, 8 tasks × 30 keys: requests per key (most in flight) | {:.2} ({}) | {:.2} ({}) | |",
        f(&c["ours"]["requests_per_key"]),
        c["ours"]["max_in_flight"],
        f(&c["azure_identity"]["requests_per_key"]),
        c["azure_identity"]["max_in_flight"]
    );
    let h = &r["hit_during_other_fetch_us"];
    println!(
        "| a hit for one scope while another scope's fetch is held 1 s (µs) | {} | {} | |",
        h["ours"], h["azure_identity"]
    );
    let m = &r["memory_bytes_3000_tokens"];
    let (o, t) = (f(&m["ours"]), f(&m["azure_identity"]));
    println!(
        "| heap held for 1,000 identities × 3 scopes | {:.1} MiB | {:.1} MiB | {:.2}× less |",
        o / 1048576.0,
        t / 1048576.0,
        t / o
    );
}
