//! Logs and metrics. Logs: a tracing subscriber writing text for people or JSON for
//! log pipelines. Metrics: the `metrics` facade with a Prometheus recorder, rendered
//! by the HTTP side at `/metrics`, every family described (`# HELP`) in
//! [`describe_metrics`], plus the process metrics of `metrics-process`.
//! `RUST_LOG` overrides the default level (info), under a ceiling it cannot lift for
//! the database crates (see [`secret_ceiling`]). Nothing logged here or anywhere
//! carries a password, token or hash: those live in redacting types.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{
    filter::{LevelFilter, Targets},
    fmt,
    prelude::*,
    EnvFilter, Layer,
};

use crate::traces::Traces;

/// How log lines are written (`AUTHD_LOG_FORMAT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// For people.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Installs the global subscriber: logs in `format`, and spans exported to
/// `otlp_endpoint` when one is given (see `traces.rs`; call it inside the Tokio
/// runtime then). Safe to call more than once (later calls are ignored), which tests
/// rely on.
pub fn init(format: LogFormat, otlp_endpoint: Option<&str>) -> anyhow::Result<Option<Traces>> {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sea_orm_migration=warn,sqlx=warn"));
    let (exporting, traces) = match otlp_endpoint {
        Some(endpoint) => {
            let (layer, traces) = crate::traces::layer(endpoint)?;
            (Some(layer), Some(traces))
        }
        None => (None, None),
    };
    // Colour only for a person at a terminal, never into files or pipes.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let _ = match exporting {
        // The level filter stays global: the hot path's debug-level spans are then
        // never created at all (a span the registry creates and a per-layer filter
        // then ignores costs about 20 µs of a 15 µs call).
        None => tracing_subscriber::registry()
            .with(secret_ceiling())
            .with(filter)
            .with(log_layer(format, colour))
            .try_init(),
        // The level filter belongs to the logs alone, so the exporter sees the hot
        // path's debug-level rpc spans without their showing up in the logs.
        Some(exporting) => tracing_subscriber::registry()
            .with(secret_ceiling())
            .with(exporting)
            .with(log_layer(format, colour).with_filter(filter))
            .try_init(),
    };
    Ok(traces)
}

/// The log lines: text for people or JSON for pipelines, on stderr.
fn log_layer<S>(format: LogFormat, colour: bool) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    match format {
        LogFormat::Text => fmt::layer()
            .with_ansi(colour)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_writer(std::io::stderr)
            .boxed(),
    }
}

/// The most verbose level each database crate may ever log at, whatever `RUST_LOG`
/// says: a separate filter, so no directive of the user's (not even a more specific
/// one like `sea_orm::driver=trace`) can raise it.
///
/// sea-orm's drivers wrap every statement in a trace-level span that records the
/// statement *with its bound values*; any event inside it (sqlx's debug-level query
/// log, say) then prints them: password hashes, the SHA-256 of refresh tokens and
/// API keys, the private signing key. Below warn these crates have nothing else an
/// operator needs (sqlx's slow-statement warning carries the SQL text alone), so
/// the ceiling costs nothing. sea-orm-migration's info lines name the migrations
/// applied, which is worth keeping; they run through sea-orm, capped above.
fn secret_ceiling() -> Targets {
    Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_target("sea_orm", LevelFilter::WARN)
        .with_target("sea_orm_migration", LevelFilter::INFO)
        .with_target("sqlx", LevelFilter::WARN)
}

/// Latency buckets in seconds: from a cached ValidateToken to a slow login.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The process-wide Prometheus recorder (the `metrics` macros report to one global
/// recorder), installed on first use. `None` if another recorder was installed first.
pub fn metrics() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe_metrics();
            metrics::gauge!("authd_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            Some(handle)
        })
        .as_ref()
}

/// The process metrics (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
/// `process_open_fds`, …), as Prometheus' own clients name them.
fn process_collector() -> &'static metrics_process::Collector {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR.get_or_init(metrics_process::Collector::default)
}

/// Reads the process metrics now (at scrape time).
pub fn sample_process() {
    process_collector().collect();
}

/// The `# HELP` line of every metric family authd writes. Each family is recorded
/// where it happens; its description lives here, so one list shows them all (a
/// test checks that every family on `/metrics` has one).
fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};

    // The gRPC ecosystem's server metrics (src/grpc/metrics.rs), as go-grpc-middleware
    // describes them.
    describe_counter!(
        "grpc_server_started_total",
        "Total number of RPCs started on the server."
    );
    describe_counter!(
        "grpc_server_handled_total",
        "Total number of RPCs completed on the server, regardless of success or failure."
    );
    describe_histogram!(
        "grpc_server_handling_seconds",
        "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server; streams to their end."
    );

    describe_gauge!(
        "authd_build_info",
        "Always 1; the version of authd in its label."
    );
    describe_gauge!(
        "authd_database_up",
        "1 while the database answers this replica's change-feed polls and takes its writes, else 0."
    );
    describe_counter!(
        "authd_audit_events_total",
        "Audit events recorded, by action and outcome (lockouts are action=login outcome=failed_and_locked; refresh reuse is action=refresh_reuse)."
    );
    describe_gauge!(
        "authd_view_staleness_seconds",
        "Seconds since the memory views last synced with the database."
    );
    describe_histogram!(
        "authd_change_feed_lag_seconds",
        "Seconds from a change's commit to this replica's change-feed poll applying it."
    );
    describe_counter!(
        "authd_change_feed_applied_total",
        "Changes applied by this replica's change-feed polls."
    );
    describe_counter!(
        "authd_change_feed_errors_total",
        "Change-feed polls or reloads that failed (the database did not answer)."
    );
    describe_gauge!(
        "authd_revocation_watchers",
        "WatchRevocations streams this replica serves now."
    );
    describe_counter!(
        "authd_revocation_watchers_dropped_total",
        "Revocation watchers ended because they fell a whole buffer behind the feed."
    );
    describe_counter!(
        "authd_token_cache_hits_total",
        "Access tokens answered from the verified-token cache."
    );
    describe_counter!(
        "authd_token_cache_misses_total",
        "Access tokens not in the verified-token cache, whose signature was checked."
    );
    describe_gauge!(
        "authd_token_cache_entries",
        "Verified access tokens held in the cache."
    );
    describe_gauge!(
        "authd_ended_sessions_tracked",
        "Ended sessions whose tokens may still be presented, held in memory."
    );
    describe_gauge!(
        "authd_live_sessions",
        "Sessions started and not ended, as far as this replica knows."
    );
    describe_gauge!(
        "authd_hash_queue_depth",
        "Password hashes waiting for a hashing worker."
    );
    describe_gauge!(
        "authd_hash_queue_capacity",
        "Password hashes that may wait for a worker (AUTHD_HASH_QUEUE); past it Login and Register answer RESOURCE_EXHAUSTED."
    );
    describe_gauge!(
        "authd_hash_in_flight",
        "Password hashes admitted: waiting for or holding a hashing worker."
    );
    describe_histogram!(
        "authd_hash_wait_seconds",
        "Seconds a password hash waited for a hashing worker."
    );
    describe_counter!(
        "authd_hash_rejected_total",
        "Password hashes refused at once because the hashing queue was full."
    );
    describe_gauge!(
        "authd_db_pool_connections",
        "Database connections in the pool, by state (idle, in_use)."
    );
    describe_counter!(
        "authd_connections_refused_total",
        "Connections closed at accept because the listener's connection limit was reached, by listener."
    );
    describe_counter!(
        "authd_tls_handshake_failures_total",
        "TLS handshakes that failed or did not finish within the header timeout, by listener."
    );
    describe_counter!(
        "authd_tls_reloads_total",
        "Certificate files read again after a change or SIGHUP, by outcome (loaded, failed: the previous certificate is kept)."
    );
    describe_counter!(
        "authd_pruned_rows_total",
        "Rows deleted because they can no longer matter, by table."
    );
    describe_counter!(
        "authd_prune_rounds_total",
        "Prune rounds, by outcome: pruned (this replica holds the lease), skipped (another does), failed."
    );
    process_collector().describe();
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    use super::secret_ceiling;

    #[test]
    fn database_crates_never_log_below_their_ceiling() {
        let ceiling = secret_ceiling();
        assert!(!ceiling.would_enable("sea_orm::driver::sqlx_sqlite", &Level::DEBUG));
        assert!(!ceiling.would_enable("sqlx::query", &Level::INFO));
        assert!(ceiling.would_enable("sqlx::query", &Level::WARN));
        assert!(ceiling.would_enable("sea_orm_migration::migrator", &Level::INFO));
        assert!(!ceiling.would_enable("sea_orm_migration::migrator", &Level::DEBUG));
        assert!(ceiling.would_enable("authd::server", &Level::TRACE));
        assert!(ceiling.would_enable("h2::codec", &Level::TRACE));
    }
}
