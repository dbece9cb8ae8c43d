//! authd: authentication and authorization for backend services, over gRPC.
//!
//! - [`config`]: the command line and `AUTHD_*` settings;
//! - [`server`]: wiring and serving; [`grpc`] and [`http`]: the transports;
//!   [`listen`]: accepting connections on both, within bounds;
//! - [`domain`]: accounts, passwords, tokens, sessions, roles and the hot path;
//! - [`store`]: the database; [`telemetry`]: logs; [`clock`]: the one clock.

pub mod cli;
pub mod clock;
pub mod config;
pub mod domain;
pub mod grpc;
pub mod http;
pub mod listen;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod traces;
pub mod usage_error;
