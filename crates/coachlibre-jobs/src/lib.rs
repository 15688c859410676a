//! Background work that outlives a request.
//!
//! - [`Jobs`]: the queue as the API and the CLI see it (enqueue, list, cancel, retry,
//!   schedules), with the permission rules, and the in-process events that stream progress.
//! - [`worker::Worker`]: claims due jobs under a lease, runs their [`Handler`], heartbeats,
//!   records outcomes in batches, retries with backoff and dead-letters. Runs inside `serve`
//!   and as `coachlibre worker` on other nodes; any number of them share one database.
//! - [`scheduler::Scheduler`]: fires cron schedules, turns due reminders into delivery jobs,
//!   re-queues jobs of workers that died, purges old finished jobs.
//!
//! Delivery is at least once: a job whose worker dies (or stalls past its lease) runs again
//! when its kind allows it ([`Handler::rerun_after_crash`]; otherwise it is quarantined), so
//! handlers make their effects idempotent (reminder delivery is conditional on the reminder
//! still being scheduled).

pub mod cron;
pub mod handlers;
pub mod scheduler;
pub mod worker;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use coachlibre_core::accounts::By;
use coachlibre_core::ids::{JobId, ScheduleId, TenantId};
use coachlibre_core::job::{Effect, Job, JobFilter, JobStatus, NewJob, Progress, Schedule};
use coachlibre_core::page::{Page, PageRequest};
use coachlibre_core::store::Store;
use coachlibre_core::{Error, Result};
use serde::Serialize;
use tokio::sync::{Notify, broadcast};
use utoipa::ToSchema;

/// How a handler's attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// Worth another attempt later (a timeout, a service down).
    #[error("{0}")]
    Retry(String),
    /// Will fail again: dead-letter it now (bad payload, missing record).
    #[error("{0}")]
    Permanent(String),
}

/// What a handler can do while it runs.
#[derive(Clone)]
pub struct JobContext {
    pub store: Arc<dyn Store>,
    worker: Arc<str>,
    job: JobId,
    tenant: TenantId,
    events: broadcast::Sender<JobEvent>,
    /// Set by [`JobContext::on_success`].
    effect: Arc<std::sync::Mutex<Option<Effect>>>,
}

impl std::fmt::Debug for JobContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobContext")
            .field("job", &self.job)
            .finish()
    }
}

impl JobContext {
    /// Write `effect` in the transaction that records this attempt's success, instead of
    /// committing it separately: one commit fewer, and the job and the write land together.
    /// Nothing is written if the attempt does not succeed. A later call replaces it.
    pub fn on_success(&self, effect: Effect) {
        *self
            .effect
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(effect);
    }

    /// Report progress: stored with the job and streamed to whoever watches it.
    pub async fn progress(&self, done: u64, total: Option<u64>, message: impl Into<String>) {
        let progress = Progress {
            done,
            total,
            message: message.into(),
        };
        if let Err(e) = self
            .store
            .set_job_progress(&self.worker, self.job, &progress)
            .await
        {
            tracing::warn!(job = %self.job, error = %e, "could not store job progress");
        }
        let _ = self.events.send(JobEvent {
            job_id: self.job,
            tenant_id: self.tenant,
            kind: JobEventKind::Progress(progress),
        });
    }
}

/// The code that runs one kind of job.
#[async_trait]
pub trait Handler: Send + Sync {
    /// Run one attempt; the value returned is stored as the job's result. Cancellation drops
    /// the future.
    async fn run(
        &self,
        ctx: &JobContext,
        job: &Job,
    ) -> std::result::Result<serde_json::Value, JobError>;

    /// Longest an attempt may take before it is abandoned and retried.
    fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(600)
    }

    /// Whether a job whose attempt ended with its process (its lease expired: a crash, a
    /// kill, a power cut) runs again. Off by default: an attempt that crashed its process
    /// would crash the next one, so such a job is dead-lettered as quarantined, for an
    /// operator to look at and retry (`coachlibre jobs retry ID`). Kinds whose work is small
    /// and reads nothing untrusted turn it on.
    fn rerun_after_crash(&self) -> bool {
        false
    }

    /// Whether the job answers a person who waits (an inbound text): its model calls are
    /// then served like a conversation's, not after other background work.
    fn serves_a_person(&self) -> bool {
        false
    }
}

/// Handlers by job kind.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: BTreeMap<String, Arc<dyn Handler>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.handlers.keys()).finish()
    }
}

impl Registry {
    /// The built-in kinds: `reminder.deliver` and `system.probe`.
    pub fn builtin() -> Self {
        let mut r = Self::default();
        r.register(handlers::REMINDER, Arc::new(handlers::DeliverReminder));
        r.register(handlers::PROBE, Arc::new(handlers::Probe));
        r
    }

    pub fn register(&mut self, kind: &str, handler: Arc<dyn Handler>) {
        self.handlers.insert(kind.to_owned(), handler);
    }

    pub fn get(&self, kind: &str) -> Option<&Arc<dyn Handler>> {
        self.handlers.get(kind)
    }

    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.handlers.keys().map(String::as_str)
    }
}

/// Something that happened to a job, for live progress streams.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct JobEvent {
    pub job_id: JobId,
    pub tenant_id: TenantId,
    #[serde(flatten)]
    pub kind: JobEventKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum JobEventKind {
    Progress(Progress),
    /// The attempt ended; `status` is where the job now stands (`queued` when it will retry).
    Finished {
        status: JobStatus,
    },
}

/// A schedule to create.
#[derive(Debug, Clone, serde::Deserialize, ToSchema)]
pub struct ScheduleInput {
    #[schema(min_length = 1, max_length = 100, pattern = "\\S")]
    pub name: String,
    /// Five fields: minute hour day-of-month month day-of-week, e.g. `0 9 * * mon-fri`.
    pub cron: String,
    /// IANA time zone; default UTC.
    pub timezone: Option<String>,
    pub kind: String,
    #[serde(default)]
    pub payload: serde_json::Value,
}

/// The queue as callers see it. Cheap to clone.
#[derive(Clone)]
pub struct Jobs {
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    wake: Arc<Notify>,
    events: broadcast::Sender<JobEvent>,
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs")
            .field("kinds", &self.registry)
            .finish()
    }
}

impl Jobs {
    pub fn new(store: Arc<dyn Store>, registry: Registry) -> Self {
        Self {
            store,
            registry: Arc::new(registry),
            wake: Arc::new(Notify::new()),
            events: broadcast::channel(1024).0,
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Live events of every job run in this process.
    pub fn subscribe(&self) -> broadcast::Receiver<JobEvent> {
        self.events.subscribe()
    }

    pub(crate) fn events(&self) -> &broadcast::Sender<JobEvent> {
        &self.events
    }

    /// Wakes this process's worker (another process's finds the job by polling); a wake while
    /// the worker is busy is kept for its next wait.
    pub(crate) fn wake(&self) -> &Arc<Notify> {
        &self.wake
    }

    /// Enqueue on the system's behalf (no permission check); returns the job and whether it
    /// is new (false: the idempotency key named an existing one).
    pub async fn enqueue(&self, job: NewJob) -> Result<(Job, bool)> {
        self.check(&job)?;
        let (job, created) = self.store.enqueue(&job).await?;
        if created {
            self.wake.notify_one();
        }
        Ok((job, created))
    }

    /// Tell this process's worker that a job was enqueued outside [`Jobs::enqueue`] (e.g. in
    /// the same transaction as the record it works on).
    pub fn notify(&self) {
        self.wake.notify_one();
    }

    /// A job that can be enqueued: valid fields, and a kind this build runs.
    pub fn check(&self, job: &NewJob) -> Result<()> {
        job.validate()?;
        if self.registry.get(&job.kind).is_none() {
            return Err(Error::invalid(
                "kind",
                format!(
                    "no job kind '{}'; known kinds: {}",
                    job.kind,
                    self.registry.kinds().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        Ok(())
    }

    /// Enqueue many at once (one transaction); returns how many were new.
    pub async fn enqueue_many(&self, jobs: &[NewJob]) -> Result<u64> {
        for j in jobs {
            self.check(j)?;
        }
        let n = self.store.enqueue_many(jobs).await?;
        self.wake.notify_one();
        Ok(n)
    }

    /// Enqueue through the API or the CLI: admins only (jobs run with the system's rights).
    pub async fn submit(&self, by: By<'_>, job: NewJob) -> Result<(Job, bool)> {
        by.require_admin()?;
        by.require_write()?;
        let job = NewJob {
            tenant_id: by.tenant(),
            created_by: by.actor_id(),
            ..job
        };
        self.enqueue(job).await
    }

    /// Admins see the tenant's jobs; others the jobs they started.
    pub async fn list(
        &self,
        by: By<'_>,
        mut filter: JobFilter,
        page: &PageRequest,
    ) -> Result<Page<Job>> {
        if !by.sees_all() {
            filter.created_by = by.actor_id();
        }
        let rows = self.store.list_jobs(by.tenant(), &filter, page).await?;
        Ok(Page::from_rows(rows, page, |j| j.id.as_uuid()))
    }

    pub async fn get(&self, by: By<'_>, id: JobId) -> Result<Job> {
        let job = self
            .store
            .get_job(by.tenant(), id)
            .await?
            .ok_or_else(|| Error::not_found("job"))?;
        if by.sees_all() || job.created_by.is_some_and(|u| by.actor_id() == Some(u)) {
            Ok(job)
        } else {
            Err(Error::not_found("job"))
        }
    }

    /// Cancel a queued or running job (a running one stops at its worker's next heartbeat).
    pub async fn cancel(&self, by: By<'_>, id: JobId) -> Result<Job> {
        by.require_write()?;
        let job = self.get(by, id).await?;
        if job.status.is_final() {
            return Err(Error::Conflict(format!(
                "the job already ended ({}); nothing to cancel",
                job.status
            )));
        }
        self.store
            .cancel_job(by.tenant(), id)
            .await?
            .ok_or_else(|| Error::not_found("job"))
    }

    /// Queue a failed or cancelled job again, with fresh attempts.
    pub async fn retry(&self, by: By<'_>, id: JobId) -> Result<Job> {
        by.require_write()?;
        let job = self.get(by, id).await?;
        if !matches!(job.status, JobStatus::Failed | JobStatus::Cancelled) {
            return Err(Error::Conflict(format!(
                "only failed or cancelled jobs can be retried; this one is {}",
                job.status
            )));
        }
        let job = self
            .store
            .retry_job(by.tenant(), id, coachlibre_core::now())
            .await?
            .ok_or_else(|| Error::not_found("job"))?;
        self.wake.notify_one();
        Ok(job)
    }

    /// How many of the tenant's jobs are in each status (admins).
    pub async fn counts(&self, by: By<'_>) -> Result<BTreeMap<JobStatus, u64>> {
        by.require_admin()?;
        counts(self.store.as_ref(), Some(by.tenant())).await
    }

    pub async fn create_schedule(&self, by: By<'_>, input: ScheduleInput) -> Result<Schedule> {
        by.require_admin()?;
        by.require_write()?;
        let name = input.name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(Error::invalid("name", "must be 1 to 100 characters"));
        }
        self.check(&NewJob::new(
            by.tenant(),
            &input.kind,
            input.payload.clone(),
        ))?;
        let timezone = input.timezone.unwrap_or_else(|| "UTC".to_owned());
        let now = coachlibre_core::now();
        let next = cron::first_after(&input.cron, &timezone, now)
            .map_err(|e| Error::invalid("cron", e.to_string()))?;
        let s = Schedule {
            id: ScheduleId::generate(),
            tenant_id: by.tenant(),
            name: name.to_owned(),
            cron: input.cron.trim().to_owned(),
            timezone,
            kind: input.kind,
            payload: input.payload,
            enabled: true,
            next_run_at: next,
            last_run_at: None,
            created_by: by.actor_id(),
            created_at: now,
        };
        self.store.insert_schedule(&s).await.map_err(|e| match e {
            coachlibre_core::store::StoreError::Conflict(_) => {
                Error::Conflict(format!("a schedule named '{name}' exists"))
            }
            other => other.into(),
        })?;
        Ok(s)
    }

    pub async fn schedules(&self, by: By<'_>) -> Result<Vec<Schedule>> {
        by.require_admin()?;
        Ok(self.store.list_schedules(by.tenant()).await?)
    }

    pub async fn delete_schedule(&self, by: By<'_>, id: ScheduleId) -> Result<()> {
        by.require_admin()?;
        by.require_write()?;
        if self.store.delete_schedule(by.tenant(), id).await? {
            Ok(())
        } else {
            Err(Error::not_found("schedule"))
        }
    }
}

/// Jobs per status (every status present, zero included).
pub async fn counts(
    store: &dyn Store,
    tenant: Option<TenantId>,
) -> Result<BTreeMap<JobStatus, u64>> {
    let mut out: BTreeMap<JobStatus, u64> = JobStatus::ALL.iter().map(|s| (*s, 0)).collect();
    for (s, n) in store.count_jobs(tenant).await? {
        out.insert(s, n);
    }
    Ok(out)
}
