//! The control API under `/control/`.

use serde::Serialize;
use serde_json::{json, Value};

use crate::fault::FaultRule;
use crate::http::{get, parse_pairs, Request, Response};
use crate::state::{env_hints, Shared};

fn ok_json<T: Serialize>(v: &T) -> Response {
    match serde_json::to_vec(v) {
        Ok(b) => Response::json(200, b),
        Err(e) => fail(500, &e.to_string()),
    }
}

fn fail(status: u16, msg: &str) -> Response {
    Response::json(status, json!({ "error": msg }).to_string())
}

/// Answers a request under `/control/`.
pub(crate) fn handle(sh: &Shared, req: &Request) -> Response {
    let q = parse_pairs(&req.query);
    let m = req.method.as_str();
    match (m, req.path.trim_end_matches('/')) {
        ("GET", "/control/identities") => ok_json(&json!({
            "tenant_id": crate::identity::TENANT_ID,
            "subscription_id": crate::identity::SUBSCRIPTION_ID,
            "system_assigned": sh.system_enabled(),
            "user_assigned": sh.cfg.identities,
            "identities": sh.enabled_identities(),
        })),
        ("GET", "/control/stats") => ok_json(&sh.stats()),
        ("GET", "/control/tokens") => {
            let st = sh.lock();
            let list: Vec<_> = st
                .tokens
                .iter()
                .filter(|t| {
                    get(&q, "identity").map_or(true, |i| {
                        i == t.identity || i.eq_ignore_ascii_case(&t.client_id)
                    })
                })
                .filter(|t| get(&q, "resource").map_or(true, |r| r == t.resource))
                .collect();
            ok_json(&list)
        }
        ("GET", "/control/clock") => clock(sh),
        ("POST", "/control/advance") => match get(&q, "secs").map(str::parse::<u64>) {
            Some(Ok(n)) => {
                sh.lock().offset += n;
                clock(sh)
            }
            _ => fail(400, "advance needs ?secs=N (a non-negative integer)"),
        },
        ("GET", "/control/faults") => ok_json(&faults(sh)),
        ("POST", "/control/faults") => {
            let rules: Result<Vec<FaultRule>, String> =
                if req.body.iter().any(|b| !b.is_ascii_whitespace()) {
                    match serde_json::from_slice::<Value>(&req.body) {
                        Ok(Value::Array(a)) => a.into_iter().map(FaultRule::from_json).collect(),
                        Ok(v) => FaultRule::from_json(v).map(|r| vec![r]),
                        Err(e) => Err(format!("invalid JSON: {e}")),
                    }
                } else {
                    let pairs: Vec<_> = q.iter().filter(|(k, _)| k != "replace").cloned().collect();
                    FaultRule::from_pairs(&pairs).map(|r| vec![r])
                };
            match rules {
                Ok(rules) => {
                    let mut st = sh.lock();
                    if get(&q, "replace") == Some("true") {
                        st.faults.clear();
                    }
                    for r in rules {
                        st.add_fault(r);
                    }
                    drop(st);
                    ok_json(&faults(sh))
                }
                Err(e) => fail(400, &e),
            }
        }
        ("DELETE", "/control/faults") | ("POST", "/control/faults/clear") => {
            sh.lock().faults.clear();
            ok_json(&faults(sh))
        }
        ("POST", "/control/reset") => {
            let mut st = sh.lock();
            if get(&q, "all") == Some("true") {
                st.reset_all();
            } else {
                st.reset_stats();
            }
            drop(st);
            ok_json(&json!({"reset": true}))
        }
        ("GET", "/control/config") => {
            let env: serde_json::Map<String, Value> = env_hints(sh)
                .into_iter()
                .map(|(k, v)| (k, Value::from(v)))
                .collect();
            let tls = sh.tls.as_ref();
            ok_json(&json!({
                "mode": sh.cfg.mode.name(),
                "url": sh.url,
                "control_url": sh.control_url,
                "tls": tls.is_some_and(|t| t.config.is_some()),
                "thumbprint": tls.map(|t| t.advertised.as_str()),
                "served_thumbprint": tls
                    .filter(|t| t.config.is_some())
                    .map(|t| t.served_thumbprint.as_str()),
                "token_path": sh.cfg.mode.token_path(),
                "secret": sh.cfg.secret,
                "arc_key_dir": sh.arc_dir.display().to_string(),
                "token_lifetime": sh.cfg.token_lifetime,
                "token_size": sh.cfg.token_size,
                "throttle": sh.cfg.throttle,
                "rate": sh.cfg.rate,
                "slack": sh.cfg.slack,
                "window_ms": sh.cfg.window_ms,
                "concurrency": sh.cfg.concurrency,
                "env": env,
            }))
        }
        (_, p) if KNOWN.contains(&p) => fail(405, "method not allowed"),
        _ => fail(404, "unknown control endpoint"),
    }
}

const KNOWN: &[&str] = &[
    "/control/identities",
    "/control/stats",
    "/control/tokens",
    "/control/clock",
    "/control/advance",
    "/control/faults",
    "/control/faults/clear",
    "/control/reset",
    "/control/config",
];

fn faults(sh: &Shared) -> Vec<FaultRule> {
    sh.lock().faults.iter().map(|a| a.rule.clone()).collect()
}

fn clock(sh: &Shared) -> Response {
    let offset = sh.lock().offset;
    ok_json(&json!({"now": sh.now(), "offset": offset}))
}
