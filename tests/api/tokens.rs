//! Access tokens: what ValidateToken accepts and refuses, JWKS, restarts and key
//! rotation.

use std::time::Duration;

use base64::{
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
    Engine,
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::json;
use sqlx::Row;
use tonic::Code;

use crate::helpers::{eventually, token_claims, TestApp, TestDb};

/// The active signing key, read straight from the database (what an attacker
/// must never have; the tests use it to forge tokens that differ in one claim).
pub(crate) async fn active_key(db: &TestDb) -> (String, EncodingKey) {
    let row = sqlx::query("SELECT kid, private_key FROM signing_keys WHERE retired_at IS NULL")
        .fetch_one(&mut db.sql().await)
        .await
        .expect("active key");
    let der = STANDARD.decode(row.get::<String, _>(1)).expect("base64");
    (row.get(0), EncodingKey::from_ed_der(&der))
}

pub(crate) fn header(kid: &str) -> Header {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.to_owned());
    header.typ = Some("at+jwt".into());
    header
}

pub(crate) fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token)
        .expect("header")
        .kid
        .expect("kid")
}

fn claims(sub: &str, sid: &str, iss: &str, aud: &str, iat: i64, exp: i64) -> serde_json::Value {
    json!({"iss": iss, "aud": aud, "sub": sub, "sid": sid, "iat": iat, "nbf": iat, "exp": exp,
           "jti": uuid::Uuid::new_v4().to_string(), "roles": ["admin"]})
}

async fn validate_answers_identity_session_and_times(app: TestApp) {
    let user = app.register("alice").await;
    let before = chrono::Utc::now().timestamp();
    let tokens = app.login("alice").await;
    let answer = app.validate(&tokens.access_token).await.expect("valid");
    assert_eq!(answer.user_id, user.id);
    assert_eq!(answer.username, "alice");
    assert_eq!(answer.roles, ["viewer", "user"]);
    assert!(uuid::Uuid::parse_str(&answer.session_id).is_ok());
    let issued = answer.issued_at.expect("issued_at").seconds;
    let expires = answer.expires_at.expect("expires_at").seconds;
    assert!(issued >= before && issued <= before + 2);
    assert_eq!(expires - issued, 15 * 60);

    let check = |role: &'static str| app.check_role(&tokens.access_token, role);
    let allowed = check("viewer").await.expect("check");
    assert!(allowed.allowed);
    assert_eq!(allowed.user_id, user.id);
    assert!(!check("editor").await.expect("check").allowed);
    assert_eq!(
        check("superuser").await.expect_err("unknown role").code(),
        Code::NotFound
    );
    assert_eq!(
        check("").await.expect_err("empty role").code(),
        Code::InvalidArgument
    );
    assert_eq!(
        app.check_role("garbage", "viewer")
            .await
            .expect_err("bad token")
            .code(),
        Code::Unauthenticated
    );
}

async fn forged_tampered_and_foreign_tokens_are_unauthenticated(app: TestApp) {
    let user = app.register("alice").await;
    let tokens = app.login("alice").await;
    let sid = app
        .validate(&tokens.access_token)
        .await
        .expect("valid")
        .session_id;
    let (kid, key) = active_key(&app.db).await;
    let now = chrono::Utc::now().timestamp();
    let sign = |header: &Header, claims: &serde_json::Value, key: &EncodingKey| {
        jsonwebtoken::encode(header, claims, key).expect("sign")
    };
    let good = claims(&user.id, &sid, "authd", "authd", now, now + 600);
    // Our own key signs this one correctly: the baseline must validate.
    assert!(app
        .validate(&sign(&header(&kid), &good, &key))
        .await
        .is_ok());

    let parts: Vec<&str> = tokens.access_token.split('.').collect();
    let mut promoted = token_claims(&tokens.access_token);
    promoted["sub"] = json!(uuid::Uuid::new_v4().to_string());
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(promoted.to_string()),
        parts[2]
    );
    let alg_none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "at+jwt", "kid": kid}).to_string()),
        parts[1]
    );
    let public_x = {
        let jwks: serde_json::Value = serde_json::from_str(&app.jwks().await).expect("json");
        jwks["keys"][0]["x"].as_str().expect("x").to_owned()
    };
    let mut hs_header = header(&kid);
    hs_header.alg = Algorithm::HS256;
    let hs256_with_public_key = sign(
        &hs_header,
        &good,
        &EncodingKey::from_secret(public_x.as_bytes()),
    );
    let other_pkcs8 =
        ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
            .expect("key");
    let foreign_key = sign(
        &header(&kid),
        &good,
        &EncodingKey::from_ed_der(other_pkcs8.as_ref()),
    );
    let mut no_typ = header(&kid);
    no_typ.typ = Some("JWT".into());

    let cases = vec![
        ("empty", String::new()),
        ("garbage", "not a token".to_owned()),
        ("huge, under the message limit", "a".repeat(60_000)),
        ("tampered payload", tampered),
        ("alg none", alg_none),
        ("HS256 keyed with the public key", hs256_with_public_key),
        ("signed by a foreign key", foreign_key),
        ("typ JWT", sign(&no_typ, &good, &key)),
        ("unknown kid", sign(&header("nope"), &good, &key)),
        (
            "wrong issuer",
            sign(
                &header(&kid),
                &claims(&user.id, &sid, "evil", "authd", now, now + 600),
                &key,
            ),
        ),
        (
            "wrong audience",
            sign(
                &header(&kid),
                &claims(&user.id, &sid, "authd", "other", now, now + 600),
                &key,
            ),
        ),
        (
            "expired",
            sign(
                &header(&kid),
                &claims(&user.id, &sid, "authd", "authd", now - 600, now - 2),
                &key,
            ),
        ),
        ("not yet valid", {
            let mut c = good.clone();
            c["nbf"] = json!(now + 120);
            sign(&header(&kid), &c, &key)
        }),
        (
            "unknown user",
            sign(
                &header(&kid),
                &claims(
                    &uuid::Uuid::new_v4().to_string(),
                    &sid,
                    "authd",
                    "authd",
                    now,
                    now + 600,
                ),
                &key,
            ),
        ),
        ("a refresh token", tokens.refresh_token.clone()),
    ];
    let mut messages = std::collections::HashSet::new();
    for (name, token) in cases {
        let status = app.validate(&token).await.expect_err(name);
        assert_eq!(status.code(), Code::Unauthenticated, "{name}");
        messages.insert(status.message().to_owned());
    }
    assert_eq!(
        messages.len(),
        1,
        "one message for every bad token: {messages:?}"
    );
    // The genuine token is unaffected by all of that.
    assert!(app.validate(&tokens.access_token).await.is_ok());
}

async fn tokens_verify_with_a_standard_library_from_the_published_jwks(app: TestApp) {
    let user = app.register("alice").await;
    let tokens = app.login("alice").await;

    let grpc_jwks = app.jwks().await;
    let response = reqwest::get(format!("http://{}/.well-known/jwks.json", app.http_addr()))
        .await
        .expect("GET jwks");
    assert!(response.status().is_success());
    let http_jwks = response.text().await.expect("body");
    assert_eq!(grpc_jwks, http_jwks);
    assert!(!grpc_jwks.contains("\"d\""), "no private members");

    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&grpc_jwks).expect("RFC 7517 set");
    let header = jsonwebtoken::decode_header(&tokens.access_token).expect("header");
    assert_eq!(header.alg, Algorithm::EdDSA);
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    let jwk = set
        .find(header.kid.as_deref().expect("kid"))
        .expect("kid published");
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_audience(&["authd"]);
    validation.set_issuer(&["authd"]);
    let data = jsonwebtoken::decode::<serde_json::Value>(
        &tokens.access_token,
        &DecodingKey::from_jwk(jwk).expect("key"),
        &validation,
    )
    .expect("verifies");
    let c = data.claims;
    assert_eq!(c["sub"], json!(user.id));
    for claim in ["iss", "aud", "exp", "iat", "jti", "sid", "roles"] {
        assert!(c.get(claim).is_some(), "claim {claim}");
    }
}

async fn tokens_stay_valid_across_a_restart(mut app: TestApp) {
    app.register("alice").await;
    let tokens = app.login("alice").await;
    app.restart().await;

    let answer = app
        .validate(&tokens.access_token)
        .await
        .expect("still valid after restart");
    assert_eq!(answer.username, "alice");
}

async fn key_rotation_keeps_old_tokens_valid_and_publishes_both_keys(app: TestApp) {
    app.register("alice").await;
    let old = app.login("alice").await;
    let old_kid = kid_of(&old.access_token);

    let output = app.db.cli(&["keys", "rotate"], None).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // The running server picks the new key up from the change feed.
    let started = std::time::Instant::now();
    let mut new_kid = None;
    while new_kid.is_none() && started.elapsed() < Duration::from_secs(2) {
        let tokens = app.login("alice").await;
        let kid = kid_of(&tokens.access_token);
        if kid != old_kid {
            new_kid = Some((kid, tokens));
        }
    }
    assert!(new_kid.is_some(), "new key in use within 2 s");
    let (new_kid, new) = new_kid.expect("new token");
    assert!(
        app.validate(&old.access_token).await.is_ok(),
        "old token still valid"
    );
    assert!(
        app.validate(&new.access_token).await.is_ok(),
        "new token valid"
    );
    let jwks = app.jwks().await;
    assert!(
        jwks.contains(&old_kid) && jwks.contains(&new_kid),
        "both keys published: {jwks}"
    );
}

async fn a_key_rotated_ahead_is_published_at_once_and_signs_from_then(app: TestApp) {
    app.register("alice").await;
    let old = app.login("alice").await;
    let old_kid = kid_of(&old.access_token);

    let rotated = std::time::Instant::now();
    let output = app
        .db
        .cli(&["keys", "rotate", "--activate-in", "5s"], None)
        .await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("published now, signs in 5s"));

    // Published at once (through the change feed), beside the key that still signs.
    let published = eventually(Duration::from_secs(2), || {
        let app = &app;
        async move {
            let set: serde_json::Value = serde_json::from_str(&app.jwks().await).expect("JWK Set");
            set["keys"].as_array().expect("keys").len() == 2
        }
    })
    .await;
    assert!(published.is_some(), "new key published within 2 s");
    let before = app.login("alice").await;
    assert!(
        rotated.elapsed() < Duration::from_secs(5),
        "too slow to observe the interval"
    );
    assert_eq!(
        kid_of(&before.access_token),
        old_kid,
        "old key signs until then"
    );

    // From then on the new key signs, and tokens of both keys validate.
    let mut new = None;
    while new.is_none() && rotated.elapsed() < Duration::from_secs(8) {
        let tokens = app.login("alice").await;
        if kid_of(&tokens.access_token) != old_kid {
            new = Some(tokens);
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let new = new.expect("the new key signs after 5 s");
    assert!(
        rotated.elapsed() >= Duration::from_secs(4),
        "switched early"
    );
    assert!(app.validate(&old.access_token).await.is_ok());
    assert!(app.validate(&new.access_token).await.is_ok());
}

async fn access_tokens_expire_to_the_second(db: TestDb) {
    let app =
        TestApp::spawn_on_manual_clock(db, |c| c.access_token_ttl = Duration::from_secs(2)).await;
    app.register("alice").await;
    let tokens = app.login("alice").await;
    assert_eq!(tokens.expires_in, 2);
    let exp = app
        .validate(&tokens.access_token)
        .await
        .expect("valid")
        .expires_at
        .expect("exp")
        .seconds;
    // exp itself plus at most one second of leeway, to the millisecond; then refused.
    let last_valid_ms = exp * 1000 + 1000;
    app.clock.advance(Duration::from_millis(
        (last_valid_ms - app.clock.now_ms()).max(0) as u64,
    ));
    app.validate(&tokens.access_token)
        .await
        .expect("valid at exp + 1 s");
    app.clock.advance(Duration::from_millis(1));
    let status = app
        .validate(&tokens.access_token)
        .await
        .expect_err("expired");
    assert_eq!(status.code(), Code::Unauthenticated);
}

on_both_databases!(
    validate_answers_identity_session_and_times,
    forged_tampered_and_foreign_tokens_are_unauthenticated,
    tokens_verify_with_a_standard_library_from_the_published_jwks,
    tokens_stay_valid_across_a_restart,
    key_rotation_keeps_old_tokens_valid_and_publishes_both_keys,
    a_key_rotated_ahead_is_published_at_once_and_signs_from_then,
    access_tokens_expire_to_the_second,
);
