//! Each non-IMDS mode over TCP: success body shapes and the mode's own errors.

mod common;

use common::*;
use imds_emulator::{Config, Emulator, Identity, Mode, MsiClock, Transport};
use serde_json::Value;

fn start(mode: Mode, f: impl FnOnce(&mut Config)) -> Emulator {
    let mut c = Config::new(mode);
    f(&mut c);
    Emulator::start(c).unwrap()
}

fn msi(resource: &str, version: &str, extra: &str) -> String {
    format!(
        "/msi/token?resource={}&api-version={version}{extra}",
        enc(resource)
    )
}

/// Parses `MM/dd/yyyy HH:mm:ss +00:00` or `M/d/yyyy h:mm:ss AM +00:00` to Unix seconds.
fn parse_msi_date(s: &str) -> u64 {
    let s = s.strip_suffix(" +00:00").expect("+00:00 suffix");
    let parts: Vec<&str> = s.split(' ').collect();
    let date: Vec<u64> = parts[0].split('/').map(|p| p.parse().unwrap()).collect();
    let time: Vec<u64> = parts[1].split(':').map(|p| p.parse().unwrap()).collect();
    let mut hour = time[0];
    if let Some(ampm) = parts.get(2) {
        assert!((1..=12).contains(&hour));
        hour %= 12;
        if *ampm == "PM" {
            hour += 12;
        } else {
            assert_eq!(*ampm, "AM");
        }
    }
    let (m, d, y) = (date[0] as i64, date[1] as i64, date[2] as i64);
    // days_from_civil
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days as u64 * 86_400 + hour * 3600 + time[1] * 60 + time[2]
}

#[test]
fn app_service_2019() {
    let emu = start(Mode::AppService2019, |c| c.identities = 2);
    let a = emu.addr();
    let secret = emu.secret().to_string();
    let h = [("X-IDENTITY-HEADER", secret.as_str())];
    let r = get(a, &msi(VAULT, "2019-08-01", ""), &h);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.keys(),
        [
            "access_token",
            "expires_on",
            "resource",
            "token_type",
            "client_id"
        ]
    );
    assert!(r.json().values().all(Value::is_string));
    assert_eq!(r.header("Server"), Some("Kestrel"));
    let exp = num(&r.json()["expires_on"]);
    assert!(exp.abs_diff(emu.now() + 86_400) <= 3);
    assert_eq!(r.str("client_id"), Identity::system().client_id);
    let (_, c) = jwt(&r.str("access_token"));
    assert_eq!(c["aud"], VAULT);
    // The doc's path spelling works too.
    assert_eq!(
        get(
            a,
            &msi(VAULT, "2019-08-01", "").replace("/msi/", "/MSI/"),
            &h
        )
        .status,
        200
    );

    // Selectors: client_id, principal_id (object_id alias), mi_res_id; msi_res_id is ignored.
    let u1 = Identity::user_assigned(1);
    let u2 = Identity::user_assigned(2);
    let cid = |extra: String| get(a, &msi(VAULT, "2019-08-01", &extra), &h).str("client_id");
    assert_eq!(cid(format!("&client_id={}", u1.client_id)), u1.client_id);
    assert_eq!(cid(format!("&principal_id={}", u2.object_id)), u2.client_id);
    assert_eq!(cid(format!("&object_id={}", u2.object_id)), u2.client_id);
    assert_eq!(
        cid(format!("&mi_res_id={}", enc(&u2.resource_id))),
        u2.client_id
    );
    assert_eq!(
        cid(format!("&msi_res_id={}", enc(&u2.resource_id))),
        Identity::system().client_id
    );

    // Missing or wrong secret: 400, empty body, X-CORRELATION-ID.
    for headers in [&[][..], &[("X-IDENTITY-HEADER", "wrong")][..]] {
        let r = get(a, &msi(VAULT, "2019-08-01", ""), headers);
        assert_eq!(r.status, 400);
        assert!(r.body.is_empty());
        assert_eq!(r.header("Content-Length"), Some("0"));
        assert!(r.header("X-CORRELATION-ID").is_some());
    }
    // Unknown identity, two selectors: 400 with App Service's JSON shape.
    let r = get(
        a,
        &msi(
            VAULT,
            "2019-08-01",
            "&client_id=00000000-0000-0000-0000-000000000000",
        ),
        &h,
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.keys(), ["statusCode", "message", "correlationId"]);
    assert_eq!(r.json()["statusCode"], 400);
    assert!(r
        .str("message")
        .starts_with("No User Assigned or Delegated Managed Identity found"));
    let r = get(
        a,
        &msi(
            VAULT,
            "2019-08-01",
            &format!(
                "&client_id={}&mi_res_id={}",
                u1.client_id,
                enc(&u1.resource_id)
            ),
        ),
        &h,
    );
    assert_eq!(r.status, 400);
    // Unknown resource: App Service's vague 500.
    let r = get(a, &msi("nonsense", "2019-08-01", ""), &h);
    assert_eq!(r.status, 500);
    assert_eq!(
        r.str("message"),
        "An unexpected error occured while fetching the AAD Token."
    );

    // The legacy protocol on the same endpoint: `secret` header, date-string expires_on.
    let r = get(
        a,
        &msi(VAULT, "2017-09-01", ""),
        &[("secret", secret.as_str())],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.keys(),
        [
            "access_token",
            "expires_on",
            "resource",
            "token_type",
            "client_id"
        ]
    );
    let (_, c) = jwt(&r.str("access_token"));
    assert_eq!(parse_msi_date(&r.str("expires_on")), num(&c["exp"]));
}

#[test]
fn msi_2017_date_strings_both_clocks() {
    for clock in [MsiClock::H24, MsiClock::H12] {
        let emu = start(Mode::Msi2017, |c| {
            c.identities = 1;
            c.msi_clock = clock;
        });
        let a = emu.addr();
        let secret = emu.secret().to_string();
        let h = [("secret", secret.as_str())];
        let r = get(a, &msi(ARM, "2017-09-01", ""), &h);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            r.keys(),
            [
                "access_token",
                "expires_on",
                "resource",
                "token_type",
                "client_id"
            ]
        );
        let on = r.str("expires_on");
        let (_, c) = jwt(&r.str("access_token"));
        assert_eq!(parse_msi_date(&on), num(&c["exp"]), "{on}");
        match clock {
            MsiClock::H24 => {
                assert_eq!(on.len(), "05/22/2021 17:14:33 +00:00".len(), "{on}");
                assert!(!on.contains('M'));
            }
            MsiClock::H12 => assert!(on.contains(" AM ") || on.contains(" PM "), "{on}"),
        }
        let u1 = Identity::user_assigned(1);
        let r = get(
            a,
            &msi(ARM, "2017-09-01", &format!("&clientid={}", u1.client_id)),
            &h,
        );
        assert_eq!(r.str("client_id"), u1.client_id);
        // client_id (with underscore) is not a 2017 selector: the system identity answers.
        let r = get(
            a,
            &msi(ARM, "2017-09-01", &format!("&client_id={}", u1.client_id)),
            &h,
        );
        assert_eq!(r.str("client_id"), Identity::system().client_id);
        // Only the 2017 protocol.
        assert_eq!(get(a, &msi(ARM, "2019-08-01", ""), &h).status, 400);
        let r = get(
            a,
            &msi(ARM, "2017-09-01", ""),
            &[("X-IDENTITY-HEADER", secret.as_str())],
        );
        assert_eq!(r.status, 400);
        assert!(r.body.is_empty());
    }
}

#[test]
fn azure_ml_numeric_times() {
    let emu = start(Mode::AzureMl, |c| c.identities = 1);
    let a = emu.addr();
    let env = emu.env();
    let default_client = env
        .iter()
        .find(|(k, _)| k == "DEFAULT_IDENTITY_CLIENT_ID")
        .map(|(_, v)| v.clone())
        .unwrap();
    assert_eq!(default_client, Identity::system().client_id);
    let secret = emu.secret().to_string();
    let h = [("secret", secret.as_str()), ("Metadata", "true")];
    let r = get(
        a,
        &msi(ARM, "2017-09-01", &format!("&clientid={default_client}")),
        &h,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.keys(),
        [
            "access_token",
            "expires_in",
            "expires_on",
            "resource",
            "token_type"
        ]
    );
    let j = r.json();
    assert!(j["expires_in"].is_u64() && j["expires_on"].is_u64());
    let (_, c) = jwt(&r.str("access_token"));
    assert_eq!(c["appid"], default_client.as_str());
    assert_eq!(j["expires_on"], c["exp"]);
    let u1 = Identity::user_assigned(1);
    let r = get(
        a,
        &msi(ARM, "2017-09-01", &format!("&clientid={}", u1.client_id)),
        &h,
    );
    let (_, c) = jwt(&r.str("access_token"));
    assert_eq!(c["appid"], u1.client_id.as_str());
    assert_eq!(get(a, &msi(ARM, "2017-09-01", ""), &[]).status, 400);
}

#[test]
fn cloud_shell_form_post_and_nested_errors() {
    let emu = start(Mode::CloudShell, |_| {});
    let a = emu.addr();
    let form = [
        ("Metadata", "true"),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ];
    let body = format!("resource={}", enc(ARM));
    let r = post(a, "/oauth2/token", &form, body.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.keys(),
        [
            "access_token",
            "refresh_token",
            "expires_in",
            "expires_on",
            "not_before",
            "resource",
            "token_type"
        ]
    );
    assert!(r.json().values().all(Value::is_string));
    let (_, c) = jwt(&r.str("access_token"));
    assert_eq!(c["aud"], ARM);
    assert_eq!(c["idtyp"], "user");

    let r = get(a, &format!("/oauth2/token?resource={}", enc(ARM)), &form);
    assert_eq!(r.status, 405);
    assert_eq!(r.keys(), ["error"]);
    let r = post(a, "/oauth2/token", &form[1..], body.as_bytes());
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "BadRequest");
    let r = post(
        a,
        "/oauth2/token",
        &form,
        format!("resource={}", enc("https://example.com/")).as_bytes(),
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "AudienceNotSupported");
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("Audience scope is not a supported MSI token audience.Supported audiences:"));
    let r = post(
        a,
        "/oauth2/token",
        &form,
        format!("{body}&client_id={}", Identity::user_assigned(1).client_id).as_bytes(),
    );
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"].is_string());
}

#[test]
fn arc_challenge_then_basic_authorization() {
    let dir = std::env::temp_dir().join(format!("imds-emu-arc-test-{}", std::process::id()));
    let emu = start(Mode::Arc, |c| c.arc_key_dir = Some(dir.clone()));
    let a = emu.addr();
    let target = format!(
        "/metadata/identity/oauth2/token?api-version=2020-06-01&resource={}",
        enc(ARM)
    );
    let md = [("Metadata", "true")];

    let r = get(a, &target, &md);
    assert_eq!(r.status, 401);
    assert_eq!(
        r.text(),
        r#"{"error":"unauthorized_client","error_description":"Missing Basic Authorization header","error_codes":[401]}"#
    );
    let challenge = r.header("WWW-Authenticate").unwrap().to_string();
    let path = challenge.strip_prefix("Basic realm=").unwrap();
    assert_eq!(challenge.matches('=').count(), 1);
    let path = std::path::PathBuf::from(path);
    assert!(path.is_absolute() && path.starts_with(&dir));
    assert_eq!(path.extension().unwrap(), "key");
    let key = std::fs::read_to_string(&path).unwrap();
    assert!(!key.is_empty() && key.len() <= 4096);

    let auth = format!("Basic {key}");
    let r = get(
        a,
        &target,
        &[("Metadata", "true"), ("Authorization", auth.as_str())],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.keys(),
        [
            "token_type",
            "expires_in",
            "expires_on",
            "ext_expires_in",
            "access_token",
            "resource"
        ]
    );
    let j = r.json();
    assert!(j["expires_in"].is_string() && j["expires_on"].is_string());
    assert!(j["ext_expires_in"].is_u64());
    let (_, c) = jwt(&r.str("access_token"));
    assert_eq!(c["aud"], ARM);
    assert_eq!(c["appid"], Identity::system().client_id.as_str());

    // A wrong key: a 401 without a challenge (terminal for clients).
    let r = get(
        a,
        &target,
        &[("Metadata", "true"), ("Authorization", "Basic nope")],
    );
    assert_eq!(r.status, 401);
    assert!(r.header("WWW-Authenticate").is_none());
    // Metadata still required, user-assigned selectors refused.
    assert_eq!(get(a, &target, &[]).text().len(), 88);
    let r = get(
        a,
        &format!(
            "{target}&client_id={}",
            Identity::user_assigned(1).client_id
        ),
        &md,
    );
    assert_eq!(r.status, 400);

    assert_eq!(emu.stats().status(401), 2);
    drop(emu);
    assert!(
        !path.exists(),
        "key files are removed when the emulator stops"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn vm_extension_endpoint() {
    let emu = start(Mode::VmExt, |c| c.identities = 40);
    let a = emu.addr();
    let md = [("Metadata", "true")];
    let target = format!("/oauth2/token?resource={}", enc(ARM));
    let r = get(a, &target, &md);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.keys(),
        [
            "access_token",
            "refresh_token",
            "expires_in",
            "expires_on",
            "not_before",
            "resource",
            "token_type"
        ]
    );
    assert_eq!(r.json()["refresh_token"], "");
    let u1 = Identity::user_assigned(1);
    let r = get(a, &format!("{target}&client_id={}", u1.client_id), &md);
    assert_eq!(r.keys().last().unwrap(), "client_id");
    assert_eq!(r.str("client_id"), u1.client_id);
    // The extension served at most 32 user-assigned identities.
    let r = get(
        a,
        &format!(
            "{target}&client_id={}",
            Identity::user_assigned(33).client_id
        ),
        &md,
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.str("error_description"), "Identity not found");
    let r = get(
        a,
        &format!("{target}&msi_res_id={}", enc(&u1.resource_id)),
        &md,
    );
    assert_eq!(r.status, 400);
    // Form POST, as older docs show.
    let r = post(
        a,
        "/oauth2/token",
        &[
            ("Metadata", "true"),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        format!("resource={}", enc(VAULT)).as_bytes(),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.str("resource"), VAULT);
    assert_eq!(get(a, &target, &[]).status, 400);
}

#[test]
fn every_mode_answers_with_content_length_and_control_api() {
    for mode in Mode::ALL {
        // Plain HTTP in every mode, Service Fabric included (its HTTPS: tests/service_fabric.rs).
        let emu = start(mode, |c| c.transport = Some(Transport::Http));
        assert_eq!(emu.mode(), mode);
        assert!(emu.token_url().ends_with(mode.token_path()));
        let r = get(emu.addr(), "/control/config", &[]);
        assert_eq!(r.str("mode"), mode.name());
        assert!(r.header("Content-Length").is_some());
        let r = get(emu.addr(), mode.token_path(), &[]);
        assert!(
            r.status >= 400 && r.header("Content-Length").is_some(),
            "{mode:?}"
        );
    }
}
