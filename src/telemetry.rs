//! Logs and metrics. Logs: a tracing subscriber writing text for people or JSON for
//! log pipelines. Metrics: the `metrics` facade with a Prometheus recorder, rendered
//! by the HTTP side at `/metrics`.
//! `RUST_LOG` overrides the default level (info), under a ceiling it cannot lift for
//! the database crates (see [`secret_ceiling`]). Nothing logged here or anywhere
//! carries a password, token or hash: those live in redacting types.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{
    filter::{LevelFilter, Targets},
    fmt,
    prelude::*,
    EnvFilter,
};

use crate::config::LogFormat;

/// Installs the global subscriber. Safe to call more than once (later calls are
/// ignored), which tests rely on.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sea_orm_migration=warn,sqlx=warn"));
    let registry = tracing_subscriber::registry()
        .with(secret_ceiling())
        .with(filter);
    // Colour only for a person at a terminal, never into files or pipes.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let _ = match format {
        LogFormat::Text => registry
            .with(fmt::layer().with_ansi(colour).with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
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
            metrics::gauge!("authd_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            Some(handle)
        })
        .as_ref()
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
