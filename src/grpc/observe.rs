//! One span per RPC with its method, status code and latency. A tower layer around
//! every gRPC service, so no handler has to remember it. Request bodies are never
//! recorded. (The request metrics are `metrics.rs`'s.)
//!
//! It runs on every call of the hot path, so the per-call work is a map lookup by
//! path: the methods are read once from the descriptor sets we serve.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use tower::{Layer, Service};
use tracing::Instrument;

use super::{
    methods::{MethodInfo, MethodTable},
    status::code_name,
};

/// Methods called on every request of every service: logged at debug, not info.
const HOT_METHODS: [&str; 5] = [
    "auth.v1.AuthService/ValidateToken",
    "auth.v1.AuthService/CheckRole",
    "auth.v1.AuthService/CheckPermission",
    "envoy.service.auth.v3.Authorization/Check",
    "grpc.health.v1.Health/Check",
];

#[derive(Clone, Debug)]
pub struct ObserveLayer {
    methods: Arc<MethodTable<MethodSpan>>,
}

impl ObserveLayer {
    /// Observes the methods of the services in these encoded `FileDescriptorSet`s;
    /// any other path is counted as `unknown`, so callers cannot grow the label set.
    pub fn new(descriptor_sets: &[&[u8]]) -> Self {
        ObserveLayer {
            methods: Arc::new(method_table(descriptor_sets)),
        }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe {
            inner,
            methods: self.methods.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Observe<S> {
    inner: S,
    methods: Arc<MethodTable<MethodSpan>>,
}

/// The span names of every method we serve.
fn method_table(descriptor_sets: &[&[u8]]) -> MethodTable<MethodSpan> {
    MethodTable::from_descriptor_sets(descriptor_sets, MethodSpan::new)
}

/// One method's name for its spans: `package.Service/Method`, and its two halves
/// as OpenTelemetry's `rpc.service` and `rpc.method` name them.
#[derive(Debug)]
struct MethodSpan {
    name: String,
    service: String,
    method: String,
    hot: bool,
}

impl MethodSpan {
    fn new(info: MethodInfo<'_>) -> Self {
        let name = info.full_name();
        MethodSpan {
            hot: HOT_METHODS.contains(&name.as_str()),
            service: info.service.to_owned(),
            method: info.method.to_owned(),
            name,
        }
    }
}

/// The server span of one call, with OpenTelemetry's RPC attributes; `otel.name`
/// names the exported span after the method.
macro_rules! rpc_span {
    ($level:ident, $method:expr) => {
        tracing::$level!(
            "rpc",
            method = %$method.name,
            code = tracing::field::Empty,
            latency_ms = tracing::field::Empty,
            "otel.name" = %$method.name,
            "otel.kind" = "server",
            "rpc.system" = "grpc",
            "rpc.service" = %$method.service,
            "rpc.method" = %$method.method,
            "rpc.grpc.status_code" = tracing::field::Empty,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        )
    };
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
        let method = self.methods.get(request.uri().path()).clone();
        // The hot path's spans are debug-level: at the default level they cost
        // nothing (its metrics are recorded by `metrics.rs` all the same).
        let span = if method.hot {
            rpc_span!(debug_span, method)
        } else {
            rpc_span!(info_span, method)
        };
        crate::traces::continue_trace(&span, request.headers());
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
            if !span.is_disabled() {
                let name = code_name(code);
                span.record("code", name);
                span.record("rpc.grpc.status_code", code as i32);
                span.record("latency_ms", latency.as_micros() as f64 / 1000.0);
                span.in_scope(|| {
                    if method.hot {
                        tracing::debug!(code = name, "rpc finished");
                    } else {
                        tracing::info!(
                            code = name,
                            latency_ms = latency.as_micros() as f64 / 1000.0,
                            "rpc finished"
                        );
                    }
                });
            }
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_come_from_the_descriptor_sets_and_the_rest_is_unknown() {
        let table = method_table(&[
            crate::grpc::FILE_DESCRIPTOR_SET,
            crate::grpc::ENVOY_EXT_AUTHZ_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            b"not a descriptor set",
        ]);
        let validate = table.get("/auth.v1.AuthService/ValidateToken");
        assert_eq!(validate.name, "auth.v1.AuthService/ValidateToken");
        assert!(validate.hot);
        let list = table.get("/auth.v1.AdminService/ListUsers");
        assert_eq!(list.name, "auth.v1.AdminService/ListUsers");
        assert!(!list.hot);
        assert!(table.get("/grpc.health.v1.Health/Check").hot);
        let check = table.get("/envoy.service.auth.v3.Authorization/Check");
        assert_eq!(check.name, "envoy.service.auth.v3.Authorization/Check");
        assert!(check.hot);
        assert_eq!(table.get("/auth.v1.AuthService/Nope").name, "unknown");
        assert_eq!(table.get("/../../etc/passwd").name, "unknown");
    }
}
