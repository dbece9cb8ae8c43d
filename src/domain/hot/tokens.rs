//! Access tokens: EdDSA JWTs with `typ` `at+jwt`, and a bounded cache of verified
//! tokens keyed by the SHA-256 of the token string, so that a token a service sends
//! on every request is verified once, not on every call.
//!
//! The cache says only "this string is a genuine, unexpired token with these
//! claims"; revocation and roles are checked after it on every call (see
//! [`super::HotPath::validate`]), so a cached entry cannot outlive a logout or a role
//! change.
//!
//! Expiry and not-before are checked here, in milliseconds against the server's
//! [`Clock`], not by jsonwebtoken against the wall clock in whole seconds: a token
//! whose `exp` is E validates until E + 1 s at most.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use super::{keys::KeyRing, views::uuid_key};
use crate::{clock::Clock, domain::secrets::digest};
use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};

/// Anything longer is refused before parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
const TOKEN_TYPE: &str = "at+jwt";
/// The clock leeway on `exp`, `nbf` and `iat`, in milliseconds.
pub const LEEWAY_MS: i64 = 1000;

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
    /// `sub` and `sid` as the views' keys (both are UUIDs in every token we sign).
    pub user_key: u128,
    pub session_key: u128,
    /// The key that signed it: a cached token is refused once its key is withdrawn.
    pub kid: Arc<str>,
    /// Unix seconds, as in the token.
    pub expires_at: i64,
    pub issued_at: i64,
}

impl VerifiedToken {
    /// Still valid at `now_ms`: at most [`LEEWAY_MS`] past `exp`.
    fn unexpired(&self, now_ms: i64) -> bool {
        now_ms
            <= self
                .expires_at
                .saturating_mul(1000)
                .saturating_add(LEEWAY_MS)
    }
}

/// What to sign into a new access token.
#[derive(Debug)]
pub struct AccessGrant<'a> {
    pub user_id: &'a str,
    pub session_id: &'a str,
    pub roles: Vec<String>,
    /// Unix milliseconds: `iat` and `nbf`, and which key signs.
    pub issued_at_ms: i64,
    /// Unix seconds.
    pub expires_at: i64,
}

/// Why a token did not verify.
#[derive(Debug, PartialEq, Eq)]
pub enum Rejection {
    Invalid,
    /// Signed with a key this replica does not know (yet).
    UnknownKey,
}

pub(super) struct AccessTokens {
    issuer: String,
    audience: String,
    validation: Validation,
    cache: moka::sync::Cache<[u8; 32], Arc<VerifiedToken>>,
    /// Verifications answered by the cache, and those that checked a signature
    /// (`authd_token_cache_{hits,misses}_total`): handles registered once, so a
    /// call costs one relaxed atomic add.
    hits: metrics::Counter,
    misses: metrics::Counter,
}

/// Cache entries live until the token expires (plus the leeway), by the server's
/// clock; [`VerifiedToken::unexpired`] is checked on every hit all the same.
struct UntilTokenExpiry(Clock);

impl moka::Expiry<[u8; 32], Arc<VerifiedToken>> for UntilTokenExpiry {
    fn expire_after_create(
        &self,
        _: &[u8; 32],
        token: &Arc<VerifiedToken>,
        _: Instant,
    ) -> Option<Duration> {
        let left_ms = token.expires_at.saturating_mul(1000) + LEEWAY_MS - self.0.now_ms();
        Some(Duration::from_millis(left_ms.max(0) as u64))
    }
}

impl AccessTokens {
    pub fn new(issuer: &str, audience: &str, cache_capacity: u64, clock: Clock) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iat", "nbf", "iss", "aud", "sub"]);
        // Time claims are checked in `check_times`, in milliseconds by our clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        AccessTokens {
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            validation,
            cache: moka::sync::Cache::builder()
                .max_capacity(cache_capacity)
                .expire_after(UntilTokenExpiry(clock))
                .build(),
            hits: metrics::counter!("authd_token_cache_hits_total"),
            misses: metrics::counter!("authd_token_cache_misses_total"),
        }
    }

    /// Verified tokens held in the cache.
    pub fn cached(&self) -> u64 {
        self.cache.entry_count()
    }

    /// Signs `grant`, valid from its issue time until its `expires_at`, with the key
    /// that signs at its issue time.
    pub fn issue(&self, keys: &KeyRing, grant: AccessGrant<'_>) -> anyhow::Result<String> {
        let now_ms = grant.issued_at_ms;
        let now = now_ms.div_euclid(1000);
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
            sub: grant.user_id.to_owned(),
            exp: grant.expires_at,
            iat: now,
            nbf: now,
            jti: uuid::Uuid::new_v4().to_string(),
            sid: grant.session_id.to_owned(),
            roles: grant.roles,
        };
        Ok(jsonwebtoken::encode(&header, &claims, &key.encoding)?)
    }

    /// Verifies signature, algorithm, `typ`, issuer, audience, expiry and not-before,
    /// from the cache when this exact string was verified before.
    pub fn verify(
        &self,
        keys: &KeyRing,
        token: &str,
        now_ms: i64,
    ) -> Result<Arc<VerifiedToken>, Rejection> {
        if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
            return Err(Rejection::Invalid);
        }
        let digest = digest(token);
        if let Some(hit) = self.cache.get(&digest) {
            self.hits.increment(1);
            // The cache may keep an entry a moment past expiry, or past the
            // withdrawal of its key; re-check both.
            return if hit.unexpired(now_ms) && keys.current().verifying.contains_key(&*hit.kid) {
                Ok(hit)
            } else {
                Err(Rejection::Invalid)
            };
        }
        self.misses.increment(1);
        let (verified, nbf) = self.verify_signature(keys, token)?;
        check_times(&verified, nbf, now_ms)?;
        let verified = Arc::new(verified);
        self.cache.insert(digest, verified.clone());
        Ok(verified)
    }

    /// The verified claims and `nbf`.
    fn verify_signature(
        &self,
        keys: &KeyRing,
        token: &str,
    ) -> Result<(VerifiedToken, i64), Rejection> {
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
        let (Some(user_key), Some(session_key)) = (uuid_key(&claims.sub), uuid_key(&claims.sid))
        else {
            return Err(Rejection::Invalid);
        };
        let verified = VerifiedToken {
            user_key,
            session_key,
            kid: Arc::from(kid),
            user_id: claims.sub,
            session_id: claims.sid,
            expires_at: claims.exp,
            issued_at: claims.iat,
        };
        Ok((verified, claims.nbf))
    }
}

/// `exp` at most [`LEEWAY_MS`] ago, `nbf` and `iat` at most that far ahead.
fn check_times(token: &VerifiedToken, nbf: i64, now_ms: i64) -> Result<(), Rejection> {
    let ahead = |secs: i64| secs.saturating_mul(1000) > now_ms.saturating_add(LEEWAY_MS);
    if !token.unexpired(now_ms) || ahead(nbf) || ahead(token.issued_at) {
        return Err(Rejection::Invalid);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Token parsing is the front door of `ValidateToken`: whatever string a caller
    //! sends must come back as a rejection, never a panic, and only the genuine,
    //! untouched token may verify.

    use super::*;
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
    use proptest::{prelude::*, sample::Index};

    const USER: &str = "6f1c2a0e-1b7d-4c3e-9a55-0d2f3e4a5b6c";
    const SESSION: &str = "0e8a7c52-3f1d-4b6a-8d9e-1c2b3a4f5e6d";

    /// Characters a JWT is made of, and so the likeliest to survive a first glance.
    const JWT_ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";

    struct Fixture {
        tokens: AccessTokens,
        keys: KeyRing,
        genuine: String,
        clock: Clock,
    }

    /// One signing key and one genuine token, on a manual clock.
    fn fixture() -> Fixture {
        fixture_expiring_in(600)
    }

    fn fixture_expiring_in(secs: i64) -> Fixture {
        let clock = Clock::manual();
        let tokens = AccessTokens::new("authd", "authd", 1000, clock.clone());
        let keys = KeyRing::new(Duration::from_secs(900));
        keys.install(&[crate::domain::signing_keys::generate(clock.now_ms()).expect("key")]);
        let genuine = tokens
            .issue(
                &keys,
                AccessGrant {
                    user_id: USER,
                    session_id: SESSION,
                    roles: vec!["admin".to_owned()],
                    issued_at_ms: clock.now_ms(),
                    expires_at: clock.now_ms().div_euclid(1000) + secs,
                },
            )
            .expect("issue");
        Fixture {
            tokens,
            keys,
            genuine,
            clock,
        }
    }

    impl Fixture {
        fn verify(&self, token: &str) -> Result<Arc<VerifiedToken>, Rejection> {
            self.tokens.verify(&self.keys, token, self.clock.now_ms())
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
        assert_eq!(verified.user_id, USER);
        assert_eq!(verified.session_id, SESSION);
        // Twice: the second answer comes from the cache.
        assert!(f.verify(&f.genuine).is_ok());
    }

    /// API.md: a token whose `exp` is E validates until E + 1 s at most, compared in
    /// milliseconds, whether or not it was verified (and cached) before.
    #[test]
    fn a_token_validates_until_one_second_past_exp_and_not_a_millisecond_more() {
        for verify_first in [false, true] {
            let f = fixture_expiring_in(5);
            if verify_first {
                assert!(f.verify(&f.genuine).is_ok());
            }
            let exp_ms = token_exp(&f.genuine) * 1000;
            let now = f.clock.now_ms();
            f.clock
                .advance(Duration::from_millis((exp_ms + 1000 - now) as u64));
            assert!(f.verify(&f.genuine).is_ok(), "at exp + 1 s");
            f.clock.advance(Duration::from_millis(1));
            assert_eq!(
                f.verify(&f.genuine).err(),
                Some(Rejection::Invalid),
                "at exp + 1.001 s (cached before: {verify_first})"
            );
        }
    }

    #[test]
    fn a_token_issued_in_the_future_is_refused() {
        let f = fixture();
        let a_year_ahead_ms = f.clock.now_ms() + 365 * 24 * 3600 * 1000;
        let from_the_future = f
            .tokens
            .issue(
                &f.keys,
                AccessGrant {
                    user_id: USER,
                    session_id: SESSION,
                    roles: Vec::new(),
                    issued_at_ms: a_year_ahead_ms,
                    expires_at: a_year_ahead_ms / 1000 + 600,
                },
            )
            .expect("issue");
        assert_eq!(f.verify(&from_the_future).err(), Some(Rejection::Invalid));
    }

    fn token_exp(token: &str) -> i64 {
        let payload = token.split('.').nth(1).expect("payload");
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64"))
                .expect("json");
        claims["exp"].as_i64().expect("exp")
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
