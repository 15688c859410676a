//! Test harness: a fresh, empty database per test, on SQLite always and on PostgreSQL when
//! `TEST_DATABASE_URL` is set (each PostgreSQL test gets its own schema, dropped afterwards).
//!
//! Used by the storage contract suite and by the server's integration tests.

pub mod fixtures;
pub mod people;
pub mod scripted;

use std::path::{Path, PathBuf};

use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// A throwaway directory, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Create a new empty directory under the system temp dir.
    pub fn new() -> std::io::Result<Self> {
        let p = std::env::temp_dir().join(format!("coachlibre-test-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&p)?;
        Ok(Self(p))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Which backend a test database lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

/// A fresh database. Dropping it removes its file or schema.
#[derive(Debug)]
pub struct TestDb {
    pub kind: Kind,
    /// URL to hand to `SqlStore::connect` or to the server's config.
    pub url: String,
    dir: TempDir,
    pg_schema: Option<(String, String)>,
}

impl TestDb {
    /// A directory that lives as long as the database (for data dirs in server tests).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A fresh SQLite database file.
    pub fn sqlite() -> anyhow::Result<Self> {
        let dir = TempDir::new()?;
        let url = format!("sqlite://{}", dir.path().join("test.db").display());
        Ok(Self {
            kind: Kind::Sqlite,
            url,
            dir,
            pg_schema: None,
        })
    }

    /// A fresh schema in the PostgreSQL database of `TEST_DATABASE_URL`; `None` when unset.
    pub async fn postgres() -> anyhow::Result<Option<Self>> {
        let Ok(base) = std::env::var("TEST_DATABASE_URL") else {
            return Ok(None);
        };
        if base.trim().is_empty() {
            return Ok(None);
        }
        let schema = format!("t_{}", uuid::Uuid::now_v7().simple());
        let mut conn = PgConnection::connect(&base).await?;
        drop_stale_schemas(&mut conn).await;
        sqlx::raw_sql(&format!("CREATE SCHEMA \"{schema}\""))
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
        Ok(Some(Self {
            kind: Kind::Postgres,
            url,
            dir: TempDir::new()?,
            pg_schema: Some((base, schema)),
        }))
    }

    /// SQLite, plus PostgreSQL when configured: what every contract test runs on.
    pub async fn all() -> anyhow::Result<Vec<Self>> {
        let mut dbs = vec![Self::sqlite()?];
        if let Some(pg) = Self::postgres().await? {
            dbs.push(pg);
        }
        Ok(dbs)
    }
}

/// Test schemas are named `t_<UUID v7>`, so their age is in their name: drop those over an
/// hour old (left by a test whose own drop timed out, or by a killed run). Best effort.
async fn drop_stale_schemas(conn: &mut PgConnection) {
    let Ok(rows) = sqlx::query_scalar::<_, String>(
        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 't\\_%'",
    )
    .fetch_all(&mut *conn)
    .await
    else {
        return;
    };
    let hour_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis().saturating_sub(3_600_000))
        .unwrap_or(0);
    for name in rows {
        let Ok(id) = uuid::Uuid::parse_str(&name[2..]) else {
            continue;
        };
        let Some(ts) = id.get_timestamp() else {
            continue;
        };
        let (secs, nanos) = ts.to_unix();
        let ms = u128::from(secs) * 1000 + u128::from(nanos / 1_000_000);
        if ms < hour_ago {
            let _ = sqlx::raw_sql(&format!(
                "SET lock_timeout = '1s'; DROP SCHEMA IF EXISTS \"{name}\" CASCADE"
            ))
            .execute(&mut *conn)
            .await;
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((base, schema)) = self.pg_schema.take() else {
            return;
        };
        // Drop runs outside any runtime guarantee: use a private one on its own thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let mut conn = PgConnection::connect(&base).await?;
                // A connection the test left in a transaction (a background task cut off by
                // the test's end) would make the drop wait for ever: give up after a while
                // (the schema is then dropped by a later run, see `drop_stale_schemas`).
                sqlx::raw_sql(&format!(
                    "SET lock_timeout = '5s'; DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
                ))
                .execute(&mut conn)
                .await?;
                conn.close().await
            })
            .map_err(std::io::Error::other)
        })
        .join();
    }
}
