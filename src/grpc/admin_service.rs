//! `auth.v1.AdminService`: every call arrives authorised by
//! [`super::authenticate::AuthenticateLayer`]; each handler takes the caller it put
//! in the request and hands the call to the domain.

use tonic::{Request, Response, Status};

use super::{
    authenticate::admin_caller,
    convert,
    pb::{self, admin_service_server::AdminService},
};
use crate::domain::{
    admin::{UserChanges, UserQuery},
    api_keys::NewKey,
    audit_trail::AuditQuery,
    Domain,
};

pub struct AdminApi {
    domain: Domain,
}

impl AdminApi {
    pub fn new(domain: Domain) -> Self {
        AdminApi { domain }
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::GetUserResponse>, Status> {
        admin_caller(&request)?;
        let r = request.into_inner();
        let user = self.domain.admin.get_user(&r.user_id, &r.username).await?;
        Ok(Response::new(pb::GetUserResponse {
            user: Some(convert::user(user)),
        }))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        admin_caller(&request)?;
        let r = request.into_inner();
        let query = UserQuery {
            role: Some(r.role).filter(|role| !role.is_empty()),
            role_effective: r.role_effective,
            active: r.active,
        };
        let page = self
            .domain
            .admin
            .list_users(&query, r.page_size, &r.page_token)
            .await?;
        Ok(Response::new(pb::ListUsersResponse {
            users: page.items.into_iter().map(convert::user).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn assign_role(
        &self,
        request: Request<pb::AssignRoleRequest>,
    ) -> Result<Response<pb::AssignRoleResponse>, Status> {
        let caller = admin_caller(&request)?;
        let r = request.into_inner();
        let user = self
            .domain
            .admin
            .assign_role(&caller, &r.user_id, &r.role)
            .await?;
        Ok(Response::new(pb::AssignRoleResponse {
            user: Some(convert::user(user)),
        }))
    }

    async fn revoke_role(
        &self,
        request: Request<pb::RevokeRoleRequest>,
    ) -> Result<Response<pb::RevokeRoleResponse>, Status> {
        let caller = admin_caller(&request)?;
        let r = request.into_inner();
        let user = self
            .domain
            .admin
            .revoke_role(&caller, &r.user_id, &r.role)
            .await?;
        Ok(Response::new(pb::RevokeRoleResponse {
            user: Some(convert::user(user)),
        }))
    }

    async fn set_user_active(
        &self,
        request: Request<pb::SetUserActiveRequest>,
    ) -> Result<Response<pb::SetUserActiveResponse>, Status> {
        let caller = admin_caller(&request)?;
        let r = request.into_inner();
        let user = self
            .domain
            .admin
            .set_user_active(&caller, &r.user_id, r.active)
            .await?;
        Ok(Response::new(pb::SetUserActiveResponse {
            user: Some(convert::user(user)),
        }))
    }

    async fn revoke_sessions(
        &self,
        request: Request<pb::RevokeSessionsRequest>,
    ) -> Result<Response<pb::RevokeSessionsResponse>, Status> {
        let caller = admin_caller(&request)?;
        let revoked = self
            .domain
            .admin
            .revoke_sessions(&caller, &request.get_ref().user_id)
            .await?;
        Ok(Response::new(pb::RevokeSessionsResponse {
            revoked: i32::try_from(revoked).unwrap_or(i32::MAX),
        }))
    }

    async fn create_api_key(
        &self,
        request: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        let caller = admin_caller(&request)?;
        let r = request.into_inner();
        let issued = self
            .domain
            .api_keys
            .create(
                &caller,
                NewKey {
                    name: &r.name,
                    roles: r.roles,
                    ttl_seconds: r.ttl_seconds,
                },
            )
            .await?;
        Ok(Response::new(pb::CreateApiKeyResponse {
            api_key: issued.secret.into_inner(),
            key: Some(convert::api_key(issued.key)),
        }))
    }

    async fn list_api_keys(
        &self,
        request: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        admin_caller(&request)?;
        let r = request.into_inner();
        let page = self
            .domain
            .api_keys
            .list(r.page_size, &r.page_token)
            .await?;
        Ok(Response::new(pb::ListApiKeysResponse {
            keys: page.items.into_iter().map(convert::api_key).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        admin_caller(&request)?;
        let r = request.into_inner();
        let query = AuditQuery {
            page_size: r.page_size,
            page_token: r.page_token,
            subject_id: r.subject_id,
            action: r.action,
            since_ms: r
                .since
                .as_ref()
                .map(|at| convert::ms_of("since", at))
                .transpose()?,
        };
        let page = self.domain.audit.list(query).await?;
        Ok(Response::new(pb::ListAuditEventsResponse {
            events: page.items.into_iter().map(convert::audit_event).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn revoke_api_key(
        &self,
        request: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<Response<pb::RevokeApiKeyResponse>, Status> {
        let caller = admin_caller(&request)?;
        let key = self
            .domain
            .api_keys
            .revoke(&caller, &request.get_ref().key_id)
            .await?;
        Ok(Response::new(pb::RevokeApiKeyResponse {
            key: Some(convert::api_key(key)),
        }))
    }

    async fn update_user(
        &self,
        request: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::UpdateUserResponse>, Status> {
        let caller = admin_caller(&request)?;
        let r = request.into_inner();
        let changes = UserChanges {
            username: r.username,
            email: r.email,
            full_name: r.full_name,
        };
        let user = self
            .domain
            .admin
            .update_user(&caller, &r.user_id, changes)
            .await?;
        Ok(Response::new(pb::UpdateUserResponse {
            user: Some(convert::user(user)),
        }))
    }

    async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        let caller = admin_caller(&request)?;
        self.domain
            .admin
            .delete_user(&caller, &request.get_ref().user_id)
            .await?;
        Ok(Response::new(pb::DeleteUserResponse {}))
    }

    async fn list_user_sessions(
        &self,
        request: Request<pb::ListUserSessionsRequest>,
    ) -> Result<Response<pb::ListUserSessionsResponse>, Status> {
        admin_caller(&request)?;
        let r = request.into_inner();
        let page = self
            .domain
            .admin
            .list_user_sessions(&r.user_id, r.page_size, &r.page_token)
            .await?;
        Ok(Response::new(pb::ListUserSessionsResponse {
            sessions: page.items.into_iter().map(convert::session).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn create_password_reset_token(
        &self,
        request: Request<pb::CreatePasswordResetTokenRequest>,
    ) -> Result<Response<pb::CreatePasswordResetTokenResponse>, Status> {
        let caller = admin_caller(&request)?;
        let issued = self
            .domain
            .recovery
            .create_password_reset_token(&caller, &request.get_ref().user_id)
            .await?;
        Ok(Response::new(pb::CreatePasswordResetTokenResponse {
            expires_at: Some(convert::timestamp_ms(issued.expires_at_ms)),
            reset_token: issued.secret.into_inner(),
        }))
    }

    async fn create_email_verification_token(
        &self,
        request: Request<pb::CreateEmailVerificationTokenRequest>,
    ) -> Result<Response<pb::CreateEmailVerificationTokenResponse>, Status> {
        let caller = admin_caller(&request)?;
        let issued = self
            .domain
            .recovery
            .create_email_verification_token(&caller, &request.get_ref().user_id)
            .await?;
        Ok(Response::new(pb::CreateEmailVerificationTokenResponse {
            expires_at: Some(convert::timestamp_ms(issued.expires_at_ms)),
            verification_token: issued.secret.into_inner(),
        }))
    }

    async fn reset_mfa(
        &self,
        request: Request<pb::ResetMfaRequest>,
    ) -> Result<Response<pb::ResetMfaResponse>, Status> {
        let caller = admin_caller(&request)?;
        let user = self
            .domain
            .admin
            .reset_mfa(&caller, &request.get_ref().user_id)
            .await?;
        Ok(Response::new(pb::ResetMfaResponse {
            user: Some(convert::user(user)),
        }))
    }

    async fn unlink_identity(
        &self,
        request: Request<pb::UnlinkIdentityRequest>,
    ) -> Result<Response<pb::UnlinkIdentityResponse>, Status> {
        let caller = admin_caller(&request)?;
        let r = request.into_inner();
        let user = self
            .domain
            .admin
            .unlink_identity(&caller, &r.user_id, &r.provider)
            .await?;
        Ok(Response::new(pb::UnlinkIdentityResponse {
            user: Some(convert::user(user)),
        }))
    }

    async fn list_roles(
        &self,
        request: Request<pb::ListRolesRequest>,
    ) -> Result<Response<pb::ListRolesResponse>, Status> {
        admin_caller(&request)?;
        let roles = self.domain.roles.list().await?;
        Ok(Response::new(pb::ListRolesResponse {
            roles: roles.into_iter().map(convert::role).collect(),
        }))
    }

    async fn create_role(
        &self,
        request: Request<pb::CreateRoleRequest>,
    ) -> Result<Response<pb::CreateRoleResponse>, Status> {
        let caller = admin_caller(&request)?;
        let spec = convert::role_created(request.into_inner());
        let role = self.domain.roles.create(&caller, spec).await?;
        Ok(Response::new(pb::CreateRoleResponse {
            role: Some(convert::role(role)),
        }))
    }

    async fn update_role(
        &self,
        request: Request<pb::UpdateRoleRequest>,
    ) -> Result<Response<pb::UpdateRoleResponse>, Status> {
        let caller = admin_caller(&request)?;
        let spec = convert::role_updated(request.into_inner());
        let role = self.domain.roles.update(&caller, spec).await?;
        Ok(Response::new(pb::UpdateRoleResponse {
            role: Some(convert::role(role)),
        }))
    }

    async fn delete_role(
        &self,
        request: Request<pb::DeleteRoleRequest>,
    ) -> Result<Response<pb::DeleteRoleResponse>, Status> {
        let caller = admin_caller(&request)?;
        let name = request.into_inner().name;
        self.domain.roles.delete(&caller, &name).await?;
        Ok(Response::new(pb::DeleteRoleResponse {}))
    }
}
