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
//! Delivery is at least once: a job whose worker dies (or stalls past its lease) runs again,
//! so handlers make their effects idempotent (reminder delivery is conditional on the
//! reminder still being scheduled).

pub mod cron;
pub mod handlers;
pub mod scheduler;
pub mod worker;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use coachlibre_core::actor::{Actor, Scope};
use coachlibre_core::ids::{JobId, ScheduleId, TenantId};
use coachlibre_core::job::{Job, JobFilter, JobStatus, NewJob, Progress, Schedule};
use coachlibre_core::page::{Page, PageRequest};
use coachlibre_core::store::Store;
use coachlibre_core::user::Role;
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
}

impl std::fmt::Debug for JobContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobContext")
            .field("job", &self.job)
            .finish()
    }
}

impl JobContext {
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

    /// Wakes this process's workers (another process's find the job by polling).
    pub(crate) fn wake(&self) -> &Arc<Notify> {
        &self.wake
    }

    /// Enqueue on the system's behalf (no permission check); returns the job and whether it
    /// is new (false: the idempotency key named an existing one).
    pub async fn enqueue(&self, job: NewJob) -> Result<(Job, bool)> {
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
        let (job, created) = self.store.enqueue(&job).await?;
        if created {
            self.wake.notify_waiters();
        }
        Ok((job, created))
    }

    /// Enqueue many at once (one transaction); returns how many were new.
    pub async fn enqueue_many(&self, jobs: &[NewJob]) -> Result<u64> {
        for j in jobs {
            j.validate()?;
        }
        let n = self.store.enqueue_many(jobs).await?;
        self.wake.notify_waiters();
        Ok(n)
    }

    /// Enqueue through the API: admins only (jobs run with the system's rights).
    pub async fn submit(&self, actor: &Actor, job: NewJob) -> Result<(Job, bool)> {
        actor.require_admin()?;
        actor.require_scope(Scope::Write)?;
        let job = NewJob {
            tenant_id: actor.tenant_id,
            created_by: Some(actor.user_id),
            ..job
        };
        self.enqueue(job).await
    }

    /// Admins see the tenant's jobs; others the jobs they started.
    pub async fn list(
        &self,
        actor: &Actor,
        mut filter: JobFilter,
        page: &PageRequest,
    ) -> Result<Page<Job>> {
        if actor.role != Role::Admin {
            filter.created_by = Some(actor.user_id);
        }
        let rows = self.store.list_jobs(actor.tenant_id, &filter, page).await?;
        Ok(Page::from_rows(rows, page, |j| j.id.as_uuid()))
    }

    pub async fn get(&self, actor: &Actor, id: JobId) -> Result<Job> {
        let job = self
            .store
            .get_job(actor.tenant_id, id)
            .await?
            .ok_or_else(|| Error::not_found("job"))?;
        if actor.role == Role::Admin || job.created_by == Some(actor.user_id) {
            Ok(job)
        } else {
            Err(Error::not_found("job"))
        }
    }

    /// Cancel a queued or running job (a running one stops at its worker's next heartbeat).
    pub async fn cancel(&self, actor: &Actor, id: JobId) -> Result<Job> {
        actor.require_scope(Scope::Write)?;
        let job = self.get(actor, id).await?;
        if job.status.is_final() {
            return Err(Error::Conflict(format!(
                "the job already ended ({}); nothing to cancel",
                job.status
            )));
        }
        self.store
            .cancel_job(actor.tenant_id, id)
            .await?
            .ok_or_else(|| Error::not_found("job"))
    }

    /// Queue a failed or cancelled job again, with fresh attempts.
    pub async fn retry(&self, actor: &Actor, id: JobId) -> Result<Job> {
        actor.require_scope(Scope::Write)?;
        let job = self.get(actor, id).await?;
        if !matches!(job.status, JobStatus::Failed | JobStatus::Cancelled) {
            return Err(Error::Conflict(format!(
                "only failed or cancelled jobs can be retried; this one is {}",
                job.status
            )));
        }
        let job = self
            .store
            .retry_job(actor.tenant_id, id, coachlibre_core::now())
            .await?
            .ok_or_else(|| Error::not_found("job"))?;
        self.wake.notify_waiters();
        Ok(job)
    }

    /// How many of the tenant's jobs are in each status (admins).
    pub async fn counts(&self, actor: &Actor) -> Result<BTreeMap<JobStatus, u64>> {
        actor.require_admin()?;
        counts(self.store.as_ref(), Some(actor.tenant_id)).await
    }

    pub async fn create_schedule(&self, actor: &Actor, input: ScheduleInput) -> Result<Schedule> {
        actor.require_admin()?;
        actor.require_scope(Scope::Write)?;
        let name = input.name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(Error::invalid("name", "must be 1 to 100 characters"));
        }
        let probe = NewJob::new(actor.tenant_id, &input.kind, input.payload.clone());
        probe.validate()?;
        if self.registry.get(&input.kind).is_none() {
            return Err(Error::invalid(
                "kind",
                format!("no job kind '{}'", input.kind),
            ));
        }
        let timezone = input.timezone.unwrap_or_else(|| "UTC".to_owned());
        let now = coachlibre_core::now();
        let next = cron::first_after(&input.cron, &timezone, now)
            .map_err(|e| Error::invalid("cron", e.to_string()))?;
        let s = Schedule {
            id: ScheduleId::generate(),
            tenant_id: actor.tenant_id,
            name: name.to_owned(),
            cron: input.cron.trim().to_owned(),
            timezone,
            kind: input.kind,
            payload: input.payload,
            enabled: true,
            next_run_at: next,
            last_run_at: None,
            created_by: Some(actor.user_id),
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

    pub async fn schedules(&self, actor: &Actor) -> Result<Vec<Schedule>> {
        actor.require_admin()?;
        Ok(self.store.list_schedules(actor.tenant_id).await?)
    }

    pub async fn delete_schedule(&self, actor: &Actor, id: ScheduleId) -> Result<()> {
        actor.require_admin()?;
        actor.require_scope(Scope::Write)?;
        if self.store.delete_schedule(actor.tenant_id, id).await? {
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
