//! The server under test: in this process on free ports ([`TestServer`], what a
//! [`TestApp`](super::TestApp) runs), or as a separate `authd serve` process
//! ([`ServerProcess`], a second replica or a process to signal).

use std::{net::SocketAddr, time::Duration};

use authd::{clock::Clock, config::ServeConfig};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;

use super::{AuthClient, TestDb};

/// The settings every test server starts from: small pools, two hash workers, a
/// quick change feed and a short shutdown grace.
pub fn config_for(db: &TestDb) -> ServeConfig {
    let mut config = ServeConfig::from_defaults(&db.url);
    config.database.database_max_connections = 4;
    config.hashing.hash_workers = Some(2);
    config.change_poll_interval = Duration::from_millis(200);
    config.shutdown_grace = Duration::from_secs(5);
    config
}

/// `authd::server::run_with_clock` in this process on free ports; told to stop on
/// drop.
pub struct TestServer {
    pub addr: SocketAddr,
    pub http_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// Starts the server on `clock` and waits until it answers SERVING (on its
    /// plaintext health listener when it has one: the gRPC port may speak TLS).
    pub async fn start(config: ServeConfig, clock: Clock) -> TestServer {
        let ready = config.health_listen;
        let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind gRPC");
        let http = TcpListener::bind("127.0.0.1:0").await.expect("bind HTTP");
        let (addr, http_addr) = (
            grpc.local_addr().expect("addr"),
            http.local_addr().expect("addr"),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(authd::server::run_with_clock(
            config,
            clock,
            grpc,
            http,
            async {
                let _ = stopped.await;
            },
        ));
        let server = TestServer {
            addr,
            http_addr,
            stop: Some(stop),
            task: Some(task),
        };
        wait_until_serving(ready.unwrap_or(server.addr), 200, "server").await;
        server
    }

    /// Stops the server the way SIGTERM does and waits for it to end cleanly.
    pub async fn stop(mut self) {
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
    /// Its HTTP listener (JWKS, metrics of this process alone).
    pub http_addr: SocketAddr,
    pub child: tokio::process::Child,
}

impl ServerProcess {
    /// Starts `authd serve` on `db` with `extra_env` and waits until it answers
    /// SERVING.
    pub async fn start(db: &TestDb, extra_env: &[(&str, &str)]) -> ServerProcess {
        let (port, http_port) = (free_port(), free_port());
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let http_addr: SocketAddr = format!("127.0.0.1:{http_port}").parse().expect("addr");
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_authd"));
        command
            .arg("serve")
            .env("AUTHD_DATABASE_URL", &db.url)
            .env("AUTHD_LISTEN", addr.to_string())
            .env("AUTHD_HTTP_LISTEN", http_addr.to_string())
            .env("AUTHD_CHANGE_POLL_INTERVAL", "200ms")
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit());
        for (k, v) in extra_env {
            command.env(k, v);
        }
        let child = command.spawn().expect("spawn authd serve");
        let process = ServerProcess {
            addr,
            http_addr,
            child,
        };
        wait_until_serving(process.addr, 400, "authd serve process").await;
        process
    }

    /// An AuthService client on a connection of its own.
    pub async fn client(&self) -> AuthClient {
        AuthClient::new(connect(self.addr).await)
    }
}

/// A channel to a server that is up.
pub async fn connect(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect")
}

/// Polls gRPC health every 25 ms, `tries` times at most, until the server at
/// `addr` answers SERVING (plaintext).
pub async fn wait_until_serving(addr: SocketAddr, tries: u32, what: &str) {
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
