//! The integration tests: the real server in this process (or as a second `authd`
//! process where a test needs one) on a fresh database per test, called through its
//! gRPC and HTTP APIs and its command line.
//!
//! One test binary, so that a change to the crate relinks one executable instead of
//! one per file. The fixture is in `helpers`. Login timing has a binary of its own
//! (`tests/timing.rs`): it must not share the machine with other tests' hashing.
//!
//! Tests are named `<file>::<behaviour>::{sqlite,postgres}`; to run a part:
//!
//! ```sh
//! cargo test --test api admin::                  # one file's tests
//! cargo test --test api -- examples:: python_client::
//! AUTHD_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!     cargo test --test api -- ::postgres        # PostgreSQL only
//! ```

#[macro_use]
mod helpers;

mod accounts;
mod admin;
mod api_keys;
mod audit_trail;
mod cli;
mod client_permissions;
mod connections;
mod cookbook;
mod examples;
mod ext_authz;
mod limits;
mod metrics;
mod normalisation;
mod oidc;
mod operating;
mod outage;
mod password_change;
mod password_reset;
mod production;
mod python_client;
mod python_package;
mod reflection;
mod retention;
mod revocation;
mod revocation_stream;
mod roles;
mod secret_logs;
mod secrets_at_rest;
mod sessions;
mod storage_faults;
mod throttling;
mod tls;
mod tokens;
mod totp;
mod traces;
mod user_admin;
mod verifier;
