//! Clients in several processes sharing the host's table and budget (Linux): one request per
//! key across processes, invalidation seen everywhere, a writer, a fetcher and a forked child
//! dying at the worst moment, layouts that differ, and set-ups that must not be trusted.
//! Processes are forked children that report through their exit status; every child is
//! waited for (or killed) by the test that forked it.
#![cfg(target_os = "linux")]

#[allow(dead_code)] // the other tests' helpers
mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{client_for, emulator, res, ARM, RESOURCES};
use imds_cache::{Config, Identity};
use imds_cache_client::events::{Event, Observer};
use imds_cache_client::{host_hooks, Client, ClientConfig, Share};
use imds_emulator::{Emulator, Fault, FaultRule, Mode};

/// A fresh 0700 directory for one test's host files, removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let path = std::env::temp_dir().join(format!("imds-host-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).unwrap();
        Dir(path)
    }

    fn files(&self, prefix: &str) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
            .collect();
        found.sort();
        found
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A client of `e` that shares the host's files in `dir`.
fn shared_client(e: &Emulator, dir: &Path, tweak: impl FnOnce(&mut ClientConfig)) -> Client {
    let client = client_for(e, |c| {
        c.share = Share::Host;
        c.share_dir = Some(dir.to_path_buf());
        tweak(c);
    });
    assert!(
        host_hooks::shares_host(&client),
        "the host files are usable"
    );
    client
}

/// A forked child running `body`; its exit status is 0 when `body` returns true.
struct Child(libc::pid_t);

impl Child {
    fn fork(body: impl FnOnce() -> bool) -> Child {
        // SAFETY: the child runs only `body` (the client's fork handlers left its locks
        // released) and leaves with `_exit`, never returning into the test harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or(false);
            // SAFETY: ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        Child(pid)
    }

    /// Waits for the child; whether it ended as `expect` says (exit 0, or killed by a signal).
    fn wait(mut self) -> i32 {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(self.0, &mut status, 0) };
        self.0 = 0;
        status
    }

    fn kill(self) -> i32 {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0, libc::SIGKILL) };
        self.wait()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.0 > 0 {
            // SAFETY: our own child, not yet waited for: killed and reaped.
            unsafe {
                libc::kill(self.0, libc::SIGKILL);
                libc::waitpid(self.0, std::ptr::null_mut(), 0);
            }
        }
    }
}

fn exited_ok(status: i32) -> bool {
    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}

fn user(e: &Emulator, i: usize) -> String {
    e.identities()[i + 1].client_id.clone()
}

#[test]
fn processes_on_one_host_make_one_request_per_key() {
    // 4 processes × 2 threads warm 5 identities × 2 resources at IMDS's own limits.
    let e = emulator(Mode::Imds, 5, |_| {});
    let dir = Dir::new("one-request");
    let ids: Vec<String> = (0..5).map(|i| user(&e, i)).collect();
    let issued_by = |token: &[u8]| {
        e.tokens()
            .into_iter()
            .find(|t| t.token.as_bytes() == token)
            .map(|t| (t.client_id, t.resource))
    };
    let children: Vec<Child> = (0..4)
        .map(|_| {
            let (ids, dir) = (ids.clone(), dir.0.clone());
            let e = &e;
            Child::fork(move || {
                let client = shared_client(e, &dir, |_| {});
                std::thread::scope(|s| {
                    let workers: Vec<_> = (0..2)
                        .map(|_| {
                            s.spawn(|| {
                                ids.iter().all(|id| {
                                    RESOURCES[..2].iter().all(|r| {
                                        let id = Identity::client_id(id).unwrap();
                                        client.get_token(&id, &res(r)).is_ok()
                                    })
                                })
                            })
                        })
                        .collect();
                    workers.into_iter().all(|w| w.join().unwrap_or(false))
                })
            })
        })
        .collect();
    for child in children {
        assert!(exited_ok(child.wait()), "a child failed to get its tokens");
    }
    let stats = e.stats();
    assert_eq!(
        stats.requests, 10,
        "one request per key on the host: {stats:?}"
    );
    assert_eq!(stats.sent_429, 0);
    // This process joins the same table: every token is a hit, and is the one issued for
    // its key.
    let client = shared_client(&e, &dir.0, |_| {});
    for id in &ids {
        for r in &RESOURCES[..2] {
            let (token, _) = client
                .get_token(&Identity::client_id(id).unwrap(), &res(r))
                .unwrap();
            assert_eq!(
                issued_by(&token),
                Some((id.clone(), r.to_string())),
                "a token the emulator issued for this key"
            );
        }
    }
    assert_eq!(e.stats().requests, 10);
}

#[test]
fn a_token_invalidated_in_one_process_is_gone_for_all() {
    let e = emulator(Mode::Imds, 0, |_| {});
    let dir = Dir::new("invalidate");
    let client = shared_client(&e, &dir.0, |_| {});
    let (first, _) = client.get_token(&Identity::SYSTEM, &res(ARM)).unwrap();
    let child = Child::fork(|| {
        let client = shared_client(&e, &dir.0, |_| {});
        let hit = client.get_token(&Identity::SYSTEM, &res(ARM));
        hit.is_ok_and(|(t, _)| t == first) && client.invalidate(&Identity::SYSTEM, &res(ARM))
    });
    assert!(
        exited_ok(child.wait()),
        "the child saw the token and dropped it"
    );
    assert_eq!(e.stats().requests, 1, "the child's read was a hit");
    // (The emulator, like IMDS, may answer with the token it issued before.)
    client.get_token(&Identity::SYSTEM, &res(ARM)).unwrap();
    assert_eq!(
        e.stats().requests,
        2,
        "the next call in this process fetched again"
    );
}

#[test]
fn a_writer_killed_mid_write_leaves_a_table_the_next_writer_repairs() {
    let e = emulator(Mode::Imds, 0, |_| {});
    let dir = Dir::new("torn-write");
    let client = shared_client(&e, &dir.0, |_| {});
    let (first, _) = client.get_token(&Identity::SYSTEM, &res(ARM)).unwrap();
    let child = Child::fork(|| {
        let client = shared_client(&e, &dir.0, |_| {});
        host_hooks::die_mid_write(&client)
    });
    let status = child.wait();
    assert!(libc::WIFSIGNALED(status), "the child died inside the write");
    // The torn slot is never read as a token: the next call repairs the table and fetches.
    let (again, _) = client.get_token(&Identity::SYSTEM, &res(ARM)).unwrap();
    assert_eq!(host_hooks::repairs(&client), 1);
    assert_eq!(e.stats().requests, 2, "fetched anew after the repair");
    assert!(again == first || e.tokens().iter().any(|t| t.token.as_bytes() == again));
    let (hit, _) = client.get_token(&Identity::SYSTEM, &res(ARM)).unwrap();
    assert!(hit == again, "the repaired table serves hits");
    assert_eq!(e.stats().requests, 2);
}

#[test]
fn a_fetcher_killed_mid_fetch_is_taken_over_before_its_lease_ends() {
    let e = emulator(Mode::Imds, 0, |_| {});
    // The first request hangs for 120 s: its fetcher is killed long before.
    e.add_fault(FaultRule {
        count: Some(1),
        ..FaultRule::new(Fault::Delay { ms: 120_000 })
    });
    let dir = Dir::new("dead-fetcher");
    // Both processes on one fake clock that stands still: the 30 s lease never runs out
    // here, so only the dead holder's free lease byte can hand the fetch over.
    let clock = common::FakeClock::new();
    let config = |deadline_s: u64| {
        let clock = clock.clock();
        move |c: &mut ClientConfig| {
            c.clock = clock;
            c.deadline = Duration::from_secs(deadline_s);
            c.attempt_timeout = Duration::from_secs(deadline_s);
        }
    };
    let child = Child::fork(|| {
        let client = shared_client(&e, &dir.0, config(100));
        client.get_token(&Identity::SYSTEM, &res(ARM)).is_ok()
    });
    // Bounded: the child's request reaches the emulator within 30 s.
    for _ in 0..3000 {
        if e.stats().requests == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(e.stats().requests, 1, "the child is fetching");
    let client = shared_client(&e, &dir.0, config(2));
    let mut out = [0u8; 8192];
    // While the holder lives (and within the grace after its lease was handed out) a caller
    // waits for it.
    let waited = client.get_token_into(&Identity::SYSTEM, &res(ARM), &mut out);
    assert!(
        matches!(waited, Err(imds_cache_client::Error::Deadline { .. })),
        "{waited:?}"
    );
    clock.advance(2_000);
    let waited = client.get_token_into(&Identity::SYSTEM, &res(ARM), &mut out);
    assert!(
        matches!(waited, Err(imds_cache_client::Error::Deadline { .. })),
        "a live holder is waited for: {waited:?}"
    );
    assert_eq!(e.stats().requests, 1);
    assert!(libc::WIFSIGNALED(child.kill()));
    let (token, _) = client.get_token(&Identity::SYSTEM, &res(ARM)).unwrap();
    assert_eq!(e.stats().requests, 2, "taken over once the holder died");
    assert_eq!(client.stats().lease_lapses, 1);
    assert!(e.tokens().iter().any(|t| t.token.as_bytes() == token));
}

#[test]
fn a_reader_killed_mid_read_leaves_nothing_behind() {
    let e = emulator(Mode::Imds, 0, |_| {});
    let dir = Dir::new("dead-reader");
    let client = shared_client(&e, &dir.0, |_| {});
    let (token, _) = client.get_token(&Identity::SYSTEM, &res(ARM)).unwrap();
    let child = Child::fork(|| {
        let client = shared_client(&e, &dir.0, |_| {});
        let mut out = [0u8; 8192];
        // Reads until it is killed (bounded: 10 million hits).
        for _ in 0..10_000_000 {
            if client
                .get_token_into(&Identity::SYSTEM, &res(ARM), &mut out)
                .is_err()
            {
                return false;
            }
        }
        true
    });
    std::thread::sleep(Duration::from_millis(200));
    child.kill();
    let (again, _) = client.get_token(&Identity::SYSTEM, &res(ARM)).unwrap();
    assert!(again == token, "the same token, still a hit");
    assert_eq!(
        host_hooks::repairs(&client),
        0,
        "a reader writes nothing to repair"
    );
    assert_eq!(e.stats().requests, 1);
}

#[test]
fn a_forked_child_shares_the_table_and_writes_with_its_own_lock() {
    let e = emulator(Mode::Imds, 0, |_| {});
    let dir = Dir::new("fork");
    let client = shared_client(&e, &dir.0, |_| {});
    let (arm, _) = client.get_token(&Identity::SYSTEM, &res(ARM)).unwrap();
    let child = Child::fork(|| {
        let hit = client.get_token(&Identity::SYSTEM, &res(ARM));
        let vault = client.get_token(&Identity::SYSTEM, &res(RESOURCES[1]));
        hit.is_ok_and(|(t, _)| t == arm) && vault.is_ok()
    });
    assert!(exited_ok(child.wait()));
    assert_eq!(e.stats().requests, 2, "the child's hit was one");
    client
        .get_token(&Identity::SYSTEM, &res(RESOURCES[1]))
        .unwrap();
    assert_eq!(
        e.stats().requests,
        2,
        "the child's token is this process's hit"
    );
}

#[test]
fn layouts_that_differ_use_their_own_tables_and_one_budget() {
    let e = emulator(Mode::Imds, 0, |_| {});
    let dir = Dir::new("skew");
    let clock = common::FakeClock::new();
    // A budget of 2 starts per window on a clock that stands still: the third start on the
    // host waits, whichever client makes it.
    let config = |capacity: usize| {
        let clock = clock.clone();
        move |c: &mut ClientConfig| {
            c.capacity = capacity;
            c.clock = clock.clock();
            c.deadline = Duration::from_secs(1);
            c.refresher = false;
            c.cache = Config {
                rate: 2,
                ..Config::DEFAULT
            };
        }
    };
    let small = shared_client(&e, &dir.0, config(64));
    let large = shared_client(&e, &dir.0, config(128));
    assert_eq!(dir.files("table-").len(), 2, "one table file per layout");
    assert_eq!(dir.files("budget-").len(), 1, "one budget file for all");
    small.get_token(&Identity::SYSTEM, &res(ARM)).unwrap();
    large.get_token(&Identity::SYSTEM, &res(ARM)).unwrap();
    assert_eq!(e.stats().requests, 2, "the tables are apart");
    let held_back = large.get_token(&Identity::SYSTEM, &res(RESOURCES[1]));
    assert!(
        matches!(held_back, Err(imds_cache_client::Error::Deadline { .. })),
        "the other table's starts count: {held_back:?}"
    );
    assert_eq!(e.stats().requests, 2);
    clock.advance(2_000);
    large
        .get_token(&Identity::SYSTEM, &res(RESOURCES[1]))
        .unwrap();
    assert_eq!(e.stats().requests, 3);
}

#[test]
fn an_endpoint_named_three_ways_is_one_table_and_one_budget() {
    let e = emulator(Mode::Imds, 0, |_| {});
    let dir = Dir::new("names");
    let authority = shared_client(&e, &dir.0, |_| {});
    let token_url = shared_client(&e, &dir.0, |c| {
        if let imds_cache_client::SourceSpec::Explicit(owned) = &mut c.source {
            owned.url = e.token_url();
        }
    });
    assert_eq!(
        dir.files("table-").len(),
        1,
        "an authority and its token URL: one table"
    );
    authority.get_token(&Identity::SYSTEM, &res(ARM)).unwrap();
    token_url.get_token(&Identity::SYSTEM, &res(ARM)).unwrap();
    assert_eq!(e.stats().requests, 1);
    // As an application finds it: from the environment, with a trailing `/`.
    let (url, share_dir) = (e.url(), dir.0.clone());
    let child = Child::fork(move || {
        for (name, _) in std::env::vars() {
            if name.starts_with("IDENTITY_")
                || name.starts_with("MSI_")
                || name.starts_with("IMDS_")
            {
                std::env::remove_var(name);
            }
        }
        std::env::set_var("AZURE_POD_IDENTITY_AUTHORITY_HOST", format!("{url}/"));
        let client = Client::with_config(ClientConfig {
            share: Share::Host,
            share_dir: Some(share_dir),
            ..ClientConfig::default()
        })
        .unwrap();
        host_hooks::shares_host(&client) && client.get_token(&Identity::SYSTEM, &res(ARM)).is_ok()
    });
    assert!(exited_ok(child.wait()));
    assert_eq!(
        dir.files("table-").len(),
        1,
        "the environment's URL: the same table"
    );
    assert_eq!(
        e.stats().requests,
        1,
        "the child found the token in the host's table"
    );
}

#[test]
fn a_retry_after_seen_by_one_process_holds_back_all() {
    let e = emulator(Mode::Imds, 0, |_| {});
    e.add_fault(FaultRule {
        count: Some(1),
        resource: Some(ARM.to_string()),
        ..FaultRule::new(Fault::TooManyRequests {
            retry_after: Some(5),
        })
    });
    let dir = Dir::new("retry-after");
    // One fake clock that stands still: nothing is released by time passing.
    let clock = common::FakeClock::new();
    let config = |c: &mut ClientConfig| {
        c.clock = clock.clock();
        c.deadline = Duration::from_secs(1);
        c.refresher = false;
    };
    let child = Child::fork(|| {
        let client = shared_client(&e, &dir.0, config);
        // The 429 with Retry-After: 5 s; the retry is due after this call's deadline.
        matches!(
            client.get_token(&Identity::SYSTEM, &res(ARM)),
            Err(imds_cache_client::Error::Deadline { .. })
        )
    });
    assert!(exited_ok(child.wait()));
    assert_eq!(e.stats().sent_429, 1);
    let client = shared_client(&e, &dir.0, config);
    let held_back = client.get_token(&Identity::SYSTEM, &res(RESOURCES[1]));
    assert!(
        matches!(held_back, Err(imds_cache_client::Error::Deadline { .. })),
        "another key, another process, the same window: {held_back:?}"
    );
    assert_eq!(e.stats().requests, 1);
    clock.advance(6_000);
    client
        .get_token(&Identity::SYSTEM, &res(RESOURCES[1]))
        .unwrap();
    assert_eq!(e.stats().requests, 2);
}

/// A client asked to share through `dir`, with the warnings it gave.
fn refused_client(e: &Emulator, dir: &Path) -> (Client, Vec<String>) {
    let warnings = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&warnings);
    let client = client_for(e, |c| {
        c.share = Share::Host;
        c.share_dir = Some(dir.to_path_buf());
        c.events = Some(Observer::new(move |event: &Event<'_>| {
            if let Event::NotShared { reason } = event {
                seen.lock().unwrap().push(reason.to_string());
            }
        }));
    });
    let warnings = warnings.lock().unwrap().clone();
    (client, warnings)
}

#[test]
fn untrusted_set_ups_fall_back_to_a_private_table_with_one_warning() {
    let e = emulator(Mode::Imds, 0, |_| {});
    let open = Dir::new("hostile-dir");
    std::fs::set_permissions(&open.0, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (client, warnings) = refused_client(&e, &open.0);
    assert!(!host_hooks::shares_host(&client));
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains(&*open.0.to_string_lossy()),
        "{warnings:?}"
    );
    assert!(
        client.get_token(&Identity::SYSTEM, &res(ARM)).is_ok(),
        "never fails a call"
    );
    assert!(open.files("table-").is_empty(), "nothing written there");

    // A table file others could read.
    let dir = Dir::new("hostile-file");
    drop(shared_client(&e, &dir.0, |_| {}));
    let table = dir.files("table-").pop().unwrap();
    std::fs::set_permissions(&table, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (client, warnings) = refused_client(&e, &dir.0);
    assert!(!host_hooks::shares_host(&client));
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("table-"),
        "names the file: {warnings:?}"
    );

    let refused = |what: &str, expect: &str| {
        let (client, warnings) = refused_client(&e, &dir.0);
        assert!(!host_hooks::shares_host(&client), "{what}");
        assert_eq!(warnings.len(), 1, "{what}: {warnings:?}");
        assert!(warnings[0].contains(expect), "{what}: {warnings:?}");
        assert!(
            client.get_token(&Identity::SYSTEM, &res(ARM)).is_ok(),
            "{what}"
        );
    };
    std::fs::set_permissions(&table, std::fs::Permissions::from_mode(0o600)).unwrap();
    // Another owner (the tests run as root, which can give it away).
    std::os::unix::fs::chown(&table, Some(65534), None).unwrap();
    refused("another owner", "65534");
    std::os::unix::fs::chown(&table, Some(0), None).unwrap();
    // The wrong size, and a header that is not ours.
    let good = std::fs::read(&table).unwrap();
    std::fs::write(&table, &good[..4096]).unwrap();
    refused("a short file", "4096");
    let mut foreign = good.clone();
    foreign[..8].copy_from_slice(b"NOTOURS!");
    std::fs::write(&table, &foreign).unwrap();
    refused("a bad magic", "magic");
    // A symlink where the table file should be.
    std::fs::remove_file(&table).unwrap();
    std::os::unix::fs::symlink("/dev/null", &table).unwrap();
    refused("a symlink", "symbolic link");
}

#[test]
fn sharing_is_asked_for_by_the_environment() {
    assert_eq!(
        std::env::var("IMDS_CACHE_SHARE").ok(),
        None,
        "the test environment leaves sharing to each test"
    );
    let e = emulator(Mode::Imds, 0, |_| {});
    let private = client_for(&e, |_| {});
    assert!(!host_hooks::shares_host(&private), "per process by default");
}
