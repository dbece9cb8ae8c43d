//! `authd-client`'s requirements against a real authd, through a backend guarded by
//! `AuthLayer` as its callers reach it (tonic and axum): `require_permission` lets
//! holders through and refuses others (403 / PERMISSION_DENIED); a role's
//! definition changed with `UpdateRole` (a permission granted or withdrawn, an
//! include added or removed) reaches the same running verifier through the
//! revocation stream, for `require_permission` and for `require_role` decisions
//! made in-process from the token's roles.

use std::{sync::Arc, time::Duration};

use authd::grpc::pb::TokenPair;
use authd_client::{AuthLayer, Decided, Identity, Verifier};
use axum::{routing::get, Extension, Router};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::Code;

use crate::helpers::{code_of, eventually, verifier_of_app, Guarded, Shutdown, TestApp};

/// What the gRPC service and `/refunds` need.
const PERMISSION: &str = "billing.refund";
/// What `/reviews` needs.
const ROLE: &str = "editor";
/// Bounds each wait, so that a change that never arrives fails the test instead of
/// hanging it (not a measure of speed).
const PATIENCE: Duration = Duration::from_secs(15);

/// tonic-health behind `require_permission(PERMISSION)`; HTTP `/refunds` behind the
/// same, `/reviews` behind `require_role(ROLE)`.
async fn serve(grpc: TcpListener, http: TcpListener, verifier: Verifier, shutdown: Shutdown) {
    let (_, health) = tonic_health::server::health_reporter();
    let grpc_server = tonic::transport::Server::builder()
        .layer(AuthLayer::new(verifier.clone()).require_permission(PERMISSION))
        .add_service(health)
        .serve_with_incoming(TcpListenerStream::new(grpc));
    let app = Router::new()
        .route("/refunds", get(permissions_of))
        .route_layer(AuthLayer::new(verifier.clone()).require_permission(PERMISSION))
        .merge(
            Router::new()
                .route("/reviews", get(roles_of))
                .route_layer(AuthLayer::new(verifier).require_role(ROLE)),
        );
    tokio::select! {
        _ = grpc_server => {}
        _ = axum::serve(http, app) => {}
        () = shutdown => {}
    }
}

async fn permissions_of(Extension(caller): Extension<Arc<Identity>>) -> String {
    caller.permissions.clone().unwrap_or_default().join(",")
}

async fn roles_of(Extension(caller): Extension<Arc<Identity>>) -> String {
    caller.roles.join(",")
}

/// The backend, with a verifier of `app` that follows the revocation stream (so
/// that what reaches it later comes through the stream), and that verifier.
async fn start_guarded(app: &TestApp) -> (Guarded, Verifier) {
    let verifier = verifier_of_app(app).await;
    let follows = eventually(PATIENCE, || async { verifier.is_following() }).await;
    assert!(follows.is_some(), "the verifier follows the stream");
    let serving = verifier.clone();
    let service = Guarded::start(|grpc, http, shutdown| serve(grpc, http, serving, shutdown)).await;
    (service, verifier)
}

/// `username`, holding `role` besides `user`, signed in.
async fn holder_of(app: &TestApp, username: &str, role: &str) -> TokenPair {
    let user = app.register(username).await;
    let admin = app.admin().await;
    admin.assign_role(&user.id, role).await.expect("assign");
    app.login(username).await
}

/// A token of `username` that `verifier` decides in-process (issued once the
/// stream it follows covers it), as most tokens a running service sees are.
async fn token_decided_locally(app: &TestApp, verifier: &Verifier, username: &str) -> String {
    for _ in 0..30 {
        let token = app.login(username).await.access_token;
        let identity = verifier.verify(&token).await.expect("valid");
        if identity.decided == Decided::Locally {
            assert_eq!(identity.permissions, None, "a token carries no permissions");
            return token;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("no token of {username} was decided locally");
}

/// HTTP and gRPC: a holder of the permission (through a custom role) passes and the
/// handler sees the permissions; a plain user is 403 / PERMISSION_DENIED naming
/// it; an admin holds every permission; no token is 401 / UNAUTHENTICATED.
async fn a_permission_requirement_lets_only_holders_through(app: TestApp) {
    let admin = app.admin().await;
    admin
        .create_role("billing", &[], &[PERMISSION])
        .await
        .expect("create role");
    let alice = holder_of(&app, "alice", "billing").await;
    app.register("bob").await;
    let bob = app.login("bob").await;
    let (service, _) = start_guarded(&app).await;

    let (status, challenge, _) = service.get("/refunds", None).await;
    assert_eq!((status, challenge.as_str()), (401, "Bearer"));
    let (status, _, body) = service
        .get("/refunds", Some(&format!("Bearer {}", alice.access_token)))
        .await;
    assert_eq!((status, body.as_str()), (200, PERMISSION));
    let (status, challenge, _) = service
        .get("/refunds", Some(&format!("Bearer {}", bob.access_token)))
        .await;
    assert_eq!(status, 403);
    assert!(challenge.contains("insufficient_scope"), "{challenge}");
    let root = format!("Bearer {}", admin.tokens.access_token);
    let (status, _, _) = service.get("/refunds", Some(&root)).await;
    assert_eq!(status, 200, "admin holds every permission");

    assert_eq!(code_of(service.check(None).await), Code::Unauthenticated);
    assert_eq!(
        code_of(service.check(Some(&alice.access_token)).await),
        Code::Ok
    );
    let refused = service
        .check(Some(&bob.access_token))
        .await
        .expect_err("bob lacks it");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(
        refused.message().contains(PERMISSION),
        "{}",
        refused.message()
    );
}

/// A permission granted with UpdateRole to a role the caller holds lets the
/// request that was refused through, and withdrawing it refuses it again: both
/// reach the running verifier through the revocation stream.
async fn a_permission_granted_to_a_held_role_and_withdrawn_reaches_the_layer(app: TestApp) {
    let admin = app.admin().await;
    admin
        .create_role("support", &[], &[])
        .await
        .expect("create role");
    let alice = holder_of(&app, "alice", "support").await;
    let (service, _) = start_guarded(&app).await;
    let check = || async { code_of(service.check(Some(&alice.access_token)).await) };
    assert_eq!(check().await, Code::PermissionDenied);

    admin
        .update_role("support", &[], &[PERMISSION])
        .await
        .expect("grant");
    let granted = eventually(PATIENCE, || async { check().await == Code::Ok }).await;
    assert!(granted.is_some(), "the granted permission took effect");

    admin
        .update_role("support", &[], &[])
        .await
        .expect("withdraw");
    let withdrawn = eventually(PATIENCE, || async {
        check().await == Code::PermissionDenied
    })
    .await;
    assert!(withdrawn.is_some(), "the withdrawn permission took effect");
}

/// An include added with UpdateRole to a role the caller holds gives them the
/// included role: `require_role`, which the verifier decided in-process from the
/// token's roles, lets them through; removing the include refuses them again.
async fn an_include_added_to_a_held_role_reaches_require_role(app: TestApp) {
    let admin = app.admin().await;
    admin
        .create_role("support", &[], &[])
        .await
        .expect("create role");
    holder_of(&app, "alice", "support").await;
    let (service, verifier) = start_guarded(&app).await;
    let alice = format!(
        "Bearer {}",
        token_decided_locally(&app, &verifier, "alice").await
    );
    let reviews = || async { service.get("/reviews", Some(&alice)).await.0 };
    assert_eq!(reviews().await, 403);

    admin
        .update_role("support", &[ROLE], &[])
        .await
        .expect("include");
    let included = eventually(PATIENCE, || async { reviews().await == 200 }).await;
    assert!(included.is_some(), "the included role took effect");

    admin
        .update_role("support", &[], &[])
        .await
        .expect("exclude");
    let excluded = eventually(PATIENCE, || async { reviews().await == 403 }).await;
    assert!(excluded.is_some(), "the removed include took effect");
}

on_both_databases!(
    a_permission_requirement_lets_only_holders_through,
    a_permission_granted_to_a_held_role_and_withdrawn_reaches_the_layer,
    an_include_added_to_a_held_role_reaches_require_role,
);
