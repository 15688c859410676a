//! The scheduler: every tick it fires due cron schedules, turns due reminders into delivery
//! jobs, re-queues the jobs of workers that died, and now and then purges old finished jobs.
//!
//! Every node may run one: each firing is a conditional update (the first scheduler to move
//! the schedule wins) and each reminder job has an idempotency key, so nothing doubles.

use std::future::Future;
use std::time::Duration;

use coachlibre_core::Timestamp;
use coachlibre_core::job::NewJob;

use crate::Jobs;
use crate::handlers::{REMINDER, ReminderPayload};

/// Scheduler settings.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    pub tick: Duration,
    /// Finished jobs are deleted this long after they end.
    pub keep_finished: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            tick: Duration::from_secs(1),
            keep_finished: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Due work handled per tick and kind (the rest waits a tick).
const BATCH: u32 = 500;

#[derive(Debug)]
pub struct Scheduler {
    jobs: Jobs,
    config: SchedulerConfig,
}

impl Scheduler {
    pub fn new(jobs: Jobs, config: SchedulerConfig) -> Self {
        Self { jobs, config }
    }

    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(self.config.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_purge: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = &mut shutdown => return,
            }
            let now = coachlibre_core::now();
            self.tick(now).await;
            if last_purge.is_none_or(|t| t.elapsed() > Duration::from_secs(3600)) {
                last_purge = Some(tokio::time::Instant::now());
                let keep =
                    chrono::Duration::from_std(self.config.keep_finished).unwrap_or_default();
                match self.jobs.store().purge_jobs(now - keep).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(jobs = n, "purged old finished jobs"),
                    Err(e) => tracing::warn!(error = %e, "purging finished jobs failed"),
                }
            }
        }
    }

    /// One pass; public so tests can drive time.
    pub async fn tick(&self, now: Timestamp) {
        if let Err(e) = self.fire_schedules(now).await {
            tracing::warn!(error = %e, "firing schedules failed");
        }
        if let Err(e) = self.queue_reminders(now).await {
            tracing::warn!(error = %e, "queueing reminders failed");
        }
        match self.jobs.store().reap_expired(now).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::warn!(jobs = n, "re-queued jobs whose worker stopped");
                self.jobs.wake().notify_one();
            }
            Err(e) => tracing::warn!(error = %e, "re-queueing expired jobs failed"),
        }
    }

    async fn fire_schedules(&self, now: Timestamp) -> coachlibre_core::Result<()> {
        let store = self.jobs.store();
        let mut fired = 0;
        for s in store.due_schedules(now, BATCH).await? {
            // After downtime a schedule fires once, then resumes from now (no burst of
            // missed runs).
            let next = crate::cron::first_after(&s.cron, &s.timezone, now.max(s.next_run_at));
            let next = match next {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(schedule = %s.id, error = %e, "schedule cannot fire again");
                    now + chrono::Duration::days(3650)
                }
            };
            let job = NewJob::new(s.tenant_id, &s.kind, s.payload.clone()).key(format!(
                "schedule:{}:{}",
                s.id,
                s.next_run_at.timestamp()
            ));
            let job = NewJob {
                created_by: s.created_by,
                ..job
            };
            if store.fire_schedule(s.id, s.next_run_at, next, &job).await? {
                fired += 1;
            }
        }
        if fired > 0 {
            self.jobs.wake().notify_one();
        }
        Ok(())
    }

    async fn queue_reminders(&self, now: Timestamp) -> coachlibre_core::Result<()> {
        let due = self.jobs.store().due_reminders(now, BATCH).await?;
        if due.is_empty() {
            return Ok(());
        }
        let jobs: Vec<NewJob> = due
            .iter()
            .map(|r| {
                let payload = ReminderPayload {
                    reminder_id: r.id,
                    client_id: r.client_id,
                    conversation_id: r.conversation_id,
                    text: r.text.clone(),
                };
                NewJob::new(
                    r.tenant_id,
                    REMINDER,
                    serde_json::to_value(payload).unwrap_or_default(),
                )
                .priority(10)
                .key(format!("reminder:{}", r.id))
            })
            .collect();
        self.jobs.enqueue_many(&jobs).await?;
        Ok(())
    }
}
