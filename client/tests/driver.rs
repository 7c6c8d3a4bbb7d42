//! The driver end to end against the in-process emulator.

use std::sync::Arc;
use std::time::{Duration, Instant};

use imds_cache::{Config, FailureKind, Flavour, Identity, Resource};
use imds_cache_client::{Client, ClientConfig, Error, Event, Observer, OwnedEndpoint, SourceSpec};
use imds_emulator::{Emulator, Fault, FaultRule, Mode};

mod common;
use common::{client_for, emulator, res, FakeClock, ARM, BEHIND_MS, RESOURCES};

fn issued(e: &Emulator, client_id: &str, resource: &str, token: &[u8]) -> bool {
    e.tokens().iter().any(|t| {
        t.client_id.eq_ignore_ascii_case(client_id)
            && t.resource == resource
            && t.token.as_bytes() == token
    })
}

/// The system identity's ARM token and expiry, checked to be one the emulator issued; `case`
/// names the case in a failure.
fn system_token(e: &Emulator, client: &Client, case: &dyn std::fmt::Debug) -> (Vec<u8>, u64) {
    let (token, expires_on_s) = client
        .get_token(&Identity::SYSTEM, &res(ARM))
        .unwrap_or_else(|err| panic!("{case:?}: {err}"));
    assert!(
        issued(e, &e.identities()[0].client_id, ARM, &token),
        "{case:?}"
    );
    (token, expires_on_s)
}

/// The client ids of the emulator's user-assigned identities (all but the system one).
fn user_ids(e: &Emulator) -> Vec<String> {
    e.identities()
        .iter()
        .skip(1)
        .map(|i| i.client_id.clone())
        .collect()
}

/// `ids` as client-id selectors.
fn as_identities(ids: &[String]) -> Vec<Identity<'_>> {
    ids.iter()
        .map(|id| Identity::client_id(id).unwrap())
        .collect()
}

#[test]
fn every_flavour_of_the_emulator() {
    for mode in [
        Mode::Imds,
        Mode::AppService2019,
        Mode::Msi2017,
        Mode::AzureMl,
        Mode::CloudShell,
        Mode::Arc,
        Mode::VmExt,
    ] {
        let e = emulator(mode, 2, |_| {});
        let client = client_for(&e, |_| {});
        let (token, expires_on_s) = system_token(&e, &client, &mode);
        let exp = e
            .tokens()
            .iter()
            .find(|t| t.token.as_bytes() == token)
            .unwrap()
            .exp;
        assert_eq!(expires_on_s, exp, "{mode:?}");
        if matches!(
            mode,
            Mode::Imds | Mode::AppService2019 | Mode::Msi2017 | Mode::VmExt
        ) {
            let user = &e.identities()[1];
            let id = Identity::client_id(&user.client_id).unwrap();
            let (token, _) = client
                .get_token(&id, &res(ARM))
                .unwrap_or_else(|err| panic!("{mode:?}: {err}"));
            assert!(
                issued(&e, &user.client_id, ARM, &token),
                "{mode:?} user-assigned"
            );
        }
    }
}

#[test]
fn single_flight_under_16_threads() {
    let e = emulator(Mode::Imds, 4, |c| {
        c.faults = vec![FaultRule::new(Fault::Delay { ms: 200 })];
    });
    let client = Arc::new(client_for(&e, |_| {}));
    let ids: Vec<String> = e.identities().iter().map(|i| i.client_id.clone()).collect();
    std::thread::scope(|s| {
        for t in 0..16 {
            let (client, ids) = (&client, &ids);
            s.spawn(move || {
                for (i, id) in ids.iter().enumerate().skip(1) {
                    let id = Identity::client_id(id).unwrap();
                    let r = RESOURCES[(i + t) % 3];
                    client.get_token(&id, &res(r)).unwrap();
                }
            });
        }
    });
    let stats = e.stats();
    // 4 identities × 3 resources, each fetched once whatever the number of callers.
    assert!(stats.requests <= 12, "{} requests", stats.requests);
    assert!(
        stats.keys.iter().all(|k| k.max_concurrency <= 1),
        "one request per key at a time"
    );
    assert!(client.stats().coalesced > 0);
}

#[test]
fn thousand_identities_three_resources_exactly_3000_requests() {
    let e = emulator(Mode::Imds, 1000, |c| {
        c.rate = 500;
        c.concurrency = 16;
    });
    let client = client_for(&e, |c| {
        c.cache.rate = 125;
        c.cache.rate_window_ms = 250;
        c.cache.in_flight = 16;
    });
    let ids = user_ids(&e);
    let identities = as_identities(&ids);
    let resources: Vec<Resource<'_>> = RESOURCES.iter().map(|r| res(r)).collect();
    let mut calls = 0;
    let (report, errors) = client.prefetch(
        &identities,
        &resources,
        Instant::now() + Duration::from_secs(60),
        |_| calls += 1,
    );
    assert!(errors.is_empty(), "{:?}", &errors[..errors.len().min(3)]);
    assert_eq!((report.ok, report.total, calls), (3000, 3000, 3000));
    let stats = e.stats();
    let c = client.stats();
    assert_eq!(
        stats.requests, 3000,
        "{:?} {:?} {c:?}",
        stats.statuses, stats.max_window_arrivals
    );
    assert_eq!(stats.sent_429, 0);
    assert!(stats.max_concurrency <= 16, "{}", stats.max_concurrency);
}

#[test]
fn real_limits_never_draw_a_429() {
    let e = emulator(Mode::Imds, 10, |_| {});
    let client = client_for(&e, |_| {});
    let ids: Vec<String> = e.identities().iter().map(|i| i.client_id.clone()).collect();
    let identities = as_identities(&ids);
    let resources: Vec<Resource<'_>> = RESOURCES.iter().map(|r| res(r)).collect();
    let (report, _) = client.prefetch(
        &identities,
        &resources,
        Instant::now() + Duration::from_secs(30),
        |_| {},
    );
    assert_eq!(report.ok, 33);
    let stats = e.stats();
    assert_eq!(
        stats.sent_429, 0,
        "{} {} {}",
        stats.max_window_arrivals, stats.max_concurrency, stats.throttled
    );
    assert!(stats.max_concurrency <= 5);
}

#[test]
fn faults_get_their_d7_behaviour() {
    let fast = |c: &mut ClientConfig| c.cache.backoff_initial_ms = 20;
    // Retried: 404, 429 (with Retry-After), 500, 503, a reset, a truncated body.
    for (fault, n) in [
        (
            Fault::Status {
                status: 404,
                retry_after: None,
            },
            2,
        ),
        (
            Fault::TooManyRequests {
                retry_after: Some(1),
            },
            1,
        ),
        (
            Fault::Status {
                status: 500,
                retry_after: None,
            },
            2,
        ),
        (
            Fault::Status {
                status: 503,
                retry_after: None,
            },
            1,
        ),
    ] {
        let e = emulator(Mode::Imds, 0, |c| {
            c.faults = vec![FaultRule::new(fault.clone()).times(n)]
        });
        let client = client_for(&e, fast);
        system_token(&e, &client, &fault);
        assert_eq!(e.stats().requests, n as u64 + 1, "{fault:?}");
    }
    // Terminal: 400 is not retried and is remembered.
    let e = emulator(Mode::Imds, 0, |c| {
        c.faults = vec![FaultRule::new(Fault::Status {
            status: 400,
            retry_after: None,
        })]
    });
    let client = client_for(&e, fast);
    let err = client.get_token(&Identity::SYSTEM, &res(ARM)).unwrap_err();
    assert!(
        matches!(err, Error::Failed { failure, .. } if failure.status == 400),
        "{err}"
    );
    assert!(client.get_token(&Identity::SYSTEM, &res(ARM)).is_err());
    assert_eq!(e.stats().requests, 1);
}

#[test]
fn a_failed_refresh_never_loses_the_valid_token() {
    // 362 s tokens with a 360 s refresh margin: a refresh is due about 2 s after the fetch.
    // On fake time: no refresher, so each call that finds a refresh due makes it itself.
    let e = emulator(Mode::Imds, 0, |c| c.token_lifetime = 362);
    let clock = FakeClock::new();
    let client = client_for(&e, |c| {
        c.refresher = false;
        c.cache.refresh_margin_ms = 360_000;
        c.cache.min_lifetime_ms = 1_000;
        c.cache.eager_retry_ms = 200;
        c.cache.backoff_initial_ms = 100;
        c.clock = clock.clock();
    });
    let (first, _) = client.get_token(&Identity::SYSTEM, &res(ARM)).unwrap();
    e.set_faults(vec![FaultRule::new(Fault::Status {
        status: 500,
        retry_after: None,
    })]);
    clock.advance(BEHIND_MS + 2500);
    for round in 1..=5 {
        let (token, _) = client.get_token(&Identity::SYSTEM, &res(ARM)).unwrap();
        assert_eq!(
            token, first,
            "round {round}: the valid token is served while refreshes fail"
        );
        // Past the backoff of every failure so far (100 ms doubling, +20 %: under 1 s for
        // four of them) and the eager-retry pause: the next call refreshes again.
        clock.advance(1000);
    }
    assert_eq!(
        e.stats().status(500),
        5,
        "one refresh per call, each failed: {:?}",
        e.stats().statuses
    );
}

#[test]
fn deadline_is_respected() {
    let e = emulator(Mode::Imds, 0, |c| {
        c.faults = vec![FaultRule::new(Fault::Status {
            status: 503,
            retry_after: None,
        })]
    });
    let client = client_for(&e, |c| c.deadline = Duration::from_millis(1500));
    let started = Instant::now();
    let err = client.get_token(&Identity::SYSTEM, &res(ARM)).unwrap_err();
    assert!(matches!(err, Error::Deadline { last: Some(_) }), "{err}");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn unavailable_at_once_when_nothing_listens() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    let client = Client::with_config(ClientConfig {
        source: SourceSpec::Explicit(OwnedEndpoint {
            flavour: Flavour::Imds,
            url,
            secret: None,
            default_client_id: None,
        }),
        ..ClientConfig::default()
    })
    .unwrap();
    let err = client.get_token(&Identity::SYSTEM, &res(ARM)).unwrap_err();
    assert!(err.is_unavailable() && err.code() == "unavailable", "{err}");
    // At once: one attempt, no retry, remembered as unavailable.
    let s = client.stats();
    assert_eq!(
        (s.fetches, s.failures_retry, s.failures_unavailable),
        (1, 0, 1),
        "{s:?}"
    );
    let again = client.get_token(&Identity::SYSTEM, &res(ARM)).unwrap_err();
    assert!(again.is_unavailable(), "{again}");
    assert_eq!(client.stats().fetches, 1, "the second call sends nothing");
}

#[test]
fn refresher_renews_before_expiry_without_a_gap() {
    // 362 s tokens with a 360 s refresh margin: the refresh is due about 2 s after the fetch,
    // which the fake clock reaches at once; each renewal is awaited as the observer hears it.
    let e = emulator(Mode::Imds, 0, |c| c.token_lifetime = 362);
    let clock = FakeClock::new();
    let (renewed, renewals) = std::sync::mpsc::channel();
    let renewed = std::sync::Mutex::new(renewed);
    let client = client_for(&e, |c| {
        c.cache.refresh_margin_ms = 360_000;
        c.cache.min_lifetime_ms = 1_000;
        c.clock = clock.clock();
        c.events = Some(Observer::new(move |event: &Event<'_>| {
            if let Event::Token { refresh: true, .. } = event {
                let _ = renewed.lock().unwrap().send(());
            }
        }));
    });
    let (first, _) = client.get_token(&Identity::SYSTEM, &res(ARM)).unwrap();
    // Move the emulator's clock so that its own cached token is due for re-minting (under
    // 5 minutes left): the refresh then brings a new token.
    e.advance(100);
    let mut calls = 1;
    for round in 1.. {
        clock.advance(BEHIND_MS + 2500);
        let (token, _) = client.get_token(&Identity::SYSTEM, &res(ARM)).unwrap();
        calls += 1;
        if token != first {
            break;
        }
        assert!(round <= 3, "no refresh brought a new token");
        // A refresh is due: this hit handed it to the refresher (or it took it itself).
        renewals
            .recv_timeout(Duration::from_secs(60))
            .expect("the refresher renews the token");
    }
    // Callers never saw a gap: only the first call missed, none waited for the refresh.
    let s = client.stats();
    assert_eq!((s.misses, s.coalesced), (1, 0), "{s:?}");
    assert!(s.hits >= calls - 1, "{s:?}");
    assert!(s.refreshes >= 1);
    assert_eq!(e.stats().requests, 2);
}

#[test]
fn without_a_refresher_a_pooled_hit_refreshes_on_the_pool() {
    // The asyncio path (`get_token_or_notify`) of a client made without a background
    // refresher: a hit that is due for refresh answers at once, and a worker renews it.
    let e = emulator(Mode::Imds, 0, |c| c.token_lifetime = 362);
    let clock = FakeClock::new();
    let client = client_for(&e, |c| {
        c.cache.refresh_margin_ms = 360_000;
        c.cache.min_lifetime_ms = 1_000;
        c.clock = clock.clock();
        c.refresher = false;
    });
    let (first, _) = client.get_token(&Identity::SYSTEM, &res(ARM)).unwrap();
    e.advance(100); // the emulator re-mints: under 5 minutes left there
    clock.advance(BEHIND_MS + 2500);
    let mut out = vec![0u8; 16 * 1024];
    let deadline = Instant::now() + Duration::from_secs(60);
    let hit = client
        .get_token_or_notify(
            &Identity::SYSTEM,
            &res(ARM),
            &mut out,
            deadline,
            Box::new(|_| panic!("a hit calls nothing back")),
        )
        .unwrap();
    let (len, _) = hit.expect("a hit, answered at once");
    assert_eq!(&out[..len], &first[..], "the valid token meanwhile");
    // The worker's refresh: a second request, and then the new token on a hit.
    let give_up = Instant::now() + Duration::from_secs(30);
    while client.get_token(&Identity::SYSTEM, &res(ARM)).unwrap().0 == first {
        assert!(
            Instant::now() < give_up,
            "the pool never refreshed the token"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(e.stats().requests, 2);
    assert_eq!(client.stats().misses, 1, "no caller waited for the refresh");
}

#[test]
fn proxy_variables_are_ignored() {
    // A proxy that would answer if used; the client must go to the emulator directly.
    let e = emulator(Mode::Imds, 0, |_| {});
    std::env::set_var("HTTP_PROXY", "http://127.0.0.1:9");
    std::env::set_var("http_proxy", "http://127.0.0.1:9");
    std::env::set_var("ALL_PROXY", "http://127.0.0.1:9");
    let client = client_for(&e, |_| {});
    assert!(client.get_token(&Identity::SYSTEM, &res(ARM)).is_ok());
}

#[test]
fn environment_detection_reaches_the_emulator() {
    let e = emulator(Mode::Imds, 0, |_| {});
    // Only this test sets it; the other tests give their endpoint explicitly.
    std::env::set_var("AZURE_POD_IDENTITY_AUTHORITY_HOST", e.url());
    let client = Client::new().unwrap();
    assert_eq!(client.flavour(), Flavour::Imds);
    let (token, _) = client.get_token(&Identity::SYSTEM, &res(ARM)).unwrap();
    assert!(issued(&e, &e.identities()[0].client_id, ARM, &token));
    // With `/`s around it, as azure-identity strips them.
    std::env::set_var(
        "AZURE_POD_IDENTITY_AUTHORITY_HOST",
        format!("{}//", e.url()),
    );
    let client = Client::new().unwrap();
    let (token, _) = client.get_token(&Identity::SYSTEM, &res(ARM)).unwrap();
    assert!(issued(&e, &e.identities()[0].client_id, ARM, &token));
    // A path in the value is kept and the token path appended to it (the emulator serves
    // only the bare path: a one-answer server records where the request went).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host = format!("http://{}/nmi/", listener.local_addr().unwrap());
    let seen = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut s, _) = listener.accept().unwrap();
        let mut req = vec![0u8; 8192];
        let n = s.read(&mut req).unwrap();
        let body = br#"{"access_token":"t","expires_in":"3600"}"#;
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        String::from_utf8_lossy(&req[..n]).into_owned()
    });
    std::env::set_var("AZURE_POD_IDENTITY_AUTHORITY_HOST", &host);
    let client = Client::new().unwrap();
    let got = client.get_token(&Identity::SYSTEM, &res(ARM));
    std::env::remove_var("AZURE_POD_IDENTITY_AUTHORITY_HOST");
    let request = seen.join().unwrap();
    assert_eq!(got.unwrap().0, b"t");
    assert!(
        request.starts_with("GET /nmi/metadata/identity/oauth2/token?"),
        "{request}"
    );
}

#[test]
fn fork_child_keeps_serving() {
    let e = emulator(Mode::Imds, 0, |_| {});
    let client = client_for(&e, |c| c.cache = Config { ..Config::DEFAULT });
    let (token, _) = client.get_token(&Identity::SYSTEM, &res(ARM)).unwrap();
    // SAFETY: the child only calls the client (async-signal-unsafe calls are fine here: the
    // fork handlers left every client lock released) and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let ok = client
            .get_token(&Identity::SYSTEM, &res(ARM))
            .map(|(t, _)| t == token)
            .unwrap_or(false);
        let vault = client
            .get_token(&Identity::SYSTEM, &res("https://vault.azure.net"))
            .is_ok();
        unsafe { libc::_exit(if ok && vault { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child failed: {status}"
    );
    assert!(client.get_token(&Identity::SYSTEM, &res(ARM)).is_ok());
}

#[test]
fn waiting_calls_run_on_a_small_pool_and_coalesce() {
    // 1000 calls over 100 keys at IMDS's real budget: the fetches (5 in flight) must never
    // wait behind the callers waiting for them.
    let e = emulator(Mode::Imds, 100, |_| {});
    let client = client_for(&e, |_| {});
    let ids = user_ids(&e);
    let (tx, rx) = std::sync::mpsc::channel();
    let mut immediate = 0;
    let threads_before = client_threads();
    for round in 0..1000 {
        let id = Identity::client_id(&ids[round % 100]).unwrap();
        let tx = tx.clone();
        let mut out = [0u8; 8192];
        let deadline = Instant::now() + Duration::from_secs(30);
        let done: imds_cache_client::Callback = Box::new(move |r| {
            let _ = tx.send(r.map(|(t, _)| t));
        });
        let hit = client
            .get_token_or_notify(&id, &res(ARM), &mut out, deadline, done)
            .unwrap();
        immediate += usize::from(hit.is_some());
    }
    let threads_during = client_threads();
    drop(tx);
    let answered: Vec<Vec<u8>> = rx.iter().map(|r| r.unwrap()).collect();
    assert_eq!(answered.len() + immediate, 1000);
    let issued: Vec<String> = e.tokens().into_iter().map(|t| t.token).collect();
    assert!(answered
        .iter()
        .all(|t| issued.iter().any(|i| i.as_bytes() == t.as_slice())));
    assert_eq!(e.stats().requests, 100, "one request per key");
    assert_eq!(e.stats().sent_429, 0);
    assert!(
        // 1000 calls: a thread per call would be hundreds; the pools and another test's client
        // running beside this one stay well under 64.
        threads_during <= threads_before + 64,
        "no thread per call: {threads_before} → {threads_during}"
    );
}

/// Every fault of the emulator's list, with the D7 behaviour it must get.
#[test]
fn the_rest_of_the_fault_list() {
    let quick = |c: &mut ClientConfig| {
        c.cache.backoff_initial_ms = 20;
        c.cache.gone_interval_ms = 100;
        c.cache.negative_ttl_ms = 60_000;
        c.attempt_timeout = Duration::from_millis(600);
        c.deadline = Duration::from_secs(20);
    };
    // Retried until a token comes: (fault, times it applies).
    let retried = [
        (Fault::Gone { window_ms: 300 }, None),
        (Fault::Reset, Some(2)),
        (Fault::Truncate { bytes: None }, Some(2)),
        (Fault::Hang { ms: Some(2_000) }, Some(1)),
        (
            Fault::Trickle {
                chunk: 1,
                interval_ms: 50,
            },
            Some(1),
        ),
    ];
    for (fault, times) in retried {
        let rule = FaultRule::new(fault.clone());
        let rule = if let Some(n) = times {
            rule.times(n)
        } else {
            rule
        };
        let e = emulator(Mode::Imds, 0, |c| c.faults = vec![rule]);
        let client = client_for(&e, quick);
        let started = Instant::now();
        system_token(&e, &client, &fault);
        assert!(client.stats().failures_retry >= 1, "{fault:?} was retried");
        assert!(started.elapsed() < Duration::from_secs(10), "{fault:?}");
    }
    // Delivered in other framings: a token at once.
    for fault in [Fault::Chunked, Fault::EofBody, Fault::Delay { ms: 50 }] {
        let e = emulator(Mode::Imds, 0, |c| {
            c.faults = vec![FaultRule::new(fault.clone())]
        });
        let client = client_for(&e, quick);
        system_token(&e, &client, &fault);
        assert_eq!(e.stats().requests, 1, "{fault:?}");
    }
    // Terminal once a token came from the endpoint (before, a non-JSON answer means no
    // identity endpoint here: `no_identity_endpoint_at_first_contact`): refused, not
    // retried, remembered.
    let terminal = [
        (Fault::NonJson, FailureKind::NotJson),
        (Fault::MalformedJson, FailureKind::NotJson),
        (
            Fault::Oversized { bytes: 64 * 1024 },
            FailureKind::TokenTooLarge,
        ),
        (Fault::Expired, FailureKind::ExpiredOnArrival),
    ];
    for (fault, kind) in terminal {
        let e = emulator(Mode::Imds, 0, |_| {});
        let client = client_for(&e, quick);
        client
            .get_token(&Identity::SYSTEM, &res(RESOURCES[1]))
            .unwrap();
        e.set_faults(vec![FaultRule::new(fault.clone())]);
        let err = client.get_token(&Identity::SYSTEM, &res(ARM)).unwrap_err();
        assert!(
            matches!(&err, Error::Failed { failure, .. } if failure.kind == kind),
            "{fault:?}: {err}"
        );
        assert!(!err.is_unavailable(), "{fault:?}");
        assert!(client.get_token(&Identity::SYSTEM, &res(ARM)).is_err());
        assert_eq!(e.stats().requests, 2, "{fault:?} not retried");
    }
    // A token for another identity than the one asked for is refused (the echo check).
    let e = emulator(Mode::Imds, 2, |c| {
        c.faults = vec![FaultRule::new(Fault::WrongClientId)]
    });
    let client = client_for(&e, quick);
    let user = e.identities()[1].client_id.clone();
    let err = client
        .get_token(&Identity::client_id(&user).unwrap(), &res(ARM))
        .unwrap_err();
    assert!(
        matches!(&err, Error::Failed { failure, .. } if failure.kind == FailureKind::ClientIdMismatch),
        "{err}"
    );
}

/// A failure that reaches the caller through the worker pool carries the endpoint's error
/// text, as the blocking call's does.
#[test]
fn the_pool_passes_the_endpoints_error_on() {
    let e = emulator(Mode::Imds, 1, |_| {});
    let missing = Identity::client_id("11111111-2222-3333-4444-555555555555").unwrap();
    let blocking = client_for(&e, |_| {})
        .get_token(&missing, &res(ARM))
        .unwrap_err();
    assert!(
        blocking.to_string().contains("Identity not found"),
        "{blocking}"
    );
    let client = client_for(&e, |_| {});
    let (tx, rx) = std::sync::mpsc::channel();
    let done: imds_cache_client::Callback = Box::new(move |r| {
        let _ = tx.send(r.map(|(t, _)| t.len()));
    });
    let mut out = [0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(30);
    let answer = client
        .get_token_or_notify(&missing, &res(ARM), &mut out, deadline, done)
        .unwrap();
    assert!(answer.is_none(), "a miss goes to the pool");
    let pooled = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap()
        .unwrap_err();
    assert_eq!(pooled.to_string(), blocking.to_string());
}

/// A call whose deadline has already passed gives its ticket back and fails, sending nothing
/// (it used to be handed the same ticket again and again).
#[test]
fn a_call_past_its_deadline_sends_nothing() {
    let e = emulator(Mode::Imds, 0, |_| {});
    let client = client_for(&e, |_| {});
    let mut buf = vec![0u8; 16 * 1024];
    let r = client.get_token_until(&Identity::SYSTEM, &res(ARM), &mut buf, Instant::now());
    assert!(matches!(r, Err(Error::Deadline { last: None })), "{r:?}");
    assert_eq!(e.stats().requests, 0);
    let (report, errors) =
        client.prefetch(&[Identity::SYSTEM], &[res(ARM)], Instant::now(), |_| {});
    assert_eq!((report.ok, report.total, errors.len()), (0, 1, 1));
    assert_eq!(e.stats().requests, 0);
    // The ticket went back: a call with time left fetches at once.
    client.get_token(&Identity::SYSTEM, &res(ARM)).unwrap();
    assert_eq!(e.stats().requests, 1);
}

/// The client's own threads in this process (workers and refreshers, by name): other tests
/// running at the same time start threads of their own (emulators), which are not counted.
fn client_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .filter(|name| name.starts_with("imds-cache"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn every_client_of_a_process_shares_one_budget_per_endpoint() {
    let e = emulator(Mode::Imds, 0, |_| {});
    let clock = FakeClock::new();
    // 2 starts per window on a clock that stands still: the third start in this process
    // waits, whichever client makes it.
    let config = |c: &mut ClientConfig| {
        c.share = imds_cache_client::Share::Process;
        c.clock = clock.clock();
        c.deadline = Duration::from_secs(1);
        c.refresher = false;
        c.cache = Config {
            rate: 2,
            ..Config::DEFAULT
        };
    };
    let one = client_for(&e, config);
    let two = client_for(&e, config);
    one.get_token(&Identity::SYSTEM, &res(ARM)).unwrap();
    two.get_token(&Identity::SYSTEM, &res(ARM)).unwrap();
    assert_eq!(e.stats().requests, 2, "two tables, one request each");
    let held_back = two.get_token(&Identity::SYSTEM, &res("https://vault.azure.net"));
    assert!(
        matches!(held_back, Err(Error::Deadline { .. })),
        "the other client's starts count: {held_back:?}"
    );
    assert_eq!(e.stats().requests, 2);
    clock.advance(2_000);
    two.get_token(&Identity::SYSTEM, &res("https://vault.azure.net"))
        .unwrap();
    assert_eq!(e.stats().requests, 3);
}
