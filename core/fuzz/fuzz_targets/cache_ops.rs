//! Sequences of cache operations (the op set of `core/tests/model.rs`) drawn by `arbitrary`,
//! checked by the lighter model `checks::ops::cache_ops`: no panic, at most one live ticket per
//! key, a hit is the last token stored for its key, the budget is never exceeded, a live
//! ticket's entry is never evicted, `CacheFull` only when every other entry has a live ticket.
#![no_main]

use arbitrary::Arbitrary;
use imds_cache::Config;

#[path = "../checks.rs"]
mod checks;

use checks::ops::{Op, Resp, LEAPS};

#[derive(Arbitrary, Debug)]
enum ArbResp {
    Token { lifetime: u8, len: u8 },
    Echo { lifetime: u8, own: bool },
    Server,
    Gone,
    TooMany { retry_after: u8 },
    BadRequest,
    NotJson,
}

#[derive(Arbitrary, Debug)]
enum ArbOp {
    Lookup { k: u8, buf: u8 },
    Feed { k: u8, resp: ArbResp, split: bool },
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

#[derive(Arbitrary, Debug)]
struct Input {
    /// A cache of 4 slots and 12 blocks (evicting) rather than 24 and 256.
    small: bool,
    /// `jitter_percent: 0` rather than 20.
    exact: bool,
    seed: u64,
    ops: Vec<ArbOp>,
}

fn op(a: ArbOp) -> Op {
    let resp = |r: ArbResp| match r {
        ArbResp::Token { lifetime, len } => Resp::Token { lifetime, len },
        ArbResp::Echo { lifetime, own } => Resp::Echo { lifetime, own },
        ArbResp::Server => Resp::Server,
        ArbResp::Gone => Resp::Gone,
        ArbResp::TooMany { retry_after } => Resp::TooMany { retry_after },
        ArbResp::BadRequest => Resp::BadRequest,
        ArbResp::NotJson => Resp::NotJson,
    };
    match a {
        ArbOp::Lookup { k, buf } => Op::Lookup { k, buf },
        ArbOp::Feed { k, resp: r, split } => Op::Feed {
            k,
            resp: resp(r),
            split,
        },
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

libfuzzer_sys::fuzz_target!(|input: Input| {
    let config = Config {
        jitter_percent: if input.exact { 0 } else { 20 },
        seed: input.seed,
        ..Config::DEFAULT
    };
    let ops: Vec<Op> = input.ops.into_iter().take(1000).map(op).collect();
    let (slots, blocks) = if input.small { (4, 12) } else { (24, 256) };
    checks::ops::cache_ops(config, slots, blocks, &ops);
});
