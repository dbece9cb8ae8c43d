//! `envoy.service.auth.v3.Authorization/Check`: Envoy's external authorization
//! (and Istio's `CUSTOM` action), so a mesh delegates to authd with no code. Thin:
//! it reads the checked request's `authorization: Bearer <access token or API key>`
//! header and the route's context extensions `authd_role` / `authd_permission`,
//! asks the hot path ([`HotPath::authorize`]) and writes Envoy's answer.
//!
//! The answer is a `CheckResponse`, never a gRPC error, for anything about the
//! caller: allowed (`OK`, the identity headers set on the upstream request with
//! `OVERWRITE_IF_EXISTS_OR_ADD`, so a header the client sent itself never
//! survives), no or bad credentials (`UNAUTHENTICATED`, HTTP 401 with
//! `www-authenticate: Bearer`) or a requirement not met (`PERMISSION_DENIED`,
//! HTTP 403). What is authd's own failure (stale views, the database down,
//! an internal error) is a gRPC error, so that Envoy applies its
//! `failure_mode_allow` and `status_on_error` as configured. Which is which is
//! decided by the status code `status.rs` gives the domain error, in one place.
//!
//! It is the hot path, as `ValidateToken` is: nothing is audited or logged per call.

use envoy_types::{
    ext_authz::v3::pb::{
        Authorization, CheckRequest, CheckResponse, DeniedHttpResponse, HeaderAppendAction,
        HeaderValue, HeaderValueOption, HttpResponse, HttpStatus, HttpStatusCode, OkHttpResponse,
    },
    pb::google::rpc,
};
use tonic::{Code, Request, Response, Status};

use super::authenticate::bearer;
use crate::domain::{
    hot::{HotPath, Principal, Requirements},
    DomainError,
};

/// The context extension that names the role a route needs.
pub const ROLE_EXTENSION: &str = "authd_role";
/// The context extension that names the permission a route needs.
pub const PERMISSION_EXTENSION: &str = "authd_permission";

/// The identity headers an allowed request reaches its upstream with.
pub const USER_ID_HEADER: &str = "x-authd-user-id";
pub const USERNAME_HEADER: &str = "x-authd-username";
pub const ROLES_HEADER: &str = "x-authd-roles";
pub const SESSION_ID_HEADER: &str = "x-authd-session-id";

pub struct ExtAuthzApi {
    hot: HotPath,
}

impl ExtAuthzApi {
    pub fn new(hot: HotPath) -> Self {
        ExtAuthzApi { hot }
    }
}

#[tonic::async_trait]
impl Authorization for ExtAuthzApi {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let check = request.get_ref();
        let outcome = match credential(check) {
            Ok(token) => self.hot.authorize(token, requirements(check)).await,
            Err(err) => Err(err),
        };
        match outcome {
            Ok(principal) => Ok(Response::new(allowed(&principal))),
            Err(err) => denied(Status::from(err)).map(Response::new),
        }
    }
}

/// The bearer credential of the checked request.
fn credential(check: &CheckRequest) -> Result<&str, DomainError> {
    let value = authorization_header(check).ok_or(DomainError::Unauthenticated(
        "missing credentials: send 'authorization: Bearer <access token or API key>'",
    ))?;
    bearer(value).ok_or(DomainError::Unauthenticated(
        "the authorization header must be 'Bearer <access token or API key>'",
    ))
}

/// The checked request's `authorization` header: from `headers` (Envoy lower-cases
/// their names), or from `header_map` when Envoy sends raw headers
/// (`encode_raw_headers`).
fn authorization_header(check: &CheckRequest) -> Option<&str> {
    let http = check.attributes.as_ref()?.request.as_ref()?.http.as_ref()?;
    if let Some(value) = http.headers.get("authorization") {
        return Some(value);
    }
    let named = |name: &str| name.eq_ignore_ascii_case("authorization");
    if let Some((_, value)) = http.headers.iter().find(|(name, _)| named(name)) {
        return Some(value);
    }
    let header = http
        .header_map
        .as_ref()?
        .headers
        .iter()
        .find(|header| named(&header.key))?;
    if header.raw_value.is_empty() {
        Some(&header.value)
    } else {
        std::str::from_utf8(&header.raw_value).ok()
    }
}

/// What the route needs, from its context extensions (per-route
/// `check_settings.context_extensions` in Envoy).
fn requirements(check: &CheckRequest) -> Requirements<'_> {
    let Some(extensions) = check.attributes.as_ref().map(|a| &a.context_extensions) else {
        return Requirements::default();
    };
    Requirements {
        role: extensions.get(ROLE_EXTENSION).map(String::as_str),
        permission: extensions.get(PERMISSION_EXTENSION).map(String::as_str),
    }
}

fn allowed(principal: &Principal) -> CheckResponse {
    let roles = principal
        .roles()
        .iter()
        .map(AsRef::as_ref)
        .collect::<Vec<&str>>()
        .join(",");
    let headers = vec![
        overwrite(USER_ID_HEADER, principal.subject_id().to_owned()),
        overwrite(USERNAME_HEADER, principal.name().to_owned()),
        overwrite(ROLES_HEADER, roles),
        // Empty for an API key: still overwritten, so a spoofed one is gone.
        overwrite(SESSION_ID_HEADER, principal.session_id().to_owned()),
    ];
    CheckResponse {
        status: Some(rpc::Status {
            code: Code::Ok as i32,
            ..Default::default()
        }),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers,
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// A header set on the upstream request whatever the client sent under its name.
fn overwrite(key: &str, value: String) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value,
            ..Default::default()
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        // An empty value (an API key's session id) must replace, not be dropped.
        keep_empty_value: true,
        ..Default::default()
    }
}

/// The refusal Envoy sends the client for `status`; authd's own failures stay
/// gRPC errors (see the module docs).
fn denied(status: Status) -> Result<CheckResponse, Status> {
    let mut headers = vec![header("content-type", "text/plain; charset=utf-8")];
    let http_status = match status.code() {
        Code::Unauthenticated => {
            headers.push(header("www-authenticate", "Bearer"));
            HttpStatusCode::Unauthorized
        }
        Code::PermissionDenied => HttpStatusCode::Forbidden,
        _ => return Err(status),
    };
    Ok(CheckResponse {
        status: Some(rpc::Status {
            code: status.code() as i32,
            message: status.message().to_owned(),
            details: Vec::new(),
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: http_status as i32,
            }),
            headers,
            body: status.message().to_owned(),
        })),
        ..Default::default()
    })
}

/// A header of the response Envoy sends the client (replacing, not appending).
fn header(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value: value.to_owned(),
            ..Default::default()
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use envoy_types::pb::envoy::{
        config::core::v3::HeaderMap,
        service::auth::v3::{attribute_context, AttributeContext},
    };

    use super::*;

    fn check_with(http: attribute_context::HttpRequest) -> CheckRequest {
        CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(attribute_context::Request {
                    http: Some(http),
                    ..Default::default()
                }),
                context_extensions: HashMap::from([(ROLE_EXTENSION.into(), "editor".into())]),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn the_credential_is_read_from_headers_or_raw_headers() {
        let headers = check_with(attribute_context::HttpRequest {
            headers: HashMap::from([("authorization".into(), "Bearer abc".into())]),
            ..Default::default()
        });
        assert_eq!(credential(&headers).ok(), Some("abc"));
        let raw = check_with(attribute_context::HttpRequest {
            header_map: Some(HeaderMap {
                headers: vec![HeaderValue {
                    key: "Authorization".into(),
                    raw_value: b"bearer xyz".to_vec(),
                    ..Default::default()
                }],
            }),
            ..Default::default()
        });
        assert_eq!(credential(&raw).ok(), Some("xyz"));
        assert_eq!(requirements(&raw).role, Some("editor"));
        assert_eq!(requirements(&raw).permission, None);
    }

    #[test]
    fn no_or_another_scheme_is_unauthenticated() {
        let none = check_with(Default::default());
        assert!(matches!(
            credential(&none),
            Err(DomainError::Unauthenticated(_))
        ));
        assert!(matches!(
            credential(&CheckRequest::default()),
            Err(DomainError::Unauthenticated(_))
        ));
        let basic = check_with(attribute_context::HttpRequest {
            headers: HashMap::from([("authorization".into(), "Basic abc".into())]),
            ..Default::default()
        });
        assert!(matches!(
            credential(&basic),
            Err(DomainError::Unauthenticated(_))
        ));
    }

    #[test]
    fn authds_own_failures_stay_grpc_errors() {
        let status = denied(Status::unavailable("down")).expect_err("an error");
        assert_eq!(status.code(), Code::Unavailable);
        let answer = denied(Status::permission_denied("no")).expect("an answer");
        assert_eq!(
            answer.status.map(|s| s.code),
            Some(Code::PermissionDenied as i32)
        );
    }
}
