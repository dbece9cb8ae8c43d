//! Builds the application state once and serves it: gRPC (AuthService,
//! AdminService, Envoy's ext_authz, health, reflection) and HTTP (JWKS, metrics),
//! over TLS when it is configured, and health alone in plaintext on
//! `AUTHD_HEALTH_LISTEN`, until `shutdown`. Connections on all of them are accepted
//! and bounded by [`crate::listen`].
//!
//! `main` and the integration tests both call [`run`], so the tests exercise the
//! same wiring as production.

use std::{
    future::Future,
    time::{Duration, Instant},
};

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
    domain::{
        hot::HotPath, oidc::IdentityProviders, passwords::PasswordHasher, signing_keys, totp,
        Domain,
    },
    grpc::{
        self,
        admin_service::AdminApi,
        auth_service::AuthApi,
        authenticate::AuthenticateLayer,
        end_on_drain::EndOnDrainLayer,
        ext_authz::ext_authz_service,
        message_limit::MessageLimitLayer,
        metrics::GrpcMetricsLayer,
        observe::ObserveLayer,
        pb::{admin_service_server::AdminServiceServer, auth_service_server::AuthServiceServer},
        starting::StartingRoutes,
        validation_reply::validate_token_route,
    },
    http,
    listen::{self, grpc_timeout::GrpcTimeoutLayer, tls::Certificates},
    store::{Store, StoreError},
};

/// The health service name that reports the process alone, for liveness probes.
pub const LIVENESS: &str = "liveness";
const AUTH_SERVICE: &str = "auth.v1.AuthService";
const EXT_AUTHZ_SERVICE: &str = "envoy.service.auth.v3.Authorization";
/// How long shutdown waits for the pruner to finish its batch and release its lease.
const PRUNER_STOP: Duration = Duration::from_secs(5);

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
///
/// The gRPC listener serves health from the start (liveness `SERVING`, readiness
/// `NOT_SERVING`) while the database is opened, so a PostgreSQL that is not up yet
/// is waited for (see [`build_when_reachable`]) without the pod being restarted.
pub async fn run_with_clock(
    config: ServeConfig,
    clock: Clock,
    grpc_listener: TcpListener,
    http_listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Settings that stop start-up are checked before the database is touched.
    config.oidc_providers()?;
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

    let requested = CancellationToken::new();
    {
        let requested = requested.clone();
        tokio::spawn(async move {
            shutdown.await;
            requested.cancel();
        });
    }
    // Draining: readiness off, then health streams end and connections close.
    let draining = CancellationToken::new();
    let streams_end = CancellationToken::new();
    let grpc_shutdown = {
        let (requested, draining, streams_end, health) = (
            requested.clone(),
            draining.clone(),
            streams_end.clone(),
            health.clone(),
        );
        async move {
            requested.cancelled().await;
            tracing::info!("shutdown requested; draining in-flight calls");
            // Stop following the database first, so nothing turns readiness back on.
            draining.cancel();
            set_readiness(&health, ServingStatus::NotServing).await;
            // Watchers get that NOT_SERVING, then their streams end.
            streams_end.cancel();
        }
    };
    let health_service = EndOnDrainLayer::new(streams_end.clone()).layer(health_service);
    let mut starting = Routes::builder();
    starting.add_service(health_service.clone());
    let routes = StartingRoutes::new(starting.routes().prepare());
    let served = [
        grpc::FILE_DESCRIPTOR_SET,
        grpc::ENVOY_EXT_AUTHZ_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    // Metrics outermost, so they see the deadline's DEADLINE_EXCEEDED and the end
    // of every response body.
    let grpc_service = ServiceBuilder::new()
        .layer(GrpcMetricsLayer::new(&served))
        .layer(GrpcTimeoutLayer)
        .layer(ObserveLayer::new(&served))
        .layer(MessageLimitLayer)
        .service(routes.clone());
    let mut grpc_server = tokio::spawn(listen::serve(
        "grpc",
        grpc_listener,
        grpc_connections(config.max_concurrent_streams),
        grpc_service,
        config.connection_limits(),
        certificates.as_ref().map(|c| c.grpc()),
        grpc_shutdown,
    ));
    // Health alone, in plaintext, for probes that cannot speak TLS.
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
    let stop_health = |server: &Option<tokio::task::JoinHandle<()>>| {
        if let Some(server) = server {
            server.abort();
        }
    };

    let domain = tokio::select! {
        built = build_when_reachable(&config, clock) => match built {
            Ok(domain) => domain,
            Err(err) => {
                grpc_server.abort();
                stop_health(&health_server);
                return Err(err);
            }
        },
        () = requested.cancelled() => {
            tracing::info!("shutdown requested before the database was reached");
            grpc_server.abort();
            stop_health(&health_server);
            return Ok(());
        }
    };
    let mut full = Routes::builder();
    full.add_service(health_service);
    routes.finish(grpc_routes(&domain, full, streams_end.clone())?);

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
    tokio::spawn(follow_readiness(
        domain.hot.ready(),
        health.clone(),
        draining.clone(),
    ));
    let http_server = tokio::spawn(http::serve(
        http_listener,
        domain.clone(),
        config.connection_limits(),
        certificates.as_ref().map(|c| c.http()),
        draining.clone(),
    ));
    tracing::info!("authd serving");

    let grace = config.shutdown_grace;
    tokio::select! {
        _ = &mut grpc_server => {}
        () = async { draining.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(grace_s = grace.as_secs(), "in-flight calls outlived the shutdown grace; exiting");
            grpc_server.abort();
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
/// Long-lived responses (revocation streams) end when `streams_end` is cancelled.
fn grpc_routes(
    domain: &Domain,
    mut routes: RoutesBuilder,
    streams_end: CancellationToken,
) -> anyhow::Result<Routes> {
    routes
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(
            AuthenticateLayer::self_service(domain.sessions.clone()).layer(validate_token_route(
                domain.hot.clone(),
                AuthServiceServer::new(AuthApi::new(domain.clone(), streams_end))
                    .max_decoding_message_size(grpc::MAX_MESSAGE_BYTES),
            )),
        )
        .add_service(
            AuthenticateLayer::admin(domain.admin.clone()).layer(
                AdminServiceServer::new(AdminApi::new(domain.clone()))
                    .max_decoding_message_size(grpc::MAX_MESSAGE_BYTES),
            ),
        )
        // Envoy's ext_authz: its caller is the proxy, which has no credentials of
        // its own; the credential it asks about is in the message.
        .add_service(ext_authz_service(domain.hot.clone()));
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

/// The first wait after a failed attempt to reach the database at start; it
/// doubles up to [`STARTUP_RETRY_MAX`].
const STARTUP_RETRY_FIRST: Duration = Duration::from_millis(500);
const STARTUP_RETRY_MAX: Duration = Duration::from_secs(10);

/// [`build`], retried with backoff while a PostgreSQL database does not answer, for
/// up to `AUTHD_STARTUP_TIMEOUT`. Any other error (a bad URL, refused credentials,
/// a failed migration, a wrong key-encryption key) stops start-up at once, as does
/// an unreachable SQLite file, which no waiting brings back.
async fn build_when_reachable(config: &ServeConfig, clock: Clock) -> anyhow::Result<Domain> {
    let started = Instant::now();
    let mut next_wait = STARTUP_RETRY_FIRST;
    let mut attempt = 1u32;
    loop {
        let err = match build(config, clock.clone()).await {
            Ok(domain) => {
                if attempt > 1 {
                    tracing::info!(attempt, "database reached");
                }
                return Ok(domain);
            }
            Err(err) => err,
        };
        let waited = started.elapsed();
        let Some(left) = config.startup_timeout.checked_sub(waited) else {
            return Err(err);
        };
        if err.downcast_ref::<DatabaseUnreachable>().is_none() || left.is_zero() {
            return Err(err);
        }
        let wait = next_wait.min(left);
        tracing::warn!(
            attempt,
            error = %format!("{err:#}"),
            retry_in_ms = wait.as_millis() as u64,
            waited_s = waited.as_secs(),
            "database not reachable yet; waiting (AUTHD_STARTUP_TIMEOUT)"
        );
        tokio::time::sleep(wait).await;
        next_wait = (next_wait * 2).min(STARTUP_RETRY_MAX);
        attempt += 1;
    }
}

/// A PostgreSQL database that did not answer at start: worth waiting for.
#[derive(Debug, thiserror::Error)]
#[error("AUTHD_DATABASE_URL: {0}")]
struct DatabaseUnreachable(String);

/// Connects and migrates (the store), loads the memory views (the hot path), and
/// builds the slow path around them (the domain).
pub async fn build(config: &ServeConfig, clock: Clock) -> anyhow::Result<Domain> {
    let kek = config.database.key_encryption.load()?;
    let providers = IdentityProviders::new(config.oidc_providers()?)?;
    let settings = config.database.settings();
    let waitable = settings.url.starts_with("postgres");
    let store = Store::open(&settings).await.map_err(|e| {
        if waitable && e.is_unreachable() {
            anyhow::Error::new(DatabaseUnreachable(e.to_string()))
        } else {
            anyhow::anyhow!("AUTHD_DATABASE_URL: {e}")
        }
    })?;
    let unreachable = |err: anyhow::Error| match err.downcast_ref::<StoreError>() {
        Some(StoreError::Unavailable(_)) if waitable => {
            anyhow::Error::new(DatabaseUnreachable(format!("{err:#}")))
        }
        _ => err,
    };
    signing_keys::ensure_active(&store, kek.as_ref(), clock.now_ms())
        .await
        .map_err(unreachable)?;
    totp::seal_at_rest(&store, kek.as_ref())
        .await
        .map_err(unreachable)?;
    let hot = HotPath::load(
        store.clone(),
        clock.clone(),
        config.hot_settings(kek.clone()),
    )
    .await
    .map_err(|err| unreachable(anyhow::Error::new(err)))
    .context("loading the memory views")?;
    let hasher = PasswordHasher::new(&config.hashing.settings())?;
    let mut settings = config.auth_settings();
    settings.key_encryption = kek;
    Ok(Domain::new(store, hot, hasher, settings, providers, clock))
}

/// Readiness follows whether this replica can answer the hot path (its views are
/// fresh and the database is not refusing writes while it answers reads).
async fn follow_readiness(
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
        .register_encoded_file_descriptor_set(grpc::ENVOY_EXT_AUTHZ_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
}

/// Readiness: the default service name, AuthService's and ext_authz's (for an
/// Envoy cluster whose gRPC health check names the service).
async fn set_readiness(health: &tonic_health::server::HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    health.set_service_status(AUTH_SERVICE, status).await;
    health.set_service_status(EXT_AUTHZ_SERVICE, status).await;
}

/// Writes API-key use to the database in batches, off the hot path.
async fn record_api_key_use(domain: Domain, stop: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(15));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => domain.api_keys.flush_use().await,
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT; a second one exits the process at once,
/// without waiting for the drain.
pub async fn shutdown_signal() {
    one_signal().await;
    tokio::spawn(async {
        one_signal().await;
        tracing::warn!("second shutdown signal; exiting at once");
        std::process::exit(1);
    });
}

/// Resolves on SIGTERM or SIGINT.
async fn one_signal() {
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
