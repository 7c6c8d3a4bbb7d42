//! Cached `get_token` through azure_core's `TokenCredential` (an owned `AccessToken` per call,
//! as the trait demands): our `ManagedIdentityCredential` against azure_identity's, both warm,
//! on 1 and 8 tokio tasks (multi-thread runtime, 2 workers). BENCHMARKS.md has the results.

use std::time::Instant;

use criterion::{Criterion, Throughput};
use imds_cache_benches::azure::{
    cached_calls, emulator, our_client, ours, point_azure_identity_at, runtime, theirs, SCOPE,
};

fn cached(c: &mut Criterion) {
    let e = emulator(0, Vec::new());
    point_azure_identity_at(&e);
    let rt = runtime();
    let client = our_client(&e, 64, false);
    let credentials = [
        ("ours", ours(&client, None)),
        ("azure_identity", theirs(None)),
    ];
    for (_, credential) in &credentials {
        // Warm: the one fetch each credential makes.
        rt.block_on(credential.get_token(&[SCOPE], None))
            .expect("a token");
    }
    let before = e.stats().requests;
    let mut group = c.benchmark_group("vs_azure_identity/cached_get_token");
    group.throughput(Throughput::Elements(1));
    for tasks in [1u64, 8] {
        for (name, credential) in &credentials {
            group.bench_function(format!("{name}/{tasks}_tasks"), |b| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    cached_calls(&rt, credential, tasks, iters);
                    start.elapsed()
                })
            });
        }
    }
    group.finish();
    assert_eq!(e.stats().requests, before, "every measured call was a hit");
}

// `criterion_group!`/`criterion_main!` spelled out: the macros' `pub fn` has no doc comment,
// which the workspace's `missing_docs = "deny"` refuses.
fn main() {
    let mut c = Criterion::default().configure_from_args();
    cached(&mut c);
    c.final_summary();
}
