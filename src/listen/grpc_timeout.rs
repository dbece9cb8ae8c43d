//! The caller's deadline: a call whose `grpc-timeout` passes is abandoned and
//! answered `DEADLINE_EXCEEDED`. tonic's own server did this; since we serve the
//! connections ourselves (see `listen`), this layer does it in its place.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tonic::{body::Body, Status};
use tower::{Layer, Service};

#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcTimeoutLayer;

impl<S> Layer<S> for GrpcTimeoutLayer {
    type Service = GrpcTimeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcTimeout { inner }
    }
}

#[derive(Clone, Debug)]
pub struct GrpcTimeout<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for GrpcTimeout<S>
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
        let deadline = request
            .headers()
            .get("grpc-timeout")
            .and_then(|value| value.to_str().ok())
            .and_then(parse_timeout);
        let response = self.inner.call(request);
        match deadline {
            None => Box::pin(response),
            Some(deadline) => {
                Box::pin(async move {
                    match tokio::time::timeout(deadline, response).await {
                        Ok(response) => response,
                        Err(_) => Ok(Status::deadline_exceeded("the call's deadline passed")
                            .into_http::<Body>()),
                    }
                })
            }
        }
    }
}

/// `TimeoutValue TimeoutUnit` of the gRPC over HTTP/2 spec: at most 8 digits, then
/// one of H M S m u n. Anything else is no deadline, as in tonic.
fn parse_timeout(value: &str) -> Option<Duration> {
    let unit_at = value.len().checked_sub(1)?;
    let (digits, unit) = (value.get(..unit_at)?, value.get(unit_at..)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_as_the_spec_writes_them() {
        assert_eq!(parse_timeout("3H"), Some(Duration::from_secs(3 * 3600)));
        assert_eq!(parse_timeout("1M"), Some(Duration::from_secs(60)));
        assert_eq!(parse_timeout("42S"), Some(Duration::from_secs(42)));
        assert_eq!(parse_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(
            parse_timeout("99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(parse_timeout("7n"), Some(Duration::from_nanos(7)));
    }

    #[test]
    fn anything_else_is_no_deadline() {
        for value in [
            "",
            "S",
            "123456789S",
            "10",
            "10s",
            "-1S",
            "+1S",
            "1.5S",
            "1é",
            "é",
        ] {
            assert_eq!(parse_timeout(value), None, "{value:?}");
        }
    }
}
