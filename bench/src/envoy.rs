//! The `ext-authz` scenario's calls: `envoy.service.auth.v3.Authorization/Check` as
//! Envoy's ext_authz filter sends it for an ordinary browser request (a dozen
//! headers, the peers' addresses, the route's `authd_role`), built from Envoy's own
//! protos, and the judgement of its answer.

use std::collections::HashMap;

use envoy_types::pb::envoy::{
    config::core::v3::{address, socket_address::PortSpecifier, Address, SocketAddress},
    service::auth::v3::{attribute_context, AttributeContext, CheckRequest, CheckResponse},
};
use prost::Message;

pub const CHECK: &str = "/envoy.service.auth.v3.Authorization/Check";

/// What Envoy asks about a request that presents `token` on a route that needs `role`.
pub fn check_request(token: &str, role: &str) -> CheckRequest {
    let headers: HashMap<String, String> = [
        (":authority", "app.example.com"),
        (":method", "GET"),
        (":path", "/api/articles?page=2"),
        (":scheme", "https"),
        ("accept", "application/json"),
        ("accept-encoding", "gzip, deflate, br"),
        ("accept-language", "en-GB,en;q=0.9"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)",
        ),
        ("x-forwarded-proto", "https"),
        ("x-request-id", "7f9c2ba4-e88f-4a3e-9d2b-1c0b5e8d7a61"),
        ("x-envoy-expected-rq-timeout-ms", "15000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .chain([("authorization".to_owned(), format!("Bearer {token}"))])
    .collect();
    let peer = |ip: &str, port: u32| attribute_context::Peer {
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: ip.to_owned(),
                port_specifier: Some(PortSpecifier::PortValue(port)),
                ..Default::default()
            })),
        }),
        ..Default::default()
    };
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(peer("203.0.113.7", 51234)),
            destination: Some(peer("10.0.0.12", 8080)),
            request: Some(attribute_context::Request {
                http: Some(attribute_context::HttpRequest {
                    id: "7f9c2ba4-e88f-4a3e-9d2b-1c0b5e8d7a61".to_owned(),
                    method: "GET".to_owned(),
                    headers,
                    path: "/api/articles?page=2".to_owned(),
                    host: "app.example.com".to_owned(),
                    scheme: "https".to_owned(),
                    protocol: "HTTP/2".to_owned(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions: HashMap::from([("authd_role".to_owned(), role.to_owned())]),
            ..Default::default()
        }),
    }
}

/// A refusal is a wrong set-up (an expired token, --role admin), not a fast answer.
pub fn allowed(answer: &CheckResponse) -> Result<(), &'static str> {
    match answer.status.as_ref().map(|s| s.code) {
        Some(0) => Ok(()),
        _ => Err("NOT_ALLOWED"),
    }
}

/// [`allowed`] on an encoded reply.
pub fn allowed_message(message: &[u8]) -> Result<(), &'static str> {
    allowed(&CheckResponse::decode(message).map_err(|_| "BAD_MESSAGE")?)
}
