//! Secrets at rest and on the wire: private signing keys sealed under
//! `AUTHD_KEY_ENCRYPTION_KEY` (sealed at start, refused without the key or with the
//! wrong one, moved to a new key with `keys rewrap`), SQLite files created
//! owner-only whatever the umask, and PostgreSQL over TLS against a private
//! instance this file starts.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Output,
    time::Duration,
};

use authd::{clock::Clock, config::ServeConfig, domain::sealing::KeyEncryptionKey};
use base64::{engine::general_purpose::STANDARD, Engine};
use sqlx::Row;

use crate::{
    helpers::{eventually, free_port, TestApp, TestDb},
    tokens::kid_of,
};

const KEK_VAR: &str = "AUTHD_KEY_ENCRYPTION_KEY";

/// A fresh key encryption key, as `openssl rand -base64 32` prints it.
fn new_kek() -> String {
    STANDARD.encode(rand::random::<[u8; 32]>())
}

fn kek_id(kek: &str) -> String {
    KeyEncryptionKey::from_base64(kek)
        .expect("a good key")
        .id()
        .to_owned()
}

fn with_kek(kek: &str) -> impl FnOnce(&mut ServeConfig) + '_ {
    move |config| config.database.key_encryption.key_encryption_key = Some(kek.to_owned().into())
}

/// Every signing key's kid and private half, as stored.
async fn stored_private_keys(db: &TestDb) -> Vec<(String, String)> {
    sqlx::query("SELECT kid, private_key FROM signing_keys ORDER BY created_at")
        .fetch_all(&mut db.sql().await)
        .await
        .expect("signing keys")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

/// Every private half not erased is sealed under the key of id `id`; answers how
/// many there are.
async fn assert_sealed_with(db: &TestDb, id: &str) -> usize {
    let keys = stored_private_keys(db).await;
    let held: Vec<_> = keys.iter().filter(|(_, key)| !key.is_empty()).collect();
    assert!(!held.is_empty(), "no private key held");
    for (kid, key) in &held {
        assert!(
            key.starts_with(&format!("enc:v1:{id}:")),
            "key {kid} is not sealed under {id}: {}",
            &key[..key.len().min(12)]
        );
        assert!(STANDARD.decode(key).is_err(), "key {kid} is base64 PKCS#8");
    }
    held.len()
}

/// A command that failed with one line on stderr; answers it.
fn one_line_failure(output: &Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    assert!(!output.status.success(), "{what} succeeded: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{what}: not one line: {stderr}");
    stderr
}

fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

async fn with_a_key_no_private_key_is_stored_in_the_clear_and_tokens_survive_a_restart(db: TestDb) {
    let kek = new_kek();
    let mut app = TestApp::spawn_with(db, with_kek(&kek)).await;
    app.register("alice").await;
    let before = app.login("alice").await;
    assert_sealed_with(&app.db, &kek_id(&kek)).await;

    let rotated = app
        .db
        .cli_with_env(&["keys", "rotate"], None, &[(KEK_VAR, &kek)])
        .await;
    assert_success(&rotated, "keys rotate");
    assert_sealed_with(&app.db, &kek_id(&kek)).await;

    app.restart().await;
    assert!(app.validate(&before.access_token).await.is_ok());
    let after = app.login("alice").await;
    assert!(app.validate(&after.access_token).await.is_ok());
    assert_ne!(kid_of(&after.access_token), kid_of(&before.access_token));
}

async fn keys_in_the_clear_are_sealed_at_start(db: TestDb) {
    let mut app = TestApp::spawn(db).await;
    app.register("alice").await;
    let before = app.login("alice").await;
    let clear = stored_private_keys(&app.db).await;
    assert!(clear
        .iter()
        .all(|(_, key)| !key.starts_with("enc:") && STANDARD.decode(key).is_ok()));

    let kek = new_kek();
    app.stop().await;
    app.restart_with(with_kek(&kek)).await;
    assert_sealed_with(&app.db, &kek_id(&kek)).await;
    let kids =
        |keys: Vec<(String, String)>| keys.into_iter().map(|(kid, _)| kid).collect::<Vec<_>>();
    assert_eq!(kids(stored_private_keys(&app.db).await), kids(clear));
    assert!(app.validate(&before.access_token).await.is_ok());
    let after = app.login("alice").await;
    assert!(app.validate(&after.access_token).await.is_ok());
}

async fn migrate_seals_keys_in_the_clear_and_then_refuses_to_run_without_the_key(db: TestDb) {
    let mut app = TestApp::spawn(db).await;
    app.register("alice").await;
    app.stop().await;
    let kek = new_kek();
    let migrate = app
        .db
        .cli_with_env(&["migrate"], None, &[(KEK_VAR, &kek)])
        .await;
    assert_success(&migrate, "migrate with the key");
    assert_sealed_with(&app.db, &kek_id(&kek)).await;

    // Every command that reads or writes keys refuses, naming the setting.
    for args in [
        &["migrate"][..],
        &["keys", "rotate"],
        &["keys", "revoke", "nope"],
    ] {
        let output = app.db.cli(args, None).await;
        let line = one_line_failure(&output, &args.join(" "));
        assert!(line.contains(KEK_VAR), "{line}");
        assert!(!line.contains(&kek));
    }
    // `serve` too: the same start-up, in this process.
    let config = ServeConfig::from_defaults(&app.db.url);
    let err = authd::server::build(&config, Clock::system())
        .await
        .err()
        .expect("serve refuses");
    assert!(format!("{err:#}").starts_with(KEK_VAR), "{err:#}");
}

async fn the_wrong_key_stops_start_up_with_one_line(db: TestDb) {
    let kek = new_kek();
    let mut app = TestApp::spawn_with(db, with_kek(&kek)).await;
    app.register("alice").await;
    app.stop().await;

    let wrong = new_kek();
    let output = app
        .db
        .cli_with_env(&["migrate"], None, &[(KEK_VAR, &wrong)])
        .await;
    let line = one_line_failure(&output, "migrate with the wrong key");
    assert!(
        line.contains(KEK_VAR) && line.contains("another key"),
        "{line}"
    );
    assert!(!line.contains(&wrong) && !line.contains(&kek));

    let dir = tempfile::tempdir().expect("temp dir");
    let (right_file, wrong_file) = (dir.path().join("right"), dir.path().join("wrong"));
    std::fs::write(&right_file, format!("{kek}\n")).expect("write");
    std::fs::write(&wrong_file, format!("{wrong}\n")).expect("write");
    let file = |path: &Path| [("AUTHD_KEY_ENCRYPTION_KEY_FILE", path.display().to_string())];
    let [(var, path)] = file(&wrong_file);
    let output = app
        .db
        .cli_with_env(&["migrate"], None, &[(var, &path)])
        .await;
    let line = one_line_failure(&output, "migrate with the wrong key file");
    assert!(line.contains(KEK_VAR), "{line}");
    // The right key from a file with a trailing newline opens them.
    let [(var, path)] = file(&right_file);
    let output = app
        .db
        .cli_with_env(&["migrate"], None, &[(var, &path)])
        .await;
    assert_success(&output, "migrate with the right key file");
}

async fn a_key_that_is_not_base64_of_32_bytes_stops_start_up(app: TestApp) {
    let short = STANDARD.encode([7u8; 16]);
    for bad in ["not base64 at all!", short.as_str(), "c2VjcmV0"] {
        let output = app
            .db
            .cli_with_env(&["migrate"], None, &[(KEK_VAR, bad)])
            .await;
        let line = one_line_failure(&output, bad);
        assert!(
            line.contains(KEK_VAR) && line.contains("32 bytes"),
            "{line}"
        );
        assert!(!line.contains(bad), "{line}");
    }
    let output = app
        .db
        .cli_with_env(
            &["migrate"],
            None,
            &[
                (KEK_VAR, &new_kek()),
                ("AUTHD_KEY_ENCRYPTION_KEY_FILE", "/k"),
            ],
        )
        .await;
    let line = one_line_failure(&output, "both set");
    assert!(line.contains("AUTHD_KEY_ENCRYPTION_KEY_FILE"), "{line}");
    let output = app
        .db
        .cli_with_env(
            &["migrate"],
            None,
            &[("AUTHD_KEY_ENCRYPTION_KEY_FILE", "/nonexistent/kek")],
        )
        .await;
    let line = one_line_failure(&output, "missing file");
    assert!(line.contains("AUTHD_KEY_ENCRYPTION_KEY_FILE"), "{line}");
}

async fn rewrap_moves_every_key_to_the_new_key_and_the_old_one_no_longer_opens(db: TestDb) {
    let old = new_kek();
    let mut app = TestApp::spawn_with(db, with_kek(&old)).await;
    app.register("alice").await;
    let before = app.login("alice").await;
    // A rotation erases the old key's private half: that one must stay empty.
    let rotated = app
        .db
        .cli_with_env(&["keys", "rotate"], None, &[(KEK_VAR, &old)])
        .await;
    assert_success(&rotated, "keys rotate");
    app.stop().await;

    let new = new_kek();
    let dir = tempfile::tempdir().expect("temp dir");
    let new_file = dir.path().join("new-kek");
    std::fs::write(&new_file, format!("{new}\n")).expect("write");
    let new_file = new_file.display().to_string();
    let rewrap = ["keys", "rewrap", "--new-key-file", &new_file];

    // Without the current key it cannot read them.
    let line = one_line_failure(&app.db.cli(&rewrap, None).await, "rewrap without the key");
    assert!(line.contains(KEK_VAR), "{line}");

    let output = app.db.cli_with_env(&rewrap, None, &[(KEK_VAR, &old)]).await;
    assert_success(&output, "keys rewrap");
    assert!(String::from_utf8_lossy(&output.stdout).contains(&kek_id(&new)));
    assert_eq!(assert_sealed_with(&app.db, &kek_id(&new)).await, 1);
    let erased = stored_private_keys(&app.db)
        .await
        .into_iter()
        .filter(|(_, key)| key.is_empty())
        .count();
    assert_eq!(erased, 1, "the erased key stays empty");
    // Run again, it changes nothing.
    let output = app.db.cli_with_env(&rewrap, None, &[(KEK_VAR, &old)]).await;
    assert_success(&output, "keys rewrap again");

    let line = one_line_failure(
        &app.db
            .cli_with_env(&["migrate"], None, &[(KEK_VAR, &old)])
            .await,
        "the old key after rewrap",
    );
    assert!(
        line.contains(KEK_VAR) && line.contains(&kek_id(&new)),
        "{line}"
    );

    app.restart_with(with_kek(&new)).await;
    assert!(app.validate(&before.access_token).await.is_ok());
    let after = app.login("alice").await;
    assert!(app.validate(&after.access_token).await.is_ok());
}

async fn replicas_with_the_same_key_share_the_database(db: TestDb) {
    let kek = new_kek();
    let app = TestApp::spawn_with(db, with_kek(&kek)).await;
    let replica = app.replica(&[(KEK_VAR, &kek)]).await;
    let there = replica.client().await;
    app.register("alice").await;
    let tokens = there.login("alice").await;
    assert!(app.validate(&tokens.access_token).await.is_ok());

    let rotated = app
        .db
        .cli_with_env(&["keys", "rotate"], None, &[(KEK_VAR, &kek)])
        .await;
    assert_success(&rotated, "keys rotate");
    let new_kid = stored_private_keys(&app.db)
        .await
        .into_iter()
        .rfind(|(_, key)| !key.is_empty())
        .expect("the new key")
        .0;
    // Both replicas open the new key and sign with it.
    for (name, client) in [("this", &*app), ("the replica", &there)] {
        let signed = eventually(Duration::from_secs(5), || async {
            kid_of(&client.login("alice").await.access_token) == new_kid
        })
        .await;
        assert!(signed.is_some(), "{name} did not sign with the new key");
    }
    let fresh = there.login("alice").await;
    assert!(app.validate(&fresh.access_token).await.is_ok());
}

/// The file a `sqlite://PATH?mode=rwc` URL names.
fn sqlite_path(url: &str) -> PathBuf {
    let path = url.strip_prefix("sqlite://").expect("a SQLite URL");
    PathBuf::from(path.split_once('?').map_or(path, |(path, _)| path))
}

/// The permission bits of the database file and those of its `-wal` and `-shm`
/// files that exist.
fn modes(database: &Path) -> Vec<(String, u32)> {
    ["", "-wal", "-shm"]
        .iter()
        .filter_map(|suffix| {
            let path = PathBuf::from(format!("{}{suffix}", database.display()));
            let mode = std::fs::metadata(&path).ok()?.permissions().mode();
            Some((path.display().to_string(), mode & 0o777))
        })
        .collect()
}

/// The database and (with `all`) its `-wal` and `-shm` files exist, mode 0600.
fn assert_owner_only(database: &Path, all: bool) {
    let modes = modes(database);
    assert!(
        !modes.is_empty() && (!all || modes.len() == 3),
        "missing files: {modes:?}"
    );
    for (path, mode) in modes {
        assert_eq!(mode, 0o600, "{path} has mode {mode:o}");
    }
}

/// `authd ARGS` under `umask 000` on `url`.
fn authd_with_open_umask(args: &[&str], url: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new("sh");
    command
        .arg("-c")
        .arg(r#"umask 000 && exec "$0" "$@""#)
        .arg(env!("CARGO_BIN_EXE_authd"))
        .args(args)
        .env("AUTHD_DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true);
    command
}

async fn sqlite_files_are_created_owner_only_whatever_the_umask(app: TestApp) {
    // The server in this process (umask 022 here) after a write.
    app.register("alice").await;
    assert_owner_only(&sqlite_path(&app.db.url), true);

    // The real binary, by commands that create the files. (They may remove -wal
    // and -shm as they close the database.)
    let dir = tempfile::tempdir().expect("temp dir");
    let url = |path: &Path| format!("sqlite://{}?mode=rwc", path.display());
    for args in [&["migrate"][..], &["keys", "rotate"]] {
        let path = dir.path().join(format!("{}.db", args.join("-")));
        let output = authd_with_open_umask(args, &url(&path))
            .output()
            .await
            .expect("run authd");
        assert_success(&output, &args.join(" "));
        assert_owner_only(&path, false);
    }
    // `serve`, all three files while it runs.
    let path = dir.path().join("serve.db");
    let mut serve = authd_with_open_umask(&["serve"], &url(&path));
    serve
        .env("AUTHD_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("AUTHD_HTTP_LISTEN", format!("127.0.0.1:{}", free_port()))
        .stdout(std::process::Stdio::null());
    let mut server = serve.spawn().expect("spawn authd serve");
    let all_there = eventually(Duration::from_secs(20), || {
        let found = modes(&path).len();
        async move { found == 3 }
    })
    .await;
    assert!(all_there.is_some(), "serve did not create its files");
    assert_owner_only(&path, true);
    let _ = server.kill().await;
}

on_both_databases!(
    with_a_key_no_private_key_is_stored_in_the_clear_and_tokens_survive_a_restart,
    keys_in_the_clear_are_sealed_at_start,
    migrate_seals_keys_in_the_clear_and_then_refuses_to_run_without_the_key,
    the_wrong_key_stops_start_up_with_one_line,
    a_key_that_is_not_base64_of_32_bytes_stops_start_up,
    rewrap_moves_every_key_to_the_new_key_and_the_old_one_no_longer_opens,
);
on_postgres!(replicas_with_the_same_key_share_the_database);
on_sqlite!(sqlite_files_are_created_owner_only_whatever_the_umask);

/// A PostgreSQL server of this test's own on 127.0.0.1, TLS only (`hostnossl`
/// connections are rejected), with a certificate for 127.0.0.1 from a CA made here.
/// Stopped, and its directory removed, on drop.
struct TlsPostgres {
    port: u16,
    ca: PathBuf,
    wrong_ca: PathBuf,
    bin: PathBuf,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

impl TlsPostgres {
    /// `None`, with a note, where initdb or runuser is missing.
    fn start() -> Option<TlsPostgres> {
        let Some(bin) = postgres_bin_dir() else {
            eprintln!("skipped: initdb is not installed");
            return None;
        };
        let root = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").ok()?) == 0;
        let postgres_user = std::process::Command::new("id")
            .arg("postgres")
            .output()
            .is_ok_and(|output| output.status.success());
        if !root || !postgres_user || which("runuser").is_none() {
            eprintln!(
                "skipped: this test runs initdb as the postgres user, which takes root, \
                 runuser and a postgres user"
            );
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("authd-pg-tls-")
            .tempdir()
            .expect("temp dir");
        let root = dir.path().to_owned();
        let data = root.join("data");
        let (ca_pem, server_pem, server_key) = certificates("authd test CA");
        let (ca, wrong_ca) = (root.join("ca.crt"), root.join("wrong-ca.crt"));
        std::fs::write(&ca, ca_pem).expect("write CA");
        std::fs::write(&wrong_ca, certificates("another CA").0).expect("write the other CA");
        std::fs::write(root.join("server.crt"), server_pem).expect("write cert");
        let key_path = root.join("server.key");
        std::fs::write(&key_path, server_key).expect("write key");
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600))
            .expect("chmod key");
        run(std::process::Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&root));

        let server = TlsPostgres {
            port: free_port(),
            ca,
            wrong_ca,
            bin,
            data,
            _dir: dir,
        };
        run(server
            .as_postgres("initdb")
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
                "-D",
            ])
            .arg(&server.data));
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{root}'\n\
             ssl = on\nssl_cert_file = '{root}/server.crt'\nssl_key_file = '{root}/server.key'\n\
             fsync = off\nmax_connections = 40\nshared_buffers = 16MB\n",
            server.port,
            root = root.display()
        );
        append(&server.data.join("postgresql.conf"), &conf);
        std::fs::write(
            server.data.join("pg_hba.conf"),
            "local all all trust\n\
             hostssl all all 127.0.0.1/32 trust\n\
             hostnossl all all 127.0.0.1/32 reject\n",
        )
        .expect("write pg_hba.conf");
        run(server
            .as_postgres("pg_ctl")
            .args(["-w", "-t", "60", "-l"])
            .arg(root.join("log"))
            .arg("-D")
            .arg(&server.data)
            .arg("start"));
        Some(server)
    }

    /// `postgres://` to this server, with `params` (the TLS settings).
    fn url(&self, params: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?{params}",
            self.port
        )
    }

    /// A command of the PostgreSQL tools, run as the `postgres` user.
    fn as_postgres(&self, tool: &str) -> std::process::Command {
        let mut command = std::process::Command::new("runuser");
        command
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(tool))
            .current_dir(self._dir.path());
        command
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let _ = self
            .as_postgres("pg_ctl")
            .args(["-w", "-m", "immediate", "-D"])
            .arg(&self.data)
            .arg("stop")
            .output();
    }
}

/// A CA certificate named `ca_name`, and a certificate and key for 127.0.0.1 it
/// signed (PEM).
fn certificates(ca_name: &str) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, ca_name);
    let ca = ca.self_signed(&ca_key).expect("CA certificate");
    let key = KeyPair::generate().expect("server key");
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("server params");
    params
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    let cert = params
        .signed_by(&key, &ca, &ca_key)
        .expect("server certificate");
    (ca.pem(), cert.pem(), key.serialize_pem())
}

fn postgres_bin_dir() -> Option<PathBuf> {
    if let Some(initdb) = which("initdb") {
        let real = std::fs::canonicalize(initdb).ok()?;
        return real.parent().map(Path::to_owned);
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| Some(entry.ok()?.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop()
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(tool))
        .find(|path| path.is_file())
}

fn run(command: &mut std::process::Command) {
    let output = command.output().expect("run a PostgreSQL tool");
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .expect("append to postgresql.conf");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_tls_verifies_the_server_and_refuses_plaintext() {
    let Some(pg) = tokio::task::spawn_blocking(TlsPostgres::start)
        .await
        .expect("start PostgreSQL")
    else {
        return;
    };
    let verify_full = pg.url(&format!(
        "sslmode=verify-full&sslrootcert={}",
        pg.ca.display()
    ));
    // The server over verify-full: register, login, validate. (The SQLite file of
    // the fixture stays unused: the URL below replaces it.)
    let app = TestApp::spawn_with(TestDb::sqlite(), |config| {
        config.database.database_url = verify_full.clone()
    })
    .await;
    app.register("alice").await;
    let tokens = app.login("alice").await;
    assert_eq!(
        app.validate(&tokens.access_token)
            .await
            .expect("valid")
            .username,
        "alice"
    );
    drop(app);

    let cli = TestDb::sqlite();
    let migrate = |url: String| {
        let cli = &cli;
        async move {
            cli.cli_with_env(&["migrate"], None, &[("AUTHD_DATABASE_URL", &url)])
                .await
        }
    };
    assert_success(&migrate(pg.url("sslmode=require")).await, "sslmode=require");
    assert_success(&migrate(verify_full.clone()).await, "sslmode=verify-full");

    let output = migrate(pg.url("sslmode=disable")).await;
    let line = one_line_failure(&output, "sslmode=disable");
    assert!(line.contains("AUTHD_DATABASE_URL"), "{line}");
    assert!(
        line.contains("no encryption") || line.contains("pg_hba"),
        "{line}"
    );

    let wrong_ca = pg.url(&format!(
        "sslmode=verify-full&sslrootcert={}",
        pg.wrong_ca.display()
    ));
    let output = migrate(wrong_ca).await;
    let line = one_line_failure(&output, "verify-full with another CA");
    assert!(line.contains("AUTHD_DATABASE_URL"), "{line}");
    assert!(line.contains("certificate"), "{line}");
}
