//! The C ABI's full handle (and the sans-IO handle over a real socket) against the in-process
//! emulator, called from Rust as C would.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::ptr::{null, null_mut};
use std::sync::Arc;

use crate::*;
use imds_emulator::{Emulator, Fault, FaultRule, Mode};

type R = imds_cache_result;
const ARM: &str = "https://management.azure.com";
const VAULT: &str = "https://vault.azure.net";

fn emulator(mode: Mode, identities: usize) -> Emulator {
    let mut c = imds_emulator::Config::new(mode);
    c.identities = identities;
    Emulator::start(c).expect("emulator")
}

/// A handle: the driver if `full`, configured for the emulator.
struct Handle(*mut imds_cache);
// SAFETY: the full handle is thread-safe (its functions take `const imds_cache *`).
unsafe impl Send for Handle {}
unsafe impl Sync for Handle {}

impl Drop for Handle {
    fn drop(&mut self) {
        unsafe { imds_cache_free(self.0) };
    }
}

fn config_for(e: &Emulator, tweak: impl FnOnce(*mut imds_cache_config)) -> *mut imds_cache_config {
    let mut c = null_mut();
    unsafe {
        assert_eq!(imds_cache_config_new(&mut c), R::Ok);
        let (flavour, url) = match e.mode() {
            Mode::Arc => (imds_cache_flavour::Arc, e.token_url()),
            _ => (imds_cache_flavour::Imds, e.url()),
        };
        assert_eq!(
            imds_cache_config_set_endpoint(c, flavour as u32, url.as_ptr(), url.len(), null(), 0),
            R::Ok
        );
        if e.mode() == Mode::Arc {
            let dir = e.arc_key_dir().to_str().unwrap();
            assert_eq!(
                imds_cache_config_set_arc_key_dir(c, dir.as_ptr(), dir.len()),
                R::Ok
            );
        }
        tweak(c);
    }
    c
}

fn full(e: &Emulator, tweak: impl FnOnce(*mut imds_cache_config)) -> Handle {
    let c = config_for(e, tweak);
    let mut h = null_mut();
    unsafe {
        assert_eq!(imds_cache_new(c, &mut h), R::Ok);
        imds_cache_config_free(c);
    }
    Handle(h)
}

fn client_id(id: &str) -> imds_cache_identity {
    let mut out = imds_cache_identity {
        kind: 0,
        value: null(),
        value_len: 0,
    };
    unsafe {
        assert_eq!(
            imds_cache_identity_client_id(id.as_ptr(), id.len(), &mut out),
            R::Ok
        )
    };
    out
}

fn system() -> imds_cache_identity {
    imds_cache_identity {
        kind: imds_cache_identity_kind::System as u32,
        value: null(),
        value_len: 0,
    }
}

fn get(h: &Handle, id: &imds_cache_identity, resource: &str, buf: &mut [u8]) -> (R, usize, u64) {
    let (mut n, mut exp) = (0, 0);
    let r = unsafe {
        imds_cache_get_token(
            h.0,
            id,
            resource.as_ptr(),
            resource.len(),
            buf.as_mut_ptr(),
            buf.len(),
            &mut n,
            &mut exp,
        )
    };
    (r, n, exp)
}

#[test]
#[cfg_attr(miri, ignore = "sockets and threads: Miri has no network")]
fn blocking_get_token_and_buffer_sizes() {
    let e = emulator(Mode::Imds, 2);
    let h = full(&e, |_| {});
    let user = e.identities()[1].client_id.clone();
    let id = client_id(&user);
    let mut buf = vec![0u8; 16 * 1024];
    let (r, n, exp) = get(&h, &id, ARM, &mut buf);
    assert_eq!(r, R::Ok);
    let issued = e.tokens();
    let t = issued
        .iter()
        .find(|t| t.token.as_bytes() == &buf[..n])
        .expect("the emulator's token");
    assert!(t.client_id.eq_ignore_ascii_case(&user));
    assert_eq!(exp, t.exp);
    // (NULL, 0): the size; one byte short: BUFFER_TOO_SMALL with the size, nothing past it.
    let mut needed = 0;
    let r = unsafe {
        imds_cache_get_token(
            h.0,
            &id,
            ARM.as_ptr(),
            ARM.len(),
            null_mut(),
            0,
            &mut needed,
            null_mut(),
        )
    };
    assert_eq!((r, needed), (R::BufferTooSmall, n));
    let mut short = vec![0xEEu8; n];
    let (r, m, _) = get(&h, &id, ARM, &mut short[..n - 1]);
    assert_eq!((r, m), (R::BufferTooSmall, n));
    assert_eq!(short[n - 1], 0xEE);
    // Bad arguments.
    assert_eq!(get(&h, &id, "", &mut buf).0, R::InvalidResource);
    let bad = imds_cache_identity {
        kind: 1,
        value: b"x".as_ptr(),
        value_len: 1,
    };
    assert_eq!(get(&h, &bad, ARM, &mut buf).0, R::InvalidIdentity);
    let r = unsafe {
        imds_cache_get_token(
            h.0,
            &id,
            ARM.as_ptr(),
            ARM.len(),
            buf.as_mut_ptr(),
            buf.len(),
            null_mut(),
            null_mut(),
        )
    };
    assert_eq!(r, R::NullPointer);
    // Only one request went out for all of that.
    assert_eq!(e.stats().requests, 1);
    // An identity the endpoint does not know: terminal.
    let stranger = client_id("00000000-0000-0000-0000-000000000001");
    assert_eq!(get(&h, &stranger, ARM, &mut buf).0, R::Failed);

    // Stats, invalidate, flavour, atfork.
    unsafe {
        let mut stats = std::mem::MaybeUninit::uninit();
        assert_eq!(imds_cache_get_stats(h.0, stats.as_mut_ptr()), R::Ok);
        let stats = stats.assume_init();
        assert!(
            stats.hits >= 1 && stats.tokens == 1 && stats.failures_terminal == 1,
            "{stats:?}"
        );
        let mut dropped = false;
        assert_eq!(
            imds_cache_invalidate(h.0, &id, ARM.as_ptr(), ARM.len(), &mut dropped),
            R::Ok
        );
        assert!(dropped);
        assert_eq!(get(&h, &id, ARM, &mut buf).0, R::Ok);
        let mut flavour = 99;
        assert_eq!(imds_cache_flavour_of(h.0, &mut flavour), R::Ok);
        assert_eq!(flavour, 0);
        assert_eq!(imds_cache_atfork_child(h.0), R::Ok);
        assert_eq!(get(&h, &id, ARM, &mut buf).0, R::Ok);
    }
}

#[test]
#[cfg_attr(miri, ignore = "sockets and threads: Miri has no network")]
fn sixteen_threads_share_one_fetch() {
    let mut c = imds_emulator::Config::new(Mode::Imds);
    c.faults = vec![FaultRule::new(Fault::Delay { ms: 200 })];
    let e = Emulator::start(c).unwrap();
    let h = Arc::new(full(&e, |_| {}));
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let h = Arc::clone(&h);
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 16 * 1024];
                let (r, n, _) = get(&h, &system(), ARM, &mut buf);
                assert_eq!(r, R::Ok);
                buf.truncate(n);
                buf
            })
        })
        .collect();
    let tokens: Vec<Vec<u8>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(tokens.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(e.stats().requests, 1, "single flight");
}

#[test]
#[cfg_attr(miri, ignore = "sockets and threads: Miri has no network")]
fn prefetch_warms_every_pair_within_the_budget() {
    let e = emulator(Mode::Imds, 6);
    let h = full(&e, |_| {});
    let ids: Vec<String> = e.identities()[1..]
        .iter()
        .map(|i| i.client_id.clone())
        .collect();
    let identities: Vec<imds_cache_identity> = ids.iter().map(|i| client_id(i)).collect();
    let resources = [ARM, VAULT].map(|r| imds_cache_str {
        ptr: r.as_ptr(),
        len: r.len(),
    });
    let mut report = std::mem::MaybeUninit::uninit();
    let r = unsafe {
        imds_cache_prefetch(
            h.0,
            identities.as_ptr(),
            identities.len(),
            resources.as_ptr(),
            resources.len(),
            0,
            report.as_mut_ptr(),
        )
    };
    assert_eq!(r, R::Ok);
    let report = unsafe { report.assume_init() };
    assert_eq!(
        (report.total, report.ok, report.failed, report.first_error),
        (12, 12, 0, R::Ok)
    );
    let stats = e.stats();
    assert_eq!(stats.requests, 12);
    assert_eq!(stats.status(429), 0);
    // A malformed identity fails the call before anything is fetched.
    let bad = [imds_cache_identity {
        kind: 2,
        value: b"x".as_ptr(),
        value_len: 1,
    }];
    let mut report = std::mem::MaybeUninit::uninit();
    let r = unsafe {
        imds_cache_prefetch(
            h.0,
            bad.as_ptr(),
            1,
            resources.as_ptr(),
            2,
            0,
            report.as_mut_ptr(),
        )
    };
    assert_eq!(r, R::InvalidIdentity);
}

#[test]
#[cfg_attr(miri, ignore = "sockets and threads: Miri has no network")]
fn arc_through_the_full_handle() {
    let e = emulator(Mode::Arc, 0);
    let h = full(&e, |_| {});
    let mut buf = vec![0u8; 16 * 1024];
    let (r, n, _) = get(&h, &system(), ARM, &mut buf);
    assert_eq!(r, R::Ok);
    assert!(e.tokens().iter().any(|t| t.token.as_bytes() == &buf[..n]));
    assert_eq!(e.stats().requests, 2, "the challenge and the answer");
}

#[test]
#[cfg_attr(miri, ignore = "sockets and threads: Miri has no network")]
fn nothing_listening_is_unavailable() {
    // A port that was free a moment ago.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = null_mut();
    let url = format!("http://127.0.0.1:{port}");
    let mut h = null_mut();
    unsafe {
        assert_eq!(imds_cache_config_new(&mut c), R::Ok);
        assert_eq!(
            imds_cache_config_set_endpoint(c, 0, url.as_ptr(), url.len(), null(), 0),
            R::Ok
        );
        assert_eq!(imds_cache_new(c, &mut h), R::Ok);
        imds_cache_config_free(c);
    }
    let h = Handle(h);
    let mut buf = vec![0u8; 64];
    assert_eq!(get(&h, &system(), ARM, &mut buf).0, R::Unavailable);
}

#[test]
#[cfg_attr(miri, ignore = "sockets and threads: Miri has no network")]
fn https_endpoints_need_the_sans_io_handle() {
    let mut c = null_mut();
    let url = "https://localhost:2377/metadata/identity/oauth2/token";
    let mut h = null_mut();
    unsafe {
        assert_eq!(imds_cache_config_new(&mut c), R::Ok);
        let flavour = imds_cache_flavour::ServiceFabric as u32;
        assert_eq!(
            imds_cache_config_set_endpoint(c, flavour, url.as_ptr(), url.len(), b"h".as_ptr(), 1),
            R::Ok
        );
        assert_eq!(imds_cache_new(c, &mut h), R::Unsupported);
        assert!(h.is_null());
        // The sans-IO handle takes it: the caller speaks TLS.
        let mut size = 0;
        assert_eq!(imds_cache_config_set_capacity(c, 2), R::Ok);
        assert_eq!(imds_cache_sansio_storage_size(c, &mut size), R::Ok);
        let mut mem = vec![0u64; size.div_ceil(8)];
        let p = mem.as_mut_ptr().cast();
        let mut h = null_mut();
        assert_eq!(imds_cache_sansio_init(p, size, c, &mut h), R::Ok);
        let (mut n, mut answer) = (0, std::mem::MaybeUninit::uninit());
        let r = imds_cache_sansio_lookup(
            h,
            &system(),
            ARM.as_ptr(),
            ARM.len(),
            imds_cache_now_ms(),
            null_mut(),
            0,
            &mut n,
            answer.as_mut_ptr(),
        );
        assert_eq!(r, R::Ok);
        let ticket = answer.assume_init().ticket;
        let mut req = vec![0u8; 8192];
        let mut info = std::mem::MaybeUninit::uninit();
        assert_eq!(
            imds_cache_sansio_request(
                h,
                ticket,
                imds_cache_now_ms(),
                req.as_mut_ptr(),
                req.len(),
                &mut n,
                info.as_mut_ptr()
            ),
            R::Ok
        );
        let info = info.assume_init();
        assert!(info.tls);
        assert_eq!(info.port, 2377);
        assert_eq!(imds_cache_sansio_deinit(h), R::Ok);
        imds_cache_config_free(c);
    }
}

#[test]
#[cfg_attr(miri, ignore = "sockets and threads: Miri has no network")]
fn sans_io_over_a_real_socket() {
    let e = emulator(Mode::Imds, 1);
    let c = config_for(&e, |c| unsafe {
        assert_eq!(imds_cache_config_set_capacity(c, 8), R::Ok);
    });
    let mut size = 0;
    let mut h = null_mut();
    let mut mem;
    unsafe {
        assert_eq!(imds_cache_sansio_storage_size(c, &mut size), R::Ok);
        mem = vec![0u64; size.div_ceil(8)];
        assert_eq!(
            imds_cache_sansio_init(mem.as_mut_ptr().cast(), size, c, &mut h),
            R::Ok
        );
        imds_cache_config_free(c);
    }
    let user = e.identities()[1].client_id.clone();
    let id = client_id(&user);
    let mut token = vec![0u8; 16 * 1024];
    let now_ms = imds_cache_now_ms();
    let (mut n, mut answer) = (
        0,
        std::mem::MaybeUninit::<imds_cache_lookup_answer>::uninit(),
    );
    unsafe {
        assert_eq!(
            imds_cache_sansio_lookup(
                h,
                &id,
                VAULT.as_ptr(),
                VAULT.len(),
                now_ms,
                token.as_mut_ptr(),
                token.len(),
                &mut n,
                answer.as_mut_ptr()
            ),
            R::Ok
        );
        let answer = answer.assume_init();
        assert_eq!(answer.kind, imds_cache_lookup_kind::Fetch);
        let mut req = vec![0u8; 8192];
        let mut info = std::mem::MaybeUninit::<imds_cache_request_info>::uninit();
        assert_eq!(
            imds_cache_sansio_request(
                h,
                answer.ticket,
                now_ms,
                req.as_mut_ptr(),
                req.len(),
                &mut n,
                info.as_mut_ptr()
            ),
            R::Ok
        );
        let info = info.assume_init();
        let host =
            std::str::from_utf8(std::slice::from_raw_parts(info.host, info.host_len)).unwrap();
        let mut s = TcpStream::connect((host, info.port)).unwrap();
        s.write_all(&req[..n]).unwrap();
        let mut received = Vec::new();
        let mut chunk = [0u8; 512];
        loop {
            let k = s.read(&mut chunk).unwrap();
            let mut out = std::mem::MaybeUninit::<imds_cache_outcome>::uninit();
            let r = if k == 0 {
                imds_cache_sansio_eof(
                    h,
                    answer.ticket,
                    received.as_mut_ptr(),
                    received.len(),
                    imds_cache_now_ms(),
                    out.as_mut_ptr(),
                )
            } else {
                received.extend_from_slice(&chunk[..k]);
                imds_cache_sansio_feed(
                    h,
                    answer.ticket,
                    received.as_mut_ptr(),
                    received.len(),
                    imds_cache_now_ms(),
                    out.as_mut_ptr(),
                )
            };
            assert_eq!(r, R::Ok);
            let out = out.assume_init();
            if out.kind != imds_cache_outcome_kind::NeedMore {
                assert_eq!(out.kind, imds_cache_outcome_kind::Token);
                break;
            }
        }
        let mut hit = std::mem::MaybeUninit::<imds_cache_lookup_answer>::uninit();
        assert_eq!(
            imds_cache_sansio_lookup(
                h,
                &id,
                VAULT.as_ptr(),
                VAULT.len(),
                imds_cache_now_ms(),
                token.as_mut_ptr(),
                token.len(),
                &mut n,
                hit.as_mut_ptr()
            ),
            R::Ok
        );
        assert_eq!(hit.assume_init().kind, imds_cache_lookup_kind::Hit);
        assert!(e.tokens().iter().any(|t| t.token.as_bytes() == &token[..n]));
        assert_eq!(imds_cache_sansio_deinit(mem.as_mut_ptr().cast()), R::Ok);
    }
}
