//! Time fields of token responses and HTTP dates (D10).
//!
//! Every parser here is total: it reads the whole input, accepts exactly the documented forms
//! and answers a [`TimeError`] that says what was wrong otherwise. Nothing is trimmed: a space
//! before or after a value is an error.

use core::fmt;

/// 2001-01-01T00:00:00Z in epoch seconds: an `expires_on` below it is refused (D10).
pub const YEAR_2001: u64 = 978_307_200;

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
            if n < YEAR_2001 {
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
        Ok(n) if n >= YEAR_2001 => Ok(n),
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
mod tests {
    use super::*;
    use TimeError::*;

    // Expected epochs were computed with Python's `calendar.timegm`, not with this module.
    #[rustfmt::skip]
    const SECONDS: &[(&str, Result<u64, TimeError>)] = &[
        ("0", Ok(0)),
        ("3599", Ok(3599)),
        ("86399", Ok(86399)),
        ("007", Ok(7)),
        ("1643312761", Ok(1643312761)),
        ("18446744073709551615", Ok(u64::MAX)),
        ("18446744073709551616", Err(Overflow)),
        ("99999999999999999999999", Err(Overflow)),
        ("", Err(Empty)),
        ("3599.0", Err(Fraction)),
        ("3599.", Err(Fraction)),
        (".5", Err(Fraction)),
        ("1.2.3", Err(NotDigits)),
        (".", Err(NotDigits)),
        ("-1", Err(Negative)),
        ("-5", Err(Negative)),
        ("-3599.0", Err(Negative)),
        ("-", Err(NotDigits)),
        ("-a", Err(NotDigits)),
        ("+5", Err(NotDigits)),
        ("12a", Err(NotDigits)),
        (" 5", Err(NotDigits)),
        ("5 ", Err(NotDigits)),
        ("1e3", Err(NotDigits)),
        ("0x10", Err(NotDigits)),
        ("\u{661}\u{662}", Err(NotDigits)),
        ("null", Err(NotDigits)),
    ];

    #[test]
    fn seconds() {
        for (input, want) in SECONDS {
            assert_eq!(parse_seconds(input), *want, "{input:?}");
        }
    }

    #[rustfmt::skip]
    const EXPIRES_ON: &[(&str, Result<u64, TimeError>)] = &[
        // Digits: epoch seconds, floor 2001-01-01.
        ("1643312761", Ok(1643312761)),
        ("978307200", Ok(978307200)),
        ("978307199", Err(BeforeYear2001)),
        ("3599", Err(BeforeYear2001)),
        ("0", Err(BeforeYear2001)),
        ("99999999999999999999999", Err(Overflow)),
        ("", Err(Empty)),
        ("3599.0", Err(Fraction)),
        ("1643312761.5", Err(Fraction)),
        ("-1", Err(Negative)),
        ("12a", Err(NotDigits)),
        ("+1643312761", Err(NotDigits)),
        (" 1643312761", Err(NotDigits)),
        ("1643312761 ", Err(NotDigits)),
        // App Service date strings (§4.2, E13, E14).
        ("05/22/2021 17:14:33 +00:00", Ok(1621703673)),
        ("1/16/2020 5:24:12 AM +00:00", Ok(1579152252)),
        ("06/20/2019 02:57:58 +00:00", Ok(1560999478)),
        ("09/14/2017 00:00:00 PM +00:00", Ok(1505390400)),
        ("1/16/2020 12:00:00 AM", Ok(1579132800)),
        ("1/16/2020 12:00:00 PM", Ok(1579176000)),
        ("1/16/2020 12:30:15 am", Ok(1579134615)),
        ("1/16/2020 5:24:12 pm", Ok(1579195452)),
        ("1/16/2020 5:24:12 Pm +00:00", Ok(1579195452)),
        ("1/16/2020 11:59:59 PM", Ok(1579219199)),
        ("1/16/2020 0:00:00 AM", Ok(1579132800)),
        ("05/22/2021 17:14:33", Ok(1621703673)),
        ("05/22/2021 17:14:33 +02:00", Ok(1621696473)),
        ("05/22/2021 17:14:33 -05:30", Ok(1621723473)),
        ("1/1/2021 1:00:00 AM +02:00", Ok(1609455600)),
        ("2/29/2024 0:00:00", Ok(1709164800)),
        ("12/31/2099 23:59:59", Ok(4102444799)),
        ("2/29/2023 0:00:00", Err(BadDate)),
        ("2/30/2024 0:00:00", Err(BadDate)),
        ("4/31/2021 0:00:00", Err(BadDate)),
        ("13/01/2021 0:00:00", Err(BadDate)),
        ("0/01/2021 0:00:00", Err(BadDate)),
        ("1/0/2021 0:00:00", Err(BadDate)),
        ("22/05/2021 17:14:33 +00:00", Err(BadDate)),
        ("1/16/2020 13:00:00 PM", Err(BadTime)),
        ("1/16/2020 24:00:00", Err(BadTime)),
        ("1/16/2020 23:60:00", Err(BadTime)),
        ("1/16/2020 23:59:60", Err(BadTime)),
        ("1/16/2020 5:24:12 AM +24:00", Err(BadOffset)),
        ("1/16/2020 5:24:12 +00:60", Err(BadOffset)),
        ("1/16/2020 5:24:12 XM", Err(BadFormat)),
        ("1/16/2020 5:24:12 AM ", Err(BadFormat)),
        ("1/16/2020 5:24:12 AM+00:00", Err(BadFormat)),
        ("1/16/2020 5:24:12 +0000", Err(BadFormat)),
        ("1/16/2020 5:24:12 UTC", Err(BadFormat)),
        ("1/16/2020 5:24", Err(BadFormat)),
        ("1/16/20 5:24:12", Err(BadFormat)),
        ("123/16/2020 5:24:12", Err(BadFormat)),
        ("1/16/2020 5:4:12", Err(BadFormat)),
        ("1/16/2020  5:24:12", Err(BadFormat)),
        ("1/16/2020", Err(BadFormat)),
        ("1/1/2000 0:00:00", Err(BeforeYear2001)),
        ("1/1/2001 1:00:00 AM +02:00", Err(BeforeYear2001)),
        // RFC 3339 / ISO 8601.
        ("2024-02-29T00:00:00Z", Ok(1709164800)),
        ("2021-05-22T17:14:33Z", Ok(1621703673)),
        ("2021-05-22t17:14:33z", Ok(1621703673)),
        ("2021-05-22 17:14:33", Ok(1621703673)),
        ("2021-05-22T17:14:33", Ok(1621703673)),
        ("2021-05-22T17:14:33.9999999+00:00", Ok(1621703673)),
        ("2021-05-22T17:14:33.5Z", Ok(1621703673)),
        ("2021-05-22T17:14:33+02:00", Ok(1621696473)),
        ("2021-05-22T17:14:33-07:00", Ok(1621728873)),
        ("2001-01-01T00:00:00Z", Ok(978307200)),
        ("2001-01-01T01:00:00+02:00", Err(BeforeYear2001)),
        ("1970-01-01T00:00:00Z", Err(BeforeYear2001)),
        ("0000-03-01T00:00:00Z", Err(BeforeYear2001)),
        ("2023-02-29T00:00:00Z", Err(BadDate)),
        ("2021-00-10T00:00:00Z", Err(BadDate)),
        ("2021-05-32T00:00:00Z", Err(BadDate)),
        ("2021-05-22T24:00:00Z", Err(BadTime)),
        ("2021-05-22T23:59:60Z", Err(BadTime)),
        ("2021-05-22T17:14:33+99:00", Err(BadOffset)),
        ("2021-05-22T17:14:33.Z", Err(BadFormat)),
        ("2021-05-22 17:14:33.123 -00:30", Err(BadFormat)),
        ("2021-05-22T17:14:33+0200", Err(BadFormat)),
        ("2021-05-22T17:14:33Z ", Err(BadFormat)),
        ("2021-05-22X17:14:33Z", Err(BadFormat)),
        ("2021-05-22T17:14Z", Err(BadFormat)),
        ("2021-5-22T17:14:33Z", Err(BadFormat)),
        ("2021-05-22", Err(BadFormat)),
    ];

    #[test]
    fn expires_on() {
        for (input, want) in EXPIRES_ON {
            assert_eq!(parse_expires_on(input), *want, "{input:?}");
        }
    }

    #[rustfmt::skip]
    const HTTP_DATES: &[(&str, Result<u64, TimeError>)] = &[
        ("Sun, 06 Nov 1994 08:49:37 GMT", Ok(784111777)),
        ("Sunday, 06-Nov-94 08:49:37 GMT", Ok(784111777)),
        ("Sun Nov  6 08:49:37 1994", Ok(784111777)),
        ("Sun Nov 06 08:49:37 1994", Ok(784111777)),
        ("sun, 06 nov 1994 08:49:37 gmt", Ok(784111777)),
        ("Thu, 01 Jan 1970 00:00:00 GMT", Ok(0)),
        ("Wed, 21 Oct 2015 07:28:00 GMT", Ok(1445412480)),
        ("Thursday, 29-Feb-24 12:00:00 GMT", Ok(1709208000)),
        ("Tue, 19 Jan 2038 03:14:08 GMT", Ok(2147483648)),
        ("Fri, 31 Dec 9999 23:59:59 GMT", Ok(253402300799)),
        ("Wed, 31 Dec 1969 23:59:59 GMT", Err(BeforeEpoch)),
        ("", Err(Empty)),
        ("120", Err(BadFormat)),
        ("Sun, 6 Nov 1994 08:49:37 GMT", Err(BadFormat)),
        ("Sun, 06 Nov 1994 08:49:37 UTC", Err(BadFormat)),
        ("Sun, 06 Nov 1994 08:49:37 GMT ", Err(BadFormat)),
        ("Sun, 06 Nov 1994 08:49:37", Err(BadFormat)),
        ("Sun, 06 Nov 94 08:49:37 GMT", Err(BadFormat)),
        ("Xyz, 06 Nov 1994 08:49:37 GMT", Err(BadFormat)),
        ("Sun, 06 Foo 1994 08:49:37 GMT", Err(BadFormat)),
        ("Sun, 31 Nov 1994 08:49:37 GMT", Err(BadDate)),
        ("Sun, 00 Nov 1994 08:49:37 GMT", Err(BadDate)),
        ("Sun, 06 Nov 1994 25:49:37 GMT", Err(BadTime)),
        ("Sunday, 06-Nov-1994 08:49:37 GMT", Err(BadFormat)),
        ("Sun Nov 6 08:49:37 1994", Err(BadFormat)),
    ];

    #[test]
    fn http_dates() {
        for (input, want) in HTTP_DATES {
            assert_eq!(parse_http_date(input), *want, "{input:?}");
        }
    }

    /// `days_from_civil` against a day-by-day count from 1970-01-01.
    #[test]
    fn days_from_civil_counts_days() {
        let mut n = 0i64;
        // 230 years; 30 under Miri (each day costs ~0.5 ms there).
        let end = if cfg!(miri) { 2000 } else { 2200u32 };
        for year in 1970..end {
            for month in 1..=12 {
                for day in 1..=days_in_month(year, month) {
                    assert_eq!(
                        days_from_civil(i64::from(year), month, day),
                        n,
                        "{year}-{month}-{day}"
                    );
                    n += 1;
                }
            }
        }
        // Before the epoch too: 1969-12-31 and 0000-03-01 (proleptic Gregorian).
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(days_from_civil(0, 3, 1), -719_468);
    }

    /// Every prefix, and every single-byte change, of the accepted samples is parsed without
    /// a panic.
    #[test]
    #[cfg_attr(
        miri,
        ignore = "every mutation of every sample: hours under Miri; fuzzed instead"
    )]
    fn no_panics() {
        let samples = EXPIRES_ON
            .iter()
            .chain(HTTP_DATES)
            .chain(SECONDS)
            .map(|c| c.0);
        let mut buf = [0u8; 64];
        for s in samples {
            for i in 0..=s.len() {
                if let Some(p) = s.get(..i) {
                    let _ = (parse_seconds(p), parse_expires_on(p), parse_http_date(p));
                }
            }
            let b = s.as_bytes();
            let Some(slot) = buf.get_mut(..b.len()) else {
                continue;
            };
            for i in 0..b.len() {
                for c in [
                    b'0', b'9', b' ', b':', b'/', b'-', b'+', b'.', b'T', b'Z', b'P', 0xff,
                ] {
                    slot.copy_from_slice(b);
                    slot[i] = c;
                    if let Ok(p) = core::str::from_utf8(slot) {
                        let _ = (parse_seconds(p), parse_expires_on(p), parse_http_date(p));
                    }
                }
            }
        }
    }

    #[test]
    fn display() {
        use std::string::ToString;
        assert_eq!(Fraction.to_string(), "time value has a fractional part");
        assert_eq!(BeforeYear2001.to_string(), BeforeYear2001.as_str());
    }
}
