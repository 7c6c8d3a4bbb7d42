//! JSON string unescaping, the one decoder the token, error and ARM parsers share.
//!
//! Input is the raw text between a string's quotes, as the strict check and serde-json-core
//! hand it out. Escapes are RFC 8259's: `\"` `\\` `\/` `\b` `\f` `\n` `\r` `\t` and `\uXXXX`
//! with four hex digits; a surrogate pair (`\ud83d\ude00`) is joined into one character (which
//! serde-json-core, decoding each `\uXXXX` alone, refuses) and a lone half is an error.
//! Nothing is copied unless asked: the text is handed out in pieces, runs without escapes
//! borrowed from the input.

use core::ops::ControlFlow;

/// The text holds an escape that does not decode: unknown, cut short, or half a surrogate
/// pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BadEscape;

/// Why [`unescape_into`] stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IntoError {
    /// An escape does not decode.
    BadEscape,
    /// The buffer is too short.
    NoRoom,
}

/// Calls `f` with the unescaped text of `raw`, piece by piece in order (a run without escapes,
/// or one decoded escape), and stops early, with `Ok`, when `f` breaks. An escape is decoded
/// only when its turn comes, so an error after the point where `f` broke is not seen.
pub(crate) fn pieces(
    raw: &str,
    mut f: impl FnMut(&str) -> ControlFlow<()>,
) -> Result<(), BadEscape> {
    let mut rest = raw;
    while !rest.is_empty() {
        let flow = match rest.find('\\') {
            Some(0) => {
                let (c, tail) = escape(rest).ok_or(BadEscape)?;
                rest = tail;
                f(c.encode_utf8(&mut [0; 4]))
            }
            Some(at) => {
                let (text, tail) = rest.split_at(at);
                rest = tail;
                f(text)
            }
            None => f(core::mem::take(&mut rest)),
        };
        if flow.is_break() {
            return Ok(());
        }
    }
    Ok(())
}

/// [`pieces`] as bytes, to the end.
pub(crate) fn for_each(raw: &str, mut f: impl FnMut(&[u8])) -> Result<(), BadEscape> {
    pieces(raw, |text| {
        f(text.as_bytes());
        ControlFlow::Continue(())
    })
}

/// Writes the unescaped `raw` into `buf` and answers its length, never more than `raw.len()`.
/// The error is the first met in order: an escape that does not decode, or a piece that does
/// not fit (`buf` then holds a prefix).
pub(crate) fn unescape_into(raw: &str, buf: &mut [u8]) -> Result<usize, IntoError> {
    let mut n = 0;
    let mut room = true;
    pieces(raw, |text| {
        match buf.get_mut(n..n + text.len()) {
            Some(dst) => dst.copy_from_slice(text.as_bytes()),
            None => {
                room = false;
                return ControlFlow::Break(());
            }
        }
        n += text.len();
        ControlFlow::Continue(())
    })
    .map_err(|BadEscape| IntoError::BadEscape)?;
    if room {
        Ok(n)
    } else {
        Err(IntoError::NoRoom)
    }
}

/// Whether `raw` unescapes to `plain`, ignoring ASCII case. A difference met before an escape
/// that does not decode answers `Ok(false)`; the escape met first is the error.
pub(crate) fn eq_ignore_ascii_case(raw: &str, plain: &str) -> Result<bool, BadEscape> {
    let mut rest = plain.as_bytes();
    let mut same = true;
    pieces(raw, |text| match rest.get(..text.len()) {
        Some(head) if head.eq_ignore_ascii_case(text.as_bytes()) => {
            rest = &rest[text.len()..];
            ControlFlow::Continue(())
        }
        _ => {
            same = false;
            ControlFlow::Break(())
        }
    })?;
    Ok(same && rest.is_empty())
}

/// The escape at the start of `s` (which starts with `\`): the character and the rest of `s`.
fn escape(s: &str) -> Option<(char, &str)> {
    let c = match s.as_bytes().get(1)? {
        b'"' => '"',
        b'\\' => '\\',
        b'/' => '/',
        b'b' => '\u{8}',
        b'f' => '\u{c}',
        b'n' => '\n',
        b'r' => '\r',
        b't' => '\t',
        b'u' => {
            let hi = hex4(s.get(2..6)?)?;
            if !(0xd800..0xdc00).contains(&hi) {
                // A low half alone is not a `char` either.
                return Some((char::from_u32(hi)?, s.get(6..)?));
            }
            let lo = hex4(s.get(6..12)?.strip_prefix("\\u")?)?;
            if !(0xdc00..0xe000).contains(&lo) {
                return None;
            }
            let c = char::from_u32(0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00))?;
            return Some((c, s.get(12..)?));
        }
        _ => return None,
    };
    Some((c, s.get(2..)?))
}

/// Four hex digits (no sign, unlike `from_str_radix`).
fn hex4(digits: &str) -> Option<u32> {
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(digits, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::String;
    use std::vec::Vec;

    fn unescaped(raw: &str) -> Result<String, BadEscape> {
        let mut out = String::new();
        pieces(raw, |text| {
            out.push_str(text);
            ControlFlow::Continue(())
        })?;
        Ok(out)
    }

    #[test]
    fn every_escape_decodes() {
        #[rustfmt::skip]
        let cases: &[(&str, &str)] = &[
            ("", ""),
            ("plain é text", "plain é text"),
            (r#"\"\\\/\b\f\n\r\t"#, "\"\\/\u{8}\u{c}\n\r\t"),
            (r"\u0041\u00e9\u20AC", "Aé€"),
            (r"a\ud83d\ude00b", "a\u{1F600}b"),
            (r"\uD83D\uDE00", "\u{1F600}"),
            (r"\udbff\udfff", "\u{10FFFF}"),
        ];
        for (raw, want) in cases {
            assert_eq!(unescaped(raw).as_deref(), Ok(*want), "{raw}");
            let mut bytes = Vec::new();
            assert_eq!(for_each(raw, |b| bytes.extend_from_slice(b)), Ok(()));
            assert_eq!(bytes, want.as_bytes(), "{raw}");
            let mut buf = [0u8; 64];
            assert_eq!(unescape_into(raw, &mut buf), Ok(want.len()), "{raw}");
            assert_eq!(&buf[..want.len()], want.as_bytes(), "{raw}");
            assert!(want.len() <= raw.len());
        }
    }

    #[test]
    fn bad_escapes_are_errors() {
        for raw in [
            r"\q",
            "\\",
            "a\\",
            "\\\u{e9}",
            r"\u12",
            r"\u12g4",
            r"\u+041",
            r"\ud83d",
            r"\ud83dx",
            r"\ud83d\u0041",
            r"\ud83d\ud83d",
            r"\ude00",
            r"\ude00\ud83d",
        ] {
            assert_eq!(unescaped(raw), Err(BadEscape), "{raw}");
            assert_eq!(
                unescape_into(raw, &mut [0; 64]),
                Err(IntoError::BadEscape),
                "{raw}"
            );
        }
    }

    #[test]
    fn pieces_borrow_runs_and_stop_when_asked() {
        let raw = r"abc\ndef\u0041";
        let mut seen = Vec::new();
        assert_eq!(
            pieces(raw, |t| {
                seen.push(String::from(t));
                ControlFlow::Continue(())
            }),
            Ok(())
        );
        assert_eq!(seen, ["abc", "\n", "def", "A"]);
        // Stopping before a bad escape never reaches it.
        let mut n = 0;
        let stop = pieces(r"abc\q", |_| {
            n += 1;
            ControlFlow::Break(())
        });
        assert_eq!((stop, n), (Ok(()), 1));
    }

    #[test]
    fn a_short_buffer_is_no_room_unless_an_escape_fails_first() {
        assert_eq!(
            unescape_into(r"abcdef", &mut [0; 5]),
            Err(IntoError::NoRoom)
        );
        assert_eq!(
            unescape_into(r"ab\u00e9", &mut [0; 3]),
            Err(IntoError::NoRoom)
        );
        assert_eq!(unescape_into(r"ab\u00e9", &mut [0; 4]), Ok(4));
        assert_eq!(unescape_into(r"ab\q", &mut [0; 1]), Err(IntoError::NoRoom));
        assert_eq!(
            unescape_into(r"a\qbcdef", &mut [0; 1]),
            Err(IntoError::BadEscape)
        );
    }

    #[test]
    fn comparison_ignores_ascii_case_only() {
        let eq = eq_ignore_ascii_case;
        assert_eq!(eq("Bearer", "bearer"), Ok(true));
        assert_eq!(eq(r"\u0042earer", "BEARER"), Ok(true));
        assert_eq!(eq("bearer", "bearers"), Ok(false));
        assert_eq!(eq("bearers", "bearer"), Ok(false));
        assert_eq!(eq("É", "é"), Ok(false));
        assert_eq!(eq("", ""), Ok(true));
        // A difference before a bad escape is an answer; a bad escape first is the error.
        assert_eq!(eq(r"x\ud83d", "type"), Ok(false));
        assert_eq!(eq(r"t\ud83d", "type"), Err(BadEscape));
        assert_eq!(eq(r"type\q", "type"), Err(BadEscape));
    }
}
