//! The gRPC server metrics in the names the gRPC ecosystem uses
//! (go-grpc-middleware's `grpc_server_*`), so stock dashboards and alerts work:
//! `grpc_server_started_total`, `grpc_server_handled_total` (with `grpc_code`
//! spelled `OK`, `Unauthenticated`, … as grpc-go writes codes) and the
//! `grpc_server_handling_seconds` histogram, each labelled `grpc_service`,
//! `grpc_method` and `grpc_type` (`unary`, `server_stream`, …).
//!
//! A call is handled when its response ends, not when its headers go out: the
//! status of a call that succeeds (and of any stream) travels in the trailers, so
//! the response body is wrapped and the call is recorded when the trailers pass
//! through it. A call whose response is dropped first (the client cancelled, the
//! connection went) is recorded as `Canceled`, at that moment. A health `Watch`
//! is thus measured from its start to its end.
//!
//! This runs on every call of the hot path, so the per-call work is one map lookup
//! by path and a few atomic updates: methods are read once from the descriptor sets
//! we serve, and their metric handles are registered on first use instead of
//! building and hashing label sets on every call. (The crates that do this for
//! tonic write upper-case codes, have no `grpc_type`, or bring a second registry.)

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{ready, Context, Poll},
    time::Instant,
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use metrics::{Counter, Histogram};
use tonic::Code;
use tower::{Layer, Service};

use super::methods::MethodTable;

/// How many gRPC status codes there are (OK = 0 … UNAUTHENTICATED = 16).
const CODES: usize = 17;

/// The name grpc-go gives a status code (`codes.Code.String()`), which
/// go-grpc-middleware writes into `grpc_code`.
pub fn ecosystem_code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// Puts the gRPC server metrics around a service; see the module docs.
#[derive(Clone, Debug)]
pub struct GrpcMetricsLayer {
    methods: Arc<MethodTable<MethodMetrics>>,
}

impl GrpcMetricsLayer {
    /// Measures the methods of the services in these encoded `FileDescriptorSet`s;
    /// any other path is counted under `unknown`, so callers cannot grow the label
    /// set.
    pub fn new(descriptor_sets: &[&[u8]]) -> Self {
        GrpcMetricsLayer {
            methods: Arc::new(method_table(descriptor_sets)),
        }
    }
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics {
            inner,
            methods: self.methods.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct GrpcMetrics<S> {
    inner: S,
    methods: Arc<MethodTable<MethodMetrics>>,
}

/// The metric handles of every method we serve.
fn method_table(descriptor_sets: &[&[u8]]) -> MethodTable<MethodMetrics> {
    MethodTable::from_descriptor_sets(descriptor_sets, |info| {
        MethodMetrics::new(info.service.to_owned(), info.method.to_owned(), info.kind)
    })
}

/// One method's labels and metric handles, each registered on first use.
#[derive(Debug)]
struct MethodMetrics {
    service: String,
    method: String,
    kind: &'static str,
    started: OnceLock<Counter>,
    handling: OnceLock<Histogram>,
    handled: [OnceLock<Counter>; CODES],
}

impl MethodMetrics {
    fn new(service: String, method: String, kind: &'static str) -> Self {
        MethodMetrics {
            service,
            method,
            kind,
            started: OnceLock::new(),
            handling: OnceLock::new(),
            handled: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    fn labels(&self) -> [(&'static str, String); 3] {
        [
            ("grpc_service", self.service.clone()),
            ("grpc_method", self.method.clone()),
            ("grpc_type", self.kind.to_owned()),
        ]
    }

    fn start(&self) {
        self.started
            .get_or_init(|| metrics::counter!("grpc_server_started_total", &self.labels()))
            .increment(1);
    }

    fn handled(&self, code: Code, seconds: f64) {
        self.handled[(code as usize).min(CODES - 1)]
            .get_or_init(|| {
                let [service, method, kind] = self.labels();
                metrics::counter!(
                    "grpc_server_handled_total",
                    &[
                        service,
                        method,
                        kind,
                        ("grpc_code", ecosystem_code_name(code).to_owned())
                    ]
                )
            })
            .increment(1);
        self.handling
            .get_or_init(|| metrics::histogram!("grpc_server_handling_seconds", &self.labels()))
            .record(seconds);
    }
}

/// One call in flight: recorded exactly once, with its code when it ends, or as
/// `Canceled` if it is dropped before.
struct Call {
    method: Arc<MethodMetrics>,
    started: Instant,
    done: bool,
}

impl Call {
    fn finish(&mut self, code: Code) {
        if !self.done {
            self.done = true;
            self.method
                .handled(code, self.started.elapsed().as_secs_f64());
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
    }
}

/// The `grpc-status` in these headers or trailers, if there is one.
fn grpc_status(headers: &http::HeaderMap) -> Option<Code> {
    let value = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    Some(Code::from_i32(value))
}

impl<S, B, RB> Service<http::Request<B>> for GrpcMetrics<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Unpin,
{
    type Response = http::Response<MeteredBody<RB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = self.methods.get(request.uri().path()).clone();
        method.start();
        let call = Call {
            method,
            started: Instant::now(),
            done: false,
        };
        ResponseFuture {
            inner: self.inner.call(request),
            call: Some(call),
        }
    }
}

/// The inner service's response future, holding the call until the headers come
/// (a named future rather than a boxed one: no allocation per call).
pub struct ResponseFuture<F> {
    inner: F,
    call: Option<Call>,
}

impl<F, RB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<RB>, E>> + Unpin,
{
    type Output = Result<http::Response<MeteredBody<RB>>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let result = ready!(Pin::new(&mut this.inner).poll(cx));
        let mut call = this.call.take();
        Poll::Ready(match result {
            Ok(response) => {
                // An error is answered trailers-only: its status is in the headers
                // and the body ends without trailers of its own.
                if let Some(code) = grpc_status(response.headers()) {
                    if let Some(mut call) = call.take() {
                        call.finish(code);
                    }
                }
                Ok(response.map(|inner| MeteredBody { inner, call }))
            }
            Err(err) => {
                if let Some(mut call) = call {
                    call.finish(Code::Internal);
                }
                Err(err)
            }
        })
    }
}

/// A response body that records its call when the trailers pass (or when the body
/// ends or is dropped first).
pub struct MeteredBody<B> {
    inner: B,
    call: Option<Call>,
}

impl<B> Body for MeteredBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        let ended = match &frame {
            Some(Ok(frame)) => frame
                .trailers_ref()
                .map(|trailers| grpc_status(trailers).unwrap_or(Code::Unknown)),
            // The stream failed, or ended without trailers: no status was sent.
            Some(Err(_)) | None => Some(Code::Unknown),
        };
        if let Some(code) = ended {
            if let Some(mut call) = this.call.take() {
                call.finish(code);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_come_from_the_descriptor_sets_with_their_type() {
        let table = method_table(&[
            crate::grpc::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            b"not a descriptor set",
        ]);
        let validate = table.get("/auth.v1.AuthService/ValidateToken");
        assert_eq!(
            (
                validate.service.as_str(),
                validate.method.as_str(),
                validate.kind
            ),
            ("auth.v1.AuthService", "ValidateToken", "unary")
        );
        let watch = table.get("/grpc.health.v1.Health/Watch");
        assert_eq!(
            (watch.service.as_str(), watch.method.as_str(), watch.kind),
            ("grpc.health.v1.Health", "Watch", "server_stream")
        );
        assert_eq!(table.get("/auth.v1.AuthService/Nope").method, "unknown");
        assert_eq!(table.get("/../../etc/passwd").service, "unknown");
    }

    #[test]
    fn codes_are_spelled_as_grpc_go_spells_them() {
        assert_eq!(ecosystem_code_name(Code::Ok), "OK");
        assert_eq!(ecosystem_code_name(Code::Cancelled), "Canceled");
        assert_eq!(
            ecosystem_code_name(Code::Unauthenticated),
            "Unauthenticated"
        );
        assert_eq!(
            ecosystem_code_name(Code::ResourceExhausted),
            "ResourceExhausted"
        );
        assert_eq!(
            ecosystem_code_name(Code::DeadlineExceeded),
            "DeadlineExceeded"
        );
    }
}
