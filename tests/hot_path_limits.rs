//! The exact limits of API.md's "Exact limits on the hot path", and the rule that
//! AdminService takes a user's access token only: each test here failed before the
//! fix it names.

mod common;

use std::time::Duration;

use authd::grpc::pb;
use common::{admin_token, login, register, validate, Backend, ServerProcess, TestDb, TestServer};
use tonic::Code;

fn key_request(name: &str, roles: &[&str]) -> pb::CreateApiKeyRequest {
    pb::CreateApiKeyRequest {
        name: name.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        ttl_seconds: 0,
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64
}

/// Sleeps until the wall clock reads `at_ms`.
async fn sleep_until_ms(at_ms: i64) {
    let wait = at_ms - now_ms();
    if wait > 0 {
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    }
}

/// An access token whose `exp` is E is refused from E + 1 s on. Seconds rounded
/// down used to accept it until E + 2 s; this checks at E + 1.25 s, both for a
/// token verified (and cached) before and for one seen for the first time.
async fn an_access_token_is_refused_from_one_second_past_exp(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let mut config = common::config_for(&db);
    config.access_token_ttl = Duration::from_secs(1);
    let server = TestServer::start_with(config).await;
    let mut client = server.auth().await;
    register(&mut client, "alice").await;
    let (seen, unseen) = (
        login(&mut client, "alice").await,
        login(&mut client, "alice").await,
    );
    validate(&mut client, &seen.access_token)
        .await
        .expect("valid before exp");
    for tokens in [&seen, &unseen] {
        let exp_ms = common::token_claims(&tokens.access_token)["exp"]
            .as_i64()
            .expect("exp")
            * 1000;
        sleep_until_ms(exp_ms + 1250).await;
        let status = validate(&mut client, &tokens.access_token)
            .await
            .expect_err("1.25 s past exp");
        assert_eq!(status.code(), Code::Unauthenticated);
    }
}

/// gRPC's code for "too large" is RESOURCE_EXHAUSTED, and the message names the
/// limit (tonic's own check answered OUT_OF_RANGE).
async fn a_request_over_the_message_limit_is_resource_exhausted(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    let mut client = server.auth().await;
    let status = validate(&mut client, &"a".repeat(authd::grpc::MAX_MESSAGE_BYTES + 1))
        .await
        .expect_err("too large");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("64 KiB"), "{}", status.message());
    // The server is fine afterwards.
    assert_eq!(
        validate(&mut client, "garbage")
            .await
            .map(|_| ())
            .expect_err("garbage")
            .code(),
        Code::Unauthenticated
    );
}

/// A key created on one replica works on another as soon as CreateApiKey returns:
/// the second replica polls its feed only once a minute here, so only reading the
/// feed on the unknown key can explain the answer.
async fn a_new_api_key_works_on_another_replica_at_once(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    let (_, tokens) = admin_token(&db, &server, "root").await;
    let other = ServerProcess::start(&db, &[("AUTHD_CHANGE_POLL_INTERVAL", "60s")]).await;
    let mut other_client = other.auth().await;
    let mut admin = server.admin(&tokens.access_token).await;
    for i in 0..3 {
        let created = admin
            .create_api_key(key_request(&format!("batch-{i}"), &["viewer"]))
            .await
            .expect("create")
            .into_inner();
        let answer = validate(&mut other_client, &created.api_key)
            .await
            .expect("the other replica accepts the new key at once");
        assert_eq!(answer.username, format!("batch-{i}"));
    }
    // Unknown keys are still refused, many at once.
    let garbage = (0..64).map(|i| {
        let mut client = other_client.clone();
        async move { validate(&mut client, &format!("authd_nope{i}_{}", "x".repeat(44))).await }
    });
    for answer in futures_join_all(garbage).await {
        assert_eq!(
            answer.map(|_| ()).expect_err("unknown key").code(),
            Code::Unauthenticated
        );
    }
}

async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        outputs.push(handle.await.expect("task"));
    }
    outputs
}

/// AdminService takes a user's access token only. A key holding `admin` used to
/// be able to list users, mint more admin keys and re-promote a demoted user.
async fn admin_service_refuses_api_keys_whatever_their_roles(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    let (_, tokens) = admin_token(&db, &server, "root").await;
    let mut admin = server.admin(&tokens.access_token).await;
    let key = admin
        .create_api_key(key_request("ops", &["admin"]))
        .await
        .expect("create")
        .into_inner()
        .api_key;
    let mut client = server.auth().await;
    let alice = register(&mut client, "alice").await;

    let mut as_key = server.admin(&key).await;
    let refused = [
        as_key
            .list_users(pb::ListUsersRequest::default())
            .await
            .map(|_| ()),
        as_key
            .create_api_key(key_request("more", &["admin"]))
            .await
            .map(|_| ()),
        as_key
            .assign_role(pb::AssignRoleRequest {
                user_id: alice.id.clone(),
                role: "admin".into(),
            })
            .await
            .map(|_| ()),
    ];
    for answer in refused {
        let status = answer.expect_err("an API key cannot call AdminService");
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(status.message().contains("API key"), "{}", status.message());
    }
    // Nothing happened, and the key still works where keys belong.
    let user = admin
        .get_user(pb::GetUserRequest {
            user_id: alice.id,
            username: String::new(),
        })
        .await
        .expect("get")
        .into_inner()
        .user
        .expect("user");
    assert_eq!(user.roles, ["user"]);
    assert!(validate(&mut client, &key).await.is_ok());
}

on_both_databases!(
    an_access_token_is_refused_from_one_second_past_exp,
    a_request_over_the_message_limit_is_resource_exhausted,
    a_new_api_key_works_on_another_replica_at_once,
    admin_service_refuses_api_keys_whatever_their_roles,
);
