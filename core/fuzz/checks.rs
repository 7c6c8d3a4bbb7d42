//! The checks the fuzz targets run, shared with the stable replay test
//! `core/tests/fuzz_corpus.rs` (which includes this file with `#[path]`): one copy of the logic.
//!
//! Each check takes arbitrary bytes and panics only when an invariant of the parser is broken.

// Each target uses only some of the checks.
#![allow(dead_code)]

use imds_cache::{
    classify, parse_response, parse_token_body, ArrayStorage, Classified, Config, Done, ErrorBody,
    Feed, Flavour, Identity, Key, Lookup, Parsed, Resource, Response, TokenBody, TokenCache,
};

/// The request time the bodies are anchored to (epoch seconds).
pub(crate) const REQUEST_TIME: u64 = 1_700_000_000;
/// The longest response framed: `max_token_bytes` (16 KiB) plus the cache's 4 KiB slack.
pub(crate) const MAX_RESPONSE: usize = 20 * 1024;
/// The largest token accepted by `classify`.
pub(crate) const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// `token_body` target: the token and error body parsers never panic; a parsed token writes
/// out exactly `token_len()` bytes of UTF-8 without control characters, and no fewer fit.
pub(crate) fn token_body(data: &[u8]) {
    let detail = ErrorBody::parse(data).detail();
    assert!(detail.code.len() <= imds_cache::MAX_CODE_LEN);
    assert!(detail.description.len() <= imds_cache::MAX_DESCRIPTION_LEN);
    for request_time in [REQUEST_TIME, 0, u64::MAX] {
        if let Ok(body) = parse_token_body(data, request_time) {
            token_written(&body);
        }
    }
}

/// Writes the token out and checks what was written; returns it.
fn token_written(body: &TokenBody<'_>) -> Vec<u8> {
    let len = body.token_len();
    assert!(len > 0, "an empty token was accepted");
    let mut out = vec![0u8; len];
    assert_eq!(body.write_token(&mut out), Some(len));
    assert_eq!(body.write_token(&mut out[..len - 1]), None);
    let mut longer = vec![0xffu8; len + 1];
    assert_eq!(body.write_token(&mut longer), Some(len));
    assert_eq!(&longer[..len], &out[..]);
    assert!(core::str::from_utf8(&out).is_ok(), "token is not UTF-8");
    assert!(
        !out.iter().any(u8::is_ascii_control),
        "token holds a control character"
    );
    out
}

/// What a complete response says, owned (the buffer is rewritten when de-chunked).
#[derive(Debug, PartialEq)]
struct Framed {
    status: u16,
    retry_after: Option<imds_cache::RetryAfter>,
    www_authenticate: Option<String>,
    body: Vec<u8>,
}

impl Framed {
    fn of(r: &Response<'_>) -> Self {
        Self {
            status: r.status,
            retry_after: r.retry_after,
            www_authenticate: r.www_authenticate.map(str::to_owned),
            body: r.body.to_vec(),
        }
    }
}

/// `response` target: frames the bytes with and without EOF, classifies a complete response for
/// every flavour, and feeds the same bytes to a `TokenCache`.
///
/// Invariants: `NeedMore` only without EOF; the buffer is untouched unless the answer is `Done`;
/// a response complete without EOF is the same response with EOF; a prefix of a complete
/// response is never an error; a token from `classify` is within `max_token_bytes`; only Arc
/// answers a challenge, and only to a 401; a token stored by the cache is the one `classify` saw.
pub(crate) fn response(data: &[u8]) {
    let mut complete = None;
    for eof in [false, true] {
        let mut buf = data.to_vec();
        let framed = match parse_response(&mut buf, eof, MAX_RESPONSE) {
            Ok(Parsed::Done(r)) => {
                classify_all(&r);
                Some(Framed::of(&r))
            }
            Ok(Parsed::NeedMore) => {
                assert!(!eof, "NeedMore after EOF");
                None
            }
            Err(_) => None,
        };
        if framed.is_none() {
            assert_eq!(buf, data, "buffer modified without a complete response");
        }
        if eof {
            if let Some(without_eof) = &complete {
                assert_eq!(
                    framed.as_ref(),
                    Some(without_eof),
                    "EOF changed a complete response"
                );
            }
        } else {
            complete = framed;
        }
    }
    if let Some(full) = &complete {
        prefixes_are_incomplete(data, full);
    }
    through_the_cache(data);
}

/// A few proper prefixes of a response complete without EOF: each is `NeedMore` or the same
/// response (never an error), as bytes arrive in arbitrary pieces.
fn prefixes_are_incomplete(data: &[u8], full: &Framed) {
    let n = data.len();
    let cuts = [
        1,
        2,
        n / 4,
        n / 2,
        3 * n / 4,
        n.saturating_sub(2),
        n.saturating_sub(1),
    ];
    for cut in cuts {
        if cut == 0 || cut >= n {
            continue;
        }
        let mut buf = data[..cut].to_vec();
        match parse_response(&mut buf, false, MAX_RESPONSE) {
            Ok(Parsed::NeedMore) => assert_eq!(&buf[..], &data[..cut]),
            Ok(Parsed::Done(r)) => assert_eq!(r.status, full.status, "prefix {cut} of {n}"),
            Err(e) => panic!("prefix {cut} of a complete {n}-byte response: {e:?}"),
        }
    }
}

fn classify_all(r: &Response<'_>) {
    for flavour in Flavour::ALL {
        match classify(flavour, r, REQUEST_TIME, MAX_TOKEN_BYTES) {
            Classified::Token(t) => {
                assert!(
                    (200..300).contains(&r.status),
                    "token from status {}",
                    r.status
                );
                assert!(t.token_len() <= MAX_TOKEN_BYTES);
                token_written(&t);
            }
            Classified::Challenge(c) => {
                assert_eq!(flavour, Flavour::Arc);
                assert_eq!(r.status, 401);
                assert_eq!(Some(c), r.www_authenticate);
            }
            Classified::Failure { failure, body, .. } => {
                assert_eq!(failure.status, r.status);
                let _ = body.detail();
            }
        }
    }
}

const CLIENT_ID: &str = "fe83865b-495e-4ec7-9574-12b264882c9f";

/// Feeds the bytes to a cache as one fetch; a stored token must be the one `classify` returns
/// and must come back from a lookup.
fn through_the_cache(data: &[u8]) {
    let mut cache = TokenCache::<ArrayStorage<2, 96>>::new(Config::DEFAULT);
    let key = Key {
        flavour: Flavour::Imds,
        identity: Identity::client_id(CLIENT_ID).expect("valid client id"),
        resource: Resource::new("https://management.azure.com").expect("valid resource"),
    };
    let now = REQUEST_TIME * 1000;
    let Ok(Lookup::Fetch(ticket)) = cache.lookup(&key, now, &mut []) else {
        panic!("an empty cache must hand out a ticket");
    };
    let mut buf = data.to_vec();
    let stored = match cache.feed(ticket, &mut buf, now) {
        Ok(Feed::Done(Done::Token { len, .. })) => Some(len),
        Ok(Feed::Done(_)) | Err(_) => None,
        Ok(Feed::NeedMore) => {
            let mut buf = data.to_vec();
            match cache.eof(ticket, &mut buf, now) {
                Ok(Done::Token { len, .. }) => Some(len),
                _ => None,
            }
        }
    };
    let Some(len) = stored else { return };
    // The same bytes through the free functions (with EOF: the cache may have needed it).
    let mut buf = data.to_vec();
    let Ok(Parsed::Done(r)) = parse_response(&mut buf, true, MAX_RESPONSE) else {
        panic!("the cache stored a token from a response parse_response refuses");
    };
    let Classified::Token(t) = classify(Flavour::Imds, &r, REQUEST_TIME, MAX_TOKEN_BYTES) else {
        panic!("the cache stored a token classify does not see");
    };
    let token = token_written(&t);
    assert_eq!(len, token.len());
    let mut out = vec![0u8; MAX_TOKEN_BYTES];
    match cache.lookup(&key, now + 1, &mut out) {
        Ok(Lookup::Hit { len: hit, .. }) => assert_eq!(&out[..hit], &token[..]),
        other => panic!("a stored token is not a hit: {other:?}"),
    }
}
