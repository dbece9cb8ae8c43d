//! `authd-client`'s `Verifier` against a real authd: tokens it has seen are
//! decided in-process and a logout reaches it through `WatchRevocations` with no
//! `ValidateToken` call; it asks authd when it cannot be sure (the stream down, a
//! kid it cannot find, an API key).
//!
//! The verifier talks to a replica process (`authd serve` on the same database):
//! its `/metrics` count only the verifier's calls (the in-process servers of the
//! other tests share one recorder), so `grpc_server_handled_total` for
//! `ValidateToken` there counts exactly what the verifier asked.

use std::{net::SocketAddr, time::Duration};

use authd_client::{Credential, Decided, Refusal, Verifier};

use crate::{
    helpers::{eventually, ServerProcess, TestApp},
    metrics::Scrape,
};

const PATIENCE: Duration = Duration::from_secs(15);

/// ValidateToken calls the replica has answered (any code).
async fn validate_calls(replica: &ServerProcess) -> f64 {
    Scrape::at(replica.http_addr).await.count(
        "grpc_server_handled_total",
        &[("grpc_method", "ValidateToken")],
    )
}

fn jwks_url(http_addr: SocketAddr) -> String {
    format!("http://{http_addr}/.well-known/jwks.json")
}

async fn verifier_of(replica: &ServerProcess) -> Verifier {
    Verifier::builder(format!("http://{}", replica.addr))
        .jwks_url(jwks_url(replica.http_addr))
        .connect()
        .await
        .expect("verifier")
}

async fn following(verifier: &Verifier) {
    let follows = eventually(PATIENCE, || async { verifier.is_following() }).await;
    assert!(follows.is_some(), "the verifier follows the stream");
}

/// A token seen once is decided in-process from then on: a hundred checks add no
/// ValidateToken call. After a logout (on the other replica) the verifier
/// refuses it, still without one.
async fn a_logged_out_token_is_refused_without_asking_authd(app: TestApp) {
    let replica = app.replica(&[]).await;
    let verifier = verifier_of(&replica).await;
    following(&verifier).await;
    app.register("alice").await;
    let alice = app.login("alice").await;
    let first = verifier.verify(&alice.access_token).await.expect("valid");
    assert_eq!(first.credential, Credential::AccessToken);
    assert!(first.has_role("user"));

    let before = validate_calls(&replica).await;
    for _ in 0..100 {
        let again = verifier.verify(&alice.access_token).await.expect("valid");
        assert_eq!(again.subject, first.subject);
    }
    assert_eq!(validate_calls(&replica).await, before, "cached: no call");

    app.logout(&alice.refresh_token).await.expect("logout");
    let refused = eventually(PATIENCE, || async {
        verifier.verify(&alice.access_token).await == Err(Refusal::Invalid)
    })
    .await;
    assert!(refused.is_some(), "the logout reached the verifier");
    assert_eq!(
        validate_calls(&replica).await,
        before,
        "refused from the stream, without asking authd"
    );
}

/// While the verifier cannot follow the stream (here: the replica's one watcher
/// place is taken), every check asks authd; once the place is free it follows
/// again and a token seen before costs no call.
async fn the_verifier_asks_authd_while_the_stream_is_down(app: TestApp) {
    let replica = app.replica(&[("AUTHD_MAX_REVOCATION_WATCHERS", "1")]).await;
    let there = replica.client().await;
    let squatter = there.watch_revocations("").await.expect("the one place");
    let verifier = verifier_of(&replica).await;
    app.register("alice").await;
    let alice = app.login("alice").await;
    assert!(!verifier.is_following());
    let before = validate_calls(&replica).await;
    for _ in 0..3 {
        let identity = verifier.verify(&alice.access_token).await.expect("valid");
        assert_eq!(identity.decided, Decided::ByAuthd);
    }
    assert_eq!(validate_calls(&replica).await, before + 3.0);

    drop(squatter);
    following(&verifier).await;
    verifier.verify(&alice.access_token).await.expect("valid");
    let settled = validate_calls(&replica).await;
    verifier.verify(&alice.access_token).await.expect("valid");
    assert_eq!(validate_calls(&replica).await, settled, "cached again");
}

/// A token signed by a kid the verifier's JWK Set lacks (it is served a set
/// from before a rotation) is decided by authd.
async fn an_unknown_kid_is_decided_by_authd(app: TestApp) {
    let replica = app.replica(&[]).await;
    let stale = reqwest::get(jwks_url(replica.http_addr))
        .await
        .expect("GET jwks")
        .text()
        .await
        .expect("body");
    let stale_jwks_text = stale.clone();
    let stale_jwks = serve_text(stale).await;
    let verifier = Verifier::builder(format!("http://{}", replica.addr))
        .jwks_url(format!("http://{stale_jwks}/"))
        .connect()
        .await
        .expect("verifier");
    following(&verifier).await;
    let rotated = app.db.cli(&["keys", "rotate"], None).await;
    assert!(rotated.status.success(), "{rotated:?}");
    app.register("alice").await;
    let old_kid = first_kid(&stale_jwks_text);
    // The server signs with the new key once its feed has applied the rotation.
    let mut alice = app.login("alice").await;
    for _ in 0..50 {
        if crate::tokens::kid_of(&alice.access_token) != old_kid {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        alice = app.login("alice").await;
    }
    assert_ne!(crate::tokens::kid_of(&alice.access_token), old_kid);
    let before = validate_calls(&replica).await;
    let identity = verifier.verify(&alice.access_token).await.expect("valid");
    assert_eq!(identity.decided, Decided::ByAuthd);
    assert!(validate_calls(&replica).await > before);
}

/// An API key is decided by authd once, then cached; its revocation reaches the
/// verifier through the stream.
async fn an_api_key_is_decided_by_authd_and_its_revocation_streamed(app: TestApp) {
    let replica = app.replica(&[]).await;
    let verifier = verifier_of(&replica).await;
    following(&verifier).await;
    let admin = app.admin().await;
    let created = admin
        .create_api_key("batch", &["editor"], 0)
        .await
        .expect("key");
    let key_id = created.key.expect("key").id;
    let before = validate_calls(&replica).await;
    let identity = verifier.verify(&created.api_key).await.expect("valid");
    assert_eq!(
        (identity.credential, identity.decided),
        (Credential::ApiKey, Decided::ByAuthd)
    );
    assert_eq!(identity.subject, key_id);
    assert!(identity.has_role("user"), "{:?}", identity.roles);
    assert_eq!(validate_calls(&replica).await, before + 1.0);
    verifier.verify(&created.api_key).await.expect("cached");
    assert_eq!(validate_calls(&replica).await, before + 1.0);

    admin.revoke_api_key(&key_id).await.expect("revoke");
    let refused = eventually(PATIENCE, || async {
        verifier.verify(&created.api_key).await == Err(Refusal::Invalid)
    })
    .await;
    assert!(refused.is_some(), "the revocation reached the verifier");
}

/// A token carries no permissions: the first check that needs them asks authd,
/// whose answer is cached with the decision, so a hundred more checks (and plain
/// verifications) add no call. A permission withdrawn from the role reaches the
/// verifier through the stream; after one more answer the token is cached again.
async fn permissions_are_asked_of_authd_once_per_token(app: TestApp) {
    const PERMISSION: &str = "billing.refund";
    // All set before the replica starts, so it knows it all and its stream says
    // nothing of it.
    let admin = app.admin().await;
    admin
        .create_role("billing", &[], &[PERMISSION])
        .await
        .expect("create role");
    let alice_id = app.register("alice").await.id;
    admin
        .assign_role(&alice_id, "billing")
        .await
        .expect("assign");
    let alice = app.login("alice").await.access_token;
    let replica = app.replica(&[]).await;
    let verifier = verifier_of(&replica).await;
    following(&verifier).await;

    let before = validate_calls(&replica).await;
    let first = verifier
        .verify_with_permissions(&alice)
        .await
        .expect("valid");
    assert_eq!(
        first.permissions.as_deref(),
        Some(&[PERMISSION.to_owned()][..])
    );
    assert!(first.has_permission(PERMISSION));
    assert!(!first.has_permission("billing.void"));
    assert_eq!(validate_calls(&replica).await, before + 1.0, "asked once");
    for _ in 0..100 {
        let again = verifier
            .verify_with_permissions(&alice)
            .await
            .expect("valid");
        assert!(again.has_permission(PERMISSION));
    }
    let plain = verifier.verify(&alice).await.expect("valid");
    assert!(plain.permissions.is_some(), "the same cached decision");
    assert_eq!(
        validate_calls(&replica).await,
        before + 1.0,
        "cached: no call"
    );

    admin
        .update_role("billing", &[], &[])
        .await
        .expect("withdraw");
    let withdrawn = eventually(PATIENCE, || async {
        let identity = verifier
            .verify_with_permissions(&alice)
            .await
            .expect("valid");
        !identity.has_permission(PERMISSION)
    })
    .await;
    assert!(withdrawn.is_some(), "the withdrawal reached the verifier");
    let settled = validate_calls(&replica).await;
    verifier
        .verify_with_permissions(&alice)
        .await
        .expect("valid");
    assert_eq!(validate_calls(&replica).await, settled, "cached again");
}

/// Serves `body` on a free port for any path, until the test's runtime ends.
async fn serve_text(body: String) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().fallback(move || {
        let body = body.clone();
        async move { body }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn first_kid(jwks: &str) -> String {
    let set: serde_json::Value = serde_json::from_str(jwks).expect("JSON");
    set["keys"][0]["kid"].as_str().expect("kid").to_owned()
}

on_both_databases!(
    a_logged_out_token_is_refused_without_asking_authd,
    the_verifier_asks_authd_while_the_stream_is_down,
    an_unknown_kid_is_decided_by_authd,
    an_api_key_is_decided_by_authd_and_its_revocation_streamed,
    permissions_are_asked_of_authd_once_per_token,
);
