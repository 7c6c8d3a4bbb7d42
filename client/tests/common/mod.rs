//! Helpers shared by the driver and events tests (`mod common;`): an emulator, a client
//! given its endpoint explicitly, the resources they ask for, and a fake clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use imds_cache::{Flavour, Resource};
use imds_cache_client::{now_ms, Client, ClientConfig, Clock, OwnedEndpoint, SourceSpec};
use imds_emulator::{Emulator, Mode};

pub(crate) const ARM: &str = "https://management.azure.com";
pub(crate) const RESOURCES: [&str; 3] =
    [ARM, "https://vault.azure.net", "https://storage.azure.com"];

/// An emulator in `mode` with `identities` user-assigned identities besides the system one.
pub(crate) fn emulator(
    mode: Mode,
    identities: usize,
    tweak: impl FnOnce(&mut imds_emulator::Config),
) -> Emulator {
    let mut config = imds_emulator::Config::new(mode);
    config.identities = identities;
    tweak(&mut config);
    Emulator::start(config).expect("emulator starts")
}

/// A client for the emulator's endpoint, given explicitly.
pub(crate) fn client_for(e: &Emulator, tweak: impl FnOnce(&mut ClientConfig)) -> Client {
    let flavour = match e.mode() {
        Mode::Imds => Flavour::Imds,
        Mode::AppService2019 => Flavour::AppService2019,
        Mode::Msi2017 | Mode::AzureMl => Flavour::Msi2017,
        Mode::CloudShell => Flavour::CloudShell,
        Mode::Arc => Flavour::Arc,
        Mode::VmExt => Flavour::VmExtension,
        // HTTPS: the client refuses it (its tests use the sans-IO C ABI).
        Mode::ServiceFabric => Flavour::ServiceFabric,
    };
    let url = if flavour == Flavour::Imds {
        e.url()
    } else {
        e.token_url()
    };
    let secret = matches!(flavour, Flavour::AppService2019 | Flavour::Msi2017)
        .then(|| e.secret().to_string());
    let mut config = ClientConfig {
        source: SourceSpec::Explicit(OwnedEndpoint {
            flavour,
            url,
            secret,
            default_client_id: None,
        }),
        ..ClientConfig::default()
    };
    if flavour == Flavour::Arc {
        config
            .cache
            .arc_key_dir
            .push_str(e.arc_key_dir().to_str().unwrap())
            .unwrap();
    }
    tweak(&mut config);
    Client::with_config(config).expect("client")
}

pub(crate) fn res(r: &str) -> Resource<'_> {
    Resource::new(r).unwrap()
}

/// How far behind the wall clock a [`FakeClock`] starts: more than the refresh jitter (up to
/// 10 % of a token's lifetime, 36 s for the tests' 362 s tokens) moves a refresh time earlier,
/// so that no token the emulator issues is due for refresh until a test moves the clock on.
pub(crate) const BEHIND_MS: u64 = 60_000;

/// A clock for the driver that moves when told (`advance`) instead of the test sleeping. It
/// starts [`BEHIND_MS`] behind the wall clock, which the emulator's expiries come from.
#[derive(Clone)]
pub(crate) struct FakeClock {
    at: Arc<AtomicU64>,
    /// Also moves with the wall clock (for calls that wait out a backoff in real time).
    runs: bool,
}

impl FakeClock {
    /// A clock that stands still between `advance`s.
    pub(crate) fn new() -> Self {
        Self {
            at: Arc::new(AtomicU64::new(now_ms() - BEHIND_MS)),
            runs: false,
        }
    }

    /// A clock that runs with the wall clock and jumps ahead on `advance`.
    #[allow(dead_code)] // events.rs only
    pub(crate) fn running() -> Self {
        Self {
            at: Arc::new(AtomicU64::new(0)),
            runs: true,
        }
    }

    /// The clock for `ClientConfig::clock`.
    pub(crate) fn clock(&self) -> Clock {
        let at = self.at.clone();
        if self.runs {
            Clock::new(move || now_ms() - BEHIND_MS + at.load(Ordering::SeqCst))
        } else {
            Clock::new(move || at.load(Ordering::SeqCst))
        }
    }

    /// Moves it `ms` milliseconds on.
    pub(crate) fn advance(&self, ms: u64) {
        self.at.fetch_add(ms, Ordering::SeqCst);
    }
}
