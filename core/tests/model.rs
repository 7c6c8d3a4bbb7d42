//! Model-based tests of the token cache: random sequences of lookups,
//! responses, transport failures, cancels, invalidations, polls and clock moves (forwards,
//! far forwards and backwards) run against the real `TokenCache` and against a reference
//! model — plain `std` maps that encode DESIGN.md D4–D9 — and every answer is compared.
//!
//! * `model_matches_cache`: a cache large enough that nothing is evicted; the model predicts
//!   every answer exactly (the `Lookup` variant and all its fields, the `Done` of every
//!   completion, `StaleTicket`s, `poll_refresh`). Two things the model cannot know in advance
//!   are checked as ranges and then learnt from the cache's answers: the backoff jitter (±20 %,
//!   or exact when the case draws `jitter_percent: 0`) and the per-key refresh jitter of D8
//!   (`refresh_on` is known to lie in the D8 window; a hit that does or does not hand out a
//!   refresh ticket narrows it, and an empty window is a divergence).
//! * `concurrent_peeks_return_tokens_the_model_held`: the same runs with a second thread
//!   peeking (lock-free, as the client's callers do) the whole time; each hit must be a token
//!   the model held for that key between the peek's start and end.
//! * `eviction_keeps_live_tickets`: a cache of a few slots and a small arena, so that inserts
//!   and large tokens evict all the time; a lighter model checks that an entry with a live
//!   ticket is never evicted, that `CacheFull` comes only when every (other) entry has a live
//!   ticket, that a hit is always the last token stored for that key, and the budget.
//!
//! Default run: 1 000 + 300 + 256 cases of 1–299 operations (≈ 150 000 + 38 000 operations, plus
//! the lookups and cancels the `Churn` operations expand to; ≈ 12 s in debug on 2 cores).
//! Under Miri only `eviction_keeps_live_tickets` runs (its case count divided by 250, cases at
//! most 19 operations long): the core is safe code, and the others take minutes per case there.
//! `PROPTEST_CASES` overrides both counts. Each test prints what it reached (run with
//! `--nocapture`) and fails if an answer of the cache was never seen, so a model that stopped
//! checking cannot pass. The seed is random per run, so the weights are set for the rarest answer
//! to be reached often: in 30 runs each answer was reached at least 8 times (`410 window over:
//! terminal`, mean 14; `refresh_on learnt: not yet`, mean 20; `CacheFull` at store time, mean
//! 108), so a miss is not bad luck. Failures shrink to a short list of `Op`s (no regression file is
//! written: `failure_persistence` is off).
//!
//! Budget (D9) in the model: a ticket's start is counted when it is handed out and moved to the
//! time its request is written (`request_at`), and a start frees its place `rate_window_ms +
//! rate_margin_ms` later; ticket hand-out times never exceed `rate` per window.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use imds_cache::{
    CacheError, Config, Done, Failure, FailureKind, Feed, Lookup, OutcomeClass, Peek, SliceStorage,
    Ticket, TokenCache, Transport,
};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;

// The operations, keys and wire bytes are shared with the `cache_ops` fuzz target, whose lighter
// model (`checks::ops::cache_ops`) is also run here, on a small cache that evicts.
#[path = "../fuzz/checks.rs"]
mod checks;

use checks::ops::{
    canon, endpoint, failure_of, flavour_of, index_of, is_client_id, key, response, token_response,
    transport, Heap, Op, Resp, BUFS, FLAVOURS, KEYS, LEAPS, LIFETIMES, RETRY_AFTERS, T0,
    TOKEN_LENS,
};

// ---------------------------------------------------------------------------------------------
// Coverage: what the runs reached, so that a model that checks nothing cannot pass.

thread_local! {
    /// Per test (each runs on its own thread): how often each label was reached.
    static COVER: RefCell<BTreeMap<&'static str, u64>> = const { RefCell::new(BTreeMap::new()) };
}

fn cover(what: &'static str) {
    COVER.with(|c| *c.borrow_mut().entry(what).or_default() += 1);
}

fn lookup_label(l: &Lookup) -> &'static str {
    match l {
        Lookup::Hit {
            refresh: Some(_), ..
        } => "lookup: hit with a refresh ticket",
        Lookup::Hit { .. } => "lookup: hit",
        Lookup::Fetch(_) => "lookup: fetch",
        Lookup::Pending { .. } => "lookup: pending",
        Lookup::Throttled { .. } => "lookup: throttled",
        Lookup::Failed { .. } => "lookup: failed (backoff or negative cache)",
        Lookup::BufferTooSmall { .. } => "lookup: buffer too small",
    }
}

fn done_label(d: &Done<'_>) -> &'static str {
    match d {
        Done::Token { .. } => "done: token stored",
        Done::Retry { failure, .. } | Done::Failed { failure, .. } => failure.kind.as_str(),
        Done::NeedKeyFile { .. } => "done: key file",
    }
}

/// Prints what was reached and checks that every answer of the cache was seen.
fn coverage_report(required: &[&str]) {
    let cover = COVER.with(|c| c.borrow().clone());
    for (what, n) in cover.iter() {
        println!("{n:>9}  {what}");
    }
    if cfg!(miri) {
        return;
    }
    for what in required {
        assert!(
            cover.get(what).copied().unwrap_or(0) > 0,
            "never reached: {what}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Operations (`checks::ops::Op`), drawn with weights: lookups and responses most, clock steps
// mostly small.

fn resp_strategy() -> impl Strategy<Value = Resp> {
    prop_oneof![
        8 => (0..LIFETIMES.len() as u8, 0..TOKEN_LENS.len() as u8)
            .prop_map(|(lifetime, len)| Resp::Token { lifetime, len }),
        2 => (0..LIFETIMES.len() as u8, any::<bool>())
            .prop_map(|(lifetime, own)| Resp::Echo { lifetime, own }),
        2 => Just(Resp::Server),
        2 => Just(Resp::Gone),
        1 => (0..RETRY_AFTERS.len() as u8).prop_map(|retry_after| Resp::TooMany { retry_after }),
        1 => Just(Resp::BadRequest),
        1 => Just(Resp::NotJson),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let k = 0..KEYS as u8;
    prop_oneof![
        30 => (k.clone(), 0..BUFS.len() as u8).prop_map(|(k, buf)| Op::Lookup { k, buf }),
        18 => (k.clone(), resp_strategy(), any::<bool>())
            .prop_map(|(k, resp, split)| Op::Feed { k, resp, split }),
        2 => k.clone().prop_map(|k| Op::Eof { k }),
        4 => (k.clone(), 0..3u8).prop_map(|(k, transport)| Op::Fail { k, transport }),
        6 => k.clone().prop_map(|k| Op::Cancel { k }),
        3 => k.prop_map(|k| Op::Invalidate { k }),
        3 => Just(Op::Poll),
        6 => (0..200u64).prop_map(|ms| Op::Advance { ms }),
        4 => (200..2_000u64).prop_map(|ms| Op::Advance { ms }),
        4 => prop::sample::select(LEAPS.to_vec()).prop_map(|ms| Op::Advance { ms }),
        // A step of a few tenths of a token lifetime, so lookups land inside D8's refresh
        // window (a tenth of the lifetime wide) and the model learns from both sides of it.
        2 => (prop::sample::select(LIFETIMES.to_vec()), 50..500u64)
            .prop_map(|(s, permille)| Op::Advance { ms: s * permille }),
        1 => (1..120_000u64).prop_map(|ms| Op::Back { ms }),
        2 => any::<u16>().prop_map(|pick| Op::Stale { pick }),
        2 => (0..KEYS as u8, 1..25u8).prop_map(|(k, n)| Op::Churn { k, n }),
    ]
}

// ---------------------------------------------------------------------------------------------
// The reference model (D4–D9)

/// The request budget of one endpoint (D9).
#[derive(Debug, Default)]
struct ModelBudget {
    /// Request starts in the order they were counted; `request_at` moves a live ticket's start to
    /// the time the request is written.
    starts: Vec<u64>,
    /// The times tickets were handed out (for the sliding-window invariant).
    issued: Vec<u64>,
    ever_ok: bool,
}

#[derive(Clone, Debug)]
struct Tok {
    bytes: Vec<u8>,
    expires_on_ms: u64,
    /// `refresh_on` lies in `refresh_lo..=refresh_hi` (D8's jitter is not known in advance).
    refresh_lo: u64,
    refresh_hi: u64,
}

#[derive(Clone, Copy, Debug)]
struct Live {
    ticket: Ticket,
    lease_until_ms: u64,
    issued_at_ms: u64,
    /// Its entry in `ModelBudget::starts`.
    start: usize,
}

#[derive(Clone, Debug, Default)]
struct Entry {
    token: Option<Tok>,
    ticket: Option<Live>,
    failure: Option<Failure>,
    retry_at_ms: u64,
    attempts: u32,
    gone_since_ms: u64,
}

#[derive(Debug, PartialEq, Eq)]
enum Tri {
    Yes,
    No,
    Maybe,
}

const FETCH_TIMEOUT: u64 = 30_000;
const MIN_LIFETIME: u64 = 60_000;
const MARGIN: u64 = 300_000;

struct Model {
    config: Config,
    /// The core's clock: the largest `now_ms` passed so far (D1).
    now_ms: u64,
    entries: HashMap<usize, Entry>,
    budgets: [ModelBudget; 2],
    /// The last ticket handed out per (canonical) key, live or not.
    last_ticket: HashMap<usize, Ticket>,
    /// Tickets that ended (finished, cancelled, lapsed, dropped with their entry).
    dead: Vec<Ticket>,
    serial: u64,
    ops: u64,
}

fn usable(tok: &Option<Tok>, now_ms: u64) -> Option<&Tok> {
    tok.as_ref()
        .filter(|t| t.expires_on_ms > now_ms.saturating_add(MIN_LIFETIME))
}

impl Model {
    fn new(config: Config) -> Self {
        Self {
            config,
            now_ms: 0,
            entries: HashMap::new(),
            budgets: Default::default(),
            last_ticket: HashMap::new(),
            dead: Vec::new(),
            serial: 0,
            ops: 0,
        }
    }

    fn clock(&mut self, now_ms: u64) -> u64 {
        self.now_ms = self.now_ms.max(now_ms);
        self.now_ms
    }

    /// Ends lapsed leases (their tickets become stale).
    fn lapse_all(&mut self) {
        let now_ms = self.now_ms;
        for e in self.entries.values_mut() {
            if let Some(l) = e.ticket {
                if l.lease_until_ms <= now_ms {
                    self.dead.push(l.ticket);
                    e.ticket = None;
                }
            }
        }
    }

    fn live_in(&self, flavour: usize) -> Vec<u64> {
        self.entries
            .iter()
            .filter(|(k, _)| flavour_of(**k) == flavour)
            .filter_map(|(_, e)| e.ticket.map(|l| l.lease_until_ms))
            .filter(|&l| l > self.now_ms)
            .collect()
    }

    /// D9: `Err(retry_at)` when one more request start now would exceed the budget.
    fn budget(&self, flavour: usize) -> Result<(), u64> {
        let live = self.live_in(flavour);
        if live.len() as u32 >= self.config.in_flight {
            return Err(*live.iter().min().unwrap());
        }
        checks::ops::rate_check(&self.config, &self.budgets[flavour].starts, self.now_ms)
    }

    fn issue(&mut self, k: usize, ticket: Ticket) {
        let now_ms = self.now_ms;
        let budget = &mut self.budgets[flavour_of(k)];
        let start = budget.starts.len();
        budget.starts.push(now_ms);
        budget.issued.push(now_ms);
        if let Some(old) = self.last_ticket.insert(k, ticket) {
            self.dead.push(old);
        }
        let e = self.entries.entry(k).or_default();
        assert!(
            e.ticket.is_none(),
            "single flight: a second ticket for key {k}"
        );
        e.ticket = Some(Live {
            ticket,
            lease_until_ms: now_ms + FETCH_TIMEOUT,
            issued_at_ms: now_ms,
            start,
        });
    }

    fn live(&self, k: usize, ticket: Ticket) -> bool {
        self.entries
            .get(&k)
            .and_then(|e| e.ticket)
            .is_some_and(|l| l.ticket == ticket && l.lease_until_ms > self.now_ms)
    }

    fn release(&mut self, k: usize) {
        let e = self.entries.get_mut(&k).unwrap();
        let l = e.ticket.take().unwrap();
        self.dead.push(l.ticket);
    }

    fn refresh_due(tok: &Tok, now_ms: u64) -> Tri {
        if now_ms >= tok.refresh_hi {
            Tri::Yes
        } else if now_ms < tok.refresh_lo {
            Tri::No
        } else {
            Tri::Maybe
        }
    }

    /// Learns from the cache that `refresh_on <= now` (`due`) or `> now`.
    fn learn_refresh(&mut self, k: usize, now_ms: u64, due: bool) {
        let tok = self
            .entries
            .get_mut(&k)
            .and_then(|e| e.token.as_mut())
            .unwrap();
        cover(if due {
            "refresh_on learnt: due"
        } else {
            "refresh_on learnt: not yet"
        });
        if due {
            tok.refresh_hi = tok.refresh_hi.min(now_ms);
        } else {
            tok.refresh_lo = tok.refresh_lo.max(now_ms + 1);
        }
        assert!(
            tok.refresh_lo <= tok.refresh_hi,
            "refresh_on of key {k} outside its D8 window: {tok:?}"
        );
    }

    /// D8: the window `refresh_on` must lie in.
    fn refresh_window(&self, issued_at_ms: u64, expires_on_ms: u64, keys: u64) -> (u64, u64) {
        let lifetime = expires_on_ms.saturating_sub(issued_at_ms);
        let latest = expires_on_ms.saturating_sub(MARGIN);
        let base = if lifetime >= 7_200_000 {
            issued_at_ms + lifetime / 2
        } else {
            latest
        };
        let b = base.min(latest);
        let by_rate = keys * self.config.rate_window_ms / u64::from(self.config.rate);
        let spread = (lifetime / 10).max(by_rate).max(1);
        let hi = b.max(issued_at_ms);
        let lo = b.saturating_sub(spread - 1).max(issued_at_ms);
        (lo, hi)
    }

    /// D7 (and D8's "a failed eager refresh is tried again no sooner than 30 s later"): the
    /// class and the range of `retry_at_ms` for `failure` of key `k` at `now_ms`.
    fn dispose(
        &self,
        k: usize,
        failure: Failure,
        retry_after: Option<u32>,
    ) -> (OutcomeClass, u64, u64) {
        let c = &self.config;
        let now_ms = self.now_ms;
        let e = &self.entries[&k];
        let mut class = failure.kind.class();
        let (mut lo, mut hi) = match class {
            OutcomeClass::Retry if failure.kind == FailureKind::Gone => {
                let since = if e.gone_since_ms == 0 {
                    now_ms
                } else {
                    e.gone_since_ms
                };
                if now_ms - since >= c.gone_window_ms {
                    class = OutcomeClass::Terminal;
                    (c.negative_ttl_ms, c.negative_ttl_ms)
                } else {
                    (c.gone_interval_ms, c.gone_interval_ms)
                }
            }
            OutcomeClass::Retry => match retry_after {
                Some(s) => {
                    let d = (u64::from(s) * 1000).clamp(c.backoff_initial_ms, c.retry_after_max_ms);
                    (d, d)
                }
                None => {
                    let doublings = e.attempts.min(32);
                    let base = c
                        .backoff_initial_ms
                        .saturating_mul(1u64 << doublings)
                        .min(c.backoff_max_ms);
                    let span = base * u64::from(c.jitter_percent) / 100;
                    (base - span, base + span)
                }
            },
            OutcomeClass::Terminal | OutcomeClass::Unavailable => {
                (c.negative_ttl_ms, c.negative_ttl_ms)
            }
        };
        if usable(&e.token, now_ms).is_some() {
            lo = lo.max(c.eager_retry_ms);
            hi = hi.max(c.eager_retry_ms);
        }
        (class, now_ms + lo, now_ms + hi)
    }

    /// Applies a failure to the model and checks the cache's `Done` for it.
    fn settle(
        &mut self,
        k: usize,
        failure: Failure,
        retry_after: Option<u32>,
        done: &Done<'_>,
        ctx: &str,
    ) {
        let (class, lo, hi) = self.dispose(k, failure, retry_after);
        cover(done_label(done));
        if usable(&self.entries[&k].token, self.now_ms).is_some() {
            cover("failed refresh: token kept");
        }
        if failure.kind == FailureKind::Gone && class == OutcomeClass::Terminal {
            cover("410 window over: terminal");
        }
        let (got_failure, retry_at_ms) = match (class, done) {
            (
                OutcomeClass::Retry,
                Done::Retry {
                    failure,
                    retry_at_ms,
                    ..
                },
            ) => (*failure, *retry_at_ms),
            (
                OutcomeClass::Terminal | OutcomeClass::Unavailable,
                Done::Failed {
                    failure,
                    retry_at_ms,
                    ..
                },
            ) => (*failure, *retry_at_ms),
            _ => panic!("{ctx}: expected {class:?} for {failure:?}, got {done:?}"),
        };
        assert_eq!(got_failure, failure, "{ctx}: failure");
        assert!(
            (lo..=hi).contains(&retry_at_ms),
            "{ctx}: retry_at {} outside now+{}..=now+{} for {failure:?}",
            retry_at_ms as i64 - self.now_ms as i64,
            lo - self.now_ms,
            hi - self.now_ms
        );
        let now_ms = self.now_ms;
        let e = self.entries.get_mut(&k).unwrap();
        e.attempts = (e.attempts + 1).min(255);
        e.failure = Some(failure);
        e.retry_at_ms = retry_at_ms;
        if failure.kind == FailureKind::Gone {
            if e.gone_since_ms == 0 {
                e.gone_since_ms = now_ms;
            }
        } else {
            e.gone_since_ms = 0;
        }
        self.release(k);
    }
}

// ---------------------------------------------------------------------------------------------
// The run

struct Run<'c> {
    cache: TokenCache<SliceStorage<'c>>,
    model: Model,
    /// The driver's clock (may go backwards).
    now_ms: u64,
    out: Vec<u8>,
}

impl Run<'_> {
    fn ctx(&self, op: &Op) -> String {
        format!(
            "op #{} {op:?} at T0+{}",
            self.model.ops,
            self.model.now_ms.saturating_sub(T0)
        )
    }

    fn step(&mut self, op: Op) {
        self.model.ops += 1;
        cover("operations");
        match op {
            Op::Lookup { k, buf } => self.lookup(k as usize, BUFS[buf as usize]),
            Op::Feed { k, resp, split } => self.feed(k as usize, resp, split),
            Op::Eof { k } => self.eof(k as usize),
            Op::Fail { k, transport: t } => self.fail(k as usize, transport(t)),
            Op::Cancel { k } => self.cancel(k as usize),
            Op::Invalidate { k } => self.invalidate(k as usize),
            Op::Poll => self.poll(),
            Op::Advance { ms } => self.now_ms += ms,
            Op::Back { ms } => {
                cover("clock moved back");
                self.now_ms = self.now_ms.saturating_sub(ms).max(T0)
            }
            Op::Stale { pick } => self.stale(pick as usize),
            Op::Churn { k, n } => {
                for _ in 0..n {
                    self.lookup(k as usize, 4096);
                    self.cancel(k as usize);
                }
            }
        }
        self.invariants(&op);
    }

    fn invariants(&mut self, op: &Op) {
        let ctx = self.ctx(op);
        assert_eq!(self.cache.len(), self.model.entries.len(), "{ctx}: entries");
        assert_eq!(self.cache.stats().evictions, 0, "{ctx}: no eviction here");
        for (f, flavour) in FLAVOURS.iter().enumerate() {
            let live = self.model.live_in(f).len() as u32;
            assert_eq!(
                self.cache.in_flight(*flavour, self.model.now_ms),
                live,
                "{ctx}: in flight"
            );
            assert!(live <= self.model.config.in_flight, "{ctx}: in-flight cap");
            // D9: never more than `rate` starts in any window.
            let s = &self.model.budgets[f].issued;
            let r = self.model.config.rate as usize;
            if s.len() > r {
                let w = &s[s.len() - r - 1..];
                assert!(
                    w[r] - w[0] >= self.model.config.rate_window_ms,
                    "{ctx}: rate"
                );
            }
        }
    }

    /// D15, single-threaded: a peek agrees with the lookup that follows it — a hit with the
    /// model's token exactly when that lookup hits (same bytes, expiry, buffer rule), a miss
    /// otherwise; `refresh_due` only when a refresh may be handed out.
    fn peek(&mut self, k: usize, buf: usize, now_ms: u64, ctx: &str) {
        let c = canon(k);
        let got = self.cache.peek(&key(k), now_ms, &mut self.out[..buf]);
        cover(match got {
            Peek::Hit {
                refresh_due: true, ..
            } => "peek: hit, refresh due",
            Peek::Hit { .. } => "peek: hit",
            Peek::BufferTooSmall { .. } => "peek: buffer too small",
            Peek::Miss => "peek: miss",
        });
        let held = self
            .model
            .entries
            .get(&c)
            .and_then(|e| Some((e, usable(&e.token, now_ms)?)));
        match (held, got) {
            (None, Peek::Miss) => {}
            (Some((_, tok)), Peek::BufferTooSmall { needed }) if tok.bytes.len() > buf => {
                assert_eq!(needed, tok.bytes.len(), "{ctx}: peek needed")
            }
            (
                Some((e, tok)),
                Peek::Hit {
                    len,
                    expires_on_ms,
                    refresh_due,
                },
            ) if tok.bytes.len() <= buf => {
                assert_eq!(&self.out[..len], &tok.bytes[..], "{ctx}: peek bytes");
                assert_eq!(expires_on_ms, tok.expires_on_ms, "{ctx}: peek expiry");
                let may = e.ticket.is_none()
                    && now_ms >= e.retry_at_ms
                    && Model::refresh_due(tok, now_ms) != Tri::No;
                assert!(
                    !refresh_due || may,
                    "{ctx}: peek refresh_due without a due refresh"
                );
            }
            (held, got) => panic!(
                "{ctx}: peek {got:?}, model holds {:?}",
                held.map(|(_, t)| t.bytes.len())
            ),
        }
    }

    fn lookup(&mut self, k: usize, buf: usize) {
        let c = canon(k);
        let now_ms = self.model.clock(self.now_ms);
        self.model.lapse_all();
        let ctx = format!("lookup key {k} buf {buf} at T0+{}", now_ms - T0);
        self.peek(k, buf, now_ms, &ctx);
        let got = self
            .cache
            .lookup(&key(k), self.now_ms, &mut self.out[..buf]);
        let got = got.unwrap_or_else(|e| panic!("{ctx}: {e:?}"));
        cover(lookup_label(&got));
        if matches!(got, Lookup::Throttled { .. }) {
            let f = flavour_of(c);
            cover(
                if self.model.live_in(f).len() as u32 >= self.model.config.in_flight {
                    "throttled: in-flight cap"
                } else {
                    "throttled: rate"
                },
            );
        }
        let m = &self.model;
        let Some(e) = m.entries.get(&c) else {
            match (m.budget(flavour_of(c)), got) {
                (Err(at), Lookup::Throttled { retry_at_ms }) => {
                    assert_eq!(retry_at_ms, at, "{ctx}")
                }
                (Ok(()), Lookup::Fetch(t)) => {
                    self.model.entries.insert(c, Entry::default());
                    self.model.issue(c, t);
                }
                (want, got) => panic!("{ctx}: new key, budget {want:?}, got {got:?}"),
            }
            return;
        };
        if let Some(tok) = usable(&e.token, now_ms) {
            if tok.bytes.len() > buf {
                assert_eq!(
                    got,
                    Lookup::BufferTooSmall {
                        needed: tok.bytes.len()
                    },
                    "{ctx}"
                );
                return;
            }
            let Lookup::Hit {
                len,
                expires_on_ms,
                refresh,
            } = got
            else {
                panic!("{ctx}: a valid token is held, got {got:?}");
            };
            assert_eq!(&self.out[..len], &tok.bytes[..], "{ctx}: token bytes");
            assert_eq!(expires_on_ms, tok.expires_on_ms, "{ctx}: expiry");
            let due = Model::refresh_due(tok, now_ms);
            let others = e.ticket.is_none() && now_ms >= e.retry_at_ms;
            let budget = m.budget(flavour_of(c));
            match (others, &due, budget.is_ok(), refresh) {
                (true, Tri::Yes, true, Some(t)) => self.model.issue(c, t),
                (true, Tri::Maybe, true, Some(t)) => {
                    self.model.learn_refresh(c, now_ms, true);
                    self.model.issue(c, t);
                }
                (true, Tri::Maybe, true, None) => self.model.learn_refresh(c, now_ms, false),
                (_, _, _, None) if !(others && due == Tri::Yes && budget.is_ok()) => {}
                _ => panic!(
                    "{ctx}: refresh {refresh:?} but due {due:?}, free {others}, budget {budget:?}"
                ),
            }
            return;
        }
        if let Some(l) = e.ticket {
            assert_eq!(
                got,
                Lookup::Pending {
                    retry_at_ms: l.lease_until_ms
                },
                "{ctx}"
            );
            return;
        }
        if now_ms < e.retry_at_ms {
            if let Some(error) = e.failure {
                assert_eq!(
                    got,
                    Lookup::Failed {
                        error,
                        retry_at_ms: e.retry_at_ms
                    },
                    "{ctx}"
                );
                return;
            }
        }
        match (m.budget(flavour_of(c)), got) {
            (Err(at), Lookup::Throttled { retry_at_ms }) => assert_eq!(retry_at_ms, at, "{ctx}"),
            (Ok(()), Lookup::Fetch(t)) => self.model.issue(c, t),
            (want, got) => panic!("{ctx}: fetch expected, budget {want:?}, got {got:?}"),
        }
    }

    /// The last ticket handed out for `k`, and whether the model holds it live.
    /// With `now_ms`, the core's clock moves to it first (the call about to be made passes it).
    fn ticket(&mut self, k: usize, now_ms: Option<u64>) -> Option<(Ticket, bool)> {
        let t = *self.model.last_ticket.get(&canon(k))?;
        if let Some(now_ms) = now_ms {
            self.model.clock(now_ms);
        }
        self.model.lapse_all();
        Some((t, self.model.live(canon(k), t)))
    }

    fn feed(&mut self, k: usize, resp: Resp, split: bool) {
        let c = canon(k);
        // The request is written at the clock the core last saw, not the driver's.
        let Some((t, live)) = self.ticket(k, None) else {
            return;
        };
        let ctx = format!(
            "feed key {k} {resp:?} at T0+{}",
            self.now_ms.max(self.model.now_ms) - T0
        );
        let mut req = [0u8; 2048];
        match self
            .cache
            .request_at(t, &endpoint(flavour_of(c)), self.model.now_ms, &mut req)
        {
            Ok(d) => {
                assert!(live, "{ctx}: request written for a stale ticket");
                assert!(req[..d.len].windows(4).any(|w| w == b"\r\n\r\n"), "{ctx}");
                // The start counts from now on (`request_at` the core's clock).
                let l = self.model.entries[&c].ticket.unwrap();
                let at = &mut self.model.budgets[flavour_of(c)].starts[l.start];
                *at = (*at).max(self.model.now_ms);
            }
            Err(e) => {
                assert!(!live, "{ctx}: request refused: {e:?}");
                assert_eq!(e, CacheError::StaleTicket, "{ctx}");
            }
        }
        let now_ms = self.model.clock(self.now_ms);
        self.model.lapse_all();
        let live = self.model.live(c, t);
        let issued_at_ms = self
            .model
            .entries
            .get(&c)
            .and_then(|e| e.ticket)
            .map(|l| l.issued_at_ms);
        self.model.serial += 1;
        let serial = self.model.serial;
        let (mut bytes, sent) = response(resp, k, serial);
        if split {
            let half = bytes.len() / 2;
            let mut part = bytes[..half].to_vec();
            match self.cache.feed(t, &mut part, self.now_ms) {
                Ok(Feed::NeedMore) => assert!(live, "{ctx}: half fed to a stale ticket"),
                Err(CacheError::StaleTicket) => assert!(!live, "{ctx}: live ticket refused"),
                other => panic!("{ctx}: half a response gave {other:?}"),
            }
        }
        let got = self.cache.feed(t, &mut bytes, self.now_ms);
        if !live {
            cover("feed: stale ticket refused");
            assert!(
                matches!(got, Err(CacheError::StaleTicket)),
                "{ctx}: stale ticket, got {got:?}"
            );
            return;
        }
        let done = match got {
            Ok(Feed::Done(d)) => d,
            other => panic!("{ctx}: complete response gave {other:?}"),
        };
        let issued_at_ms = issued_at_ms.unwrap();
        let status = |kind, status| Failure { kind, status };
        let ever_ok = self.model.budgets[flavour_of(c)].ever_ok;
        if let Some((failure, retry_after)) = failure_of(resp, ever_ok) {
            if let Done::Failed { detail, .. } = &done {
                if failure.kind == FailureKind::BadRequest {
                    assert_eq!(detail.description.as_str(), "Identity not found", "{ctx}");
                }
            }
            self.model.settle(c, failure, retry_after, &done, &ctx);
            return;
        }
        let sent = sent.unwrap();
        let expires_on_ms = (issued_at_ms / 1000 + sent.expires_in) * 1000;
        if sent.echo_own == Some(false) && is_client_id(c) {
            self.model.settle(
                c,
                status(FailureKind::ClientIdMismatch, 200),
                None,
                &done,
                &ctx,
            );
        } else if expires_on_ms <= now_ms + MIN_LIFETIME {
            self.model.settle(
                c,
                status(FailureKind::ExpiredOnArrival, 200),
                None,
                &done,
                &ctx,
            );
        } else {
            assert!(
                matches!(done, Done::Token { len, expires_on_ms: e } if len == sent.token.len() && e == expires_on_ms),
                "{ctx}: expected a token expiring at T0+{}, got {done:?}",
                expires_on_ms - T0
            );
            let keys = self.model.entries.len() as u64;
            let (refresh_lo, refresh_hi) =
                self.model.refresh_window(issued_at_ms, expires_on_ms, keys);
            let e = self.model.entries.get_mut(&c).unwrap();
            let bytes = sent.token.into_bytes();
            *e = Entry {
                token: Some(Tok {
                    bytes,
                    expires_on_ms,
                    refresh_lo,
                    refresh_hi,
                }),
                ticket: e.ticket,
                ..Entry::default()
            };
            self.model.release(c);
            self.model.budgets[flavour_of(c)].ever_ok = true;
            cover(done_label(&done));
        }
    }

    fn eof(&mut self, k: usize) {
        let c = canon(k);
        let Some((t, _)) = self.ticket(k, Some(self.now_ms)) else {
            return;
        };
        let live = self.model.live(c, t);
        let ctx = format!("eof key {k} at T0+{}", self.model.now_ms.saturating_sub(T0));
        let mut cut = token_response("cut-short", 3600, None);
        cut.truncate(cut.len() - 5);
        let got = self.cache.eof(t, &mut cut, self.now_ms);
        match got {
            Ok(done) if live => {
                self.model
                    .settle(c, Failure::new(FailureKind::Truncated), None, &done, &ctx)
            }
            Err(CacheError::StaleTicket) if !live => {}
            other => panic!("{ctx}: live {live}, got {other:?}"),
        }
    }

    fn fail(&mut self, k: usize, transport: Transport) {
        let c = canon(k);
        let Some((t, _)) = self.ticket(k, Some(self.now_ms)) else {
            return;
        };
        let live = self.model.live(c, t);
        let ctx = format!(
            "fail key {k} {transport:?} at T0+{}",
            self.model.now_ms.saturating_sub(T0)
        );
        let got = self.cache.fail(t, transport, self.now_ms);
        let kind = match transport {
            Transport::Refused if !self.model.budgets[flavour_of(c)].ever_ok => {
                FailureKind::Unavailable
            }
            Transport::ConnectTimeout if !self.model.budgets[flavour_of(c)].ever_ok => {
                FailureKind::UnavailableTimeout
            }
            Transport::ConnectTimeout => FailureKind::ConnectTimeout,
            _ => FailureKind::ConnectionLost,
        };
        match got {
            Ok(done) if live => self.model.settle(c, Failure::new(kind), None, &done, &ctx),
            Err(CacheError::StaleTicket) if !live => {}
            other => panic!("{ctx}: live {live}, got {other:?}"),
        }
    }

    fn cancel(&mut self, k: usize) {
        let c = canon(k);
        // `cancel` takes no time: it uses the core's clock.
        let Some((t, live)) = self.ticket(k, None) else {
            return;
        };
        let got = self.cache.cancel(t);
        match got {
            Ok(()) if live => {
                cover("cancel: ticket given back");
                self.model.release(c)
            }
            Err(CacheError::StaleTicket) if !live => {}
            other => panic!("cancel key {k}: live {live}, got {other:?}"),
        }
    }

    fn invalidate(&mut self, k: usize) {
        let c = canon(k);
        self.model.clock(self.now_ms);
        self.model.lapse_all();
        let got = self.cache.invalidate(&key(k), self.now_ms);
        let want = match self.model.entries.get_mut(&c) {
            None => false,
            Some(e) if e.ticket.is_some() => e.token.take().is_some(),
            Some(_) => self.model.entries.remove(&c).unwrap().token.is_some(),
        };
        assert_eq!(got, want, "invalidate key {k}: had a token");
        if got {
            cover("invalidate: token dropped");
        }
    }

    fn stale(&mut self, pick: usize) {
        self.model.lapse_all();
        if self.model.dead.is_empty() {
            return;
        }
        self.model.clock(self.now_ms);
        self.model.lapse_all();
        let t = self.model.dead[pick % self.model.dead.len()];
        cover("old ticket refused (feed, cancel, fail)");
        let mut bytes = token_response("late", 86_400, None);
        let got = self.cache.feed(t, &mut bytes, self.now_ms);
        assert!(
            matches!(got, Err(CacheError::StaleTicket)),
            "stale {t:?} fed: {got:?}"
        );
        assert_eq!(
            self.cache.cancel(t),
            Err(CacheError::StaleTicket),
            "stale {t:?} cancelled"
        );
        assert_eq!(
            self.cache
                .fail(t, Transport::Reset, self.now_ms)
                .unwrap_err(),
            CacheError::StaleTicket
        );
    }

    /// `poll_refresh`: hands out one due refresh, or says when to call again.
    fn poll(&mut self) {
        let now_ms = self.model.clock(self.now_ms);
        self.model.lapse_all();
        let got = self.cache.poll_refresh(self.now_ms);
        let ctx = format!("poll at T0+{}", now_ms - T0);
        // Per key: is it due (usable, no ticket, past refresh_on and retry_at)?
        let mut due: Vec<(usize, Tri)> = Vec::new();
        for (&k, e) in &self.model.entries {
            let Some(tok) = usable(&e.token, now_ms) else {
                continue;
            };
            if e.ticket.is_some() || now_ms < e.retry_at_ms {
                continue;
            }
            due.push((k, Model::refresh_due(tok, now_ms)));
        }
        match got {
            Ok(t) => {
                let mut buf = [0u8; 1100];
                let kk = self.cache.ticket_key(t, &mut buf).expect("a live ticket");
                let k = index_of(&kk)
                    .unwrap_or_else(|| panic!("{ctx}: ticket for an unknown key {kk:?}"));
                let tri = due.iter().find(|(d, _)| *d == k).map(|(_, t)| t);
                assert!(
                    matches!(tri, Some(Tri::Yes | Tri::Maybe)),
                    "{ctx}: refresh of key {k} which is not due ({tri:?})"
                );
                assert!(
                    self.model.budget(flavour_of(k)).is_ok(),
                    "{ctx}: over budget"
                );
                cover("poll: refresh ticket");
                if tri == Some(&Tri::Maybe) {
                    self.model.learn_refresh(k, now_ms, true);
                }
                self.model.issue(k, t);
            }
            Err(at) => {
                // Throttled: some due key's endpoint has no budget left.
                let throttled = at.is_some_and(|at| {
                    due.iter().any(|(k, tri)| {
                        *tri != Tri::No && self.model.budget(flavour_of(*k)) == Err(at)
                    })
                });
                if throttled {
                    cover("poll: throttled");
                    return;
                }
                for (k, tri) in &due {
                    assert_ne!(*tri, Tri::Yes, "{ctx}: key {k} is due, got {at:?}");
                    if *tri == Tri::Maybe {
                        self.model.learn_refresh(*k, now_ms, false);
                    }
                }
                // Nothing due: the next deadline (a lease end, or a usable token's
                // max(refresh_on, retry_at)).
                let (mut lo, mut hi) = (u64::MAX, u64::MAX);
                for e in self.model.entries.values() {
                    let (l, h) = if let Some(t) = e.ticket {
                        (t.lease_until_ms, t.lease_until_ms)
                    } else if let Some(tok) = usable(&e.token, now_ms) {
                        (
                            tok.refresh_lo.max(e.retry_at_ms),
                            tok.refresh_hi.max(e.retry_at_ms),
                        )
                    } else {
                        continue;
                    };
                    lo = lo.min(l);
                    hi = hi.min(h);
                }
                cover(if at.is_some() {
                    "poll: next deadline"
                } else {
                    "poll: nothing scheduled"
                });
                match at {
                    None => assert_eq!(lo, u64::MAX, "{ctx}: a deadline exists"),
                    Some(at) => assert!(
                        (lo..=hi).contains(&at),
                        "{ctx}: next deadline T0+{} outside T0+{}..=T0+{}",
                        at - T0,
                        lo.wrapping_sub(T0),
                        hi.wrapping_sub(T0)
                    ),
                }
            }
        }
    }
}

fn run_model(config: Config, ops: &[Op]) {
    // 24 slots for 10 keys; 10 keys × 8 blocks of tokens: nothing is ever evicted.
    let mut heap = Heap::new(24, 256);
    let mut run = Run {
        cache: heap.cache(config.clone()),
        model: Model::new(config),
        now_ms: T0,
        out: vec![0u8; 4096],
    };
    for op in ops {
        run.step(*op);
    }
}

/// A token the model held for a key from operation `from` until `until` (exclusive; `None`:
/// still held at the end).
struct Held {
    from: usize,
    until: Option<usize>,
    bytes: Vec<u8>,
    expires_on_ms: u64,
}

/// A hit of the concurrent reader: the operations completed when it started and when it
/// ended, so its linearisation point lies between.
struct SeenHit {
    k: usize,
    started_after: usize,
    ended_after: usize,
    bytes: Vec<u8>,
    expires_on_ms: u64,
}

/// [`run_model`] with a second thread peeking at the same storage the whole time, as the
/// client's callers do while the writer works. Every hit it gets must be a token the model
/// held for that key at some point between the peek's start and end (its linearisation
/// point): never a torn token, another key's, or one the model never stored.
fn run_model_with_reader(config: Config, ops: &[Op]) {
    let mut heap = Heap::new(24, 256);
    let mut run = Run {
        cache: heap.cache(config.clone()),
        model: Model::new(config),
        now_ms: T0,
        out: vec![0u8; 4096],
    };
    let reader = run.cache.reader();
    let done = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let mut history: Vec<Vec<Held>> = (0..KEYS).map(|_| Vec::new()).collect();
    let seen = std::thread::scope(|s| {
        let peeker = s.spawn(|| {
            let mut out = vec![0u8; 4096];
            let mut seen = Vec::new();
            let mut k = 0;
            // Bounded, so a writer that stalls cannot make the reader's record grow forever.
            while !stop.load(Ordering::Acquire) && seen.len() < 100_000 {
                k = (k + 1) % KEYS;
                let started_after = done.load(Ordering::Acquire);
                // Far enough in the future to be "a hit" only for the token's content check;
                // usability against the run's clock is the single-threaded peek's check.
                if let Peek::Hit {
                    len, expires_on_ms, ..
                } = reader.peek(&key(k), T0, &mut out)
                {
                    seen.push(SeenHit {
                        k: canon(k),
                        started_after,
                        ended_after: done.load(Ordering::Acquire),
                        bytes: out[..len].to_vec(),
                        expires_on_ms,
                    });
                }
            }
            seen
        });
        for (i, op) in ops.iter().enumerate() {
            run.step(*op);
            for (c, held) in history.iter_mut().enumerate() {
                let now_ms = run.model.entries.get(&c).and_then(|e| e.token.as_ref());
                let last = held.last_mut().filter(|h| h.until.is_none());
                let same = match (&last, now_ms) {
                    (Some(h), Some(t)) => h.bytes == t.bytes && h.expires_on_ms == t.expires_on_ms,
                    (None, None) => true,
                    _ => false,
                };
                if !same {
                    if let Some(h) = last {
                        h.until = Some(i + 1);
                    }
                    if let Some(t) = now_ms {
                        held.push(Held {
                            from: i + 1,
                            until: None,
                            bytes: t.bytes.clone(),
                            expires_on_ms: t.expires_on_ms,
                        });
                    }
                }
            }
            done.store(i + 1, Ordering::Release);
        }
        stop.store(true, Ordering::Release);
        peeker.join().expect("the reader thread")
    });
    for hit in &seen {
        cover("concurrent peek: hit");
        let ok = history[hit.k].iter().any(|h| {
            // Held at some moment of [started_after, ended_after + 1): the op after
            // `ended_after` may have been under way when the peek validated.
            h.from <= hit.ended_after + 1
                && h.until.map_or(true, |u| u > hit.started_after)
                && h.bytes == hit.bytes
                && h.expires_on_ms == hit.expires_on_ms
        });
        assert!(
            ok,
            "key {}: a concurrent peek between ops {} and {} returned {} bytes (expiry {}) the \
             model never held then",
            hit.k,
            hit.started_after,
            hit.ended_after,
            hit.bytes.len(),
            hit.expires_on_ms
        );
    }
}

fn cases(default: u32) -> u32 {
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    if cfg!(miri) {
        (n / 250).max(1)
    } else {
        n
    }
}

/// Operations per case: 1–299 (Miri: 1–19, an operation costs ≈ 0.5 s there).
fn max_ops() -> usize {
    if cfg!(miri) {
        20
    } else {
        300
    }
}

fn config_strategy() -> impl Strategy<Value = Config> {
    (any::<bool>(), any::<u64>()).prop_map(|(exact, seed)| Config {
        jitter_percent: if exact { 0 } else { 20 },
        seed,
        ..Config::DEFAULT
    })
}

thread_local! {
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `test` on `strategy`. Panics inside the cases are not printed (proptest reports the
/// failure with its shrunk input; otherwise every shrinking step would print its panic).
fn run<S: Strategy>(default_cases: u32, strategy: S, test: impl Fn(S::Value)) {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(|q| q.get()) {
                default(info);
            }
        }));
    });
    QUIET.with(|q| q.set(true));
    let result = runner(default_cases).run(&strategy, |v| {
        test(v);
        Ok(())
    });
    QUIET.with(|q| q.set(false));
    if let Err(e) = result {
        panic!("{e}");
    }
}

fn runner(default_cases: u32) -> TestRunner {
    TestRunner::new(ProptestConfig {
        cases: cases(default_cases),
        failure_persistence: None,
        ..ProptestConfig::default()
    })
}

/// Every answer the cache can give in the model run.
const MODEL_ANSWERS: &[&str] = &[
    "lookup: hit",
    "lookup: hit with a refresh ticket",
    "lookup: fetch",
    "lookup: pending",
    "lookup: throttled",
    "throttled: in-flight cap",
    "throttled: rate",
    "lookup: failed (backoff or negative cache)",
    "lookup: buffer too small",
    "done: token stored",
    FailureKind::ServerError.as_str(),
    FailureKind::Gone.as_str(),
    "410 window over: terminal",
    FailureKind::TooManyRequests.as_str(),
    FailureKind::BadRequest.as_str(),
    FailureKind::NotJson.as_str(),
    FailureKind::UnavailableNotJson.as_str(),
    FailureKind::ClientIdMismatch.as_str(),
    FailureKind::ExpiredOnArrival.as_str(),
    FailureKind::Truncated.as_str(),
    FailureKind::Unavailable.as_str(),
    FailureKind::ConnectionLost.as_str(),
    FailureKind::ConnectTimeout.as_str(),
    FailureKind::UnavailableTimeout.as_str(),
    "failed refresh: token kept",
    "feed: stale ticket refused",
    "old ticket refused (feed, cancel, fail)",
    "cancel: ticket given back",
    "invalidate: token dropped",
    "poll: refresh ticket",
    "poll: next deadline",
    "poll: nothing scheduled",
    "refresh_on learnt: due",
    "refresh_on learnt: not yet",
    "clock moved back",
];

/// The cache answers exactly what the model of D4–D9 says, over 1–300 random operations per
/// case (1 000 cases by default).
#[test]
#[cfg_attr(
    miri,
    ignore = "minutes per case on atomic words; safe code, so its logic is checked natively"
)]
fn model_matches_cache() {
    let ops = prop::collection::vec(op_strategy(), 1..max_ops());
    run(1000, (config_strategy(), ops), |(config, ops)| {
        run_model(config, &ops)
    });
    coverage_report(MODEL_ANSWERS);
}

/// Peeks from another thread during the same runs return only tokens the model held at the
/// peek's linearisation point. (Miri checks the races themselves in the core's own concurrent
/// tests; here the point is the answers, over the model's many paths.)
#[test]
#[cfg_attr(
    miri,
    ignore = "a spinning reader thread: the core's concurrent tests cover Miri"
)]
fn concurrent_peeks_return_tokens_the_model_held() {
    let ops = prop::collection::vec(op_strategy(), 1..max_ops());
    run(300, (config_strategy(), ops), |(config, ops)| {
        run_model_with_reader(config, &ops)
    });
    let hits = COVER.with(|c| c.borrow().get("concurrent peek: hit").copied());
    assert!(
        hits.unwrap_or(0) > 0,
        "the reader never hit: nothing was checked"
    );
}

/// A cache of 4 slots and 9 arena blocks (a 1.9 KB token takes 8) for 7 keys per flavour:
/// entries are evicted all the time. The lighter model of the fuzz target checks that an entry
/// with a live ticket is never evicted (its lookups never answer `Fetch`, its ticket is never
/// refused), that `CacheFull` comes only when every (other) entry has a live ticket, that a hit
/// is the last token stored for its key, single flight and the budget.
#[test]
fn eviction_keeps_live_tickets() {
    let total = RefCell::new(checks::ops::Reached::default());
    let ops = prop::collection::vec(op_strategy(), 1..max_ops());
    run(256, (config_strategy(), ops), |(config, ops)| {
        let r = checks::ops::cache_ops(config, 4, 9, &ops);
        let mut t = total.borrow_mut();
        t.ops += r.ops;
        t.hits += r.hits;
        t.tokens += r.tokens;
        t.evictions += r.evictions;
        t.cache_full += r.cache_full;
        t.store_cache_full += r.store_cache_full;
        t.throttled += r.throttled;
        t.pending += r.pending;
        t.stale += r.stale;
    });
    let t = total.into_inner();
    println!("{t:?}");
    if !cfg!(miri) {
        assert!(
            t.evictions > 0 && t.cache_full > 0 && t.store_cache_full > 0,
            "{t:?}"
        );
        assert!(
            t.hits > 0 && t.throttled > 0 && t.pending > 0 && t.stale > 0,
            "{t:?}"
        );
    }
}
