//! Parse: real-shaped IMDS, App Service and error bodies (1.7–2 KB) and an IMDS body with a
//! 6 KB token — ours against `serde_json` into an owned struct, as a Rust user would write it.
//!
//! * `ours` — [`parse_token_body`] and the token unescaped into a caller buffer
//!   ([`TokenBody::write_token`]), or for the error body [`ErrorBody::parse`] and its bounded
//!   copy ([`ErrorBody::detail`]). No allocation (checked by `tests/zero_alloc.rs`).
//! * `serde_json` — `serde_json::from_slice` into a struct of `String`s, then `expires_on`
//!   parsed to an integer (what the cache needs).
//! * `ours_http` — ours on the whole HTTP response: framing ([`parse_response`]) and
//!   [`classify`] included, for scale (the serde row parses the body only).
//!
//! Throughput is the body's bytes (`ours_http` too), so MB/s compare like for like.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput};
use imds_cache::{classify, parse_response, parse_token_body, Classified, ErrorBody, Parsed};
use imds_cache_benches::{body_samples, BodyKind, SAMPLE_NOW_SECS};
use serde::Deserialize;

/// A token response the way a Rust user would deserialize it.
#[derive(Deserialize)]
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

/// An error response the way a Rust user would deserialize it.
#[derive(Deserialize)]
#[allow(dead_code)]
struct ErrorResponse {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    let mut out = vec![0u8; 16 * 1024];
    for sample in body_samples() {
        let body = sample.body.clone();
        group.throughput(Throughput::Bytes(body.len() as u64));
        match sample.kind {
            BodyKind::Token => {
                group.bench_function(BenchmarkId::new("ours", sample.name), |b| {
                    b.iter(|| {
                        let t = parse_token_body(black_box(&body), SAMPLE_NOW_SECS).unwrap();
                        let n = t.write_token(&mut out).unwrap();
                        black_box((n, t.expires_on_s))
                    })
                });
                group.bench_function(BenchmarkId::new("serde_json", sample.name), |b| {
                    b.iter(|| {
                        let t: TokenResponse = serde_json::from_slice(black_box(&body)).unwrap();
                        let expires_on_s: u64 = t.expires_on_s.parse().unwrap();
                        black_box((t, expires_on_s))
                    })
                });
            }
            BodyKind::Error => {
                group.bench_function(BenchmarkId::new("ours", sample.name), |b| {
                    b.iter(|| black_box(ErrorBody::parse(black_box(&body)).detail()))
                });
                group.bench_function(BenchmarkId::new("serde_json", sample.name), |b| {
                    b.iter(|| {
                        let e: ErrorResponse = serde_json::from_slice(black_box(&body)).unwrap();
                        black_box(e)
                    })
                });
            }
        }
        let http = sample.http();
        let mut buf = http.clone();
        group.bench_function(BenchmarkId::new("ours_http", sample.name), |b| {
            b.iter(|| {
                // Content-Length framing leaves the buffer untouched: no copy needed per run.
                let Ok(Parsed::Done(r)) = parse_response(black_box(&mut buf), false, 64 * 1024)
                else {
                    panic!("incomplete response")
                };
                match classify(sample.flavour, &r, SAMPLE_NOW_SECS, 16 * 1024) {
                    Classified::Token(t) => black_box(t.write_token(&mut out)).map(|_| ()),
                    Classified::Failure { body, .. } => {
                        black_box(body.detail());
                        Some(())
                    }
                    Classified::Challenge(_) => None,
                }
            })
        });
    }
    group.finish();
}

// `criterion_group!`/`criterion_main!` spelled out: the macros' `pub fn` has no doc comment,
// which the workspace's `missing_docs = "deny"` refuses.
fn main() {
    let mut c = Criterion::default().configure_from_args();
    parse(&mut c);
    c.final_summary();
}
