//! The core driven over plain std sockets: what `make demo` runs against the IMDS emulator.
//!
//! It fetches tokens for every (identity, resource) pair once, then asks for them again and
//! again: the second round never touches the network. The cache's request budget keeps the
//! fetches at IMDS's limit (20 per second, 5 in flight) however many identities there are.
//!
//! Usage: `sans_io_demo AUTHORITY CLIENT_ID...` (AUTHORITY as in
//! `AZURE_POD_IDENTITY_AUTHORITY_HOST`, e.g. `http://127.0.0.1:8080`).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use imds_cache::{
    Config, Done, Endpoint, Feed, Flavour, Identity, Key, Lookup, Resource, Slot, Ticket,
    TokenCache, Transport,
};

const RESOURCES: [&str; 3] = [
    "https://management.azure.com",
    "https://vault.azure.net",
    "https://storage.azure.com",
];

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let authority = args
        .next()
        .ok_or("usage: sans_io_demo AUTHORITY CLIENT_ID...")?;
    let client_ids: Vec<String> = args.collect();
    let endpoint = Endpoint::imds_authority(&authority).map_err(|e| e.to_string())?;

    // Storage sized at run time, as a C agent would hand it in.
    let slots = 4 * (client_ids.len() + 1) * RESOURCES.len();
    let (mut slot_mem, mut index) = (vec![Slot::EMPTY; slots], vec![0u32; 2 * slots]);
    let (mut arena, mut links) = (vec![0u8; slots * 16 * 256], vec![0u32; slots * 16]);
    let mut cache = TokenCache::with_slices(
        Config::DEFAULT,
        &mut slot_mem,
        &mut index,
        &mut arena,
        &mut links,
    )
    .map_err(|e| e.to_string())?;

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
        let (len, expires_on) = get_token(&mut cache, key, &endpoint, &mut out)?;
        println!(
            "fetched {:<40} {:<30} token {} bytes, expires in {} s",
            describe(&key.identity),
            key.resource.as_str(),
            len,
            expires_on.saturating_sub(now_ms()) / 1000
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

/// D5's protocol, blocking: hits return at once; fetches go on the wire; waits sleep.
fn get_token<S: imds_cache::Storage>(
    cache: &mut TokenCache<S>,
    key: &Key<'_>,
    endpoint: &Endpoint<'_>,
    out: &mut [u8],
) -> Result<(usize, u64), String> {
    let deadline = now_ms() + 90_000;
    loop {
        let wait_until = match cache
            .lookup(key, now_ms(), out)
            .map_err(|e| e.to_string())?
        {
            Lookup::Hit {
                len,
                expires_on,
                refresh,
            } => {
                if let Some(ticket) = refresh {
                    fetch(cache, ticket, endpoint)?;
                }
                return Ok((len, expires_on));
            }
            Lookup::Fetch(ticket) => {
                fetch(cache, ticket, endpoint)?;
                continue;
            }
            Lookup::Pending { retry_at } | Lookup::Throttled { retry_at } => retry_at,
            Lookup::Failed { error, retry_at } if retry_at < deadline => {
                eprintln!("  retrying after: {error}");
                retry_at
            }
            Lookup::Failed { error, .. } => return Err(error.to_string()),
            Lookup::BufferTooSmall { needed } => return Err(format!("token needs {needed} bytes")),
        };
        if wait_until >= deadline {
            return Err("deadline passed".into());
        }
        std::thread::sleep(Duration::from_millis(
            wait_until.saturating_sub(now_ms()).max(1),
        ));
    }
}

/// One request on the wire for `ticket`, its response fed to the cache as it arrives.
fn fetch<S: imds_cache::Storage>(
    cache: &mut TokenCache<S>,
    ticket: Ticket,
    endpoint: &Endpoint<'_>,
) -> Result<(), String> {
    let mut request = [0u8; 4096];
    let d = cache
        .request(ticket, endpoint, &mut request)
        .map_err(|e| e.to_string())?;
    let addr = (d.host, d.port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next());
    let stream = addr.and_then(|a| TcpStream::connect_timeout(&a, Duration::from_secs(1)).ok());
    let Some(mut stream) = stream else {
        let done = cache
            .fail(ticket, Transport::Refused, now_ms())
            .map_err(|e| e.to_string())?;
        return report(done);
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    if stream.write_all(&request[..d.len]).is_err() {
        let done = cache
            .fail(ticket, Transport::Reset, now_ms())
            .map_err(|e| e.to_string())?;
        return report(done);
    }
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(_) => {
                let done = cache
                    .fail(ticket, Transport::Reset, now_ms())
                    .map_err(|e| e.to_string())?;
                return report(done);
            }
        };
        if n == 0 {
            let done = cache
                .eof(ticket, &mut received, now_ms())
                .map_err(|e| e.to_string())?;
            return report(done);
        }
        received.extend_from_slice(&chunk[..n]);
        // The cache re-parses from the start; it rearranges the bytes only once complete.
        match cache
            .feed(ticket, &mut received, now_ms())
            .map_err(|e| e.to_string())?
        {
            Feed::NeedMore => {}
            Feed::Done(done) => return report(done),
        }
    }
}

fn report(done: Done<'_>) -> Result<(), String> {
    match done {
        Done::Token { .. } | Done::Retry { .. } => Ok(()),
        Done::Failed {
            failure, detail, ..
        } => Err(format!("{failure}: {} {}", detail.code, detail.description)),
        Done::NeedKeyFile { path } => Err(format!("Arc key file {path}: not handled by this demo")),
    }
}
