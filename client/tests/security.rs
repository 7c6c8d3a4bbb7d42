//! Security behaviour of the driver against scripted servers: endless and
//! huge bodies refused at the bound, a trickle cut at the deadline, Arc's key-file rules
//! (outside the folder, a symlink out of it, wrong extension, over 4096 bytes), every control
//! character (C0 and DEL) in resources, scopes, identity selectors, endpoints, secrets and Arc
//! key-file contents refused before any byte is sent.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use imds_cache::{ArcError, Config, FailureKind, Flavour, Identity, Resource};
use imds_cache_client::{ArcKeyError, Client, ClientConfig, Error, OwnedEndpoint, SourceSpec};

const ARM: &str = "https://management.azure.com";

/// A server that answers every connection with `respond` and counts connections.
fn serve(
    respond: impl Fn(&mut TcpStream, usize) + Send + Sync + 'static,
) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { return };
            let n = seen.fetch_add(1, Ordering::SeqCst);
            let mut req = [0u8; 4096];
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = s.read(&mut req);
            respond(&mut s, n);
        }
    });
    (url, count)
}

fn client(flavour: Flavour, url: String, tweak: impl FnOnce(&mut ClientConfig)) -> Client {
    let mut config = ClientConfig {
        source: SourceSpec::Explicit(OwnedEndpoint {
            flavour,
            url,
            secret: None,
            default_client_id: None,
        }),
        refresher: false,
        ..ClientConfig::default()
    };
    tweak(&mut config);
    Client::with_config(config).unwrap()
}

fn failure_kind(r: Result<(Vec<u8>, u64), Error>) -> Option<FailureKind> {
    match r {
        Err(Error::Failed { failure, .. }) => Some(failure.kind),
        Err(Error::Deadline { last }) => last.map(|f| f.kind),
        _ => None,
    }
}

#[test]
fn an_endless_body_is_refused_at_the_bound() {
    let (url, _) = serve(|s, _| {
        let _ = s.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"access_token\":\"",
        );
        let chunk = [b'a'; 64 * 1024];
        // Up to 10 MB, then the connection closes; the client must stop long before.
        for _ in 0..160 {
            if s.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    let c = client(Flavour::Imds, url, |_| {});
    let started = Instant::now();
    let kind = failure_kind(c.get_token(&Identity::SYSTEM, &Resource::new(ARM).unwrap()));
    assert_eq!(kind, Some(FailureKind::TokenTooLarge));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_huge_content_length_is_refused_before_reading_it() {
    let (url, _) = serve(|s, _| {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10485760\r\n\r\n{");
        std::thread::sleep(Duration::from_secs(3));
    });
    let c = client(Flavour::Imds, url, |_| {});
    let started = Instant::now();
    assert_eq!(
        failure_kind(c.get_token(&Identity::SYSTEM, &Resource::new(ARM).unwrap())),
        Some(FailureKind::TokenTooLarge)
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused from the header, not after reading"
    );
}

#[test]
fn a_trickle_is_cut_at_the_deadline() {
    let (url, _) = serve(|s, _| {
        let body = br#"{"access_token":"t","expires_in":"3600"}"#;
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        for b in body {
            if s.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let c = client(Flavour::Imds, url, |c| {
        c.attempt_timeout = Duration::from_millis(700);
        c.deadline = Duration::from_millis(1500);
    });
    let started = Instant::now();
    let r = c.get_token(&Identity::SYSTEM, &Resource::new(ARM).unwrap());
    assert!(matches!(r, Err(Error::Deadline { .. })), "{r:?}");
    // The whole body would take 8 s; the 1.5 s deadline cuts it (1 s slack for a busy machine).
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
}

/// An Arc endpoint that challenges with `realm` and counts how often a key was sent.
fn arc_server(realm: String) -> (String, Arc<AtomicUsize>) {
    let keys_sent = Arc::new(AtomicUsize::new(0));
    let sent = keys_sent.clone();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/metadata/identity/oauth2/token",
        listener.local_addr().unwrap()
    );
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { return };
            let mut req = vec![0u8; 16 * 1024];
            let n = s.read(&mut req).unwrap_or(0);
            if String::from_utf8_lossy(&req[..n]).contains("Authorization: Basic") {
                sent.fetch_add(1, Ordering::SeqCst);
                let body = br#"{"access_token":"t","expires_in":"3600"}"#;
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(body);
            } else {
                let _ = write!(s, "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm={realm}\r\nContent-Length: 0\r\n\r\n");
            }
        }
    });
    (url, keys_sent)
}

#[test]
fn arc_key_file_rules() {
    let dir = std::env::temp_dir().join(format!("imds-cache-arc-{}", std::process::id()));
    let outside =
        std::env::temp_dir().join(format!("imds-cache-outside-{}.key", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("good.key"), b"secret-key").unwrap();
    std::fs::write(dir.join("big.key"), vec![b'k'; 4097]).unwrap();
    std::fs::write(dir.join("empty.key"), b"").unwrap();
    std::fs::write(dir.join("wrong.txt"), b"secret-key").unwrap();
    std::fs::create_dir_all(dir.join("folder.key")).unwrap();
    std::fs::write(&outside, b"secret-key").unwrap();
    let _ = std::fs::remove_file(dir.join("link.key"));
    std::os::unix::fs::symlink(&outside, dir.join("link.key")).unwrap();
    let d = dir.to_str().unwrap().to_string();
    let outside = outside.to_str().unwrap().to_string();
    let dotted = format!(
        "{d}/../{}",
        std::path::Path::new(&outside)
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
    );
    use ArcKeyError as E;
    let cases = [
        (format!("{d}/good.key"), None),
        (format!("{d}/big.key"), Some(E::TooLarge)),
        (format!("{d}/missing.key"), Some(E::NotFound)),
        (
            format!("{d}/empty.key"),
            Some(E::Contents(ArcError::EmptyKey)),
        ),
        (format!("{d}/folder.key"), Some(E::NotAFile)),
        (
            format!("{d}/wrong.txt"),
            Some(E::Challenge(ArcError::NotAKeyFile)),
        ),
        (format!("{d}/link.key"), Some(E::NotAFile)),
        (outside.clone(), Some(E::OutsideFolder)),
        (dotted, Some(E::Challenge(ArcError::DotComponent))),
    ];
    for (realm, refused) in cases {
        let (url, keys_sent) = arc_server(realm.clone());
        let c = client(Flavour::Arc, url, |c| {
            c.cache = Config::DEFAULT;
            c.cache.arc_key_dir.push_str(&d).unwrap();
        });
        let r = c.get_token(&Identity::SYSTEM, &Resource::new(ARM).unwrap());
        assert_eq!(
            keys_sent.load(Ordering::SeqCst),
            usize::from(refused.is_none()),
            "{realm}: key sent only when accepted"
        );
        match refused {
            None => assert!(r.is_ok(), "{realm}: {r:?}"),
            Some(cause) => {
                let want = Error::ArcKey {
                    path: realm.clone(),
                    cause,
                };
                assert_eq!(r.as_ref().err(), Some(&want), "{realm}");
                assert_eq!(want.code(), "arc_key");
                // Negative-cached as a bad challenge: the next call asks nobody.
                let again = c.get_token(&Identity::SYSTEM, &Resource::new(ARM).unwrap());
                assert_eq!(
                    failure_kind(again),
                    Some(FailureKind::BadChallenge),
                    "{realm}"
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&outside);
}

#[test]
fn an_unreadable_arc_key_file_names_the_himds_group() {
    let dir = std::env::temp_dir().join(format!("imds-cache-arc-perm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("locked.key");
    std::fs::write(&key, b"secret-key").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o000)).unwrap();
    // Root reads any file whatever its mode: then this test runs again in a child process
    // as `nobody` (setpriv), where the mode holds.
    if std::fs::read(&key).is_ok() {
        let _ = std::fs::remove_dir_all(&dir);
        as_nobody("an_unreadable_arc_key_file_names_the_himds_group");
        return;
    }
    let d = dir.to_str().unwrap().to_string();
    let realm = key.to_str().unwrap().to_string();
    let (url, keys_sent) = arc_server(realm.clone());
    let c = client(Flavour::Arc, url, |c| {
        c.cache = Config::DEFAULT;
        c.cache.arc_key_dir.push_str(&d).unwrap();
    });
    let err = c
        .get_token(&Identity::SYSTEM, &Resource::new(ARM).unwrap())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("permission denied reading {realm}: is this user in the himds group?")
    );
    assert_eq!(keys_sent.load(Ordering::SeqCst), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs the test `name` of this binary again as uid and gid 65534 and checks that it passed;
/// skipped, saying why, where `setpriv` is missing or this binary is out of that user's reach.
fn as_nobody(name: &str) {
    let exe = std::env::current_exe().unwrap();
    let run = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&exe)
        .args(["--exact", name, "--test-threads=1"])
        .env("TMPDIR", "/tmp")
        .output();
    match run {
        Ok(out) if out.status.success() => {
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(stdout.contains("1 passed"), "{stdout}");
        }
        Ok(out) if String::from_utf8_lossy(&out.stderr).contains("Permission denied") => {
            eprintln!("skipped as root: user 65534 cannot run {}", exe.display());
        }
        Ok(out) => panic!(
            "as user 65534: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => eprintln!("skipped as root: setpriv is not available ({e})"),
    }
}

/// Every control character (C0, DEL) placed in the middle of a valid value.
fn with_each_control(valid: &str) -> Vec<String> {
    let mid = valid.len() / 2;
    (0u8..0x20)
        .chain([0x7f])
        .map(|c| format!("{}{}{}", &valid[..mid], c as char, &valid[mid..]))
        .collect()
}

#[test]
fn control_characters_are_refused_before_anything_is_sent() {
    // Each connection is answered with its number: a sentinel sent last learns how many came
    // before it.
    let (url, connections) = serve(|s, n| {
        let _ = write!(s, "{n}");
    });
    // Resources, scopes and every identity selector: refused by the constructors.
    for bad in with_each_control(ARM)
        .into_iter()
        .chain(["https://x\r\nX-Forwarded-For: 1.2.3.4".to_string()])
    {
        assert!(Resource::new(&bad).is_err(), "{bad:?}");
        assert!(Resource::from_scopes(&[&bad]).is_err(), "{bad:?}");
    }
    let guid = "00000000-0000-4000-8000-000000000000";
    let rid = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/u";
    for bad in with_each_control(guid) {
        assert!(Identity::client_id(&bad).is_err(), "{bad:?}");
        assert!(Identity::object_id(&bad).is_err(), "{bad:?}");
    }
    for bad in with_each_control(rid) {
        assert!(Identity::resource_id(&bad).is_err(), "{bad:?}");
    }
    // Endpoints and secrets from the configuration or the environment: the client is made
    // (the environment is read when a request is built, D11), every call fails, nothing is sent.
    let mut configs = Vec::new();
    for flavour in [Flavour::Imds, Flavour::AppService2019, Flavour::Msi2017] {
        for bad_url in with_each_control(&format!("{url}/msi/token")) {
            configs.push((flavour, bad_url, Some("secret".to_string())));
        }
    }
    for flavour in [Flavour::AppService2019, Flavour::Msi2017] {
        for bad_secret in with_each_control("a-secret-value") {
            configs.push((flavour, format!("{url}/msi/token"), Some(bad_secret)));
        }
    }
    for (flavour, url, secret) in configs {
        let made = Client::with_config(ClientConfig {
            source: SourceSpec::Explicit(OwnedEndpoint {
                flavour,
                url: url.clone(),
                secret: secret.clone(),
                default_client_id: None,
            }),
            refresher: false,
            deadline: Duration::from_millis(200),
            ..ClientConfig::default()
        });
        if let Ok(c) = made {
            let r = c.get_token(&Identity::SYSTEM, &Resource::new(ARM).unwrap());
            assert!(r.is_err(), "{flavour:?} {url:?} {secret:?}");
        }
    }
    let mut sentinel = TcpStream::connect(url.trim_start_matches("http://")).unwrap();
    sentinel.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let mut number = String::new();
    sentinel.read_to_string(&mut number).unwrap();
    assert_eq!(number, "0", "nothing was sent before the sentinel");
    assert_eq!(connections.load(Ordering::SeqCst), 1);

    // Arc: a key file whose contents hold a control character is never sent.
    let dir = std::env::temp_dir().join(format!("imds-cache-arc-ctl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.to_str().unwrap().to_string();
    for (i, contents) in with_each_control("0123456789abcdef").iter().enumerate() {
        let path = dir.join(format!("k{i}.key"));
        std::fs::write(&path, contents).unwrap();
        let (url, keys_sent) = arc_server(path.to_str().unwrap().to_string());
        let c = client(Flavour::Arc, url, |c| {
            c.cache = Config::DEFAULT;
            c.cache.arc_key_dir.push_str(&d).unwrap();
        });
        let r = c.get_token(&Identity::SYSTEM, &Resource::new(ARM).unwrap());
        assert!(r.is_err(), "{contents:?}");
        assert_eq!(keys_sent.load(Ordering::SeqCst), 0, "{contents:?} sent");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
