//! One span per RPC with its method, status code and latency, plus the request
//! counter and latency histogram. A tower layer around every gRPC service, so no
//! handler has to remember it. Request bodies are never recorded.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use tower::{Layer, Service};
use tracing::Instrument;

use super::status::code_name;

#[derive(Clone, Copy, Debug, Default)]
pub struct ObserveLayer;

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe { inner }
    }
}

#[derive(Clone, Debug)]
pub struct Observe<S> {
    inner: S,
}

/// Methods called on every request of every service: logged at debug, not info.
fn is_hot(method: &str) -> bool {
    matches!(
        method,
        "auth.v1.AuthService/ValidateToken"
            | "auth.v1.AuthService/CheckRole"
            | "grpc.health.v1.Health/Check"
    )
}

/// Bounds the label set: only our own services' paths are used as labels.
fn method_label(path: &str) -> String {
    let method = path.trim_start_matches('/');
    let known = [
        "auth.v1.AuthService/",
        "auth.v1.AdminService/",
        "grpc.health.v1.Health/",
        "grpc.reflection.",
    ];
    if known.iter().any(|prefix| method.starts_with(prefix)) && method.len() <= 96 {
        method.to_owned()
    } else {
        "unknown".to_owned()
    }
}

impl<S, B, RB> Service<http::Request<B>> for Observe<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>> + Send,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = method_label(request.uri().path());
        // The hot path's spans are debug-level: at the default level they cost
        // nothing, and its counters and histograms are still recorded.
        let span = if is_hot(&method) {
            tracing::debug_span!("rpc", method = %method, code = tracing::field::Empty, latency_ms = tracing::field::Empty)
        } else {
            tracing::info_span!("rpc", method = %method, code = tracing::field::Empty, latency_ms = tracing::field::Empty)
        };
        let started = Instant::now();
        let response = self.inner.call(request).instrument(span.clone());
        Box::pin(async move {
            let response = response.await;
            let latency = started.elapsed();
            // Unary errors come back trailers-only, with grpc-status in the headers;
            // a success carries it in the trailers, which we do not wait for.
            let code = match &response {
                Ok(r) => r
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map_or(tonic::Code::Ok, tonic::Code::from_i32),
                Err(_) => tonic::Code::Internal,
            };
            let code = code_name(code);
            span.record("code", code);
            span.record("latency_ms", latency.as_micros() as f64 / 1000.0);
            metrics::counter!("authd_requests_total", "method" => method.clone(), "code" => code)
                .increment(1);
            metrics::histogram!("authd_request_duration_seconds", "method" => method.clone())
                .record(latency.as_secs_f64());
            span.in_scope(|| {
                if is_hot(&method) {
                    tracing::debug!(code, "rpc finished");
                } else {
                    tracing::info!(
                        code,
                        latency_ms = latency.as_micros() as f64 / 1000.0,
                        "rpc finished"
                    );
                }
            });
            response
        })
    }
}
