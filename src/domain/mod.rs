//! The domain: accounts, passwords, tokens and keys, sessions, roles, throttling and
//! the memory views of the hot path. Knows neither protobuf nor tonic; talks to the
//! database only through `store`.

pub mod accounts;
pub mod admin;
pub mod api_keys;
pub mod audit;
pub mod error;
pub mod feed;
pub mod keys;
pub mod paging;
pub mod passwords;
pub mod roles;
pub mod secrets;
pub mod service;
pub mod sessions;
pub mod tokens;
pub mod validate;
pub mod validation;
pub mod views;

pub use error::{DomainError, DomainResult};
pub use service::{Auth, AuthSettings};

/// Wall-clock time as Unix milliseconds, the unit of every stored time.
pub fn unix_now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
