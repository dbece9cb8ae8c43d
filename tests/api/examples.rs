//! The guard of `examples/protected_service.rs` against a real authd: the example's own
//! `serve` on a free port, called through a generated Health client as a backend's
//! caller would.

#[path = "../../examples/protected_service.rs"]
mod protected_service;

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
};

use protected_service::{authd_channel, AuthGuardLayer, Caller};
use tokio::{net::TcpListener, sync::oneshot};
use tonic::{
    body::Body,
    service::{interceptor::InterceptedService, Interceptor},
    transport::{Channel, Endpoint},
    Code, Status,
};
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
use tower::{Layer, ServiceExt};

use crate::helpers::{Bearer, TestApp};

const SERVING: i32 = 1;

/// The example service, guarded, in this process on a free port; stops on drop.
struct Protected {
    addr: std::net::SocketAddr,
    _stop: oneshot::Sender<()>,
}

async fn start_protected(authd: &TestApp) -> Protected {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let channel = authd_channel(&format!("http://{}", authd.addr())).expect("authd channel");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(protected_service::serve(
        listener,
        channel,
        "admin",
        async {
            let _ = stopped.await;
        },
    ));
    Protected { addr, _stop: stop }
}

impl Protected {
    async fn health(
        &self,
        token: Option<&str>,
    ) -> HealthClient<InterceptedService<Channel, OptionalBearer>> {
        let channel = Endpoint::from_shared(format!("http://{}", self.addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect to the protected service");
        // An empty value means "send no authorization header".
        let header = token.map(|t| format!("Bearer {t}")).unwrap_or_default();
        HealthClient::with_interceptor(channel, OptionalBearer(header))
    }

    /// `Check`: any valid token may call it.
    async fn check(&self, token: Option<&str>) -> Result<i32, Status> {
        self.health(token)
            .await
            .check(HealthCheckRequest::default())
            .await
            .map(|r| r.into_inner().status)
    }

    /// `Watch`: needs the role `admin`. Answers the first status it streams.
    async fn watch(&self, token: Option<&str>) -> Result<i32, Status> {
        let mut stream = self
            .health(token)
            .await
            .watch(HealthCheckRequest::default())
            .await?
            .into_inner();
        let first = stream.message().await?.expect("a first status");
        Ok(first.status)
    }
}

/// `Bearer` from the fixtures, except that an empty value sends no header at all.
#[derive(Clone)]
struct OptionalBearer(String);

impl Interceptor for OptionalBearer {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if self.0.is_empty() {
            Ok(request)
        } else {
            Bearer(self.0.clone()).call(request)
        }
    }
}

fn assert_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, what: &str) {
    match result {
        Err(status) => assert_eq!(status.code(), code, "{what}: {status:?}"),
        Ok(answer) => panic!("{what}: expected {code:?}, got OK {answer:?}"),
    }
}

async fn guard_checks_every_call_with_authd(app: TestApp) {
    app.register("alice").await;
    let alice = app.login("alice").await;
    let root = &app.admin().await.tokens;
    let protected = start_protected(&app).await;

    assert_code(
        protected.check(None).await,
        Code::Unauthenticated,
        "no token",
    );
    assert_code(
        protected.check(Some("not.a.token")).await,
        Code::Unauthenticated,
        "garbage token",
    );
    assert_code(
        protected.check(Some(&alice.refresh_token)).await,
        Code::Unauthenticated,
        "a refresh token",
    );
    assert_eq!(
        protected
            .check(Some(&alice.access_token))
            .await
            .expect("user token"),
        SERVING
    );

    assert_code(
        protected.watch(Some(&alice.access_token)).await,
        Code::PermissionDenied,
        "Watch with a user token",
    );
    assert_code(
        protected.watch(None).await,
        Code::Unauthenticated,
        "Watch, no token",
    );
    assert_eq!(
        protected
            .watch(Some(&root.access_token))
            .await
            .expect("admin token"),
        SERVING
    );

    app.logout(&alice.refresh_token).await.expect("logout");
    assert_code(
        protected.check(Some(&alice.access_token)).await,
        Code::Unauthenticated,
        "token of an ended session",
    );
    assert_eq!(
        protected
            .check(Some(&root.access_token))
            .await
            .expect("admin still in"),
        SERVING
    );
}

/// The layer on its own around a recording service: what the service receives, and
/// that it is not called at all when the check fails.
async fn guard_hands_the_caller_over_and_answers_refusals_itself(app: TestApp) {
    let alice_user = app.register("alice").await;
    let alice = app.login("alice").await;

    let seen: Arc<Mutex<Vec<Option<Caller>>>> = Arc::default();
    let recorder = {
        let seen = seen.clone();
        tower::service_fn(move |request: http::Request<Body>| {
            let seen = seen.clone();
            async move {
                let caller = request.extensions().get::<Caller>().cloned();
                seen.lock().expect("lock").push(caller);
                Ok::<_, Infallible>(http::Response::new(Body::default()))
            }
        })
    };
    let channel = authd_channel(&format!("http://{}", app.addr())).expect("channel");
    let guard = AuthGuardLayer::new(channel)
        .require_role("/demo.v1.Demo/Delete", "editor")
        .layer(recorder);
    let call = |path: &str, token: Option<&str>| {
        let mut request = http::Request::builder().uri(format!("http://svc{path}"));
        if let Some(token) = token {
            request = request.header("authorization", format!("bearer {token}"));
        }
        guard
            .clone()
            .oneshot(request.body(Body::default()).expect("request"))
    };

    let response = call("/demo.v1.Demo/Get", Some(&alice.access_token))
        .await
        .expect("infallible");
    assert_eq!(response.status(), http::StatusCode::OK);
    assert!(response.headers().get("grpc-status").is_none());
    let caller = seen
        .lock()
        .expect("lock")
        .pop()
        .flatten()
        .expect("a Caller");
    assert_eq!(caller.user_id, alice_user.id);
    assert_eq!(caller.username, "alice");
    assert!(caller.roles.contains(&"user".to_owned()), "{caller:?}");

    for (path, token, code) in [
        ("/demo.v1.Demo/Get", None, Code::Unauthenticated),
        ("/demo.v1.Demo/Get", Some("garbage"), Code::Unauthenticated),
        (
            "/demo.v1.Demo/Delete",
            Some(&alice.access_token[..]),
            Code::PermissionDenied,
        ),
    ] {
        let response = call(path, token).await.expect("infallible");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        // A trailers-only gRPC answer: HTTP 200, the status in the headers.
        assert_eq!(response.status(), http::StatusCode::OK, "{path} {token:?}");
        assert_eq!(header("grpc-status"), Some((code as i32).to_string()));
        assert!(header("grpc-message").is_some_and(|m| !m.is_empty()));
        assert!(header("content-type").is_some_and(|c| c.starts_with("application/grpc")));
    }
    assert!(
        seen.lock().expect("lock").is_empty(),
        "the inner service was called for a refused request"
    );
}

on_both_databases!(
    guard_checks_every_call_with_authd,
    guard_hands_the_caller_over_and_answers_refusals_itself,
);
