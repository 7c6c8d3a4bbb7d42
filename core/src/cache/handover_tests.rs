//! Two caches over one table taking turns as its writer, as processes sharing a file do, and
//! the repair after a writer died mid-write.

use super::tests::{complete, fetch, fill, hit, key, token_response, words, H, T0};
use super::*;
use crate::storage::{load, SEQ};
use crate::{layout_blocks, CacheError, Config, SliceStorage};
use std::boxed::Box;

/// The words of one table, leaked so that two caches can hold them.
fn table() -> (StorageLayout, &'static [Word]) {
    let l = layout_blocks(16, 64, crate::storage::BLOCK_SIZE).unwrap();
    (l, &*Box::leak(words(l.words)))
}

fn pair() -> (
    TokenCache<SliceStorage<'static>>,
    TokenCache<SliceStorage<'static>>,
) {
    let (l, w) = table();
    let first = TokenCache::with_words(Config::DEFAULT, l, w).unwrap();
    let second = TokenCache::attach_words(Config::DEFAULT, l, w).unwrap();
    (first, second)
}

#[test]
fn writers_take_turns_through_the_writer_state() {
    let (mut a, mut b) = pair();
    fill(&mut a, &key(1), T0, "tok-one", H);
    b.resume(a.writer_state()).unwrap();
    assert_eq!(b.len(), 1, "the entry count travels with the state");
    assert_eq!(hit(&mut b, &key(1), T0 + 1).0, "tok-one");
    fill(&mut b, &key(2), T0 + 2, "tok-two", H);
    a.resume(b.writer_state()).unwrap();
    assert_eq!(a.len(), 2);
    assert_eq!(hit(&mut a, &key(2), T0 + 3).0, "tok-two");
    // Neither overwrote the other's blocks: both tokens still read back whole.
    fill(&mut a, &key(3), T0 + 4, "tok-three", H);
    b.resume(a.writer_state()).unwrap();
    for (k, t) in [(1, "tok-one"), (2, "tok-two"), (3, "tok-three")] {
        assert_eq!(hit(&mut b, &key(k), T0 + 5).0, t);
    }
}

#[test]
fn one_fetch_for_both_and_the_other_waits() {
    let (mut a, mut b) = pair();
    let ticket = fetch(&mut a, &key(1), T0);
    b.resume(a.writer_state()).unwrap();
    assert!(
        matches!(
            b.lookup(&key(1), T0 + 1, &mut [0; 64]).unwrap(),
            Lookup::Pending { .. }
        ),
        "the lease in the table holds the other writer back"
    );
    a.resume(b.writer_state()).unwrap();
    let done = complete(&mut a, ticket, &token_response("tok", T0 + H), T0 + 2);
    assert!(matches!(done, Done::Token { .. }), "{done:?}");
    b.resume(a.writer_state()).unwrap();
    assert_eq!(hit(&mut b, &key(1), T0 + 3).0, "tok");
}

#[test]
fn a_state_that_does_not_fit_is_refused() {
    let (mut a, mut b) = pair();
    fill(&mut a, &key(1), T0, "tok", H);
    let good = a.writer_state().to_words();
    for bad in [
        [u64::MAX, good[1], good[2]],
        [good[0], good[1], u64::MAX],
        [good[0], u64::from(u32::MAX - 1) << 32, good[2]],
    ] {
        assert_eq!(b.resume(WriterState::from_words(bad)), Err(BadWriterState));
    }
    assert_eq!(b.len(), 0, "a refused state changes nothing");
    b.resume(WriterState::from_words(good)).unwrap();
    assert_eq!(b.len(), 1);
}

#[test]
fn repair_closes_a_torn_write_and_empties_the_table() {
    let (mut a, mut b) = pair();
    fill(&mut a, &key(1), T0, "tok-one", H);
    let ticket = fetch(&mut a, &key(2), T0 + 1);
    // A writer dies inside a write section of slot 0: its sequence is left odd.
    let slots = a.storage.slots();
    slots.begin(0);
    let torn = load(&slots.of(0)[SEQ]);
    assert_eq!(torn % 2, 1);
    b.resume(a.writer_state()).unwrap();
    assert_eq!(b.repair(), 2);
    let seq = load(&b.storage.slots().of(0)[SEQ]);
    assert!(
        seq % 2 == 0 && seq > torn,
        "closed, never reset: {torn} -> {seq}"
    );
    assert_eq!(b.len(), 0);
    assert!(
        b.reader().peek(&key(1), T0 + 2, &mut [0; 64]) == Peek::Miss,
        "no reader sees the dropped token"
    );
    assert!(
        !super::tests::arena_bytes(&b)
            .windows(7)
            .any(|w| w == b"tok-one"),
        "the arena is wiped"
    );
    // The dead writer's ticket is stale; the table works again.
    a.resume(b.writer_state()).unwrap();
    let mut response = token_response("late", T0 + H);
    let late = a.feed(ticket, &mut response, T0 + 3);
    assert!(matches!(late, Err(CacheError::StaleTicket)), "{late:?}");
    fill(&mut a, &key(1), T0 + 4, "tok-again", H);
    assert_eq!(hit(&mut a, &key(1), T0 + 5).0, "tok-again");
}

#[test]
fn a_lease_whose_holder_is_gone_is_ended_and_taken_over() {
    let (mut a, mut b) = pair();
    let ticket = fetch(&mut a, &key(1), T0);
    b.resume(a.writer_state()).unwrap();
    let lease = b.lease_of(&key(1), T0 + 5).expect("a live lease");
    assert_eq!((lease.ticket, lease.issued_at_ms), (ticket, T0));
    assert_eq!(b.lease_of(&key(2), T0 + 5), None, "no entry, no lease");
    b.end_lease(lease.ticket).unwrap();
    assert_eq!(b.stats().lease_lapses, 1);
    assert_eq!(b.lease_of(&key(1), T0 + 6), None);
    let next = fetch(&mut b, &key(1), T0 + 6);
    assert_ne!(next, ticket, "the next generation");
    assert!(matches!(b.end_lease(ticket), Err(CacheError::StaleTicket)));
    a.resume(b.writer_state()).unwrap();
    let mut response = token_response("late", T0 + H);
    let late = a.feed(ticket, &mut response, T0 + 7);
    assert!(matches!(late, Err(CacheError::StaleTicket)), "{late:?}");
}
