//! The worker: claim, run, heartbeat, record.
//!
//! One loop per worker owns the bookkeeping: it records the outcomes that finished since its
//! last turn (one transaction for all of them), claims as many due jobs as it has free slots
//! (one statement), and spawns a task per job. A separate heartbeat task extends the lease of
//! every job the worker holds with one statement, and aborts the local task of any job that
//! came back missing (cancelled, or taken over after a stall). So a no-op job costs two shared
//! commits, not four of its own.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use coachlibre_core::ids::{JobId, TenantId};
use coachlibre_core::job::{Job, JobStatus, Outcome, backoff};
use coachlibre_core::model::{PRIORITY, Priority};
use rand::Rng;
use tokio::sync::{Mutex, mpsc};
use tokio::task::AbortHandle;

use crate::{JobContext, JobError, JobEvent, JobEventKind, Jobs};

/// Worker settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Jobs run at once by this worker.
    pub concurrency: usize,
    /// How long a claim holds without a heartbeat.
    pub lease: Duration,
    /// How often to look for due jobs when nothing wakes the worker (jobs enqueued by
    /// another process, or coming due).
    pub poll: Duration,
    /// Backoff before the second attempt; doubles each time up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// On shutdown, how long running jobs may take to finish before they are abandoned
    /// (and retried by the next worker).
    pub grace: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            concurrency: 32,
            lease: Duration::from_secs(30),
            poll: Duration::from_millis(500),
            retry_base: Duration::from_secs(5),
            retry_max: Duration::from_secs(3600),
            grace: Duration::from_secs(10),
        }
    }
}

/// A name unique to this process, recorded on the jobs it holds.
pub fn worker_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".to_owned());
    let tag = uuid_tag();
    format!("{host}:{}:{tag}", std::process::id())
}

fn uuid_tag() -> String {
    let n: u32 = rand::thread_rng().r#gen();
    format!("{n:08x}")
}

/// Runs jobs until stopped.
#[derive(Debug)]
pub struct Worker {
    jobs: Jobs,
    config: WorkerConfig,
    name: Arc<str>,
}

/// An attempt that ended, as the loop records it.
#[derive(Debug)]
struct Finished {
    job: JobId,
    tenant: TenantId,
    outcome: Outcome,
}

/// Aborts a task when dropped: cancelling an attempt (by aborting its task) stops the
/// handler's own task too.
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Worker {
    pub fn new(jobs: Jobs, config: WorkerConfig) -> Self {
        Self {
            jobs,
            config,
            name: worker_name().into(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Run until `shutdown` resolves; then stop claiming, give running jobs the grace period,
    /// and record what finished.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Finished>();
        let running: Arc<Mutex<HashMap<JobId, (TenantId, AbortHandle)>>> = Arc::default();
        let heartbeat = tokio::spawn(heartbeats(
            self.jobs.clone(),
            self.name.clone(),
            self.config.lease,
            running.clone(),
        ));
        tokio::pin!(shutdown);
        let mut finished: Vec<Finished> = Vec::new();
        tracing::info!(worker = %self.name, concurrency = self.config.concurrency, "job worker started");
        loop {
            while let Ok(f) = done_rx.try_recv() {
                finished.push(f);
            }
            self.turn(&mut finished, &done_tx, &running).await;
            // Something finishing frees a slot and must be recorded without delay; a local
            // enqueue wakes us; otherwise poll (which also notices slots that the heartbeat
            // freed by stopping a cancelled job).
            let notified = self.jobs.wake().notified();
            tokio::select! {
                f = done_rx.recv() => {
                    finished.extend(f);
                    gather(&mut done_rx, &mut finished, running.lock().await.len()).await;
                }
                () = notified => {}
                () = tokio::time::sleep(self.config.poll) => {}
                () = &mut shutdown => break,
            }
        }
        self.drain(done_rx, finished, &running).await;
        heartbeat.abort();
        tracing::info!(worker = %self.name, "job worker stopped");
    }

    /// Record what finished and claim what the free slots can take, in one transaction;
    /// start the claimed jobs. On a database error the outcomes are kept for the next turn
    /// (if this process dies meanwhile, the leases expire and the jobs run again).
    async fn turn(
        &self,
        finished: &mut Vec<Finished>,
        done_tx: &mpsc::UnboundedSender<Finished>,
        running: &Arc<Mutex<HashMap<JobId, (TenantId, AbortHandle)>>>,
    ) {
        let free = {
            let mut map = running.lock().await;
            for f in finished.iter() {
                map.remove(&f.job);
            }
            self.config.concurrency.saturating_sub(map.len())
        };
        if finished.is_empty() && free == 0 {
            return;
        }
        let outcomes: Vec<(JobId, Outcome)> = finished
            .iter()
            .map(|f| (f.job, f.outcome.clone()))
            .collect();
        let now = coachlibre_core::now();
        let until = now + chrono::Duration::from_std(self.config.lease).unwrap_or_default();
        let limit = u32::try_from(free).unwrap_or(u32::MAX);
        let store = self.jobs.store();
        let result = if free == 0 {
            store
                .finish_jobs(&self.name, &outcomes, now)
                .await
                .map(|_| Vec::new())
        } else {
            store
                .finish_and_claim(&self.name, &outcomes, limit, now, until)
                .await
        };
        let claimed = match result {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, outcomes = finished.len(), "recording and claiming jobs failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
                return;
            }
        };
        self.announce(finished.drain(..));
        let mut map = running.lock().await;
        for job in claimed {
            let (id, tenant) = (job.id, job.tenant_id);
            let task = tokio::spawn(attempt(
                self.jobs.clone(),
                self.name.clone(),
                self.config.clone(),
                job,
                done_tx.clone(),
            ));
            map.insert(id, (tenant, task.abort_handle()));
        }
    }

    /// Tell this process's listeners how the attempts ended.
    fn announce(&self, finished: impl Iterator<Item = Finished>) {
        for f in finished {
            let status = match f.outcome {
                Outcome::Succeeded(_) | Outcome::SucceededWith(..) => JobStatus::Succeeded,
                Outcome::Retry { .. } => JobStatus::Queued,
                Outcome::Failed(_) => JobStatus::Failed,
            };
            let _ = self.jobs.events().send(JobEvent {
                job_id: f.job,
                tenant_id: f.tenant,
                kind: JobEventKind::Finished { status },
            });
        }
    }

    async fn drain(
        &self,
        mut done_rx: mpsc::UnboundedReceiver<Finished>,
        mut finished: Vec<Finished>,
        running: &Arc<Mutex<HashMap<JobId, (TenantId, AbortHandle)>>>,
    ) {
        let deadline = tokio::time::Instant::now() + self.config.grace;
        while !running.lock().await.is_empty() {
            tokio::select! {
                f = done_rx.recv() => match f {
                    Some(f) => {
                        running.lock().await.remove(&f.job);
                        finished.push(f);
                    }
                    None => break,
                },
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        // Abandoned jobs go back to the queue now rather than when their lease expires.
        let now = coachlibre_core::now();
        let abandoned: Vec<(JobId, (TenantId, AbortHandle))> =
            running.lock().await.drain().collect();
        for (id, (tenant, task)) in abandoned {
            task.abort();
            finished.push(Finished {
                job: id,
                tenant,
                outcome: Outcome::Retry {
                    error: "the worker stopped before the job finished".into(),
                    at: now,
                },
            });
        }
        let outcomes: Vec<(JobId, Outcome)> = finished
            .iter()
            .map(|f| (f.job, f.outcome.clone()))
            .collect();
        match self
            .jobs
            .store()
            .finish_jobs(&self.name, &outcomes, coachlibre_core::now())
            .await
        {
            Ok(_) => self.announce(finished.into_iter()),
            Err(e) => {
                tracing::warn!(error = %e, "recording the last outcomes failed: those jobs run again");
            }
        }
    }
}

/// How many times [`gather`] lets other tasks run.
const GATHER_YIELDS: usize = 16;

/// Having been woken by one attempt finishing, let the attempts that are ready finish too
/// (jobs claimed together tend to finish together) so that one turn records them all: with
/// short jobs this halves the number of transactions. Stops once all `held` jobs are in, or
/// after [`GATHER_YIELDS`] passes of the scheduler (microseconds, not a timer).
async fn gather(
    done_rx: &mut mpsc::UnboundedReceiver<Finished>,
    finished: &mut Vec<Finished>,
    held: usize,
) {
    for _ in 0..GATHER_YIELDS {
        while let Ok(f) = done_rx.try_recv() {
            finished.push(f);
        }
        if finished.len() >= held {
            return;
        }
        tokio::task::yield_now().await;
    }
}

/// Run one attempt and report its outcome.
async fn attempt(
    jobs: Jobs,
    worker: Arc<str>,
    config: WorkerConfig,
    job: Job,
    done: mpsc::UnboundedSender<Finished>,
) {
    let (id, tenant, attempts) = (job.id, job.tenant_id, job.attempts);
    let outcome = match jobs.registry().get(&job.kind).cloned() {
        None => Outcome::Failed(format!(
            "no handler for job kind '{}' on this worker",
            job.kind
        )),
        Some(handler) if job.attempt_was_lost() && !handler.rerun_after_crash() => {
            Outcome::Failed(coachlibre_core::job::QUARANTINED.to_owned())
        }
        Some(handler) => {
            let effect = Arc::new(std::sync::Mutex::new(None));
            let ctx = JobContext {
                store: jobs.store().clone(),
                worker,
                job: job.id,
                tenant: job.tenant_id,
                events: jobs.events().clone(),
                effect: effect.clone(),
            };
            let timeout = handler.timeout();
            // A panicking handler must not take the worker down: run it in its own task.
            // Models serve people before background work (see `Priority`), unless the job
            // answers a person (an inbound text).
            let priority = if handler.serves_a_person() {
                Priority::Interactive
            } else {
                Priority::Background { tenant }
            };
            let run = tokio::spawn(
                PRIORITY.scope(priority, async move { handler.run(&ctx, &job).await }),
            );
            let _stop = AbortOnDrop(run.abort_handle());
            let result = tokio::time::timeout(timeout, run).await;
            let retry_at = || {
                let unit: f64 = rand::thread_rng().r#gen();
                let wait = backoff(attempts, config.retry_base, config.retry_max, unit);
                coachlibre_core::now() + chrono::Duration::from_std(wait).unwrap_or_default()
            };
            match result {
                Ok(Ok(Ok(value))) => match effect
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take()
                {
                    Some(effect) => Outcome::SucceededWith(value, effect),
                    None => Outcome::Succeeded(value),
                },
                Ok(Ok(Err(JobError::Permanent(e)))) => Outcome::Failed(e),
                Ok(Ok(Err(JobError::Retry(e)))) => Outcome::Retry {
                    error: e,
                    at: retry_at(),
                },
                Ok(Err(join)) => Outcome::Retry {
                    error: if join.is_panic() {
                        "the handler panicked".into()
                    } else {
                        "the handler was stopped".into()
                    },
                    at: retry_at(),
                },
                Err(_) => Outcome::Retry {
                    error: format!("timed out after {} s", timeout.as_secs()),
                    at: retry_at(),
                },
            }
        }
    };
    let _ = done.send(Finished {
        job: id,
        tenant,
        outcome,
    });
}

/// Remove from `running` the jobs that ran `before` a heartbeat but are not among those it
/// says this worker still `held` (cancelled, or taken over after a lost lease), and return
/// them. Jobs claimed since `before` are left alone, whatever `held` says.
fn take_lost<V>(
    running: &mut HashMap<JobId, V>,
    before: &HashSet<JobId>,
    held: &HashSet<JobId>,
) -> Vec<(JobId, V)> {
    before
        .difference(held)
        .filter_map(|id| running.remove(id).map(|v| (*id, v)))
        .collect()
}

/// Extend the leases of the jobs this worker holds; abort those it no longer holds.
async fn heartbeats(
    jobs: Jobs,
    name: Arc<str>,
    lease: Duration,
    running: Arc<Mutex<HashMap<JobId, (TenantId, AbortHandle)>>>,
) {
    let mut tick = tokio::time::interval(lease / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        // What ran before the heartbeat's query: a job claimed while it is under way is not
        // in its answer, and must not be taken for a cancelled one.
        let before: HashSet<JobId> = running.lock().await.keys().copied().collect();
        if before.is_empty() {
            continue;
        }
        let until = coachlibre_core::now() + chrono::Duration::from_std(lease).unwrap_or_default();
        match jobs.store().heartbeat(&name, until).await {
            Ok(held) => {
                let held: HashSet<JobId> = held.into_iter().collect();
                let mut map = running.lock().await;
                for (id, (_, task)) in take_lost(&mut map, &before, &held) {
                    tracing::info!(job = %id, "job cancelled or taken over: stopping it");
                    task.abort();
                }
            }
            Err(e) => tracing::warn!(error = %e, "job heartbeat failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_stops_only_jobs_it_could_have_seen() {
        let (cancelled, running, claimed_since) =
            (JobId::generate(), JobId::generate(), JobId::generate());
        let mut map: HashMap<JobId, &str> = HashMap::from([
            (cancelled, "cancelled"),
            (running, "running"),
            (claimed_since, "claimed while the heartbeat was under way"),
        ]);
        let before = HashSet::from([cancelled, running]);
        let held = HashSet::from([running]);
        let lost = take_lost(&mut map, &before, &held);
        assert_eq!(lost, vec![(cancelled, "cancelled")]);
        assert_eq!(map.len(), 2);
        assert!(map.contains_key(&running) && map.contains_key(&claimed_since));
        // A job that finished (and left the map) during the heartbeat is not stopped twice.
        let mut map: HashMap<JobId, &str> = HashMap::from([(running, "running")]);
        assert!(take_lost(&mut map, &before, &HashSet::new()).len() == 1);
    }
}
