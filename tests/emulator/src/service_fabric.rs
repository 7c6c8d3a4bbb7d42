//! Service Fabric's token endpoint: `GET /metadata/identity/oauth2/token` over HTTPS with the
//! `secret` header, api-version `2019-07-01-preview`, nested `{"error":{…}}` bodies, and 404
//! (terminal) for an unknown authentication code or identity.

use crate::handler::{
    correlation_id, invalid_resource, non_empty, resource_known, status_error, Failure, Prepared,
    Shape, TokenAttempt, TokenOk,
};
use crate::http::{duplicate, get, parse_pairs, Request, Response};
use crate::state::Shared;
use crate::token::object;
use crate::Mode;

/// api-versions answered: the documented one, and the one MSAL .NET sends.
const VERSIONS: &[&str] = &["2019-07-01-preview", "2020-05-01"];
/// The 404 body's code and message (unknown identity or authentication code).
pub(crate) const NOT_FOUND: (&str, &str) = (
    "ManagedIdentityNotFound",
    "Managed identity not found for the specified application host.",
);
/// The 500 body's code and message.
pub(crate) const INTERNAL: (&str, &str) = ("InternalServerError", "An error occurred.");

/// `{"error":{"correlationId":…,"code":…,"message":…}}` (the doc's sample, field order kept).
pub(crate) fn error(status: u16, code: &str, message: &str) -> Response {
    let inner = object(&[
        ("correlationId", correlation_id().into()),
        ("code", code.into()),
        ("message", message.into()),
    ]);
    Response::json(status, format!(r#"{{"error":{inner}}}"#))
}

fn fail(status: u16, (code, message): (&str, &str)) -> Failure {
    Failure::Resp(error(status, code, message))
}

/// The identity of the application: selected by `principalId` (the object id, as MSAL .NET
/// sends it), else the system-assigned identity, else `uai-1`.
fn identity(sh: &Shared, principal: Option<&str>) -> Option<usize> {
    match principal {
        Some(p) => sh.by_object_id(p).map(|i| i.index),
        None if sh.system_enabled() => Some(0),
        None => (sh.cfg.identities >= 1).then_some(1),
    }
}

pub(crate) fn prepare(sh: &Shared, req: &Request) -> Prepared {
    let mode = Mode::ServiceFabric;
    if req.path != mode.token_path() {
        return Prepared::Final(status_error(mode, 404));
    }
    if req.method != "GET" {
        return Prepared::Final(status_error(mode, 405));
    }
    match req.header("secret") {
        None => {
            return Prepared::Final(error(
                400,
                "SecretHeaderNotFound",
                "Secret is not found in the request headers.",
            ))
        }
        // An unknown authentication code is a 404, like an unknown identity.
        Some(s) if s != sh.cfg.secret => return Prepared::Final(status_error(mode, 404)),
        Some(_) => {}
    }
    let pairs = parse_pairs(&req.query);
    let resource = non_empty(get(&pairs, "resource"));
    let principal = get(&pairs, "principalId");
    let guess = identity(sh, principal);
    let result = (|| {
        if let Some(d) = duplicate(&pairs) {
            let msg = format!("The parameter '{d}' is given more than once.");
            return Err(fail(400, ("ArgumentNullOrEmpty", &msg)));
        }
        match get(&pairs, "api-version") {
            Some(v) if VERSIONS.contains(&v) => {}
            v => {
                let msg = format!(
                    "The api-version '{}' is not supported. Supported version is '2019-07-01-preview'.",
                    v.unwrap_or("")
                );
                return Err(fail(400, ("InvalidApiVersion", &msg)));
            }
        }
        let Some(resource) = resource.clone() else {
            return Err(fail(
                400,
                (
                    "ArgumentNullOrEmpty",
                    "The parameter 'resource' should not be null or an empty string.",
                ),
            ));
        };
        let Some(identity) = guess else {
            return Err(fail(404, NOT_FOUND));
        };
        if sh.cfg.reject_unknown_resources && !resource_known(&resource) {
            return Err(invalid_resource(mode, &resource));
        }
        Ok(TokenOk {
            identity,
            resource,
            bypass: false,
            shape: Shape::ServiceFabric,
        })
    })();
    Prepared::Token(TokenAttempt {
        identity: guess,
        resource,
        result,
    })
}
