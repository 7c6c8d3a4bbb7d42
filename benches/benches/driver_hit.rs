//! Driver hit: `Client::get_token_into` on a warm client (lock, clock reads and the 1.9 KB copy
//! included) against the in-process emulator, 1,000 identities × 3 resources warm.
//!
//! * `same_key` — every call of every thread asks for one key.
//! * `different_keys` — each thread walks its own pre-generated uniform random sequence over
//!   the 3,000 keys.
//!
//! `driver_hit` is a client with its own table; `driver_hit_host` the same rows for a client
//! that reads the host's table (`Share::Host`: the table mapped from a file in a fresh 0700
//! directory), so that the two hits can be compared.
//!
//! With 2 threads one iteration is one call on each thread (throughput counts both), and the
//! time is the wall time of the slower thread: the figure shows what the lock costs when two
//! cores contend for it. The machine has 2 cores, so the 2-thread rows also share them with
//! the emulator's idle threads and whatever else runs.

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use imds_cache::{Identity, Resource};
use imds_cache_benches::{key_sequence, warm_driver_in, RESOURCES, TOKEN_LEN};
use imds_cache_client::Client;

const IDENTITIES: usize = 1_000;
const SEQUENCE: usize = 1 << 16;

/// The calls of one thread: `iters` hits, keys from `seq` (or always key 0).
fn hammer(
    client: &Client,
    identities: &[Identity<'_>],
    resources: &[Resource<'_>],
    seq: Option<&[u32]>,
    iters: u64,
    out: &mut [u8],
) {
    for at in 0..iters as usize {
        let k = seq.map_or(0, |s| s[at & (SEQUENCE - 1)] as usize);
        let (len, _) = client
            .get_token_into(&identities[k / 3], &resources[k % 3], out)
            .expect("a hit");
        black_box(len);
    }
}

fn driver_hit(c: &mut Criterion, group: &str, share_dir: Option<&std::path::Path>) {
    let (_emulator, client, ids) = warm_driver_in(IDENTITIES, TOKEN_LEN, share_dir);
    let identities: Vec<Identity<'_>> = ids
        .iter()
        .map(|id| Identity::client_id(id).unwrap())
        .collect();
    let resources: Vec<Resource<'_>> = RESOURCES
        .iter()
        .map(|r| Resource::new(r).unwrap())
        .collect();
    let keys = identities.len() * resources.len();
    let sequences: Vec<Vec<u32>> = (0..2)
        .map(|t| key_sequence(keys, SEQUENCE, 77 + t))
        .collect();
    let before = client.stats();

    let mut group = c.benchmark_group(group);
    for threads in [1usize, 2] {
        group.throughput(Throughput::Elements(threads as u64));
        for pattern in ["same_key", "different_keys"] {
            let id = BenchmarkId::new(pattern, format!("{threads}_threads"));
            group.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    let seq = |t: usize| (pattern == "different_keys").then(|| &sequences[t][..]);
                    if threads == 1 {
                        let mut out = vec![0u8; 16 * 1024];
                        let start = Instant::now();
                        hammer(&client, &identities, &resources, seq(0), iters, &mut out);
                        return start.elapsed();
                    }
                    let barrier = Barrier::new(threads);
                    std::thread::scope(|s| {
                        let handles: Vec<_> = (0..threads)
                            .map(|t| {
                                let (client, identities, resources) =
                                    (&client, &identities, &resources);
                                let (barrier, seq) = (&barrier, seq(t));
                                s.spawn(move || {
                                    let mut out = vec![0u8; 16 * 1024];
                                    barrier.wait();
                                    let start = Instant::now();
                                    hammer(client, identities, resources, seq, iters, &mut out);
                                    start.elapsed()
                                })
                            })
                            .collect();
                        handles
                            .into_iter()
                            .map(|h| h.join().expect("hammer thread"))
                            .max()
                            .unwrap_or(Duration::ZERO)
                    })
                })
            });
        }
    }
    group.finish();
    let stats = client.stats();
    assert_eq!(stats.misses, before.misses, "every measured call was a hit");
    assert!(stats.hits > before.hits);
}

// `criterion_group!`/`criterion_main!` spelled out: the macros' `pub fn` has no doc comment,
// which the workspace's `missing_docs = "deny"` refuses.
fn main() {
    let mut c = Criterion::default().configure_from_args();
    driver_hit(&mut c, "driver_hit", None);
    let dir = std::env::temp_dir().join(format!("imds-bench-host-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a directory for the host's table");
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .expect("mode 0700");
    driver_hit(&mut c, "driver_hit_host", Some(&dir));
    let _ = std::fs::remove_dir_all(&dir);
    c.final_summary();
}
