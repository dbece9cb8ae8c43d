//! The test fixture: [`TestApp`], the real server in this process on free ports
//! over a fresh database of its own ([`TestDb`]: a temp SQLite file, or a new
//! PostgreSQL database when `AUTHD_TEST_DATABASE_URL` is set), with typed clients.
//!
//! A test is an `async fn` taking its fixture, listed in [`on_both_databases!`] (or
//! [`on_sqlite!`] / [`on_postgres!`] where only one database can show the
//! behaviour), which runs it once per database and skips PostgreSQL, with one note,
//! where no test database is configured:
//!
//! ```ignore
//! async fn logout_ends_the_session(app: TestApp) {
//!     app.register("alice").await; // the app derefs to its AuthService client
//!     let tokens = app.login("alice").await;
//!     app.logout(&tokens.refresh_token).await.expect("logout");
//!     assert!(app.validate(&tokens.access_token).await.is_err());
//!     let admin = app.admin().await; // `root`, made by the real CLI on first use
//! }
//!
//! // Settings of its own: the test takes the database and spawns the app on it.
//! async fn refresh_tokens_expire(db: TestDb) {
//!     let app = TestApp::spawn_with(db, |c| c.refresh_token_ttl = Duration::from_secs(2)).await;
//! }
//!
//! // A second replica: `authd serve` as another process on the same database.
//! async fn logout_reaches_another_replica(app: TestApp) {
//!     let replica = app.replica(&[]).await; // killed when dropped
//!     let there = replica.client().await;
//! }
//!
//! on_both_databases!(logout_ends_the_session, refresh_tokens_expire);
//! on_postgres!(logout_reaches_another_replica);
//! ```

mod clients;
mod db;
mod guarded;
pub mod oidc_provider;
mod python;
mod server;

use std::{future::Future, net::SocketAddr, ops::Deref, time::Duration};

use authd::grpc::pb;
use authd::{clock::Clock, config::ServeConfig};
use tokio::sync::OnceCell;
use tonic::{transport::Channel, Code, Status};
use tonic_types::StatusExt;

pub use clients::{AdminClient, AuthClient, Bearer, UserClient};
pub use db::TestDb;
pub use guarded::{code_of, verifier_of_app, Guarded, Shutdown};
pub use python::python_with;
pub use server::{config_for, connect, free_port, wait_until_serving, ServerProcess, TestServer};

/// The password of every account the helpers make.
pub const PASSWORD: &str = "correct horse battery staple";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each named `async fn name(fixture)` on SQLite and on PostgreSQL, as the
/// tests `name::sqlite` and `name::postgres`. The fixture is what the function
/// takes: a [`TestApp`], or a [`TestDb`] for a test that starts its own servers.
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        $( database_test!($name: sqlite, postgres); )*
    };
}

/// Like [`on_both_databases!`], on SQLite only (`name::sqlite`).
macro_rules! on_sqlite {
    ($($name:ident),* $(,)?) => {
        $( database_test!($name: sqlite); )*
    };
}

/// Like [`on_both_databases!`], on PostgreSQL only (`name::postgres`): for what
/// takes a database server, such as replicas sharing one database.
macro_rules! on_postgres {
    ($($name:ident),* $(,)?) => {
        $( database_test!($name: postgres); )*
    };
}

macro_rules! database_test {
    ($name:ident: $($backend:ident),+) => {
        mod $name {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $backend() {
                    $crate::helpers::run::$backend(super::$name).await
                }
            )+
        }
    };
}

/// What a test listed in [`on_both_databases!`] can take.
pub trait Fixture: Sized {
    /// `None` (with a note on stderr) where `backend` is not configured.
    async fn create(backend: Backend) -> Option<Self>;
}

impl Fixture for TestDb {
    async fn create(backend: Backend) -> Option<TestDb> {
        TestDb::create(backend).await
    }
}

impl Fixture for TestApp {
    async fn create(backend: Backend) -> Option<TestApp> {
        Some(TestApp::spawn(TestDb::create(backend).await?).await)
    }
}

/// A test on one database, as the macros run it.
pub mod run {
    use std::future::Future;

    use super::{Backend, Fixture};

    pub async fn sqlite<T: Fixture, F: Future<Output = ()>>(test: impl FnOnce(T) -> F) {
        on(Backend::Sqlite, test).await
    }

    pub async fn postgres<T: Fixture, F: Future<Output = ()>>(test: impl FnOnce(T) -> F) {
        on(Backend::Postgres, test).await
    }

    async fn on<T: Fixture, F: Future<Output = ()>>(backend: Backend, test: impl FnOnce(T) -> F) {
        if let Some(fixture) = T::create(backend).await {
            test(fixture).await
        }
    }
}

/// The server running in this process on free ports, over a database of its own,
/// with an AuthService client: the app derefs to its [`AuthClient`], so
/// `app.login("alice")` logs in on it. The server is dropped before the database.
pub struct TestApp {
    server: Option<TestServer>,
    client: AuthClient,
    admin: OnceCell<Admin>,
    config: ServeConfig,
    /// The server's clock: the system's, or a manual one a test moves instead of
    /// sleeping ([`TestApp::spawn_on_manual_clock`]).
    pub clock: Clock,
    pub db: TestDb,
}

/// The admin `root`, made by the CLI, with its login and an AdminService client
/// carrying its access token (the admin derefs to it).
pub struct Admin {
    pub id: String,
    pub tokens: pb::TokenPair,
    client: AdminClient,
}

impl Deref for Admin {
    type Target = AdminClient;
    fn deref(&self) -> &AdminClient {
        &self.client
    }
}

impl TestApp {
    /// The server with the test settings on `db`, up and SERVING.
    pub async fn spawn(db: TestDb) -> TestApp {
        Self::spawn_with(db, |_| {}).await
    }

    /// The same, with `configure` changing the settings first.
    pub async fn spawn_with(db: TestDb, configure: impl FnOnce(&mut ServeConfig)) -> TestApp {
        Self::spawn_on(db, Clock::system(), configure).await
    }

    /// The server on a manual clock that only `app.clock.advance(..)` moves: for
    /// tests of expiry and lockout windows, which then need not sleep. Keep each
    /// step under the staleness bound (30 s), which the same clock measures.
    pub async fn spawn_on_manual_clock(
        db: TestDb,
        configure: impl FnOnce(&mut ServeConfig),
    ) -> TestApp {
        Self::spawn_on(db, Clock::manual(), configure).await
    }

    async fn spawn_on(
        db: TestDb,
        clock: Clock,
        configure: impl FnOnce(&mut ServeConfig),
    ) -> TestApp {
        let mut config = config_for(&db);
        configure(&mut config);
        let server = TestServer::start(config.clone(), clock.clone()).await;
        let client = AuthClient::new(connect(server.addr).await);
        TestApp {
            server: Some(server),
            client,
            admin: OnceCell::new(),
            config,
            clock,
            db,
        }
    }

    /// The settings the server runs with (for what a test runs beside it on the
    /// same database, such as a pruner of its own).
    pub fn config(&self) -> &ServeConfig {
        &self.config
    }

    fn server(&self) -> &TestServer {
        self.server.as_ref().expect("the server is stopped")
    }

    /// The gRPC address.
    pub fn addr(&self) -> SocketAddr {
        self.server().addr
    }

    /// The HTTP address (metrics, JWKS).
    pub fn http_addr(&self) -> SocketAddr {
        self.server().http_addr
    }

    /// A new connection to the server.
    pub async fn channel(&self) -> Channel {
        connect(self.addr()).await
    }

    /// An AuthService client on a new connection of its own.
    pub async fn connect(&self) -> AuthClient {
        AuthClient::new(self.channel().await)
    }

    /// An AdminService client that sends `authorization: Bearer <token>`.
    pub async fn admin_as(&self, token: &str) -> AdminClient {
        AdminClient::new(self.channel().await, token)
    }

    /// A client for the self-service calls that sends `authorization: Bearer <token>`.
    pub async fn user_as(&self, token: &str) -> UserClient {
        UserClient::new(self.channel().await, token)
    }

    /// The admin `root`: created with the real CLI (`authd user create --role
    /// admin`) and logged in on first use, so tests without one skip the CLI.
    pub async fn admin(&self) -> &Admin {
        self.admin
            .get_or_init(|| async {
                self.db.create_root_admin().await;
                let tokens = self.login("root").await;
                let id = self
                    .validate(&tokens.access_token)
                    .await
                    .expect("admin token validates")
                    .user_id;
                let client = self.admin_as(&tokens.access_token).await;
                Admin { id, tokens, client }
            })
            .await
    }

    /// `authd serve` on the same database as a second process, with `extra_env`.
    pub async fn replica(&self, extra_env: &[(&str, &str)]) -> ServerProcess {
        ServerProcess::start(&self.db, extra_env).await
    }

    /// Stops the server the way SIGTERM does and waits for it to end cleanly; the
    /// database stays.
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await;
        }
    }

    /// Starts the server again (stopping it first if it runs) on the same
    /// database, with the same settings.
    pub async fn restart(&mut self) {
        self.restart_with(|_| {}).await
    }

    /// Starts the server again with `configure` changing its settings.
    pub async fn restart_with(&mut self, configure: impl FnOnce(&mut ServeConfig)) {
        self.stop().await;
        configure(&mut self.config);
        let server = TestServer::start(self.config.clone(), self.clock.clone()).await;
        self.client = AuthClient::new(connect(server.addr).await);
        self.server = Some(server);
        // The admin's token outlives the restart; its client needs the new address.
        let token = self
            .admin
            .get()
            .map(|admin| admin.tokens.access_token.clone());
        if let Some(token) = token {
            let client = self.admin_as(&token).await;
            if let Some(admin) = self.admin.get_mut() {
                admin.client = client;
            }
        }
    }
}

impl Deref for TestApp {
    type Target = AuthClient;
    fn deref(&self) -> &AuthClient {
        &self.client
    }
}

/// `Ok`, or the code of the refusal.
pub fn code<T>(result: Result<T, Status>) -> Code {
    match result {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// Polls `check` every 50 ms until it returns true or `within` passes; answers
/// how long it took.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = std::time::Instant::now();
    while started.elapsed() < within {
        if check().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// What gRPC health answers for `service` (`""` is readiness, `"liveness"`
/// liveness): 1 SERVING, 2 NOT_SERVING, or -1 when the call fails.
pub async fn health(channel: Channel, service: &str) -> i32 {
    tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.into(),
        })
        .await
        .map(|r| r.into_inner().status)
        .unwrap_or(-1)
}

/// The claims of a JWT, read without verifying it (tests look at what was issued).
pub fn token_claims(token: &str) -> serde_json::Value {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
    let payload = token.split('.').nth(1).expect("a JWT has a payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url payload"))
        .expect("JSON claims")
}

/// Asserts INVALID_ARGUMENT naming `field`, in the message and as a BadRequest.
pub fn assert_invalid(result: Result<impl std::fmt::Debug, Status>, field: &str, what: &str) {
    let status = result.expect_err(what);
    assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
    assert!(
        status.message().starts_with(&format!("{field}:")),
        "{what}: {}",
        status.message()
    );
    let violations = status
        .get_details_bad_request()
        .expect("BadRequest details")
        .field_violations;
    assert_eq!(violations.len(), 1, "{what}");
    assert_eq!(violations[0].field, field, "{what}");
}
