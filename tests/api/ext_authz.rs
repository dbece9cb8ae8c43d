//! Envoy external authorization (API.md, "Delegation without code"), called as
//! Envoy calls it: `envoy.service.auth.v3.Authorization/Check` through the client
//! generated from Envoy's own protos (`envoy-types`), on authd's gRPC listener.
//! Allowed requests get the identity headers, each overwriting what the client
//! sent; no or bad credentials are 401 with `www-authenticate: Bearer`; a route's
//! `authd_role` or `authd_permission` that the caller lacks is 403.

use std::{collections::HashMap, time::Duration};

use envoy_types::pb::envoy::{
    config::core::v3::header_value_option::HeaderAppendAction,
    r#type::v3::StatusCode as HttpStatusCode,
    service::auth::v3::{
        attribute_context, authorization_client::AuthorizationClient, check_response,
        AttributeContext, CheckRequest, CheckResponse,
    },
};
use tonic::{transport::Channel, Code};

use crate::{
    helpers::{token_claims, TestApp, TestDb},
    metrics::Scrape,
};

const IDENTITY_HEADERS: [&str; 4] = [
    "x-authd-user-id",
    "x-authd-username",
    "x-authd-roles",
    "x-authd-session-id",
];

/// Envoy's side of the call: the checked request's headers and the route's
/// context extensions.
struct Envoy(AuthorizationClient<Channel>);

impl Envoy {
    async fn of(app: &TestApp) -> Envoy {
        Envoy(AuthorizationClient::new(app.channel().await))
    }

    async fn check(&self, headers: &[(&str, &str)], extensions: &[(&str, &str)]) -> CheckResponse {
        let owned = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let request = CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(attribute_context::Request {
                    http: Some(attribute_context::HttpRequest {
                        method: "GET".into(),
                        path: "/articles".into(),
                        host: "app.example.com".into(),
                        headers: owned(headers),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                context_extensions: owned(extensions),
                ..Default::default()
            }),
        };
        self.0
            .clone()
            .check(request)
            .await
            .expect("Check answers with a CheckResponse")
            .into_inner()
    }

    /// A check of a request that sends `authorization: Bearer <token>`.
    async fn bearer(&self, token: &str, extensions: &[(&str, &str)]) -> CheckResponse {
        self.check(&[("authorization", &format!("Bearer {token}"))], extensions)
            .await
    }
}

fn code(answer: &CheckResponse) -> Code {
    Code::from_i32(answer.status.as_ref().expect("a status").code)
}

/// The headers an allowed answer sets on the upstream request, after checking
/// that each of them overwrites whatever the client sent under its name.
fn allowed(answer: &CheckResponse) -> HashMap<String, String> {
    assert_eq!(code(answer), Code::Ok, "{answer:?}");
    let Some(check_response::HttpResponse::OkResponse(ok)) = &answer.http_response else {
        panic!("an ok_response: {answer:?}");
    };
    let mut headers = HashMap::new();
    for option in &ok.headers {
        let header = option.header.as_ref().expect("a header");
        assert_eq!(
            option.append_action,
            HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
            "{} must overwrite a spoofed value",
            header.key
        );
        assert!(
            headers
                .insert(header.key.clone(), header.value.clone())
                .is_none(),
            "{} set twice",
            header.key
        );
    }
    for name in IDENTITY_HEADERS {
        assert!(headers.contains_key(name), "no {name} in {headers:?}");
    }
    headers
}

/// The HTTP status and headers Envoy sends the client of a denied request, after
/// checking the answer's gRPC status is `code`.
fn denied(answer: &CheckResponse, code_: Code) -> (i32, HashMap<String, String>) {
    assert_eq!(code(answer), code_, "{answer:?}");
    let Some(check_response::HttpResponse::DeniedResponse(denied)) = &answer.http_response else {
        panic!("a denied_response: {answer:?}");
    };
    let headers = denied
        .headers
        .iter()
        .filter_map(|option| option.header.as_ref())
        .map(|h| (h.key.clone(), h.value.clone()))
        .collect();
    assert!(!denied.body.is_empty(), "a body a person can read");
    (
        denied.status.as_ref().expect("an HTTP status").code,
        headers,
    )
}

/// 401 with `www-authenticate: Bearer`.
fn assert_unauthorized(answer: &CheckResponse, what: &str) {
    let (http, headers) = denied(answer, Code::Unauthenticated);
    assert_eq!(http, HttpStatusCode::Unauthorized as i32, "{what}");
    assert_eq!(
        headers.get("www-authenticate").map(String::as_str),
        Some("Bearer"),
        "{what}"
    );
}

/// 403, naming what the route needs.
fn assert_forbidden(answer: &CheckResponse, needed: &str) {
    let (http, _) = denied(answer, Code::PermissionDenied);
    assert_eq!(http, HttpStatusCode::Forbidden as i32);
    let message = &answer.status.as_ref().expect("status").message;
    assert!(message.contains(needed), "{message}");
}

async fn an_allowed_request_carries_who_the_caller_is(app: TestApp) {
    app.register("alice").await;
    let tokens = app.login("alice").await;
    let validated = app.validate(&tokens.access_token).await.expect("valid");
    let envoy = Envoy::of(&app).await;

    let headers = allowed(&envoy.bearer(&tokens.access_token, &[]).await);
    assert_eq!(headers["x-authd-user-id"], validated.user_id);
    assert_eq!(headers["x-authd-username"], "alice");
    assert_eq!(headers["x-authd-roles"], validated.roles.join(","));
    assert_eq!(headers["x-authd-roles"], "viewer,user");
    assert_eq!(
        headers["x-authd-session-id"],
        token_claims(&tokens.access_token)["sid"]
            .as_str()
            .expect("sid")
    );

    // The scheme in any case; another route's extensions that are not ours are ignored.
    let lower = envoy
        .check(
            &[("authorization", &format!("bearer {}", tokens.access_token))],
            &[("virtual_host", "app")],
        )
        .await;
    assert_eq!(allowed(&lower)["x-authd-username"], "alice");
}

async fn spoofed_identity_headers_are_overwritten(app: TestApp) {
    app.register("mallory").await;
    let tokens = app.login("mallory").await;
    let envoy = Envoy::of(&app).await;
    let bearer = format!("Bearer {}", tokens.access_token);
    let answer = envoy
        .check(
            &[
                ("authorization", &bearer),
                ("x-authd-user-id", "someone-else"),
                ("x-authd-username", "root"),
                ("x-authd-roles", "admin"),
                ("x-authd-session-id", "stolen"),
            ],
            &[],
        )
        .await;
    // `allowed` checks that each is set with OVERWRITE_IF_EXISTS_OR_ADD.
    let headers = allowed(&answer);
    assert_eq!(headers["x-authd-username"], "mallory");
    assert_eq!(headers["x-authd-roles"], "viewer,user");
    assert_ne!(headers["x-authd-user-id"], "someone-else");
    assert_ne!(headers["x-authd-session-id"], "stolen");
}

async fn no_or_bad_credentials_are_401(app: TestApp) {
    app.register("alice").await;
    let tokens = app.login("alice").await;
    let envoy = Envoy::of(&app).await;

    assert_unauthorized(&envoy.check(&[], &[]).await, "no authorization header");
    let message = envoy.check(&[], &[]).await.status.expect("status").message;
    assert!(message.contains("Bearer"), "says what to send: {message}");
    assert_unauthorized(&envoy.bearer("garbage", &[]).await, "garbage");
    assert_unauthorized(&envoy.bearer("", &[]).await, "an empty token");
    assert_unauthorized(
        &envoy.bearer(&tokens.refresh_token, &[]).await,
        "a refresh token",
    );
    assert_unauthorized(
        &envoy
            .check(&[("authorization", "Basic YWxpY2U6cHc=")], &[])
            .await,
        "another scheme",
    );
    assert_unauthorized(
        &envoy
            .check(&[("authorization", &tokens.access_token)], &[])
            .await,
        "no scheme",
    );
    // Bad credentials come before the route's needs: 401, not 403.
    assert_unauthorized(
        &envoy.bearer("garbage", &[("authd_role", "admin")]).await,
        "garbage on a role route",
    );

    allowed(&envoy.bearer(&tokens.access_token, &[]).await);
    app.logout(&tokens.refresh_token).await.expect("logout");
    assert_unauthorized(
        &envoy.bearer(&tokens.access_token, &[]).await,
        "a logged-out session's token, at once",
    );
}

async fn an_expired_token_is_401(db: TestDb) {
    let app =
        TestApp::spawn_on_manual_clock(db, |c| c.access_token_ttl = Duration::from_secs(2)).await;
    app.register("alice").await;
    let tokens = app.login("alice").await;
    let envoy = Envoy::of(&app).await;
    allowed(&envoy.bearer(&tokens.access_token, &[]).await);
    // Past exp and the one second of leeway.
    app.clock.advance(Duration::from_secs(4));
    assert_unauthorized(&envoy.bearer(&tokens.access_token, &[]).await, "expired");
}

async fn a_route_that_needs_a_role_is_403_without_it(app: TestApp) {
    let alice = app.register("alice").await;
    let tokens = app.login("alice").await;
    let envoy = Envoy::of(&app).await;
    let editors = [("authd_role", "editor")];

    assert_forbidden(
        &envoy.bearer(&tokens.access_token, &editors).await,
        "editor",
    );
    // Through the hierarchy: `user` includes `viewer`.
    allowed(
        &envoy
            .bearer(&tokens.access_token, &[("authd_role", "viewer")])
            .await,
    );
    // A role that does not exist, or an empty one, is held by nobody: closed.
    assert_forbidden(
        &envoy
            .bearer(&tokens.access_token, &[("authd_role", "no-such-role")])
            .await,
        "no-such-role",
    );
    assert_forbidden(
        &envoy
            .bearer(&tokens.access_token, &[("authd_role", "")])
            .await,
        "role",
    );

    // Roles are the user's current ones, not those frozen into the token.
    let admin = app.admin().await;
    admin
        .assign_role(&alice.id, "editor")
        .await
        .expect("assign");
    let headers = allowed(&envoy.bearer(&tokens.access_token, &editors).await);
    assert_eq!(headers["x-authd-roles"], "viewer,user,editor");
    admin
        .revoke_role(&alice.id, "editor")
        .await
        .expect("revoke");
    assert_forbidden(
        &envoy.bearer(&tokens.access_token, &editors).await,
        "editor",
    );

    // The admin holds every role below its own.
    allowed(&envoy.bearer(&admin.tokens.access_token, &editors).await);
}

async fn a_route_that_needs_a_permission_is_403_without_it(app: TestApp) {
    let alice = app.register("alice").await;
    let tokens = app.login("alice").await;
    let envoy = Envoy::of(&app).await;
    let publish = [("authd_permission", "articles.publish")];

    assert_forbidden(
        &envoy.bearer(&tokens.access_token, &publish).await,
        "articles.publish",
    );
    let admin = app.admin().await;
    admin
        .create_role("publisher", &["editor"], &["articles.publish"])
        .await
        .expect("create role");
    admin
        .assign_role(&alice.id, "publisher")
        .await
        .expect("assign");
    // At once, with the role's own permission and what it includes.
    let headers = allowed(&envoy.bearer(&tokens.access_token, &publish).await);
    assert!(
        headers["x-authd-roles"]
            .split(',')
            .any(|r| r == "publisher"),
        "{headers:?}"
    );
    allowed(
        &envoy
            .bearer(
                &tokens.access_token,
                &[
                    ("authd_role", "editor"),
                    ("authd_permission", "articles.publish"),
                ],
            )
            .await,
    );
    // Both requirements must hold.
    assert_forbidden(
        &envoy
            .bearer(
                &tokens.access_token,
                &[
                    ("authd_role", "admin"),
                    ("authd_permission", "articles.publish"),
                ],
            )
            .await,
        "admin",
    );
    assert_forbidden(
        &envoy
            .bearer(
                &tokens.access_token,
                &[("authd_permission", "articles.delete")],
            )
            .await,
        "articles.delete",
    );
    assert_forbidden(
        &envoy
            .bearer(&tokens.access_token, &[("authd_permission", "")])
            .await,
        "permission",
    );
    // The admin holds every permission, custom ones included.
    allowed(&envoy.bearer(&admin.tokens.access_token, &publish).await);
    // An API key holds its roles' permissions.
    let key = admin
        .create_api_key("publishing-bot", &["publisher"], 0)
        .await
        .expect("create key")
        .api_key;
    allowed(&envoy.bearer(&key, &publish).await);

    admin
        .revoke_role(&alice.id, "publisher")
        .await
        .expect("revoke");
    assert_forbidden(
        &envoy.bearer(&tokens.access_token, &publish).await,
        "articles.publish",
    );
}

async fn api_keys_are_checked_like_access_tokens(app: TestApp) {
    let admin = app.admin().await;
    let created = admin
        .create_api_key("billing-batch", &["editor"], 0)
        .await
        .expect("create");
    let key = created.key.expect("key");
    let envoy = Envoy::of(&app).await;

    let answer = envoy
        .check(
            &[
                ("authorization", &format!("Bearer {}", created.api_key)),
                ("x-authd-session-id", "spoofed"),
            ],
            &[("authd_role", "editor")],
        )
        .await;
    let headers = allowed(&answer);
    assert_eq!(headers["x-authd-user-id"], key.id);
    assert_eq!(headers["x-authd-username"], "billing-batch");
    assert_eq!(headers["x-authd-roles"], "viewer,user,editor");
    // A key has no session: the header is set empty, so the spoofed value is gone.
    assert_eq!(headers["x-authd-session-id"], "");
    assert_forbidden(
        &envoy
            .bearer(&created.api_key, &[("authd_role", "moderator")])
            .await,
        "moderator",
    );

    admin.revoke_api_key(&key.id).await.expect("revoke");
    assert_unauthorized(
        &envoy.bearer(&created.api_key, &[]).await,
        "a revoked key, at once",
    );
}

async fn a_deactivated_users_token_is_refused_at_once(app: TestApp) {
    let bob = app.register("bob").await;
    let tokens = app.login("bob").await;
    let envoy = Envoy::of(&app).await;
    allowed(&envoy.bearer(&tokens.access_token, &[]).await);

    let admin = app.admin().await;
    admin.set_active(&bob.id, false).await.expect("deactivate");
    assert_unauthorized(
        &envoy.bearer(&tokens.access_token, &[]).await,
        "a deactivated user's token",
    );
}

async fn checks_are_measured_as_a_method_of_their_own(app: TestApp) {
    let envoy = Envoy::of(&app).await;
    let labels = [
        ("grpc_service", "envoy.service.auth.v3.Authorization"),
        ("grpc_method", "Check"),
        ("grpc_type", "unary"),
        // A denial is an answer, not a failed call.
        ("grpc_code", "OK"),
    ];
    let before = Scrape::of(&app).await;
    assert_unauthorized(&envoy.bearer("garbage", &[]).await, "garbage");
    let after = Scrape::of(&app).await;
    assert!(
        after.count("grpc_server_handled_total", &labels)
            > before.count("grpc_server_handled_total", &labels),
        "{}",
        after.0
    );
}

on_both_databases!(
    an_allowed_request_carries_who_the_caller_is,
    spoofed_identity_headers_are_overwritten,
    no_or_bad_credentials_are_401,
    an_expired_token_is_401,
    a_route_that_needs_a_role_is_403_without_it,
    a_route_that_needs_a_permission_is_403_without_it,
    api_keys_are_checked_like_access_tokens,
    a_deactivated_users_token_is_refused_at_once,
    checks_are_measured_as_a_method_of_their_own,
);
