//! Memory report: what the cache holds for 1,000 identities × 3 resources of 1.9 KB tokens,
//! against the sum of the token bytes and the budget (≤ 1.25 × token bytes + 128 bytes
//! per entry).
//!
//! The cache is filled through the real path (lookup, ticket, feed of an IMDS response) with
//! a fake clock. Three figures: the bytes in use ([`imds_cache::TokenCache::memory`]: slot
//! bookkeeping of the entries plus the arena blocks they take), the storage of a cache sized
//! exactly for them (what a caller would allocate), and the std driver's default sizing (4,096
//! entries × 2,560 bytes) for scale. Writes `target/bench/memory.json`.

use imds_cache_benches::{storage_bytes, write_result, WarmCache, TOKEN_LEN};

const IDENTITIES: usize = 1_000;
const ENTRIES: usize = IDENTITIES * 3;

fn main() {
    let warm = WarmCache::new(ENTRIES, TOKEN_LEN);
    let m = warm.cache.memory();
    assert_eq!(m.entries, ENTRIES);
    let token_bytes: usize = warm.tokens.iter().map(Vec::len).sum();
    let in_use = m.entries * m.overhead_per_slot + m.block_bytes;
    let sized = storage_bytes(warm.slots, warm.blocks);
    let cache_struct = std::mem::size_of_val(&warm.cache);
    let budget = token_bytes + token_bytes / 4 + 128 * ENTRIES;
    let driver_slots = 4096;
    let driver_blocks = (driver_slots * 2560usize).div_ceil(256);
    let driver = storage_bytes(driver_slots, driver_blocks);

    let per = |b: usize| b as f64 / ENTRIES as f64;
    println!("memory: {IDENTITIES} identities × 3 resources = {ENTRIES} entries of {TOKEN_LEN}-byte tokens");
    println!(
        "  token bytes                {token_bytes:>10}  ({:.0} per entry)",
        per(token_bytes)
    );
    println!(
        "  key + token bytes stored   {:>10}  ({:.0} per entry; waste {:.1} % of blocks)",
        m.data_bytes,
        per(m.data_bytes),
        100.0 * m.waste()
    );
    println!(
        "  in use (memory())          {in_use:>10}  ({:.0} per entry: {} slot + index, {:.0} in {} blocks of 256 + 4)",
        per(in_use),
        m.overhead_per_slot,
        per(m.block_bytes),
        m.blocks_used / ENTRIES
    );
    println!(
        "  storage sized for them     {sized:>10}  ({:.0} per entry; + {cache_struct} bytes of TokenCache)",
        per(sized)
    );
    println!(
        "  budget 1.25 × tokens + 128 {budget:>10}  ({:.0} per entry)",
        per(budget)
    );
    println!(
        "  ratio in use / tokens      {:>10.3}   (target ≤ {:.3}: {})",
        in_use as f64 / token_bytes as f64,
        budget as f64 / token_bytes as f64,
        if sized + cache_struct <= budget {
            "met"
        } else {
            "MISSED"
        }
    );
    println!(
        "  driver default storage     {driver:>10}  (4096 entries × 2560 bytes, allocated up front)"
    );
    let value = serde_json::json!({
        "entries": ENTRIES,
        "token_len": TOKEN_LEN,
        "token_bytes": token_bytes,
        "data_bytes": m.data_bytes,
        "in_use_bytes": in_use,
        "sized_storage_bytes": sized,
        "cache_struct_bytes": cache_struct,
        "budget_bytes": budget,
        "overhead_per_slot": m.overhead_per_slot,
        "blocks_used": m.blocks_used,
        "block_bytes": m.block_bytes,
        "driver_default_storage_bytes": driver,
    });
    match write_result("memory", &value) {
        Ok(path) => println!("  written to {}", path.display()),
        Err(e) => eprintln!("  could not write the result: {e}"),
    }
    if sized + cache_struct > budget {
        std::process::exit(1);
    }
}
