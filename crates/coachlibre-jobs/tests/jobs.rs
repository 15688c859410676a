//! Workers and the scheduler on SQLite and (with `TEST_DATABASE_URL`) PostgreSQL: jobs run
//! once each, retries end in the dead letter, cancellation stops a running handler, progress
//! streams, reminders are delivered once, schedules fire once per instant, idempotency keys
//! deduplicate, and API permissions hold.

use std::sync::Arc;

use chrono::{Datelike, Timelike};
use std::time::Duration;

use coachlibre_core::Error;
use coachlibre_core::accounts::By;
use coachlibre_core::actor::Actor;
use coachlibre_core::agent::{Agent, AgentInput};
use coachlibre_core::conversation::{Channel, Conversation};
use coachlibre_core::goal::{Reminder, ReminderStatus};
use coachlibre_core::ids::{JobId, TenantId};
use coachlibre_core::job::{Job, JobFilter, JobStatus, NewJob};
use coachlibre_core::page::PageRequest;
use coachlibre_core::store::Store;
use coachlibre_core::tenant::{Tenant, TenantSlug};
use coachlibre_core::user::Role;
use coachlibre_jobs::handlers::PROBE;
use coachlibre_jobs::scheduler::{Scheduler, SchedulerConfig};
use coachlibre_jobs::worker::{Worker, WorkerConfig};
use coachlibre_jobs::{JobEventKind, Jobs, Registry, ScheduleInput};
use coachlibre_store::{ConnectOptions, SqlStore};
use coachlibre_testkit::TestDb;
use coachlibre_testkit::people::{actor, person};
use serde_json::json;
use tokio::sync::oneshot;

struct World {
    store: Arc<dyn Store>,
    jobs: Jobs,
    tenant: TenantId,
    admin: Actor,
    coach: Actor,
    client: Actor,
    backend: &'static str,
    _db: TestDb,
}

async fn worlds() -> Vec<World> {
    let mut out = Vec::new();
    for db in TestDb::all().await.expect("test db") {
        let sql = SqlStore::connect(&db.url, &ConnectOptions::default())
            .await
            .expect("connect");
        sql.migrate().await.expect("migrate");
        let store: Arc<dyn Store> = Arc::new(sql);
        let t = Tenant::new(TenantSlug::parse("jobs").expect("slug"), "Practice").expect("t");
        store.insert_tenant(&t).await.expect("tenant");
        let mut actors = Vec::new();
        for (name, role) in [
            ("admin", Role::Admin),
            ("coach", Role::Coach),
            ("client", Role::Client),
        ] {
            let u = person(t.id, &format!("{name}@jobs.test"), role);
            store.insert_user(&u).await.expect("user");
            actors.push(actor(&u));
        }
        let backend = match db.kind {
            coachlibre_testkit::Kind::Sqlite => "sqlite",
            coachlibre_testkit::Kind::Postgres => "postgres",
        };
        out.push(World {
            jobs: Jobs::new(store.clone(), Registry::builtin()),
            store,
            tenant: t.id,
            admin: actors[0].clone(),
            coach: actors[1].clone(),
            client: actors[2].clone(),
            backend,
            _db: db,
        });
    }
    out
}

fn fast() -> WorkerConfig {
    WorkerConfig {
        concurrency: 4,
        lease: Duration::from_millis(600),
        poll: Duration::from_millis(20),
        retry_base: Duration::from_millis(10),
        retry_max: Duration::from_millis(50),
        grace: Duration::from_millis(200),
    }
}

/// A worker running in the background until the returned sender is dropped or fired.
fn start(jobs: &Jobs, config: WorkerConfig) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let worker = Worker::new(jobs.clone(), config);
    let task = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    (stop, task)
}

async fn wait_for(w: &World, id: JobId, want: JobStatus) -> Job {
    for _ in 0..500 {
        let job = w
            .store
            .get_job(w.tenant, id)
            .await
            .expect("get")
            .expect("job");
        if job.status == want {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let job = w
        .store
        .get_job(w.tenant, id)
        .await
        .expect("get")
        .expect("job");
    panic!(
        "{}: job stayed {} ({:?}), wanted {want}",
        w.backend, job.status, job.last_error
    );
}

fn probe(w: &World, payload: serde_json::Value) -> NewJob {
    NewJob::new(w.tenant, PROBE, payload)
}

#[tokio::test]
async fn every_job_runs_once_and_failures_end_in_the_dead_letter() {
    for w in worlds().await {
        let (stop, task) = start(&w.jobs, fast());
        let batch: Vec<NewJob> = (0..40).map(|_| probe(&w, json!({}))).collect();
        assert_eq!(w.jobs.enqueue_many(&batch).await.unwrap(), 40);
        let flaky = w
            .jobs
            .enqueue(probe(&w, json!({"fail": "retry"})).max_attempts(3))
            .await
            .unwrap()
            .0
            .id;
        let broken = w
            .jobs
            .enqueue(probe(&w, json!({"fail": "permanent"})))
            .await
            .unwrap()
            .0
            .id;
        let dead = wait_for(&w, flaky, JobStatus::Failed).await;
        assert_eq!(dead.attempts, 3, "{}: every attempt used", w.backend);
        assert!(dead.last_error.unwrap().contains("asked to fail"));
        let broken = wait_for(&w, broken, JobStatus::Failed).await;
        assert_eq!(
            broken.attempts, 1,
            "{}: permanent errors do not retry",
            w.backend
        );
        for _ in 0..200 {
            let counts = coachlibre_jobs::counts(w.store.as_ref(), Some(w.tenant))
                .await
                .unwrap();
            if counts[&JobStatus::Succeeded] == 40 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let done = w
            .store
            .list_jobs(
                w.tenant,
                &JobFilter {
                    status: Some(JobStatus::Succeeded),
                    ..Default::default()
                },
                &PageRequest {
                    limit: 100,
                    cursor: None,
                },
            )
            .await
            .unwrap();
        assert_eq!(done.len(), 40, "{}", w.backend);
        assert!(done.iter().all(|j| j.attempts == 1 && j.result.is_some()));

        // The operator retries the dead one: it runs again (and fails again).
        let again = w.jobs.retry(By::Actor(&w.admin), flaky).await.unwrap();
        assert_eq!(again.status, JobStatus::Queued);
        let dead = wait_for(&w, flaky, JobStatus::Failed).await;
        assert_eq!(dead.attempts, 3);
        let _ = stop.send(());
        task.await.unwrap();
    }
}

#[tokio::test]
async fn idempotency_keys_deduplicate() {
    for w in worlds().await {
        let (a, created_a) = w
            .jobs
            .enqueue(probe(&w, json!({})).key("nightly-2026-11-22"))
            .await
            .unwrap();
        let (b, created_b) = w
            .jobs
            .enqueue(probe(&w, json!({})).key("nightly-2026-11-22"))
            .await
            .unwrap();
        assert!(created_a && !created_b, "{}", w.backend);
        assert_eq!(a.id, b.id);
        let err = w
            .jobs
            .enqueue(NewJob::new(w.tenant, "no.such.kind", json!({})))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Invalid { field: "kind", .. }), "{err}");
    }
}

#[tokio::test]
async fn cancelling_stops_a_running_handler_and_progress_streams() {
    for w in worlds().await {
        let mut config = fast();
        config.concurrency = 1;
        let mut events = w.jobs.subscribe();
        let (stop, task) = start(&w.jobs, config);
        let slow = w
            .jobs
            .submit(
                By::Actor(&w.admin),
                probe(&w, json!({"sleep_ms": 60_000, "steps": 600})),
            )
            .await
            .unwrap()
            .0
            .id;
        wait_for(&w, slow, JobStatus::Running).await;
        // Progress arrives while it runs.
        let first = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let e = events.recv().await.unwrap();
                if let JobEventKind::Progress(p) = e.kind {
                    return (e.job_id, p);
                }
            }
        })
        .await
        .expect("a progress event");
        assert_eq!(first.0, slow);
        assert_eq!(first.1.total, Some(600));

        let cancelled = w.jobs.cancel(By::Actor(&w.admin), slow).await.unwrap();
        assert_eq!(cancelled.status, JobStatus::Cancelled, "{}", w.backend);
        // The worker (one slot) is freed at its next heartbeat and runs the next job.
        let next = w.jobs.enqueue(probe(&w, json!({}))).await.unwrap().0.id;
        let done = wait_for(&w, next, JobStatus::Succeeded).await;
        assert_eq!(done.attempts, 1);
        let slow = w.store.get_job(w.tenant, slow).await.unwrap().unwrap();
        assert_eq!(
            slow.status,
            JobStatus::Cancelled,
            "{}: stays cancelled",
            w.backend
        );
        let err = w
            .jobs
            .cancel(By::Actor(&w.admin), slow.id)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Conflict(_)), "{err}");
        let _ = stop.send(());
        task.await.unwrap();
    }
}

#[tokio::test]
async fn a_stopped_worker_hands_its_jobs_back() {
    for w in worlds().await {
        let (stop, task) = start(&w.jobs, fast());
        let slow = w
            .jobs
            .enqueue(probe(&w, json!({"sleep_ms": 60_000})))
            .await
            .unwrap()
            .0
            .id;
        wait_for(&w, slow, JobStatus::Running).await;
        let _ = stop.send(());
        task.await.unwrap();
        let job = w.store.get_job(w.tenant, slow).await.unwrap().unwrap();
        assert_eq!(job.status, JobStatus::Queued, "{}: given back", w.backend);
        assert!(job.last_error.unwrap().contains("stopped"));
    }
}

#[tokio::test]
async fn reminders_are_delivered_once_into_the_conversation() {
    for w in worlds().await {
        let agent = Agent::create(
            w.tenant,
            None,
            AgentInput {
                name: Some("Coach".into()),
                ..Default::default()
            },
            &[],
        )
        .unwrap();
        w.store.insert_agent(&agent).await.unwrap();
        let conv =
            Conversation::new(w.tenant, w.client.user_id, agent.id, Channel::Sms, None).unwrap();
        w.store.insert_conversation(&conv).await.unwrap();
        let now = coachlibre_core::now();
        let mut r = Reminder::new(
            w.tenant,
            w.client.user_id,
            Some(conv.id),
            "Drink a glass of water",
            now + chrono::Duration::milliseconds(300),
        )
        .unwrap();
        w.store.insert_reminder(&r).await.unwrap();
        let scheduler = Scheduler::new(w.jobs.clone(), SchedulerConfig::default());
        scheduler.tick(now).await;
        let (stop, task) = start(&w.jobs, fast());
        // Not due yet: nothing queued.
        let queued = w
            .store
            .list_jobs(w.tenant, &JobFilter::default(), &PageRequest::default())
            .await
            .unwrap();
        assert!(queued.is_empty(), "{}", w.backend);
        // Its time comes (twice over, as with two schedulers): one delivery.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let later = coachlibre_core::now();
        scheduler.tick(later).await;
        scheduler.tick(later).await;
        let jobs = w
            .store
            .list_jobs(w.tenant, &JobFilter::default(), &PageRequest::default())
            .await
            .unwrap();
        assert_eq!(jobs.len(), 1, "{}", w.backend);
        let job = wait_for(&w, jobs[0].id, JobStatus::Succeeded).await;
        assert_eq!(job.result.as_ref().unwrap()["delivered"], json!(true));
        scheduler.tick(later).await;
        let messages = w
            .store
            .list_messages(w.tenant, conv.id, &PageRequest::default())
            .await
            .unwrap();
        assert_eq!(messages.len(), 1, "{}: written once", w.backend);
        assert_eq!(messages[0].content, "Reminder: Drink a glass of water");
        let notes = w
            .store
            .list_notifications(w.tenant, w.client.user_id, &PageRequest::default())
            .await
            .unwrap();
        assert_eq!(notes.len(), 1);
        assert_eq!(notes[0].kind, "reminder");
        r.status = ReminderStatus::Sent;
        let listed = w
            .store
            .list_reminders(w.tenant, w.client.user_id, &PageRequest::default())
            .await
            .unwrap();
        assert_eq!(listed, vec![r]);
        let _ = stop.send(());
        task.await.unwrap();
    }
}

#[tokio::test]
async fn schedules_fire_once_per_instant_and_are_for_admins() {
    for w in worlds().await {
        let input = ScheduleInput {
            name: "weekly check".into(),
            cron: "0 9 * * mon".into(),
            timezone: Some("Europe/Paris".into()),
            kind: PROBE.into(),
            payload: json!({}),
        };
        let err = w
            .jobs
            .create_schedule(By::Actor(&w.coach), input.clone())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Forbidden(_)), "{err}");
        let bad = ScheduleInput {
            cron: "0 25 * * *".into(),
            ..input.clone()
        };
        let err = w
            .jobs
            .create_schedule(By::Actor(&w.admin), bad)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Invalid { field: "cron", .. }), "{err}");
        let bad = ScheduleInput {
            timezone: Some("Europe/Atlantis".into()),
            ..input.clone()
        };
        assert!(
            w.jobs
                .create_schedule(By::Actor(&w.admin), bad)
                .await
                .is_err()
        );
        let s = w
            .jobs
            .create_schedule(By::Actor(&w.admin), input.clone())
            .await
            .unwrap();
        assert!(s.next_run_at > coachlibre_core::now());
        let again = w
            .jobs
            .create_schedule(By::Actor(&w.admin), input)
            .await
            .unwrap_err();
        assert!(matches!(again, Error::Conflict(_)), "{again}");

        let scheduler = Scheduler::new(w.jobs.clone(), SchedulerConfig::default());
        scheduler.tick(s.next_run_at).await;
        scheduler.tick(s.next_run_at).await;
        let jobs = w
            .store
            .list_jobs(w.tenant, &JobFilter::default(), &PageRequest::default())
            .await
            .unwrap();
        assert_eq!(jobs.len(), 1, "{}: fired once", w.backend);
        let listed = w.jobs.schedules(By::Actor(&w.admin)).await.unwrap();
        assert_eq!(listed[0].last_run_at, Some(s.next_run_at));
        // The next Monday, 09:00 in Paris (whatever the offset that day).
        let next = listed[0]
            .next_run_at
            .with_timezone(&chrono_tz::Europe::Paris);
        assert_eq!(
            (next.weekday(), next.hour(), next.minute()),
            (chrono::Weekday::Mon, 9, 0),
            "{}",
            w.backend
        );
        let gap = listed[0].next_run_at - s.next_run_at;
        assert!((gap - chrono::Duration::days(7)).num_hours().abs() <= 1);
        w.jobs
            .delete_schedule(By::Actor(&w.admin), s.id)
            .await
            .unwrap();
        assert!(
            w.jobs
                .schedules(By::Actor(&w.admin))
                .await
                .unwrap()
                .is_empty()
        );
    }
}

#[tokio::test]
async fn people_see_their_own_jobs_and_admins_all() {
    for w in worlds().await {
        let err = w
            .jobs
            .submit(By::Actor(&w.coach), probe(&w, json!({})))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Forbidden(_)), "{err}");
        let (mine, _) = w
            .jobs
            .submit(By::Actor(&w.admin), probe(&w, json!({})))
            .await
            .unwrap();
        assert_eq!(mine.created_by, Some(w.admin.user_id));
        let (system, _) = w.jobs.enqueue(probe(&w, json!({}))).await.unwrap();
        let page = PageRequest::default();
        let all = w
            .jobs
            .list(By::Actor(&w.admin), JobFilter::default(), &page)
            .await
            .unwrap();
        assert_eq!(all.items.len(), 2);
        let theirs = w
            .jobs
            .list(By::Actor(&w.client), JobFilter::default(), &page)
            .await
            .unwrap();
        assert!(theirs.items.is_empty(), "{}", w.backend);
        let err = w
            .jobs
            .get(By::Actor(&w.client), system.id)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err}");
        let err = w
            .jobs
            .cancel(By::Actor(&w.coach), mine.id)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err}");
        let counts = w.jobs.counts(By::Actor(&w.admin)).await.unwrap();
        assert_eq!(counts[&JobStatus::Queued], 2);
    }
}

/// A kind that keeps the default: a lost attempt is not run again.
struct Fragile;

#[async_trait::async_trait]
impl coachlibre_jobs::Handler for Fragile {
    async fn run(
        &self,
        _: &coachlibre_jobs::JobContext,
        _: &Job,
    ) -> Result<serde_json::Value, coachlibre_jobs::JobError> {
        Ok(json!("ran"))
    }
}

/// A job whose attempt ended with its process (claimed by a worker that never came back, its
/// lease expired) is quarantined when retaken, unless its kind reruns lost attempts; an
/// operator's retry runs it.
#[tokio::test]
async fn a_job_lost_with_its_process_is_quarantined_unless_its_kind_reruns() {
    for w in worlds().await {
        let mut registry = Registry::builtin();
        registry.register("test.fragile", Arc::new(Fragile));
        let jobs = Jobs::new(w.store.clone(), registry);
        let fragile = jobs
            .enqueue(NewJob::new(w.tenant, "test.fragile", json!({})))
            .await
            .unwrap()
            .0
            .id;
        let probe = jobs.enqueue(probe(&w, json!({}))).await.unwrap().0.id;
        let now = coachlibre_core::now();
        let claimed = w
            .store
            .claim_jobs(
                "crashed-process",
                10,
                now,
                now + chrono::Duration::milliseconds(1),
            )
            .await
            .unwrap();
        assert_eq!(claimed.len(), 2, "{}", w.backend);
        let later = now + chrono::Duration::seconds(1);
        assert_eq!(w.store.reap_expired(later).await.unwrap(), 2);

        let (stop, task) = start(&jobs, fast());
        let quarantined = wait_for(&w, fragile, JobStatus::Failed).await;
        assert_eq!(
            quarantined.last_error.as_deref(),
            Some(coachlibre_core::job::QUARANTINED),
            "{}",
            w.backend
        );
        assert_eq!(quarantined.result, None, "{}: not run", w.backend);
        let rerun = wait_for(&w, probe, JobStatus::Succeeded).await;
        assert_eq!(rerun.attempts, 2, "{}", w.backend);

        jobs.retry(By::Actor(&w.admin), fragile).await.unwrap();
        let done = wait_for(&w, fragile, JobStatus::Succeeded).await;
        assert_eq!(done.result, Some(json!("ran")), "{}", w.backend);
        let _ = stop.send(());
        task.await.unwrap();
    }
}

/// Reports the priority its model calls would have.
struct Spy;

#[async_trait::async_trait]
impl coachlibre_jobs::Handler for Spy {
    async fn run(
        &self,
        _: &coachlibre_jobs::JobContext,
        _: &Job,
    ) -> Result<serde_json::Value, coachlibre_jobs::JobError> {
        let here = coachlibre_core::model::Priority::current();
        // And in work it spawns, carried along.
        let spawned = tokio::spawn(coachlibre_core::model::Priority::carry(async {
            coachlibre_core::model::Priority::current()
        }))
        .await
        .map_err(|e| coachlibre_jobs::JobError::Permanent(e.to_string()))?;
        Ok(json!([format!("{here:?}"), format!("{spawned:?}")]))
    }
}

/// Jobs run as their tenant's background work, so models serve people before them.
#[tokio::test]
async fn jobs_run_as_their_tenants_background_work() {
    let w = worlds().await.remove(0);
    let mut registry = Registry::builtin();
    registry.register("test.spy", Arc::new(Spy));
    let jobs = Jobs::new(w.store.clone(), registry);
    let id = jobs
        .enqueue(NewJob::new(w.tenant, "test.spy", json!({})))
        .await
        .unwrap()
        .0
        .id;
    let (stop, task) = start(&jobs, fast());
    let done = wait_for(&w, id, JobStatus::Succeeded).await;
    let want = format!(
        "{:?}",
        coachlibre_core::model::Priority::Background { tenant: w.tenant }
    );
    assert_eq!(done.result, Some(json!([want.clone(), want])));
    assert_eq!(
        coachlibre_core::model::Priority::current(),
        coachlibre_core::model::Priority::Interactive
    );
    let _ = stop.send(());
    task.await.unwrap();
}
