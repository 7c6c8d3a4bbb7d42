//! D15 with real threads: a reader peeks while the writer stores, overwrites, evicts and
//! invalidates. Every hit must be a whole token that the key held; under Miri these runs
//! also prove there is no data race (every shared access is atomic).

use super::*;
use crate::{layout_blocks, Flavour, Identity, Resource, Word};
use std::format;
use std::string::String;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::vec::Vec;

const T0: u64 = 1_700_000_000_000;
const H: u64 = 3_600_000;
/// Writer rounds: Miri is about a thousand times slower.
const ROUNDS: u64 = if cfg!(miri) { 6 } else { 400 };

fn key(k: usize) -> Key<'static> {
    const IDS: [&str; 3] = [
        "00000000-0000-4000-8000-000000000000",
        "00000001-0000-4000-8000-000000000000",
        "00000002-0000-4000-8000-000000000000",
    ];
    Key {
        flavour: Flavour::Imds,
        identity: Identity::client_id(IDS[k]).unwrap(),
        resource: Resource::new("https://management.azure.com").unwrap(),
    }
}

/// Token `v` of key `k`: its own name repeated, of a length that changes with `v`, so a copy
/// mixing two tokens (or two lengths) is never one of them.
fn token(k: usize, v: u64) -> String {
    let unit = format!("{k}.{v}.");
    let len = 40 + (v as usize % 7) * 24;
    unit.chars().cycle().take(len).collect()
}

/// Whether `bytes` are exactly some token of key `k`.
fn is_token_of(k: usize, bytes: &[u8]) -> bool {
    let text = core::str::from_utf8(bytes).unwrap_or("");
    let mut parts = text.splitn(3, '.');
    let (Some(kk), Some(v)) = (parts.next(), parts.next()) else {
        return false;
    };
    kk == format!("{k}") && v.parse().is_ok_and(|v| token(k, v).as_bytes() == bytes)
}

fn response(token: &str, expires_on_ms: u64) -> Vec<u8> {
    let body = format!(
        r#"{{"access_token":"{token}","expires_on":"{}","token_type":"Bearer"}}"#,
        expires_on_ms / 1000
    );
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A cache whose words a reader shares.
type Cache = TokenCache<BufferStorage<Arc<[Word]>>>;

/// Two slots for three keys (evictions), 64-byte blocks (tokens span chains).
fn cache() -> Cache {
    cache_in_flight(Config::DEFAULT.in_flight)
}

fn cache_in_flight(in_flight: u32) -> Cache {
    let l = layout_blocks(2, 16, 64).unwrap();
    let words: Arc<[Word]> = (0..l.words).map(|_| Word::new(0)).collect();
    let config = Config {
        rate: 100,
        in_flight,
        ..Config::DEFAULT
    };
    TokenCache::with_words(config, l, words).unwrap()
}

/// The writer's rounds: fetch, refresh (overwrite), evict (a third key), invalidate.
fn write(c: &mut Cache, clock: &AtomicU64) {
    let mut out = [0u8; 256];
    for round in 0..ROUNDS {
        // 56 minutes a round: a token of the round before is due for refresh, not expired.
        let now_ms = T0 + round * 56 * 60_000;
        clock.store(now_ms, core::sync::atomic::Ordering::Relaxed);
        let keys: &[usize] = if round % 4 == 3 { &[0, 2] } else { &[0, 1] };
        for &k in keys {
            let t = match c.lookup(&key(k), now_ms, &mut out).unwrap() {
                Lookup::Fetch(t) => t,
                Lookup::Hit {
                    refresh: Some(t), ..
                } => t,
                _ => continue,
            };
            let mut r = response(&token(k, round), now_ms + H);
            let _ = c.feed(t, &mut r, now_ms).unwrap();
        }
        if round % 5 == 4 {
            c.invalidate(&key(0), now_ms);
        }
    }
}

#[test]
fn peeks_racing_the_writer_return_whole_tokens_only() {
    let mut c = cache();
    let reader = c.reader();
    let (clock, done) = (AtomicU64::new(T0), AtomicBool::new(false));
    std::thread::scope(|scope| {
        let peeks = scope.spawn(|| {
            let mut out = [0u8; 256];
            let (mut hits, mut i) = (0u32, 0usize);
            while !done.load(core::sync::atomic::Ordering::Relaxed) {
                let (k, now_ms) = (i % 3, clock.load(core::sync::atomic::Ordering::Relaxed));
                if let Peek::Hit { len, .. } = reader.peek(&key(k), now_ms, &mut out) {
                    assert!(is_token_of(k, &out[..len]), "torn: {:?}", &out[..len]);
                    hits += 1;
                }
                i += 1;
            }
            hits
        });
        write(&mut c, &clock);
        done.store(true, core::sync::atomic::Ordering::Relaxed);
        let _ = peeks.join().unwrap();
    });
    // Quiet now: a peek agrees with a lookup.
    let now_ms = clock.load(core::sync::atomic::Ordering::Relaxed);
    let mut out = [0u8; 256];
    let Peek::Hit { len, .. } = reader.peek(&key(1), now_ms, &mut out) else {
        panic!("key 1 holds a token");
    };
    assert!(is_token_of(1, &out[..len]));
}

#[test]
fn exactly_one_peek_is_sent_to_refresh() {
    let mut c = cache();
    let mut out = [0u8; 256];
    let Lookup::Fetch(t) = c.lookup(&key(0), T0, &mut out).unwrap() else {
        panic!()
    };
    let _ = c.feed(t, &mut response(&token(0, 0), T0 + H), T0).unwrap();
    let reader = c.reader();
    let due = T0 + 56 * 60_000;
    let peek = |now_ms| match reader.peek(&key(0), now_ms, &mut [0u8; 256]) {
        Peek::Hit { refresh_due, .. } => refresh_due,
        other => panic!("{other:?}"),
    };
    assert!(!peek(T0 + 1), "not due yet");
    let claimed = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| (0..8).filter(|_| peek(due)).count()))
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .sum::<usize>()
    });
    assert_eq!(claimed, 1, "one caller per refresh");
    // The claimer takes the ticket; while it is live nobody else is sent.
    let Lookup::Hit {
        refresh: Some(t), ..
    } = c.lookup(&key(0), due, &mut out).unwrap()
    else {
        panic!()
    };
    assert!(!peek(due));
    // The refresh fails: after the retry wait, one caller is sent again.
    let _ = c.fail(t, Transport::Reset, due).unwrap();
    assert!(!peek(due));
    let later = due + 40_000;
    assert!(peek(later));
    assert!(!peek(later));
}

#[test]
fn a_claim_given_back_by_a_throttled_lookup_is_claimed_again() {
    let mut c = cache_in_flight(1);
    let mut out = [0u8; 256];
    let Lookup::Fetch(t) = c.lookup(&key(0), T0, &mut out).unwrap() else {
        panic!()
    };
    let _ = c.feed(t, &mut response(&token(0, 0), T0 + H), T0).unwrap();
    let due = T0 + 56 * 60_000;
    assert!(matches!(
        c.peek(&key(0), due, &mut out),
        Peek::Hit {
            refresh_due: true,
            ..
        }
    ));
    // The one in-flight permit goes to another key: the claimer's lookup hits without a
    // refresh ticket, and gives the claim back.
    assert!(matches!(
        c.lookup(&key(1), due, &mut out).unwrap(),
        Lookup::Fetch(_)
    ));
    assert!(matches!(
        c.lookup(&key(0), due, &mut out).unwrap(),
        Lookup::Hit { refresh: None, .. }
    ));
    assert!(matches!(
        c.peek(&key(0), due, &mut out),
        Peek::Hit {
            refresh_due: true,
            ..
        }
    ));
}
