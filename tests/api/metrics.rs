//! Prometheus metrics after real traffic. The recorder is process-wide, so the
//! other tests' traffic shows here too: what is checked is what this test's own
//! calls must have produced.

use crate::helpers::TestApp;

async fn metrics_count_requests_by_method_and_code_with_latency_histograms(app: TestApp) {
    app.register("alice").await;
    app.login("alice").await;
    let _ = app.login_with("alice", "wrong password").await;

    let body = reqwest::get(format!("http://{}/metrics", app.http_addr()))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("body");
    let has = |needle: &str| {
        body.lines()
            .any(|line| line.starts_with(needle) || line.contains(needle))
    };
    assert!(
        has(r#"authd_requests_total{method="auth.v1.AuthService/Login",code="OK"}"#),
        "Login OK counter missing:\n{body}"
    );
    assert!(has(
        r#"authd_requests_total{method="auth.v1.AuthService/Login",code="UNAUTHENTICATED"}"#
    ));
    assert!(has(
        r#"authd_request_duration_seconds_bucket{method="auth.v1.AuthService/Login",le="0.005"}"#
    ));
    assert!(has(
        r#"authd_request_duration_seconds_count{method="auth.v1.AuthService/Login"}"#
    ));
    for gauge in [
        "authd_hash_queue_depth",
        "authd_hash_wait_seconds_bucket",
        "authd_live_sessions",
        "authd_view_staleness_seconds",
        "authd_db_pool_connections{state=\"idle\"}",
        "authd_build_info{version=",
    ] {
        assert!(has(gauge), "{gauge} missing:\n{body}");
    }
}

on_both_databases!(metrics_count_requests_by_method_and_code_with_latency_histograms);
