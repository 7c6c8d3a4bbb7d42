//! Fault injection: rules that replace or alter the answer to matching token requests.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::http::parse_pairs;

fn default_gone_ms() -> u64 {
    70_000
}
fn default_oversized() -> usize {
    64 * 1024
}
fn default_trickle_chunk() -> usize {
    16
}
fn default_trickle_interval() -> u64 {
    100
}

/// One kind of failure. In JSON and query form the variant is the `kind` field
/// (`{"kind":"status","status":503}`); other fields are the variant's parameters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Answer with this status and the flavour's error body for it (404, 500, 503, …).
    /// `retry_after` adds a `Retry-After` header (seconds).
    Status {
        /// HTTP status to send.
        status: u16,
        /// Optional `Retry-After` value in seconds.
        #[serde(default)]
        retry_after: Option<u64>,
    },
    /// Answer 410 to every matching request for `window_ms` milliseconds, counted from the
    /// first request that hits the rule (IMDS being updated; the real window is ≤ 70 s).
    Gone {
        /// Length of the window in milliseconds (default 70 000).
        #[serde(default = "default_gone_ms")]
        window_ms: u64,
    },
    /// Answer 429 `too_many_requests`, with `Retry-After` when given.
    TooManyRequests {
        /// Optional `Retry-After` value in seconds.
        #[serde(default)]
        retry_after: Option<u64>,
    },
    /// Wait this long, then answer normally.
    Delay {
        /// Delay in milliseconds.
        ms: u64,
    },
    /// Read the request and never answer; the connection is closed when the client gives up,
    /// after `ms` when given, or when the emulator stops.
    Hang {
        /// Optional limit in milliseconds after which the connection is closed unanswered.
        #[serde(default)]
        ms: Option<u64>,
    },
    /// Reset the connection (RST) without answering.
    Reset,
    /// Send the head with the full `Content-Length` but only `bytes` of the body (default:
    /// half), then close.
    Truncate {
        /// Body bytes to send before closing.
        #[serde(default)]
        bytes: Option<usize>,
    },
    /// Answer 200 with an HTML page instead of JSON.
    NonJson,
    /// Answer 200 with `Content-Type: application/json` and a body that is not valid JSON.
    MalformedJson,
    /// Answer 200 with a valid body whose token is `bytes` characters long (default 64 KiB).
    Oversized {
        /// Token length in characters.
        #[serde(default = "default_oversized")]
        bytes: usize,
    },
    /// Send the normal answer `chunk` bytes at a time, `interval_ms` apart.
    Trickle {
        /// Bytes per write (default 16).
        #[serde(default = "default_trickle_chunk")]
        chunk: usize,
        /// Pause between writes in milliseconds (default 100).
        #[serde(default = "default_trickle_interval")]
        interval_ms: u64,
    },
    /// Answer 200 with a valid token but a `client_id` that belongs to no identity.
    WrongClientId,
    /// Answer 200 with a token that has already expired (`expires_on` in the past).
    Expired,
    /// Send the normal answer with `Transfer-Encoding: chunked`.
    Chunked,
    /// Send the normal answer without `Content-Length`; the body ends at connection close.
    EofBody,
    /// Answer as Docker Desktop's proxy does for a container that asks for 169.254.169.254:
    /// `403` with "…connectex: A socket operation was attempted to an unreachable network." as
    /// reason phrase and body. Applies to every non-control request, before the mode's header
    /// check and routing (the proxy answers before any endpoint sees the request).
    #[serde(rename = "unreachable_403")]
    Unreachable403,
}

impl Fault {
    /// The `kind` name of this fault.
    pub fn name(&self) -> &'static str {
        match self {
            Fault::Status { .. } => "status",
            Fault::Gone { .. } => "gone",
            Fault::TooManyRequests { .. } => "too_many_requests",
            Fault::Delay { .. } => "delay",
            Fault::Hang { .. } => "hang",
            Fault::Reset => "reset",
            Fault::Truncate { .. } => "truncate",
            Fault::NonJson => "non_json",
            Fault::MalformedJson => "malformed_json",
            Fault::Oversized { .. } => "oversized",
            Fault::Trickle { .. } => "trickle",
            Fault::WrongClientId => "wrong_client_id",
            Fault::Expired => "expired",
            Fault::Chunked => "chunked",
            Fault::EofBody => "eof_body",
            Fault::Unreachable403 => "unreachable_403",
        }
    }
}

/// A fault, how many requests it applies to, and which requests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRule {
    /// What to do.
    #[serde(flatten)]
    pub fault: Fault,
    /// How many matching requests get it; `None` = every one (for `gone`: the window).
    #[serde(default)]
    pub count: Option<u32>,
    /// Only requests for this identity: its name (`system`, `uai-3`), index, client id,
    /// object id or resource id.
    #[serde(default)]
    pub identity: Option<String>,
    /// Only requests for exactly this resource.
    #[serde(default)]
    pub resource: Option<String>,
}

impl FaultRule {
    /// A rule that applies `fault` to every token request.
    pub fn new(fault: Fault) -> FaultRule {
        FaultRule {
            fault,
            count: None,
            identity: None,
            resource: None,
        }
    }

    /// Only the next `n` matching requests.
    pub fn times(mut self, n: u32) -> FaultRule {
        self.count = Some(n);
        self
    }

    /// Only requests for this identity (name, index, client id, object id or resource id).
    pub fn for_identity(mut self, identity: impl Into<String>) -> FaultRule {
        self.identity = Some(identity.into());
        self
    }

    /// Only requests for this resource (exact match).
    pub fn for_resource(mut self, resource: impl Into<String>) -> FaultRule {
        self.resource = Some(resource.into());
        self
    }

    /// Parses `kind=status&status=503&count=3` (`,` also separates pairs; values are
    /// percent-decoded).
    pub fn parse(spec: &str) -> Result<FaultRule, String> {
        let spec = spec.replace(',', "&");
        let pairs = parse_pairs(&spec);
        FaultRule::from_pairs(&pairs)
    }

    pub(crate) fn from_pairs(pairs: &[(String, String)]) -> Result<FaultRule, String> {
        let mut obj = serde_json::Map::new();
        for (k, v) in pairs {
            let val = match v.parse::<u64>() {
                Ok(n) if k != "identity" && k != "resource" => Value::from(n),
                _ => Value::from(v.clone()),
            };
            obj.insert(k.clone(), val);
        }
        FaultRule::from_json(Value::Object(obj))
    }

    pub(crate) fn from_json(v: Value) -> Result<FaultRule, String> {
        serde_json::from_value(v).map_err(|e| format!("invalid fault: {e}"))
    }
}

/// A rule being applied, with its remaining count and, for `gone`, the end of its window.
#[derive(Clone, Debug)]
pub(crate) struct ActiveRule {
    pub(crate) rule: FaultRule,
    pub(crate) gone_until: Option<std::time::Instant>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_specs() {
        let r = FaultRule::parse("kind=status&status=503&count=3").unwrap();
        assert_eq!(
            r.fault,
            Fault::Status {
                status: 503,
                retry_after: None
            }
        );
        assert_eq!(r.count, Some(3));
        let r = FaultRule::parse("kind=gone,window_ms=1500,identity=uai-2").unwrap();
        assert_eq!(r.fault, Fault::Gone { window_ms: 1500 });
        assert_eq!(r.identity.as_deref(), Some("uai-2"));
        let r = FaultRule::parse("kind=reset").unwrap();
        assert_eq!(r.fault, Fault::Reset);
        let r = FaultRule::parse("kind=unreachable_403,count=1").unwrap();
        assert_eq!(r.fault, Fault::Unreachable403);
        assert_eq!(r.fault.name(), "unreachable_403");
        assert!(FaultRule::parse("kind=nope").is_err());
        let j: FaultRule =
            serde_json::from_str(r#"{"kind":"trickle","chunk":4,"count":1}"#).unwrap();
        assert_eq!(
            j.fault,
            Fault::Trickle {
                chunk: 4,
                interval_ms: 100
            }
        );
        let s = serde_json::to_string(&FaultRule::new(Fault::Expired).times(2)).unwrap();
        assert_eq!(
            s,
            r#"{"kind":"expired","count":2,"identity":null,"resource":null}"#
        );
    }
}
