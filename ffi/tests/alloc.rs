//! The driver's hit path allocates nothing: a counting allocator watches the calling thread
//! while it asks for warm tokens.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use imds_cache::{Flavour, Identity, Resource};
use imds_cache_ffi::{Client, ClientConfig, OwnedEndpoint, SourceSpec};
use imds_emulator::{Emulator, Mode};

struct Counting;

thread_local! {
    static WATCHING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; the bookkeeping touches only `const`
// thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if WATCHING.with(Cell::get) {
            COUNT.with(|c| c.set(c.get() + 1));
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if WATCHING.with(Cell::get) {
            COUNT.with(|c| c.set(c.get() + 1));
        }
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn hits_allocate_nothing() {
    let mut config = imds_emulator::Config::new(Mode::Imds);
    config.identities = 8;
    let e = Emulator::start(config).unwrap();
    let client = Client::with_config(ClientConfig {
        source: SourceSpec::Explicit(OwnedEndpoint {
            flavour: Flavour::Imds,
            url: e.url(),
            secret: None,
            default_client_id: None,
        }),
        ..ClientConfig::default()
    })
    .unwrap();
    let ids: Vec<String> = e.identities().iter().map(|i| i.client_id.clone()).collect();
    let identities: Vec<Identity<'_>> = ids
        .iter()
        .map(|i| Identity::client_id(i).unwrap())
        .collect();
    let resources = [
        Resource::new("https://management.azure.com").unwrap(),
        Resource::new("https://vault.azure.net").unwrap(),
    ];
    let mut buf = vec![0u8; 16 * 1024];
    for i in &identities {
        for r in &resources {
            client.get_token_into(i, r, &mut buf).unwrap();
        }
    }
    // The counter works: an allocation on this thread is seen.
    WATCHING.with(|w| w.set(true));
    drop(std::hint::black_box(vec![1u8; 10]));
    WATCHING.with(|w| w.set(false));
    assert_eq!(COUNT.with(Cell::get), 1);
    COUNT.with(|c| c.set(0));

    WATCHING.with(|w| w.set(true));
    let mut total = 0;
    for round in 0..10_000 {
        let i = &identities[round % identities.len()];
        let r = &resources[round % 2];
        total += client.get_token_into(i, r, &mut buf).unwrap().0;
    }
    WATCHING.with(|w| w.set(false));
    assert!(total > 0);
    assert_eq!(COUNT.with(Cell::get), 0, "allocations on the hit path");
}
