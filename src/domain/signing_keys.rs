//! Managing signing keys (the slow path): creating the first key, rotating to a new
//! one, and keeping their private halves sealed at rest under the key encryption key
//! (`AUTHD_KEY_ENCRYPTION_KEY`) when one is set. The hot path's key ring reads the
//! published keys (opening their private halves with [`open_private_key`]); it never
//! writes them.
//!
//! A private half is stored as base64 of its PKCS#8 document without a key
//! encryption key, and sealed ([`crate::domain::sealing`], the kid as associated
//! data) with one. An erased half (a retired or revoked key) is empty either way.

use std::time::Duration;

use base64::{
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
    Engine,
};
use ring::{
    rand::SystemRandom,
    signature::{Ed25519KeyPair, KeyPair},
};

use zeroize::Zeroizing;

use super::{
    sealing::{self, KeyEncryptionKey},
    secrets::digest,
};
use crate::store::{entities::signing_key, KeyRevocation, Store};

/// The one signing algorithm: EdDSA over Ed25519 (`alg` in token headers and JWKs).
pub const SIGNING_ALGORITHM: &str = "EdDSA";

/// The setting that names the key encryption key, as errors name it.
const SETTING: &str = "AUTHD_KEY_ENCRYPTION_KEY";

/// Brings the private keys at rest in line with `kek` (see [`seal_at_rest`]),
/// creates the first signing key unless another replica already has, and erases
/// the private half of keys that no longer sign.
pub async fn ensure_active(
    store: &Store,
    kek: Option<&KeyEncryptionKey>,
    now_ms: i64,
) -> anyhow::Result<()> {
    seal_at_rest(store, kek).await?;
    if store.insert_first_key(generate_for(kek, now_ms)?).await? {
        tracing::info!("created the first signing key");
    }
    store.erase_retired_private_keys(now_ms).await?;
    Ok(())
}

/// At start: with a key encryption key, seals the private keys still in the clear
/// (all in one transaction) and checks that every sealed one opens with it; without
/// one, refuses a database that holds sealed keys. Either failure is one line
/// naming the setting, and nothing is written.
pub async fn seal_at_rest(store: &Store, kek: Option<&KeyEncryptionKey>) -> anyhow::Result<()> {
    let sealed = store
        .rewrite_private_keys(|kid, stored| {
            open_private_key(kek, kid, stored)?;
            Ok::<_, PrivateKeyError>(match kek {
                Some(kek) if !sealing::is_sealed(stored) => Some(reseal(kek, kid, stored)?),
                _ => None,
            })
        })
        .await??;
    if sealed > 0 {
        tracing::info!(
            keys = sealed,
            "sealed private signing keys that were stored in the clear"
        );
    }
    Ok(())
}

/// `authd keys rewrap`: seals every private key under `new` instead of `current`
/// (or instead of the clear, without one), in one transaction; answers how many
/// it rewrote. Keys sealed under `new` already are left as they are, so a rewrap
/// run twice does no harm.
pub async fn rewrap(
    store: &Store,
    current: Option<&KeyEncryptionKey>,
    new: &KeyEncryptionKey,
) -> anyhow::Result<u64> {
    let rewrapped = store
        .rewrite_private_keys(|kid, stored| {
            if sealing::sealed_with(stored) == Some(new.id()) {
                open_private_key(Some(new), kid, stored)?;
                return Ok(None);
            }
            let pkcs8 = open_private_key(current, kid, stored)?;
            Ok::<_, PrivateKeyError>(Some(seal_private_key(Some(new), kid, &pkcs8)))
        })
        .await??;
    Ok(rewrapped)
}

/// Withdraws a key that no longer signs: every replica refuses its tokens (cached
/// ones too) within a feed poll, it leaves the JWK Set, and its private half is
/// erased. The key that signs now (or will, after `rotate --activate-in`) cannot be
/// revoked: rotate first.
pub async fn revoke(store: &Store, kid: &str, now_ms: i64) -> anyhow::Result<()> {
    match store.revoke_key(kid, now_ms).await? {
        KeyRevocation::Revoked => Ok(()),
        KeyRevocation::Unknown => Err(anyhow::anyhow!(
            "no signing key {kid:?}, or it was revoked already (the published kids are in the JWK Set: GetJwks)"
        )),
        KeyRevocation::StillSigns => Err(anyhow::anyhow!(
            "signing key {kid:?} signs now (or will); run `authd keys rotate` first, then revoke it"
        )),
    }
}

/// Publishes a new key at once and makes it the signing key after `activate_in`
/// (zero: at once); answers its kid.
pub async fn rotate(
    store: &Store,
    kek: Option<&KeyEncryptionKey>,
    now_ms: i64,
    activate_in: Duration,
) -> anyhow::Result<String> {
    let mut key = generate_for(kek, now_ms)?;
    key.active_from = Some(now_ms.saturating_add(activate_in.as_millis() as i64));
    let kid = key.kid.clone();
    store.rotate_key(key).await?;
    Ok(kid)
}

/// A fresh key pair as a row, its private half as `kek` keeps it at rest.
fn generate_for(kek: Option<&KeyEncryptionKey>, now_ms: i64) -> anyhow::Result<signing_key::Model> {
    let mut key = generate(now_ms)?;
    if let Some(kek) = kek {
        key.private_key = reseal(kek, &key.kid, &key.private_key)?;
    }
    Ok(key)
}

/// A fresh Ed25519 key pair as a row, its private half in the clear; its kid is
/// the RFC 7638 thumbprint.
pub fn generate(now_ms: i64) -> anyhow::Result<signing_key::Model> {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map_err(|_| anyhow::anyhow!("cannot generate an Ed25519 key"))?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .map_err(|_| anyhow::anyhow!("generated Ed25519 key does not parse"))?;
    let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
    Ok(signing_key::Model {
        kid: thumbprint(&x),
        algorithm: SIGNING_ALGORITHM.to_owned(),
        private_key: STANDARD.encode(pkcs8.as_ref()),
        public_key: x,
        created_at: now_ms,
        active_from: None,
        retired_at: None,
        revoked_at: None,
    })
}

/// RFC 7638: SHA-256 over the required members in lexicographic order.
fn thumbprint(x: &str) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(digest(&canonical))
}

/// Why a stored private half cannot be used. Each message is one line that names
/// the setting and never shows a key.
#[derive(Debug, thiserror::Error)]
pub enum PrivateKeyError {
    #[error("{SETTING}: signing key {kid} is stored encrypted, and neither {SETTING} nor {SETTING}_FILE is set")]
    NoKey { kid: String },
    #[error("{SETTING}: signing key {kid} {reason}")]
    Sealed {
        kid: String,
        reason: sealing::OpenError,
    },
    #[error("signing key {kid} has a malformed private key (neither encrypted nor base64)")]
    Malformed { kid: String },
}

/// The private half `pkcs8` of key `kid` as it is kept at rest: sealed under
/// `kek`, or base64 in the clear without one.
pub(crate) fn seal_private_key(kek: Option<&KeyEncryptionKey>, kid: &str, pkcs8: &[u8]) -> String {
    match kek {
        Some(kek) => kek.seal(&associated_data(kid), pkcs8),
        None => STANDARD.encode(pkcs8),
    }
}

/// The PKCS#8 document of key `kid` from its private half at rest (not empty),
/// sealed or in the clear. A key in the clear opens with or without `kek`.
pub(crate) fn open_private_key(
    kek: Option<&KeyEncryptionKey>,
    kid: &str,
    stored: &str,
) -> Result<Zeroizing<Vec<u8>>, PrivateKeyError> {
    if !sealing::is_sealed(stored) {
        return STANDARD.decode(stored).map(Zeroizing::new).map_err(|_| {
            PrivateKeyError::Malformed {
                kid: kid.to_owned(),
            }
        });
    }
    let kek = kek.ok_or_else(|| PrivateKeyError::NoKey {
        kid: kid.to_owned(),
    })?;
    kek.open(&associated_data(kid), stored)
        .map_err(|reason| PrivateKeyError::Sealed {
            kid: kid.to_owned(),
            reason,
        })
}

/// A private half in the clear, sealed under `kek`.
fn reseal(kek: &KeyEncryptionKey, kid: &str, clear: &str) -> Result<String, PrivateKeyError> {
    let pkcs8 = open_private_key(None, kid, clear)?;
    Ok(seal_private_key(Some(kek), kid, &pkcs8))
}

/// What binds a sealed private half to its row: the table and the kid, so that
/// neither another key's row nor another kind of secret can take it.
fn associated_data(kid: &str) -> Vec<u8> {
    format!("signing_keys:{kid}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_key_sealed_for_one_kid_opens_for_it_alone() {
        let kek = KeyEncryptionKey::generate();
        let key = generate_for(Some(&kek), 0).expect("key");
        assert!(key.private_key.starts_with("enc:v1:"));
        let pkcs8 = open_private_key(Some(&kek), &key.kid, &key.private_key).expect("opens");
        assert!(Ed25519KeyPair::from_pkcs8(&pkcs8).is_ok());
        assert!(matches!(
            open_private_key(Some(&kek), "another-kid", &key.private_key),
            Err(PrivateKeyError::Sealed { .. })
        ));
    }

    #[test]
    fn a_sealed_key_without_the_kek_names_the_setting() {
        let kek = KeyEncryptionKey::generate();
        let key = generate_for(Some(&kek), 0).expect("key");
        let err = open_private_key(None, &key.kid, &key.private_key).expect_err("no key");
        assert!(err.to_string().starts_with("AUTHD_KEY_ENCRYPTION_KEY: "));
        let other = KeyEncryptionKey::generate();
        let err = open_private_key(Some(&other), &key.kid, &key.private_key).expect_err("wrong");
        assert!(err.to_string().contains(kek.id()), "{err}");
    }

    #[test]
    fn a_key_in_the_clear_opens_with_or_without_a_kek() {
        let key = generate(0).expect("key");
        let kek = KeyEncryptionKey::generate();
        for kek in [None, Some(&kek)] {
            assert!(open_private_key(kek, &key.kid, &key.private_key).is_ok());
        }
    }
}
