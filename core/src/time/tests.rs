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
