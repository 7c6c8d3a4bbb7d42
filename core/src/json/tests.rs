use super::*;
use std::vec::Vec;

/// The check as it was before the fast string scan, one byte per step: the oracle.
mod oracle {
    use super::super::JsonError;

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
}

/// Every JSON-ish fuzz corpus file, the crate's test bodies, and seeded mutations of
/// all of them (bytes swapped for quotes, escapes, controls, brackets, cut short).
pub(crate) fn bodies() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = [
        &br#"{"access_token":"a\/b\u0041\ud83d\ude00\"c","expires_in":"60"}"#[..],
        br#"{"x":[1,{"y":[]}],"z":{"a":{"b":null}},"n":null,"b":true,"f":-1.5e3}"#,
        br#"{"error":{"code":"c","message":"m"},"error":"e","code":7}"#,
        b"{\"access_token\":\"abc\x7fdefghijklmnopqrstuvwxyz0123456789\",\"expires_on\":17}",
        b"{\"a\":\"\xc3\xa9\xe2\x82\xac0123456789abcdef\\\\\\\"\"}",
    ]
    .iter()
    .map(|b| b.to_vec())
    .collect();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz");
    for dir in ["corpus", "regressions"] {
        for target in [
            "token_body",
            "token_body_vs_serde_json",
            "response",
            "arm_identity",
        ] {
            let Ok(entries) = std::fs::read_dir(std::format!("{root}/{dir}/{target}")) else {
                continue;
            };
            for entry in entries.flatten() {
                seeds.extend(std::fs::read(entry.path()));
            }
        }
    }
    const SWAPS: &[u8] = b"\"\\\x7f\x1f\x00u{}[],:0-eE.\xc3\xff /nt ";
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n.max(1) as u64) as usize
    };
    let mut all = Vec::new();
    for seed in seeds {
        for _ in 0..6 {
            let mut m = seed.clone();
            match next(3) {
                0 if !m.is_empty() => {
                    let at = next(m.len());
                    m[at] = SWAPS[next(SWAPS.len())];
                }
                1 if !m.is_empty() => m.truncate(next(m.len())),
                _ => {
                    let at = next(m.len() + 1);
                    m.splice(at..at, *b"\\u00");
                }
            }
            all.push(m);
        }
        all.push(seed);
    }
    all
}

#[test]
fn specials_finds_exactly_the_special_bytes() {
    for b in 0..=255u8 {
        for lane in 0..8 {
            let mut word = [b'a'; 8];
            word[lane] = b;
            word.iter_mut().skip(lane + 1).for_each(|w| *w = 0x00); // borrows above
            let hit = specials(u64::from_le_bytes(word));
            let first = (hit.trailing_zeros() / 8) as usize;
            let want = if special(b) { lane } else { lane + 1 };
            assert_eq!(first.min(8), want.min(8), "{b:#x} in lane {lane}");
        }
    }
}

#[test]
fn skip_plain_stops_at_the_first_special_byte() {
    for s in [0x00, 0x1f, b'"', b'\\', 0x7f] {
        for len in 0..40 {
            for at in 0..=len {
                let mut text = std::vec![b'a'; len];
                text.iter_mut().skip(at + 1).for_each(|b| *b = 0xe9);
                if at < len {
                    text[at] = s;
                }
                for from in [0, at / 2, at] {
                    assert_eq!(skip_plain(&text, from), at, "{s:#x} {len} {at} {from}");
                }
            }
        }
    }
}

#[test]
#[cfg_attr(miri, ignore = "reads the fuzz corpora")]
fn same_answers_as_the_byte_by_byte_check() {
    let bodies = bodies();
    assert!(bodies.len() > 1000, "corpora not found");
    for body in &bodies {
        for depth in [0, 1, 2, 3, 32, crate::arm::ARM_MAX_DEPTH] {
            assert_eq!(check(body, depth), oracle::check(body, depth), "{body:?}");
        }
    }
}

#[test]
fn members_of_a_top_level_object() {
    let body =
        b" {\"s\":\"a\\nb\", \"d\":\"x\x7f\", \"n\":-1.5 , \"o\":{\"s\":\"deep\"}, \"t\":true} ";
    let mut seen = Vec::new();
    let object = check_members(body, 32, |key, value| seen.push((key, value)));
    assert_eq!(object, Ok(true));
    let shown: Vec<_> = seen
        .iter()
        .map(|(k, v)| std::format!("{k:?}={v:?}"))
        .collect();
    assert_eq!(shown.len(), 5, "{shown:?}");
    assert!(matches!(
        seen[0].1,
        Value::Str {
            raw: "a\\nb",
            escaped: true,
            del: false
        }
    ));
    assert!(matches!(
        seen[1].1,
        Value::Str {
            raw: "x\x7f",
            escaped: false,
            del: true
        }
    ));
    assert!(matches!(seen[2].1, Value::Number(b"-1.5")));
    assert!(matches!(seen[3].1, Value::Other) && matches!(seen[4].1, Value::Other));
    assert_eq!(check_members(b"[1]", 32, |_, _| panic!()), Ok(false));
}
