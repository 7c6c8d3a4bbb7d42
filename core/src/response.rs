//! Token and error bodies, and the classification of a whole response into an outcome (D7).
//!
//! Bodies are parsed with serde-json-core, strictly and without a heap. Time fields arrive as
//! JSON strings from IMDS (`"3599"`) and as numbers from Azure ML and Service Fabric (`3599`);
//! serde-json-core cannot deserialize "any", so a body is read in up to two passes: the first
//! learns which time fields are strings (kept as borrowed text) and which are numbers, the
//! second (only when a number was seen) reads those numbers with the right call.
//!
//! The strict check in [`crate::json`] walks the body anyway and reports the top-level
//! members; when they are of the usual shapes the fields are taken from that walk and
//! serde-json-core is not run at all (a fast path that gives the same answers, tested
//! against the two-pass parse).

use core::fmt;
use core::ops::ControlFlow;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json_core::str::{EscapedStr, EscapedStringFragment};

use crate::http::{self, RetryAfter};
use crate::identity::{Flavour, Identity, IdentityKind};
use crate::json::Value;
use crate::time::{self, TimeError};

/// Deepest nesting accepted in a body (unknown fields may hold arrays and objects).
const MAX_DEPTH: usize = 32;
/// How much of an `error_description` is kept (D2).
pub const MAX_DESCRIPTION_LEN: usize = 512;
/// How much of an error code is kept.
pub const MAX_CODE_LEN: usize = 64;

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
    pub expires_on: u64,
    /// Seconds after the request at which the server suggests a refresh.
    pub refresh_in: Option<u64>,
    client_id: Option<EscapedStr<'a>>,
}

impl fmt::Debug for TokenBody<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenBody")
            .field("token_len", &self.token_len)
            .field("expires_on", &self.expires_on)
            .field("refresh_in", &self.refresh_in)
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
        for_each_unescaped(self.token, |piece| {
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
        let _ = for_each_unescaped(self.token, f);
    }

    /// Whether the echoed `client_id`, if any, names `identity` (always true otherwise).
    pub fn client_id_matches(&self, identity: &Identity<'_>) -> bool {
        match (identity.kind(), self.client_id) {
            (IdentityKind::ClientId, Some(echo)) => escaped_eq_ignore_case(echo, identity.value()),
            _ => true,
        }
    }
}

/// Visits the unescaped pieces of a JSON string in order.
///
/// serde-json-core decodes each `\uXXXX` on its own and so refuses the two halves of a
/// surrogate pair (`\ud83d\ude00`); a pair is joined here, a lone half stays an error.
fn for_each_unescaped(s: EscapedStr<'_>, mut f: impl FnMut(&[u8])) -> Result<(), ()> {
    unescaped_text(s, |text| {
        f(text.as_bytes());
        ControlFlow::Continue(())
    })
}

/// [`for_each_unescaped`] with the pieces as text, stopping early (with `Ok`) when `f`
/// breaks.
fn unescaped_text(s: EscapedStr<'_>, mut f: impl FnMut(&str) -> ControlFlow<()>) -> Result<(), ()> {
    let mut fragments = s.fragments();
    loop {
        let rest = fragments.as_str().0;
        let flow = match fragments.next() {
            None => return Ok(()),
            Some(Ok(EscapedStringFragment::NotEscaped(text))) => f(text),
            Some(Ok(EscapedStringFragment::Escaped(c))) => f(c.encode_utf8(&mut [0; 4])),
            Some(Err(_)) => {
                let (c, tail) = surrogate_pair(rest).ok_or(())?;
                fragments = EscapedStr(tail).fragments();
                f(c.encode_utf8(&mut [0; 4]))
            }
        };
        if flow.is_break() {
            return Ok(());
        }
    }
}

/// `\uD8xx\uDCxx` at the start of `s`: the character and the rest of `s`.
fn surrogate_pair(s: &str) -> Option<(char, &str)> {
    let unit = |at: usize| -> Option<u32> {
        let esc = s.get(at..at + 6)?;
        let hex = esc.strip_prefix("\\u")?;
        u32::from_str_radix(hex, 16).ok()
    };
    let (hi, lo) = (unit(0)?, unit(6)?);
    if !(0xd800..0xdc00).contains(&hi) || !(0xdc00..0xe000).contains(&lo) {
        return None;
    }
    let c = char::from_u32(0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00))?;
    Some((c, s.get(12..)?))
}

fn escaped_eq_ignore_case(s: EscapedStr<'_>, want: &str) -> bool {
    let mut rest = want.as_bytes();
    let ok = for_each_unescaped(s, |piece| {
        match rest.get(..piece.len()) {
            Some(head) if head.eq_ignore_ascii_case(piece) => rest = &rest[piece.len()..],
            _ => rest = b"\xff", // a byte no piece of a valid string can match
        }
    });
    ok.is_ok() && rest.is_empty()
}

/// Parses a token body. `request_time` (epoch seconds) anchors `expires_in` (D10: `expires_on`
/// wins when both are present).
pub fn parse_token_body(body: &[u8], request_time: u64) -> Result<TokenBody<'_>, BodyError> {
    let mut fast = FastFields::default();
    let object = crate::json::check_members(body, MAX_DEPTH, |key, value| fast.member(key, value))
        .map_err(|_| BodyError::NotJson)?;
    let fields = match fast.fields {
        Some(fields) if object => fields,
        _ => read_fields_slow(body)?,
    };
    token_body(fields, request_time)
}

/// Checks the fields of a token body and reads its times.
fn token_body(fields: Fields<'_>, request_time: u64) -> Result<TokenBody<'_>, BodyError> {
    let token = fields.access_token.ok_or(BodyError::MissingToken)?;
    let plain = fields.token_shape == TokenShape::Plain;
    let mut token_len = 0;
    let mut control = false;
    if plain || fields.token_shape == TokenShape::PlainWithDel {
        // No escape: the raw text is the token, and DEL its only possible control byte.
        token_len = token.0.len();
        control = !plain;
    } else {
        for_each_unescaped(token, |piece| {
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
        if !escaped_eq_ignore_case(kind, "bearer") {
            return Err(BodyError::NotBearer);
        }
    }
    let [on, expires_in, refresh_in] = fields.times;
    let expires_on = match (on, expires_in) {
        (Time::Absent, Time::Absent) => return Err(BodyError::MissingExpiry),
        (Time::NumberPending, _) => return Err(BodyError::NotJson),
        (Time::Absent, t) => request_time.saturating_add(t.seconds(TimeField::ExpiresIn)?),
        (Time::Number(n), _) if n < time::YEAR_2001 => {
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
    let refresh_in = match refresh_in {
        Time::Absent => None,
        t => Some(t.seconds(TimeField::RefreshIn)?),
    };
    Ok(TokenBody {
        token,
        token_len,
        plain,
        expires_on,
        refresh_in,
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

struct Fields<'a> {
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
fn read_fields_slow(body: &[u8]) -> Result<Fields<'_>, BodyError> {
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

/// An error body, in any of the shapes the endpoints use: flat OAuth
/// `{"error","error_description"}`, nested `{"error":{"code","message"}}` (Cloud Shell,
/// Service Fabric), App Service `{"statusCode","message"}`, or none at all.
#[derive(Clone, Copy, Debug, Default)]
pub struct ErrorBody<'a> {
    code: Option<EscapedStr<'a>>,
    message: Option<EscapedStr<'a>>,
}

impl<'a> ErrorBody<'a> {
    /// Reads what it can; an empty or non-JSON body gives an empty `ErrorBody`.
    pub fn parse(body: &'a [u8]) -> Self {
        // `Some` while every member seen is of a shape read here as the visitor would.
        let mut fast = Some(Self::default());
        let checked = crate::json::check_members(body, MAX_DEPTH, |key, value| {
            if let Some(out) = fast.as_mut() {
                if !out.take(key, value) {
                    fast = None;
                }
            }
        });
        match (checked, fast) {
            (Err(_), _) => Self::default(),
            (Ok(true), Some(fast)) => fast,
            (Ok(_), _) => serde_json_core::de::from_slice::<ErrorBodyWire<'a>>(body)
                .map(|(w, _)| w.0)
                .unwrap_or_default(),
        }
    }

    /// Takes one top-level member as [`ErrorVisitor`] would; false when unsure (a nested
    /// `error` object, a value that is not a string).
    fn take(&mut self, key: &[u8], value: Value<'a>) -> bool {
        let text = match value {
            Value::Str { raw, .. } => Some(EscapedStr(raw)),
            _ => None,
        };
        match key {
            b"error" => self.code = self.code.or(text),
            b"code" => self.code = text,
            b"error_description" | b"message" => self.message = text,
            _ => return true,
        }
        text.is_some()
    }

    /// Copies the code and description, unescaped, into owned bounded strings.
    pub fn detail(&self) -> ErrorDetail {
        let mut detail = ErrorDetail::default();
        if let Some(code) = self.code {
            detail.code_truncated = copy_bounded(code, &mut detail.code);
        }
        if let Some(message) = self.message {
            detail.truncated = copy_bounded(message, &mut detail.description);
        }
        detail
    }
}

/// Copies an unescaped string up to the capacity, on a character boundary; true if cut.
fn copy_bounded<const N: usize>(s: EscapedStr<'_>, out: &mut heapless::String<N>) -> bool {
    let mut cut = false;
    // Pieces are whole characters (unescaped text or one escaped char); once one does not
    // fit, the rest is not read: the answer is "cut" whatever follows.
    let bad = unescaped_text(s, |text| {
        if out.push_str(text).is_ok() {
            return ControlFlow::Continue(());
        }
        // The longest run of whole characters that fits.
        let mut end = (N - out.len()).min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let _ = out.push_str(&text[..end]);
        cut = true;
        ControlFlow::Break(())
    });
    cut || bad.is_err()
}

/// The code and description of an error response, kept for diagnostics (D2).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrorDetail {
    /// The error code (`invalid_request`, `AudienceNotSupported`, …); empty when none.
    pub code: heapless::String<MAX_CODE_LEN>,
    /// Whether the code was longer than [`MAX_CODE_LEN`].
    pub code_truncated: bool,
    /// The `error_description` / `message`, up to [`MAX_DESCRIPTION_LEN`] bytes.
    pub description: heapless::String<MAX_DESCRIPTION_LEN>,
    /// Whether the description was cut (it is diagnostic text, not data).
    pub truncated: bool,
}

struct ErrorBodyWire<'a>(ErrorBody<'a>);

impl<'de> de::Deserialize<'de> for ErrorBodyWire<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ErrorVisitor).map(ErrorBodyWire)
    }
}

struct ErrorVisitor;

impl<'de> Visitor<'de> for ErrorVisitor {
    type Value = ErrorBody<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an error body")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = ErrorBody::default();
        while let Some(key) = map.next_key::<&'de str>()? {
            match key {
                // A string (flat form) or an object (nested form): `ignored_any` hands a
                // string to `visit_borrowed_str` and an object to `visit_map`.
                "error" => {
                    let inner = map.next_value_seed(ErrorField)?;
                    out.code = out.code.or(inner.code);
                    out.message = out.message.or(inner.message);
                }
                "code" => out.code = Some(map.next_value()?),
                "error_description" | "message" => out.message = Some(map.next_value()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(out)
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(ErrorBody {
            code: Some(EscapedStr(v)),
            message: None,
        })
    }
}

struct ErrorField;

impl<'de> DeserializeSeed<'de> for ErrorField {
    type Value = ErrorBody<'de>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_ignored_any(ErrorVisitor)
    }
}

/// What went wrong with a fetch, precisely enough to choose the class of D7.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum FailureKind {
    /// 404 from an endpoint other than Service Fabric (IMDS updating): retried.
    NotFound = 1,
    /// 408 request timeout: retried.
    RequestTimeout = 2,
    /// 429 throttled by the endpoint: retried.
    TooManyRequests = 3,
    /// 410 IMDS being updated: retried every 10 s for at least 70 s.
    Gone = 4,
    /// A 5xx status: retried.
    ServerError = 5,
    /// The connection could not be made in time: retried.
    ConnectTimeout = 6,
    /// The connection was reset or the response did not arrive in time: retried.
    ConnectionLost = 7,
    /// The connection closed before the response was complete: retried.
    Truncated = 8,
    /// 400: the identity or resource is not available here.
    BadRequest = 20,
    /// 401 without an Arc challenge.
    Unauthorized = 21,
    /// 403 (e.g. a proxy on the IMDS address).
    Forbidden = 22,
    /// 404 from Service Fabric: unknown identity.
    IdentityNotFound = 23,
    /// 405 wrong method.
    MethodNotAllowed = 24,
    /// Any other status that is not a token.
    UnexpectedStatus = 25,
    /// A 2xx whose body is not a token object.
    NotJson = 26,
    /// A 2xx without an `access_token`, or an empty one.
    MissingToken = 27,
    /// A token or response larger than `max_token_bytes` allows.
    TokenTooLarge = 28,
    /// The body's `client_id` is not the client id that was asked for.
    ClientIdMismatch = 29,
    /// The token has less than the minimum lifetime left when it arrives.
    ExpiredOnArrival = 30,
    /// A time field in the body is malformed.
    BadExpiry = 31,
    /// `token_type` is not Bearer.
    NotBearer = 32,
    /// The HTTP response is malformed.
    MalformedResponse = 33,
    /// Arc's challenge names a key file outside the rules, or the key file is unusable.
    BadChallenge = 34,
    /// The cache has no room for the token (every other entry has a live ticket).
    CacheFull = 35,
    /// The endpoint refused or could not be reached at first contact: no managed identity here.
    Unavailable = 40,
}

/// The class of an outcome (D7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutcomeClass {
    /// Transient: retried with backoff.
    Retry,
    /// Permanent for this request: negative-cached.
    Terminal,
    /// No managed-identity endpoint here: at once, no retry.
    Unavailable,
}

impl FailureKind {
    /// The D7 class of this failure.
    pub const fn class(self) -> OutcomeClass {
        match self as u8 {
            1..=8 => OutcomeClass::Retry,
            40 => OutcomeClass::Unavailable,
            _ => OutcomeClass::Terminal,
        }
    }

    /// The kind for a stored discriminant, if it names one.
    pub(crate) fn from_u8(v: u8) -> Option<Self> {
        use FailureKind::*;
        const ALL: [FailureKind; 25] = [
            NotFound,
            RequestTimeout,
            TooManyRequests,
            Gone,
            ServerError,
            ConnectTimeout,
            ConnectionLost,
            Truncated,
            BadRequest,
            Unauthorized,
            Forbidden,
            IdentityNotFound,
            MethodNotAllowed,
            UnexpectedStatus,
            NotJson,
            MissingToken,
            TokenTooLarge,
            ClientIdMismatch,
            ExpiredOnArrival,
            BadExpiry,
            NotBearer,
            MalformedResponse,
            BadChallenge,
            CacheFull,
            Unavailable,
        ];
        ALL.into_iter().find(|k| *k as u8 == v)
    }

    /// A short description of the failure.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NotFound => "endpoint answered 404 (updating)",
            Self::RequestTimeout => "endpoint answered 408",
            Self::TooManyRequests => "endpoint answered 429 (throttled)",
            Self::Gone => "endpoint answered 410 (being updated)",
            Self::ServerError => "endpoint answered a 5xx status",
            Self::ConnectTimeout => "connecting to the endpoint timed out",
            Self::ConnectionLost => "the connection was reset or timed out",
            Self::Truncated => "the response was cut short",
            Self::BadRequest => "endpoint answered 400 (identity or resource not available)",
            Self::Unauthorized => "endpoint answered 401",
            Self::Forbidden => "endpoint answered 403",
            Self::IdentityNotFound => "Service Fabric answered 404 (identity not found)",
            Self::MethodNotAllowed => "endpoint answered 405",
            Self::UnexpectedStatus => "endpoint answered an unexpected status",
            Self::NotJson => "a 2xx body that is not a token object",
            Self::MissingToken => "a 2xx body without an access token",
            Self::TokenTooLarge => "the token is larger than max_token_bytes",
            Self::ClientIdMismatch => "the token is for another client id than asked",
            Self::ExpiredOnArrival => "the token expires too soon to be used",
            Self::BadExpiry => "a time field of the token body is malformed",
            Self::NotBearer => "token_type is not Bearer",
            Self::MalformedResponse => "the HTTP response is malformed",
            Self::BadChallenge => "the Arc challenge or its key file is unusable",
            Self::CacheFull => "no room in the cache for the token",
            Self::Unavailable => "no managed-identity endpoint is reachable",
        }
    }
}

/// A failed fetch: what happened and the HTTP status, if any (0 otherwise).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failure {
    /// What happened.
    pub kind: FailureKind,
    /// The HTTP status, or 0 when no response was received.
    pub status: u16,
}

impl Failure {
    /// A failure without an HTTP status.
    pub const fn new(kind: FailureKind) -> Self {
        Self { kind, status: 0 }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.as_str())?;
        if self.status != 0 {
            write!(f, " (HTTP {})", self.status)?;
        }
        Ok(())
    }
}

/// What a complete response means.
#[derive(Debug)]
pub enum Classified<'a> {
    /// A token.
    Token(TokenBody<'a>),
    /// Arc's challenge: the `WWW-Authenticate` value naming the key file.
    Challenge(&'a str),
    /// A failure; `retry_after` as the server sent it; the error body's text.
    Failure {
        /// What failed.
        failure: Failure,
        /// The server's `Retry-After`, if any.
        retry_after: Option<RetryAfter>,
        /// The parsed error body.
        body: ErrorBody<'a>,
    },
}

/// Classifies a complete response from `flavour`'s endpoint (D7). `request_time` is in epoch
/// seconds; a token larger than `max_token_bytes` is a failure, never truncated.
pub fn classify<'a>(
    flavour: Flavour,
    response: &http::Response<'a>,
    request_time: u64,
    max_token_bytes: usize,
) -> Classified<'a> {
    let status = response.status;
    let fail = |kind| Classified::Failure {
        failure: Failure { kind, status },
        retry_after: response.retry_after,
        body: ErrorBody::parse(response.body),
    };
    match status {
        200..=299 => match parse_token_body(response.body, request_time) {
            Ok(token) if token.token_len > max_token_bytes => fail(FailureKind::TokenTooLarge),
            Ok(token) => Classified::Token(token),
            Err(e) => fail(match e {
                BodyError::NotJson => FailureKind::NotJson,
                BodyError::MissingToken | BodyError::EmptyToken | BodyError::BadToken => {
                    FailureKind::MissingToken
                }
                BodyError::MissingExpiry | BodyError::Time(..) => FailureKind::BadExpiry,
                BodyError::NotBearer => FailureKind::NotBearer,
            }),
        },
        401 if flavour == Flavour::Arc => match response.www_authenticate {
            Some(challenge) if is_basic_realm(challenge) => Classified::Challenge(challenge),
            _ => fail(FailureKind::Unauthorized),
        },
        400 => fail(FailureKind::BadRequest),
        401 => fail(FailureKind::Unauthorized),
        403 => fail(FailureKind::Forbidden),
        404 if flavour == Flavour::ServiceFabric => fail(FailureKind::IdentityNotFound),
        404 => fail(FailureKind::NotFound),
        405 => fail(FailureKind::MethodNotAllowed),
        408 => fail(FailureKind::RequestTimeout),
        410 => fail(FailureKind::Gone),
        429 => fail(FailureKind::TooManyRequests),
        500..=599 => fail(FailureKind::ServerError),
        _ => fail(FailureKind::UnexpectedStatus),
    }
}

fn is_basic_realm(v: &str) -> bool {
    let v = v.trim_start();
    v.get(..6).is_some_and(|s| s.eq_ignore_ascii_case("basic "))
        && v[6..]
            .trim_start()
            .get(..6)
            .is_some_and(|s| s.eq_ignore_ascii_case("realm="))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::String;

    const NOW: u64 = 1_700_000_000;

    fn token_of(body: &TokenBody<'_>) -> String {
        let mut buf = [0u8; 8192];
        let n = body.write_token(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    /// (body, token, expires_on, refresh_in): every example body of the protocol reference §9.
    #[test]
    fn example_bodies() {
        #[rustfmt::skip]
        let cases: &[(&str, &str, u64, Option<u64>)] = &[
            // E1, E2, E3, E4, E5 (no token_type), E11
            (r#"{"access_token":"<redacted>","client_id":"fe83865b-495e-4ec7-9574-12b264882c9f","expires_in":"86311","expires_on":"1643312761","ext_expires_in":"86399","not_before":"1643226061","resource":"https://management.azure.com","token_type":"Bearer"}"#, "<redacted>", 1643312761, None),
            (r#"{"access_token": "redacted", "client_id": "client-id", "expires_in": "86400", "expires_on": "1619561622", "ext_expires_in": "86399", "not_before": "1619474922", "resource": "https://management.azure.com", "token_type": "Bearer"}"#, "redacted", 1619561622, None),
            (r#"{"access_token":"eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.e30.sig","client_id":"ebdab26b-8a80-402c-821f-d5d203342fc2","expires_in":"86132","expires_on":"1765008628","ext_expires_in":"86399","not_before":"1764921928","resource":"https://management.azure.com/","token_type":"Bearer"}"#, "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.e30.sig", 1765008628, None),
            (r#"{"access_token":"eyJ0eXAi...","refresh_token":"","expires_in":"3599","expires_on":"1506484173","not_before":"1506480273","resource":"https://management.azure.com/","token_type":"Bearer"}"#, "eyJ0eXAi...", 1506484173, None),
            (r#"{"access_token":"dummytoken","client_id":"be5947ed-3560-4afe-9504-59967a63f810","expires_in":"3599","expires_on":"1541705014","ext_expires_in":"262800","not_before":"1508961830","resource":"https://va"}"#, "dummytoken", 1541705014, None),
            // E12 App Service 2019, E13 date string (24 h), E14 doc sample `00:00:00 PM`
            (r#"{"access_token":"eyJ0eXAi…","expires_on":"1586984735","resource":"https://vault.azure.net","token_type":"Bearer","client_id":"5E29463D-71DA-4FE0-8E69-999B57DB23B0"}"#, "eyJ0eXAi…", 1586984735, None),
            (r#"{"access_token": "redacted", "expires_on": "05/22/2021 17:14:33 +00:00", "resource": "https://management.azure.com", "token_type": "Bearer", "client_id": "6d807b1c-2a6f-41a0-b428-d0e3a08382a0"}"#, "redacted", 1621703673, None),
            (r#"{"access_token":"eyJ0eXAi…","expires_on":"09/14/2017 00:00:00 PM +00:00","resource":"https://vault.azure.net","token_type":"Bearer"}"#, "eyJ0eXAi…", 1505390400, None),
            // E16 Arc (mixed string and number), E17 Service Fabric (number), E19 Azure ML
            (r#"{"token_type":"Bearer","expires_in":"85770","expires_on":"1700085770","ext_expires_in":86399,"access_token":"*","resource":"r"}"#, "*", 1700085770, None),
            (r#"{"token_type":"Bearer","access_token":"eyJ0eXAiO...","expires_on":1565244611,"resource":"https://vault.azure.net/"}"#, "eyJ0eXAiO...", 1565244611, None),
            (r#"{"access_token":"****","expires_in":3600,"expires_on":1700003600,"resource":"scope","token_type":"Bearer"}"#, "****", 1700003600, None),
            // expires_in only (Cloud Shell style), in both types; refresh_in honoured
            (r#"{"access_token":"t","expires_in":"3600"}"#, "t", NOW + 3600, None),
            (r#"{"expires_in":3600,"access_token":"t"}"#, "t", NOW + 3600, None),
            (r#"{"access_token":"t","expires_in":"7200","refresh_in":"1800"}"#, "t", NOW + 7200, Some(1800)),
            (r#"{"access_token":"t","expires_in":7200,"refresh_in":1800}"#, "t", NOW + 7200, Some(1800)),
            // RFC 3339 expires_on, token_type any case
            (r#"{"access_token":"t","expires_on":"2023-11-14T22:13:20Z","token_type":"bearer"}"#, "t", 1700000000, None),
            (r#"{"access_token":"t","expires_on":"2023-11-14 23:13:20+01:00","token_type":"BEARER"}"#, "t", 1700000000, None),
            // escapes decoded: \/ \uXXXX surrogate pairs \"
            (r#"{"access_token":"a\/b\u0041\ud83d\ude00\"c","expires_in":"60"}"#, "a/bA\u{1F600}\"c", NOW + 60, None),
            // unknown fields of every type skipped, including nested ones
            (r#"{"x":[1,{"y":[]}],"z":{"a":{"b":null}},"n":null,"b":true,"f":-1.5e3,"access_token":"t","expires_in":"1"}"#, "t", NOW + 1, None),
        ];
        for (body, token, expires_on, refresh_in) in cases {
            let parsed =
                parse_token_body(body.as_bytes(), NOW).unwrap_or_else(|e| panic!("{body}: {e:?}"));
            assert_eq!(token_of(&parsed), *token, "{body}");
            assert_eq!(parsed.token_len(), token.len(), "{body}");
            assert_eq!(parsed.expires_on, *expires_on, "{body}");
            assert_eq!(parsed.refresh_in, *refresh_in, "{body}");
        }
    }

    /// The parse as it was before the fast path (check, then serde-json-core's two
    /// passes, then the token unescaped to be measured): the oracle.
    fn two_pass(body: &[u8], request_time: u64) -> Result<TokenBody<'_>, BodyError> {
        crate::json::check(body, MAX_DEPTH).map_err(|_| BodyError::NotJson)?;
        token_body(read_fields_slow(body)?, request_time)
    }

    fn two_pass_error(body: &[u8]) -> ErrorBody<'_> {
        if crate::json::check(body, MAX_DEPTH).is_err() {
            return ErrorBody::default();
        }
        serde_json_core::de::from_slice::<ErrorBodyWire<'_>>(body)
            .map(|(w, _)| w.0)
            .unwrap_or_default()
    }

    /// Everything a caller can see of a parsed token body.
    type Seen = (
        std::vec::Vec<u8>,
        std::vec::Vec<u8>,
        [u64; 2],
        Option<u64>,
        bool,
    );

    fn seen(body: &TokenBody<'_>) -> Seen {
        let mut written = std::vec![0; body.token_len()];
        assert_eq!(body.write_token(&mut written), Some(body.token_len()));
        let mut pieces = std::vec::Vec::new();
        body.pieces(|p| pieces.extend_from_slice(p));
        let id = Identity::client_id("fe83865b-495e-4ec7-9574-12b264882c9f").unwrap();
        let sizes = [body.token_len() as u64, body.expires_on];
        (
            written,
            pieces,
            sizes,
            body.refresh_in,
            body.client_id_matches(&id),
        )
    }

    #[test]
    #[cfg_attr(miri, ignore = "reads the fuzz corpora")]
    fn fast_path_answers_as_the_two_pass_parse() {
        let mut bodies = crate::json::tests::bodies();
        let token = "eyJ0eXAi.abc-_DEF.sig";
        let client = "fe83865b-495e-4ec7-9574-12b264882c9f";
        for shape in [
            std::format!(
                r#"{{"access_token":"{token}","client_id":"{client}","expires_in":"86399","expires_on":"1700086399","token_type":"Bearer"}}"#
            ),
            std::format!(
                r#"{{"access_token":"{token}","expires_on":1700086399,"expires_in":86399,"refresh_in":43200,"client_id":"{client}"}}"#
            ),
            std::format!(
                r#"{{"access_token":"{token}\u0041","expires_on":"1700086399","token_type":"bearer","client_id":"FE83865B-495E-4EC7-9574-12B264882C9F"}}"#
            ),
            std::format!(r#"{{"access_token":"{token}","expires_in":"1"}}"#),
            std::format!(r#"{{"access_token":"{token}","expires_on":18446744073709551616}}"#),
            std::format!(r#"{{"access_token":"{token}","expires_on":-1,"expires_in":1.5e1}}"#),
            std::format!(r#"{{"access_token":"{token}","expires_in":1,"refresh_in":null}}"#),
            std::format!(r#"{{"access_token":"{token}","expires_in":1,"refresh_in":[1]}}"#),
            String::from(r#"{"access_token":7,"expires_in":1}"#),
            String::from(r#"{"access\u005ftoken":"t","access_token":"u","expires_in":"1"}"#),
            String::from(r#"{"error":{"code":"c","message":"m"},"message":"n","error":"e"}"#),
            String::from(r#"{"error":"e","code":"c","error_description":"d","message":7}"#),
            String::from(r#"{"code":"c","error":"e","error":[1]}"#),
            String::from(r#""just a string""#),
        ] {
            bodies.push(shape.into_bytes());
        }
        // Objects of the fields both parses look at, with values of every shape.
        let keys = [
            "access_token",
            "token_type",
            "client_id",
            "expires_on",
            "expires_in",
            "refresh_in",
            "resource",
            "access\\u005ftoken",
            "error",
            "code",
            "message",
            "error_description",
        ];
        let values = [
            "\"eyJ0.eXAi_-.sig\"",
            "\"a\\/b\\u0041\\ud83d\\ude00\\\"c\"",
            "\"\"",
            "\"Bearer\"",
            "\"pop\"",
            "\"1700000000\"",
            "\"3600\"",
            "1700000000",
            "3600",
            "0",
            "-1",
            "1.5",
            "1e3",
            "18446744073709551615",
            "18446744073709551616",
            "null",
            "true",
            "[1]",
            "{\"code\":\"c\"}",
            "\"a\x7f\"",
            "\"\\ud83d\"",
            "\"a\\nb\"",
            "\"2023-11-14T22:13:20Z\"",
            "\"fe83865b-495e-4ec7-9574-12b264882c9f\"",
            "\"FE83865B-495E-4EC7-9574-12B264882C9F\"",
        ];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        for _ in 0..20_000 {
            let mut body = String::from("{");
            let mut members = std::vec![("access_token", values[next(2)])];
            members.push((["expires_on", "expires_in"][next(2)], values[5 + next(4)]));
            for _ in 0..next(6) {
                members.push((keys[next(keys.len())], values[next(values.len())]));
            }
            let n = members.len();
            members.swap(0, next(n));
            for (i, (k, v)) in members.iter().enumerate() {
                let sep = if i == 0 { "" } else { [",", " , "][next(2)] };
                body.push_str(&std::format!("{sep}\"{k}\":{v}"));
            }
            body.push('}');
            bodies.push(body.into_bytes());
        }
        let mut tokens = 0;
        for body in &bodies {
            let fast = parse_token_body(body, NOW);
            let slow = two_pass(body, NOW);
            match (&fast, &slow) {
                (Ok(f), Ok(s)) => {
                    tokens += 1;
                    assert_eq!(seen(f), seen(s), "{body:?}");
                }
                _ => assert_eq!(fast.map(|_| ()), slow.map(|_| ()), "{body:?}"),
            }
            let (fast, slow) = (ErrorBody::parse(body), two_pass_error(body));
            assert_eq!(
                (fast.code, fast.message),
                (slow.code, slow.message),
                "{body:?}"
            );
            assert_eq!(fast.detail(), slow.detail(), "{body:?}");
        }
        assert!(tokens > 3000, "only {tokens} token bodies parsed");
    }

    #[test]
    fn bad_bodies() {
        use BodyError as B;
        use TimeField::*;
        #[rustfmt::skip]
        let cases: &[(&str, BodyError)] = &[
            ("", B::NotJson),
            ("not json", B::NotJson),
            ("[]", B::NotJson),
            (r#"{"access_token":"t","expires_in":"1"} x"#, B::NotJson),
            (r#"{"access_token":"t","expires_in":"1""#, B::NotJson),
            (r#"{"access_token":"t","access_token":"u","expires_in":"1"}"#, B::NotJson),
            (r#"{"access_token":"t","expires_in":"1","expires_in":"2"}"#, B::NotJson),
            (r#"{"expires_in":"1"}"#, B::MissingToken),
            (r#"{"access_token":"","expires_in":"1"}"#, B::EmptyToken),
            (r#"{"access_token":"a\u000ab","expires_in":"1"}"#, B::BadToken),
            (r#"{"access_token":"a\qb","expires_in":"1"}"#, B::NotJson),
            (r#"{"access_token":"a\ud83db","expires_in":"1"}"#, B::BadToken),
            (r#"{"access_token":"a\ude00\ud83d","expires_in":"1"}"#, B::BadToken),
            (r#"{"access_token":"t"}"#, B::MissingExpiry),
            (r#"{"access_token":"t","expires_in":"3599.0"}"#, B::Time(ExpiresIn, TimeError::Fraction)),
            (r#"{"access_token":"t","expires_in":3599.0}"#, B::Time(ExpiresIn, TimeError::Fraction)),
            (r#"{"access_token":"t","expires_in":-1}"#, B::Time(ExpiresIn, TimeError::Negative)),
            (r#"{"access_token":"t","expires_in":"-1"}"#, B::Time(ExpiresIn, TimeError::Negative)),
            (r#"{"access_token":"t","expires_in":"abc"}"#, B::Time(ExpiresIn, TimeError::NotDigits)),
            (r#"{"access_token":"t","expires_in":null}"#, B::Time(ExpiresIn, TimeError::NotDigits)),
            (r#"{"access_token":"t","expires_on":"978307199"}"#, B::Time(ExpiresOn, TimeError::BeforeYear2001)),
            (r#"{"access_token":"t","expires_on":978307199}"#, B::Time(ExpiresOn, TimeError::BeforeYear2001)),
            (r#"{"access_token":"t","expires_on":"13/01/2021 00:00:00"}"#, B::Time(ExpiresOn, TimeError::BadDate)),
            (r#"{"access_token":"t","expires_in":"1","refresh_in":"x"}"#, B::Time(RefreshIn, TimeError::NotDigits)),
            (r#"{"access_token":"t","expires_in":"1","token_type":"pop"}"#, B::NotBearer),
            (r#"{"x":tru,"access_token":"t","expires_in":"1"}"#, B::NotJson),
            (r#"{"x":[1,],"access_token":"t","expires_in":"1"}"#, B::NotJson),
        ];
        for (body, want) in cases {
            assert_eq!(
                parse_token_body(body.as_bytes(), NOW).map(|_| ()),
                Err(*want),
                "{body}"
            );
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "200 000 brackets: too slow under Miri")]
    fn deep_nesting_is_refused_without_recursing() {
        let mut body = String::from(r#"{"access_token":"t","expires_in":"1","x":"#);
        body.extend(core::iter::repeat_n('[', 100_000));
        body.extend(core::iter::repeat_n(']', 100_000));
        body.push('}');
        assert_eq!(
            parse_token_body(body.as_bytes(), NOW).map(|_| ()),
            Err(BodyError::NotJson)
        );
        assert_eq!(
            ErrorBody::parse(body.as_bytes()).detail(),
            ErrorDetail::default()
        );
        let ok = r#"{"access_token":"t","expires_in":"1","x":[[[[{"a":[1]}]]]]}"#;
        assert!(parse_token_body(ok.as_bytes(), NOW).is_ok());
    }

    #[test]
    fn write_token_refuses_short_buffers() {
        let body = parse_token_body(br#"{"access_token":"abcdef","expires_in":"9"}"#, NOW).unwrap();
        assert_eq!(body.write_token(&mut [0; 5]), None);
        assert_eq!(body.write_token(&mut [0; 6]), Some(6));
    }

    #[test]
    fn debug_hides_the_token() {
        let body =
            parse_token_body(br#"{"access_token":"SECRETTOKEN","expires_in":"9"}"#, NOW).unwrap();
        let shown = std::format!("{body:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(shown.contains("token_len: 11"), "{shown}");
    }

    #[test]
    fn client_id_echo() {
        let id = Identity::client_id("fe83865b-495e-4ec7-9574-12b264882c9f").unwrap();
        let cases: &[(&str, bool)] = &[
            (
                r#"{"access_token":"t","expires_in":"9","client_id":"fe83865b-495e-4ec7-9574-12b264882c9f"}"#,
                true,
            ),
            (
                r#"{"access_token":"t","expires_in":"9","client_id":"FE83865B-495E-4EC7-9574-12B264882C9F"}"#,
                true,
            ),
            (
                r#"{"access_token":"t","expires_in":"9","client_id":"00000000-495e-4ec7-9574-12b264882c9f"}"#,
                false,
            ),
            (
                r#"{"access_token":"t","expires_in":"9","client_id":"fe83865b-495e-4ec7-9574-12b264882c9"}"#,
                false,
            ),
            (
                r#"{"access_token":"t","expires_in":"9","client_id":"fe83865b-495e-4ec7-9574-12b264882c9fa"}"#,
                false,
            ),
            (r#"{"access_token":"t","expires_in":"9"}"#, true),
        ];
        for (body, want) in cases {
            let parsed = parse_token_body(body.as_bytes(), NOW).unwrap();
            assert_eq!(parsed.client_id_matches(&id), *want, "{body}");
            assert!(
                parsed.client_id_matches(&Identity::SYSTEM),
                "system is never checked"
            );
        }
    }

    /// (body, code, description): every error shape of §2, §4, §5 and §9.
    #[test]
    fn error_bodies() {
        #[rustfmt::skip]
        let cases: &[(&str, &str, &str)] = &[
            (r#"{"error":"invalid_request","error_description":"Required metadata header not specified"}"#, "invalid_request", "Required metadata header not specified"),
            (r#"{"error":"invalid_request","error_description":"Identity not found"}"#, "invalid_request", "Identity not found"),
            (r#"{"error":"invalid_resource","error_description":"AADSTS500011: x\r\nTrace ID: y","error_codes":[500011],"timestamp":"t","trace_id":"a","correlation_id":"b","error_uri":"https://e"}"#, "invalid_resource", "AADSTS500011: x\r\nTrace ID: y"),
            (r#"{"error":"connecting to 169.254.169.254:80: unreachable network."}"#, "connecting to 169.254.169.254:80: unreachable network.", ""),
            (r#"{"statusCode":500,"message":"An unexpected error occured while fetching the AAD Token.","correlationId":"4ce26535"}"#, "", "An unexpected error occured while fetching the AAD Token."),
            (r#"{"error":{"correlationId":"aaaa","code":"SecretHeaderNotFound","message":"Secret is not found in the request headers."}}"#, "SecretHeaderNotFound", "Secret is not found in the request headers."),
            (r#"{"error":{"code":"AudienceNotSupported","message":"Audience scope is not a supported MSI token audience."}}"#, "AudienceNotSupported", "Audience scope is not a supported MSI token audience."),
            (r#"{"error":"unauthorized_client","error_description":"Missing Basic Authorization header","error_codes":[401]}"#, "unauthorized_client", "Missing Basic Authorization header"),
            (r#"{"error":"x","error_description":"a\/b \u00e9"}"#, "x", "a/b é"),
            ("", "", ""),
            ("<html>502 Bad Gateway</html>", "", ""),
        ];
        for (body, code, description) in cases {
            let d = ErrorBody::parse(body.as_bytes()).detail();
            assert_eq!(
                (d.code.as_str(), d.description.as_str()),
                (*code, *description),
                "{body}"
            );
            assert!(!d.truncated);
        }
    }

    #[test]
    fn long_descriptions_are_cut_and_flagged() {
        let mut body = String::from(r#"{"error":"e","error_description":""#);
        body.extend(core::iter::repeat_n('é', 400)); // 800 bytes
        body.push_str(r#""}"#);
        let d = ErrorBody::parse(body.as_bytes()).detail();
        assert!(d.truncated);
        assert_eq!(d.description.len(), MAX_DESCRIPTION_LEN);
        assert!(d.description.chars().all(|c| c == 'é'));
    }

    fn response<'a>(status: u16, body: &'a str, www: Option<&'static str>) -> http::Response<'a> {
        http::Response {
            status,
            retry_after: None,
            www_authenticate: www,
            body: body.as_bytes(),
        }
    }

    /// One line per D7 case: (flavour, status, body, expected kind or None for a token).
    #[test]
    fn d7_classes() {
        use FailureKind as K;
        use Flavour::*;
        let ok = r#"{"access_token":"t","expires_in":"3600"}"#;
        let err = r#"{"error":"e","error_description":"d"}"#;
        let realm = "Basic realm=/var/opt/azcmagent/tokens/a.key";
        let basic = Some(realm);
        #[rustfmt::skip]
        type Case<'a> = (Flavour, u16, &'a str, Option<&'static str>, Option<K>);
        let cases: &[Case<'_>] = &[
            (Imds, 200, ok, None, None),
            (Imds, 201, ok, None, None),
            (Imds, 200, "<html/>", None, Some(K::NotJson)),
            (
                Imds,
                200,
                r#"{"expires_in":"1"}"#,
                None,
                Some(K::MissingToken),
            ),
            (
                Imds,
                200,
                r#"{"access_token":"","expires_in":"1"}"#,
                None,
                Some(K::MissingToken),
            ),
            (
                Imds,
                200,
                r#"{"access_token":"t","expires_in":"1.5"}"#,
                None,
                Some(K::BadExpiry),
            ),
            (Imds, 400, err, None, Some(K::BadRequest)),
            (Imds, 401, err, None, Some(K::Unauthorized)),
            (Imds, 403, err, None, Some(K::Forbidden)),
            (Imds, 404, err, None, Some(K::NotFound)),
            (ServiceFabric, 404, err, None, Some(K::IdentityNotFound)),
            (Imds, 405, err, None, Some(K::MethodNotAllowed)),
            (Imds, 408, "", None, Some(K::RequestTimeout)),
            (Imds, 410, "", None, Some(K::Gone)),
            (Imds, 429, err, None, Some(K::TooManyRequests)),
            (Imds, 500, err, None, Some(K::ServerError)),
            (Imds, 503, "", None, Some(K::ServerError)),
            (Imds, 599, "", None, Some(K::ServerError)),
            (Imds, 302, "", None, Some(K::UnexpectedStatus)),
            (Imds, 418, "", None, Some(K::UnexpectedStatus)),
            (Arc, 401, err, None, Some(K::Unauthorized)),
            (Arc, 401, err, Some("Bearer realm=x"), Some(K::Unauthorized)),
            (Imds, 401, err, basic, Some(K::Unauthorized)),
        ];
        for (flavour, status, body, www, want) in cases {
            let r = response(*status, body, *www);
            let got = match classify(*flavour, &r, NOW, 16384) {
                Classified::Token(_) => None,
                Classified::Failure { failure, .. } => {
                    assert_eq!(failure.status, *status);
                    Some(failure.kind)
                }
                Classified::Challenge(_) => panic!("unexpected challenge for {status}"),
            };
            assert_eq!(got, *want, "{flavour:?} {status} {body}");
        }
        let arc = response(401, err, basic);
        assert!(matches!(classify(Arc, &arc, NOW, 16384), Classified::Challenge(c) if c == realm));
    }

    #[test]
    fn classes_of_kinds() {
        assert_eq!(FailureKind::Gone.class(), OutcomeClass::Retry);
        assert_eq!(FailureKind::Truncated.class(), OutcomeClass::Retry);
        assert_eq!(
            FailureKind::IdentityNotFound.class(),
            OutcomeClass::Terminal
        );
        assert_eq!(FailureKind::TokenTooLarge.class(), OutcomeClass::Terminal);
        assert_eq!(FailureKind::Unavailable.class(), OutcomeClass::Unavailable);
    }

    #[test]
    fn token_too_large_is_refused_not_cut() {
        // 9000 bytes against a limit of 8192; 900 against 819 under Miri (much slower there).
        let (len, limit) = if cfg!(miri) { (900, 819) } else { (9000, 8192) };
        let mut body = String::from(r#"{"access_token":""#);
        body.extend(core::iter::repeat_n('a', len));
        body.push_str(r#"","expires_in":"3600"}"#);
        let r = response(200, &body, None);
        assert!(matches!(
            classify(Flavour::Imds, &r, NOW, limit),
            Classified::Failure {
                failure: Failure {
                    kind: FailureKind::TokenTooLarge,
                    ..
                },
                ..
            }
        ));
        assert!(matches!(
            classify(Flavour::Imds, &r, NOW, len),
            Classified::Token(_)
        ));
    }
}
