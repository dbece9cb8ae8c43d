//! Logs never carry secrets, at any level: `authd serve` and `authd user create` run
//! at `RUST_LOG=trace` (the server with sea-orm and sqlx at trace by name too) while a user registers, logs in and refreshes and an admin
//! creates and uses an API key, and the account lifecycle runs (a password changed
//! and reset by token, an email verified); then no password, token, API key, hash of one,
//! password hash or private key may appear anywhere in what they printed.

use std::{net::SocketAddr, path::Path, process::Stdio, time::Duration};

use crate::helpers::{free_port, AdminClient, AuthClient, TestDb, PASSWORD};
use sha2::{Digest, Sha256};
use tonic::transport::Channel;

/// `authd serve` at trace level, everything it prints going to `log`.
struct TracedServer {
    addr: SocketAddr,
    child: tokio::process::Child,
}

impl TracedServer {
    async fn start(db: &TestDb, log: &Path) -> TracedServer {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let out = std::fs::File::create(log).expect("log file");
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_authd"))
            .arg("serve")
            .env("AUTHD_DATABASE_URL", &db.url)
            .env("AUTHD_LISTEN", addr.to_string())
            .env("AUTHD_HTTP_LISTEN", format!("127.0.0.1:{}", free_port()))
            .env("AUTHD_CHANGE_POLL_INTERVAL", "200ms")
            // Asking for the database crates by name must not lift their ceiling.
            .env("RUST_LOG", "trace,sea_orm=trace,sqlx=trace")
            .kill_on_drop(true)
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .expect("spawn authd serve");
        let server = TracedServer { addr, child };
        server.wait_until_serving().await;
        server
    }

    async fn wait_until_serving(&self) {
        for _ in 0..400 {
            if let Ok(channel) = self.try_channel().await {
                let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
                let check = tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                };
                if let Ok(answer) = health.check(check).await {
                    if answer.into_inner().status == 1 {
                        return;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("authd serve did not become SERVING");
    }

    async fn try_channel(&self) -> Result<Channel, tonic::transport::Error> {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("uri")
            .connect()
            .await
    }

    async fn channel(&self) -> Channel {
        self.try_channel().await.expect("connect")
    }

    /// SIGTERM, so that the shutdown path logs too (and API-key use is flushed).
    async fn stop(mut self) {
        let pid = self.child.id().expect("pid") as i32;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
        let exited = tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await;
        assert!(exited.is_ok(), "authd serve did not exit after SIGTERM");
    }
}

/// `authd user create --role admin` at trace level, its output appended to `log`.
async fn create_admin_traced(db: &TestDb, username: &str, log: &Path) {
    use tokio::io::AsyncWriteExt;
    let out = std::fs::OpenOptions::new()
        .append(true)
        .open(log)
        .expect("log file");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_authd"))
        .args(["user", "create", "--username", username, "--email"])
        .arg(format!("{username}@example.com"))
        .args(["--role", "admin", "--password-stdin"])
        .env("AUTHD_DATABASE_URL", &db.url)
        .env("RUST_LOG", "trace")
        .stdin(Stdio::piped())
        .stdout(out.try_clone().expect("log file"))
        .stderr(out)
        .spawn()
        .expect("spawn authd user create");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(PASSWORD.as_bytes())
        .await
        .expect("write stdin");
    drop(input);
    let status = child.wait().await.expect("authd user create");
    assert!(status.success(), "authd user create failed");
}

const CHANGED_PASSWORD: &str = "a changed passphrase";
const RESET_PASSWORD: &str = "a passphrase set by reset";

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

async fn private_keys(db: &TestDb) -> Vec<String> {
    use sqlx::Row;
    let mut sql = db.sql().await;
    sqlx::query("SELECT private_key FROM signing_keys WHERE private_key IS NOT NULL")
        .fetch_all(&mut sql)
        .await
        .expect("signing keys")
        .iter()
        .map(|row| row.get::<String, _>(0))
        .collect()
}

async fn no_secret_reaches_the_logs_at_trace_level(db: TestDb) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (serve_log, cli_log) = (dir.path().join("serve.log"), dir.path().join("cli.log"));
    std::fs::File::create(&cli_log).expect("log file");
    let server = TracedServer::start(&db, &serve_log).await;
    create_admin_traced(&db, "root", &cli_log).await;

    let auth = AuthClient::new(server.channel().await);
    auth.register("alice").await;
    let first = auth.login("alice").await;
    auth.validate(&first.access_token)
        .await
        .expect("access token validates");
    let second = auth.refresh(&first.refresh_token).await.expect("refresh");

    let admin = auth.login("root").await;
    let admin_client = AdminClient::new(server.channel().await, &admin.access_token);
    let api_key = admin_client
        .create_api_key("ci", &["viewer"], 0)
        .await
        .expect("create API key")
        .api_key;
    auth.validate(&api_key).await.expect("API key validates");
    auth.logout(&second.refresh_token).await.expect("logout");
    // The account lifecycle: a password changed, reset by token, an email verified.
    let third = auth.login("alice").await;
    let alice_id = auth
        .validate(&third.access_token)
        .await
        .expect("alice")
        .user_id;
    crate::helpers::UserClient::new(server.channel().await, &third.access_token)
        .change_password(PASSWORD, CHANGED_PASSWORD)
        .await
        .expect("change password");
    let reset_token = admin_client
        .create_password_reset_token(&alice_id)
        .await
        .expect("reset token")
        .reset_token;
    auth.reset_password(&reset_token, RESET_PASSWORD)
        .await
        .expect("reset password");
    let verification_token = admin_client
        .create_email_verification_token(&alice_id)
        .await
        .expect("verification token")
        .verification_token;
    auth.verify_email(&verification_token)
        .await
        .expect("verify");
    // A few change-feed polls, so that background reads are in the logs too.
    tokio::time::sleep(Duration::from_millis(600)).await;
    server.stop().await;

    let mut secrets = vec![
        ("the password", PASSWORD.to_owned()),
        ("an argon2id hash", "$argon2id$".to_owned()),
        ("the API key", api_key.clone()),
        ("the API key's SHA-256", sha256_hex(&api_key)),
        ("a changed password", CHANGED_PASSWORD.to_owned()),
        ("a reset password", RESET_PASSWORD.to_owned()),
        ("a reset token", reset_token.clone()),
        ("a reset token's SHA-256", sha256_hex(&reset_token)),
        ("a verification token", verification_token.clone()),
        (
            "a verification token's SHA-256",
            sha256_hex(&verification_token),
        ),
    ];
    for tokens in [&first, &second, &third, &admin] {
        secrets.push(("an access token", tokens.access_token.clone()));
        secrets.push(("a refresh token", tokens.refresh_token.clone()));
        secrets.push((
            "a refresh token's SHA-256",
            sha256_hex(&tokens.refresh_token),
        ));
    }
    let keys = private_keys(&db).await;
    assert!(!keys.is_empty(), "a private key is stored");
    for key in keys {
        secrets.push(("a private signing key", key));
    }

    let mut leaks = Vec::new();
    for log in [&serve_log, &cli_log] {
        let text = String::from_utf8_lossy(&std::fs::read(log).expect("read log")).into_owned();
        // The CLI has no trace events of its own once the database crates are capped;
        // the server's show that RUST_LOG=trace applied.
        assert!(
            log == &cli_log || text.contains("TRACE"),
            "{} has no TRACE lines: RUST_LOG=trace did not apply",
            log.display()
        );
        for (what, secret) in &secrets {
            if let Some(at) = text.find(secret.as_str()) {
                let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
                let line: String = text[line_start..].chars().take(300).collect();
                let name = log.file_name().unwrap_or_default().to_string_lossy();
                leaks.push(format!("{what} is in {name}: {line}"));
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "secrets in the logs:\n{}",
        leaks.join("\n")
    );
}

on_both_databases!(no_secret_reaches_the_logs_at_trace_level);
