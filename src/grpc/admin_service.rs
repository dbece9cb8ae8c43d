//! `auth.v1.AdminService`: every call is authorised first, in one place
//! ([`AdminApi::admin`]), then handed to the domain.

use tonic::{Request, Response, Status};

use super::{
    convert,
    pb::{self, admin_service_server::AdminService},
};
use crate::domain::{audit::Caller, Auth};

pub struct AdminApi {
    auth: Auth,
}

impl AdminApi {
    pub fn new(auth: Auth) -> Self {
        AdminApi { auth }
    }

    /// Authorises the call (an access token of a user holding `admin` now) and
    /// answers who is calling, for the audit trail.
    async fn admin<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let authorization =
            match request.metadata().get("authorization") {
                Some(value) => Some(value.to_str().map_err(|_| {
                    Status::unauthenticated("the authorization metadata is not text")
                })?),
                None => None,
            };
        let principal = self.auth.authorize_admin(authorization).await?;
        Ok(Caller {
            actor: Some(principal.subject_id().to_owned()),
            peer: super::peer(request),
        })
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::GetUserResponse>, Status> {
        self.admin(&request).await?;
        let r = request.into_inner();
        let user = self.auth.get_user(&r.user_id, &r.username).await?;
        Ok(Response::new(pb::GetUserResponse {
            user: Some(convert::user(user)),
        }))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        self.admin(&request).await?;
        let r = request.into_inner();
        let (users, next_page_token) = self.auth.list_users(r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::ListUsersResponse {
            users: users.into_iter().map(convert::user).collect(),
            next_page_token,
        }))
    }

    async fn assign_role(
        &self,
        request: Request<pb::AssignRoleRequest>,
    ) -> Result<Response<pb::AssignRoleResponse>, Status> {
        let caller = self.admin(&request).await?;
        let r = request.into_inner();
        let user = self.auth.assign_role(&caller, &r.user_id, &r.role).await?;
        Ok(Response::new(pb::AssignRoleResponse {
            user: Some(convert::user(user)),
        }))
    }

    async fn revoke_role(
        &self,
        request: Request<pb::RevokeRoleRequest>,
    ) -> Result<Response<pb::RevokeRoleResponse>, Status> {
        let caller = self.admin(&request).await?;
        let r = request.into_inner();
        let user = self.auth.revoke_role(&caller, &r.user_id, &r.role).await?;
        Ok(Response::new(pb::RevokeRoleResponse {
            user: Some(convert::user(user)),
        }))
    }

    async fn set_user_active(
        &self,
        request: Request<pb::SetUserActiveRequest>,
    ) -> Result<Response<pb::SetUserActiveResponse>, Status> {
        let caller = self.admin(&request).await?;
        let r = request.into_inner();
        let user = self
            .auth
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
        let caller = self.admin(&request).await?;
        let revoked = self
            .auth
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
        let caller = self.admin(&request).await?;
        let r = request.into_inner();
        let issued = self
            .auth
            .create_api_key(&caller, &r.name, r.roles, r.ttl_seconds)
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
        self.admin(&request).await?;
        let r = request.into_inner();
        let (keys, next_page_token) = self.auth.list_api_keys(r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::ListApiKeysResponse {
            keys: keys.into_iter().map(convert::api_key).collect(),
            next_page_token,
        }))
    }

    async fn revoke_api_key(
        &self,
        request: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<Response<pb::RevokeApiKeyResponse>, Status> {
        let caller = self.admin(&request).await?;
        let key = self
            .auth
            .revoke_api_key(&caller, &request.get_ref().key_id)
            .await?;
        Ok(Response::new(pb::RevokeApiKeyResponse {
            key: Some(convert::api_key(key)),
        }))
    }
}
