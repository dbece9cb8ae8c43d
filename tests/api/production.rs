//! Production behaviour: replicas starting together, throttling shared across
//! replicas, hostile input and shutdown under load.

use std::time::{Duration, Instant};

use crate::helpers::{
    login, register, validate, Backend, ServerProcess, TestDb, TestServer, PASSWORD,
};
use authd::grpc::pb;
use tonic::{transport::Channel, Code};

async fn three_replicas_started_together_on_an_empty_database_all_serve(backend: Backend) {
    if backend != Backend::Postgres {
        return; // Replicas share a database on PostgreSQL.
    }
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let (a, b, c) = tokio::join!(
        ServerProcess::start(&db, &[]),
        ServerProcess::start(&db, &[]),
        ServerProcess::start(&db, &[])
    );
    let mut sql = db.sql().await;
    let keys: i64 = sqlx::Row::get(
        &sqlx::query("SELECT COUNT(*) FROM signing_keys")
            .fetch_one(&mut sql)
            .await
            .expect("count"),
        0,
    );
    assert_eq!(keys, 1, "the first signing key is created exactly once");
    let mut first = a.auth().await;
    register(&mut first, "alice").await;
    let tokens = login(&mut first, "alice").await;
    for replica in [&b, &c] {
        let mut client = replica.auth().await;
        let answer = validate(&mut client, &tokens.access_token)
            .await
            .expect("token from replica A validates");
        assert_eq!(answer.username, "alice");
    }
}

async fn login_throttling_is_shared_across_replicas(backend: Backend) {
    if backend != Backend::Postgres {
        return; // Replicas share a database on PostgreSQL.
    }
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let mut config = crate::helpers::config_for(&db);
    config.login_max_failures = 4;
    let here = TestServer::start_with(config).await;
    let there = ServerProcess::start(&db, &[("AUTHD_LOGIN_MAX_FAILURES", "4")]).await;
    let (mut a, mut b) = (here.auth().await, there.auth().await);
    register(&mut a, "alice").await;
    let wrong = || pb::LoginRequest {
        username: "alice".into(),
        password: "wrong password".into(),
    };
    let right = || pb::LoginRequest {
        username: "alice".into(),
        password: PASSWORD.into(),
    };
    for _ in 0..2 {
        assert_eq!(
            a.login(wrong()).await.expect_err("wrong").code(),
            Code::Unauthenticated
        );
        assert_eq!(
            b.login(wrong()).await.expect_err("wrong").code(),
            Code::Unauthenticated
        );
    }
    // Four failures in all, two on each replica: locked on both.
    assert_eq!(
        a.login(right()).await.expect_err("locked").code(),
        Code::ResourceExhausted
    );
    assert_eq!(
        b.login(right()).await.expect_err("locked").code(),
        Code::ResourceExhausted
    );
    register(&mut b, "bob").await;
    login(&mut a, "bob").await;
}

/// Raw bytes as a gRPC message, to send what no generated client would.
#[derive(Clone, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        let bytes = src.copy_to_bytes(src.remaining());
        Ok(Some(bytes.to_vec()))
    }
}

async fn raw_call(
    channel: Channel,
    path: &'static str,
    body: Vec<u8>,
) -> Result<Vec<u8>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    grpc.unary(
        tonic::Request::new(body),
        http::uri::PathAndQuery::from_static(path),
        RawCodec,
    )
    .await
    .map(|r| r.into_inner())
}

async fn still_serving(server: &TestServer) {
    let mut client = server.auth().await;
    assert!(
        client.get_jwks(pb::GetJwksRequest {}).await.is_ok(),
        "server still answers"
    );
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health");
    assert_eq!(status.into_inner().status, 1, "still SERVING");
}

async fn hostile_input_gets_an_error_status_and_the_server_stays_up(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    let mut client = server.auth().await;

    // A 16 MiB message is refused by its declared length, not buffered and parsed.
    let huge = client
        .validate_token(pb::ValidateTokenRequest {
            token: "a".repeat(16 << 20),
        })
        .await
        .expect_err("16 MiB");
    assert!(
        matches!(huge.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{huge:?}"
    );
    still_serving(&server).await;

    // Bytes that are not a valid protobuf message.
    for garbage in [
        vec![0xff; 64],
        vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
        vec![0x0a, 0x05, 0xc3, 0x28, 0xa0, 0xa1, 0xe2],
    ] {
        let status = raw_call(
            server.channel().await,
            "/auth.v1.AuthService/ValidateToken",
            garbage,
        )
        .await
        .expect_err("malformed");
        assert!(
            matches!(
                status.code(),
                Code::Internal | Code::InvalidArgument | Code::Unauthenticated
            ),
            "{status:?}"
        );
    }
    still_serving(&server).await;

    // Absurd metadata is refused before any handler runs.
    let mut admin = server.admin(&"x".repeat(64 * 1024)).await;
    assert!(
        admin
            .list_users(pb::ListUsersRequest::default())
            .await
            .is_err(),
        "64 KiB of metadata refused"
    );
    still_serving(&server).await;

    // Absurd token strings within the message limit are just invalid.
    let status = validate(&mut client, &"e".repeat(60_000))
        .await
        .expect_err("long token");
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = validate(&mut client, "\u{0}\u{1}\u{feff}ü.ü.ü")
        .await
        .expect_err("odd token");
    assert_eq!(status.code(), Code::Unauthenticated);
    still_serving(&server).await;
}

async fn sigterm_during_logins_lets_them_finish_and_exits_zero(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let mut server = ServerProcess::start(
        &db,
        &[("AUTHD_SHUTDOWN_GRACE", "10s"), ("AUTHD_HASH_WORKERS", "1")],
    )
    .await;
    let mut client = server.auth().await;
    register(&mut client, "alice").await;
    let logins: Vec<_> = (0..8)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move {
                client
                    .login(pb::LoginRequest {
                        username: "alice".into(),
                        password: PASSWORD.into(),
                    })
                    .await
                    .map(|_| ())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(30)).await;
    let pid = nix::unistd::Pid::from_raw(server.child.id().expect("pid") as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let started = Instant::now();
    for login in logins {
        login
            .await
            .expect("join")
            .expect("in-flight login completes");
    }
    let status = tokio::time::timeout(Duration::from_secs(15), server.child.wait())
        .await
        .expect("exits")
        .expect("status");
    assert!(status.success(), "exit status {status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "exited within the grace period"
    );
}

on_both_databases!(
    three_replicas_started_together_on_an_empty_database_all_serve,
    login_throttling_is_shared_across_replicas,
    hostile_input_gets_an_error_status_and_the_server_stays_up,
    sigterm_during_logins_lets_them_finish_and_exits_zero,
);
