//! `auth.v1.AuthService`: thin handlers that call the domain. The self-service
//! methods arrive with the user [`super::authenticate::AuthenticateLayer`]
//! authorised; the others need no credentials.

use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::{
    authenticate::user_caller,
    convert,
    pb::{self, auth_service_server::AuthService},
    revocation_stream::{self, RevocationMessages},
};
use crate::domain::{
    accounts::Registration,
    caller::Caller,
    secrets::{Password, Secret},
    Domain,
};

pub struct AuthApi {
    domain: Domain,
    /// Cancelled when the server starts draining: revocation streams end then.
    draining: CancellationToken,
}

impl AuthApi {
    pub fn new(domain: Domain, draining: CancellationToken) -> Self {
        AuthApi { domain, draining }
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
        let outcome = self
            .domain
            .accounts
            .login(&caller, &r.username, Password::new(r.password))
            .await?;
        Ok(Response::new(convert::login_response(outcome)))
    }

    async fn login_with_id_token(
        &self,
        request: Request<pb::LoginWithIdTokenRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let caller = caller(&request);
        let r = request.into_inner();
        let outcome = self
            .domain
            .oidc
            .login_with_id_token(&caller, &r.provider, Secret::new(r.id_token), &r.nonce)
            .await?;
        Ok(Response::new(convert::login_response(outcome)))
    }

    async fn enroll_totp(
        &self,
        request: Request<pb::EnrollTotpRequest>,
    ) -> Result<Response<pb::EnrollTotpResponse>, Status> {
        let caller = user_caller(&request)?;
        let enrolment = self.domain.accounts.enroll_totp(&caller).await?;
        Ok(Response::new(pb::EnrollTotpResponse {
            secret: enrolment.secret.into_inner(),
            otpauth_uri: enrolment.otpauth_uri,
        }))
    }

    async fn confirm_totp(
        &self,
        request: Request<pb::ConfirmTotpRequest>,
    ) -> Result<Response<pb::ConfirmTotpResponse>, Status> {
        let caller = user_caller(&request)?;
        let codes = self
            .domain
            .accounts
            .confirm_totp(&caller, &request.get_ref().code)
            .await?;
        Ok(Response::new(pb::ConfirmTotpResponse {
            recovery_codes: codes.into_iter().map(Secret::into_inner).collect(),
        }))
    }

    async fn disable_totp(
        &self,
        request: Request<pb::DisableTotpRequest>,
    ) -> Result<Response<pb::DisableTotpResponse>, Status> {
        let caller = user_caller(&request)?;
        self.domain
            .accounts
            .disable_totp(&caller, &request.get_ref().code)
            .await?;
        Ok(Response::new(pb::DisableTotpResponse {}))
    }

    async fn verify_mfa(
        &self,
        request: Request<pb::VerifyMfaRequest>,
    ) -> Result<Response<pb::VerifyMfaResponse>, Status> {
        let caller = caller(&request);
        let r = request.into_inner();
        let logged_in = self
            .domain
            .accounts
            .verify_mfa(&caller, Secret::new(r.mfa_token), &r.code)
            .await?;
        Ok(Response::new(pb::VerifyMfaResponse {
            tokens: Some(convert::token_pair(logged_in.tokens)),
            user: Some(convert::user(logged_in.user)),
        }))
    }

    type WatchRevocationsStream = RevocationMessages;

    async fn watch_revocations(
        &self,
        request: Request<pb::WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        let events = self
            .domain
            .hot
            .watch_revocations(&request.get_ref().after)
            .await?;
        Ok(Response::new(revocation_stream::messages(
            events,
            self.draining.clone(),
        )))
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

    /// Served by [`super::validation_reply::ValidateTokenRoute`] in front of this
    /// router, which writes the same message without copying each role and
    /// permission; this answer is the reference its tests compare against, and what a
    /// router without that route in front would answer.
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

    async fn check_permission(
        &self,
        request: Request<pb::CheckPermissionRequest>,
    ) -> Result<Response<pb::CheckPermissionResponse>, Status> {
        let r = request.get_ref();
        let check = self
            .domain
            .hot
            .check_permission(&r.token, &r.permission)
            .await?;
        Ok(Response::new(pb::CheckPermissionResponse {
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

    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        let caller = user_caller(&request)?;
        let r = request.into_inner();
        self.domain
            .accounts
            .change_password(
                &caller,
                Password::new(r.current_password),
                Password::new(r.new_password),
            )
            .await?;
        Ok(Response::new(pb::ChangePasswordResponse {}))
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let caller = user_caller(&request)?;
        let sessions = self.domain.sessions.list_own(&caller).await?;
        Ok(Response::new(pb::ListSessionsResponse {
            sessions: sessions.into_iter().map(convert::session).collect(),
        }))
    }

    async fn revoke_session(
        &self,
        request: Request<pb::RevokeSessionRequest>,
    ) -> Result<Response<pb::RevokeSessionResponse>, Status> {
        let caller = user_caller(&request)?;
        self.domain
            .sessions
            .revoke_own(&caller, &request.get_ref().session_id)
            .await?;
        Ok(Response::new(pb::RevokeSessionResponse {}))
    }

    async fn reset_password(
        &self,
        request: Request<pb::ResetPasswordRequest>,
    ) -> Result<Response<pb::ResetPasswordResponse>, Status> {
        let caller = caller(&request);
        let r = request.into_inner();
        self.domain
            .recovery
            .reset_password(
                &caller,
                Secret::new(r.reset_token),
                Password::new(r.new_password),
            )
            .await?;
        Ok(Response::new(pb::ResetPasswordResponse {}))
    }

    async fn verify_email(
        &self,
        request: Request<pb::VerifyEmailRequest>,
    ) -> Result<Response<pb::VerifyEmailResponse>, Status> {
        let caller = caller(&request);
        let user = self
            .domain
            .recovery
            .verify_email(
                &caller,
                Secret::new(request.into_inner().verification_token),
            )
            .await?;
        Ok(Response::new(pb::VerifyEmailResponse {
            user: Some(convert::user(user)),
        }))
    }
}

/// AuthService needs no credentials: its callers are known by their address (and
/// client certificate, under mutual TLS) only.
fn caller<T>(request: &Request<T>) -> Caller {
    Caller::anonymous(super::peer(request.extensions()))
}
