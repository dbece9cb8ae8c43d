//! Register and Login through the real gRPC API.

use std::collections::HashMap;

use authd::grpc::pb;
use tonic::Code;

use crate::helpers::{AuthClient, TestApp, TestDb, PASSWORD};

async fn register_req(
    client: &AuthClient,
    username: &str,
    email: &str,
    password: &str,
) -> Result<pb::User, tonic::Status> {
    client
        .grpc()
        .register(pb::RegisterRequest {
            username: username.into(),
            email: email.into(),
            password: password.into(),
            full_name: "Alice Example".into(),
        })
        .await
        .map(|r| r.into_inner().user.expect("user"))
}

async fn registered_users_hold_user_and_keep_their_case(app: TestApp) {
    let user = register_req(&app, "Alice", "Alice@Example.com", PASSWORD)
        .await
        .expect("register");
    assert_eq!(user.username, "Alice");
    assert_eq!(user.email, "Alice@Example.com");
    assert_eq!(user.full_name, "Alice Example");
    assert_eq!(user.roles, ["user"]);
    assert!(user.active);
    assert!(uuid::Uuid::parse_str(&user.id).is_ok());
    assert!(user.created_at.is_some());
}

async fn bad_fields_are_invalid_argument_naming_the_field(app: TestApp) {
    let long_password = "x".repeat(129);
    let huge_password = "x".repeat(2000);
    let cases = [
        ("ab", "a@example.com", PASSWORD, "username"),
        ("bad name", "a@example.com", PASSWORD, "username"),
        (&"a".repeat(33)[..], "a@example.com", PASSWORD, "username"),
        ("alice", "not-an-email", PASSWORD, "email"),
        ("alice", "", PASSWORD, "email"),
        ("alice", "a@example.com", "short", "password"),
        ("alice", "a@example.com", &long_password[..], "password"),
        ("alice", "a@example.com", &huge_password[..], "password"),
    ];
    for (username, email, password, field) in cases {
        let status = register_req(&app, username, email, password)
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{username} {email}");
        assert!(
            status.message().starts_with(field),
            "message {:?} should name {field}",
            status.message()
        );
        assert!(
            !status.message().contains(password) || password.len() < 8,
            "message echoes the password"
        );
    }
}

async fn taken_names_are_already_exists_ignoring_case(app: TestApp) {
    register_req(&app, "alice", "alice@example.com", PASSWORD)
        .await
        .expect("first");
    let same_name = register_req(&app, "ALICE", "other@example.com", PASSWORD)
        .await
        .expect_err("dup name");
    assert_eq!(same_name.code(), Code::AlreadyExists);
    let same_email = register_req(&app, "alice2", "Alice@EXAMPLE.com", PASSWORD)
        .await
        .expect_err("dup email");
    assert_eq!(same_email.code(), Code::AlreadyExists);
}

async fn sixteen_concurrent_registrations_of_one_name_have_one_winner(app: TestApp) {
    let mut calls = Vec::new();
    for i in 0..16 {
        let client = app.connect().await;
        calls.push(tokio::spawn(async move {
            // Different case and email each time: only the unique index can decide.
            let name = if i % 2 == 0 { "racer" } else { "RACER" };
            register_req(&client, name, &format!("racer{i}@example.com"), PASSWORD).await
        }));
    }
    let mut codes: HashMap<Code, usize> = HashMap::new();
    for call in calls {
        let code = match call.await.expect("join") {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        };
        *codes.entry(code).or_default() += 1;
    }
    assert_eq!(codes.get(&Code::Ok), Some(&1), "{codes:?}");
    assert_eq!(codes.get(&Code::AlreadyExists), Some(&15), "{codes:?}");
}

async fn login_works_by_username_or_email_in_any_case(app: TestApp) {
    let user = register_req(&app, "Alice", "alice@example.com", PASSWORD)
        .await
        .expect("register");
    for name in [
        "Alice",
        "alice",
        "ALICE",
        "alice@example.com",
        "ALICE@example.COM",
    ] {
        let response = app.login_with(name, PASSWORD).await.expect("login");
        let tokens = response.tokens.expect("tokens");
        assert_eq!(tokens.token_type, "Bearer");
        assert_eq!(tokens.expires_in, 15 * 60);
        assert_eq!(tokens.refresh_expires_in, 7 * 24 * 3600);
        assert!(
            tokens.refresh_token.len() >= 43,
            "refresh token carries 256 bits"
        );
        assert_eq!(response.user.expect("user").id, user.id);
        let claims = app.validate(&tokens.access_token).await.expect("validates");
        assert_eq!(claims.user_id, user.id);
        assert_eq!(claims.username, "Alice");
        assert_eq!(claims.roles, ["viewer", "user"]);
        assert!(!claims.session_id.is_empty());
    }
}

async fn wrong_password_and_unknown_user_get_the_same_answer(app: TestApp) {
    app.register("alice").await;
    let wrong = app
        .login_with("alice", "wrong password")
        .await
        .expect_err("wrong password");
    let unknown = app
        .login_with("nobody", "wrong password")
        .await
        .expect_err("unknown user");
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert_eq!(unknown.code(), Code::Unauthenticated);
    assert_eq!(wrong.message(), unknown.message());
    let empty = app
        .login_with("alice", "")
        .await
        .expect_err("empty password");
    assert_eq!(empty.code(), Code::InvalidArgument);
    let huge = app
        .login_with("alice", &"x".repeat(2048))
        .await
        .expect_err("huge password");
    assert_eq!(huge.code(), Code::InvalidArgument);
    assert!(huge.message().starts_with("password"));
}

async fn alices_password_hash(db: &TestDb) -> String {
    use sqlx::Row;
    sqlx::query("SELECT password_hash FROM users WHERE username_lc = 'alice'")
        .fetch_one(&mut db.sql().await)
        .await
        .expect("row")
        .get(0)
}

async fn passwords_are_stored_as_argon2id_and_weaker_hashes_are_upgraded(mut app: TestApp) {
    app.register("alice").await;
    app.stop().await;
    let stored = alices_password_hash(&app.db).await;
    assert!(
        stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{stored}"
    );
    assert!(!stored.contains(PASSWORD));

    // The operator raises the cost: the next successful login rehashes.
    app.restart_with(|c| c.hashing.argon2_memory_kib = 24_576)
        .await;
    app.login("alice").await;
    let upgraded = alices_password_hash(&app.db).await;
    assert!(
        upgraded.starts_with("$argon2id$v=19$m=24576,t=2,p=1$"),
        "{upgraded}"
    );
    app.login("alice").await;
}

async fn consecutive_failures_lock_the_username_and_success_resets(db: TestDb) {
    let app = TestApp::spawn_on_manual_clock(db, |c| {
        c.login_max_failures = 3;
        c.login_lockout = std::time::Duration::from_secs(2);
    })
    .await;
    app.register("alice").await;
    app.register("bob").await;
    let attempt = |username: &'static str, password: &'static str| {
        let client = AuthClient::clone(&app);
        async move {
            client
                .login_with(username, password)
                .await
                .map(|_| ())
                .map_err(|s| s.code())
        }
    };
    // Two failures, then a success resets the count.
    for _ in 0..2 {
        assert_eq!(
            attempt("alice", "wrong password").await,
            Err(Code::Unauthenticated)
        );
    }
    assert_eq!(attempt("alice", PASSWORD).await, Ok(()));
    for _ in 0..3 {
        assert_eq!(
            attempt("alice", "wrong password").await,
            Err(Code::Unauthenticated)
        );
    }
    // Locked now, whatever the password; other usernames are unaffected.
    assert_eq!(
        attempt("alice", PASSWORD).await,
        Err(Code::ResourceExhausted)
    );
    assert_eq!(
        attempt("ALICE", "wrong password").await,
        Err(Code::ResourceExhausted)
    );
    assert_eq!(attempt("bob", PASSWORD).await, Ok(()));
    // Unknown usernames are throttled too, so throttling reveals nothing.
    for _ in 0..3 {
        assert_eq!(
            attempt("ghost", "wrong password").await,
            Err(Code::Unauthenticated)
        );
    }
    assert_eq!(
        attempt("ghost", "wrong password").await,
        Err(Code::ResourceExhausted)
    );
    // The lockout ends with its window, by the server's clock.
    app.clock.advance(std::time::Duration::from_millis(1900));
    assert_eq!(
        attempt("alice", PASSWORD).await,
        Err(Code::ResourceExhausted)
    );
    app.clock.advance(std::time::Duration::from_millis(200));
    assert_eq!(attempt("alice", PASSWORD).await, Ok(()));
}

on_both_databases!(
    registered_users_hold_user_and_keep_their_case,
    bad_fields_are_invalid_argument_naming_the_field,
    taken_names_are_already_exists_ignoring_case,
    sixteen_concurrent_registrations_of_one_name_have_one_winner,
    login_works_by_username_or_email_in_any_case,
    wrong_password_and_unknown_user_get_the_same_answer,
    passwords_are_stored_as_argon2id_and_weaker_hashes_are_upgraded,
    consecutive_failures_lock_the_username_and_success_resets,
);
