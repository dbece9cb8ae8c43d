//! Builds the application state once and serves it: gRPC (AuthService,
//! AdminService, health, reflection) and HTTP (JWKS, metrics), until `shutdown`.
//!
//! `main` and the integration tests both call [`run`], so the tests exercise the
//! same wiring as production.

use std::{future::Future, sync::Arc};

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::{server::TcpIncoming, Server};
use tonic_health::ServingStatus;

use crate::{
    config::ServeConfig,
    domain::{
        feed::ChangeFeed, keys::KeyRing, passwords::PasswordHasher, tokens::AccessTokens,
        unix_now_ms, views::Views, Auth,
    },
    grpc::{
        self,
        admin_service::AdminApi,
        auth_service::AuthApi,
        observe::ObserveLayer,
        pb::{admin_service_server::AdminServiceServer, auth_service_server::AuthServiceServer},
    },
    http,
    store::Store,
};

/// The health service name that reports the process alone, for liveness probes.
pub const LIVENESS: &str = "liveness";
const AUTH_SERVICE: &str = "auth.v1.AuthService";

/// Opens the store, loads the views and serves on the given listeners until
/// `shutdown` resolves; then reports NOT_SERVING, drains in-flight calls (up to the
/// configured grace) and returns.
pub async fn run(
    config: ServeConfig,
    grpc_listener: TcpListener,
    http_listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status(LIVENESS, ServingStatus::Serving)
        .await;
    set_readiness(&health, ServingStatus::NotServing).await;

    crate::telemetry::metrics();
    let auth = build(&config).await?;
    let background = CancellationToken::new();
    tokio::spawn(record_api_key_use(auth.clone(), background.clone()));
    tokio::spawn(
        auth.feed
            .clone()
            .run(config.change_poll_interval, background.clone()),
    );
    let draining = CancellationToken::new();
    tokio::spawn(follow_database(
        auth.feed.database_up(),
        health.clone(),
        draining.clone(),
    ));

    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let grpc_shutdown = {
        let draining = draining.clone();
        let health = health.clone();
        async move {
            shutdown.await;
            tracing::info!("shutdown requested; draining in-flight calls");
            // Stop following the database first, so nothing turns readiness back on.
            draining.cancel();
            set_readiness(&health, ServingStatus::NotServing).await;
        }
    };

    let http_server = tokio::spawn(http::serve(http_listener, auth.clone(), draining.clone()));
    let grpc_server = Server::builder()
        // Metadata carries at most a bearer token: refuse absurd header blocks early.
        .http2_max_header_list_size(grpc::MAX_METADATA_BYTES)
        .layer(ObserveLayer::new(&[
            grpc::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ]))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            AuthServiceServer::new(AuthApi::new(auth.clone()))
                .max_decoding_message_size(grpc::MAX_MESSAGE_BYTES),
        )
        .add_service(
            AdminServiceServer::new(AdminApi::new(auth.clone()))
                .max_decoding_message_size(grpc::MAX_MESSAGE_BYTES),
        )
        // Small unary replies must not wait for Nagle and a delayed ACK (a 40 ms tail).
        .serve_with_incoming_shutdown(
            TcpIncoming::from(grpc_listener).with_nodelay(Some(true)),
            grpc_shutdown,
        );
    tracing::info!("authd serving");

    let grace = config.shutdown_grace;
    let served = tokio::select! {
        served = grpc_server => served.context("gRPC server failed"),
        _ = async { draining.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(grace_s = grace.as_secs(), "in-flight calls outlived the shutdown grace; exiting");
            Ok(())
        }
    };
    background.cancel();
    draining.cancel();
    auth.flush_api_key_use().await;
    auth.flush_api_key_use().await;
    let _ = http_server.await;
    auth.store.clone().close().await;
    served
}

/// Connects, migrates, loads the views and builds the domain.
pub async fn build(config: &ServeConfig) -> anyhow::Result<Auth> {
    let store = Store::open(&config.database.settings())
        .await
        .map_err(|e| anyhow::anyhow!("AUTHD_DATABASE_URL: {e}"))?;
    KeyRing::ensure_active(&store, unix_now_ms()).await?;

    let views = Arc::new(Views::default());
    let keys = Arc::new(KeyRing::new(config.access_token_ttl));
    let feed = Arc::new(ChangeFeed::new(
        store.clone(),
        views.clone(),
        keys.clone(),
        config.access_token_ttl,
    ));
    feed.load().await.context("loading the memory views")?;

    let hasher = Arc::new(PasswordHasher::new(&config.hashing.settings())?);
    let tokens = Arc::new(AccessTokens::new(
        &config.issuer,
        &config.audience,
        config.token_cache_capacity,
    ));
    Ok(Auth::new(
        store,
        views,
        keys,
        tokens,
        hasher,
        feed,
        config.auth_settings(),
    ))
}

/// Readiness follows the database: SERVING while the change feed reaches it.
async fn follow_database(
    mut up: tokio::sync::watch::Receiver<bool>,
    health: tonic_health::server::HealthReporter,
    stop: CancellationToken,
) {
    loop {
        let status = if *up.borrow_and_update() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        set_readiness(&health, status).await;
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = up.changed() => if changed.is_err() { return },
        }
    }
}

/// Reflection over our services and health, for `grpcurl list` and `describe`, and
/// over the `google.rpc` error details our errors carry, so that grpcurl shows a
/// `BadRequest` as its fields instead of raw bytes.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(grpc::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
}

/// Readiness: the default service name and AuthService's.
async fn set_readiness(health: &tonic_health::server::HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    health.set_service_status(AUTH_SERVICE, status).await;
}

/// Writes API-key use to the database in batches, off the hot path.
async fn record_api_key_use(auth: Auth, stop: CancellationToken) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(15));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => auth.flush_api_key_use().await,
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
