//! Caller authentication at the transport's edge: a tower layer that reads
//! `authorization: Bearer <token>` once, has the domain authorise it, and puts the
//! authorised caller into the request's extensions; handlers take it from there.
//! A handler cannot forget the check: without the layer there is no caller, and
//! the call fails closed.
//!
//! Two policies: [`AuthenticateLayer::admin`] around AdminService, where every
//! method needs an [`AdminCaller`] ([`admin_caller`]) holding the method's
//! permission ([`admin_permission`]); and
//! [`AuthenticateLayer::self_service`] around AuthService, where only the methods
//! in [`SELF_SERVICE_METHODS`] need a [`UserCaller`] ([`user_caller`]) and every
//! other call (ValidateToken on the hot path among them) passes straight through,
//! without an allocation or a look at its headers.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use tonic::{body::Body, server::NamedService, Status};
use tower::{Layer, Service};

use crate::domain::{
    admin::{Admin, AdminCaller},
    caller::UserCaller,
    roles::permissions,
    sessions::Sessions,
};

/// The AuthService methods that act as the user of the bearer token, by path.
pub const SELF_SERVICE_METHODS: [&str; 6] = [
    "/auth.v1.AuthService/ChangePassword",
    "/auth.v1.AuthService/ListSessions",
    "/auth.v1.AuthService/RevokeSession",
    "/auth.v1.AuthService/EnrollTotp",
    "/auth.v1.AuthService/ConfirmTotp",
    "/auth.v1.AuthService/DisableTotp",
];

/// What a method of AdminService needs that none of the tables below names: only
/// `admin` (which holds every permission) has it, so a method added without an
/// entry fails closed.
const UNLISTED_ADMIN_METHOD: &str = "authd.admin";

/// The permission an AdminService method needs (API.md, "Roles and permissions as
/// data"), by the method's name.
pub fn admin_permission(method: &str) -> &'static str {
    match method {
        "GetUser" | "ListUsers" | "ListUserSessions" | "ListRoles" => permissions::USERS_READ,
        "UpdateUser"
        | "SetUserActive"
        | "DeleteUser"
        | "RevokeSessions"
        | "CreatePasswordResetToken"
        | "CreateEmailVerificationToken"
        | "ResetMfa"
        | "UnlinkIdentity" => permissions::USERS_WRITE,
        "AssignRole" | "RevokeRole" | "CreateRole" | "UpdateRole" | "DeleteRole" => {
            permissions::ROLES_WRITE
        }
        "CreateApiKey" | "ListApiKeys" | "RevokeApiKey" => permissions::APIKEYS_WRITE,
        "ListAuditEvents" => permissions::AUDIT_READ,
        _ => UNLISTED_ADMIN_METHOD,
    }
}

/// Who must be authenticated, and who authorises them.
#[derive(Clone)]
enum Policy {
    /// Every call: a credential holding the method's permission.
    Admin(Admin),
    /// The self-service methods: a user's access token; other calls need nothing.
    SelfService(Sessions),
}

#[derive(Clone)]
pub struct AuthenticateLayer {
    policy: Policy,
}

impl AuthenticateLayer {
    /// For AdminService: every call needs the permission of its method.
    pub fn admin(admin: Admin) -> Self {
        AuthenticateLayer {
            policy: Policy::Admin(admin),
        }
    }

    /// For AuthService: the self-service methods need a user.
    pub fn self_service(sessions: Sessions) -> Self {
        AuthenticateLayer {
            policy: Policy::SelfService(sessions),
        }
    }
}

impl<S> Layer<S> for AuthenticateLayer {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticated {
            inner,
            policy: self.policy.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Authenticated<S> {
    inner: S,
    policy: Policy,
}

impl<S: NamedService> NamedService for Authenticated<S> {
    const NAME: &'static str = S::NAME;
}

type Checking<E> = Pin<Box<dyn Future<Output = Result<http::Response<Body>, E>> + Send>>;

pin_project_lite::pin_project! {
    /// A call that needs no caller runs as it is; one that does is boxed with the
    /// check in front of it.
    #[project = AuthenticatedFutureProj]
    pub enum AuthenticatedFuture<F, E> {
        Passed { #[pin] call: F },
        Checked { call: Checking<E> },
    }
}

impl<F, E> Future for AuthenticatedFuture<F, E>
where
    F: Future<Output = Result<http::Response<Body>, E>>,
{
    type Output = Result<http::Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AuthenticatedFutureProj::Passed { call } => call.poll(cx),
            AuthenticatedFutureProj::Checked { call } => call.as_mut().poll(cx),
        }
    }
}

impl<S, B> Service<http::Request<B>> for Authenticated<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: 'static,
    B: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = AuthenticatedFuture<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let policy = match &self.policy {
            Policy::SelfService(_) if !SELF_SERVICE_METHODS.contains(&request.uri().path()) => {
                return AuthenticatedFuture::Passed {
                    call: self.inner.call(request),
                };
            }
            policy => policy.clone(),
        };
        // The clone is ready only after its own poll_ready; keep the one that is.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        AuthenticatedFuture::Checked {
            call: Box::pin(async move {
                let peer = super::peer(request.extensions());
                let token = match bearer_token(request.headers()) {
                    Ok(token) => token.to_owned(),
                    Err(status) => return Ok(status.into_http()),
                };
                let authorised = match policy {
                    Policy::Admin(admin) => admin
                        .authorize(&token, peer, admin_permission(method_name(&request)))
                        .await
                        .map(|caller| request.extensions_mut().insert(caller))
                        .map(drop),
                    Policy::SelfService(sessions) => sessions
                        .authorize_user(&token, peer)
                        .await
                        .map(|caller| request.extensions_mut().insert(caller))
                        .map(drop),
                };
                match authorised {
                    Ok(()) => inner.call(request).await,
                    Err(err) => Ok(Status::from(err).into_http()),
                }
            }),
        }
    }
}

/// The method of a `/package.Service/Method` path.
fn method_name<B>(request: &http::Request<B>) -> &str {
    let path = request.uri().path();
    path.rsplit_once('/').map_or(path, |(_, method)| method)
}

/// The token of `authorization: Bearer <token>`.
fn bearer_token(headers: &http::HeaderMap) -> Result<&str, Status> {
    let value = headers.get(http::header::AUTHORIZATION).ok_or_else(|| {
        Status::unauthenticated(
            "missing credentials: send metadata 'authorization: Bearer <access token>'",
        )
    })?;
    let value = value
        .to_str()
        .map_err(|_| Status::unauthenticated("the authorization metadata is not text"))?;
    bearer(value).ok_or_else(|| {
        Status::unauthenticated("the authorization metadata must be 'Bearer <access token>'")
    })
}

/// The token of an `authorization` value `Bearer <token>`, the scheme in any case
/// (RFC 9110 §11.1); `None` for any other scheme. Also reads the header of a
/// request that a proxy asks about (`ext_authz.rs`).
pub(super) fn bearer(value: &str) -> Option<&str> {
    value
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
}

/// The caller the layer authorised for this request.
pub fn admin_caller<T>(request: &tonic::Request<T>) -> Result<AdminCaller, Status> {
    request
        .extensions()
        .get::<AdminCaller>()
        .cloned()
        .ok_or_else(|| {
            tracing::error!("an AdminService call reached its handler unauthenticated");
            Status::internal("the call was not authenticated")
        })
}

/// The user the layer authorised for this self-service call.
pub fn user_caller<T>(request: &tonic::Request<T>) -> Result<UserCaller, Status> {
    request
        .extensions()
        .get::<UserCaller>()
        .cloned()
        .ok_or_else(|| {
            tracing::error!("a self-service call reached its handler unauthenticated");
            Status::internal("the call was not authenticated")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            value.parse().expect("header value"),
        );
        headers
    }

    #[test]
    fn every_admin_method_has_its_permission_and_others_need_admin() {
        assert_eq!(admin_permission("ListRoles"), "authd.users.read");
        assert_eq!(admin_permission("ResetMfa"), "authd.users.write");
        assert_eq!(admin_permission("UnlinkIdentity"), "authd.users.write");
        assert_eq!(admin_permission("DeleteRole"), "authd.roles.write");
        assert_eq!(admin_permission("RevokeApiKey"), "authd.apikeys.write");
        assert_eq!(admin_permission("ListAuditEvents"), "authd.audit.read");
        assert_eq!(admin_permission("SomethingNew"), UNLISTED_ADMIN_METHOD);
    }

    #[test]
    fn no_admin_service_method_is_left_to_admin_alone_by_accident() {
        use prost::Message;
        let set = prost_types::FileDescriptorSet::decode(crate::grpc::FILE_DESCRIPTOR_SET)
            .expect("our descriptors");
        let methods: Vec<String> = set
            .file
            .iter()
            .flat_map(|file| &file.service)
            .filter(|service| service.name() == "AdminService")
            .flat_map(|service| service.method.iter().map(|m| m.name().to_owned()))
            .collect();
        assert!(methods.len() >= 20, "{methods:?}");
        for method in methods {
            assert_ne!(
                admin_permission(&method),
                UNLISTED_ADMIN_METHOD,
                "{method} has no permission in API.md's table"
            );
        }
    }

    #[test]
    fn the_bearer_scheme_is_read_whatever_its_case() {
        assert_eq!(bearer_token(&headers("Bearer abc")).ok(), Some("abc"));
        assert_eq!(bearer_token(&headers("bearer  abc ")).ok(), Some("abc"));
    }

    #[test]
    fn anything_else_is_unauthenticated() {
        for value in ["Basic abc", "abc", "Bearer"] {
            let status = bearer_token(&headers(value)).expect_err(value);
            assert_eq!(status.code(), tonic::Code::Unauthenticated);
        }
        let status = bearer_token(&http::HeaderMap::new()).expect_err("missing");
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
    }
}
