//! `token_body_vs_serde_json`: `parse_token_body` against serde_json, shared with the replay
//! test `core/tests/fuzz_corpus.rs` (which includes it once serde_json is a dev-dependency).
//!
//! serde_json is the reference for "is this JSON" and "what does it say". The comparison is
//! restricted to what must hold (see `core/fuzz/README.md`, "Divergences"):
//!
//! * serde_json reads the bytes as an object whose top-level keys are all distinct;
//!   `access_token` is a non-empty string without ASCII control characters; `expires_in` is a
//!   string of 1 to 10 ASCII digits written without escapes, or an integer up to `u32::MAX`
//!   written as digits; and none of `expires_on`, `refresh_in`, `token_type`, `client_id` is
//!   present; and no escaped key decodes to one of the six names the parser knows (it matches
//!   keys as written) ⇒ `parse_token_body` accepts, with the same token text and
//!   `expires_on == REQUEST_TIME + expires_in`.
//! * `parse_token_body` accepts ⇒ serde_json accepts the bytes as JSON, except where
//!   serde-json-core is known to be more lenient (see `lenient_only`).

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::checks::REQUEST_AT_S;

/// The names the token body parser knows.
const KNOWN: [&str; 6] = [
    "access_token",
    "expires_in",
    "expires_on",
    "refresh_in",
    "token_type",
    "client_id",
];

/// A top-level value, as much as the comparison needs.
#[derive(Debug)]
enum Val {
    /// A string: its decoded text, and whether it was written with escapes.
    Str { text: String, escaped: bool },
    /// A non-negative integer written without sign, fraction or exponent.
    U64(u64),
    /// Anything else (drained).
    Other,
}

#[derive(Debug)]
struct Member {
    key: String,
    key_escaped: bool,
    value: Val,
}

/// The top-level members of a JSON object, in order (duplicates kept).
struct Members(Vec<Member>);

impl<'de> de::Deserialize<'de> for Members {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(MembersVisitor)
    }
}

struct MembersVisitor;

impl<'de> Visitor<'de> for MembersVisitor {
    type Value = Members;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
        let mut out = Vec::new();
        while let Some(Val::Str { text, escaped }) = map.next_key_seed(ValSeed)? {
            let value = map.next_value_seed(ValSeed)?;
            out.push(Member {
                key: text,
                key_escaped: escaped,
                value,
            });
        }
        Ok(Members(out))
    }
}

struct ValSeed;

impl<'de> DeserializeSeed<'de> for ValSeed {
    type Value = Val;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Val, D::Error> {
        d.deserialize_any(ValVisitor)
    }
}

struct ValVisitor;

impl<'de> Visitor<'de> for ValVisitor {
    type Value = Val;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    // serde_json (reading a slice) lends a string without escapes and decodes one with them.
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Val, E> {
        Ok(Val::Str {
            text: v.to_owned(),
            escaped: false,
        })
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Val, E> {
        Ok(Val::Str {
            text: v.to_owned(),
            escaped: true,
        })
    }

    // serde_json calls `visit_u64` for digits only (`-0` is `visit_i64`, `1e3` `visit_f64`).
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Val, E> {
        Ok(Val::U64(v))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Val, E> {
        Ok(Val::Other)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Val, E> {
        Ok(Val::Other)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Val, E> {
        Ok(Val::Other)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Val, E> {
        Ok(Val::Other)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Val, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Val::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Val, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Val::Other)
    }
}

/// What serde_json makes of the bytes.
enum Reference {
    /// Not JSON, for a reason other than serde_json's nesting limit.
    NotJson,
    /// Nested deeper than serde_json's limit of 128: no opinion.
    TooDeep,
    /// JSON, but not an object (or an object whose keys are not strings).
    NotObject,
    /// A JSON object.
    Object(Vec<Member>),
}

fn reference(data: &[u8]) -> Reference {
    // `Value` checks everything (UTF-8, escapes, surrogates); `Members` reads the shape.
    if let Err(e) = serde_json::from_slice::<serde_json::Value>(data) {
        return if e.to_string().starts_with("recursion limit exceeded") {
            Reference::TooDeep
        } else {
            Reference::NotJson
        };
    }
    match serde_json::from_slice::<Members>(data) {
        Ok(Members(members)) => Reference::Object(members),
        Err(_) => Reference::NotObject,
    }
}

/// The token text and `expires_in` serde_json reads, when the shape is one the parser must
/// accept.
fn expected(members: &[Member]) -> Option<(&str, u64)> {
    let mut seen: Vec<&str> = Vec::with_capacity(members.len());
    for m in members {
        if seen.contains(&m.key.as_str()) {
            return None; // serde_json keeps the last, the parser refuses duplicates
        }
        seen.push(&m.key);
        if m.key_escaped && KNOWN.contains(&m.key.as_str()) {
            return None; // the parser matches keys as written
        }
    }
    let get = |k: &str| members.iter().find(|m| m.key == k).map(|m| &m.value);
    if ["expires_on", "refresh_in", "token_type", "client_id"]
        .iter()
        .any(|k| get(k).is_some())
    {
        return None;
    }
    let token = match get("access_token")? {
        Val::Str { text, .. }
            if !text.is_empty() && !text.bytes().any(|b| b.is_ascii_control()) =>
        {
            text.as_str()
        }
        _ => return None,
    };
    let expires_in = match get("expires_in")? {
        Val::Str {
            text,
            escaped: false,
        } if (1..=10).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit()) => {
            text.parse().ok()?
        }
        Val::U64(n) if *n <= u64::from(u32::MAX) => *n,
        _ => return None,
    };
    Some((token, expires_in))
}

/// The differential check; returns whether the bytes were a shape both must accept.
pub(crate) fn token_body_vs_serde_json(data: &[u8]) -> bool {
    let ours = imds_cache::parse_token_body(data, REQUEST_AT_S);
    let reference = reference(data);
    if ours.is_ok() {
        match reference {
            Reference::NotJson => assert!(
                lenient_only(data),
                "parse_token_body accepted bytes serde_json refuses as JSON"
            ),
            Reference::NotObject => panic!("parse_token_body accepted a JSON non-object"),
            Reference::TooDeep | Reference::Object(_) => {}
        }
    }
    let Reference::Object(members) = reference else {
        return false;
    };
    let Some((token, expires_in)) = expected(&members) else {
        return false;
    };
    let body = match ours {
        Ok(body) => body,
        Err(e) => panic!("serde_json reads a token body ({members:?}), parse_token_body: {e:?}"),
    };
    let mut out = vec![0u8; body.token_len()];
    assert_eq!(body.write_token(&mut out), Some(out.len()));
    assert_eq!(out, token.as_bytes(), "token text differs");
    assert_eq!(
        body.expires_on_s,
        REQUEST_AT_S + expires_in,
        "expires_on differs"
    );
    assert_eq!(body.refresh_in_s, None);
    true
}

/// Bytes serde_json refuses that serde-json-core is known to let through (README,
/// "Divergences"): the converse assertion is skipped for them.
///
/// serde-json-core checks that a `\uXXXX` escape has four hex digits but not that a
/// surrogate half (`\uD800`–`\uDFFF`) is paired, in keys and in values the parser skips:
/// `{"access_token":"t","expires_in":"1","k\ud83d":0}` is accepted. (The token itself is
/// checked: an unpaired half there is `BadToken`.)
fn lenient_only(data: &[u8]) -> bool {
    data.windows(4).any(|w| {
        w[0] == b'\\'
            && w[1] == b'u'
            && w[2].eq_ignore_ascii_case(&b'd')
            && matches!(w[3].to_ascii_lowercase(), b'8'..=b'9' | b'a'..=b'f')
    })
}
