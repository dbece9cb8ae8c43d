//! The command line. Every option has a default that gives a meaningful run on the
//! 2-core reference machine; BENCHMARKS.md shows the exact lines used for the figures.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{builder::TypedValueParser as _, Parser, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "authd-bench",
    version,
    about = "Load generator for authd",
    long_about = "Load generator for authd. Starts `authd serve` on a fresh SQLite database \
                  (or the PostgreSQL database of --database-url), pinned to --server-cpus, \
                  or targets --addr; creates the users and tokens it needs through the API; \
                  drives each scenario after a warm-up and prints throughput, latency \
                  percentiles and errors by status code."
)]
pub struct Options {
    /// Scenarios to run one after another against the same server (comma-separated).
    /// Ratios (validate/health, check-role/health, login/hash) are printed when both
    /// sides ran in the same invocation.
    #[arg(
        long,
        short,
        value_enum,
        value_delimiter = ',',
        default_value = "health"
    )]
    pub scenario: Vec<Scenario>,

    /// Requests in flight at once (closed loop: one worker per request in flight). In
    /// `mixed`, the login storm's workers. Default: 64 for the hot scenarios
    /// (`health`, `validate`, `check-role`), enough to keep one server core busy; 32
    /// for the others.
    #[arg(long, short, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: Option<u32>,

    /// HTTP/2 connections; the calls are spread evenly over them. Default: 4 for
    /// the hot scenarios and `mixed`'s validate stream, 2 for the others.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub connections: Option<u32>,

    /// How long each scenario is measured (humantime: 10s, 1m).
    #[arg(long, short, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Load before the measurement starts, not counted.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// How the hot calls (`health`, `validate`, `check-role` and `mixed`'s validate
    /// stream) are sent. `h2`: request frames encoded once and sent on raw HTTP/2
    /// streams, cheap enough that one load core saturates one server core. `tonic`:
    /// the generated clients, which cost the load core about as much per call as the
    /// call costs the server (for comparison; the server cannot tell them apart).
    #[arg(long, value_enum, default_value = "h2")]
    pub client: Client,

    /// Distinct live access tokens for `validate`, `check-role` and `mixed`, created by
    /// that many logins spread over up to 20 users.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub tokens: u32,

    /// The role asked for in `check-role` (registered users hold `user`).
    #[arg(long, default_value = "user")]
    pub role: String,

    /// Define this many roles before the hot scenarios (as an admin the bench makes
    /// with `authd user create`; needs a server the bench starts), carrying
    /// --permissions among them, in chains of four; the token users hold the top of
    /// the first chain (four roles, their permissions). `check-permission` needs it.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub roles: u32,

    /// Permissions spread evenly over --roles.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub permissions: u32,

    /// Open loop: start this many calls per second whatever the latency, with at most
    /// --concurrency in flight. In `mixed`, the fixed rate of the validate stream
    /// (default 1000/s there).
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<f64>,

    /// After each closed-loop `health`, `validate` or `check-role` run, run it again
    /// open-loop at half the rate just measured, with up to 256 in flight (the issue's
    /// "p99 at half the maximum rate").
    #[arg(long)]
    pub half_rate: bool,

    /// A call that takes longer than this counts as CLIENT_TIMEOUT.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Target a running server instead of starting one (127.0.0.1 or ::1 only).
    #[arg(long, conflicts_with_all = ["database_url", "authd_bin"])]
    pub addr: Option<SocketAddr>,

    /// The database of the server it starts. Default: a fresh SQLite file in a
    /// temporary directory. A PostgreSQL database should be empty (create one for the
    /// run and drop it afterwards).
    #[arg(long)]
    pub database_url: Option<String>,

    /// The `authd` binary to start. Default: `authd` beside this binary (so
    /// `cargo build --release -p authd -p authd-bench` provides both).
    #[arg(long)]
    pub authd_bin: Option<PathBuf>,

    /// Extra environment for the server it starts, KEY=VALUE (repeatable), for
    /// example AUTHD_HASH_WORKERS=2.
    #[arg(long = "server-env", value_parser = parse_key_value)]
    pub server_env: Vec<(String, String)>,

    /// CPUs the server is pinned to (`taskset -c` list).
    #[arg(long, default_value = "0")]
    pub server_cpus: String,

    /// CPUs the load generator is pinned to. One CPU gets a single-threaded runtime;
    /// several get one worker thread each (a second generator thread, for a server on
    /// more cores than one load core can saturate).
    #[arg(long, default_value = "1")]
    pub load_cpus: String,

    /// Pin nothing.
    #[arg(long)]
    pub no_pin: bool,

    /// argon2id verifications that run at once in `hash`. Default: the server's pool
    /// size, i.e. one per server CPU when pinned, else one per core.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024).map(usize::from))]
    pub hash_workers: Option<usize>,

    /// Server starts measured by `startup` (each on the same, already migrated
    /// database).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub starts: u32,

    /// Exit non-zero when any call failed (for the CI smoke test; no timing is checked).
    #[arg(long)]
    pub fail_on_error: bool,

    /// Also print the report as one JSON document after the table.
    #[arg(long)]
    pub json: bool,
}

/// In-flight calls and connections of the hot scenarios when not given: the server's
/// per-call cost there is tens of µs, so it takes this many in flight to keep its
/// core busy between the replies.
pub const HOT_CONCURRENCY: u32 = 64;
pub const HOT_CONNECTIONS: u32 = 4;
/// The same for the others, whose calls cost the server milliseconds.
pub const CONCURRENCY: u32 = 32;
pub const CONNECTIONS: u32 = 2;

impl Options {
    /// Calls in flight for `scenario`: --concurrency, or its default.
    pub fn concurrency_for(&self, scenario: Scenario) -> u32 {
        self.concurrency.unwrap_or(if scenario.is_hot() {
            HOT_CONCURRENCY
        } else {
            CONCURRENCY
        })
    }

    /// HTTP/2 connections for the raw generator of the hot calls.
    pub fn hot_connections(&self) -> u32 {
        self.connections.unwrap_or(HOT_CONNECTIONS)
    }

    /// HTTP/2 connections for the tonic clients (set-up and the slow scenarios).
    pub fn tonic_connections(&self) -> u32 {
        self.connections.unwrap_or(CONNECTIONS)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Client {
    H2,
    Tonic,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, ValueEnum)]
pub enum Scenario {
    /// grpc.health.v1 Check: the trivial-RPC baseline.
    Health,
    /// ValidateToken over --tokens distinct live tokens.
    Validate,
    /// CheckRole(--role) over --tokens distinct live tokens.
    CheckRole,
    /// CheckPermission over --tokens distinct live tokens, for a permission of the
    /// deepest role the token users hold through the graph (needs --roles).
    CheckPermission,
    /// Login (a new session each time) round-robin over 20 users.
    Login,
    /// Each worker refreshes its own session, spending each new refresh token in turn.
    Refresh,
    /// Register a new account per call.
    Register,
    /// Each worker changes its own user's password back and forth with that user's
    /// access token (the server verifies the current one and hashes the new one).
    ChangePassword,
    /// Each worker spends password-reset tokens for two users of its own in turn,
    /// the next token fetched (CreatePasswordResetToken, as an admin the bench makes
    /// with `authd user create`) while the current one is spent; only when the bench
    /// starts the server.
    ResetPassword,
    /// ValidateToken at --rate while a login storm of --concurrency saturates the
    /// hashing pool; the two are reported separately.
    Mixed,
    /// argon2id verify in-process with the server's parameters and pool size: the
    /// ceiling for `login`.
    Hash,
    /// Restart the server --starts times on its migrated database: start to SERVING
    /// and idle RSS (only when it starts the server).
    Startup,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Health => "health",
            Scenario::Validate => "validate",
            Scenario::CheckRole => "check-role",
            Scenario::CheckPermission => "check-permission",
            Scenario::Login => "login",
            Scenario::Refresh => "refresh",
            Scenario::Register => "register",
            Scenario::ChangePassword => "change-password",
            Scenario::ResetPassword => "reset-password",
            Scenario::Mixed => "mixed",
            Scenario::Hash => "hash",
            Scenario::Startup => "startup",
        }
    }

    /// Needs the pool of access tokens made at setup.
    pub fn needs_tokens(self) -> bool {
        matches!(
            self,
            Scenario::Validate | Scenario::CheckRole | Scenario::CheckPermission | Scenario::Mixed
        )
    }

    /// Driven by the raw HTTP/2 generator: calls that cost the server tens of µs,
    /// where a tonic client would cost the load core as much as the call costs the
    /// server. (`mixed` is not: its validate stream is, its login storm is not.)
    pub fn is_hot(self) -> bool {
        matches!(
            self,
            Scenario::Health | Scenario::Validate | Scenario::CheckRole | Scenario::CheckPermission
        )
    }

    /// Talks to the server at all.
    pub fn needs_server(self) -> bool {
        self != Scenario::Hash
    }
}

fn parse_duration(value: &str) -> Result<Duration, String> {
    let duration =
        humantime::parse_duration(value).map_err(|e| format!("{e} (examples: 500ms, 10s, 1m)"))?;
    // Longer would overflow the schedule's instants; no benchmark needs a week.
    if duration > Duration::from_secs(7 * 86_400) {
        return Err("at most 7 days".into());
    }
    Ok(duration)
}

/// Calls per second for an open loop: a finite rate the pacer can keep.
fn parse_rate(value: &str) -> Result<f64, String> {
    let rate: f64 = value.parse().map_err(|e| format!("{e}"))?;
    if rate.is_finite() && (0.001..=1_000_000.0).contains(&rate) {
        Ok(rate)
    } else {
        Err("from 0.001 to 1000000 calls per second".into())
    }
}

fn parse_key_value(value: &str) -> Result<(String, String), String> {
    value
        .split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| "expected KEY=VALUE".to_owned())
}
