//! Arbitrary bytes, read as UTF-8 (lossily, as a gRPC string would arrive), given to
//! `AccessTokens::verify` the way `ValidateToken` gives it a caller's token. It must
//! answer, never panic; and a string that verifies once verifies again (from the
//! cache) as the same token.
//!
//! Two keys are installed: a freshly generated one, as the server has, and a fixed
//! public key whose (never committed) private half signed the genuine token in
//! `fuzz/seeds/token_parsing/`. Mutations of that token carry a `kid` this ring
//! knows, so they reach the signature check rather than stopping at the key lookup
//! (jsonwebtoken parses the claims only after the signature holds, so only the
//! genuine seed itself gets that far).
#![no_main]

use std::{sync::LazyLock, time::Duration};

use authd::{
    domain::{
        keys::{self, KeyRing},
        tokens::{unix_now_secs, AccessTokens},
    },
    store::entities::signing_key,
};
use libfuzzer_sys::fuzz_target;

/// Ed25519 public key (JWK `x`) of the seed token's signer.
const SEED_KEY_X: &str = "HWUngOqELXcXJvR0A3oxzjgduZx1m4vj-c05_hED0RY";

struct Verifier {
    tokens: AccessTokens,
    keys: KeyRing,
}

static VERIFIER: LazyLock<Verifier> = LazyLock::new(|| {
    let now_ms = unix_now_secs() * 1000;
    let seed_key = signing_key::Model {
        kid: "fuzz-key".to_owned(),
        algorithm: keys::ALGORITHM.to_owned(),
        private_key: String::new(),
        public_key: SEED_KEY_X.to_owned(),
        created_at: 0,
        // Retired: it only verifies, so the empty private key is never read.
        retired_at: Some(0),
    };
    let fresh = keys::generate(now_ms).expect("generate a signing key");
    let ring = KeyRing::new(Duration::from_secs(900));
    ring.install(&[seed_key, fresh]);
    Verifier {
        tokens: AccessTokens::new("authd", "authd", 1000),
        keys: ring,
    }
});

fuzz_target!(|data: &[u8]| {
    let token = String::from_utf8_lossy(data);
    let v = &*VERIFIER;
    let now = unix_now_secs();
    if let Ok(first) = v.tokens.verify(&v.keys, &token, now) {
        let again = v
            .tokens
            .verify(&v.keys, &token, now)
            .expect("a token that verified once verifies again");
        assert_eq!(first.user_id, again.user_id);
        assert_eq!(first.session_id, again.session_id);
        assert_eq!(first.expires_at, again.expires_at);
    }
});
