//! `authd-client`: check authd's access tokens in your own process.
//!
//! A [`Verifier`] verifies access tokens locally (EdDSA, against authd's JWK Set,
//! fetched and refreshed) and follows authd's revocation stream
//! (`WatchRevocations`), so a logout, a deactivation or a role change reaches it
//! within a second without a call per request. Whatever it cannot decide for sure
//! it asks authd (`ValidateToken`): an API key, a token signed by a key it does
//! not know, a token issued before it started following the stream, a token whose
//! user's roles (or a held role's definition) changed since it was issued, the
//! permissions of a token (which carries roles only; asked once per token, see
//! [`Verifier::verify_with_permissions`]), and every token while the stream has
//! been down longer than [`VerifierBuilder::max_stream_outage`]. Decisions are
//! cached, so a token seen before costs a hash lookup.
//!
//! [`AuthLayer`] puts a verifier in front of a tonic or axum service (any tower
//! service over `http`), with a role or a permission a caller must hold; handlers
//! read the [`Identity`] from the request's extensions.
//!
//! ```no_run
//! # async fn run() -> Result<(), authd_client::ConnectError> {
//! use authd_client::{AuthLayer, Verifier};
//!
//! let verifier = Verifier::builder("http://127.0.0.1:50051")
//!     .jwks_url("http://127.0.0.1:9090/.well-known/jwks.json")
//!     .connect()
//!     .await?;
//! let editors_only = AuthLayer::new(verifier.clone()).require_role("editor");
//! let refunders = AuthLayer::new(verifier.clone()).require_permission("billing.refund");
//! # let _ = (editors_only, refunders);
//! # Ok(()) }
//! ```
//!
//! The crate depends on authd's proto files only (compiled by its `build.rs`), not
//! on the server.

mod cache;
mod error;
mod identity;
mod keys;
mod layer;
mod revocations;
mod state;
mod stream;
mod verifier;

pub use error::{ConnectError, Refusal};
pub use identity::{Credential, Decided, Identity};
pub use layer::{AuthLayer, AuthService};
pub use verifier::{Verifier, VerifierBuilder};

/// The generated `auth.v1` client types (AuthService, AdminService, messages).
pub mod pb {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("auth.v1");
}
