//! `clients/rust/examples/protected_service.rs` against a real authd: the example's
//! own `serve` on free ports, its gRPC service called through a generated Health
//! client and its HTTP routes with reqwest, as a backend's callers would. It shows
//! `authd-client`'s `AuthLayer`: allowed, 401 / UNAUTHENTICATED, 403 /
//! PERMISSION_DENIED, and a role granted later taking effect.

#[path = "../../clients/rust/examples/protected_service.rs"]
mod protected_service;

use std::{net::SocketAddr, time::Duration};

use authd_client::Verifier;
use tokio::{net::TcpListener, sync::oneshot};
use tonic::{
    service::{interceptor::InterceptedService, Interceptor},
    transport::Endpoint,
    Code, Status,
};
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

use crate::helpers::{eventually, Bearer, TestApp};

/// The example, in this process on free ports; stops on drop.
struct Protected {
    grpc: SocketAddr,
    http: SocketAddr,
    _stop: oneshot::Sender<()>,
}

async fn start_protected(authd: &TestApp) -> Protected {
    let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let http = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (grpc_addr, http_addr) = (
        grpc.local_addr().expect("addr"),
        http.local_addr().expect("addr"),
    );
    let verifier = Verifier::builder(format!("http://{}", authd.addr()))
        .jwks_url(format!(
            "http://{}/.well-known/jwks.json",
            authd.http_addr()
        ))
        .connect()
        .await
        .expect("verifier");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(protected_service::serve(grpc, http, verifier, async {
        let _ = stopped.await;
    }));
    Protected {
        grpc: grpc_addr,
        http: http_addr,
        _stop: stop,
    }
}

impl Protected {
    /// `Health/Check` with `token` (none: no authorization header).
    async fn check(&self, token: Option<&str>) -> Result<i32, Status> {
        let channel = Endpoint::from_shared(format!("http://{}", self.grpc))
            .expect("uri")
            .connect()
            .await
            .expect("connect to the protected service");
        let header = token.map(|t| format!("Bearer {t}")).unwrap_or_default();
        HealthClient::new(InterceptedService::new(channel, OptionalBearer(header)))
            .check(HealthCheckRequest::default())
            .await
            .map(|r| r.into_inner().status)
    }

    /// `GET path` with `authorization` (none: no header): status, challenge, body.
    async fn get(&self, path: &str, authorization: Option<&str>) -> (u16, String, String) {
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

fn code_of<T>(result: Result<T, Status>) -> Code {
    result.map_or_else(|status| status.code(), |_| Code::Ok)
}

/// HTTP: no token or a bad one is 401 with `www-authenticate: Bearer`; a valid
/// one passes and the handler sees the caller; `/admin` is 403 for a user and
/// open to an admin.
async fn the_layer_guards_http_routes(app: TestApp) {
    let alice_id = app.register("alice").await.id;
    let alice = app.login("alice").await;
    let admin = app.admin().await;
    let service = start_protected(&app).await;

    let (status, challenge, _) = service.get("/whoami", None).await;
    assert_eq!((status, challenge.as_str()), (401, "Bearer"));
    let (status, challenge, _) = service.get("/whoami", Some("Bearer garbage")).await;
    assert_eq!(status, 401);
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    let (status, _, _) = service.get("/whoami", Some("Basic YWxpY2U6cHc=")).await;
    assert_eq!(status, 401);

    let bearer = format!("Bearer {}", alice.access_token);
    let (status, _, body) = service.get("/whoami", Some(&bearer)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with(&alice_id), "{body}");
    assert!(body.contains("user"), "{body}");
    let (status, challenge, _) = service.get("/admin", Some(&bearer)).await;
    assert_eq!(status, 403);
    assert!(challenge.contains("insufficient_scope"), "{challenge}");
    let root = format!("Bearer {}", admin.tokens.access_token);
    let (status, _, body) = service.get("/admin", Some(&root)).await;
    assert_eq!(status, 200, "{body}");
}

/// gRPC: UNAUTHENTICATED without a valid token, PERMISSION_DENIED without the
/// role; once the role is granted (the revocation stream says the user's roles
/// changed, authd says which) the same token passes; after logout it is
/// UNAUTHENTICATED again.
async fn the_layer_guards_a_tonic_service(app: TestApp) {
    let alice_id = app.register("alice").await.id;
    let alice = app.login("alice").await;
    let admin = app.admin().await;
    let service = start_protected(&app).await;

    assert_eq!(code_of(service.check(None).await), Code::Unauthenticated);
    assert_eq!(
        code_of(service.check(Some("garbage")).await),
        Code::Unauthenticated
    );
    assert_eq!(
        code_of(service.check(Some(&alice.access_token)).await),
        Code::PermissionDenied
    );
    admin
        .assign_role(&alice_id, protected_service::GRPC_ROLE)
        .await
        .expect("assign");
    let allowed = eventually(Duration::from_secs(15), || async {
        service.check(Some(&alice.access_token)).await.is_ok()
    })
    .await;
    assert!(allowed.is_some(), "the granted role took effect");
    app.logout(&alice.refresh_token).await.expect("logout");
    let refused = eventually(Duration::from_secs(15), || async {
        code_of(service.check(Some(&alice.access_token)).await) == Code::Unauthenticated
    })
    .await;
    assert!(refused.is_some(), "the logout took effect");
}

on_both_databases!(
    the_layer_guards_http_routes,
    the_layer_guards_a_tonic_service
);
