//! The two gRPC services as the tests call them: one method per call, taking plain
//! values and answering the message inside the response. The methods take `&self`
//! (each call uses a clone of the tonic client, which shares its connection), so a
//! test can make two calls at once with `tokio::join!`. `grpc()` is the generated
//! client, for requests these methods do not make.

use authd::grpc::pb::{
    self, admin_service_client::AdminServiceClient, auth_service_client::AuthServiceClient,
};
use tonic::{
    metadata::MetadataValue,
    service::{interceptor::InterceptedService, Interceptor},
    transport::Channel,
    Code, Request, Status,
};

use super::PASSWORD;

/// AuthService. Accounts made by [`register`](Self::register) have the password
/// [`PASSWORD`] and the email `<username>@example.com`.
#[derive(Clone)]
pub struct AuthClient(AuthServiceClient<Channel>);

impl AuthClient {
    pub fn new(channel: Channel) -> AuthClient {
        AuthClient(AuthServiceClient::new(channel))
    }

    /// The generated client.
    pub fn grpc(&self) -> AuthServiceClient<Channel> {
        self.0.clone()
    }

    /// Registers `username` with [`PASSWORD`]; panics if refused.
    pub async fn register(&self, username: &str) -> pb::User {
        self.try_register(username).await.expect("register")
    }

    /// The same Register, answering the refusal instead of panicking.
    pub async fn try_register(&self, username: &str) -> Result<pb::User, Status> {
        self.grpc()
            .register(pb::RegisterRequest {
                username: username.into(),
                email: format!("{username}@example.com"),
                password: PASSWORD.into(),
                full_name: String::new(),
            })
            .await
            .map(|r| r.into_inner().user.expect("user"))
    }

    /// Logs `username` in with [`PASSWORD`]; panics if refused.
    pub async fn login(&self, username: &str) -> pb::TokenPair {
        self.login_with(username, PASSWORD)
            .await
            .expect("login")
            .tokens
            .expect("tokens")
    }

    pub async fn login_with(
        &self,
        username: &str,
        password: &str,
    ) -> Result<pb::LoginResponse, Status> {
        self.grpc()
            .login(pb::LoginRequest {
                username: username.into(),
                password: password.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    pub async fn refresh(&self, refresh_token: &str) -> Result<pb::TokenPair, Status> {
        self.grpc()
            .refresh(pb::RefreshRequest {
                refresh_token: refresh_token.into(),
            })
            .await
            .map(|r| r.into_inner().tokens.expect("tokens"))
    }

    pub async fn logout(&self, refresh_token: &str) -> Result<(), Status> {
        self.grpc()
            .logout(pb::LogoutRequest {
                refresh_token: refresh_token.into(),
            })
            .await
            .map(|_| ())
    }

    /// ValidateToken (an access token or an API key).
    pub async fn validate(&self, token: &str) -> Result<pb::ValidateTokenResponse, Status> {
        self.grpc()
            .validate_token(pb::ValidateTokenRequest {
                token: token.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    pub async fn check_role(
        &self,
        token: &str,
        role: &str,
    ) -> Result<pb::CheckRoleResponse, Status> {
        self.grpc()
            .check_role(pb::CheckRoleRequest {
                token: token.into(),
                role: role.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    /// CheckPermission's `allowed`, or the status code of the refusal.
    pub async fn has_permission(&self, token: &str, permission: &str) -> Result<bool, Code> {
        self.grpc()
            .check_permission(pb::CheckPermissionRequest {
                token: token.into(),
                permission: permission.into(),
            })
            .await
            .map(|r| r.into_inner().allowed)
            .map_err(|status| status.code())
    }

    /// CheckRole's `allowed`, or the status code of the refusal.
    pub async fn has_role(&self, token: &str, role: &str) -> Result<bool, Code> {
        self.check_role(token, role)
            .await
            .map(|r| r.allowed)
            .map_err(|status| status.code())
    }

    /// WatchRevocations after `after` (empty: a snapshot first).
    pub async fn watch_revocations(
        &self,
        after: &str,
    ) -> Result<tonic::Streaming<pb::RevocationEvent>, Status> {
        self.grpc()
            .watch_revocations(pb::WatchRevocationsRequest {
                after: after.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    /// The JWK Set as GetJwks answers it.
    pub async fn jwks(&self) -> String {
        self.grpc()
            .get_jwks(pb::GetJwksRequest {})
            .await
            .expect("jwks")
            .into_inner()
            .jwks_json
    }
}

pub type AuthServiceBearerClient = AuthServiceClient<InterceptedService<Channel, Bearer>>;

/// AuthService's self-service calls as one user, sending `authorization: Bearer
/// <token>` with every call.
#[derive(Clone)]
pub struct UserClient(AuthServiceBearerClient);

impl UserClient {
    pub fn new(channel: Channel, token: &str) -> UserClient {
        UserClient(AuthServiceClient::with_interceptor(
            channel,
            Bearer(format!("Bearer {token}")),
        ))
    }

    /// The generated client.
    pub fn grpc(&self) -> AuthServiceBearerClient {
        self.0.clone()
    }

    pub async fn change_password(&self, current: &str, new: &str) -> Result<(), Status> {
        self.grpc()
            .change_password(pb::ChangePasswordRequest {
                current_password: current.into(),
                new_password: new.into(),
            })
            .await
            .map(|_| ())
    }

    pub async fn list_sessions(&self) -> Result<Vec<pb::Session>, Status> {
        self.grpc()
            .list_sessions(pb::ListSessionsRequest {})
            .await
            .map(|r| r.into_inner().sessions)
    }

    pub async fn revoke_session(&self, session_id: &str) -> Result<(), Status> {
        self.grpc()
            .revoke_session(pb::RevokeSessionRequest {
                session_id: session_id.into(),
            })
            .await
            .map(|_| ())
    }
}

impl AuthClient {
    pub async fn reset_password(
        &self,
        reset_token: &str,
        new_password: &str,
    ) -> Result<(), Status> {
        self.grpc()
            .reset_password(pb::ResetPasswordRequest {
                reset_token: reset_token.into(),
                new_password: new_password.into(),
            })
            .await
            .map(|_| ())
    }

    pub async fn verify_email(&self, verification_token: &str) -> Result<pb::User, Status> {
        self.grpc()
            .verify_email(pb::VerifyEmailRequest {
                verification_token: verification_token.into(),
            })
            .await
            .map(|r| r.into_inner().user.expect("user"))
    }
}

pub type AdminServiceBearerClient = AdminServiceClient<InterceptedService<Channel, Bearer>>;

/// AdminService, sending `authorization: Bearer <token>` with every call.
#[derive(Clone)]
pub struct AdminClient(AdminServiceBearerClient);

impl AdminClient {
    pub fn new(channel: Channel, token: &str) -> AdminClient {
        AdminClient(AdminServiceClient::with_interceptor(
            channel,
            Bearer(format!("Bearer {token}")),
        ))
    }

    /// The generated client.
    pub fn grpc(&self) -> AdminServiceBearerClient {
        self.0.clone()
    }

    pub async fn get_user(&self, user_id: &str, username: &str) -> Result<pb::User, Status> {
        self.grpc()
            .get_user(pb::GetUserRequest {
                user_id: user_id.into(),
                username: username.into(),
            })
            .await
            .map(|r| r.into_inner().user.expect("user"))
    }

    pub async fn list_users(
        &self,
        page_size: i32,
        page_token: &str,
    ) -> Result<pb::ListUsersResponse, Status> {
        self.grpc()
            .list_users(pb::ListUsersRequest {
                page_size,
                page_token: page_token.into(),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner())
    }

    pub async fn assign_role(&self, user_id: &str, role: &str) -> Result<pb::User, Status> {
        self.grpc()
            .assign_role(pb::AssignRoleRequest {
                user_id: user_id.into(),
                role: role.into(),
            })
            .await
            .map(|r| r.into_inner().user.expect("user"))
    }

    pub async fn revoke_role(&self, user_id: &str, role: &str) -> Result<pb::User, Status> {
        self.grpc()
            .revoke_role(pb::RevokeRoleRequest {
                user_id: user_id.into(),
                role: role.into(),
            })
            .await
            .map(|r| r.into_inner().user.expect("user"))
    }

    pub async fn set_active(&self, user_id: &str, active: bool) -> Result<pb::User, Status> {
        self.grpc()
            .set_user_active(pb::SetUserActiveRequest {
                user_id: user_id.into(),
                active,
            })
            .await
            .map(|r| r.into_inner().user.expect("user"))
    }

    /// How many sessions were ended, or the status code of the refusal.
    pub async fn revoke_sessions(&self, user_id: &str) -> Result<i32, Code> {
        self.grpc()
            .revoke_sessions(pb::RevokeSessionsRequest {
                user_id: user_id.into(),
            })
            .await
            .map(|r| r.into_inner().revoked)
            .map_err(|status| status.code())
    }

    /// CreateRole, described as "the <name> role".
    pub async fn create_role(
        &self,
        name: &str,
        includes: &[&str],
        permissions: &[&str],
    ) -> Result<pb::Role, Status> {
        let (name, description, includes, permissions) = role_fields(name, includes, permissions);
        self.grpc()
            .create_role(pb::CreateRoleRequest {
                name,
                description,
                includes,
                permissions,
            })
            .await
            .map(|r| r.into_inner().role.expect("role"))
    }

    /// UpdateRole (description, includes and permissions all replaced).
    pub async fn update_role(
        &self,
        name: &str,
        includes: &[&str],
        permissions: &[&str],
    ) -> Result<pb::Role, Status> {
        let (name, description, includes, permissions) = role_fields(name, includes, permissions);
        self.grpc()
            .update_role(pb::UpdateRoleRequest {
                name,
                description,
                includes,
                permissions,
            })
            .await
            .map(|r| r.into_inner().role.expect("role"))
    }

    pub async fn delete_role(&self, name: &str) -> Result<(), Status> {
        self.grpc()
            .delete_role(pb::DeleteRoleRequest { name: name.into() })
            .await
            .map(drop)
    }

    pub async fn list_roles(&self) -> Result<Vec<pb::Role>, Status> {
        self.grpc()
            .list_roles(pb::ListRolesRequest {})
            .await
            .map(|r| r.into_inner().roles)
    }

    /// A key named `name` holding `roles`; `ttl_seconds` 0 means it does not expire.
    pub async fn create_api_key(
        &self,
        name: &str,
        roles: &[&str],
        ttl_seconds: i64,
    ) -> Result<pb::CreateApiKeyResponse, Status> {
        self.grpc()
            .create_api_key(pb::CreateApiKeyRequest {
                name: name.into(),
                roles: roles.iter().map(|r| r.to_string()).collect(),
                ttl_seconds,
            })
            .await
            .map(|r| r.into_inner())
    }

    pub async fn list_api_keys(
        &self,
        page_size: i32,
        page_token: &str,
    ) -> Result<pb::ListApiKeysResponse, Status> {
        self.grpc()
            .list_api_keys(pb::ListApiKeysRequest {
                page_size,
                page_token: page_token.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    pub async fn update_user(&self, request: pb::UpdateUserRequest) -> Result<pb::User, Status> {
        self.grpc()
            .update_user(request)
            .await
            .map(|r| r.into_inner().user.expect("user"))
    }

    pub async fn delete_user(&self, user_id: &str) -> Result<(), Status> {
        self.grpc()
            .delete_user(pb::DeleteUserRequest {
                user_id: user_id.into(),
            })
            .await
            .map(|_| ())
    }

    pub async fn list_user_sessions(
        &self,
        user_id: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<pb::ListUserSessionsResponse, Status> {
        self.grpc()
            .list_user_sessions(pb::ListUserSessionsRequest {
                user_id: user_id.into(),
                page_size,
                page_token: page_token.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    pub async fn create_password_reset_token(
        &self,
        user_id: &str,
    ) -> Result<pb::CreatePasswordResetTokenResponse, Status> {
        self.grpc()
            .create_password_reset_token(pb::CreatePasswordResetTokenRequest {
                user_id: user_id.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    pub async fn create_email_verification_token(
        &self,
        user_id: &str,
    ) -> Result<pb::CreateEmailVerificationTokenResponse, Status> {
        self.grpc()
            .create_email_verification_token(pb::CreateEmailVerificationTokenRequest {
                user_id: user_id.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    pub async fn revoke_api_key(&self, key_id: &str) -> Result<pb::ApiKey, Status> {
        self.grpc()
            .revoke_api_key(pb::RevokeApiKeyRequest {
                key_id: key_id.into(),
            })
            .await
            .map(|r| r.into_inner().key.expect("key"))
    }
}

/// Sends its value as the `authorization` header: `Bearer <token>`, or anything else
/// a test wants to try.
#[derive(Clone)]
pub struct Bearer(pub String);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let value: MetadataValue<_> = self.0.parse().map_err(|_| Status::internal("bad token"))?;
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }
}

/// A role request's four fields, described as "the <name> role".
fn role_fields(
    name: &str,
    includes: &[&str],
    permissions: &[&str],
) -> (String, String, Vec<String>, Vec<String>) {
    let owned = |values: &[&str]| values.iter().map(|v| v.to_string()).collect();
    (
        name.to_owned(),
        format!("the {name} role"),
        owned(includes),
        owned(permissions),
    )
}
