//! [`AuthLayer`]: a tower layer that lets a request through only with good
//! `authorization: Bearer` credentials (and a role or a permission, when one is
//! required), and hands the service the caller as an `Arc<Identity>` request
//! extension. It works for any tower service over `http` requests: tonic servers
//! (refusals are gRPC statuses: UNAUTHENTICATED, PERMISSION_DENIED, UNAVAILABLE)
//! and axum routers (HTTP 401 with `www-authenticate: Bearer`, 403, 503).

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::{header, HeaderValue, Request, Response, StatusCode};
use tower_layer::Layer;
use tower_service::Service;

use crate::{error::Refusal, verifier::Verifier};

/// Checks each request's bearer credentials with a [`Verifier`].
#[derive(Clone)]
pub struct AuthLayer {
    verifier: Verifier,
    needs: Needs,
}

/// What a caller must hold besides good credentials (both, when both are set).
#[derive(Clone, Default)]
struct Needs {
    role: Option<Arc<str>>,
    permission: Option<Arc<str>>,
}

impl AuthLayer {
    /// Any good credential passes.
    pub fn new(verifier: Verifier) -> Self {
        AuthLayer {
            verifier,
            needs: Needs::default(),
        }
    }

    /// Only callers holding `role` (directly or through authd's hierarchy) pass;
    /// others are refused as forbidden.
    pub fn require_role(mut self, role: &str) -> Self {
        self.needs.role = Some(Arc::from(role));
        self
    }

    /// Only callers holding `permission` (through any of their effective roles;
    /// `admin` holds every one) pass; others are refused as forbidden. A token
    /// carries no permissions, so the first request with a token asks authd
    /// ([`Verifier::verify_with_permissions`]); later ones cost a cache lookup.
    pub fn require_permission(mut self, permission: &str) -> Self {
        self.needs.permission = Some(Arc::from(permission));
        self
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            inner,
            verifier: self.verifier.clone(),
            needs: self.needs.clone(),
        }
    }
}

/// The service [`AuthLayer`] makes.
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    verifier: Verifier,
    needs: Needs,
}

impl<S, B, RB> Service<Request<B>> for AuthService<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
    RB: Default,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<RB>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The clone waits for its own readiness; this one was made ready.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let verifier = self.verifier.clone();
        let needs = self.needs.clone();
        Box::pin(async move {
            let grpc = is_grpc(&request);
            let Some(token) = bearer(&request) else {
                return Ok(refused(grpc, &Refusal::Missing));
            };
            let verified = if needs.permission.is_some() {
                verifier.verify_with_permissions(&token).await
            } else {
                verifier.verify(&token).await
            };
            let identity = match verified {
                Ok(identity) => identity,
                Err(refusal) => return Ok(refused(grpc, &refusal)),
            };
            if let Some(role) = &needs.role {
                if !identity.has_role(role) {
                    return Ok(forbidden(grpc, &format!("the role {role}")));
                }
            }
            if let Some(permission) = &needs.permission {
                if !identity.has_permission(permission) {
                    return Ok(forbidden(grpc, &format!("the permission {permission}")));
                }
            }
            request.extensions_mut().insert(identity);
            inner.call(request).await
        })
    }
}

fn is_grpc<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// The credentials of `authorization: Bearer <credentials>`.
fn bearer<B>(request: &Request<B>) -> Option<String> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, credentials) = value.split_once(' ')?;
    let credentials = credentials.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !credentials.is_empty())
        .then(|| credentials.to_owned())
}

fn refused<RB: Default>(grpc: bool, refusal: &Refusal) -> Response<RB> {
    match refusal {
        Refusal::Missing | Refusal::Invalid => {
            let challenge = if matches!(refusal, Refusal::Missing) {
                "Bearer"
            } else {
                "Bearer error=\"invalid_token\""
            };
            respond(
                grpc,
                StatusCode::UNAUTHORIZED,
                16,
                &refusal.to_string(),
                Some(challenge),
            )
        }
        Refusal::Unavailable(_) => respond(
            grpc,
            StatusCode::SERVICE_UNAVAILABLE,
            14,
            "authd is unavailable; retry shortly",
            None,
        ),
    }
}

/// `what`: "the role R" or "the permission P".
fn forbidden<RB: Default>(grpc: bool, what: &str) -> Response<RB> {
    respond(
        grpc,
        StatusCode::FORBIDDEN,
        7,
        &format!("this needs {what}"),
        Some("Bearer error=\"insufficient_scope\""),
    )
}

/// An HTTP status, or for gRPC a trailers-only response with `grpc_code`.
fn respond<RB: Default>(
    grpc: bool,
    status: StatusCode,
    grpc_code: u16,
    message: &str,
    challenge: Option<&'static str>,
) -> Response<RB> {
    let mut response = Response::new(RB::default());
    if !grpc {
        *response.status_mut() = status;
    }
    let headers = response.headers_mut();
    // Our messages are plain ASCII, as grpc-message wants them unencoded.
    let message = HeaderValue::from_str(message).unwrap_or(HeaderValue::from_static("refused"));
    if grpc {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert("grpc-status", HeaderValue::from(grpc_code));
        headers.insert("grpc-message", message);
    } else {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        if let Some(challenge) = challenge {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        headers.insert("x-authd-refusal", message);
    }
    response
}
