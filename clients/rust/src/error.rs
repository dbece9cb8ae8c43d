//! Why a token was not accepted, and why a verifier could not start.

/// A token that was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No `authorization: Bearer` credentials (the layer's refusal).
    #[error("no bearer credentials")]
    Missing,
    /// Not a valid token or key now: malformed, badly signed, expired, revoked,
    /// or its user deactivated or erased.
    #[error("the token is invalid, expired or revoked")]
    Invalid,
    /// The token needed authd's answer and authd could not give one.
    #[error("authd could not be asked: {0}")]
    Unavailable(String),
}

/// A verifier that could not start.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("authd address {0:?} is not a valid URI")]
    BadAddress(String),
    #[error("the JWK Set could not be fetched: {0}")]
    Jwks(String),
}
