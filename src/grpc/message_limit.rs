//! The message limit's status. tonic refuses a request over
//! `max_decoding_message_size` with `OUT_OF_RANGE`; gRPC's code for "too large" is
//! `RESOURCE_EXHAUSTED`, and that is what API.md promises callers, with the limit
//! named. This layer turns the one into the other, and only that one (known by
//! tonic's message): `WatchRevocations` answers `OUT_OF_RANGE` for a cursor too
//! old to resume.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use tonic::{body::Body, Code, Status};
use tower::{Layer, Service};

use super::MAX_MESSAGE_BYTES;

#[derive(Clone, Copy, Debug, Default)]
pub struct MessageLimitLayer;

impl<S> Layer<S> for MessageLimitLayer {
    type Service = MessageLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MessageLimit { inner }
    }
}

#[derive(Clone, Debug)]
pub struct MessageLimit<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for MessageLimit<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            // A refused request is answered trailers-only: the status is in the headers.
            if is_too_large(&response) {
                return Ok(too_large().into_http());
            }
            Ok(response)
        })
    }
}

/// tonic's refusal of a request over the decoding limit.
fn is_too_large(response: &http::Response<Body>) -> bool {
    Status::from_header_map(response.headers()).is_some_and(|status| {
        status.code() == Code::OutOfRange
            && status
                .message()
                .contains("decoded message length too large")
    })
}

fn too_large() -> Status {
    Status::resource_exhausted(format!(
        "the request message is larger than the server's limit of {} KiB ({MAX_MESSAGE_BYTES} bytes)",
        MAX_MESSAGE_BYTES / 1024
    ))
}
