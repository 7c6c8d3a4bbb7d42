//! The C ABI without I/O, called from Rust as C would: messages, version, the configuration
//! builder, identities, the sans-IO handle in caller memory (canned responses fed one byte at a
//! time, Arc's challenge, failures, tickets), and the pointer checks. Runs under Miri:
//! `cargo +nightly miri test -p imds-cache-ffi --lib tests::sansio tests::alloc`.

use std::ffi::c_void;
use std::ptr::{null, null_mut};

use crate::*;

type R = imds_cache_result;

const NOW: u64 = 1_700_000_000_000;
const ARM: &str = "https://management.azure.com";
const CLIENT_ID: &str = "fe83865b-495e-4ec7-9574-12b264882c9f";
const RID: &str = "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1";

/// Caller memory for a sans-IO handle: 8-aligned, its pointer taken once (as C would hold it).
struct Mem {
    words: Vec<u64>,
    ptr: *mut c_void,
    len: usize,
}

impl Mem {
    fn new(len: usize) -> Self {
        let mut words = vec![0xA5A5_A5A5_A5A5_A5A5u64; len.div_ceil(8) + 1];
        let ptr = words.as_mut_ptr().cast::<c_void>();
        Mem { words, ptr, len }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: the vector holds at least `len` bytes; no handle is live when this is read.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }
}

/// A small configuration: 4 entries, for `flavour` at `url`.
fn config(flavour: Option<(imds_cache_flavour, &str)>) -> *mut imds_cache_config {
    let mut c = null_mut();
    unsafe {
        assert_eq!(imds_cache_config_new(&mut c), R::Ok);
        assert_eq!(imds_cache_config_set_capacity(c, 4), R::Ok);
        assert_eq!(imds_cache_config_set_bytes_per_entry(c, 1024), R::Ok);
        if let Some((f, url)) = flavour {
            assert_eq!(
                imds_cache_config_set_endpoint(c, f as u32, url.as_ptr(), url.len(), null(), 0),
                R::Ok
            );
        }
    }
    c
}

/// A sans-IO handle over fresh memory.
fn handle(c: *const imds_cache_config) -> (Mem, *mut imds_cache_sansio) {
    let mut size = 0;
    unsafe {
        assert_eq!(imds_cache_sansio_storage_size(c, &mut size), R::Ok);
        let mem = Mem::new(size);
        let mut h = null_mut();
        assert_eq!(imds_cache_sansio_init(mem.ptr, mem.len, c, &mut h), R::Ok);
        assert_eq!(h.cast::<c_void>(), mem.ptr);
        (mem, h)
    }
}

fn system() -> imds_cache_identity {
    let mut id = imds_cache_identity {
        kind: 99,
        value: null(),
        value_len: 0,
    };
    unsafe { assert_eq!(imds_cache_identity_system(&mut id), R::Ok) };
    id
}

fn ok_response(token: &str) -> Vec<u8> {
    let body = format!(
        "{{\"access_token\":\"{token}\",\"expires_in\":\"86399\",\"token_type\":\"Bearer\"}}"
    );
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn lookup(
    h: *mut imds_cache_sansio,
    id: &imds_cache_identity,
    resource: &str,
    now_ms: u64,
    out: &mut [u8],
) -> (R, usize, Option<imds_cache_lookup_answer>) {
    let mut written = usize::MAX;
    let mut answer = std::mem::MaybeUninit::<imds_cache_lookup_answer>::uninit();
    let r = unsafe {
        imds_cache_sansio_lookup(
            h,
            id,
            resource.as_ptr(),
            resource.len(),
            now_ms,
            out.as_mut_ptr(),
            out.len(),
            &mut written,
            answer.as_mut_ptr(),
        )
    };
    let answer = (r == R::Ok).then(|| unsafe { answer.assume_init() });
    (r, written, answer)
}

fn request(
    h: *mut imds_cache_sansio,
    ticket: u64,
    now_ms: u64,
) -> (Vec<u8>, imds_cache_request_info) {
    let mut buf = vec![0u8; 8192];
    let mut n = 0;
    let mut info = std::mem::MaybeUninit::uninit();
    unsafe {
        assert_eq!(
            imds_cache_sansio_request(
                h,
                ticket,
                now_ms,
                buf.as_mut_ptr(),
                buf.len(),
                &mut n,
                info.as_mut_ptr()
            ),
            R::Ok
        );
        buf.truncate(n);
        (buf, info.assume_init())
    }
}

fn new_outcome() -> std::mem::MaybeUninit<imds_cache_outcome> {
    std::mem::MaybeUninit::uninit()
}

/// Feeds `response` one byte at a time, as a slow socket would deliver it. Returns the bytes
/// received too: a NEED_KEY_FILE outcome borrows its path from them.
fn feed_bytewise(
    h: *mut imds_cache_sansio,
    ticket: u64,
    response: &[u8],
    now_ms: u64,
) -> (imds_cache_outcome, Vec<u8>) {
    let mut received = Vec::with_capacity(response.len());
    for (i, b) in response.iter().enumerate() {
        received.push(*b);
        let mut out = new_outcome();
        let r = unsafe {
            imds_cache_sansio_feed(
                h,
                ticket,
                received.as_mut_ptr(),
                received.len(),
                now_ms,
                out.as_mut_ptr(),
            )
        };
        assert_eq!(r, R::Ok);
        let out = unsafe { out.assume_init() };
        if out.kind != imds_cache_outcome_kind::NeedMore {
            assert_eq!(i, response.len() - 1, "done only at the last byte");
            return (out, received);
        }
    }
    panic!("the response never completed");
}

#[test]
fn every_result_has_a_message_and_the_size_query_works() {
    let mut seen = std::collections::HashSet::new();
    for r in imds_cache_result::all() {
        assert!(seen.insert(r as u32), "numbers are unique");
        let mut n = 0;
        // (NULL, 0) is the size query.
        let q = unsafe { imds_cache_result_message(r as u32, null_mut(), 0, &mut n) };
        assert_eq!(q, R::BufferTooSmall);
        assert!(n > 0);
        // One byte short: BUFFER_TOO_SMALL, the size needed, nothing written past the end.
        let mut buf = vec![0xEEu8; n];
        let mut m = 0;
        let q = unsafe { imds_cache_result_message(r as u32, buf.as_mut_ptr(), n - 1, &mut m) };
        assert_eq!((q, m), (R::BufferTooSmall, n));
        assert_eq!(buf[n - 1], 0xEE);
        let q = unsafe { imds_cache_result_message(r as u32, buf.as_mut_ptr(), n, &mut m) };
        assert_eq!((q, m), (R::Ok, n));
        assert_eq!(std::str::from_utf8(&buf).unwrap(), r.message());
    }
    // The numbers are the ABI.
    assert_eq!(R::Ok as u32, 0);
    assert_eq!(R::BufferTooSmall as u32, 3);
    assert_eq!(R::Unsupported as u32, 4);
    assert_eq!(R::Panic as u32, 900);
    let mut n = 7;
    unsafe {
        assert_eq!(
            imds_cache_result_message(12345, null_mut(), 0, &mut n),
            R::InvalidArgument
        );
        assert_eq!(n, 7, "not written on failure");
        assert_eq!(
            imds_cache_result_message(0, null_mut(), 0, null_mut()),
            R::NullPointer
        );
        assert_eq!(
            imds_cache_result_message(0, null_mut(), 5, &mut n),
            R::NullPointer
        );
        // Failure kinds have messages too.
        assert_eq!(
            imds_cache_failure_message(imds_cache_failure::Gone as u32, null_mut(), 0, &mut n),
            R::BufferTooSmall
        );
        assert_eq!(
            imds_cache_failure_message(0, null_mut(), 0, &mut n),
            R::InvalidArgument
        );
    }
}

#[test]
fn version() {
    let mut buf = [0u8; 16];
    let mut n = 0;
    unsafe {
        assert_eq!(
            imds_cache_version(buf.as_mut_ptr(), buf.len(), &mut n),
            R::Ok
        );
        assert_eq!(&buf[..n], env!("CARGO_PKG_VERSION").as_bytes());
        assert_eq!(
            imds_cache_version(buf.as_mut_ptr(), 1, &mut n),
            R::BufferTooSmall
        );
        assert_eq!(n, env!("CARGO_PKG_VERSION").len());
    }
}

#[test]
fn config_builder_checks_every_value() {
    unsafe {
        assert_eq!(imds_cache_config_new(null_mut()), R::NullPointer);
        imds_cache_config_free(null_mut());
        assert_eq!(
            imds_cache_config_set_capacity(null_mut(), 1),
            R::NullPointer
        );
        let c = config(None);
        assert_eq!(imds_cache_config_set_capacity(c, 0), R::InvalidConfig);
        assert_eq!(
            imds_cache_config_set_capacity(c, IMDS_CACHE_MAX_CAPACITY + 1),
            R::InvalidConfig
        );
        assert_eq!(
            imds_cache_config_set_bytes_per_entry(c, 10),
            R::InvalidConfig
        );
        assert_eq!(
            imds_cache_config_set_max_token_bytes(c, 100),
            R::InvalidConfig
        );
        assert_eq!(imds_cache_config_set_max_token_bytes(c, 32 * 1024), R::Ok);
        assert_eq!(
            imds_cache_config_set_budget(c, 0, 1000, 5),
            R::InvalidConfig
        );
        assert_eq!(
            imds_cache_config_set_budget(c, 20, 1000, 33),
            R::InvalidConfig
        );
        assert_eq!(imds_cache_config_set_budget(c, 10, 1000, 2), R::Ok);
        assert_eq!(
            imds_cache_config_set_fetch_timeout_ms(c, 0),
            R::InvalidConfig
        );
        assert_eq!(imds_cache_config_set_fetch_timeout_ms(c, 5000), R::Ok);
        assert_eq!(
            imds_cache_config_set_lifetimes_ms(c, 60_000, 300_000),
            R::Ok
        );
        assert_eq!(
            imds_cache_config_set_backoff_ms(c, 2000, 1000, 0),
            R::InvalidConfig
        );
        assert_eq!(
            imds_cache_config_set_backoff_ms(c, 0, 1000, 0),
            R::InvalidConfig
        );
        assert_eq!(
            imds_cache_config_set_backoff_ms(c, 500, 8000, 10_000),
            R::Ok
        );
        assert_eq!(imds_cache_config_set_verify_client_id(c, false), R::Ok);
        assert_eq!(imds_cache_config_set_seed(c, 42), R::Ok);
        assert_eq!(
            imds_cache_config_set_timeouts_ms(c, 0, 1, 1),
            R::InvalidConfig
        );
        assert_eq!(imds_cache_config_set_timeouts_ms(c, 5000, 500, 2000), R::Ok);
        assert_eq!(imds_cache_config_set_refresher(c, false), R::Ok);
        let long = "/x".repeat(200);
        assert_eq!(
            imds_cache_config_set_arc_key_dir(c, long.as_ptr(), long.len()),
            R::InvalidConfig
        );
        assert_eq!(
            imds_cache_config_set_arc_key_dir(c, b"/tmp".as_ptr(), 4),
            R::Ok
        );
        assert_eq!(
            imds_cache_config_set_arc_key_dir(c, null(), 3),
            R::NullPointer
        );
        assert_eq!(
            imds_cache_config_set_arc_key_dir(c, [0xffu8].as_ptr(), 1),
            R::InvalidArgument
        );
        // Endpoints.
        let bad = "ftp://x";
        assert_eq!(
            imds_cache_config_set_endpoint(c, 0, bad.as_ptr(), bad.len(), null(), 0),
            R::InvalidEndpoint
        );
        assert_eq!(
            imds_cache_config_set_endpoint(c, 77, null(), 0, null(), 0),
            R::InvalidArgument
        );
        assert_eq!(
            imds_cache_config_set_default_client_id(c, CLIENT_ID.as_ptr(), CLIENT_ID.len()),
            R::InvalidArgument
        );
        assert_eq!(
            imds_cache_config_set_endpoint(c, 0, null(), 0, null(), 0),
            R::Ok
        );
        assert_eq!(
            imds_cache_config_set_default_client_id(c, CLIENT_ID.as_ptr(), CLIENT_ID.len()),
            R::Ok
        );
        let url = "http://127.0.0.1:8080/msi/token";
        assert_eq!(
            imds_cache_config_set_endpoint(c, 1, url.as_ptr(), url.len(), b"s3cret".as_ptr(), 6),
            R::Ok
        );
        imds_cache_config_free(c);
    }
}

#[test]
fn identities_are_validated() {
    let mut id = system();
    assert_eq!(id.kind, imds_cache_identity_kind::System as u32);
    unsafe {
        assert_eq!(
            imds_cache_identity_client_id(CLIENT_ID.as_ptr(), CLIENT_ID.len(), &mut id),
            R::Ok
        );
        assert_eq!(
            (id.kind, id.value, id.value_len),
            (1, CLIENT_ID.as_ptr(), CLIENT_ID.len())
        );
        assert_eq!(
            imds_cache_identity_object_id(CLIENT_ID.as_ptr(), CLIENT_ID.len(), &mut id),
            R::Ok
        );
        assert_eq!(id.kind, 2);
        assert_eq!(
            imds_cache_identity_resource_id(RID.as_ptr(), RID.len(), &mut id),
            R::Ok
        );
        assert_eq!(id.kind, 3);
        let before = id;
        assert_eq!(
            imds_cache_identity_client_id(b"nope".as_ptr(), 4, &mut id),
            R::InvalidIdentity
        );
        assert_eq!(
            imds_cache_identity_client_id(null(), 0, &mut id),
            R::InvalidIdentity
        );
        assert_eq!(
            imds_cache_identity_client_id(null(), 36, &mut id),
            R::NullPointer
        );
        assert_eq!(
            imds_cache_identity_resource_id(CLIENT_ID.as_ptr(), CLIENT_ID.len(), &mut id),
            R::InvalidIdentity
        );
        assert_eq!(
            imds_cache_identity_client_id(CLIENT_ID.as_ptr(), CLIENT_ID.len(), null_mut()),
            R::NullPointer
        );
        assert_eq!(imds_cache_identity_system(null_mut()), R::NullPointer);
        assert_eq!(
            (id.kind, id.value),
            (before.kind, before.value),
            "not written on failure"
        );
    }
}

#[test]
fn identities_from_an_arm_property() {
    let rid2 = RID.replace("id1", "id2");
    let json = format!(
        "{{\"type\":\"SystemAssigned, UserAssigned\",\"userAssignedIdentities\":{{\"{RID}\":{{}},\"{rid2}\":{{\"clientId\":\"{CLIENT_ID}\",\"principalId\":\"{CLIENT_ID}\"}}}}}}"
    );
    let mut scratch = vec![0u8; json.len()];
    let mut out = [system(); 2];
    let (mut n, mut sys) = (0, false);
    unsafe {
        // The size query.
        let r = imds_cache_identities_from_arm(
            json.as_ptr(),
            json.len(),
            scratch.as_mut_ptr(),
            scratch.len(),
            null_mut(),
            0,
            &mut n,
            &mut sys,
        );
        assert_eq!((r, n), (R::BufferTooSmall, 2));
        let r = imds_cache_identities_from_arm(
            json.as_ptr(),
            json.len(),
            scratch.as_mut_ptr(),
            scratch.len(),
            out.as_mut_ptr(),
            1,
            &mut n,
            &mut sys,
        );
        assert_eq!((r, n), (R::BufferTooSmall, 2));
        let r = imds_cache_identities_from_arm(
            json.as_ptr(),
            json.len(),
            scratch.as_mut_ptr(),
            scratch.len(),
            out.as_mut_ptr(),
            2,
            &mut n,
            &mut sys,
        );
        assert_eq!((r, n, sys), (R::Ok, 2, true));
        let got: Vec<&[u8]> = out
            .iter()
            .map(|i| std::slice::from_raw_parts(i.value, i.value_len))
            .collect();
        assert_eq!(got, [RID.as_bytes(), rid2.as_bytes()]);
        assert!(out
            .iter()
            .all(|i| i.kind == imds_cache_identity_kind::ResourceId as u32));
        let bad = b"{\"type\":\"Bogus\"}";
        let r = imds_cache_identities_from_arm(
            bad.as_ptr(),
            bad.len(),
            scratch.as_mut_ptr(),
            scratch.len(),
            out.as_mut_ptr(),
            2,
            &mut n,
            &mut sys,
        );
        assert_eq!(r, R::InvalidArmIdentity);
        let r = imds_cache_identities_from_arm(
            json.as_ptr(),
            json.len(),
            scratch.as_mut_ptr(),
            3,
            out.as_mut_ptr(),
            2,
            &mut n,
            &mut sys,
        );
        assert_eq!(r, R::InvalidArgument, "scratch shorter than the JSON");
        let none = b"{\"type\":\"None\"}";
        let r = imds_cache_identities_from_arm(
            none.as_ptr(),
            none.len(),
            scratch.as_mut_ptr(),
            scratch.len(),
            null_mut(),
            0,
            &mut n,
            &mut sys,
        );
        assert_eq!((r, n, sys), (R::Ok, 0, false));
    }
}

#[test]
fn init_checks_memory_and_deinit_wipes_it() {
    let c = config(None);
    let mut size = 0;
    unsafe {
        assert_eq!(
            imds_cache_sansio_storage_size(c, null_mut()),
            R::NullPointer
        );
        assert_eq!(imds_cache_sansio_storage_size(c, &mut size), R::Ok);
        let mut default_size = 0;
        assert_eq!(
            imds_cache_sansio_storage_size(null(), &mut default_size),
            R::Ok
        );
        assert!(default_size > size);
        let mem = Mem::new(size + 16);
        let mut h = null_mut();
        assert_eq!(
            imds_cache_sansio_init(null_mut(), size, c, &mut h),
            R::NullPointer
        );
        assert_eq!(
            imds_cache_sansio_init(mem.ptr, size, c, null_mut()),
            R::NullPointer
        );
        let odd = mem.ptr.cast::<u8>().add(4).cast::<c_void>();
        assert_eq!(imds_cache_sansio_init(odd, size, c, &mut h), R::Misaligned);
        assert_eq!(
            imds_cache_sansio_init(mem.ptr, size - 1, c, &mut h),
            R::StorageTooSmall
        );
        assert!(h.is_null(), "not written on failure");
        assert_eq!(imds_cache_sansio_init(mem.ptr, size + 16, c, &mut h), R::Ok);
        imds_cache_config_free(c);

        // Put a token in, so there is something to wipe.
        let id = system();
        let mut token = [0u8; 64];
        let (_, _, a) = lookup(h, &id, ARM, NOW, &mut token);
        let ticket = a.unwrap().ticket;
        let _ = request(h, ticket, NOW);
        let mut response = ok_response("SECRET-TOKEN");
        let mut out = new_outcome();
        assert_eq!(
            imds_cache_sansio_feed(
                h,
                ticket,
                response.as_mut_ptr(),
                response.len(),
                NOW,
                out.as_mut_ptr()
            ),
            R::Ok
        );
        assert_eq!(out.assume_init().kind, imds_cache_outcome_kind::Token);

        assert_eq!(imds_cache_sansio_deinit(null_mut()), R::NullPointer);
        assert_eq!(imds_cache_sansio_deinit(mem.ptr.cast()), R::Ok);
        assert!(
            mem.bytes()[..size].iter().all(|b| *b == 0),
            "every byte used is wiped"
        );
        assert!(
            mem.bytes()[size..].iter().all(|b| *b == 0xA5),
            "nothing past it is touched"
        );
        // The handle is gone.
        assert_eq!(imds_cache_sansio_deinit(mem.ptr.cast()), R::InvalidHandle);
        let mut stats = std::mem::MaybeUninit::uninit();
        assert_eq!(
            imds_cache_sansio_get_stats(h, stats.as_mut_ptr()),
            R::InvalidHandle
        );
        assert_eq!(
            imds_cache_sansio_get_stats(null_mut(), stats.as_mut_ptr()),
            R::NullPointer
        );
    }
}

#[test]
fn fetch_fed_one_byte_at_a_time_then_hits() {
    let c = config(Some((imds_cache_flavour::Imds, "http://127.0.0.1:8080")));
    let (mem, h) = handle(c);
    unsafe { imds_cache_config_free(c) };
    let id = system();
    let mut token = [0u8; 64];

    let (r, n, a) = lookup(h, &id, ARM, NOW, &mut token);
    let a = a.unwrap();
    assert_eq!(
        (r, n, a.kind, a.has_ticket),
        (R::Ok, 0, imds_cache_lookup_kind::Fetch, true)
    );
    // A second caller of the same key waits: single flight.
    let (_, _, b) = lookup(h, &id, ARM, NOW, &mut token);
    assert_eq!(b.unwrap().kind, imds_cache_lookup_kind::Pending);

    // The request: size query, one byte short, then in full.
    let mut n = 0;
    let mut info = std::mem::MaybeUninit::uninit();
    unsafe {
        assert_eq!(
            imds_cache_sansio_request(h, a.ticket, NOW, null_mut(), 0, &mut n, info.as_mut_ptr()),
            R::BufferTooSmall
        );
        let mut short = vec![0u8; n - 1];
        let mut m = 0;
        assert_eq!(
            imds_cache_sansio_request(
                h,
                a.ticket,
                NOW,
                short.as_mut_ptr(),
                short.len(),
                &mut m,
                info.as_mut_ptr()
            ),
            R::BufferTooSmall
        );
        assert_eq!(m, n);
    }
    let (req, info) = request(h, a.ticket, NOW);
    assert_eq!(req.len(), n);
    let host = unsafe { std::slice::from_raw_parts(info.host, info.host_len) };
    assert_eq!(
        (host, info.port, info.tls, info.method),
        (&b"127.0.0.1"[..], 8080, false, imds_cache_method::Get)
    );
    assert!(req.starts_with(b"GET /metadata/identity/oauth2/token?api-version="));
    assert!(req.windows(16).any(|w| w == b"Metadata: true\r\n"));

    let response = ok_response("eyJ0eXAi.abc.def");
    let (out, _received) = feed_bytewise(h, a.ticket, &response, NOW + 5);
    assert_eq!(
        (out.kind, out.token_len),
        (imds_cache_outcome_kind::Token, 16)
    );
    assert_eq!(out.expires_on_s, (NOW + 86_399_000) / 1000);

    // Hits: the token, then one byte short (BUFFER_TOO_SMALL with the size), then (NULL, 0).
    let (r, n, a) = lookup(h, &id, ARM, NOW + 10, &mut token);
    let a = a.unwrap();
    assert_eq!(
        (r, n, a.kind, a.token_len, a.has_ticket),
        (R::Ok, 16, imds_cache_lookup_kind::Hit, 16, false)
    );
    assert_eq!(&token[..16], b"eyJ0eXAi.abc.def");
    let mut short = [0xEEu8; 16];
    let (r, n, _) = lookup(h, &id, ARM, NOW + 10, &mut short[..15]);
    assert_eq!((r, n), (R::BufferTooSmall, 16));
    assert_eq!(short[15], 0xEE);
    let (r, n, _) = lookup(h, &id, ARM, NOW + 10, &mut []);
    assert_eq!((r, n), (R::BufferTooSmall, 16));

    unsafe {
        let mut flavour = 99;
        assert_eq!(imds_cache_sansio_flavour_of(h, &mut flavour), R::Ok);
        assert_eq!(flavour, imds_cache_flavour::Imds as u32);
        let mut stats = std::mem::MaybeUninit::uninit();
        assert_eq!(imds_cache_sansio_get_stats(h, stats.as_mut_ptr()), R::Ok);
        let stats = stats.assume_init();
        assert_eq!(
            (stats.hits, stats.tokens, stats.fetches, stats.coalesced),
            (1, 1, 1, 1)
        );
        // The refresh schedule.
        let mut next = 0;
        assert_eq!(imds_cache_sansio_next_deadline(h, &mut next), R::Ok);
        assert!(next > NOW && next < NOW + 86_399_000);
        let mut refresh = imds_cache_refresh::default();
        assert_eq!(
            imds_cache_sansio_poll_refresh(h, NOW + 20, &mut refresh),
            R::Ok
        );
        assert!(!refresh.has_ticket);
        assert_eq!(refresh.next_ms, next);
        assert_eq!(imds_cache_sansio_poll_refresh(h, next, &mut refresh), R::Ok);
        assert!(refresh.has_ticket);
        assert_eq!(imds_cache_sansio_cancel(h, refresh.ticket), R::Ok);
        assert_eq!(imds_cache_sansio_cancel(h, refresh.ticket), R::StaleTicket);
        // Invalidation drops the token: the next lookup fetches.
        let mut dropped = false;
        assert_eq!(
            imds_cache_sansio_invalidate(h, &id, ARM.as_ptr(), ARM.len(), &mut dropped),
            R::Ok
        );
        assert!(dropped);
        let (_, _, a) = lookup(h, &id, ARM, NOW + 30, &mut token);
        assert_eq!(a.unwrap().kind, imds_cache_lookup_kind::Fetch);
        assert_eq!(imds_cache_sansio_deinit(mem.ptr.cast()), R::Ok);
    }
}

#[test]
fn failures_retries_and_stale_tickets() {
    // The default configuration (a NULL config); under Miri a 4-entry one, since wiping the
    // default 4096 entries' memory takes minutes there.
    let c = if cfg!(miri) { config(None) } else { null_mut() };
    let (mem, h) = handle(c);
    if !c.is_null() {
        unsafe { imds_cache_config_free(c) };
    }
    let id = system();
    let mut token = [0u8; 64];
    unsafe {
        // Refused at first contact: unavailable at once.
        let (_, _, a) = lookup(h, &id, ARM, NOW, &mut token);
        let t = a.unwrap().ticket;
        let mut out = new_outcome();
        assert_eq!(
            imds_cache_sansio_fail(h, t, 0, NOW, out.as_mut_ptr()),
            R::InvalidArgument
        );
        assert_eq!(
            imds_cache_sansio_fail(
                h,
                t,
                imds_cache_transport::Refused as u32,
                NOW,
                out.as_mut_ptr()
            ),
            R::Ok
        );
        let o = out.assume_init();
        assert_eq!(
            (o.kind, o.failure),
            (
                imds_cache_outcome_kind::Failed,
                imds_cache_failure::Unavailable
            )
        );
        let (_, _, a) = lookup(h, &id, ARM, NOW + 1, &mut token);
        let a = a.unwrap();
        assert_eq!(
            (a.kind, a.failure),
            (
                imds_cache_lookup_kind::Failed,
                imds_cache_failure::Unavailable
            )
        );
        // The finished ticket is stale now.
        let mut body = ok_response("x");
        let mut out = new_outcome();
        assert_eq!(
            imds_cache_sansio_feed(h, t, body.as_mut_ptr(), body.len(), NOW, out.as_mut_ptr()),
            R::StaleTicket
        );
        assert_eq!(imds_cache_sansio_cancel(h, t), R::StaleTicket);

        // Another key: a 503 with an error body is a retry with its text.
        let vault = "https://vault.azure.net";
        let (_, _, a) = lookup(h, &id, vault, NOW + 2, &mut token);
        let t = a.unwrap().ticket;
        let body = "{\"error\":\"unavailable\",\"error_description\":\"try later\"}";
        let mut response = format!(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes();
        let mut out = new_outcome();
        assert_eq!(
            imds_cache_sansio_feed(
                h,
                t,
                response.as_mut_ptr(),
                response.len(),
                NOW + 3,
                out.as_mut_ptr()
            ),
            R::Ok
        );
        let o = out.assume_init();
        assert_eq!(
            (o.kind, o.failure, o.status),
            (
                imds_cache_outcome_kind::Retry,
                imds_cache_failure::ServerError,
                503
            )
        );
        assert_eq!(&o.error_code[..o.error_code_len], b"unavailable");
        assert_eq!(
            &o.error_description[..o.error_description_len],
            b"try later"
        );
        assert!(o.retry_at_ms > NOW + 3);
        let (_, _, a) = lookup(h, &id, vault, NOW + 4, &mut token);
        assert_eq!(a.unwrap().kind, imds_cache_lookup_kind::Failed);
        // After the backoff, a new ticket; the connection closes early: truncated, a retry.
        let later = o.retry_at_ms + 1;
        let (_, _, a) = lookup(h, &id, vault, later, &mut token);
        let a = a.unwrap();
        assert_eq!(a.kind, imds_cache_lookup_kind::Fetch);
        let mut partial = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"acc".to_vec();
        let mut out = new_outcome();
        assert_eq!(
            imds_cache_sansio_eof(
                h,
                a.ticket,
                partial.as_mut_ptr(),
                partial.len(),
                later,
                out.as_mut_ptr()
            ),
            R::Ok
        );
        let o = out.assume_init();
        assert_eq!(
            (o.kind, o.failure),
            (
                imds_cache_outcome_kind::Retry,
                imds_cache_failure::Truncated
            )
        );
        // Complete_challenge without a challenge.
        let (_, _, a) = lookup(h, &id, "https://storage.azure.com", later, &mut token);
        let mut n = 0;
        let mut buf = [0u8; 16];
        let mut info = std::mem::MaybeUninit::uninit();
        let r = imds_cache_sansio_complete_challenge(
            h,
            a.unwrap().ticket,
            b"key".as_ptr(),
            3,
            later,
            buf.as_mut_ptr(),
            buf.len(),
            &mut n,
            info.as_mut_ptr(),
        );
        assert_eq!(r, R::NoChallenge);
        // Bad inputs.
        let bad = imds_cache_identity {
            kind: 1,
            value: b"nope".as_ptr(),
            value_len: 4,
        };
        assert_eq!(
            lookup(h, &bad, ARM, later, &mut token).0,
            R::InvalidIdentity
        );
        let unknown = imds_cache_identity {
            kind: 9,
            value: null(),
            value_len: 0,
        };
        assert_eq!(
            lookup(h, &unknown, ARM, later, &mut token).0,
            R::InvalidIdentity
        );
        assert_eq!(lookup(h, &id, "", later, &mut token).0, R::InvalidResource);
        assert_eq!(
            lookup(h, &id, "a b", later, &mut token).0,
            R::InvalidResource
        );
        let mut w = 0;
        let r = imds_cache_sansio_lookup(
            h,
            null(),
            ARM.as_ptr(),
            ARM.len(),
            later,
            token.as_mut_ptr(),
            token.len(),
            &mut w,
            null_mut(),
        );
        assert_eq!(r, R::NullPointer);
        let mut ans = std::mem::MaybeUninit::uninit();
        let r = imds_cache_sansio_lookup(
            h,
            &id,
            ARM.as_ptr(),
            ARM.len(),
            later,
            null_mut(),
            10,
            &mut w,
            ans.as_mut_ptr(),
        );
        assert_eq!(r, R::NullPointer);
        assert_eq!(imds_cache_sansio_deinit(mem.ptr.cast()), R::Ok);
    }
}

#[test]
fn a_full_cache_says_so() {
    let c = config(None);
    unsafe { assert_eq!(imds_cache_config_set_capacity(c, 1), R::Ok) };
    let (mem, h) = handle(c);
    unsafe { imds_cache_config_free(c) };
    let id = system();
    let mut token = [0u8; 16];
    let (_, _, a) = lookup(h, &id, ARM, NOW, &mut token);
    assert_eq!(a.unwrap().kind, imds_cache_lookup_kind::Fetch);
    // The only slot has a live ticket: nothing can be evicted.
    assert_eq!(
        lookup(h, &id, "https://vault.azure.net", NOW, &mut token).0,
        R::CacheFull
    );
    unsafe { assert_eq!(imds_cache_sansio_deinit(mem.ptr.cast()), R::Ok) };
}

#[test]
fn arc_challenge_through_the_sans_io_handle() {
    let c = config(Some((
        imds_cache_flavour::Arc,
        "http://127.0.0.1:40342/metadata/identity/oauth2/token",
    )));
    unsafe {
        assert_eq!(
            imds_cache_config_set_arc_key_dir(c, b"/var/keys".as_ptr(), 9),
            R::Ok
        )
    };
    let (mem, h) = handle(c);
    unsafe { imds_cache_config_free(c) };
    let id = system();
    let mut token = [0u8; 64];
    let (_, _, a) = lookup(h, &id, ARM, NOW, &mut token);
    let ticket = a.unwrap().ticket;
    let (req, _) = request(h, ticket, NOW);
    assert!(!req.windows(14).any(|w| w == b"Authorization:"));
    let challenge = b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=/var/keys/abc.key\r\nContent-Length: 0\r\n\r\n";
    let (out, _received) = feed_bytewise(h, ticket, challenge, NOW + 1);
    assert_eq!(out.kind, imds_cache_outcome_kind::NeedKeyFile);
    let path = unsafe { std::slice::from_raw_parts(out.key_path, out.key_path_len) };
    assert_eq!(path, b"/var/keys/abc.key");
    let mut buf = vec![0u8; 8192];
    let mut n = 0;
    let mut info = std::mem::MaybeUninit::uninit();
    unsafe {
        let r = imds_cache_sansio_complete_challenge(
            h,
            ticket,
            b"0123456789abcdef".as_ptr(),
            16,
            NOW + 2,
            buf.as_mut_ptr(),
            buf.len(),
            &mut n,
            info.as_mut_ptr(),
        );
        assert_eq!(r, R::Ok);
    }
    assert!(buf[..n]
        .windows(36)
        .any(|w| w == &b"Authorization: Basic 0123456789abcdef"[..36]));
    let (out, _received) = feed_bytewise(h, ticket, &ok_response("arc-token"), NOW + 3);
    assert_eq!(out.kind, imds_cache_outcome_kind::Token);
    let (_, len, a) = lookup(h, &id, ARM, NOW + 4, &mut token);
    assert_eq!(a.unwrap().kind, imds_cache_lookup_kind::Hit);
    assert_eq!(&token[..len], b"arc-token");

    // A key file with a bad byte fails the ticket.
    let (_, _, a) = lookup(h, &id, "https://vault.azure.net", NOW + 5, &mut token);
    let ticket = a.unwrap().ticket;
    let _ = request(h, ticket, NOW + 5);
    let (out, _received) = feed_bytewise(h, ticket, challenge, NOW + 6);
    assert_eq!(out.kind, imds_cache_outcome_kind::NeedKeyFile);
    unsafe {
        let r = imds_cache_sansio_complete_challenge(
            h,
            ticket,
            b"bad\x01key".as_ptr(),
            7,
            NOW + 7,
            buf.as_mut_ptr(),
            buf.len(),
            &mut n,
            info.as_mut_ptr(),
        );
        assert_eq!(r, R::InvalidArcKey);
        assert_eq!(imds_cache_sansio_deinit(mem.ptr.cast()), R::Ok);
    }
}

/// Memory that holds no live handle (never initialised, or ended) is refused, and NULL
/// everywhere is a NULL pointer, never a crash.
#[test]
fn memory_without_a_live_handle_is_refused() {
    // As large as a handle's header: the contract is memory a handle could occupy.
    let words = std::mem::size_of::<imds_cache_sansio>().div_ceil(8);
    let mut zeros = vec![0u64; words];
    let fake = zeros.as_mut_ptr().cast::<imds_cache_sansio>();
    let mut stats = std::mem::MaybeUninit::uninit();
    let mut next = 0;
    unsafe {
        assert_eq!(
            imds_cache_sansio_get_stats(fake, stats.as_mut_ptr()),
            R::InvalidHandle
        );
        assert_eq!(
            imds_cache_sansio_next_deadline(fake, &mut next),
            R::InvalidHandle
        );
        assert_eq!(imds_cache_sansio_deinit(fake), R::InvalidHandle);
        assert_eq!(imds_cache_sansio_cancel(null_mut(), 1), R::NullPointer);
        assert_eq!(imds_cache_sansio_deinit(null_mut()), R::NullPointer);
        imds_cache_free(null_mut());
        assert_eq!(imds_cache_new(null(), null_mut()), R::NullPointer);
    }
    assert!(zeros.iter().all(|w| *w == 0), "nothing was written");
}
