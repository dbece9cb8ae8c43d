//! Caller authentication at the transport's edge: a tower layer around a service
//! whose every method needs a caller (AdminService). It reads `authorization:
//! Bearer <token>` once, has the domain authorise it, and puts the authorised
//! [`AdminCaller`] into the request's extensions; handlers take it from there
//! ([`admin_caller`]). A handler cannot forget the check: without the layer there
//! is no caller, and the call fails closed.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use tonic::{body::Body, server::NamedService, Status};
use tower::{Layer, Service};

use crate::domain::admin::{Admin, AdminCaller};

#[derive(Clone)]
pub struct AuthenticateLayer {
    admin: Admin,
}

impl AuthenticateLayer {
    pub fn new(admin: Admin) -> Self {
        AuthenticateLayer { admin }
    }
}

impl<S> Layer<S> for AuthenticateLayer {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticated {
            inner,
            admin: self.admin.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Authenticated<S> {
    inner: S,
    admin: Admin,
}

impl<S: NamedService> NamedService for Authenticated<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for Authenticated<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone is ready only after its own poll_ready; keep the one that is.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let admin = self.admin.clone();
        Box::pin(async move {
            let peer = super::peer(request.extensions());
            let authorised = match bearer_token(request.headers()) {
                Ok(token) => admin.authorize(token, peer).await.map_err(Status::from),
                Err(status) => Err(status),
            };
            match authorised {
                Ok(caller) => {
                    request.extensions_mut().insert(caller);
                    inner.call(request).await
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

/// The token of `authorization: Bearer <token>`.
fn bearer_token(headers: &http::HeaderMap) -> Result<&str, Status> {
    let value = headers.get(http::header::AUTHORIZATION).ok_or_else(|| {
        Status::unauthenticated(
            "missing credentials: send metadata 'authorization: Bearer <access token>'",
        )
    })?;
    let value = value
        .to_str()
        .map_err(|_| Status::unauthenticated("the authorization metadata is not text"))?;
    value
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .ok_or_else(|| {
            Status::unauthenticated("the authorization metadata must be 'Bearer <access token>'")
        })
}

/// The caller the layer authorised for this request.
pub fn admin_caller<T>(request: &tonic::Request<T>) -> Result<AdminCaller, Status> {
    request
        .extensions()
        .get::<AdminCaller>()
        .cloned()
        .ok_or_else(|| {
            tracing::error!("an AdminService call reached its handler unauthenticated");
            Status::internal("the call was not authenticated")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            value.parse().expect("header value"),
        );
        headers
    }

    #[test]
    fn the_bearer_scheme_is_read_whatever_its_case() {
        assert_eq!(bearer_token(&headers("Bearer abc")).ok(), Some("abc"));
        assert_eq!(bearer_token(&headers("bearer  abc ")).ok(), Some("abc"));
    }

    #[test]
    fn anything_else_is_unauthenticated() {
        for value in ["Basic abc", "abc", "Bearer"] {
            let status = bearer_token(&headers(value)).expect_err(value);
            assert_eq!(status.code(), tonic::Code::Unauthenticated);
        }
        let status = bearer_token(&http::HeaderMap::new()).expect_err("missing");
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
    }
}
