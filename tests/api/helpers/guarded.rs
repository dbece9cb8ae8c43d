//! A backend behind `authd-client`'s `AuthLayer`, reached as its own callers reach
//! it: a gRPC service (tonic-health's `Health/Check`) through a generated client and
//! HTTP routes with reqwest. The backend runs in this process on free ports and
//! stops when the [`Guarded`] is dropped; what it serves is up to the test.

use std::{future::Future, net::SocketAddr, pin::Pin};

use authd_client::Verifier;
use tokio::{net::TcpListener, sync::oneshot};
use tonic::{
    service::{interceptor::InterceptedService, Interceptor},
    transport::Endpoint,
    Code, Status,
};
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

use super::{Bearer, TestApp};

/// A verifier of `authd` (its gRPC address, and the JWK Set from its HTTP listener).
pub async fn verifier_of_app(authd: &TestApp) -> Verifier {
    Verifier::builder(format!("http://{}", authd.addr()))
        .jwks_url(format!(
            "http://{}/.well-known/jwks.json",
            authd.http_addr()
        ))
        .connect()
        .await
        .expect("verifier")
}

/// Resolves when the backend must stop.
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The backend's two addresses; it stops on drop.
pub struct Guarded {
    grpc: SocketAddr,
    http: SocketAddr,
    _stop: oneshot::Sender<()>,
}

impl Guarded {
    /// Runs `serve(grpc listener, http listener, shutdown)` in a task.
    pub async fn start<F, Fut>(serve: F) -> Guarded
    where
        F: FnOnce(TcpListener, TcpListener, Shutdown) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let http = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let (grpc_addr, http_addr) = (
            grpc.local_addr().expect("addr"),
            http.local_addr().expect("addr"),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown: Shutdown = Box::pin(async {
            let _ = stopped.await;
        });
        tokio::spawn(serve(grpc, http, shutdown));
        Guarded {
            grpc: grpc_addr,
            http: http_addr,
            _stop: stop,
        }
    }

    /// `Health/Check` with `token` (none: no authorization header).
    pub async fn check(&self, token: Option<&str>) -> Result<i32, Status> {
        let channel = Endpoint::from_shared(format!("http://{}", self.grpc))
            .expect("uri")
            .connect()
            .await
            .expect("connect to the guarded service");
        let header = token.map(|t| format!("Bearer {t}")).unwrap_or_default();
        HealthClient::new(InterceptedService::new(channel, OptionalBearer(header)))
            .check(HealthCheckRequest::default())
            .await
            .map(|r| r.into_inner().status)
    }

    /// `GET path` with `authorization` (none: no header): status, challenge, body.
    pub async fn get(&self, path: &str, authorization: Option<&str>) -> (u16, String, String) {
        let mut request = reqwest::Client::new().get(format!("http://{}{path}", self.http));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let response = request.send().await.expect("GET");
        let status = response.status().as_u16();
        let challenge = response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().expect("ascii").to_owned())
            .unwrap_or_default();
        (status, challenge, response.text().await.expect("body"))
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

/// The gRPC code of a call's outcome (`OK` for an answer).
pub fn code_of<T>(result: Result<T, Status>) -> Code {
    result.map_or_else(|status| status.code(), |_| Code::Ok)
}
