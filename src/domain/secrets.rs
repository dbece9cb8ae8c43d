//! Types for values that must never reach a log line: their `Debug` is redacted.

use std::fmt;

/// A password as the caller sent it.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    pub fn new(value: String) -> Self {
        Password(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// A bearer secret (refresh token, API key) as the caller sent it or as we issue it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// SHA-256 of a text: how high-entropy secrets (refresh tokens, API keys, reset
/// tokens) are looked up, and how cache keys are made. A fast hash is right for
/// 256 random bits; passwords go to argon2id instead.
pub fn digest(text: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(text.as_bytes()).into()
}

/// [`digest`] in hex, as the store keeps it.
pub fn digest_hex(text: &str) -> String {
    hex::encode(digest(text))
}

/// `bytes` random bytes from the OS generator, base64url without padding.
pub fn random_token(bytes: usize) -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}
