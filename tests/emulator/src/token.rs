//! JWT-shaped tokens and the time formats of the various flavours.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;

use crate::identity::{mix, Identity, TENANT_ID};

/// The `x5t`/`kid` of the emulator's (fake) signing key: 27 base64url characters like Entra's.
const KEY_ID: &str = "imdsEmulatorSigningKey00001";
/// Base64url alphabet, for filler claims.
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Writes a JSON object with the fields in the given order.
pub(crate) fn object(fields: &[(&str, Value)]) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&Value::from(*k).to_string());
        out.push(':');
        out.push_str(&v.to_string());
    }
    out.push('}');
    out
}

/// What a token is minted for.
pub(crate) struct Claims<'a> {
    pub(crate) identity: &'a Identity,
    pub(crate) resource: &'a str,
    pub(crate) iat: u64,
    pub(crate) nbf: u64,
    pub(crate) exp: u64,
    /// Unique per mint.
    pub(crate) serial: u64,
    /// Cloud Shell tokens represent the signed-in user, not an app.
    pub(crate) user: bool,
}

fn encoded_len(n: usize) -> usize {
    (n * 4).div_ceil(3)
}

fn filler(len: usize, seed: u64) -> String {
    let mut s = String::with_capacity(len);
    let mut x = seed;
    while s.len() < len {
        x = mix(x);
        for i in 0..10 {
            if s.len() == len {
                break;
            }
            s.push(ALPHABET[((x >> (i * 6)) & 63) as usize] as char);
        }
    }
    s
}

fn payload(c: &Claims<'_>, aio: &str) -> String {
    let id = c.identity;
    let iss = format!("https://sts.windows.net/{TENANT_ID}/");
    let uti = filler(22, c.serial ^ 0x5555);
    let mut fields: Vec<(&str, Value)> = vec![
        ("aud", c.resource.into()),
        ("iss", iss.clone().into()),
        ("iat", c.iat.into()),
        ("nbf", c.nbf.into()),
        ("exp", c.exp.into()),
        ("aio", aio.into()),
        ("appid", id.client_id.clone().into()),
        ("appidacr", "2".into()),
        ("idp", iss.into()),
        ("idtyp", if c.user { "user" } else { "app" }.into()),
        ("oid", id.object_id.clone().into()),
        ("rh", "0.AAAAemulator".into()),
        ("sub", id.object_id.clone().into()),
        ("tid", TENANT_ID.into()),
        ("uti", uti.into()),
        ("ver", "1.0".into()),
    ];
    if c.user {
        fields.push(("upn", "cloudshell-user@emulator.invalid".into()));
    } else {
        fields.push(("xms_mirid", id.mirid().into()));
    }
    object(&fields)
}

/// Mints a JWT-shaped token (`header.payload.signature`, base64url without padding) whose
/// length is `target_len` characters, or the smallest possible length above it when
/// `target_len` is below the natural size of the claims.
pub(crate) fn mint(c: &Claims<'_>, target_len: usize) -> String {
    let header = object(&[
        ("typ", "JWT".into()),
        ("alg", "RS256".into()),
        ("x5t", KEY_ID.into()),
        ("kid", KEY_ID.into()),
    ]);
    let header = URL_SAFE_NO_PAD.encode(header);
    // A 2048-bit RSA signature is 256 bytes: 342 characters.
    let mut sig = Vec::with_capacity(256);
    let mut x = mix(c.serial ^ c.exp);
    while sig.len() < 256 {
        x = mix(x);
        sig.extend_from_slice(&x.to_le_bytes());
    }
    sig.truncate(256);
    let sig = URL_SAFE_NO_PAD.encode(sig);
    let fixed = header.len() + sig.len() + 2;
    let base = payload(c, "").len();
    let want_payload_chars = target_len.saturating_sub(fixed);
    // Bytes of payload whose encoding reaches the wanted length.
    let want_bytes = (want_payload_chars * 3) / 4;
    let mut aio_len = want_bytes.saturating_sub(base).max(16);
    while encoded_len(base + aio_len) + fixed < target_len {
        aio_len += 1;
    }
    let aio = filler(aio_len, c.serial);
    let body = URL_SAFE_NO_PAD.encode(payload(c, &aio));
    format!("{header}.{body}.{sig}")
}

/// Decodes the payload of a JWT-shaped token (for tests and the control API).
pub fn decode_claims(token: &str) -> Option<serde_json::Map<String, Value>> {
    let part = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

/// (year, month, day, hour, minute, second) of a Unix time, UTC.
pub(crate) fn civil(epoch: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (epoch / 86400) as i64;
    let secs = epoch % 86400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (secs / 3600) as u32,
        ((secs / 60) % 60) as u32,
        (secs % 60) as u32,
    )
}

/// Which clock App Service 2017's date-string `expires_on` uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsiClock {
    /// Linux hosts: `05/22/2021 17:14:33 +00:00` (zero-padded, 24-hour).
    H24,
    /// Windows hosts: `1/16/2020 5:24:12 AM +00:00` (no padding, 12-hour with AM/PM).
    H12,
}

/// App Service 2017's `expires_on` date string.
pub(crate) fn msi_date(epoch: u64, clock: MsiClock) -> String {
    let (y, mo, d, h, mi, s) = civil(epoch);
    match clock {
        MsiClock::H24 => format!("{mo:02}/{d:02}/{y:04} {h:02}:{mi:02}:{s:02} +00:00"),
        MsiClock::H12 => {
            let (h12, ampm) = match h {
                0 => (12, "AM"),
                1..=11 => (h, "AM"),
                12 => (12, "PM"),
                _ => (h - 12, "PM"),
            };
            format!("{mo}/{d}/{y} {h12}:{mi:02}:{s:02} {ampm} +00:00")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), (1970, 1, 1, 0, 0, 0));
        // 2021-05-22 17:14:33 UTC
        assert_eq!(civil(1_621_703_673), (2021, 5, 22, 17, 14, 33));
        assert_eq!(
            msi_date(1_621_703_673, MsiClock::H24),
            "05/22/2021 17:14:33 +00:00"
        );
        // 2020-01-16 05:24:12 UTC
        assert_eq!(
            msi_date(1_579_152_252, MsiClock::H12),
            "1/16/2020 5:24:12 AM +00:00"
        );
        assert_eq!(
            msi_date(1_579_132_800, MsiClock::H12),
            "1/16/2020 12:00:00 AM +00:00"
        );
        assert_eq!(
            msi_date(1_579_176_000, MsiClock::H12),
            "1/16/2020 12:00:00 PM +00:00"
        );
        assert_eq!(civil(951_782_400), (2000, 2, 29, 0, 0, 0));
    }

    #[test]
    fn token_sizes() {
        let id = Identity::user_assigned(7);
        for target in [0usize, 1200, 1500, 1800, 2000, 4096, 20000] {
            let c = Claims {
                identity: &id,
                resource: "https://management.azure.com/",
                iat: 1_700_000_000,
                nbf: 1_699_999_700,
                exp: 1_700_086_400,
                serial: 3,
                user: false,
            };
            let t = mint(&c, target);
            assert!(t.len() >= target);
            if target >= 1500 {
                assert!(t.len() <= target + 2, "{} vs {target}", t.len());
            }
            let claims = decode_claims(&t).unwrap();
            assert_eq!(claims["aud"], "https://management.azure.com/");
            assert_eq!(claims["appid"], id.client_id.as_str());
        }
    }
}
