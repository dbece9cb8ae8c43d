//! Test fixtures: a fresh database per test (a temp SQLite file, or a new
//! PostgreSQL database when `AUTHD_TEST_DATABASE_URL` is set), the real server on
//! free ports, and generated tonic clients.
#![allow(dead_code)]

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use authd::{
    config::ServeConfig,
    grpc::pb::{
        self, admin_service_client::AdminServiceClient, auth_service_client::AuthServiceClient,
    },
};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::{
    metadata::MetadataValue,
    service::{interceptor::InterceptedService, Interceptor},
    transport::Channel,
    Request, Status,
};

pub const PASSWORD: &str = "correct horse battery staple";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each named `async fn name(backend: Backend)` once on SQLite and once on
/// PostgreSQL (the latter skips itself when no test database is configured).
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Postgres).await
                }
            )*
        }
    };
}

/// A database that exists for one test and is removed after it.
pub struct TestDb {
    pub url: String,
    pub backend: Backend,
    _dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

impl TestDb {
    /// `None` (and a note on stderr) when the backend is not configured here.
    pub async fn create(backend: Backend) -> Option<TestDb> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let path: PathBuf = dir.path().join("authd.db");
                Some(TestDb {
                    url: format!("sqlite://{}?mode=rwc", path.display()),
                    backend,
                    _dir: Some(dir),
                    pg: None,
                })
            }
            Backend::Postgres => {
                let Ok(admin_url) = std::env::var("AUTHD_TEST_DATABASE_URL") else {
                    eprintln!("skipped on PostgreSQL: AUTHD_TEST_DATABASE_URL is not set");
                    return None;
                };
                let name = format!("authd_test_{}", uuid::Uuid::new_v4().simple());
                let mut conn = connect_pg(&admin_url).await;
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await
                    .expect("create database");
                let url = replace_database(&admin_url, &name);
                Some(TestDb {
                    url,
                    backend,
                    _dir: None,
                    pg: Some((admin_url, name)),
                })
            }
        }
    }

    /// A direct connection for checks that look at what was stored.
    pub async fn sql(&self) -> sqlx::AnyConnection {
        Self::sql_at(&self.url).await
    }

    pub async fn sql_at(url: &str) -> sqlx::AnyConnection {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        sqlx::AnyConnection::connect(url)
            .await
            .expect("connect to test database")
    }
}

async fn connect_pg(url: &str) -> sqlx::PgConnection {
    use sqlx::Connection;
    sqlx::PgConnection::connect(url)
        .await
        .expect("connect to AUTHD_TEST_DATABASE_URL")
}

fn replace_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let base = match base.rfind('/') {
        Some(i) if i > "postgres://".len() => &base[..i],
        _ => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin_url, name)) = self.pg.take() {
            // Drop runs outside any runtime guarantee; use a small one of our own.
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(async {
                    let mut conn = connect_pg(&admin_url).await;
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                });
            })
            .join();
        }
    }
}

/// A server running in this process on free ports.
pub struct TestServer {
    pub addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub config: ServeConfig,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

pub fn config_for(db: &TestDb) -> ServeConfig {
    let mut config = ServeConfig::from_defaults(&db.url);
    config.database.database_max_connections = 4;
    config.hashing.hash_workers = Some(2);
    config.change_poll_interval = Duration::from_millis(200);
    config.shutdown_grace = Duration::from_secs(5);
    config
}

impl TestServer {
    pub async fn start(db: &TestDb) -> TestServer {
        Self::start_with(config_for(db)).await
    }

    pub async fn start_with(config: ServeConfig) -> TestServer {
        let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind gRPC");
        let http = TcpListener::bind("127.0.0.1:0").await.expect("bind HTTP");
        let (addr, http_addr) = (
            grpc.local_addr().expect("addr"),
            http.local_addr().expect("addr"),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(authd::server::run(config.clone(), grpc, http, async {
            let _ = stopped.await;
        }));
        let server = TestServer {
            addr,
            http_addr,
            config,
            stop: Some(stop),
            task: Some(task),
        };
        server.wait_until_serving().await;
        server
    }

    async fn wait_until_serving(&self) {
        wait_until_serving(self.addr, 200, "server").await;
    }

    pub async fn channel(&self) -> Channel {
        connect(self.addr).await
    }

    pub async fn auth(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(self.channel().await)
    }

    /// An AdminService client that sends `authorization: Bearer <token>`.
    pub async fn admin(
        &self,
        token: &str,
    ) -> AdminServiceClient<InterceptedService<Channel, Bearer>> {
        AdminServiceClient::with_interceptor(
            self.channel().await,
            Bearer(format!("Bearer {token}")),
        )
    }

    /// Stops the server the way SIGTERM does and waits for it.
    pub async fn stop(mut self) {
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("server result");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[derive(Clone)]
pub struct Bearer(pub String);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let value: MetadataValue<_> = self.0.parse().map_err(|_| Status::internal("bad token"))?;
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }
}

pub async fn register(client: &mut AuthServiceClient<Channel>, username: &str) -> pb::User {
    client
        .register(pb::RegisterRequest {
            username: username.into(),
            email: format!("{username}@example.com"),
            password: PASSWORD.into(),
            full_name: String::new(),
        })
        .await
        .expect("register")
        .into_inner()
        .user
        .expect("user")
}

pub async fn login(client: &mut AuthServiceClient<Channel>, username: &str) -> pb::TokenPair {
    client
        .login(pb::LoginRequest {
            username: username.into(),
            password: PASSWORD.into(),
        })
        .await
        .expect("login")
        .into_inner()
        .tokens
        .expect("tokens")
}

pub async fn validate(
    client: &mut AuthServiceClient<Channel>,
    token: &str,
) -> Result<pb::ValidateTokenResponse, Status> {
    client
        .validate_token(pb::ValidateTokenRequest {
            token: token.into(),
        })
        .await
        .map(|r| r.into_inner())
}

/// Creates an admin with the real CLI (`authd user create --role admin`) and logs in.
pub async fn admin_token(
    db: &TestDb,
    server: &TestServer,
    username: &str,
) -> (String, pb::TokenPair) {
    let output = authd_cli(
        db,
        &[
            "user",
            "create",
            "--username",
            username,
            "--email",
            &format!("{username}@example.com"),
            "--role",
            "admin",
            "--password-stdin",
        ],
        Some(PASSWORD),
    )
    .await;
    assert!(
        output.status.success(),
        "user create failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut client = server.auth().await;
    let tokens = login(&mut client, username).await;
    let user = validate(&mut client, &tokens.access_token)
        .await
        .expect("admin token validates");
    (user.user_id, tokens)
}

/// Runs the `authd` binary against the test database.
pub async fn authd_cli(db: &TestDb, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_authd"))
        .args(args)
        .env("AUTHD_DATABASE_URL", &db.url)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn authd");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).await.expect("write stdin");
    }
    drop(input);
    child.wait_with_output().await.expect("authd output")
}

/// A free local port (bound and released at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// `authd serve` as a separate process (a second replica), killed on drop.
pub struct ServerProcess {
    pub addr: SocketAddr,
    pub child: tokio::process::Child,
}

impl ServerProcess {
    pub async fn start(db: &TestDb, extra_env: &[(&str, &str)]) -> ServerProcess {
        let (port, http_port) = (free_port(), free_port());
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_authd"));
        command
            .arg("serve")
            .env("AUTHD_DATABASE_URL", &db.url)
            .env("AUTHD_LISTEN", addr.to_string())
            .env("AUTHD_HTTP_LISTEN", format!("127.0.0.1:{http_port}"))
            .env("AUTHD_CHANGE_POLL_INTERVAL", "200ms")
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit());
        for (k, v) in extra_env {
            command.env(k, v);
        }
        let child = command.spawn().expect("spawn authd serve");
        let process = ServerProcess { addr, child };
        process.wait_until_serving().await;
        process
    }

    async fn wait_until_serving(&self) {
        wait_until_serving(self.addr, 400, "authd serve process").await;
    }

    pub async fn auth(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(connect(self.addr).await)
    }
}

/// A channel to a server that is up.
async fn connect(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect")
}

/// Polls gRPC health every 25 ms, `tries` times at most, until the server at
/// `addr` answers SERVING.
async fn wait_until_serving(addr: SocketAddr, tries: u32, what: &str) {
    for _ in 0..tries {
        if let Ok(channel) = Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
        {
            let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
            if let Ok(r) = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                })
                .await
            {
                if r.into_inner().status == 1 {
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{what} did not become SERVING");
}

/// Polls `check` every 50 ms until it returns true or `within` passes; answers
/// how long it took.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
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

/// The claims of a JWT, read without verifying it (tests look at what was issued).
pub fn token_claims(token: &str) -> serde_json::Value {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
    let payload = token.split('.').nth(1).expect("a JWT has a payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url payload"))
        .expect("JSON claims")
}
