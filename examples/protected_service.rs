//! A backend service protected by authd. Every call passes through [`AuthGuardLayer`],
//! a tower layer that reads `authorization: Bearer <token>`, asks authd
//! `ValidateToken` (and `CheckRole` for the methods given a role), and either answers
//! `UNAUTHENTICATED` / `PERMISSION_DENIED` itself, without calling the service, or
//! hands the service the caller as a [`Caller`] request extension.
//!
//! The protected service is tonic-health's `grpc.health.v1.Health`, with reflection so
//! grpcurl needs no proto file. It stands in for your own service because it is the one
//! real tonic service that needs no code generation; the guard does not care what it
//! wraps. `Check` is open to any valid token; `Watch` also needs `--watch-role`
//! (default `admin`). In your service, add the same `.layer(...)` to
//! `Server::builder()` and read the caller in a handler with
//! `request.extensions().get::<Caller>()` (tonic keeps the HTTP request's extensions).
//!
//! ```sh
//! cargo run --example protected_service -- --authd http://127.0.0.1:50051
//! ```
//!
//! The guard's test (`tests/api/examples.rs`) includes this file as a module and calls
//! [`serve`], which `main` also calls.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use authd::grpc::pb::{
    auth_service_client::AuthServiceClient, CheckRoleRequest, ValidateTokenRequest,
};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{
    transport::{Channel, Endpoint, Server},
    Code, Status,
};
use tower::{Layer, Service};

/// The method that needs a role on top of a valid token.
pub const WATCH: &str = "/grpc.health.v1.Health/Watch";

/// The caller as authd sees it now, for the inner service to read.
#[derive(Clone, Debug)]
pub struct Caller {
    pub user_id: String,
    pub username: String,
    /// Effective roles (the hierarchy applied), as of this call.
    pub roles: Vec<String>,
}

/// Checks every call with authd before the wrapped service sees it.
#[derive(Clone)]
pub struct AuthGuardLayer {
    authd: AuthServiceClient<Channel>,
    /// Method path (`/package.Service/Method`) to the role it requires.
    roles: Arc<HashMap<String, String>>,
}

impl AuthGuardLayer {
    pub fn new(authd: Channel) -> Self {
        AuthGuardLayer {
            authd: AuthServiceClient::new(authd),
            roles: Arc::default(),
        }
    }

    /// Calls to `path` also need `role` (directly or through the hierarchy).
    pub fn require_role(mut self, path: impl Into<String>, role: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.roles).insert(path.into(), role.into());
        self
    }
}

impl<S> Layer<S> for AuthGuardLayer {
    type Service = AuthGuard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthGuard {
            inner,
            authd: self.authd.clone(),
            roles: self.roles.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthGuard<S> {
    inner: S,
    authd: AuthServiceClient<Channel>,
    roles: Arc<HashMap<String, String>>,
}

impl<S, B, RB> Service<http::Request<B>> for AuthGuard<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
    RB: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // Keep the instance that poll_ready made ready; leave a fresh clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let authd = self.authd.clone();
        let role = self.roles.get(request.uri().path()).cloned();
        let token = bearer_token(request.headers()).map(str::to_owned);
        Box::pin(async move {
            match authorize(authd, token, role).await {
                Ok(caller) => {
                    request.extensions_mut().insert(caller);
                    inner.call(request).await
                }
                // Trailers-only: HTTP 200 with grpc-status and grpc-message headers.
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

/// The token of `authorization: Bearer <token>` (the scheme in any case).
fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

async fn authorize(
    mut authd: AuthServiceClient<Channel>,
    token: Option<String>,
    role: Option<String>,
) -> Result<Caller, Status> {
    let token = token.ok_or_else(|| {
        Status::unauthenticated("missing credentials: send `authorization: Bearer <token>`")
    })?;
    // ValidateToken already lists the effective roles; CheckRole keeps the decision
    // (and the role hierarchy) in authd. Both run at once.
    let mut checker = authd.clone();
    let validate = async {
        authd
            .validate_token(ValidateTokenRequest {
                token: token.clone(),
            })
            .await
            .map_err(from_authd)
    };
    let check = async {
        let Some(role) = &role else { return Ok(true) };
        checker
            .check_role(CheckRoleRequest {
                token: token.clone(),
                role: role.clone(),
            })
            .await
            .map(|answer| answer.into_inner().allowed)
            .map_err(from_authd)
    };
    let (who, allowed) = tokio::try_join!(validate, check)?;
    if !allowed {
        let role = role.unwrap_or_default();
        return Err(Status::permission_denied(format!(
            "this method needs the role `{role}`"
        )));
    }
    let who = who.into_inner();
    Ok(Caller {
        user_id: who.user_id,
        username: who.username,
        roles: who.roles,
    })
}

/// Fails closed: anything but a clear answer from authd refuses the call.
fn from_authd(status: Status) -> Status {
    match status.code() {
        Code::Unauthenticated => Status::unauthenticated(status.message().to_owned()),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
            Status::unavailable("the authentication service is unreachable; try again")
        }
        code => {
            tracing::error!(?code, message = status.message(), "authd refused the check");
            Status::internal("the authorization check failed")
        }
    }
}

/// A channel to authd that connects on first use and gives up on a slow answer, so a
/// missing authd turns calls into `UNAVAILABLE` instead of hanging them.
pub fn authd_channel(uri: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(uri.to_owned())?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .connect_lazy())
}

/// Serves the guarded Health service (and reflection) on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    authd: Channel,
    watch_role: &str,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let (_health, health_service) = tonic_health::server::health_reporter();
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    Server::builder()
        .layer(AuthGuardLayer::new(authd).require_role(WATCH, watch_role))
        .layer(tower::util::MapRequestLayer::new(
            log_caller::<tonic::body::Body>,
        ))
        .add_service(health_service)
        // v1alpha too: grpcurl before 1.9 speaks only that.
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await?;
    Ok(())
}

/// What a handler of your own would do with the guard's answer.
fn log_caller<B>(request: http::Request<B>) -> http::Request<B> {
    if let Some(caller) = request.extensions().get::<Caller>() {
        tracing::info!(
            user = %caller.username,
            id = %caller.user_id,
            roles = ?caller.roles,
            method = request.uri().path(),
            "authorized call"
        );
    }
    request
}

/// A tonic service whose every call authd checks.
#[derive(clap::Parser)]
struct Args {
    /// Where this service listens.
    #[arg(long, default_value = "127.0.0.1:50061")]
    listen: String,
    /// authd's gRPC address.
    #[arg(long, env = "AUTHD_ADDR", default_value = "http://127.0.0.1:50051")]
    authd: String,
    /// The role that `grpc.health.v1.Health/Watch` needs.
    #[arg(long, default_value = "admin")]
    watch_role: String,
}

// The guard's test includes this file as a module and does not call main.
#[allow(dead_code)]
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    use clap::Parser as _;
    tracing_subscriber::fmt().with_target(false).init();
    let args = Args::parse();
    let listener = TcpListener::bind(&args.listen).await?;
    tracing::info!(listen = %listener.local_addr()?, authd = %args.authd, "protected service ready");
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    serve(
        listener,
        authd_channel(&args.authd)?,
        &args.watch_role,
        shutdown,
    )
    .await
}
