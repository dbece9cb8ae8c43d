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

    /// Signs a token for `user_id` in `session_id`, valid from `now_ms` (Unix ms) until
    /// `expires_at` (Unix seconds), with the key that signs at `now_ms`.
    pub fn issue(
        &self,
        keys: &KeyRing,
        user_id: &str,
        session_id: &str,
        roles: Vec<String>,
        now_ms: i64,
        expires_at: i64,
    ) -> anyhow::Result<String> {
        let now = now_ms / 1000;
        let set = keys.current();
        let key = set
            .signer(now_ms)
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

#[cfg(test)]
mod tests {
    //! Token parsing is the front door of `ValidateToken`: whatever string a caller
    //! sends must come back as a rejection, never a panic, and only the genuine,
    //! untouched token may verify.

    use super::*;
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
    use proptest::{prelude::*, sample::Index};

    /// Characters a JWT is made of, and so the likeliest to survive a first glance.
    const JWT_ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";

    struct Fixture {
        tokens: AccessTokens,
        keys: KeyRing,
        genuine: String,
        now: i64,
    }

    /// One signing key and one genuine token. jsonwebtoken checks `exp` and `nbf`
    /// against the wall clock, so the token is issued for the real now.
    fn fixture() -> Fixture {
        let now = unix_now_secs();
        let tokens = AccessTokens::new("authd", "authd", 1000);
        let keys = KeyRing::new(Duration::from_secs(900));
        keys.install(&[crate::domain::keys::generate(now * 1000).expect("key")]);
        let genuine = tokens
            .issue(
                &keys,
                "user-1",
                "session-1",
                vec!["admin".to_owned()],
                now * 1000,
                now + 600,
            )
            .expect("issue");
        Fixture {
            tokens,
            keys,
            genuine,
            now,
        }
    }

    impl Fixture {
        fn verify(&self, token: &str) -> Result<Arc<VerifiedToken>, Rejection> {
            self.tokens.verify(&self.keys, token, self.now)
        }

        fn segments(&self) -> Vec<&str> {
            self.genuine.split('.').collect()
        }
    }

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn the_untouched_genuine_token_verifies() {
        let f = fixture();
        let verified = f.verify(&f.genuine).expect("genuine token verifies");
        assert_eq!(verified.user_id, "user-1");
        assert_eq!(verified.session_id, "session-1");
        // Twice: the second answer comes from the cache.
        assert!(f.verify(&f.genuine).is_ok());
    }

    #[test]
    fn an_oversized_token_is_refused_before_parsing() {
        let f = fixture();
        let padded = format!("{}{}", f.genuine, "A".repeat(MAX_TOKEN_BYTES));
        assert_eq!(f.verify(&padded).err(), Some(Rejection::Invalid));
    }

    /// Exhaustive where the property test samples: base64url's last character of a
    /// segment carries spare bits, so this is where a lenient decoder would let a
    /// changed token through.
    #[test]
    fn every_one_character_change_of_a_genuine_token_is_refused() {
        let f = fixture();
        for (i, original) in f.genuine.char_indices() {
            for replacement in JWT_ALPHABET.chars().filter(|&c| c != original) {
                let mut token = f.genuine.clone();
                token.replace_range(i..i + 1, replacement.encode_utf8(&mut [0; 4]));
                assert!(
                    f.verify(&token).is_err(),
                    "verified with {replacement:?} at {i}"
                );
            }
        }
    }

    proptest! {
        #[test]
        fn any_string_is_refused(token in any::<String>()) {
            let f = fixture();
            prop_assert!(f.verify(&token).is_err());
        }

        #[test]
        fn any_bytes_read_as_text_are_refused(bytes in any::<Vec<u8>>()) {
            let f = fixture();
            prop_assert!(f.verify(&String::from_utf8_lossy(&bytes)).is_err());
        }

        #[test]
        fn jwt_shaped_garbage_is_refused(
            segments in prop::collection::vec("[A-Za-z0-9_-]{0,96}", 1..5),
        ) {
            let f = fixture();
            prop_assert!(f.verify(&segments.join(".")).is_err());
        }

        #[test]
        fn encoded_garbage_in_three_segments_is_refused(
            header in any::<Vec<u8>>(),
            claims in any::<Vec<u8>>(),
            signature in prop::collection::vec(any::<u8>(), 0..80),
        ) {
            let f = fixture();
            let token = format!("{}.{}.{}", b64(&header), b64(&claims), b64(&signature));
            prop_assert!(f.verify(&token).is_err());
        }

        /// The real header (known kid, right alg and typ) gets past the header checks,
        /// so the garbage reaches the signature check (jsonwebtoken parses the claims
        /// only after the signature holds).
        #[test]
        fn forged_claims_under_the_real_header_are_refused(
            claims in any::<Vec<u8>>(),
            signature in prop::collection::vec(any::<u8>(), 64),
        ) {
            let f = fixture();
            let header = f.segments()[0].to_owned();
            let token = format!("{header}.{}.{}", b64(&claims), b64(&signature));
            prop_assert!(f.verify(&token).is_err());
        }

        #[test]
        fn a_genuine_token_with_another_signature_is_refused(
            signature in prop::collection::vec(any::<u8>(), 64),
        ) {
            let f = fixture();
            let s = f.segments();
            let token = format!("{}.{}.{}", s[0], s[1], b64(&signature));
            prop_assert!(f.verify(&token).is_err());
        }

        #[test]
        fn a_genuine_token_with_one_character_changed_is_refused(
            at in any::<Index>(),
            pick in any::<Index>(),
        ) {
            let f = fixture();
            let mut chars: Vec<char> = f.genuine.chars().collect();
            let alphabet: Vec<char> = JWT_ALPHABET.chars().collect();
            let i = at.index(chars.len());
            let j = pick.index(alphabet.len());
            // Never "change" a character into itself.
            let replacement = if alphabet[j] == chars[i] { alphabet[(j + 1) % alphabet.len()] } else { alphabet[j] };
            chars[i] = replacement;
            let token: String = chars.into_iter().collect();
            prop_assert!(f.verify(&token).is_err(), "verified with {:?} at {}", replacement, i);
        }

        #[test]
        fn a_genuine_token_with_any_character_changed_is_refused(
            at in any::<Index>(),
            replacement in any::<char>(),
        ) {
            let f = fixture();
            let mut chars: Vec<char> = f.genuine.chars().collect();
            let i = at.index(chars.len());
            prop_assume!(chars[i] != replacement);
            chars[i] = replacement;
            let token: String = chars.into_iter().collect();
            prop_assert!(f.verify(&token).is_err());
        }

        #[test]
        fn a_truncated_genuine_token_is_refused(keep in any::<Index>()) {
            let f = fixture();
            // The token is ASCII, so any byte length is a char boundary.
            let token = &f.genuine[..keep.index(f.genuine.len())];
            prop_assert!(f.verify(token).is_err());
        }

        #[test]
        fn a_genuine_token_with_extra_text_is_refused(extra in "[A-Za-z0-9_.=-]{1,16}") {
            let f = fixture();
            let appended = format!("{}{}", f.genuine, extra);
            let prepended = format!("{}{}", extra, f.genuine);
            prop_assert!(f.verify(&appended).is_err());
            prop_assert!(f.verify(&prepended).is_err());
        }

        /// Segments reordered, repeated or dropped: every arrangement but the original.
        #[test]
        fn a_genuine_token_with_its_segments_rearranged_is_refused(
            order in prop::collection::vec(0usize..3, 1..5),
        ) {
            prop_assume!(order != [0, 1, 2]);
            let f = fixture();
            let s = f.segments();
            let token = order.iter().map(|&k| s[k]).collect::<Vec<_>>().join(".");
            prop_assert!(f.verify(&token).is_err(), "verified with order {:?}", order);
        }
    }
}
