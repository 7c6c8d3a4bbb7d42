//! The comparison with azure_identity (feature `azure`): one emulator in App Service 2019 mode
//! that both credentials are pointed at (azure_identity has no IMDS override; its App Service
//! source reads `IDENTITY_ENDPOINT` and `IDENTITY_HEADER`), and both credentials behind
//! azure_core's `TokenCredential`, as an Azure SDK client holds them.

use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use imds_cache::{Config, Flavour};
use imds_cache_client::{
    Client, ClientConfig, ManagedIdentityCredential, ManagedIdentityCredentialOptions,
    OwnedEndpoint, SourceSpec, UserAssignedId,
};
use imds_emulator::{Emulator, FaultRule, Mode};

/// The scope every cached-call benchmark asks for.
pub const SCOPE: &str = "https://management.azure.com/.default";

/// The emulator both credentials talk to: App Service 2019, `identities` user-assigned
/// identities, 1,800-byte tokens, `faults` active. Throttling is off: App Service has no
/// IMDS-style limit, and a 429 would measure azure_identity's retry policy, not its cache.
pub fn emulator(identities: usize, faults: Vec<FaultRule>) -> Emulator {
    let mut config = imds_emulator::Config::new(Mode::AppService2019);
    config.identities = identities;
    config.token_size = 1800;
    config.throttle = false;
    config.faults = faults;
    Emulator::start(config).expect("emulator starts")
}

/// Points azure_identity (which reads only the environment) at `e`, and keeps its reqwest
/// transport off any proxy, so that no byte leaves loopback.
pub fn point_azure_identity_at(e: &Emulator) {
    clear_identity_env();
    for (name, value) in e.env() {
        std::env::set_var(name, value);
    }
}

/// Points azure_identity at an App Service 2019 endpoint `token_url` with `secret` (an
/// emulator in another process), off any proxy as [`point_azure_identity_at`].
pub fn point_azure_identity_to(token_url: &str, secret: &str) {
    clear_identity_env();
    std::env::set_var("IDENTITY_ENDPOINT", token_url);
    std::env::set_var("IDENTITY_HEADER", secret);
}

/// No proxy and no other managed-identity variable; loopback exempt from any proxy.
fn clear_identity_env() {
    for name in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
        "MSI_ENDPOINT",
        "MSI_SECRET",
        "IMDS_ENDPOINT",
        "IDENTITY_SERVER_THUMBPRINT",
    ] {
        std::env::remove_var(name);
    }
    std::env::set_var("NO_PROXY", "127.0.0.1,localhost");
    std::env::set_var("no_proxy", "127.0.0.1,localhost");
}

/// Our client for `e` (App Service 2019, given explicitly), sized for `capacity` entries of
/// 1,800-byte tokens, with the budget opened up as far as the emulator allows (so that filling
/// thousands of keys measures memory, not the 20/s default).
pub fn our_client(e: &Emulator, capacity: usize, open_budget: bool) -> Arc<Client> {
    let mut cache = Config::DEFAULT;
    if open_budget {
        cache.rate = 128;
        cache.rate_window_ms = 100;
        cache.in_flight = 16;
    }
    let config = ClientConfig {
        cache,
        capacity,
        // An 1,800-byte token and its key fit in eight 256-byte blocks.
        bytes_per_entry: 2048,
        source: SourceSpec::Explicit(OwnedEndpoint {
            flavour: Flavour::AppService2019,
            url: e.token_url(),
            secret: Some(e.secret().to_string()),
            default_client_id: None,
        }),
        ..ClientConfig::default()
    };
    Arc::new(Client::with_config(config).expect("client"))
}

/// Our credential for `client_id` (the system identity for `None`) over `client`.
pub fn ours(client: &Arc<Client>, client_id: Option<&str>) -> Arc<dyn TokenCredential> {
    ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
        user_assigned_id: client_id.map(|id| UserAssignedId::ClientId(id.to_string())),
        client: Some(client.clone()),
    }))
    .expect("our credential")
}

/// azure_identity's credential for `client_id`; [`point_azure_identity_at`] first.
pub fn theirs(client_id: Option<&str>) -> Arc<dyn TokenCredential> {
    let options = azure_identity::ManagedIdentityCredentialOptions {
        user_assigned_id: client_id
            .map(|id| azure_identity::UserAssignedId::ClientId(id.to_string())),
        ..Default::default()
    };
    azure_identity::ManagedIdentityCredential::new(Some(options)).expect("azure_identity")
}

/// The client ids of `e`'s user-assigned identities.
pub fn user_ids(e: &Emulator) -> Vec<String> {
    e.identities()
        .iter()
        .skip(1)
        .map(|i| i.client_id.clone())
        .collect()
}

/// `tasks` tokio tasks, `calls` cached `get_token` calls in all (an owned `AccessToken` each,
/// dropped at once), on `rt`. Returns when every call has returned.
pub fn cached_calls(
    rt: &tokio::runtime::Runtime,
    credential: &Arc<dyn TokenCredential>,
    tasks: u64,
    calls: u64,
) {
    rt.block_on(async {
        let handles: Vec<_> = (0..tasks)
            .map(|t| {
                let credential = credential.clone();
                let mine = calls / tasks + u64::from(t < calls % tasks);
                tokio::spawn(async move {
                    for _ in 0..mine {
                        let token = credential.get_token(&[SCOPE], None).await.expect("a hit");
                        std::hint::black_box(&token);
                    }
                })
            })
            .collect();
        for h in handles {
            h.await.expect("task");
        }
    });
}

/// The runtime of the comparison: tokio multi-thread, 2 workers (the machine's cores).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}
