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

// ---------------------------------------------------------------------------------------------
// `cache_ops`: the cache driven by sequences of operations (issue 9). The operation set, the
// keys and the wire bytes are shared with the model-based test `core/tests/model.rs` (which
// includes this file); `cache_ops` below is the lighter model the fuzz target checks.

pub(crate) mod ops {
    use std::collections::HashMap;

    use imds_cache::{
        CacheError, Config, Done, Endpoint, Failure, FailureKind, Feed, Flavour, Identity,
        IdentityKind, Key, Lookup, Resource, SliceStorage, Slot, Ticket, TokenCache, Transport,
        BLOCK_SIZE,
    };

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
        let k = k % KEYS;
        let (identity, resource) = identity(k % IDENTITIES);
        Key {
            flavour: FLAVOURS[k / IDENTITIES],
            identity,
            resource: Resource::new(resource).unwrap(),
        }
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

    /// A response, as the driver would receive it.
    #[derive(Clone, Copy, Debug)]
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

    /// The failure a non-token response is (D7).
    pub(crate) fn failure_of(resp: Resp) -> Option<(Failure, Option<u32>)> {
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
            Resp::NotJson => (f(FailureKind::NotJson, 200), None),
        })
    }

    /// Caller memory for a cache sized at run time.
    pub(crate) struct Heap {
        slots: Vec<Slot>,
        index: Vec<u32>,
        arena: Vec<u8>,
        links: Vec<u32>,
    }

    impl Heap {
        pub(crate) fn new(slots: usize, blocks: usize) -> Self {
            Self {
                slots: vec![Slot::EMPTY; slots],
                index: vec![0; 2 * slots],
                arena: vec![0; blocks * BLOCK_SIZE],
                links: vec![0; blocks],
            }
        }

        pub(crate) fn cache(&mut self, config: Config) -> TokenCache<SliceStorage<'_>> {
            TokenCache::with_slices(
                config,
                &mut self.slots[..],
                &mut self.index[..],
                &mut self.arena[..],
                &mut self.links[..],
            )
            .unwrap()
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
        lease_until: u64,
        /// Its entry in `starts`.
        start: usize,
    }

    /// The lighter model: tickets, the last token stored per key, the budget.
    struct Light<'c> {
        cache: TokenCache<SliceStorage<'c>>,
        capacity: usize,
        config: Config,
        /// The core's clock (D1) and the driver's.
        now: u64,
        driver: u64,
        live: HashMap<usize, Live>,
        last_ticket: HashMap<usize, Ticket>,
        /// The last token stored per key (cleared by `invalidate`), with its expiry.
        stored: HashMap<usize, (Vec<u8>, u64)>,
        /// Request starts per endpoint as the core counts them (`request` moves a live
        /// ticket's to the time it is written), and the times tickets were handed out.
        starts: [Vec<u64>; 2],
        issued: [Vec<u64>; 2],
        dead: Vec<Ticket>,
        serial: u64,
        out: Vec<u8>,
        reached: Reached,
    }

    impl Light<'_> {
        fn clock(&mut self) -> u64 {
            self.now = self.now.max(self.driver);
            self.lapse();
            self.now
        }

        fn lapse(&mut self) {
            let now = self.now;
            let dead = &mut self.dead;
            self.live.retain(|_, l| {
                let keep = l.lease_until > now;
                if !keep {
                    dead.push(l.ticket);
                }
                keep
            });
        }

        fn in_flight(&self, f: usize) -> Vec<u64> {
            let now = self.now;
            let live = self
                .live
                .iter()
                .filter(|(k, l)| flavour_of(**k) == f && l.lease_until > now);
            live.map(|(_, l)| l.lease_until).collect()
        }

        /// D9: `Err(retry_at)` when one more start now would exceed the budget.
        fn budget(&self, f: usize) -> Result<(), u64> {
            let live = self.in_flight(f);
            if live.len() as u32 >= self.config.in_flight {
                return Err(*live.iter().min().unwrap());
            }
            // Starts count by their times (a restamp moves one later than those after it).
            let span = self.config.rate_window_ms + self.config.rate_margin_ms;
            let mut s: Vec<u64> = self.starts[f]
                .iter()
                .copied()
                .filter(|&at| at + span > self.now)
                .collect();
            s.sort_unstable();
            let rate = self.config.rate as usize;
            if s.len() >= rate {
                return Err(s[s.len() - rate] + span);
            }
            Ok(())
        }

        /// A ticket was handed out for `k`: single flight and the budget (D5, D9).
        fn issued(&mut self, k: usize, t: Ticket, ctx: &str) {
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
            self.starts[flavour_of(k)].push(self.now);
            self.issued[flavour_of(k)].push(self.now);
            let lease_until = self.now + self.config.fetch_timeout_ms;
            self.live.insert(
                k,
                Live {
                    ticket: t,
                    lease_until,
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
            let now = self.clock();
            let ctx = format!("lookup key {k} buf {buf} at T0+{}", now.saturating_sub(T0));
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
                    expires_on,
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
                    assert_eq!(expires_on, *exp, "{ctx}: expiry");
                    assert!(
                        expires_on > now + self.config.min_lifetime_ms,
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
                Lookup::Pending { retry_at } => {
                    self.reached.pending += 1;
                    let l = live.unwrap_or_else(|| panic!("{ctx}: Pending without a live ticket"));
                    assert_eq!(retry_at, l.lease_until, "{ctx}");
                }
                Lookup::Throttled { retry_at } => {
                    self.reached.throttled += 1;
                    assert!(
                        live.is_none(),
                        "{ctx}: Throttled while a live ticket exists"
                    );
                    assert_eq!(
                        self.budget(flavour_of(c)),
                        Err(retry_at),
                        "{ctx}: budget not spent"
                    );
                }
                Lookup::Failed { retry_at, .. } => {
                    assert!(live.is_none(), "{ctx}: Failed while a live ticket exists");
                    assert!(retry_at > now, "{ctx}: Failed in the past");
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
            let ctx = format!(
                "feed key {k} {resp:?} at T0+{}",
                self.now.max(self.driver).saturating_sub(T0)
            );
            let mut req = [0u8; 2048];
            match self.cache.request(t, &endpoint(flavour_of(c)), &mut req) {
                Ok(_) => {
                    assert!(live, "{ctx}: request for a stale ticket");
                    // The start counts from when the request is written (the core's clock).
                    let l = self.live[&c];
                    let at = &mut self.starts[flavour_of(c)][l.start];
                    *at = (*at).max(self.now);
                }
                Err(e) => assert!(!live && e == CacheError::StaleTicket, "{ctx}: {e:?}"),
            }
            let now = self.clock();
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
            match (&done, sent, failure_of(resp)) {
                (Done::Token { len, expires_on }, Some(sent), _) => {
                    assert_eq!(*len, sent.token.len(), "{ctx}");
                    assert!(*expires_on > now + self.config.min_lifetime_ms, "{ctx}");
                    assert!(
                        sent.echo_own != Some(false) || !is_client_id(c),
                        "{ctx}: echo"
                    );
                    self.reached.tokens += 1;
                    self.stored
                        .insert(c, (sent.token.into_bytes(), *expires_on));
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
            let now = self.clock();
            if let Ok(t) = self.cache.poll_refresh(self.driver) {
                let mut buf = [0u8; 1100];
                let read = self.cache.ticket_key(t, &mut buf).expect("a live ticket");
                let k = index_of(&read).expect("a known key");
                let ctx = format!("poll at T0+{}", now.saturating_sub(T0));
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
            let now = self.now;
            let ctx = format!("after {op:?} at T0+{}", now.saturating_sub(T0));
            assert!(self.cache.len() <= self.capacity, "{ctx}: over capacity");
            assert!(
                self.cache.len() >= self.live.len(),
                "{ctx}: an entry with a live ticket is gone"
            );
            for (f, flavour) in FLAVOURS.iter().enumerate() {
                let live = self.in_flight(f).len() as u32;
                assert_eq!(
                    self.cache.in_flight(*flavour, now),
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
            now: 0,
            driver: T0,
            live: HashMap::new(),
            last_ticket: HashMap::new(),
            stored: HashMap::new(),
            starts: [Vec::new(), Vec::new()],
            issued: [Vec::new(), Vec::new()],
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
}
