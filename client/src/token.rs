//! [`Token`]: an owned access token, for callers that keep one (the async API, the azure_core
//! credential).

use std::fmt;

use zeroize::Zeroize;

/// An access token and when it expires. The bytes are a secret: [`Debug`](fmt::Debug) shows
/// only their length, and they are wiped when the `Token` is dropped (D13). A copy taken out of
/// it ([`as_str`](Self::as_str) into a `String`, a header) is the caller's to wipe.
pub struct Token {
    secret: Box<[u8]>,
    expires_on_s: u64,
}

impl Token {
    /// A token holding `secret` (exactly its bytes: no spare capacity left unwiped).
    pub(crate) fn new(secret: Box<[u8]>, expires_on_s: u64) -> Self {
        Self {
            secret,
            expires_on_s,
        }
    }

    /// The token's bytes (a JWT: ASCII).
    pub fn secret(&self) -> &[u8] {
        &self.secret
    }

    /// The token as text; `None` if the endpoint sent bytes that are not UTF-8 (a JSON string
    /// always is, so this does not happen with a conforming endpoint).
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.secret).ok()
    }

    /// When the token expires, in epoch seconds (D1).
    pub fn expires_on_s(&self) -> u64 {
        self.expires_on_s
    }
}

/// Shows the length and the expiry, never the token.
impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("len", &self.secret.len())
            .field("expires_on_s", &self.expires_on_s)
            .finish()
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_secret() {
        let token = Token::new(Box::from(&b"eyJ0eXAi.secret-part"[..]), 1_900_000_000);
        let shown = format!("{token:?}");
        assert_eq!(shown, "Token { len: 20, expires_on_s: 1900000000 }");
        assert_eq!(token.as_str(), Some("eyJ0eXAi.secret-part"));
        assert_eq!(token.secret(), b"eyJ0eXAi.secret-part");
        assert_eq!(token.expires_on_s(), 1_900_000_000);
    }

    #[test]
    fn non_utf8_is_no_str() {
        let token = Token::new(Box::from(&[0xff, 0xfe][..]), 1_900_000_000);
        assert_eq!(token.as_str(), None);
    }
}
