//! authd's public signing keys (its JWK Set) and verifying a token against them:
//! EdDSA only, `typ` `at+jwt`, issuer and audience pinned, `exp` and `nbf` checked
//! in milliseconds with authd's 1 s leeway.

use std::{collections::HashMap, sync::Arc};

use jsonwebtoken::{jwk::JwkSet, Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// authd's clock leeway on `exp` and `nbf`, in milliseconds.
pub const LEEWAY_MS: i64 = 1000;
const TOKEN_TYPE: &str = "at+jwt";

/// The verifying keys of one JWK Set, by kid.
#[derive(Default)]
pub struct KeySet {
    keys: HashMap<String, DecodingKey>,
}

impl KeySet {
    /// The Ed25519 keys of a JWK Set (others are ignored: authd signs with EdDSA).
    pub fn parse(json: &str) -> Result<KeySet, String> {
        let set: JwkSet = serde_json::from_str(json).map_err(|e| e.to_string())?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let (Some(kid), Ok(key)) = (jwk.common.key_id.clone(), DecodingKey::from_jwk(jwk))
            else {
                continue;
            };
            keys.insert(kid, key);
        }
        Ok(KeySet { keys })
    }

    pub fn contains(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }
}

/// The claims this crate reads.
#[derive(Debug, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub sid: String,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    #[serde(default)]
    pub roles: Vec<String>,
}

/// A token that verified, with the kid that signed it.
#[derive(Debug)]
pub struct Verified {
    pub kid: Arc<str>,
    pub claims: Claims,
}

/// Why a token did not verify.
#[derive(Debug, PartialEq, Eq)]
pub enum Unverified {
    /// Malformed, badly signed, expired, not yet valid, another issuer or audience.
    Invalid,
    /// Signed by a kid this set does not hold.
    UnknownKid(String),
}

/// Checks signatures, `typ`, issuer and audience; times are checked in
/// milliseconds by [`TokenRules::verify`].
pub struct TokenRules {
    validation: Validation,
}

impl TokenRules {
    pub fn new(issuer: &str, audience: &str) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iat", "nbf", "iss", "aud", "sub"]);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        TokenRules { validation }
    }

    pub fn verify(&self, keys: &KeySet, token: &str, now_ms: i64) -> Result<Verified, Unverified> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Unverified::Invalid)?;
        if header.alg != Algorithm::EdDSA || header.typ.as_deref() != Some(TOKEN_TYPE) {
            return Err(Unverified::Invalid);
        }
        let kid = header.kid.ok_or(Unverified::Invalid)?;
        let Some(key) = keys.keys.get(&kid) else {
            return Err(Unverified::UnknownKid(kid));
        };
        let claims = jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .map_err(|_| Unverified::Invalid)?
            .claims;
        let ahead = |secs: i64| secs.saturating_mul(1000) > now_ms.saturating_add(LEEWAY_MS);
        if expired(claims.exp, now_ms) || ahead(claims.nbf) || ahead(claims.iat) {
            return Err(Unverified::Invalid);
        }
        Ok(Verified {
            kid: Arc::from(kid),
            claims,
        })
    }
}

/// Past `exp` (Unix seconds) by more than the leeway at `now_ms`.
pub fn expired(exp: i64, now_ms: i64) -> bool {
    now_ms > exp.saturating_mul(1000).saturating_add(LEEWAY_MS)
}
