//! The client's observer against the in-process emulator: what each kind
//! of call tells it, that hits tell nothing, that no event shows a token, and that a
//! panicking observer harms nothing.

use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use imds_cache::{FailureKind, Flavour, Identity};
use imds_cache_client::{now_ms, Client, ClientConfig, Event, Observer};
use imds_emulator::{Emulator, Fault, FaultRule, Mode};

mod common;
use common::{res, FakeClock, ARM, BEHIND_MS, RESOURCES};

/// An event, owned, with its `Debug` text.
#[derive(Clone, Debug, PartialEq)]
enum Seen {
    Request {
        resource: String,
        selector: String,
        attempt: u32,
        refresh: bool,
    },
    Token {
        refresh: bool,
    },
    Retry {
        status: u16,
        future: bool,
    },
    Failed {
        kind: FailureKind,
    },
    Throttled,
    Refresh,
}

/// An event told: what it was, its `Debug`, and the name of the thread that told it.
type Told = (Seen, String, String);

/// Every event told; waiters are woken on each.
#[derive(Clone, Default)]
struct Log(Arc<(Mutex<Vec<Told>>, Condvar)>);

impl Log {
    /// An observer recording every event (with its thread's name) here.
    fn observer(&self) -> Observer {
        let log = self.clone();
        Observer::new(move |e: &Event<'_>| {
            let key = e.key().expect("every event of these tests is about a key");
            assert_eq!(key.flavour, Flavour::Imds);
            let seen = match *e {
                Event::Request {
                    attempt, refresh, ..
                } => Seen::Request {
                    resource: key.resource.as_str().into(),
                    selector: key.identity.value().into(),
                    attempt,
                    refresh,
                },
                Event::Token { refresh, .. } => Seen::Token { refresh },
                Event::Retry {
                    failure,
                    retry_at_ms,
                    ..
                } => Seen::Retry {
                    status: failure.status,
                    future: retry_at_ms > now_ms().saturating_sub(1000),
                },
                Event::Failed { failure, .. } => Seen::Failed { kind: failure.kind },
                Event::Throttled { .. } => Seen::Throttled,
                Event::Refresh { .. } => Seen::Refresh,
                _ => return,
            };
            let thread = std::thread::current().name().unwrap_or("").to_string();
            log.lock().push((seen, format!("{e:?}"), thread));
            log.0 .1.notify_all();
        })
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Told>> {
        self.0 .0.lock().unwrap()
    }

    fn seen(&self) -> Vec<Seen> {
        self.lock().iter().map(|s| s.0.clone()).collect()
    }

    /// Waits until `n` events like `seen` were told (a counter, not a time: the limit only
    /// keeps a broken client from hanging the run).
    fn wait_for(&self, seen: &Seen, n: usize) {
        let log = self.lock();
        let (log, timeout) = self
            .0
             .1
            .wait_timeout_while(log, Duration::from_secs(60), |log| {
                log.iter().filter(|s| s.0 == *seen).count() < n
            })
            .unwrap();
        drop(log);
        assert!(!timeout.timed_out(), "never told {n} × {seen:?}");
    }

    fn clear(&self) {
        self.lock().clear();
    }

    /// No event's `Debug` shows a token the emulator issued (nor a long piece of one).
    fn never_shows_a_token(&self, e: &Emulator) {
        let log = self.lock();
        assert!(!log.is_empty());
        for t in e.tokens() {
            for (_, debug, _) in log.iter() {
                assert!(!debug.contains(&t.token), "{debug}");
                assert!(!debug.contains(&t.token[..32]), "{debug}");
            }
        }
    }
}

/// An IMDS emulator with two user-assigned identities.
fn emulator(tweak: impl FnOnce(&mut imds_emulator::Config)) -> Emulator {
    common::emulator(Mode::Imds, 2, tweak)
}

/// A client for `e` that tells `events`, with short back-offs (the retry tests stay fast).
fn client_for(e: &Emulator, events: Observer, tweak: impl FnOnce(&mut ClientConfig)) -> Client {
    common::client_for(e, |c| {
        c.events = Some(events);
        c.cache.backoff_initial_ms = 20;
        tweak(c);
    })
}

fn request(selector: &str, attempt: u32, refresh: bool) -> Seen {
    Seen::Request {
        resource: ARM.into(),
        selector: selector.into(),
        attempt,
        refresh,
    }
}

#[test]
fn cold_fetch_then_hits() {
    let e = emulator(|_| {});
    let log = Log::default();
    let client = client_for(&e, log.observer(), |_| {});
    let user = e.identities()[1].client_id.clone();
    let id = Identity::client_id(&user).unwrap();
    client.get_token(&id, &res(ARM)).unwrap();
    assert_eq!(
        log.seen(),
        [request(&user, 1, false), Seen::Token { refresh: false }]
    );
    // Told on the caller's thread.
    let thread = std::thread::current().name().map(str::to_string);
    assert!(log.lock().iter().all(|s| Some(&s.2) == thread.as_ref()));
    // The Debug names the key (selectors are not secrets), never the token.
    let debug = log.lock()[0].1.clone();
    assert!(debug.contains(&user) && debug.contains(ARM), "{debug}");
    log.never_shows_a_token(&e);
    // Hits tell nothing.
    let mut buf = vec![0u8; 16 * 1024];
    for _ in 0..100 {
        client.get_token_into(&id, &res(ARM), &mut buf).unwrap();
    }
    assert_eq!(log.seen().len(), 2);
}

#[test]
fn a_503_then_a_token() {
    let e = emulator(|c| {
        c.faults = vec![FaultRule::new(Fault::Status {
            status: 503,
            retry_after: None,
        })
        .times(1)]
    });
    let log = Log::default();
    let client = client_for(&e, log.observer(), |_| {});
    client.get_token(&Identity::SYSTEM, &res(ARM)).unwrap();
    assert_eq!(
        log.seen(),
        [
            request("", 1, false),
            Seen::Retry {
                status: 503,
                future: true
            },
            request("", 2, false),
            Seen::Token { refresh: false },
        ]
    );
    log.never_shows_a_token(&e);

    // The asyncio path: the same story, told on a pool worker.
    log.clear();
    e.set_faults(vec![FaultRule::new(Fault::Status {
        status: 503,
        retry_after: None,
    })
    .times(1)]);
    let vault = res(RESOURCES[1]);
    let (tx, rx) = mpsc::channel();
    let mut buf = vec![0u8; 16 * 1024];
    let hit = client
        .get_token_or_notify(
            &Identity::SYSTEM,
            &vault,
            &mut buf,
            Instant::now() + Duration::from_secs(20),
            Box::new(move |r| tx.send(r.map(|_| ())).unwrap()),
        )
        .unwrap();
    assert!(hit.is_none());
    rx.recv_timeout(Duration::from_secs(20)).unwrap().unwrap();
    let seen = log.seen();
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert!(
        matches!(&seen[0], Seen::Request { attempt: 1, resource, .. } if resource == RESOURCES[1])
    );
    assert!(matches!(seen[1], Seen::Retry { status: 503, .. }));
    assert!(matches!(seen[2], Seen::Request { attempt: 2, .. }));
    assert_eq!(seen[3], Seen::Token { refresh: false });
    assert!(log.lock().iter().all(|s| s.2 == "imds-cache-worker"));
    log.never_shows_a_token(&e);
}

#[test]
fn a_terminal_failure() {
    let e = emulator(|c| {
        c.faults = vec![FaultRule::new(Fault::Status {
            status: 403,
            retry_after: None,
        })]
    });
    let log = Log::default();
    let client = client_for(&e, log.observer(), |_| {});
    assert!(client.get_token(&Identity::SYSTEM, &res(ARM)).is_err());
    assert_eq!(
        log.seen(),
        [
            request("", 1, false),
            Seen::Failed {
                kind: FailureKind::Forbidden
            }
        ]
    );
    // Remembered: the second call sends nothing and tells nothing.
    assert!(client.get_token(&Identity::SYSTEM, &res(ARM)).is_err());
    assert_eq!(log.seen().len(), 2);
}

#[test]
fn a_burst_over_the_budget_is_throttled() {
    let e = emulator(|_| {});
    let log = Log::default();
    // One request start per second: the burst's later keys wait for the budget.
    let client = client_for(&e, log.observer(), |c| {
        c.cache.rate = 1;
        c.cache.rate_window_ms = 1000;
    });
    std::thread::scope(|s| {
        for r in RESOURCES {
            let client = &client;
            s.spawn(move || client.get_token(&Identity::SYSTEM, &res(r)).unwrap());
        }
    });
    let seen = log.seen();
    let count = |f: fn(&Seen) -> bool| seen.iter().filter(|s| f(s)).count();
    assert!(count(|s| *s == Seen::Throttled) >= 1, "{seen:?}");
    assert_eq!(count(|s| matches!(s, Seen::Request { .. })), 3, "{seen:?}");
    assert_eq!(count(|s| matches!(s, Seen::Token { .. })), 3, "{seen:?}");
    // Once per call, not on every wake-up.
    assert!(count(|s| *s == Seen::Throttled) <= 2, "{seen:?}");
    log.never_shows_a_token(&e);
}

#[test]
fn a_background_refresh() {
    // 362 s tokens with a 360 s refresh margin: the refresh is due about 2 s after the fetch.
    // On fake time: the test moves the clock past the refresh time instead of sleeping.
    let e = emulator(|c| c.token_lifetime = 362);
    let log = Log::default();
    let clock = FakeClock::new();
    let client = client_for(&e, log.observer(), |c| {
        c.cache.refresh_margin_ms = 360_000;
        c.cache.min_lifetime_ms = 1_000;
        c.clock = clock.clock();
    });
    let (first, _) = client.get_token(&Identity::SYSTEM, &res(ARM)).unwrap();
    e.advance(100);
    let renewed = Seen::Token { refresh: true };
    for round in 1.. {
        clock.advance(BEHIND_MS + 2500);
        let (token, _) = client.get_token(&Identity::SYSTEM, &res(ARM)).unwrap();
        if token != first {
            break;
        }
        assert!(round <= 3, "no refresh brought a new token");
        log.wait_for(&renewed, round);
    }
    // The new token can be served a moment before its refresh is told: wait for the telling.
    log.wait_for(&renewed, 1);
    let told = log.lock().clone();
    let seen: Vec<Seen> = told.iter().map(|s| s.0.clone()).collect();
    // The fetch, then exactly one refresh (the clock reached no refresh time before the test
    // moved it), told in full, by the refresher.
    assert_eq!(
        seen,
        [
            request("", 1, false),
            Seen::Token { refresh: false },
            Seen::Refresh,
            request("", 1, true),
            Seen::Token { refresh: true }
        ]
    );
    assert!(told[2..].iter().all(|s| s.2 == "imds-cache-refresher"));
    log.never_shows_a_token(&e);
}

#[test]
fn a_panicking_observer_harms_nothing() {
    let e = emulator(|c| {
        c.token_lifetime = 362;
        c.faults = vec![FaultRule::new(Fault::Status {
            status: 500,
            retry_after: None,
        })
        .times(1)]
    });
    let told = Arc::new(Mutex::new(0));
    let counter = told.clone();
    let (renewed, renewals) = mpsc::channel();
    let renewed = Mutex::new(renewed);
    let observer = Observer::new(move |e: &Event<'_>| {
        *counter.lock().unwrap() += 1;
        if let Event::Token { refresh: true, .. } = e {
            let _ = renewed.lock().unwrap().send(());
        }
        panic!("an observer that panics");
    });
    // A clock that runs (the 500 is retried after a real backoff) and jumps past refresh times.
    let clock = FakeClock::running();
    let client = client_for(&e, observer, |c| {
        c.cache.refresh_margin_ms = 360_000;
        c.cache.min_lifetime_ms = 1_000;
        c.clock = clock.clock();
    });
    let (first, _) = client.get_token(&Identity::SYSTEM, &res(ARM)).unwrap();
    client
        .get_token(&Identity::SYSTEM, &res(RESOURCES[1]))
        .unwrap();
    // The refresher survives it too.
    e.advance(100);
    for round in 1.. {
        clock.advance(BEHIND_MS + 2500);
        if client.get_token(&Identity::SYSTEM, &res(ARM)).unwrap().0 != first {
            break;
        }
        assert!(round <= 3, "no refresh brought a new token");
        renewals
            .recv_timeout(Duration::from_secs(60))
            .expect("the refresher renews the token");
    }
    assert!(*told.lock().unwrap() >= 8);
    assert!(format!("{client:?}").contains("events: true"));
}
