//! Revocation that survives restarts and setting changes, sessions the server never
//! issued, and withdrawing a signing key (API.md, "Hardening against hostile load
//! and faults"). Each of these failed before the change it names.

use std::time::Duration;

use sqlx::Row;
use tonic::Code;

use crate::{
    helpers::{code, eventually, token_claims, TestApp, TestDb},
    tokens::{active_key, header, kid_of},
};

/// Tokens issued under a 10-minute TTL whose sessions ended (logout,
/// RevokeSessions) stay refused after a restart with a 20 s TTL, 30 s later by the
/// server's clock. The ended sessions used to be forgotten by the TTL in force
/// after the restart.
async fn revoked_tokens_stay_refused_after_a_restart_with_a_shorter_ttl(db: TestDb) {
    let mut app =
        TestApp::spawn_on_manual_clock(db, |c| c.access_token_ttl = Duration::from_secs(600)).await;
    let admin_id = app.admin().await.id.clone();
    app.register("alice").await;
    let bob = app.register("bob").await;
    let (logged_out, kept) = (app.login("alice").await, app.login("alice").await);
    let revoked = app.login("bob").await;
    app.logout(&logged_out.refresh_token).await.expect("logout");
    assert_eq!(app.admin().await.revoke_sessions(&bob.id).await, Ok(1));
    assert_ne!(admin_id, bob.id);

    app.stop().await;
    app.clock.advance(Duration::from_secs(30));
    app.restart_with(|c| c.access_token_ttl = Duration::from_secs(20))
        .await;
    for (what, tokens) in [("logged out", &logged_out), ("revoked", &revoked)] {
        assert_eq!(
            code(app.validate(&tokens.access_token).await),
            Code::Unauthenticated,
            "{what}"
        );
    }
    app.validate(&kept.access_token)
        .await
        .expect("the session nobody ended still validates");
}

/// A token signed with the server's own key but naming a session it never issued
/// is refused (it used to validate: only ended sessions were tracked, so
/// RevokeSessions could not reach it), here and on a replica that must read the
/// session to know. The same forgery naming a real session validates, which shows
/// the forgery itself is sound.
async fn a_token_naming_a_session_never_issued_is_refused(app: TestApp) {
    let alice = app.register("alice").await;
    let real = app.login("alice").await;
    let real_session = token_claims(&real.access_token)["sid"]
        .as_str()
        .expect("sid")
        .to_owned();
    let (kid, key) = active_key(&app.db).await;
    let forge = |sid: &str| {
        let now = chrono::Utc::now().timestamp();
        let claims = serde_json::json!({
            "iss": "authd", "aud": "authd", "sub": alice.id, "exp": now + 600,
            "iat": now, "nbf": now, "jti": uuid::Uuid::new_v4().to_string(),
            "sid": sid, "roles": ["admin"],
        });
        jsonwebtoken::encode(&header(&kid), &claims, &key).expect("sign")
    };
    app.validate(&forge(&real_session))
        .await
        .expect("a token for a real session validates");
    let never_issued = forge(&uuid::Uuid::new_v4().to_string());
    assert_eq!(
        code(app.validate(&never_issued).await),
        Code::Unauthenticated
    );
    let replica = app.replica(&[]).await;
    let there = replica.client().await;
    assert_eq!(
        code(there.validate(&never_issued).await),
        Code::Unauthenticated
    );
    there
        .validate(&real.access_token)
        .await
        .expect("a session started on the first replica validates on the second");
}

async fn private_key_of(db: &TestDb, kid: &str) -> String {
    sqlx::query(&format!(
        "SELECT private_key FROM signing_keys WHERE kid = '{kid}'"
    ))
    .fetch_one(&mut db.sql().await)
    .await
    .expect("key row")
    .get(0)
}

/// `authd keys revoke KID`: refused for the key that signs and for an unknown kid;
/// for a retired key, every replica refuses its tokens within 2 s (cached ones
/// too), it leaves the JWK Set, and its private half is gone from the database.
/// Rotating erases the retired key's private half at once.
async fn a_revoked_signing_key_is_refused_everywhere_and_unpublished(app: TestApp) {
    let replica = app.replica(&[]).await;
    let there = replica.client().await;
    app.register("alice").await;
    let old = app.login("alice").await;
    // Verified (and cached) on both replicas before anything happens to its key.
    app.validate(&old.access_token).await.expect("valid");
    there.validate(&old.access_token).await.expect("valid");
    let old_kid = kid_of(&old.access_token);

    let refused = app.db.cli(&["keys", "revoke", &old_kid], None).await;
    assert!(
        !refused.status.success(),
        "the active key cannot be revoked"
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("rotate"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    let unknown = app.db.cli(&["keys", "revoke", "no-such-kid"], None).await;
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no signing key"));

    assert!(app.db.cli(&["keys", "rotate"], None).await.status.success());
    assert_eq!(
        private_key_of(&app.db, &old_kid).await,
        "",
        "a retired key's private half is erased once it no longer signs"
    );
    app.validate(&old.access_token)
        .await
        .expect("retired, not revoked: its tokens still validate");

    let revoked = app.db.cli(&["keys", "revoke", &old_kid], None).await;
    assert!(
        revoked.status.success(),
        "{}",
        String::from_utf8_lossy(&revoked.stderr)
    );
    for (name, client) in [("this replica", &*app), ("the other", &there)] {
        let refused = eventually(Duration::from_secs(2), || async {
            code(client.validate(&old.access_token).await) == Code::Unauthenticated
        })
        .await;
        assert!(
            refused.is_some(),
            "{name} still accepts the revoked key's token"
        );
        assert!(
            !client.jwks().await.contains(&old_kid),
            "{name} still publishes it"
        );
    }
    assert_eq!(private_key_of(&app.db, &old_kid).await, "");
    let fresh = app.login("alice").await;
    assert_ne!(kid_of(&fresh.access_token), old_kid);
    there
        .validate(&fresh.access_token)
        .await
        .expect("the new key's token");
}

on_both_databases!(
    revoked_tokens_stay_refused_after_a_restart_with_a_shorter_ttl,
    a_token_naming_a_session_never_issued_is_refused,
    a_revoked_signing_key_is_refused_everywhere_and_unpublished,
);
