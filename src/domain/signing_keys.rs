//! Managing signing keys (the slow path): creating the first key, rotating to a new
//! one. The hot path's key ring reads the published keys; it never writes them.

use std::time::Duration;

use base64::{
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
    Engine,
};
use ring::{
    rand::SystemRandom,
    signature::{Ed25519KeyPair, KeyPair},
};

use super::{hot::SIGNING_ALGORITHM, secrets::digest};
use crate::store::{entities::signing_key, KeyRevocation, Store};

/// Creates the first signing key unless another replica already has, and erases
/// the private half of keys that no longer sign.
pub async fn ensure_active(store: &Store, now_ms: i64) -> anyhow::Result<()> {
    if store.insert_first_key(generate(now_ms)?).await? {
        tracing::info!("created the first signing key");
    }
    store.erase_retired_private_keys(now_ms).await?;
    Ok(())
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
pub async fn rotate(store: &Store, now_ms: i64, activate_in: Duration) -> anyhow::Result<String> {
    let mut key = generate(now_ms)?;
    key.active_from = Some(now_ms.saturating_add(activate_in.as_millis() as i64));
    let kid = key.kid.clone();
    store.rotate_key(key).await?;
    Ok(kid)
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
