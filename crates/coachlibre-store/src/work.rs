//! Storage of tenant skills, business analyses, and workflow definitions and runs, for both
//! drivers (see the crate docs). Structured fields are JSON text.

use async_trait::async_trait;
use coachlibre_core::analysis::{Analysis, AnalysisStatus};
use coachlibre_core::ids::{AnalysisId, TenantId, UserId, WorkflowRunId};
use coachlibre_core::job::{Job, NewJob, StoredSkill};
use coachlibre_core::page::PageRequest;
use coachlibre_core::store::{AnalysisStore, SkillStore, StoreResult, WorkflowStore};
use coachlibre_core::workflow::{RunStatus, StoredWorkflow, WorkflowRun};
use uuid::Uuid;

use crate::coaching::{from_json, parse_enum, to_json};
use crate::group::GroupWrite;
use crate::jobs::{
    anonymous_values, attempts_col, attempts_of, bind_job, chunks, job_insert_sql,
    sqlite_insert_jobs,
};
use crate::rows::{col, fetch_opt, fetch_vec};
use crate::{SqlStore, db_err, on_pool, on_pool_write};
use sqlx::{PgConnection, SqliteConnection};

const SKILL_COLS: &str = "id, tenant_id, name, definition, created_by, created_at, updated_at";

macro_rules! skill_row {
    ($r:expr) => {{
        let r = &$r;
        StoredSkill {
            id: col!(r, "id", Uuid).into(),
            tenant_id: col!(r, "tenant_id", Uuid).into(),
            name: col!(r, "name"),
            definition: col!(r, "definition"),
            created_by: col!(r, "created_by", Option<Uuid>).map(Into::into),
            created_at: col!(r, "created_at"),
            updated_at: col!(r, "updated_at"),
        }
    }};
}

#[async_trait]
impl SkillStore for SqlStore {
    async fn put_skill(&self, s: &StoredSkill) -> StoreResult<()> {
        on_pool_write!(self, p => {
            sqlx::query(&format!(
                "INSERT INTO skills ({SKILL_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (tenant_id, name) DO UPDATE SET definition = $4, \
                 updated_at = $7"
            ))
            .bind(s.id.as_uuid())
            .bind(s.tenant_id.as_uuid())
            .bind(&s.name)
            .bind(&s.definition)
            .bind(s.created_by.map(|u| u.as_uuid()))
            .bind(s.created_at)
            .bind(s.updated_at)
            .execute(p)
            .await
            .map_err(db_err)?;
        });
        Ok(())
    }

    async fn get_skill(&self, tenant: TenantId, name: &str) -> StoreResult<Option<StoredSkill>> {
        on_pool!(self, p => {
            Ok(fetch_opt!(sqlx::query(&format!(
                "SELECT {SKILL_COLS} FROM skills WHERE tenant_id = $1 AND name = $2"
            ))
            .bind(tenant.as_uuid())
            .bind(name), p, skill_row))
        })
    }

    async fn list_skills(&self, tenant: TenantId) -> StoreResult<Vec<StoredSkill>> {
        on_pool!(self, p => {
            Ok(fetch_vec!(sqlx::query(&format!(
                "SELECT {SKILL_COLS} FROM skills WHERE tenant_id = $1 ORDER BY name LIMIT 1000"
            ))
            .bind(tenant.as_uuid()), p, skill_row))
        })
    }

    async fn delete_skill(&self, tenant: TenantId, name: &str) -> StoreResult<bool> {
        on_pool_write!(self, p => {
            Ok(sqlx::query("DELETE FROM skills WHERE tenant_id = $1 AND name = $2")
                .bind(tenant.as_uuid())
                .bind(name)
                .execute(p)
                .await
                .map_err(db_err)?
                .rows_affected()
                == 1)
        })
    }
}

const ANALYSIS_COLS: &str = "id, tenant_id, created_by, url, company, status, job_id, sections, \
    report, error, created_at, updated_at, finished_at";

macro_rules! analysis_row {
    ($r:expr) => {{
        let r = &$r;
        Analysis {
            id: col!(r, "id", Uuid).into(),
            tenant_id: col!(r, "tenant_id", Uuid).into(),
            created_by: col!(r, "created_by", Option<Uuid>).map(Into::into),
            url: col!(r, "url"),
            company: col!(r, "company"),
            status: parse_enum(&col!(r, "status", String), AnalysisStatus::parse)?,
            job_id: col!(r, "job_id", Option<Uuid>).map(Into::into),
            sections: from_json(&col!(r, "sections", String))?,
            report: col!(r, "report"),
            error: col!(r, "error"),
            created_at: col!(r, "created_at"),
            updated_at: col!(r, "updated_at"),
            finished_at: col!(r, "finished_at"),
        }
    }};
}

#[async_trait]
impl AnalysisStore for SqlStore {
    async fn insert_analysis(&self, a: &Analysis) -> StoreResult<()> {
        let sections = to_json(&a.sections)?;
        on_pool_write!(self, p => {
            sqlx::query(&format!(
                "INSERT INTO analyses ({ANALYSIS_COLS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
            ))
            .bind(a.id.as_uuid())
            .bind(a.tenant_id.as_uuid())
            .bind(a.created_by.map(|u| u.as_uuid()))
            .bind(&a.url)
            .bind(&a.company)
            .bind(a.status.as_str())
            .bind(a.job_id.map(|j| j.as_uuid()))
            .bind(&sections)
            .bind(a.report.as_deref())
            .bind(a.error.as_deref())
            .bind(a.created_at)
            .bind(a.updated_at)
            .bind(a.finished_at)
            .execute(p)
            .await
            .map_err(db_err)?;
        });
        Ok(())
    }

    async fn update_analysis(&self, a: &Analysis) -> StoreResult<()> {
        let sections = to_json(&a.sections)?;
        on_pool_write!(self, p => {
            let r = sqlx::query(
                "UPDATE analyses SET company = $3, status = $4, job_id = $5, sections = $6, \
                 report = $7, error = $8, updated_at = $9, finished_at = $10 \
                 WHERE tenant_id = $1 AND id = $2",
            )
            .bind(a.tenant_id.as_uuid())
            .bind(a.id.as_uuid())
            .bind(&a.company)
            .bind(a.status.as_str())
            .bind(a.job_id.map(|j| j.as_uuid()))
            .bind(&sections)
            .bind(a.report.as_deref())
            .bind(a.error.as_deref())
            .bind(a.updated_at)
            .bind(a.finished_at)
            .execute(p)
            .await
            .map_err(db_err)?;
            crate::one_row(r.rows_affected())
        })
    }

    async fn get_analysis(
        &self,
        tenant: TenantId,
        id: AnalysisId,
    ) -> StoreResult<Option<Analysis>> {
        on_pool!(self, p => {
            Ok(fetch_opt!(sqlx::query(&format!(
                "SELECT {ANALYSIS_COLS} FROM analyses WHERE tenant_id = $1 AND id = $2"
            ))
            .bind(tenant.as_uuid())
            .bind(id.as_uuid()), p, analysis_row))
        })
    }

    async fn list_analyses(
        &self,
        tenant: TenantId,
        created_by: Option<UserId>,
        page: &PageRequest,
    ) -> StoreResult<Vec<Analysis>> {
        on_pool!(self, p => {
            Ok(fetch_vec!(sqlx::query(
                "SELECT id, tenant_id, created_by, url, company, status, job_id, sections, \
                 CAST(NULL AS TEXT) AS report, error, created_at, updated_at, finished_at FROM analyses \
                 WHERE tenant_id = $1 AND ($2 IS NULL OR created_by = $2) \
                 AND ($3 IS NULL OR id < $3) ORDER BY id DESC LIMIT $4"
            )
            .bind(tenant.as_uuid())
            .bind(created_by.map(|u| u.as_uuid()))
            .bind(page.cursor)
            .bind(page.fetch_limit()), p, analysis_row))
        })
    }
}

const WORKFLOW_COLS: &str = "id, tenant_id, name, version, definition, created_by, created_at";
const RUN_COLS: &str = "id, tenant_id, workflow, version, definition, status, origin, input, \
    steps, error, job_id, created_by, created_at, updated_at, finished_at";

/// How many columns [`RUN_COLS`] names (and [`bind_run!`] binds).
const RUN_PARAMS: usize = 15;

macro_rules! workflow_row {
    ($r:expr) => {{
        let r = &$r;
        StoredWorkflow {
            id: col!(r, "id", Uuid).into(),
            tenant_id: col!(r, "tenant_id", Uuid).into(),
            name: col!(r, "name"),
            version: attempts_of(col!(r, "version", i32)),
            definition: from_json(&col!(r, "definition", String))?,
            created_by: col!(r, "created_by", Option<Uuid>).map(Into::into),
            created_at: col!(r, "created_at"),
        }
    }};
}

macro_rules! run_row {
    ($r:expr) => {{
        let r = &$r;
        WorkflowRun {
            id: col!(r, "id", Uuid).into(),
            tenant_id: col!(r, "tenant_id", Uuid).into(),
            workflow: col!(r, "workflow"),
            version: attempts_of(col!(r, "version", i32)),
            definition: from_json(&col!(r, "definition", String))?,
            status: parse_enum(&col!(r, "status", String), RunStatus::parse)?,
            trigger: col!(r, "origin"),
            input: from_json(&col!(r, "input", String))?,
            steps: from_json(&col!(r, "steps", String))?,
            error: col!(r, "error"),
            job_id: col!(r, "job_id", Option<Uuid>).map(Into::into),
            created_by: col!(r, "created_by", Option<Uuid>).map(Into::into),
            created_at: col!(r, "created_at"),
            updated_at: col!(r, "updated_at"),
            finished_at: col!(r, "finished_at"),
        }
    }};
}

fn run_insert_sql() -> String {
    format!(
        "INSERT INTO workflow_runs ({RUN_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
         $10, $11, $12, $13, $14, $15)"
    )
}

/// What [`WorkflowStore::update_run`] writes; bind with [`bind_run_update!`].
const RUN_UPDATE_SQL: &str = "UPDATE workflow_runs SET status = $3, steps = $4, \
    error = $5, job_id = $6, updated_at = $7, finished_at = $8 WHERE tenant_id = $1 AND id = $2";

/// A run's changing state, its steps encoded as `$steps`.
macro_rules! bind_run_update {
    ($q:expr, $r:expr, $steps:expr) => {
        $q.bind($r.tenant_id.as_uuid())
            .bind($r.id.as_uuid())
            .bind($r.status.as_str())
            .bind(&$steps)
            .bind($r.error.as_deref())
            .bind($r.job_id.map(|j| j.as_uuid()))
            .bind($r.updated_at)
            .bind($r.finished_at)
    };
}

/// Writing the final states of many runs (the effects of a worker's turn), the way each
/// engine does it fastest. Each is `(run, its steps as JSON)`.
pub(crate) trait UpdateRuns {
    async fn update_runs(&mut self, runs: &[(&WorkflowRun, String)]) -> StoreResult<()>;
}

impl UpdateRuns for sqlx::Transaction<'_, sqlx::Postgres> {
    /// One statement for the lot.
    async fn update_runs(&mut self, runs: &[(&WorkflowRun, String)]) -> StoreResult<()> {
        if runs.is_empty() {
            return Ok(());
        }
        let col = |f: fn(&WorkflowRun) -> Uuid| runs.iter().map(|(r, _)| f(r)).collect::<Vec<_>>();
        sqlx::query(
            "UPDATE workflow_runs SET status = v.status, steps = v.steps, error = v.error, \
             job_id = v.job_id, updated_at = v.updated_at, finished_at = v.finished_at \
             FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], \
             $6::uuid[], $7::timestamptz[], $8::timestamptz[]) \
             AS v(tenant_id, id, status, steps, error, job_id, updated_at, finished_at) \
             WHERE workflow_runs.tenant_id = v.tenant_id AND workflow_runs.id = v.id",
        )
        .bind(col(|r| r.tenant_id.as_uuid()))
        .bind(col(|r| r.id.as_uuid()))
        .bind(
            runs.iter()
                .map(|(r, _)| r.status.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(runs.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>())
        .bind(
            runs.iter()
                .map(|(r, _)| r.error.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(
            runs.iter()
                .map(|(r, _)| r.job_id.map(|j| j.as_uuid()))
                .collect::<Vec<_>>(),
        )
        .bind(runs.iter().map(|(r, _)| r.updated_at).collect::<Vec<_>>())
        .bind(runs.iter().map(|(r, _)| r.finished_at).collect::<Vec<_>>())
        .execute(&mut **self)
        .await
        .map_err(db_err)?;
        Ok(())
    }
}

impl UpdateRuns for sqlx::Transaction<'_, sqlx::Sqlite> {
    /// Up to 32 per statement.
    async fn update_runs(&mut self, runs: &[(&WorkflowRun, String)]) -> StoreResult<()> {
        for range in chunks(runs.len(), 32) {
            let sql = format!(
                "UPDATE workflow_runs SET status = v.column3, steps = v.column4, \
                 error = v.column5, job_id = v.column6, updated_at = v.column7, \
                 finished_at = v.column8 FROM (VALUES {}) AS v \
                 WHERE workflow_runs.tenant_id = v.column1 AND workflow_runs.id = v.column2",
                anonymous_values(range.len(), 8)
            );
            let mut q = sqlx::query(&sql);
            for (r, steps) in &runs[range] {
                q = bind_run_update!(q, r, *steps);
            }
            q.execute(&mut **self).await.map_err(db_err)?;
        }
        Ok(())
    }
}

/// A run's row, its JSON fields encoded as `$def`, `$input`, `$steps`.
macro_rules! bind_run {
    ($q:expr, $r:expr, $def:expr, $input:expr, $steps:expr) => {
        $q.bind($r.id.as_uuid())
            .bind($r.tenant_id.as_uuid())
            .bind(&$r.workflow)
            .bind(attempts_col($r.version))
            .bind(&$def)
            .bind($r.status.as_str())
            .bind(&$r.trigger)
            .bind(&$input)
            .bind(&$steps)
            .bind($r.error.as_deref())
            .bind($r.job_id.map(|j| j.as_uuid()))
            .bind($r.created_by.map(|u| u.as_uuid()))
            .bind($r.created_at)
            .bind($r.updated_at)
            .bind($r.finished_at)
    };
}

/// A run and the job that executes it, encoded, to be inserted in one transaction.
pub(crate) struct RunStart {
    run: WorkflowRun,
    job: Job,
    def: String,
    input: String,
    steps: String,
    payload: String,
}

impl RunStart {
    fn new(run: &WorkflowRun, new: &NewJob) -> StoreResult<Self> {
        let job = Job::from_new(new);
        Ok(Self {
            def: to_json(&run.definition)?,
            input: to_json(&run.input)?,
            steps: to_json(&run.steps)?,
            payload: to_json(&job.payload)?,
            run: run.clone(),
            job,
        })
    }
}

#[async_trait]
impl GroupWrite for RunStart {
    type Output = ();
    /// Two inserts per run: PostgreSQL is better served by concurrent transactions.
    const ON_POSTGRES: bool = false;

    /// The runs, then their jobs, up to 32 rows per statement.
    async fn sqlite(batch: &[&Self], conn: &mut SqliteConnection) -> StoreResult<Vec<()>> {
        for range in chunks(batch.len(), 32) {
            let sql = format!(
                "INSERT INTO workflow_runs ({RUN_COLS}) VALUES {}",
                anonymous_values(range.len(), RUN_PARAMS)
            );
            let mut q = sqlx::query(&sql);
            for s in &batch[range.clone()] {
                q = bind_run!(q, s.run, s.def, s.input, s.steps);
            }
            q.execute(&mut *conn).await.map_err(db_err)?;
            let jobs: Vec<(&Job, &str)> = batch[range]
                .iter()
                .map(|s| (&s.job, s.payload.as_str()))
                .collect();
            sqlite_insert_jobs(conn, &jobs).await?;
        }
        Ok(vec![(); batch.len()])
    }

    async fn postgres(batch: &[&Self], conn: &mut PgConnection) -> StoreResult<Vec<()>> {
        let (run_sql, job_sql) = (run_insert_sql(), job_insert_sql());
        for s in batch {
            bind_run!(sqlx::query(&run_sql), s.run, s.def, s.input, s.steps)
                .execute(&mut *conn)
                .await
                .map_err(db_err)?;
            bind_job!(sqlx::query(&job_sql), s.job, s.payload)
                .execute(&mut *conn)
                .await
                .map_err(db_err)?;
        }
        Ok(vec![(); batch.len()])
    }
}

#[async_trait]
impl WorkflowStore for SqlStore {
    async fn insert_workflow(&self, w: &StoredWorkflow) -> StoreResult<()> {
        let def = to_json(&w.definition)?;
        on_pool_write!(self, p => {
            sqlx::query(&format!(
                "INSERT INTO workflows ({WORKFLOW_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
            ))
            .bind(w.id.as_uuid())
            .bind(w.tenant_id.as_uuid())
            .bind(&w.name)
            .bind(attempts_col(w.version))
            .bind(&def)
            .bind(w.created_by.map(|u| u.as_uuid()))
            .bind(w.created_at)
            .execute(p)
            .await
            .map_err(db_err)?;
        });
        Ok(())
    }

    async fn latest_workflow(
        &self,
        tenant: TenantId,
        name: &str,
    ) -> StoreResult<Option<StoredWorkflow>> {
        on_pool!(self, p => {
            Ok(fetch_opt!(sqlx::query(&format!(
                "SELECT {WORKFLOW_COLS} FROM workflows WHERE tenant_id = $1 AND name = $2 \
                 ORDER BY version DESC LIMIT 1"
            ))
            .bind(tenant.as_uuid())
            .bind(name), p, workflow_row))
        })
    }

    async fn list_workflows(&self, tenant: TenantId) -> StoreResult<Vec<StoredWorkflow>> {
        on_pool!(self, p => {
            Ok(fetch_vec!(sqlx::query(&format!(
                "SELECT {WORKFLOW_COLS} FROM workflows w WHERE tenant_id = $1 AND version = \
                 (SELECT MAX(version) FROM workflows v WHERE v.tenant_id = w.tenant_id \
                 AND v.name = w.name) ORDER BY name LIMIT 1000"
            ))
            .bind(tenant.as_uuid()), p, workflow_row))
        })
    }

    async fn insert_run(&self, r: &WorkflowRun) -> StoreResult<()> {
        let (def, input, steps) = (
            to_json(&r.definition)?,
            to_json(&r.input)?,
            to_json(&r.steps)?,
        );
        let sql = run_insert_sql();
        on_pool_write!(self, p => {
            bind_run!(sqlx::query(&sql), r, def, input, steps)
                .execute(p)
                .await
                .map_err(db_err)?;
        });
        Ok(())
    }

    async fn insert_run_with_job(&self, r: &WorkflowRun, new: &NewJob) -> StoreResult<()> {
        // Runs started at the same time share a commit (see `group`).
        let start = RunStart::new(r, new)?;
        self.run_starts
            .commit(&self.pool, &self.writer, start)
            .await
    }

    async fn update_run(&self, r: &WorkflowRun) -> StoreResult<()> {
        let steps = to_json(&r.steps)?;
        on_pool_write!(self, p => {
            let done = bind_run_update!(sqlx::query(RUN_UPDATE_SQL), r, steps)
                .execute(p)
                .await
                .map_err(db_err)?;
            crate::one_row(done.rows_affected())
        })
    }

    async fn get_run(
        &self,
        tenant: TenantId,
        id: WorkflowRunId,
    ) -> StoreResult<Option<WorkflowRun>> {
        on_pool!(self, p => {
            Ok(fetch_opt!(sqlx::query(&format!(
                "SELECT {RUN_COLS} FROM workflow_runs WHERE tenant_id = $1 AND id = $2"
            ))
            .bind(tenant.as_uuid())
            .bind(id.as_uuid()), p, run_row))
        })
    }

    async fn list_runs(
        &self,
        tenant: TenantId,
        workflow: Option<&str>,
        page: &PageRequest,
    ) -> StoreResult<Vec<WorkflowRun>> {
        on_pool!(self, p => {
            Ok(fetch_vec!(sqlx::query(&format!(
                "SELECT {RUN_COLS} FROM workflow_runs WHERE tenant_id = $1 \
                 AND ($2 IS NULL OR workflow = $2) AND ($3 IS NULL OR id < $3) \
                 ORDER BY id DESC LIMIT $4"
            ))
            .bind(tenant.as_uuid())
            .bind(workflow)
            .bind(page.cursor)
            .bind(page.fetch_limit()), p, run_row))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_row_binds_one_parameter_per_column() {
        assert_eq!(RUN_COLS.split(',').count(), RUN_PARAMS);
        assert!(run_insert_sql().contains(&format!("${RUN_PARAMS})")));
    }
}
