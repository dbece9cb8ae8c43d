//! Long-lived responses end when draining starts. A `grpc.health.v1.Health/Watch`
//! stream never finishes by itself, so without this a watcher (a load balancer, a
//! sidecar) would hold the graceful shutdown for its whole grace period. When
//! draining starts, each such stream ends with `UNAVAILABLE`, after the
//! `NOT_SERVING` it was sent first, so the watcher knows to go elsewhere.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::{body::Body, server::NamedService, Code, Status};
use tower::{Layer, Service};

/// Wraps a service so that its response bodies end once `draining` is cancelled.
#[derive(Clone, Debug)]
pub struct EndOnDrainLayer {
    draining: CancellationToken,
}

impl EndOnDrainLayer {
    pub fn new(draining: CancellationToken) -> Self {
        EndOnDrainLayer { draining }
    }
}

impl<S> Layer<S> for EndOnDrainLayer {
    type Service = EndOnDrain<S>;

    fn layer(&self, inner: S) -> Self::Service {
        EndOnDrain {
            inner,
            draining: self.draining.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct EndOnDrain<S> {
    inner: S,
    draining: CancellationToken,
}

impl<S: NamedService> NamedService for EndOnDrain<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for EndOnDrain<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let response = self.inner.call(request);
        let draining = self.draining.clone();
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| {
                Body::new(UntilDrained {
                    inner: body,
                    drained: Box::pin(draining.cancelled_owned()),
                    ended: false,
                })
            }))
        })
    }
}

/// A response body that ends with `UNAVAILABLE` trailers once draining starts.
struct UntilDrained {
    inner: Body,
    drained: Pin<Box<WaitForCancellationFutureOwned>>,
    ended: bool,
}

impl HttpBody for UntilDrained {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        // What the stream has ready (the NOT_SERVING sent as draining started) goes
        // out before it ends.
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.ended = frame.is_trailers();
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(other) => {
                this.ended = true;
                return Poll::Ready(other);
            }
            Poll::Pending => {}
        }
        if this.drained.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        this.ended = true;
        let mut trailers = http::HeaderMap::new();
        trailers.insert(
            "grpc-status",
            http::HeaderValue::from(Code::Unavailable as i32),
        );
        trailers.insert(
            "grpc-message",
            http::HeaderValue::from_static("authd is shutting down"),
        );
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }
}
