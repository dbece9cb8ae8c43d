//! Failed-login throttling under bursts (API.md "Throttling that holds under
//! bursts"), and Login racing deactivation.

use std::{collections::HashMap, time::Duration};

use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::{code, AuthClient, TestApp, TestDb, PASSWORD};

/// How long a RESOURCE_EXHAUSTED answer says to wait (its RetryInfo).
async fn retry_after(client: &AuthClient, login: &str) -> Duration {
    let status = client
        .login_with(login, PASSWORD)
        .await
        .expect_err("locked");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .expect("RetryInfo with a delay")
}

/// Rows in `audit_events` for `action` with one of `outcomes` (none given: any).
async fn audit_rows(db: &TestDb, action: &str, outcomes: &[&str]) -> i64 {
    use sqlx::Row;
    let rows = sqlx::query("SELECT outcome FROM audit_events WHERE action = $1")
        .bind(action.to_owned())
        .fetch_all(&mut db.sql().await)
        .await
        .expect("audit rows");
    rows.iter()
        .map(|row| row.get::<String, _>(0))
        .filter(|outcome| outcomes.is_empty() || outcomes.contains(&outcome.as_str()))
        .count() as i64
}

const BURST: usize = 200;
/// The right password's place in the burst (#150).
const RIGHT_AT: usize = 149;

async fn a_burst_of_guesses_checks_at_most_the_limit(app: TestApp) {
    let (max_failures, workers) = (
        app.config().login_max_failures as usize,
        app.config().hashing.hash_workers.expect("test workers"),
    );
    app.register("alice").await;

    let mut calls = Vec::with_capacity(BURST);
    for i in 0..BURST {
        if i == RIGHT_AT {
            // The right password comes after the first guesses have gone out.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let client = AuthClient::clone(&app);
        let password = if i == RIGHT_AT {
            PASSWORD
        } else {
            "wrong password"
        };
        calls.push(tokio::spawn(async move {
            code(client.login_with("alice", password).await)
        }));
    }
    let mut codes: HashMap<Code, usize> = HashMap::new();
    let mut right = None;
    for (i, call) in calls.into_iter().enumerate() {
        let code = call.await.expect("join");
        if i == RIGHT_AT {
            right = Some(code);
        }
        *codes.entry(code).or_default() += 1;
    }
    let checked = audit_rows(&app.db, "login", &["failed", "failed_and_locked"]).await;
    eprintln!(
        "{:?}: {BURST} concurrent attempts, limit {max_failures}, {workers} hash workers: \
         answers {codes:?}, wrong passwords checked (login/failed* audit rows) {checked}, \
         the right password at #{} answered {right:?}",
        app.db.backend(),
        RIGHT_AT + 1
    );
    let unauthenticated = codes.get(&Code::Unauthenticated).copied().unwrap_or(0);
    assert!(
        unauthenticated <= max_failures + workers,
        "{unauthenticated} wrong passwords checked: {codes:?}"
    );
    assert!(
        checked as usize <= max_failures + workers,
        "{checked} checked"
    );
    assert_eq!(
        right,
        Some(Code::ResourceExhausted),
        "the right password after the lock must not log in"
    );
    assert_eq!(
        unauthenticated + codes.get(&Code::ResourceExhausted).copied().unwrap_or(0),
        BURST,
        "{codes:?}"
    );
    // Still locked afterwards, whatever the password.
    assert_eq!(
        code(app.login_with("alice", PASSWORD).await),
        Code::ResourceExhausted
    );
}

async fn username_and_email_share_one_counter(app: TestApp) {
    assert_eq!(app.config().login_max_failures, 10);
    app.register("alice").await;
    for login in ["alice", "Alice@Example.com"] {
        for _ in 0..5 {
            assert_eq!(
                code(app.login_with(login, "wrong password").await),
                Code::Unauthenticated
            );
        }
    }
    for login in ["alice", "ALICE", "alice@example.com"] {
        assert_eq!(
            code(app.login_with(login, PASSWORD).await),
            Code::ResourceExhausted,
            "{login} is locked too"
        );
    }
    // Another account is untouched.
    app.register("bob").await;
    assert_eq!(code(app.login_with("bob", PASSWORD).await), Code::Ok);
}

const LOCKED_ATTEMPTS: usize = 1000;

async fn attempts_against_a_locked_account_write_no_audit_row_each(db: TestDb) {
    let app = TestApp::spawn_with(db, |c| c.login_max_failures = 3).await;
    app.register("alice").await;
    for _ in 0..3 {
        assert_eq!(
            code(app.login_with("alice", "wrong password").await),
            Code::Unauthenticated
        );
    }
    let before = app.db.count("audit_events").await;
    let started = std::time::Instant::now();
    let mut calls = Vec::new();
    for i in 0..LOCKED_ATTEMPTS {
        let client = AuthClient::clone(&app);
        let login = if i % 2 == 0 {
            "alice"
        } else {
            "alice@example.com"
        };
        calls.push(tokio::spawn(async move {
            code(client.login_with(login, "wrong password").await)
        }));
        if calls.len() == 50 {
            for call in calls.drain(..) {
                assert_eq!(call.await.expect("join"), Code::ResourceExhausted);
            }
        }
    }
    for call in calls {
        assert_eq!(call.await.expect("join"), Code::ResourceExhausted);
    }
    let elapsed = started.elapsed();
    let after = app.db.count("audit_events").await;
    eprintln!(
        "{:?}: {LOCKED_ATTEMPTS} attempts against a locked account wrote {} audit rows in {elapsed:?}",
        app.db.backend(),
        after - before
    );
    assert!(after - before <= 1, "{} audit rows", after - before);
    assert_eq!(
        audit_rows(&app.db, "login", &["failed", "failed_and_locked"]).await,
        3,
        "no password was checked while locked"
    );
}

async fn repeated_lockouts_grow_and_a_success_resets_them(db: TestDb) {
    let mut app = TestApp::spawn_on_manual_clock(db, |c| {
        c.login_max_failures = 2;
        c.login_lockout = Duration::from_secs(60);
    })
    .await;
    app.register("alice").await;
    let client = AuthClient::clone(&app);
    let lock = || {
        let client = client.clone();
        async move {
            for _ in 0..2 {
                assert_eq!(
                    code(client.login_with("alice", "wrong password").await),
                    Code::Unauthenticated
                );
            }
        }
    };
    let secs = |d: Duration| d.as_secs_f64().round() as u64;
    // The first lockout is AUTHD_LOGIN_LOCKOUT; each one that follows it doubles,
    // up to 8 × the setting. (Each is tried once by email, once by username.)
    let mut lengths = Vec::new();
    for i in 0..6 {
        lock().await;
        let login = if i % 2 == 0 {
            "alice"
        } else {
            "alice@example.com"
        };
        let length = secs(retry_after(&client, login).await);
        lengths.push(length);
        app.clock.advance(Duration::from_secs(length + 1));
    }
    assert_eq!(lengths, [60, 120, 240, 480, 480, 480]);
    // A success forgets it all: the next lockout is the first again.
    assert_eq!(code(client.login_with("alice", PASSWORD).await), Code::Ok);
    lock().await;
    assert_eq!(secs(retry_after(&client, "alice").await), 60);
    // So does a quiet lockout's length after a lock ends.
    app.clock.advance(Duration::from_secs(61));
    lock().await;
    assert_eq!(secs(retry_after(&client, "alice").await), 120);
    app.clock.advance(Duration::from_secs(120 + 120 + 1));
    lock().await;
    assert_eq!(secs(retry_after(&client, "alice").await), 60);
    // The aggregate: one login/throttled row per lockout, however many were refused.
    let throttled = audit_rows(&app.db, "login", &["throttled"]).await;
    let locks = audit_rows(&app.db, "login", &["failed_and_locked"]).await;
    // Nine lockouts, each tried (once) while locked.
    assert_eq!((throttled, locks), (9, 9));
    app.stop().await;
}

/// A database upgraded from the name-keyed counters keeps their lockouts, now on
/// the account: a lockout running by email holds for the username too.
async fn an_upgrade_moves_running_counters_to_their_account(db: TestDb) {
    use authd_migrations::{Migrator, MigratorTrait};
    use sqlx::Row;
    let conn = sea_orm::Database::connect(&db.url).await.expect("connect");
    Migrator::up(&conn, Some(7))
        .await
        .expect("the schema before 000008");
    conn.close().await.expect("close");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let id = uuid::Uuid::new_v4().to_string();
    let mut sql = db.sql().await;
    sqlx::query(
        "INSERT INTO users (id, username, username_lc, email, email_lc, full_name, \
         password_hash, active, created_at, updated_at) \
         VALUES ($1, 'Alice', 'alice', 'Alice@example.com', 'alice@example.com', '', \
         'not a hash', $2, $3, $3)",
    )
    .bind(id.clone())
    .bind(true)
    .bind(now)
    .execute(&mut sql)
    .await
    .expect("user");
    for (key, failures, locked_until) in [
        ("alice", 2, None),
        ("alice@example.com", 0, Some(now + 600_000)),
        ("ghost", 4, None),
    ] {
        sqlx::query(
            "INSERT INTO login_failures (username_lc, failures, locked_until, updated_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(key)
        .bind(failures)
        .bind(locked_until)
        .bind(now)
        .execute(&mut sql)
        .await
        .expect("counter");
    }
    let app = TestApp::spawn(db).await;
    assert_eq!(
        code(app.login_with("alice", PASSWORD).await),
        Code::ResourceExhausted
    );
    let rows = sqlx::query(
        "SELECT username_lc, failures, locked_until FROM login_failures ORDER BY username_lc",
    )
    .fetch_all(&mut sql)
    .await
    .expect("counters");
    let rows: Vec<(String, i32, Option<i64>)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let mut expected = vec![(id, 2, Some(now + 600_000)), ("ghost".to_owned(), 4, None)];
    expected.sort();
    assert_eq!(rows, expected);
}

const RACE_ROUNDS: usize = 10;

async fn login_racing_deactivation_leaves_no_live_session(app: TestApp) {
    let admin = app.admin().await;
    let (mut raced, mut leaked, mut leaky_rounds) = (0, 0, 0);
    for round in 0..RACE_ROUNDS {
        let name = format!("racer{round}");
        let user = app.register(&name).await;
        let logins: Vec<_> = (0..4)
            .map(|_| {
                let (client, name) = (AuthClient::clone(&app), name.clone());
                tokio::spawn(async move {
                    client
                        .login_with(&name, PASSWORD)
                        .await
                        .map(|r| r.tokens.expect("tokens"))
                })
            })
            .collect();
        // Deactivate while the logins hash (a hash takes tens of milliseconds).
        // Early rounds deactivate mid-login, later ones (up to 0.25 s) after some
        // or all of the logins are done.
        tokio::time::sleep(Duration::from_millis(3 * (round * round) as u64)).await;
        admin.set_active(&user.id, false).await.expect("deactivate");
        let mut tokens = Vec::new();
        for login in logins {
            match login.await.expect("join") {
                Ok(pair) => tokens.push(pair),
                Err(status) => assert_eq!(status.code(), Code::PermissionDenied, "{status:?}"),
            }
        }
        // Reactivated, the user's sessions stay ended: deactivation ended them all,
        // including any a racing login started.
        admin.set_active(&user.id, true).await.expect("reactivate");
        let mut leaked_here = 0;
        for pair in &tokens {
            raced += 1;
            let validated = app.validate(&pair.access_token).await;
            let refreshed = app.refresh(&pair.refresh_token).await;
            match (validated, refreshed) {
                (Err(v), Err(r))
                    if v.code() == Code::Unauthenticated && r.code() == Code::Unauthenticated => {}
                _ => leaked_here += 1,
            }
        }
        if leaked_here > 0 {
            leaky_rounds += 1;
        }
        leaked += leaked_here;
    }
    eprintln!(
        "{:?}: {raced} logins answered OK while racing deactivation; \
         {leaked} of their sessions outlived it, in {leaky_rounds} of {RACE_ROUNDS} rounds",
        app.db.backend()
    );
    assert_eq!(
        leaked, 0,
        "sessions started by a login racing deactivation survived it"
    );
}

/// The race made certain: a deactivation has changed the user's row but not yet
/// committed (nor ended sessions) when a login checks the password. The login must
/// not start a session the deactivation cannot see; it waits and is refused.
async fn a_login_meeting_a_deactivation_in_progress_is_refused(app: TestApp) {
    let user = app.register("alice").await;
    let mut deactivation = app.db.sql().await;
    for statement in ["BEGIN", "UPDATE users SET active = $1 WHERE id = $2"] {
        let mut query = sqlx::query(statement);
        if statement.starts_with("UPDATE") {
            query = query.bind(false).bind(user.id.clone());
        }
        query.execute(&mut deactivation).await.expect(statement);
    }
    let login = {
        let client = AuthClient::clone(&app);
        tokio::spawn(async move { code(client.login_with("alice", PASSWORD).await) })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    sqlx::query(
        "UPDATE sessions SET ended_at = $1, end_reason = 'deactivated' \
         WHERE user_id = $2 AND ended_at IS NULL",
    )
    .bind(1_i64)
    .bind(user.id.clone())
    .execute(&mut deactivation)
    .await
    .expect("end sessions");
    sqlx::query("COMMIT")
        .execute(&mut deactivation)
        .await
        .expect("commit");
    assert_eq!(login.await.expect("join"), Code::PermissionDenied);
    use sqlx::Row;
    let live: i64 =
        sqlx::query("SELECT COUNT(*) FROM sessions WHERE user_id = $1 AND ended_at IS NULL")
            .bind(user.id.clone())
            .fetch_one(&mut deactivation)
            .await
            .expect("count")
            .get(0);
    assert_eq!(live, 0, "no live session for a deactivated user");
}

on_both_databases!(
    a_burst_of_guesses_checks_at_most_the_limit,
    username_and_email_share_one_counter,
    attempts_against_a_locked_account_write_no_audit_row_each,
    repeated_lockouts_grow_and_a_success_resets_them,
    login_racing_deactivation_leaves_no_live_session,
    a_login_meeting_a_deactivation_in_progress_is_refused,
    an_upgrade_moves_running_counters_to_their_account,
);
