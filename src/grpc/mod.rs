//! Transport: the gRPC services. Knows protobuf and tonic; turns requests into
//! domain calls and domain values into messages. Callers are authenticated once, at
//! the edge (`authenticate.rs`); errors become `tonic::Status` in exactly one place,
//! `status.rs`. Nothing here imports the store.

pub mod admin_service;
pub mod auth_service;
pub mod authenticate;
mod convert;
pub mod end_on_drain;
pub mod ext_authz;
pub mod message_limit;
mod methods;
pub mod metrics;
pub mod observe;
mod revocation_stream;
pub mod starting;
pub mod status;
mod unary_route;
pub mod validation_reply;

/// Generated code for `auth.v1`.
pub mod pb {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("auth.v1");
}

/// The encoded descriptors of our protos, served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("authd_descriptor");

/// The encoded descriptors of Envoy's external authorization API (`proto/vendor`),
/// served by reflection beside ours.
pub const ENVOY_EXT_AUTHZ_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("envoy_ext_authz_descriptor");

/// Request metadata (all headers together) larger than this is refused.
/// Where a call comes from, from what the listener put in its extensions: the
/// address, and the client certificate's identity under mutual TLS.
pub(crate) fn peer(extensions: &http::Extensions) -> crate::domain::caller::Peer {
    crate::domain::caller::Peer {
        addr: extensions
            .get::<tonic::transport::server::TcpConnectInfo>()
            .and_then(|info| info.remote_addr())
            .map(|addr| addr.to_string()),
        identity: extensions
            .get::<crate::listen::tls::PeerIdentity>()
            .map(|identity| identity.as_str().to_owned()),
    }
}

pub const MAX_METADATA_BYTES: u32 = 16 * 1024;

/// Requests larger than this are refused before they are buffered whole.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
