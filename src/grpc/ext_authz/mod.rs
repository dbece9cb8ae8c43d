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

mod request;

use envoy_types::{
    ext_authz::v3::pb::{
        CheckResponse, DeniedHttpResponse, HeaderAppendAction, HeaderValue, HeaderValueOption,
        HttpResponse, HttpStatus, HttpStatusCode, OkHttpResponse,
    },
    pb::google::rpc,
};
use tonic::{server::UnaryService, Code, Request, Response, Status};
use tonic_prost::ProstCodec;

use self::request::CheckedRequest;
use super::{
    authenticate::bearer,
    unary_route::{MethodFuture, NoOtherMethods, ServiceName, UnaryRoute},
};
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

const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// `envoy.service.auth.v3.Authorization`, whose one method is Check.
pub struct Authorization;

impl ServiceName for Authorization {
    const NAME: &'static str = "envoy.service.auth.v3.Authorization";
}

/// The Authorization service: Check, reading the request as [`CheckedRequest`]
/// (only what authd needs of it) and answering Envoy's generated `CheckResponse`.
pub type ExtAuthzService =
    UnaryRoute<Check, ProstCodec<CheckResponse, CheckedRequest>, NoOtherMethods<Authorization>>;

pub fn ext_authz_service(hot: HotPath) -> ExtAuthzService {
    UnaryRoute::new(
        CHECK_PATH,
        Check { hot },
        ProstCodec::default(),
        NoOtherMethods::new(),
    )
}

/// Check against the hot path.
#[derive(Clone)]
pub struct Check {
    hot: HotPath,
}

impl UnaryService<CheckedRequest> for Check {
    type Response = CheckResponse;
    type Future = MethodFuture<CheckResponse>;

    fn call(&mut self, request: Request<CheckedRequest>) -> Self::Future {
        let hot = self.hot.clone();
        Box::pin(async move {
            let check = request.get_ref();
            let outcome = async {
                let token = credential(check)?;
                hot.authorize(token, requirements(check)?).await
            }
            .await;
            match outcome {
                Ok(principal) => Ok(Response::new(allowed(&principal))),
                Err(err) => denied(Status::from(err)).map(Response::new),
            }
        })
    }
}

/// The bearer credential of the checked request.
fn credential(check: &CheckedRequest) -> Result<&str, DomainError> {
    let value = check.authorization().ok_or(DomainError::Unauthenticated(
        "missing credentials: send 'authorization: Bearer <access token or API key>'",
    ))?;
    std::str::from_utf8(value)
        .ok()
        .and_then(bearer)
        .ok_or(DomainError::Unauthenticated(
            "the authorization header must be 'Bearer <access token or API key>'",
        ))
}

/// What the route needs, from its context extensions (per-route
/// `check_settings.context_extensions` in Envoy). A requirement that is not UTF-8
/// (no Envoy configuration can say one) refuses the request rather than being
/// ignored, so a route is never left open by it.
fn requirements(check: &CheckedRequest) -> Result<Requirements<'_>, DomainError> {
    let named = |extension: &str| match check.context_extension(extension) {
        None => Ok(None),
        Some(value) => std::str::from_utf8(value).map(Some).map_err(|_| {
            DomainError::PermissionDenied(format!("the route's {extension} is not UTF-8"))
        }),
    };
    Ok(Requirements {
        role: named(ROLE_EXTENSION)?,
        permission: named(PERMISSION_EXTENSION)?,
    })
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
        service::auth::v3::{attribute_context, AttributeContext, CheckRequest},
    };

    use super::{request::read, *};

    fn check_with(http: attribute_context::HttpRequest, role: &str) -> CheckedRequest {
        read(&CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(attribute_context::Request {
                    http: Some(http),
                    ..Default::default()
                }),
                context_extensions: HashMap::from([(ROLE_EXTENSION.into(), role.into())]),
                ..Default::default()
            }),
        })
    }

    fn with_authorization(value: &str) -> CheckedRequest {
        check_with(
            attribute_context::HttpRequest {
                headers: HashMap::from([("authorization".into(), value.into())]),
                ..Default::default()
            },
            "editor",
        )
    }

    /// Raw headers, as Envoy sends them with `encode_raw_headers`.
    fn with_raw_authorization(name: &str, raw_value: &[u8]) -> CheckedRequest {
        check_with(
            attribute_context::HttpRequest {
                header_map: Some(HeaderMap {
                    headers: vec![HeaderValue {
                        key: name.into(),
                        raw_value: raw_value.to_vec(),
                        ..Default::default()
                    }],
                }),
                ..Default::default()
            },
            "editor",
        )
    }

    #[test]
    fn the_credential_is_read_from_headers_or_raw_headers() {
        assert_eq!(
            credential(&with_authorization("Bearer abc")).ok(),
            Some("abc")
        );
        let raw = with_raw_authorization("Authorization", b"bearer xyz");
        assert_eq!(credential(&raw).ok(), Some("xyz"));
        let needs = requirements(&raw).expect("UTF-8");
        assert_eq!(needs.role, Some("editor"));
        assert_eq!(needs.permission, None);
    }

    #[test]
    fn no_or_another_scheme_or_a_value_that_is_not_utf8_is_unauthenticated() {
        let unauthenticated = |check: &CheckedRequest| {
            matches!(credential(check), Err(DomainError::Unauthenticated(_)))
        };
        assert!(unauthenticated(&check_with(Default::default(), "editor")));
        assert!(unauthenticated(&read(&CheckRequest::default())));
        assert!(unauthenticated(&with_authorization("Basic abc")));
        let raw = with_raw_authorization("authorization", b"Bearer \xff\xfe");
        assert!(unauthenticated(&raw));
    }

    #[test]
    fn a_requirement_that_is_not_utf8_refuses_the_request() {
        let mut check = with_authorization("Bearer abc");
        if let Some(attributes) = check.attributes.as_mut() {
            attributes.context_extensions[0].value = bytes::Bytes::from_static(b"\xffeditor");
        }
        assert!(matches!(
            requirements(&check),
            Err(DomainError::PermissionDenied(_))
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
