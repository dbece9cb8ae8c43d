//! The database goes away: the hot path answers from memory (proving it needs no
//! query per call) and readiness stays SERVING for a bounded staleness, then both
//! stop; calls that need the database answer UNAVAILABLE at once, and everything
//! recovers by itself.
//!
//! PostgreSQL only: the outage is real (the database refuses connections and its
//! sessions are terminated). SQLite has no server to lose.

use std::time::{Duration, Instant};

use authd::grpc::pb;
use tonic::{transport::Channel, Code};
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

use crate::helpers::{eventually, TestApp, TestDb, PASSWORD};

async fn health(channel: Channel, service: &str) -> i32 {
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .map(|r| r.into_inner().status)
        .unwrap_or(-1)
}

const SERVING: i32 = 1;
const NOT_SERVING: i32 = 2;

pub(crate) async fn set_database_reachable(db: &TestDb, reachable: bool) {
    use sqlx::Connection;
    let admin_url = std::env::var("AUTHD_TEST_DATABASE_URL").expect("PostgreSQL test URL");
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("admin connection");
    let name = db
        .url
        .rsplit('/')
        .next()
        .expect("db name")
        .split('?')
        .next()
        .expect("db name")
        .to_owned();
    sqlx::query(&format!(
        "ALTER DATABASE {name} WITH ALLOW_CONNECTIONS {reachable}"
    ))
    .execute(&mut admin)
    .await
    .expect("alter");
    if !reachable {
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()")
            .bind(&name)
            .execute(&mut admin)
            .await
            .expect("terminate");
    }
}

async fn validate_answers_from_memory_while_the_database_is_down_then_everything_recovers(
    db: TestDb,
) {
    let app = TestApp::spawn_with(db, |c| {
        c.max_staleness = Duration::from_secs(4);
        c.database.database_timeout = Duration::from_secs(1);
    })
    .await;
    app.register("alice").await;
    let tokens = app.login("alice").await;
    assert!(app.validate(&tokens.access_token).await.is_ok());

    set_database_reachable(&app.db, false).await;
    let down_at = Instant::now();

    // Memory answers: no query is needed per call, so these succeed with no database.
    for _ in 0..200 {
        app.validate(&tokens.access_token)
            .await
            .expect("validate from memory");
    }
    assert!(
        app.check_role(&tokens.access_token, "user")
            .await
            .expect("check from memory")
            .allowed
    );

    // A blip shorter than the staleness bound keeps the replica in service: it can
    // still answer the hot path. Liveness never follows the database.
    let channel = app.channel().await;
    let mut readiness_during_blip = Vec::new();
    while down_at.elapsed() < Duration::from_millis(2_500) {
        readiness_during_blip.push(health(channel.clone(), "").await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        readiness_during_blip.iter().all(|s| *s == SERVING),
        "readiness left SERVING within 2.5 s of a 4 s staleness bound: {readiness_during_blip:?}"
    );
    assert_eq!(health(channel.clone(), "liveness").await, SERVING);

    // Calls that need the database fail fast and clearly.
    let started = Instant::now();
    let status = app
        .login_with("alice", PASSWORD)
        .await
        .expect_err("login needs the database");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "login took {:?}",
        started.elapsed()
    );
    let status = app
        .grpc()
        .register(pb::RegisterRequest {
            username: "bob".into(),
            email: "bob@example.com".into(),
            password: PASSWORD.into(),
            full_name: String::new(),
        })
        .await
        .expect_err("register needs the database");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    // Past the staleness bound the hot path stops vouching.
    tokio::time::sleep(
        Duration::from_secs(4).saturating_sub(down_at.elapsed()) + Duration::from_millis(500),
    )
    .await;
    let status = app
        .validate(&tokens.access_token)
        .await
        .expect_err("too stale");
    assert_eq!(status.code(), Code::Unavailable);
    // ... and readiness turns NOT_SERVING with it.
    let not_ready = eventually(Duration::from_secs(3), || {
        let channel = channel.clone();
        async move { health(channel, "").await == NOT_SERVING }
    })
    .await;
    assert!(
        not_ready.is_some(),
        "readiness still SERVING past the staleness bound"
    );
    assert_eq!(
        health(channel.clone(), "auth.v1.AuthService").await,
        NOT_SERVING
    );
    assert_eq!(health(channel.clone(), "liveness").await, SERVING);

    set_database_reachable(&app.db, true).await;
    let recovered = eventually(Duration::from_secs(15), || {
        let channel = channel.clone();
        let token = tokens.access_token.clone();
        let app = &app;
        async move { health(channel, "").await == SERVING && app.validate(&token).await.is_ok() }
    })
    .await;
    eprintln!("recovered {recovered:?} after the database came back");
    assert!(recovered.is_some(), "no recovery within 15 s");
    app.login("alice").await;
}

on_postgres!(validate_answers_from_memory_while_the_database_is_down_then_everything_recovers);
