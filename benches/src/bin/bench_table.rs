//! Prints the table of `BENCHMARKS.md` from one run's results: criterion's estimates
//! (`target/criterion/<group>/<function>/<parameter>/new/estimates.json`, median) and the
//! JSON files the other parts write to `target/bench/` (`allocs`, `memory`, `cold_start`,
//! `c_abi_hit`, `python_vs_azure_identity`, whose Markdown table is included as is). Each
//! issue target is shown as a ratio, with "met" or "MISSED"; a part not run is shown as
//! not run, never as a number.
//!
//! Also writes the table to `target/bench/table.md`.

use std::fmt::Write as _;
use std::path::Path;

use imds_cache_benches::{body_samples, result_path, target_dir, TOKEN_LEN};
use serde_json::Value;

/// Median time in ns of a criterion benchmark, if it ran.
fn median_ns(criterion: &Path, id: &str) -> Option<f64> {
    let path = criterion.join(id).join("new/estimates.json");
    let v: Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    v["median"]["point_estimate"].as_f64()
}

fn result(name: &str) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(result_path(name)).ok()?).ok()
}

fn ns(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 10_000.0 => format!("{:.1} µs", v / 1000.0),
        Some(v) => format!("{v:.0} ns"),
        None => "not run".into(),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(a? / b?)
}

fn x(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.2}×"))
}

fn verdict(held: Option<bool>) -> &'static str {
    match held {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "not run",
    }
}

fn main() {
    let criterion = target_dir().join("criterion");
    let mut out = String::new();
    let mut targets: Vec<(String, String, &'static str)> = Vec::new();
    let w = &mut out;

    // Parse.
    let allocs = result("allocs");
    let _ = writeln!(w, "### Parse (MB/s of body; median)\n");
    let _ = writeln!(
        w,
        "| body | bytes | ours | serde_json | ours ÷ serde_json | ours with HTTP framing | allocations ours / serde_json |"
    );
    let _ = writeln!(w, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut worst_parse: Option<f64> = None;
    for s in body_samples() {
        let n = s.body.len() as f64;
        let mbs = |t: Option<f64>| t.map(|t| n / t * 1000.0);
        let ours = mbs(median_ns(&criterion, &format!("parse/ours/{}", s.name)));
        let serde = mbs(median_ns(
            &criterion,
            &format!("parse/serde_json/{}", s.name),
        ));
        let http = mbs(median_ns(
            &criterion,
            &format!("parse/ours_http/{}", s.name),
        ));
        let r = ratio(ours, serde);
        if let Some(r) = r {
            worst_parse = Some(worst_parse.map_or(r, |w: f64| w.min(r)));
        }
        let a = allocs.as_ref().map(|a| &a[s.name]);
        let alloc_text = a.map_or("not run".into(), |a| {
            format!("{} / {}", a["ours"], a["serde_json"])
        });
        let f = |v: Option<f64>| v.map_or("not run".into(), |v| format!("{v:.0}"));
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {} |",
            s.name,
            s.body.len(),
            f(ours),
            f(serde),
            x(r),
            f(http),
            alloc_text
        );
    }
    let zero = allocs.as_ref().map(|a| {
        a.as_object().is_some_and(|o| {
            o.values()
                .all(|v| v["ours"] == 0 && v.get("ours_http").map_or(true, |h| *h == 0))
        })
    });
    targets.push((
        "Parse: ≥ serde_json's MB/s, zero allocations".into(),
        format!(
            "worst body {} of serde_json; allocations {}",
            x(worst_parse),
            match zero {
                Some(true) => "0",
                Some(false) => "not 0",
                None => "not checked",
            }
        ),
        verdict(worst_parse.map(|r| r >= 1.0 && zero == Some(true))),
    ));

    // Cache hit.
    let _ = writeln!(
        w,
        "\n### Cache hit: lookup copying a {TOKEN_LEN}-byte token, uniform random keys (median)\n"
    );
    let _ = writeln!(
        w,
        "| entries | ours | copy floor | RwLock<HashMap> + String clone | moka::sync::Cache | ours ÷ floor | ours ÷ RwLock | ours ÷ moka |"
    );
    let _ = writeln!(
        w,
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    let hit = |f: &str, n: usize| median_ns(&criterion, &format!("cache_hit/{f}/{n}"));
    for n in [16, 1024, 4096, 16384] {
        let (o, fl, rw, mo) = (
            hit("ours", n),
            hit("copy_floor", n),
            hit("rwlock_hashmap", n),
            hit("moka", n),
        );
        let _ = writeln!(
            w,
            "| {n} | {} | {} | {} | {} | {} | {} | {} |",
            ns(o),
            ns(fl),
            ns(rw),
            ns(mo),
            x(ratio(o, fl)),
            x(ratio(o, rw)),
            x(ratio(o, mo))
        );
    }
    let o4 = hit("ours", 4096);
    let r_floor = ratio(o4, hit("copy_floor", 4096));
    targets.push((
        "Rust hit (lock-free peek) at 4,096 ≤ 2.5× the copy floor".into(),
        x(r_floor),
        verdict(r_floor.map(|r| r <= 2.5)),
    ));
    let r_locked = ratio(o4, hit("mutex_lookup", 4096));
    targets.push((
        "Lock-free peek at 4,096 ≤ 1.25× the Mutex + lookup hit (1 thread)".into(),
        x(r_locked),
        verdict(r_locked.map(|r| r <= 1.25)),
    ));
    let r16 = ratio(o4, hit("ours", 16));
    targets.push((
        "Rust hit at 4,096 ≤ 1.3× the hit at 16".into(),
        x(r16),
        verdict(r16.map(|r| r <= 1.3)),
    ));
    let rw = ratio(o4, hit("rwlock_hashmap", 4096));
    targets.push((
        "Rust hit at 4,096 faster than RwLock<HashMap>".into(),
        x(rw),
        verdict(rw.map(|r| r < 1.0)),
    ));
    let mo = ratio(o4, hit("moka", 4096));
    targets.push((
        "Rust hit at 4,096 faster than moka".into(),
        x(mo),
        verdict(mo.map(|r| r < 1.0)),
    ));

    // The client hit from 1 and 2 threads (hit_scaling).
    match result("hit_scaling") {
        Some(h) => {
            let _ = writeln!(
                w,
                "\n### Hit scaling: `Client::get_token_into` from 1 and 2 threads, 3,000 warm keys \
                 (median of paired rounds)\n"
            );
            let _ = writeln!(
                w,
                "| keys | 2 threads ÷ 1 thread, calls/s | p50, 2 threads | p99, 2 threads | p99 ÷ p50 |"
            );
            let _ = writeln!(w, "| --- | ---: | ---: | ---: | ---: |");
            for (name, label) in [
                ("same_key", "same key"),
                ("different_keys", "different keys"),
            ] {
                let r = h[name]["ratio"].as_f64();
                let p50 = h[name]["p50_ns_2_threads"].as_f64();
                let p99 = h[name]["p99_ns_2_threads"].as_f64();
                let tail = ratio(p99, p50);
                let _ = writeln!(
                    w,
                    "| {label} | {} | {} | {} | {} |",
                    x(r),
                    ns(p50),
                    ns(p99),
                    x(tail)
                );
                targets.push((
                    format!("Client hit, 2 threads ≥ 1.8× the calls/s of 1 thread ({label})"),
                    x(r),
                    verdict(r.map(|r| r >= 1.8)),
                ));
                targets.push((
                    format!("Client hit, 2 threads: p99 ≤ 3× p50 ({label})"),
                    x(tail),
                    verdict(tail.map(|r| r <= 3.0)),
                ));
            }
        }
        None => {
            let _ = writeln!(w, "\n### Hit scaling\n\nnot run");
        }
    }

    // Driver hit (+ C ABI).
    let _ = writeln!(
        w,
        "\n### Driver hit: `Client::get_token_into`, 3,000 warm keys (median per call)\n"
    );
    let _ = writeln!(
        w,
        "| threads | same key | different keys | calls/s (different keys, all threads) |"
    );
    let _ = writeln!(w, "| ---: | ---: | ---: | ---: |");
    for t in [1, 2] {
        let same = median_ns(&criterion, &format!("driver_hit/same_key/{t}_threads"));
        let diff = median_ns(
            &criterion,
            &format!("driver_hit/different_keys/{t}_threads"),
        );
        let rate = diff.map_or("not run".into(), |d| {
            format!("{:.2} M", t as f64 / d * 1000.0)
        });
        let _ = writeln!(w, "| {t} | {} | {} | {rate} |", ns(same), ns(diff));
    }
    let rust1 = median_ns(&criterion, "driver_hit/same_key/1_threads");
    match result("c_abi_hit") {
        Some(c) if c["ns_per_call"].as_f64().is_some() => {
            let _ = writeln!(
                w,
                "\n### C ABI hit: `imds_cache_get_token` timed from C, same setup (median of runs)\n"
            );
            let _ = writeln!(
                w,
                "| threads | same key | different keys | C ÷ Rust, same key | C ÷ Rust, different keys |"
            );
            let _ = writeln!(w, "| ---: | ---: | ---: | ---: | ---: |");
            for t in [1, 2] {
                let same = c[format!("same_key_{t}_threads").as_str()]
                    .as_f64()
                    .or_else(|| (t == 1).then(|| c["ns_per_call"].as_f64()).flatten());
                let diff = c[format!("different_keys_{t}_threads").as_str()].as_f64();
                let rs = median_ns(&criterion, &format!("driver_hit/same_key/{t}_threads"));
                let rd = median_ns(
                    &criterion,
                    &format!("driver_hit/different_keys/{t}_threads"),
                );
                let _ = writeln!(
                    w,
                    "| {t} | {} | {} | {} | {} |",
                    ns(same),
                    ns(diff),
                    x(ratio(same, rs)),
                    x(ratio(diff, rd))
                );
            }
            // The paired rounds (Rust and C back to back) when they ran; else this run's two.
            let paired = c["paired"]["ratio"].as_f64();
            let r = paired.or_else(|| ratio(c["ns_per_call"].as_f64(), rust1));
            if let Some(p) = paired {
                let list = |k: &str| {
                    c["paired"][k]
                        .as_array()
                        .map(|v| {
                            v.iter()
                                .filter_map(Value::as_f64)
                                .map(|n| format!("{n:.0}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        })
                        .unwrap_or_default()
                };
                let _ = writeln!(
                    w,
                    "\nPaired rounds, 1 thread, same key (Rust driver bench, then the C program): \
                     Rust {} ns; C {} ns; median of the rounds' ratios {}.",
                    list("rust_ns"),
                    list("c_ns"),
                    x(Some(p))
                );
            }
            targets.push((
                "C ABI hit ≤ 1.5× the Rust driver hit (1 thread, same key)".into(),
                x(r),
                verdict(r.map(|r| r <= 1.5)),
            ));
        }
        _ => {
            let _ = writeln!(
                w,
                "\nC ABI hit (`imds_cache_get_token`): not run (`bash benches/c_abi_hit.sh`)"
            );
            targets.push((
                "C ABI hit ≤ 1.5× the Rust driver hit".into(),
                "not run".into(),
                "not run",
            ));
        }
    }

    // Memory.
    let _ = writeln!(
        w,
        "\n### Memory: 1,000 identities × 3 resources, {TOKEN_LEN}-byte tokens\n"
    );
    match result("memory") {
        Some(m) => {
            let g = |k: &str| m[k].as_f64().unwrap_or(f64::NAN);
            let entries = g("entries");
            let used = g("sized_storage_bytes") + g("cache_struct_bytes");
            let _ = writeln!(w, "| | bytes | per entry |\n| --- | ---: | ---: |");
            for (what, v) in [
                ("token bytes", g("token_bytes")),
                ("key + token bytes stored", g("data_bytes")),
                (
                    "cache storage (slots, index, arena, links) + `TokenCache`",
                    used,
                ),
                (
                    "budget: 1.25 × token bytes + 128 per entry",
                    g("budget_bytes"),
                ),
            ] {
                let _ = writeln!(w, "| {what} | {v:.0} | {:.0} |", v / entries);
            }
            let r = used / g("token_bytes");
            targets.push((
                "Memory ≤ 1.25 × token bytes + 128 B per entry".into(),
                format!(
                    "{r:.3}× token bytes ({:.0} B per entry of {:.0} allowed)",
                    used / entries,
                    g("budget_bytes") / entries
                ),
                verdict(Some(used <= g("budget_bytes"))),
            ));
        }
        None => {
            let _ = writeln!(w, "not run");
            targets.push(("Memory".into(), "not run".into(), "not run"));
        }
    }

    // Cold start.
    let _ = writeln!(
        w,
        "\n### Cold start: 1,000 identities × 3 resources from the emulator binary\n"
    );
    let _ = writeln!(w, "| limits | wall | floor (keys ÷ rate) | requests | 429s | most arrivals per window | most in flight |");
    let _ = writeln!(w, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut one_each = None;
    for row in result("cold_start")
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
    {
        let earlier = if row["earlier_run"] == true {
            " (earlier run)"
        } else {
            ""
        };
        let _ = writeln!(
            w,
            "| {}{earlier} | {:.1} s | {:.1} s | {} of {} | {} | {} | {} |",
            row["limits"].as_str().unwrap_or("?"),
            row["wall_s"].as_f64().unwrap_or(f64::NAN),
            row["floor_s"].as_f64().unwrap_or(f64::NAN),
            row["requests"],
            row["keys"],
            row["sent_429"],
            row["max_window_arrivals"],
            row["max_concurrency"]
        );
        let exact = row["requests"] == row["keys"] && row["ok"] == row["keys"];
        one_each = Some(one_each.unwrap_or(true) && exact);
    }
    targets.push((
        "Cold start: exactly one request per (identity, resource)".into(),
        match one_each {
            Some(true) => "3000 requests for 3000 keys".into(),
            Some(false) => "more or fewer requests than keys".into(),
            None => "not run".into(),
        },
        verdict(one_each),
    ));

    // Rust: our azure_core credential against azure_identity's.
    let _ = writeln!(
        w,
        "\n### Rust: cached `TokenCredential::get_token` against azure_identity (median per call)\n"
    );
    let _ = writeln!(w, "| tasks | ours | azure_identity | theirs ÷ ours |");
    let _ = writeln!(w, "| ---: | ---: | ---: | ---: |");
    for tasks in [1, 8] {
        let cred = |who: &str| {
            median_ns(
                &criterion,
                &format!("vs_azure_identity_cached_get_token/{who}/{tasks}_tasks"),
            )
        };
        let (o, t) = (cred("ours"), cred("azure_identity"));
        let r = ratio(t, o);
        let _ = writeln!(w, "| {tasks} | {} | {} | {} |", ns(o), ns(t), x(r));
        targets.push((
            format!("Rust credential: ≥ 3× azure_identity's cached calls/s ({tasks} tasks)"),
            x(r),
            verdict(r.map(|r| r >= 3.0)),
        ));
    }

    // Python.
    let _ = writeln!(w, "\n### Python: our credential vs azure-identity\n");
    match std::fs::read_to_string(result_path("python_vs_azure_identity").with_extension("md")) {
        Ok(table) => {
            let _ = writeln!(w, "{}", table.trim_end());
            let summary = result("python_vs_azure_identity");
            let r1 = summary
                .as_ref()
                .and_then(|v| v["ratio_cached_1_thread"].as_f64());
            let r8 = summary
                .as_ref()
                .and_then(|v| v["ratio_cached_8_threads"].as_f64());
            targets.push((
                "Python cached get_token ≥ 30× azure-identity's calls/s".into(),
                match (r1, r8) {
                    (Some(a), Some(b)) => format!("{a:.0}× on 1 thread, {b:.0}× on 8 threads"),
                    _ => "see the Python table".into(),
                },
                match (r1, r8) {
                    (Some(a), Some(b)) => verdict(Some(a >= 30.0 && b >= 30.0)),
                    _ => "see above",
                },
            ));
        }
        Err(_) => {
            let _ = writeln!(
                w,
                "not run (`.venv/bin/python benches/python_vs_azure_identity.py`; `make py-install` first)"
            );
            targets.push((
                "Python cached get_token ≥ 30× azure-identity".into(),
                "not run".into(),
                "not run",
            ));
        }
    }

    let _ = writeln!(
        w,
        "\n### Targets\n\n| target | measured | |\n| --- | --- | --- |"
    );
    for (what, measured, v) in &targets {
        let _ = writeln!(w, "| {what} | {measured} | {v} |");
    }

    print!("{out}");
    let path = result_path("table").with_extension("md");
    if std::fs::create_dir_all(target_dir().join("bench")).is_ok() {
        let _ = std::fs::write(&path, &out);
    }
}
