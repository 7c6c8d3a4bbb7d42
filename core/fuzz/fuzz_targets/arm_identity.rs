//! Arbitrary bytes to the ARM `identity` property parser (`parse_arm_identity`), into outputs
//! of several sizes: see `checks::arm::arm_identity`.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::arm::arm_identity(data));
