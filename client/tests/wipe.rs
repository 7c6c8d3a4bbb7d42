//! D13: every buffer of the driver that held a token, a secret header or Arc's key is wiped
//! before it is freed. The `test-hooks` feature hands each freed buffer to the test as it was
//! at that moment; a buffer not wiped would still hold the bytes. One test, so that no other
//! fetch in this binary frees buffers meanwhile.

use std::time::Duration;

use imds_cache::{Flavour, Identity, Resource};
use imds_cache_client::test_hooks::take_freed;
use imds_cache_client::{BufferKind, Client, ClientConfig, OwnedEndpoint, SourceSpec};
use imds_emulator::{Config, Emulator, Mode};

const ARM: &str = "https://management.azure.com";

fn client(e: &Emulator, flavour: Flavour, secret: Option<&str>) -> Client {
    let mut config = ClientConfig {
        source: SourceSpec::Explicit(OwnedEndpoint {
            flavour,
            url: e.token_url(),
            secret: secret.map(str::to_string),
            default_client_id: None,
        }),
        refresher: false,
        deadline: Duration::from_secs(20),
        ..ClientConfig::default()
    };
    if flavour == Flavour::Arc {
        let dir = e.arc_key_dir().to_str().unwrap();
        config.cache.arc_key_dir.push_str(dir).unwrap();
    }
    Client::with_config(config).expect("client")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The buffers freed since the last look: each of `kinds` among them, every one all zeros,
/// none holding any of `secrets`.
fn all_wiped(what: &str, kinds: &[BufferKind], secrets: &[&[u8]]) {
    let freed = take_freed();
    for kind in kinds {
        assert!(
            freed.iter().any(|(k, _)| k == kind),
            "{what}: no {kind:?} buffer was freed"
        );
    }
    for (kind, bytes) in &freed {
        for secret in secrets {
            assert!(
                !contains(bytes, secret),
                "{what}: a {kind:?} buffer kept a secret"
            );
        }
        assert!(
            bytes.iter().all(|&b| b == 0),
            "{what}: a {kind:?} buffer was not wiped"
        );
    }
}

#[test]
fn buffers_holding_tokens_secrets_and_keys_are_wiped() {
    let resource = Resource::new(ARM).unwrap();
    let app = Emulator::start(Config::new(Mode::AppService2019)).unwrap();
    let secret = app.secret().to_string();
    let _ = take_freed();

    // A fetch: the request carried the secret header, the response the token.
    let c = client(&app, Flavour::AppService2019, Some(&secret));
    let (token, _) = c.get_token(&Identity::SYSTEM, &resource).unwrap();
    assert_eq!(token, app.tokens().last().unwrap().token.as_bytes());
    all_wiped(
        "a fetch",
        &[BufferKind::Request, BufferKind::Response],
        &[&token, secret.as_bytes()],
    );

    // A token larger than the first read buffer: each copy left behind as the buffer grows
    // is wiped too.
    let big = Emulator::start(Config {
        token_size: 9000,
        ..Config::new(Mode::AppService2019)
    })
    .unwrap();
    let c = client(&big, Flavour::AppService2019, Some(big.secret()));
    let (token, _) = c.get_token(&Identity::SYSTEM, &resource).unwrap();
    assert_eq!(token.len(), 9000);
    let grown = take_freed();
    let responses = grown
        .iter()
        .filter(|(k, _)| *k == BufferKind::Response)
        .count();
    assert!(
        responses >= 3,
        "4, 8 and 16 KiB: {responses} response buffers"
    );
    assert!(
        grown.iter().all(|(_, b)| b.iter().all(|&x| x == 0)),
        "all wiped"
    );

    // A failed fetch: a wrong secret is refused; its request is wiped all the same.
    let wrong = format!("{secret}-wrong");
    let c = client(&app, Flavour::AppService2019, Some(&wrong));
    assert!(c.get_token(&Identity::SYSTEM, &resource).is_err());
    all_wiped(
        "a failed fetch",
        &[BufferKind::Request, BufferKind::Response],
        &[wrong.as_bytes()],
    );

    // Arc's challenge: the key file's copy, the second request (which carried the key) and
    // the response with the token.
    let arc = Emulator::start(Config::new(Mode::Arc)).unwrap();
    let c = client(&arc, Flavour::Arc, None);
    let (token, _) = c.get_token(&Identity::SYSTEM, &resource).unwrap();
    let keys: Vec<Vec<u8>> = std::fs::read_dir(arc.arc_key_dir())
        .unwrap()
        .filter_map(|f| std::fs::read(f.ok()?.path()).ok())
        .collect();
    let mut secrets: Vec<&[u8]> = keys.iter().map(|k| k.trim_ascii()).collect();
    secrets.push(&token);
    all_wiped(
        "an Arc challenge",
        &[
            BufferKind::Request,
            BufferKind::Response,
            BufferKind::ArcKey,
        ],
        &secrets,
    );
}
