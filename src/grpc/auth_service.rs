//! `auth.v1.AuthService`: thin handlers that call the domain.

use tonic::{Request, Response, Status};

use super::{
    convert,
    pb::{self, auth_service_server::AuthService},
};
use crate::domain::{
    accounts::Registration,
    caller::Caller,
    secrets::{Password, Secret},
    Domain,
};

pub struct AuthApi {
    domain: Domain,
}

impl AuthApi {
    pub fn new(domain: Domain) -> Self {
        AuthApi { domain }
    }
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let caller = caller(&request);
        let r = request.into_inner();
        let user = self
            .domain
            .accounts
            .register(
                &caller,
                Registration {
                    username: r.username,
                    email: r.email,
                    password: Password::new(r.password),
                    full_name: r.full_name,
                    roles: Vec::new(),
                },
            )
            .await?;
        Ok(Response::new(pb::RegisterResponse {
            user: Some(convert::user(user)),
        }))
    }

    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let caller = caller(&request);
        let r = request.into_inner();
        let logged_in = self
            .domain
            .accounts
            .login(&caller, &r.username, Password::new(r.password))
            .await?;
        Ok(Response::new(pb::LoginResponse {
            tokens: Some(convert::token_pair(logged_in.tokens)),
            user: Some(convert::user(logged_in.user)),
        }))
    }

    async fn refresh(
        &self,
        request: Request<pb::RefreshRequest>,
    ) -> Result<Response<pb::RefreshResponse>, Status> {
        let caller = caller(&request);
        let tokens = self
            .domain
            .sessions
            .refresh(&caller, Secret::new(request.into_inner().refresh_token))
            .await?;
        Ok(Response::new(pb::RefreshResponse {
            tokens: Some(convert::token_pair(tokens)),
        }))
    }

    async fn validate_token(
        &self,
        request: Request<pb::ValidateTokenRequest>,
    ) -> Result<Response<pb::ValidateTokenResponse>, Status> {
        let principal = self.domain.hot.validate(&request.get_ref().token).await?;
        Ok(Response::new(convert::validated(&principal)))
    }

    async fn check_role(
        &self,
        request: Request<pb::CheckRoleRequest>,
    ) -> Result<Response<pb::CheckRoleResponse>, Status> {
        let r = request.get_ref();
        let check = self.domain.hot.check_role(&r.token, &r.role).await?;
        Ok(Response::new(pb::CheckRoleResponse {
            allowed: check.allowed,
            user_id: check.principal.subject_id().to_owned(),
        }))
    }

    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        let caller = caller(&request);
        self.domain
            .sessions
            .logout(&caller, Secret::new(request.into_inner().refresh_token))
            .await?;
        Ok(Response::new(pb::LogoutResponse {}))
    }

    async fn get_jwks(
        &self,
        _: Request<pb::GetJwksRequest>,
    ) -> Result<Response<pb::GetJwksResponse>, Status> {
        Ok(Response::new(pb::GetJwksResponse {
            jwks_json: self.domain.hot.jwks_json(),
        }))
    }
}

/// AuthService needs no credentials: its callers are known by their address (and
/// client certificate, under mutual TLS) only.
fn caller<T>(request: &Request<T>) -> Caller {
    Caller::anonymous(super::peer(request.extensions()))
}
