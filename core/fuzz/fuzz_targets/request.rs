//! Flavours, identities, resources, endpoints, secrets and Arc keys drawn by `arbitrary`
//! (`checks::req::RequestInput`) through the constructors, `write_request` and the cache's
//! `request` / `complete_challenge`: see `checks::req::request`.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|input: checks::req::RequestInput<'_>| {
    checks::req::request(&input);
});
