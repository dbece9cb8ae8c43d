//! Traces over OTLP/gRPC, when `AUTHD_OTLP_ENDPOINT` is set: `tracing` spans become
//! OpenTelemetry spans through `tracing-opentelemetry`, batched and exported by
//! `opentelemetry-otlp`. A W3C `traceparent` in a call's metadata makes its server
//! span a child of the caller's ([`continue_trace`]). Unset, nothing is built: no
//! layer, no exporter, and [`continue_trace`] returns at once.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::{
    propagation::{Extractor, TextMapPropagator},
    trace::{TraceContextExt, TracerProvider as _},
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{propagation::TraceContextPropagator, trace::SdkTracerProvider, Resource};
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    filter::{LevelFilter, Targets},
    registry::LookupSpan,
    Layer,
};

/// Whether spans are exported (the layer is installed).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// The exporter's owner: [`Traces::shutdown`] sends what is still buffered.
pub struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    pub fn shutdown(self) {
        if let Err(err) = self.provider.shutdown() {
            eprintln!("authd: exporting the last traces failed: {err}");
        }
    }
}

/// The layer that exports spans to `endpoint` (`http://host:4317`). Must be called
/// inside the Tokio runtime (the tonic exporter's connection lives on it).
///
/// It sees our spans at `info`, and the rpc spans of the hot methods, which are
/// `debug` so that logs at the default level never carry them.
pub fn layer<S>(endpoint: &str) -> anyhow::Result<(impl Layer<S>, Traces)>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| anyhow::anyhow!("AUTHD_OTLP_ENDPOINT: {e}"))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name("authd").build())
        .build();
    let tracer = provider.tracer("authd");
    let filter = Targets::new()
        .with_default(LevelFilter::INFO)
        .with_target("authd::grpc::observe", LevelFilter::DEBUG);
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(filter);
    EXPORTING.store(true, Ordering::Release);
    Ok((layer, Traces { provider }))
}

/// Makes `span` (a call's server span) continue the caller's trace when the
/// metadata carries a valid `traceparent`, and records the span's ids as its
/// `trace_id` and `span_id` fields, so the call's JSON log lines carry them.
pub fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    if !EXPORTING.load(Ordering::Acquire) || span.is_disabled() {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&Metadata(headers));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    let context = span.context();
    let ids = context.span().span_context().clone();
    if ids.is_valid() {
        span.record("trace_id", tracing::field::display(ids.trace_id()));
        span.record("span_id", tracing::field::display(ids.span_id()));
    }
}

/// A call's metadata as the propagator reads it.
struct Metadata<'a>(&'a http::HeaderMap);

impl Extractor for Metadata<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}
