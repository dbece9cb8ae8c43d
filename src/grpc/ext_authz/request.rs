//! What authd reads of Envoy's `CheckRequest`, decoded without the rest.
//!
//! A `CheckRequest` carries the whole checked HTTP request: a dozen headers, both
//! peers' addresses, the path, the protocol. The generated envoy-types message
//! decodes every field into owned strings and hash maps, which was a third of an
//! ext_authz call's cost; authd reads three things: the `authorization` header (from
//! `headers`, or from `header_map` when Envoy sends raw headers) and the route's
//! context extensions. These messages declare only those fields, under the numbers of
//! Envoy's protos (`proto/vendor/envoy/service/auth/v3/attribute_context.proto` and
//! `config/core/v3/base.proto`); prost skips every other field unread, and names and
//! values are `Bytes` views of the received buffer, not copies. A `map<string, string>`
//! is, on the wire, a repeated message of key 1 and value 2, so it is read as a list
//! of [`Entry`], the last of equal keys winning as in a map. The tests encode Envoy's
//! own generated messages and read them back through these.

use bytes::Bytes;

/// `envoy.service.auth.v3.CheckRequest`, as far as authd reads it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CheckedRequest {
    #[prost(message, optional, tag = "1")]
    pub attributes: Option<Attributes>,
}

/// `AttributeContext`: the request (4) and the route's context extensions (10).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Attributes {
    #[prost(message, optional, tag = "4")]
    pub request: Option<RequestAttributes>,
    #[prost(message, repeated, tag = "10")]
    pub context_extensions: Vec<Entry>,
}

/// `AttributeContext.Request`: its HTTP part (2).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RequestAttributes {
    #[prost(message, optional, tag = "2")]
    pub http: Option<HttpAttributes>,
}

/// `AttributeContext.HttpRequest`: the headers (3), or the raw headers (13).
#[derive(Clone, PartialEq, prost::Message)]
pub struct HttpAttributes {
    #[prost(message, repeated, tag = "3")]
    pub headers: Vec<Entry>,
    #[prost(message, optional, tag = "13")]
    pub header_map: Option<RawHeaders>,
}

/// `config.core.v3.HeaderMap`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RawHeaders {
    #[prost(message, repeated, tag = "1")]
    pub headers: Vec<RawHeader>,
}

/// `config.core.v3.HeaderValue`: with raw headers, Envoy sets `raw_value`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RawHeader {
    #[prost(bytes = "bytes", tag = "1")]
    pub key: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
    #[prost(bytes = "bytes", tag = "3")]
    pub raw_value: Bytes,
}

/// One entry of a `map<string, string>`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Entry {
    #[prost(bytes = "bytes", tag = "1")]
    pub key: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
}

impl CheckedRequest {
    fn http(&self) -> Option<&HttpAttributes> {
        self.attributes.as_ref()?.request.as_ref()?.http.as_ref()
    }

    /// The checked request's `authorization` header, as sent (not yet UTF-8
    /// checked): from `headers` (Envoy lower-cases their names, but any case is
    /// taken), or from `header_map` when Envoy sends raw headers.
    pub fn authorization(&self) -> Option<&[u8]> {
        let http = self.http()?;
        let named = |name: &[u8]| name.eq_ignore_ascii_case(b"authorization");
        let exact = http.headers.iter().rev().find(|e| e.key == "authorization");
        if let Some(entry) = exact.or_else(|| http.headers.iter().rev().find(|e| named(&e.key))) {
            return Some(&entry.value);
        }
        let header = http
            .header_map
            .as_ref()?
            .headers
            .iter()
            .find(|header| named(&header.key))?;
        Some(if header.raw_value.is_empty() {
            &header.value
        } else {
            &header.raw_value
        })
    }

    /// The route's context extension `name`, as sent (not yet UTF-8 checked).
    pub fn context_extension(&self, name: &str) -> Option<&[u8]> {
        let extensions = &self.attributes.as_ref()?.context_extensions;
        extensions
            .iter()
            .rev()
            .find(|e| e.key == name.as_bytes())
            .map(|e| e.value.as_ref())
    }
}

/// What authd reads of Envoy's own message, encoded by Envoy's generated types.
#[cfg(test)]
pub(super) fn read(
    check: &envoy_types::pb::envoy::service::auth::v3::CheckRequest,
) -> CheckedRequest {
    use prost::Message;
    CheckedRequest::decode(check.encode_to_vec().as_slice()).expect("decodes")
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use envoy_types::pb::envoy::{
        config::core::v3::{
            address, socket_address::PortSpecifier, Address, HeaderMap, HeaderValue, SocketAddress,
        },
        service::auth::v3::{attribute_context, AttributeContext, CheckRequest},
    };
    use prost::Message;

    use super::{read, CheckedRequest};

    fn with_http(
        http: attribute_context::HttpRequest,
        extensions: &[(&str, &str)],
    ) -> CheckRequest {
        let peer = |ip: &str| attribute_context::Peer {
            address: Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: ip.to_owned(),
                    port_specifier: Some(PortSpecifier::PortValue(443)),
                    ..Default::default()
                })),
            }),
            principal: "spiffe://cluster.local/ns/default/sa/web".to_owned(),
            ..Default::default()
        };
        CheckRequest {
            attributes: Some(AttributeContext {
                source: Some(peer("203.0.113.7")),
                destination: Some(peer("10.0.0.12")),
                request: Some(attribute_context::Request {
                    time: Some(envoy_types::pb::google::protobuf::Timestamp {
                        seconds: 1_780_000_000,
                        nanos: 5,
                    }),
                    http: Some(http),
                }),
                context_extensions: extensions
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                ..Default::default()
            }),
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_typical_request_yields_its_credential_and_requirements_and_nothing_else_matters() {
        let check = with_http(
            attribute_context::HttpRequest {
                id: "7f9c2ba4".into(),
                method: "GET".into(),
                headers: headers(&[
                    (":authority", "app.example.com"),
                    (":path", "/api/articles?page=2"),
                    ("user-agent", "Mozilla/5.0"),
                    ("authorization", "Bearer abc.def"),
                    ("x-request-id", "7f9c2ba4"),
                ]),
                path: "/api/articles?page=2".into(),
                host: "app.example.com".into(),
                protocol: "HTTP/2".into(),
                body: "ignored".into(),
                raw_body: vec![0xff, 0xfe],
                ..Default::default()
            },
            &[
                ("authd_role", "editor"),
                ("authd_permission", "articles.write"),
                ("other", "x"),
            ],
        );
        let read = read(&check);
        assert_eq!(read.authorization(), Some(&b"Bearer abc.def"[..]));
        assert_eq!(read.context_extension("authd_role"), Some(&b"editor"[..]));
        assert_eq!(
            read.context_extension("authd_permission"),
            Some(&b"articles.write"[..])
        );
        assert_eq!(read.context_extension("authd_missing"), None);
    }

    #[test]
    fn a_header_name_in_another_case_is_found_when_no_exact_one_is_sent() {
        let check = with_http(
            attribute_context::HttpRequest {
                headers: headers(&[("Authorization", "Bearer upper")]),
                ..Default::default()
            },
            &[],
        );
        assert_eq!(read(&check).authorization(), Some(&b"Bearer upper"[..]));
    }

    #[test]
    fn raw_headers_give_the_raw_value_or_the_value() {
        let raw = |raw_value: &[u8], value: &str| {
            with_http(
                attribute_context::HttpRequest {
                    header_map: Some(HeaderMap {
                        headers: vec![
                            HeaderValue {
                                key: "accept".into(),
                                raw_value: b"*/*".to_vec(),
                                ..Default::default()
                            },
                            HeaderValue {
                                key: "Authorization".into(),
                                value: value.into(),
                                raw_value: raw_value.to_vec(),
                            },
                        ],
                    }),
                    ..Default::default()
                },
                &[],
            )
        };
        assert_eq!(
            read(&raw(b"bearer xyz", "")).authorization(),
            Some(&b"bearer xyz"[..])
        );
        assert_eq!(
            read(&raw(b"", "Bearer v")).authorization(),
            Some(&b"Bearer v"[..])
        );
    }

    #[test]
    fn no_attributes_no_request_or_no_headers_give_no_credential() {
        assert_eq!(read(&CheckRequest::default()).authorization(), None);
        assert_eq!(
            read(&CheckRequest::default()).context_extension("authd_role"),
            None
        );
        let bare = with_http(Default::default(), &[]);
        assert_eq!(read(&bare).authorization(), None);
    }

    #[test]
    fn of_repeated_map_keys_on_the_wire_the_last_wins_as_in_a_map() {
        // Two entries of one key cannot come from a HashMap, so write them by hand:
        // field 10 (context_extensions) of AttributeContext, twice.
        let entry = |value: &str| {
            super::Entry {
                key: "authd_role".into(),
                value: value.to_owned().into(),
            }
            .encode_to_vec()
        };
        let mut attributes = Vec::new();
        for value in ["first", "last"] {
            let e = entry(value);
            attributes.push(0x52); // field 10, length-delimited
            attributes.push(e.len() as u8);
            attributes.extend(e);
        }
        let mut check = vec![0x0a, attributes.len() as u8]; // field 1
        check.extend(attributes);
        let read = CheckedRequest::decode(check.as_slice()).expect("decodes");
        let generated = CheckRequest::decode(check.as_slice()).expect("decodes");
        let expected = generated
            .attributes
            .map(|a| a.context_extensions["authd_role"].clone());
        assert_eq!(expected.as_deref(), Some("last"));
        assert_eq!(read.context_extension("authd_role"), Some(&b"last"[..]));
    }
}
