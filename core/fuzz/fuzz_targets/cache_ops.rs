//! Sequences of cache operations (the op set of `core/tests/model.rs`) drawn by `arbitrary`,
//! checked by the lighter model `checks::ops::cache_ops`: no panic, at most one live ticket per
//! key, a hit is the last token stored for its key, the budget is never exceeded, a live
//! ticket's entry is never evicted, `CacheFull` only when every other entry has a live ticket.
//! The input type is `checks::ops::FuzzInput` (shared with the stable replay test).
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|input: checks::ops::FuzzInput| {
    checks::ops::fuzz(&input);
});
