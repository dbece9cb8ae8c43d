//! Links as data: UnlinkIdentity keeps an account's last way in, DeleteUser takes
//! the links and the audit rows forget the identity.

use authd::grpc::pb;
use tonic::Code;

use super::world;
use crate::helpers::{code, TestDb};

async fn unlinking_keeps_a_way_in_and_delete_user_removes_the_links(db: TestDb) {
    let w = world(db, true, &[]).await;
    let claims = || w.claims("1016", "pat@example.org", true);
    let signed_in = w.signed_in(&claims()).await;
    let user = signed_in.user.expect("user");
    let admin = w.admin().await;
    let unlink = |user_id: &str, provider: &str| {
        let request = pb::UnlinkIdentityRequest {
            user_id: user_id.into(),
            provider: provider.into(),
        };
        async move {
            admin
                .grpc()
                .unlink_identity(request)
                .await
                .map(|r| r.into_inner())
        }
    };
    // The only way in of an account without a password stays.
    let status = unlink(&user.id, "test").await.expect_err("last way in");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(code(unlink(&user.id, "other").await), Code::NotFound);
    assert_eq!(
        code(unlink(&uuid::Uuid::new_v4().to_string(), "test").await),
        Code::NotFound
    );
    assert_eq!(
        code(unlink("not-a-uuid", "test").await),
        Code::InvalidArgument
    );
    assert_eq!(code(unlink(&user.id, "").await), Code::InvalidArgument);
    let as_user = w
        .admin_as(&signed_in.tokens.expect("tokens").access_token)
        .await;
    let status = as_user
        .grpc()
        .unlink_identity(pb::UnlinkIdentityRequest {
            user_id: user.id.clone(),
            provider: "test".into(),
        })
        .await
        .expect_err("not an admin");
    assert_eq!(status.code(), Code::PermissionDenied);
    // It needs authd.users.write: a key holding only authd.users.read is refused,
    // one holding authd.users.write gets as far as the rule above.
    admin
        .create_role("user-readers", &[], &["authd.users.read"])
        .await
        .expect("role");
    admin
        .create_role("user-writers", &[], &["authd.users.write"])
        .await
        .expect("role");
    for (role, expected) in [
        ("user-readers", Code::PermissionDenied),
        ("user-writers", Code::FailedPrecondition),
    ] {
        let key = admin
            .create_api_key(role, &[role], 0)
            .await
            .expect("key")
            .api_key;
        let status = w
            .admin_as(&key)
            .await
            .grpc()
            .unlink_identity(pb::UnlinkIdentityRequest {
                user_id: user.id.clone(),
                provider: "test".into(),
            })
            .await
            .expect_err(role);
        assert_eq!(status.code(), expected, "{role}: {status:?}");
    }

    // With a password it may go; the identity then reaches the account again only
    // through its verified email, which links it anew.
    let reset = admin
        .create_password_reset_token(&user.id)
        .await
        .expect("reset");
    w.reset_password(&reset.reset_token, "a brand new password")
        .await
        .expect("reset");
    let unlinked = unlink(&user.id, "test")
        .await
        .expect("unlink")
        .user
        .expect("user");
    assert!(unlinked.linked_identities.is_empty());
    assert_eq!(w.db.count("identity_links").await, 0);
    let relinked = w.signed_in(&claims()).await.user.expect("user");
    assert_eq!(relinked.id, user.id);
    assert_eq!(relinked.linked_identities.len(), 1);

    // DeleteUser takes the links, and the audit rows forget the identity.
    admin.delete_user(&user.id).await.expect("delete");
    assert_eq!(w.db.count("identity_links").await, 0);
    let about_it = admin
        .grpc()
        .list_audit_events(pb::ListAuditEventsRequest {
            page_size: 500,
            subject_id: user.id.clone(),
            ..Default::default()
        })
        .await
        .expect("audit")
        .into_inner()
        .events;
    assert!(about_it
        .iter()
        .any(|e| e.detail.ends_with("subject=(erased)")));
    assert!(
        about_it.iter().all(|e| !e.detail.contains("1016")),
        "{about_it:?}"
    );
    // The identity is a stranger's again: a new account.
    let fresh = w.signed_in(&claims()).await.user.expect("user");
    assert_ne!(fresh.id, user.id);
}

on_both_databases!(unlinking_keeps_a_way_in_and_delete_user_removes_the_links,);
