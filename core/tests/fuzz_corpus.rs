//! Replays the fuzz corpora and crash reproducers on stable: every file under
//! `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` goes through the same checks as
//! the cargo-fuzz target of that name (`fuzz/checks.rs`, shared with the targets), for all six
//! targets. The structured targets (`cache_ops`, `request`) decode their bytes with
//! `arbitrary` exactly as `libfuzzer_sys::fuzz_target!` does; a file that does not decode is
//! skipped there too.

use std::fs;
use std::path::Path;

use arbitrary::{Arbitrary, Unstructured};

#[path = "../fuzz/checks.rs"]
mod checks;

#[path = "../fuzz/differential.rs"]
mod differential;

/// A target's check on the raw bytes of a corpus file: whether the bytes decoded (and ran).
type Check = fn(&[u8]) -> bool;

/// The targets and their checks.
const TARGETS: [(&str, Check); 6] = [
    ("token_body", |d| {
        checks::token_body(d);
        true
    }),
    ("response", |d| {
        checks::response(d);
        true
    }),
    ("token_body_vs_serde_json", |d| {
        checks::token_body(d);
        differential::token_body_vs_serde_json(d);
        true
    }),
    ("cache_ops", |d| {
        decoded::<checks::ops::FuzzInput>(d)
            .map(|input| checks::ops::fuzz(&input))
            .is_some()
    }),
    ("arm_identity", |d| {
        checks::arm::arm_identity(d);
        true
    }),
    ("request", |d| {
        decoded::<checks::req::RequestInput<'_>>(d)
            .map(|input| checks::req::request(&input))
            .is_some()
    }),
];

/// `data` decoded as `libfuzzer_sys::fuzz_target!` decodes a typed input: too short for the
/// type's minimum size, or not decodable, is `None` (the fuzzer rejects such inputs).
fn decoded<'a, T: Arbitrary<'a>>(data: &'a [u8]) -> Option<T> {
    if data.len() < T::size_hint(0).0 {
        return None;
    }
    T::arbitrary_take_rest(Unstructured::new(data)).ok()
}

/// Runs `check` on every file of `<dir>/corpus/<target>/` and `<dir>/regressions/<target>/`;
/// returns how many files there were and how many ran (decoded).
fn replay(dir: &Path, target: &str, check: Check) -> (usize, usize) {
    let (mut files, mut ran) = (0, 0);
    for d in ["corpus", "regressions"] {
        let Ok(entries) = fs::read_dir(dir.join(d).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("readable directory").path();
            if !path.is_file() {
                continue;
            }
            let data = fs::read(&path).expect("readable file");
            let run = std::panic::catch_unwind(|| check(&data));
            match run {
                Ok(decoded) => ran += usize::from(decoded),
                Err(_) => panic!("{target}: {} fails", path.display()),
            }
            files += 1;
        }
    }
    (files, ran)
}

#[test]
fn fuzz_corpora_replay() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut total = 0;
    for (target, check) in TARGETS {
        let (files, ran) = replay(&fuzz, target, check);
        assert!(ran > 0, "no files replayed for {target}");
        // Most of a minimised corpus decodes (cmin keeps only inputs that reached code).
        assert!(
            ran * 2 > files,
            "{target}: only {ran} of {files} files decode"
        );
        println!("{target}: {ran} of {files} files replayed");
        total += ran;
    }
    println!("replayed {total} fuzz inputs");
}
