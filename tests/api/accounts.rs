//! Register and Login through the real gRPC API.

use std::collections::HashMap;

use crate::helpers::{login, register, validate, Backend, TestDb, TestServer, PASSWORD};
use authd::grpc::pb;
use tonic::Code;

async fn register_req(
    client: &mut pb::auth_service_client::AuthServiceClient<tonic::transport::Channel>,
    username: &str,
    email: &str,
    password: &str,
) -> Result<pb::User, tonic::Status> {
    client
        .register(pb::RegisterRequest {
            username: username.into(),
            email: email.into(),
            password: password.into(),
            full_name: "Alice Example".into(),
        })
        .await
        .map(|r| r.into_inner().user.expect("user"))
}

async fn registered_users_hold_user_and_keep_their_case(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    let mut client = server.auth().await;
    let user = register_req(&mut client, "Alice", "Alice@Example.com", PASSWORD)
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

async fn bad_fields_are_invalid_argument_naming_the_field(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    let mut client = server.auth().await;
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
        let status = register_req(&mut client, username, email, password)
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

async fn taken_names_are_already_exists_ignoring_case(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    let mut client = server.auth().await;
    register_req(&mut client, "alice", "alice@example.com", PASSWORD)
        .await
        .expect("first");
    let same_name = register_req(&mut client, "ALICE", "other@example.com", PASSWORD)
        .await
        .expect_err("dup name");
    assert_eq!(same_name.code(), Code::AlreadyExists);
    let same_email = register_req(&mut client, "alice2", "Alice@EXAMPLE.com", PASSWORD)
        .await
        .expect_err("dup email");
    assert_eq!(same_email.code(), Code::AlreadyExists);
}

async fn sixteen_concurrent_registrations_of_one_name_have_one_winner(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    let mut calls = Vec::new();
    for i in 0..16 {
        let mut client = server.auth().await;
        calls.push(tokio::spawn(async move {
            // Different case and email each time: only the unique index can decide.
            let name = if i % 2 == 0 { "racer" } else { "RACER" };
            register_req(
                &mut client,
                name,
                &format!("racer{i}@example.com"),
                PASSWORD,
            )
            .await
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

async fn login_works_by_username_or_email_in_any_case(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    let mut client = server.auth().await;
    let user = register_req(&mut client, "Alice", "alice@example.com", PASSWORD)
        .await
        .expect("register");
    for name in [
        "Alice",
        "alice",
        "ALICE",
        "alice@example.com",
        "ALICE@example.COM",
    ] {
        let response = client
            .login(pb::LoginRequest {
                username: name.into(),
                password: PASSWORD.into(),
            })
            .await
            .expect("login")
            .into_inner();
        let tokens = response.tokens.expect("tokens");
        assert_eq!(tokens.token_type, "Bearer");
        assert_eq!(tokens.expires_in, 15 * 60);
        assert_eq!(tokens.refresh_expires_in, 7 * 24 * 3600);
        assert!(
            tokens.refresh_token.len() >= 43,
            "refresh token carries 256 bits"
        );
        assert_eq!(response.user.expect("user").id, user.id);
        let claims = validate(&mut client, &tokens.access_token)
            .await
            .expect("validates");
        assert_eq!(claims.user_id, user.id);
        assert_eq!(claims.username, "Alice");
        assert_eq!(claims.roles, ["viewer", "user"]);
        assert!(!claims.session_id.is_empty());
    }
}

async fn wrong_password_and_unknown_user_get_the_same_answer(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    let mut client = server.auth().await;
    register(&mut client, "alice").await;
    let wrong = client
        .login(pb::LoginRequest {
            username: "alice".into(),
            password: "wrong password".into(),
        })
        .await
        .expect_err("wrong password");
    let unknown = client
        .login(pb::LoginRequest {
            username: "nobody".into(),
            password: "wrong password".into(),
        })
        .await
        .expect_err("unknown user");
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert_eq!(unknown.code(), Code::Unauthenticated);
    assert_eq!(wrong.message(), unknown.message());
    let empty = client
        .login(pb::LoginRequest {
            username: "alice".into(),
            password: String::new(),
        })
        .await
        .expect_err("empty password");
    assert_eq!(empty.code(), Code::InvalidArgument);
    let huge = client
        .login(pb::LoginRequest {
            username: "alice".into(),
            password: "x".repeat(2048),
        })
        .await
        .expect_err("huge password");
    assert_eq!(huge.code(), Code::InvalidArgument);
    assert!(huge.message().starts_with("password"));
}

async fn passwords_are_stored_as_argon2id_and_weaker_hashes_are_upgraded(backend: Backend) {
    use sqlx::Row;
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    let mut client = server.auth().await;
    register(&mut client, "alice").await;
    server.stop().await;
    let stored: String = sqlx::query("SELECT password_hash FROM users WHERE username_lc = 'alice'")
        .fetch_one(&mut db.sql().await)
        .await
        .expect("row")
        .get(0);
    assert!(
        stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{stored}"
    );
    assert!(!stored.contains(PASSWORD));

    // The operator raises the cost: the next successful login rehashes.
    let mut config = crate::helpers::config_for(&db);
    config.hashing.argon2_memory_kib = 24_576;
    let server = TestServer::start_with(config).await;
    let mut client = server.auth().await;
    login(&mut client, "alice").await;
    let upgraded: String =
        sqlx::query("SELECT password_hash FROM users WHERE username_lc = 'alice'")
            .fetch_one(&mut db.sql().await)
            .await
            .expect("row")
            .get(0);
    assert!(
        upgraded.starts_with("$argon2id$v=19$m=24576,t=2,p=1$"),
        "{upgraded}"
    );
    login(&mut client, "alice").await;
}

async fn consecutive_failures_lock_the_username_and_success_resets(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let mut config = crate::helpers::config_for(&db);
    config.login_max_failures = 3;
    config.login_lockout = std::time::Duration::from_secs(2);
    let server = TestServer::start_with(config).await;
    let mut client = server.auth().await;
    register(&mut client, "alice").await;
    register(&mut client, "bob").await;
    let attempt = |username: &'static str, password: &'static str| {
        let mut client = client.clone();
        async move {
            client
                .login(pb::LoginRequest {
                    username: username.into(),
                    password: password.into(),
                })
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
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
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
