//! Login timing does not reveal which usernames exist. In a test binary of its own,
//! so that no other test's hashing runs beside it.

#[macro_use]
#[path = "api/helpers/mod.rs"]
mod helpers;

use std::time::Instant;

use crate::helpers::{register, Backend, TestDb, TestServer};
use authd::grpc::pb;
use tonic::Code;

async fn unknown_users_and_wrong_passwords_take_the_same_time(backend: Backend) {
    if backend != Backend::Sqlite {
        return; // Hashing dominates; one database shows it.
    }
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let mut config = crate::helpers::config_for(&db);
    config.login_max_failures = 1000; // Many failures on purpose: keep throttling out of it.
    let server = TestServer::start_with(config).await;
    let mut client = server.auth().await;
    register(&mut client, "alice").await;
    let timed = |username: &'static str| {
        let mut client = client.clone();
        async move {
            let started = Instant::now();
            let status = client
                .login(pb::LoginRequest {
                    username: username.into(),
                    password: "wrong password".into(),
                })
                .await
                .expect_err("refused");
            assert_eq!(status.code(), Code::Unauthenticated);
            started.elapsed()
        }
    };
    // Interleaved, so machine load falls on both alike; the medians are compared.
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for i in 0..16 {
        known.push(timed(if i % 2 == 0 { "alice" } else { "ALICE" }).await);
        unknown.push(timed("nobody").await);
    }
    known.sort();
    unknown.sort();
    let (k, u) = (known[8].as_secs_f64(), unknown[8].as_secs_f64());
    eprintln!(
        "median wrong password {:.1} ms, unknown user {:.1} ms",
        k * 1e3,
        u * 1e3
    );
    // Both paths run one argon2id verification; without the dummy hash the unknown
    // user would answer in well under a tenth of the time.
    let ratio = u / k;
    assert!(
        (0.6..1.67).contains(&ratio),
        "unknown/known timing ratio {ratio:.2}"
    );
}

on_both_databases!(unknown_users_and_wrong_passwords_take_the_same_time);
