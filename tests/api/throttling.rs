//! Failed-login throttling under bursts (API.md "Throttling that holds under
//! bursts"), and Login racing deactivation.

mod common;

use std::{collections::HashMap, time::Duration};

use authd::{clock::Clock, grpc::pb};
use common::{admin_token, register, validate, Backend, TestDb, TestServer, PASSWORD};
use tonic::{transport::Channel, Code};
use tonic_types::StatusExt;

type Client = pb::auth_service_client::AuthServiceClient<Channel>;

async fn attempt(client: &mut Client, login: &str, password: &str) -> Result<(), tonic::Status> {
    client
        .login(pb::LoginRequest {
            username: login.into(),
            password: password.into(),
        })
        .await
        .map(|_| ())
}

async fn code_of(client: &mut Client, login: &str, password: &str) -> Code {
    match attempt(client, login, password).await {
        Ok(()) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// How long a RESOURCE_EXHAUSTED answer says to wait (its RetryInfo).
async fn retry_after(client: &mut Client, login: &str) -> Duration {
    let status = attempt(client, login, PASSWORD).await.expect_err("locked");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .expect("RetryInfo with a delay")
}

/// Rows in `audit_events` for `action`/`outcome` (an empty outcome: any).
async fn audit_rows(db: &TestDb, action: &str, outcomes: &[&str]) -> i64 {
    use sqlx::Row;
    let mut conn = db.sql().await;
    let rows = sqlx::query("SELECT outcome FROM audit_events WHERE action = $1")
        .bind(action.to_owned())
        .fetch_all(&mut conn)
        .await
        .expect("audit rows");
    rows.iter()
        .map(|row| row.get::<String, _>(0))
        .filter(|outcome| outcomes.is_empty() || outcomes.contains(&outcome.as_str()))
        .count() as i64
}

async fn all_audit_rows(db: &TestDb) -> i64 {
    use sqlx::Row;
    let mut conn = db.sql().await;
    sqlx::query("SELECT COUNT(*) FROM audit_events")
        .fetch_one(&mut conn)
        .await
        .expect("count")
        .get::<i64, _>(0)
}

/// A server on a manual clock, so lockouts end without sleeping.
async fn start_on_clock(config: authd::config::ServeConfig, clock: Clock) -> (Client, ServerStop) {
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let http = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = grpc.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(authd::server::run_with_clock(
        config,
        clock,
        grpc,
        http,
        async {
            let _ = stopped.await;
        },
    ));
    for _ in 0..400 {
        if let Ok(channel) = Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
        {
            let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
            let serving = health
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await
                .is_ok_and(|r| r.into_inner().status == 1);
            if serving {
                return (Client::new(channel), ServerStop(Some(stop), Some(task)));
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("server did not become SERVING");
}

struct ServerStop(
    Option<tokio::sync::oneshot::Sender<()>>,
    Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
);

impl ServerStop {
    async fn stop(mut self) {
        if let Some(stop) = self.0.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.1.take() {
            task.await.expect("server task").expect("server result");
        }
    }
}

impl Drop for ServerStop {
    fn drop(&mut self) {
        if let Some(stop) = self.0.take() {
            let _ = stop.send(());
        }
    }
}

const BURST: usize = 200;
/// The right password's place in the burst (#150).
const RIGHT_AT: usize = 149;

async fn a_burst_of_guesses_checks_at_most_the_limit(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let config = common::config_for(&db);
    let (max_failures, workers) = (
        config.login_max_failures as usize,
        config.hashing.hash_workers.expect("test workers"),
    );
    let server = TestServer::start_with(config).await;
    let mut client = server.auth().await;
    register(&mut client, "alice").await;

    let mut calls = Vec::with_capacity(BURST);
    for i in 0..BURST {
        if i == RIGHT_AT {
            // The right password comes after the first guesses have gone out.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut client = client.clone();
        let password = if i == RIGHT_AT {
            PASSWORD
        } else {
            "wrong password"
        };
        calls.push(tokio::spawn(async move {
            code_of(&mut client, "alice", password).await
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
    let checked = audit_rows(&db, "login", &["failed", "failed_and_locked"]).await;
    eprintln!(
        "{backend:?}: {BURST} concurrent attempts, limit {max_failures}, {workers} hash workers: \
         answers {codes:?}, wrong passwords checked (login/failed* audit rows) {checked}, \
         the right password at #{} answered {right:?}",
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
        code_of(&mut client, "alice", PASSWORD).await,
        Code::ResourceExhausted
    );
}

async fn username_and_email_share_one_counter(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let config = common::config_for(&db);
    assert_eq!(config.login_max_failures, 10);
    let server = TestServer::start_with(config).await;
    let mut client = server.auth().await;
    register(&mut client, "alice").await;
    for _ in 0..5 {
        assert_eq!(
            code_of(&mut client, "alice", "wrong password").await,
            Code::Unauthenticated
        );
    }
    for _ in 0..5 {
        assert_eq!(
            code_of(&mut client, "Alice@Example.com", "wrong password").await,
            Code::Unauthenticated
        );
    }
    for login in ["alice", "ALICE", "alice@example.com"] {
        assert_eq!(
            code_of(&mut client, login, PASSWORD).await,
            Code::ResourceExhausted,
            "{login} is locked too"
        );
    }
    // Another account is untouched.
    register(&mut client, "bob").await;
    assert_eq!(code_of(&mut client, "bob", PASSWORD).await, Code::Ok);
}

const LOCKED_ATTEMPTS: usize = 1000;

async fn attempts_against_a_locked_account_write_no_audit_row_each(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let mut config = common::config_for(&db);
    config.login_max_failures = 3;
    let server = TestServer::start_with(config).await;
    let mut client = server.auth().await;
    register(&mut client, "alice").await;
    for _ in 0..3 {
        assert_eq!(
            code_of(&mut client, "alice", "wrong password").await,
            Code::Unauthenticated
        );
    }
    let before = all_audit_rows(&db).await;
    let started = std::time::Instant::now();
    let mut calls = Vec::new();
    for i in 0..LOCKED_ATTEMPTS {
        let mut client = client.clone();
        let login = if i % 2 == 0 {
            "alice"
        } else {
            "alice@example.com"
        };
        calls.push(tokio::spawn(async move {
            code_of(&mut client, login, "wrong password").await
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
    let after = all_audit_rows(&db).await;
    eprintln!(
        "{backend:?}: {LOCKED_ATTEMPTS} attempts against a locked account wrote {} audit rows in {elapsed:?}",
        after - before
    );
    assert!(after - before <= 1, "{} audit rows", after - before);
    assert_eq!(
        audit_rows(&db, "login", &["failed", "failed_and_locked"]).await,
        3,
        "no password was checked while locked"
    );
}

async fn repeated_lockouts_grow_and_a_success_resets_them(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let mut config = common::config_for(&db);
    config.login_max_failures = 2;
    config.login_lockout = Duration::from_secs(60);
    let clock = Clock::manual();
    let (mut client, server) = start_on_clock(config, clock.clone()).await;
    register(&mut client, "alice").await;
    let lock = |client: &mut Client| {
        let mut client = client.clone();
        async move {
            for _ in 0..2 {
                assert_eq!(
                    code_of(&mut client, "alice", "wrong password").await,
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
        lock(&mut client).await;
        let login = if i % 2 == 0 {
            "alice"
        } else {
            "alice@example.com"
        };
        let length = secs(retry_after(&mut client, login).await);
        lengths.push(length);
        clock.advance(Duration::from_secs(length + 1));
    }
    assert_eq!(lengths, [60, 120, 240, 480, 480, 480]);
    // A success forgets it all: the next lockout is the first again.
    assert_eq!(code_of(&mut client, "alice", PASSWORD).await, Code::Ok);
    lock(&mut client).await;
    assert_eq!(secs(retry_after(&mut client, "alice").await), 60);
    // So does a quiet lockout's length after a lock ends.
    clock.advance(Duration::from_secs(61));
    lock(&mut client).await;
    assert_eq!(secs(retry_after(&mut client, "alice").await), 120);
    clock.advance(Duration::from_secs(120 + 120 + 1));
    lock(&mut client).await;
    assert_eq!(secs(retry_after(&mut client, "alice").await), 60);
    // The aggregate: one login/throttled row per lockout, however many were refused.
    let throttled = audit_rows(&db, "login", &["throttled"]).await;
    let locks = audit_rows(&db, "login", &["failed_and_locked"]).await;
    // Nine lockouts, each tried (once) while locked.
    assert_eq!((throttled, locks), (9, 9));
    server.stop().await;
}

/// A database upgraded from the name-keyed counters keeps their lockouts, now on
/// the account: a lockout running by email holds for the username too.
async fn an_upgrade_moves_running_counters_to_their_account(backend: Backend) {
    use authd_migrations::{Migrator, MigratorTrait};
    use sqlx::Row;
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
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
    let server = TestServer::start(&db).await;
    let mut client = server.auth().await;
    assert_eq!(
        code_of(&mut client, "alice", PASSWORD).await,
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

async fn login_racing_deactivation_leaves_no_live_session(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    let (_, admin) = admin_token(&db, &server, "root").await;
    let mut admin = server.admin(&admin.access_token).await;
    let mut client = server.auth().await;
    let (mut raced, mut leaked, mut leaky_rounds) = (0, 0, 0);
    for round in 0..RACE_ROUNDS {
        let name = format!("racer{round}");
        let user = register(&mut client, &name).await;
        let logins: Vec<_> = (0..4)
            .map(|_| {
                let (mut client, name) = (client.clone(), name.clone());
                tokio::spawn(async move {
                    client
                        .login(pb::LoginRequest {
                            username: name,
                            password: PASSWORD.into(),
                        })
                        .await
                        .map(|r| r.into_inner().tokens.expect("tokens"))
                })
            })
            .collect();
        // Deactivate while the logins hash (a hash takes tens of milliseconds).
        // Early rounds deactivate mid-login, later ones (up to 0.25 s) after some
        // or all of the logins are done.
        tokio::time::sleep(Duration::from_millis(3 * (round * round) as u64)).await;
        admin
            .set_user_active(pb::SetUserActiveRequest {
                user_id: user.id.clone(),
                active: false,
            })
            .await
            .expect("deactivate");
        let mut tokens = Vec::new();
        for login in logins {
            match login.await.expect("join") {
                Ok(pair) => tokens.push(pair),
                Err(status) => assert_eq!(status.code(), Code::PermissionDenied, "{status:?}"),
            }
        }
        // Reactivated, the user's sessions stay ended: deactivation ended them all,
        // including any a racing login started.
        admin
            .set_user_active(pb::SetUserActiveRequest {
                user_id: user.id.clone(),
                active: true,
            })
            .await
            .expect("reactivate");
        let mut leaked_here = 0;
        for pair in &tokens {
            raced += 1;
            let validated = validate(&mut client, &pair.access_token).await;
            let refreshed = client
                .refresh(pb::RefreshRequest {
                    refresh_token: pair.refresh_token.clone(),
                })
                .await;
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
        "{backend:?}: {raced} logins answered OK while racing deactivation; \
         {leaked} of their sessions outlived it, in {leaky_rounds} of {RACE_ROUNDS} rounds"
    );
    assert_eq!(
        leaked, 0,
        "sessions started by a login racing deactivation survived it"
    );
}

/// The race made certain: a deactivation has changed the user's row but not yet
/// committed (nor ended sessions) when a login checks the password. The login must
/// not start a session the deactivation cannot see; it waits and is refused.
async fn a_login_meeting_a_deactivation_in_progress_is_refused(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    let mut client = server.auth().await;
    let user = register(&mut client, "alice").await;
    let mut deactivation = db.sql().await;
    for statement in ["BEGIN", "UPDATE users SET active = $1 WHERE id = $2"] {
        let mut query = sqlx::query(statement);
        if statement.starts_with("UPDATE") {
            query = query.bind(false).bind(user.id.clone());
        }
        query.execute(&mut deactivation).await.expect(statement);
    }
    let login = {
        let mut client = client.clone();
        tokio::spawn(async move { code_of(&mut client, "alice", PASSWORD).await })
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
