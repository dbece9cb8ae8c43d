//! The HTTP side: `/.well-known/jwks.json` for services that verify tokens locally,
//! and `/metrics` for Prometheus. Connections are bounded like the gRPC ones
//! (`listen`); on top, HTTP/1 request headers must arrive within the header timeout
//! (a slowloris holds nothing for long) and every request is answered within
//! [`REQUEST_TIMEOUT`].

use std::time::Duration;

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::IntoResponse,
    routing::get,
    Router,
};
use hyper_util::{
    rt::{TokioExecutor, TokioTimer},
    server::conn::auto,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::TimeoutLayer;

use crate::{domain::Domain, listen};

/// Both routes answer from memory, except that `/metrics` samples a few gauges from
/// the database, which its own timeout bounds; past this the answer is 503.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn serve(
    listener: TcpListener,
    domain: Domain,
    limits: listen::ConnectionLimits,
    tls: Option<listen::tls::TlsAcceptor>,
    shutdown: CancellationToken,
) {
    let app = Router::new()
        .route("/.well-known/jwks.json", get(jwks))
        .route("/metrics", get(metrics))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ))
        .with_state(domain);
    let mut connections = auto::Builder::new(TokioExecutor::new());
    connections
        .http1()
        .timer(TokioTimer::new())
        // hyper starts it when a connection opens or falls idle between requests.
        .header_read_timeout(limits.header_timeout);
    connections.http2().timer(TokioTimer::new());
    listen::serve(
        "http",
        listener,
        connections,
        app,
        limits,
        tls,
        shutdown.cancelled_owned(),
    )
    .await;
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
            StatusCode::SERVICE_UNAVAILABLE,
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
