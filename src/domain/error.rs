//! What can go wrong for a caller of the domain, independent of the transport.

use std::time::Duration;

use crate::store::StoreError;

/// A domain failure. Each variant maps to one gRPC status in `grpc::status`.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// A field is missing or malformed; `field` is the request field's name.
    #[error("{field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    NotFound(String),
    /// Wrong password or unknown user: one message for both.
    #[error("invalid username or password")]
    BadCredentials,
    /// The correct password of a deactivated account.
    #[error("this account is deactivated")]
    AccountDisabled,
    /// An access token or API key that does not verify, for whatever reason.
    #[error("the token is invalid, expired or revoked")]
    InvalidToken,
    #[error("the refresh token is invalid, expired, already used or its session has ended")]
    InvalidRefreshToken,
    /// AdminService without credentials.
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("too many failed logins for this username; try again in {} s", retry_after.as_secs().max(1))]
    Throttled { retry_after: Duration },
    #[error("the password hashing queue is full; retry shortly")]
    Overloaded,
    #[error("the database is unavailable; retry shortly")]
    Unavailable,
    /// A service authd depends on for this call did not answer (an identity
    /// provider's keys); the message says which, never a secret.
    #[error("{0}")]
    ProviderUnavailable(String),
    /// A bound on what one replica serves was reached (the message names it).
    #[error("{0}")]
    LimitReached(String),
    /// A position outside what can be served, such as a pruned cursor.
    #[error("{0}")]
    OutOfRange(String),
    /// A long-lived call was ended; the message says how to go on.
    #[error("{0}")]
    Aborted(String),
    /// Anything unexpected; logged with a reference id, never shown in detail.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl DomainError {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        DomainError::InvalidArgument {
            field,
            reason: reason.into(),
        }
    }

    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        DomainError::Internal(err.into())
    }
}

impl From<StoreError> for DomainError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(e) => {
                tracing::warn!(error = %e, "database unavailable");
                DomainError::Unavailable
            }
            other => DomainError::Internal(other.into()),
        }
    }
}

pub type DomainResult<T> = Result<T, DomainError>;
