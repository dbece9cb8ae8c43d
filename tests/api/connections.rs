//! Connections are bounded (API.md, "Hardening against hostile load and faults"):
//! real sockets against the real server, each test bounded in time and count and
//! only against 127.0.0.1.

use std::{
    net::SocketAddr,
    pin::Pin,
    time::{Duration, Instant},
};

use crate::helpers::{eventually, free_port, ServerProcess, TestApp, TestDb};
use bytes::Bytes;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::watch,
};
use tonic::transport::Channel;

/// The flood saturates this machine's cores for a few seconds: the tests that time
/// how soon the server closes something take this shared, the flood exclusively.
static CPU: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// What a raw HTTP/2 client has learned about its connection.
#[derive(Clone, Copy, Debug)]
struct Peer {
    /// The server's SETTINGS_MAX_CONCURRENT_STREAMS once it arrived (before, the
    /// client's own initial guess).
    max_send_streams: usize,
    closed: Option<Instant>,
    /// It ended after the server's GOAWAY (cleanly, or with the GOAWAY's error),
    /// rather than by the socket closing under it.
    after_goaway: bool,
}

/// A raw HTTP/2 client (the `h2` crate), driven in the background.
struct H2 {
    send: h2::client::SendRequest<Bytes>,
    peer: watch::Receiver<Peer>,
}

impl H2 {
    async fn connect(addr: SocketAddr, initial_max_send_streams: usize) -> H2 {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.set_nodelay(true).expect("nodelay");
        let (send, mut connection) = h2::client::Builder::new()
            .initial_max_send_streams(initial_max_send_streams)
            .handshake::<_, Bytes>(tcp)
            .await
            .expect("h2 handshake");
        let (tx, peer) = watch::channel(Peer {
            max_send_streams: initial_max_send_streams,
            closed: None,
            after_goaway: false,
        });
        tokio::spawn(async move {
            let ended = std::future::poll_fn(|cx| {
                let polled = std::future::Future::poll(Pin::new(&mut connection), cx);
                let max = connection.max_concurrent_send_streams();
                tx.send_if_modified(|peer| {
                    let changed = peer.max_send_streams != max;
                    peer.max_send_streams = max;
                    changed
                });
                polled
            })
            .await;
            let after_goaway = match &ended {
                Ok(()) => true,
                Err(err) => err.is_go_away(),
            };
            tx.send_modify(|peer| {
                peer.closed = Some(Instant::now());
                peer.after_goaway = after_goaway;
            });
        });
        H2 { send, peer }
    }

    /// Opens a ValidateToken stream with its headers and no END_STREAM: a call the
    /// server must hold open, waiting for a message that never comes. `None` when
    /// the connection has no stream to spare for `within`.
    async fn half_sent_stream(
        &self,
        within: Duration,
    ) -> Option<(h2::client::ResponseFuture, h2::SendStream<Bytes>)> {
        let mut send = tokio::time::timeout(within, self.send.clone().ready())
            .await
            .ok()?
            .ok()?;
        let request = http::Request::post("/auth.v1.AuthService/ValidateToken")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .expect("request");
        send.send_request(request, false).ok()
    }

    /// A whole health check (headers, an empty message, END_STREAM), sent once the
    /// connection has a stream to spare; resolves with the response's headers.
    fn health_check_when_ready(
        &self,
    ) -> impl std::future::Future<Output = Result<http::Response<h2::RecvStream>, h2::Error>> {
        let send = self.send.clone();
        async move {
            let mut send = send.ready().await?;
            let request = http::Request::post("/grpc.health.v1.Health/Check")
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(())
                .expect("request");
            let (response, mut body) = send.send_request(request, false)?;
            body.send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), true)?;
            response.await
        }
    }

    /// Waits until the server's SETTINGS changed the client's initial guess.
    async fn settings(&mut self, within: Duration) -> usize {
        let initial = self.peer.borrow().max_send_streams;
        let _ = tokio::time::timeout(
            within,
            self.peer.wait_for(|peer| peer.max_send_streams != initial),
        )
        .await;
        self.peer.borrow().max_send_streams
    }
}

/// How long until the server closes `tcp` (a read sees the end or an error), while
/// `trickle` (if any) is sent a byte at a time every 200 ms. `None` if it is still
/// open after `within`.
async fn closed_within(tcp: &mut TcpStream, trickle: &[u8], within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut trickle = trickle.iter();
    let mut buf = [0u8; 1024];
    while started.elapsed() < within {
        if let Some(byte) = trickle.next() {
            if tcp.write_all(&[*byte]).await.is_err() {
                return Some(started.elapsed());
            }
        }
        let read = tokio::time::timeout(Duration::from_millis(200), tcp.read(&mut buf)).await;
        if let Ok(Ok(0) | Err(_)) = read {
            return Some(started.elapsed());
        }
    }
    None
}

/// A tonic channel (one connection) that has been served a health check.
async fn served_channel(addr: SocketAddr) -> Option<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .ok()?;
    health_check(&channel).await.then_some(channel)
}

async fn health_check(channel: &Channel) -> bool {
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let check = health.check(tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    });
    matches!(
        tokio::time::timeout(Duration::from_secs(2), check).await,
        Ok(Ok(_))
    )
}

/// The server on a fresh SQLite database (these tests are about sockets, not
/// storage), with `adjust` applied to its settings.
async fn server_with(adjust: impl FnOnce(&mut authd::config::ServeConfig)) -> TestApp {
    TestApp::spawn_with(TestDb::sqlite(), adjust).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_sends_the_preface_is_closed_within_the_header_timeout() {
    let _cpu = CPU.read().await;
    let server = server_with(|config| {
        config.header_timeout = Duration::from_secs(1);
    })
    .await;
    let mut silent = TcpStream::connect(server.addr()).await.expect("connect");
    let mut half = TcpStream::connect(server.addr()).await.expect("connect");
    // The magic alone, without the SETTINGS frame that must follow it.
    half.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .expect("write");
    let (silent, half) = tokio::join!(
        closed_within(&mut silent, b"", Duration::from_secs(5)),
        closed_within(&mut half, b"", Duration::from_secs(5)),
    );
    for (what, closed) in [("a silent connection", silent), ("half a preface", half)] {
        let closed = closed.unwrap_or_else(|| panic!("{what} was still open after 5 s"));
        assert!(
            closed >= Duration::from_millis(800) && closed < Duration::from_secs(3),
            "{what} was closed after {closed:?}, with a 1 s header timeout"
        );
    }
    assert!(served(server.addr()).await, "a real client is still served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let _cpu = CPU.read().await;
    let server = server_with(|config| {
        config.idle_timeout = Duration::from_secs(1);
    })
    .await;
    // A raw HTTP/2 connection that never calls, and a channel after one call.
    let opened = Instant::now();
    let mut raw = H2::connect(server.addr(), 100).await;
    let channel = served_channel(server.addr()).await.expect("served");
    let called = Instant::now();
    let closed = tokio::time::timeout(
        Duration::from_secs(5),
        raw.peer.wait_for(|peer| peer.closed.is_some()),
    )
    .await
    .expect("the idle raw connection was still open after 5 s")
    .expect("watch")
    .to_owned();
    assert!(closed.after_goaway, "closed without a GOAWAY");
    let idle = closed.closed.expect("closed") - opened;
    eprintln!("idle HTTP/2 connection closed {idle:?} after it opened (idle timeout 1 s)");
    assert!(idle >= Duration::from_millis(900) && idle < Duration::from_secs(3));
    // tonic reconnects by itself: the channel's next call is served again.
    tokio::time::sleep((called + Duration::from_secs(2)).saturating_duration_since(Instant::now()))
        .await;
    assert!(health_check(&channel).await, "the channel reconnects");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_with_a_call_in_flight_is_not_idle() {
    let _cpu = CPU.read().await;
    let server = server_with(|config| {
        config.idle_timeout = Duration::from_secs(1);
    })
    .await;
    let mut client = H2::connect(server.addr(), 100).await;
    client.settings(Duration::from_secs(2)).await;
    let call = client
        .half_sent_stream(Duration::from_secs(2))
        .await
        .expect("stream");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        client.peer.borrow().closed.is_none(),
        "a connection waiting for a call's message was closed as idle"
    );
    let ended = Instant::now();
    drop(call); // The client gives up: the stream is reset.
    tokio::time::timeout(
        Duration::from_secs(5),
        client.peer.wait_for(|peer| peer.closed.is_some()),
    )
    .await
    .expect("still open 5 s after its last call ended")
    .expect("watch");
    assert!(ended.elapsed() >= Duration::from_millis(900));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_are_closed_at_accept() {
    let _cpu = CPU.read().await;
    // The fixture keeps one connection of its own for its client: with a limit of
    // four, this test holds the other three.
    let server = server_with(|config| {
        config.max_connections = 4;
    })
    .await;
    let addr = server.addr();
    let mut held = Vec::new();
    for _ in 0..3 {
        // The connections TestServer used to wait for SERVING may not be gone yet.
        let mut channel = None;
        for _ in 0..50 {
            channel = served_channel(addr).await;
            if channel.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        held.push(channel.expect("one of the first three connections was not served"));
    }
    let mut fourth = TcpStream::connect(addr).await.expect("TCP connect");
    let closed = closed_within(&mut fourth, b"", Duration::from_secs(3))
        .await
        .expect("the fourth connection was not closed");
    assert!(closed < Duration::from_secs(1), "closed after {closed:?}");
    assert!(served_channel(addr).await.is_none(), "a fourth was served");
    for channel in &held {
        assert!(health_check(channel).await, "the first three still work");
    }
    held.pop();
    let again = eventually(Duration::from_secs(5), || served(addr)).await;
    assert!(again.is_some(), "no new connection served after one closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_advertises_its_max_concurrent_streams() {
    let _cpu = CPU.read().await;
    let server = server_with(|config| {
        assert_eq!(config.max_concurrent_streams, 1024, "the default");
        config.max_concurrent_streams = 16;
    })
    .await;
    let mut client = H2::connect(server.addr(), 100).await;
    assert_eq!(client.settings(Duration::from_secs(2)).await, 16);
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(
            client
                .half_sent_stream(Duration::from_secs(2))
                .await
                .expect("one of 16 streams"),
        );
    }
    // The 17th call waits for a stream: the client holds it back, as the server's
    // setting tells it to, until one of the 16 ends.
    let mut seventeenth = tokio::spawn(client.health_check_when_ready());
    let waited = tokio::time::timeout(Duration::from_millis(500), &mut seventeenth).await;
    assert!(waited.is_err(), "a 17th call was answered");
    held.pop();
    let answer = tokio::time::timeout(Duration::from_secs(2), seventeenth)
        .await
        .expect("the 17th call was not answered once a stream ended")
        .expect("task")
        .expect("response");
    assert_eq!(answer.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_slowloris_is_closed_within_the_header_timeout() {
    let _cpu = CPU.read().await;
    let server = server_with(|config| {
        config.header_timeout = Duration::from_secs(1);
    })
    .await;
    let head = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut slow = TcpStream::connect(server.http_addr())
        .await
        .expect("connect");
    let mut silent = TcpStream::connect(server.http_addr())
        .await
        .expect("connect");
    let (slow, silent) = tokio::join!(
        closed_within(&mut slow, head, Duration::from_secs(5)),
        closed_within(&mut silent, b"", Duration::from_secs(5)),
    );
    for (what, closed) in [("a slowloris", slow), ("a silent connection", silent)] {
        let closed = closed.unwrap_or_else(|| panic!("{what} was still open after 5 s"));
        eprintln!("HTTP: {what} closed after {closed:?} (header timeout 1 s)");
        assert!(
            closed < Duration::from_secs(3),
            "{what} closed after {closed:?}"
        );
    }
    let metrics = reqwest::get(format!("http://{}/metrics", server.http_addr()))
        .await
        .expect("GET /metrics");
    assert!(metrics.status().is_success());
}

#[tokio::test]
async fn connection_settings_are_validated_and_documented() {
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_authd"));
        command.arg("serve").args(args);
        for (k, v) in env {
            command.env(k, v);
        }
        command.output().expect("run authd")
    };
    let refused = [
        (run(&["--max-connections", "0"], &[]), "--max-connections"),
        (
            run(&[], &[("AUTHD_MAX_CONNECTIONS", "lots")]),
            "--max-connections",
        ),
        (run(&["--idle-timeout", "0s"], &[]), "--idle-timeout"),
        (
            run(&[], &[("AUTHD_IDLE_TIMEOUT", "soon")]),
            "--idle-timeout",
        ),
        (run(&["--header-timeout", "11s"], &[]), "at most 10s"),
        (
            run(&["--max-concurrent-streams", "10001"], &[]),
            "--max-concurrent-streams",
        ),
    ];
    for (output, named) in refused {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "accepted: {stderr}");
        assert!(stderr.contains(named), "{named} not in: {stderr}");
    }
    let help = run(&["--help"], &[]);
    let help = String::from_utf8_lossy(&help.stdout);
    for setting in [
        "AUTHD_MAX_CONNECTIONS",
        "AUTHD_IDLE_TIMEOUT",
        "AUTHD_HEADER_TIMEOUT",
        "AUTHD_MAX_CONCURRENT_STREAMS",
    ] {
        assert!(help.contains(setting), "{setting} not in --help");
    }
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// A call that the server answers (UNAUTHENTICATED for a garbage token) within 10 s.
async fn served(addr: SocketAddr) -> bool {
    let call = async {
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
            .ok()?;
        let mut client = authd::grpc::pb::auth_service_client::AuthServiceClient::new(channel);
        let answer = client
            .validate_token(authd::grpc::pb::ValidateTokenRequest {
                token: "garbage".into(),
            })
            .await;
        Some(matches!(answer, Err(status) if status.code() == tonic::Code::Unauthenticated))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(10), call).await,
        Ok(Some(true))
    )
}

const FLOOD_CONNECTIONS: usize = 4;
/// Streams each flooding connection tries to hold (the security review's figure).
const FLOOD_STREAMS: usize = 10_000;

/// 4 connections each open as many half-sent streams as the server lets them (up to
/// 10,000): the server's memory grows by less than 150 MB, and a new client is
/// still served meanwhile. Measured on an `authd serve` process of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_stream_flood_is_bounded_in_memory_and_new_clients_are_served() {
    let _cpu = CPU.write().await;
    let db = TestDb::sqlite();
    let server = ServerProcess::start(&db, &[]).await;
    let pid = server.child.id().expect("pid");
    assert!(served(server.addr).await, "served before the flood");
    let before = rss_kib(pid);

    let started = Instant::now();
    let mut held = Vec::new();
    let mut connections = Vec::new();
    for _ in 0..FLOOD_CONNECTIONS {
        let mut client = H2::connect(server.addr, usize::MAX).await;
        let limit = client
            .settings(Duration::from_secs(1))
            .await
            .min(FLOOD_STREAMS);
        for _ in 0..limit {
            match client.half_sent_stream(Duration::from_secs(2)).await {
                Some(stream) => held.push(stream),
                None => break,
            }
        }
        connections.push(client);
    }
    let opened = held.len();
    let during = served(server.addr).await;
    // Let the server take in every stream's headers before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut peak = rss_kib(pid);
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        peak = peak.max(rss_kib(pid));
    }
    let grew_mib = peak.saturating_sub(before) / 1024;
    eprintln!(
        "flood: {opened} half-sent streams over {FLOOD_CONNECTIONS} connections in {:?}; \
         server RSS {} MiB before, {} MiB during (+{grew_mib} MiB); new client served: {during}",
        started.elapsed(),
        before / 1024,
        peak / 1024,
    );
    assert!(
        opened >= FLOOD_CONNECTIONS * 100,
        "the flood opened {opened} streams"
    );
    assert!(during, "a new client was not served during the flood");
    assert!(
        grew_mib < 150,
        "the flood grew the server by {grew_mib} MiB"
    );
    drop(held);
    drop(connections);
    tokio::time::sleep(Duration::from_secs(2)).await;
    eprintln!(
        "flood: server RSS {} MiB 2 s after the flood's connections closed",
        rss_kib(pid) / 1024
    );
}

/// The default bounds, measured on an `authd serve` process with no settings of
/// ours: how long a connection without a preface, an idle HTTP/2 connection and an
/// HTTP slowloris (five header bytes a second) stay open. About 75 s; run it with
/// `cargo test --test connections -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measures the 60 s default idle timeout"]
async fn measure_the_default_bounds() {
    let db = TestDb::sqlite();
    let (port, http_port) = (free_port(), free_port());
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let http: SocketAddr = format!("127.0.0.1:{http_port}").parse().expect("addr");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_authd"))
        .arg("serve")
        .env("AUTHD_DATABASE_URL", &db.url)
        .env("AUTHD_LISTEN", addr.to_string())
        .env("AUTHD_HTTP_LISTEN", http.to_string())
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("spawn authd serve");
    assert!(
        eventually(Duration::from_secs(20), || served(addr))
            .await
            .is_some(),
        "authd serve did not serve"
    );
    let cap = Duration::from_secs(75);
    let preface = async {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        closed_within(&mut tcp, b"", cap).await
    };
    let idle = async {
        let started = Instant::now();
        let mut client = H2::connect(addr, 100).await;
        let closed = tokio::time::timeout(cap, client.peer.wait_for(|p| p.closed.is_some())).await;
        closed.ok().map(|_| started.elapsed())
    };
    let slowloris = async {
        let mut tcp = TcpStream::connect(http).await.expect("connect");
        tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .await
            .expect("write");
        // A byte every 200 ms of `closed_within`, for as long as it takes.
        closed_within(&mut tcp, &[b'a'; 400], cap).await
    };
    let (preface, idle, slowloris) = tokio::join!(preface, idle, slowloris);
    eprintln!(
        "defaults: no preface closed after {preface:?}; idle HTTP/2 closed after {idle:?}; \
         HTTP slowloris closed after {slowloris:?} (None: still open after {cap:?})"
    );
    let _ = child.kill().await;
    assert!(preface.is_some_and(|d| d <= Duration::from_secs(11)));
    assert!(idle.is_some_and(|d| d >= Duration::from_secs(59) && d <= Duration::from_secs(62)));
    assert!(slowloris.is_some_and(|d| d <= Duration::from_secs(11)));
}
