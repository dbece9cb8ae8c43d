//! Revocation that survives restarts and setting changes, sessions the server never
//! issued, and withdrawing a signing key (API.md, "Hardening against hostile load
//! and faults").

mod common;

use std::time::Duration;

use authd::{clock::Clock, grpc::pb};
use base64::{engine::general_purpose::STANDARD, Engine};
use common::{
    admin_token, authd_cli, eventually, login, register, validate, Backend, ServerProcess, TestDb,
    TestServer,
};
use sqlx::Row;
use tokio::{net::TcpListener, sync::oneshot};
use tonic::{transport::Channel, Code};

/// The server in this process on a manual clock; stopped (and awaited) on drop of
/// the sender half.
struct ClockedServer {
    addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl ClockedServer {
    async fn start(config: authd::config::ServeConfig, clock: Clock) -> ClockedServer {
        let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let http = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = grpc.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(authd::server::run_with_clock(
            config,
            clock,
            grpc,
            http,
            async {
                let _ = stopped.await;
            },
        ));
        let server = ClockedServer {
            addr,
            stop: Some(stop),
            task: Some(task),
        };
        for _ in 0..200 {
            if let Ok(channel) = server.channel().await {
                let mut client = pb::auth_service_client::AuthServiceClient::new(channel);
                if client.get_jwks(pb::GetJwksRequest {}).await.is_ok() {
                    return server;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("server on a manual clock did not start");
    }

    async fn channel(&self) -> Result<Channel, tonic::transport::Error> {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("uri")
            .connect()
            .await
    }

    async fn auth(&self) -> pb::auth_service_client::AuthServiceClient<Channel> {
        pb::auth_service_client::AuthServiceClient::new(self.channel().await.expect("connect"))
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("server result");
        }
    }
}

/// Tokens issued under a 10-minute TTL whose sessions ended (logout, RevokeSessions)
/// stay refused after a restart with a 20 s TTL, 30 s later by the server's clock.
/// The ended sessions used to be forgotten by the TTL in force after the restart.
async fn revoked_tokens_stay_refused_after_a_restart_with_a_shorter_ttl(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let mut config = common::config_for(&db);
    config.access_token_ttl = Duration::from_secs(600);
    let server = TestServer::start_with(config.clone()).await;
    let (_, root) = admin_token(&db, &server, "root").await;
    let mut client = server.auth().await;
    register(&mut client, "alice").await;
    let bob = register(&mut client, "bob").await;
    let (logged_out, kept) = (
        login(&mut client, "alice").await,
        login(&mut client, "alice").await,
    );
    let revoked = login(&mut client, "bob").await;
    client
        .logout(pb::LogoutRequest {
            refresh_token: logged_out.refresh_token.clone(),
        })
        .await
        .expect("logout");
    server
        .admin(&root.access_token)
        .await
        .revoke_sessions(pb::RevokeSessionsRequest { user_id: bob.id })
        .await
        .expect("revoke sessions");
    server.stop().await;

    config.access_token_ttl = Duration::from_secs(20);
    let clock = Clock::manual();
    clock.advance(Duration::from_secs(30));
    let restarted = ClockedServer::start(config, clock).await;
    let mut client = restarted.auth().await;
    for (what, tokens) in [("logged out", &logged_out), ("revoked", &revoked)] {
        let status = validate(&mut client, &tokens.access_token)
            .await
            .expect_err(what);
        assert_eq!(status.code(), Code::Unauthenticated, "{what}");
    }
    validate(&mut client, &kept.access_token)
        .await
        .expect("the session nobody ended still validates");
    restarted.stop().await;
}

/// A token signed with the server's own key but naming a session it never issued
/// is refused (it used to validate: only ended sessions were tracked, so
/// RevokeSessions could not reach it). The same forgery naming a real session
/// validates, which shows the forgery itself is sound.
async fn a_token_naming_a_session_never_issued_is_refused(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    let mut client = server.auth().await;
    let alice = register(&mut client, "alice").await;
    let real = login(&mut client, "alice").await;
    let real_session = common::token_claims(&real.access_token)["sid"]
        .as_str()
        .expect("sid")
        .to_owned();
    let (kid, pkcs8) = signing_key(&db).await;
    let forge = |sid: &str| {
        let now = chrono::Utc::now().timestamp();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.typ = Some("at+jwt".into());
        header.kid = Some(kid.clone());
        let claims = serde_json::json!({
            "iss": "authd", "aud": "authd", "sub": alice.id, "exp": now + 600,
            "iat": now, "nbf": now, "jti": uuid::Uuid::new_v4().to_string(),
            "sid": sid, "roles": ["admin"],
        });
        jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_ed_der(&pkcs8),
        )
        .expect("sign")
    };
    validate(&mut client, &forge(&real_session))
        .await
        .expect("a token for a real session validates");
    let never_issued = uuid::Uuid::new_v4().to_string();
    let status = validate(&mut client, &forge(&never_issued))
        .await
        .expect_err("never issued");
    assert_eq!(status.code(), Code::Unauthenticated);
    // Nor on a second replica, which has to read the session to know.
    let other = ServerProcess::start(&db, &[]).await;
    let mut other_client = other.auth().await;
    assert_eq!(
        validate(&mut other_client, &forge(&never_issued))
            .await
            .expect_err("never issued")
            .code(),
        Code::Unauthenticated
    );
    validate(&mut other_client, &real.access_token)
        .await
        .expect("a session started on the first replica validates on the second");
}

/// The active signing key's id and PKCS#8 document, read from the database.
async fn signing_key(db: &TestDb) -> (String, Vec<u8>) {
    let mut conn = db.sql().await;
    let row = sqlx::query(
        "SELECT kid, private_key FROM signing_keys WHERE retired_at IS NULL AND private_key <> ''",
    )
    .fetch_one(&mut conn)
    .await
    .expect("active key");
    let (kid, private): (String, String) = (row.get(0), row.get(1));
    (kid, STANDARD.decode(private).expect("base64 PKCS#8"))
}

async fn private_key_of(db: &TestDb, kid: &str) -> String {
    let mut conn = db.sql().await;
    sqlx::query(&format!(
        "SELECT private_key FROM signing_keys WHERE kid = '{kid}'"
    ))
    .fetch_one(&mut conn)
    .await
    .expect("key row")
    .get(0)
}

async fn keys_cli(db: &TestDb, args: &[&str]) -> std::process::Output {
    let mut all = vec!["keys"];
    all.extend_from_slice(args);
    authd_cli(db, &all, None).await
}

/// `authd keys revoke KID`: refused for the key that signs and for an unknown kid;
/// for a retired key, every replica refuses its tokens within 2 s (cached ones
/// too), it leaves the JWK Set, and its private half is gone from the database.
/// Rotating erases the retired key's private half at once.
async fn a_revoked_signing_key_is_refused_everywhere_and_unpublished(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    let other = ServerProcess::start(&db, &[]).await;
    let mut client = server.auth().await;
    let mut other_client = other.auth().await;
    register(&mut client, "alice").await;
    let old = login(&mut client, "alice").await;
    // Verified (and cached) on both replicas before anything happens to its key.
    validate(&mut client, &old.access_token)
        .await
        .expect("valid");
    validate(&mut other_client, &old.access_token)
        .await
        .expect("valid");
    let old_kid = kid_of(&old.access_token);

    let refused = keys_cli(&db, &["revoke", &old_kid]).await;
    assert!(
        !refused.status.success(),
        "the active key cannot be revoked"
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("rotate"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    let unknown = keys_cli(&db, &["revoke", "no-such-kid"]).await;
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no signing key"));

    assert!(keys_cli(&db, &["rotate"]).await.status.success());
    assert_eq!(
        private_key_of(&db, &old_kid).await,
        "",
        "a retired key's private half is erased once it no longer signs"
    );
    // Retired but not revoked: its tokens still validate.
    validate(&mut client, &old.access_token)
        .await
        .expect("valid after rotation");

    let revoked = keys_cli(&db, &["revoke", &old_kid]).await;
    assert!(
        revoked.status.success(),
        "{}",
        String::from_utf8_lossy(&revoked.stderr)
    );
    for (name, c) in [
        ("this replica", &mut client),
        ("the other", &mut other_client),
    ] {
        let took = eventually(Duration::from_secs(2), || {
            let mut c = c.clone();
            let token = old.access_token.clone();
            async move {
                matches!(validate(&mut c, &token).await, Err(s) if s.code() == Code::Unauthenticated)
            }
        })
        .await;
        assert!(
            took.is_some(),
            "{name} still accepts the revoked key's token"
        );
        let jwks = c
            .get_jwks(pb::GetJwksRequest {})
            .await
            .expect("jwks")
            .into_inner()
            .jwks_json;
        assert!(!jwks.contains(&old_kid), "{name} still publishes it");
    }
    assert_eq!(private_key_of(&db, &old_kid).await, "");
    // The new key signs and verifies.
    let fresh = login(&mut client, "alice").await;
    assert_ne!(kid_of(&fresh.access_token), old_kid);
    validate(&mut other_client, &fresh.access_token)
        .await
        .expect("new key's token");
}

on_both_databases!(
    revoked_tokens_stay_refused_after_a_restart_with_a_shorter_ttl,
    a_token_naming_a_session_never_issued_is_refused,
    a_revoked_signing_key_is_refused_everywhere_and_unpublished,
);

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token)
        .expect("header")
        .kid
        .expect("kid")
}
