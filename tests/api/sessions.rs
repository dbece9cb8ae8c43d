//! Sessions: refresh rotation, reuse detection, races, logout, lifetimes, and
//! revocation seen by another replica.

use std::{collections::HashMap, time::Duration};

use crate::helpers::{login, register, validate, Backend, ServerProcess, TestDb, TestServer};
use authd::grpc::pb;
use tonic::{transport::Channel, Code};

type Client = pb::auth_service_client::AuthServiceClient<Channel>;

async fn refresh(client: &mut Client, token: &str) -> Result<pb::TokenPair, tonic::Status> {
    client
        .refresh(pb::RefreshRequest {
            refresh_token: token.into(),
        })
        .await
        .map(|r| r.into_inner().tokens.expect("tokens"))
}

async fn logout(client: &mut Client, token: &str) -> Result<(), tonic::Status> {
    client
        .logout(pb::LogoutRequest {
            refresh_token: token.into(),
        })
        .await
        .map(|_| ())
}

fn jti(token: &str) -> String {
    crate::helpers::token_claims(token)["jti"]
        .as_str()
        .expect("jti")
        .to_owned()
}

async fn refresh_rotates_both_tokens_and_keeps_the_session(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    let mut client = server.auth().await;
    register(&mut client, "alice").await;
    let first = login(&mut client, "alice").await;
    let second = refresh(&mut client, &first.refresh_token)
        .await
        .expect("refresh");
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_ne!(jti(&second.access_token), jti(&first.access_token));
    assert_eq!(second.token_type, "Bearer");
    assert!(second.expires_in > 0 && second.refresh_expires_in > 0);
    let a = validate(&mut client, &first.access_token)
        .await
        .expect("first still valid");
    let b = validate(&mut client, &second.access_token)
        .await
        .expect("second valid");
    assert_eq!(a.session_id, b.session_id);
    // And the new refresh token works in turn.
    let third = refresh(&mut client, &second.refresh_token)
        .await
        .expect("refresh again");
    assert_eq!(
        validate(&mut client, &third.access_token)
            .await
            .expect("valid")
            .session_id,
        a.session_id
    );
    assert_eq!(
        refresh(&mut client, "").await.expect_err("empty").code(),
        Code::InvalidArgument
    );
    assert_eq!(
        refresh(&mut client, "nonsense")
            .await
            .expect_err("unknown")
            .code(),
        Code::Unauthenticated
    );
}

async fn spent_refresh_token_ends_the_session_and_only_it(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    let mut client = server.auth().await;
    register(&mut client, "alice").await;
    let stolen = login(&mut client, "alice").await;
    let other_session = login(&mut client, "alice").await;
    let rotated = refresh(&mut client, &stolen.refresh_token)
        .await
        .expect("legitimate refresh");

    let reuse = refresh(&mut client, &stolen.refresh_token)
        .await
        .expect_err("reuse");
    assert_eq!(reuse.code(), Code::Unauthenticated);
    // The whole session is over, at once: its access tokens and its current refresh token.
    for token in [&stolen.access_token, &rotated.access_token] {
        assert_eq!(
            validate(&mut client, token)
                .await
                .expect_err("ended")
                .code(),
            Code::Unauthenticated
        );
    }
    assert_eq!(
        refresh(&mut client, &rotated.refresh_token)
            .await
            .expect_err("ended")
            .code(),
        Code::Unauthenticated
    );
    // The user's other session is untouched.
    assert!(validate(&mut client, &other_session.access_token)
        .await
        .is_ok());
    assert!(refresh(&mut client, &other_session.refresh_token)
        .await
        .is_ok());
}

async fn twenty_concurrent_refreshes_with_one_token_have_one_winner(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    let mut client = server.auth().await;
    register(&mut client, "alice").await;
    let tokens = login(&mut client, "alice").await;
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(20));
    let mut calls = Vec::new();
    for _ in 0..20 {
        let mut client = server.auth().await;
        let token = tokens.refresh_token.clone();
        let barrier = barrier.clone();
        calls.push(tokio::spawn(async move {
            barrier.wait().await;
            refresh(&mut client, &token).await
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
        validate(&mut client, &tokens.access_token)
            .await
            .expect_err("ended")
            .code(),
        Code::Unauthenticated
    );
}

async fn logout_ends_the_session_at_once_and_is_idempotent(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    let mut client = server.auth().await;
    register(&mut client, "alice").await;
    let tokens = login(&mut client, "alice").await;
    let other = login(&mut client, "alice").await;
    logout(&mut client, &tokens.refresh_token)
        .await
        .expect("logout");
    assert_eq!(
        validate(&mut client, &tokens.access_token)
            .await
            .expect_err("ended")
            .code(),
        Code::Unauthenticated
    );
    let check = pb::CheckRoleRequest {
        token: tokens.access_token.clone(),
        role: "user".into(),
    };
    assert_eq!(
        client.check_role(check).await.expect_err("ended").code(),
        Code::Unauthenticated
    );
    assert_eq!(
        refresh(&mut client, &tokens.refresh_token)
            .await
            .expect_err("ended")
            .code(),
        Code::Unauthenticated
    );
    // Again, unknown and spent tokens: all OK, nothing revealed.
    logout(&mut client, &tokens.refresh_token)
        .await
        .expect("second logout");
    logout(&mut client, "never-issued")
        .await
        .expect("unknown token");
    let rotated = refresh(&mut client, &other.refresh_token)
        .await
        .expect("refresh");
    logout(&mut client, &other.refresh_token)
        .await
        .expect("spent token");
    assert!(
        validate(&mut client, &rotated.access_token).await.is_err(),
        "logout with a spent token still ends its session"
    );
    assert_eq!(
        logout(&mut client, "").await.expect_err("empty").code(),
        Code::InvalidArgument
    );
}

async fn refresh_tokens_expire(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let mut config = crate::helpers::config_for(&db);
    config.refresh_token_ttl = Duration::from_secs(2);
    let server = TestServer::start_with(config).await;
    let mut client = server.auth().await;
    register(&mut client, "alice").await;
    let tokens = login(&mut client, "alice").await;
    assert_eq!(tokens.refresh_expires_in, 2);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(
        refresh(&mut client, &tokens.refresh_token)
            .await
            .expect_err("expired")
            .code(),
        Code::Unauthenticated
    );
}

async fn refresh_cannot_extend_a_session_past_its_absolute_lifetime(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let mut config = crate::helpers::config_for(&db);
    config.session_max_ttl = Duration::from_secs(3);
    config.access_token_ttl = Duration::from_secs(60);
    config.refresh_token_ttl = Duration::from_secs(60);
    let server = TestServer::start_with(config).await;
    let mut client = server.auth().await;
    register(&mut client, "alice").await;
    let tokens = login(&mut client, "alice").await;
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
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let next = refresh(&mut client, &tokens.refresh_token)
        .await
        .expect("refresh within the session");
    assert!(
        next.refresh_expires_in <= 2 && next.expires_in <= 2,
        "{next:?}"
    );
    // Past the session's end plus the one second of clock leeway.
    tokio::time::sleep(Duration::from_millis(4000)).await;
    assert_eq!(
        refresh(&mut client, &next.refresh_token)
            .await
            .expect_err("session over")
            .code(),
        Code::Unauthenticated
    );
    assert_eq!(
        validate(&mut client, &next.access_token)
            .await
            .expect_err("session over")
            .code(),
        Code::Unauthenticated
    );
}

async fn another_replica_refuses_a_logged_out_session_within_two_seconds(backend: Backend) {
    if backend != Backend::Postgres {
        return; // Replicas share a database on PostgreSQL (covered there).
    }
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    let replica = ServerProcess::start(&db, &[]).await;
    let mut here = server.auth().await;
    let mut there = replica.auth().await;
    register(&mut here, "alice").await;
    let tokens = login(&mut here, "alice").await;
    assert!(
        validate(&mut there, &tokens.access_token).await.is_ok(),
        "valid on the other replica"
    );
    logout(&mut here, &tokens.refresh_token)
        .await
        .expect("logout");
    let took = crate::helpers::eventually(Duration::from_secs(2), || {
        let mut there = there.clone();
        let token = tokens.access_token.clone();
        async move { validate(&mut there, &token).await.is_err() }
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
    another_replica_refuses_a_logged_out_session_within_two_seconds,
);
