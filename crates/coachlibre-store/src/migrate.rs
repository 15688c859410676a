//! Embedded migrations. Pending migrations are applied in order inside one transaction and
//! recorded in `schema_migrations`, so a failed upgrade leaves the schema as it was. On
//! PostgreSQL an advisory lock serialises nodes that start together. A database migrated by
//! a newer binary is refused rather than misread.

use crate::{ConnectError, Pool, SqlStore};

struct Migration {
    version: i64,
    name: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "foundation",
        sqlite: include_str!("../migrations/sqlite/0001_foundation.sql"),
        postgres: include_str!("../migrations/postgres/0001_foundation.sql"),
    },
    Migration {
        version: 2,
        name: "agents",
        sqlite: include_str!("../migrations/sqlite/0002_agents.sql"),
        postgres: include_str!("../migrations/postgres/0002_agents.sql"),
    },
    Migration {
        version: 3,
        name: "knowledge",
        sqlite: include_str!("../migrations/sqlite/0003_knowledge.sql"),
        postgres: include_str!("../migrations/postgres/0003_knowledge.sql"),
    },
    Migration {
        version: 4,
        name: "turn_writes",
        sqlite: include_str!("../migrations/sqlite/0004_turn_writes.sql"),
        postgres: include_str!("../migrations/postgres/0004_turn_writes.sql"),
    },
    Migration {
        version: 5,
        name: "jobs",
        sqlite: include_str!("../migrations/sqlite/0005_jobs.sql"),
        postgres: include_str!("../migrations/postgres/0005_jobs.sql"),
    },
    Migration {
        version: 6,
        name: "queue_vacuum",
        sqlite: include_str!("../migrations/sqlite/0006_queue_vacuum.sql"),
        postgres: include_str!("../migrations/postgres/0006_queue_vacuum.sql"),
    },
    Migration {
        version: 7,
        name: "skills",
        sqlite: include_str!("../migrations/sqlite/0007_skills.sql"),
        postgres: include_str!("../migrations/postgres/0007_skills.sql"),
    },
    Migration {
        version: 8,
        name: "analyses",
        sqlite: include_str!("../migrations/sqlite/0008_analyses.sql"),
        postgres: include_str!("../migrations/postgres/0008_analyses.sql"),
    },
    Migration {
        version: 9,
        name: "workflows",
        sqlite: include_str!("../migrations/sqlite/0009_workflows.sql"),
        postgres: include_str!("../migrations/postgres/0009_workflows.sql"),
    },
    Migration {
        version: 10,
        name: "citations",
        sqlite: include_str!("../migrations/sqlite/0010_citations.sql"),
        postgres: include_str!("../migrations/postgres/0010_citations.sql"),
    },
    Migration {
        version: 11,
        name: "sms",
        sqlite: include_str!("../migrations/sqlite/0011_sms.sql"),
        postgres: include_str!("../migrations/postgres/0011_sms.sql"),
    },
];

/// Arbitrary constant naming CoachLibre's migration lock.
const PG_LOCK_KEY: i64 = 0x0C0A_C11B;

/// A migration that was applied by this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub version: i64,
    pub name: &'static str,
}

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)";

fn failed(version: i64, name: &'static str) -> impl Fn(sqlx::Error) -> ConnectError {
    move |source| ConnectError::Migration {
        version,
        name,
        source,
    }
}

impl SqlStore {
    /// Apply pending migrations; returns those applied now.
    pub async fn migrate(&self) -> Result<Vec<Applied>, ConnectError> {
        let setup = failed(0, "schema_migrations");
        let known = MIGRATIONS.last().map_or(0, |m| m.version);
        let postgres = matches!(self.pool, Pool::Postgres(_));
        let mut applied = Vec::new();
        crate::on_pool!(self, p => {
            let mut tx = p.begin().await.map_err(&setup)?;
            if postgres {
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(PG_LOCK_KEY)
                    .execute(&mut *tx)
                    .await
                    .map_err(&setup)?;
            }
            sqlx::raw_sql(CREATE_TABLE).execute(&mut *tx).await.map_err(&setup)?;
            let current: Option<i64> =
                sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations")
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(&setup)?;
            let current = current.unwrap_or(0);
            if current > known {
                return Err(ConnectError::TooNew(current));
            }
            for m in MIGRATIONS.iter().filter(|m| m.version > current) {
                let sql = if postgres { m.postgres } else { m.sqlite };
                let fail = failed(m.version, m.name);
                sqlx::raw_sql(sql).execute(&mut *tx).await.map_err(&fail)?;
                sqlx::query(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                )
                .bind(m.version)
                .bind(m.name)
                .bind(coachlibre_core::now().to_rfc3339())
                .execute(&mut *tx)
                .await
                .map_err(&fail)?;
                applied.push(Applied { version: m.version, name: m.name });
            }
            tx.commit().await.map_err(&setup)?;
        });
        Ok(applied)
    }
}
