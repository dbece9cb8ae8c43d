//! Which account an ID token reaches: created at the first sign-in (with a derived,
//! unique username and no usable password), the same one later, an existing one by
//! verified email only, none for a stranger where the provider creates nobody;
//! answered as Login, second factor and deactivation included.

use std::time::Duration;

use authd::grpc::pb;
use serde_json::json;
use tonic::Code;

use super::world;
use crate::helpers::{TestDb, PASSWORD};

async fn a_first_sign_in_creates_the_account_and_later_ones_reach_it(db: TestDb) {
    let w = world(db, true, &[]).await;
    let mut claims = w.claims("1001", "Ann.Example@example.org", true);
    claims["name"] = json!("Ann Example");
    let first = w.signed_in(&claims).await;
    assert!(!first.mfa_required);
    let tokens = first.tokens.expect("tokens");
    let user = first.user.expect("user");
    assert_eq!(user.username, "Ann.Example", "from the email's local part");
    assert_eq!(user.email, "Ann.Example@example.org");
    assert_eq!(user.full_name, "Ann Example");
    assert!(user.email_verified, "as the token says");
    assert_eq!(user.roles, ["user"]);
    assert!(!user.has_password);
    assert_eq!(user.linked_identities.len(), 1);
    assert_eq!(user.linked_identities[0].provider, "test");
    assert_eq!(user.linked_identities[0].subject, "1001");
    let validated = w.validate(&tokens.access_token).await.expect("validates");
    assert_eq!(validated.user_id, user.id);
    w.refresh(&tokens.refresh_token)
        .await
        .expect("a session like Login's");

    // Later sign-ins, even with another email at the provider, reach that account.
    w.clock.advance(Duration::from_secs(60));
    let later = w
        .signed_in(&w.claims("1001", "ann@elsewhere.example", false))
        .await;
    assert_eq!(later.user.expect("user").id, user.id);
    assert_eq!(w.db.count("users").await, 1);

    // Audited with provider and subject, never the token.
    let logins = w.audit("id_token_login").await;
    assert_eq!(logins.len(), 2, "{logins:?}");
    for event in &logins {
        assert_eq!(event.outcome, "ok");
        assert_eq!(event.subject, user.id);
        assert_eq!(event.detail, "provider=test; subject=1001");
    }
    // The method has its own metrics labels, as every method does.
    let metrics = reqwest::get(format!("http://{}/metrics", w.http_addr()))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("body");
    assert!(
        metrics.contains(r#"grpc_method="LoginWithIdToken""#),
        "no LoginWithIdToken in /metrics"
    );
    // (The other registration is the admin's, made by the CLI to read the trail.)
    let created: Vec<_> = w
        .audit("register")
        .await
        .into_iter()
        .filter(|e| e.subject == user.id)
        .collect();
    assert_eq!(created.len(), 1, "{created:?}");
    assert_eq!(created[0].detail, "roles=user; provider=test; subject=1001");
}

async fn a_created_account_has_no_usable_password(db: TestDb) {
    let w = world(db, true, &[]).await;
    let signed_in = w.signed_in(&w.claims("1002", "bo@example.org", true)).await;
    let user = signed_in.user.expect("user");
    let unknown = w
        .login_with("nobody-at-all", PASSWORD)
        .await
        .expect_err("unknown user");
    for login in [user.username.as_str(), user.email.as_str()] {
        for password in [PASSWORD, "!", "!!!!!!!!", "no password at all"] {
            let status = w
                .login_with(login, password)
                .await
                .expect_err("no password");
            assert_eq!(status.code(), Code::Unauthenticated, "{login} {password:?}");
            assert_eq!(
                status.message(),
                unknown.message(),
                "as for an unknown user"
            );
        }
    }
    // Nor can a password be changed that does not exist.
    let me = w
        .user_as(&signed_in.tokens.expect("tokens").access_token)
        .await;
    let status = me
        .change_password("!", "a brand new password")
        .await
        .expect_err("no current password");
    assert_eq!(status.code(), Code::Unauthenticated);

    // An operator can give it one: then it logs in with that password.
    let admin = w.admin().await;
    let reset = admin
        .create_password_reset_token(&user.id)
        .await
        .expect("reset token");
    w.reset_password(&reset.reset_token, "a brand new password")
        .await
        .expect("reset");
    w.login_with(&user.username, "a brand new password")
        .await
        .expect("the password set");
    assert!(
        admin
            .get_user(&user.id, "")
            .await
            .expect("user")
            .has_password
    );
}

async fn usernames_are_derived_and_made_unique(db: TestDb) {
    let w = world(db, true, &[]).await;
    w.register("carol").await;
    let second = w
        .signed_in(&w.claims("1003", "carol@example.org", true))
        .await
        .user
        .expect("user");
    assert_ne!(second.username, "carol");
    assert!(second.username.starts_with("carol-"), "{}", second.username);
    let mut claims = w.claims("1004", "dave@example.org", true);
    claims["preferred_username"] = json!("Dave.Builder");
    let third = w.signed_in(&claims).await.user.expect("user");
    assert_eq!(
        third.username, "Dave.Builder",
        "preferred_username comes first"
    );
}

async fn a_verified_email_links_to_the_existing_account_and_an_unverified_one_does_not(db: TestDb) {
    // Linking does not depend on creating: this provider creates nobody.
    let w = world(db, false, &[]).await;
    let erin = w.register("erin").await;
    let unverified = w
        .sign_in(
            "test",
            &w.provider
                .token(&w.claims("1005", "Erin@Example.com", false)),
        )
        .await
        .expect_err("unverified email");
    assert_eq!(
        unverified.code(),
        Code::FailedPrecondition,
        "{unverified:?}"
    );
    assert!(
        unverified.message().contains("not linked"),
        "{unverified:?}"
    );
    let admin = w.admin().await;
    assert!(admin
        .get_user(&erin.id, "")
        .await
        .expect("erin")
        .linked_identities
        .is_empty());

    let verified = w
        .signed_in(&w.claims("1005", "Erin@Example.com", true))
        .await;
    let user = verified.user.expect("user");
    assert_eq!(user.id, erin.id, "the account with that email");
    assert_eq!(user.linked_identities.len(), 1);
    assert!(user.has_password, "its password stays");
    w.login("erin").await;
    // Linked now: the identity reaches it whatever the email says later.
    w.clock.advance(Duration::from_secs(1));
    let again = w
        .signed_in(&w.claims("1005", "other@example.org", false))
        .await;
    assert_eq!(again.user.expect("user").id, erin.id);
    // Another identity of the provider with the same verified email is refused.
    let other = w
        .sign_in(
            "test",
            &w.provider
                .token(&w.claims("9999", "erin@example.com", true)),
        )
        .await
        .expect_err("a second identity");
    assert_eq!(other.code(), Code::FailedPrecondition, "{other:?}");

    let linked = w.audit("link_identity").await;
    assert_eq!(linked.len(), 1);
    assert_eq!(linked[0].subject, erin.id);
    let refused: Vec<_> = w
        .audit("id_token_login")
        .await
        .into_iter()
        .filter(|e| e.outcome == "refused")
        .collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
}

async fn a_stranger_is_refused_where_the_provider_creates_no_accounts(db: TestDb) {
    let w = world(db, false, &[]).await;
    let status = w
        .sign_in(
            "test",
            &w.provider
                .token(&w.claims("1006", "frank@example.org", true)),
        )
        .await
        .expect_err("stranger");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(w.db.count("users").await, 0);
    assert_eq!(w.db.count("identity_links").await, 0);
}

async fn an_account_with_totp_answers_mfa_required_then_verify_mfa_signs_in(db: TestDb) {
    let w = world(db, true, &[]).await;
    let claims = || w.claims("1013", "max@example.org", true);
    let first = w.signed_in(&claims()).await;
    let me = w
        .user_as(&first.tokens.expect("tokens").access_token)
        .await
        .grpc();
    let secret = me
        .clone()
        .enroll_totp(pb::EnrollTotpRequest {})
        .await
        .expect("enroll")
        .into_inner()
        .secret;
    let totp = crate::totp::authenticator(&secret);
    me.clone()
        .confirm_totp(pb::ConfirmTotpRequest {
            code: crate::totp::code_now(&w.app, &totp),
        })
        .await
        .expect("confirm");

    w.clock.advance(Duration::from_secs(30));
    let second = w.signed_in(&claims()).await;
    assert!(second.mfa_required, "{second:?}");
    assert!(second.tokens.is_none() && second.user.is_none());
    let done = crate::totp::verify(
        &w.app,
        &second.mfa_token,
        &crate::totp::code_now(&w.app, &totp),
    )
    .await
    .expect("second step");
    assert!(done.tokens.is_some());
    let outcomes: Vec<_> = w
        .audit("id_token_login")
        .await
        .into_iter()
        .map(|e| e.outcome)
        .collect();
    assert_eq!(outcomes, ["mfa_required", "ok"], "newest first");
}

async fn a_deactivated_account_is_refused(db: TestDb) {
    let w = world(db, true, &[]).await;
    let claims = || w.claims("1014", "ned@example.org", true);
    let user = w.signed_in(&claims()).await.user.expect("user");
    w.admin()
        .await
        .set_active(&user.id, false)
        .await
        .expect("deactivate");
    let status = w
        .sign_in("test", &w.provider.token(&claims()))
        .await
        .expect_err("deactivated");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
}

async fn concurrent_first_sign_ins_of_one_identity_make_one_account(db: TestDb) {
    let w = world(db, true, &[]).await;
    let token = w
        .provider
        .token(&w.claims("1015", "olga@example.org", true));
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let (mut client, token) = (w.grpc(), token.clone());
            tokio::spawn(async move {
                client
                    .login_with_id_token(pb::LoginWithIdTokenRequest {
                        provider: "test".into(),
                        id_token: token,
                        nonce: String::new(),
                    })
                    .await
            })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for call in calls {
        let answer = call.await.expect("join").expect("signed in").into_inner();
        ids.insert(answer.user.expect("user").id);
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(w.db.count("users").await, 1);
    assert_eq!(w.db.count("identity_links").await, 1);
}

on_both_databases!(
    a_first_sign_in_creates_the_account_and_later_ones_reach_it,
    a_created_account_has_no_usable_password,
    usernames_are_derived_and_made_unique,
    a_verified_email_links_to_the_existing_account_and_an_unverified_one_does_not,
    a_stranger_is_refused_where_the_provider_creates_no_accounts,
    an_account_with_totp_answers_mfa_required_then_verify_mfa_signs_in,
    a_deactivated_account_is_refused,
    concurrent_first_sign_ins_of_one_identity_make_one_account,
);
