//! The HTTP side: `/.well-known/jwks.json` for services that verify tokens locally,
//! and `/metrics` for Prometheus.

use axum::{extract::State, http::header, response::IntoResponse, routing::get, Router};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::domain::Domain;

pub async fn serve(listener: TcpListener, domain: Domain, shutdown: CancellationToken) {
    let app = Router::new()
        .route("/.well-known/jwks.json", get(jwks))
        .route("/metrics", get(metrics))
        .with_state(domain);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(err) = result {
        tracing::error!(error = %err, "HTTP server failed");
    }
}

async fn jwks(State(domain): State<Domain>) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "application/jwk-set+json"),
            (header::CACHE_CONTROL, "public, max-age=60"),
        ],
        domain.hot.jwks_json(),
    )
}

/// Gauges that describe state are sampled here, at scrape time; counters and
/// histograms are recorded where things happen.
async fn metrics(State(domain): State<Domain>) -> impl IntoResponse {
    let Some(handle) = crate::telemetry::metrics() else {
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder unavailable".to_owned(),
        )
            .into_response();
    };
    domain.sample_gauges().await;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response()
}
