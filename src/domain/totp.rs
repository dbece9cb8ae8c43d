//! The second factor's arithmetic: RFC 6238 codes (SHA-1, 6 digits, 30-second
//! steps) from `totp-rs`, accepted one step either side of now and compared in
//! constant time; the secret (160 bits from the OS) and its `otpauth://` URI; and
//! the single-use recovery codes (80 bits each, stored only as hashes); and the
//! secret at rest: sealed with the key-encryption key (the user id as associated
//! data) when one is set, sealed at start when found in the clear, rewrapped by
//! `authd keys rewrap`. Which step a user last spent, and which codes are left, is
//! the store's (`mfa.rs`).

use argon2::password_hash::rand_core::{OsRng, RngCore};
use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, TOTP};
use zeroize::Zeroizing;

use super::{
    error::{DomainError, DomainResult},
    sealing::{self, KeyEncryptionKey},
};
use crate::store::Store;

pub const STEP_SECONDS: i64 = 30;
const DIGITS: usize = 6;
const SECRET_BYTES: usize = 20;
pub const RECOVERY_CODES: usize = 10;
/// Base32 characters in a recovery code (5 bits each: 80 bits).
const RECOVERY_CHARS: usize = 16;

/// A TOTP secret; never logged, zeroed when dropped.
pub struct TotpSecret(Zeroizing<Vec<u8>>);

impl TotpSecret {
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new(vec![0u8; SECRET_BYTES]);
        OsRng.fill_bytes(&mut bytes);
        TotpSecret(bytes)
    }

    pub fn from_bytes(bytes: Zeroizing<Vec<u8>>) -> Self {
        TotpSecret(bytes)
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    fn totp(&self, issuer: Option<String>, account: String) -> DomainResult<TOTP> {
        TOTP::new(
            Algorithm::SHA1,
            DIGITS,
            0,
            STEP_SECONDS as u64,
            self.0.to_vec(),
            issuer,
            account,
        )
        .map_err(DomainError::internal)
    }

    /// The secret as authenticator apps type it in.
    pub fn base32(&self) -> DomainResult<String> {
        Ok(self.totp(None, String::new())?.get_secret_base32())
    }

    /// `otpauth://totp/ISSUER:USERNAME?secret=…&issuer=ISSUER`. A `:` cannot be part
    /// of either name in the URI, so it is dropped from them.
    pub fn otpauth_uri(&self, issuer: &str, username: &str) -> DomainResult<String> {
        let issuer = issuer.replace(':', "");
        let username = username.replace(':', "");
        Ok(self.totp(Some(issuer), username)?.get_url())
    }

    /// The time step (now's or one either side) at which `code` is valid.
    pub fn matching_step(&self, code: &str, now_ms: i64) -> DomainResult<Option<i64>> {
        let totp = self.totp(None, String::new())?;
        let now_step = now_ms.div_euclid(1000) / STEP_SECONDS;
        let mut found = None;
        // Every candidate is computed and compared, so the time taken does not say
        // which one matched.
        for step in [now_step - 1, now_step, now_step + 1] {
            let Ok(at) = u64::try_from(step * STEP_SECONDS) else {
                continue;
            };
            let expected = totp.generate(at);
            if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) {
                found = Some(step);
            }
        }
        Ok(found)
    }
}

/// What a user typed as a code.
pub enum Code {
    /// Six digits.
    Totp(String),
    /// A recovery code, normalised (lower case, no separators).
    Recovery(Zeroizing<String>),
    /// Neither: always wrong.
    Malformed,
}

impl Code {
    /// Reads a code; `INVALID_ARGUMENT` naming `code` only when it is empty.
    pub fn parse(text: &str) -> DomainResult<Code> {
        let text = text.trim();
        if text.is_empty() {
            return Err(DomainError::invalid("code", "must not be empty"));
        }
        if text.len() == DIGITS && text.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(Code::Totp(text.to_owned()));
        }
        let normalised: String = text
            .chars()
            .filter(|c| *c != '-' && *c != ' ')
            .map(|c| c.to_ascii_lowercase())
            .collect();
        if normalised.len() == RECOVERY_CHARS
            && normalised
                .bytes()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
        {
            return Ok(Code::Recovery(Zeroizing::new(normalised)));
        }
        Ok(Code::Malformed)
    }
}

/// Fresh recovery codes as shown once to the user (`abcd-efgh-ijkl-mnop`); each is
/// stored by the hash of [`Code::parse`]'s normal form, which drops the dashes.
pub fn recovery_codes() -> Vec<Zeroizing<String>> {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    (0..RECOVERY_CODES)
        .map(|_| {
            let mut random = Zeroizing::new([0u8; RECOVERY_CHARS]);
            OsRng.fill_bytes(random.as_mut());
            let mut code = Zeroizing::new(String::with_capacity(RECOVERY_CHARS + 3));
            for (i, byte) in random.iter().enumerate() {
                if i > 0 && i % 4 == 0 {
                    code.push('-');
                }
                code.push(ALPHABET[usize::from(byte & 31)] as char);
            }
            code
        })
        .collect()
}

/// The secret as stored: sealed with the user id as associated data when a key
/// is set, else its base32.
pub fn seal(
    kek: Option<&KeyEncryptionKey>,
    user_id: &str,
    secret: &TotpSecret,
) -> DomainResult<String> {
    match kek {
        Some(kek) => Ok(kek.seal(user_id.as_bytes(), secret.bytes())),
        None => secret.base32(),
    }
}

pub fn open(
    kek: Option<&KeyEncryptionKey>,
    user_id: &str,
    stored: &str,
) -> DomainResult<TotpSecret> {
    if sealing::is_sealed(stored) {
        let kek = kek.ok_or_else(|| {
            DomainError::internal(anyhow::anyhow!(
                "a TOTP secret is sealed but AUTHD_KEY_ENCRYPTION_KEY is not set"
            ))
        })?;
        let bytes = kek
            .open(user_id.as_bytes(), stored)
            .map_err(|e| DomainError::internal(anyhow::anyhow!("opening a TOTP secret: {e:?}")))?;
        return Ok(TotpSecret::from_bytes(bytes));
    }
    let bytes = totp_rs::Secret::Encoded(stored.to_owned())
        .to_bytes()
        .map_err(|_| {
            DomainError::internal(anyhow::anyhow!("a stored TOTP secret is not base32"))
        })?;
    Ok(TotpSecret::from_bytes(Zeroizing::new(bytes)))
}

/// At start: seals the TOTP secrets stored in the clear when a key is set, and
/// checks that every sealed one opens with it (a wrong or missing key stops
/// start-up, naming the setting).
pub async fn seal_at_rest(store: &Store, kek: Option<&KeyEncryptionKey>) -> anyhow::Result<()> {
    let sealed = store
        .rewrite_totp_secrets(|user_id, stored| {
            let secret = open(kek, user_id, stored)?;
            match kek {
                Some(kek) if !sealing::is_sealed(stored) => {
                    Ok::<_, DomainError>(Some(seal(Some(kek), user_id, &secret)?))
                }
                _ => Ok(None),
            }
        })
        .await?
        .map_err(|e| {
            anyhow::anyhow!("AUTHD_KEY_ENCRYPTION_KEY: a stored TOTP secret does not open: {e:#}")
        })?;
    if sealed > 0 {
        tracing::info!(
            secrets = sealed,
            "sealed TOTP secrets that were stored in the clear"
        );
    }
    Ok(())
}

/// `authd keys rewrap`: every TOTP secret sealed under `new`; answers how many
/// changed (those under `new` already are left).
pub async fn rewrap(
    store: &Store,
    current: Option<&KeyEncryptionKey>,
    new: &KeyEncryptionKey,
) -> anyhow::Result<u64> {
    store
        .rewrite_totp_secrets(|user_id, stored| {
            if sealing::sealed_with(stored) == Some(new.id()) {
                open(Some(new), user_id, stored)?;
                return Ok(None);
            }
            let secret = open(current, user_id, stored)?;
            Ok::<_, DomainError>(Some(seal(Some(new), user_id, &secret)?))
        })
        .await?
        .map_err(|e| {
            anyhow::anyhow!("a stored TOTP secret does not open with the current key: {e:#}")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1, with its 20-byte ASCII secret.
    #[test]
    fn the_rfc_6238_test_vectors_match() {
        let secret = TotpSecret::from_bytes(Zeroizing::new(b"12345678901234567890".to_vec()));
        for (seconds, code) in [
            (59_i64, "287082"),
            (1_111_111_109, "081804"),
            (1_111_111_111, "050471"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
        ] {
            let step = seconds / STEP_SECONDS;
            assert_eq!(
                secret.matching_step(code, seconds * 1000).expect("totp"),
                Some(step)
            );
            // One step either side is accepted, two are not.
            assert_eq!(
                secret
                    .matching_step(code, (seconds + 30) * 1000)
                    .expect("totp"),
                Some(step)
            );
            assert_eq!(
                secret
                    .matching_step(code, (seconds + 90) * 1000)
                    .expect("totp"),
                None
            );
        }
    }

    #[test]
    fn codes_parse_into_kinds() {
        assert!(matches!(Code::parse("123456"), Ok(Code::Totp(_))));
        assert!(matches!(
            Code::parse("abcd-efgh-ijkl-mnop"),
            Ok(Code::Recovery(_))
        ));
        assert!(matches!(
            Code::parse("ABCD EFGH IJKL MNOP"),
            Ok(Code::Recovery(_))
        ));
        assert!(matches!(Code::parse("12345"), Ok(Code::Malformed)));
        assert!(matches!(
            Code::parse("abcd-efgh-ijkl-mno1"),
            Ok(Code::Malformed)
        ));
        assert!(Code::parse("  ").is_err());
    }

    #[test]
    fn recovery_codes_are_distinct_and_parse() {
        let codes = recovery_codes();
        assert_eq!(codes.len(), RECOVERY_CODES);
        let mut seen: Vec<&str> = codes.iter().map(|c| c.as_str()).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), RECOVERY_CODES);
        for code in &codes {
            assert_eq!(code.len(), 19, "{}", code.as_str());
            assert!(matches!(Code::parse(code), Ok(Code::Recovery(_))));
        }
    }

    #[test]
    fn the_uri_names_issuer_and_user() {
        let secret = TotpSecret::generate();
        let uri = secret.otpauth_uri("authd", "alice").expect("uri");
        let base32 = secret.base32().expect("base32");
        assert!(uri.starts_with("otpauth://totp/authd:alice?"), "{uri}");
        assert!(uri.contains(&format!("secret={base32}")), "{uri}");
        assert!(uri.contains("issuer=authd"), "{uri}");
        assert_eq!(base32.len(), 32);
    }
}
