//! Access tokens: EdDSA JWTs with `typ` `at+jwt`, and a bounded cache of verified
//! tokens keyed by the SHA-256 of the token string, so that a token a service sends
//! on every request is verified once, not on every call.
//!
//! The cache says only "this string is a genuine, unexpired token with these
//! claims"; revocation and roles are checked after it on every call (see
//! `validate.rs`), so a cached entry cannot outlive a logout or a role change.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::keys::KeyRing;

/// Anything longer is refused before parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
const TOKEN_TYPE: &str = "at+jwt";

#[derive(Debug, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    pub sid: String,
    /// The roles at issue time, for services that verify locally. authd itself
    /// answers with the roles of now.
    pub roles: Vec<String>,
}

/// What a verified token says, as kept in the cache.
#[derive(Debug)]
pub struct VerifiedToken {
    pub user_id: String,
    pub session_id: String,
    pub expires_at: i64,
    pub issued_at: i64,
}

/// Why a token did not verify.
#[derive(Debug, PartialEq, Eq)]
pub enum Rejection {
    Invalid,
    /// Signed with a key this replica does not know (yet).
    UnknownKey,
}

pub struct AccessTokens {
    issuer: String,
    audience: String,
    validation: Validation,
    cache: moka::sync::Cache<[u8; 32], Arc<VerifiedToken>>,
}

/// Cache entries live until the token expires (plus the one-second leeway).
struct UntilTokenExpiry;

impl moka::Expiry<[u8; 32], Arc<VerifiedToken>> for UntilTokenExpiry {
    fn expire_after_create(
        &self,
        _: &[u8; 32],
        token: &Arc<VerifiedToken>,
        _: Instant,
    ) -> Option<Duration> {
        let left = token.expires_at + 1 - unix_now_secs();
        Some(Duration::from_secs(left.max(0) as u64))
    }
}

pub fn unix_now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

impl AccessTokens {
    pub fn new(issuer: &str, audience: &str, cache_capacity: u64) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iat", "nbf", "iss", "aud", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // "Expiry is enforced to the second": exp itself is the last valid second.
        validation.leeway = 1;
        AccessTokens {
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            validation,
            cache: moka::sync::Cache::builder()
                .max_capacity(cache_capacity)
                .expire_after(UntilTokenExpiry)
                .build(),
        }
    }

    /// Verified tokens held in the cache.
    pub fn cached(&self) -> u64 {
        self.cache.entry_count()
    }

    /// Signs a token for `user_id` in `session_id`, valid from `now` until `expires_at`
    /// (Unix seconds).
    pub fn issue(
        &self,
        keys: &KeyRing,
        user_id: &str,
        session_id: &str,
        roles: Vec<String>,
        now: i64,
        expires_at: i64,
    ) -> anyhow::Result<String> {
        let set = keys.current();
        let key = set
            .active
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no active signing key"))?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(TOKEN_TYPE.to_owned());
        header.kid = Some(key.kid.clone());
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: user_id.to_owned(),
            exp: expires_at,
            iat: now,
            nbf: now,
            jti: uuid::Uuid::new_v4().to_string(),
            sid: session_id.to_owned(),
            roles,
        };
        Ok(jsonwebtoken::encode(&header, &claims, &key.encoding)?)
    }

    /// Verifies signature, algorithm, `typ`, issuer, audience, expiry and not-before,
    /// from the cache when this exact string was verified before.
    pub fn verify(
        &self,
        keys: &KeyRing,
        token: &str,
        now: i64,
    ) -> Result<Arc<VerifiedToken>, Rejection> {
        if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
            return Err(Rejection::Invalid);
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(hit) = self.cache.get(&digest) {
            // The cache may keep an entry up to a second past expiry; re-check.
            return if hit.expires_at + 1 >= now {
                Ok(hit)
            } else {
                Err(Rejection::Invalid)
            };
        }
        let verified = Arc::new(self.verify_signature(keys, token)?);
        self.cache.insert(digest, verified.clone());
        Ok(verified)
    }

    fn verify_signature(&self, keys: &KeyRing, token: &str) -> Result<VerifiedToken, Rejection> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Rejection::Invalid)?;
        if header.alg != Algorithm::EdDSA || header.typ.as_deref() != Some(TOKEN_TYPE) {
            return Err(Rejection::Invalid);
        }
        let kid = header.kid.ok_or(Rejection::Invalid)?;
        let set = keys.current();
        let key = set.verifying.get(&kid).ok_or(Rejection::UnknownKey)?;
        let data = jsonwebtoken::decode::<AccessClaims>(token, key, &self.validation)
            .map_err(|_| Rejection::Invalid)?;
        let claims = data.claims;
        Ok(VerifiedToken {
            user_id: claims.sub,
            session_id: claims.sid,
            expires_at: claims.exp,
            issued_at: claims.iat,
        })
    }
}
