//! Sign-in with an external identity provider (`LoginWithIdToken`), against a
//! local OpenID Connect provider (discovery and JWK Set over loopback HTTP, ID
//! tokens signed with its own RSA keys): accounts are created, reached again and
//! linked by verified email only; every bad token gets one UNAUTHENTICATED
//! message; keys are cached, refetched for an unknown kid at most once a minute
//! and rotated; a provider that cannot be reached is UNAVAILABLE; links show on
//! the user, go with DeleteUser and cannot be unlinked when they are the last way
//! in; a bad providers file stops start-up.
//!
//! The server runs on a manual clock, which the ID tokens' times follow too.

use std::{path::PathBuf, time::Duration};

use authd::grpc::pb;
use serde_json::{json, Value};
use tonic::{Code, Status};

use crate::helpers::{
    code,
    oidc_provider::{key, sign, TestProvider, AUDIENCE, FORGER, KEY_1, KEY_2},
    TestApp, TestDb, PASSWORD,
};

/// The server with these providers in its AUTHD_OIDC_PROVIDERS_FILE, on a manual
/// clock, and the provider named `test` (at the local provider).
pub(crate) struct World {
    app: TestApp,
    pub provider: TestProvider,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for World {
    type Target = TestApp;
    fn deref(&self) -> &TestApp {
        &self.app
    }
}

/// A providers-file entry.
fn entry(name: &str, issuer: &str, create_users: bool) -> Value {
    json!({"name": name, "issuer": issuer, "audiences": [AUDIENCE], "create_users": create_users})
}

fn providers_file(dir: &tempfile::TempDir, text: &str) -> PathBuf {
    let path = dir.path().join("oidc-providers.json");
    std::fs::write(&path, text).expect("write the providers file");
    path
}

/// The provider `test` at a fresh local provider (creating users or not), and
/// `more` entries after it.
async fn world(db: TestDb, create_users: bool, more: &[Value]) -> World {
    world_with(db, "test", create_users, more).await
}

/// [`world`] with the local provider named `name`.
pub(crate) async fn world_with(
    db: TestDb,
    name: &str,
    create_users: bool,
    more: &[Value],
) -> World {
    let provider = TestProvider::start().await;
    let mut entries = vec![entry(name, &provider.issuer, create_users)];
    entries.extend_from_slice(more);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = providers_file(&dir, &Value::Array(entries).to_string());
    // The clock jumps minutes between two polls of the change feed; real time
    // keeps the views fresh.
    let app = TestApp::spawn_on_manual_clock(db, |c| {
        c.max_staleness = Duration::from_secs(3600);
        c.oidc_providers_file = Some(path);
    })
    .await;
    World {
        app,
        provider,
        _dir: dir,
    }
}

impl World {
    /// Good claims for `sub` now, with an email.
    fn claims(&self, sub: &str, email: &str, verified: bool) -> Value {
        let mut claims = self.provider.claims(self.clock.now_ms(), sub);
        claims["email"] = json!(email);
        claims["email_verified"] = json!(verified);
        claims
    }

    async fn sign_in(&self, provider: &str, id_token: &str) -> Result<pb::LoginResponse, Status> {
        self.sign_in_with_nonce(provider, id_token, "").await
    }

    async fn sign_in_with_nonce(
        &self,
        provider: &str,
        id_token: &str,
        nonce: &str,
    ) -> Result<pb::LoginResponse, Status> {
        self.grpc()
            .login_with_id_token(pb::LoginWithIdTokenRequest {
                provider: provider.into(),
                id_token: id_token.into(),
                nonce: nonce.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    /// Signs `claims` with key 1 and signs in at `test`; panics if refused.
    async fn signed_in(&self, claims: &Value) -> pb::LoginResponse {
        let token = self.provider.token(claims);
        self.sign_in("test", &token).await.expect("sign in")
    }

    async fn audit(&self, action: &str) -> Vec<pb::AuditEvent> {
        self.admin()
            .await
            .grpc()
            .list_audit_events(pb::ListAuditEventsRequest {
                page_size: 500,
                action: action.into(),
                ..Default::default()
            })
            .await
            .expect("audit")
            .into_inner()
            .events
    }
}

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

async fn every_bad_token_is_refused_with_one_message(db: TestDb) {
    let w = world(db, true, &[]).await;
    let now = w.clock.now_ms() / 1000;
    let good = w.claims("1007", "gina@example.org", true);
    let with = |changes: Value| {
        let mut claims = good.clone();
        for (k, v) in changes.as_object().expect("object") {
            claims[k] = v.clone();
        }
        claims
    };
    let mut no_audience = good.clone();
    no_audience.as_object_mut().expect("object").remove("aud");
    let alg_none = {
        use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"key-1"}"#);
        format!("{header}.{}.", URL_SAFE_NO_PAD.encode(good.to_string()))
    };
    let hs256 = {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some(key(KEY_1).kid.clone());
        let secret = jsonwebtoken::EncodingKey::from_secret(b"a shared secret");
        jsonwebtoken::encode(&header, &good, &secret).expect("sign")
    };
    let tokens = [
        (
            "wrong audience",
            w.provider.token(&with(json!({"aud": "another-app"}))),
        ),
        ("no audience", w.provider.token(&no_audience)),
        (
            "wrong issuer",
            w.provider
                .token(&with(json!({"iss": "https://evil.example"}))),
        ),
        (
            "expired",
            w.provider
                .token(&with(json!({"exp": now - 2, "iat": now - 300}))),
        ),
        (
            "issued in the future",
            w.provider.token(&with(json!({"iat": now + 120}))),
        ),
        ("bad signature", sign(FORGER, Some(&key(KEY_1).kid), &good)),
        ("unknown kid", sign(FORGER, Some(&key(FORGER).kid), &good)),
        ("alg none", alg_none),
        ("HS256", hs256),
        ("garbage", "not.a.token".to_owned()),
    ];
    let mut messages = Vec::new();
    for (what, token) in &tokens {
        let status = w.sign_in("test", token).await.expect_err(what);
        assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
        messages.push(status.message().to_owned());
    }
    messages.dedup();
    assert_eq!(messages.len(), 1, "one message for all: {messages:?}");
    // A nonce, when the app gives one, must be the token's.
    let with_nonce = w.provider.token(&with(json!({"nonce": "n-1"})));
    let status = w
        .sign_in_with_nonce("test", &with_nonce, "n-2")
        .await
        .expect_err("another sign-in's nonce");
    assert_eq!(status.message(), messages[0]);
    assert_eq!(w.db.count("users").await, 0, "nothing was created");
    w.sign_in_with_nonce("test", &with_nonce, "n-1")
        .await
        .expect("its own nonce");

    // Each is audited with its reason; no row holds a token.
    let events = w.audit("id_token_login").await;
    let failed: Vec<_> = events.iter().filter(|e| e.outcome == "failed").collect();
    assert_eq!(failed.len(), tokens.len() + 1, "{events:?}");
    for reason in [
        "wrong audience",
        "missing claim",
        "wrong issuer",
        "expired",
        "issued in the future",
        "bad signature",
        "unknown kid",
        "malformed",
        "unsupported algorithm",
        "wrong nonce",
    ] {
        assert!(
            failed
                .iter()
                .any(|e| e.detail == format!("provider=test; reason={reason}")),
            "{reason}: {failed:?}"
        );
    }
    for event in &events {
        for (_, token) in &tokens {
            assert!(!event.detail.contains(token.as_str()), "{event:?}");
        }
    }
}

async fn an_unknown_kid_refetches_the_keys_at_most_once_a_minute(db: TestDb) {
    let w = world(db, true, &[]).await;
    w.signed_in(&w.claims("1008", "hal@example.org", true))
        .await;
    assert_eq!(
        (w.provider.discovery_requests(), w.provider.jwks_requests()),
        (1, 1),
        "discovered, then fetched"
    );
    let unknown = || {
        sign(
            FORGER,
            Some("kid-nobody-published"),
            &w.claims("x", "x@example.org", true),
        )
    };
    // Within the minute after a fetch, unknown kids fetch nothing.
    for _ in 0..5 {
        assert_eq!(
            code(w.sign_in("test", &unknown()).await),
            Code::Unauthenticated
        );
    }
    assert_eq!(w.provider.jwks_requests(), 1);
    // After it, one fetch, then none for another minute, however many come.
    w.clock.advance(Duration::from_secs(61));
    for _ in 0..20 {
        assert_eq!(
            code(w.sign_in("test", &unknown()).await),
            Code::Unauthenticated
        );
    }
    assert_eq!(w.provider.jwks_requests(), 2);
    w.clock.advance(Duration::from_secs(61));
    assert_eq!(
        code(w.sign_in("test", &unknown()).await),
        Code::Unauthenticated
    );
    assert_eq!(w.provider.jwks_requests(), 3);
    // Known keys need no fetch meanwhile; discovery was needed once.
    w.signed_in(&w.claims("1008", "hal@example.org", true))
        .await;
    assert_eq!(w.provider.jwks_requests(), 3);
    assert_eq!(w.provider.discovery_requests(), 1);
}

async fn the_providers_key_rotation_is_picked_up(db: TestDb) {
    let w = world(db, true, &[]).await;
    w.provider.cache_control("public, max-age=120");
    let claims = || w.claims("1009", "ivy@example.org", true);
    let account = w.signed_in(&claims()).await.user.expect("user").id;
    // The provider publishes a new key and signs with it.
    w.provider.publish(&[KEY_1, KEY_2]);
    w.clock.advance(Duration::from_secs(61));
    let with_new = sign(KEY_2, Some(&key(KEY_2).kid), &claims());
    let reached = w.sign_in("test", &with_new).await.expect("the new key");
    assert_eq!(reached.user.expect("user").id, account);
    assert_eq!(w.provider.jwks_requests(), 2, "fetched for the new kid");
    // Then retires the old one: once the cached set is past its max-age, tokens
    // of the old key are refused, those of the new one still pass.
    w.provider.publish(&[KEY_2]);
    w.clock.advance(Duration::from_secs(121));
    let with_old = w.provider.token(&claims());
    assert_eq!(
        code(w.sign_in("test", &with_old).await),
        Code::Unauthenticated
    );
    assert_eq!(
        w.provider.jwks_requests(),
        3,
        "refetched: the set had expired"
    );
    let with_new = sign(KEY_2, Some(&key(KEY_2).kid), &claims());
    w.sign_in("test", &with_new).await.expect("the new key");
    assert_eq!(w.provider.jwks_requests(), 3);
}

async fn cache_control_decides_how_long_the_keys_are_kept(db: TestDb) {
    let w = world(db, true, &[]).await;
    w.provider.cache_control("max-age=600");
    let claims = || w.claims("1010", "jo@example.org", true);
    w.signed_in(&claims()).await;
    w.clock.advance(Duration::from_secs(590));
    w.signed_in(&claims()).await;
    assert_eq!(w.provider.jwks_requests(), 1, "fresh for 600 s");
    w.clock.advance(Duration::from_secs(20));
    w.signed_in(&claims()).await;
    assert_eq!(w.provider.jwks_requests(), 2, "stale after 600 s");
}

async fn a_provider_that_cannot_be_reached_is_unavailable(db: TestDb) {
    let down = entry("down", &TestProvider::unreachable_issuer(), true);
    let w = world(db, true, &[down]).await;
    let token = w.provider.token(&w.claims("1011", "kim@example.org", true));
    let status = w.sign_in("down", &token).await.expect_err("unreachable");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("down"),
        "names the provider: {status:?}"
    );
    let events = w.audit("id_token_login").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].outcome, "provider_unavailable");
    assert!(
        events[0].detail.starts_with("provider=down; reason="),
        "{events:?}"
    );

    // A provider that answered once and then goes down: its cached keys still
    // verify, past their freshness.
    w.provider.cache_control("max-age=60");
    w.signed_in(&w.claims("1011", "kim@example.org", true))
        .await;
    w.provider.set_down(true);
    w.clock.advance(Duration::from_secs(61));
    w.signed_in(&w.claims("1011", "kim@example.org", true))
        .await;
    assert_eq!(
        w.provider.jwks_requests(),
        2,
        "the refetch was tried, and failed"
    );
}

async fn an_unknown_provider_is_invalid_argument_naming_provider(db: TestDb) {
    let w = world(db, true, &[]).await;
    let token = w.provider.token(&w.claims("1012", "lee@example.org", true));
    for provider in ["nope", "", "TEST"] {
        let status = w.sign_in(provider, &token).await.expect_err(provider);
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{provider:?}: {status:?}"
        );
        assert!(status.message().starts_with("provider: "), "{status:?}");
    }
    let status = w.sign_in("test", "").await.expect_err("empty token");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("id_token: "), "{status:?}");
    assert_eq!(w.provider.jwks_requests(), 0, "nothing was fetched");
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

async fn a_bad_providers_file_stops_start_up(db: TestDb) {
    let dir = tempfile::tempdir().expect("temp dir");
    let serve = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
    ];
    let cases = [
        ("not json", "not a JSON list"),
        (
            r#"[{"name": "corp", "issuer": "http://idp.corp.example", "audiences": ["a"]}]"#,
            "provider 1 (\"corp\"): issuer: http:// is accepted only on a loopback address",
        ),
        (
            r#"[{"name": "google", "issuer": "https://accounts.google.com"}]"#,
            "missing field `audiences`",
        ),
        (
            r#"[{"name": "g", "issuer": "https://accounts.google.com", "audiences": ["a"], "create_user": true}]"#,
            "unknown field `create_user`",
        ),
    ];
    for (text, problem) in cases {
        let path = providers_file(&dir, text);
        let output = db
            .cli_with_env(
                &serve,
                None,
                &[("AUTHD_OIDC_PROVIDERS_FILE", path.to_str().expect("path"))],
            )
            .await;
        crate::cli::one_line_naming(&output, "AUTHD_OIDC_PROVIDERS_FILE");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(problem), "{problem}: {stderr}");
    }
    let missing = dir.path().join("no-such-file.json");
    let output = db
        .cli_with_env(
            &serve,
            None,
            &[("AUTHD_OIDC_PROVIDERS_FILE", missing.to_str().expect("path"))],
        )
        .await;
    crate::cli::one_line_naming(&output, "AUTHD_OIDC_PROVIDERS_FILE");
}

on_both_databases!(
    a_first_sign_in_creates_the_account_and_later_ones_reach_it,
    a_created_account_has_no_usable_password,
    usernames_are_derived_and_made_unique,
    a_verified_email_links_to_the_existing_account_and_an_unverified_one_does_not,
    a_stranger_is_refused_where_the_provider_creates_no_accounts,
    every_bad_token_is_refused_with_one_message,
    an_unknown_kid_refetches_the_keys_at_most_once_a_minute,
    the_providers_key_rotation_is_picked_up,
    cache_control_decides_how_long_the_keys_are_kept,
    a_provider_that_cannot_be_reached_is_unavailable,
    an_unknown_provider_is_invalid_argument_naming_provider,
    an_account_with_totp_answers_mfa_required_then_verify_mfa_signs_in,
    a_deactivated_account_is_refused,
    concurrent_first_sign_ins_of_one_identity_make_one_account,
    unlinking_keeps_a_way_in_and_delete_user_removes_the_links,
    a_bad_providers_file_stops_start_up,
);
