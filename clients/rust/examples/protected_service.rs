//! A backend service protected by authd with `authd-client`: every request passes
//! through [`AuthLayer`], which verifies the caller's bearer token in this process
//! (and asks authd only when it cannot be sure), so a request costs no round trip
//! to authd once its token has been seen.
//!
//! It serves two things, to show both kinds of service:
//! - gRPC: tonic-health's `grpc.health.v1.Health`, standing in for your own tonic
//!   service, behind `AuthLayer::new(verifier).require_role(GRPC_ROLE)`;
//! - HTTP (axum): `GET /whoami` for any valid token, `GET /admin` for `admin`s.
//!
//! Handlers read the caller as an `Arc<Identity>` request extension (tonic:
//! `request.extensions().get::<Arc<Identity>>()`; axum: `Extension<Arc<Identity>>`).
//!
//! ```sh
//! cargo run -p authd-client --example protected_service -- \
//!     http://127.0.0.1:50051 http://127.0.0.1:9090/.well-known/jwks.json
//! ```
//!
//! The integration tests (`tests/api/examples.rs`) include this file and call
//! [`serve`], which `main` also calls.

use std::{future::Future, sync::Arc};

use authd_client::{AuthLayer, Identity, Verifier};
use axum::{routing::get, Extension, Router};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

/// The role the gRPC service needs.
pub const GRPC_ROLE: &str = "editor";

/// Serves the gRPC service on `grpc` and the HTTP routes on `http` until
/// `shutdown`.
pub async fn serve(
    grpc: TcpListener,
    http: TcpListener,
    verifier: Verifier,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let (_, health) = tonic_health::server::health_reporter();
    let grpc_server = tonic::transport::Server::builder()
        .layer(AuthLayer::new(verifier.clone()).require_role(GRPC_ROLE))
        .add_service(health)
        .serve_with_incoming(TcpListenerStream::new(grpc));
    let app = Router::new()
        .route("/whoami", get(whoami))
        .route_layer(AuthLayer::new(verifier.clone()))
        .merge(
            Router::new()
                .route("/admin", get(admin))
                .route_layer(AuthLayer::new(verifier).require_role("admin")),
        );
    let http_server = axum::serve(http, app);
    tokio::select! {
        _ = grpc_server => {}
        _ = http_server => {}
        () = shutdown => {}
    }
}

async fn whoami(Extension(caller): Extension<Arc<Identity>>) -> String {
    format!("{} {}", caller.subject, caller.roles.join(","))
}

async fn admin(Extension(caller): Extension<Arc<Identity>>) -> String {
    format!("hello, admin {}", caller.subject)
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let authd = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:50051".into());
    let jwks = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:9090/.well-known/jwks.json".into());
    let verifier = Verifier::builder(authd).jwks_url(jwks).connect().await?;
    let grpc = TcpListener::bind("127.0.0.1:50061").await?;
    let http = TcpListener::bind("127.0.0.1:8080").await?;
    println!("gRPC on 127.0.0.1:50061 (needs {GRPC_ROLE}), HTTP on 127.0.0.1:8080");
    serve(grpc, http, verifier, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
    Ok(())
}
