//! Sealing secrets at rest: a [`KeyEncryptionKey`] (`AUTHD_KEY_ENCRYPTION_KEY`)
//! encrypts a secret with XChaCha20-Poly1305 under a fresh random nonce, binding it
//! to the row it belongs to (the associated data), so that a sealed value copied to
//! another row, altered, or opened with another key does not open.
//!
//! The sealed form is text, self-describing and versioned:
//! `enc:v1:<key id>:<base64 of nonce ‖ ciphertext ‖ tag>`, where the key id is a
//! short fingerprint of the key: "sealed with another key" can be told from "no key"
//! and from "altered" without trying to decrypt. This module knows nothing of
//! signing keys or the database; the owners of each kind of secret choose its
//! associated data and where it is kept.

use std::{fmt, sync::Arc};

use base64::{engine::general_purpose::STANDARD, Engine};
use chacha20poly1305::{
    aead::{Aead, AeadCore, KeyInit, OsRng, Payload},
    Key, XChaCha20Poly1305, XNonce,
};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// What every sealed value starts with.
pub const SEALED_PREFIX: &str = "enc:";
const VERSION_1: &str = "enc:v1:";
const NONCE_BYTES: usize = 24;
const TAG_BYTES: usize = 16;
/// Hex digits of the key id: enough to tell keys apart, far too few to matter.
const KEY_ID_HEX: usize = 16;

/// The key that seals secrets at rest: 32 random bytes. Cheap to clone; the key
/// material is erased from memory when the last clone goes. `Debug` shows only its
/// id.
#[derive(Clone)]
pub struct KeyEncryptionKey {
    inner: Arc<Inner>,
}

struct Inner {
    /// Zeroes its key when dropped.
    cipher: XChaCha20Poly1305,
    id: String,
}

/// A key encryption key that is not base64 of 32 bytes. Says nothing of the value.
#[derive(Debug, thiserror::Error)]
#[error("is not base64 of 32 bytes (make one with `openssl rand -base64 32`)")]
pub struct BadKeyEncryptionKey;

/// Why a sealed value did not open.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Not in a sealed form this version knows.
    #[error("is not a sealed value this authd can read")]
    Malformed,
    /// Sealed with a key other than this one.
    #[error("is sealed with another key (id {sealed_with}; the key set has id {ours})")]
    OtherKey { sealed_with: String, ours: String },
    /// The key is the right one, but the value was altered or belongs to another row.
    #[error("does not open with the key of id {ours}: altered, or moved from another row")]
    NotAuthentic { ours: String },
}

impl KeyEncryptionKey {
    /// The key from 32 bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        let id = hex::encode(
            Sha256::new_with_prefix(b"authd key id v1\0")
                .chain_update(bytes)
                .finalize(),
        )[..KEY_ID_HEX]
            .to_owned();
        KeyEncryptionKey {
            inner: Arc::new(Inner {
                cipher: XChaCha20Poly1305::new(Key::from_slice(bytes)),
                id,
            }),
        }
    }

    /// The key from its base64 text (standard alphabet, padded or not), with any
    /// whitespace around it (a file's trailing newline) ignored.
    pub fn from_base64(text: &str) -> Result<Self, BadKeyEncryptionKey> {
        let text = text.trim().trim_end_matches('=');
        let bytes = Zeroizing::new(
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(text)
                .map_err(|_| BadKeyEncryptionKey)?,
        );
        let bytes: &[u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| BadKeyEncryptionKey)?;
        Ok(Self::from_bytes(bytes))
    }

    /// A fresh random key (for tests and tools; operators make theirs with openssl).
    pub fn generate() -> Self {
        let bytes = Zeroizing::new(<[u8; 32]>::from(XChaCha20Poly1305::generate_key(
            &mut OsRng,
        )));
        Self::from_bytes(&bytes)
    }

    /// The key's fingerprint, as written in what it seals. Not secret.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// `plaintext` sealed for the row that `aad` names.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> String {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let payload = Payload {
            msg: plaintext,
            aad,
        };
        let Ok(ciphertext) = self.inner.cipher.encrypt(&nonce, payload) else {
            // XChaCha20-Poly1305 fails only past 256 GiB of plaintext.
            unreachable!("a secret of {} bytes is too long to seal", plaintext.len());
        };
        let mut body = Vec::with_capacity(NONCE_BYTES + ciphertext.len());
        body.extend_from_slice(&nonce);
        body.extend_from_slice(&ciphertext);
        format!("{VERSION_1}{}:{}", self.inner.id, STANDARD.encode(body))
    }

    /// The plaintext that [`KeyEncryptionKey::seal`] sealed for the row `aad` names.
    pub fn open(&self, aad: &[u8], sealed: &str) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        let (key_id, body) = parse(sealed)?;
        if key_id != self.inner.id {
            return Err(OpenError::OtherKey {
                sealed_with: key_id.to_owned(),
                ours: self.inner.id.clone(),
            });
        }
        let (nonce, ciphertext) = body.split_at(NONCE_BYTES);
        let payload = Payload {
            msg: ciphertext,
            aad,
        };
        self.inner
            .cipher
            .decrypt(XNonce::from_slice(nonce), payload)
            .map(Zeroizing::new)
            .map_err(|_| OpenError::NotAuthentic {
                ours: self.inner.id.clone(),
            })
    }
}

impl fmt::Debug for KeyEncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyEncryptionKey")
            .field("id", &self.inner.id)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Whether a stored value is sealed (in any version), rather than in the clear.
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(SEALED_PREFIX)
}

/// The id of the key that sealed `stored`, if it is sealed in a form this
/// version knows.
pub fn sealed_with(stored: &str) -> Option<&str> {
    let rest = stored.strip_prefix(VERSION_1)?;
    rest.split_once(':').map(|(id, _)| id)
}

/// The key id and the decoded nonce ‖ ciphertext ‖ tag of a version-1 value.
fn parse(sealed: &str) -> Result<(&str, Vec<u8>), OpenError> {
    let rest = sealed.strip_prefix(VERSION_1).ok_or(OpenError::Malformed)?;
    let (key_id, body) = rest.split_once(':').ok_or(OpenError::Malformed)?;
    let body = STANDARD.decode(body).map_err(|_| OpenError::Malformed)?;
    if key_id.len() != KEY_ID_HEX || body.len() < NONCE_BYTES + TAG_BYTES {
        return Err(OpenError::Malformed);
    }
    Ok((key_id, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"a private key, say";

    #[test]
    fn what_is_sealed_opens_with_the_same_key_and_row() {
        let key = KeyEncryptionKey::generate();
        let sealed = key.seal(b"row-1", SECRET);
        assert!(sealed.starts_with(&format!("enc:v1:{}:", key.id())));
        assert!(is_sealed(&sealed));
        assert_eq!(sealed_with(&sealed), Some(key.id()));
        assert_eq!(
            key.open(b"row-1", &sealed).expect("opens").as_slice(),
            SECRET
        );
    }

    #[test]
    fn each_seal_uses_a_fresh_nonce() {
        let key = KeyEncryptionKey::generate();
        assert_ne!(key.seal(b"row-1", SECRET), key.seal(b"row-1", SECRET));
    }

    #[test]
    fn a_value_moved_to_another_row_does_not_open() {
        let key = KeyEncryptionKey::generate();
        let sealed = key.seal(b"row-1", SECRET);
        assert!(matches!(
            key.open(b"row-2", &sealed),
            Err(OpenError::NotAuthentic { .. })
        ));
    }

    #[test]
    fn another_key_is_told_apart_and_does_not_open() {
        let (ours, theirs) = (KeyEncryptionKey::generate(), KeyEncryptionKey::generate());
        let sealed = theirs.seal(b"row-1", SECRET);
        assert_eq!(
            ours.open(b"row-1", &sealed),
            Err(OpenError::OtherKey {
                sealed_with: theirs.id().to_owned(),
                ours: ours.id().to_owned()
            })
        );
        // A key whose id collides (here: forged into the value) still cannot open it.
        let forged = sealed.replace(theirs.id(), ours.id());
        assert!(matches!(
            ours.open(b"row-1", &forged),
            Err(OpenError::NotAuthentic { .. })
        ));
    }

    #[test]
    fn a_tampered_value_does_not_open() {
        let key = KeyEncryptionKey::generate();
        let sealed = key.seal(b"row-1", SECRET);
        let prefix = format!("enc:v1:{}:", key.id());
        let mut body = STANDARD
            .decode(sealed.strip_prefix(&prefix).expect("prefix"))
            .expect("base64");
        for i in [0, NONCE_BYTES, body.len() - 1] {
            body[i] ^= 1;
            let tampered = format!("{prefix}{}", STANDARD.encode(&body));
            assert!(
                matches!(
                    key.open(b"row-1", &tampered),
                    Err(OpenError::NotAuthentic { .. })
                ),
                "byte {i}"
            );
            body[i] ^= 1;
        }
        let truncated = format!("{prefix}{}", STANDARD.encode(&body[..NONCE_BYTES + 8]));
        assert_eq!(key.open(b"row-1", &truncated), Err(OpenError::Malformed));
    }

    #[test]
    fn plaintext_and_unknown_versions_are_malformed() {
        let key = KeyEncryptionKey::generate();
        for stored in [
            "",
            "MC4CAQAwBQYDK2VwBCIEI",
            "enc:v9:abc:def",
            "enc:v1:nocolon",
        ] {
            assert_eq!(
                key.open(b"row-1", stored),
                Err(OpenError::Malformed),
                "{stored}"
            );
        }
        assert!(!is_sealed("MC4CAQAwBQYDK2VwBCIEI"));
    }

    #[test]
    fn the_key_parses_from_base64_of_32_bytes_only() {
        let text = STANDARD.encode([7u8; 32]);
        let key = KeyEncryptionKey::from_base64(&format!("{text}\n")).expect("trailing newline");
        assert_eq!(key.id(), KeyEncryptionKey::from_bytes(&[7u8; 32]).id());
        assert!(KeyEncryptionKey::from_base64(text.trim_end_matches('=')).is_ok());
        for bad in [
            "",
            "not base64!",
            &STANDARD.encode([7u8; 16]),
            &STANDARD.encode([7u8; 33]),
        ] {
            assert!(KeyEncryptionKey::from_base64(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_shows_the_id_and_never_the_key() {
        let key = KeyEncryptionKey::from_bytes(&[0x41; 32]);
        let debug = format!("{key:?}");
        assert!(debug.contains(key.id()));
        assert!(!debug.contains(&STANDARD.encode([0x41u8; 32])));
    }
}
