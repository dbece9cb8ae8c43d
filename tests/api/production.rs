//! Production behaviour: replicas starting together, throttling shared across
//! replicas, hostile input and shutdown under load.

use std::time::{Duration, Instant};

use authd::grpc::pb;
use tonic::{transport::Channel, Code};

use crate::helpers::{AuthClient, ServerProcess, TestApp, TestDb, PASSWORD};

async fn three_replicas_started_together_on_an_empty_database_all_serve(db: TestDb) {
    let (a, b, c) = tokio::join!(
        ServerProcess::start(&db, &[]),
        ServerProcess::start(&db, &[]),
        ServerProcess::start(&db, &[])
    );
    let keys = db.count("signing_keys").await;
    assert_eq!(keys, 1, "the first signing key is created exactly once");
    let first = a.client().await;
    first.register("alice").await;
    let tokens = first.login("alice").await;
    for replica in [&b, &c] {
        let client = replica.client().await;
        let answer = client
            .validate(&tokens.access_token)
            .await
            .expect("token from replica A validates");
        assert_eq!(answer.username, "alice");
    }
}

async fn login_throttling_is_shared_across_replicas(db: TestDb) {
    let here = TestApp::spawn_with(db, |c| c.login_max_failures = 4).await;
    let there = here.replica(&[("AUTHD_LOGIN_MAX_FAILURES", "4")]).await;
    let (a, b): (&AuthClient, AuthClient) = (&here, there.client().await);
    a.register("alice").await;
    let wrong = "wrong password";
    for _ in 0..2 {
        assert_eq!(
            a.login_with("alice", wrong)
                .await
                .expect_err("wrong")
                .code(),
            Code::Unauthenticated
        );
        assert_eq!(
            b.login_with("alice", wrong)
                .await
                .expect_err("wrong")
                .code(),
            Code::Unauthenticated
        );
    }
    // Four failures in all, two on each replica: locked on both.
    assert_eq!(
        a.login_with("alice", PASSWORD)
            .await
            .expect_err("locked")
            .code(),
        Code::ResourceExhausted
    );
    assert_eq!(
        b.login_with("alice", PASSWORD)
            .await
            .expect_err("locked")
            .code(),
        Code::ResourceExhausted
    );
    b.register("bob").await;
    a.login("bob").await;
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

async fn still_serving(app: &TestApp) {
    assert!(
        app.grpc().get_jwks(pb::GetJwksRequest {}).await.is_ok(),
        "server still answers"
    );
    let mut health = tonic_health::pb::health_client::HealthClient::new(app.channel().await);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health");
    assert_eq!(status.into_inner().status, 1, "still SERVING");
}

async fn hostile_input_gets_an_error_status_and_the_server_stays_up(app: TestApp) {
    // A 16 MiB message is refused by its declared length, not buffered and parsed.
    let huge = app
        .validate(&"a".repeat(16 << 20))
        .await
        .expect_err("16 MiB");
    assert!(
        matches!(huge.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{huge:?}"
    );
    still_serving(&app).await;

    // Bytes that are not a valid protobuf message.
    for garbage in [
        vec![0xff; 64],
        vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
        vec![0x0a, 0x05, 0xc3, 0x28, 0xa0, 0xa1, 0xe2],
    ] {
        let status = raw_call(
            app.channel().await,
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
    still_serving(&app).await;

    // Absurd metadata is refused before any handler runs.
    let admin = app.admin_as(&"x".repeat(64 * 1024)).await;
    assert!(
        admin.list_users(0, "").await.is_err(),
        "64 KiB of metadata refused"
    );
    still_serving(&app).await;

    // Absurd token strings within the message limit are just invalid.
    let status = app
        .validate(&"e".repeat(60_000))
        .await
        .expect_err("long token");
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = app
        .validate("\u{0}\u{1}\u{feff}ü.ü.ü")
        .await
        .expect_err("odd token");
    assert_eq!(status.code(), Code::Unauthenticated);
    still_serving(&app).await;
}

async fn sigterm_during_logins_lets_them_finish_and_exits_zero(db: TestDb) {
    let mut server = ServerProcess::start(
        &db,
        &[("AUTHD_SHUTDOWN_GRACE", "10s"), ("AUTHD_HASH_WORKERS", "1")],
    )
    .await;
    let client = server.client().await;
    client.register("alice").await;
    let logins: Vec<_> = (0..8)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.login_with("alice", PASSWORD).await.map(|_| ()) })
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
    hostile_input_gets_an_error_status_and_the_server_stays_up,
    sigterm_during_logins_lets_them_finish_and_exits_zero,
);
// Replicas share a database on PostgreSQL; SQLite is one file for one process.
on_postgres!(
    three_replicas_started_together_on_an_empty_database_all_serve,
    login_throttling_is_shared_across_replicas,
);
