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

use std::{
    future::Future,
    io::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use tonic::{transport::Channel, Code, Status};

use crate::helpers::{eventually, health, TestApp, TestDb, PASSWORD};

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

/// How long until readiness (`""`) reads `status`, if it does within `within`.
async fn readiness_turns(channel: &Channel, status: i32, within: Duration) -> Option<Duration> {
    eventually(within, || {
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

/// [`code`](crate::helpers::code) of a result the test still looks at afterwards.
fn code_of<T>(result: &Result<T, Status>) -> Code {
    result.as_ref().map_or_else(|s| s.code(), |_| Code::Ok)
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

async fn a_full_disk_fails_closed_and_recovers_by_itself(db: TestDb) {
    let db_file = PathBuf::from(
        db.url
            .trim_start_matches("sqlite://")
            .split('?')
            .next()
            .expect("a path"),
    );
    let dir = db_file.parent().expect("the database's directory");
    // Declared before the volume so that, on a panic, the volume is unmounted
    // first (lazily while the server still has its files open) and the database's
    // temp directory can be removed after it.
    let mut app: TestApp;
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
    app = TestApp::spawn_with(db, |c| c.database.database_timeout = Duration::from_secs(2)).await;
    let channel = app.channel().await;
    // `root` now: the CLI could not create it once the disk is full.
    app.admin().await;
    app.register("alice").await;
    let bob = app.register("bob").await;
    let alice_1 = app.login("alice").await;
    let alice_2 = app.login("alice").await;
    let alice_3 = app.login("alice").await;
    let bob_1 = app.login("bob").await;
    let mut acked = Acknowledged::default();
    let mut findings = Findings::default();

    // --- The volume fills up. ---
    let filler = volume.fill();
    let full_at = Instant::now();

    let result = bounded(app.logout(&alice_1.refresh_token)).await;
    findings.check(
        code_of(&result) == Code::Unavailable,
        format!("Logout on a full disk answers UNAVAILABLE: {result:?}"),
    );
    if result.is_ok() {
        acked
            .logged_out
            .push((alice_1.access_token.clone(), "alice_1".into()));
        let still = app.validate(&alice_1.access_token).await;
        findings.check(
            still.is_err(),
            format!(
                "a token whose Logout answered OK is refused: {:?}",
                code_of(&still)
            ),
        );
    }
    let result = bounded(app.admin().await.set_active(&bob.id, false)).await;
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
        let still = app.validate(&bob_1.access_token).await;
        findings.check(
            still.is_err(),
            format!(
                "a deactivated user's token is refused: {:?}",
                code_of(&still)
            ),
        );
    }
    let result = bounded(app.try_register("carol")).await.map(drop);
    findings.check(
        code_of(&result) == Code::Unavailable,
        format!("Register on a full disk answers UNAVAILABLE: {result:?}"),
    );
    if result.is_ok() {
        acked.registered.push("carol".into());
    }
    // A second round: the first failure must not leave the writer in a state where
    // later writes "succeed" without committing.
    let result = bounded(app.logout(&alice_2.refresh_token)).await;
    findings.check(
        code_of(&result) == Code::Unavailable,
        format!("a second Logout on a full disk answers UNAVAILABLE: {result:?}"),
    );
    if result.is_ok() {
        acked
            .logged_out
            .push((alice_2.access_token.clone(), "alice_2".into()));
        let still = app.validate(&alice_2.access_token).await;
        findings.check(
            still.is_err(),
            format!(
                "a token whose Logout answered OK is refused: {:?}",
                code_of(&still)
            ),
        );
    }
    let result = bounded(app.try_register("dave")).await.map(drop);
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
    let hot = app.validate(&alice_3.access_token).await;
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
        let result = bounded(app.logout(&token.refresh_token)).await;
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
        let result = bounded(app.admin().await.set_active(&bob.id, false)).await;
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
        let result = bounded(app.try_register(name)).await.map(drop);
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
    check_acknowledged(&mut findings, &app, &acked, "before the restart").await;
    drop(channel);
    let stopped = tokio::time::timeout(Duration::from_secs(20), app.stop()).await;
    findings.check(stopped.is_ok(), "the server stops within 20 s");
    app.restart().await;
    check_acknowledged(&mut findings, &app, &acked, "after the restart").await;
    let hot = app.validate(&alice_3.access_token).await;
    findings.check(
        hot.is_ok(),
        format!(
            "a session never logged out still validates after the restart: {:?}",
            code_of(&hot)
        ),
    );
    app.stop().await;
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
    app: &TestApp,
    acked: &Acknowledged,
    when: &str,
) {
    for (token, name) in &acked.logged_out {
        let result = app.validate(token).await;
        findings.check(
            code_of(&result) == Code::Unauthenticated,
            format!(
                "{when}: the logged-out {name} token is refused: {:?}",
                code_of(&result)
            ),
        );
    }
    for (username, token) in &acked.deactivated {
        let result = app.validate(token).await;
        findings.check(
            code_of(&result) == Code::Unauthenticated,
            format!(
                "{when}: deactivated {username}'s token is refused: {:?}",
                code_of(&result)
            ),
        );
        let login = bounded(app.login_with(username, PASSWORD)).await;
        findings.check(
            login.is_err(),
            format!(
                "{when}: deactivated {username} cannot log in: {:?}",
                code_of(&login)
            ),
        );
    }
    for username in &acked.registered {
        let login = bounded(app.login_with(username, PASSWORD)).await;
        findings.check(
            login.is_ok(),
            format!(
                "{when}: registered {username} can log in: {:?}",
                code_of(&login)
            ),
        );
    }
}

on_sqlite!(a_full_disk_fails_closed_and_recovers_by_itself);
