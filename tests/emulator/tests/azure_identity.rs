//! azure-identity (Python) gets tokens from the emulator in `imds`, `appservice2019` and
//! `service-fabric` (HTTPS) modes.
//!
//! Needs a Python with `azure-identity` installed: `IMDS_EMULATOR_PYTHON` names it (default
//! `python3`). When it is missing the tests say so and pass, unless
//! `IMDS_EMULATOR_REQUIRE_AZURE_IDENTITY=1`, which turns the absence into a failure (for CI).

mod common;

use std::process::Command;

use common::*;
use imds_emulator::{Config, Emulator, Identity, Mode};

fn python() -> Option<String> {
    let py = std::env::var("IMDS_EMULATOR_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let ok = Command::new(&py)
        .args(["-c", "import azure.identity"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(py);
    }
    if std::env::var("IMDS_EMULATOR_REQUIRE_AZURE_IDENTITY").as_deref() == Ok("1") {
        panic!("{py} cannot import azure.identity");
    }
    eprintln!("skipped: {py} cannot import azure.identity (set IMDS_EMULATOR_PYTHON)");
    None
}

fn get_token(py: &str, emu: &Emulator, scope: &str, client_id: Option<&str>) -> (String, u64) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/get_token.py");
    let mut cmd = Command::new(py);
    cmd.arg(script).arg(scope);
    if let Some(c) = client_id {
        cmd.arg(c);
    }
    for var in [
        "AZURE_POD_IDENTITY_AUTHORITY_HOST",
        "IDENTITY_ENDPOINT",
        "IDENTITY_HEADER",
        "IDENTITY_SERVER_THUMBPRINT",
        "MSI_ENDPOINT",
        "MSI_SECRET",
        "IMDS_ENDPOINT",
        "AZURE_CLIENT_ID",
        "AZURE_FEDERATED_TOKEN_FILE",
        "AZURE_TENANT_ID",
        "MSAL_MANAGED_IDENTITY_ENDPOINT",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("NO_PROXY", "*");
    for (k, v) in emu.env() {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "azure-identity failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let token = lines.next().unwrap().to_string();
    let exp = lines.next().unwrap().parse().unwrap();
    (token, exp)
}

fn check(emu: &Emulator, token: &str, exp: u64, identity: &Identity, resource: &str) {
    let issued = emu.tokens();
    let t = issued
        .iter()
        .find(|t| t.token == token)
        .expect("the token is one the emulator issued");
    assert_eq!(
        (t.identity.as_str(), t.resource.as_str()),
        (identity.name.as_str(), resource)
    );
    assert_eq!(t.exp, exp);
    assert_eq!(jwt(token).1["aud"], resource);
}

#[test]
fn imds_mode() {
    let Some(py) = python() else { return };
    let emu = Emulator::start(Config {
        identities: 2,
        ..Config::new(Mode::Imds)
    })
    .unwrap();
    let (token, exp) = get_token(&py, &emu, "https://management.azure.com/.default", None);
    check(
        &emu,
        &token,
        exp,
        &Identity::system(),
        "https://management.azure.com",
    );
    let u2 = Identity::user_assigned(2);
    let (token, exp) = get_token(
        &py,
        &emu,
        "https://vault.azure.net/.default",
        Some(&u2.client_id),
    );
    check(&emu, &token, exp, &u2, "https://vault.azure.net");
}

#[test]
fn app_service_2019_mode() {
    let Some(py) = python() else { return };
    let emu = Emulator::start(Config {
        identities: 1,
        ..Config::new(Mode::AppService2019)
    })
    .unwrap();
    let (token, exp) = get_token(&py, &emu, "https://vault.azure.net/.default", None);
    check(
        &emu,
        &token,
        exp,
        &Identity::system(),
        "https://vault.azure.net",
    );
    let u1 = Identity::user_assigned(1);
    let (token, exp) = get_token(
        &py,
        &emu,
        "https://management.azure.com/.default",
        Some(&u1.client_id),
    );
    check(&emu, &token, exp, &u1, "https://management.azure.com");
}

#[test]
fn service_fabric_mode() {
    let Some(py) = python() else { return };
    let emu = Emulator::start(Config::new(Mode::ServiceFabric)).unwrap();
    let (token, exp) = get_token(&py, &emu, "https://vault.azure.net/.default", None);
    check(
        &emu,
        &token,
        exp,
        &Identity::system(),
        "https://vault.azure.net",
    );
}
