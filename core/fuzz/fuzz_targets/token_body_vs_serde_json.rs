#![no_main]

#[path = "../checks.rs"]
mod checks;
#[path = "../differential.rs"]
mod differential;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::token_body(data);
    differential::token_body_vs_serde_json(data);
});
