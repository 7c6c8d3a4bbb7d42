//! Error bodies: the code and description of a failed response, in every shape the
//! endpoints use, kept bounded for diagnostics (D2).

use core::fmt;
use core::ops::ControlFlow;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json_core::str::EscapedStr;

use super::MAX_DEPTH;
use crate::json::{unescape, Value};

/// How much of an `error_description` is kept (D2).
pub const MAX_DESCRIPTION_LEN: usize = 512;
/// How much of an error code is kept.
pub const MAX_CODE_LEN: usize = 64;

/// An error body, in any of the shapes the endpoints use: flat OAuth
/// `{"error","error_description"}`, nested `{"error":{"code","message"}}` (Cloud Shell,
/// Service Fabric), App Service `{"statusCode","message"}`, or none at all.
#[derive(Clone, Copy, Debug, Default)]
pub struct ErrorBody<'a> {
    pub(super) code: Option<EscapedStr<'a>>,
    pub(super) message: Option<EscapedStr<'a>>,
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
    let bad = unescape::pieces(s.0, |text| {
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

/// An error body as serde-json-core reads it.
pub(super) struct ErrorBodyWire<'a>(pub(super) ErrorBody<'a>);

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
