//! Token bodies: the token kept escaped in the response bytes, its expiry read from any of
//! the time shapes the endpoints send (D10).

use core::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json_core::str::EscapedStr;

use super::MAX_DEPTH;
use crate::identity::{Identity, IdentityKind};
use crate::json::{unescape, Value};
use crate::time::{self, TimeError};

/// Which time field an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeField {
    /// `expires_on`.
    ExpiresOn,
    /// `expires_in`.
    ExpiresIn,
    /// `refresh_in`.
    RefreshIn,
}

/// Why a token body was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BodyError {
    /// The body is not a JSON object of the expected shape.
    NotJson,
    /// There is no `access_token`.
    MissingToken,
    /// `access_token` is empty.
    EmptyToken,
    /// `access_token` contains an invalid escape or a control character.
    BadToken,
    /// Neither `expires_on` nor `expires_in` is present.
    MissingExpiry,
    /// A time field is malformed.
    Time(TimeField, TimeError),
    /// `token_type` is present and is not `Bearer` (compared case-insensitively).
    NotBearer,
}

impl BodyError {
    /// A short description of the error.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::NotJson => "token body is not the expected JSON object",
            Self::MissingToken => "token body has no access_token",
            Self::EmptyToken => "access_token is empty",
            Self::BadToken => "access_token holds an invalid escape or control character",
            Self::MissingExpiry => "token body has neither expires_on nor expires_in",
            Self::Time(TimeField::ExpiresOn, _) => "expires_on is malformed",
            Self::Time(TimeField::ExpiresIn, _) => "expires_in is malformed",
            Self::Time(TimeField::RefreshIn, _) => "refresh_in is malformed",
            Self::NotBearer => "token_type is not Bearer",
        }
    }
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl core::error::Error for BodyError {}

/// A token body: the token stays in the response bytes (escaped) until it is written out.
#[derive(Clone, Copy)]
pub struct TokenBody<'a> {
    token: EscapedStr<'a>,
    token_len: usize,
    /// The token holds no escape: its raw text is the token.
    plain: bool,
    /// Absolute expiry, epoch seconds.
    pub expires_on_s: u64,
    /// Seconds after the request at which the server suggests a refresh.
    pub refresh_in_s: Option<u64>,
    client_id: Option<EscapedStr<'a>>,
}

impl fmt::Debug for TokenBody<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenBody")
            .field("token_len", &self.token_len)
            .field("expires_on", &self.expires_on_s)
            .field("refresh_in", &self.refresh_in_s)
            .finish_non_exhaustive()
    }
}

impl<'a> TokenBody<'a> {
    /// Length of the token once unescaped.
    pub const fn token_len(&self) -> usize {
        self.token_len
    }

    /// Writes the unescaped token into `out`; `None` when `out` is shorter than
    /// [`token_len`](Self::token_len).
    pub fn write_token(&self, out: &mut [u8]) -> Option<usize> {
        let out = out.get_mut(..self.token_len)?;
        if self.plain {
            out.copy_from_slice(self.token.0.as_bytes());
            return Some(self.token_len);
        }
        let mut at = 0;
        unescape::for_each(self.token.0, |piece| {
            out[at..at + piece.len()].copy_from_slice(piece);
            at += piece.len();
        })
        .ok()?;
        Some(at)
    }

    /// Calls `f` with the unescaped token, piece by piece.
    pub(crate) fn pieces(&self, mut f: impl FnMut(&[u8])) {
        if self.plain {
            return f(self.token.0.as_bytes());
        }
        // The token was checked to unescape cleanly when it was parsed.
        let _ = unescape::for_each(self.token.0, f);
    }

    /// Whether the echoed `client_id`, if any, names `identity` (always true otherwise).
    pub fn client_id_matches(&self, identity: &Identity<'_>) -> bool {
        match (identity.kind(), self.client_id) {
            (IdentityKind::ClientId, Some(echo)) => {
                unescape::eq_ignore_ascii_case(echo.0, identity.value()) == Ok(true)
            }
            _ => true,
        }
    }
}

/// Parses a token body. `request_at_s` (epoch seconds) anchors `expires_in` (D10: `expires_on`
/// wins when both are present).
pub fn parse_token_body(body: &[u8], request_at_s: u64) -> Result<TokenBody<'_>, BodyError> {
    let mut fast = FastFields::default();
    let object = crate::json::check_members(body, MAX_DEPTH, |key, value| fast.member(key, value))
        .map_err(|_| BodyError::NotJson)?;
    let fields = match fast.fields {
        Some(fields) if object => fields,
        _ => read_fields_slow(body)?,
    };
    token_body(fields, request_at_s)
}

/// Checks the fields of a token body and reads its times.
pub(super) fn token_body(
    fields: Fields<'_>,
    request_at_s: u64,
) -> Result<TokenBody<'_>, BodyError> {
    let token = fields.access_token.ok_or(BodyError::MissingToken)?;
    let plain = fields.token_shape == TokenShape::Plain;
    let mut token_len = 0;
    let mut control = false;
    if plain || fields.token_shape == TokenShape::PlainWithDel {
        // No escape: the raw text is the token, and DEL its only possible control byte.
        token_len = token.0.len();
        control = !plain;
    } else {
        unescape::for_each(token.0, |piece| {
            token_len += piece.len();
            control |= piece.iter().any(|b| b.is_ascii_control());
        })
        .map_err(|_| BodyError::BadToken)?;
    }
    if token_len == 0 {
        return Err(BodyError::EmptyToken);
    }
    if control {
        return Err(BodyError::BadToken);
    }
    if let Some(kind) = fields.token_type {
        if unescape::eq_ignore_ascii_case(kind.0, "bearer") != Ok(true) {
            return Err(BodyError::NotBearer);
        }
    }
    let [on, expires_in, refresh_in_s] = fields.times;
    let expires_on_s = match (on, expires_in) {
        (Time::Absent, Time::Absent) => return Err(BodyError::MissingExpiry),
        (Time::NumberPending, _) => return Err(BodyError::NotJson),
        (Time::Absent, t) => request_at_s.saturating_add(t.seconds(TimeField::ExpiresIn)?),
        (Time::Number(n), _) if n < time::YEAR_2001_S => {
            return Err(BodyError::Time(
                TimeField::ExpiresOn,
                TimeError::BeforeYear2001,
            ))
        }
        (Time::Number(n), _) => n,
        (Time::Text(s), _) => {
            time::parse_expires_on(s).map_err(|e| BodyError::Time(TimeField::ExpiresOn, e))?
        }
    };
    let refresh_in_s = match refresh_in_s {
        Time::Absent => None,
        t => Some(t.seconds(TimeField::RefreshIn)?),
    };
    Ok(TokenBody {
        token,
        token_len,
        plain,
        expires_on_s,
        refresh_in_s,
        client_id: fields.client_id,
    })
}

/// What the first pass learned about a time field.
#[derive(Clone, Copy, Debug)]
enum Time<'a> {
    Absent,
    Text(&'a str),
    Number(u64),
    /// A number seen in the first pass, read in the second.
    NumberPending,
}

impl Time<'_> {
    fn kind(self) -> Kind {
        match self {
            Time::Number(_) | Time::NumberPending => Kind::Number,
            _ => Kind::Unknown,
        }
    }

    fn seconds(self, field: TimeField) -> Result<u64, BodyError> {
        match self {
            Time::Text(s) => time::parse_seconds(s).map_err(|e| BodyError::Time(field, e)),
            Time::Number(n) => Ok(n),
            Time::Absent | Time::NumberPending => Err(BodyError::MissingExpiry),
        }
    }
}

/// How to read a time field in this pass.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Unknown,
    Number,
}

pub(super) struct Fields<'a> {
    access_token: Option<EscapedStr<'a>>,
    /// What the check saw of `access_token` (`Unknown` from the serde-json-core path).
    token_shape: TokenShape,
    token_type: Option<EscapedStr<'a>>,
    client_id: Option<EscapedStr<'a>>,
    times: [Time<'a>; 3],
}

impl Default for Fields<'_> {
    fn default() -> Self {
        Self {
            access_token: None,
            token_shape: TokenShape::Unknown,
            token_type: None,
            client_id: None,
            times: [Time::Absent; 3],
        }
    }
}

/// What is known of the raw `access_token` text.
#[derive(Clone, Copy, Debug, PartialEq)]
enum TokenShape {
    /// Not known: unescape to measure and check.
    Unknown,
    /// No escape and no DEL.
    Plain,
    /// No escape, a DEL somewhere.
    PlainWithDel,
}

/// The fields taken from the check's walk; `fields` is `None` once a member is of a shape
/// only the two-pass parse answers exactly (a duplicate, a non-string where a string is
/// wanted, a time that is not a string or a plain `u64`).
struct FastFields<'a> {
    fields: Option<Fields<'a>>,
}

impl Default for FastFields<'_> {
    fn default() -> Self {
        Self {
            fields: Some(Fields::default()),
        }
    }
}

impl<'a> FastFields<'a> {
    fn member(&mut self, key: &[u8], value: Value<'a>) {
        let Some(fields) = self.fields.as_mut() else {
            return;
        };
        if !fields.take(key, value) {
            self.fields = None;
        }
    }
}

impl<'a> Fields<'a> {
    /// Takes one top-level member as the two-pass parse would; false when unsure.
    fn take(&mut self, key: &[u8], value: Value<'a>) -> bool {
        let slot = match key {
            b"access_token" => &mut self.access_token,
            b"token_type" => &mut self.token_type,
            b"client_id" => &mut self.client_id,
            b"expires_on" => return self.take_time(0, value),
            b"expires_in" => return self.take_time(1, value),
            b"refresh_in" => return self.take_time(2, value),
            _ => return true,
        };
        match value {
            Value::Str { raw, escaped, del } if slot.is_none() => {
                *slot = Some(EscapedStr(raw));
                if key == b"access_token" {
                    self.token_shape = match (escaped, del) {
                        (true, _) => TokenShape::Unknown,
                        (false, false) => TokenShape::Plain,
                        (false, true) => TokenShape::PlainWithDel,
                    };
                }
                true
            }
            _ => false,
        }
    }

    fn take_time(&mut self, index: usize, value: Value<'a>) -> bool {
        if !matches!(self.times[index], Time::Absent) {
            return false;
        }
        self.times[index] = match value {
            Value::Str { raw, .. } => Time::Text(raw),
            Value::Number(digits) => match plain_u64(digits) {
                Some(n) => Time::Number(n),
                None => return false,
            },
            Value::Other => return false,
        };
        true
    }
}

/// A number made of digits only that fits a `u64` (what `deserialize_u64` reads whole).
fn plain_u64(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |n, &d| {
        if !d.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// The two passes of serde-json-core, for a body that passed the check.
pub(super) fn read_fields_slow(body: &[u8]) -> Result<Fields<'_>, BodyError> {
    let first = read_fields(body, [Kind::Unknown; 3])?;
    if first.times.iter().any(|t| matches!(t, Time::NumberPending)) {
        read_fields(body, first.times.map(|t| t.kind()))
    } else {
        Ok(first)
    }
}

fn read_fields(body: &[u8], kinds: [Kind; 3]) -> Result<Fields<'_>, BodyError> {
    let mut de = serde_json_core::de::Deserializer::new(body, None);
    let fields = de::Deserializer::deserialize_map(&mut de, FieldsVisitor { kinds })
        .map_err(|e| time_error_of(e, kinds).unwrap_or(BodyError::NotJson))?;
    de.end().map_err(|_| BodyError::NotJson)?;
    Ok(fields)
}

/// In the second pass, a failure can only come from a number field the first pass skipped
/// leniently (`3599.0`, `-1`, `1e3`): report it as that field's error.
fn time_error_of(e: serde_json_core::de::Error, kinds: [Kind; 3]) -> Option<BodyError> {
    use serde_json_core::de::Error as E;
    let field = [
        TimeField::ExpiresOn,
        TimeField::ExpiresIn,
        TimeField::RefreshIn,
    ]
    .into_iter()
    .zip(kinds)
    .find(|(_, k)| *k == Kind::Number)?
    .0;
    let why = match e {
        E::ExpectedObjectCommaOrEnd => TimeError::Fraction,
        E::InvalidNumber => TimeError::Negative,
        _ => TimeError::NotDigits,
    };
    Some(BodyError::Time(field, why))
}

struct FieldsVisitor {
    kinds: [Kind; 3],
}

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Fields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a token body")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Fields::default();
        while let Some(key) = map.next_key::<&'de str>()? {
            let slot = match key {
                "access_token" => Some(&mut out.access_token),
                "token_type" => Some(&mut out.token_type),
                "client_id" => Some(&mut out.client_id),
                _ => None,
            };
            if let Some(slot) = slot {
                if slot.replace(map.next_value()?).is_some() {
                    return Err(de::Error::custom("duplicate field"));
                }
                continue;
            }
            let index = match key {
                "expires_on" => 0,
                "expires_in" => 1,
                "refresh_in" => 2,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            if !matches!(out.times[index], Time::Absent) {
                return Err(de::Error::custom("duplicate field"));
            }
            out.times[index] = map.next_value_seed(TimeSeed(self.kinds[index]))?;
        }
        Ok(out)
    }
}

/// Reads a time field: as text or "some number" in the first pass, as `u64` in the second.
struct TimeSeed(Kind);

impl<'de> DeserializeSeed<'de> for TimeSeed {
    type Value = Time<'de>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        match self.0 {
            Kind::Number => d.deserialize_u64(TimeVisitor),
            Kind::Unknown => d.deserialize_ignored_any(TimeVisitor),
        }
    }
}

struct TimeVisitor;

impl<'de> Visitor<'de> for TimeVisitor {
    type Value = Time<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a time as a string of digits or a number")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Time::Text(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Time::Number(v))
    }

    /// serde-json-core's `ignored_any` skips a bare value (a number, or `true`/`null`) and
    /// reports it as unit; the second pass reads it as a number or fails.
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Time::NumberPending)
    }
}
