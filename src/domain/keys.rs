//! Signing keys: Ed25519 key pairs kept in the database and held in memory as a
//! [`KeySet`] behind an `ArcSwap`, so signing and verifying never wait on a lock.
//!
//! The newest unretired key signs. Retired keys keep verifying, and stay in the
//! JWKS, until every token they signed has expired (retired_at + access TTL).

use std::{collections::HashMap, sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use base64::{
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
    Engine,
};
use jsonwebtoken::{DecodingKey, EncodingKey};
use ring::{
    rand::SystemRandom,
    signature::{Ed25519KeyPair, KeyPair},
};
use sha2::{Digest, Sha256};

use crate::store::{entities::signing_key, Store, StoreError};

pub const ALGORITHM: &str = "EdDSA";

/// The key that signs new tokens.
pub struct ActiveKey {
    pub kid: String,
    pub encoding: EncodingKey,
}

/// The keys of one moment: immutable, swapped whole.
pub struct KeySet {
    pub active: Option<ActiveKey>,
    pub verifying: HashMap<String, DecodingKey>,
    pub jwks_json: String,
}

pub struct KeyRing {
    current: ArcSwap<KeySet>,
    /// How long after retirement a key stays published.
    access_ttl: Duration,
    /// Serialises reloads so that a burst of unknown `kid`s costs one query.
    reload: tokio::sync::Mutex<std::time::Instant>,
}

impl KeyRing {
    pub fn new(access_ttl: Duration) -> Self {
        KeyRing {
            current: ArcSwap::from_pointee(KeySet {
                active: None,
                verifying: HashMap::new(),
                jwks_json: jwks(&[]),
            }),
            access_ttl,
            reload: tokio::sync::Mutex::new(std::time::Instant::now() - Duration::from_secs(60)),
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

    /// Swaps in the keys of `rows` (oldest first): the newest unretired one signs.
    pub fn install(&self, rows: &[signing_key::Model]) {
        let mut verifying = HashMap::new();
        let mut active = None;
        let mut public = Vec::new();
        for row in rows {
            let Ok(x) = URL_SAFE_NO_PAD.decode(&row.public_key) else {
                tracing::error!(kid = %row.kid, "signing key has a malformed public key; skipped");
                continue;
            };
            verifying.insert(row.kid.clone(), DecodingKey::from_ed_der(&x));
            public.push((row.kid.clone(), row.public_key.clone()));
            if row.retired_at.is_none() {
                // Rows come oldest first, so the newest unretired key wins.
                match STANDARD.decode(&row.private_key) {
                    Ok(der) => {
                        active = Some(ActiveKey {
                            kid: row.kid.clone(),
                            encoding: EncodingKey::from_ed_der(&der),
                        })
                    }
                    Err(_) => {
                        tracing::error!(kid = %row.kid, "signing key has a malformed private key; skipped")
                    }
                }
            }
        }
        self.current.store(Arc::new(KeySet {
            active,
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

    /// Creates the first signing key unless another replica already has.
    pub async fn ensure_active(store: &Store, now_ms: i64) -> anyhow::Result<()> {
        if store.insert_first_key(generate(now_ms)?).await? {
            tracing::info!("created the first signing key");
        }
        Ok(())
    }

    /// Makes a new key the active one; answers its kid.
    pub async fn rotate(store: &Store, now_ms: i64) -> anyhow::Result<String> {
        let key = generate(now_ms)?;
        let kid = key.kid.clone();
        store.rotate_key(key).await?;
        Ok(kid)
    }
}

/// A fresh Ed25519 key pair as a row; its kid is the RFC 7638 thumbprint.
pub fn generate(now_ms: i64) -> anyhow::Result<signing_key::Model> {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map_err(|_| anyhow::anyhow!("cannot generate an Ed25519 key"))?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .map_err(|_| anyhow::anyhow!("generated Ed25519 key does not parse"))?;
    let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
    Ok(signing_key::Model {
        kid: thumbprint(&x),
        algorithm: ALGORITHM.to_owned(),
        private_key: STANDARD.encode(pkcs8.as_ref()),
        public_key: x,
        created_at: now_ms,
        retired_at: None,
    })
}

/// RFC 7638: SHA-256 over the required members in lexicographic order.
fn thumbprint(x: &str) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// An RFC 7517 JWK Set of public keys (no private members).
fn jwks(keys: &[(String, String)]) -> String {
    let keys: Vec<serde_json::Value> = keys
        .iter()
        .map(|(kid, x)| {
            serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "use": "sig", "alg": ALGORITHM})
        })
        .collect();
    serde_json::json!({ "keys": keys }).to_string()
}
