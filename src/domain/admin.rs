//! User administration for AdminService: who may call it (a user's access token
//! or an API key holding the method's permission now), and what they may do: look users up,
//! page through them, change and erase them, grant and take roles, deactivate and
//! reactivate, list and end sessions, unlink identities. Nobody can remove the last
//! active admin, nor an account's last way in.

use std::sync::Arc;

use super::{
    audit::{Action, Event, Outcome},
    caller::{Actor, Caller, Peer},
    context::Context,
    error::{DomainError, DomainResult},
    hot::Grants,
    model::{Page, Session, User},
    paging,
    sessions::Sessions,
    validation::{self, Email, FullName},
};
use crate::store::{
    Activation, ChangeKind, Erasure, ProfileChange, ProfileUpdate, StoreError, Unlinking,
    UserFilter, UserWithRoles, Withdrawal,
};

/// Which users ListUsers answers with.
#[derive(Debug, Default)]
pub struct UserQuery {
    /// Only holders of this role: granted directly, or (with `role_effective`) also
    /// through a role that includes it.
    pub role: Option<String>,
    pub role_effective: bool,
    pub active: Option<bool>,
}

/// A change to a user's profile as an admin asks for it; `None` leaves a field.
#[derive(Debug, Default)]
pub struct UserChanges {
    pub username: Option<String>,
    pub email: Option<String>,
    pub full_name: Option<String>,
}

/// The role that must always keep an active holder (and holds every permission).
pub use super::hot::ADMIN_ROLE;

/// A caller allowed to administer: only [`Admin::authorize`] (for a credential
/// holding the method's permission) and [`AdminCaller::cli`] (for the shell, which
/// has the database anyway) make one. It carries what the caller holds, so that
/// nobody grants a role or permission they do not hold themselves.
#[derive(Clone, Debug)]
pub struct AdminCaller {
    caller: Caller,
    /// `None` for the shell, which may grant anything.
    grants: Option<Grants>,
}

impl AdminCaller {
    pub fn cli() -> Self {
        AdminCaller {
            caller: Caller::cli(),
            grants: None,
        }
    }

    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// `PERMISSION_DENIED` unless the caller holds `role` (directly or through the
    /// graph) or holds `admin`: nobody grants a role they do not hold.
    pub fn may_grant_role(&self, role: &str) -> DomainResult<()> {
        match &self.grants {
            Some(grants) if !grants.holds_everything() && !grants.has_role(role) => {
                Err(DomainError::PermissionDenied(format!(
                    "you cannot grant role {role:?}: you do not hold it yourself"
                )))
            }
            _ => Ok(()),
        }
    }

    /// `PERMISSION_DENIED` unless the caller holds `permission`.
    pub fn may_grant_permission(&self, permission: &str) -> DomainResult<()> {
        match &self.grants {
            Some(grants) if !grants.has_permission(permission) => {
                Err(DomainError::PermissionDenied(format!(
                    "you cannot grant permission {permission:?}: you do not hold it yourself"
                )))
            }
            _ => Ok(()),
        }
    }
}

/// The user-administration capability.
#[derive(Clone)]
pub struct Admin {
    ctx: Arc<Context>,
    sessions: Sessions,
}

impl Admin {
    pub(super) fn new(ctx: Arc<Context>, sessions: Sessions) -> Self {
        Admin { ctx, sessions }
    }

    /// Authorises an AdminService call made with `token` (the bearer credential the
    /// transport took from the call) for a method that needs `permission`: an
    /// active user's access token or a live API key whose effective roles carry it
    /// now.
    pub async fn authorize(
        &self,
        token: &str,
        peer: Peer,
        permission: &str,
    ) -> DomainResult<AdminCaller> {
        let principal = self.ctx.hot.validate(token).await?;
        if !principal.has_permission(permission) {
            return Err(DomainError::PermissionDenied(format!(
                "this call needs the permission {permission:?}"
            )));
        }
        let id = principal.subject_id().to_owned();
        Ok(AdminCaller {
            caller: Caller {
                actor: if principal.is_api_key() {
                    Actor::ApiKey(id)
                } else {
                    Actor::User(id)
                },
                peer,
            },
            grants: Some(principal.grants().clone()),
        })
    }

    /// One user, by id or by username (exactly one of them).
    pub async fn get_user(&self, user_id: &str, username: &str) -> DomainResult<User> {
        let store = &self.ctx.store;
        let found = match (user_id.is_empty(), username.is_empty()) {
            (false, true) => {
                validation::uuid("user_id", user_id)?;
                store.find_user(user_id).await?
            }
            (true, false) => {
                validation::no_nul("username", username)?;
                store
                    .find_user_by_username(&username.to_lowercase())
                    .await?
            }
            (true, true) => {
                return Err(DomainError::invalid("user_id", "give user_id or username"))
            }
            (false, false) => {
                return Err(DomainError::invalid(
                    "username",
                    "give user_id or username, not both",
                ))
            }
        };
        found
            .map(User::from)
            .ok_or_else(|| DomainError::NotFound("no such user".into()))
    }

    /// A page of users, oldest first, that pass `filter`.
    pub async fn list_users(
        &self,
        filter: &UserQuery,
        page_size: i32,
        page_token: &str,
    ) -> DomainResult<Page<User>> {
        let limit = paging::page_size(page_size)?;
        let after = paging::decode(page_token)?;
        let holding_any_of = match filter.role.as_deref() {
            None | Some("") => None,
            Some(role) => {
                let catalog = self.ctx.hot.catalog();
                catalog.require("role", role)?;
                Some(if filter.role_effective {
                    catalog.holders_of(role)
                } else {
                    vec![role.to_owned()]
                })
            }
        };
        let filter = UserFilter {
            holding_any_of,
            active: filter.active,
        };
        let page = self.ctx.store.list_users(&filter, after, limit).await?;
        let last = page
            .items
            .last()
            .map(|u| (u.user.created_at, u.user.id.as_str()));
        Ok(Page {
            next_page_token: paging::next_token(page.has_more, last),
            items: page.items.into_iter().map(User::from).collect(),
        })
    }

    pub async fn assign_role(
        &self,
        caller: &AdminCaller,
        user_id: &str,
        role: &str,
    ) -> DomainResult<User> {
        self.ctx.hot.catalog().require("role", role)?;
        caller.may_grant_role(role)?;
        let user = self.existing_user(user_id).await?;
        let id = &user.user.id;
        self.ctx
            .store
            .grant_role(id, role, self.ctx.now_ms())
            .await?;
        self.ctx.hot.apply(ChangeKind::User, id).await;
        self.record(
            caller,
            Action::AssignRole,
            Outcome::Ok,
            id,
            format!("role={role}"),
        )
        .await;
        self.existing_user(user_id).await.map(User::from)
    }

    pub async fn revoke_role(
        &self,
        caller: &AdminCaller,
        user_id: &str,
        role: &str,
    ) -> DomainResult<User> {
        self.ctx.hot.catalog().require("role", role)?;
        let user = self.existing_user(user_id).await?;
        let id = &user.user.id;
        let withdrawal = self
            .ctx
            .store
            .withdraw_role(id, role, ADMIN_ROLE, self.ctx.now_ms())
            .await?;
        let detail = format!("role={role}");
        if withdrawal == Withdrawal::RefusedLastHolder {
            self.record(
                caller,
                Action::RevokeRole,
                Outcome::RefusedLastAdmin,
                id,
                detail,
            )
            .await;
            return Err(DomainError::FailedPrecondition(
                "cannot take admin from the last active admin; make another user admin first"
                    .into(),
            ));
        }
        self.ctx.hot.apply(ChangeKind::User, id).await;
        self.record(caller, Action::RevokeRole, Outcome::Ok, id, detail)
            .await;
        self.existing_user(user_id).await.map(User::from)
    }

    /// Deactivation ends every session at once; reactivation lets the user log in
    /// again (ended sessions stay ended).
    pub async fn set_user_active(
        &self,
        caller: &AdminCaller,
        user_id: &str,
        active: bool,
    ) -> DomainResult<User> {
        let user = self.existing_user(user_id).await?;
        let id = &user.user.id;
        let activation = self
            .ctx
            .store
            .set_active(id, active, ADMIN_ROLE, self.ctx.now_ms())
            .await?;
        let sessions_ended = match activation {
            Activation::Done { sessions_ended } => sessions_ended,
            Activation::RefusedLastHolder => {
                self.ctx
                    .audit
                    .record(
                        caller.caller(),
                        Event::new(Action::SetActive, Outcome::RefusedLastAdmin).subject(id),
                    )
                    .await;
                return Err(DomainError::FailedPrecondition(
                    "cannot deactivate the last active admin; make another user admin first".into(),
                ));
            }
        };
        if sessions_ended > 0 {
            self.ctx.hot.apply(ChangeKind::UserSessionsEnded, id).await;
        }
        self.ctx.hot.apply(ChangeKind::User, id).await;
        let action = if active {
            Action::Activate
        } else {
            Action::Deactivate
        };
        let detail = format!("sessions_ended={sessions_ended}");
        self.record(caller, action, Outcome::Ok, id, detail).await;
        self.existing_user(user_id).await.map(User::from)
    }

    /// Ends every live session of a user; answers how many.
    pub async fn revoke_sessions(&self, caller: &AdminCaller, user_id: &str) -> DomainResult<u64> {
        let user = self.existing_user(user_id).await?;
        let id = &user.user.id;
        let ended = self.sessions.end_sessions_of(id, "revoked").await?;
        let detail = format!("sessions_ended={ended}");
        self.record(caller, Action::RevokeSessions, Outcome::Ok, id, detail)
            .await;
        Ok(ended)
    }

    /// Removes the user's TOTP and recovery codes (a lost device). Idempotent.
    pub async fn reset_mfa(&self, caller: &AdminCaller, user_id: &str) -> DomainResult<User> {
        let user = self.existing_user(user_id).await?;
        let id = user.user.id.clone();
        let removed = self.ctx.store.remove_totp(&id, self.ctx.now_ms()).await?;
        self.record(
            caller,
            Action::ResetMfa,
            Outcome::Ok,
            &id,
            format!("removed={removed}"),
        )
        .await;
        let user = self.existing_user(&id).await?;
        Ok(user.into())
    }

    /// Removes the user's identity at `provider`, unless the account has no
    /// password and this is its last identity (nobody could sign in to it).
    pub async fn unlink_identity(
        &self,
        caller: &AdminCaller,
        user_id: &str,
        provider: &str,
    ) -> DomainResult<User> {
        validation::uuid("user_id", user_id)?;
        validation::required("provider", provider)?;
        validation::no_nul("provider", provider)?;
        let unlinking = self
            .ctx
            .store
            .unlink_identity(user_id, provider, self.ctx.now_ms())
            .await?;
        let subject = match unlinking {
            Unlinking::Unlinked { subject } => subject,
            Unlinking::NoSuchUser => {
                return Err(DomainError::NotFound(format!(
                    "user {user_id} does not exist"
                )))
            }
            Unlinking::NoSuchLink => {
                return Err(DomainError::NotFound(format!(
                    "user {user_id} has no identity at provider {provider}"
                )))
            }
            Unlinking::RefusedLastWayIn => {
                let detail = format!("provider={provider}");
                self.record(
                    caller,
                    Action::UnlinkIdentity,
                    Outcome::RefusedLastWayIn,
                    user_id,
                    detail,
                )
                .await;
                return Err(DomainError::FailedPrecondition(
                    "the account has no password and this is its last linked identity: \
                     nobody could sign in to it; set a password first (CreatePasswordResetToken)"
                        .into(),
                ));
            }
        };
        let detail = super::audit::identity_detail(provider, &subject);
        self.record(caller, Action::UnlinkIdentity, Outcome::Ok, user_id, detail)
            .await;
        self.existing_user(user_id).await.map(User::from)
    }

    /// Changes username, email and full name with Register's rules; the unique
    /// indexes decide races, so of concurrent renames to one name one wins.
    pub async fn update_user(
        &self,
        caller: &AdminCaller,
        user_id: &str,
        changes: UserChanges,
    ) -> DomainResult<User> {
        validation::uuid("user_id", user_id)?;
        if let Some(username) = &changes.username {
            validation::username("username", username)?;
        }
        let email = changes
            .email
            .as_deref()
            .map(|email| Email::parse("email", email))
            .transpose()?;
        let full_name = changes
            .full_name
            .as_deref()
            .map(|name| FullName::parse("full_name", name))
            .transpose()?;
        let mut fields: Vec<&str> = Vec::new();
        for (name, given) in [
            ("username", changes.username.is_some()),
            ("email", email.is_some()),
            ("full_name", full_name.is_some()),
        ] {
            if given {
                fields.push(name);
            }
        }
        let updated = self
            .ctx
            .store
            .update_profile(ProfileUpdate {
                user_id: user_id.to_owned(),
                username: changes.username,
                email: email.map(Email::into_string),
                full_name: full_name.map(FullName::into_string),
                now_ms: self.ctx.now_ms(),
            })
            .await;
        match updated {
            Ok(ProfileChange::Updated) => {}
            Ok(ProfileChange::NoSuchUser) => {
                return Err(DomainError::NotFound(format!(
                    "user {user_id} does not exist"
                )))
            }
            Err(StoreError::Conflict) => {
                return Err(DomainError::AlreadyExists(
                    "username or email is already taken".into(),
                ))
            }
            Err(other) => return Err(other.into()),
        }
        self.ctx.hot.apply(ChangeKind::User, user_id).await;
        let detail = format!("fields={}", fields.join(","));
        self.record(caller, Action::UpdateUser, Outcome::Ok, user_id, detail)
            .await;
        self.existing_user(user_id).await.map(User::from)
    }

    /// Erases a user and all that is theirs (see `Store::erase_user`); its tokens
    /// stop validating at once here and within the feed's poll elsewhere.
    pub async fn delete_user(&self, caller: &AdminCaller, user_id: &str) -> DomainResult<()> {
        validation::uuid("user_id", user_id)?;
        let erasure = self
            .ctx
            .store
            .erase_user(user_id, ADMIN_ROLE, self.ctx.now_ms())
            .await?;
        match erasure {
            Erasure::Erased => {}
            Erasure::NoSuchUser => {
                return Err(DomainError::NotFound(format!(
                    "user {user_id} does not exist"
                )))
            }
            Erasure::RefusedLastHolder => {
                self.record(
                    caller,
                    Action::DeleteUser,
                    Outcome::RefusedLastAdmin,
                    user_id,
                    String::new(),
                )
                .await;
                return Err(DomainError::FailedPrecondition(
                    "cannot delete the last active admin; make another user admin first".into(),
                ));
            }
        }
        self.ctx.hot.apply(ChangeKind::User, user_id).await;
        self.ctx
            .audit
            .record(
                caller.caller(),
                Event::new(Action::DeleteUser, Outcome::Ok).subject(user_id),
            )
            .await;
        Ok(())
    }

    /// A page of a user's live sessions, oldest first.
    pub async fn list_user_sessions(
        &self,
        user_id: &str,
        page_size: i32,
        page_token: &str,
    ) -> DomainResult<Page<Session>> {
        let user = self.existing_user(user_id).await?;
        self.sessions
            .list_of(&user.user.id, page_size, page_token)
            .await
    }

    async fn existing_user(&self, user_id: &str) -> DomainResult<UserWithRoles> {
        validation::uuid("user_id", user_id)?;
        self.ctx
            .store
            .find_user(user_id)
            .await?
            .ok_or_else(|| DomainError::NotFound(format!("user {user_id} does not exist")))
    }

    async fn record(
        &self,
        caller: &AdminCaller,
        action: Action,
        outcome: Outcome,
        subject: &str,
        detail: String,
    ) {
        let event = Event::new(action, outcome).subject(subject).detail(detail);
        self.ctx.audit.record(caller.caller(), event).await;
    }
}
