//! A database that exists for one test: a temp SQLite file, or a new PostgreSQL
//! database when `AUTHD_TEST_DATABASE_URL` is set.

use super::{Backend, PASSWORD};

/// A database that exists for one test and is removed after it.
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

impl TestDb {
    /// `None` (and a note on stderr) when the backend is not configured here.
    pub async fn create(backend: Backend) -> Option<TestDb> {
        match backend {
            Backend::Sqlite => Some(TestDb::sqlite()),
            Backend::Postgres => TestDb::postgres().await,
        }
    }

    /// The database server this one is on.
    pub fn backend(&self) -> Backend {
        if self.pg.is_some() {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    }

    /// A fresh SQLite file in a temp directory: always available.
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("authd.db");
        TestDb {
            url: format!("sqlite://{}?mode=rwc", path.display()),
            _dir: Some(dir),
            pg: None,
        }
    }

    /// A new database on the server `AUTHD_TEST_DATABASE_URL` names; `None` (and a
    /// note on stderr) when it is not set.
    pub async fn postgres() -> Option<TestDb> {
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
        Some(TestDb {
            url: replace_database(&admin_url, &name),
            _dir: None,
            pg: Some((admin_url, name)),
        })
    }

    /// A direct connection for checks that look at what was stored.
    pub async fn sql(&self) -> sqlx::AnyConnection {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        sqlx::AnyConnection::connect(&self.url)
            .await
            .expect("connect to test database")
    }

    /// Runs one statement (tests that set up rows the API cannot make).
    pub async fn execute(&self, sql: &str) {
        sqlx::query(sql)
            .execute(&mut self.sql().await)
            .await
            .unwrap_or_else(|err| panic!("{sql}: {err}"));
    }

    /// `SELECT COUNT(*) FROM table`.
    pub async fn count(&self, table: &str) -> i64 {
        use sqlx::Row;
        sqlx::query(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&mut self.sql().await)
            .await
            .unwrap_or_else(|err| panic!("count {table}: {err}"))
            .get(0)
    }

    /// Creates the admin `root` (password [`PASSWORD`]) with the real command line,
    /// as an operator makes the first admin.
    pub async fn create_root_admin(&self) {
        let output = self
            .cli(
                &[
                    "user",
                    "create",
                    "--username",
                    "root",
                    "--email",
                    "root@example.com",
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
    }

    /// Runs the `authd` binary (its command line, as an operator would) against
    /// this database, with `stdin` as its input.
    pub async fn cli(&self, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        self.cli_with_env(args, stdin, &[]).await
    }

    /// [`TestDb::cli`] with `env` set too (after `AUTHD_DATABASE_URL`, which it
    /// may replace).
    pub async fn cli_with_env(
        &self,
        args: &[&str],
        stdin: Option<&str>,
        env: &[(&str, &str)],
    ) -> std::process::Output {
        use tokio::io::AsyncWriteExt;
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_authd"))
            .args(args)
            .env("AUTHD_DATABASE_URL", &self.url)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
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
