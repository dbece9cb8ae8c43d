//! Signing in with an identity an external provider vouches for (its ID token
//! already verified by [`crate::domain::oidc`]): the account is the one linked to
//! (provider, `sub`); else, when the provider says the email is verified, the
//! account with that email, which is then linked; else a new account without a
//! password, when the provider may create them. Then it answers as Login does,
//! second factor included.
//!
//! Races are decided by the store's unique indexes: of concurrent first sign-ins
//! of one identity one creates the account and the others find its link.

use super::{Accounts, LoginOutcome, SignIn, DEFAULT_ROLE};
use crate::{
    domain::{
        audit::{self, Action, Event, Outcome},
        caller::Caller,
        error::{DomainError, DomainResult},
        validation::{self, Email, FullName},
    },
    store::{entities::user, NewLink, NewUser, StoreError, NO_PASSWORD},
};

/// Rounds of matching before giving up: each lost race (an identity linked or a
/// name taken meanwhile) costs one.
const ATTEMPTS: usize = 3;
/// Usernames tried for a new account: the derived one, then with random suffixes.
const USERNAME_TRIES: usize = 8;

const UNVERIFIED_EMAIL: &str = "an account with this email exists, but the provider does not \
     say the email is verified, so this identity is not linked to it";
const OTHER_IDENTITY: &str =
    "the account with this email is already linked to another identity at this provider";
const STRANGER: &str =
    "no account is linked to this identity, and this provider may not create accounts";
const NO_EMAIL: &str = "no account is linked to this identity, and the ID token carries no \
     usable email to create one with (ask the provider for the email scope)";

/// What a verified ID token says about its holder.
#[derive(Debug)]
pub struct ExternalIdentity {
    /// The provider's name in `AUTHD_OIDC_PROVIDERS_FILE`.
    pub provider: String,
    /// The token's `sub`.
    pub subject: String,
    pub email: Option<String>,
    /// The provider vouches for `email`.
    pub email_verified: bool,
    pub preferred_username: Option<String>,
    pub name: Option<String>,
    /// The provider may create accounts for strangers.
    pub create_users: bool,
}

impl ExternalIdentity {
    fn sign_in(&self) -> SignIn<'_> {
        SignIn::IdToken {
            provider: &self.provider,
            subject: &self.subject,
        }
    }

    fn detail(&self) -> String {
        audit::identity_detail(&self.provider, &self.subject)
    }
}

impl Accounts {
    /// Finds (or links, or creates) the identity's account and answers as Login:
    /// a session, or the second factor's challenge. Every refusal is audited.
    pub async fn sign_in_external(
        &self,
        caller: &Caller,
        identity: &ExternalIdentity,
    ) -> DomainResult<LoginOutcome> {
        let account = self.account_of(caller, identity).await?;
        if !account.active {
            return Err(self
                .refuse_deactivated(caller, &account.id, identity.sign_in())
                .await);
        }
        self.second_factor_or_session(caller, &account.id, identity.sign_in())
            .await
    }

    async fn account_of(
        &self,
        caller: &Caller,
        identity: &ExternalIdentity,
    ) -> DomainResult<user::Model> {
        let store = &self.ctx.store;
        let email = identity
            .email
            .as_deref()
            .and_then(|email| Email::parse("email", email).ok());
        for _ in 0..ATTEMPTS {
            if let Some(link) = store
                .find_link(&identity.provider, &identity.subject)
                .await?
            {
                if let Some(found) = store.find_user(&link.user_id).await? {
                    return Ok(found.user);
                }
                continue; // erased meanwhile: its links went with it
            }
            if let Some(email) = &email {
                let email_lc = email.as_str().to_lowercase();
                if let Some(existing) = store.find_user_by_login(&email_lc).await? {
                    match self.link_by_email(caller, identity, &existing).await? {
                        true => return Ok(existing),
                        false => continue,
                    }
                }
            }
            if !identity.create_users {
                let refused = DomainError::PermissionDenied(STRANGER.into());
                return Err(self
                    .refuse(caller, identity, None, "stranger", refused)
                    .await);
            }
            let Some(email) = &email else {
                let refused = DomainError::FailedPrecondition(NO_EMAIL.into());
                return Err(self
                    .refuse(caller, identity, None, "no email", refused)
                    .await);
            };
            match self.create_account(caller, identity, email).await {
                Ok(created) => return Ok(created),
                // An identity linked or a name taken meanwhile: look again.
                Err(DomainError::AlreadyExists(_)) => continue,
                Err(other) => return Err(other),
            }
        }
        Err(DomainError::internal(anyhow::anyhow!(
            "signing in {} identity kept losing races with concurrent changes",
            identity.provider
        )))
    }

    /// Links the identity to the account holding its email, if the provider
    /// verified that email; `false` when a concurrent sign-in linked the identity
    /// first (look again). A deactivated account is not linked: the caller
    /// refuses it.
    async fn link_by_email(
        &self,
        caller: &Caller,
        identity: &ExternalIdentity,
        existing: &user::Model,
    ) -> DomainResult<bool> {
        if !identity.email_verified {
            let reason = "unverified email of an existing account";
            let refused = DomainError::FailedPrecondition(UNVERIFIED_EMAIL.into());
            return Err(self
                .refuse(caller, identity, Some(&existing.id), reason, refused)
                .await);
        }
        if !existing.active {
            return Ok(true);
        }
        let store = &self.ctx.store;
        let linked = store
            .link_identity(NewLink {
                user_id: &existing.id,
                provider: &identity.provider,
                subject: &identity.subject,
                now_ms: self.ctx.now_ms(),
            })
            .await;
        match linked {
            Ok(()) => {}
            Err(StoreError::Conflict) => {
                if store
                    .find_link(&identity.provider, &identity.subject)
                    .await?
                    .is_some()
                {
                    return Ok(false);
                }
                let reason = "email of an account linked to another identity";
                let refused = DomainError::FailedPrecondition(OTHER_IDENTITY.into());
                return Err(self
                    .refuse(caller, identity, Some(&existing.id), reason, refused)
                    .await);
            }
            Err(other) => return Err(other.into()),
        }
        self.ctx
            .audit
            .record(
                caller,
                Event::new(Action::LinkIdentity, Outcome::Ok)
                    .subject(&existing.id)
                    .detail(identity.detail()),
            )
            .await;
        Ok(true)
    }

    /// A new account for the identity: the default role, its email (verified as
    /// the token says), a username derived from it and made unique, no password.
    /// `AlreadyExists` when a race took the identity or the email meanwhile.
    async fn create_account(
        &self,
        caller: &Caller,
        identity: &ExternalIdentity,
        email: &Email,
    ) -> DomainResult<user::Model> {
        let roles = vec![DEFAULT_ROLE.to_owned()];
        self.ctx.hot.catalog().require_all(&roles)?;
        let username = self.free_username(identity, email).await?;
        let full_name = identity
            .name
            .as_deref()
            .and_then(|name| FullName::parse("full_name", name).ok())
            .map(FullName::into_string)
            .unwrap_or_default();
        let id = uuid::Uuid::new_v4().to_string();
        let inserted = self
            .ctx
            .store
            .insert_user_with_link(
                NewUser {
                    id: id.clone(),
                    username,
                    email: email.as_str().to_owned(),
                    full_name,
                    password_hash: NO_PASSWORD.to_owned(),
                    email_verified: identity.email_verified,
                    roles: roles.clone(),
                    now_ms: self.ctx.now_ms(),
                },
                &identity.provider,
                &identity.subject,
            )
            .await;
        match inserted {
            Ok(()) => {}
            Err(StoreError::Conflict) => {
                return Err(DomainError::AlreadyExists(
                    "taken by a concurrent change".into(),
                ))
            }
            Err(other) => return Err(other.into()),
        }
        let detail = format!("roles={}; {}", roles.join(","), identity.detail());
        Ok(self.registered(caller, &id, detail).await?.user)
    }

    /// The derived username if it is free, else one with a random suffix.
    async fn free_username(
        &self,
        identity: &ExternalIdentity,
        email: &Email,
    ) -> DomainResult<String> {
        let base = username_base(identity.preferred_username.as_deref(), email.as_str());
        for attempt in 0..USERNAME_TRIES {
            let candidate = if attempt == 0 {
                base.clone()
            } else {
                with_suffix(&base, rand::random::<u16>())
            };
            let taken = self
                .ctx
                .store
                // A candidate has no '@', so this looks up the username alone.
                .find_user_by_login(&candidate.to_lowercase())
                .await?
                .is_some();
            if !taken {
                return Ok(candidate);
            }
        }
        // Eight taken in a row: a name nobody has.
        Ok(format!(
            "user-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ))
    }

    /// Audits a valid identity that may not sign in, and answers `refused`.
    async fn refuse(
        &self,
        caller: &Caller,
        identity: &ExternalIdentity,
        account: Option<&str>,
        reason: &str,
        refused: DomainError,
    ) -> DomainError {
        let mut event = Event::new(Action::IdTokenLogin, Outcome::Refused)
            .detail(format!("reason={reason}; {}", identity.detail()));
        if let Some(account) = account {
            event = event.subject(account);
        }
        self.ctx.audit.record(caller, event).await;
        refused
    }
}

const USERNAME_MAX: usize = 32;
const SUFFIX_LEN: usize = 5; // "-" and four hex digits

/// A valid username from `preferred_username` (its part before any `@`), else
/// from the email's local part: the characters usernames allow, at most 32, at
/// least 3 (padded with `user`).
fn username_base(preferred: Option<&str>, email: &str) -> String {
    let clean = |value: &str| -> String {
        let local = value.split('@').next().unwrap_or_default();
        local
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            .take(USERNAME_MAX)
            .collect()
    };
    let chosen = preferred
        .map(clean)
        .filter(|name| name.len() >= 3)
        .unwrap_or_else(|| clean(email));
    let name = match chosen.len() {
        0 => "user".to_owned(),
        1..=2 => format!("{chosen}-user"),
        _ => chosen,
    };
    debug_assert!(validation::username("username", &name).is_ok());
    name
}

/// `base` (shortened to fit) with `-` and four hex digits.
fn with_suffix(base: &str, suffix: u16) -> String {
    let kept: String = base.chars().take(USERNAME_MAX - SUFFIX_LEN).collect();
    format!("{kept}-{suffix:04x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn usernames_come_from_preferred_username_then_the_email() {
        assert_eq!(username_base(Some("alice.b"), "x@example.com"), "alice.b");
        assert_eq!(
            username_base(Some("alice@corp.example"), "x@example.com"),
            "alice"
        );
        assert_eq!(
            username_base(None, "Bob.Smith+tag@example.com"),
            "Bob.Smithtag"
        );
        // Too little left of preferred_username: the email's local part.
        assert_eq!(username_base(Some("é"), "carol@example.com"), "carol");
        assert_eq!(username_base(None, "zé@example.com"), "z-user");
        assert_eq!(username_base(None, "日本@example.com"), "user");
        assert_eq!(
            username_base(None, &format!("{}@x.io", "a".repeat(60))).len(),
            32
        );
    }

    #[test]
    fn suffixes_keep_usernames_within_32_characters() {
        let long = "a".repeat(32);
        assert_eq!(
            with_suffix(&long, 0xbeef),
            format!("{}-beef", "a".repeat(27))
        );
        assert_eq!(with_suffix("alice", 7), "alice-0007");
    }

    proptest! {
        #[test]
        fn derived_usernames_are_always_valid(preferred in proptest::option::of(any::<String>()), local in any::<String>(), suffix in any::<u16>()) {
            let base = username_base(preferred.as_deref(), &format!("{local}@example.com"));
            prop_assert!(validation::username("username", &base).is_ok(), "{base:?}");
            let suffixed = with_suffix(&base, suffix);
            prop_assert!(validation::username("username", &suffixed).is_ok(), "{suffixed:?}");
        }
    }
}
