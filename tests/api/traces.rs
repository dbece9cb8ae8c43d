//! Traces over OTLP: a real `authd serve` exports to an OTLP/gRPC receiver in this
//! test (opentelemetry-proto's own service definition). A call carrying a W3C
//! `traceparent` gets a server span in the caller's trace, named after the method,
//! with the `rpc.*` attributes, and child spans for hashing and database work; the
//! call's JSON log lines carry the trace id.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use authd::grpc::pb;
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        trace_service_server::{TraceService, TraceServiceServer},
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    },
    common::v1::any_value::Value,
    trace::v1::{span::SpanKind, Span},
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tonic::{Request, Response, Status};

use crate::{
    helpers::{eventually, free_port, TestDb, PASSWORD},
    operating::{check, spawn_serve},
};

#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut spans = self.spans.lock().expect("spans");
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Receiver {
    fn find(&self, trace_id: &[u8], name: &str) -> Option<Span> {
        self.spans
            .lock()
            .expect("spans")
            .iter()
            .find(|s| s.trace_id == trace_id && s.name == name)
            .cloned()
    }
}

fn attribute(span: &Span, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.clone())
        .and_then(|v| v.value)
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

fn with_traceparent<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-{PARENT_ID}-01")
            .parse()
            .expect("ascii"),
    );
    request
}

async fn a_call_with_a_traceparent_continues_the_callers_trace(db: TestDb) {
    let receiver = Receiver::default();
    let otlp = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let otlp_addr = otlp.local_addr().expect("addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(otlp)),
    );
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let endpoint = format!("http://{otlp_addr}");
    let mut child = spawn_serve(
        &db.url,
        port,
        &[
            ("AUTHD_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("AUTHD_LOG_FORMAT", "json"),
        ],
    );
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let logs = tokio::spawn(async move {
        let mut lines = Vec::new();
        while let Ok(Some(line)) = stderr.next_line().await {
            lines.push(line);
        }
        lines
    });
    let serving = eventually(Duration::from_secs(15), || async {
        check(&addr, "").await == Ok(1)
    })
    .await;
    assert!(serving.is_some(), "serving");

    let channel = crate::helpers::connect(addr.parse().expect("addr")).await;
    let mut client = pb::auth_service_client::AuthServiceClient::new(channel);
    client
        .register(with_traceparent(pb::RegisterRequest {
            username: "alice".into(),
            email: "alice@example.com".into(),
            password: PASSWORD.into(),
            full_name: String::new(),
        }))
        .await
        .expect("register");
    let login = client
        .login(pb::LoginRequest {
            username: "alice".into(),
            password: PASSWORD.into(),
        })
        .await
        .expect("login")
        .into_inner();
    let access = login.tokens.expect("tokens").access_token;
    client
        .validate_token(with_traceparent(pb::ValidateTokenRequest { token: access }))
        .await
        .expect("validate");

    let trace_id = hex::decode(TRACE_ID).expect("hex");
    let parent_id = hex::decode(PARENT_ID).expect("hex");
    let exported = eventually(Duration::from_secs(10), || {
        let receiver = receiver.clone();
        let trace_id = trace_id.clone();
        async move {
            receiver
                .find(&trace_id, "auth.v1.AuthService/Register")
                .is_some()
                && receiver.find(&trace_id, "hash.argon2id").is_some()
                && receiver
                    .find(&trace_id, "auth.v1.AuthService/ValidateToken")
                    .is_some()
        }
    })
    .await;
    assert!(
        exported.is_some(),
        "spans exported: {:?}",
        receiver
            .spans
            .lock()
            .expect("spans")
            .iter()
            .map(|s| s.name.clone())
            .collect::<Vec<_>>()
    );

    let server = receiver
        .find(&trace_id, "auth.v1.AuthService/Register")
        .expect("server span");
    assert_eq!(
        server.parent_span_id, parent_id,
        "a child of the caller's span"
    );
    assert_eq!(server.kind, SpanKind::Server as i32);
    assert_eq!(
        attribute(&server, "rpc.system"),
        Some(Value::StringValue("grpc".into()))
    );
    assert_eq!(
        attribute(&server, "rpc.service"),
        Some(Value::StringValue("auth.v1.AuthService".into()))
    );
    assert_eq!(
        attribute(&server, "rpc.method"),
        Some(Value::StringValue("Register".into()))
    );
    assert_eq!(
        attribute(&server, "rpc.grpc.status_code"),
        Some(Value::IntValue(0))
    );
    // Children: the hash (and its wait) and the database writes, in the same trace.
    let hash = receiver
        .find(&trace_id, "hash.argon2id")
        .expect("hash span");
    assert_eq!(hash.parent_span_id, server.span_id);
    assert!(receiver.find(&trace_id, "hash.queue_wait").is_some());
    let insert = receiver
        .find(&trace_id, "db.insert_user")
        .expect("database span");
    assert_eq!(insert.parent_span_id, server.span_id);
    // The login had no traceparent: its spans are in a trace of their own.
    let spans = receiver.spans.lock().expect("spans").clone();
    let login_span = spans
        .iter()
        .find(|s| s.name == "auth.v1.AuthService/Login")
        .expect("login span");
    assert_ne!(login_span.trace_id, trace_id);
    assert!(login_span.parent_span_id.is_empty());
    // No secret in any attribute.
    for span in &spans {
        for kv in &span.attributes {
            assert!(!format!("{:?}", kv.value).contains(PASSWORD), "{kv:?}");
        }
    }

    let pid = nix::unistd::Pid::from_raw(child.id().expect("pid") as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    let lines = logs.await.expect("logs");
    let traced: Vec<&String> = lines.iter().filter(|l| l.contains(TRACE_ID)).collect();
    assert!(
        traced.iter().any(|l| l.contains("rpc finished")),
        "a JSON log line of the call carries its trace id: {lines:?}"
    );
    for line in traced {
        let parsed: serde_json::Value = serde_json::from_str(line).expect("JSON");
        assert_eq!(parsed["span"]["trace_id"], TRACE_ID, "{parsed}");
        assert!(parsed["span"]["span_id"].is_string(), "{parsed}");
    }
}

on_sqlite!(a_call_with_a_traceparent_continues_the_callers_trace);
