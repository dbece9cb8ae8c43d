//! The token and the provider's keys: every bad token gets one UNAUTHENTICATED
//! message; an unknown provider is INVALID_ARGUMENT; keys are cached as
//! Cache-Control says, fetched again for an unknown kid at most once a minute,
//! rotated; a provider that cannot be reached is UNAVAILABLE unless keys are cached.

use std::time::Duration;

use serde_json::{json, Value};
use tonic::Code;

use super::{entry, world};
use crate::helpers::{
    code,
    oidc_provider::{key, sign, TestProvider, FORGER, KEY_1, KEY_2},
    TestDb,
};

async fn every_bad_token_is_refused_with_one_message(db: TestDb) {
    let w = world(db, true, &[]).await;
    let now = w.clock.now_ms() / 1000;
    let good = w.claims("1007", "gina@example.org", true);
    let with = |changes: Value| {
        let mut claims = good.clone();
        for (k, v) in changes.as_object().expect("object") {
            claims[k] = v.clone();
        }
        claims
    };
    let mut no_audience = good.clone();
    no_audience.as_object_mut().expect("object").remove("aud");
    let alg_none = {
        use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"key-1"}"#);
        format!("{header}.{}.", URL_SAFE_NO_PAD.encode(good.to_string()))
    };
    let hs256 = {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some(key(KEY_1).kid.clone());
        let secret = jsonwebtoken::EncodingKey::from_secret(b"a shared secret");
        jsonwebtoken::encode(&header, &good, &secret).expect("sign")
    };
    let tokens = [
        (
            "wrong audience",
            w.provider.token(&with(json!({"aud": "another-app"}))),
        ),
        ("no audience", w.provider.token(&no_audience)),
        (
            "wrong issuer",
            w.provider
                .token(&with(json!({"iss": "https://evil.example"}))),
        ),
        (
            "expired",
            w.provider
                .token(&with(json!({"exp": now - 2, "iat": now - 300}))),
        ),
        (
            "issued in the future",
            w.provider.token(&with(json!({"iat": now + 120}))),
        ),
        ("bad signature", sign(FORGER, Some(&key(KEY_1).kid), &good)),
        ("unknown kid", sign(FORGER, Some(&key(FORGER).kid), &good)),
        ("alg none", alg_none),
        ("HS256", hs256),
        ("garbage", "not.a.token".to_owned()),
    ];
    let mut messages = Vec::new();
    for (what, token) in &tokens {
        let status = w.sign_in("test", token).await.expect_err(what);
        assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
        messages.push(status.message().to_owned());
    }
    messages.dedup();
    assert_eq!(messages.len(), 1, "one message for all: {messages:?}");
    // A nonce, when the app gives one, must be the token's.
    let with_nonce = w.provider.token(&with(json!({"nonce": "n-1"})));
    let status = w
        .sign_in_with_nonce("test", &with_nonce, "n-2")
        .await
        .expect_err("another sign-in's nonce");
    assert_eq!(status.message(), messages[0]);
    assert_eq!(w.db.count("users").await, 0, "nothing was created");
    w.sign_in_with_nonce("test", &with_nonce, "n-1")
        .await
        .expect("its own nonce");

    // Each is audited with its reason; no row holds a token.
    let events = w.audit("id_token_login").await;
    let failed: Vec<_> = events.iter().filter(|e| e.outcome == "failed").collect();
    assert_eq!(failed.len(), tokens.len() + 1, "{events:?}");
    for reason in [
        "wrong audience",
        "missing claim",
        "wrong issuer",
        "expired",
        "issued in the future",
        "bad signature",
        "unknown kid",
        "malformed",
        "unsupported algorithm",
        "wrong nonce",
    ] {
        assert!(
            failed
                .iter()
                .any(|e| e.detail == format!("provider=test; reason={reason}")),
            "{reason}: {failed:?}"
        );
    }
    for event in &events {
        for (_, token) in &tokens {
            assert!(!event.detail.contains(token.as_str()), "{event:?}");
        }
    }
}

async fn an_unknown_provider_is_invalid_argument_naming_provider(db: TestDb) {
    let w = world(db, true, &[]).await;
    let token = w.provider.token(&w.claims("1012", "lee@example.org", true));
    for provider in ["nope", "", "TEST"] {
        let status = w.sign_in(provider, &token).await.expect_err(provider);
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{provider:?}: {status:?}"
        );
        assert!(status.message().starts_with("provider: "), "{status:?}");
    }
    let status = w.sign_in("test", "").await.expect_err("empty token");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("id_token: "), "{status:?}");
    assert_eq!(w.provider.jwks_requests(), 0, "nothing was fetched");
}

async fn an_unknown_kid_refetches_the_keys_at_most_once_a_minute(db: TestDb) {
    let w = world(db, true, &[]).await;
    w.signed_in(&w.claims("1008", "hal@example.org", true))
        .await;
    assert_eq!(
        (w.provider.discovery_requests(), w.provider.jwks_requests()),
        (1, 1),
        "discovered, then fetched"
    );
    let unknown = || {
        sign(
            FORGER,
            Some("kid-nobody-published"),
            &w.claims("x", "x@example.org", true),
        )
    };
    // Within the minute after a fetch, unknown kids fetch nothing.
    for _ in 0..5 {
        assert_eq!(
            code(w.sign_in("test", &unknown()).await),
            Code::Unauthenticated
        );
    }
    assert_eq!(w.provider.jwks_requests(), 1);
    // After it, one fetch, then none for another minute, however many come.
    w.clock.advance(Duration::from_secs(61));
    for _ in 0..20 {
        assert_eq!(
            code(w.sign_in("test", &unknown()).await),
            Code::Unauthenticated
        );
    }
    assert_eq!(w.provider.jwks_requests(), 2);
    w.clock.advance(Duration::from_secs(61));
    assert_eq!(
        code(w.sign_in("test", &unknown()).await),
        Code::Unauthenticated
    );
    assert_eq!(w.provider.jwks_requests(), 3);
    // Known keys need no fetch meanwhile; discovery was needed once.
    w.signed_in(&w.claims("1008", "hal@example.org", true))
        .await;
    assert_eq!(w.provider.jwks_requests(), 3);
    assert_eq!(w.provider.discovery_requests(), 1);
}

async fn the_providers_key_rotation_is_picked_up(db: TestDb) {
    let w = world(db, true, &[]).await;
    w.provider.cache_control("public, max-age=120");
    let claims = || w.claims("1009", "ivy@example.org", true);
    let account = w.signed_in(&claims()).await.user.expect("user").id;
    // The provider publishes a new key and signs with it.
    w.provider.publish(&[KEY_1, KEY_2]);
    w.clock.advance(Duration::from_secs(61));
    let with_new = sign(KEY_2, Some(&key(KEY_2).kid), &claims());
    let reached = w.sign_in("test", &with_new).await.expect("the new key");
    assert_eq!(reached.user.expect("user").id, account);
    assert_eq!(w.provider.jwks_requests(), 2, "fetched for the new kid");
    // Then retires the old one: once the cached set is past its max-age, tokens
    // of the old key are refused, those of the new one still pass.
    w.provider.publish(&[KEY_2]);
    w.clock.advance(Duration::from_secs(121));
    let with_old = w.provider.token(&claims());
    assert_eq!(
        code(w.sign_in("test", &with_old).await),
        Code::Unauthenticated
    );
    assert_eq!(
        w.provider.jwks_requests(),
        3,
        "refetched: the set had expired"
    );
    let with_new = sign(KEY_2, Some(&key(KEY_2).kid), &claims());
    w.sign_in("test", &with_new).await.expect("the new key");
    assert_eq!(w.provider.jwks_requests(), 3);
}

async fn cache_control_decides_how_long_the_keys_are_kept(db: TestDb) {
    let w = world(db, true, &[]).await;
    w.provider.cache_control("max-age=600");
    let claims = || w.claims("1010", "jo@example.org", true);
    w.signed_in(&claims()).await;
    w.clock.advance(Duration::from_secs(590));
    w.signed_in(&claims()).await;
    assert_eq!(w.provider.jwks_requests(), 1, "fresh for 600 s");
    w.clock.advance(Duration::from_secs(20));
    w.signed_in(&claims()).await;
    assert_eq!(w.provider.jwks_requests(), 2, "stale after 600 s");
}

async fn a_provider_that_cannot_be_reached_is_unavailable(db: TestDb) {
    let down = entry("down", &TestProvider::unreachable_issuer(), true);
    let w = world(db, true, &[down]).await;
    let token = w.provider.token(&w.claims("1011", "kim@example.org", true));
    let status = w.sign_in("down", &token).await.expect_err("unreachable");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("down"),
        "names the provider: {status:?}"
    );
    let events = w.audit("id_token_login").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].outcome, "provider_unavailable");
    assert!(
        events[0].detail.starts_with("provider=down; reason="),
        "{events:?}"
    );

    // A provider that answered once and then goes down: its cached keys still
    // verify, past their freshness.
    w.provider.cache_control("max-age=60");
    w.signed_in(&w.claims("1011", "kim@example.org", true))
        .await;
    w.provider.set_down(true);
    w.clock.advance(Duration::from_secs(61));
    w.signed_in(&w.claims("1011", "kim@example.org", true))
        .await;
    assert_eq!(
        w.provider.jwks_requests(),
        2,
        "the refetch was tried, and failed"
    );
}

on_both_databases!(
    every_bad_token_is_refused_with_one_message,
    an_unknown_provider_is_invalid_argument_naming_provider,
    an_unknown_kid_refetches_the_keys_at_most_once_a_minute,
    the_providers_key_rotation_is_picked_up,
    cache_control_decides_how_long_the_keys_are_kept,
    a_provider_that_cannot_be_reached_is_unavailable,
);
