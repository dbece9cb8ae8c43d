//! Prometheus metrics after real traffic, in the gRPC ecosystem's names (API.md
//! "Observability"): `grpc_server_*` with `grpc_service`, `grpc_method`,
//! `grpc_type` and `grpc_code`, a `# HELP` for every family, process metrics,
//! `authd_database_up`, `authd_audit_events_total{action,outcome}`, the change
//! feed and the token cache.
//!
//! The recorder is process-wide, so the other tests' traffic shows here too (there
//! is no per-server label): what is checked is what this test's own calls must
//! have added, as the difference between a scrape before and one after.

use std::{collections::BTreeSet, time::Duration};

use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

use crate::helpers::{eventually, TestApp, TestDb};

/// One `/metrics` body.
pub(crate) struct Scrape(pub(crate) String);

/// One sample line: `name{labels} value`.
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Scrape {
    pub(crate) async fn of(app: &TestApp) -> Scrape {
        Scrape::at(app.http_addr()).await
    }

    /// The metrics of the server whose HTTP listener is at `http_addr`.
    pub(crate) async fn at(http_addr: std::net::SocketAddr) -> Scrape {
        let response = reqwest::get(format!("http://{http_addr}/metrics"))
            .await
            .expect("GET /metrics");
        assert!(response.status().is_success(), "{response:?}");
        Scrape(response.text().await.expect("body"))
    }

    /// The sum of the samples named `name` whose labels include all of `labels`;
    /// `None` when there is no such sample.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = None;
        for sample in self.samples() {
            if sample.name == name
                && labels
                    .iter()
                    .all(|(k, v)| sample.labels.iter().any(|(sk, sv)| sk == k && sv == v))
            {
                *found.get_or_insert(0.0) += sample.value;
            }
        }
        found
    }

    /// [`Scrape::value`], 0 when absent (a counter not yet incremented).
    pub(crate) fn count(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or(0.0)
    }

    fn samples(&self) -> Vec<Sample> {
        self.0
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .map(|line| {
                let (series, value) = line.rsplit_once(' ').expect("sample value");
                let value: f64 = value.parse().expect("numeric sample");
                let (name, labels) = match series.split_once('{') {
                    None => (series.to_owned(), Vec::new()),
                    Some((name, rest)) => {
                        let body = rest.strip_suffix('}').expect("closing brace");
                        let labels = body
                            .split("\",")
                            .filter(|pair| !pair.is_empty())
                            .map(|pair| {
                                let (k, v) = pair.split_once("=\"").expect("label pair");
                                (k.to_owned(), v.trim_end_matches('"').to_owned())
                            })
                            .collect();
                        (name.to_owned(), labels)
                    }
                };
                Sample {
                    name,
                    labels,
                    value,
                }
            })
            .collect()
    }

    /// The families that have a `# TYPE` line, and those that have a `# HELP` line.
    fn families(&self) -> (BTreeSet<&str>, BTreeSet<&str>) {
        let named = |prefix: &str| {
            self.0
                .lines()
                .filter_map(|line| line.strip_prefix(prefix))
                .filter_map(|rest| rest.split_whitespace().next())
                .collect::<BTreeSet<_>>()
        };
        (named("# TYPE "), named("# HELP "))
    }
}

const LOGIN: [(&str, &str); 3] = [
    ("grpc_service", "auth.v1.AuthService"),
    ("grpc_method", "Login"),
    ("grpc_type", "unary"),
];

fn with<'a>(labels: &[(&'a str, &'a str)], more: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    labels.iter().chain(more).copied().collect()
}

async fn grpc_metrics_use_the_ecosystem_names_labels_and_codes(app: TestApp) {
    app.register("alice").await;
    let before = Scrape::of(&app).await;
    let tokens = app.login("alice").await;
    let _ = app.login_with("alice", "wrong password").await;
    // The first validation verifies the signature, the second is a cache hit.
    app.validate(&tokens.access_token).await.expect("valid");
    app.validate(&tokens.access_token).await.expect("valid");
    let after = Scrape::of(&app).await;
    let grew = |name: &str, labels: &[(&str, &str)]| {
        after.count(name, labels) - before.count(name, labels)
    };

    assert!(
        grew("grpc_server_started_total", &LOGIN) >= 2.0,
        "two Logins started:\n{}",
        after.0
    );
    assert!(
        grew(
            "grpc_server_handled_total",
            &with(&LOGIN, &[("grpc_code", "OK")])
        ) >= 1.0
    );
    assert!(
        grew(
            "grpc_server_handled_total",
            &with(&LOGIN, &[("grpc_code", "Unauthenticated")])
        ) >= 1.0,
        "codes are spelled as grpc-go spells them:\n{}",
        after.0
    );
    assert!(grew("grpc_server_handling_seconds_count", &LOGIN) >= 2.0);
    assert!(
        grew(
            "grpc_server_handling_seconds_bucket",
            &with(&LOGIN, &[("le", "+Inf")])
        ) >= 2.0
    );
    assert!(after
        .value("grpc_server_handling_seconds_sum", &LOGIN)
        .is_some());
    let validate = [
        ("grpc_service", "auth.v1.AuthService"),
        ("grpc_method", "ValidateToken"),
        ("grpc_type", "unary"),
        ("grpc_code", "OK"),
    ];
    assert!(grew("grpc_server_handled_total", &validate) >= 2.0);
    // The handled counter carries the code; started and the histogram do not.
    for Sample { name, labels, .. } in after.samples() {
        if name.starts_with("grpc_server_") {
            let keys: Vec<&str> = labels.iter().map(|(k, _)| k.as_str()).collect();
            for key in ["grpc_service", "grpc_method", "grpc_type"] {
                assert!(keys.contains(&key), "{name} {labels:?} has no {key}");
            }
            assert_eq!(
                keys.contains(&"grpc_code"),
                name == "grpc_server_handled_total",
                "{name} {labels:?}"
            );
        }
    }
    // The old names and upper-case codes are gone.
    assert!(!after.0.contains("authd_requests_total"), "{}", after.0);
    assert!(!after.0.contains("grpc_code=\"UNAUTHENTICATED\""));

    // The token cache: one miss and one hit at least.
    assert!(grew("authd_token_cache_misses_total", &[]) >= 1.0);
    assert!(grew("authd_token_cache_hits_total", &[]) >= 1.0);
    // Audit events by action and outcome.
    assert!(
        grew(
            "authd_audit_events_total",
            &[("action", "login"), ("outcome", "ok")]
        ) >= 1.0
    );
    assert!(
        grew(
            "authd_audit_events_total",
            &[("action", "login"), ("outcome", "failed")]
        ) >= 1.0,
        "{}",
        after.0
    );

    // (A gauge of the process: the PostgreSQL outage test may be moving it.)
    assert!(after.value("authd_database_up", &[]).is_some());
    for family in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
        "process_threads",
    ] {
        assert!(
            after.value(family, &[]).is_some(),
            "{family} missing:\n{}",
            after.0
        );
    }
    assert!(after.count("process_resident_memory_bytes", &[]) > 0.0);
    for gauge in [
        "authd_hash_queue_depth",
        "authd_hash_queue_capacity",
        "authd_hash_in_flight",
        "authd_live_sessions",
        "authd_token_cache_entries",
        "authd_view_staleness_seconds",
        "authd_db_pool_connections",
        "authd_build_info",
    ] {
        assert!(
            after.value(gauge, &[]).is_some(),
            "{gauge} missing:\n{}",
            after.0
        );
    }
    assert!(after.value("authd_hash_queue_capacity", &[]) == Some(1024.0));

    // Every family has its HELP line.
    let (typed, helped) = after.families();
    let missing: Vec<_> = typed.difference(&helped).collect();
    assert!(missing.is_empty(), "families without # HELP: {missing:?}");
    assert!(typed.contains("grpc_server_handled_total") && typed.len() > 20);
}

/// A server stream is handled when it ends, and is timed to its end: a health
/// `Watch` held open for a while and then cancelled by the client.
async fn a_watch_stream_is_measured_to_its_end(app: TestApp) {
    let watch = [
        ("grpc_service", "grpc.health.v1.Health"),
        ("grpc_method", "Watch"),
        ("grpc_type", "server_stream"),
    ];
    let before = Scrape::of(&app).await;
    let mut health = HealthClient::new(app.channel().await);
    let mut stream = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = stream.message().await.expect("message").expect("a status");
    assert_eq!(first.status, 1, "SERVING");
    let open = Scrape::of(&app).await;
    assert!(
        open.count("grpc_server_started_total", &watch)
            - before.count("grpc_server_started_total", &watch)
            >= 1.0,
        "started counts the stream as it opens"
    );
    const HELD: Duration = Duration::from_millis(600);
    tokio::time::sleep(HELD).await;
    drop(stream); // The client cancels: the server sees the stream reset.

    let ended = eventually(Duration::from_secs(5), || {
        let (app, before) = (&app, &before);
        async move {
            let now = Scrape::of(app).await;
            now.count("grpc_server_handling_seconds_count", &watch)
                > before.count("grpc_server_handling_seconds_count", &watch)
        }
    })
    .await;
    assert!(ended.is_some(), "the cancelled Watch was never recorded");
    let after = Scrape::of(&app).await;
    let took = after.count("grpc_server_handling_seconds_sum", &watch)
        - before.count("grpc_server_handling_seconds_sum", &watch);
    assert!(
        took >= HELD.as_secs_f64(),
        "the Watch was timed to its headers ({took} s), not to its end"
    );
    assert!(
        after.count(
            "grpc_server_handled_total",
            &with(&watch, &[("grpc_code", "Canceled")])
        ) - before.count(
            "grpc_server_handled_total",
            &with(&watch, &[("grpc_code", "Canceled")])
        ) >= 1.0,
        "{}",
        after.0
    );
}

/// What alerts watch: lockouts and refresh-token reuse, counted by the audit
/// trail; and the change feed applying a logout.
async fn lockouts_refresh_reuse_and_the_change_feed_are_counted(db: TestDb) {
    let app = TestApp::spawn_with(db, |c| c.login_max_failures = 3).await;
    let locked = [("action", "login"), ("outcome", "failed_and_locked")];
    let reuse = [("action", "refresh_reuse"), ("outcome", "session_ended")];
    app.register("alice").await;
    app.register("bob").await;
    let before = Scrape::of(&app).await;

    for _ in 0..3 {
        let _ = app.login_with("alice", "wrong password").await;
    }
    let stolen = app.login("bob").await;
    let _rotated = app.refresh(&stolen.refresh_token).await.expect("refresh");
    let _ = app
        .refresh(&stolen.refresh_token)
        .await
        .expect_err("reuse ends the session");
    let other = app.login("bob").await;
    app.logout(&other.refresh_token).await.expect("logout");

    // The poller applies the changes (its own ones too) within a few polls.
    let counted = eventually(Duration::from_secs(5), || {
        let (app, before) = (&app, &before);
        async move {
            let now = Scrape::of(app).await;
            now.count("authd_change_feed_lag_seconds_count", &[])
                > before.count("authd_change_feed_lag_seconds_count", &[])
        }
    })
    .await;
    assert!(counted.is_some(), "no change-feed lag recorded");
    let after = Scrape::of(&app).await;
    let grew = |name: &str, labels: &[(&str, &str)]| {
        after.count(name, labels) - before.count(name, labels)
    };
    assert!(
        grew("authd_audit_events_total", &locked) >= 1.0,
        "{}",
        after.0
    );
    assert!(
        grew("authd_audit_events_total", &reuse) >= 1.0,
        "{}",
        after.0
    );
    assert!(grew("authd_change_feed_applied_total", &[]) >= 1.0);
}

on_both_databases!(
    grpc_metrics_use_the_ecosystem_names_labels_and_codes,
    lockouts_refresh_reuse_and_the_change_feed_are_counted
);
on_sqlite!(a_watch_stream_is_measured_to_its_end);

/// While PostgreSQL refuses this replica, `authd_database_up` is 0 and failed polls
/// are counted; both recover.
async fn database_down_shows_in_database_up_and_feed_errors(db: TestDb) {
    let app = TestApp::spawn_with(db, |c| {
        c.database.database_timeout = Duration::from_secs(1);
    })
    .await;
    let before = Scrape::of(&app).await;
    assert_eq!(before.value("authd_database_up", &[]), Some(1.0));
    crate::outage::set_database_reachable(&app.db, false).await;
    // A failed write can mark the database down before the next feed poll fails, so
    // wait for each on its own.
    let down = eventually(Duration::from_secs(10), || {
        let app = &app;
        async move { Scrape::of(app).await.value("authd_database_up", &[]) == Some(0.0) }
    })
    .await;
    let errors_before = before.count("authd_change_feed_errors_total", &[]);
    let failed_polls = eventually(Duration::from_secs(10), || {
        let app = &app;
        async move {
            Scrape::of(app)
                .await
                .count("authd_change_feed_errors_total", &[])
                > errors_before
        }
    })
    .await;
    let during = Scrape::of(&app).await;
    crate::outage::set_database_reachable(&app.db, true).await;
    assert!(down.is_some(), "authd_database_up stayed 1:\n{}", during.0);
    assert!(
        failed_polls.is_some(),
        "no failed poll was counted:\n{}",
        during.0
    );
    let up = eventually(Duration::from_secs(15), || {
        let app = &app;
        async move { Scrape::of(app).await.value("authd_database_up", &[]) == Some(1.0) }
    })
    .await;
    assert!(up.is_some(), "authd_database_up did not come back to 1");
}

on_postgres!(database_down_shows_in_database_up_and_feed_errors);
