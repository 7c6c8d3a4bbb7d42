//! Helpers shared by the driver and events tests (`mod common;`): an emulator, a client
//! given its endpoint explicitly, and the resources they ask for.

use imds_cache::{Flavour, Resource};
use imds_cache_ffi::{Client, ClientConfig, OwnedEndpoint, SourceSpec};
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
