//! Login timing does not reveal which usernames exist. In a test binary of its own,
//! so that no other test's hashing runs beside it. It shares the fixture of the
//! other integration tests (`tests/api/helpers`), of which it uses a little.

#[macro_use]
#[allow(unused)]
#[path = "api/helpers/mod.rs"]
mod helpers;

use std::time::Instant;

use tonic::Code;

use helpers::{TestApp, TestDb};

/// SQLite only: hashing dominates, and one database shows it.
async fn unknown_users_and_wrong_passwords_take_the_same_time(db: TestDb) {
    // Many failures on purpose: keep throttling out of it.
    let app = TestApp::spawn_with(db, |c| c.login_max_failures = 1000).await;
    app.register("alice").await;
    let timed = |username: &'static str| {
        let app = &app;
        async move {
            let started = Instant::now();
            let status = app
                .login_with(username, "wrong password")
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

on_sqlite!(unknown_users_and_wrong_passwords_take_the_same_time);
