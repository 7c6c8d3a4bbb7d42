//! loom models of D15's seqlock (`RUSTFLAGS="--cfg loom" cargo test -p imds-cache --release
//! --lib loom`, with `LOOM_MAX_PREEMPTIONS=2`): the table's words are loom's atomics, the
//! writer is the real cache refreshing a token, the reader the real `peek`.

use super::*;
use crate::storage::crash;
use crate::{layout_blocks, Flavour, Identity, Resource, Word};
use loom::thread;
use std::format;
use std::sync::Arc;
use std::vec::Vec;

const T0: u64 = 1_700_000_000_000;
const H: u64 = 3_600_000;
const OLD: &[u8] = b"old-token-0123";
const NEW: &[u8] = b"NEW-TOKEN-abcdefghij";

fn key() -> Key<'static> {
    Key {
        flavour: Flavour::Imds,
        identity: Identity::SYSTEM,
        resource: Resource::new("https://a.example").unwrap(),
    }
}

fn response(token: &[u8], expires_on_ms: u64) -> Vec<u8> {
    let token = core::str::from_utf8(token).unwrap();
    let body = format!(
        r#"{{"access_token":"{token}","expires_on":"{}"}}"#,
        expires_on_ms / 1000
    );
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// `loom::model` with room for the cache's stack buffers (keys, responses, parse state):
/// the model runs in a thread with a larger stack.
fn model<F: Fn() + Sync + Send + 'static>(f: F) {
    let f = Arc::new(f);
    let mut b = loom::model::Builder::new();
    // One preemption unless LOOM_MAX_PREEMPTIONS says more: the run stays under a minute.
    b.preemption_bound = b.preemption_bound.or(Some(1));
    b.check(move || {
        let f = f.clone();
        spawn(move || f()).join().unwrap();
    });
}

/// A loom thread with a stack the cache fits in.
fn spawn<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> thread::JoinHandle<T> {
    thread::Builder::new().stack_size(1 << 20).spawn(f).unwrap()
}

type Cache = TokenCache<BufferStorage<Arc<[Word]>>>;

/// A cache holding `OLD` for the key, and a refresh ticket for it at `due`.
fn setup() -> (Cache, Ticket, u64) {
    let l = layout_blocks(1, 2, 64).unwrap();
    let words: Arc<[Word]> = (0..l.words).map(|_| Word::new(0)).collect();
    let mut c = TokenCache::with_words(Config::DEFAULT, l, words).unwrap();
    let mut out = [0u8; 64];
    let Ok(Lookup::Fetch(t)) = c.lookup(&key(), T0, &mut out) else {
        panic!()
    };
    let _ = c.feed(t, &mut response(OLD, T0 + H), T0).unwrap();
    let due = T0 + 56 * 60_000;
    let Ok(Lookup::Hit {
        refresh: Some(t), ..
    }) = c.lookup(&key(), due, &mut out)
    else {
        panic!()
    };
    (c, t, due)
}

/// What a peek may answer while `OLD` is replaced by `NEW`: either token whole, or a miss.
fn check(reader: &Reader<BufferStorage<Arc<[Word]>>>, now_ms: u64) {
    let mut out = [0u8; 64];
    match reader.peek(&key(), now_ms, &mut out) {
        Peek::Hit { len, .. } => {
            let got = &out[..len];
            assert!(got == OLD || got == NEW, "torn token {got:?}");
        }
        Peek::Miss => {}
        other => panic!("{other:?}"),
    }
}

/// Property: a peek racing a refresh (a new chain written, the slot switched to it, the old
/// chain wiped and freed) returns the old token or the new one whole, or misses.
#[test]
fn loom_peek_racing_a_refresh_is_never_torn() {
    model(|| {
        let (mut c, t, due) = setup();
        let reader = c.reader();
        let peeker = spawn(move || check(&reader, due));
        let _ = c.feed(t, &mut response(NEW, due + H), due).unwrap();
        peeker.join().unwrap();
    });
}

/// Property: a writer that stops after any number of its stores (a crash) never makes a
/// peek return a torn token, during the write or after it.
#[test]
fn loom_a_writer_crashing_after_any_store_leaves_no_torn_token() {
    // How many stores the refresh makes.
    let total = {
        let n = Arc::new(std::sync::Mutex::new(0));
        let n2 = n.clone();
        model(move || {
            let (mut c, t, due) = setup();
            crash::after(usize::MAX);
            let _ = c.feed(t, &mut response(NEW, due + H), due).unwrap();
            *n2.lock().unwrap() = crash::stores();
            crash::after(usize::MAX);
        });
        let total = *n.lock().unwrap();
        total
    };
    assert!(total > 4, "{total}");
    // Every store of the section's start and end, a sample in between.
    let ks = (0..total).filter(|&k| k < 4 || k + 4 >= total || k % 5 == 0);
    for k in ks {
        model(move || {
            let (mut c, t, due) = setup();
            let reader = c.reader();
            let peeker = spawn(move || check(&reader, due));
            crash::after(k);
            let _ = c.feed(t, &mut response(NEW, due + H), due);
            let after = c.reader();
            peeker.join().unwrap();
            check(&after, due);
            crash::after(usize::MAX);
            // The dead writer's cache is not dropped (its drop would wipe as a live writer).
            core::mem::forget(c);
        });
    }
}
