//! `Client::get_token_async` against the emulator, on tokio's two schedulers and on futures'
//! executor: hits on the first poll, misses woken by the fetch, single-flight across tasks,
//! a dropped future that still fills the cache. Counters (the emulator's requests, the
//! client's stats), never timing, decide every assertion.

#[allow(dead_code)] // the fake clock is the other tests'
mod common;

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use common::{client_for, emulator, res, ARM, RESOURCES};
use futures::task::noop_waker_ref;
use imds_cache::Identity;
use imds_emulator::{Emulator, Fault, FaultRule, Mode};

/// The token the emulator issued last for `resource`.
fn issued(e: &Emulator, resource: &str) -> String {
    e.tokens()
        .into_iter()
        .rev()
        .find(|t| t.resource == resource)
        .expect("a token was issued")
        .token
}

/// Polls `future` once with a waker that does nothing.
fn poll_once<F: Future>(future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(noop_waker_ref()))
}

#[test]
fn the_future_is_send_and_shows_no_token() {
    fn send<T: Send>(_: &T) {}
    let e = emulator(Mode::Imds, 0, |_| {});
    let client = client_for(&e, |_| {});
    let resource = res(ARM);
    let future = client.get_token_async(&Identity::SYSTEM, &resource);
    send(&future);
    assert_eq!(format!("{future:?}"), "GetToken { state: \"start\" }");
    let token = futures::executor::block_on(future).unwrap();
    let shown = format!("{token:?}");
    assert!(!shown.contains(&issued(&e, ARM)), "{shown}");
    assert!(shown.starts_with("Token { len: "), "{shown}");
}

#[test]
fn a_hit_is_ready_on_the_first_poll() {
    let e = emulator(Mode::Imds, 0, |_| {});
    let client = client_for(&e, |_| {});
    let resource = res(ARM);
    client.get_token(&Identity::SYSTEM, &resource).unwrap();
    let hits = client.stats().hits;
    let mut future = pin!(client.get_token_async(&Identity::SYSTEM, &resource));
    match poll_once(future.as_mut()) {
        Poll::Ready(Ok(token)) => {
            assert_eq!(token.as_str(), Some(issued(&e, ARM).as_str()));
            assert!(token.expires_on_s() > imds_cache_client::now_ms() / 1000);
        }
        other => panic!("a hit must be ready at once: {other:?}"),
    }
    assert_eq!(client.stats().hits, hits + 1);
    assert_eq!(e.stats().requests, 1);
}

#[test]
fn a_miss_is_woken_by_futures_block_on() {
    let e = emulator(Mode::Imds, 0, |_| {});
    let client = client_for(&e, |_| {});
    let resource = res(ARM);
    let token =
        futures::executor::block_on(client.get_token_async(&Identity::SYSTEM, &resource)).unwrap();
    assert_eq!(token.as_str(), Some(issued(&e, ARM).as_str()));
    assert_eq!(e.stats().requests, 1);
    assert_eq!(client.stats().fetches, 1);
}

#[tokio::test(flavor = "current_thread")]
async fn a_miss_is_woken_on_tokio_current_thread() {
    let e = emulator(Mode::Imds, 0, |_| {});
    let client = client_for(&e, |_| {});
    let resource = res(ARM);
    let token = client
        .get_token_async(&Identity::SYSTEM, &resource)
        .await
        .unwrap();
    assert_eq!(token.as_str(), Some(issued(&e, ARM).as_str()));
    // The second call is a hit: no request, answered on this thread.
    let again = client
        .get_token_async(&Identity::SYSTEM, &resource)
        .await
        .unwrap();
    assert_eq!(again.secret(), token.secret());
    assert_eq!(e.stats().requests, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_tasks_thirty_keys_one_request_per_key() {
    let e = emulator(Mode::Imds, 10, |_| {});
    let client = Arc::new(client_for(&e, |_| {}));
    let ids: Arc<Vec<String>> = Arc::new(
        e.identities()
            .iter()
            .skip(1)
            .map(|i| i.client_id.clone())
            .collect(),
    );
    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let (client, ids) = (client.clone(), ids.clone());
            tokio::spawn(async move {
                let mut got = Vec::new();
                // Each task walks the keys from its own start, so they meet on every key.
                for n in 0..30 {
                    let k = (n + task * 4) % 30;
                    let id = Identity::client_id(&ids[k / 3]).unwrap();
                    let resource = res(RESOURCES[k % 3]);
                    let token = client.get_token_async(&id, &resource).await.unwrap();
                    got.push((k, token.as_str().unwrap().to_string()));
                }
                got
            })
        })
        .collect();
    let mut seen = std::collections::HashMap::new();
    for task in tasks {
        for (k, token) in task.await.unwrap() {
            // Every task got the same token for a key.
            assert_eq!(seen.entry(k).or_insert_with(|| token.clone()), &token);
        }
    }
    assert_eq!(seen.len(), 30);
    let stats = e.stats();
    assert_eq!(stats.requests, 30, "one request per key");
    assert!(stats.keys.iter().all(|k| k.requests == 1));
    assert_eq!(client.stats().fetches, 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_future_still_fills_the_cache() {
    // The fetch is held back long enough that the first poll cannot see it finish.
    let e = emulator(Mode::Imds, 0, |c| {
        c.faults = vec![FaultRule::new(Fault::Delay { ms: 2_000 }).times(1)];
    });
    let client = client_for(&e, |_| {});
    let resource = res(ARM);
    {
        let mut future = pin!(client.get_token_async(&Identity::SYSTEM, &resource));
        assert!(poll_once(future.as_mut()).is_pending());
    } // dropped while its fetch is on the wire
    assert_eq!(client.stats().fetches, 1);
    // The blocking call waits for that very fetch (single-flight), it does not send another.
    client.get_token(&Identity::SYSTEM, &resource).unwrap();
    let mut future = pin!(client.get_token_async(&Identity::SYSTEM, &resource));
    assert!(matches!(poll_once(future.as_mut()), Poll::Ready(Ok(_))));
    assert_eq!(
        e.stats().requests,
        1,
        "the dropped future's fetch filled the cache"
    );
    assert_eq!(client.stats().fetches, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_on_another_tasks_fetch_is_woken() {
    let e = emulator(Mode::Imds, 0, |c| {
        c.faults = vec![FaultRule::new(Fault::Delay { ms: 1_000 }).times(1)];
    });
    let client = Arc::new(client_for(&e, |_| {}));
    let first = {
        let client = client.clone();
        tokio::spawn(async move {
            let resource = res(ARM);
            let t = client.get_token_async(&Identity::SYSTEM, &resource).await;
            t.unwrap().as_str().unwrap().to_string()
        })
    };
    // Wait (on counters) until the first task's fetch is on the wire.
    while e.stats().requests == 0 {
        tokio::task::yield_now().await;
    }
    let resource = res(ARM);
    let second = client
        .get_token_async(&Identity::SYSTEM, &resource)
        .await
        .unwrap();
    assert_eq!(second.as_str().unwrap(), first.await.unwrap());
    assert_eq!(e.stats().requests, 1);
    let stats = client.stats();
    assert_eq!(stats.fetches, 1);
    assert!(
        stats.coalesced >= 1,
        "the second call waited for the first's fetch"
    );
}

#[test]
fn a_refusal_is_the_blocking_calls_error() {
    let e = emulator(Mode::Imds, 0, |c| {
        c.faults = vec![FaultRule::new(Fault::Status {
            status: 400,
            retry_after: None,
        })];
    });
    let client = client_for(&e, |_| {});
    let resource = res(ARM);
    let error = futures::executor::block_on(client.get_token_async(&Identity::SYSTEM, &resource))
        .unwrap_err();
    assert_eq!(error.code(), "bad_request");
    // Negative-cached: the next call fails on its first poll, without a request.
    let mut future = pin!(client.get_token_async(&Identity::SYSTEM, &resource));
    match poll_once(future.as_mut()) {
        Poll::Ready(Err(again)) => assert_eq!(again.code(), "bad_request"),
        other => panic!("a negative-cached failure must be ready at once: {other:?}"),
    }
    assert_eq!(e.stats().requests, 1);
}
