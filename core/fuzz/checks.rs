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
pub(crate) const REQUEST_AT_S: u64 = 1_700_000_000;
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
    for request_time in [REQUEST_AT_S, 0, u64::MAX] {
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
        match classify(flavour, r, REQUEST_AT_S, MAX_TOKEN_BYTES) {
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
    let now_ms = REQUEST_AT_S * 1000;
    let Ok(Lookup::Fetch(ticket)) = cache.lookup(&key, now_ms, &mut []) else {
        panic!("an empty cache must hand out a ticket");
    };
    let mut buf = data.to_vec();
    let stored = match cache.feed(ticket, &mut buf, now_ms) {
        Ok(Feed::Done(Done::Token { len, .. })) => Some(len),
        Ok(Feed::Done(_)) | Err(_) => None,
        Ok(Feed::NeedMore) => {
            let mut buf = data.to_vec();
            match cache.eof(ticket, &mut buf, now_ms) {
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
    let Classified::Token(t) = classify(Flavour::Imds, &r, REQUEST_AT_S, MAX_TOKEN_BYTES) else {
        panic!("the cache stored a token classify does not see");
    };
    let token = token_written(&t);
    assert_eq!(len, token.len());
    let mut out = vec![0u8; MAX_TOKEN_BYTES];
    match cache.lookup(&key, now_ms + 1, &mut out) {
        Ok(Lookup::Hit { len: hit, .. }) => assert_eq!(&out[..hit], &token[..]),
        other => panic!("a stored token is not a hit: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// `cache_ops`: the cache driven by sequences of operations. The operation set, the
// keys and the wire bytes are shared with the model-based test `core/tests/model.rs` (which
// includes this file); `cache_ops` below is the lighter model the fuzz target checks.

pub(crate) mod ops {
    use std::collections::HashMap;
    use std::fmt;

    use arbitrary::Arbitrary;

    use imds_cache::{
        layout_blocks, CacheError, Config, Done, Endpoint, Failure, FailureKind, Feed, Flavour,
        Identity, IdentityKind, Key, Lookup, Resource, SliceStorage, StorageLayout, Ticket,
        TokenCache, Transport, Word, BLOCK_SIZE,
    };

    /// The context of an assertion message, formatted only when one fails (formatting it for
    /// every operation took most of the `cache_ops` target's time).
    struct Ctx<F>(F);

    impl<F: Fn(&mut fmt::Formatter<'_>) -> fmt::Result> fmt::Display for Ctx<F> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            (self.0)(f)
        }
    }

    /// The driver's clock at the start (ms).
    pub(crate) const T0: u64 = 1_700_000_000_000;
    pub(crate) const H: u64 = 3_600_000;
    const RES: &str = "https://management.azure.com";
    const RES_SLASH: &str = "https://management.azure.com/";
    const VAULT: &str = "https://vault.azure.net";
    const G1: &str = "0a1b2c3d-0000-4000-8000-000000000001";
    const G2: &str = "0a1b2c3d-0000-4000-8000-00000000000b";
    const G2_UPPER: &str = "0A1B2C3D-0000-4000-8000-00000000000B";
    const ARM_ID: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-1";
    pub(crate) const OTHER_CLIENT: &str = "99999999-0000-4000-8000-000000000000";

    /// Identities looked up per flavour. Index 4 is index 2 in upper case (the same key, D3);
    /// index 3 is an object id with the text of index 1's client id and index 5 index 1 with a
    /// trailing slash on the resource (both other keys): 7 distinct keys per flavour, more than
    /// the 5 requests in flight the budget allows.
    pub(crate) const IDENTITIES: usize = 8;
    pub(crate) const FLAVOURS: [Flavour; 2] = [Flavour::Imds, Flavour::AppService2019];
    /// Lookup indexes: `IDENTITIES` × 2 flavours.
    pub(crate) const KEYS: usize = IDENTITIES * FLAVOURS.len();

    /// Token lifetimes offered (`expires_in`, s): one that expires on arrival, three under the
    /// 5 min refresh margin, 10 min, an hour, around the half-life rule's 2 h, a day.
    pub(crate) const LIFETIMES: [u64; 9] = [60, 70, 200, 299, 600, 3599, 7199, 7201, 86_400];
    /// Token lengths: inside the key's block, across two blocks, across eight.
    pub(crate) const TOKEN_LENS: [usize; 4] = [6, 40, 300, 1900];
    /// Lookup buffers: too small for every token, small, large enough for all.
    pub(crate) const BUFS: [usize; 4] = [0, 8, 64, 4096];
    /// `Retry-After` values sent with a 429 (s): 0 is floored at 1 s, 120 capped at 60 s.
    pub(crate) const RETRY_AFTERS: [u32; 4] = [0, 1, 7, 120];
    /// Large clock steps (ms).
    pub(crate) const LEAPS: [u64; 7] = [10_000, 30_000, 61_000, 300_000, H, 12 * H, 25 * H];

    fn identity(i: usize) -> (Identity<'static>, &'static str) {
        match i {
            0 => (Identity::SYSTEM, RES),
            1 => (Identity::client_id(G1).unwrap(), RES),
            2 => (Identity::client_id(G2).unwrap(), RES),
            3 => (Identity::object_id(G1).unwrap(), RES),
            4 => (Identity::client_id(G2_UPPER).unwrap(), RES),
            5 => (Identity::client_id(G1).unwrap(), RES_SLASH),
            6 => (Identity::SYSTEM, VAULT),
            _ => (Identity::resource_id(ARM_ID).unwrap(), VAULT),
        }
    }

    /// The cache key of lookup index `k` (taken modulo `KEYS`).
    pub(crate) fn key(k: usize) -> Key<'static> {
        // Built once: validating the resource id on every lookup was a quarter of the
        // `cache_ops` target's time.
        static TABLE: std::sync::OnceLock<Vec<Key<'static>>> = std::sync::OnceLock::new();
        let table = TABLE.get_or_init(|| {
            (0..KEYS)
                .map(|k| {
                    let (identity, resource) = identity(k % IDENTITIES);
                    Key {
                        flavour: FLAVOURS[k / IDENTITIES],
                        identity,
                        resource: Resource::new(resource).unwrap(),
                    }
                })
                .collect()
        });
        table[k % KEYS]
    }

    /// The model's name for lookup index `k`: aliases (D3) share one.
    pub(crate) fn canon(k: usize) -> usize {
        let k = k % KEYS;
        if k % IDENTITIES == 4 {
            k - 2
        } else {
            k
        }
    }

    /// The canonical index of a key read back from the cache.
    pub(crate) fn index_of(key_read: &Key<'_>) -> Option<usize> {
        (0..KEYS).map(canon).find(|&i| key(i) == *key_read)
    }

    pub(crate) fn flavour_of(k: usize) -> usize {
        (k % KEYS) / IDENTITIES
    }

    pub(crate) fn is_client_id(k: usize) -> bool {
        key(k).identity.kind() == IdentityKind::ClientId
    }

    pub(crate) fn endpoint(flavour: usize) -> Endpoint<'static> {
        if flavour == 0 {
            Endpoint::IMDS
        } else {
            Endpoint {
                secret: Some("header-secret"),
                ..Endpoint::from_url(Flavour::AppService2019, "http://localhost:4141/MSI/token")
                    .unwrap()
            }
        }
    }

    /// D9's rate, as both models count it: `Err(retry_at)` when `rate` of `starts` are inside
    /// the window (widened by the margin) at `now_ms`. Starts count by their times (a restamp
    /// moves one later than those after it).
    pub(crate) fn rate_check(config: &Config, starts: &[u64], now_ms: u64) -> Result<(), u64> {
        let span = config.rate_window_ms + config.rate_margin_ms;
        let mut live: Vec<u64> = starts
            .iter()
            .copied()
            .filter(|&at| at + span > now_ms)
            .collect();
        live.sort_unstable();
        let rate = config.rate as usize;
        if live.len() >= rate {
            return Err(live[live.len() - rate] + span);
        }
        Ok(())
    }

    /// A response, as the driver would receive it (also drawn by the fuzzer as is).
    #[derive(Arbitrary, Clone, Copy, Debug)]
    pub(crate) enum Resp {
        /// A token with `expires_in` = `LIFETIMES[lifetime]`, `TOKEN_LENS[len]` bytes long.
        Token { lifetime: u8, len: u8 },
        /// A 40-byte token with `client_id` echoed: this key's own id (upper case) or another.
        Echo { lifetime: u8, own: bool },
        /// 500.
        Server,
        /// 410.
        Gone,
        /// 429 with `Retry-After: RETRY_AFTERS[retry_after]`.
        TooMany { retry_after: u8 },
        /// 400 with an error body.
        BadRequest,
        /// A 200 whose body is not JSON.
        NotJson,
    }

    /// One step of a driver. `k` is a lookup index (modulo `KEYS`); ticket operations use the
    /// last ticket handed out for that key, live or not.
    #[derive(Clone, Copy, Debug)]
    pub(crate) enum Op {
        /// Look key `k` up with a buffer of `BUFS[buf]` bytes.
        Lookup { k: u8, buf: u8 },
        /// Write the request, then feed a complete response (half of it first when `split`).
        Feed { k: u8, resp: Resp, split: bool },
        /// Feed a response cut short, then EOF.
        Eof { k: u8 },
        /// The transport failed: Refused, Reset or ConnectTimeout.
        Fail { k: u8, transport: u8 },
        /// Give the ticket back.
        Cancel { k: u8 },
        /// Drop `k`'s token.
        Invalidate { k: u8 },
        /// Ask for a background refresh.
        Poll,
        /// Move the driver's clock forward by `ms`.
        Advance { ms: u64 },
        /// Move the driver's clock backwards by `ms` (the core must clamp, D1).
        Back { ms: u64 },
        /// Use a ticket that was finished, cancelled or lapsed (the `pick`-th of them).
        Stale { pick: u16 },
        /// `n` times: look `k` up and give the ticket back (spends the rate budget).
        Churn { k: u8, n: u8 },
    }

    pub(crate) fn transport(t: u8) -> Transport {
        match t % 3 {
            0 => Transport::Refused,
            1 => Transport::Reset,
            _ => Transport::ConnectTimeout,
        }
    }

    pub(crate) fn http(status: u16, extra: &str, body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 {status} X\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    /// A token of `len` bytes unique to `serial`.
    pub(crate) fn token_text(serial: u64, len: usize) -> String {
        let mut t = format!("t{serial:05}.");
        while t.len() < len {
            t.push(char::from(b'a' + (t.len() as u64 * 7 + serial) as u8 % 26));
        }
        t.truncate(len);
        t
    }

    pub(crate) fn token_response(token: &str, expires_in: u64, echo: Option<&str>) -> Vec<u8> {
        let echo = echo.map_or(String::new(), |c| format!(r#""client_id":"{c}","#));
        let body = format!(
            r#"{{"access_token":"{token}",{echo}"expires_in":"{expires_in}","token_type":"Bearer"}}"#
        );
        http(200, "", &body)
    }

    /// A token a response carries: its text, `expires_in`, and for an echo whether it is the
    /// key's own client id.
    pub(crate) struct Sent {
        pub(crate) token: String,
        pub(crate) expires_in: u64,
        pub(crate) echo_own: Option<bool>,
    }

    /// The bytes of `resp` for lookup index `k`; `serial` makes the token unique.
    pub(crate) fn response(resp: Resp, k: usize, serial: u64) -> (Vec<u8>, Option<Sent>) {
        let pick = |i: u8, n: usize| i as usize % n;
        match resp {
            Resp::Token { lifetime, len } => {
                let token = token_text(serial, TOKEN_LENS[pick(len, TOKEN_LENS.len())]);
                let expires_in = LIFETIMES[pick(lifetime, LIFETIMES.len())];
                let bytes = token_response(&token, expires_in, None);
                (
                    bytes,
                    Some(Sent {
                        token,
                        expires_in,
                        echo_own: None,
                    }),
                )
            }
            Resp::Echo { lifetime, own } => {
                let token = token_text(serial, 40);
                let expires_in = LIFETIMES[pick(lifetime, LIFETIMES.len())];
                let echo = if own {
                    key(k).identity.value().to_ascii_uppercase()
                } else {
                    OTHER_CLIENT.into()
                };
                let bytes = token_response(&token, expires_in, Some(&echo));
                (
                    bytes,
                    Some(Sent {
                        token,
                        expires_in,
                        echo_own: Some(own),
                    }),
                )
            }
            Resp::Server => (http(500, "", ""), None),
            Resp::Gone => (http(410, "", r#"{"error":"gone"}"#), None),
            Resp::TooMany { retry_after } => {
                let s = RETRY_AFTERS[pick(retry_after, RETRY_AFTERS.len())];
                (http(429, &format!("Retry-After: {s}\r\n"), ""), None)
            }
            Resp::BadRequest => (
                http(
                    400,
                    "",
                    r#"{"error":"invalid_request","error_description":"Identity not found"}"#,
                ),
                None,
            ),
            Resp::NotJson => (http(200, "", "<html>proxy</html>"), None),
        }
    }

    /// The failure a non-token response is (D7; D20 before any token came from the
    /// endpoint, `ever_ok` false).
    pub(crate) fn failure_of(resp: Resp, ever_ok: bool) -> Option<(Failure, Option<u32>)> {
        let f = |kind, status| Failure { kind, status };
        Some(match resp {
            Resp::Token { .. } | Resp::Echo { .. } => return None,
            Resp::Server => (f(FailureKind::ServerError, 500), None),
            Resp::Gone => (f(FailureKind::Gone, 410), None),
            Resp::TooMany { retry_after } => (
                f(FailureKind::TooManyRequests, 429),
                Some(RETRY_AFTERS[retry_after as usize % RETRY_AFTERS.len()]),
            ),
            Resp::BadRequest => (f(FailureKind::BadRequest, 400), None),
            Resp::NotJson if !ever_ok => (f(FailureKind::UnavailableNotJson, 200), None),
            Resp::NotJson => (f(FailureKind::NotJson, 200), None),
        })
    }

    /// Caller memory for a cache sized at run time.
    pub(crate) struct Heap {
        layout: StorageLayout,
        words: Vec<Word>,
    }

    impl Heap {
        pub(crate) fn new(slots: usize, blocks: usize) -> Self {
            let layout = layout_blocks(slots, blocks, BLOCK_SIZE).unwrap();
            let words = (0..layout.words).map(|_| Word::new(0)).collect();
            Self { layout, words }
        }

        pub(crate) fn cache(&mut self, config: Config) -> TokenCache<SliceStorage<'_>> {
            TokenCache::with_words(config, self.layout, &self.words[..]).unwrap()
        }
    }

    /// What a `cache_ops` run reached (so a test can check that it was not vacuous).
    #[derive(Debug, Default, Clone, Copy)]
    pub(crate) struct Reached {
        pub(crate) ops: u64,
        pub(crate) hits: u64,
        pub(crate) tokens: u64,
        pub(crate) evictions: u64,
        pub(crate) cache_full: u64,
        pub(crate) store_cache_full: u64,
        pub(crate) throttled: u64,
        pub(crate) pending: u64,
        pub(crate) stale: u64,
    }

    #[derive(Clone, Copy)]
    struct Live {
        ticket: Ticket,
        lease_until_ms: u64,
        /// Its entry in `starts`.
        start: usize,
    }

    /// The lighter model: tickets, the last token stored per key, the budget.
    struct Light<'c> {
        cache: TokenCache<SliceStorage<'c>>,
        capacity: usize,
        config: Config,
        /// The core's clock (D1) and the driver's.
        now_ms: u64,
        driver: u64,
        live: HashMap<usize, Live>,
        last_ticket: HashMap<usize, Ticket>,
        /// The last token stored per key (cleared by `invalidate`), with its expiry.
        stored: HashMap<usize, (Vec<u8>, u64)>,
        /// Request starts per endpoint as the core counts them (`request_at` moves a live
        /// ticket's to the time it is written), and the times tickets were handed out.
        starts: [Vec<u64>; 2],
        issued: [Vec<u64>; 2],
        /// Whether a token came from each endpoint yet (D20).
        ever_ok: [bool; 2],
        dead: Vec<Ticket>,
        serial: u64,
        out: Vec<u8>,
        reached: Reached,
    }

    impl Light<'_> {
        fn clock(&mut self) -> u64 {
            self.now_ms = self.now_ms.max(self.driver);
            self.lapse();
            self.now_ms
        }

        fn lapse(&mut self) {
            let now_ms = self.now_ms;
            let dead = &mut self.dead;
            self.live.retain(|_, l| {
                let keep = l.lease_until_ms > now_ms;
                if !keep {
                    dead.push(l.ticket);
                }
                keep
            });
        }

        fn in_flight(&self, f: usize) -> Vec<u64> {
            let now_ms = self.now_ms;
            let live = self
                .live
                .iter()
                .filter(|(k, l)| flavour_of(**k) == f && l.lease_until_ms > now_ms);
            live.map(|(_, l)| l.lease_until_ms).collect()
        }

        /// D9: `Err(retry_at)` when one more start now would exceed the budget.
        fn budget(&self, f: usize) -> Result<(), u64> {
            let live = self.in_flight(f);
            if live.len() as u32 >= self.config.in_flight {
                return Err(*live.iter().min().unwrap());
            }
            rate_check(&self.config, &self.starts[f], self.now_ms)
        }

        /// A ticket was handed out for `k`: single flight and the budget (D5, D9).
        fn issued(&mut self, k: usize, t: Ticket, ctx: &dyn fmt::Display) {
            assert!(
                !self.live.contains_key(&k),
                "{ctx}: a second live ticket for key {k}"
            );
            assert_eq!(
                self.budget(flavour_of(k)),
                Ok(()),
                "{ctx}: ticket over budget"
            );
            let start = self.starts[flavour_of(k)].len();
            self.starts[flavour_of(k)].push(self.now_ms);
            self.issued[flavour_of(k)].push(self.now_ms);
            let lease_until_ms = self.now_ms + self.config.fetch_timeout_ms;
            self.live.insert(
                k,
                Live {
                    ticket: t,
                    lease_until_ms,
                    start,
                },
            );
            if let Some(old) = self.last_ticket.insert(k, t) {
                self.dead.push(old);
            }
        }

        fn end(&mut self, k: usize) {
            let l = self.live.remove(&k).expect("live");
            self.dead.push(l.ticket);
        }

        fn lookup(&mut self, k: usize, buf: usize) {
            let c = canon(k);
            let now_ms = self.clock();
            let ctx = Ctx(move |f: &mut fmt::Formatter<'_>| {
                write!(
                    f,
                    "lookup key {k} buf {buf} at T0+{}",
                    now_ms.saturating_sub(T0)
                )
            });
            let got = self
                .cache
                .lookup(&key(k), self.driver, &mut self.out[..buf]);
            let live = self.live.get(&c).copied();
            let got = match got {
                Ok(got) => got,
                Err(CacheError::CacheFull) => {
                    // D4: only when every entry has a live ticket.
                    self.reached.cache_full += 1;
                    assert!(
                        live.is_none(),
                        "{ctx}: CacheFull for a key with a live ticket"
                    );
                    assert_eq!(
                        self.cache.len(),
                        self.live.len(),
                        "{ctx}: CacheFull with an entry to evict"
                    );
                    return;
                }
                Err(e) => panic!("{ctx}: {e:?}"),
            };
            match got {
                Lookup::Hit {
                    len,
                    expires_on_ms,
                    refresh,
                } => {
                    self.reached.hits += 1;
                    let (bytes, exp) = self.stored.get(&c).unwrap_or_else(|| {
                        panic!("{ctx}: a hit, but no token was stored (or it was invalidated)")
                    });
                    assert_eq!(
                        &self.out[..len],
                        &bytes[..],
                        "{ctx}: not the last token stored"
                    );
                    assert_eq!(expires_on_ms, *exp, "{ctx}: expiry");
                    assert!(
                        expires_on_ms > now_ms + self.config.min_lifetime_ms,
                        "{ctx}: under 60 s left"
                    );
                    if let Some(t) = refresh {
                        self.issued(c, t, &ctx);
                    }
                }
                Lookup::BufferTooSmall { needed } => {
                    let stored = self.stored.get(&c).map(|(b, _)| b.len());
                    assert_eq!(Some(needed), stored, "{ctx}");
                    assert!(needed > buf, "{ctx}");
                }
                Lookup::Fetch(t) => {
                    // D4: an entry with a live ticket is never evicted (it would answer Fetch).
                    assert!(live.is_none(), "{ctx}: Fetch while a live ticket exists");
                    self.issued(c, t, &ctx);
                }
                Lookup::Pending { retry_at_ms } => {
                    self.reached.pending += 1;
                    let l = live.unwrap_or_else(|| panic!("{ctx}: Pending without a live ticket"));
                    assert_eq!(retry_at_ms, l.lease_until_ms, "{ctx}");
                }
                Lookup::Throttled { retry_at_ms } => {
                    self.reached.throttled += 1;
                    assert!(
                        live.is_none(),
                        "{ctx}: Throttled while a live ticket exists"
                    );
                    assert_eq!(
                        self.budget(flavour_of(c)),
                        Err(retry_at_ms),
                        "{ctx}: budget not spent"
                    );
                }
                Lookup::Failed { retry_at_ms, .. } => {
                    assert!(live.is_none(), "{ctx}: Failed while a live ticket exists");
                    assert!(retry_at_ms > now_ms, "{ctx}: Failed in the past");
                }
            }
        }

        /// The last ticket for `k` and whether it is live; the clock moves when `call`.
        fn ticket(&mut self, k: usize, moves_clock: bool) -> Option<(Ticket, bool)> {
            let t = *self.last_ticket.get(&canon(k))?;
            if moves_clock {
                self.clock();
            } else {
                self.lapse();
            }
            let live = self.live.get(&canon(k)).is_some_and(|l| l.ticket == t);
            Some((t, live))
        }

        fn feed(&mut self, k: usize, resp: Resp, split: bool) {
            let c = canon(k);
            let Some((t, live)) = self.ticket(k, false) else {
                return;
            };
            let at = self.now_ms.max(self.driver).saturating_sub(T0);
            let ctx = Ctx(move |f: &mut fmt::Formatter<'_>| {
                write!(f, "feed key {k} {resp:?} at T0+{at}")
            });
            let mut req = [0u8; 2048];
            match self
                .cache
                .request_at(t, &endpoint(flavour_of(c)), self.now_ms, &mut req)
            {
                Ok(_) => {
                    assert!(live, "{ctx}: request for a stale ticket");
                    // The start counts from when the request is written (the core's clock).
                    let l = self.live[&c];
                    let at = &mut self.starts[flavour_of(c)][l.start];
                    *at = (*at).max(self.now_ms);
                }
                Err(e) => assert!(!live && e == CacheError::StaleTicket, "{ctx}: {e:?}"),
            }
            let now_ms = self.clock();
            let live = self.live.get(&c).is_some_and(|l| l.ticket == t);
            self.serial += 1;
            let (mut bytes, sent) = response(resp, k, self.serial);
            if split {
                let mut part = bytes[..bytes.len() / 2].to_vec();
                match self.cache.feed(t, &mut part, self.driver) {
                    Ok(Feed::NeedMore) => assert!(live, "{ctx}: half fed to a stale ticket"),
                    Err(CacheError::StaleTicket) => assert!(!live, "{ctx}: live ticket refused"),
                    other => panic!("{ctx}: half a response gave {other:?}"),
                }
            }
            let got = self.cache.feed(t, &mut bytes, self.driver);
            if !live {
                self.reached.stale += 1;
                assert!(
                    matches!(got, Err(CacheError::StaleTicket)),
                    "{ctx}: {got:?}"
                );
                return;
            }
            let done = match got {
                Ok(Feed::Done(d)) => d,
                other => panic!("{ctx}: a complete response gave {other:?}"),
            };
            let ever_ok = self.ever_ok[flavour_of(c)];
            match (&done, sent, failure_of(resp, ever_ok)) {
                (Done::Token { len, expires_on_ms }, Some(sent), _) => {
                    assert_eq!(*len, sent.token.len(), "{ctx}");
                    assert!(
                        *expires_on_ms > now_ms + self.config.min_lifetime_ms,
                        "{ctx}"
                    );
                    assert!(
                        sent.echo_own != Some(false) || !is_client_id(c),
                        "{ctx}: echo"
                    );
                    self.reached.tokens += 1;
                    self.ever_ok[flavour_of(c)] = true;
                    self.stored
                        .insert(c, (sent.token.into_bytes(), *expires_on_ms));
                }
                (Done::Failed { failure, .. }, Some(sent), _) => {
                    let ok = match failure.kind {
                        FailureKind::ClientIdMismatch => {
                            sent.echo_own == Some(false) && is_client_id(c)
                        }
                        FailureKind::ExpiredOnArrival => true,
                        FailureKind::CacheFull => {
                            // D4: only when every other entry has a live ticket.
                            self.reached.store_cache_full += 1;
                            self.cache.len() == self.live.len()
                        }
                        _ => false,
                    };
                    assert!(ok, "{ctx}: {done:?}");
                }
                (
                    Done::Retry { failure, .. } | Done::Failed { failure, .. },
                    None,
                    Some((f, _)),
                ) => {
                    assert_eq!(*failure, f, "{ctx}");
                }
                _ => panic!("{ctx}: {done:?}"),
            }
            self.end(c);
        }

        /// A ticket operation other than feed: `call` returns whether the core accepted it.
        fn ticket_op(
            &mut self,
            k: usize,
            name: &str,
            moves_clock: bool,
            call: impl FnOnce(&mut Self, Ticket) -> Result<(), CacheError>,
        ) {
            let Some((t, live)) = self.ticket(k, moves_clock) else {
                return;
            };
            let got = call(self, t);
            match got {
                Ok(()) if live => self.end(canon(k)),
                Err(CacheError::StaleTicket) if !live => self.reached.stale += 1,
                other => panic!("{name} key {k}: live {live}, got {other:?}"),
            }
        }

        fn invalidate(&mut self, k: usize) {
            let c = canon(k);
            self.clock();
            let _ = self.cache.invalidate(&key(k), self.driver);
            self.stored.remove(&c);
        }

        fn poll(&mut self) {
            let now_ms = self.clock();
            if let Ok(t) = self.cache.poll_refresh(self.driver) {
                let mut buf = [0u8; 1100];
                let read = self.cache.ticket_key(t, &mut buf).expect("a live ticket");
                let k = index_of(&read).expect("a known key");
                let ctx = Ctx(move |f: &mut fmt::Formatter<'_>| {
                    write!(f, "poll at T0+{}", now_ms.saturating_sub(T0))
                });
                assert!(
                    self.stored.contains_key(&k),
                    "{ctx}: refresh of a key without a token"
                );
                self.issued(k, t, &ctx);
            }
        }

        fn stale(&mut self, pick: usize) {
            self.lapse();
            if self.dead.is_empty() {
                return;
            }
            self.clock();
            let t = self.dead[pick % self.dead.len()];
            let mut bytes = token_response("late", 86_400, None);
            let got = self.cache.feed(t, &mut bytes, self.driver);
            assert!(
                matches!(got, Err(CacheError::StaleTicket)),
                "old {t:?} fed: {got:?}"
            );
            assert_eq!(
                self.cache.cancel(t),
                Err(CacheError::StaleTicket),
                "old {t:?}"
            );
            self.reached.stale += 1;
        }

        fn step(&mut self, op: Op) {
            self.reached.ops += 1;
            match op {
                Op::Lookup { k, buf } => self.lookup(k as usize, BUFS[buf as usize % BUFS.len()]),
                Op::Feed { k, resp, split } => self.feed(k as usize, resp, split),
                Op::Eof { k } => self.ticket_op(k as usize, "eof", true, |s, t| {
                    let mut cut = token_response("cut-short", 3600, None);
                    cut.truncate(cut.len() - 5);
                    match s.cache.eof(t, &mut cut, s.driver)? {
                        Done::Retry { failure, .. } if failure.kind == FailureKind::Truncated => {
                            Ok(())
                        }
                        other => panic!("eof: {other:?}"),
                    }
                }),
                Op::Fail { k, transport: tr } => {
                    self.ticket_op(k as usize, "fail", true, |s, t| {
                        match s.cache.fail(t, transport(tr), s.driver)? {
                            Done::Retry { .. } | Done::Failed { .. } => Ok(()),
                            other => panic!("fail: {other:?}"),
                        }
                    })
                }
                Op::Cancel { k } => {
                    self.ticket_op(k as usize, "cancel", false, |s, t| s.cache.cancel(t))
                }
                Op::Invalidate { k } => self.invalidate(k as usize),
                Op::Poll => self.poll(),
                Op::Advance { ms } => self.driver = self.driver.saturating_add(ms % (30 * H)),
                Op::Back { ms } => self.driver = self.driver.saturating_sub(ms % 600_000).max(T0),
                Op::Stale { pick } => self.stale(pick as usize),
                Op::Churn { k, n } => {
                    for _ in 0..n % 32 {
                        self.lookup(k as usize, 4096);
                        self.ticket_op(k as usize, "cancel", false, |s, t| s.cache.cancel(t));
                    }
                }
            }
            self.invariants(&op);
        }

        fn invariants(&mut self, op: &Op) {
            let now_ms = self.now_ms;
            let op = *op;
            let ctx = Ctx(move |f: &mut fmt::Formatter<'_>| {
                write!(f, "after {op:?} at T0+{}", now_ms.saturating_sub(T0))
            });
            assert!(self.cache.len() <= self.capacity, "{ctx}: over capacity");
            assert!(
                self.cache.len() >= self.live.len(),
                "{ctx}: an entry with a live ticket is gone"
            );
            for (f, flavour) in FLAVOURS.iter().enumerate() {
                let live = self.in_flight(f).len() as u32;
                assert_eq!(
                    self.cache.in_flight(*flavour, now_ms),
                    live,
                    "{ctx}: in flight"
                );
                assert!(live <= self.config.in_flight, "{ctx}: in-flight cap");
                let (s, r) = (&self.issued[f], self.config.rate as usize);
                if s.len() > r {
                    let w = &s[s.len() - r - 1..];
                    assert!(w[r] - w[0] >= self.config.rate_window_ms, "{ctx}: rate");
                }
            }
        }
    }

    /// Runs `ops` against a cache of `slots` entries and `blocks` arena blocks (256 B), checking
    /// the lighter model: no panic; at most one live ticket per key, and never a ticket over
    /// the budget (D9: 20 starts per sliding second, 5 in flight per endpoint); a live ticket is
    /// never refused nor its entry evicted; a hit is the last token stored for that key and has
    /// 60 s left; `CacheFull` only when every (other) entry has a live ticket; old tickets are
    /// refused; the outcome of each response is the one D7 gives.
    pub(crate) fn cache_ops(config: Config, slots: usize, blocks: usize, ops: &[Op]) -> Reached {
        let mut heap = Heap::new(slots, blocks);
        let mut m = Light {
            cache: heap.cache(config.clone()),
            capacity: slots,
            config,
            now_ms: 0,
            driver: T0,
            live: HashMap::new(),
            last_ticket: HashMap::new(),
            stored: HashMap::new(),
            starts: [Vec::new(), Vec::new()],
            issued: [Vec::new(), Vec::new()],
            ever_ok: [false; 2],
            dead: Vec::new(),
            serial: 0,
            out: vec![0; 4096],
            reached: Reached::default(),
        };
        for op in ops {
            m.step(*op);
        }
        m.reached.evictions = m.cache.stats().evictions;
        m.reached
    }

    // The `cache_ops` fuzz target's input, decoded by `arbitrary` (here so that the stable
    // replay test `core/tests/fuzz_corpus.rs` decodes the corpus the same way).

    /// An operation, as drawn by the fuzzer (see [`Op`]; `Leap` is a large step of `LEAPS`).
    #[derive(Arbitrary, Debug)]
    pub(crate) enum ArbOp {
        Lookup { k: u8, buf: u8 },
        Feed { k: u8, resp: Resp, split: bool },
        Eof { k: u8 },
        Fail { k: u8, transport: u8 },
        Cancel { k: u8 },
        Invalidate { k: u8 },
        Poll,
        Advance { ms: u16 },
        Leap { i: u8 },
        Back { ms: u32 },
        Stale { pick: u16 },
        Churn { k: u8, n: u8 },
    }

    /// The whole input of one `cache_ops` run.
    #[derive(Arbitrary, Debug)]
    pub(crate) struct FuzzInput {
        /// A cache of 4 slots and 12 blocks (evicting) rather than 24 and 256.
        pub(crate) small: bool,
        /// `jitter_percent: 0` rather than 20.
        pub(crate) exact: bool,
        pub(crate) seed: u64,
        pub(crate) ops: Vec<ArbOp>,
    }

    fn arb_op(a: &ArbOp) -> Op {
        match *a {
            ArbOp::Lookup { k, buf } => Op::Lookup { k, buf },
            ArbOp::Feed { k, resp, split } => Op::Feed { k, resp, split },
            ArbOp::Eof { k } => Op::Eof { k },
            ArbOp::Fail { k, transport } => Op::Fail { k, transport },
            ArbOp::Cancel { k } => Op::Cancel { k },
            ArbOp::Invalidate { k } => Op::Invalidate { k },
            ArbOp::Poll => Op::Poll,
            ArbOp::Advance { ms } => Op::Advance {
                ms: u64::from(ms % 4096),
            },
            ArbOp::Leap { i } => Op::Advance {
                ms: LEAPS[i as usize % LEAPS.len()],
            },
            ArbOp::Back { ms } => Op::Back { ms: u64::from(ms) },
            ArbOp::Stale { pick } => Op::Stale { pick },
            ArbOp::Churn { k, n } => Op::Churn { k, n },
        }
    }

    /// `cache_ops` target: the first 1000 operations of `input` through [`cache_ops`].
    pub(crate) fn fuzz(input: &FuzzInput) -> Reached {
        let config = Config {
            jitter_percent: if input.exact { 0 } else { 20 },
            seed: input.seed,
            ..Config::DEFAULT
        };
        let ops: Vec<Op> = input.ops.iter().take(1000).map(arb_op).collect();
        let (slots, blocks) = if input.small { (4, 12) } else { (24, 256) };
        cache_ops(config, slots, blocks, &ops)
    }
}

// ---------------------------------------------------------------------------------------------
// `arm_identity`: the ARM `identity` property parser.

pub(crate) mod arm {
    use imds_cache::{parse_arm_identity, ArmError, Identity, UserAssigned};

    /// The largest output tried first.
    pub(crate) const BIG: usize = 64;

    /// One granted identity, owned: resource id, client id, principal id.
    pub(crate) type Entry = (String, Option<String>, Option<String>);
    /// What a parse answered, owned: (system, granted identities) or the error.
    pub(crate) type Owned = Result<(bool, Vec<Entry>), ArmError>;

    /// Parses `data` with a scratch buffer of `scratch` bytes into an output of `out` entries;
    /// checks every returned entry against the `Identity` constructors.
    pub(crate) fn parse(data: &[u8], scratch: usize, out: usize) -> Owned {
        let mut scratch = vec![0u8; scratch];
        let mut entries = vec![UserAssigned::EMPTY; out];
        let got = parse_arm_identity(data, &mut scratch, &mut entries)?;
        assert!(
            got.user_assigned <= out,
            "more entries than the output holds"
        );
        let list: Vec<Entry> = entries[..got.user_assigned]
            .iter()
            .map(|u| {
                valid_entry(u);
                (
                    u.resource_id.to_owned(),
                    u.client_id.map(str::to_owned),
                    u.principal_id.map(str::to_owned),
                )
            })
            .collect();
        Ok((got.system, list))
    }

    /// A returned entry is accepted by the constructors from its text, and keeps that text.
    fn valid_entry(u: &UserAssigned<'_>) {
        let id = Identity::resource_id(u.resource_id)
            .unwrap_or_else(|e| panic!("returned resource id {:?}: {e:?}", u.resource_id));
        assert_eq!(id.value(), u.resource_id);
        assert_eq!(u.identity(), Ok(id));
        if let Some(c) = u.client_id {
            let id = Identity::client_id(c)
                .unwrap_or_else(|e| panic!("returned client id {c:?}: {e:?}"));
            assert_eq!(id.value(), c);
        }
        if let Some(p) = u.principal_id {
            let id = Identity::object_id(p)
                .unwrap_or_else(|e| panic!("returned principal id {p:?}: {e:?}"));
            assert_eq!(id.value(), p);
        }
    }

    /// `arm_identity` target: `parse_arm_identity` into outputs of several sizes.
    ///
    /// Invariants: no panic; a scratch of `json.len()` bytes always suffices, and an empty
    /// one changes the answer only to `ScratchTooSmall`; a result that fits in 64 entries is
    /// the same in an exactly-sized output, while an output one entry short (and an empty
    /// one) gives `TooMany` with the exact count, never a truncated success; a `TooMany`
    /// retried with `needed` entries succeeds with that many or finds a duplicate; any other
    /// error is the same with 0 and 1 entries (parsing goes on to the end), but for a
    /// duplicate identity, which an output too small to hold both copies cannot see; every
    /// returned identity is valid per the `Identity` constructors (and keeps its text), and
    /// resource ids are distinct ignoring ASCII case; a property that passed the strict JSON
    /// check is JSON to serde_json, and an accepted one grants what serde_json reads in it.
    pub(crate) fn arm_identity(data: &[u8]) {
        let full = parse(data, data.len(), BIG);
        assert_ne!(
            full,
            Err(ArmError::ScratchTooSmall),
            "a scratch of json.len() bytes must suffice"
        );
        // Without a backslash the scratch is never touched (not worth a second parse).
        if data.contains(&b'\\') {
            let bare = parse(data, 0, BIG);
            if bare != full {
                assert_eq!(bare, Err(ArmError::ScratchTooSmall), "without scratch");
            }
        }
        match full {
            Ok((system, list)) => accepted(data, system, &list),
            Err(ArmError::TooMany { needed }) => {
                assert!(
                    needed > BIG,
                    "TooMany {{ needed: {needed} }} with {BIG} entries"
                );
                match parse(data, data.len(), needed) {
                    Ok((system, list)) => {
                        assert_eq!(list.len(), needed, "retry with the size asked for");
                        accepted(data, system, &list);
                    }
                    Err(ArmError::DuplicateIdentity) => {}
                    other => panic!("retry with {needed} entries: {other:?}"),
                }
            }
            Err(e) => {
                for size in [0, 1] {
                    let small = parse(data, data.len(), size);
                    if e == ArmError::DuplicateIdentity {
                        assert!(small.is_err(), "{size} entries: {small:?} after {e:?}");
                    } else {
                        assert_eq!(small, Err(e), "{size} entries");
                    }
                }
                if !matches!(e, ArmError::Malformed | ArmError::TooDeep) {
                    // It passed the strict JSON check.
                    is_json(data);
                }
            }
        }
    }

    /// Checks an accepted property with `list` granted (out of an output large enough).
    fn accepted(data: &[u8], system: bool, list: &[Entry]) {
        let n = list.len();
        let full: Owned = Ok((system, list.to_vec()));
        for (i, a) in list.iter().enumerate() {
            for b in &list[..i] {
                assert!(!a.0.eq_ignore_ascii_case(&b.0), "{} granted twice", a.0);
            }
        }
        assert_eq!(parse(data, data.len(), n), full, "exactly {n} entries");
        if n > 0 {
            for size in [0, n - 1].into_iter().take(if n > 1 { 2 } else { 1 }) {
                assert_eq!(
                    parse(data, data.len(), size),
                    Err(ArmError::TooMany { needed: n }),
                    "{size} entries for {n}: never a truncated success"
                );
            }
        }
        let Some(value) = is_json(data) else { return };
        let (sys, mut want) = reference(&value);
        assert_eq!(system, sys, "system-assigned flag against serde_json");
        let mut got = list.to_vec();
        got.sort();
        want.sort();
        assert_eq!(got, want, "granted identities against serde_json");
    }

    /// serde_json reads the bytes as JSON (answers the value), or refuses them for one of the
    /// two things RFC 8259's grammar allows and serde_json does not: a `\uD800`–`\uDFFF`
    /// escape that is not half of a pair, and a number beyond the range of `f64`
    /// (`1e999`: "number out of range").
    fn is_json(data: &[u8]) -> Option<serde_json::Value> {
        match serde_json::from_slice::<serde_json::Value>(data) {
            Ok(v) => Some(v),
            Err(e) => {
                let out_of_range = e.to_string().starts_with("number out of range");
                assert!(
                    out_of_range || has_surrogate_escape(data),
                    "passed the JSON check but serde_json says: {e}"
                );
                None
            }
        }
    }

    /// Whether a `\uD800`–`\uDBFF` escape is not followed by a `\uDC00`–`\uDFFF` one, or
    /// the latter not preceded by the former.
    fn has_surrogate_escape(data: &[u8]) -> bool {
        let hex4 = |b: &[u8]| {
            let s = core::str::from_utf8(b).ok()?;
            u32::from_str_radix(s, 16).ok()
        };
        let (mut i, mut high) = (0, false);
        while i < data.len() {
            if data[i] == b'\\' && data.get(i + 1) == Some(&b'u') && i + 6 <= data.len() {
                match hex4(&data[i + 2..i + 6]) {
                    Some(0xd800..=0xdbff) if !high => high = true,
                    Some(0xdc00..=0xdfff) if high => high = false,
                    Some(0xd800..=0xdfff) => return true,
                    _ if high => return true,
                    _ => {}
                }
                i += 6;
                continue;
            }
            if high {
                return true;
            }
            // An escaped character (`\\` included) is skipped with its backslash.
            i += if data[i] == b'\\' { 2 } else { 1 };
        }
        high
    }

    /// What serde_json reads in an accepted property: the system flag and the granted
    /// identities (dictionary entries with a non-null value, with their `clientId` and
    /// `principalId`, and the strings of `identityIds`). Field names ignore ASCII case; an
    /// accepted property has each known field once.
    fn reference(v: &serde_json::Value) -> (bool, Vec<Entry>) {
        let obj = v.as_object().expect("an accepted property is an object");
        let field = |o: &serde_json::Map<String, serde_json::Value>, name: &str| {
            o.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let kind = field(obj, "type");
        let kind = kind.as_ref().and_then(|t| t.as_str()).expect("a type");
        let system = kind.to_ascii_lowercase().starts_with("systemassigned");
        let mut list = Vec::new();
        if let Some(serde_json::Value::Object(d)) = field(obj, "userAssignedIdentities") {
            for (id, val) in &d {
                let Some(e) = val.as_object() else {
                    assert!(val.is_null(), "{id}: {val}");
                    continue;
                };
                let text = |name| field(e, name).and_then(|v| v.as_str().map(str::to_owned));
                list.push((id.clone(), text("clientId"), text("principalId")));
            }
        }
        if let Some(serde_json::Value::Array(a)) = field(obj, "identityIds") {
            for id in a {
                list.push((id.as_str().expect("a string").to_owned(), None, None));
            }
        }
        (system, list)
    }
}

// ---------------------------------------------------------------------------------------------
// `request`: identities, resources, endpoints and `write_request` (and Arc's second request).

pub(crate) mod req {
    use arbitrary::Arbitrary;
    use imds_cache::{
        check_arc_key, write_request, ArrayStorage, CacheError, Config, Done, Endpoint, Feed,
        Flavour, Identity, IdentityKind, Key, Lookup, Method, RequestDescriptor, RequestError,
        Resource, TokenCache, ARC_MAX_KEY_LEN, MAX_RESOURCE_ID_LEN, MAX_RESOURCE_LEN,
    };

    const GUIDS: &[&str] = &[
        "fe83865b-495e-4ec7-9574-12b264882c9f",
        "5E29463D-71DA-4FE0-8E69-999B57DB23B0",
        "712eac09-e943-418c-9be6-9fd5c91078bl",
        "00000000-0000-0000-0000-000000000000",
    ];
    /// Identity selectors: GUIDs, ARM resource ids, and near misses.
    const IDENTITIES: &[&str] = &[
        "fe83865b-495e-4ec7-9574-12b264882c9f",
        "5E29463D-71DA-4FE0-8E69-999B57DB23B0",
        "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-1",
        "/subscriptions/s/resourcegroups/r/providers/Microsoft.ManagedIdentity/identities/x",
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/caf\u{e9}",
        "712eac09-e943-418c-9be6-9fd5c91078bl",
        "",
    ];
    const RESOURCES: &[&str] = &[
        "https://management.azure.com",
        "https://management.azure.com/",
        "https://vault.azure.net/.default",
        "api://AzureADTokenExchange",
        "https://x/.default/.default",
        "https://storage.azure.com/caf\u{e9}?a=b&c=%41#f",
        "/.default",
        "",
    ];
    const URLS: &[&str] = &[
        "http://169.254.169.254",
        "http://localhost:4141/MSI/token",
        "https://localhost:2377/metadata/identity/oauth2/token",
        "http://localhost:40342/metadata/identity/oauth2/token",
        "http://localhost:50342/oauth2/token",
        "http://[::1]:8080/msi/token",
        "http://127.0.0.1:8080/",
        "HTTPS://Example.com:443/a&b=c",
        "http://localhost:7071/msi/token",
        "http://user@host/x",
    ];
    const HOSTS: &[&str] = &[
        "169.254.169.254",
        "localhost",
        "::1",
        "fe80::1%eth0",
        "a b",
        "",
    ];
    const PATHS: &[&str] = &[
        "/metadata/identity/oauth2/token",
        "/MSI/token",
        "/",
        "/a?b",
        "x",
    ];
    const SECRETS: &[&str] = &[
        "853b9a84-5bfa-4b22-a3f3-0b9a43d9ad8a",
        "header-secret",
        "a b",
        " lead",
        "",
    ];
    const KEYS: &[&str] = &["0123456789abcdef", "k3y\n", "k3y\r\n", "a:b", ""];
    /// Characters an edit puts in: besides ASCII, C1 controls, spaces and separators.
    const WIDE: &[char] = &[
        '\u{85}',
        '\u{a0}',
        '\u{e9}',
        '\u{2028}',
        '\u{feff}',
        '\u{ff0f}',
        '\u{fffd}',
        '\u{10ffff}',
    ];

    /// A text: one of a table of good values, one edited, or bytes of the input's pool.
    #[derive(Arbitrary, Debug, Clone, Copy)]
    pub(crate) enum Text {
        /// `table[known % len]`.
        Known(u8),
        /// `table[known % len]` with one character replaced (`op % 3 == 0`), inserted (1) or
        /// the text cut there (2); `ch` is ASCII below 0x80, else one of `WIDE`.
        Edit { known: u8, at: u8, ch: u8, op: u8 },
        /// `pool[at..at + len]` (clamped), lossily decoded as UTF-8.
        Pool { at: u16, len: u16 },
    }

    impl Text {
        fn get(self, table: &[&str], pool: &[u8]) -> String {
            match self {
                Text::Known(i) => table[i as usize % table.len()].to_owned(),
                Text::Edit { known, at, ch, op } => {
                    let mut chars: Vec<char> =
                        table[known as usize % table.len()].chars().collect();
                    let at = at as usize % (chars.len() + 1);
                    let ch = if ch < 0x80 {
                        char::from(ch)
                    } else {
                        WIDE[ch as usize % WIDE.len()]
                    };
                    match op % 3 {
                        0 if at < chars.len() => chars[at] = ch,
                        0 | 1 => chars.insert(at, ch),
                        _ => chars.truncate(at),
                    }
                    chars.into_iter().collect()
                }
                Text::Pool { at, len } => {
                    let at = (at as usize).min(pool.len());
                    let end = at.saturating_add(len as usize).min(pool.len());
                    String::from_utf8_lossy(&pool[at..end]).into_owned()
                }
            }
        }
    }

    #[derive(Arbitrary, Debug, Clone, Copy)]
    pub(crate) enum ResourceText {
        /// `Resource::new`.
        New(Text),
        /// `Resource::from_scopes` with `n % 3` of the two scopes.
        Scopes { n: u8, first: Text, second: Text },
    }

    #[derive(Arbitrary, Debug, Clone, Copy)]
    pub(crate) enum EndpointText {
        /// `Endpoint::IMDS`.
        Imds,
        /// `Endpoint::VM_EXTENSION`.
        VmExtension,
        /// `Endpoint::from_url`.
        Url(Text),
        /// `Endpoint::imds_authority`.
        Authority(Text),
        /// The public fields set directly (`write_request` checks host and path again).
        Raw {
            host: Text,
            port: u16,
            tls: bool,
            path: Text,
        },
    }

    /// The `request` target's input. Every field but `pool` has a fixed size, so `seeds.py`
    /// can write inputs byte by byte.
    #[derive(Arbitrary, Debug)]
    pub(crate) struct RequestInput<'a> {
        /// `Flavour::ALL[flavour % 7]`; the endpoint is set to it whatever built it.
        pub(crate) flavour: u8,
        /// System, ClientId, ObjectId, ResourceId (`% 4`).
        pub(crate) kind: u8,
        pub(crate) identity: Text,
        pub(crate) resource: ResourceText,
        pub(crate) endpoint: EndpointText,
        pub(crate) secret: Option<Text>,
        pub(crate) default_client_id: Option<Text>,
        /// Arc's key: passed to `write_request` as is, and to `complete_challenge`.
        pub(crate) key: Option<Text>,
        pub(crate) pool: &'a [u8],
    }

    const KINDS: [IdentityKind; 4] = [
        IdentityKind::System,
        IdentityKind::ClientId,
        IdentityKind::ObjectId,
        IdentityKind::ResourceId,
    ];

    /// A byte no header, URL or selector may carry raw: ASCII controls, DEL and the space.
    fn ctl_or_space(b: u8) -> bool {
        b <= b' ' || b == 0x7f
    }

    fn is_unreserved(b: u8) -> bool {
        b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
    }

    fn encode(s: &str) -> String {
        s.bytes()
            .map(|b| {
                if is_unreserved(b) {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }

    /// `request` target: the constructors and `write_request`.
    ///
    /// Invariants: no panic; a constructor accepts no CR, LF, NUL, other control character or
    /// space in what it keeps (and `write_request` refuses raw endpoint fields with them);
    /// `write_request` answers the error the flavour's rules give (checked against a small
    /// model of §§1–5 of the protocol reference), having written nothing; a request is
    /// ASCII, well-formed HTTP/1.1 (parsed back with httparse) with the flavour's method,
    /// path, query (api-version, percent-encoded resource and selector, no duplicates) and
    /// headers (`Metadata: true`, the secret, Arc's key), nothing else; it takes exactly
    /// `len` bytes, is the same in a larger buffer, and one byte less gives
    /// `BufferTooSmall` with that size; the cache writes the same request for the same key,
    /// and Arc's second request (`complete_challenge`) is `write_request` with the checked key.
    pub(crate) fn request(input: &RequestInput<'_>) {
        let pool = input.pool;
        let flavour = Flavour::ALL[input.flavour as usize % Flavour::COUNT];
        let kind = KINDS[input.kind as usize % 4];

        // The identity.
        let id_text = input.identity.get(IDENTITIES, pool);
        let identity = Identity::new(kind, &id_text);
        if let Ok(id) = &identity {
            identity_ok(kind, &id_text, id);
        }

        // The resource.
        let (r1, r2, n) = match input.resource {
            ResourceText::New(t) => (t.get(RESOURCES, pool), String::new(), None),
            ResourceText::Scopes { n, first, second } => (
                first.get(RESOURCES, pool),
                second.get(RESOURCES, pool),
                Some(n as usize % 3),
            ),
        };
        let resource = match n {
            None => Resource::new(&r1),
            Some(n) => Resource::from_scopes(&[r1.as_str(), r2.as_str()][..n]),
        };
        if let Ok(r) = &resource {
            let s = r.as_str();
            assert!(
                !s.is_empty() && s.len() <= MAX_RESOURCE_LEN,
                "resource {s:?}"
            );
            assert!(!s.bytes().any(ctl_or_space), "resource {s:?}");
            match n {
                None => assert_eq!(s, r1),
                Some(_) => assert_eq!(s, r1.strip_suffix("/.default").unwrap_or(&r1)),
            }
        }

        // The endpoint.
        let (url, host, path);
        let mut raw = false;
        let built = match input.endpoint {
            EndpointText::Imds => Ok(Endpoint::IMDS),
            EndpointText::VmExtension => Ok(Endpoint::VM_EXTENSION),
            EndpointText::Url(t) => {
                url = t.get(URLS, pool);
                Endpoint::from_url(flavour, &url)
            }
            EndpointText::Authority(t) => {
                url = t.get(URLS, pool);
                Endpoint::imds_authority(&url)
            }
            EndpointText::Raw {
                host: h,
                port,
                tls,
                path: p,
            } => {
                raw = true;
                host = h.get(HOSTS, pool);
                path = p.get(PATHS, pool);
                Ok(Endpoint {
                    host: &host,
                    port,
                    tls,
                    path: &path,
                    ..Endpoint::IMDS
                })
            }
        };
        let Ok(mut endpoint) = built else { return };
        if !raw {
            endpoint_ok(&endpoint);
        }
        let secret = input.secret.map(|t| t.get(SECRETS, pool));
        let default_id = input.default_client_id.map(|t| t.get(GUIDS, pool));
        let key = input.key.map(|t| t.get(KEYS, pool));
        endpoint.flavour = flavour;
        endpoint.secret = secret.as_deref();
        endpoint.default_client_id = default_id.as_deref();

        let (Ok(identity), Ok(resource)) = (identity, resource) else {
            return;
        };
        let key = key.as_deref().map(str::as_bytes);
        let got = written(&endpoint, &identity, &resource, key);
        let model = expected(&endpoint, &identity, key);
        let bad_endpoint = raw
            && (endpoint.host.is_empty()
                || endpoint
                    .host
                    .bytes()
                    .any(|b| ctl_or_space(b) || !b.is_ascii())
                || !endpoint.path.starts_with('/')
                || endpoint
                    .path
                    .bytes()
                    .any(|b| ctl_or_space(b) || !b.is_ascii() || b == b'?' || b == b'#'));
        match &got {
            Err(RequestError::InvalidEndpoint) => {
                assert!(
                    raw,
                    "InvalidEndpoint for a constructed endpoint {endpoint:?}"
                )
            }
            _ if bad_endpoint => panic!("{got:?} for endpoint {endpoint:?}"),
            Err(e) => match &model {
                Err(allowed) => assert!(allowed.contains(e), "{e:?}, expected one of {allowed:?}"),
                Ok(_) => panic!("{e:?}, expected a request"),
            },
            Ok(w) => match &model {
                Ok(want) => well_formed(&endpoint, &identity, &resource, key, want, w),
                Err(allowed) => panic!("a request, expected one of {allowed:?}"),
            },
        }
        through_the_cache(&endpoint, identity, resource, key, &got);
    }

    /// An identity the constructor accepted is the kind asked for, keeps its text, and that
    /// text has the kind's shape.
    fn identity_ok(kind: IdentityKind, text: &str, id: &Identity<'_>) {
        assert_eq!(id.kind(), kind);
        match kind {
            IdentityKind::System => assert_eq!(id.value(), ""),
            IdentityKind::ClientId | IdentityKind::ObjectId => {
                assert_eq!(id.value(), text);
                let b = text.as_bytes();
                assert_eq!(b.len(), 36, "GUID {text:?}");
                for (i, c) in b.iter().enumerate() {
                    match i {
                        8 | 13 | 18 | 23 => assert_eq!(*c, b'-', "GUID {text:?}"),
                        _ => assert!(c.is_ascii_hexdigit(), "GUID {text:?}"),
                    }
                }
            }
            IdentityKind::ResourceId => {
                assert_eq!(id.value(), text);
                assert!(!text.is_empty() && text.len() <= MAX_RESOURCE_ID_LEN);
                assert!(!text.bytes().any(ctl_or_space), "resource id {text:?}");
                assert!(
                    text.get(..15)
                        .is_some_and(|p| p.eq_ignore_ascii_case("/subscriptions/")),
                    "resource id {text:?}"
                );
            }
        }
    }

    /// An endpoint a constructor built has a host and a path that can be written.
    fn endpoint_ok(e: &Endpoint<'_>) {
        assert!(!e.host.is_empty(), "{e:?}");
        assert!(
            !e.host
                .bytes()
                .any(|b| ctl_or_space(b) || !b.is_ascii() || b == b'@'),
            "{e:?}"
        );
        assert!(e.path.starts_with('/'), "{e:?}");
        assert!(
            !e.path
                .bytes()
                .any(|b| ctl_or_space(b) || !b.is_ascii() || b == b'?' || b == b'#'),
            "{e:?}"
        );
        assert_ne!(e.port, 0, "{e:?}");
    }

    /// A request `write_request` wrote: its descriptor's fields and its bytes.
    #[derive(Clone, Debug, PartialEq)]
    struct Written {
        host: String,
        port: u16,
        tls: bool,
        method: Method,
        bytes: Vec<u8>,
    }

    impl Written {
        fn describes(&self, d: &RequestDescriptor<'_>) -> bool {
            (d.host, d.port, d.tls, d.method, d.len)
                == (
                    &self.host[..],
                    self.port,
                    self.tls,
                    self.method,
                    self.bytes.len(),
                )
        }
    }

    /// `write_request` into buffers of several sizes: answers the request or the error,
    /// having checked the sizes.
    fn written(
        endpoint: &Endpoint<'_>,
        identity: &Identity<'_>,
        resource: &Resource<'_>,
        key: Option<&[u8]>,
    ) -> Result<Written, RequestError> {
        const FILL: u8 = 0xa5;
        let write = |len: usize| {
            let mut buf = vec![FILL; len];
            let got = write_request(endpoint, identity, resource, key, &mut buf)
                .map(|d| (d.host.to_owned(), d.port, d.tls, d.method, d.len));
            (got, buf)
        };
        let needed = match write(0).0 {
            Ok(_) => panic!("a request in 0 bytes"),
            Err(RequestError::BufferTooSmall { needed }) => needed,
            Err(e) => {
                // Refused before anything is written, whatever the buffer.
                let (again, buf) = write(4096);
                assert_eq!(again.err(), Some(e), "4096 bytes");
                assert!(buf.iter().all(|&b| b == FILL), "{e:?}: bytes written");
                return Err(e);
            }
        };
        let (larger, buf) = write(needed + 1);
        let d = larger.unwrap_or_else(|e| panic!("{e:?} with {} bytes for {needed}", needed + 1));
        assert_eq!(d.4, needed, "len against BufferTooSmall's needed");
        assert_eq!(buf[needed], FILL, "a byte written past len");
        let bytes = buf[..needed].to_vec();
        let (exact, buf) = write(needed);
        assert_eq!(exact.as_ref().ok(), Some(&d), "exactly {needed} bytes");
        assert_eq!(buf, bytes, "exactly {needed} bytes");
        for short in [needed - 1, needed / 2] {
            let (got, _) = write(short);
            assert_eq!(
                got.err(),
                Some(RequestError::BufferTooSmall { needed }),
                "{short} bytes for {needed}"
            );
        }
        Ok(Written {
            host: d.0,
            port: d.1,
            tls: d.2,
            method: d.3,
            bytes,
        })
    }

    /// What a request must hold (the model's answer).
    #[derive(Debug)]
    struct Want<'x> {
        method: Method,
        api_version: Option<&'static str>,
        selector: Option<(&'static str, &'x str)>,
        metadata: bool,
        secret: Option<(&'static str, &'x str)>,
    }

    /// The wire form of §§1–5 of the protocol reference, for an endpoint whose host and path
    /// are valid: the request, or every error that applies (any one of them may be answered).
    fn expected<'x>(
        e: &Endpoint<'x>,
        identity: &Identity<'x>,
        key: Option<&[u8]>,
    ) -> Result<Want<'x>, Vec<RequestError>> {
        use IdentityKind::{ClientId, ObjectId, ResourceId, System};
        let mut errors = Vec::new();
        let (kind, value) = (identity.kind(), identity.value());
        let mut want = Want {
            method: Method::Get,
            api_version: None,
            selector: None,
            metadata: false,
            secret: None,
        };
        if key.is_some() && e.flavour != Flavour::Arc {
            errors.push(RequestError::UnexpectedAuthorization);
        }
        // The secret header: printable ASCII, no space at either end.
        let secret = |name: &'static str, want: &mut Want<'x>, errors: &mut Vec<RequestError>| {
            match e.secret {
                None | Some("") => errors.push(RequestError::MissingSecret),
                Some(s)
                    if s.bytes().all(|b| (0x20..0x7f).contains(&b))
                        && !s.starts_with(' ')
                        && !s.ends_with(' ') =>
                {
                    want.secret = Some((name, s))
                }
                Some(_) => errors.push(RequestError::InvalidHeaderValue),
            }
        };
        let mut selector = None;
        let mut unsupported = false;
        match e.flavour {
            Flavour::Imds => {
                want.api_version = Some("2018-02-01");
                want.metadata = true;
                selector = match kind {
                    System => None,
                    ClientId => Some("client_id"),
                    ObjectId => Some("object_id"),
                    ResourceId => Some("msi_res_id"),
                };
            }
            Flavour::AppService2019 => {
                want.api_version = Some("2019-08-01");
                selector = match kind {
                    System => None,
                    ClientId => Some("client_id"),
                    ObjectId => Some("principal_id"),
                    ResourceId => Some("mi_res_id"),
                };
                secret("X-IDENTITY-HEADER", &mut want, &mut errors);
            }
            Flavour::Msi2017 => {
                want.api_version = Some("2017-09-01");
                match kind {
                    System => {
                        if let Some(id) = e.default_client_id {
                            if Identity::client_id(id).is_ok() {
                                want.selector = Some(("clientid", id));
                            } else {
                                errors.push(RequestError::InvalidDefaultClientId);
                            }
                        }
                    }
                    ClientId => selector = Some("clientid"),
                    ObjectId | ResourceId => unsupported = true,
                }
                secret("secret", &mut want, &mut errors);
            }
            Flavour::Arc => {
                want.api_version = Some("2020-06-01");
                want.metadata = true;
                unsupported = kind != System;
                if let Some(k) = key {
                    if k.is_empty()
                        || k.len() > ARC_MAX_KEY_LEN
                        || !k.iter().all(|b| (0x21..0x7f).contains(b))
                    {
                        errors.push(RequestError::InvalidAuthorization);
                    }
                }
            }
            Flavour::CloudShell => {
                want.method = Method::Post;
                want.metadata = true;
                unsupported = kind != System;
            }
            Flavour::ServiceFabric => {
                want.api_version = Some("2019-07-01-preview");
                unsupported = kind != System;
                if !e.tls {
                    errors.push(RequestError::NeedsTls);
                }
                secret("Secret", &mut want, &mut errors);
            }
            Flavour::VmExtension => {
                want.metadata = true;
                selector = match kind {
                    System => None,
                    ClientId => Some("client_id"),
                    ObjectId => Some("object_id"),
                    ResourceId => {
                        unsupported = true;
                        None
                    }
                };
            }
            _ => panic!("a flavour the model does not know: {:?}", e.flavour),
        }
        if unsupported {
            errors.push(RequestError::UnsupportedSelector);
        }
        if let Some(name) = selector {
            want.selector = Some((name, value));
        }
        if errors.is_empty() {
            Ok(want)
        } else {
            Err(errors)
        }
    }

    fn header<'h>(headers: &[httparse::Header<'h>], name: &str) -> Option<&'h [u8]> {
        headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    /// A written request against what the model wants.
    fn well_formed(
        e: &Endpoint<'_>,
        identity: &Identity<'_>,
        resource: &Resource<'_>,
        key: Option<&[u8]>,
        want: &Want<'_>,
        d: &Written,
    ) {
        let bytes = &d.bytes[..];
        let shown = String::from_utf8_lossy(bytes);
        let ctx = format!("{e:?} {identity:?} {resource:?}\n{shown}");
        assert_eq!((&d.host[..], d.port), (e.host, e.port), "{ctx}");
        assert_eq!(d.tls, e.tls || e.flavour == Flavour::ServiceFabric, "{ctx}");
        assert_eq!(d.method, want.method, "{ctx}");
        // ASCII; CR and LF only as CRLF line ends; no other control character.
        assert!(bytes.is_ascii(), "{ctx}");
        for (i, &b) in bytes.iter().enumerate() {
            match b {
                b'\r' => assert_eq!(bytes.get(i + 1), Some(&b'\n'), "bare CR at {i}: {ctx}"),
                b'\n' => assert!(i > 0 && bytes[i - 1] == b'\r', "bare LF at {i}: {ctx}"),
                _ => assert!(b >= 0x20 && b != 0x7f, "control byte {b:#x} at {i}: {ctx}"),
            }
        }
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut req = httparse::Request::new(&mut headers);
        let head = match req.parse(bytes) {
            Ok(httparse::Status::Complete(n)) => n,
            other => panic!("httparse: {other:?}: {ctx}"),
        };
        assert_eq!(req.method, Some(want.method.as_str()), "{ctx}");
        assert_eq!(req.version, Some(1), "{ctx}");
        let target = req.path.expect("a path");
        assert!(target.starts_with('/'), "{ctx}");
        let lines = bytes[..head].windows(2).filter(|w| w == b"\r\n").count();
        assert_eq!(lines, req.headers.len() + 2, "one header per line: {ctx}");

        // Request target.
        let query = match target.split_once('?') {
            Some((path, query)) => {
                assert_eq!(path, e.path, "{ctx}");
                Some(query)
            }
            None => {
                assert_eq!(target, e.path, "{ctx}");
                None
            }
        };
        if want.method == Method::Post {
            assert_eq!(query, None, "a query on a POST: {ctx}");
        } else {
            let query = query.expect("a GET has a query");
            let mut params: Vec<(&str, &str)> = Vec::new();
            for pair in query.split('&') {
                let (name, value) = pair.split_once('=').expect("name=value");
                assert!(
                    params.iter().all(|(n, _)| *n != name),
                    "{name} twice: {ctx}"
                );
                params.push((name, value));
            }
            let mut expect: Vec<(&str, String)> = Vec::new();
            if let Some(v) = want.api_version {
                expect.push(("api-version", v.to_owned()));
            }
            expect.push(("resource", encode(resource.as_str())));
            if let Some((name, value)) = want.selector {
                expect.push((name, encode(value)));
            }
            let params: Vec<(&str, String)> =
                params.into_iter().map(|(n, v)| (n, v.to_owned())).collect();
            assert_eq!(params, expect, "query: {ctx}");
        }

        // Headers: exactly those of the flavour, each once.
        for (i, h) in req.headers.iter().enumerate() {
            assert!(
                req.headers[..i]
                    .iter()
                    .all(|o| !o.name.eq_ignore_ascii_case(h.name)),
                "{} twice: {ctx}",
                h.name
            );
            assert!(
                h.value.iter().all(|&b| (0x20..0x7f).contains(&b)),
                "{}: {ctx}",
                h.name
            );
        }
        let default_port = if e.tls { 443 } else { 80 };
        let mut host = if e.host.contains(':') {
            format!("[{}]", e.host)
        } else {
            e.host.to_owned()
        };
        if e.port != default_port {
            host += &format!(":{}", e.port);
        }
        let mut expect: Vec<(&str, Vec<u8>)> = vec![("Host", host.into_bytes())];
        if want.metadata {
            expect.push(("Metadata", b"true".to_vec()));
        }
        if let Some((name, value)) = want.secret {
            expect.push((name, value.as_bytes().to_vec()));
        }
        if let Some(k) = key {
            expect.push(("Authorization", [b"Basic ", k].concat()));
        }
        let body = &bytes[head..];
        if want.method == Method::Post {
            let form = format!("resource={}", encode(resource.as_str()));
            assert_eq!(body, form.as_bytes(), "{ctx}");
            expect.push((
                "Content-Type",
                b"application/x-www-form-urlencoded".to_vec(),
            ));
            expect.push(("Content-Length", form.len().to_string().into_bytes()));
        } else {
            assert!(body.is_empty(), "a body on a GET: {ctx}");
        }
        expect.push(("Connection", b"close".to_vec()));
        for (name, value) in &expect {
            assert_eq!(
                header(req.headers, name),
                Some(&value[..]),
                "header {name}: {ctx}"
            );
        }
        assert!(header(req.headers, "User-Agent").is_some(), "{ctx}");
        assert_eq!(
            req.headers.len(),
            expect.len() + 1,
            "unexpected headers: {ctx}"
        );
    }

    /// The same key through a cache: `request_at` writes what `write_request` wrote; for Arc,
    /// after the challenge, `complete_challenge` writes `write_request` with the checked key.
    fn through_the_cache(
        endpoint: &Endpoint<'_>,
        identity: Identity<'_>,
        resource: Resource<'_>,
        key: Option<&[u8]>,
        direct: &Result<Written, RequestError>,
    ) {
        let mut cache = TokenCache::<ArrayStorage<2, 16>>::new(Config::DEFAULT);
        let k = Key {
            flavour: endpoint.flavour,
            identity,
            resource,
        };
        let now_ms = 1_700_000_000_000;
        let Ok(Lookup::Fetch(ticket)) = cache.lookup(&k, now_ms, &mut []) else {
            panic!("an empty cache must hand out a ticket");
        };
        // The request without Arc's key (the first of Arc's two).
        let first = if key.is_some() {
            written(endpoint, &identity, &resource, None)
        } else {
            direct.clone()
        };
        let mut out = vec![0u8; first.as_ref().map_or(4096, |w| w.bytes.len())];
        match (cache.request_at(ticket, endpoint, now_ms, &mut out), &first) {
            (Ok(d), Ok(w)) => {
                assert!(w.describes(&d), "{d:?} against {w:?}");
                assert_eq!(&out[..d.len], &w.bytes[..], "the cache's request");
            }
            (Err(CacheError::Request(e)), Err(want)) => assert_eq!(e, *want),
            (got, want) => panic!("cache request {got:?}, write_request {want:?}"),
        }
        if endpoint.flavour != Flavour::Arc || first.is_err() {
            return;
        }
        let mut challenge = b"HTTP/1.1 401 Unauthorized\r\n\
            WWW-Authenticate: Basic realm=/var/opt/azcmagent/tokens/k.key\r\n\
            Content-Length: 0\r\n\r\n"
            .to_vec();
        match cache.feed(ticket, &mut challenge, now_ms) {
            Ok(Feed::Done(Done::NeedKeyFile { .. })) => {}
            other => panic!("Arc challenge: {other:?}"),
        }
        let contents = key.unwrap_or(b"0123456789abcdef");
        let got = cache.complete_challenge(ticket, endpoint, contents, now_ms, &mut out[..0]);
        let needed = match (check_arc_key(contents), got) {
            (Err(e), got) => {
                assert_eq!(got, Err(CacheError::ArcKey(e)), "key {contents:?}");
                return;
            }
            (Ok(checked), Err(CacheError::Request(RequestError::BufferTooSmall { needed }))) => {
                let w = written(endpoint, &identity, &resource, Some(checked))
                    .unwrap_or_else(|e| panic!("checked key {checked:?}: {e:?}"));
                assert_eq!(w.bytes.len(), needed);
                w
            }
            (Ok(_), got) => panic!("complete_challenge into 0 bytes: {got:?}"),
        };
        // The ticket is still live after a short buffer: the same call with room.
        let mut out = vec![0u8; needed.bytes.len()];
        match cache.complete_challenge(ticket, endpoint, contents, now_ms, &mut out) {
            Ok(d) => {
                assert!(needed.describes(&d), "{d:?} against {needed:?}");
                assert_eq!(&out[..d.len], &needed.bytes[..], "Arc's second request");
            }
            other => panic!("complete_challenge: {other:?}"),
        }
    }
}
