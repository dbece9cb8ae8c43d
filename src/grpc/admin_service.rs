//! `auth.v1.AdminService`: every call arrives authorised by
//! [`super::authenticate::AuthenticateLayer`]; each handler takes the caller it put
//! in the request and hands the call to the domain.

use tonic::{Request, Response, Status};

use super::{
    authenticate::admin_caller,
    convert,
    pb::{self, admin_service_server::AdminService},
};
use crate::domain::{api_keys::NewKey, audit_trail::AuditQuery, Domain};

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
        let page = self
            .domain
            .admin
            .list_users(r.page_size, &r.page_token)
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
}
