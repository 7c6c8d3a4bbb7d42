//! The core over real sockets against the in-process IMDS emulator: budget, retries, terminal
//! errors and Arc's challenge, end to end. Every token returned is checked against the ones
//! the emulator says it issued for that exact key.

#[path = "support/blocking.rs"]
mod blocking;

use imds_cache::{
    Config, Endpoint, Flavour, Identity, Key, Lookup, Resource, Storage, TokenCache, Word,
};
use imds_emulator::{Emulator, Fault, FaultRule, Mode};

const ARM: &str = "https://management.azure.com";

/// A cache over owned buffers sized at run time.
fn cache(entries: usize, config: Config) -> TokenCache<impl Storage> {
    let l = imds_cache::layout(entries, 16 * 256).unwrap();
    let words: Box<[Word]> = (0..l.words).map(|_| Word::new(0)).collect();
    TokenCache::with_words(config, l, words).unwrap()
}

fn start(mode: Mode, identities: usize, faults: Vec<FaultRule>) -> Emulator {
    let mut config = imds_emulator::Config::new(mode);
    config.identities = identities;
    config.faults = faults;
    Emulator::start(config).expect("emulator starts")
}

/// The token the emulator issued for (client id, resource), if any.
fn issued(emulator: &Emulator, client_id: &str, resource: &str, token: &[u8]) -> bool {
    emulator.tokens().iter().any(|t| {
        t.client_id.eq_ignore_ascii_case(client_id)
            && t.resource == resource
            && t.token.as_bytes() == token
    })
}

#[test]
fn thirty_keys_within_the_budget_and_all_tokens_genuine() {
    let emulator = start(Mode::Imds, 9, vec![]);
    let url = emulator.url();
    let endpoint = Endpoint::imds_authority(&url).unwrap();
    let mut cache = cache(64, Config::DEFAULT);
    let ids = emulator.identities();
    let resources = [ARM, "https://vault.azure.net", "https://storage.azure.com"];
    let mut out = vec![0u8; 16 * 1024];
    for id in ids.iter().filter(|i| i.index > 0) {
        for r in resources {
            let key = Key {
                flavour: Flavour::Imds,
                identity: Identity::client_id(&id.client_id).unwrap(),
                resource: Resource::new(r).unwrap(),
            };
            let (len, _) = blocking::get_token(&mut cache, &key, &endpoint, &mut out).unwrap();
            assert!(
                issued(&emulator, &id.client_id, r, &out[..len]),
                "{} {r}",
                id.name
            );
        }
    }
    let stats = emulator.stats();
    assert_eq!(stats.requests, 27);
    assert_eq!(stats.sent_429, 0, "the budget kept us under IMDS's limits");
    // 20 starts per second at the client; arrival jitter can put a 21st in the server's
    // window, which is why the emulator (like D9 says) allows one request of slack.
    assert!(
        stats.max_window_arrivals <= 21,
        "{}",
        stats.max_window_arrivals
    );
    assert_eq!(cache.stats().tokens, 27);
}

#[test]
fn transient_failures_are_retried_with_backoff() {
    let faults = vec![FaultRule::new(Fault::Status {
        status: 500,
        retry_after: None,
    })
    .times(2)];
    let emulator = start(Mode::Imds, 1, faults);
    let url = emulator.url();
    let endpoint = Endpoint::imds_authority(&url).unwrap();
    let mut cache = cache(
        8,
        Config {
            backoff_initial_ms: 50,
            ..Config::DEFAULT
        },
    );
    let key = Key {
        flavour: Flavour::Imds,
        identity: Identity::SYSTEM,
        resource: Resource::new(ARM).unwrap(),
    };
    let mut out = vec![0u8; 16 * 1024];
    let (len, _) = blocking::get_token(&mut cache, &key, &endpoint, &mut out).unwrap();
    let system = &emulator.identities()[0];
    assert!(issued(&emulator, &system.client_id, ARM, &out[..len]));
    let stats = emulator.stats();
    assert_eq!((stats.status(500), stats.status(200)), (2, 1));
    assert_eq!(cache.stats().failures_retry, 2);
}

#[test]
fn unknown_identity_is_terminal_and_not_retried() {
    let emulator = start(Mode::Imds, 2, vec![]);
    let url = emulator.url();
    let endpoint = Endpoint::imds_authority(&url).unwrap();
    let mut cache = cache(8, Config::DEFAULT);
    let key = Key {
        flavour: Flavour::Imds,
        identity: Identity::client_id("00000000-0000-4000-8000-000000000000").unwrap(),
        resource: Resource::new(ARM).unwrap(),
    };
    let err = blocking::get_token(&mut cache, &key, &endpoint, &mut [0; 64]).unwrap_err();
    assert!(err.contains("400"), "{err}");
    // Negative-cached: asking again does not reach the endpoint.
    assert!(matches!(
        cache.lookup(&key, blocking::now_ms(), &mut []).unwrap(),
        Lookup::Failed { .. }
    ));
    assert_eq!(emulator.stats().requests, 1);
}

#[test]
fn arc_challenge_end_to_end() {
    let emulator = start(Mode::Arc, 0, vec![]);
    let token_url = emulator.token_url();
    let endpoint = Endpoint::from_url(Flavour::Arc, &token_url).unwrap();
    let mut config = Config::DEFAULT;
    config
        .arc_key_dir
        .push_str(emulator.arc_key_dir().to_str().unwrap())
        .unwrap();
    let mut cache = cache(8, config);
    let key = Key {
        flavour: Flavour::Arc,
        identity: Identity::SYSTEM,
        resource: Resource::new(ARM).unwrap(),
    };
    let mut out = vec![0u8; 16 * 1024];
    let (len, _) = blocking::get_token(&mut cache, &key, &endpoint, &mut out).unwrap();
    let system = &emulator.identities()[0];
    assert!(issued(&emulator, &system.client_id, ARM, &out[..len]));
    let stats = emulator.stats();
    assert_eq!((stats.status(401), stats.status(200)), (1, 1));
}

#[test]
fn unreachable_endpoint_is_unavailable_at_once() {
    // A port nothing listens on: refused at first contact.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let endpoint = Endpoint::imds_authority(&url).unwrap();
    let mut cache = cache(8, Config::DEFAULT);
    let key = Key {
        flavour: Flavour::Imds,
        identity: Identity::SYSTEM,
        resource: Resource::new(ARM).unwrap(),
    };
    let started = std::time::Instant::now();
    let err = blocking::get_token(&mut cache, &key, &endpoint, &mut [0; 64]).unwrap_err();
    assert!(err.contains("no managed-identity endpoint"), "{err}");
    assert!(started.elapsed().as_secs() < 5);
    assert_eq!(cache.stats().failures_unavailable, 1);
}
