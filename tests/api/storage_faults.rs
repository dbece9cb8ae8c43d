//! A real storage fault: the SQLite database lives on a small tmpfs that is then
//! filled to the last byte. Writes must fail closed (`UNAVAILABLE`, never OK
//! without a commit), the write lock must not stay held, readiness must turn
//! `NOT_SERVING` while liveness stays `SERVING`, and once space returns everything
//! recovers by itself with no acknowledged write lost, across a restart too.
//!
//! SQLite only: filling a volume is how a full disk is made here, and a PostgreSQL
//! server keeps its files out of the test's reach (its disk-full SQLSTATEs are
//! unit-tested in `src/store/error.rs`). Mounting needs root (CAP_SYS_ADMIN); where
//! that is impossible the test says so on stderr and skips.

mod common;

use std::{
    future::Future,
    io::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use authd::grpc::pb;
use common::{admin_token, login, register, validate, Backend, TestDb, TestServer};
use tonic::{transport::Channel, Code, Status};
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

const SERVING: i32 = 1;
const NOT_SERVING: i32 = 2;
/// No single call may take longer than this, whatever the fault does to it.
const CALL_BOUND: Duration = Duration::from_secs(15);

/// A tmpfs of a few MB mounted over a directory, unmounted on drop (on panic too).
struct SmallVolume {
    dir: PathBuf,
}

impl SmallVolume {
    fn mount_over(dir: &Path, size: &str) -> Result<SmallVolume, String> {
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("tmpfs")
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).trim().to_owned());
        }
        Ok(SmallVolume {
            dir: dir.to_owned(),
        })
    }

    /// Writes a filler file until the volume refuses another byte (ENOSPC).
    fn fill(&self) -> Filler {
        let path = self.dir.join("filler");
        let mut file = std::fs::File::create(&path).expect("create filler");
        let chunk = vec![0xA5u8; 64 * 1024];
        let mut written = 0usize;
        let refusal = loop {
            match file.write(&chunk) {
                Ok(0) => break std::io::Error::from(std::io::ErrorKind::WriteZero),
                Ok(n) => written += n,
                Err(e) => break e,
            }
        };
        assert_eq!(
            refusal.raw_os_error(),
            Some(28),
            "the filler stopped for another reason than ENOSPC: {refusal}"
        );
        eprintln!("volume full: filler holds {} KiB", written / 1024);
        Filler { path }
    }
}

impl Drop for SmallVolume {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Still busy (a server that a panic left running): detach it now, the
            // kernel frees it when the last file closes.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

struct Filler {
    path: PathBuf,
}

impl Filler {
    fn remove(self) {
        std::fs::remove_file(&self.path).expect("remove filler");
    }
}

/// What the scenario saw, failures collected rather than stopping at the first,
/// so that one run shows every way the server misbehaves.
#[derive(Default)]
struct Findings(Vec<String>);

impl Findings {
    fn check(&mut self, ok: bool, what: impl Into<String>) {
        let what = what.into();
        eprintln!("[{}] {what}", if ok { "ok" } else { "FAIL" });
        if !ok {
            self.0.push(what);
        }
    }
}

async fn bounded<T>(call: impl Future<Output = Result<T, Status>>) -> Result<T, Status> {
    tokio::time::timeout(CALL_BOUND, call)
        .await
        .unwrap_or_else(|_| Err(Status::deadline_exceeded("the call did not end in time")))
}

async fn health(channel: Channel, service: &str) -> i32 {
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .map(|r| r.into_inner().status)
        .unwrap_or(-1)
}

/// How long until readiness (`""`) reads `status`, if it does within `within`.
async fn readiness_turns(channel: &Channel, status: i32, within: Duration) -> Option<Duration> {
    common::eventually(within, || {
        let channel = channel.clone();
        async move { health(channel, "").await == status }
    })
    .await
}

/// Whether a connection of another process could take the write lock (within a
/// 3 s busy timeout). The transaction is rolled back at once.
async fn outside_writer_can_lock(db_file: &Path) -> Result<(), String> {
    use sqlx::{sqlite::SqliteConnectOptions, ConnectOptions, Connection};
    let mut conn = SqliteConnectOptions::new()
        .filename(db_file)
        .busy_timeout(Duration::from_secs(3))
        .connect()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let locked = sqlx::query("BEGIN IMMEDIATE").execute(&mut conn).await;
    let _ = sqlx::query("ROLLBACK").execute(&mut conn).await;
    let _ = conn.close().await;
    locked.map(|_| ()).map_err(|e| e.to_string())
}

fn code_of<T>(result: &Result<T, Status>) -> Code {
    result.as_ref().map_or_else(|s| s.code(), |_| Code::Ok)
}

async fn logout(
    client: &mut pb::auth_service_client::AuthServiceClient<Channel>,
    refresh_token: &str,
) -> Result<(), Status> {
    bounded(client.logout(pb::LogoutRequest {
        refresh_token: refresh_token.into(),
    }))
    .await
    .map(|_| ())
}

async fn try_register(
    client: &mut pb::auth_service_client::AuthServiceClient<Channel>,
    username: &str,
) -> Result<(), Status> {
    bounded(client.register(pb::RegisterRequest {
        username: username.into(),
        email: format!("{username}@example.com"),
        password: common::PASSWORD.into(),
        full_name: String::new(),
    }))
    .await
    .map(|_| ())
}

async fn try_login(
    client: &mut pb::auth_service_client::AuthServiceClient<Channel>,
    username: &str,
) -> Result<pb::LoginResponse, Status> {
    bounded(client.login(pb::LoginRequest {
        username: username.into(),
        password: common::PASSWORD.into(),
    }))
    .await
    .map(|r| r.into_inner())
}

/// Writes the server acknowledged; each is checked again after the restart.
#[derive(Default)]
struct Acknowledged {
    /// Access tokens whose session's Logout answered OK.
    logged_out: Vec<(String, String)>,
    /// Users whose deactivation answered OK, with a token they held.
    deactivated: Vec<(String, String)>,
    /// Usernames whose Register answered OK.
    registered: Vec<String>,
}

async fn a_full_disk_fails_closed_and_recovers_by_itself(backend: Backend) {
    if backend != Backend::Sqlite {
        eprintln!("skipped on PostgreSQL: the full disk is a small volume under a SQLite file");
        return;
    }
    let db = TestDb::create(Backend::Sqlite)
        .await
        .expect("SQLite test db");
    let db_file = PathBuf::from(
        db.url
            .trim_start_matches("sqlite://")
            .split('?')
            .next()
            .expect("a path"),
    );
    let dir = db_file.parent().expect("the database's directory");
    // The database file does not exist yet: the volume is mounted over its empty
    // directory, so every file SQLite makes (the db, -wal, -shm) lands on it.
    let volume = match SmallVolume::mount_over(dir, "4m") {
        Ok(volume) => volume,
        Err(why) => {
            eprintln!(
                "SKIPPED a_full_disk_fails_closed_and_recovers_by_itself: cannot mount a tmpfs \
                 here ({why}); this test needs root (CAP_SYS_ADMIN)"
            );
            return;
        }
    };
    let mut config = common::config_for(&db);
    config.database.database_timeout = Duration::from_secs(2);
    let server = TestServer::start_with(config.clone()).await;
    let channel = server.channel().await;
    let mut client = server.auth().await;
    let (_, admin) = admin_token(&db, &server, "root").await;
    let mut admin_client = server.admin(&admin.access_token).await;
    register(&mut client, "alice").await;
    let bob = register(&mut client, "bob").await;
    let alice_1 = login(&mut client, "alice").await;
    let alice_2 = login(&mut client, "alice").await;
    let alice_3 = login(&mut client, "alice").await;
    let bob_1 = login(&mut client, "bob").await;
    let mut acked = Acknowledged::default();
    let mut findings = Findings::default();

    // --- The volume fills up. ---
    let filler = volume.fill();
    let full_at = Instant::now();

    let result = logout(&mut client, &alice_1.refresh_token).await;
    findings.check(
        code_of(&result) == Code::Unavailable,
        format!("Logout on a full disk answers UNAVAILABLE: {result:?}"),
    );
    if result.is_ok() {
        acked
            .logged_out
            .push((alice_1.access_token.clone(), "alice_1".into()));
        let still = validate(&mut client, &alice_1.access_token).await;
        findings.check(
            still.is_err(),
            format!(
                "a token whose Logout answered OK is refused: {:?}",
                code_of(&still)
            ),
        );
    }
    let result = bounded(admin_client.set_user_active(pb::SetUserActiveRequest {
        user_id: bob.id.clone(),
        active: false,
    }))
    .await;
    findings.check(
        code_of(&result) == Code::Unavailable,
        format!(
            "SetUserActive(false) on a full disk answers UNAVAILABLE: {:?}",
            code_of(&result)
        ),
    );
    if result.is_ok() {
        acked
            .deactivated
            .push(("bob".into(), bob_1.access_token.clone()));
        let still = validate(&mut client, &bob_1.access_token).await;
        findings.check(
            still.is_err(),
            format!(
                "a deactivated user's token is refused: {:?}",
                code_of(&still)
            ),
        );
    }
    let result = try_register(&mut client, "carol").await;
    findings.check(
        code_of(&result) == Code::Unavailable,
        format!("Register on a full disk answers UNAVAILABLE: {result:?}"),
    );
    if result.is_ok() {
        acked.registered.push("carol".into());
    }
    // A second round: the first failure must not leave the writer in a state where
    // later writes "succeed" without committing.
    let result = logout(&mut client, &alice_2.refresh_token).await;
    findings.check(
        code_of(&result) == Code::Unavailable,
        format!("a second Logout on a full disk answers UNAVAILABLE: {result:?}"),
    );
    if result.is_ok() {
        acked
            .logged_out
            .push((alice_2.access_token.clone(), "alice_2".into()));
        let still = validate(&mut client, &alice_2.access_token).await;
        findings.check(
            still.is_err(),
            format!(
                "a token whose Logout answered OK is refused: {:?}",
                code_of(&still)
            ),
        );
    }
    let result = try_register(&mut client, "dave").await;
    findings.check(
        code_of(&result) == Code::Unavailable,
        format!("a second Register on a full disk answers UNAVAILABLE: {result:?}"),
    );
    if result.is_ok() {
        acked.registered.push("dave".into());
    }

    let turned = readiness_turns(
        &channel,
        NOT_SERVING,
        Duration::from_secs(10).saturating_sub(full_at.elapsed()),
    )
    .await;
    findings.check(
        turned.is_some(),
        format!(
            "readiness NOT_SERVING within 10 s of the disk filling (after {:?})",
            full_at.elapsed()
        ),
    );
    // It must stay so: a probe that "succeeds" without writing would flip it back.
    let mut flipped = Vec::new();
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let status = health(channel.clone(), "").await;
        if status != NOT_SERVING {
            flipped.push(status);
        }
    }
    findings.check(
        flipped.is_empty(),
        format!("readiness stays NOT_SERVING for 3 s while the disk is full: {flipped:?}"),
    );
    let live = health(channel.clone(), "liveness").await;
    findings.check(live == SERVING, format!("liveness stays SERVING: {live}"));
    let hot = validate(&mut client, &alice_3.access_token).await;
    findings.check(
        hot.is_ok(),
        format!(
            "ValidateToken still answers from memory: {:?}",
            code_of(&hot)
        ),
    );
    let lock = outside_writer_can_lock(&db_file).await;
    findings.check(
        lock.is_ok(),
        format!("another process can BEGIN IMMEDIATE on the full disk: {lock:?}"),
    );

    // --- Space returns. ---
    filler.remove();
    let freed_at = Instant::now();
    let back = readiness_turns(&channel, SERVING, Duration::from_secs(20)).await;
    findings.check(
        back.is_some(),
        format!("readiness SERVING again within 20 s of space returning ({back:?})"),
    );
    eprintln!("readiness after space returned: {:?}", freed_at.elapsed());

    for (token, name) in [(&alice_1, "alice_1"), (&alice_2, "alice_2")] {
        if acked.logged_out.iter().any(|(_, n)| n == name) {
            continue;
        }
        let result = logout(&mut client, &token.refresh_token).await;
        findings.check(
            result.is_ok(),
            format!("Logout of {name} works once space returns: {result:?}"),
        );
        if result.is_ok() {
            acked
                .logged_out
                .push((token.access_token.clone(), name.into()));
        }
    }
    if acked.deactivated.is_empty() {
        let result = bounded(admin_client.set_user_active(pb::SetUserActiveRequest {
            user_id: bob.id.clone(),
            active: false,
        }))
        .await;
        findings.check(
            result.is_ok(),
            format!(
                "SetUserActive(false) works once space returns: {:?}",
                code_of(&result)
            ),
        );
        if result.is_ok() {
            acked
                .deactivated
                .push(("bob".into(), bob_1.access_token.clone()));
        }
    }
    for name in ["carol", "dave"] {
        if acked.registered.iter().any(|n| n == name) {
            continue;
        }
        let result = try_register(&mut client, name).await;
        findings.check(
            result.is_ok(),
            format!("Register of {name} works once space returns: {result:?}"),
        );
        if result.is_ok() {
            acked.registered.push(name.into());
        }
    }
    let lock = outside_writer_can_lock(&db_file).await;
    findings.check(
        lock.is_ok(),
        format!("another process can BEGIN IMMEDIATE after recovery: {lock:?}"),
    );

    // --- Nothing acknowledged is lost, in memory or on disk. ---
    check_acknowledged(&mut findings, &server, &acked, "before the restart").await;
    drop((client, admin_client, channel));
    let stopped = tokio::time::timeout(Duration::from_secs(20), server.stop()).await;
    findings.check(stopped.is_ok(), "the server stops within 20 s");
    let server = TestServer::start_with(config).await;
    check_acknowledged(&mut findings, &server, &acked, "after the restart").await;
    let mut client = server.auth().await;
    let hot = validate(&mut client, &alice_3.access_token).await;
    findings.check(
        hot.is_ok(),
        format!(
            "a session never logged out still validates after the restart: {:?}",
            code_of(&hot)
        ),
    );
    server.stop().await;
    drop(volume);

    assert!(
        findings.0.is_empty(),
        "{} expectation(s) failed:\n- {}",
        findings.0.len(),
        findings.0.join("\n- ")
    );
}

async fn check_acknowledged(
    findings: &mut Findings,
    server: &TestServer,
    acked: &Acknowledged,
    when: &str,
) {
    let mut client = server.auth().await;
    for (token, name) in &acked.logged_out {
        let result = validate(&mut client, token).await;
        findings.check(
            code_of(&result) == Code::Unauthenticated,
            format!(
                "{when}: the logged-out {name} token is refused: {:?}",
                code_of(&result)
            ),
        );
    }
    for (username, token) in &acked.deactivated {
        let result = validate(&mut client, token).await;
        findings.check(
            code_of(&result) == Code::Unauthenticated,
            format!(
                "{when}: deactivated {username}'s token is refused: {:?}",
                code_of(&result)
            ),
        );
        let login = try_login(&mut client, username).await;
        findings.check(
            login.is_err(),
            format!(
                "{when}: deactivated {username} cannot log in: {:?}",
                code_of(&login)
            ),
        );
    }
    for username in &acked.registered {
        let login = try_login(&mut client, username).await;
        findings.check(
            login.is_ok(),
            format!(
                "{when}: registered {username} can log in: {:?}",
                code_of(&login)
            ),
        );
    }
}

on_both_databases!(a_full_disk_fails_closed_and_recovers_by_itself);
