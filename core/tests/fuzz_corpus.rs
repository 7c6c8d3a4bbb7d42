//! Replays the fuzz corpora and crash reproducers on stable: every file under
//! `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` goes through the same checks as
//! the cargo-fuzz target of that name (`fuzz/checks.rs`, shared with the targets).

use std::fs;
use std::path::Path;

#[path = "../fuzz/checks.rs"]
mod checks;

#[path = "../fuzz/differential.rs"]
mod differential;

/// Runs `check` on every file of every `<dir>/<target>/`; returns how many files ran.
fn replay(dir: &Path, target: &str, check: &dyn Fn(&[u8])) -> usize {
    let mut n = 0;
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
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&data)));
            assert!(run.is_ok(), "{target}: {} fails", path.display());
            n += 1;
        }
    }
    n
}

#[test]
fn fuzz_corpora_replay() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut total = 0;
    for (target, check) in [
        ("token_body", &checks::token_body as &dyn Fn(&[u8])),
        ("response", &checks::response),
        ("token_body_vs_serde_json", &checks::token_body),
    ] {
        let n = replay(&fuzz, target, check);
        assert!(n > 0, "no files replayed for {target}");
        total += n;
    }
    let n = replay(&fuzz, "token_body_vs_serde_json", &|data: &[u8]| {
        differential::token_body_vs_serde_json(data);
    });
    assert!(n > 0);
    total += n;
    assert!(total > 0, "no fuzz inputs replayed");
    println!("replayed {total} fuzz inputs");
}
