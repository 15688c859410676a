//! Storage contract for the job queue, schedules and reminder delivery, on SQLite and (with
//! `TEST_DATABASE_URL`) PostgreSQL.

use std::collections::HashSet;

use chrono::Duration;
use coachlibre_core::agent::{Agent, AgentInput};
use coachlibre_core::conversation::{Channel, Conversation, Message};
use coachlibre_core::goal::{Reminder, ReminderStatus};
use coachlibre_core::ids::ScheduleId;
use coachlibre_core::job::{Effect, JobFilter, JobStatus, NewJob, Outcome, Progress, Schedule};
use coachlibre_core::model::ChatRole;
use coachlibre_core::page::PageRequest;
use coachlibre_core::store::prelude::*;
use coachlibre_core::store::{StoreError, WorkflowStore};
use coachlibre_core::user::Role;
use coachlibre_core::workflow::{RunStatus, WorkflowRun};
use serde_json::json;

mod common;
use common::{on_every_backend, tenant, user};

fn lease(secs: i64) -> (coachlibre_core::Timestamp, coachlibre_core::Timestamp) {
    let now = coachlibre_core::now();
    (now, now + Duration::seconds(secs))
}

#[tokio::test]
async fn enqueue_deduplicates_by_key_and_stays_in_its_tenant() {
    on_every_backend(|store, backend| async move {
        let a = tenant("jobs-a");
        let b = tenant("jobs-b");
        store.insert_tenant(&a).await.unwrap();
        store.insert_tenant(&b).await.unwrap();
        let new = NewJob::new(a.id, "system.probe", json!({"n": 1})).key("once");
        let (first, created) = store.enqueue(&new).await.unwrap();
        assert!(created, "{backend}");
        assert_eq!(first.status, JobStatus::Queued);
        let (again, created) = store.enqueue(&new).await.unwrap();
        assert!(!created, "{backend}: same key, same job");
        assert_eq!(again.id, first.id);
        // The same key in another tenant is another job.
        let (other, created) = store
            .enqueue(&NewJob::new(b.id, "system.probe", json!({})).key("once"))
            .await
            .unwrap();
        assert!(created && other.id != first.id);
        assert_eq!(
            store.get_job(a.id, first.id).await.unwrap(),
            Some(first.clone())
        );
        assert_eq!(
            store.get_job(b.id, first.id).await.unwrap(),
            None,
            "{backend}"
        );
        let listed = store
            .list_jobs(a.id, &JobFilter::default(), &PageRequest::default())
            .await
            .unwrap();
        assert_eq!(listed, vec![first.clone()]);
        assert_eq!(store.cancel_job(b.id, first.id).await.unwrap(), None);

        let batch: Vec<NewJob> = (0..10)
            .map(|i| NewJob::new(a.id, "system.probe", json!({})).key(format!("b{}", i % 5)))
            .collect();
        assert_eq!(store.enqueue_many(&batch).await.unwrap(), 5, "{backend}");
    })
    .await;
}

#[tokio::test]
async fn claims_are_exclusive_ordered_and_leased() {
    on_every_backend(|store, backend| async move {
        let t = tenant("jobs-claim");
        store.insert_tenant(&t).await.unwrap();
        let later = coachlibre_core::now() + Duration::hours(1);
        let (low, _) = store
            .enqueue(&NewJob::new(t.id, "k", json!("low")))
            .await
            .unwrap();
        let (high, _) = store
            .enqueue(&NewJob::new(t.id, "k", json!("high")).priority(10))
            .await
            .unwrap();
        store
            .enqueue(&NewJob::new(t.id, "k", json!("later")).run_at(later))
            .await
            .unwrap();
        let (now, until) = lease(30);
        let got = store.claim_jobs("w1", 1, now, until).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].id, high.id, "{backend}: priority first");
        assert_eq!(got[0].status, JobStatus::Running);
        assert_eq!(got[0].attempts, 1);
        assert_eq!(got[0].worker.as_deref(), Some("w1"));
        let got = store.claim_jobs("w2", 10, now, until).await.unwrap();
        assert_eq!(
            got.iter().map(|j| j.id).collect::<Vec<_>>(),
            vec![low.id],
            "{backend}: the future job waits"
        );

        // Many workers at once: every job is claimed exactly once.
        let batch: Vec<NewJob> = (0..200)
            .map(|_| NewJob::new(t.id, "k", json!({})))
            .collect();
        store.enqueue_many(&batch).await.unwrap();
        let mut tasks = Vec::new();
        for w in 0..4 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let (now, until) = lease(30);
                    let got = store
                        .claim_jobs(&format!("c{w}"), 7, now, until)
                        .await
                        .unwrap();
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(got.into_iter().map(|j| j.id));
                }
            }));
        }
        let mut seen = HashSet::new();
        let mut total = 0;
        for t in tasks {
            for id in t.await.unwrap() {
                total += 1;
                seen.insert(id);
            }
        }
        assert_eq!(total, 200, "{backend}");
        assert_eq!(seen.len(), 200, "{backend}: no job claimed twice");
    })
    .await;
}

#[tokio::test]
async fn outcomes_retry_dead_letter_and_respect_the_holder() {
    on_every_backend(|store, backend| async move {
        let t = tenant("jobs-outcome");
        store.insert_tenant(&t).await.unwrap();
        for i in 0..3 {
            store
                .enqueue(&NewJob::new(t.id, "k", json!(i)).max_attempts(2))
                .await
                .unwrap();
        }
        let (now, until) = lease(30);
        let jobs = store.claim_jobs("w", 3, now, until).await.unwrap();
        assert_eq!(jobs.len(), 3);
        let (ok, retry, fail) = (jobs[0].id, jobs[1].id, jobs[2].id);
        store
            .set_job_progress(
                "w",
                ok,
                &Progress {
                    done: 1,
                    total: Some(2),
                    message: "half".into(),
                },
            )
            .await
            .unwrap();
        let soon = now + Duration::milliseconds(10);
        let outcomes = vec![
            (ok, Outcome::Succeeded(json!({"answer": 42}))),
            (
                retry,
                Outcome::Retry {
                    error: "flaky".into(),
                    at: soon,
                },
            ),
            (fail, Outcome::Failed("bad input".into())),
        ];
        assert_eq!(
            store.finish_jobs("other", &outcomes, now).await.unwrap(),
            0,
            "{backend}: another worker cannot finish them"
        );
        assert_eq!(store.finish_jobs("w", &outcomes, now).await.unwrap(), 3);
        let done = store.get_job(t.id, ok).await.unwrap().unwrap();
        assert_eq!(done.status, JobStatus::Succeeded);
        assert_eq!(done.result, Some(json!({"answer": 42})));
        assert_eq!(done.progress.unwrap().message, "half");
        assert!(done.finished_at.is_some());
        let failed = store.get_job(t.id, fail).await.unwrap().unwrap();
        assert_eq!(failed.status, JobStatus::Failed);
        assert_eq!(failed.last_error.as_deref(), Some("bad input"));
        let again = store.get_job(t.id, retry).await.unwrap().unwrap();
        assert_eq!(again.status, JobStatus::Queued, "{backend}");
        assert_eq!(again.run_at, soon);

        // The second attempt is the last: a retry dead-letters it.
        let later = soon + Duration::seconds(1);
        let jobs = store.claim_jobs("w", 5, later, later).await.unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].attempts, 2);
        let outcome = Outcome::Retry {
            error: "still flaky".into(),
            at: later,
        };
        store
            .finish_jobs("w", &[(retry, outcome)], later)
            .await
            .unwrap();
        let dead = store.get_job(t.id, retry).await.unwrap().unwrap();
        assert_eq!(dead.status, JobStatus::Failed, "{backend}");
        assert_eq!(dead.last_error.as_deref(), Some("still flaky"));

        // An operator's retry starts it over.
        let revived = store.retry_job(t.id, retry, later).await.unwrap().unwrap();
        assert_eq!(revived.status, JobStatus::Queued);
        assert_eq!(revived.attempts, 0);
        // A succeeded job is not retried.
        let same = store.retry_job(t.id, ok, later).await.unwrap().unwrap();
        assert_eq!(same.status, JobStatus::Succeeded);
    })
    .await;
}

#[tokio::test]
async fn heartbeats_cancellation_and_expired_leases() {
    on_every_backend(|store, backend| async move {
        let t = tenant("jobs-lease");
        store.insert_tenant(&t).await.unwrap();
        let (a, _) = store
            .enqueue(&NewJob::new(t.id, "k", json!("a")).max_attempts(2))
            .await
            .unwrap();
        let (b, _) = store
            .enqueue(&NewJob::new(t.id, "k", json!("b")).max_attempts(1))
            .await
            .unwrap();
        let (c, _) = store
            .enqueue(&NewJob::new(t.id, "k", json!("c")))
            .await
            .unwrap();
        let (now, until) = lease(30);
        assert_eq!(store.claim_jobs("w", 3, now, until).await.unwrap().len(), 3);
        let cancelled = store.cancel_job(t.id, c.id).await.unwrap().unwrap();
        assert_eq!(cancelled.status, JobStatus::Cancelled);
        let held: HashSet<_> = store
            .heartbeat("w", now + Duration::seconds(60))
            .await
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(held, HashSet::from([a.id, b.id]), "{backend}");
        assert_eq!(
            store
                .finish_jobs("w", &[(c.id, Outcome::Succeeded(json!(null)))], now)
                .await
                .unwrap(),
            0,
            "{backend}: a cancelled job stays cancelled"
        );

        // The worker dies: nothing happens before its lease ends, then the jobs come back
        // (or die, when that was their last attempt).
        assert_eq!(store.reap_expired(now).await.unwrap(), 0);
        let after = now + Duration::seconds(61);
        assert_eq!(store.reap_expired(after).await.unwrap(), 2, "{backend}");
        let a = store.get_job(t.id, a.id).await.unwrap().unwrap();
        assert_eq!(a.status, JobStatus::Queued);
        assert_eq!(a.attempts, 1);
        assert!(a.last_error.unwrap().contains("lease expired"));
        let b = store.get_job(t.id, b.id).await.unwrap().unwrap();
        assert_eq!(b.status, JobStatus::Failed, "{backend}: no attempt left");
        let retaken = store.claim_jobs("w2", 5, after, after).await.unwrap();
        assert_eq!(retaken.len(), 1);
        assert_eq!(retaken[0].attempts, 2);

        let counts: std::collections::HashMap<_, _> = store
            .count_jobs(Some(t.id))
            .await
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(counts.get(&JobStatus::Running), Some(&1));
        assert_eq!(counts.get(&JobStatus::Failed), Some(&1));
        assert_eq!(counts.get(&JobStatus::Cancelled), Some(&1));
        assert_eq!(
            store.purge_jobs(now + Duration::days(1)).await.unwrap(),
            2,
            "{backend}: the finished ones"
        );
    })
    .await;
}

#[tokio::test]
async fn schedules_fire_once_per_instant() {
    on_every_backend(|store, backend| async move {
        let t = tenant("jobs-cron");
        store.insert_tenant(&t).await.unwrap();
        let now = coachlibre_core::now();
        let fire = now - Duration::seconds(5);
        let s = Schedule {
            id: ScheduleId::generate(),
            tenant_id: t.id,
            name: "weekly-digest".into(),
            cron: "0 9 * * 1".into(),
            timezone: "Europe/Paris".into(),
            kind: "system.probe".into(),
            payload: json!({}),
            enabled: true,
            next_run_at: fire,
            last_run_at: None,
            created_by: None,
            created_at: now,
        };
        store.insert_schedule(&s).await.unwrap();
        let mut dup = s.clone();
        dup.id = ScheduleId::generate();
        assert!(
            store.insert_schedule(&dup).await.is_err(),
            "{backend}: name taken"
        );
        let due = store.due_schedules(now, 10).await.unwrap();
        assert_eq!(due, vec![s.clone()], "{backend}");
        let next = now + Duration::days(7);
        let job = NewJob::new(t.id, "system.probe", json!({})).key(format!("schedule:{}", s.id));
        assert!(store.fire_schedule(s.id, fire, next, &job).await.unwrap());
        assert!(
            !store.fire_schedule(s.id, fire, next, &job).await.unwrap(),
            "{backend}: a second scheduler loses the race"
        );
        assert!(store.due_schedules(now, 10).await.unwrap().is_empty());
        let listed = store.list_schedules(t.id).await.unwrap();
        assert_eq!(listed[0].next_run_at, next);
        assert_eq!(listed[0].last_run_at, Some(fire));
        let jobs = store
            .list_jobs(t.id, &JobFilter::default(), &PageRequest::default())
            .await
            .unwrap();
        assert_eq!(jobs.len(), 1);
        assert!(store.delete_schedule(t.id, s.id).await.unwrap());
        assert!(!store.delete_schedule(t.id, s.id).await.unwrap());
    })
    .await;
}

#[tokio::test]
async fn reminders_are_delivered_once_into_their_conversation() {
    on_every_backend(|store, backend| async move {
        let t = tenant("jobs-remind");
        store.insert_tenant(&t).await.unwrap();
        let client = user(t.id, "client@r.test", Role::Client);
        store.insert_user(&client).await.unwrap();
        let agent = Agent::create(
            t.id,
            None,
            AgentInput {
                name: Some("Coach".into()),
                ..Default::default()
            },
            &[],
        )
        .unwrap();
        store.insert_agent(&agent).await.unwrap();
        let conv = Conversation::new(t.id, client.id, agent.id, Channel::Web, None).unwrap();
        store.insert_conversation(&conv).await.unwrap();
        let now = coachlibre_core::now();
        let mut due = Reminder::new(
            t.id,
            client.id,
            Some(conv.id),
            "Stretch",
            now + Duration::hours(1),
        )
        .unwrap();
        due.due_at = now - Duration::seconds(1);
        store.insert_reminder(&due).await.unwrap();
        let future =
            Reminder::new(t.id, client.id, None, "Later", now + Duration::hours(1)).unwrap();
        store.insert_reminder(&future).await.unwrap();
        let found = store.due_reminders(now, 10).await.unwrap();
        assert_eq!(found, vec![due.clone()], "{backend}");

        let m = Message::new(t.id, conv.id, ChatRole::Assistant, "Reminder: Stretch");
        assert!(
            store
                .deliver_reminder(t.id, due.id, Some(&m), None)
                .await
                .unwrap()
        );
        assert!(
            !store
                .deliver_reminder(t.id, due.id, Some(&m), None)
                .await
                .unwrap(),
            "{backend}: delivered once"
        );
        let messages = store
            .list_messages(t.id, conv.id, &PageRequest::default())
            .await
            .unwrap();
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].content, "Reminder: Stretch");
        assert!(store.due_reminders(now, 10).await.unwrap().is_empty());
        let listed = store
            .list_reminders(t.id, client.id, &PageRequest::default())
            .await
            .unwrap();
        assert_eq!(listed[0].status, ReminderStatus::Sent);
    })
    .await;
}

#[tokio::test]
async fn phones_and_numbers_stay_in_their_tenant() {
    use coachlibre_core::sms::{PhoneNumber, SmsNumber};
    on_every_backend(|store, backend| async move {
        let a = tenant("sms-a");
        let b = tenant("sms-b");
        store.insert_tenant(&a).await.unwrap();
        store.insert_tenant(&b).await.unwrap();
        let ana = user(a.id, "ana@a.test", Role::Client);
        let bob = user(a.id, "bob@a.test", Role::Client);
        let zoe = user(b.id, "zoe@b.test", Role::Client);
        for u in [&ana, &bob, &zoe] {
            store.insert_user(u).await.unwrap();
        }
        let phone = PhoneNumber::parse("+33612345678").unwrap();
        store.set_phone(a.id, ana.id, Some(&phone)).await.unwrap();
        assert_eq!(
            store.get_phone(a.id, ana.id).await.unwrap(),
            Some(phone.clone())
        );
        assert_eq!(
            store.user_by_phone(a.id, &phone).await.unwrap(),
            Some(ana.id)
        );
        // Another user of the tenant cannot take it; a user of another tenant can.
        assert!(
            matches!(
                store.set_phone(a.id, bob.id, Some(&phone)).await,
                Err(StoreError::Conflict(_))
            ),
            "{backend}"
        );
        store.set_phone(b.id, zoe.id, Some(&phone)).await.unwrap();
        assert_eq!(
            store.user_by_phone(b.id, &phone).await.unwrap(),
            Some(zoe.id)
        );
        assert_eq!(
            store.user_by_phone(a.id, &phone).await.unwrap(),
            Some(ana.id)
        );
        // A user of another tenant is not found through this one.
        assert!(matches!(
            store.set_phone(a.id, zoe.id, Some(&phone)).await,
            Err(StoreError::NotFound)
        ));
        assert_eq!(store.get_phone(a.id, zoe.id).await.unwrap(), None);
        // Changed, then cleared.
        let other = PhoneNumber::parse("+33698765432").unwrap();
        store.set_phone(a.id, ana.id, Some(&other)).await.unwrap();
        assert_eq!(
            store.get_phone(a.id, ana.id).await.unwrap(),
            Some(other.clone())
        );
        assert_eq!(store.user_by_phone(a.id, &phone).await.unwrap(), None);
        store.set_phone(a.id, ana.id, None).await.unwrap();
        assert_eq!(store.get_phone(a.id, ana.id).await.unwrap(), None);

        // Numbers: unique across tenants, agents of the tenant only.
        let agent = |t| {
            Agent::create(
                t,
                None,
                AgentInput {
                    name: Some("Texter".into()),
                    ..AgentInput::default()
                },
                &[],
            )
            .unwrap()
        };
        let (agent_a, agent_b) = (agent(a.id), agent(b.id));
        store.insert_agent(&agent_a).await.unwrap();
        store.insert_agent(&agent_b).await.unwrap();
        let line = SmsNumber {
            number: PhoneNumber::parse("+14155550100").unwrap(),
            tenant_id: a.id,
            agent_id: agent_a.id,
            created_at: coachlibre_core::now(),
        };
        store.insert_sms_number(&line).await.unwrap();
        assert!(
            matches!(
                store
                    .insert_sms_number(&SmsNumber {
                        tenant_id: b.id,
                        agent_id: agent_b.id,
                        ..line.clone()
                    })
                    .await,
                Err(StoreError::Conflict(_))
            ),
            "{backend}: one tenant per number"
        );
        let foreign_agent = SmsNumber {
            number: PhoneNumber::parse("+14155550101").unwrap(),
            agent_id: agent_b.id,
            ..line.clone()
        };
        assert!(
            matches!(
                store.insert_sms_number(&foreign_agent).await,
                Err(StoreError::NotFound)
            ),
            "{backend}: another tenant's agent"
        );
        assert_eq!(
            store.find_sms_number(&line.number).await.unwrap(),
            Some(line.clone())
        );
        assert_eq!(
            store.list_sms_numbers(a.id).await.unwrap(),
            vec![line.clone()]
        );
        assert!(store.list_sms_numbers(b.id).await.unwrap().is_empty());
        assert_eq!(
            store.sms_number_for_agent(a.id, agent_a.id).await.unwrap(),
            Some(line.clone())
        );
        assert_eq!(
            store.sms_number_for_agent(b.id, agent_a.id).await.unwrap(),
            None
        );
        assert!(!store.delete_sms_number(b.id, &line.number).await.unwrap());
        assert!(store.delete_sms_number(a.id, &line.number).await.unwrap());
        assert_eq!(store.find_sms_number(&line.number).await.unwrap(), None);
    })
    .await;
}

#[tokio::test]
async fn a_delivered_reminder_enqueues_its_text_in_the_same_transaction() {
    on_every_backend(|store, backend| async move {
        let t = tenant("outbox");
        store.insert_tenant(&t).await.unwrap();
        let client = user(t.id, "c@outbox.test", Role::Client);
        store.insert_user(&client).await.unwrap();
        let agent = Agent::create(
            t.id,
            None,
            AgentInput {
                name: Some("Nudger".into()),
                ..AgentInput::default()
            },
            &[],
        )
        .unwrap();
        store.insert_agent(&agent).await.unwrap();
        let conv = Conversation::new(t.id, client.id, agent.id, Channel::Sms, None).unwrap();
        store.insert_conversation(&conv).await.unwrap();
        let now = coachlibre_core::now();
        let r = Reminder::new(
            t.id,
            client.id,
            Some(conv.id),
            "Walk",
            now + Duration::hours(1),
        )
        .unwrap();
        store.insert_reminder(&r).await.unwrap();
        let m = Message::new(t.id, conv.id, ChatRole::Assistant, "Reminder: Walk");
        let text = NewJob::new(t.id, "sms.send", json!({"body": "Reminder: Walk"})).key("sms:walk");
        assert!(
            store
                .deliver_reminder(t.id, r.id, Some(&m), Some(&text))
                .await
                .unwrap()
        );
        // Delivered twice: nothing more is written or enqueued.
        assert!(
            !store
                .deliver_reminder(t.id, r.id, Some(&m), Some(&text))
                .await
                .unwrap()
        );
        let jobs = store
            .list_jobs(t.id, &JobFilter::default(), &PageRequest::default())
            .await
            .unwrap();
        assert_eq!(jobs.len(), 1, "{backend}");
        assert_eq!(jobs[0].kind, "sms.send");
        assert_eq!(jobs[0].idempotency_key.as_deref(), Some("sms:walk"));
        // Through another tenant, nothing is delivered or enqueued.
        let later = Reminder::new(
            t.id,
            client.id,
            Some(conv.id),
            "Nap",
            now + Duration::hours(1),
        )
        .unwrap();
        store.insert_reminder(&later).await.unwrap();
        let stranger = tenant("outbox-other");
        store.insert_tenant(&stranger).await.unwrap();
        let other = NewJob::new(stranger.id, "sms.send", json!({})).key("sms:nap");
        assert!(
            !store
                .deliver_reminder(stranger.id, later.id, Some(&m), Some(&other))
                .await
                .unwrap()
        );
        assert!(
            store
                .list_jobs(stranger.id, &JobFilter::default(), &PageRequest::default())
                .await
                .unwrap()
                .is_empty()
        );
        let jobs = store
            .list_jobs(t.id, &JobFilter::default(), &PageRequest::default())
            .await
            .unwrap();
        assert_eq!(jobs.len(), 1, "{backend}");
    })
    .await;
}

fn pending_run(tenant: coachlibre_core::ids::TenantId) -> WorkflowRun {
    let now = coachlibre_core::now();
    WorkflowRun {
        id: coachlibre_core::ids::WorkflowRunId::generate(),
        tenant_id: tenant,
        workflow: "w".into(),
        version: 1,
        definition: json!({"steps": []}),
        status: RunStatus::Pending,
        trigger: "test".into(),
        input: json!({}),
        steps: Default::default(),
        error: None,
        job_id: Some(coachlibre_core::ids::JobId::generate()),
        created_by: None,
        created_at: now,
        updated_at: now,
        finished_at: None,
    }
}

#[tokio::test]
async fn a_success_writes_its_effect_only_while_the_worker_holds_the_job() {
    on_every_backend(|store, backend| async move {
        let t = tenant("jobs-effect");
        store.insert_tenant(&t).await.unwrap();
        let mut runs = Vec::new();
        for _ in 0..3 {
            let run = pending_run(t.id);
            let mut job = NewJob::new(t.id, "workflow.run", json!({}));
            job.id = run.job_id;
            store.insert_run_with_job(&run, &job).await.unwrap();
            runs.push(run);
        }
        let (now, until) = lease(30);
        assert_eq!(store.claim_jobs("w", 3, now, until).await.unwrap().len(), 3);
        let finish = |run: &WorkflowRun| {
            let mut done = run.clone();
            done.status = RunStatus::Succeeded;
            done.finished_at = Some(now);
            let job = done.job_id.unwrap();
            (
                job,
                Outcome::SucceededWith(json!({"ok": true}), Effect::UpdateRun(Box::new(done))),
            )
        };
        // The second run's job was cancelled meanwhile: its success and its effect are
        // dropped together.
        store
            .cancel_job(t.id, runs[1].job_id.unwrap())
            .await
            .unwrap();
        let mut failed = runs[2].clone();
        failed.status = RunStatus::Failed;
        failed.error = Some("failed steps: x".into());
        failed.finished_at = Some(now);
        let outcomes = vec![
            finish(&runs[0]),
            finish(&runs[1]),
            (
                runs[2].job_id.unwrap(),
                Outcome::SucceededWith(json!(null), Effect::UpdateRun(Box::new(failed))),
            ),
        ];
        assert_eq!(
            store.finish_jobs("other", &outcomes, now).await.unwrap(),
            0,
            "{backend}"
        );
        let untouched = store.get_run(t.id, runs[0].id).await.unwrap().unwrap();
        assert_eq!(untouched.status, RunStatus::Pending, "{backend}");
        assert_eq!(store.finish_jobs("w", &outcomes, now).await.unwrap(), 2);
        let done = store.get_run(t.id, runs[0].id).await.unwrap().unwrap();
        assert_eq!(done.status, RunStatus::Succeeded, "{backend}");
        assert!(done.finished_at.is_some());
        assert_eq!(done.error, None);
        let failed = store.get_run(t.id, runs[2].id).await.unwrap().unwrap();
        assert_eq!(failed.status, RunStatus::Failed, "{backend}");
        assert_eq!(failed.error.as_deref(), Some("failed steps: x"));
        let job = store
            .get_job(t.id, runs[0].job_id.unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(job.status, JobStatus::Succeeded);
        assert_eq!(job.result, Some(json!({"ok": true})));
        let dropped = store.get_run(t.id, runs[1].id).await.unwrap().unwrap();
        assert_eq!(dropped.status, RunStatus::Pending, "{backend}");
    })
    .await;
}

#[tokio::test]
async fn batches_larger_than_a_statement_are_enqueued_and_finished_whole() {
    on_every_backend(|store, backend| async move {
        let t = tenant("jobs-batch");
        store.insert_tenant(&t).await.unwrap();
        // 150 rows: two full statements of 64 and a remainder, with keys repeating across them.
        let batch: Vec<NewJob> = (0..150)
            .map(|i| NewJob::new(t.id, "k", json!(i)).key(format!("k{}", i % 140)))
            .collect();
        assert_eq!(store.enqueue_many(&batch).await.unwrap(), 140, "{backend}");
        let (now, until) = lease(30);
        let jobs = store.claim_jobs("w", 200, now, until).await.unwrap();
        assert_eq!(jobs.len(), 140);
        let outcomes: Vec<_> = jobs
            .iter()
            .map(|j| (j.id, Outcome::Succeeded(json!({"n": j.payload.clone()}))))
            .collect();
        assert_eq!(store.finish_jobs("w", &outcomes, now).await.unwrap(), 140);
        for j in &jobs {
            let done = store.get_job(t.id, j.id).await.unwrap().unwrap();
            assert_eq!(done.status, JobStatus::Succeeded, "{backend}");
            assert_eq!(done.result, Some(json!({"n": j.payload.clone()})));
        }
    })
    .await;
}

#[tokio::test]
async fn runs_started_at_once_all_land_and_a_bad_one_fails_alone() {
    on_every_backend(|store, backend| async move {
        let t = tenant("jobs-group");
        store.insert_tenant(&t).await.unwrap();
        let runs: Vec<WorkflowRun> = (0..40).map(|_| pending_run(t.id)).collect();
        // A second run with the first one's id: whichever of the two comes second fails,
        // and only it.
        let mut twin = pending_run(t.id);
        twin.id = runs[0].id;
        let mut starts = tokio::task::JoinSet::new();
        for run in runs.iter().cloned().chain([twin.clone()]) {
            let store = store.clone();
            starts.spawn(async move {
                let mut job = NewJob::new(run.tenant_id, "workflow.run", json!({}));
                job.id = run.job_id;
                (run.job_id, store.insert_run_with_job(&run, &job).await)
            });
        }
        let mut failed = Vec::new();
        while let Some(done) = starts.join_next().await {
            let (job, result) = done.unwrap();
            match result {
                Ok(()) => {}
                Err(StoreError::Conflict(_)) => failed.push(job),
                Err(e) => panic!("{backend}: {e}"),
            }
        }
        assert_eq!(failed.len(), 1, "{backend}");
        let failed = failed[0].unwrap();
        assert!(
            failed == twin.job_id.unwrap() || failed == runs[0].job_id.unwrap(),
            "{backend}"
        );
        assert_eq!(
            store.get_job(t.id, failed).await.unwrap(),
            None,
            "{backend}: the failed start left no job"
        );
        for run in &runs[1..] {
            assert!(store.get_run(t.id, run.id).await.unwrap().is_some());
            let job = run.job_id.unwrap();
            assert!(
                store.get_job(t.id, job).await.unwrap().is_some(),
                "{backend}"
            );
        }
        assert!(store.get_run(t.id, runs[0].id).await.unwrap().is_some());
    })
    .await;
}

#[tokio::test]
async fn jobs_enqueued_at_once_keep_their_keys_apart() {
    on_every_backend(|store, backend| async move {
        let t = tenant("jobs-burst");
        store.insert_tenant(&t).await.unwrap();
        // 60 enqueues at once: 30 without a key, 30 sharing three keys.
        let mut enqueues = tokio::task::JoinSet::new();
        for i in 0..60 {
            let store = store.clone();
            let mut new = NewJob::new(t.id, "k", json!(i));
            if i % 2 == 1 {
                new = new.key(format!("key{}", i % 3));
            }
            enqueues.spawn(async move {
                let key = new.idempotency_key.clone();
                (key, store.enqueue(&new).await.unwrap())
            });
        }
        let mut by_key: std::collections::HashMap<Option<String>, Vec<_>> = Default::default();
        while let Some(done) = enqueues.join_next().await {
            let (key, (job, created)) = done.unwrap();
            by_key.entry(key).or_default().push((job.id, created));
        }
        assert_eq!(by_key[&None].len(), 30);
        assert!(
            by_key[&None].iter().all(|(_, created)| *created),
            "{backend}"
        );
        for k in 0..3 {
            let same = &by_key[&Some(format!("key{k}"))];
            assert_eq!(same.len(), 10);
            assert_eq!(same.iter().filter(|(_, c)| *c).count(), 1, "{backend}: {k}");
            assert!(same.iter().all(|(id, _)| *id == same[0].0), "{backend}");
        }
        let counts = store.count_jobs(Some(t.id)).await.unwrap();
        assert_eq!(counts, vec![(JobStatus::Queued, 33)], "{backend}");
    })
    .await;
}
