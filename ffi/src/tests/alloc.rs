//! The sans-IO handle allocates nothing (DESIGN.md, "Rules that hold everywhere"): a counting
//! global allocator watches every call of a whole fetch and the hits after it, with a NULL
//! configuration (defaults) and with a configuration made beforehand.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ffi::c_void;
use std::ptr::{null, null_mut};

use crate::*;

struct Counting;

thread_local! {
    /// Allocations made by this thread (the test harness's other threads do not count).
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

type R = imds_cache_result;
const NOW: u64 = 1_700_000_000_000;
const ARM: &[u8] = b"https://management.azure.com";
const CLIENT_ID: &[u8] = b"fe83865b-495e-4ec7-9574-12b264882c9f";

/// Everything an event loop does with the handle, from init to deinit.
fn event_loop(config: *const imds_cache_config, mem: *mut c_void, len: usize, response: &mut [u8]) {
    let mut token = [0u8; 256];
    let mut request = [0u8; 4096];
    unsafe {
        let mut h = null_mut();
        assert_eq!(imds_cache_sansio_init(mem, len, config, &mut h), R::Ok);
        let mut id = std::mem::zeroed::<imds_cache_identity>();
        assert_eq!(
            imds_cache_identity_client_id(CLIENT_ID.as_ptr(), CLIENT_ID.len(), &mut id),
            R::Ok
        );
        let mut written = 0;
        let mut answer = std::mem::MaybeUninit::<imds_cache_lookup_answer>::uninit();
        let r = imds_cache_sansio_lookup(
            h,
            &id,
            ARM.as_ptr(),
            ARM.len(),
            NOW,
            token.as_mut_ptr(),
            token.len(),
            &mut written,
            answer.as_mut_ptr(),
        );
        let answer = answer.assume_init();
        assert_eq!((r, answer.kind), (R::Ok, imds_cache_lookup_kind::Fetch));
        let mut info = std::mem::MaybeUninit::<imds_cache_request_info>::uninit();
        let r = imds_cache_sansio_request(
            h,
            answer.ticket,
            NOW,
            request.as_mut_ptr(),
            request.len(),
            &mut written,
            info.as_mut_ptr(),
        );
        assert_eq!(r, R::Ok);
        let mut kind = imds_cache_outcome_kind::NeedMore;
        for n in 1..=response.len() {
            let mut outcome = std::mem::MaybeUninit::<imds_cache_outcome>::uninit();
            let r = imds_cache_sansio_feed(
                h,
                answer.ticket,
                response.as_mut_ptr(),
                n,
                NOW,
                outcome.as_mut_ptr(),
            );
            assert_eq!(r, R::Ok);
            kind = outcome.assume_init_ref().kind;
            if kind != imds_cache_outcome_kind::NeedMore {
                break;
            }
        }
        assert_eq!(kind, imds_cache_outcome_kind::Token);
        for i in 0..100 {
            let mut hit = std::mem::MaybeUninit::<imds_cache_lookup_answer>::uninit();
            let r = imds_cache_sansio_lookup(
                h,
                &id,
                ARM.as_ptr(),
                ARM.len(),
                NOW + i,
                token.as_mut_ptr(),
                token.len(),
                &mut written,
                hit.as_mut_ptr(),
            );
            assert_eq!(
                (r, hit.assume_init().kind),
                (R::Ok, imds_cache_lookup_kind::Hit)
            );
        }
        let mut stats = std::mem::zeroed::<imds_cache_stats>();
        assert_eq!(imds_cache_sansio_get_stats(h, &mut stats), R::Ok);
        let mut next = 0;
        assert_eq!(imds_cache_sansio_next_deadline(h, &mut next), R::Ok);
        let mut msg = [0u8; 128];
        assert_eq!(
            imds_cache_result_message(R::Busy as u32, msg.as_mut_ptr(), msg.len(), &mut written),
            R::Ok
        );
        assert_eq!(imds_cache_sansio_deinit(h), R::Ok);
    }
}

#[test]
#[cfg_attr(
    miri,
    ignore = "heavy: the default configuration's 10.8 MB under the interpreter"
)]
fn the_sans_io_handle_allocates_nothing() {
    let body = "{\"access_token\":\"eyJ0eXAi.abc.def\",\"client_id\":\"fe83865b-495e-4ec7-9574-12b264882c9f\",\"expires_in\":\"86399\"}";
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );

    // With the defaults (NULL configuration).
    let mut size = 0;
    unsafe { assert_eq!(imds_cache_sansio_storage_size(null(), &mut size), R::Ok) };
    let mut words = vec![0u64; size.div_ceil(8)];
    let mem = words.as_mut_ptr().cast::<c_void>();
    let mut bytes = response.clone().into_bytes();
    let before = allocations();
    event_loop(null(), mem, size, &mut bytes);
    assert_eq!(
        allocations() - before,
        0,
        "allocations in the sans-IO path (defaults)"
    );

    // With a configuration made (and allocated) beforehand.
    let mut config = null_mut();
    unsafe {
        let before = allocations();
        assert_eq!(imds_cache_config_new(&mut config), R::Ok);
        assert!(allocations() > before, "the counter sees allocations");
        assert_eq!(imds_cache_config_set_capacity(config, 16), R::Ok);
        let url = b"http://127.0.0.1:8080";
        assert_eq!(
            imds_cache_config_set_endpoint(config, 0, url.as_ptr(), url.len(), null(), 0),
            R::Ok
        );
        assert_eq!(imds_cache_sansio_storage_size(config, &mut size), R::Ok);
    }
    let mut words = vec![0u64; size.div_ceil(8)];
    let mem = words.as_mut_ptr().cast::<c_void>();
    let mut bytes = response.into_bytes();
    let before = allocations();
    event_loop(config, mem, size, &mut bytes);
    assert_eq!(
        allocations() - before,
        0,
        "allocations in the sans-IO path (configured)"
    );
    unsafe { imds_cache_config_free(config) };
}
