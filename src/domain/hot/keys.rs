//! Signing keys: Ed25519 key pairs kept in the database and held in memory as a
//! [`KeySet`] behind an `ArcSwap`, so signing and verifying never wait on a lock.
//!
//! Each key signs from `signs_from()` until it is retired; at any moment the one
//! that started last signs. A rotation may name a moment ahead: the new key is
//! published at once and takes over then, on every replica by its own clock.
//! Retired keys keep verifying, and stay in the JWKS, until every token they signed
//! has expired (retired_at + access TTL).
//!
//! Private halves may be sealed at rest: the ring opens them with the key
//! encryption key it was given. One that does not open (a replica still on the old
//! key after `keys rewrap`) is logged; the copy in memory, if any, goes on signing.

use std::{collections::HashMap, sync::Arc, time::Duration};

use crate::{
    domain::{
        sealing::KeyEncryptionKey,
        signing_keys::{open_private_key, SIGNING_ALGORITHM},
    },
    store::{entities::signing_key, Store, StoreError},
};
use arc_swap::ArcSwap;
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use jsonwebtoken::{DecodingKey, EncodingKey};

/// A key that signs new tokens from `from_ms` until `until_ms`.
pub struct SigningKey {
    pub kid: String,
    pub encoding: EncodingKey,
    from_ms: i64,
    until_ms: Option<i64>,
}

/// The keys of one moment: immutable, swapped whole.
pub struct KeySet {
    /// Keys that sign now or will, by when they start.
    signers: Vec<SigningKey>,
    pub verifying: HashMap<String, DecodingKey>,
    pub jwks_json: String,
}

impl KeySet {
    /// The key that signs at `now_ms`: of those started and not retired, the one
    /// that started last.
    pub fn signer(&self, now_ms: i64) -> Option<&SigningKey> {
        self.signers
            .iter()
            .rev()
            .find(|k| k.from_ms <= now_ms && k.until_ms.is_none_or(|until| now_ms < until))
    }
}

pub(super) struct KeyRing {
    current: ArcSwap<KeySet>,
    /// How long after retirement a key stays published.
    access_ttl: Duration,
    /// Serialises reloads so that a burst of unknown `kid`s costs one query.
    reload: tokio::sync::Mutex<std::time::Instant>,
    /// Opens private halves sealed at rest.
    kek: Option<KeyEncryptionKey>,
}

impl KeyRing {
    /// A ring for private halves kept in the clear.
    pub fn new(access_ttl: Duration) -> Self {
        Self::with_key_encryption(access_ttl, None)
    }

    /// A ring that opens private halves sealed under `kek`.
    pub fn with_key_encryption(access_ttl: Duration, kek: Option<KeyEncryptionKey>) -> Self {
        KeyRing {
            current: ArcSwap::from_pointee(KeySet {
                signers: Vec::new(),
                verifying: HashMap::new(),
                jwks_json: jwks(&[]),
            }),
            access_ttl,
            reload: tokio::sync::Mutex::new(std::time::Instant::now() - Duration::from_secs(60)),
            kek,
        }
    }

    pub fn current(&self) -> arc_swap::Guard<Arc<KeySet>> {
        self.current.load()
    }

    /// Reads the published keys from the database and swaps them in.
    pub async fn load(&self, store: &Store, now_ms: i64) -> Result<(), StoreError> {
        let since = now_ms - self.access_ttl.as_millis() as i64 - 1000;
        let rows = store.published_keys(since).await?;
        self.install(&rows);
        Ok(())
    }

    /// Swaps in the keys of `rows`: all of them verify; those with a signing
    /// window sign in it.
    pub fn install(&self, rows: &[signing_key::Model]) {
        let previous = self.current.load();
        let mut verifying = HashMap::new();
        let mut signers = Vec::new();
        let mut public = Vec::new();
        for row in rows {
            let Ok(x) = URL_SAFE_NO_PAD.decode(&row.public_key) else {
                tracing::error!(kid = %row.kid, "signing key has a malformed public key; skipped");
                continue;
            };
            verifying.insert(row.kid.clone(), DecodingKey::from_ed_der(&x));
            public.push((row.kid.clone(), row.public_key.clone()));
            let (from_ms, until_ms) = (row.signs_from(), row.retired_at);
            if until_ms.is_some_and(|until| until <= from_ms) || row.private_key.is_empty() {
                continue; // replaced before it ever signed, or its private half is erased
            }
            let encoding = match open_private_key(self.kek.as_ref(), &row.kid, &row.private_key) {
                Ok(der) => EncodingKey::from_ed_der(&der),
                Err(err) => match previous.signers.iter().find(|k| k.kid == row.kid) {
                    Some(known) => {
                        tracing::error!(kid = %row.kid, error = %err, "cannot open a signing key again; signing on with the copy in memory");
                        known.encoding.clone()
                    }
                    None => {
                        tracing::error!(kid = %row.kid, error = %err, "cannot open a signing key; it verifies but does not sign here");
                        continue;
                    }
                },
            };
            signers.push(SigningKey {
                kid: row.kid.clone(),
                encoding,
                from_ms,
                until_ms,
            });
        }
        signers.sort_by_key(|k| k.from_ms);
        self.current.store(Arc::new(KeySet {
            signers,
            verifying,
            jwks_json: jwks(&public),
        }));
    }

    /// Reloads after meeting an unknown `kid` (a replica may have rotated), at most
    /// once a second. Answers whether a reload happened.
    pub async fn reload_for_unknown_kid(
        &self,
        store: &Store,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut last = self.reload.lock().await;
        if last.elapsed() < Duration::from_secs(1) {
            return Ok(false);
        }
        *last = std::time::Instant::now();
        self.load(store, now_ms).await?;
        Ok(true)
    }
}

/// An RFC 7517 JWK Set of public keys (no private members).
fn jwks(keys: &[(String, String)]) -> String {
    let keys: Vec<serde_json::Value> = keys
        .iter()
        .map(|(kid, x)| {
            serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "use": "sig", "alg": SIGNING_ALGORITHM})
        })
        .collect();
    serde_json::json!({ "keys": keys }).to_string()
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::STANDARD;

    use super::*;

    fn key(
        created_at: i64,
        active_from: Option<i64>,
        retired_at: Option<i64>,
    ) -> signing_key::Model {
        signing_key::Model {
            active_from,
            retired_at,
            ..crate::domain::signing_keys::generate(created_at).expect("key")
        }
    }

    fn signer_at(ring: &KeyRing, now_ms: i64) -> Option<String> {
        ring.current().signer(now_ms).map(|k| k.kid.clone())
    }

    #[test]
    fn a_key_rotated_ahead_signs_from_its_moment_and_the_old_one_until_then() {
        let (old, new) = (key(0, None, Some(1_000)), key(10, Some(1_000), None));
        let ring = KeyRing::new(Duration::from_secs(900));
        ring.install(&[old.clone(), new.clone()]);
        assert_eq!(signer_at(&ring, 500), Some(old.kid.clone()));
        assert_eq!(signer_at(&ring, 999), Some(old.kid.clone()));
        assert_eq!(signer_at(&ring, 1_000), Some(new.kid.clone()));
        // Both verify and are published throughout.
        assert_eq!(ring.current().verifying.len(), 2);
        assert!(ring.current().jwks_json.contains(&new.kid));
    }

    #[test]
    fn sealed_private_keys_sign_with_the_right_kek_only() {
        let kek = KeyEncryptionKey::generate();
        let mut sealed = key(0, None, None);
        sealed.private_key = crate::domain::signing_keys::seal_private_key(
            Some(&kek),
            &sealed.kid,
            &STANDARD.decode(&sealed.private_key).expect("base64"),
        );
        let ring = KeyRing::with_key_encryption(Duration::from_secs(900), Some(kek));
        ring.install(std::slice::from_ref(&sealed));
        assert_eq!(signer_at(&ring, 10), Some(sealed.kid.clone()));

        let elsewhere = KeyRing::with_key_encryption(
            Duration::from_secs(900),
            Some(KeyEncryptionKey::generate()),
        );
        elsewhere.install(std::slice::from_ref(&sealed));
        assert_eq!(signer_at(&elsewhere, 10), None);
        assert!(elsewhere.current().verifying.contains_key(&sealed.kid));
    }

    #[test]
    fn a_key_that_no_longer_opens_signs_on_from_memory() {
        let (kek, other) = (KeyEncryptionKey::generate(), KeyEncryptionKey::generate());
        let mut row = key(0, None, None);
        let pkcs8 = STANDARD.decode(&row.private_key).expect("base64");
        let seal = |kek: &KeyEncryptionKey, kid: &str| {
            crate::domain::signing_keys::seal_private_key(Some(kek), kid, &pkcs8)
        };
        row.private_key = seal(&kek, &row.kid);
        let ring = KeyRing::with_key_encryption(Duration::from_secs(900), Some(kek));
        ring.install(std::slice::from_ref(&row));
        // Rewrapped under a key this replica does not have yet.
        row.private_key = seal(&other, &row.kid);
        ring.install(std::slice::from_ref(&row));
        assert_eq!(signer_at(&ring, 10), Some(row.kid));
    }

    #[test]
    fn a_rotation_replaced_before_its_moment_never_signs() {
        // Rotated ahead to 1000, then rotated again at once at 200.
        let old = key(0, None, Some(200));
        let pending = key(10, Some(1_000), Some(200));
        let now = key(200, None, None);
        let ring = KeyRing::new(Duration::from_secs(900));
        ring.install(&[old.clone(), pending.clone(), now.clone()]);
        assert_eq!(signer_at(&ring, 100), Some(old.kid));
        for t in [200, 999, 1_000, 5_000] {
            assert_eq!(signer_at(&ring, t), Some(now.kid.clone()));
        }
        assert!(ring.current().verifying.contains_key(&pending.kid));
    }
}
