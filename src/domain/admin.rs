//! User administration for AdminService: who may call it (a user's access token,
//! holding `admin` now; never an API key), and what they may do: look users up,
//! page through them, grant and take roles, deactivate and reactivate, end
//! sessions. Nobody can remove the last active admin.

use std::sync::Arc;

use super::{
    audit::{Action, Event, Outcome},
    caller::{Actor, Caller, Peer},
    context::Context,
    error::{DomainError, DomainResult},
    model::{Page, User},
    paging,
    sessions::Sessions,
    validation,
};
use crate::store::{Activation, ChangeKind, UserWithRoles, Withdrawal};

/// The role AdminService requires, and that must always keep an active holder.
pub const ADMIN_ROLE: &str = "admin";

/// A caller allowed to administer: only [`Admin::authorize`] (for a user's token)
/// and [`AdminCaller::cli`] (for the shell, which has the database anyway) make one.
#[derive(Clone, Debug)]
pub struct AdminCaller(Caller);

impl AdminCaller {
    pub fn cli() -> Self {
        AdminCaller(Caller::cli())
    }

    pub fn caller(&self) -> &Caller {
        &self.0
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
    /// transport took from the call): the holder must be an active user holding
    /// `admin` now. API keys are refused whatever their roles.
    pub async fn authorize(&self, token: &str, peer: Peer) -> DomainResult<AdminCaller> {
        let principal = self.ctx.hot.validate(token).await?;
        if principal.is_api_key() {
            return Err(DomainError::PermissionDenied(
                "AdminService needs a user's access token; API keys cannot call it".into(),
            ));
        }
        if !principal.has_role(ADMIN_ROLE) {
            return Err(DomainError::PermissionDenied(
                "this call needs the admin role".into(),
            ));
        }
        Ok(AdminCaller(Caller {
            actor: Actor::User(principal.subject_id().to_owned()),
            peer,
        }))
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

    /// A page of users, oldest first.
    pub async fn list_users(&self, page_size: i32, page_token: &str) -> DomainResult<Page<User>> {
        let limit = paging::page_size(page_size)?;
        let after = paging::decode(page_token)?;
        let page = self.ctx.store.list_users(after, limit).await?;
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
