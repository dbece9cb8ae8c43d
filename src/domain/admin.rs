//! User administration for AdminService: who may call it (holders of `admin` now),
//! and what they may do: look users up, page through them, grant and take roles,
//! deactivate and reactivate, end sessions. Nobody can remove the last active admin.

use super::{
    audit::Caller,
    error::{DomainError, DomainResult},
    paging,
    service::Auth,
    unix_now_ms,
    validate::Principal,
    validation,
};
use crate::store::{ChangeKind, UserWithRoles};

/// The role AdminService requires, and that must always keep an active holder.
pub const ADMIN_ROLE: &str = "admin";

impl Auth {
    /// Checks `authorization: Bearer <access token>` metadata: the holder must be an
    /// active user holding `admin` now.
    pub async fn authorize_admin(&self, authorization: Option<&str>) -> DomainResult<Principal> {
        let header = authorization.ok_or(DomainError::Unauthenticated(
            "missing credentials: send metadata 'authorization: Bearer <access token>'",
        ))?;
        let token = header
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or(DomainError::Unauthenticated(
                "the authorization metadata must be 'Bearer <access token>'",
            ))?;
        let principal = self.validate(token).await?;
        if !principal.has_role(ADMIN_ROLE) {
            return Err(DomainError::PermissionDenied(
                "this call needs the admin role".into(),
            ));
        }
        Ok(principal)
    }

    /// One user, by id or by username (exactly one of them).
    pub async fn get_user(&self, user_id: &str, username: &str) -> DomainResult<UserWithRoles> {
        let found = match (user_id.is_empty(), username.is_empty()) {
            (false, true) => {
                validation::uuid("user_id", user_id)?;
                self.store.find_user(user_id).await?
            }
            (true, false) => {
                self.store
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
        found.ok_or_else(|| DomainError::NotFound("no such user".into()))
    }

    /// A page of users, oldest first, and the token of the next page (empty at the end).
    pub async fn list_users(
        &self,
        page_size: i32,
        page_token: &str,
    ) -> DomainResult<(Vec<UserWithRoles>, String)> {
        let limit = paging::page_size(page_size)?;
        let after = paging::decode(page_token)?;
        let page = self.store.list_users(after, limit).await?;
        let next = match page.users.last() {
            Some(last) if page.has_more => paging::encode(last.user.created_at, &last.user.id),
            _ => String::new(),
        };
        Ok((page.users, next))
    }

    pub async fn assign_role(
        &self,
        caller: &Caller,
        user_id: &str,
        role: &str,
    ) -> DomainResult<UserWithRoles> {
        self.existing_role(role)?;
        let user = self.existing_user(user_id).await?;
        self.store
            .grant_role(&user.user.id, role, unix_now_ms())
            .await?;
        self.feed.apply(ChangeKind::User, &user.user.id).await;
        self.audit(
            caller,
            "assign_role",
            "ok",
            Some(&user.user.id),
            Some(format!("role={role}")),
        )
        .await;
        self.existing_user(user_id).await
    }

    pub async fn revoke_role(
        &self,
        caller: &Caller,
        user_id: &str,
        role: &str,
    ) -> DomainResult<UserWithRoles> {
        self.existing_role(role)?;
        let user = self.existing_user(user_id).await?;
        if !self
            .store
            .withdraw_role(&user.user.id, role, ADMIN_ROLE, unix_now_ms())
            .await?
        {
            self.audit(
                caller,
                "revoke_role",
                "refused_last_admin",
                Some(&user.user.id),
                Some(format!("role={role}")),
            )
            .await;
            return Err(DomainError::FailedPrecondition(
                "cannot take admin from the last active admin; make another user admin first"
                    .into(),
            ));
        }
        self.feed.apply(ChangeKind::User, &user.user.id).await;
        self.audit(
            caller,
            "revoke_role",
            "ok",
            Some(&user.user.id),
            Some(format!("role={role}")),
        )
        .await;
        self.existing_user(user_id).await
    }

    /// Deactivation ends every session at once; reactivation lets the user log in
    /// again (ended sessions stay ended).
    pub async fn set_user_active(
        &self,
        caller: &Caller,
        user_id: &str,
        active: bool,
    ) -> DomainResult<UserWithRoles> {
        let user = self.existing_user(user_id).await?;
        let Some(ended) = self
            .store
            .set_active(&user.user.id, active, ADMIN_ROLE, unix_now_ms())
            .await?
        else {
            self.audit(
                caller,
                "set_active",
                "refused_last_admin",
                Some(&user.user.id),
                None,
            )
            .await;
            return Err(DomainError::FailedPrecondition(
                "cannot deactivate the last active admin; make another user admin first".into(),
            ));
        };
        if ended > 0 {
            self.feed
                .apply(ChangeKind::UserSessionsEnded, &user.user.id)
                .await;
        }
        self.feed.apply(ChangeKind::User, &user.user.id).await;
        let action = if active { "activate" } else { "deactivate" };
        self.audit(
            caller,
            action,
            "ok",
            Some(&user.user.id),
            Some(format!("sessions_ended={ended}")),
        )
        .await;
        self.existing_user(user_id).await
    }

    /// Ends every live session of a user; answers how many.
    pub async fn revoke_sessions(&self, caller: &Caller, user_id: &str) -> DomainResult<u64> {
        let user = self.existing_user(user_id).await?;
        let ended = self.end_sessions_of(&user.user.id, "revoked").await?;
        self.audit(
            caller,
            "revoke_sessions",
            "ok",
            Some(&user.user.id),
            Some(format!("sessions_ended={ended}")),
        )
        .await;
        Ok(ended)
    }

    async fn existing_user(&self, user_id: &str) -> DomainResult<UserWithRoles> {
        validation::uuid("user_id", user_id)?;
        self.store
            .find_user(user_id)
            .await?
            .ok_or_else(|| DomainError::NotFound(format!("user {user_id} does not exist")))
    }

    fn existing_role(&self, role: &str) -> DomainResult<()> {
        validation::required("role", role)?;
        if !self.views.catalog().exists(role) {
            return Err(DomainError::NotFound(format!(
                "role {role:?} does not exist"
            )));
        }
        Ok(())
    }
}
