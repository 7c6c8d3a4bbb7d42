//! The driver's hit path allocates nothing: a counting allocator watches the calling thread
//! while it asks for warm tokens.

use imds_cache::{Flavour, Identity, Resource};
use imds_cache_client::{Client, ClientConfig, OwnedEndpoint, SourceSpec};
use imds_emulator::{Emulator, Mode};

#[path = "common/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::allocations;

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
    assert_eq!(allocations(|| vec![1u8; 10]), 1);

    let mut total = 0;
    let hit_path = allocations(|| {
        for round in 0..10_000 {
            let i = &identities[round % identities.len()];
            let r = &resources[round % 2];
            total += client.get_token_into(i, r, &mut buf).unwrap().0;
        }
    });
    assert!(total > 0);
    assert_eq!(hit_path, 0, "allocations on the hit path");
}
