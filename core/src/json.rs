//! A strict JSON check that runs before serde-json-core parses a body, and (in [`unescape`])
//! the decoding of JSON string escapes.
//!
//! serde-json-core skips unknown values leniently (a bare `tru` passes as a value) and
//! recurses once per nesting level with no bound, so deeply nested input would overflow the
//! stack. Every body is checked here first: one RFC 8259 value, nested at most `max_depth`.
//! The same walk hands back the members of a top-level object, so that the common bodies
//! need no second parse.

pub(crate) mod unescape;

/// Why a body is not acceptable JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum JsonError {
    /// Not one valid JSON value.
    Malformed,
    /// Nested deeper than allowed.
    TooDeep,
}

/// The value of a top-level member, as the check saw it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Value<'j> {
    /// A string: the raw text between the quotes, whether it holds a `\` escape, and whether
    /// it holds a raw DEL (0x7f, the one control character JSON lets through unescaped).
    Str {
        raw: &'j str,
        escaped: bool,
        del: bool,
    },
    /// A number: its text.
    Number(&'j [u8]),
    /// `true`, `false`, `null`, an array or an object.
    Other,
}

/// Checks that `json` is one valid JSON value (RFC 8259: UTF-8, no control characters in
/// strings, valid escapes and numbers, no trailing commas) nested at most `max_depth`
/// deep, before the recursive parser (which skips unknown values leniently) sees it.
pub(crate) fn check(json: &[u8], max_depth: usize) -> Result<(), JsonError> {
    check_members(json, max_depth, |_, _| {}).map(|_| ())
}

/// [`check`], and `member(raw key, value)` for each member of a top-level object, in order
/// (called before the check is complete: act on the members only once it succeeds).
/// `Ok(true)` when the value is an object.
pub(crate) fn check_members<'j>(
    json: &'j [u8],
    max_depth: usize,
    mut member: impl FnMut(&'j [u8], Value<'j>),
) -> Result<bool, JsonError> {
    let text = core::str::from_utf8(json).map_err(|_| JsonError::Malformed)?;
    let mut v = Validator {
        s: json,
        text,
        i: 0,
        max_depth,
    };
    v.ws();
    let object = v.peek() == Some(b'{');
    if object && max_depth >= 1 {
        v.object(1, &mut member)?;
    } else {
        v.value(1)?;
    }
    v.ws();
    if v.i == json.len() {
        Ok(object)
    } else {
        Err(JsonError::Malformed)
    }
}

struct Validator<'j> {
    s: &'j [u8],
    /// `s` as text (checked once up front, so strings are sliced, not re-checked).
    text: &'j str,
    i: usize,
    max_depth: usize,
}

const BAD: JsonError = JsonError::Malformed;

/// A byte that ends a run of plain string text (0xff never occurs in UTF-8; it is here
/// because [`specials`] finds it along with DEL).
const fn special(b: u8) -> bool {
    matches!(b, b'"' | b'\\' | 0x00..=0x1f | 0x7f | 0xff)
}

/// Eight copies of a byte.
const fn splat(b: u8) -> u64 {
    u64::from_ne_bytes([b; 8])
}

/// High bit set in the first (lowest-addressed, little-endian) [`special`] byte of the
/// eight in `w`; bits above it may be spurious (borrows), bits below it never are.
const fn specials(w: u64) -> u64 {
    const LO: u64 = splat(0x01);
    let quote = w ^ splat(b'"');
    let backslash = w ^ splat(b'\\');
    let zero = (quote.wrapping_sub(LO) & !quote) | (backslash.wrapping_sub(LO) & !backslash);
    let control = w.wrapping_sub(splat(0x20)) & !w;
    let del = (w & splat(0x7f)).wrapping_add(LO); // 0x7f and 0xff carry into the high bit
    (zero | control | del) & splat(0x80)
}

/// The index of the first [`special`] byte of `s` at or after `i`, or `s.len()`. Looks at
/// 16 bytes per step (SWAR: no `unsafe`, no SIMD intrinsics).
fn skip_plain(s: &[u8], mut i: usize) -> usize {
    let word = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or_default());
    for block in s.get(i..).unwrap_or_default().chunks_exact(16) {
        let (lo, hi) = block.split_at(8);
        let (lo, hi) = (specials(word(lo)), specials(word(hi)));
        if lo | hi != 0 {
            let at = if lo != 0 {
                lo.trailing_zeros()
            } else {
                64 + hi.trailing_zeros()
            };
            return i + (at / 8) as usize;
        }
        i += 16;
    }
    while matches!(s.get(i), Some(&b) if !special(b)) {
        i += 1;
    }
    i
}

/// A string whose opening quote is just before `i`: the index past its closing quote,
/// whether it had an escape, whether it had a DEL.
fn scan_string(s: &[u8], mut i: usize) -> Result<(usize, bool, bool), JsonError> {
    let (mut escaped, mut del) = (false, false);
    loop {
        i = skip_plain(s, i);
        match s.get(i).ok_or(BAD)? {
            b'"' => return Ok((i + 1, escaped, del)),
            b'\\' => {
                escaped = true;
                i += match s.get(i + 1).ok_or(BAD)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => 2,
                    b'u' => match s.get(i + 2..i + 6) {
                        Some(hex) if hex.iter().all(u8::is_ascii_hexdigit) => 6,
                        _ => return Err(BAD),
                    },
                    _ => return Err(BAD),
                };
            }
            0x7f => {
                del = true;
                i += 1;
            }
            _ => return Err(BAD), // a control character (0xff cannot be here: not UTF-8)
        }
    }
}

impl<'j> Validator<'j> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        self.i - start
    }

    /// An object at `depth` (already checked against `max_depth`), its members reported.
    fn object(
        &mut self,
        depth: usize,
        member: &mut impl FnMut(&'j [u8], Value<'j>),
    ) -> Result<(), JsonError> {
        self.i += 1;
        self.ws();
        if self.eat(b'}') {
            return Ok(());
        }
        loop {
            self.ws();
            if self.peek() != Some(b'"') {
                return Err(BAD);
            }
            let key_start = self.i + 1;
            self.string()?;
            let key = self.s.get(key_start..self.i - 1).ok_or(BAD)?;
            self.ws();
            if !self.eat(b':') {
                return Err(BAD);
            }
            self.ws();
            let start = self.i;
            let value = match self.peek() {
                Some(b'"') => {
                    let (escaped, del) = self.string()?;
                    let raw = self.text.get(start + 1..self.i - 1).ok_or(BAD)?;
                    Value::Str { raw, escaped, del }
                }
                _ => {
                    self.value(depth + 1)?;
                    match self.s[start] {
                        b'-' | b'0'..=b'9' => Value::Number(&self.s[start..self.i]),
                        _ => Value::Other,
                    }
                }
            };
            member(key, value);
            self.ws();
            if self.eat(b'}') {
                return Ok(());
            }
            if !self.eat(b',') {
                return Err(BAD);
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<(), JsonError> {
        match self.peek().ok_or(BAD)? {
            b'{' | b'[' if depth > self.max_depth => Err(JsonError::TooDeep),
            b'{' => self.object(depth, &mut |_, _| {}),
            b'[' => {
                self.i += 1;
                self.ws();
                if self.eat(b']') {
                    return Ok(());
                }
                loop {
                    self.ws();
                    self.value(depth + 1)?;
                    self.ws();
                    if self.eat(b']') {
                        return Ok(());
                    }
                    if !self.eat(b',') {
                        return Err(BAD);
                    }
                }
            }
            b'"' => self.string().map(|_| ()),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => {
                self.eat(b'-');
                match self.peek() {
                    Some(b'0') => self.i += 1,
                    Some(b'1'..=b'9') => {
                        self.digits();
                    }
                    _ => return Err(BAD),
                }
                if self.eat(b'.') && self.digits() == 0 {
                    return Err(BAD);
                }
                if self.eat(b'e') || self.eat(b'E') {
                    if !self.eat(b'+') {
                        self.eat(b'-');
                    }
                    if self.digits() == 0 {
                        return Err(BAD);
                    }
                }
                Ok(())
            }
            _ => Err(BAD),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), JsonError> {
        let end = self.i.saturating_add(word.len());
        if self.s.get(self.i..end) == Some(word) {
            self.i = end;
            Ok(())
        } else {
            Err(BAD)
        }
    }

    /// A string, from its opening quote to past its closing one: (had an escape, had a DEL).
    fn string(&mut self) -> Result<(bool, bool), JsonError> {
        let (end, escaped, del) = scan_string(self.s, self.i + 1)?;
        self.i = end;
        Ok((escaped, del))
    }
}

#[cfg(test)]
pub(crate) mod tests;
