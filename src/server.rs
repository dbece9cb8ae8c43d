//! Builds the application state once and serves it: gRPC (AuthService,
//! AdminService, health, reflection) and HTTP (JWKS, metrics), over TLS when it is
//! configured, and health alone in plaintext on `AUTHD_HEALTH_LISTEN`, until
//! `shutdown`. Connections on all of them are accepted and bounded by
//! [`crate::listen`].
//!
//! `main` and the integration tests both call [`run`], so the tests exercise the
//! same wiring as production.

use std::future::Future;

use anyhow::Context as _;
use hyper_util::{
    rt::{TokioExecutor, TokioTimer},
    server::conn::auto,
};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::{Routes, RoutesBuilder};
use tonic_health::ServingStatus;
use tower::{Layer as _, ServiceBuilder};

use crate::{
    clock::Clock,
    config::ServeConfig,
    domain::{hot::HotPath, passwords::PasswordHasher, signing_keys, Domain},
    grpc::{
        self,
        admin_service::AdminApi,
        auth_service::AuthApi,
        authenticate::AuthenticateLayer,
        message_limit::MessageLimitLayer,
        observe::ObserveLayer,
        pb::{admin_service_server::AdminServiceServer, auth_service_server::AuthServiceServer},
    },
    http,
    listen::{self, grpc_timeout::GrpcTimeoutLayer, tls::Certificates},
    store::Store,
};

/// The health service name that reports the process alone, for liveness probes.
pub const LIVENESS: &str = "liveness";
const AUTH_SERVICE: &str = "auth.v1.AuthService";
/// How long shutdown waits for the pruner to finish its batch and release its lease.
const PRUNER_STOP: std::time::Duration = std::time::Duration::from_secs(5);

/// Opens the store, loads the views and serves on the given listeners until
/// `shutdown` resolves; then reports NOT_SERVING, drains in-flight calls (up to the
/// configured grace) and returns.
pub async fn run(
    config: ServeConfig,
    grpc_listener: TcpListener,
    http_listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_with_clock(
        config,
        Clock::system(),
        grpc_listener,
        http_listener,
        shutdown,
    )
    .await
}

/// [`run`] on the given clock (tests drive a manual one).
pub async fn run_with_clock(
    config: ServeConfig,
    clock: Clock,
    grpc_listener: TcpListener,
    http_listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Settings that stop start-up are checked before the database is touched.
    let certificates = match config.tls.files()? {
        Some(files) => Some(Arc::new(Certificates::load(files)?)),
        None => None,
    };
    let health_listener = match config.health_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("AUTHD_HEALTH_LISTEN: cannot listen on {addr}"))?,
        ),
        None => None,
    };
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status(LIVENESS, ServingStatus::Serving)
        .await;
    set_readiness(&health, ServingStatus::NotServing).await;

    crate::telemetry::metrics();
    let domain = build(&config, clock).await?;
    let background = CancellationToken::new();
    if let Some(certificates) = &certificates {
        tokio::spawn(certificates.clone().watch(background.clone()));
    }
    tokio::spawn(record_api_key_use(domain.clone(), background.clone()));
    {
        let (hot, stop, every) = (
            domain.hot.clone(),
            background.clone(),
            config.change_poll_interval,
        );
        tokio::spawn(async move { hot.follow_feed(every, stop).await });
    }
    let pruning = tokio::spawn(
        domain
            .pruner(config.retention_settings())
            .run(background.clone()),
    );
    let draining = CancellationToken::new();
    tokio::spawn(follow_database(
        domain.hot.database_up(),
        health.clone(),
        draining.clone(),
    ));

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

    let http_server = tokio::spawn(http::serve(
        http_listener,
        domain.clone(),
        config.connection_limits(),
        certificates.as_ref().map(|c| c.http()),
        draining.clone(),
    ));
    let health_server = health_listener.map(|listener| {
        let mut routes = Routes::builder();
        routes.add_service(health_service.clone());
        tokio::spawn(listen::serve(
            "health",
            listener,
            grpc_connections(config.max_concurrent_streams),
            GrpcTimeoutLayer.layer(routes.routes().prepare()),
            config.connection_limits(),
            None,
            draining.clone().cancelled_owned(),
        ))
    });
    let mut routes = Routes::builder();
    routes.add_service(health_service);
    let routes = grpc_routes(&domain, routes)?;
    let grpc_service = ServiceBuilder::new()
        .layer(GrpcTimeoutLayer)
        .layer(ObserveLayer::new(&[
            grpc::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ]))
        .layer(MessageLimitLayer)
        .service(routes);
    let grpc_server = listen::serve(
        "grpc",
        grpc_listener,
        grpc_connections(config.max_concurrent_streams),
        grpc_service,
        config.connection_limits(),
        certificates.as_ref().map(|c| c.grpc()),
        grpc_shutdown,
    );
    tracing::info!("authd serving");

    let grace = config.shutdown_grace;
    tokio::select! {
        () = grpc_server => {}
        () = async { draining.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(grace_s = grace.as_secs(), "in-flight calls outlived the shutdown grace; exiting");
        }
    }
    background.cancel();
    draining.cancel();
    // The pruner stops between batches and gives its lease up, so another replica
    // takes pruning over at once.
    let _ = tokio::time::timeout(PRUNER_STOP, pruning).await;
    domain.api_keys.flush_use().await;
    let _ = http_server.await;
    if let Some(health_server) = health_server {
        let _ = health_server.await;
    }
    domain.close().await;
    Ok(())
}

/// Every gRPC service, routed by path: `routes` (health) and ours, and reflection.
fn grpc_routes(domain: &Domain, mut routes: RoutesBuilder) -> anyhow::Result<Routes> {
    routes
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(
            AuthServiceServer::new(AuthApi::new(domain.clone()))
                .max_decoding_message_size(grpc::MAX_MESSAGE_BYTES),
        )
        .add_service(
            AuthenticateLayer::new(domain.admin.clone()).layer(
                AdminServiceServer::new(AdminApi::new(domain.clone()))
                    .max_decoding_message_size(grpc::MAX_MESSAGE_BYTES),
            ),
        );
    Ok(routes.routes().prepare())
}

/// HTTP/2 only, as gRPC is, with its limits.
fn grpc_connections(max_concurrent_streams: u32) -> auto::Builder<TokioExecutor> {
    let mut connections = auto::Builder::new(TokioExecutor::new()).http2_only();
    connections
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(max_concurrent_streams)
        // Metadata carries at most a bearer token: refuse absurd header blocks early.
        .max_header_list_size(grpc::MAX_METADATA_BYTES);
    connections
}

/// Connects and migrates (the store), loads the memory views (the hot path), and
/// builds the slow path around them (the domain).
pub async fn build(config: &ServeConfig, clock: Clock) -> anyhow::Result<Domain> {
    let kek = config.database.key_encryption.load()?;
    let store = Store::open(&config.database.settings())
        .await
        .map_err(|e| anyhow::anyhow!("AUTHD_DATABASE_URL: {e}"))?;
    signing_keys::ensure_active(&store, kek.as_ref(), clock.now_ms()).await?;
    let hot = HotPath::load(store.clone(), clock.clone(), config.hot_settings(kek))
        .await
        .context("loading the memory views")?;
    let hasher = PasswordHasher::new(&config.hashing.settings())?;
    Ok(Domain::new(
        store,
        hot,
        hasher,
        config.auth_settings(),
        clock,
    ))
}

/// Readiness follows the database: SERVING while the change feed reads it and
/// writes reach it.
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
async fn record_api_key_use(domain: Domain, stop: CancellationToken) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(15));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => domain.api_keys.flush_use().await,
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
