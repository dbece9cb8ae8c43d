//! Opening the database: parsing `AUTHD_DATABASE_URL`, the connection pools for
//! SQLite (WAL, busy timeout, one writer) and PostgreSQL, and running migrations
//! once across replicas. Unreachable databases are named with their real cause.
//! Statements are not logged: see [`quiet`].
//!
//! A new SQLite database is created readable and writable by its owner only,
//! whatever the umask: SQLite gives its `-wal` and `-shm` files the database file's
//! mode. PostgreSQL's TLS settings (`sslmode`, `sslrootcert`, ...) come in the URL.

use std::{str::FromStr, time::Duration};

use authd_migrations::{Migrator, MigratorTrait};
use sea_orm::{ConnectionTrait, DatabaseConnection, SqlxPostgresConnector, SqlxSqliteConnector};
use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

use super::{locks::AdvisoryLock, Store, StoreError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// How to reach the database.
#[derive(Clone, Debug)]
pub struct DatabaseSettings {
    pub url: String,
    /// Connections in the pool (PostgreSQL) or readers (SQLite).
    pub max_connections: u32,
    /// How long a query may wait for a connection before the database counts as down.
    pub connect_timeout: Duration,
}

/// A URL that cannot name a database we support.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadDatabaseUrl(String);

enum Options {
    Sqlite(SqliteConnectOptions),
    Postgres(PgConnectOptions),
}

/// sqlx logs every statement at debug level. It logs the SQL text, not the bound
/// values, but nothing an operator needs is there and the values sit right beside
/// it in sea-orm's spans (`telemetry` caps those): not formatting statements at
/// all is the safe default. Slow statements stay a warning, SQL text only, because
/// that is how a slow database shows itself.
fn quiet<O: sqlx::ConnectOptions>(options: O) -> O {
    options
        .log_statements(log::LevelFilter::Off)
        .log_slow_statements(log::LevelFilter::Warn, Duration::from_secs(1))
}

fn parse(url: &str) -> Result<Options, BadDatabaseUrl> {
    if url.starts_with("sqlite:") {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| BadDatabaseUrl(format!("not a valid SQLite URL: {e}")))?;
        Ok(Options::Sqlite(
            quiet(options)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5))
                .foreign_keys(true),
        ))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| BadDatabaseUrl(format!("not a valid PostgreSQL URL: {e}")))?;
        Ok(Options::Postgres(quiet(options).application_name("authd")))
    } else {
        Err(BadDatabaseUrl(
            "must start with sqlite:// or postgres://".to_owned(),
        ))
    }
}

/// Whether a SQLite URL asks for the file to be made when missing (`mode=rwc`),
/// rather than naming an in-memory or an existing database.
fn creates_missing_file(url: &str) -> bool {
    let Some((_, query)) = url.split_once('?') else {
        return false;
    };
    query.split('&').any(|pair| pair == "mode=rwc")
}

/// Creates an empty database file, mode 0600, unless it exists: SQLite then opens
/// it as a new database instead of creating one with the umask's mode.
fn create_owner_only(path: &std::path::Path) -> Result<(), OpenError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(OpenError::Create {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Why the store could not be opened; the message is meant for one line of output.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    BadUrl(#[from] BadDatabaseUrl),
    #[error("cannot connect: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("cannot create {}: {source}", path.display())]
    Create {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot migrate: {0}")]
    Migrate(#[source] StoreError),
}

async fn probe_postgres(options: &PgConnectOptions, timeout: Duration) -> Result<(), OpenError> {
    use sqlx::{ConnectOptions, Connection};
    match tokio::time::timeout(timeout, options.connect()).await {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Ok(())
        }
        Ok(Err(err)) => Err(OpenError::Connect(err)),
        Err(_) => Err(OpenError::Connect(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no answer within AUTHD_DATABASE_TIMEOUT",
        )))),
    }
}

/// Whether the SQLite writer connection may go back to the pool: not while sqlx
/// still counts a transaction on it.
///
/// A transaction dropped unended has its ROLLBACK queued on the connection; the
/// ping lets it run first. A count that stays up means the ROLLBACK failed,
/// typically because SQLite had already rolled the transaction back itself after
/// SQLITE_FULL or SQLITE_IOERR. Reused, that connection would turn the next BEGIN
/// into a SAVEPOINT, and a ROLLBACK TO it leaves a transaction open that holds the
/// write lock and that every later "commit" (a RELEASE) only nests into: writes
/// acknowledged, never committed. Closing the connection ends whatever it holds;
/// the pool opens a fresh one for the next write.
async fn writer_is_reusable(conn: &mut sqlx::SqliteConnection) -> Result<bool, sqlx::Error> {
    use sqlx::Connection;
    if !conn.is_in_transaction() {
        return Ok(true);
    }
    conn.ping().await?;
    let reusable = !conn.is_in_transaction();
    if !reusable {
        tracing::warn!("closing the SQLite writer connection: its transaction did not roll back");
    }
    Ok(reusable)
}

impl OpenError {
    /// SQLite's "database is locked" family (SQLITE_BUSY, SQLITE_LOCKED,
    /// SQLITE_BUSY_SNAPSHOT), on connecting or migrating.
    fn is_sqlite_busy(&self) -> bool {
        let err = match self {
            OpenError::Connect(e) => Some(e),
            OpenError::Migrate(StoreError::Unavailable(e)) => super::error::sqlx_error(e),
            _ => None,
        };
        err.is_some_and(|e| {
            matches!(e, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("5" | "6" | "517")))
        })
    }

    /// The database server did not answer or is not accepting connections yet
    /// (refused, timed out, starting up, shutting down): waiting may help. A bad
    /// URL, refused credentials or a failed migration are not this.
    pub fn is_unreachable(&self) -> bool {
        match self {
            OpenError::Connect(err) => is_unreachable(err),
            OpenError::Migrate(StoreError::Unavailable(db)) => {
                super::error::sqlx_error(db).is_none_or(is_unreachable)
            }
            _ => false,
        }
    }
}

fn is_unreachable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
        // 57P03 cannot_connect_now (starting up, in recovery); class 08 connection
        // exceptions; 57P01–02 the server shutting down.
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
        _ => false,
    }
}

impl Store {
    /// Connects, and applies pending migrations (serialised across replicas).
    ///
    /// Processes that open a new SQLite file at the same moment can find it locked
    /// while another switches it to WAL or migrates it: that is retried for a while.
    pub async fn open(settings: &DatabaseSettings) -> Result<Store, OpenError> {
        let mut attempts = 0;
        loop {
            match Self::open_once(settings).await {
                Err(err) if err.is_sqlite_busy() && attempts < 40 => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                result => return result,
            }
        }
    }

    async fn open_once(settings: &DatabaseSettings) -> Result<Store, OpenError> {
        let store = match parse(&settings.url)? {
            Options::Sqlite(options) => {
                if creates_missing_file(&settings.url) {
                    create_owner_only(options.get_filename())?;
                }
                let writer = SqlitePoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(settings.connect_timeout)
                    .after_release(|conn, _| Box::pin(writer_is_reusable(conn)))
                    .connect_with(options.clone())
                    .await
                    .map_err(OpenError::Connect)?;
                let reader = SqlitePoolOptions::new()
                    .max_connections(settings.max_connections.max(1))
                    .acquire_timeout(settings.connect_timeout)
                    .connect_with(options)
                    .await
                    .map_err(OpenError::Connect)?;
                Store {
                    reader: SqlxSqliteConnector::from_sqlx_sqlite_pool(reader),
                    writer: SqlxSqliteConnector::from_sqlx_sqlite_pool(writer),
                    backend: Backend::Sqlite,
                    writes: Default::default(),
                }
            }
            Options::Postgres(options) => {
                // One direct attempt first: a pool would report only "timed out",
                // hiding "connection refused" or "password authentication failed".
                probe_postgres(&options, settings.connect_timeout).await?;
                let pool = PgPoolOptions::new()
                    .max_connections(settings.max_connections.max(2))
                    .acquire_timeout(settings.connect_timeout)
                    .connect_with(options)
                    .await
                    .map_err(OpenError::Connect)?;
                let db = SqlxPostgresConnector::from_sqlx_postgres_pool(pool);
                Store {
                    reader: db.clone(),
                    writer: db,
                    backend: Backend::Postgres,
                    writes: Default::default(),
                }
            }
        };
        store.migrate().await.map_err(OpenError::Migrate)?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        match self.backend {
            Backend::Sqlite => {
                // sea-orm-migration runs SQLite migrations outside a transaction, so
                // two processes starting on one file could both apply them. The
                // writer pool has exactly one connection: BEGIN IMMEDIATE on it
                // takes the database's write lock (waiting out the busy timeout)
                // and makes the whole run atomic.
                self.writer.execute_unprepared("BEGIN IMMEDIATE").await?;
                match Migrator::up(&self.writer, None).await {
                    Ok(()) => {
                        if let Err(err) = self.writer.execute_unprepared("COMMIT").await {
                            // A failed COMMIT may leave the transaction open.
                            let _ = self.writer.execute_unprepared("ROLLBACK").await;
                            return Err(StoreError::from(err));
                        }
                        Ok(())
                    }
                    Err(err) => {
                        let _ = self.writer.execute_unprepared("ROLLBACK").await;
                        Err(StoreError::from(err))
                    }
                }
            }
            Backend::Postgres => {
                // Advisory locks belong to a connection, so take one of our own.
                let conn = self.dedicated_connection().await?;
                let key = AdvisoryLock::Migrations.key();
                let lock = format!("SELECT pg_advisory_lock({key})");
                conn.execute_unprepared(&lock).await?;
                let result = Migrator::up(&conn, None).await;
                let unlock = format!("SELECT pg_advisory_unlock({key})");
                let _ = conn.execute_unprepared(&unlock).await;
                let _ = conn.close().await;
                result.map_err(StoreError::from)
            }
        }
    }

    async fn dedicated_connection(&self) -> Result<DatabaseConnection, StoreError> {
        let pool = self.writer.get_postgres_connection_pool();
        let options = pool.connect_options().as_ref().clone();
        let single = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(|e| {
                StoreError::Unavailable(sea_orm::DbErr::Conn(sea_orm::RuntimeErr::SqlxError(e)))
            })?;
        Ok(SqlxPostgresConnector::from_sqlx_postgres_pool(single))
    }
}
