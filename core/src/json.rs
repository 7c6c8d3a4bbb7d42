//! A strict JSON check that runs before serde-json-core parses a body.
//!
//! serde-json-core skips unknown values leniently (a bare `tru` passes as a value) and
//! recurses once per nesting level with no bound, so deeply nested input would overflow the
//! stack. Every body is checked here first: one RFC 8259 value, nested at most `max_depth`.

/// Why a body is not acceptable JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum JsonError {
    /// Not one valid JSON value.
    Malformed,
    /// Nested deeper than allowed.
    TooDeep,
}

/// Checks that `json` is one valid JSON value (RFC 8259: UTF-8, no control characters in
/// strings, valid escapes and numbers, no trailing commas) nested at most `max_depth`
/// deep, before the recursive parser (which skips unknown values leniently) sees it.
pub(crate) fn check(json: &[u8], max_depth: usize) -> Result<(), JsonError> {
    if core::str::from_utf8(json).is_err() {
        return Err(JsonError::Malformed);
    }
    let mut v = Validator {
        s: json,
        i: 0,
        max_depth,
    };
    v.ws();
    v.value(1)?;
    v.ws();
    if v.i == json.len() {
        Ok(())
    } else {
        Err(JsonError::Malformed)
    }
}

struct Validator<'j> {
    s: &'j [u8],
    i: usize,
    max_depth: usize,
}

impl Validator<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.i += 1;
        Some(b)
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

    fn value(&mut self, depth: usize) -> Result<(), JsonError> {
        const BAD: JsonError = JsonError::Malformed;
        match self.peek().ok_or(BAD)? {
            b'{' | b'[' if depth > self.max_depth => Err(JsonError::TooDeep),
            b'{' => {
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
                    self.string()?;
                    self.ws();
                    if !self.eat(b':') {
                        return Err(BAD);
                    }
                    self.ws();
                    self.value(depth + 1)?;
                    self.ws();
                    if self.eat(b'}') {
                        return Ok(());
                    }
                    if !self.eat(b',') {
                        return Err(BAD);
                    }
                }
            }
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
            b'"' => self.string(),
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
            Err(JsonError::Malformed)
        }
    }

    fn string(&mut self) -> Result<(), JsonError> {
        const BAD: JsonError = JsonError::Malformed;
        self.i += 1; // the opening quote
        loop {
            match self.bump().ok_or(BAD)? {
                b'"' => return Ok(()),
                b'\\' => match self.bump().ok_or(BAD)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                    b'u' => {
                        for _ in 0..4 {
                            if !self.bump().ok_or(BAD)?.is_ascii_hexdigit() {
                                return Err(BAD);
                            }
                        }
                    }
                    _ => return Err(BAD),
                },
                0x00..=0x1f => return Err(BAD),
                _ => {}
            }
        }
    }
}
