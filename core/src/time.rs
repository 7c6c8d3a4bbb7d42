//! Time fields of token responses and HTTP dates (D10).
//!
//! Every parser here is total: it reads the whole input, accepts exactly the documented forms
//! and answers a [`TimeError`] that says what was wrong otherwise. Nothing is trimmed: a space
//! before or after a value is an error.

use core::fmt;

/// 2001-01-01T00:00:00Z in epoch seconds: an `expires_on` below it is refused (D10).
pub const YEAR_2001_S: u64 = 978_307_200;

/// Why a time field or an HTTP date was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimeError {
    /// The value is empty.
    Empty,
    /// The value is not a string of ASCII digits (a `+` sign, a space or a letter is in it).
    NotDigits,
    /// The value has a fractional part (`3599.0`).
    Fraction,
    /// The value is negative.
    Negative,
    /// The value does not fit in 64 bits.
    Overflow,
    /// An `expires_on` lies before 2001-01-01 (epoch 978307200).
    BeforeYear2001,
    /// A date lies before 1970-01-01.
    BeforeEpoch,
    /// The text matches none of the accepted date forms.
    BadFormat,
    /// The month or the day is out of range (day 0, February 30, month 13, …).
    BadDate,
    /// The hour, minute or second is out of range (hour 13 PM, minute 60, second 60, …).
    BadTime,
    /// The UTC offset is out of range (hours above 23 or minutes above 59).
    BadOffset,
}

impl TimeError {
    /// A short description of the error.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Empty => "time value is empty",
            Self::NotDigits => "time value is not a string of ASCII digits",
            Self::Fraction => "time value has a fractional part",
            Self::Negative => "time value is negative",
            Self::Overflow => "time value does not fit in 64 bits",
            Self::BeforeYear2001 => "expires_on is before 2001-01-01",
            Self::BeforeEpoch => "date is before 1970-01-01",
            Self::BadFormat => "not a recognised date format",
            Self::BadDate => "month or day out of range",
            Self::BadTime => "hour, minute or second out of range",
            Self::BadOffset => "UTC offset out of range",
        }
    }
}

impl fmt::Display for TimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl core::error::Error for TimeError {}

/// A whole number of seconds written as ASCII digits (`expires_in`, `refresh_in`, a numeric
/// `expires_on`, `Retry-After`).
///
/// No sign, no fraction, no spaces; leading zeros are allowed: `"3599"` is 3599, `"3599.0"` is
/// [`TimeError::Fraction`], `"-1"` is [`TimeError::Negative`].
pub fn parse_seconds(s: &str) -> Result<u64, TimeError> {
    let b = s.as_bytes();
    if b.is_empty() {
        return Err(TimeError::Empty);
    }
    let mut n: u64 = 0;
    for (i, &c) in b.iter().enumerate() {
        if c.is_ascii_digit() {
            n = n
                .checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(c - b'0')))
                .ok_or(TimeError::Overflow)?;
        } else {
            return Err(classify_non_digit(b, i));
        }
    }
    Ok(n)
}

/// The error for a number-like string whose byte at `i` is not a digit.
fn classify_non_digit(b: &[u8], i: usize) -> TimeError {
    let is_digits = |r: &[u8]| r.iter().all(u8::is_ascii_digit);
    let has_digit = |r: &[u8]| r.iter().any(u8::is_ascii_digit);
    // `-5`, `-5.0`: a negative number.
    if let Some((&b'-', rest)) = b.split_first() {
        if rest.first().is_some_and(u8::is_ascii_digit) && looks_decimal(rest) {
            return TimeError::Negative;
        }
        return TimeError::NotDigits;
    }
    // `3599.0`, `3599.`, `.5`: digits with a fractional part.
    if b.get(i) == Some(&b'.') {
        let (int, frac) = (b.get(..i).unwrap_or(&[]), b.get(i + 1..).unwrap_or(&[]));
        if is_digits(int) && is_digits(frac) && (has_digit(int) || has_digit(frac)) {
            return TimeError::Fraction;
        }
    }
    TimeError::NotDigits
}

/// `digits[.digits]`
fn looks_decimal(b: &[u8]) -> bool {
    let mut dots = 0;
    b.iter().all(|&c| {
        if c == b'.' {
            dots += 1;
            dots == 1
        } else {
            c.is_ascii_digit()
        }
    })
}

/// An `expires_on` in any of the forms token endpoints send, as epoch seconds.
///
/// Accepted forms (D10):
/// * digits: epoch seconds, e.g. `1643312761`;
/// * App Service date strings `M/d/yyyy h:mm:ss [AM|PM] [±hh:mm]`: month, day and hour of one
///   or two digits; with `AM`/`PM` (any case) a 12-hour clock where 12 AM is 0 h and 12 PM is
///   12 h, and hour 0 is read like 12 (so the doc sample `09/14/2017 00:00:00 PM +00:00` is
///   noon); without it a 24-hour clock; no offset means UTC;
/// * RFC 3339 / ISO 8601 `yyyy-mm-ddThh:mm:ss[.fraction][Z|±hh:mm]`, with `T`, `t` or a space
///   between date and time; the fraction is dropped; no zone means UTC.
///
/// Anything before 2001-01-01 is [`TimeError::BeforeYear2001`] (a relative lifetime sent in
/// the wrong field, or garbage).
pub fn parse_expires_on(s: &str) -> Result<u64, TimeError> {
    let b = s.as_bytes();
    if b.is_empty() {
        return Err(TimeError::Empty);
    }
    let epoch = if b.iter().all(u8::is_ascii_digit) {
        return parse_seconds(s).and_then(|n| {
            if n < YEAR_2001_S {
                Err(TimeError::BeforeYear2001)
            } else {
                Ok(n)
            }
        });
    } else if b.contains(&b'/') {
        parse_app_service_date(b)?
    } else if b.first().is_some_and(u8::is_ascii_digit) && b.get(4) == Some(&b'-') {
        parse_rfc3339(b)?
    } else {
        // Number-like garbage: say why it is not a number (`-1`, `3599.0`, `12a`).
        return Err(match parse_seconds(s) {
            Err(e) => e,
            Ok(_) => TimeError::BadFormat,
        });
    };
    match u64::try_from(epoch) {
        Ok(n) if n >= YEAR_2001_S => Ok(n),
        _ => Err(TimeError::BeforeYear2001),
    }
}

/// An HTTP-date (RFC 9110 §5.6.7) as epoch seconds: IMF-fixdate
/// (`Sun, 06 Nov 1994 08:49:37 GMT`), and the obsolete RFC 850
/// (`Sunday, 06-Nov-94 08:49:37 GMT`, two-digit years 70–99 read as 19xx, 00–69 as 20xx) and
/// asctime (`Sun Nov  6 08:49:37 1994`) forms. Day and month names are matched ignoring case;
/// the weekday is not checked against the date.
pub fn parse_http_date(s: &str) -> Result<u64, TimeError> {
    let b = s.as_bytes();
    if b.is_empty() {
        return Err(TimeError::Empty);
    }
    let epoch = match b.iter().position(|&c| c == b',') {
        Some(3) => parse_imf_fixdate(b)?,
        Some(_) => parse_rfc850(b)?,
        None => parse_asctime(b)?,
    };
    u64::try_from(epoch).map_err(|_| TimeError::BeforeEpoch)
}

const SHORT_DAYS: [&[u8]; 7] = [b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"];
const LONG_DAYS: [&[u8]; 7] = [
    b"Monday",
    b"Tuesday",
    b"Wednesday",
    b"Thursday",
    b"Friday",
    b"Saturday",
    b"Sunday",
];
const MONTHS: [&[u8]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// `Sun, 06 Nov 1994 08:49:37 GMT`
fn parse_imf_fixdate(b: &[u8]) -> Result<i64, TimeError> {
    let mut c = Cursor::new(b);
    c.word(&SHORT_DAYS)?;
    c.expect(b',')?;
    c.expect(b' ')?;
    let day = c.num(2, 2)?;
    c.expect(b' ')?;
    let month = c.word(&MONTHS)? + 1;
    c.expect(b' ')?;
    let year = c.num(4, 4)?;
    c.expect(b' ')?;
    let (hour, minute, second) = c.hms()?;
    c.expect(b' ')?;
    c.word(&[b"GMT"])?;
    c.end()?;
    epoch_seconds(year, month, day, hour, minute, second, 0)
}

/// `Sunday, 06-Nov-94 08:49:37 GMT`
fn parse_rfc850(b: &[u8]) -> Result<i64, TimeError> {
    let mut c = Cursor::new(b);
    c.word(&LONG_DAYS)?;
    c.expect(b',')?;
    c.expect(b' ')?;
    let day = c.num(2, 2)?;
    c.expect(b'-')?;
    let month = c.word(&MONTHS)? + 1;
    c.expect(b'-')?;
    let yy = c.num(2, 2)?;
    let year = if yy < 70 { 2000 + yy } else { 1900 + yy };
    c.expect(b' ')?;
    let (hour, minute, second) = c.hms()?;
    c.expect(b' ')?;
    c.word(&[b"GMT"])?;
    c.end()?;
    epoch_seconds(year, month, day, hour, minute, second, 0)
}

/// `Sun Nov  6 08:49:37 1994` (the day is space-padded; `06` is accepted too)
fn parse_asctime(b: &[u8]) -> Result<i64, TimeError> {
    let mut c = Cursor::new(b);
    c.word(&SHORT_DAYS)?;
    c.expect(b' ')?;
    let month = c.word(&MONTHS)? + 1;
    c.expect(b' ')?;
    let day = if c.eat(b' ') {
        c.num(1, 1)?
    } else {
        c.num(2, 2)?
    };
    c.expect(b' ')?;
    let (hour, minute, second) = c.hms()?;
    c.expect(b' ')?;
    let year = c.num(4, 4)?;
    c.end()?;
    epoch_seconds(year, month, day, hour, minute, second, 0)
}

/// `M/d/yyyy h:mm:ss [AM|PM] [±hh:mm]`
fn parse_app_service_date(b: &[u8]) -> Result<i64, TimeError> {
    let mut c = Cursor::new(b);
    let month = c.num(1, 2)?;
    c.expect(b'/')?;
    let day = c.num(1, 2)?;
    c.expect(b'/')?;
    let year = c.num(4, 4)?;
    c.expect(b' ')?;
    let hour = c.num(1, 2)?;
    c.expect(b':')?;
    let minute = c.num(2, 2)?;
    c.expect(b':')?;
    let second = c.num(2, 2)?;
    let mut pm = None;
    let mut offset = 0;
    if c.eat(b' ') {
        if c.eat_ignore_case(b"AM") {
            pm = Some(false);
        } else if c.eat_ignore_case(b"PM") {
            pm = Some(true);
        }
        if pm.is_none() || c.eat(b' ') {
            offset = c.offset()?;
        }
    }
    c.end()?;
    let hour = match pm {
        None => hour,
        Some(_) if hour > 12 => return Err(TimeError::BadTime),
        // 12 AM = 0 h, 12 PM = 12 h; hour 0 reads like 12 (`00:00:00 PM` is noon).
        Some(false) => hour % 12,
        Some(true) => hour % 12 + 12,
    };
    epoch_seconds(year, month, day, hour, minute, second, offset)
}

/// `yyyy-mm-ddThh:mm:ss[.fraction][Z|±hh:mm]`
fn parse_rfc3339(b: &[u8]) -> Result<i64, TimeError> {
    let mut c = Cursor::new(b);
    let year = c.num(4, 4)?;
    c.expect(b'-')?;
    let month = c.num(2, 2)?;
    c.expect(b'-')?;
    let day = c.num(2, 2)?;
    if !(c.eat(b'T') || c.eat(b't') || c.eat(b' ')) {
        return Err(TimeError::BadFormat);
    }
    let (hour, minute, second) = c.hms()?;
    if c.eat(b'.') {
        // At least one digit; the fraction is dropped (the expiry moves earlier, never later).
        c.num(1, 1)?;
        while c.peek().is_some_and(|d| d.is_ascii_digit()) {
            c.pos += 1;
        }
    }
    let offset = if c.eat(b'Z') || c.eat(b'z') || c.is_end() {
        0
    } else {
        c.offset()?
    };
    c.end()?;
    epoch_seconds(year, month, day, hour, minute, second, offset)
}

/// Epoch seconds of a validated civil date and time at a UTC offset (local − UTC, seconds).
fn epoch_seconds(
    year: u32,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    offset: i64,
) -> Result<i64, TimeError> {
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return Err(TimeError::BadDate);
    }
    if hour > 23 || minute > 59 || second > 59 {
        return Err(TimeError::BadTime);
    }
    let days = days_from_civil(i64::from(year), month, day);
    let secs = i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second);
    Ok(days * 86_400 + secs - offset)
}

fn is_leap(year: u32) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`). `month` is 1–12 and `day` 1–31; `year` is any value the parsers can
/// produce (0–9999), so nothing overflows.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400); // [0, 399]
    let mp = i64::from((month + 9) % 12); // March = 0
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// A byte cursor; every failure is [`TimeError::BadFormat`].
struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(b: &'a [u8]) -> Self {
        Self { b, pos: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn is_end(&self) -> bool {
        self.pos >= self.b.len()
    }

    fn end(&self) -> Result<(), TimeError> {
        if self.is_end() {
            Ok(())
        } else {
            Err(TimeError::BadFormat)
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), TimeError> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(TimeError::BadFormat)
        }
    }

    fn eat_ignore_case(&mut self, word: &[u8]) -> bool {
        let end = self.pos.saturating_add(word.len());
        match self.b.get(self.pos..end) {
            Some(w) if w.eq_ignore_ascii_case(word) => {
                self.pos = end;
                true
            }
            _ => false,
        }
    }

    /// One of `words` (ignoring ASCII case); its index.
    fn word(&mut self, words: &[&[u8]]) -> Result<u32, TimeError> {
        for (i, w) in (0u32..).zip(words) {
            if self.eat_ignore_case(w) {
                return Ok(i);
            }
        }
        Err(TimeError::BadFormat)
    }

    /// Between `min` and `max` (≤ 4) ASCII digits, as many as there are.
    fn num(&mut self, min: usize, max: usize) -> Result<u32, TimeError> {
        let mut n = 0u32;
        let mut count = 0;
        while count < max {
            match self.peek() {
                Some(d) if d.is_ascii_digit() => {
                    n = n.saturating_mul(10).saturating_add(u32::from(d - b'0'));
                    self.pos += 1;
                    count += 1;
                }
                _ => break,
            }
        }
        if count < min {
            return Err(TimeError::BadFormat);
        }
        Ok(n)
    }

    /// `hh:mm:ss`, two digits each.
    fn hms(&mut self) -> Result<(u32, u32, u32), TimeError> {
        let h = self.num(2, 2)?;
        self.expect(b':')?;
        let m = self.num(2, 2)?;
        self.expect(b':')?;
        let s = self.num(2, 2)?;
        Ok((h, m, s))
    }

    /// `±hh:mm` as seconds east of UTC.
    fn offset(&mut self) -> Result<i64, TimeError> {
        let sign = if self.eat(b'+') {
            1
        } else if self.eat(b'-') {
            -1
        } else {
            return Err(TimeError::BadFormat);
        };
        let h = self.num(2, 2)?;
        self.expect(b':')?;
        let m = self.num(2, 2)?;
        if h > 23 || m > 59 {
            return Err(TimeError::BadOffset);
        }
        Ok(sign * (i64::from(h) * 3600 + i64::from(m) * 60))
    }
}

#[cfg(test)]
mod tests;
