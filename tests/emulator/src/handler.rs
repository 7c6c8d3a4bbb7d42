//! The token endpoint of each mode: header rules, query validation, identity resolution,
//! faults, and the success and error bodies.

use serde_json::Value;

use crate::fault::Fault;
use crate::http::{duplicate, get, parse_pairs, Framing, Request, Response};
use crate::identity::{guid, mix, Identity};
use crate::state::{Cached, IssuedToken, Key, Shared, State};
use crate::token::{mint, msi_date, object, Claims};
use crate::Mode;

/// IMDS `Server` header (a build seen in a real capture).
const IMDS_SERVER: &str = "IMDS/150.870.65.1015";
/// The E6 body: exactly 88 bytes.
pub(crate) const E6: &str =
    r#"{"error":"invalid_request","error_description":"Required metadata header not specified"}"#;
const E7: &str = "Identity not found";
const E8: &str = "Multiple user assigned identities exist, please specify the clientId / resourceId of the identity in the token request";
const APP_NOT_FOUND: &str =
    "No User Assigned or Delegated Managed Identity found for specified ClientId/ResourceId/PrincipalId.";
const APP_500: &str = "An unexpected error occured while fetching the AAD Token.";
/// IMDS api-versions (newest first) from which the identity category exists.
const IMDS_VERSIONS: &[&str] = &[
    "2025-04-07",
    "2024-07-17",
    "2024-03-15",
    "2023-11-15",
    "2023-07-01",
    "2021-12-13",
    "2021-11-15",
    "2021-11-01",
    "2021-10-01",
    "2021-08-01",
    "2021-05-01",
    "2021-03-01",
    "2021-02-01",
    "2021-01-01",
    "2020-12-01",
    "2020-10-01",
    "2020-09-01",
    "2020-07-15",
    "2020-06-01",
    "2019-11-01",
    "2019-08-15",
    "2019-08-01",
    "2019-06-04",
    "2019-06-01",
    "2019-04-30",
    "2019-03-11",
    "2019-02-01",
    "2018-10-01",
    "2018-04-02",
    "2018-02-01",
];
/// Cloud Shell's supported audiences (compared without a trailing slash).
const CLOUDSHELL_AUDIENCES: &[&str] = &[
    "https://management.core.windows.net/",
    "https://management.azure.com/",
    "https://graph.windows.net/",
    "https://vault.azure.net",
    "https://datalake.azure.net/",
    "https://outlook.office365.com/",
    "https://graph.microsoft.com/",
    "https://batch.core.windows.net/",
    "https://analysis.windows.net/powerbi/api",
    "https://storage.azure.com",
    "https://rest.media.azure.net",
    "https://api.loganalytics.io",
    "https://ossrdbms-aad.database.windows.net",
    "https://www.yammer.com",
    "https://digitaltwins.azure.net",
    "https://database.windows.net",
];

/// Which success body to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    Imds,
    VmExt,
    AppService2019,
    AppService2017,
    AzureMl,
    CloudShell,
    Arc,
    ServiceFabric,
}

/// A token request that passed validation.
#[derive(Debug)]
pub(crate) struct TokenOk {
    pub(crate) identity: usize,
    pub(crate) resource: String,
    pub(crate) bypass: bool,
    pub(crate) shape: Shape,
}

/// Why a token request is not answered with a token.
#[derive(Debug)]
pub(crate) enum Failure {
    Resp(Response),
    /// Arc's first step: write a key file and answer 401.
    ArcChallenge,
}

/// What the request asked for, as far as it could be understood, and whether it is valid.
#[derive(Debug)]
pub(crate) struct TokenAttempt {
    pub(crate) identity: Option<usize>,
    pub(crate) resource: Option<String>,
    pub(crate) result: Result<TokenOk, Failure>,
}

/// Outcome of the mode's checks.
#[derive(Debug)]
pub(crate) enum Prepared {
    /// Answer at once (routing, header rules); faults do not apply.
    Final(Response),
    /// A token request: faults apply, then the result.
    Token(TokenAttempt),
}

/// How to deliver a planned response.
#[derive(Clone, Debug)]
pub(crate) enum Delivery {
    Normal(Framing),
    Truncate(Option<usize>),
    Trickle { chunk: usize, interval_ms: u64 },
    Reset,
    Hang(Option<u64>),
}

/// A response and how to deliver it.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) resp: Response,
    pub(crate) delivery: Delivery,
    pub(crate) delay_ms: u64,
    pub(crate) key: Option<Key>,
}

pub(crate) fn correlation_id() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    guid(mix(t), 99)
}

/// An error body in the mode's shape.
pub(crate) fn error(mode: Mode, status: u16, code: &str, description: &str) -> Response {
    let r = match mode {
        Mode::Imds | Mode::VmExt | Mode::Arc => Response::json(
            status,
            object(&[
                ("error", code.into()),
                ("error_description", description.into()),
            ]),
        ),
        Mode::AppService2019 | Mode::Msi2017 | Mode::AzureMl => Response::json(
            status,
            object(&[
                ("statusCode", status.into()),
                ("message", description.into()),
                ("correlationId", correlation_id().into()),
            ]),
        ),
        Mode::CloudShell => {
            let inner = object(&[("code", code.into()), ("message", description.into())]);
            Response::json(status, format!(r#"{{"error":{inner}}}"#))
        }
        Mode::ServiceFabric => crate::service_fabric::error(status, code, description),
    };
    decorate(mode, r)
}

/// Adds the mode's `Server` header.
pub(crate) fn decorate(mode: Mode, r: Response) -> Response {
    match mode {
        Mode::Imds => r.header("Server", IMDS_SERVER),
        Mode::AppService2019 | Mode::Msi2017 | Mode::AzureMl => r.header("Server", "Kestrel"),
        _ => r,
    }
}

/// The error body for a status with no more specific cause (the spec's E5 texts on IMDS).
pub(crate) fn status_error(mode: Mode, status: u16) -> Response {
    let (code, desc) = match status {
        400 => ("invalid_request", "Bad request"),
        403 => ("forbidden", "Forbidden"),
        404 if mode == Mode::ServiceFabric => crate::service_fabric::NOT_FOUND,
        404 => ("not_found", "Not found"),
        405 => ("method_not_allowed", "Not allowed"),
        410 => ("gone", "The service is being updated"),
        429 => ("too_many_requests", "Too many requests"),
        500 if matches!(mode, Mode::AppService2019 | Mode::Msi2017 | Mode::AzureMl) => {
            ("server_error", APP_500)
        }
        500 if mode == Mode::ServiceFabric => crate::service_fabric::INTERNAL,
        500 => ("server_error", "Server error"),
        503 => ("service_unavailable", "Service unavailable"),
        _ => ("server_error", crate::http::reason(status)),
    };
    error(mode, status, code, desc)
}

fn bad(mode: Mode, desc: &str) -> Failure {
    Failure::Resp(error(mode, 400, "invalid_request", desc))
}

fn is_guid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Whether Entra would know this resource: a `scheme://host…` URL or a GUID.
pub(crate) fn resource_known(r: &str) -> bool {
    match r.split_once("://") {
        Some((scheme, rest)) => {
            !scheme.is_empty()
                && scheme
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"+-.".contains(&c))
                && !rest.is_empty()
                && !rest.starts_with('/')
                && !rest.bytes().any(|c| c.is_ascii_control() || c == b' ')
        }
        None => is_guid(r),
    }
}

pub(crate) fn invalid_resource(mode: Mode, resource: &str) -> Failure {
    let trace = correlation_id();
    let corr = correlation_id();
    let ts = {
        let (y, mo, d, h, mi, s) = crate::token::civil(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        );
        format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}Z")
    };
    let desc = format!(
        "AADSTS500011: The resource principal named {resource} was not found in the tenant named {}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant.\r\nTrace ID: {trace}\r\nCorrelation ID: {corr}\r\nTimestamp: {ts}",
        crate::identity::TENANT_ID
    );
    let body = object(&[
        ("error", "invalid_resource".into()),
        ("error_description", desc.into()),
        ("error_codes", Value::from(vec![500_011])),
        ("timestamp", ts.into()),
        ("trace_id", trace.into()),
        ("correlation_id", corr.into()),
        (
            "error_uri",
            "https://login.microsoftonline.com/error?code=500011".into(),
        ),
    ]);
    Failure::Resp(decorate(mode, Response::json(400, body)))
}

/// A selector as sent.
#[derive(Clone, Copy, Debug)]
enum Sel<'a> {
    Client(&'a str),
    Object(&'a str),
    Res(&'a str),
}

enum Unresolved {
    NotFound,
    Multiple,
}

/// Resolves a selector as IMDS does (§1.3): none → system-assigned if enabled, else the only
/// user-assigned identity, else "multiple". `max_user` bounds the usable user-assigned indices.
fn resolve(sh: &Shared, sel: Option<Sel<'_>>, max_user: usize) -> Result<usize, Unresolved> {
    let usable = |id: &Identity| id.index <= max_user;
    match sel {
        Some(Sel::Client(s)) => sh.by_client_id(s).filter(|i| usable(i)).map(|i| i.index),
        Some(Sel::Object(s)) => sh.by_object_id(s).filter(|i| usable(i)).map(|i| i.index),
        Some(Sel::Res(s)) => sh.by_resource_id(s).filter(|i| usable(i)).map(|i| i.index),
        None => {
            let users = sh.cfg.identities.min(max_user);
            if sh.system_enabled() {
                Some(0)
            } else if users == 1 {
                Some(1)
            } else if users > 1 {
                return Err(Unresolved::Multiple);
            } else {
                None
            }
        }
    }
    .ok_or(Unresolved::NotFound)
}

/// The selectors present among `names` (kind by position: client, object, resource id).
fn selectors<'a>(pairs: &'a [(String, String)], spec: &[(&str, u8)]) -> Vec<Sel<'a>> {
    let mut out = Vec::new();
    for (name, kind) in spec {
        if let Some(v) = get(pairs, name) {
            out.push(match kind {
                0 => Sel::Client(v),
                1 => Sel::Object(v),
                _ => Sel::Res(v),
            });
        }
    }
    out
}

pub(crate) fn non_empty(v: Option<&str>) -> Option<String> {
    v.filter(|s| !s.is_empty()).map(str::to_string)
}

/// Entry point: routes a non-control request in the configured mode.
pub(crate) fn prepare(sh: &Shared, req: &Request) -> Prepared {
    match sh.cfg.mode {
        Mode::Imds => imds(sh, req),
        Mode::VmExt => vmext(sh, req),
        Mode::AppService2019 | Mode::Msi2017 | Mode::AzureMl => app_service(sh, req),
        Mode::CloudShell => cloud_shell(sh, req),
        Mode::Arc => arc(sh, req),
        Mode::ServiceFabric => crate::service_fabric::prepare(sh, req),
    }
}

fn metadata_ok(req: &Request) -> bool {
    req.header("Metadata") == Some("true")
}

fn e6(mode: Mode) -> Response {
    decorate(mode, Response::json(400, E6))
}

fn api_version_error(mode: Mode) -> Failure {
    let versions: Vec<Value> = IMDS_VERSIONS[..3].iter().map(|&v| v.into()).collect();
    Failure::Resp(decorate(
        mode,
        Response::json(
            400,
            object(&[
                ("error", "Bad request. api-version is invalid or was not specified in the request. For more information refer to aka.ms/azureimds".into()),
                ("newest-versions", Value::from(versions)),
            ]),
        ),
    ))
}

fn imds(sh: &Shared, req: &Request) -> Prepared {
    let mode = Mode::Imds;
    if req.path == "/metadata/versions" {
        if !metadata_ok(req) {
            return Prepared::Final(e6(mode));
        }
        let v: Vec<Value> = IMDS_VERSIONS.iter().map(|&v| v.into()).collect();
        let body = object(&[("apiVersions", Value::from(v))]);
        return Prepared::Final(decorate(mode, Response::json(200, body)));
    }
    if req.path != mode.token_path() {
        return Prepared::Final(status_error(mode, 404));
    }
    if req.method != "GET" {
        return Prepared::Final(status_error(mode, 405));
    }
    if !metadata_ok(req) {
        return Prepared::Final(e6(mode));
    }
    if req.header("X-Forwarded-For").is_some() {
        return Prepared::Final(error(
            mode,
            400,
            "invalid_request",
            "Requests with an X-Forwarded-For header are not allowed",
        ));
    }
    let pairs = parse_pairs(&req.query);
    let sels = selectors(
        &pairs,
        &[
            ("client_id", 0),
            ("object_id", 1),
            ("msi_res_id", 2),
            ("mi_res_id", 2),
        ],
    );
    let resource = non_empty(get(&pairs, "resource"));
    let guess = if sels.len() <= 1 {
        resolve(sh, sels.first().copied(), usize::MAX).ok()
    } else {
        None
    };
    let result = (|| {
        if let Some(d) = duplicate(&pairs) {
            return Err(bad(mode, &format!("Duplicate query parameter '{d}'")));
        }
        match get(&pairs, "api-version") {
            Some(v) if IMDS_VERSIONS.contains(&v) => {}
            _ => return Err(api_version_error(mode)),
        }
        let Some(resource) = resource.clone() else {
            return Err(bad(mode, "Required query variable 'resource' is missing"));
        };
        if sels.len() > 1 {
            return Err(bad(
                mode,
                "Only one of client_id, object_id and msi_res_id may be specified",
            ));
        }
        let identity = match resolve(sh, sels.first().copied(), usize::MAX) {
            Ok(i) => i,
            Err(Unresolved::NotFound) => return Err(bad(mode, E7)),
            Err(Unresolved::Multiple) => return Err(bad(mode, E8)),
        };
        if sh.cfg.reject_unknown_resources && !resource_known(&resource) {
            return Err(invalid_resource(mode, &resource));
        }
        let bypass = get(&pairs, "bypass_cache").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        Ok(TokenOk {
            identity,
            resource,
            bypass,
            shape: Shape::Imds,
        })
    })();
    Prepared::Token(TokenAttempt {
        identity: guess,
        resource,
        result,
    })
}

/// Query pairs plus, for a form POST, the body's pairs.
fn all_pairs(req: &Request) -> Vec<(String, String)> {
    let mut pairs = parse_pairs(&req.query);
    if req.method == "POST" && !req.body.is_empty() {
        pairs.extend(parse_pairs(&String::from_utf8_lossy(&req.body)));
    }
    pairs
}

fn vmext(sh: &Shared, req: &Request) -> Prepared {
    let mode = Mode::VmExt;
    if req.path != mode.token_path() {
        return Prepared::Final(status_error(mode, 404));
    }
    if req.method != "GET" && req.method != "POST" {
        return Prepared::Final(status_error(mode, 405));
    }
    if !metadata_ok(req) {
        return Prepared::Final(e6(mode));
    }
    let pairs = all_pairs(req);
    let sels = selectors(&pairs, &[("client_id", 0), ("object_id", 1)]);
    let resource = non_empty(get(&pairs, "resource"));
    // The extension served at most 32 user-assigned identities.
    let guess = if sels.len() <= 1 {
        resolve(sh, sels.first().copied(), 32).ok()
    } else {
        None
    };
    let result = (|| {
        if let Some(d) = duplicate(&pairs) {
            return Err(bad(mode, &format!("Duplicate parameter '{d}'")));
        }
        if get(&pairs, "msi_res_id").is_some() || get(&pairs, "mi_res_id").is_some() {
            return Err(bad(
                mode,
                "Selecting an identity by resource id is not supported",
            ));
        }
        let Some(resource) = resource.clone() else {
            return Err(bad(mode, "Required parameter 'resource' is missing"));
        };
        if sels.len() > 1 {
            return Err(bad(
                mode,
                "Only one of client_id and object_id may be specified",
            ));
        }
        let identity = match resolve(sh, sels.first().copied(), 32) {
            Ok(i) => i,
            Err(Unresolved::NotFound) => return Err(bad(mode, E7)),
            Err(Unresolved::Multiple) => return Err(bad(mode, E8)),
        };
        if sh.cfg.reject_unknown_resources && !resource_known(&resource) {
            return Err(invalid_resource(mode, &resource));
        }
        Ok(TokenOk {
            identity,
            resource,
            bypass: false,
            shape: Shape::VmExt,
        })
    })();
    Prepared::Token(TokenAttempt {
        identity: guess,
        resource,
        result,
    })
}

/// App Service's answer to a missing or wrong secret: 400, empty body, a correlation id.
fn app_secret_error(mode: Mode) -> Response {
    decorate(
        mode,
        Response::new(400, Vec::new()).header("X-CORRELATION-ID", correlation_id()),
    )
}

fn app_service(sh: &Shared, req: &Request) -> Prepared {
    let mode = sh.cfg.mode;
    if !req.path.eq_ignore_ascii_case(mode.token_path()) {
        return Prepared::Final(status_error(mode, 404));
    }
    if req.method != "GET" {
        return Prepared::Final(status_error(mode, 405));
    }
    let secret = sh.cfg.secret.as_str();
    // Which protocol: App Service answers the 2017 one whenever the `secret` header is used.
    let v2019 = match (mode, req.header("X-IDENTITY-HEADER"), req.header("secret")) {
        (Mode::AppService2019, Some(h), _) if h == secret => true,
        (Mode::AppService2019, Some(_), _) => return Prepared::Final(app_secret_error(mode)),
        (_, _, Some(h)) if h == secret => false,
        _ => return Prepared::Final(app_secret_error(mode)),
    };
    let pairs = parse_pairs(&req.query);
    let spec: &[(&str, u8)] = if v2019 {
        // `msi_res_id` is ignored by App Service.
        &[
            ("client_id", 0),
            ("principal_id", 1),
            ("object_id", 1),
            ("mi_res_id", 2),
        ]
    } else {
        &[("clientid", 0)]
    };
    let sels = selectors(&pairs, spec);
    let resource = non_empty(get(&pairs, "resource"));
    let resolve_app = |sel: Option<Sel<'_>>| match sel {
        None if sh.system_enabled() => Some(0),
        None => None,
        Some(s) => resolve(sh, Some(s), usize::MAX).ok(),
    };
    let guess = if sels.len() <= 1 {
        resolve_app(sels.first().copied())
    } else {
        None
    };
    let result = (|| {
        if let Some(d) = duplicate(&pairs) {
            return Err(bad(mode, &format!("Duplicate query parameter '{d}'")));
        }
        let version_ok = matches!(
            (mode, v2019, get(&pairs, "api-version")),
            (_, true, Some("2019-08-01"))
                | (
                    Mode::AppService2019,
                    false,
                    Some("2019-08-01" | "2017-09-01")
                )
                | (_, false, Some("2017-09-01"))
        );
        if !version_ok {
            return Err(bad(mode, "The api-version is missing or not supported"));
        }
        let Some(resource) = resource.clone() else {
            return Err(bad(mode, "The resource parameter is missing"));
        };
        if sels.len() > 1 {
            return Err(bad(
                mode,
                "Only one of client_id, principal_id and mi_res_id may be specified",
            ));
        }
        let Some(identity) = resolve_app(sels.first().copied()) else {
            return Err(bad(mode, APP_NOT_FOUND));
        };
        if sh.cfg.reject_unknown_resources && !resource_known(&resource) {
            return Err(Failure::Resp(status_error(mode, 500)));
        }
        let shape = match (mode, v2019) {
            (Mode::AzureMl, _) => Shape::AzureMl,
            (_, true) => Shape::AppService2019,
            (_, false) => Shape::AppService2017,
        };
        Ok(TokenOk {
            identity,
            resource,
            bypass: false,
            shape,
        })
    })();
    Prepared::Token(TokenAttempt {
        identity: guess,
        resource,
        result,
    })
}

fn cloud_shell(sh: &Shared, req: &Request) -> Prepared {
    let _ = sh;
    let mode = Mode::CloudShell;
    if req.path != mode.token_path() {
        return Prepared::Final(error(mode, 404, "NotFound", "Not found"));
    }
    if req.method != "POST" {
        return Prepared::Final(error(
            mode,
            405,
            "MethodNotAllowed",
            "Only POST is supported",
        ));
    }
    if !metadata_ok(req) {
        return Prepared::Final(error(
            mode,
            400,
            "BadRequest",
            "Required metadata header not specified",
        ));
    }
    let pairs = all_pairs(req);
    let resource = non_empty(get(&pairs, "resource"));
    let result = (|| {
        let nested_bad = |m: &str| Failure::Resp(error(mode, 400, "BadRequest", m));
        if let Some(d) = duplicate(&pairs) {
            return Err(nested_bad(&format!("Duplicate parameter '{d}'")));
        }
        let Some(resource) = resource.clone() else {
            return Err(nested_bad("Required parameter 'resource' is missing"));
        };
        if [
            "client_id",
            "object_id",
            "msi_res_id",
            "mi_res_id",
            "clientid",
            "principal_id",
        ]
        .iter()
        .any(|n| get(&pairs, n).is_some())
        {
            return Err(nested_bad(
                "User assigned identities are not supported in Cloud Shell",
            ));
        }
        let trimmed = resource.trim_end_matches('/');
        if !CLOUDSHELL_AUDIENCES
            .iter()
            .any(|a| a.trim_end_matches('/') == trimmed)
        {
            let msg = format!(
                "Audience scope is not a supported MSI token audience.Supported audiences:{}",
                CLOUDSHELL_AUDIENCES.join(",")
            );
            return Err(Failure::Resp(error(
                mode,
                400,
                "AudienceNotSupported",
                &msg,
            )));
        }
        Ok(TokenOk {
            identity: 0,
            resource,
            bypass: false,
            shape: Shape::CloudShell,
        })
    })();
    Prepared::Token(TokenAttempt {
        identity: Some(0),
        resource,
        result,
    })
}

fn arc(sh: &Shared, req: &Request) -> Prepared {
    let mode = Mode::Arc;
    if req.path != mode.token_path() {
        return Prepared::Final(status_error(mode, 404));
    }
    if req.method != "GET" {
        return Prepared::Final(status_error(mode, 405));
    }
    if !metadata_ok(req) {
        return Prepared::Final(e6(mode));
    }
    let pairs = parse_pairs(&req.query);
    let resource = non_empty(get(&pairs, "resource"));
    let guess = sh.system_enabled().then_some(0);
    let result = (|| {
        if let Some(d) = duplicate(&pairs) {
            return Err(bad(mode, &format!("Duplicate query parameter '{d}'")));
        }
        if get(&pairs, "api-version").is_none_or_empty() {
            return Err(bad(mode, "api-version is missing"));
        }
        let Some(resource) = resource.clone() else {
            return Err(bad(mode, "Required query variable 'resource' is missing"));
        };
        if ["client_id", "object_id", "msi_res_id", "mi_res_id"]
            .iter()
            .any(|n| get(&pairs, n).is_some())
        {
            return Err(bad(mode, "User assigned identities are not supported"));
        }
        if !sh.system_enabled() {
            return Err(bad(mode, E7));
        }
        match req.header("Authorization") {
            None => return Err(Failure::ArcChallenge),
            Some(v) => {
                let given = v
                    .get(..6)
                    .filter(|p| p.eq_ignore_ascii_case("basic "))
                    .map(|_| v[6..].trim());
                let known = given.is_some_and(|g| sh.lock().arc_keys.iter().any(|(_, k)| k == g));
                if !known {
                    return Err(Failure::Resp(Response::json(
                        401,
                        object(&[
                            ("error", "unauthorized_client".into()),
                            (
                                "error_description",
                                "Invalid Basic Authorization header".into(),
                            ),
                            ("error_codes", Value::from(vec![401])),
                        ]),
                    )));
                }
            }
        }
        if sh.cfg.reject_unknown_resources && !resource_known(&resource) {
            return Err(invalid_resource(mode, &resource));
        }
        Ok(TokenOk {
            identity: 0,
            resource,
            bypass: false,
            shape: Shape::Arc,
        })
    })();
    Prepared::Token(TokenAttempt {
        identity: guess,
        resource,
        result,
    })
}

trait EmptyExt {
    fn is_none_or_empty(&self) -> bool;
}

impl EmptyExt for Option<&str> {
    fn is_none_or_empty(&self) -> bool {
        self.map_or(true, str::is_empty)
    }
}

/// Writes an Arc key file and returns the challenge.
pub(crate) fn arc_challenge(sh: &Shared) -> Response {
    let mut st = sh.lock();
    st.serial += 1;
    let serial = st.serial;
    let name = guid(mix(serial ^ u64::from(std::process::id())), 7);
    let secret: String = (0..4)
        .map(|i| {
            format!(
                "{:016x}",
                mix(serial.wrapping_mul(31).wrapping_add(i) ^ 0xa5a5)
            )
        })
        .collect();
    let path = sh.arc_dir.join(format!("{name}.key"));
    if let Err(e) = std::fs::write(&path, &secret) {
        return Response::json(
            500,
            object(&[
                ("error", "server_error".into()),
                (
                    "error_description",
                    format!("cannot write key file: {e}").into(),
                ),
            ]),
        );
    }
    st.arc_keys.push((path.clone(), secret));
    Response::json(
        401,
        object(&[
            ("error", "unauthorized_client".into()),
            (
                "error_description",
                "Missing Basic Authorization header".into(),
            ),
            ("error_codes", Value::from(vec![401])),
        ]),
    )
    .header(
        "WWW-Authenticate",
        format!("Basic realm={}", path.display()),
    )
}

fn get_token(
    sh: &Shared,
    st: &mut State,
    key: &Key,
    ok: &TokenOk,
    now: u64,
    fault: Option<&Fault>,
) -> Cached {
    let lifetime = sh.cfg.token_lifetime;
    let special = match fault {
        Some(Fault::Expired) => Some((
            "expired",
            now.saturating_sub(lifetime + 60),
            sh.cfg.token_size,
        )),
        Some(Fault::Oversized { bytes }) => Some(("oversized", now, *bytes)),
        _ => None,
    };
    if special.is_none() && !ok.bypass {
        if let Some(c) = st.cache.get(key) {
            if c.exp > now + 300 {
                return c.clone();
            }
        }
    }
    let (fault_name, iat, size) = special.unwrap_or(("", now, sh.cfg.token_size));
    st.serial += 1;
    let identity = &sh.identities[ok.identity];
    let claims = Claims {
        identity,
        resource: &ok.resource,
        iat,
        nbf: iat.saturating_sub(300),
        exp: iat + lifetime,
        serial: st.serial,
        user: ok.shape == Shape::CloudShell,
    };
    let token = mint(&claims, size);
    let cached = Cached {
        token: token.clone().into(),
        nbf: claims.nbf,
        exp: claims.exp,
    };
    st.log_token(
        IssuedToken {
            identity: identity.name.clone(),
            client_id: identity.client_id.clone(),
            resource: ok.resource.clone(),
            token,
            iat,
            nbf: claims.nbf,
            exp: claims.exp,
            fault: (!fault_name.is_empty()).then(|| fault_name.to_string()),
        },
        key,
    );
    if special.is_none() {
        st.cache.insert(key.clone(), cached.clone());
    }
    cached
}

/// The success answer for a validated request.
pub(crate) fn success(sh: &Shared, key: &Key, ok: &TokenOk, fault: Option<&Fault>) -> Response {
    let now = sh.now();
    let cached = {
        let mut st = sh.lock();
        get_token(sh, &mut st, key, ok, now, fault)
    };
    let identity = &sh.identities[ok.identity];
    let client_id = if matches!(fault, Some(Fault::WrongClientId)) {
        guid(u64::MAX, 1)
    } else {
        identity.client_id.clone()
    };
    let s = |n: u64| Value::from(n.to_string());
    let expires_in = cached.exp.saturating_sub(now);
    let ext = sh.cfg.token_lifetime.saturating_sub(1);
    let at: Value = cached.token.as_ref().into();
    let res: Value = ok.resource.as_str().into();
    let body = match ok.shape {
        Shape::Imds => object(&[
            ("access_token", at),
            ("client_id", client_id.into()),
            ("expires_in", s(expires_in)),
            ("expires_on", s(cached.exp)),
            ("ext_expires_in", s(ext)),
            ("not_before", s(cached.nbf)),
            ("resource", res),
            ("token_type", "Bearer".into()),
        ]),
        Shape::VmExt => {
            let mut f = vec![
                ("access_token", at),
                ("refresh_token", "".into()),
                ("expires_in", s(expires_in)),
                ("expires_on", s(cached.exp)),
                ("not_before", s(cached.nbf)),
                ("resource", res),
                ("token_type", "Bearer".into()),
            ];
            if !identity.is_system() || matches!(fault, Some(Fault::WrongClientId)) {
                f.push(("client_id", client_id.into()));
            }
            object(&f)
        }
        Shape::AppService2019 => object(&[
            ("access_token", at),
            ("expires_on", s(cached.exp)),
            ("resource", res),
            ("token_type", "Bearer".into()),
            ("client_id", client_id.into()),
        ]),
        Shape::AppService2017 => object(&[
            ("access_token", at),
            ("expires_on", msi_date(cached.exp, sh.cfg.msi_clock).into()),
            ("resource", res),
            ("token_type", "Bearer".into()),
            ("client_id", client_id.into()),
        ]),
        Shape::AzureMl => object(&[
            ("access_token", at),
            ("expires_in", expires_in.into()),
            ("expires_on", cached.exp.into()),
            ("resource", res),
            ("token_type", "Bearer".into()),
        ]),
        Shape::CloudShell => object(&[
            ("access_token", at),
            ("refresh_token", "".into()),
            ("expires_in", s(expires_in)),
            ("expires_on", s(cached.exp)),
            ("not_before", s(cached.nbf)),
            ("resource", res),
            ("token_type", "Bearer".into()),
        ]),
        Shape::Arc => object(&[
            ("token_type", "Bearer".into()),
            ("expires_in", s(expires_in)),
            ("expires_on", s(cached.exp)),
            ("ext_expires_in", ext.into()),
            ("access_token", at),
            ("resource", res),
        ]),
        Shape::ServiceFabric => object(&[
            ("token_type", "Bearer".into()),
            ("access_token", at),
            ("expires_on", cached.exp.into()),
            ("resource", res),
        ]),
    };
    decorate(sh.cfg.mode, Response::json(200, body))
}

/// What Docker Desktop's proxy says (reason phrase and body) when a container asks for
/// 169.254.169.254: azure-identity, MSAL and the Azure SDKs recognise it as "no managed
/// identity here".
pub(crate) const DOCKER_UNREACHABLE: &str = "connecting to 169.254.169.254:80: connecting to 169.254.169.254:80: dial tcp 169.254.169.254:80: connectex: A socket operation was attempted to an unreachable network.";

/// Docker Desktop's 403: an HTTP/1.0 status line with the message as reason phrase, the
/// message as body, no `Content-Type`.
fn unreachable_403() -> Response {
    let mut r = Response::new(403, DOCKER_UNREACHABLE);
    r.status_line = Some(format!("HTTP/1.0 403 {DOCKER_UNREACHABLE}"));
    r
}

/// Turns a request into a plan: faults first (for token requests), then the mode's answer.
pub(crate) fn plan(sh: &Shared, req: &Request) -> Plan {
    let mode = sh.cfg.mode;
    let framing = if sh.cfg.chunked {
        Framing::Chunked
    } else {
        Framing::Length
    };
    let attempt = match prepare(sh, req) {
        Prepared::Final(resp) => {
            let resp = match sh.lock().take_proxy_fault() {
                Some(_) => unreachable_403(),
                None => resp,
            };
            return Plan {
                resp,
                delivery: Delivery::Normal(framing),
                delay_ms: 0,
                key: None,
            };
        }
        Prepared::Token(a) => a,
    };
    let key: Option<Key> = match (&attempt.result, attempt.identity, &attempt.resource) {
        (Ok(ok), _, _) => Some((ok.identity, ok.resource.clone())),
        (Err(_), Some(i), Some(r)) => Some((i, r.clone())),
        _ => None,
    };
    let identity = key
        .as_ref()
        .map(|k| k.0)
        .or(attempt.identity)
        .map(|i| &sh.identities[i]);
    let fault = {
        let mut st = sh.lock();
        if let Some(k) = &key {
            st.key_start(k, &sh.identities[k.0]);
        }
        st.take_fault(identity, attempt.resource.as_deref())
    };
    let mut delivery = Delivery::Normal(framing);
    let mut delay_ms = 0;
    let replaced = match &fault {
        Some(Fault::Status {
            status,
            retry_after,
        }) => {
            let r = status_error(mode, *status);
            Some(match retry_after {
                Some(s) => r.header("Retry-After", s.to_string()),
                None => r,
            })
        }
        Some(Fault::Gone { .. }) => Some(status_error(mode, 410)),
        Some(Fault::Unreachable403) => Some(unreachable_403()),
        Some(Fault::TooManyRequests { retry_after }) => {
            let r = status_error(mode, 429);
            Some(match retry_after {
                Some(s) => r.header("Retry-After", s.to_string()),
                None => r,
            })
        }
        Some(Fault::Hang { ms }) => {
            delivery = Delivery::Hang(*ms);
            Some(Response::new(0, Vec::new()))
        }
        Some(Fault::Reset) => {
            delivery = Delivery::Reset;
            Some(Response::new(0, Vec::new()))
        }
        Some(Fault::NonJson) => Some(
            Response::new(
                200,
                "<!DOCTYPE html><html><head><title>Welcome</title></head><body><h1>It works!</h1></body></html>",
            )
            .header("Content-Type", "text/html; charset=utf-8"),
        ),
        Some(Fault::MalformedJson) => Some(decorate(
            mode,
            Response::json(200, r#"{"access_token":"eyJ0eXAiOiJKV1Qi","expires_in":"3599","expires_on":"#),
        )),
        Some(Fault::Delay { ms }) => {
            delay_ms = *ms;
            None
        }
        Some(Fault::Truncate { bytes }) => {
            delivery = Delivery::Truncate(*bytes);
            None
        }
        Some(Fault::Trickle { chunk, interval_ms }) => {
            delivery = Delivery::Trickle {
                chunk: (*chunk).max(1),
                interval_ms: *interval_ms,
            };
            None
        }
        Some(Fault::Chunked) => {
            delivery = Delivery::Normal(Framing::Chunked);
            None
        }
        Some(Fault::EofBody) => {
            delivery = Delivery::Normal(Framing::Eof);
            None
        }
        Some(Fault::WrongClientId | Fault::Expired | Fault::Oversized { .. }) | None => None,
    };
    let resp = match replaced {
        Some(r) => r,
        None => match &attempt.result {
            Ok(ok) => success(
                sh,
                key.as_ref().expect("key of a valid request"),
                ok,
                fault.as_ref(),
            ),
            Err(Failure::Resp(r)) => r.clone(),
            Err(Failure::ArcChallenge) => arc_challenge(sh),
        },
    };
    Plan {
        resp,
        delivery,
        delay_ms,
        key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e6_is_88_bytes() {
        assert_eq!(E6.len(), 88);
    }

    #[test]
    fn resources() {
        assert!(resource_known("https://management.azure.com/"));
        assert!(resource_known("api://my-app"));
        assert!(resource_known("fe83865b-495e-4ec7-9574-12b264882c9f"));
        assert!(!resource_known("user.read"));
        assert!(!resource_known("https:///x"));
    }
}
