//! `auth.v1.AuthService`: thin handlers that call the domain.

use tonic::{Request, Response, Status};

use super::{
    convert,
    pb::{self, auth_service_server::AuthService},
};
use crate::domain::{
    accounts::Registration,
    audit::Caller,
    secrets::{Password, Secret},
    Auth,
};

pub struct AuthApi {
    auth: Auth,
}

impl AuthApi {
    pub fn new(auth: Auth) -> Self {
        AuthApi { auth }
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
            .auth
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
        let (tokens, user) = self
            .auth
            .login(&caller, &r.username, Password::new(r.password))
            .await?;
        Ok(Response::new(pb::LoginResponse {
            tokens: Some(convert::token_pair(tokens)),
            user: Some(convert::user(user)),
        }))
    }

    async fn refresh(
        &self,
        request: Request<pb::RefreshRequest>,
    ) -> Result<Response<pb::RefreshResponse>, Status> {
        let caller = caller(&request);
        let tokens = self
            .auth
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
        let principal = self.auth.validate(&request.get_ref().token).await?;
        Ok(Response::new(pb::ValidateTokenResponse {
            user_id: principal.subject_id().to_owned(),
            username: principal.name().to_owned(),
            roles: principal.roles().iter().map(|r| r.to_string()).collect(),
            session_id: principal.session_id().to_owned(),
            expires_at: principal.expires_at().map(convert::timestamp_secs),
            issued_at: Some(convert::timestamp_secs(principal.issued_at())),
        }))
    }

    async fn check_role(
        &self,
        request: Request<pb::CheckRoleRequest>,
    ) -> Result<Response<pb::CheckRoleResponse>, Status> {
        let r = request.get_ref();
        let (allowed, principal) = self.auth.check_role(&r.token, &r.role).await?;
        Ok(Response::new(pb::CheckRoleResponse {
            allowed,
            user_id: principal.subject_id().to_owned(),
        }))
    }

    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        let caller = caller(&request);
        self.auth
            .logout(&caller, Secret::new(request.into_inner().refresh_token))
            .await?;
        Ok(Response::new(pb::LogoutResponse {}))
    }

    async fn get_jwks(
        &self,
        _: Request<pb::GetJwksRequest>,
    ) -> Result<Response<pb::GetJwksResponse>, Status> {
        Ok(Response::new(pb::GetJwksResponse {
            jwks_json: self.auth.jwks_json(),
        }))
    }
}

fn caller<T>(request: &Request<T>) -> Caller {
    Caller {
        actor: None,
        peer: super::peer(request),
    }
}
