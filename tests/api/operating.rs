//! Operating a fleet: start-up that waits for a PostgreSQL that is not up yet, the
//! revocation wake-up between replicas, health streams that end when draining
//! starts, a second signal that exits at once, and the command line's edges.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    net::{TcpListener, TcpStream},
};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

use crate::helpers::{connect, eventually, free_port, health, TestApp, TestDb};

const SERVING: i32 = 1;
const NOT_SERVING: i32 = 2;

/// `authd serve` as a process on `db_url`, not waiting for anything.
pub(crate) fn spawn_serve(db_url: &str, port: u16, env: &[(&str, &str)]) -> tokio::process::Child {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_authd"));
    command
        .arg("serve")
        .env("AUTHD_DATABASE_URL", db_url)
        .env("AUTHD_LISTEN", format!("127.0.0.1:{port}"))
        .env("AUTHD_HTTP_LISTEN", format!("127.0.0.1:{}", free_port()))
        .kill_on_drop(true)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    command.spawn().expect("spawn authd serve")
}

/// Forwards every connection accepted on `listener` to PostgreSQL at `upstream`.
async fn forward(listener: TcpListener, upstream: String) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            return;
        };
        let upstream = upstream.clone();
        tokio::spawn(async move {
            if let Ok(mut outbound) = TcpStream::connect(&upstream).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

pub(crate) async fn check(addr: &str, service: &str) -> Result<i32, Code> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .map_err(|_| Code::Unavailable)?;
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .map(|r| r.into_inner().status)
        .map_err(|s| s.code())
}

/// PostgreSQL is "down" (its port refuses connections) when `serve` starts: the
/// process waits with liveness SERVING and readiness NOT_SERVING, refuses other calls
/// with UNAVAILABLE, and reaches SERVING once the database answers.
async fn serve_started_before_postgres_is_up_reaches_serving_once_it_is(db: TestDb) {
    let pg_port = free_port();
    let (user, rest) = db
        .url
        .trim_start_matches("postgres://")
        .split_once('@')
        .expect("url with user");
    let (upstream, path) = rest.split_once('/').expect("url with a database");
    let url = format!("postgres://{user}@127.0.0.1:{pg_port}/{path}");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = spawn_serve(
        &url,
        port,
        &[
            ("AUTHD_STARTUP_TIMEOUT", "60s"),
            ("AUTHD_DATABASE_TIMEOUT", "1s"),
        ],
    );

    let live = eventually(Duration::from_secs(10), || async {
        check(&addr, "liveness").await == Ok(SERVING)
    })
    .await;
    assert!(
        live.is_some(),
        "liveness SERVING while waiting for the database"
    );
    assert_eq!(check(&addr, "").await, Ok(NOT_SERVING));
    let channel = connect(addr.parse().expect("addr")).await;
    let status = crate::helpers::AuthClient::new(channel)
        .validate("whatever")
        .await
        .expect_err("not started");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("starting"), "{status:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        child.try_wait().expect("wait").is_none(),
        "still waiting, not exited"
    );

    // The database comes up.
    let listener = TcpListener::bind(("127.0.0.1", pg_port))
        .await
        .expect("bind the database port");
    let up_at = Instant::now();
    tokio::spawn(forward(listener, upstream.to_owned()));
    let ready = eventually(Duration::from_secs(20), || async {
        check(&addr, "").await == Ok(SERVING)
    })
    .await;
    assert!(ready.is_some(), "SERVING once the database answers");
    eprintln!("SERVING {:?} after the database came up", up_at.elapsed());
    let channel = connect(addr.parse().expect("addr")).await;
    let client = crate::helpers::AuthClient::new(channel);
    client.register("alice").await;
    let tokens = client.login("alice").await;
    client.validate(&tokens.access_token).await.expect("valid");

    // It logged what it was waiting for, naming the setting.
    let _ = child.start_kill();
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut logged = String::new();
    while let Ok(Some(line)) = stderr.next_line().await {
        logged.push_str(&line);
        logged.push('\n');
    }
    assert!(logged.contains("AUTHD_STARTUP_TIMEOUT"), "{logged}");
}

on_postgres!(serve_started_before_postgres_is_up_reaches_serving_once_it_is);

/// Waiting is bounded: past `AUTHD_STARTUP_TIMEOUT` start-up stops with the line.
#[tokio::test]
async fn waiting_for_the_database_gives_up_after_the_startup_timeout() {
    let port = free_port();
    let started = Instant::now();
    let child = spawn_serve(
        &format!("postgres://postgres@127.0.0.1:{}/authd", free_port()),
        port,
        &[
            ("AUTHD_STARTUP_TIMEOUT", "3s"),
            ("AUTHD_DATABASE_TIMEOUT", "1s"),
        ],
    );
    let output = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("exits")
        .expect("output");
    assert!(!output.status.success());
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(2), "waited {waited:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("authd: ") && last.contains("AUTHD_DATABASE_URL"),
        "{stderr}"
    );
}

/// A logout on one replica reaches another that polls only every 5 s: PostgreSQL's
/// notification wakes its feed reader. Prints the distribution.
async fn a_logout_reaches_another_replica_at_once_through_the_notification(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let replica = app.replica(&[("AUTHD_CHANGE_POLL_INTERVAL", "5s")]).await;
    let other = replica.client().await;
    app.register("alice").await;
    let mut delays = Vec::new();
    for _ in 0..20 {
        let tokens = app.login("alice").await;
        other
            .validate(&tokens.access_token)
            .await
            .expect("valid on the replica");
        app.logout(&tokens.refresh_token).await.expect("logout");
        let ended = Instant::now();
        loop {
            if other.validate(&tokens.access_token).await.is_err() {
                break;
            }
            assert!(
                ended.elapsed() < Duration::from_secs(3),
                "the replica still accepts the token 3 s after logout"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        delays.push(ended.elapsed());
    }
    delays.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    eprintln!(
        "logout to refusal on the other replica (20 runs, 5 s poll): min {:.1} ms, p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms",
        ms(delays[0]),
        ms(delays[10]),
        ms(delays[18]),
        ms(delays[19])
    );
    // Without the wake-up, half the runs would wait over 2.5 s for the poll.
    assert!(delays[10] < Duration::from_secs(1), "{delays:?}");
}

on_postgres!(a_logout_reaches_another_replica_at_once_through_the_notification);

/// A health Watch stream gets NOT_SERVING and then ends when draining starts, so it
/// does not hold the shutdown for its grace period.
async fn health_watch_streams_end_when_draining_starts(db: TestDb) {
    let mut app = TestApp::spawn_with(db, |c| c.shutdown_grace = Duration::from_secs(20)).await;
    let mut watch = HealthClient::new(app.channel().await)
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = watch.next().await.expect("first").expect("status");
    assert_eq!(first.status, SERVING);
    let started = Instant::now();
    let stopping = tokio::spawn(async move { app.stop().await });
    let second = watch.next().await.expect("second").expect("status");
    assert_eq!(second.status, NOT_SERVING);
    let end = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("the stream ends");
    match end {
        None => {}
        Some(Err(status)) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        Some(Ok(more)) => panic!("unexpected {more:?}"),
    }
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("shutdown does not wait for the grace")
        .expect("stopped");
    assert!(started.elapsed() < Duration::from_secs(10));
}

on_sqlite!(health_watch_streams_end_when_draining_starts);

/// While a call holds the drain, a second SIGTERM exits at once.
async fn a_second_sigterm_exits_at_once(db: TestDb) {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = spawn_serve(&db.url, port, &[("AUTHD_SHUTDOWN_GRACE", "60s")]);
    let ready = eventually(Duration::from_secs(10), || async {
        check(&addr, "").await == Ok(SERVING)
    })
    .await;
    assert!(ready.is_some());
    // A call whose request never ends: the drain waits for it.
    let tcp = TcpStream::connect(&addr).await.expect("connect");
    let (mut h2, connection) = h2::client::handshake(tcp).await.expect("h2");
    tokio::spawn(connection);
    let request = http::Request::post(format!("http://{addr}/auth.v1.AuthService/Login"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request");
    let (_response, _body) = h2.send_request(request, false).expect("send");
    // The headers go out from the connection task: give them time to arrive, so the
    // call is in flight on the server before the signal (CI machines are slow).
    tokio::time::sleep(Duration::from_millis(500)).await;

    let pid = nix::unistd::Pid::from_raw(child.id().expect("pid") as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        child.try_wait().expect("wait").is_none(),
        "the first SIGTERM drains (the call is still in flight)"
    );
    let second = Instant::now();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("exits at once")
        .expect("status");
    assert!(!status.success(), "{status:?}");
    eprintln!("exited {:?} after the second SIGTERM", second.elapsed());
}

on_sqlite!(a_second_sigterm_exits_at_once);

/// `authd health` checks `AUTHD_LISTEN` when given no address; 0.0.0.0 means here.
async fn health_defaults_to_the_listen_address(app: TestApp) {
    let listen = format!("0.0.0.0:{}", app.addr().port());
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_authd"))
        .arg("health")
        .env("AUTHD_LISTEN", &listen)
        .output()
        .await
        .expect("run authd health");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "SERVING");
    assert_eq!(health(app.channel().await, "").await, SERVING);
}

on_sqlite!(health_defaults_to_the_listen_address);

fn run(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_authd"));
    command.args(args).env_remove("AUTHD_DATABASE_URL");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("run authd")
}

fn the_one_line(output: &std::process::Output) -> String {
    assert!(!output.status.success(), "should fail: {output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    lines[0].to_owned()
}

#[test]
fn an_invalid_environment_variable_is_named_as_the_variable() {
    let output = run(
        &["serve"],
        &[("AUTHD_ACCESS_TOKEN_TTL", "soon"), ("RUST_LOG", "off")],
    );
    let line = the_one_line(&output);
    assert!(line.contains("AUTHD_ACCESS_TOKEN_TTL"), "{line}");
    assert!(line.contains("soon"), "{line}");
    assert_eq!(output.status.code(), Some(2));
    // Given as a flag, the flag is what is named.
    let output = run(&["serve", "--access-token-ttl", "soon"], &[]);
    let line = the_one_line(&output);
    assert!(line.contains("--access-token-ttl"), "{line}");
    assert!(!line.contains("AUTHD_ACCESS_TOKEN_TTL"), "{line}");
}

#[test]
fn settings_that_contradict_each_other_stop_start_up_with_one_line() {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("a.db").display());
    let output = run(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ],
        &[
            ("AUTHD_DATABASE_URL", url.as_str()),
            ("AUTHD_SESSION_MAX_TTL", "1m"),
            ("AUTHD_ACCESS_TOKEN_TTL", "15m"),
            ("RUST_LOG", "off"),
        ],
    );
    let line = the_one_line(&output);
    assert!(
        line.contains("AUTHD_SESSION_MAX_TTL") && line.contains("AUTHD_ACCESS_TOKEN_TTL"),
        "{line}"
    );
    let output = run(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ],
        &[
            ("AUTHD_DATABASE_URL", url.as_str()),
            ("AUTHD_CHANGE_POLL_INTERVAL", "1m"),
            ("AUTHD_MAX_STALENESS", "30s"),
            ("RUST_LOG", "off"),
        ],
    );
    let line = the_one_line(&output);
    assert!(
        line.contains("AUTHD_CHANGE_POLL_INTERVAL") && line.contains("AUTHD_MAX_STALENESS"),
        "{line}"
    );
}

#[test]
fn in_json_mode_the_fatal_error_is_a_json_line() {
    for (args, env, names) in [
        (
            vec!["migrate"],
            vec![("AUTHD_DATABASE_URL", "mysql://localhost/authd")],
            "AUTHD_DATABASE_URL",
        ),
        (
            vec!["serve"],
            vec![("AUTHD_ACCESS_TOKEN_TTL", "soon")],
            "AUTHD_ACCESS_TOKEN_TTL",
        ),
    ] {
        let mut env = env;
        env.push(("AUTHD_LOG_FORMAT", "json"));
        let output = run(&args, &env);
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().last().expect("a line");
        let line: serde_json::Value =
            serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {stderr}"));
        assert_eq!(line["level"], "ERROR", "{line}");
        assert!(
            line["message"].as_str().unwrap_or_default().contains(names),
            "{line}"
        );
    }
}
