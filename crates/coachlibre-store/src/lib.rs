//! SQLite and PostgreSQL implementations of the CoachLibre storage traits.
//!
//! The backend is chosen by the scheme of the database URL (`sqlite:` or `postgres:`). Both
//! share one body of SQL: the statements are written in the common dialect (`$n` parameters,
//! `ON CONFLICT`, `RETURNING`), and the [`on_pool!`] macro expands each method once per
//! driver, so every query runs on the native driver with native types (UUID and TIMESTAMPTZ
//! on PostgreSQL; 16-byte blobs and RFC 3339 text on SQLite) without a second copy of the
//! code. Where the dialects differ (migrations, locking), the code says so explicitly.
//!
//! SQLite runs in WAL mode with `synchronous = FULL` (an acknowledged write survives a crash
//! of the process or the machine), foreign keys on and a busy timeout.

mod coaching;
mod group;
mod jobs;
mod knowledge;
mod migrate;
mod rows;
mod sms;
mod store;
mod work;

use std::str::FromStr;
use std::time::Duration;

use coachlibre_core::store::{StoreError, StoreResult};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use migrate::Applied;

/// Connection settings.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Largest number of pooled connections.
    pub max_connections: u32,
    /// How long a query waits for a connection (and SQLite for a lock).
    pub acquire_timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// Errors while connecting or migrating.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("unsupported database URL '{0}': use sqlite://PATH or postgres://USER@HOST/DB")]
    UnsupportedUrl(String),
    #[error("cannot open the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("migration {version} ({name}) failed: {source}")]
    Migration {
        version: i64,
        name: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("the database has migration {0}, newer than this binary knows: upgrade coachlibre")]
    TooNew(i64),
}

#[derive(Debug, Clone)]
pub(crate) enum Pool {
    /// Reads share a pool; writes go through a pool of one connection, whose page cache
    /// stays warm (a write invalidates the caches of every *other* connection) and which
    /// queues writers in order instead of letting them contend for SQLite's lock.
    Sqlite {
        read: SqlitePool,
        write: SqlitePool,
    },
    Postgres(PgPool),
}

/// Run `$body` with `$p` bound to the concrete pool. The body is compiled once per driver.
macro_rules! on_pool {
    ($self:expr, $p:ident => $body:expr) => {
        match &$self.pool {
            $crate::Pool::Sqlite { read: $p, .. } => $body,
            $crate::Pool::Postgres($p) => $body,
        }
    };
}
pub(crate) use on_pool;

/// Same, for a method that writes. On SQLite, writes run on the one writer connection,
/// queued in order on an in-process lock: waiting in SQLite's busy handler (which sleeps and
/// retries) would put hundreds of milliseconds on the slowest writes.
macro_rules! on_pool_write {
    ($self:expr, $p:ident => $body:expr) => {
        match &$self.pool {
            $crate::Pool::Sqlite { write: $p, .. } => {
                let _writer = $self.writer.lock().await;
                $body
            }
            $crate::Pool::Postgres($p) => $body,
        }
    };
}
pub(crate) use on_pool_write;

/// The SQL store; implements every storage trait of `coachlibre-core`.
#[derive(Debug, Clone)]
pub struct SqlStore {
    pub(crate) pool: Pool,
    /// Taken by every write on SQLite (see [`on_pool_write!`]).
    pub(crate) writer: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Workflow runs being started, on SQLite (see [`group`]).
    pub(crate) run_starts: std::sync::Arc<group::Group<work::RunStart>>,
    /// Jobs being enqueued one at a time (see [`group`]).
    pub(crate) job_inserts: std::sync::Arc<group::Group<jobs::JobInsert>>,
}

/// Move the SQLite write-ahead log into the database file every second, without blocking
/// writers (a passive checkpoint), until the pool closes. Durability does not depend on it:
/// every commit is already synced in the log.
async fn checkpoints(pool: SqlitePool) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if pool.is_closed() {
            return;
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            if pool.is_closed() {
                return;
            }
            tracing::warn!(error = %e, "WAL checkpoint failed");
        }
    }
}

/// Which backend a URL selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// Select the backend by URL scheme.
    pub fn of_url(url: &str) -> Result<Self, ConnectError> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            Err(ConnectError::UnsupportedUrl(redact_url(url)))
        }
    }
}

/// The URL with any password replaced by `***`, for logs and `coachlibre config`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
    let masked = if userinfo.contains(':') {
        format!("{user}:***")
    } else {
        user.to_owned()
    };
    let sep = if rest.contains('/') { "/" } else { "" };
    format!("{scheme}://{masked}@{host}{sep}{path}")
}

impl SqlStore {
    /// Open a pool on `url`. SQLite files (and their directory) are created if missing.
    pub async fn connect(url: &str, opts: &ConnectOptions) -> Result<Self, ConnectError> {
        let pool = match Backend::of_url(url)? {
            Backend::Sqlite => {
                let options = SqliteConnectOptions::from_str(url)
                    .map_err(ConnectError::Connect)?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .foreign_keys(true)
                    .busy_timeout(opts.acquire_timeout)
                    // Reads through a shared memory map instead of a per-connection page
                    // cache that every write from another connection invalidates.
                    .pragma("mmap_size", "1073741824")
                    // Statement journals and sorts in memory, not in temporary files
                    // created and deleted for every multi-row write.
                    .pragma("temp_store", "memory")
                    // Checkpoints run in the background (see `checkpoints`), not inside
                    // whichever write happens to fill the log.
                    .pragma("wal_autocheckpoint", "0");
                if let Some(dir) = options.get_filename().parent()
                    && !dir.as_os_str().is_empty()
                {
                    std::fs::create_dir_all(dir).map_err(|e| ConnectError::Connect(e.into()))?;
                }
                // A file cannot drop the connection: no ping (a round trip to the
                // connection's thread) before every query.
                let write = SqlitePoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(opts.acquire_timeout)
                    .test_before_acquire(false)
                    .connect_with(options.clone())
                    .await
                    .map_err(ConnectError::Connect)?;
                let read = SqlitePoolOptions::new()
                    .max_connections(opts.max_connections)
                    .acquire_timeout(opts.acquire_timeout)
                    .test_before_acquire(false)
                    .connect_with(options)
                    .await
                    .map_err(ConnectError::Connect)?;
                Pool::Sqlite { read, write }
            }
            Backend::Postgres => Pool::Postgres(
                PgPoolOptions::new()
                    .max_connections(opts.max_connections)
                    .acquire_timeout(opts.acquire_timeout)
                    .connect(url)
                    .await
                    .map_err(ConnectError::Connect)?,
            ),
        };
        if let Pool::Sqlite { read, .. } = &pool {
            tokio::spawn(checkpoints(read.clone()));
        }
        Ok(Self {
            pool,
            writer: std::sync::Arc::default(),
            run_starts: std::sync::Arc::default(),
            job_inserts: std::sync::Arc::default(),
        })
    }

    /// Close every connection (waits for queries in flight).
    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite { read, write } => {
                write.close().await;
                read.close().await;
            }
            Pool::Postgres(p) => p.close().await,
        }
    }
}

/// Turn "no row changed" into [`StoreError::NotFound`].
pub(crate) fn one_row(affected: u64) -> StoreResult<()> {
    if affected == 0 {
        Err(StoreError::NotFound)
    } else {
        Ok(())
    }
}

/// Map a driver error to the storage error the domain understands.
pub(crate) fn db_err(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::RowNotFound => StoreError::NotFound,
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            StoreError::Conflict(d.message().to_owned())
        }
        other => StoreError::Backend(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_by_scheme() {
        assert_eq!(
            Backend::of_url("sqlite://data/x.db").unwrap(),
            Backend::Sqlite
        );
        assert_eq!(Backend::of_url("sqlite::memory:").unwrap(), Backend::Sqlite);
        assert_eq!(
            Backend::of_url("postgres://u@h/db").unwrap(),
            Backend::Postgres
        );
        assert_eq!(
            Backend::of_url("postgresql://u@h/db").unwrap(),
            Backend::Postgres
        );
        assert!(Backend::of_url("mysql://u:secret@h/db").is_err());
        let msg = Backend::of_url("mysql://u:secret@h/db")
            .unwrap_err()
            .to_string();
        assert!(!msg.contains("secret"), "{msg}");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:pw@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite://data/c.db"), "sqlite://data/c.db");
        assert_eq!(redact_url("postgres://u:p@ss@h"), "postgres://u:***@h");
    }
}
