//! The HTTP side: `/.well-known/jwks.json` for services that verify tokens locally,
//! and `/metrics` for Prometheus.

use axum::{extract::State, http::header, response::IntoResponse, routing::get, Router};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::domain::Auth;

pub async fn serve(listener: TcpListener, auth: Auth, shutdown: CancellationToken) {
    let app = Router::new()
        .route("/.well-known/jwks.json", get(jwks))
        .with_state(auth);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(err) = result {
        tracing::error!(error = %err, "HTTP server failed");
    }
}

async fn jwks(State(auth): State<Auth>) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "application/jwk-set+json"),
            (header::CACHE_CONTROL, "public, max-age=60"),
        ],
        auth.jwks_json(),
    )
}
