//! The core driven over plain std sockets: what `make demo` runs against the IMDS emulator.
//!
//! It fetches tokens for every (identity, resource) pair once, then asks for them again and
//! again: the second round never touches the network. The cache's request budget keeps the
//! fetches at IMDS's limit (20 per second, 5 in flight) however many identities there are.
//!
//! Usage: `sans_io_demo AUTHORITY CLIENT_ID...` (AUTHORITY as in
//! `AZURE_POD_IDENTITY_AUTHORITY_HOST`, e.g. `http://127.0.0.1:8080`).

use std::time::Instant;

use imds_cache::{layout, Config, Endpoint, Flavour, Identity, Key, Resource, TokenCache, Word};

#[path = "../tests/support/blocking.rs"]
mod blocking;
use blocking::{get_token, now_ms};

const RESOURCES: [&str; 3] = [
    "https://management.azure.com",
    "https://vault.azure.net",
    "https://storage.azure.com",
];

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let authority = args
        .next()
        .ok_or("usage: sans_io_demo AUTHORITY CLIENT_ID...")?;
    let client_ids: Vec<String> = args.collect();
    let endpoint = Endpoint::imds_authority(&authority).map_err(|e| e.to_string())?;

    // Storage sized at run time, as a C agent would hand it in.
    let slots = 4 * (client_ids.len() + 1) * RESOURCES.len();
    let l = layout(slots, 16 * 256).map_err(|e| e.to_string())?;
    let words: Vec<Word> = (0..l.words).map(|_| Word::new(0)).collect();
    let mut cache =
        TokenCache::with_words(Config::DEFAULT, l, &words[..]).map_err(|e| e.to_string())?;

    let mut identities = vec![Identity::SYSTEM];
    for id in &client_ids {
        identities.push(Identity::client_id(id).map_err(|e| format!("{id}: {e}"))?);
    }
    let keys: Vec<Key<'_>> = identities
        .iter()
        .flat_map(|identity| {
            RESOURCES.iter().map(move |r| Key {
                flavour: Flavour::Imds,
                identity: *identity,
                resource: Resource::new(r).expect("valid resource"),
            })
        })
        .collect();

    let mut out = vec![0u8; 16 * 1024];
    let started = Instant::now();
    for key in &keys {
        let (len, expires_on_ms) = get_token(&mut cache, key, &endpoint, &mut out)?;
        println!(
            "fetched {:<40} {:<30} token {} bytes, expires in {} s",
            describe(&key.identity),
            key.resource.as_str(),
            len,
            expires_on_ms.saturating_sub(now_ms()) / 1000
        );
    }
    let cold = started.elapsed();
    let fetched = cache.stats().tokens;
    println!(
        "cold start: {fetched} tokens in {:.2} s (budget: {} requests/s, {} in flight)",
        cold.as_secs_f64(),
        cache.config().rate,
        cache.config().in_flight
    );

    let rounds = 200_000 / keys.len().max(1);
    let started = Instant::now();
    for _ in 0..rounds {
        for key in &keys {
            get_token(&mut cache, key, &endpoint, &mut out)?;
        }
    }
    let hot = started.elapsed();
    let lookups = (rounds * keys.len()) as f64;
    let stats = cache.stats();
    println!(
        "hot path: {} lookups in {:.3} s ({:.0} ns each), {} new requests",
        lookups,
        hot.as_secs_f64(),
        hot.as_nanos() as f64 / lookups,
        stats.tokens - fetched
    );
    println!("stats: {stats:?}");
    if stats.tokens != keys.len() as u64 {
        return Err(format!(
            "expected {} tokens, got {}",
            keys.len(),
            stats.tokens
        ));
    }
    Ok(())
}

fn describe(identity: &Identity<'_>) -> String {
    match identity.value() {
        "" => "system-assigned".into(),
        v => format!("client_id {v}"),
    }
}
