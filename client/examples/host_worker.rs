//! A worker of the host-sharing tests (tests/host/run.py): many threads of one process ask
//! the emulator's identities for tokens through one client, whose table and request budget
//! are the process's own (`--share process`) or the host's (`--share host`).
//!
//! The same CLI and output as ffi/examples/host_worker.c and python/examples/host_worker.py:
//!
//! ```text
//! host_worker --share host|process --dir PATH --client-ids A,B,C --resources R1,R2
//!             [--threads N (4)] [--mode warm|loop (warm)] [--seconds S (10)]
//!             [--deadline-s D (90)] [--pause-ms P (warm 0, loop 2)] [--seed X (pid)]
//!             [--start-at UNIX_MS] [--endpoint env|explicit (env)]
//! ```
//!
//! The endpoint is `AZURE_POD_IDENTITY_AUTHORITY_HOST`, which must be a loopback URL
//! (`http://127.0.0.1:PORT`, the emulator): the worker refuses to start otherwise (and when a
//! variable of another endpoint kind, `IDENTITY_ENDPOINT`, `MSI_ENDPOINT`, …, is set), so it
//! never asks the real IMDS address. `--endpoint env` (the default) lets the client detect it
//! from the environment, as an application on a VM does (`SourceSpec::Auto`), and checks that
//! it found IMDS at that URL before any call; `--endpoint explicit` gives the same URL as an
//! explicit IMDS endpoint (`SourceSpec::Explicit`). `--dir` is the share directory (`share_dir`; a 0700 directory
//! of this user). `--deadline-s` is each call's deadline (the client's `deadline`).
//! `--start-at` waits until that wall-clock time (Unix milliseconds) before the threads start,
//! so that several processes start at once. warm: every thread asks every (client id,
//! resource) pair once, in its own seeded order, the threads released together. loop: every
//! thread asks random pairs for `--seconds`, sleeping `--pause-ms` between calls.
//!
//! Output on stdout, one line per call, flushed per line (a killed worker's lines so far are
//! whole):
//!
//! ```text
//! CALL <client_id> <resource> <fnv1a64 of the token's bytes, 16 hex digits> <elapsed_ms>
//! ERR <client_id> <resource> <elapsed_ms> <error text, one line, never a token or a secret>
//! DONE <calls> <errors>
//! ```
//!
//! `--no-drop` (no value) ends the worker with `std::process::exit` while its client is
//! alive, as a program that calls `exit()` does, instead of dropping the client first.
//!
//! `elapsed_ms` is a decimal number of milliseconds with three fraction digits. A token is
//! never printed. Exit status 0 when every call succeeded, 1 when some failed, 2 on bad usage.

use std::io::Write;
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use imds_cache::{Flavour, Identity, Resource};
use imds_cache_client::{Client, ClientConfig, OwnedEndpoint, Share, SourceSpec};

/// FNV-1a, 64 bits, over `bytes`.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// xorshift64: the order of warm calls and the keys of loop calls.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

struct Args {
    share: Share,
    dir: String,
    client_ids: Vec<String>,
    resources: Vec<String>,
    threads: usize,
    warm: bool,
    seconds: f64,
    deadline_s: f64,
    pause_ms: u64,
    seed: u64,
    start_at_ms: Option<u64>,
    explicit: bool,
    no_drop: bool,
}

fn usage(why: &str) -> ! {
    eprintln!("host_worker: {why}");
    eprintln!(
        "usage: host_worker --share host|process --dir PATH --client-ids A,B --resources R1,R2 \
         [--threads N] [--mode warm|loop] [--seconds S] [--deadline-s D] [--pause-ms P] \
         [--seed X] [--start-at UNIX_MS] [--endpoint env|explicit]"
    );
    std::process::exit(2);
}

fn parse_args() -> Args {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut a = Args {
        share: Share::Process,
        dir: String::new(),
        client_ids: Vec::new(),
        resources: Vec::new(),
        threads: 4,
        warm: true,
        seconds: 10.0,
        deadline_s: 90.0,
        pause_ms: u64::MAX,
        seed: u64::from(std::process::id()),
        start_at_ms: None,
        explicit: false,
        no_drop: false,
    };
    let list = |v: &str| -> Vec<String> {
        v.split(',')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    };
    let mut i = 0;
    while i < argv.len() {
        let flag = argv[i].as_str();
        if flag == "--no-drop" {
            a.no_drop = true;
            i += 1;
            continue;
        }
        let value = argv
            .get(i + 1)
            .cloned()
            .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        let number = |v: &str| -> f64 {
            v.parse::<f64>()
                .ok()
                .filter(|n| n.is_finite() && *n >= 0.0)
                .unwrap_or_else(|| usage(&format!("{flag}: not a number: {v}")))
        };
        match flag {
            "--share" => {
                a.share = match value.as_str() {
                    "host" => Share::Host,
                    "process" => Share::Process,
                    other => usage(&format!("--share: host or process, not {other}")),
                }
            }
            "--dir" => a.dir = value,
            "--client-ids" => a.client_ids = list(&value),
            "--resources" => a.resources = list(&value),
            "--threads" => a.threads = (number(&value) as usize).max(1),
            "--mode" => {
                a.warm = match value.as_str() {
                    "warm" => true,
                    "loop" => false,
                    other => usage(&format!("--mode: warm or loop, not {other}")),
                }
            }
            "--seconds" => a.seconds = number(&value),
            "--deadline-s" => a.deadline_s = number(&value),
            "--pause-ms" => a.pause_ms = number(&value) as u64,
            "--seed" => a.seed = number(&value) as u64,
            "--start-at" => a.start_at_ms = Some(number(&value) as u64),
            "--endpoint" => {
                a.explicit = match value.as_str() {
                    "env" => false,
                    "explicit" => true,
                    other => usage(&format!("--endpoint: env or explicit, not {other}")),
                }
            }
            other => usage(&format!("unknown flag {other}")),
        }
        i += 2;
    }
    if a.client_ids.is_empty() || a.resources.is_empty() {
        usage("--client-ids and --resources are required");
    }
    if a.share == Share::Host && a.dir.is_empty() {
        usage("--share host needs --dir");
    }
    if a.deadline_s <= 0.0 {
        usage("--deadline-s must be > 0");
    }
    if a.pause_ms == u64::MAX {
        a.pause_ms = if a.warm { 0 } else { 2 };
    }
    a
}

/// Writes one whole line to stdout and flushes it.
fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    // A closed pipe (the driver went away) ends the worker.
    if out.write_all(line.as_bytes()).is_err() || out.flush().is_err() {
        std::process::exit(3);
    }
}

/// Variables that would make the client detect an endpoint other than IMDS.
const OTHER_ENDPOINTS: [&str; 6] = [
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "IMDS_ENDPOINT",
    "AZURE_FEDERATED_TOKEN_FILE",
];

fn loopback(url: &str) -> bool {
    url.starts_with("http://127.0.0.1:") || url.starts_with("http://localhost:")
}

fn main() {
    let args = parse_args();
    let url = std::env::var("AZURE_POD_IDENTITY_AUTHORITY_HOST").unwrap_or_default();
    if !loopback(&url) {
        usage("AZURE_POD_IDENTITY_AUTHORITY_HOST must be the emulator's http://127.0.0.1:PORT");
    }
    if let Some(v) = OTHER_ENDPOINTS
        .iter()
        .find(|v| std::env::var_os(v).is_some())
    {
        usage(&format!(
            "{v} is set: only the emulator at AZURE_POD_IDENTITY_AUTHORITY_HOST"
        ));
    }
    let source = if args.explicit {
        SourceSpec::Explicit(OwnedEndpoint {
            flavour: Flavour::Imds,
            url,
            secret: None,
            default_client_id: None,
        })
    } else {
        SourceSpec::Auto
    };
    let client = match Client::with_config(ClientConfig {
        source,
        deadline: Duration::from_secs_f64(args.deadline_s),
        share: args.share,
        share_dir: (!args.dir.is_empty()).then(|| args.dir.clone().into()),
        ..ClientConfig::default()
    }) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("host_worker: cannot make the client: {e}");
            std::process::exit(1);
        }
    };
    // Before any call: the client asks IMDS at the emulator's loopback URL, nothing else.
    let found = client.endpoint_url().unwrap_or_default();
    if client.flavour() != Flavour::Imds || !loopback(&found) {
        eprintln!(
            "host_worker: the client would ask {found} ({:?}), not the emulator",
            client.flavour()
        );
        std::process::exit(2);
    }
    let identities: Vec<Identity<'_>> = args
        .client_ids
        .iter()
        .map(|c| Identity::client_id(c).unwrap_or_else(|e| usage(&format!("client id {c}: {e}"))))
        .collect();
    let resources: Vec<Resource<'_>> = args
        .resources
        .iter()
        .map(|r| Resource::new(r).unwrap_or_else(|e| usage(&format!("resource {r}: {e}"))))
        .collect();
    let keys = identities.len() * resources.len();

    if let Some(at) = args.start_at_ms {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        // Never more than a minute: a wrong clock must not hang the worker.
        std::thread::sleep(Duration::from_millis(at.saturating_sub(now).min(60_000)));
    }
    let gate = Barrier::new(args.threads);
    let totals = Mutex::new((0u64, 0u64));
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(if args.warm { 0.0 } else { args.seconds });
    std::thread::scope(|s| {
        for t in 0..args.threads {
            let (client, identities, resources, args) = (&client, &identities, &resources, &args);
            let (gate, totals) = (&gate, &totals);
            s.spawn(move || {
                let mut rng = (args.seed ^ 0x9e37_79b9_7f4a_7c15)
                    .wrapping_mul(t as u64 + 1)
                    .max(1);
                // warm: every key once, in this thread's own shuffled order.
                let mut order: Vec<usize> = (0..keys).collect();
                for i in (1..order.len()).rev() {
                    order.swap(i, (next(&mut rng) % (i as u64 + 1)) as usize);
                }
                let mut buf = vec![0u8; 16 * 1024];
                let (mut calls, mut errors) = (0u64, 0u64);
                gate.wait();
                let mut i = 0usize;
                loop {
                    let k = if args.warm {
                        if i == keys {
                            break;
                        }
                        i += 1;
                        order[i - 1]
                    } else {
                        if Instant::now() >= end {
                            break;
                        }
                        (next(&mut rng) % keys as u64) as usize
                    };
                    let (identity, resource) = (
                        &identities[k / resources.len()],
                        &resources[k % resources.len()],
                    );
                    let (cid, res) = (
                        &args.client_ids[k / resources.len()],
                        &args.resources[k % resources.len()],
                    );
                    let call = Instant::now();
                    let result = client.get_token_into(identity, resource, &mut buf);
                    let ms = call.elapsed().as_secs_f64() * 1000.0;
                    calls += 1;
                    match result {
                        Ok((len, _)) => {
                            let hash = fnv1a64(&buf[..len]);
                            buf[..len].fill(0);
                            emit(&format!("CALL {cid} {res} {hash:016x} {ms:.3}\n"));
                        }
                        Err(e) => {
                            errors += 1;
                            let text = client.explain(&e, identity).replace(['\n', '\r'], " ");
                            emit(&format!("ERR {cid} {res} {ms:.3} {text}\n"));
                        }
                    }
                    if args.pause_ms > 0 {
                        std::thread::sleep(Duration::from_millis(args.pause_ms));
                    }
                }
                let mut t = totals.lock().expect("totals");
                t.0 += calls;
                t.1 += errors;
            });
        }
    });
    let (calls, errors) = *totals.lock().expect("totals");
    if args.no_drop {
        // As a program that calls exit() with its client alive: no destructor runs.
        emit(&format!("DONE {calls} {errors}\n"));
        std::process::exit(i32::from(errors > 0));
    }
    // Dropped as a program ends normally (process::exit runs no destructors).
    drop(identities);
    drop(client);
    emit(&format!("DONE {calls} {errors}\n"));
    std::process::exit(i32::from(errors > 0));
}
