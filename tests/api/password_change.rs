//! Self-service with the caller's access token (API.md, "Account lifecycle"):
//! ChangePassword, ListSessions and RevokeSession, and who may call them.

use std::time::Duration;

use tonic::Code;

use crate::helpers::{
    assert_invalid, code, eventually, token_claims, Bearer, TestApp, TestDb, PASSWORD,
};

const NEW_PASSWORD: &str = "a brand new passphrase";

/// The session id (`sid`) of an access token.
fn sid(access_token: &str) -> String {
    token_claims(access_token)["sid"]
        .as_str()
        .expect("sid")
        .to_owned()
}

async fn self_service_calls_need_a_users_access_token(app: TestApp) {
    app.register("alice").await;
    let tokens = app.login("alice").await;
    let key = app
        .admin()
        .await
        .create_api_key("svc", &["admin"], 0)
        .await
        .expect("key")
        .api_key;
    let anonymous = app.grpc();
    let calls = |client: crate::helpers::UserClient| async move {
        [
            code(client.change_password(PASSWORD, NEW_PASSWORD).await),
            code(client.list_sessions().await),
            code(
                client
                    .revoke_session(&uuid::Uuid::new_v4().to_string())
                    .await,
            ),
        ]
    };
    // No metadata at all.
    let mut bare = anonymous.clone();
    assert_eq!(
        code(
            bare.list_sessions(authd::grpc::pb::ListSessionsRequest {})
                .await
        ),
        Code::Unauthenticated
    );
    assert_eq!(
        code(
            bare.change_password(authd::grpc::pb::ChangePasswordRequest {
                current_password: PASSWORD.into(),
                new_password: NEW_PASSWORD.into(),
            })
            .await
        ),
        Code::Unauthenticated
    );
    for bad in ["garbage", &tokens.refresh_token] {
        assert_eq!(
            calls(app.user_as(bad).await).await,
            [Code::Unauthenticated; 3],
            "{bad}"
        );
    }
    // Not a bearer scheme.
    let basic = authd::grpc::pb::auth_service_client::AuthServiceClient::with_interceptor(
        app.channel().await,
        Bearer(format!("Basic {}", tokens.access_token)),
    );
    assert_eq!(
        code(
            basic
                .clone()
                .list_sessions(authd::grpc::pb::ListSessionsRequest {})
                .await
        ),
        Code::Unauthenticated
    );
    // An API key is no user, whatever its roles.
    let refused = app
        .user_as(&key)
        .await
        .list_sessions()
        .await
        .expect_err("api key");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(refused.message().contains("API key"), "{refused:?}");
    // The calls that need no credentials still need none, and ignore a bad one.
    app.user_as("garbage")
        .await
        .grpc()
        .validate_token(authd::grpc::pb::ValidateTokenRequest {
            token: tokens.access_token.clone(),
        })
        .await
        .expect("ValidateToken needs no credentials");
}

async fn change_password_keeps_the_callers_session_and_ends_the_others_at_once(app: TestApp) {
    app.register("alice").await;
    let bob = app.register("bob").await;
    let (mine, other) = (app.login("alice").await, app.login("alice").await);
    let bobs = app.login("bob").await;

    app.user_as(&mine.access_token)
        .await
        .change_password(PASSWORD, NEW_PASSWORD)
        .await
        .expect("change password");

    // The other session is over at once: its access and its refresh token.
    assert_eq!(
        code(app.validate(&other.access_token).await),
        Code::Unauthenticated
    );
    assert_eq!(
        code(app.refresh(&other.refresh_token).await),
        Code::Unauthenticated
    );
    // The caller's session stays: its access token validates, its refresh works.
    app.validate(&mine.access_token)
        .await
        .expect("the caller's session stays");
    app.refresh(&mine.refresh_token)
        .await
        .expect("the caller's refresh token still works");
    // Only the new password logs in.
    assert_eq!(
        code(app.login_with("alice", PASSWORD).await),
        Code::Unauthenticated
    );
    app.login_with("alice", NEW_PASSWORD)
        .await
        .expect("the new password logs in");
    // Another user is untouched.
    assert_eq!(
        app.validate(&bobs.access_token).await.expect("bob").user_id,
        bob.id
    );
    let audited = app
        .db
        .count("audit_events WHERE action = 'change_password' AND outcome = 'ok'")
        .await;
    assert_eq!(audited, 1);
}

async fn change_password_checks_its_fields(app: TestApp) {
    app.register("alice").await;
    let tokens = app.login("alice").await;
    let alice = app.user_as(&tokens.access_token).await;
    assert_invalid(
        alice.change_password(PASSWORD, "short").await,
        "new_password",
        "a short password",
    );
    assert_invalid(
        alice.change_password(PASSWORD, &"x".repeat(129)).await,
        "new_password",
        "a long password",
    );
    assert_invalid(
        alice.change_password("", NEW_PASSWORD).await,
        "current_password",
        "no current password",
    );
    // Refused fields changed nothing.
    app.login_with("alice", PASSWORD)
        .await
        .expect("old password still works");
    app.validate(&tokens.access_token)
        .await
        .expect("session untouched");
}

/// A wrong current password is UNAUTHENTICATED and counts toward the account's
/// failed-login throttling, together with failed logins.
async fn a_wrong_current_password_counts_toward_throttling(db: TestDb) {
    let app = TestApp::spawn_with(db, |c| c.login_max_failures = 3).await;
    app.register("alice").await;
    let tokens = app.login("alice").await;
    let alice = app.user_as(&tokens.access_token).await;

    assert_eq!(
        code(app.login_with("alice", "wrong password").await),
        Code::Unauthenticated
    );
    for _ in 0..2 {
        let status = alice
            .change_password("wrong password", NEW_PASSWORD)
            .await
            .expect_err("wrong current password");
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(status.message(), "invalid username or password");
    }
    // Three failures in all: the account is locked, for logins and changes alike.
    assert_eq!(
        code(app.login_with("alice", PASSWORD).await),
        Code::ResourceExhausted
    );
    assert_eq!(
        code(alice.change_password(PASSWORD, NEW_PASSWORD).await),
        Code::ResourceExhausted
    );
    assert_eq!(
        app.db
            .count("audit_events WHERE action = 'change_password' AND outcome <> 'ok'")
            .await,
        2
    );
}

/// A right current password resets the count, as a successful login does.
async fn a_right_current_password_resets_the_failure_count(db: TestDb) {
    let app = TestApp::spawn_with(db, |c| c.login_max_failures = 3).await;
    app.register("alice").await;
    let tokens = app.login("alice").await;
    let alice = app.user_as(&tokens.access_token).await;
    for _ in 0..2 {
        assert_eq!(
            code(app.login_with("alice", "wrong password").await),
            Code::Unauthenticated
        );
    }
    alice
        .change_password(PASSWORD, NEW_PASSWORD)
        .await
        .expect("change");
    for _ in 0..2 {
        assert_eq!(
            code(app.login_with("alice", "wrong password").await),
            Code::Unauthenticated
        );
    }
    app.login_with("alice", NEW_PASSWORD)
        .await
        .expect("not locked: the count started again");
}

async fn list_sessions_shows_the_callers_live_sessions_and_marks_the_current_one(db: TestDb) {
    let app = TestApp::spawn_on_manual_clock(db, |_| {}).await;
    app.register("alice").await;
    app.register("bob").await;
    let first = app.login("alice").await;
    app.clock.advance(Duration::from_secs(2));
    let second = app.login("alice").await;
    let ended = app.login("alice").await;
    app.login("bob").await;
    app.clock.advance(Duration::from_secs(3));
    let second = app.refresh(&second.refresh_token).await.expect("refresh");
    app.logout(&ended.refresh_token).await.expect("logout");

    let sessions = app
        .user_as(&first.access_token)
        .await
        .list_sessions()
        .await
        .expect("list");
    let ids: Vec<&str> = sessions.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids,
        [sid(&first.access_token), sid(&second.access_token)],
        "the caller's live sessions, oldest first"
    );
    let (one, two) = (&sessions[0], &sessions[1]);
    assert!(one.current && !two.current);
    assert_eq!(one.last_refreshed_at, None, "never refreshed");
    let created = two.created_at.expect("created_at").seconds;
    let refreshed = two.last_refreshed_at.expect("refreshed").seconds;
    assert_eq!(refreshed - created, 3);
    let expires = two.expires_at.expect("expires_at").seconds;
    assert_eq!(expires - created, 30 * 24 * 3600, "the absolute end");
    // From the other session, the other one is current.
    let from_second = app
        .user_as(&second.access_token)
        .await
        .list_sessions()
        .await
        .expect("list");
    assert!(!from_second[0].current && from_second[1].current);
}

async fn revoke_session_ends_one_of_the_callers_sessions(app: TestApp) {
    app.register("alice").await;
    app.register("bob").await;
    let (mine, other) = (app.login("alice").await, app.login("alice").await);
    let bobs = app.login("bob").await;
    let alice = app.user_as(&mine.access_token).await;

    // Another user's session, an unknown id and garbage look alike.
    for id in [
        sid(&bobs.access_token),
        uuid::Uuid::new_v4().to_string(),
        "not-a-session".to_owned(),
    ] {
        assert_eq!(
            code(alice.revoke_session(&id).await),
            Code::NotFound,
            "{id}"
        );
    }
    assert_eq!(code(alice.revoke_session("").await), Code::InvalidArgument);
    app.validate(&bobs.access_token)
        .await
        .expect("bob's session is untouched");

    alice
        .revoke_session(&sid(&other.access_token))
        .await
        .expect("revoke");
    assert_eq!(
        code(app.validate(&other.access_token).await),
        Code::Unauthenticated
    );
    assert_eq!(
        code(app.refresh(&other.refresh_token).await),
        Code::Unauthenticated
    );
    app.validate(&mine.access_token)
        .await
        .expect("the caller's session stays");
    assert_eq!(
        code(alice.revoke_session(&sid(&other.access_token)).await),
        Code::NotFound,
        "an ended session is no longer the caller's to end"
    );
    // Signing out here: the caller's own session.
    alice
        .revoke_session(&sid(&mine.access_token))
        .await
        .expect("revoke own");
    assert_eq!(
        code(app.validate(&mine.access_token).await),
        Code::Unauthenticated
    );
}

/// PostgreSQL only: SQLite is one file for one process, so there is no second
/// replica to reach.
async fn a_password_change_reaches_another_replica_within_two_seconds(app: TestApp) {
    app.register("alice").await;
    let replica = app.replica(&[]).await;
    let remote = replica.client().await;
    let (mine, other) = (app.login("alice").await, remote.login("alice").await);
    remote.validate(&other.access_token).await.expect("valid");

    app.user_as(&mine.access_token)
        .await
        .change_password(PASSWORD, NEW_PASSWORD)
        .await
        .expect("change");
    let seen = eventually(Duration::from_secs(2), || {
        let (remote, token) = (remote.clone(), other.access_token.clone());
        async move { code(remote.validate(&token).await) == Code::Unauthenticated }
    })
    .await
    .expect("the other replica refuses the other session within 2 s");
    eprintln!("password change reached the other replica after {seen:?}");
    assert_eq!(
        code(remote.refresh(&other.refresh_token).await),
        Code::Unauthenticated
    );
    remote
        .validate(&mine.access_token)
        .await
        .expect("the caller's session stays everywhere");
}

on_both_databases!(
    self_service_calls_need_a_users_access_token,
    change_password_keeps_the_callers_session_and_ends_the_others_at_once,
    change_password_checks_its_fields,
    a_wrong_current_password_counts_toward_throttling,
    a_right_current_password_resets_the_failure_count,
    list_sessions_shows_the_callers_live_sessions_and_marks_the_current_one,
    revoke_session_ends_one_of_the_callers_sessions,
);
on_postgres!(a_password_change_reaches_another_replica_within_two_seconds);
