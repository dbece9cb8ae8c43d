//! `clients/rust/examples/protected_service.rs` against a real authd: the example's
//! own `serve` on free ports, its gRPC service called through a generated Health
//! client and its HTTP routes with reqwest, as a backend's callers would. It shows
//! `authd-client`'s `AuthLayer`: allowed, 401 / UNAUTHENTICATED, 403 /
//! PERMISSION_DENIED, and a role granted later taking effect.

#[path = "../../clients/rust/examples/protected_service.rs"]
mod protected_service;

use std::time::Duration;

use tonic::Code;

use crate::helpers::{code_of, eventually, verifier_of_app, Guarded, TestApp};

/// The example's own `serve`, in this process on free ports; stops on drop.
async fn start_protected(authd: &TestApp) -> Guarded {
    let verifier = verifier_of_app(authd).await;
    Guarded::start(|grpc, http, shutdown| protected_service::serve(grpc, http, verifier, shutdown))
        .await
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
