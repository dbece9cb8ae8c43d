//! Arbitrary bytes, read as UTF-8 (lossily, as a gRPC string would arrive), given to
//! the token verifier the way `ValidateToken` gives it a caller's token. It must
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

use std::sync::LazyLock;

use authd::{
    clock::Clock,
    domain::{
        hot::{fuzzing::TokenVerifier, SIGNING_ALGORITHM},
        signing_keys,
    },
    store::entities::signing_key,
};
use libfuzzer_sys::fuzz_target;

/// Ed25519 public key (JWK `x`) of the seed token's signer.
const SEED_KEY_X: &str = "HWUngOqELXcXJvR0A3oxzjgduZx1m4vj-c05_hED0RY";

static VERIFIER: LazyLock<TokenVerifier> = LazyLock::new(|| {
    let seed_key = signing_key::Model {
        kid: "fuzz-key".to_owned(),
        algorithm: SIGNING_ALGORITHM.to_owned(),
        private_key: String::new(),
        public_key: SEED_KEY_X.to_owned(),
        created_at: 0,
        active_from: None,
        // Retired: it only verifies, so the empty private key is never read.
        retired_at: Some(0),
        revoked_at: None,
    };
    let fresh = signing_keys::generate(Clock::system().now_ms()).expect("generate a signing key");
    TokenVerifier::new(&[seed_key, fresh])
});

fuzz_target!(|data: &[u8]| {
    let token = String::from_utf8_lossy(data);
    if let Some(first) = VERIFIER.verify(&token) {
        let again = VERIFIER
            .verify(&token)
            .expect("a token that verified once verifies again");
        assert_eq!(first, again);
    }
});
