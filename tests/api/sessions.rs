//! Sessions: refresh rotation, reuse detection, races, logout, lifetimes, and
//! revocation seen by another replica.

use std::{collections::HashMap, time::Duration};

use tonic::Code;

use crate::helpers::{eventually, token_claims, TestApp, TestDb};

fn jti(token: &str) -> String {
    token_claims(token)["jti"].as_str().expect("jti").to_owned()
}

async fn refresh_rotates_both_tokens_and_keeps_the_session(app: TestApp) {
    app.register("alice").await;
    let first = app.login("alice").await;
    let second = app.refresh(&first.refresh_token).await.expect("refresh");
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_ne!(jti(&second.access_token), jti(&first.access_token));
    assert_eq!(second.token_type, "Bearer");
    assert!(second.expires_in > 0 && second.refresh_expires_in > 0);
    let a = app
        .validate(&first.access_token)
        .await
        .expect("first still valid");
    let b = app
        .validate(&second.access_token)
        .await
        .expect("second valid");
    assert_eq!(a.session_id, b.session_id);
    // And the new refresh token works in turn.
    let third = app
        .refresh(&second.refresh_token)
        .await
        .expect("refresh again");
    assert_eq!(
        app.validate(&third.access_token)
            .await
            .expect("valid")
            .session_id,
        a.session_id
    );
    assert_eq!(
        app.refresh("").await.expect_err("empty").code(),
        Code::InvalidArgument
    );
    assert_eq!(
        app.refresh("nonsense").await.expect_err("unknown").code(),
        Code::Unauthenticated
    );
}

async fn spent_refresh_token_ends_the_session_and_only_it(app: TestApp) {
    app.register("alice").await;
    let stolen = app.login("alice").await;
    let other_session = app.login("alice").await;
    let rotated = app
        .refresh(&stolen.refresh_token)
        .await
        .expect("legitimate refresh");

    let reuse = app.refresh(&stolen.refresh_token).await.expect_err("reuse");
    assert_eq!(reuse.code(), Code::Unauthenticated);
    // The whole session is over, at once: its access tokens and its current refresh token.
    for token in [&stolen.access_token, &rotated.access_token] {
        assert_eq!(
            app.validate(token).await.expect_err("ended").code(),
            Code::Unauthenticated
        );
    }
    assert_eq!(
        app.refresh(&rotated.refresh_token)
            .await
            .expect_err("ended")
            .code(),
        Code::Unauthenticated
    );
    // The user's other session is untouched.
    assert!(app.validate(&other_session.access_token).await.is_ok());
    assert!(app.refresh(&other_session.refresh_token).await.is_ok());
}

async fn twenty_concurrent_refreshes_with_one_token_have_one_winner(app: TestApp) {
    app.register("alice").await;
    let tokens = app.login("alice").await;
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(20));
    let mut calls = Vec::new();
    for _ in 0..20 {
        let client = app.connect().await;
        let token = tokens.refresh_token.clone();
        let barrier = barrier.clone();
        calls.push(tokio::spawn(async move {
            barrier.wait().await;
            client.refresh(&token).await
        }));
    }
    let mut codes: HashMap<Code, usize> = HashMap::new();
    for call in calls {
        let code = call
            .await
            .expect("join")
            .map_or_else(|s| s.code(), |_| Code::Ok);
        *codes.entry(code).or_default() += 1;
    }
    assert_eq!(codes.get(&Code::Ok), Some(&1), "{codes:?}");
    assert_eq!(codes.get(&Code::Unauthenticated), Some(&19), "{codes:?}");
    // The losers presented a spent token: that is reuse, so the session has ended.
    assert_eq!(
        app.validate(&tokens.access_token)
            .await
            .expect_err("ended")
            .code(),
        Code::Unauthenticated
    );
}

async fn logout_ends_the_session_at_once_and_is_idempotent(app: TestApp) {
    app.register("alice").await;
    let tokens = app.login("alice").await;
    let other = app.login("alice").await;
    app.logout(&tokens.refresh_token).await.expect("logout");
    assert_eq!(
        app.validate(&tokens.access_token)
            .await
            .expect_err("ended")
            .code(),
        Code::Unauthenticated
    );
    assert_eq!(
        app.check_role(&tokens.access_token, "user")
            .await
            .expect_err("ended")
            .code(),
        Code::Unauthenticated
    );
    assert_eq!(
        app.refresh(&tokens.refresh_token)
            .await
            .expect_err("ended")
            .code(),
        Code::Unauthenticated
    );
    // Again, unknown and spent tokens: all OK, nothing revealed.
    app.logout(&tokens.refresh_token)
        .await
        .expect("second logout");
    app.logout("never-issued").await.expect("unknown token");
    let rotated = app.refresh(&other.refresh_token).await.expect("refresh");
    app.logout(&other.refresh_token).await.expect("spent token");
    assert!(
        app.validate(&rotated.access_token).await.is_err(),
        "logout with a spent token still ends its session"
    );
    assert_eq!(
        app.logout("").await.expect_err("empty").code(),
        Code::InvalidArgument
    );
}

async fn refresh_tokens_expire(db: TestDb) {
    let app =
        TestApp::spawn_on_manual_clock(db, |c| c.refresh_token_ttl = Duration::from_secs(2)).await;
    app.register("alice").await;
    let tokens = app.login("alice").await;
    assert_eq!(tokens.refresh_expires_in, 2);
    app.clock.advance(Duration::from_millis(2001));
    assert_eq!(
        app.refresh(&tokens.refresh_token)
            .await
            .expect_err("expired")
            .code(),
        Code::Unauthenticated
    );
}

async fn refresh_cannot_extend_a_session_past_its_absolute_lifetime(db: TestDb) {
    let app = TestApp::spawn_on_manual_clock(db, |c| {
        c.session_max_ttl = Duration::from_secs(3);
        c.access_token_ttl = Duration::from_secs(60);
        c.refresh_token_ttl = Duration::from_secs(60);
    })
    .await;
    app.register("alice").await;
    let tokens = app.login("alice").await;
    assert!(
        tokens.expires_in <= 3,
        "access token capped at the session's end: {}",
        tokens.expires_in
    );
    assert!(
        tokens.refresh_expires_in <= 3,
        "refresh token capped too: {}",
        tokens.refresh_expires_in
    );
    app.clock.advance(Duration::from_millis(1200));
    let next = app
        .refresh(&tokens.refresh_token)
        .await
        .expect("refresh within the session");
    assert!(
        next.refresh_expires_in <= 2 && next.expires_in <= 2,
        "{next:?}"
    );
    // Past the session's end plus the one second of clock leeway.
    app.clock.advance(Duration::from_millis(3000));
    assert_eq!(
        app.refresh(&next.refresh_token)
            .await
            .expect_err("session over")
            .code(),
        Code::Unauthenticated
    );
    assert_eq!(
        app.validate(&next.access_token)
            .await
            .expect_err("session over")
            .code(),
        Code::Unauthenticated
    );
}

/// PostgreSQL only: replicas share a database on PostgreSQL.
async fn another_replica_refuses_a_logged_out_session_within_two_seconds(app: TestApp) {
    let replica = app.replica(&[]).await;
    let there = replica.client().await;
    app.register("alice").await;
    let tokens = app.login("alice").await;
    assert!(
        there.validate(&tokens.access_token).await.is_ok(),
        "valid on the other replica"
    );
    app.logout(&tokens.refresh_token).await.expect("logout");
    let took = eventually(Duration::from_secs(2), || {
        let there = there.clone();
        let token = tokens.access_token.clone();
        async move { there.validate(&token).await.is_err() }
    })
    .await;
    eprintln!("other replica refused the logged-out token after {took:?}");
    assert!(
        took.is_some(),
        "the other replica still accepts the token after 2 s"
    );
}

on_both_databases!(
    refresh_rotates_both_tokens_and_keeps_the_session,
    spent_refresh_token_ends_the_session_and_only_it,
    twenty_concurrent_refreshes_with_one_token_have_one_winner,
    logout_ends_the_session_at_once_and_is_idempotent,
    refresh_tokens_expire,
    refresh_cannot_extend_a_session_past_its_absolute_lifetime,
);
on_postgres!(another_replica_refuses_a_logged_out_session_within_two_seconds);
