//! sea-orm entities, one per table. Times are Unix milliseconds (UTC) so that
//! comparisons behave the same on SQLite and PostgreSQL; ids are UUID strings.

pub mod account_token;
pub mod api_key;
pub mod audit_event;
pub mod change;
pub mod identity_link;
pub mod login_failure;
pub mod mfa_challenge;
pub mod recovery_code;
pub mod refresh_token;
pub mod role;
pub mod role_include;
pub mod role_permission;
pub mod session;
pub mod signing_key;
pub mod totp_credential;
pub mod user;
pub mod user_role;
