//! The durable job queue, its schedules and reminder delivery, for both drivers.
//!
//! Claiming is one `UPDATE ... WHERE id IN (SELECT ... LIMIT n) RETURNING`: on PostgreSQL the
//! inner select takes `FOR UPDATE SKIP LOCKED`, so concurrent workers skip each other's rows
//! instead of waiting; on SQLite the statement runs under the database's single write lock (and
//! this process's writer queue), which makes it atomic across threads and processes alike.

use std::collections::HashSet;

use async_trait::async_trait;
use coachlibre_core::Timestamp;
use coachlibre_core::conversation::Message;
use coachlibre_core::goal::Reminder;
use coachlibre_core::ids::{JobId, ReminderId, ScheduleId, TenantId};
use coachlibre_core::job::{
    Effect, Job, JobFilter, JobStatus, NewJob, Outcome, Progress, Schedule,
};
use coachlibre_core::page::PageRequest;
use coachlibre_core::store::{JobStore, StoreResult};
use uuid::Uuid;

use crate::coaching::{
    bind_message, from_json, message_insert_sql, parse_enum, reminder_row, to_json,
};
use crate::group::GroupWrite;
use crate::rows::{col, fetch_opt, fetch_vec};
use crate::work::UpdateRuns;
use crate::{Pool, SqlStore, db_err, on_pool, on_pool_write};

const JOB_COLS: &str = "id, tenant_id, created_by, kind, payload, priority, status, run_at, \
    attempts, max_attempts, idempotency_key, worker, lease_until, progress, result, last_error, \
    created_at, updated_at, finished_at";

const SCHEDULE_COLS: &str = "id, tenant_id, name, cron, timezone, kind, payload, enabled, \
    next_run_at, last_run_at, created_by, created_at";

pub(crate) fn attempts_of(v: i32) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(0)
}

pub(crate) fn attempts_col(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

macro_rules! job_row {
    ($r:expr) => {{
        let r = &$r;
        Job {
            id: col!(r, "id", Uuid).into(),
            tenant_id: col!(r, "tenant_id", Uuid).into(),
            created_by: col!(r, "created_by", Option<Uuid>).map(Into::into),
            kind: col!(r, "kind"),
            payload: from_json(&col!(r, "payload", String))?,
            priority: col!(r, "priority", i32),
            status: parse_enum(&col!(r, "status", String), JobStatus::parse)?,
            run_at: col!(r, "run_at"),
            attempts: attempts_of(col!(r, "attempts", i32)),
            max_attempts: attempts_of(col!(r, "max_attempts", i32)),
            idempotency_key: col!(r, "idempotency_key"),
            worker: col!(r, "worker"),
            lease_until: col!(r, "lease_until"),
            progress: match col!(r, "progress", Option<String>) {
                Some(p) => Some(from_json::<Progress>(&p)?),
                None => None,
            },
            result: match col!(r, "result", Option<String>) {
                Some(v) => Some(from_json(&v)?),
                None => None,
            },
            last_error: col!(r, "last_error"),
            created_at: col!(r, "created_at"),
            updated_at: col!(r, "updated_at"),
            finished_at: col!(r, "finished_at"),
        }
    }};
}

macro_rules! schedule_row {
    ($r:expr) => {{
        let r = &$r;
        Schedule {
            id: col!(r, "id", Uuid).into(),
            tenant_id: col!(r, "tenant_id", Uuid).into(),
            name: col!(r, "name"),
            cron: col!(r, "cron"),
            timezone: col!(r, "timezone"),
            kind: col!(r, "kind"),
            payload: from_json(&col!(r, "payload", String))?,
            enabled: col!(r, "enabled", bool),
            next_run_at: col!(r, "next_run_at"),
            last_run_at: col!(r, "last_run_at"),
            created_by: col!(r, "created_by", Option<Uuid>).map(Into::into),
            created_at: col!(r, "created_at"),
        }
    }};
}

/// Parameters of one job row in [`job_insert_sql`].
const JOB_PARAMS: usize = 19;

/// `INSERT` of a whole job, skipping a duplicate idempotency key; bind with [`bind_job!`].
pub(crate) fn job_insert_sql() -> String {
    format!(
        "INSERT INTO jobs ({JOB_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, \
         $12, $13, $14, $15, $16, $17, $18, $19) \
         ON CONFLICT (tenant_id, idempotency_key) DO NOTHING"
    )
}

/// SQLite: `INSERT` of `rows` whole jobs in one statement; bind each with [`bind_job!`], in
/// order.
fn sqlite_jobs_insert_sql(rows: usize) -> String {
    format!(
        "INSERT INTO jobs ({JOB_COLS}) VALUES {} \
         ON CONFLICT (tenant_id, idempotency_key) DO NOTHING",
        anonymous_values(rows, JOB_PARAMS)
    )
}

/// `(?, ..), (..)`: `rows` tuples of `width` anonymous parameters, bound in order. SQLite
/// only: binding a *numbered* parameter makes the driver look its name up in a list that
/// SQLite scans, which is quadratic in the number of parameters.
pub(crate) fn anonymous_values(rows: usize, width: usize) -> String {
    let tuple = format!("({})", vec!["?"; width].join(", "));
    vec![tuple; rows].join(", ")
}

/// Split `len` rows into statements of at most `max` rows, each a power of two: a handful of
/// distinct statements stay prepared in the connection's cache whatever the batch sizes.
pub(crate) fn chunks(len: usize, max: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    let mut start = 0;
    std::iter::from_fn(move || {
        let left = len - start;
        if left == 0 {
            return None;
        }
        let size = if left >= max { max } else { 1 << left.ilog2() };
        let range = start..start + size;
        start += size;
        Some(range)
    })
}

/// A new job's row, its payload encoded as `$payload`.
macro_rules! bind_job {
    ($q:expr, $j:expr, $payload:expr) => {
        $q.bind($j.id.as_uuid())
            .bind($j.tenant_id.as_uuid())
            .bind($j.created_by.map(|u| u.as_uuid()))
            .bind(&$j.kind)
            .bind(&$payload)
            .bind($j.priority)
            .bind($j.status.as_str())
            .bind($j.run_at)
            .bind(attempts_col($j.attempts))
            .bind(attempts_col($j.max_attempts))
            .bind($j.idempotency_key.as_deref())
            .bind($j.worker.as_deref())
            .bind($j.lease_until)
            .bind(None::<String>)
            .bind(None::<String>)
            .bind($j.last_error.as_deref())
            .bind($j.created_at)
            .bind($j.updated_at)
            .bind($j.finished_at)
    };
}
pub(crate) use bind_job;

/// `UPDATE` recording a retry: `$1` id, `$2` worker, `$3` time, `$4` error, `$5` retry time.
/// Conditional on the worker still holding the job (as are the others).
const RETRY_SQL: &str = "UPDATE jobs SET \
    status = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'queued' END, \
    finished_at = CASE WHEN attempts >= max_attempts THEN $3 ELSE NULL END, \
    last_error = $4, run_at = $5, lease_until = NULL, updated_at = $3 \
    WHERE id = $1 AND worker = $2 AND status = 'running'";

/// `UPDATE` recording a permanent failure: `$1` id, `$2` worker, `$3` time, `$4` error.
const FAILED_SQL: &str = "UPDATE jobs SET status = 'failed', last_error = $4, \
    lease_until = NULL, finished_at = $3, updated_at = $3 \
    WHERE id = $1 AND worker = $2 AND status = 'running'";

/// A job to insert, its payload encoded; its output says whether it was inserted (not if a
/// job of its tenant already has its idempotency key).
pub(crate) struct JobInsert {
    job: Job,
    payload: String,
}

#[async_trait]
impl GroupWrite for JobInsert {
    type Output = bool;
    const ON_POSTGRES: bool = true;

    async fn sqlite(batch: &[&Self], conn: &mut sqlx::SqliteConnection) -> StoreResult<Vec<bool>> {
        let ids = sqlite_insert_jobs(conn, &Self::rows(batch)).await?;
        Ok(Self::inserted(batch, ids))
    }

    async fn postgres(batch: &[&Self], conn: &mut sqlx::PgConnection) -> StoreResult<Vec<bool>> {
        let ids = pg_insert_jobs(conn, &Self::rows(batch)).await?;
        Ok(Self::inserted(batch, ids))
    }
}

impl JobInsert {
    fn rows<'a>(batch: &[&'a Self]) -> Vec<(&'a Job, &'a str)> {
        batch.iter().map(|w| (&w.job, w.payload.as_str())).collect()
    }

    /// Whether each of `batch` is among the `ids` inserted.
    fn inserted(batch: &[&Self], ids: Vec<Uuid>) -> Vec<bool> {
        let ids: HashSet<Uuid> = ids.into_iter().collect();
        batch
            .iter()
            .map(|w| ids.contains(&w.job.id.as_uuid()))
            .collect()
    }
}

/// SQLite: insert new jobs (`(job, payload JSON)`), up to 64 rows per statement (each is a
/// hand-off to the connection's thread); returns the ids inserted (not those whose
/// idempotency key a job of their tenant already has).
pub(crate) async fn sqlite_insert_jobs(
    conn: &mut sqlx::SqliteConnection,
    rows: &[(&Job, &str)],
) -> StoreResult<Vec<Uuid>> {
    let mut inserted = Vec::with_capacity(rows.len());
    for range in chunks(rows.len(), 64) {
        let sql = format!("{} RETURNING id", sqlite_jobs_insert_sql(range.len()));
        let mut q = sqlx::query_scalar::<_, Uuid>(&sql);
        for (job, payload) in &rows[range] {
            q = bind_job!(q, job, *payload);
        }
        inserted.extend(q.fetch_all(&mut *conn).await.map_err(db_err)?);
    }
    Ok(inserted)
}

/// PostgreSQL: insert new jobs (`(job, payload JSON)`) in one statement; returns the ids
/// inserted (not those whose idempotency key a job of their tenant already has).
async fn pg_insert_jobs(
    conn: &mut sqlx::PgConnection,
    rows: &[(&Job, &str)],
) -> StoreResult<Vec<Uuid>> {
    let col = |f: &dyn Fn(&Job) -> Uuid| rows.iter().map(|(j, _)| f(j)).collect::<Vec<_>>();
    let ids = col(&|j| j.id.as_uuid());
    let tenants = col(&|j| j.tenant_id.as_uuid());
    let by: Vec<Option<Uuid>> = rows
        .iter()
        .map(|(j, _)| j.created_by.map(|u| u.as_uuid()))
        .collect();
    let kinds: Vec<&str> = rows.iter().map(|(j, _)| j.kind.as_str()).collect();
    let payloads: Vec<&str> = rows.iter().map(|(_, p)| *p).collect();
    let priorities: Vec<i32> = rows.iter().map(|(j, _)| j.priority).collect();
    let run_at: Vec<Timestamp> = rows.iter().map(|(j, _)| j.run_at).collect();
    let max: Vec<i32> = rows
        .iter()
        .map(|(j, _)| attempts_col(j.max_attempts))
        .collect();
    let keys: Vec<Option<&str>> = rows
        .iter()
        .map(|(j, _)| j.idempotency_key.as_deref())
        .collect();
    let created: Vec<Timestamp> = rows.iter().map(|(j, _)| j.created_at).collect();
    sqlx::query_scalar(
        "INSERT INTO jobs (id, tenant_id, created_by, kind, payload, priority, \
         status, run_at, attempts, max_attempts, idempotency_key, created_at, \
         updated_at) \
         SELECT id, tenant_id, created_by, kind, payload, priority, 'queued', run_at, \
         0, max_attempts, key, created, created \
         FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], \
         $6::int4[], $7::timestamptz[], $8::int4[], $9::text[], $10::timestamptz[]) \
         AS v(id, tenant_id, created_by, kind, payload, priority, run_at, \
         max_attempts, key, created) \
         ON CONFLICT (tenant_id, idempotency_key) DO NOTHING RETURNING id",
    )
    .bind(&ids)
    .bind(&tenants)
    .bind(&by)
    .bind(&kinds)
    .bind(&payloads)
    .bind(&priorities)
    .bind(&run_at)
    .bind(&max)
    .bind(&keys)
    .bind(&created)
    .fetch_all(&mut *conn)
    .await
    .map_err(db_err)
}

/// Recording many successes at once, the way each engine does it fastest.
trait RecordSuccesses {
    /// `(id, result JSON)` of jobs `worker` still holds; returns the ids it held.
    async fn record_successes(
        &mut self,
        worker: &str,
        done: &[(Uuid, String)],
        now: Timestamp,
    ) -> StoreResult<Vec<Uuid>>;
}

impl RecordSuccesses for sqlx::Transaction<'_, sqlx::Postgres> {
    /// One statement for the lot (a round trip each would dominate).
    async fn record_successes(
        &mut self,
        worker: &str,
        done: &[(Uuid, String)],
        now: Timestamp,
    ) -> StoreResult<Vec<Uuid>> {
        if done.is_empty() {
            return Ok(Vec::new());
        }
        let (ids, results): (Vec<Uuid>, Vec<String>) = done.iter().cloned().unzip();
        sqlx::query_scalar(
            "UPDATE jobs SET status = 'succeeded', result = v.result, lease_until = NULL, \
             finished_at = $3, updated_at = $3 \
             FROM UNNEST($1::uuid[], $2::text[]) AS v(id, result) \
             WHERE jobs.id = v.id AND jobs.worker = $4 AND jobs.status = 'running' \
             RETURNING jobs.id",
        )
        .bind(&ids)
        .bind(&results)
        .bind(now)
        .bind(worker)
        .fetch_all(&mut **self)
        .await
        .map_err(db_err)
    }
}

impl RecordSuccesses for sqlx::Transaction<'_, sqlx::Sqlite> {
    /// Up to 64 per statement (each statement is a hand-off to the connection's thread).
    async fn record_successes(
        &mut self,
        worker: &str,
        done: &[(Uuid, String)],
        now: Timestamp,
    ) -> StoreResult<Vec<Uuid>> {
        let mut held = Vec::with_capacity(done.len());
        for range in chunks(done.len(), 64) {
            let sql = format!(
                "UPDATE jobs SET status = 'succeeded', result = v.column2, lease_until = NULL, \
                 finished_at = ?, updated_at = ? FROM (VALUES {}) AS v \
                 WHERE jobs.id = v.column1 AND jobs.worker = ? AND jobs.status = 'running' \
                 RETURNING jobs.id",
                anonymous_values(range.len(), 2)
            );
            let mut q = sqlx::query_scalar::<_, Uuid>(&sql).bind(now).bind(now);
            for (id, result) in &done[range] {
                q = q.bind(id).bind(result);
            }
            held.extend(
                q.bind(worker)
                    .fetch_all(&mut **self)
                    .await
                    .map_err(db_err)?,
            );
        }
        Ok(held)
    }
}

impl SqlStore {
    async fn job_by_key(&self, tenant: TenantId, key: &str) -> StoreResult<Option<Job>> {
        on_pool!(self, p => {
            Ok(fetch_opt!(sqlx::query(&format!(
                "SELECT {JOB_COLS} FROM jobs WHERE tenant_id = $1 AND idempotency_key = $2"
            ))
            .bind(tenant.as_uuid())
            .bind(key), p, job_row))
        })
    }

    /// A worker's turn, in one transaction: record `outcomes` (counting those still held),
    /// then claim up to `limit` due jobs until `lease_until`.
    async fn cycle(
        &self,
        worker: &str,
        outcomes: &[(JobId, Outcome)],
        now: Timestamp,
        claim: Option<(u32, Timestamp)>,
    ) -> StoreResult<(u64, Vec<Job>)> {
        // Successes are recorded together (see `RecordSuccesses`), then the effects of those
        // still held, together too (see `UpdateRuns`); retries and failures, which are rare,
        // a statement each.
        let mut successes: Vec<(Uuid, String)> = Vec::with_capacity(outcomes.len());
        let mut others = Vec::new();
        let mut effects = std::collections::HashMap::new();
        for (id, o) in outcomes {
            match o {
                Outcome::Succeeded(v) => successes.push((id.as_uuid(), to_json(v)?)),
                Outcome::SucceededWith(v, Effect::UpdateRun(run)) => {
                    successes.push((id.as_uuid(), to_json(v)?));
                    effects.insert(id.as_uuid(), (run.as_ref(), to_json(&run.steps)?));
                }
                Outcome::Retry { error, at } => others.push((*id, RETRY_SQL, error, Some(*at))),
                Outcome::Failed(e) => others.push((*id, FAILED_SQL, e, None)),
            }
        }
        let claim_sql = format!(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1, worker = $1, \
             lease_until = $3, updated_at = $2 \
             WHERE id IN (SELECT id FROM jobs WHERE status = 'queued' AND run_at <= $2 \
             ORDER BY priority DESC, run_at LIMIT $4{}) \
             RETURNING {JOB_COLS}",
            self.skip_locked()
        );
        macro_rules! claim_on {
            ($ex:expr, $limit:expr, $until:expr) => {
                fetch_vec!(
                    sqlx::query(&claim_sql)
                        .bind(worker)
                        .bind(now)
                        .bind($until)
                        .bind(i64::from($limit)),
                    $ex,
                    job_row
                )
            };
        }
        on_pool_write!(self, p => {
            if successes.is_empty() && others.is_empty() {
                // A lone statement is its own transaction.
                return match claim {
                    Some((limit, until)) => Ok((0, claim_on!(p, limit, until))),
                    None => Ok((0, Vec::new())),
                };
            }
            let mut tx = p.begin().await.map_err(db_err)?;
            let recorded = tx.record_successes(worker, &successes, now).await?;
            let mut held = recorded.len() as u64;
            if !effects.is_empty() {
                let runs: Vec<_> = recorded.iter().filter_map(|id| effects.remove(id)).collect();
                tx.update_runs(&runs).await?;
            }
            for (id, sql, text, at) in &others {
                let q = sqlx::query(sql)
                    .bind(id.as_uuid())
                    .bind(worker)
                    .bind(now)
                    .bind(text);
                // Only a retry has a fifth parameter (PostgreSQL must infer every one).
                let q = match at {
                    Some(at) => q.bind(*at),
                    None => q,
                };
                held += q
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?
                    .rows_affected();
            }
            let claimed = match claim {
                Some((limit, until)) => claim_on!(&mut *tx, limit, until),
                None => Vec::new(),
            };
            tx.commit().await.map_err(db_err)?;
            Ok((held, claimed))
        })
    }

    /// `FOR UPDATE SKIP LOCKED` where the engine has it.
    fn skip_locked(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite { .. } => "",
            Pool::Postgres(_) => " FOR UPDATE SKIP LOCKED",
        }
    }
}

#[async_trait]
impl JobStore for SqlStore {
    async fn enqueue(&self, new: &NewJob) -> StoreResult<(Job, bool)> {
        let job = Job::from_new(new);
        let payload = to_json(&job.payload)?;
        // Jobs enqueued at the same time share a commit (see `group`).
        let insert = JobInsert {
            job: job.clone(),
            payload,
        };
        let inserted = self
            .job_inserts
            .commit(&self.pool, &self.writer, insert)
            .await?;
        if inserted {
            return Ok((job, true));
        }
        let key = new.idempotency_key.as_deref().unwrap_or_default();
        match self.job_by_key(new.tenant_id, key).await? {
            Some(existing) => Ok((existing, false)),
            // Deleted between the two statements (purged or its tenant removed).
            None => Err(coachlibre_core::store::StoreError::NotFound),
        }
    }

    async fn enqueue_many(&self, jobs: &[NewJob]) -> StoreResult<u64> {
        let rows = jobs
            .iter()
            .map(|n| {
                let j = Job::from_new(n);
                to_json(&j.payload).map(|p| (j, p))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        match &self.pool {
            // One statement for the lot: a round trip per row would dominate.
            Pool::Postgres(p) => {
                let rows: Vec<(&Job, &str)> = rows.iter().map(|(j, p)| (j, p.as_str())).collect();
                let mut conn = p.acquire().await.map_err(db_err)?;
                Ok(pg_insert_jobs(&mut conn, &rows).await?.len() as u64)
            }
            // In-process statements are cheap: one each, in one transaction.
            Pool::Sqlite { write, .. } => {
                let _writer = self.writer.lock().await;
                let mut tx = write.begin().await.map_err(db_err)?;
                let rows: Vec<(&Job, &str)> = rows.iter().map(|(j, p)| (j, p.as_str())).collect();
                let new = sqlite_insert_jobs(&mut tx, &rows).await?.len() as u64;
                tx.commit().await.map_err(db_err)?;
                Ok(new)
            }
        }
    }

    async fn claim_jobs(
        &self,
        worker: &str,
        limit: u32,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> StoreResult<Vec<Job>> {
        Ok(self
            .cycle(worker, &[], now, Some((limit, lease_until)))
            .await?
            .1)
    }

    async fn finish_and_claim(
        &self,
        worker: &str,
        outcomes: &[(JobId, Outcome)],
        limit: u32,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> StoreResult<Vec<Job>> {
        Ok(self
            .cycle(worker, outcomes, now, Some((limit, lease_until)))
            .await?
            .1)
    }

    async fn heartbeat(&self, worker: &str, lease_until: Timestamp) -> StoreResult<Vec<JobId>> {
        on_pool_write!(self, p => {
            let rows: Vec<(Uuid,)> = sqlx::query_as(
                "UPDATE jobs SET lease_until = $2 WHERE worker = $1 AND status = 'running' \
                 RETURNING id",
            )
            .bind(worker)
            .bind(lease_until)
            .fetch_all(p)
            .await
            .map_err(db_err)?;
            Ok(rows.into_iter().map(|(id,)| id.into()).collect())
        })
    }

    async fn finish_jobs(
        &self,
        worker: &str,
        outcomes: &[(JobId, Outcome)],
        now: Timestamp,
    ) -> StoreResult<u64> {
        Ok(self.cycle(worker, outcomes, now, None).await?.0)
    }

    async fn reap_expired(&self, now: Timestamp) -> StoreResult<u64> {
        on_pool_write!(self, p => {
            Ok(sqlx::query(
                "UPDATE jobs SET \
                 status = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'queued' END, \
                 finished_at = CASE WHEN attempts >= max_attempts THEN $1 ELSE NULL END, \
                 last_error = $2, run_at = $1, lease_until = NULL, updated_at = $1 \
                 WHERE status = 'running' AND lease_until < $1",
            )
            .bind(now)
            .bind(coachlibre_core::job::LOST_ATTEMPT)
            .execute(p)
            .await
            .map_err(db_err)?
            .rows_affected())
        })
    }

    async fn set_job_progress(&self, worker: &str, id: JobId, pr: &Progress) -> StoreResult<()> {
        let json = to_json(pr)?;
        on_pool_write!(self, p => {
            sqlx::query(
                "UPDATE jobs SET progress = $3 WHERE id = $1 AND worker = $2 \
                 AND status = 'running'",
            )
            .bind(id.as_uuid())
            .bind(worker)
            .bind(&json)
            .execute(p)
            .await
            .map_err(db_err)?;
        });
        Ok(())
    }

    async fn get_job(&self, tenant: TenantId, id: JobId) -> StoreResult<Option<Job>> {
        on_pool!(self, p => {
            Ok(fetch_opt!(sqlx::query(&format!(
                "SELECT {JOB_COLS} FROM jobs WHERE tenant_id = $1 AND id = $2"
            ))
            .bind(tenant.as_uuid())
            .bind(id.as_uuid()), p, job_row))
        })
    }

    async fn list_jobs(
        &self,
        tenant: TenantId,
        filter: &JobFilter,
        page: &PageRequest,
    ) -> StoreResult<Vec<Job>> {
        on_pool!(self, p => {
            Ok(fetch_vec!(sqlx::query(&format!(
                "SELECT {JOB_COLS} FROM jobs WHERE tenant_id = $1 \
                 AND ($2 IS NULL OR status = $2) AND ($3 IS NULL OR kind = $3) \
                 AND ($4 IS NULL OR created_by = $4) AND ($5 IS NULL OR id < $5) \
                 ORDER BY id DESC LIMIT $6"
            ))
            .bind(tenant.as_uuid())
            .bind(filter.status.map(JobStatus::as_str))
            .bind(filter.kind.as_deref())
            .bind(filter.created_by.map(|u| u.as_uuid()))
            .bind(page.cursor)
            .bind(page.fetch_limit()), p, job_row))
        })
    }

    async fn cancel_job(&self, tenant: TenantId, id: JobId) -> StoreResult<Option<Job>> {
        let now = coachlibre_core::now();
        on_pool_write!(self, p => {
            sqlx::query(
                "UPDATE jobs SET status = 'cancelled', lease_until = NULL, finished_at = $3, \
                 updated_at = $3 WHERE tenant_id = $1 AND id = $2 \
                 AND status IN ('queued', 'running')",
            )
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .bind(now)
            .execute(p)
            .await
            .map_err(db_err)?;
        });
        self.get_job(tenant, id).await
    }

    async fn retry_job(
        &self,
        tenant: TenantId,
        id: JobId,
        now: Timestamp,
    ) -> StoreResult<Option<Job>> {
        on_pool_write!(self, p => {
            sqlx::query(
                "UPDATE jobs SET status = 'queued', attempts = 0, run_at = $3, worker = NULL, \
                 finished_at = NULL, updated_at = $3 WHERE tenant_id = $1 AND id = $2 \
                 AND status IN ('failed', 'cancelled')",
            )
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .bind(now)
            .execute(p)
            .await
            .map_err(db_err)?;
        });
        self.get_job(tenant, id).await
    }

    async fn count_jobs(&self, tenant: Option<TenantId>) -> StoreResult<Vec<(JobStatus, u64)>> {
        on_pool!(self, p => {
            let rows: Vec<(String, i64)> = sqlx::query_as(
                "SELECT status, COUNT(*) FROM jobs WHERE ($1 IS NULL OR tenant_id = $1) \
                 GROUP BY status",
            )
            .bind(tenant.map(|t| t.as_uuid()))
            .fetch_all(p)
            .await
            .map_err(db_err)?;
            rows.into_iter()
                .map(|(s, n)| Ok((parse_enum(&s, JobStatus::parse)?, n.max(0).unsigned_abs())))
                .collect()
        })
    }

    async fn purge_jobs(&self, before: Timestamp) -> StoreResult<u64> {
        on_pool_write!(self, p => {
            Ok(sqlx::query("DELETE FROM jobs WHERE finished_at < $1")
                .bind(before)
                .execute(p)
                .await
                .map_err(db_err)?
                .rows_affected())
        })
    }

    async fn insert_schedule(&self, s: &Schedule) -> StoreResult<()> {
        let payload = to_json(&s.payload)?;
        on_pool_write!(self, p => {
            sqlx::query(&format!(
                "INSERT INTO schedules ({SCHEDULE_COLS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
            ))
            .bind(s.id.as_uuid())
            .bind(s.tenant_id.as_uuid())
            .bind(&s.name)
            .bind(&s.cron)
            .bind(&s.timezone)
            .bind(&s.kind)
            .bind(&payload)
            .bind(s.enabled)
            .bind(s.next_run_at)
            .bind(s.last_run_at)
            .bind(s.created_by.map(|u| u.as_uuid()))
            .bind(s.created_at)
            .execute(p)
            .await
            .map_err(db_err)?;
        });
        Ok(())
    }

    async fn list_schedules(&self, tenant: TenantId) -> StoreResult<Vec<Schedule>> {
        on_pool!(self, p => {
            Ok(fetch_vec!(sqlx::query(&format!(
                "SELECT {SCHEDULE_COLS} FROM schedules WHERE tenant_id = $1 ORDER BY name \
                 LIMIT 1000"
            ))
            .bind(tenant.as_uuid()), p, schedule_row))
        })
    }

    async fn delete_schedule(&self, tenant: TenantId, id: ScheduleId) -> StoreResult<bool> {
        on_pool_write!(self, p => {
            Ok(sqlx::query("DELETE FROM schedules WHERE tenant_id = $1 AND id = $2")
                .bind(tenant.as_uuid())
                .bind(id.as_uuid())
                .execute(p)
                .await
                .map_err(db_err)?
                .rows_affected()
                == 1)
        })
    }

    async fn due_schedules(&self, now: Timestamp, limit: u32) -> StoreResult<Vec<Schedule>> {
        on_pool!(self, p => {
            Ok(fetch_vec!(sqlx::query(&format!(
                "SELECT {SCHEDULE_COLS} FROM schedules WHERE enabled AND next_run_at <= $1 \
                 ORDER BY next_run_at LIMIT $2"
            ))
            .bind(now)
            .bind(i64::from(limit)), p, schedule_row))
        })
    }

    async fn fire_schedule(
        &self,
        id: ScheduleId,
        fired: Timestamp,
        next: Timestamp,
        new: &NewJob,
    ) -> StoreResult<bool> {
        let job = Job::from_new(new);
        let payload = to_json(&job.payload)?;
        let sql = job_insert_sql();
        on_pool_write!(self, p => {
            let mut tx = p.begin().await.map_err(db_err)?;
            let moved = sqlx::query(
                "UPDATE schedules SET next_run_at = $3, last_run_at = $2 \
                 WHERE id = $1 AND next_run_at = $2",
            )
            .bind(id.as_uuid())
            .bind(fired)
            .bind(next)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected()
                == 1;
            if moved {
                bind_job!(sqlx::query(&sql), job, payload)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
            }
            tx.commit().await.map_err(db_err)?;
            Ok(moved)
        })
    }

    async fn due_reminders(&self, now: Timestamp, limit: u32) -> StoreResult<Vec<Reminder>> {
        on_pool!(self, p => {
            Ok(fetch_vec!(sqlx::query(
                "SELECT id, tenant_id, client_id, conversation_id, text, due_at, status, \
                 created_at FROM reminders WHERE status = 'scheduled' AND due_at <= $1 \
                 ORDER BY due_at LIMIT $2"
            )
            .bind(now)
            .bind(i64::from(limit)), p, reminder_row))
        })
    }

    async fn deliver_reminder(
        &self,
        tenant: TenantId,
        id: ReminderId,
        message: Option<&Message>,
        outbox: Option<&NewJob>,
    ) -> StoreResult<bool> {
        let insert = message_insert_sql();
        let job_sql = job_insert_sql();
        let outbox = match outbox {
            Some(n) => Some((Job::from_new(n), to_json(&n.payload)?)),
            None => None,
        };
        let (calls, cites) = match message {
            Some(m) => (to_json(&m.tool_calls)?, to_json(&m.citations)?),
            None => (String::new(), String::new()),
        };
        on_pool_write!(self, p => {
            let mut tx = p.begin().await.map_err(db_err)?;
            let sent = sqlx::query(
                "UPDATE reminders SET status = 'sent' WHERE tenant_id = $1 AND id = $2 \
                 AND status = 'scheduled'",
            )
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected()
                == 1;
            if sent && let Some(m) = message {
                // No row when the conversation was deleted meanwhile: the reminder still
                // counts as sent (its notification says so).
                bind_message!(sqlx::query(&insert), m, calls, cites)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
            }
            if sent && let Some((job, payload)) = &outbox {
                bind_job!(sqlx::query(&job_sql), job, payload)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
            }
            tx.commit().await.map_err(db_err)?;
            Ok(sent)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_powers_of_two_up_to_the_maximum_and_cover_every_row() {
        let sizes = |len| chunks(len, 64).map(|r| r.len()).collect::<Vec<_>>();
        assert_eq!(sizes(0), Vec::<usize>::new());
        assert_eq!(sizes(1), vec![1]);
        assert_eq!(sizes(7), vec![4, 2, 1]);
        assert_eq!(sizes(64), vec![64]);
        assert_eq!(sizes(200), vec![64, 64, 64, 8]);
        for len in 0..300 {
            let ranges: Vec<_> = chunks(len, 64).collect();
            let mut next = 0;
            for r in &ranges {
                assert_eq!(r.start, next);
                assert!(r.len().is_power_of_two() && r.len() <= 64);
                next = r.end;
            }
            assert_eq!(next, len);
        }
    }

    #[test]
    fn values_are_anonymous_parameters_row_after_row() {
        assert_eq!(anonymous_values(2, 2), "(?, ?), (?, ?)");
        assert_eq!(anonymous_values(1, 3), "(?, ?, ?)");
        assert!(job_insert_sql().contains(&format!("${JOB_PARAMS})")));
        assert_eq!(
            sqlite_jobs_insert_sql(2).matches('?').count(),
            2 * JOB_PARAMS
        );
    }
}
