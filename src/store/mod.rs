//! The store: the only module that writes SQL.
//!
//! One [`Store`] type serves SQLite (embedded default) and PostgreSQL (production,
//! replicas). Each query is written once in SQL both dialects accept (`$n` placeholders,
//! `ON CONFLICT`, `RETURNING`, partial indexes, `CAST(… AS DOUBLE PRECISION)`) and runs on
//! whichever pool is open through [`with_pool!`]: the body is compiled once per backend,
//! so types are checked against both drivers without a generic-database trait maze.
//! Where the dialects differ the code matches on the backend explicitly.
//!
//! Timestamps are always bound from Rust (`crate::time::now`), never defaulted in SQL:
//! SQLite stores them as RFC 3339 UTC text, which sorts chronologically only when every
//! writer uses the same format.

mod admin;
mod calls;
mod columns;
mod evidence;
mod feedback;
mod health;
mod interactions;
mod personas;
mod plans;
mod profiles;
mod ratings;
mod retention;
mod space_report;
mod spaces;
mod spend;
mod tick_end;
mod ticks;
mod users;
mod verdicts;
mod writer;

use std::path::Path;
use std::str::FromStr;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use uuid::Uuid;

use crate::config::{DatabaseConfig, Secret};

pub use admin::{ActionFilter, DeleteReport, PageCursor, PersonaSummary, TickFilter};
pub use feedback::{DailyRating, FitnessRow, NoteRecord, RatingCell, RatingScope};
pub use health::{Health, Outage};
pub use personas::{ScheduleRow, UpsertOutcome};
pub use profiles::PersonaStats;
pub use retention::Prunable;
pub use spaces::{SpaceCall, SpaceRound};
pub use tick_end::{ProfileEnd, TickEnd, TickProfile};
pub use ticks::SlotClaim;
pub use users::CleanupReport;
pub use verdicts::GoalPassRate;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot create the folder {path} for the SQLite database: {source}")]
    CreateDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("migrating the database failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0} not found")]
    NotFound(String),
    /// A uniqueness rule of the design was hit (expected; callers map it to 409 etc.).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A check or foreign-key constraint refused the write: the caller sent bad data.
    #[error("rejected by the database: {0}")]
    Constraint(String),
    #[error("a stored {table} row is not readable: {message}")]
    Corrupt { table: &'static str, message: String },
    /// The store cannot take writes (or cannot be reached) right now: full, read-only,
    /// unreachable, or failing I/O. Expected during an outage; the daemon waits it out.
    #[error("{0}")]
    Unavailable(Outage),
    /// A batched write failed for a reason shared with the rest of its batch.
    #[error("the write was not committed: {0}")]
    NotCommitted(String),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        use sqlx::error::ErrorKind;
        // A stored text that is not one of its enum's values (see `columns`).
        if let sqlx::Error::ColumnDecode { index, source } = &err {
            return Self::Corrupt {
                table: "a stored row",
                message: format!("column {index}: {source}"),
            };
        }
        if let Some(outage) = Outage::of(&err) {
            return Self::Unavailable(outage);
        }
        if let Some(db) = err.as_database_error() {
            // The database's own words (table, column, constraint names) stay in the log;
            // what callers (and API clients) see says what happened in ours.
            let kind = db.kind();
            if matches!(
                kind,
                ErrorKind::UniqueViolation
                    | ErrorKind::CheckViolation
                    | ErrorKind::ForeignKeyViolation
                    | ErrorKind::NotNullViolation
            ) {
                tracing::debug!(database_message = db.message(), "the database refused a write");
            }
            match kind {
                ErrorKind::UniqueViolation => {
                    return Self::Conflict("another stored record already has this value".into());
                }
                ErrorKind::CheckViolation | ErrorKind::ForeignKeyViolation | ErrorKind::NotNullViolation => {
                    return Self::Constraint(
                        "the values break a rule of the store (a length, a range or a reference)".into(),
                    );
                }
                _ => {}
            }
        }
        Self::Database(err)
    }
}

impl StoreError {
    /// The outage behind this error, if it is one.
    pub fn outage(&self) -> Option<&Outage> {
        match self {
            Self::Unavailable(outage) => Some(outage),
            _ => None,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    Sqlite,
    Postgres,
}

/// The open pools. SQLite has one writer connection (every write, so writers never wait on
/// each other's locks in SQLite's busy handler) and a few readers beside it (WAL lets them
/// read while the writer commits). PostgreSQL has one pool for both.
#[derive(Clone, Debug)]
enum Backend {
    Sqlite { read: SqlitePool, write: SqlitePool },
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the pool for reads, whichever backend it is.
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.backend {
            $crate::store::Backend::Sqlite { read: $pool, .. } => $body,
            $crate::store::Backend::Postgres($pool) => $body,
        }
    };
}
pub(crate) use with_pool;

/// Runs `$body` with `$pool` bound to the pool for writes (SQLite's single writer).
macro_rules! with_writer {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.backend {
            $crate::store::Backend::Sqlite { write: $pool, .. } => $body,
            $crate::store::Backend::Postgres($pool) => $body,
        }
    };
}
pub(crate) use with_writer;

/// Opens a write transaction. SQLite takes the write lock up front (`BEGIN IMMEDIATE`):
/// a deferred transaction that reads then writes can fail with SQLITE_BUSY when another
/// writer got in between, which `busy_timeout` does not cure.
macro_rules! begin_write {
    ($pool:ident) => {
        $crate::store::Begin::begin_write($pool).await?
    };
}
pub(crate) use begin_write;

/// A connection of either backend, borrowed for a few statements (a transaction's, or a
/// savepoint's inside it).
pub(crate) enum Conn<'c> {
    Sqlite(&'c mut sqlx::SqliteConnection),
    Postgres(&'c mut sqlx::PgConnection),
}

impl<'c> From<&'c mut sqlx::SqliteConnection> for Conn<'c> {
    fn from(conn: &'c mut sqlx::SqliteConnection) -> Self {
        Conn::Sqlite(conn)
    }
}

impl<'c> From<&'c mut sqlx::PgConnection> for Conn<'c> {
    fn from(conn: &'c mut sqlx::PgConnection) -> Self {
        Conn::Postgres(conn)
    }
}

impl Conn<'_> {
    /// The same connection, borrowed again for the next statement.
    pub(crate) fn reborrow(&mut self) -> Conn<'_> {
        match self {
            Conn::Sqlite(conn) => Conn::Sqlite(conn),
            Conn::Postgres(conn) => Conn::Postgres(conn),
        }
    }

    pub(crate) fn kind(&self) -> BackendKind {
        match self {
            Conn::Sqlite(_) => BackendKind::Sqlite,
            Conn::Postgres(_) => BackendKind::Postgres,
        }
    }
}

/// Runs `$body` with `$c` bound to the connection of `$conn` (a [`Conn`]), whichever
/// backend it is: the body is compiled once per backend, so each driver type-checks it.
macro_rules! on_conn {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn {
            $crate::store::Conn::Sqlite($c) => $body,
            $crate::store::Conn::Postgres($c) => $body,
        }
    };
}
pub(crate) use on_conn;

pub(crate) trait Begin {
    type Db: sqlx::Database;
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, Self::Db>>;
}

impl Begin for SqlitePool {
    type Db = sqlx::Sqlite;
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        Ok(self.begin_with("BEGIN IMMEDIATE").await?)
    }
}

impl Begin for PgPool {
    type Db = sqlx::Postgres;
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        Ok(self.begin().await?)
    }
}

/// Row counts per table for one tenant (used by `migrate`, cleanup reports and tests).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RowCounts {
    pub users: i64,
    pub persona_users: i64,
    pub personas: i64,
    pub ticks: i64,
    pub actions: i64,
    pub feedback: i64,
    pub profiles: i64,
    pub interactions: i64,
}

#[derive(Clone, Debug)]
pub struct Store {
    backend: Backend,
    url: String,
    health: std::sync::Arc<Health>,
    writer: writer::Writer,
}

/// SQLite readers beside the one writer: a few are enough (reads are short), and each one
/// keeps its own page cache that every commit invalidates.
const SQLITE_READERS: u32 = 4;

/// Whether a connection may go back to the pool. A connection still inside a transaction
/// (its COMMIT or ROLLBACK failed, e.g. on a full disk) would fail every later `BEGIN`: it
/// is closed instead, and the pool opens a fresh one.
fn reusable<C: sqlx::Connection>(
    conn: &mut C,
) -> std::pin::Pin<Box<dyn Future<Output = Result<bool, sqlx::Error>> + Send + '_>> {
    Box::pin(async move {
        if !conn.is_in_transaction() {
            return Ok(true);
        }
        // A rollback queued by a dropped transaction may still be on its way: let it land.
        Ok(conn.ping().await.is_ok() && !conn.is_in_transaction())
    })
}

/// What [`Store::inspect`] found.
#[derive(Debug)]
pub enum Inspection {
    /// The SQLite file does not exist yet (it is created on the first start).
    Missing(std::path::PathBuf),
    Reachable {
        applied: i64,
        known: i64,
    },
}

impl Store {
    /// Opens the database `config.url` names, creating a SQLite file (and its folder) when
    /// missing. `password` is the PostgreSQL password kept out of the URL, if any.
    pub async fn connect(config: &DatabaseConfig, password: Option<&Secret>) -> Result<Self> {
        let redacted = config.url.redacted();
        let connect_err = |source| StoreError::Connect {
            url: redacted.clone(),
            source,
        };
        let backend = match config.url.scheme() {
            "sqlite" => {
                let options = SqliteConnectOptions::from_str(config.url.expose())
                    .map_err(connect_err)?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .foreign_keys(true)
                    .busy_timeout(config.busy_timeout.0)
                    // 2 MiB of page cache for the writer: enough for the hot indexes.
                    .pragma("cache_size", "-2048");
                if let Some(folder) = options.get_filename().parent().filter(|p| !p.as_os_str().is_empty()) {
                    create_folder(folder)?;
                }
                let write = SqlitePoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(config.connect_timeout.0)
                    .after_release(|conn, _| reusable(conn))
                    .connect_with(options.clone())
                    .await
                    .map_err(connect_err)?;
                let read = SqlitePoolOptions::new()
                    .max_connections(config.max_connections.clamp(1, SQLITE_READERS))
                    .min_connections(0)
                    .acquire_timeout(config.connect_timeout.0)
                    .after_release(|conn, _| reusable(conn))
                    // A reader's cache is void after each of the writer's commits: a small
                    // one holds a query's working set, a big one would only hold memory.
                    .connect_with(options.pragma("cache_size", "-512"))
                    .await
                    .map_err(connect_err)?;
                Backend::Sqlite { read, write }
            }
            _ => {
                let mut options = PgConnectOptions::from_str(config.url.expose()).map_err(connect_err)?;
                if let Some(password) = password {
                    options = options.password(password.expose());
                }
                let pool = PgPoolOptions::new()
                    .max_connections(config.max_connections)
                    .acquire_timeout(config.connect_timeout.0)
                    .after_release(|conn, _| reusable(conn))
                    .connect_with(options)
                    .await
                    .map_err(connect_err)?;
                Backend::Postgres(pool)
            }
        };
        let health = std::sync::Arc::new(Health::default());
        let writer = writer::Writer::start(backend.clone(), health.clone());
        Ok(Self {
            backend,
            url: redacted,
            health,
            writer,
        })
    }

    /// Looks at the database without changing it (`config check`): no file is created, no
    /// migration applied, a SQLite file is opened read-only.
    pub async fn inspect(config: &DatabaseConfig, password: Option<&Secret>) -> Result<Inspection> {
        use sqlx::Connection as _;
        let redacted = config.url.redacted();
        let connect_err = |source| StoreError::Connect {
            url: redacted.clone(),
            source,
        };
        let count = "SELECT COUNT(*) FROM _sqlx_migrations WHERE success";
        let (applied, known) = match config.url.scheme() {
            "sqlite" => {
                let options = SqliteConnectOptions::from_str(config.url.expose())
                    .map_err(connect_err)?
                    .create_if_missing(false)
                    .read_only(true);
                let file = options.get_filename().to_path_buf();
                if !file.exists() {
                    return Ok(Inspection::Missing(file));
                }
                let mut conn = sqlx::SqliteConnection::connect_with(&options)
                    .await
                    .map_err(connect_err)?;
                let applied: Option<i64> = sqlx::query_scalar(count).fetch_one(&mut conn).await.ok();
                let _ = conn.close().await;
                (applied, SQLITE_MIGRATIONS.iter().count())
            }
            _ => {
                let mut options = PgConnectOptions::from_str(config.url.expose()).map_err(connect_err)?;
                if let Some(password) = password {
                    options = options.password(password.expose());
                }
                let connect = sqlx::PgConnection::connect_with(&options);
                let mut conn = tokio::time::timeout(config.connect_timeout.0, connect)
                    .await
                    .map_err(|_| connect_err(sqlx::Error::PoolTimedOut))?
                    .map_err(connect_err)?;
                let applied: Option<i64> = sqlx::query_scalar(count).fetch_one(&mut conn).await.ok();
                let _ = conn.close().await;
                (applied, POSTGRES_MIGRATIONS.iter().count())
            }
        };
        // Before the first migration the bookkeeping table does not exist yet.
        Ok(Inspection::Reachable {
            applied: applied.unwrap_or(0),
            known: known as i64,
        })
    }

    /// Opens the store and, when `migrate_on_start`, applies pending migrations.
    pub async fn open(config: &DatabaseConfig, password: Option<&Secret>) -> Result<Self> {
        let store = Self::connect(config, password).await?;
        if config.migrate_on_start {
            store.migrate().await?;
        }
        Ok(store)
    }

    pub fn kind(&self) -> BackendKind {
        match self.backend {
            Backend::Sqlite { .. } => BackendKind::Sqlite,
            Backend::Postgres(_) => BackendKind::Postgres,
        }
    }

    /// The SQLite database file (`None` on PostgreSQL).
    pub fn sqlite_file(&self) -> Option<std::path::PathBuf> {
        match &self.backend {
            Backend::Sqlite { write, .. } => Some(write.connect_options().get_filename().to_path_buf()),
            Backend::Postgres(_) => None,
        }
    }

    /// Whether writes succeed, as the latest write (or probe) found.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Records how a write went: an outage starts or ends here (one log line each).
    pub(crate) fn observe<T>(&self, result: &Result<T>) {
        self.health.observe(result);
    }

    /// A small write that proves the store takes writes (the runner's heartbeat row). Used
    /// to notice the end of an outage without claiming a tick.
    pub async fn probe_write(&self, runner_id: &str, started_at: chrono::DateTime<chrono::Utc>) -> Result<()> {
        let result: Result<()> = async {
            with_writer!(self, pool => {
                sqlx::query(
                    "INSERT INTO runner_heartbeats (runner_id, started_at, seen_at) VALUES ($1, $2, $3)
                     ON CONFLICT (runner_id) DO UPDATE SET seen_at = excluded.seen_at",
                )
                .bind(runner_id)
                .bind(started_at)
                .bind(crate::time::now())
                .execute(pool)
                .await?;
            });
            Ok(())
        }
        .await;
        self.health.probed(&result);
        result
    }

    /// The database URL with any password masked.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Applies pending migrations. On PostgreSQL sqlx holds an advisory lock meanwhile,
    /// so replicas starting together migrate once.
    pub async fn migrate(&self) -> Result<()> {
        match &self.backend {
            Backend::Sqlite { write, .. } => SQLITE_MIGRATIONS.run(write).await?,
            Backend::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await?,
        }
        self.backfill_user_daily().await
    }

    /// `(applied, known)` migration counts: the store is current when they are equal.
    pub async fn migration_status(&self) -> Result<(i64, i64)> {
        let known = match self.backend {
            Backend::Sqlite { .. } => SQLITE_MIGRATIONS.iter().count(),
            Backend::Postgres(_) => POSTGRES_MIGRATIONS.iter().count(),
        } as i64;
        let applied: Result<i64, sqlx::Error> = with_pool!(self, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
                .fetch_one(pool)
                .await
        });
        // Before the first migration the bookkeeping table does not exist yet.
        Ok((applied.unwrap_or(0), known))
    }

    /// Closes the pools, waiting for connections to be returned.
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite { read, write } => {
                read.close().await;
                write.close().await;
            }
            Backend::Postgres(pool) => pool.close().await,
        }
    }

    pub async fn row_counts(&self, tenant: Uuid) -> Result<RowCounts> {
        let counts = with_pool!(self, pool => {
            sqlx::query_as::<_, (i64, i64, i64, i64, i64, i64, i64, i64)>(
                "SELECT
                    (SELECT COUNT(*) FROM users WHERE tenant_id = $1),
                    (SELECT COUNT(*) FROM users WHERE tenant_id = $1 AND kind = 'persona'),
                    (SELECT COUNT(*) FROM personas WHERE tenant_id = $1),
                    (SELECT COUNT(*) FROM persona_ticks WHERE tenant_id = $1),
                    (SELECT COUNT(*) FROM persona_actions WHERE tenant_id = $1),
                    (SELECT COUNT(*) FROM persona_feedback WHERE tenant_id = $1),
                    (SELECT COUNT(*) FROM persona_user_profiles WHERE tenant_id = $1),
                    (SELECT COUNT(*) FROM persona_interactions WHERE tenant_id = $1)",
            )
            .bind(tenant)
            .fetch_one(pool)
            .await?
        });
        let (users, persona_users, personas, ticks, actions, feedback, profiles, interactions) = counts;
        Ok(RowCounts {
            users,
            persona_users,
            personas,
            ticks,
            actions,
            feedback,
            profiles,
            interactions,
        })
    }
}

fn create_folder(folder: &Path) -> Result<()> {
    std::fs::create_dir_all(folder).map_err(|source| StoreError::CreateDir {
        path: folder.display().to_string(),
        source,
    })
}
