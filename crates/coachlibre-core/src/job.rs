//! Background jobs: the durable queue's records and the rules for retrying them.
//!
//! A job is enqueued `queued` with a run-at time, claimed by a worker under a lease (`running`),
//! and ends `succeeded`, `failed` (the dead letter: every attempt used, or a permanent error)
//! or `cancelled`. A worker that dies leaves its lease to expire; the job is then queued again
//! and counts the lost attempt. The same idempotency key in a tenant enqueues one job only.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ids::{JobId, ScheduleId, SkillId, TenantId, UserId};
use crate::{Error, Result, Timestamp};

/// Attempts before a job is dead-lettered, unless the enqueuer says otherwise.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// Longest accepted job kind and idempotency key.
const MAX_KIND: usize = 100;
const MAX_KEY: usize = 200;

/// Where a job stands.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Waiting for its run-at time and a free worker.
    Queued,
    /// Claimed by a worker whose lease has not expired.
    Running,
    Succeeded,
    /// Dead-lettered: every attempt failed, or the failure was permanent. `retry` re-queues it.
    Failed,
    Cancelled,
}

impl JobStatus {
    pub const ALL: [Self; 5] = [
        Self::Queued,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// No further change will happen by itself.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for JobStatus {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s).ok_or_else(|| {
            Error::invalid(
                "status",
                "must be queued, running, succeeded, failed or cancelled",
            )
        })
    }
}

/// How far a running job has come, as its handler reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Progress {
    pub done: u64,
    /// Absent when the handler cannot tell in advance.
    pub total: Option<u64>,
    pub message: String,
}

/// A job to enqueue.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    /// The job's id, when the caller must know it before enqueueing (generated otherwise).
    pub id: Option<JobId>,
    pub tenant_id: TenantId,
    /// Who asked for it (absent for the system: schedules, reminders).
    pub created_by: Option<UserId>,
    /// The handler that runs it, e.g. `reminder.deliver`.
    pub kind: String,
    pub payload: serde_json::Value,
    /// Higher runs first among jobs that are due.
    pub priority: i32,
    pub run_at: Timestamp,
    pub max_attempts: u32,
    /// A second job with the same key in the tenant is not created: the first is returned.
    pub idempotency_key: Option<String>,
}

impl NewJob {
    /// A job due now, priority 0, the default attempts, no key.
    pub fn new(tenant_id: TenantId, kind: &str, payload: serde_json::Value) -> Self {
        Self {
            id: None,
            tenant_id,
            created_by: None,
            kind: kind.to_owned(),
            payload,
            priority: 0,
            run_at: crate::now(),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            idempotency_key: None,
        }
    }

    pub fn by(mut self, user: UserId) -> Self {
        self.created_by = Some(user);
        self
    }

    pub fn priority(mut self, p: i32) -> Self {
        self.priority = p;
        self
    }

    pub fn run_at(mut self, at: Timestamp) -> Self {
        self.run_at = at;
        self
    }

    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Check what an API caller may have got wrong.
    pub fn validate(&self) -> Result<()> {
        let kind_ok = !self.kind.is_empty()
            && self.kind.len() <= MAX_KIND
            && self
                .kind
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !kind_ok {
            return Err(Error::invalid(
                "kind",
                "must be 1 to 100 characters of letters, digits, '.', '_' or '-'",
            ));
        }
        if !(1..=100).contains(&self.max_attempts) {
            return Err(Error::invalid("max_attempts", "must be 1 to 100"));
        }
        if let Some(k) = &self.idempotency_key
            && (k.is_empty() || k.len() > MAX_KEY)
        {
            return Err(Error::invalid(
                "idempotency_key",
                "must be 1 to 200 characters",
            ));
        }
        Ok(())
    }
}

/// The `last_error` of a job whose attempt ended with its worker: the lease expired before
/// the attempt finished (the process crashed, was killed or lost its database).
pub const LOST_ATTEMPT: &str = "the worker running it stopped before finishing (lease expired)";

/// The `last_error` of a job dead-lettered because its attempt ended with its worker.
pub const QUARANTINED: &str = "quarantined: its last attempt ended with the process running it \
     (a crash, a kill or a power cut), and this kind of job is not run again automatically in \
     case it caused it; look at the logs, then retry it";

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Job {
    pub id: JobId,
    pub tenant_id: TenantId,
    pub created_by: Option<UserId>,
    pub kind: String,
    pub payload: serde_json::Value,
    pub priority: i32,
    pub status: JobStatus,
    pub run_at: chrono::DateTime<chrono::Utc>,
    /// Attempts started so far (a claim counts one).
    pub attempts: u32,
    pub max_attempts: u32,
    pub idempotency_key: Option<String>,
    /// The worker holding it while running.
    pub worker: Option<String>,
    /// Until when the worker's claim holds; past it, another worker may take the job.
    pub lease_until: Option<chrono::DateTime<chrono::Utc>>,
    pub progress: Option<Progress>,
    /// What the handler returned.
    pub result: Option<serde_json::Value>,
    pub last_error: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl Job {
    /// Whether its previous attempt ended with its worker ([`LOST_ATTEMPT`]).
    pub fn attempt_was_lost(&self) -> bool {
        self.last_error.as_deref() == Some(LOST_ATTEMPT)
    }

    /// The job a [`NewJob`] becomes when it is inserted.
    pub fn from_new(n: &NewJob) -> Self {
        let now = crate::now();
        Self {
            id: n.id.unwrap_or_else(JobId::generate),
            tenant_id: n.tenant_id,
            created_by: n.created_by,
            kind: n.kind.clone(),
            payload: n.payload.clone(),
            priority: n.priority,
            status: JobStatus::Queued,
            run_at: n.run_at,
            attempts: 0,
            max_attempts: n.max_attempts,
            idempotency_key: n.idempotency_key.clone(),
            worker: None,
            lease_until: None,
            progress: None,
            result: None,
            last_error: None,
            created_at: now,
            updated_at: now,
            finished_at: None,
        }
    }
}

/// A write that belongs with a job's success: the store makes it in the transaction that
/// records the success, and only if the worker still held the job. A crash before that commit
/// loses both (the job runs again), never one of them.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// A workflow run's final state, as `WorkflowStore::update_run` writes it.
    UpdateRun(Box<crate::workflow::WorkflowRun>),
}

/// How a worker's attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Succeeded(serde_json::Value),
    /// Succeeded, and `Effect` is written with the success.
    SucceededWith(serde_json::Value, Effect),
    /// Try again at this time (the store dead-letters instead when no attempt is left).
    Retry {
        error: String,
        at: Timestamp,
    },
    /// Do not try again.
    Failed(String),
}

/// The delay before attempt `attempts + 1`: `base · 2^(attempts-1)`, capped at `max`, with
/// "full jitter" (a uniform fraction between half and all of it) so that jobs failing
/// together do not retry together. `unit` is a random number in [0, 1).
pub fn backoff(
    attempts: u32,
    base: std::time::Duration,
    max: std::time::Duration,
    unit: f64,
) -> std::time::Duration {
    let exp = attempts.saturating_sub(1).min(30);
    let full = base.saturating_mul(1u32 << exp).min(max);
    full.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
}

/// Which jobs to list.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub status: Option<JobStatus>,
    pub kind: Option<String>,
    /// Only jobs this user enqueued.
    pub created_by: Option<UserId>,
}

/// A recurring schedule: a cron expression read in a time zone, enqueuing a job each time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Schedule {
    pub id: ScheduleId,
    pub tenant_id: TenantId,
    /// Unique in the tenant.
    pub name: String,
    /// Five fields: minute hour day-of-month month day-of-week.
    pub cron: String,
    /// IANA name, e.g. `Europe/Paris`.
    pub timezone: String,
    pub kind: String,
    pub payload: serde_json::Value,
    pub enabled: bool,
    /// The next instant it fires.
    pub next_run_at: chrono::DateTime<chrono::Utc>,
    pub last_run_at: Option<chrono::DateTime<chrono::Utc>>,
    pub created_by: Option<UserId>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// A skill a tenant defined (its TOML text; the skills crate parses and checks it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StoredSkill {
    pub id: SkillId,
    pub tenant_id: TenantId,
    pub name: String,
    pub definition: String,
    pub created_by: Option<UserId>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn status_round_trips() {
        for s in JobStatus::ALL {
            assert_eq!(JobStatus::parse(s.as_str()), Some(s));
        }
        assert!("dead".parse::<JobStatus>().is_err());
        assert!(JobStatus::Failed.is_final());
        assert!(!JobStatus::Running.is_final());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(60);
        assert!(backoff(1, base, max, 0.0) == Duration::from_millis(500));
        assert!(backoff(1, base, max, 0.99) < base);
        assert_eq!(backoff(3, base, max, 0.0), Duration::from_secs(2));
        assert!(backoff(3, base, max, 0.999) <= Duration::from_secs(4));
        assert_eq!(backoff(20, base, max, 0.0), Duration::from_secs(30));
        assert_eq!(backoff(u32::MAX, base, max, 1.0), max);
    }

    #[test]
    fn new_jobs_are_validated() {
        let t = TenantId::generate();
        assert!(
            NewJob::new(t, "reminder.deliver", serde_json::json!({}))
                .validate()
                .is_ok()
        );
        assert!(
            NewJob::new(t, "", serde_json::json!({}))
                .validate()
                .is_err()
        );
        assert!(
            NewJob::new(t, "a b", serde_json::json!({}))
                .validate()
                .is_err()
        );
        assert!(
            NewJob::new(t, "x", serde_json::json!({}))
                .max_attempts(0)
                .validate()
                .is_err()
        );
        assert!(
            NewJob::new(t, "x", serde_json::json!({}))
                .key("")
                .validate()
                .is_err()
        );
    }
}
