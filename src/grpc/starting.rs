//! The gRPC routes while the server starts. The listener serves from the moment it
//! is bound, so that liveness probes see `SERVING` while `serve` waits for a database
//! that is not up yet; until the services are built, health answers (readiness
//! `NOT_SERVING`) and every other call gets `UNAVAILABLE` at once. Once
//! [`StartingRoutes::finish`] is called, every call goes to the full routes.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
};

use tonic::{body::Body, service::Routes, Status};
use tower::Service;

const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";

/// Health now, every service once they are built.
#[derive(Clone)]
pub struct StartingRoutes {
    health: Routes,
    full: Arc<OnceLock<Routes>>,
    /// This clone's copy of the full routes, once they exist (one per connection,
    /// so calls do not clone the router each).
    routed: Option<Routes>,
}

impl StartingRoutes {
    /// `health` answers alone until [`StartingRoutes::finish`].
    pub fn new(health: Routes) -> Self {
        StartingRoutes {
            health,
            full: Arc::default(),
            routed: None,
        }
    }

    /// From now on every call goes to `routes` (which serve health too).
    pub fn finish(&self, routes: Routes) {
        let _ = self.full.set(routes);
    }
}

impl<B> Service<http::Request<B>> for StartingRoutes
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError>,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = StartingFuture<<Routes as Service<http::Request<B>>>::Future>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Routes are always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if self.routed.is_none() {
            self.routed = self.full.get().cloned();
        }
        if let Some(routes) = &mut self.routed {
            return StartingFuture::Routed(routes.call(request));
        }
        if request.uri().path().starts_with(HEALTH_PREFIX) {
            return StartingFuture::Routed(self.health.call(request));
        }
        let status = Status::unavailable("authd is starting: waiting for the database");
        StartingFuture::Answered(Some(status.into_http()))
    }
}

/// The future of a routed call, or an answer given at once.
pub enum StartingFuture<F> {
    Routed(F),
    Answered(Option<http::Response<Body>>),
}

impl<F> Future for StartingFuture<F>
where
    F: Future<Output = Result<http::Response<Body>, Infallible>> + Unpin,
{
    type Output = Result<http::Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            StartingFuture::Routed(routed) => Pin::new(routed).poll(cx),
            StartingFuture::Answered(answer) => Poll::Ready(Ok(answer
                .take()
                .unwrap_or_else(|| Status::internal("polled after completion").into_http()))),
        }
    }
}
