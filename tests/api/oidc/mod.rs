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

mod accounts;
mod links;
mod providers_file;
mod tokens;

use std::{path::PathBuf, time::Duration};

use authd::grpc::pb;
use serde_json::{json, Value};
use tonic::Status;

use crate::helpers::{
    oidc_provider::{TestProvider, AUDIENCE},
    TestApp, TestDb,
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
