//! The one place where domain errors become gRPC statuses. Unexpected errors are
//! logged here, once, under a reference id that the caller also gets; the caller
//! never sees internal detail, a password, a token or a hash.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::DomainError;

impl From<DomainError> for Status {
    fn from(err: DomainError) -> Self {
        let message = err.to_string();
        match err {
            DomainError::InvalidArgument { field, reason } => Status::with_error_details(
                Code::InvalidArgument,
                message,
                ErrorDetails::with_bad_request_violation(field, reason),
            ),
            DomainError::AlreadyExists(_) => Status::already_exists(message),
            DomainError::NotFound(_) => Status::not_found(message),
            DomainError::BadCredentials
            | DomainError::InvalidToken
            | DomainError::InvalidRefreshToken
            | DomainError::Unauthenticated(_) => Status::unauthenticated(message),
            DomainError::AccountDisabled | DomainError::PermissionDenied(_) => {
                Status::permission_denied(message)
            }
            DomainError::FailedPrecondition(_) => Status::failed_precondition(message),
            DomainError::Throttled { retry_after } => Status::with_error_details(
                Code::ResourceExhausted,
                message,
                ErrorDetails::with_retry_info(Some(retry_after)),
            ),
            DomainError::Overloaded | DomainError::LimitReached(_) => {
                Status::resource_exhausted(message)
            }
            DomainError::OutOfRange(_) => Status::out_of_range(message),
            DomainError::Aborted(_) => Status::aborted(message),
            DomainError::Unavailable | DomainError::ProviderUnavailable(_) => {
                Status::unavailable(message)
            }
            DomainError::Internal(source) => {
                let reference = uuid::Uuid::new_v4().simple().to_string();
                let reference = &reference[..12];
                tracing::error!(reference, error = ?source, "internal error");
                Status::internal(format!("internal error (reference {reference})"))
            }
        }
    }
}

/// The canonical upper-case name of a status code, for logs and metrics.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
