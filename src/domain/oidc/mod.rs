//! Sign-in with an external identity provider: an app signs its user in at an
//! OpenID Connect provider, receives an ID token, and exchanges it here
//! (`LoginWithIdToken`) for an authd session.
//!
//! This capability owns the providers ([`providers`], from
//! `AUTHD_OIDC_PROVIDERS_FILE`), their signing keys ([`key_set`], fetched with
//! [`fetch`] and cached) and the verification of ID tokens ([`id_token`]); finding
//! or creating the account is [`Accounts::sign_in_external`]'s. Any bad token gets
//! one `UNAUTHENTICATED` message, whatever the reason, which only the audit row
//! records; the token itself is never logged nor stored.

mod fetch;
mod id_token;
mod key_set;
pub mod providers;

use std::{collections::HashMap, sync::Arc};

pub use providers::ProviderSettings;

use self::{
    fetch::Fetcher,
    id_token::{Expected, Refusal, VerifiedClaims},
    key_set::{KeyError, KeySet},
};
use super::{
    accounts::{Accounts, ExternalIdentity, LoginOutcome},
    audit::{Action, Event, Outcome},
    caller::Caller,
    context::Context,
    error::{DomainError, DomainResult},
    secrets::Secret,
    validation,
};

/// The one message of every refused ID token.
const BAD_ID_TOKEN: &str =
    "the id_token is invalid or expired, or not issued by this provider for this service";

/// The configured providers, each with its key cache, and the HTTP client they
/// share. Built once at start-up.
#[derive(Debug)]
pub struct IdentityProviders {
    by_name: HashMap<String, Provider>,
    fetcher: Fetcher,
}

#[derive(Debug)]
struct Provider {
    settings: ProviderSettings,
    keys: KeySet,
}

impl IdentityProviders {
    pub fn new(settings: Vec<ProviderSettings>) -> anyhow::Result<Self> {
        let by_name = settings
            .into_iter()
            .map(|settings| {
                let keys = KeySet::new(&settings);
                (settings.name.clone(), Provider { settings, keys })
            })
            .collect();
        Ok(IdentityProviders {
            by_name,
            fetcher: Fetcher::new()?,
        })
    }
}

/// Why a token could not be taken.
enum Unverified {
    Refused(Refusal),
    Unavailable(String),
}

/// The sign-in capability.
#[derive(Clone)]
pub struct OidcSignIn {
    ctx: Arc<Context>,
    accounts: Accounts,
    providers: Arc<IdentityProviders>,
}

impl OidcSignIn {
    pub(super) fn new(ctx: Arc<Context>, accounts: Accounts, providers: IdentityProviders) -> Self {
        OidcSignIn {
            ctx,
            accounts,
            providers: Arc::new(providers),
        }
    }

    /// Exchanges an ID token of `provider` for what Login answers. `nonce`, when
    /// not empty, must be the token's `nonce`.
    pub async fn login_with_id_token(
        &self,
        caller: &Caller,
        provider: &str,
        id_token: Secret,
        nonce: &str,
    ) -> DomainResult<LoginOutcome> {
        validation::required("provider", provider)?;
        let Some(provider) = self.providers.by_name.get(provider) else {
            return Err(DomainError::invalid(
                "provider",
                "no identity provider of this name is configured",
            ));
        };
        validation::required("id_token", id_token.expose())?;
        let nonce = Some(nonce).filter(|nonce| !nonce.is_empty());
        let claims = match self.verify(provider, id_token.expose(), nonce).await {
            Ok(claims) => claims,
            Err(unverified) => return Err(self.refuse(caller, provider, unverified).await),
        };
        let identity = ExternalIdentity {
            provider: provider.settings.name.clone(),
            subject: claims.subject,
            email: claims.email,
            email_verified: claims.email_verified,
            preferred_username: claims.preferred_username,
            name: claims.name,
            create_users: provider.settings.create_users,
        };
        self.accounts.sign_in_external(caller, &identity).await
    }

    async fn verify(
        &self,
        provider: &Provider,
        token: &str,
        nonce: Option<&str>,
    ) -> Result<VerifiedClaims, Unverified> {
        let header = id_token::header(token).map_err(Unverified::Refused)?;
        let now_ms = self.ctx.now_ms();
        let jwk = provider
            .keys
            .key_for(&self.providers.fetcher, header.kid.as_deref(), now_ms)
            .await
            .map_err(|err| match err {
                KeyError::UnknownKey => Unverified::Refused(Refusal::UnknownKey),
                KeyError::Unavailable(reason) => Unverified::Unavailable(reason),
            })?;
        let expected = Expected {
            provider: &provider.settings,
            now_ms,
            nonce,
        };
        id_token::verify(token, &header, &jwk, &expected).map_err(Unverified::Refused)
    }

    /// Audits a token that was not taken (the reason, never the token) and
    /// answers its error.
    async fn refuse(
        &self,
        caller: &Caller,
        provider: &Provider,
        unverified: Unverified,
    ) -> DomainError {
        let name = &provider.settings.name;
        let (outcome, detail, error) = match unverified {
            Unverified::Refused(refusal) => (
                Outcome::Failed,
                format!("provider={name}; reason={}", refusal.as_str()),
                DomainError::Unauthenticated(BAD_ID_TOKEN),
            ),
            Unverified::Unavailable(reason) => (
                Outcome::ProviderUnavailable,
                format!("provider={name}; reason={reason}"),
                DomainError::ProviderUnavailable(format!(
                    "the signing keys of identity provider {name} cannot be fetched; retry shortly"
                )),
            ),
        };
        self.ctx
            .audit
            .record(
                caller,
                Event::new(Action::IdTokenLogin, outcome).detail(detail),
            )
            .await;
        error
    }
}
