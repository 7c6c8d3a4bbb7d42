//! The parse bench's "ours" rows and a cache hit allocate nothing; `serde_json` into an owned
//! struct does (counted for the table). A counting allocator watches the test's own thread.
//!
//! With `IMDS_BENCH_WRITE=1` the counts are also written to `target/bench/allocs.json` for
//! `bench_table` (the `make bench` run does that).

use std::hint::black_box;

use imds_cache::{
    classify, parse_response, parse_token_body, Classified, ErrorBody, Lookup, Parsed,
};
use imds_cache_benches::{body_samples, write_result, BodyKind, WarmCache, SAMPLE_NOW_SECS};

// One allocator for both zero-allocation tests (this one and the driver's).
#[path = "../../client/tests/common/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::allocations;

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct TokenResponse {
    access_token: String,
    #[serde(rename = "expires_on")]
    expires_on_s: String,
    #[serde(default)]
    expires_in: Option<String>,
    #[serde(default)]
    resource: Option<String>,
    token_type: String,
    #[serde(default)]
    client_id: Option<String>,
}

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct ErrorResponse {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

#[test]
fn ours_allocates_nothing_serde_json_does() {
    // The counter works.
    assert_eq!(allocations(|| vec![1u8; 10]), 1);

    let mut out = vec![0u8; 16 * 1024];
    let mut report = serde_json::Map::new();
    for sample in body_samples() {
        let body = &sample.body;
        let (ours, serde) = match sample.kind {
            BodyKind::Token => (
                allocations(|| {
                    let t = parse_token_body(body, SAMPLE_NOW_SECS).unwrap();
                    t.write_token(&mut out).unwrap()
                }),
                allocations(|| {
                    let t: TokenResponse = serde_json::from_slice(body).unwrap();
                    t.expires_on_s.parse::<u64>().unwrap()
                }),
            ),
            BodyKind::Error => (
                allocations(|| ErrorBody::parse(body).detail()),
                allocations(|| serde_json::from_slice::<ErrorResponse>(body).unwrap()),
            ),
        };
        let mut http = sample.http();
        let ours_http = allocations(|| {
            let Ok(Parsed::Done(r)) = parse_response(&mut http, false, 64 * 1024) else {
                panic!("incomplete")
            };
            match classify(sample.flavour, &r, SAMPLE_NOW_SECS, 16 * 1024) {
                Classified::Token(t) => t.write_token(&mut out).map(|_| ()),
                Classified::Failure { body, .. } => {
                    black_box(body.detail());
                    Some(())
                }
                Classified::Challenge(_) => None,
            }
        });
        println!(
            "{}: ours {ours}, ours_http {ours_http}, serde_json {serde}",
            sample.name
        );
        assert_eq!(ours, 0, "{}: ours allocated", sample.name);
        assert_eq!(ours_http, 0, "{}: ours (with HTTP) allocated", sample.name);
        assert!(
            serde > 0,
            "{}: serde_json is expected to allocate",
            sample.name
        );
        report.insert(
            sample.name.to_string(),
            serde_json::json!({ "ours": ours, "ours_http": ours_http, "serde_json": serde }),
        );
    }

    let mut warm = WarmCache::new(64, imds_cache_benches::TOKEN_LEN);
    let now_ms = warm.hit_time();
    let ids = warm.ids.clone();
    let key = imds_cache_benches::key_of(&ids[3], imds_cache_benches::RESOURCES[1]);
    let hit = allocations(|| {
        let r = warm.cache.lookup(&key, now_ms, &mut out).unwrap();
        assert!(matches!(r, Lookup::Hit { .. }), "{r:?}");
    });
    println!("cache hit: ours {hit}");
    assert_eq!(hit, 0, "a cache hit allocated");
    report.insert("cache_hit".into(), serde_json::json!({ "ours": hit }));

    if std::env::var_os("IMDS_BENCH_WRITE").is_some_and(|v| v == "1") {
        write_result("allocs", &serde_json::Value::Object(report)).unwrap();
    }
}
