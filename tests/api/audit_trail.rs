//! `AdminService.ListAuditEvents`: newest first, filtered by subject, action and
//! time, paged, and only for admins.

use authd::grpc::pb;
use prost_types::Timestamp;
use tonic::{Code, Status};

use crate::helpers::{code, TestApp, PASSWORD};

async fn list(
    app: &TestApp,
    request: pb::ListAuditEventsRequest,
) -> Result<pb::ListAuditEventsResponse, Status> {
    app.admin()
        .await
        .grpc()
        .list_audit_events(request)
        .await
        .map(|r| r.into_inner())
}

/// Every page of a listing, in order.
async fn all_pages(app: &TestApp, mut request: pb::ListAuditEventsRequest) -> Vec<pb::AuditEvent> {
    let mut events = Vec::new();
    loop {
        let page = list(app, request.clone()).await.expect("page");
        assert!(page.events.len() <= request.page_size.max(1) as usize || request.page_size == 0);
        events.extend(page.events);
        if page.next_page_token.is_empty() {
            return events;
        }
        request.page_token = page.next_page_token;
    }
}

async fn the_trail_is_listed_newest_first_filtered_and_paged(app: TestApp) {
    let admin_id = app.admin().await.id.clone();
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    app.login("alice").await;
    let wrong = app.login_with("alice", "not the password").await;
    assert_eq!(code(wrong), Code::Unauthenticated);
    app.login("bob").await;
    app.admin()
        .await
        .assign_role(&bob.id, "editor")
        .await
        .expect("assign");

    let everything = all_pages(
        &app,
        pb::ListAuditEventsRequest {
            page_size: 2,
            ..Default::default()
        },
    )
    .await;
    let ids: Vec<i64> = everything.iter().map(|e| e.id).collect();
    let mut newest_first = ids.clone();
    newest_first.sort_unstable_by(|a, b| b.cmp(a));
    newest_first.dedup();
    assert_eq!(
        ids, newest_first,
        "newest first, no event twice across pages"
    );
    let one_page = list(&app, pb::ListAuditEventsRequest::default())
        .await
        .expect("list");
    assert_eq!(
        one_page.events.iter().map(|e| e.id).collect::<Vec<_>>(),
        ids,
        "two-at-a-time paging gives what one page does"
    );
    assert!(one_page.next_page_token.is_empty());

    // The newest is the role grant, made by the admin, about bob.
    let newest = &everything[0];
    assert_eq!(newest.action, "assign_role");
    assert_eq!(newest.outcome, "ok");
    assert_eq!(newest.actor, admin_id);
    assert_eq!(newest.subject, bob.id);
    assert!(newest.time.is_some());
    assert!(!newest.peer.is_empty(), "the caller's address: {newest:?}");

    // By subject: alice's registration and login, nothing of bob's. (A failed login
    // names only the login it was tried with, in its detail, not an account.)
    let about_alice = all_pages(
        &app,
        pb::ListAuditEventsRequest {
            subject_id: alice.id.clone(),
            ..Default::default()
        },
    )
    .await;
    let actions: Vec<(&str, &str)> = about_alice
        .iter()
        .map(|e| (e.action.as_str(), e.outcome.as_str()))
        .collect();
    assert_eq!(
        actions,
        [("login", "ok"), ("register", "ok")],
        "{about_alice:?}"
    );
    assert!(about_alice.iter().all(|e| e.subject == alice.id));
    // No secret in any event.
    for event in &everything {
        assert!(!event.detail.contains(PASSWORD), "{event:?}");
    }

    // By action.
    let logins = all_pages(
        &app,
        pb::ListAuditEventsRequest {
            action: "login".into(),
            ..Default::default()
        },
    )
    .await;
    assert!(logins.len() >= 4, "root's, alice's two, bob's: {logins:?}");
    assert!(logins.iter().all(|e| e.action == "login"));
    assert!(
        logins
            .iter()
            .any(|e| e.outcome == "failed" && e.detail == "login=alice" && e.subject.is_empty()),
        "{logins:?}"
    );

    // Since: a time after everything so far gives nothing; the newest event's own
    // time gives at least it.
    let after_all = Timestamp {
        seconds: newest.time.as_ref().expect("time").seconds + 3600,
        nanos: 0,
    };
    let later = list(
        &app,
        pb::ListAuditEventsRequest {
            since: Some(after_all),
            ..Default::default()
        },
    )
    .await
    .expect("list");
    assert!(later.events.is_empty(), "{later:?}");
    let since_newest = list(
        &app,
        pb::ListAuditEventsRequest {
            since: newest.time,
            ..Default::default()
        },
    )
    .await
    .expect("list");
    assert!(since_newest.events.iter().any(|e| e.id == newest.id));
    assert!(since_newest.events.len() < everything.len());

    // Filters combine.
    let alice_logins = list(
        &app,
        pb::ListAuditEventsRequest {
            subject_id: alice.id.clone(),
            action: "login".into(),
            ..Default::default()
        },
    )
    .await
    .expect("list");
    assert_eq!(alice_logins.events.len(), 1);
    assert_eq!(alice_logins.events[0].outcome, "ok");
}

on_both_databases!(the_trail_is_listed_newest_first_filtered_and_paged);

async fn bad_requests_and_callers_are_refused(app: TestApp) {
    for (request, field) in [
        (
            pb::ListAuditEventsRequest {
                page_token: "not-a-token".into(),
                ..Default::default()
            },
            "page_token",
        ),
        (
            pb::ListAuditEventsRequest {
                page_size: 501,
                ..Default::default()
            },
            "page_size",
        ),
        (
            pb::ListAuditEventsRequest {
                since: Some(Timestamp {
                    seconds: 0,
                    nanos: -1,
                }),
                ..Default::default()
            },
            "since",
        ),
        (
            pb::ListAuditEventsRequest {
                subject_id: "x".repeat(300),
                ..Default::default()
            },
            "subject_id",
        ),
        (
            pb::ListAuditEventsRequest {
                action: "a\0b".into(),
                ..Default::default()
            },
            "action",
        ),
    ] {
        let status = list(&app, request).await.expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(field), "{status:?}");
    }
    // A page token of another listing is not one of this one.
    app.register("mallory").await;
    let users = app.admin().await.list_users(1, "").await.expect("users");
    assert!(
        !users.next_page_token.is_empty(),
        "root and mallory: two pages"
    );
    let status = list(
        &app,
        pb::ListAuditEventsRequest {
            page_token: users.next_page_token,
            ..Default::default()
        },
    )
    .await
    .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);

    // Not an admin, or an API key (even one holding admin): PERMISSION_DENIED.
    let tokens = app.login("mallory").await;
    let status = app
        .admin_as(&tokens.access_token)
        .await
        .grpc()
        .list_audit_events(pb::ListAuditEventsRequest::default())
        .await
        .expect_err("not an admin");
    assert_eq!(status.code(), Code::PermissionDenied);
    // An API key needs authd.audit.read through its roles, like a user.
    let key = app
        .admin()
        .await
        .create_api_key("not-an-auditor", &["moderator"], 0)
        .await
        .expect("key");
    let status = app
        .admin_as(&key.api_key)
        .await
        .grpc()
        .list_audit_events(pb::ListAuditEventsRequest::default())
        .await
        .expect_err("an API key without authd.audit.read");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("authd.audit.read"), "{status:?}");
    // No credentials at all.
    let status = pb::admin_service_client::AdminServiceClient::new(app.channel().await)
        .list_audit_events(pb::ListAuditEventsRequest::default())
        .await
        .expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);
}

on_both_databases!(bad_requests_and_callers_are_refused);
