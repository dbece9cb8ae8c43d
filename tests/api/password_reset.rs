//! Account tokens (API.md, "Account lifecycle"): password reset by a token an
//! admin asks for, and email verification.

use std::{collections::HashMap, time::Duration};

use authd::grpc::pb;
use tonic::Code;

use crate::helpers::{code, TestApp, TestDb, PASSWORD};

const NEW_PASSWORD: &str = "a brand new passphrase";

async fn a_reset_token_works_once_and_ends_every_session(app: TestApp) {
    let root = app.admin().await;
    let alice = app.register("alice").await;
    let sessions = [app.login("alice").await, app.login("alice").await];
    let issued = root
        .create_password_reset_token(&alice.id)
        .await
        .expect("reset token");
    // 256 random bits, base64url: 43 characters at least.
    assert!(issued.reset_token.len() >= 43, "{}", issued.reset_token);
    let expires_in =
        issued.expires_at.expect("expires_at").seconds - chrono::Utc::now().timestamp();
    assert!(
        (1790..=1800).contains(&expires_in),
        "30 minutes: {expires_in}"
    );
    // Stored only as a hash.
    let stored: String = {
        use sqlx::Row;
        sqlx::query("SELECT token_hash FROM account_tokens")
            .fetch_one(&mut app.db.sql().await)
            .await
            .expect("row")
            .get(0)
    };
    assert_ne!(stored, issued.reset_token);
    assert!(!stored.contains(&issued.reset_token));

    app.reset_password(&issued.reset_token, NEW_PASSWORD)
        .await
        .expect("reset");
    for tokens in &sessions {
        assert_eq!(
            code(app.validate(&tokens.access_token).await),
            Code::Unauthenticated
        );
        assert_eq!(
            code(app.refresh(&tokens.refresh_token).await),
            Code::Unauthenticated
        );
    }
    assert_eq!(
        code(app.login_with("alice", PASSWORD).await),
        Code::Unauthenticated
    );
    app.login_with("alice", NEW_PASSWORD)
        .await
        .expect("the new password logs in");

    let again = app
        .reset_password(&issued.reset_token, "yet another passphrase")
        .await
        .expect_err("a token works once");
    let unknown = app
        .reset_password("made-up-token", "yet another passphrase")
        .await
        .expect_err("unknown");
    for status in [&again, &unknown] {
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    assert_eq!(again.message(), unknown.message(), "one message for both");
    assert!(!again.message().contains(&issued.reset_token));
    app.login_with("alice", NEW_PASSWORD)
        .await
        .expect("the refused attempts changed nothing");
}

/// A newer token voids older ones, and a token expires after
/// AUTHD_PASSWORD_RESET_TTL; both answer as an unknown token does.
async fn voided_and_expired_reset_tokens_are_refused_like_unknown_ones(db: TestDb) {
    let app = TestApp::spawn_on_manual_clock(db, |c| {
        c.password_reset_ttl = Duration::from_secs(20);
    })
    .await;
    let root = app.admin().await;
    let alice = app.register("alice").await;
    let older = root
        .create_password_reset_token(&alice.id)
        .await
        .expect("older");
    let newer = root
        .create_password_reset_token(&alice.id)
        .await
        .expect("newer");
    let unknown = app
        .reset_password("made-up-token", NEW_PASSWORD)
        .await
        .expect_err("unknown");
    let voided = app
        .reset_password(&older.reset_token, NEW_PASSWORD)
        .await
        .expect_err("voided by the newer one");
    assert_eq!(voided.code(), Code::Unauthenticated);
    assert_eq!(voided.message(), unknown.message());

    app.clock.advance(Duration::from_secs(21));
    let expired = app
        .reset_password(&newer.reset_token, NEW_PASSWORD)
        .await
        .expect_err("expired");
    assert_eq!(expired.code(), Code::Unauthenticated);
    assert_eq!(expired.message(), unknown.message());
    app.login_with("alice", PASSWORD)
        .await
        .expect("no refused token changed the password");

    // Within its lifetime a token works.
    tokio::time::sleep(Duration::from_millis(500)).await; // the feed catches up with the clock
    let fresh = root
        .create_password_reset_token(&alice.id)
        .await
        .expect("fresh");
    app.clock.advance(Duration::from_secs(19));
    app.reset_password(&fresh.reset_token, NEW_PASSWORD)
        .await
        .expect("a token 19 s old works");
}

async fn reset_password_checks_its_fields_before_spending_the_token(app: TestApp) {
    let root = app.admin().await;
    let alice = app.register("alice").await;
    let issued = root
        .create_password_reset_token(&alice.id)
        .await
        .expect("token");
    let short = app
        .reset_password(&issued.reset_token, "short")
        .await
        .expect_err("short");
    assert_eq!(short.code(), Code::InvalidArgument);
    assert!(short.message().contains("new_password"), "{short:?}");
    let empty = app
        .reset_password("", NEW_PASSWORD)
        .await
        .expect_err("empty token");
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert!(empty.message().contains("reset_token"), "{empty:?}");
    app.reset_password(&issued.reset_token, NEW_PASSWORD)
        .await
        .expect("the token survived the refused call");
}

async fn concurrent_resets_with_one_token_have_one_winner(app: TestApp) {
    let root = app.admin().await;
    let alice = app.register("alice").await;
    let issued = root
        .create_password_reset_token(&alice.id)
        .await
        .expect("token");
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(8));
    let mut calls = Vec::new();
    for i in 0..8 {
        let client = app.connect().await;
        let (token, barrier) = (issued.reset_token.clone(), barrier.clone());
        calls.push(tokio::spawn(async move {
            barrier.wait().await;
            let password = format!("new passphrase number {i}");
            let result = client.reset_password(&token, &password).await;
            (password, code(result))
        }));
    }
    let mut codes: HashMap<Code, usize> = HashMap::new();
    let mut winner = None;
    for call in calls {
        let (password, code) = call.await.expect("join");
        if code == Code::Ok {
            winner = Some(password);
        }
        *codes.entry(code).or_default() += 1;
    }
    assert_eq!(codes.get(&Code::Ok), Some(&1), "{codes:?}");
    assert_eq!(codes.get(&Code::Unauthenticated), Some(&7), "{codes:?}");
    app.login_with("alice", &winner.expect("a winner"))
        .await
        .expect("the winner's password is the one set");
}

async fn account_tokens_are_for_admins_and_existing_users(app: TestApp) {
    let root = app.admin().await;
    app.register("alice").await;
    let alices = app.login("alice").await;
    let not_admin = app.admin_as(&alices.access_token).await;
    let alice_id = app.validate(&alices.access_token).await.expect("v").user_id;
    assert_eq!(
        code(not_admin.create_password_reset_token(&alice_id).await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(not_admin.create_email_verification_token(&alice_id).await),
        Code::PermissionDenied
    );
    let unknown = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        code(root.create_password_reset_token(&unknown).await),
        Code::NotFound
    );
    assert_eq!(
        code(root.create_email_verification_token(&unknown).await),
        Code::NotFound
    );
    assert_eq!(
        code(root.create_password_reset_token("nope").await),
        Code::InvalidArgument
    );
}

/// The flag is set for the address the token was made for, once; a new email
/// clears it and voids the tokens made for the old one.
async fn email_verification_holds_for_the_address_it_was_made_for(app: TestApp) {
    let root = app.admin().await;
    let alice = app.register("alice").await;
    assert!(!alice.email_verified, "new accounts are unverified");
    let issued = root
        .create_email_verification_token(&alice.id)
        .await
        .expect("token");
    let expires_in =
        issued.expires_at.expect("expires_at").seconds - chrono::Utc::now().timestamp();
    assert!(
        (7 * 86400 - 10..=7 * 86400).contains(&expires_in),
        "7 days: {expires_in}"
    );
    let verified = app
        .verify_email(&issued.verification_token)
        .await
        .expect("verify");
    assert!(verified.email_verified);
    assert_eq!(verified.id, alice.id);
    assert!(
        root.get_user(&alice.id, "")
            .await
            .expect("get")
            .email_verified
    );
    let again = app
        .verify_email(&issued.verification_token)
        .await
        .expect_err("once");
    let unknown = app.verify_email("made-up").await.expect_err("unknown");
    assert_eq!(again.code(), Code::Unauthenticated);
    assert_eq!(again.message(), unknown.message());
    assert_eq!(
        code(app.verify_email("").await),
        Code::InvalidArgument,
        "an empty token is a missing field"
    );

    // A token made for the old address does not verify the new one.
    let for_old = root
        .create_email_verification_token(&alice.id)
        .await
        .expect("token");
    let changed = root
        .update_user(pb::UpdateUserRequest {
            user_id: alice.id.clone(),
            email: Some("alice@new.example.com".into()),
            ..Default::default()
        })
        .await
        .expect("update");
    assert!(!changed.email_verified, "a new email clears the flag");
    assert_eq!(
        code(app.verify_email(&for_old.verification_token).await),
        Code::Unauthenticated
    );
    assert!(
        !root
            .get_user(&alice.id, "")
            .await
            .expect("get")
            .email_verified
    );
    let for_new = root
        .create_email_verification_token(&alice.id)
        .await
        .expect("token");
    assert!(
        app.verify_email(&for_new.verification_token)
            .await
            .expect("verify")
            .email_verified
    );
    // Setting the same address again (in another case) keeps the flag.
    let same = root
        .update_user(pb::UpdateUserRequest {
            user_id: alice.id.clone(),
            email: Some("Alice@New.Example.com".into()),
            ..Default::default()
        })
        .await
        .expect("update");
    assert!(same.email_verified);
}

async fn verification_tokens_expire_and_newer_ones_void_older(db: TestDb) {
    let app = TestApp::spawn_on_manual_clock(db, |c| {
        c.email_verification_ttl = Duration::from_secs(20);
    })
    .await;
    let root = app.admin().await;
    let alice = app.register("alice").await;
    let older = root
        .create_email_verification_token(&alice.id)
        .await
        .expect("older");
    let newer = root
        .create_email_verification_token(&alice.id)
        .await
        .expect("newer");
    assert_eq!(
        code(app.verify_email(&older.verification_token).await),
        Code::Unauthenticated
    );
    app.clock.advance(Duration::from_secs(21));
    assert_eq!(
        code(app.verify_email(&newer.verification_token).await),
        Code::Unauthenticated
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !root
            .get_user(&alice.id, "")
            .await
            .expect("get")
            .email_verified
    );
}

on_both_databases!(
    a_reset_token_works_once_and_ends_every_session,
    voided_and_expired_reset_tokens_are_refused_like_unknown_ones,
    reset_password_checks_its_fields_before_spending_the_token,
    concurrent_resets_with_one_token_have_one_winner,
    account_tokens_are_for_admins_and_existing_users,
    email_verification_holds_for_the_address_it_was_made_for,
    verification_tokens_expire_and_newer_ones_void_older,
);
