//! Pruning (API.md, "Audit trail and retention"): rows that can no longer matter are
//! deleted in small batches by one replica at a time; rows that still matter stay.
//!
//! Most tests set rows up through a server on a manual clock, stop it, then move the
//! clock and run prune rounds directly on a `Store`, checking the tables and then
//! what a restarted server answers.

use std::time::{Duration, Instant};

use authd::{
    clock::Clock,
    config::ServeConfig,
    domain::retention::{Pruner, Round, RoundReport},
    grpc::pb,
    store::{AuditEvent, Store},
};
use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::helpers::{
    code, config_for, eventually, free_port, token_claims, Backend, TestApp, TestDb,
};

/// A pruner of its own on the test database, on `clock`.
async fn pruner(config: &ServeConfig, clock: &Clock) -> Pruner {
    store_and_pruner(config, clock).await.1
}

/// The store (for writes beside the pruner: same pools, same writer) and a
/// pruner on it.
async fn store_and_pruner(config: &ServeConfig, clock: &Clock) -> (Store, Pruner) {
    let store = Store::open(&config.database.settings())
        .await
        .expect("open the store");
    let pruner = Pruner::new(store.clone(), clock.clone(), config.retention_settings());
    (store, pruner)
}

/// One round, which must not be skipped (no other replica runs meanwhile).
async fn prune(pruner: &mut Pruner) -> RoundReport {
    match pruner
        .round(&CancellationToken::new())
        .await
        .expect("prune round")
    {
        Round::Pruned(report) => report,
        Round::Skipped => panic!("the prune round was skipped"),
    }
}

/// `SELECT COUNT(*) FROM table WHERE filter`.
async fn count_where(db: &TestDb, table: &str, filter: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(&format!("SELECT COUNT(*) FROM {table} WHERE {filter}"))
        .fetch_one(&mut db.sql().await)
        .await
        .expect("count rows")
}

fn session_of(tokens: &pb::TokenPair) -> String {
    token_claims(&tokens.access_token)["sid"]
        .as_str()
        .expect("sid")
        .to_owned()
}

async fn end_reason(db: &TestDb, session: &str) -> Option<String> {
    sqlx::query_scalar::<_, Option<String>>(&format!(
        "SELECT end_reason FROM sessions WHERE id = '{session}'"
    ))
    .fetch_one(&mut db.sql().await)
    .await
    .expect("session row")
}

/// Presenting the spent refresh token `spent` (`what`) again is refused and ends
/// `session` as reuse.
async fn reuse_ends_the_session(app: &TestApp, spent: &str, what: &str, session: &str) {
    let status = app.refresh(spent).await.expect_err(what);
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(
        end_reason(&app.db, session).await.as_deref(),
        Some("refresh_reuse")
    );
}
fn minutes(n: u64) -> Duration {
    Duration::from_secs(60 * n)
}

/// An ended session stays (with its refresh token) while one of its access tokens
/// may be unexpired, so a restarted server still refuses them; once they have all
/// expired (plus the margin) it goes. The live session and its refresh tokens stay
/// throughout, and the spent one is still recognised as reuse after pruning.
async fn an_ended_session_stays_while_its_tokens_may_be_valid(db: TestDb) {
    let mut app = TestApp::spawn_on_manual_clock(db, |c| {
        c.access_token_ttl = minutes(10);
        c.refresh_token_ttl = minutes(60);
        c.prune_interval = minutes(60);
    })
    .await;
    app.register("alice").await;
    let ended = app.login("alice").await;
    let live = app.login("alice").await;
    let refreshed = app.refresh(&live.refresh_token).await.expect("refresh");
    app.logout(&ended.refresh_token).await.expect("logout");
    app.stop().await;
    let (ended_sid, live_sid) = (session_of(&ended), session_of(&live));

    let mut pruner = pruner(app.config(), &app.clock).await;
    app.clock.advance(minutes(1));
    let report = prune(&mut pruner).await;
    assert_eq!(report.rows.total(), 0, "{report:?}");
    assert_eq!(app.db.count("sessions").await, 2);
    assert_eq!(app.db.count("refresh_tokens").await, 3);
    app.restart().await;
    let status = app
        .validate(&ended.access_token)
        .await
        .expect_err("the logged-out session's token");
    assert_eq!(status.code(), Code::Unauthenticated);
    app.validate(&refreshed.access_token)
        .await
        .expect("the live session's token");
    app.stop().await;

    // The ended session's last token expired at logout + 10 min.
    app.clock.advance(minutes(9) + Duration::from_secs(11));
    let report = prune(&mut pruner).await;
    assert_eq!((report.rows.sessions, report.rows.refresh_tokens), (1, 1));
    assert_eq!(
        count_where(&app.db, "sessions", &format!("id = '{ended_sid}'")).await,
        0
    );
    assert_eq!(
        count_where(
            &app.db,
            "refresh_tokens",
            &format!("session_id = '{live_sid}'")
        )
        .await,
        2,
        "the live session's spent and current refresh tokens stay"
    );
    pruner.release().await.expect("release the lease");

    app.restart().await;
    let next = app
        .refresh(&refreshed.refresh_token)
        .await
        .expect("the live session's current refresh token");
    reuse_ends_the_session(
        &app,
        &live.refresh_token,
        "a spent refresh token presented again",
        &live_sid,
    )
    .await;
    assert_eq!(
        code(app.validate(&next.access_token).await),
        Code::Unauthenticated,
        "the session ended on reuse"
    );
    app.stop().await;
}

/// A spent refresh token stays while it could have been honoured (so presenting it
/// again ends the session); once it was spent longer ago than a refresh token lives
/// and has expired, it goes, even from a live session, which carries on.
async fn spent_refresh_tokens_go_once_they_could_not_be_honoured_anyway(db: TestDb) {
    let mut app = TestApp::spawn_on_manual_clock(db, |c| {
        c.access_token_ttl = minutes(5);
        c.refresh_token_ttl = minutes(10);
        c.prune_interval = minutes(60);
    })
    .await;
    app.register("bob").await;
    let (first, second) = (app.login("bob").await, app.login("bob").await);
    app.refresh(&first.refresh_token).await.expect("refresh");
    let second_next = app.refresh(&second.refresh_token).await.expect("refresh");
    app.stop().await;
    let (first_sid, second_sid) = (session_of(&first), session_of(&second));

    let mut pruner = pruner(app.config(), &app.clock).await;
    app.clock.advance(minutes(5));
    assert_eq!(prune(&mut pruner).await.rows.total(), 0);
    assert_eq!(app.db.count("refresh_tokens").await, 4);
    pruner.release().await.expect("release the lease");
    app.restart().await;
    reuse_ends_the_session(&app, &first.refresh_token, "reuse", &first_sid).await;
    let second_last = app
        .refresh(&second_next.refresh_token)
        .await
        .expect("refresh the second session");
    app.stop().await;

    // 10 min 11 s after the first refreshes: the tokens spent then could no longer
    // be honoured, and the session that ended on reuse has no valid token left.
    app.clock.advance(minutes(5) + Duration::from_secs(11));
    let report = prune(&mut pruner).await;
    assert_eq!(report.rows.sessions, 1, "{report:?}");
    assert_eq!(app.db.count("sessions").await, 1);
    assert_eq!(
        count_where(&app.db, "sessions", &format!("id = '{first_sid}'")).await,
        0
    );
    assert_eq!(
        count_where(
            &app.db,
            "refresh_tokens",
            &format!("session_id = '{second_sid}'")
        )
        .await,
        2,
        "the token spent 5 min ago and the current one stay"
    );
    assert_eq!(app.db.count("refresh_tokens").await, 2);
    pruner.release().await.expect("release the lease");

    app.restart().await;
    let status = app
        .refresh(&second.refresh_token)
        .await
        .expect_err("a pruned refresh token");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(end_reason(&app.db, &second_sid).await, None, "still live");
    reuse_ends_the_session(
        &app,
        &second_next.refresh_token,
        "a spent refresh token kept for reuse detection",
        &second_sid,
    )
    .await;
    assert_eq!(
        code(app.refresh(&second_last.refresh_token).await),
        Code::Unauthenticated,
        "the current refresh token of a session ended on reuse"
    );
    app.stop().await;
}

/// Past its absolute end (plus the margin) a session goes with its refresh tokens,
/// ended or not; an ended session with no recorded token bound (ended before the
/// bound existed) is kept until then too.
async fn sessions_past_their_absolute_end_go_whether_ended_or_not(db: TestDb) {
    let mut app = TestApp::spawn_on_manual_clock(db, |c| {
        c.access_token_ttl = minutes(5);
        c.session_max_ttl = minutes(20);
        c.prune_interval = minutes(60);
    })
    .await;
    app.register("carol").await;
    let never_ended = app.login("carol").await;
    let ended = app.login("carol").await;
    app.logout(&ended.refresh_token).await.expect("logout");
    app.stop().await;
    app.db
        .execute(&format!(
            "UPDATE sessions SET tokens_expire_by = NULL WHERE id = '{}'",
            session_of(&ended)
        ))
        .await;

    let mut pruner = pruner(app.config(), &app.clock).await;
    app.clock.advance(minutes(19));
    let report = prune(&mut pruner).await;
    assert_eq!(
        (report.rows.sessions, report.rows.refresh_tokens),
        (0, 0),
        "{report:?}"
    );
    assert_eq!(app.db.count("sessions").await, 2);
    app.clock.advance(minutes(1) + Duration::from_secs(11));
    let report = prune(&mut pruner).await;
    assert_eq!(
        (report.rows.sessions, report.rows.refresh_tokens),
        (2, 2),
        "{report:?}"
    );
    assert_eq!(app.db.count("refresh_tokens").await, 0);
    drop(never_ended);
}

/// Login-failure rows go once their last failure is older than the lockout and no
/// lock is in force; change rows after the access-token lifetime plus 10 min; audit
/// rows after `AUTHD_AUDIT_RETENTION`. Younger rows stay.
async fn stale_failures_old_changes_and_old_audit_rows_go(db: TestDb) {
    let mut config = config_for(&db);
    config.login_lockout = minutes(5);
    config.access_token_ttl = minutes(15);
    config.audit_retention = minutes(60);
    let clock = Clock::manual();
    let mut pruner = pruner(&config, &clock).await;
    let now = clock.now_ms();
    let (minute, lockout) = (60_000, 5 * 60_000);
    let failures = [
        ("recent", "NULL".to_owned(), now - minute, true),
        ("stale", "NULL".to_owned(), now - lockout - minute, false),
        ("locked", (now + minute).to_string(), now - 4 * minute, true),
        (
            "lock_just_ended",
            (now - 5_000).to_string(),
            now - lockout - 5_000,
            true,
        ),
        (
            "lock_ended",
            (now - 20_000).to_string(),
            now - lockout - 20_000,
            false,
        ),
    ];
    for (name, locked_until, updated_at, _) in &failures {
        db.execute(&format!(
            "INSERT INTO login_failures (username_lc, failures, locked_until, updated_at) \
                 VALUES ('{name}', 3, {locked_until}, {updated_at})"
        ))
        .await;
    }
    for (subject, at) in [("old", now - 26 * minute), ("young", now - 24 * minute)] {
        db.execute(&format!(
            "INSERT INTO changes (kind, subject, created_at) VALUES ('user', '{subject}', {at})"
        ))
        .await;
    }
    for (detail, at) in [("old", now - 61 * minute), ("young", now - 59 * minute)] {
        db.execute(&format!(
            "INSERT INTO audit_events (at, action, outcome, detail) \
                 VALUES ({at}, 'login', 'failed', '{detail}')"
        ))
        .await;
    }

    let report = prune(&mut pruner).await;
    assert_eq!(
        (
            report.rows.login_failures,
            report.rows.changes,
            report.rows.audit_events
        ),
        (2, 1, 1),
        "{report:?}"
    );
    for (name, _, _, kept) in failures {
        let left = count_where(&db, "login_failures", &format!("username_lc = '{name}'")).await;
        assert_eq!(left == 1, kept, "{name}");
    }
    assert_eq!(count_where(&db, "changes", "subject = 'young'").await, 1);
    assert_eq!(db.count("changes").await, 1);
    assert_eq!(
        count_where(&db, "audit_events", "detail = 'young'").await,
        1
    );
    assert_eq!(db.count("audit_events").await, 1);
}

/// 20,000 throttling rows for random usernames (what 20,000 guesses at names leave
/// behind) are deleted by one round, 500 at a time; recent ones stay. Writes made
/// meanwhile through the same store (on SQLite: the same one writer connection)
/// wait at most for one batch, never for the round.
async fn twenty_thousand_stale_login_failures_go_in_batches(db: TestDb) {
    let config = config_for(&db);
    let clock = Clock::manual();
    let (store, mut pruner) = store_and_pruner(&config, &clock).await;
    let stale_at = clock.now_ms() - 60 * 60_000;
    insert_failures(&db, 20_000, stale_at).await;
    insert_failures(&db, 10, clock.now_ms()).await;
    let before = db.count("login_failures").await;
    assert_eq!(before, 20_010);

    let pruning = CancellationToken::new();
    let writer = tokio::spawn({
        let (store, pruning, now) = (store.clone(), pruning.clone(), clock.now_ms());
        async move {
            let (mut writes, mut slowest) = (0u32, Duration::ZERO);
            while !pruning.is_cancelled() {
                let started = Instant::now();
                store
                    .insert_audit(AuditEvent {
                        at: now,
                        action: "login",
                        outcome: "failed",
                        actor: None,
                        subject: None,
                        peer: None,
                        peer_identity: None,
                        detail: Some(format!("write {writes} beside the pruner")),
                    })
                    .await
                    .expect("a write beside the pruner");
                slowest = slowest.max(started.elapsed());
                writes += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (writes, slowest)
        }
    });
    let started = Instant::now();
    let report = prune(&mut pruner).await;
    let took = started.elapsed();
    pruning.cancel();
    let (writes, slowest) = writer.await.expect("writer task");
    let after = db.count("login_failures").await;
    eprintln!(
        "{:?}: login_failures rows before {before}, after {after}; {writes} audit rows \
         written meanwhile; one round deleted {} in {} batches in {took:?}; slowest write \
         meanwhile {slowest:?}",
        db.backend(),
        report.rows.login_failures,
        report.batches
    );
    assert_eq!(report.rows.login_failures, 20_000);
    assert_eq!(after, 10);
    assert_eq!(db.count("audit_events").await, i64::from(writes));
    assert!(report.batches >= 40, "{report:?}");
    assert!(
        slowest < took / 2,
        "a write waited {slowest:?} during a {took:?} round"
    );
}

/// A session refreshed 20,000 times in a loop left a spent refresh token per
/// refresh; once spent longer ago than a refresh token lives they go, 500 at a
/// time, and the session and its current token stay.
async fn twenty_thousand_spent_refresh_tokens_go_and_the_live_session_stays(db: TestDb) {
    let mut app = TestApp::spawn_on_manual_clock(db, |c| {
        c.access_token_ttl = minutes(5);
        c.refresh_token_ttl = minutes(60);
    })
    .await;
    app.register("dave").await;
    let current = app.login("dave").await;
    app.stop().await;
    let session = session_of(&current);
    // Spent two hours ago, each after a minute of life.
    let spent_at = app.clock.now_ms() - 2 * 60 * 60_000;
    {
        use sqlx::Connection;
        let mut conn = app.db.sql().await;
        let mut txn = conn.begin().await.expect("begin");
        for chunk in 0..40 {
            let values: Vec<String> = (0..500)
                .map(|i| {
                    let hash = format!("{:064x}", chunk * 500 + i);
                    let issued = spent_at - 60_000;
                    format!(
                        "('{hash}', '{session}', {issued}, {}, {spent_at}, {})",
                        issued + 60 * 60_000,
                        issued + 5 * 60_000
                    )
                })
                .collect();
            sqlx::query(&format!(
                "INSERT INTO refresh_tokens \
                 (token_hash, session_id, issued_at, expires_at, spent_at, access_expires_at) \
                 VALUES {}",
                values.join(", ")
            ))
            .execute(&mut *txn)
            .await
            .expect("insert spent refresh tokens");
        }
        txn.commit().await.expect("commit");
    }
    let before = app.db.count("refresh_tokens").await;
    assert_eq!(before, 20_001);

    let mut pruner = pruner(app.config(), &app.clock).await;
    let started = Instant::now();
    let report = prune(&mut pruner).await;
    let took = started.elapsed();
    let after = app.db.count("refresh_tokens").await;
    eprintln!(
        "{:?}: refresh_tokens rows before {before}, after {after}; one round deleted \
         {} in {} batches in {took:?}",
        app.db.backend(),
        report.rows.refresh_tokens,
        report.batches
    );
    assert_eq!(report.rows.refresh_tokens, 20_000);
    assert_eq!(after, 1);
    assert_eq!(
        count_where(&app.db, "sessions", &format!("id = '{session}'")).await,
        1
    );
    pruner.release().await.expect("release the lease");
    app.restart().await;
    app.refresh(&current.refresh_token)
        .await
        .expect("the current refresh token still works");
    app.stop().await;
}

/// `n` rows for random usernames, last failure at `at`, in multi-row inserts.
async fn insert_failures(db: &TestDb, n: usize, at: i64) {
    use sqlx::Connection;
    let mut conn = db.sql().await;
    let mut txn = conn.begin().await.expect("begin");
    let names: Vec<String> = (0..n)
        .map(|_| format!("guess-{}", uuid::Uuid::new_v4().simple()))
        .collect();
    for chunk in names.chunks(500) {
        let values: Vec<String> = chunk
            .iter()
            .map(|name| format!("('{name}', 1, NULL, {at})"))
            .collect();
        sqlx::query(&format!(
            "INSERT INTO login_failures (username_lc, failures, locked_until, updated_at) VALUES {}",
            values.join(", ")
        ))
        .execute(&mut *txn)
        .await
        .expect("insert login failures");
    }
    txn.commit().await.expect("commit");
}

/// The value of one counter series in a Prometheus text page (0 when absent).
fn counter(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn metrics_page(http: &str) -> String {
    reqwest::get(format!("http://{http}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body")
}

/// Two replicas on one database: the one that started first prunes and the other
/// skips every round; when the first stops, the second takes over at once.
async fn one_replica_prunes_at_a_time_and_another_takes_over(db: TestDb) {
    let mut app = TestApp::spawn_with(db, |c| c.prune_interval = Duration::from_millis(100)).await;
    let http = format!("127.0.0.1:{}", free_port());
    let _second = app
        .replica(&[
            ("AUTHD_PRUNE_INTERVAL", "100ms"),
            ("AUTHD_HTTP_LISTEN", &http),
        ])
        .await;
    let stale_at = chrono::Utc::now().timestamp_millis() - 60 * 60_000;
    insert_failures(&app.db, 300, stale_at).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            app.db.count("login_failures").await == 0
        })
        .await
        .is_some(),
        "the first replica pruned"
    );
    let skipped = r#"authd_prune_rounds_total{outcome="skipped"}"#;
    let pruned = r#"authd_prune_rounds_total{outcome="pruned"}"#;
    eventually(Duration::from_secs(5), || async {
        counter(&metrics_page(&http).await, skipped) >= 3.0
    })
    .await;
    let page = metrics_page(&http).await;
    assert!(counter(&page, skipped) >= 3.0, "{page}");
    assert_eq!(counter(&page, pruned), 0.0, "{page}");
    match app.db.backend() {
        Backend::Postgres => assert_eq!(
            count_where(
                &app.db,
                "pg_locks",
                "locktype = 'advisory' AND granted AND classid = 1635087464 \
                 AND objid = 1677721606 AND database = \
                 (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
            .await,
            1,
            "one session holds advisory lock 6"
        ),
        Backend::Sqlite => assert_eq!(
            count_where(
                &app.db,
                "leases",
                &format!("name = 'prune' AND holder LIKE '{}/%'", std::process::id())
            )
            .await,
            1,
            "this process holds the lease"
        ),
    }

    app.stop().await;
    insert_failures(&app.db, 300, stale_at).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            app.db.count("login_failures").await == 0
        })
        .await
        .is_some(),
        "the second replica took pruning over"
    );
    // A round is counted when it ends, a moment after its rows are gone.
    eventually(Duration::from_secs(5), || async {
        counter(&metrics_page(&http).await, pruned) >= 1.0
    })
    .await;
    let page = metrics_page(&http).await;
    assert!(counter(&page, pruned) >= 1.0, "{page}");
    assert!(page.contains("# HELP authd_pruned_rows_total"), "{page}");
    assert!(
        counter(&page, r#"authd_pruned_rows_total{table="login_failures"}"#) >= 300.0,
        "{page}"
    );
}

/// Reset and verification tokens go once expired (by the margin); live ones stay
/// and still work.
async fn expired_account_tokens_go(db: TestDb) {
    let mut app = TestApp::spawn_on_manual_clock(db, |c| {
        c.password_reset_ttl = Duration::from_secs(25);
        c.email_verification_ttl = Duration::from_secs(25);
        c.prune_interval = minutes(60);
    })
    .await;
    let root = app.admin().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    root.create_password_reset_token(&alice.id)
        .await
        .expect("alice's");
    root.create_email_verification_token(&alice.id)
        .await
        .expect("alice's");
    app.clock.advance(Duration::from_secs(20));
    tokio::time::sleep(Duration::from_millis(400)).await; // the feed catches up
    let bobs = root
        .create_password_reset_token(&bob.id)
        .await
        .expect("bob's");
    app.clock.advance(Duration::from_secs(16)); // alice's expired 11 s ago
    app.stop().await; // its own pruner holds the lease

    let mut pruner = pruner(app.config(), &app.clock).await;
    let report = prune(&mut pruner).await;
    assert_eq!(report.rows.account_tokens, 2, "{report:?}");
    assert_eq!(app.db.count("account_tokens").await, 1);
    assert_eq!(
        count_where(
            &app.db,
            "account_tokens",
            &format!("user_id = '{}'", bob.id)
        )
        .await,
        1
    );
    drop(pruner);
    app.restart().await;
    app.reset_password(&bobs.reset_token, "a brand new passphrase")
        .await
        .expect("a live token still works");
}

/// Second-factor login challenges go once expired (by the margin); a live one stays.
async fn expired_mfa_challenges_go(db: TestDb) {
    let app = TestApp::spawn_on_manual_clock(db, |c| c.prune_interval = minutes(60)).await;
    let alice = app.register("alice").await;
    let now = app.clock.now_ms();
    for (hash, expires_at) in [
        ("a".repeat(64), now - 60_000),
        ("b".repeat(64), now - 120_000),
        ("c".repeat(64), now + 300_000),
    ] {
        sqlx::query(&format!(
            "INSERT INTO mfa_challenges (token_hash, user_id, expires_at, failures) \
             VALUES ('{hash}', '{}', {expires_at}, 0)",
            alice.id
        ))
        .execute(&mut app.db.sql().await)
        .await
        .expect("insert");
    }
    let mut app = app;
    app.stop().await; // its own pruner holds the lease
    let mut pruner = pruner(app.config(), &app.clock).await;
    let report = prune(&mut pruner).await;
    assert_eq!(report.rows.mfa_challenges, 2, "{report:?}");
    assert_eq!(app.db.count("mfa_challenges").await, 1);
    assert_eq!(
        count_where(
            &app.db,
            "mfa_challenges",
            &format!("token_hash = '{}'", "c".repeat(64))
        )
        .await,
        1
    );
}

on_both_databases!(
    expired_mfa_challenges_go,
    expired_account_tokens_go,
    an_ended_session_stays_while_its_tokens_may_be_valid,
    spent_refresh_tokens_go_once_they_could_not_be_honoured_anyway,
    sessions_past_their_absolute_end_go_whether_ended_or_not,
    stale_failures_old_changes_and_old_audit_rows_go,
    twenty_thousand_stale_login_failures_go_in_batches,
    twenty_thousand_spent_refresh_tokens_go_and_the_live_session_stays,
    one_replica_prunes_at_a_time_and_another_takes_over,
);
