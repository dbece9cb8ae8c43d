//! Configuration: the command line, with every setting also read from its
//! `AUTHD_*` environment variable. Defaults live here and nowhere else; a value that
//! does not parse stops the program with one line naming the setting.

use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

pub use crate::telemetry::LogFormat;
use crate::{
    domain::{
        hot::{HotSettings, WatchSettings},
        oidc::{providers, ProviderSettings},
        passwords::HashSettings,
        retention::RetentionSettings,
        sealing::KeyEncryptionKey,
        AuthSettings,
    },
    listen::{tls::TlsFiles, ConnectionLimits},
    store::DatabaseSettings,
};

#[derive(Debug, Parser)]
#[command(
    name = "authd",
    version,
    about = "Authentication and authorization over gRPC"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log format.
    #[arg(long, env = "AUTHD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC server (applies pending migrations first).
    Serve(Box<ServeConfig>),
    /// Apply pending migrations and exit.
    Migrate(DatabaseArgs),
    /// Manage users directly in the database.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Manage API keys for service-to-service calls.
    Apikey {
        #[command(subcommand)]
        command: ApiKeyCommand,
    },
    /// Check a running server's health over gRPC; exits 0 when SERVING.
    Health(HealthArgs),
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user (the way to make the first admin). Reads the password from stdin.
    Create(UserCreateArgs),
    /// Set a user's password (recovering a lost admin, say) and end every session
    /// of the user. Reads the password from stdin. Works whether the server runs
    /// or not: running replicas refuse the ended sessions within seconds.
    SetPassword(UserSetPasswordArgs),
    /// List every user: id, username, email, active, roles.
    List(UserListArgs),
    /// Deactivate a user, ending every session (not the last active admin).
    Deactivate(UserNameArgs),
    /// Reactivate a user.
    Activate(UserNameArgs),
}

#[derive(Debug, Args)]
pub struct UserSetPasswordArgs {
    /// The user's username (any case).
    #[arg(long)]
    pub username: String,
    /// Read the password from standard input (required: passwords never go in argv).
    #[arg(long, required = true)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub hashing: HashArgs,
}

#[derive(Debug, Args)]
pub struct UserListArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, Args)]
pub struct UserNameArgs {
    /// The user's username (any case).
    #[arg(long)]
    pub username: String,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make a new signing key the active one. Earlier keys keep verifying (and stay
    /// published) until the tokens they signed expire.
    Rotate(KeysRotateArgs),
    /// Withdraw a key that no longer signs (a stolen one, say): every replica refuses
    /// its tokens within seconds, it leaves the JWK Set and its private half is
    /// erased. The key that signs now cannot be revoked: rotate first.
    Revoke(KeysRevokeArgs),
    /// Re-encrypt every private signing key under a new key encryption key, in one
    /// transaction. The current key comes from AUTHD_KEY_ENCRYPTION_KEY(_FILE) (unset:
    /// the keys are in the clear); afterwards only the new one opens them.
    Rewrap(KeysRewrapArgs),
}

#[derive(Debug, Args)]
pub struct KeysRewrapArgs {
    /// The new key encryption key: a file holding 32 random bytes in base64
    /// (`openssl rand -base64 32`).
    #[arg(long, value_name = "FILE")]
    pub new_key_file: PathBuf,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, Args)]
pub struct KeysRevokeArgs {
    /// The key's id (`kid` in token headers and in the JWK Set). A kid may start
    /// with `-` (it is base64url), so it is never taken for a flag.
    #[arg(allow_hyphen_values = true)]
    pub kid: String,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, Args)]
pub struct KeysRotateArgs {
    /// Publish the new key at once but sign with it only after this long (humantime:
    /// 10m, 1h), so that services caching the JWKS fetch it before they meet a token
    /// it signed. The current key signs until then. Default: sign with it at once.
    #[arg(long, value_parser = parse_duration)]
    pub activate_in: Option<Duration>,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create an API key and print its secret (shown only this once) on stdout.
    Create(ApiKeyCreateArgs),
}

#[derive(Debug, Args)]
pub struct ApiKeyCreateArgs {
    /// 1 to 64 printable characters, unique among live keys.
    #[arg(long)]
    pub name: String,
    /// A role to grant the key; repeat for several.
    #[arg(long = "role")]
    pub roles: Vec<String>,
    /// How long the key lives (humantime: 90d, 12h). Default: no expiry.
    #[arg(long, value_parser = parse_duration)]
    pub ttl: Option<Duration>,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, Args)]
pub struct UserCreateArgs {
    #[arg(long)]
    pub username: String,
    #[arg(long)]
    pub email: String,
    #[arg(long, default_value = "")]
    pub full_name: String,
    /// A role to grant; repeat for several. Default: user.
    #[arg(long = "role")]
    pub roles: Vec<String>,
    /// Read the password from standard input (required: passwords never go in argv).
    #[arg(long, required = true)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub hashing: HashArgs,
}

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// The gRPC address to check: by default the one `serve` listens on (an
    /// unspecified address such as 0.0.0.0 means this machine).
    #[arg(long, env = "AUTHD_LISTEN", default_value = "127.0.0.1:50051")]
    pub addr: String,
    /// The service name to check ("" for readiness, "liveness" for liveness).
    #[arg(long, default_value = "")]
    pub service: String,
    /// Connect over TLS, trusting the CAs in this PEM file.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// A client certificate (PEM) for mutual TLS; needs --tls-key and --tls-ca.
    #[arg(long, value_name = "FILE", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The name the server's certificate must carry. Default: the host of --addr.
    #[arg(long, value_name = "NAME", requires = "tls_ca")]
    pub tls_server_name: Option<String>,
}

/// TLS on the listeners (see `listen::tls`).
#[derive(Clone, Debug, Default, Args)]
pub struct TlsArgs {
    /// PEM certificate chain (the server's first). With --tls-key, the gRPC and
    /// HTTP listeners serve TLS only (1.2 and 1.3). Re-read when it changes and on
    /// SIGHUP.
    #[arg(long, env = "AUTHD_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "AUTHD_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA bundle: the gRPC listener then requires a client certificate that
    /// chains to it (mutual TLS).
    #[arg(long, env = "AUTHD_TLS_CLIENT_CA", value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,
}

impl TlsArgs {
    /// The files to serve TLS from, if TLS is on; settings that do not go together
    /// are an error of one line naming them.
    pub fn files(&self) -> anyhow::Result<Option<TlsFiles>> {
        match (&self.tls_cert, &self.tls_key, &self.tls_client_ca) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), client_ca) => Ok(Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: client_ca.clone(),
            })),
            (None, None, Some(_)) => Err(anyhow::anyhow!(
                "AUTHD_TLS_CLIENT_CA needs AUTHD_TLS_CERT and AUTHD_TLS_KEY: mutual TLS is TLS"
            )),
            (Some(_), None, _) => Err(anyhow::anyhow!(
                "AUTHD_TLS_CERT is set without AUTHD_TLS_KEY: set both AUTHD_TLS_CERT and AUTHD_TLS_KEY, or neither"
            )),
            (None, Some(_), _) => Err(anyhow::anyhow!(
                "AUTHD_TLS_KEY is set without AUTHD_TLS_CERT: set both AUTHD_TLS_CERT and AUTHD_TLS_KEY, or neither"
            )),
        }
    }
}

#[derive(Clone, Debug, Args)]
pub struct DatabaseArgs {
    /// sqlite://… or postgres://…
    #[arg(
        long,
        env = "AUTHD_DATABASE_URL",
        default_value = "sqlite://authd.db?mode=rwc",
        hide_env_values = true
    )]
    pub database_url: String,

    /// Database connections in the pool.
    #[arg(long, env = "AUTHD_DATABASE_MAX_CONNECTIONS", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub database_max_connections: u32,

    /// How long a query waits for a connection before the database counts as down.
    #[arg(long, env = "AUTHD_DATABASE_TIMEOUT", default_value = "3s", value_parser = parse_duration)]
    pub database_timeout: Duration,

    #[command(flatten)]
    pub key_encryption: KeyEncryptionArgs,
}

/// The key that seals private signing keys (and TOTP secrets) in the database.
/// Every command that opens the database takes it, so that every one that reads
/// or writes keys honours it.
#[derive(Clone, Debug, Default, Args)]
pub struct KeyEncryptionArgs {
    /// 32 random bytes in base64 (`openssl rand -base64 32`). Private signing keys
    /// are stored encrypted with it; keys in the clear are encrypted at start.
    /// Prefer the variable or the file to the flag, which others can see in `ps`.
    #[arg(
        long,
        env = "AUTHD_KEY_ENCRYPTION_KEY",
        hide_env_values = true,
        value_name = "BASE64"
    )]
    pub key_encryption_key: Option<SecretSetting>,

    /// A file holding the key encryption key (the same text; a trailing newline is
    /// fine).
    #[arg(long, env = "AUTHD_KEY_ENCRYPTION_KEY_FILE", value_name = "FILE")]
    pub key_encryption_key_file: Option<PathBuf>,
}

impl KeyEncryptionArgs {
    /// The key, if one is set. A bad one is an error of one line naming its
    /// setting, never showing the value.
    pub fn load(&self) -> anyhow::Result<Option<KeyEncryptionKey>> {
        match (&self.key_encryption_key, &self.key_encryption_key_file) {
            (None, None) => Ok(None),
            (Some(_), Some(_)) => Err(anyhow::anyhow!(
                "AUTHD_KEY_ENCRYPTION_KEY and AUTHD_KEY_ENCRYPTION_KEY_FILE are both set; set one"
            )),
            (Some(text), None) => KeyEncryptionKey::from_base64(text.expose())
                .map(Some)
                .context("AUTHD_KEY_ENCRYPTION_KEY"),
            (None, Some(path)) => read_key_file(path)
                .map(Some)
                .with_context(|| format!("AUTHD_KEY_ENCRYPTION_KEY_FILE ({})", path.display())),
        }
    }
}

/// A key encryption key from a file of its base64 text.
pub fn read_key_file(path: &std::path::Path) -> anyhow::Result<KeyEncryptionKey> {
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).context("cannot read")?);
    Ok(KeyEncryptionKey::from_base64(&text)?)
}

/// A setting whose value must not reach a log line or an error: `Debug` redacts it.
#[derive(Clone)]
pub struct SecretSetting(zeroize::Zeroizing<String>);

impl SecretSetting {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for SecretSetting {
    fn from(value: String) -> Self {
        SecretSetting(zeroize::Zeroizing::new(value))
    }
}

impl fmt::Debug for SecretSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl DatabaseArgs {
    pub fn settings(&self) -> DatabaseSettings {
        DatabaseSettings {
            url: self.database_url.clone(),
            max_connections: self.database_max_connections,
            connect_timeout: self.database_timeout,
        }
    }
}

#[derive(Clone, Debug, Args)]
pub struct HashArgs {
    /// argon2id memory cost in KiB (at least 19456).
    #[arg(long, env = "AUTHD_ARGON2_MEMORY_KIB", default_value_t = 19_456, value_parser = clap::value_parser!(u32).range(19_456..=4_194_304))]
    pub argon2_memory_kib: u32,

    /// argon2id iterations (at least 2).
    #[arg(long, env = "AUTHD_ARGON2_ITERATIONS", default_value_t = 2, value_parser = clap::value_parser!(u32).range(2..=100))]
    pub argon2_iterations: u32,

    /// argon2id lanes (at least 1).
    #[arg(long, env = "AUTHD_ARGON2_PARALLELISM", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub argon2_parallelism: u32,

    /// Password hashes that may run at once. Default: one per core.
    #[arg(long, env = "AUTHD_HASH_WORKERS")]
    pub hash_workers: Option<usize>,

    /// Password hashes that may wait for the hashing pool; past it Login and
    /// Register answer RESOURCE_EXHAUSTED at once.
    #[arg(long, env = "AUTHD_HASH_QUEUE", default_value_t = 1024)]
    pub hash_queue: usize,
}

impl HashArgs {
    pub fn settings(&self) -> HashSettings {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        HashSettings {
            memory_kib: self.argon2_memory_kib,
            iterations: self.argon2_iterations,
            parallelism: self.argon2_parallelism,
            workers: self.hash_workers.unwrap_or(cores).max(1),
            queue: self.hash_queue,
        }
    }
}

/// Everything `authd serve` needs.
#[derive(Clone, Debug, Args)]
pub struct ServeConfig {
    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    pub hashing: HashArgs,

    /// gRPC address.
    #[arg(long, env = "AUTHD_LISTEN", default_value = "0.0.0.0:50051")]
    pub listen: SocketAddr,

    /// HTTP address for /metrics and /.well-known/jwks.json.
    #[arg(long, env = "AUTHD_HTTP_LISTEN", default_value = "0.0.0.0:9090")]
    pub http_listen: SocketAddr,

    /// A plaintext address serving only grpc.health.v1.Health (for probes that
    /// cannot speak TLS). Default: none.
    #[arg(long, env = "AUTHD_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,

    #[command(flatten)]
    pub tls: TlsArgs,

    /// `iss` of access tokens.
    #[arg(long, env = "AUTHD_ISSUER", default_value = "authd")]
    pub issuer: String,

    /// `aud` of access tokens.
    #[arg(long, env = "AUTHD_AUDIENCE", default_value = "authd")]
    pub audience: String,

    /// Lifetime of an access token (humantime: 90s, 15m, 1h).
    #[arg(long, env = "AUTHD_ACCESS_TOKEN_TTL", default_value = "15m", value_parser = parse_duration)]
    pub access_token_ttl: Duration,

    /// Lifetime of one refresh token.
    #[arg(long, env = "AUTHD_REFRESH_TOKEN_TTL", default_value = "7d", value_parser = parse_duration)]
    pub refresh_token_ttl: Duration,

    /// Absolute lifetime of a session; refreshing cannot extend it.
    #[arg(long, env = "AUTHD_SESSION_MAX_TTL", default_value = "30d", value_parser = parse_duration)]
    pub session_max_ttl: Duration,

    /// Consecutive failed logins for one username before it is locked out.
    #[arg(long, env = "AUTHD_LOGIN_MAX_FAILURES", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub login_max_failures: u32,

    /// How long a username stays locked out.
    #[arg(long, env = "AUTHD_LOGIN_LOCKOUT", default_value = "5m", value_parser = parse_duration)]
    pub login_lockout: Duration,

    /// Lifetime of a password-reset token (AdminService.CreatePasswordResetToken).
    #[arg(long, env = "AUTHD_PASSWORD_RESET_TTL", default_value = "30m", value_parser = parse_duration)]
    pub password_reset_ttl: Duration,

    /// Lifetime of an email-verification token (CreateEmailVerificationToken).
    #[arg(long, env = "AUTHD_EMAIL_VERIFICATION_TTL", default_value = "7d", value_parser = parse_duration)]
    pub email_verification_ttl: Duration,

    /// How long ValidateToken/CheckRole may answer from memory while the database is
    /// unreachable; after that they answer UNAVAILABLE.
    #[arg(long, env = "AUTHD_MAX_STALENESS", default_value = "30s", value_parser = parse_duration)]
    pub max_staleness: Duration,

    /// How often each replica polls the change feed (revocations and role changes
    /// made on other replicas take at most about this long to arrive).
    #[arg(long, env = "AUTHD_CHANGE_POLL_INTERVAL", default_value = "250ms", value_parser = parse_duration)]
    pub change_poll_interval: Duration,

    /// How long audit rows are kept before they are deleted.
    #[arg(long, env = "AUTHD_AUDIT_RETENTION", default_value = "90d", value_parser = parse_duration)]
    pub audit_retention: Duration,

    /// How often rows that can no longer matter (ended sessions, spent refresh
    /// tokens, old changes, stale login failures, old audit rows) are deleted, in
    /// small batches, by one replica at a time.
    #[arg(long, env = "AUTHD_PRUNE_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub prune_interval: Duration,

    /// Verified access tokens kept in memory.
    #[arg(long, env = "AUTHD_TOKEN_CACHE_CAPACITY", default_value_t = 100_000)]
    pub token_cache_capacity: u64,

    /// Where to export traces, over OTLP/gRPC (e.g. `http://127.0.0.1:4317`). Unset:
    /// no traces are made or exported.
    #[arg(long, env = "AUTHD_OTLP_ENDPOINT", value_parser = parse_otlp_endpoint)]
    pub otlp_endpoint: Option<String>,

    /// How long the second step of a login (VerifyMfa) may wait for its code.
    #[arg(long, env = "AUTHD_MFA_TOKEN_TTL", default_value = "5m", value_parser = parse_duration)]
    pub mfa_token_ttl: Duration,

    /// A JSON file listing the OpenID Connect providers whose ID tokens
    /// LoginWithIdToken exchanges for sessions: `[{"name", "issuer", "audiences":
    /// [...], "jwks_uri" (optional), "create_users" (bool)}]`. Read at start; a bad
    /// file stops it. Default: none (LoginWithIdToken knows no provider).
    #[arg(long, env = "AUTHD_OIDC_PROVIDERS_FILE", value_name = "FILE")]
    pub oidc_providers_file: Option<PathBuf>,

    /// How long `serve` waits at start for a PostgreSQL database that does not
    /// answer (retrying with backoff, liveness SERVING meanwhile) before it exits.
    /// `0s` gives up at the first failure.
    #[arg(long, env = "AUTHD_STARTUP_TIMEOUT", default_value = "5m", value_parser = parse_duration_or_zero)]
    pub startup_timeout: Duration,

    /// How long in-flight calls may take to finish after SIGTERM/SIGINT.
    #[arg(long, env = "AUTHD_SHUTDOWN_GRACE", default_value = "20s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// Connections served at once on each listener; those past it are closed as
    /// soon as they are accepted.
    #[arg(long, env = "AUTHD_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,

    /// A connection with no call in flight for this long is closed (HTTP/2: GOAWAY,
    /// then close). Clients reconnect when they next need to.
    #[arg(long, env = "AUTHD_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// How long a new connection may take to send the HTTP/2 preface, or an HTTP/1
    /// request its headers, before it is closed (at most 10s).
    #[arg(long, env = "AUTHD_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_header_timeout)]
    pub header_timeout: Duration,

    /// Calls one gRPC connection may have in flight (SETTINGS_MAX_CONCURRENT_STREAMS,
    /// 1 to 10000); a client wanting more opens another connection or waits.
    //
    // 1,024 by default: more than one client multiplexes on a connection (the
    // bench's login storm runs 500 per connection), and a bound on what one
    // connection can make the server hold. A half-sent call (headers, no end) costs
    // about 9 KiB (stream state, headers, the handler waiting for its message): 4
    // connections at 1,024 each added 37 MiB, where 10,000 each added 364 MiB.
    #[arg(long, env = "AUTHD_MAX_CONCURRENT_STREAMS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_concurrent_streams: u32,

    /// WatchRevocations streams one replica serves at once (1 to 100000); one more
    /// is answered RESOURCE_EXHAUSTED. They share one change-feed reader.
    #[arg(long, env = "AUTHD_MAX_REVOCATION_WATCHERS", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_revocation_watchers: u32,

    /// Changes a revocation watcher may fall behind the feed (16 to 1000000) before
    /// it is dropped with ABORTED, to resume from its cursor; one ring of this many
    /// is shared by all watchers.
    #[arg(long, env = "AUTHD_REVOCATION_WATCH_BUFFER", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(16..=1_000_000))]
    pub revocation_watch_buffer: u32,
}

impl ServeConfig {
    /// Settings that are each valid but contradict each other; the message is one
    /// line naming both.
    pub fn check(&self) -> Result<(), String> {
        let show = |d: Duration| humantime::format_duration(d).to_string();
        if self.session_max_ttl < self.access_token_ttl {
            return Err(format!(
                "AUTHD_SESSION_MAX_TTL ({}) is shorter than AUTHD_ACCESS_TOKEN_TTL ({}): \
                 a session would end before its first access token",
                show(self.session_max_ttl),
                show(self.access_token_ttl)
            ));
        }
        if self.change_poll_interval >= self.max_staleness {
            return Err(format!(
                "AUTHD_CHANGE_POLL_INTERVAL ({}) must be shorter than AUTHD_MAX_STALENESS ({}): \
                 the views would go stale between two polls",
                show(self.change_poll_interval),
                show(self.max_staleness)
            ));
        }
        Ok(())
    }

    /// The identity providers of `AUTHD_OIDC_PROVIDERS_FILE` (none when unset). A
    /// file that cannot be read or is not valid is an error of one line naming the
    /// setting, the provider and the field.
    pub fn oidc_providers(&self) -> anyhow::Result<Vec<ProviderSettings>> {
        let Some(path) = &self.oidc_providers_file else {
            return Ok(Vec::new());
        };
        let setting = || format!("AUTHD_OIDC_PROVIDERS_FILE ({})", path.display());
        let text = std::fs::read_to_string(path).with_context(setting)?;
        providers::parse(&text).map_err(|problem| anyhow::anyhow!("{}: {problem}", setting()))
    }

    pub fn auth_settings(&self) -> AuthSettings {
        AuthSettings {
            access_ttl: self.access_token_ttl,
            refresh_ttl: self.refresh_token_ttl,
            session_max_ttl: self.session_max_ttl,
            login_max_failures: self.login_max_failures,
            login_lockout: self.login_lockout,
            password_reset_ttl: self.password_reset_ttl,
            email_verification_ttl: self.email_verification_ttl,
            mfa_token_ttl: self.mfa_token_ttl,
            issuer: self.issuer.clone(),
            key_encryption: None,
        }
    }

    /// The hot path's settings, with the key encryption key already loaded.
    pub fn hot_settings(&self, key_encryption: Option<KeyEncryptionKey>) -> HotSettings {
        HotSettings {
            key_encryption,
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            access_ttl: self.access_token_ttl,
            max_staleness: self.max_staleness,
            token_cache_capacity: self.token_cache_capacity,
            watch: WatchSettings {
                max_watchers: self.max_revocation_watchers as usize,
                buffer: self.revocation_watch_buffer as usize,
            },
        }
    }

    pub fn connection_limits(&self) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: self.max_connections,
            idle_timeout: self.idle_timeout,
            header_timeout: self.header_timeout,
        }
    }

    pub fn retention_settings(&self) -> RetentionSettings {
        RetentionSettings {
            every: self.prune_interval,
            audit_retention: self.audit_retention,
            access_ttl: self.access_token_ttl,
            refresh_ttl: self.refresh_token_ttl,
            login_lockout: self.login_lockout,
        }
    }

    /// The defaults, as if no flag were given (`AUTHD_*` variables still apply;
    /// tests start from here). A bad variable ends the process with clap's message.
    pub fn from_defaults(database_url: &str) -> Self {
        Self::try_from_defaults(database_url).unwrap_or_else(|err| err.exit())
    }

    /// As [`ServeConfig::from_defaults`], answering a bad `AUTHD_*` variable as an
    /// error, for callers that must clean up before they exit.
    pub fn try_from_defaults(database_url: &str) -> Result<Self, clap::Error> {
        let cli = Cli::try_parse_from(["authd", "serve", "--database-url", database_url])?;
        match cli.command {
            Command::Serve(config) => Ok(*config),
            _ => unreachable!("parsed a serve command"),
        }
    }
}

/// A humantime duration that is not zero.
fn parse_duration(value: &str) -> Result<Duration, String> {
    let duration =
        humantime::parse_duration(value).map_err(|e| format!("{e} (examples: 90s, 15m, 1h)"))?;
    if duration.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(duration)
}

/// An `http://` or `https://` address with a host, as OTLP/gRPC exporters take it.
fn parse_otlp_endpoint(value: &str) -> Result<String, String> {
    let uri: http::Uri = value
        .parse()
        .map_err(|e| format!("{e} (example: http://127.0.0.1:4317)"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(_)) => Ok(value.to_owned()),
        _ => Err(
            "must be an http:// or https:// address with a host (example: http://127.0.0.1:4317)"
                .into(),
        ),
    }
}

/// A duration where zero means "not at all".
fn parse_duration_or_zero(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value).map_err(|e| format!("{e} (examples: 0s, 90s, 15m)"))
}

/// The longest [`ServeConfig::header_timeout`]: API.md promises a connection that has
/// not finished the HTTP/2 preface is closed within 10 s.
const MAX_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

fn parse_header_timeout(value: &str) -> Result<Duration, String> {
    let duration = parse_duration(value)?;
    if duration > MAX_HEADER_TIMEOUT {
        return Err("must be at most 10s".into());
    }
    Ok(duration)
}
