//! IMDS mode over TCP: bodies, errors, selectors, cache and clock.

mod common;

use common::*;
use imds_emulator::{Config, Emulator, Identity, Mode, TENANT_ID};
use serde_json::Value;

const IMDS_KEYS: [&str; 8] = [
    "access_token",
    "client_id",
    "expires_in",
    "expires_on",
    "ext_expires_in",
    "not_before",
    "resource",
    "token_type",
];

fn start(f: impl FnOnce(&mut Config)) -> Emulator {
    let mut c = Config::new(Mode::Imds);
    f(&mut c);
    Emulator::start(c).unwrap()
}

#[test]
fn success_body_and_claims() {
    let emu = start(|c| c.identities = 2);
    let r = imds(emu.addr(), ARM, "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("Content-Type"),
        Some("application/json; charset=utf-8")
    );
    assert!(r.header("Server").unwrap().starts_with("IMDS/"));
    assert_eq!(r.keys(), IMDS_KEYS);
    let j = r.json();
    assert!(
        j.values().all(Value::is_string),
        "all strings: {}",
        r.text()
    );
    let sys = Identity::system();
    assert_eq!(j["client_id"], sys.client_id.as_str());
    assert_eq!(j["resource"], ARM);
    assert_eq!(j["token_type"], "Bearer");
    assert_eq!(j["ext_expires_in"], "86399");
    let now = emu.now();
    let exp = num(&j["expires_on"]);
    let expires_in = num(&j["expires_in"]);
    assert!(exp.abs_diff(now + 86_400) <= 3);
    assert!((exp - now).abs_diff(expires_in) <= 2);
    assert_eq!(num(&j["not_before"]), exp - 86_700);

    let token = r.str("access_token");
    assert!((1_500..=2_100).contains(&token.len()), "{}", token.len());
    let (h, c) = jwt(&token);
    assert_eq!(h["typ"], "JWT");
    assert_eq!(h["alg"], "RS256");
    assert!(h.contains_key("kid") && h.contains_key("x5t"));
    assert_eq!(c["aud"], ARM, "aud is the resource as requested");
    assert_eq!(c["iss"], format!("https://sts.windows.net/{TENANT_ID}/"));
    assert_eq!(c["tid"], TENANT_ID);
    assert_eq!(c["appid"], sys.client_id.as_str());
    assert_eq!(c["oid"], sys.object_id.as_str());
    assert_eq!(c["idtyp"], "app");
    assert_eq!(num(&c["exp"]), exp);
    assert_eq!(num(&c["nbf"]), exp - 86_700);
    assert_eq!(num(&c["iat"]), exp - 86_400);
    let mirid = c["xms_mirid"].as_str().unwrap();
    assert!(
        mirid.contains("/resourcegroups/") && mirid.ends_with("virtualMachines/imds-emulator-vm")
    );

    // The token is one the emulator issued for exactly this key.
    let issued = emu.tokens();
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0].token, token);
    assert_eq!(
        (issued[0].identity.as_str(), issued[0].resource.as_str()),
        ("system", ARM)
    );
    assert_eq!(issued[0].exp, exp);

    // A resource without the trailing slash is another key with another aud.
    let r2 = imds(emu.addr(), "https://management.azure.com", "");
    let (_, c2) = jwt(&r2.str("access_token"));
    assert_eq!(c2["aud"], "https://management.azure.com");
    assert_ne!(r2.str("access_token"), token);
}

#[test]
fn metadata_header_missing_is_the_exact_88_byte_body() {
    let emu = start(|_| {});
    let expected = br#"{"error":"invalid_request","error_description":"Required metadata header not specified"}"#;
    assert_eq!(expected.len(), 88);
    for headers in [
        &[][..],
        &[("Metadata", "True")][..],
        &[("Metadata", "false")][..],
    ] {
        let r = get(emu.addr(), &imds_target(ARM, ""), headers);
        assert_eq!(r.status, 400);
        assert_eq!(r.body, expected);
        assert_eq!(r.header("Content-Length"), Some("88"));
        assert_eq!(
            r.header("Content-Type"),
            Some("application/json; charset=utf-8")
        );
        let head = String::from_utf8_lossy(&r.raw);
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"));
    }
    assert_eq!(emu.stats().status(400), 3);
    assert!(emu.tokens().is_empty());
}

#[test]
fn request_hygiene() {
    let emu = start(|_| {});
    let a = emu.addr();
    let md = [("Metadata", "true")];
    let r = get(
        a,
        &imds_target(ARM, ""),
        &[("Metadata", "true"), ("X-Forwarded-For", "10.0.0.1")],
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "invalid_request");

    let r = get(
        a,
        &format!("/metadata/identity/oauth2/token?resource={}", enc(ARM)),
        &md,
    );
    assert_eq!(r.status, 400);
    assert!(r
        .text()
        .contains("api-version is invalid or was not specified"));
    let r = get(
        a,
        &format!(
            "/metadata/identity/oauth2/token?api-version=2017-12-01&resource={}",
            enc(ARM)
        ),
        &md,
    );
    assert_eq!(r.status, 400);

    let r = get(
        a,
        "/metadata/identity/oauth2/token?api-version=2018-02-01",
        &md,
    );
    assert_eq!(r.status, 400);
    assert!(r.str("error_description").contains("resource"));
    let r = get(
        a,
        "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=",
        &md,
    );
    assert_eq!(r.status, 400);

    // Duplicate query parameters.
    let r = imds(a, ARM, &format!("&resource={}", enc(VAULT)));
    assert_eq!(r.status, 400);
    assert!(r.str("error_description").contains("resource"));
    let r = imds(a, ARM, "&api-version=2018-02-01");
    assert_eq!(r.status, 400);

    // Other verbs and paths: the spec's E5 bodies.
    let r = post(a, &imds_target(ARM, ""), &md, b"");
    assert_eq!(r.status, 405);
    assert_eq!(
        r.text(),
        r#"{"error":"method_not_allowed","error_description":"Not allowed"}"#
    );
    let r = get(a, "/metadata/identity/oauth2/tokens", &md);
    assert_eq!(r.status, 404);
    assert_eq!(
        r.text(),
        r#"{"error":"not_found","error_description":"Not found"}"#
    );

    // A resource Entra does not know.
    let r = imds(a, "user.read", "");
    assert_eq!(r.status, 400);
    assert_eq!(r.keys()[..3], ["error", "error_description", "error_codes"]);
    assert_eq!(r.json()["error"], "invalid_resource");
    assert!(r
        .str("error_description")
        .starts_with("AADSTS500011: The resource principal named user.read"));

    // The api-version list (no api-version needed there).
    let r = get(a, "/metadata/versions", &md);
    assert_eq!(r.status, 200);
    assert!(r.json()["apiVersions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v == "2018-02-01"));
    assert!(emu.tokens().is_empty());
}

#[test]
fn selectors_resolve_like_imds() {
    let emu = start(|c| c.identities = 3);
    let a = emu.addr();
    let check = |r: &Resp, id: &Identity| {
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.str("client_id"), id.client_id);
        let (_, c) = jwt(&r.str("access_token"));
        assert_eq!(c["appid"], id.client_id.as_str());
        assert_eq!(c["oid"], id.object_id.as_str());
        assert_eq!(c["xms_mirid"], id.mirid().as_str());
    };
    let u1 = Identity::user_assigned(1);
    let u2 = Identity::user_assigned(2);
    let u3 = Identity::user_assigned(3);
    check(&imds(a, ARM, &format!("&client_id={}", u2.client_id)), &u2);
    check(
        &imds(
            a,
            ARM,
            &format!("&client_id={}", u2.client_id.to_uppercase()),
        ),
        &u2,
    );
    check(&imds(a, ARM, &format!("&object_id={}", u3.object_id)), &u3);
    check(
        &imds(a, ARM, &format!("&msi_res_id={}", enc(&u1.resource_id))),
        &u1,
    );
    check(
        &imds(a, ARM, &format!("&mi_res_id={}", enc(&u1.resource_id))),
        &u1,
    );
    check(
        &imds(a, ARM, &format!("&msi_res_id={}", enc(&u1.mirid()))),
        &u1,
    );
    assert!(u1.mirid().contains("/resourcegroups/"));
    check(&imds(a, ARM, ""), &Identity::system());

    // E7, byte for byte (68 bytes as in the real capture).
    let r = imds(a, ARM, "&client_id=00000000-0000-0000-0000-000000000000");
    assert_eq!(r.status, 400);
    assert_eq!(
        r.text(),
        r#"{"error":"invalid_request","error_description":"Identity not found"}"#
    );
    assert_eq!(r.header("Content-Length"), Some("68"));
    let r = imds(a, ARM, &format!("&msi_res_id={}", enc("/subscriptions/x/resourceGroups/y/providers/Microsoft.ManagedIdentity/userAssignedIdentities/uai-9")));
    assert_eq!(r.status, 400);
    assert_eq!(r.str("error_description"), "Identity not found");

    // More than one selector.
    let r = imds(
        a,
        ARM,
        &format!("&client_id={}&object_id={}", u1.client_id, u1.object_id),
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "invalid_request");
}

#[test]
fn default_identity_without_system_assigned() {
    let e8 = r#"{"error":"invalid_request","error_description":"Multiple user assigned identities exist, please specify the clientId / resourceId of the identity in the token request"}"#;
    let emu = start(|c| {
        c.system_assigned = false;
        c.identities = 2;
    });
    let r = imds(emu.addr(), ARM, "");
    assert_eq!(r.status, 400);
    assert_eq!(r.text(), e8);
    // The system identity's ids are unknown then.
    let r = imds(
        emu.addr(),
        ARM,
        &format!("&client_id={}", Identity::system().client_id),
    );
    assert_eq!(r.str("error_description"), "Identity not found");
    drop(emu);

    let emu = start(|c| {
        c.system_assigned = false;
        c.identities = 1;
    });
    let r = imds(emu.addr(), ARM, "");
    assert_eq!(r.status, 200);
    assert_eq!(r.str("client_id"), Identity::user_assigned(1).client_id);
    drop(emu);

    let emu = start(|c| c.system_assigned = false);
    let r = imds(emu.addr(), ARM, "");
    assert_eq!(r.status, 400);
    assert_eq!(r.str("error_description"), "Identity not found");
}

#[test]
fn token_cache_clock_and_bypass() {
    let emu = start(|_| {});
    let a = emu.addr();
    let t1 = imds(a, ARM, "");
    let t2 = imds(a, ARM, "");
    assert_eq!(
        t1.str("access_token"),
        t2.str("access_token"),
        "cached per key"
    );
    assert_eq!(t1.str("expires_on"), t2.str("expires_on"));

    // Advance the emulator's clock through the control API: same token, expires_in decays.
    let r = post(a, "/control/advance?secs=3600", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(num(&r.json()["offset"]), 3600);
    let t3 = imds(a, ARM, "");
    assert_eq!(t3.str("access_token"), t1.str("access_token"));
    let exp = num(&t1.json()["expires_on"]);
    let in3 = num(&t3.json()["expires_in"]);
    assert_eq!(in3, exp - emu.now());
    assert!(in3 <= 86_400 - 3_600);

    // With under 5 minutes left the token is re-minted.
    let adv2 = exp - emu.now() - 299;
    emu.advance(adv2);
    let t4 = imds(a, ARM, "");
    assert_ne!(t4.str("access_token"), t1.str("access_token"));
    let exp4 = num(&t4.json()["expires_on"]);
    assert!(exp4.abs_diff(emu.now() + 86_400) <= 3);
    let (_, c4) = jwt(&t4.str("access_token"));
    assert_eq!(num(&c4["iat"]), exp4 - 86_400);

    // bypass_cache=true mints a new token, which is then the cached one.
    let t5 = imds(a, ARM, "&bypass_cache=true");
    assert_ne!(t5.str("access_token"), t4.str("access_token"));
    let t6 = imds(a, ARM, "");
    assert_eq!(t6.str("access_token"), t5.str("access_token"));

    let stats = emu.stats();
    assert_eq!(stats.tokens_minted, 3);
    let k = stats.key("system", ARM).unwrap();
    assert_eq!((k.requests, k.tokens_minted), (6, 3));
    assert_eq!(stats.clock_offset_secs, 3_600 + adv2);
}

#[test]
fn lifetime_and_size_are_configurable() {
    let emu = start(|c| {
        c.token_lifetime = 600;
        c.token_size = 4_000;
    });
    let r = imds(emu.addr(), VAULT, "");
    let j = r.json();
    assert!(num(&j["expires_in"]).abs_diff(600) <= 2);
    assert_eq!(j["ext_expires_in"], "599");
    let t = r.str("access_token");
    assert!((4_000..=4_002).contains(&t.len()), "{}", t.len());
    let (_, c) = jwt(&t);
    assert_eq!(c["aud"], VAULT);
}

#[test]
fn two_thousand_identities_are_listed_and_resolvable() {
    let emu = start(|c| c.identities = 2_000);
    let r = get(emu.addr(), "/control/identities", &[]);
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(j["tenant_id"], TENANT_ID);
    let list = j["identities"].as_array().unwrap();
    assert_eq!(list.len(), 2_001);
    assert_eq!(list[0]["name"], "system");
    assert_eq!(list[0]["kind"], "system_assigned");
    let mut ids = std::collections::HashSet::new();
    for (i, v) in list.iter().enumerate() {
        let id = Identity::user_assigned(i);
        assert_eq!(v["index"], i);
        assert_eq!(v["client_id"], id.client_id.as_str());
        assert_eq!(v["object_id"], id.object_id.as_str());
        assert_eq!(v["resource_id"], id.resource_id.as_str());
        assert!(ids.insert(id.client_id.clone()) && ids.insert(id.object_id.clone()));
    }
    assert_eq!(emu.identities().len(), 2_001);
    let last = Identity::user_assigned(2_000);
    assert_eq!(last.name, "uai-2000");
    assert!(last
        .resource_id
        .ends_with("/providers/Microsoft.ManagedIdentity/userAssignedIdentities/uai-2000"));
    let r = imds(emu.addr(), ARM, &format!("&client_id={}", last.client_id));
    assert_eq!(r.str("client_id"), last.client_id);
}

#[test]
fn stats_tokens_and_reset_endpoints() {
    let emu = start(|c| c.identities = 1);
    let a = emu.addr();
    let u1 = Identity::user_assigned(1);
    imds(a, ARM, "");
    imds(a, ARM, "");
    imds(a, VAULT, &format!("&client_id={}", u1.client_id));
    imds(a, VAULT, "&client_id=00000000-0000-0000-0000-000000000000");
    get(a, &imds_target(ARM, ""), &[]);

    let s = get(a, "/control/stats", &[]).json();
    assert_eq!(num(&s["requests"]), 5);
    assert_eq!(num(&s["statuses"]["200"]), 3);
    assert_eq!(num(&s["statuses"]["400"]), 2);
    assert_eq!(num(&s["tokens_minted"]), 2);
    let keys = s["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0]["identity"], "system");
    assert_eq!(num(&keys[0]["requests"]), 2);
    assert_eq!(keys[1]["identity"], "uai-1");
    assert_eq!(keys[1]["client_id"], u1.client_id.as_str());
    assert_eq!(keys[1]["resource"], VAULT);
    assert_eq!(num(&keys[1]["max_concurrency"]), 1);

    let stats = emu.stats();
    assert_eq!(stats.requests, 5);
    assert_eq!(stats.key("uai-1", VAULT).unwrap().statuses["200"], 1);
    assert_eq!(stats.max_concurrency, 1);

    let t = get(
        a,
        &format!("/control/tokens?identity=uai-1&resource={}", enc(VAULT)),
        &[],
    );
    let list: Vec<Value> = serde_json::from_slice(&t.body).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["client_id"], u1.client_id.as_str());
    assert!(list[0]["exp"].is_u64());

    let c = get(a, "/control/config", &[]).json();
    assert_eq!(c["mode"], "imds");
    assert_eq!(c["env"]["AZURE_POD_IDENTITY_AUTHORITY_HOST"], emu.url());

    assert_eq!(post(a, "/control/reset", &[], b"").status, 200);
    let s = emu.stats();
    assert_eq!((s.requests, s.tokens_minted, s.keys.len()), (0, 0, 0));
    assert!(emu.tokens().is_empty());
    assert_eq!(get(a, "/control/nope", &[]).status, 404);
    assert_eq!(post(a, "/control/advance?secs=x", &[], b"").status, 400);
}
