//! Workflows on SQLite and (with `TEST_DATABASE_URL`) PostgreSQL, run by a real worker: a
//! fan-out and fan-in with a condition and a failing step; a run resumed after its worker
//! stopped mid-run, without redoing finished steps; versions; permissions.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use coachlibre_core::Error;
use coachlibre_core::accounts::By;
use coachlibre_core::actor::Actor;
use coachlibre_core::ids::WorkflowRunId;
use coachlibre_core::model::{
    ChatEvent, ChatModel, ChatRequest, ChatStream, FinishReason, ModelError, Usage,
};
use coachlibre_core::store::Store;
use coachlibre_core::tenant::{Tenant, TenantSlug};
use coachlibre_core::user::Role;
use coachlibre_core::workflow::{RunStatus, WorkflowRun};
use coachlibre_jobs::worker::{Worker, WorkerConfig};
use coachlibre_jobs::{Jobs, Registry};
use coachlibre_skills::{Catalog, Skills};
use coachlibre_store::{ConnectOptions, SqlStore};
use coachlibre_testkit::TestDb;
use coachlibre_testkit::people::{actor, person};
use coachlibre_testkit::scripted::ScriptedSource;
use coachlibre_workflows::{RUN, RunWorkflow, START, StartWorkflow, Workflows};
use serde_json::json;

/// Echoes the text it is asked to say; fails on "fail"; takes its time on "slow". Counts calls
/// per text.
#[derive(Default)]
struct EchoModel {
    calls: std::sync::Mutex<Vec<String>>,
    slow: AtomicUsize,
}

#[async_trait]
impl ChatModel for EchoModel {
    fn name(&self) -> &str {
        "echo"
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatStream, ModelError> {
        let prompt = request
            .messages
            .last()
            .map(|m| m.content.clone())
            .unwrap_or_default();
        let said = prompt.trim_start_matches("Say: ").trim().to_owned();
        self.calls.lock().expect("lock").push(said.clone());
        if said.contains("fail") {
            return Err(ModelError::Unavailable("asked to fail".into()));
        }
        if said.contains("slow") {
            self.slow.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        let events = vec![
            Ok(ChatEvent::Token(format!("ECHO: {said}"))),
            Ok(ChatEvent::Done {
                usage: Usage::default(),
                finish: FinishReason::Stop,
            }),
        ];
        Ok(Box::pin(futures_util::stream::iter(events)))
    }
}

const ECHO_SKILL: &str = r#"
name = "echo"
category = "test"
description = "Says the text back."
prompt = "Say: {{text}}"
[input]
type = "object"
required = ["text"]
[input.properties.text]
type = "string"
"#;

struct World {
    store: Arc<dyn Store>,
    jobs: Jobs,
    workflows: Workflows,
    model: Arc<EchoModel>,
    admin: Actor,
    coach: Actor,
    client: Actor,
    _db: TestDb,
}

fn config() -> WorkerConfig {
    WorkerConfig {
        poll: Duration::from_millis(20),
        lease: Duration::from_millis(900),
        retry_base: Duration::from_millis(20),
        retry_max: Duration::from_millis(50),
        grace: Duration::from_millis(100),
        ..WorkerConfig::default()
    }
}

fn start(
    jobs: &Jobs,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(Worker::new(jobs.clone(), config()).run(async move {
        let _ = stopped.await;
    }));
    (stop, task)
}

/// A migrated store with a tenant, its admin, coach and client, and workflows whose skills
/// run on `model`.
async fn build(
    db: &TestDb,
    model: Arc<dyn ChatModel>,
) -> (Arc<dyn Store>, Jobs, Workflows, Vec<Actor>) {
    let sql = SqlStore::connect(&db.url, &ConnectOptions::default())
        .await
        .expect("connect");
    sql.migrate().await.expect("migrate");
    let store: Arc<dyn Store> = Arc::new(sql);
    let t = Tenant::new(TenantSlug::parse("flows").expect("slug"), "P").expect("t");
    store.insert_tenant(&t).await.expect("tenant");
    let mut actors = Vec::new();
    for (name, role) in [
        ("admin", Role::Admin),
        ("coach", Role::Coach),
        ("client", Role::Client),
    ] {
        let u = person(t.id, &format!("{name}@flows.test"), role);
        store.insert_user(&u).await.expect("user");
        actors.push(actor(&u));
    }
    let source = Arc::new(ScriptedSource::new().with("m", model));
    let catalog = Catalog::new(store.clone(), source, "m");
    let mut registry = Registry::builtin();
    let engine = RunWorkflow::new(catalog.clone()).retry_delay(Duration::from_millis(10));
    registry.register(START, Arc::new(StartWorkflow(engine.clone())));
    registry.register(RUN, Arc::new(engine));
    let jobs = Jobs::new(store.clone(), registry);
    Skills::new(catalog.clone(), jobs.clone())
        .put(By::Actor(&actors[0]), ECHO_SKILL)
        .await
        .expect("echo skill");
    let workflows = Workflows::new(store.clone(), jobs.clone(), catalog);
    (store, jobs, workflows, actors)
}

async fn worlds() -> Vec<World> {
    let mut out = Vec::new();
    for db in TestDb::all().await.expect("db") {
        let model = Arc::new(EchoModel::default());
        let (store, jobs, workflows, actors) = build(&db, model.clone()).await;
        out.push(World {
            workflows,
            jobs,
            store,
            model,
            admin: actors[0].clone(),
            coach: actors[1].clone(),
            client: actors[2].clone(),
            _db: db,
        });
    }
    out
}

async fn finished(w: &World, id: WorkflowRunId) -> WorkflowRun {
    for _ in 0..500 {
        let r = w.workflows.run(By::Actor(&w.admin), id).await.expect("run");
        if r.status.is_final() {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the run did not finish");
}

#[tokio::test]
async fn fan_out_fan_in_condition_and_a_failing_step() {
    for w in worlds().await {
        let (stop, task) = start(&w.jobs);
        let def = json!({"name": "greetings", "steps": [
            {"id": "names", "kind": "transform", "value": {"list": "{{input.names}}"}},
            {"id": "greet", "kind": "map", "over": "steps.names.list", "skill": "echo",
             "input": {"text": "hello {{item}}"}, "needs": ["names"]},
            {"id": "all", "kind": "aggregate", "needs": ["greet"],
             "template": "{{steps.greet.0.text}} | {{steps.greet.1.text}}"},
            {"id": "check", "kind": "condition", "path": "input.vip", "equals": true},
            {"id": "vip", "kind": "skill", "skill": "echo", "input": {"text": "vip"}, "needs": ["check"]},
            {"id": "broken", "kind": "skill", "skill": "echo", "input": {"text": "please fail"}},
            {"id": "after_broken", "kind": "aggregate", "template": "x", "needs": ["broken"]}
        ]});
        let saved = w.workflows.save(By::Actor(&w.admin), def).await.unwrap();
        assert_eq!(saved.version, 1);
        let run = w
            .workflows
            .start(
                By::Actor(&w.coach),
                "greetings",
                json!({"names": ["Ana", "Bo"], "vip": false}),
                "api",
            )
            .await
            .unwrap();
        assert!(run.job_id.is_some());
        let run = finished(&w, run.id).await;
        assert_eq!(run.status, RunStatus::Failed);
        assert_eq!(run.error.as_deref(), Some("failed steps: broken"));
        let step = |id: &str| run.steps.get(id).cloned().expect("step");
        assert_eq!(step("greet").status, Some(RunStatus::Succeeded));
        assert_eq!(
            step("greet").input,
            Some(json!([{"text": "hello Ana"}, {"text": "hello Bo"}]))
        );
        assert_eq!(
            step("all").output,
            Some(json!({"text": "ECHO: hello Ana | ECHO: hello Bo"}))
        );
        assert_eq!(step("check").output, Some(json!({"passed": false})));
        assert_eq!(step("vip").status, Some(RunStatus::Skipped));
        assert!(
            step("vip")
                .error
                .expect("why")
                .contains("condition 'check' was false")
        );
        assert_eq!(step("broken").status, Some(RunStatus::Failed));
        assert_eq!(step("broken").attempts, 2, "retried once by its policy");
        assert_eq!(step("after_broken").status, Some(RunStatus::Skipped));
        assert!(step("all").started_at.is_some() && step("all").finished_at.is_some());
        let _ = stop.send(());
        task.await.unwrap();
    }
}

#[tokio::test]
async fn a_run_resumes_after_its_worker_stops_without_redoing_finished_steps() {
    for w in worlds().await {
        let def = json!({"name": "two-steps", "steps": [
            {"id": "first", "kind": "skill", "skill": "echo", "input": {"text": "first"}},
            {"id": "second", "kind": "skill", "skill": "echo", "input": {"text": "slow second"},
             "needs": ["first"]}
        ]});
        w.workflows.save(By::Actor(&w.admin), def).await.unwrap();
        let (stop, task) = start(&w.jobs);
        let run = w
            .workflows
            .start(By::Actor(&w.admin), "two-steps", json!({}), "cli")
            .await
            .unwrap();
        // Stop the worker while the second step runs.
        for _ in 0..300 {
            if w.model.slow.load(Ordering::SeqCst) > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = stop.send(());
        task.await.unwrap();
        let mid = w.workflows.run(By::Actor(&w.admin), run.id).await.unwrap();
        assert_eq!(mid.steps["first"].status, Some(RunStatus::Succeeded));
        assert_ne!(mid.status, RunStatus::Succeeded);

        let (stop, task) = start(&w.jobs);
        let done = finished(&w, run.id).await;
        assert_eq!(done.status, RunStatus::Succeeded, "{:?}", done.error);
        assert_eq!(
            done.steps["second"].output.as_ref().expect("output")["text"],
            "ECHO: slow second"
        );
        let calls = w.model.calls.lock().expect("lock").clone();
        assert_eq!(
            calls.iter().filter(|c| *c == "first").count(),
            1,
            "the finished step was not run again: {calls:?}"
        );
        let _ = stop.send(());
        task.await.unwrap();
    }
}

#[tokio::test]
async fn versions_and_permissions() {
    for w in worlds().await {
        let def = json!({"name": "v", "steps": [{"id": "a", "kind": "transform", "value": 1}]});
        let err = w
            .workflows
            .save(By::Actor(&w.coach), def.clone())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Forbidden(_)), "{err}");
        let bad = json!({"name": "v", "steps": [{"id": "a", "kind": "skill", "skill": "nope", "input": {}}]});
        let err = w
            .workflows
            .save(By::Actor(&w.admin), bad)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Invalid {
                    field: "definition",
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            w.workflows
                .save(By::Actor(&w.admin), def.clone())
                .await
                .unwrap()
                .version,
            1
        );
        let v2 = json!({"name": "v", "steps": [{"id": "a", "kind": "transform", "value": 2}]});
        assert_eq!(
            w.workflows
                .save(By::Actor(&w.admin), v2)
                .await
                .unwrap()
                .version,
            2
        );
        let listed = w.workflows.list(By::Actor(&w.coach)).await.unwrap();
        let v = listed.iter().find(|w| w.name == "v").expect("listed");
        assert_eq!(v.version, 2, "the latest version");
        assert_eq!(listed.len(), 2, "and the shipped template");
        let err = w.workflows.list(By::Actor(&w.client)).await.unwrap_err();
        assert!(matches!(err, Error::Forbidden(_)), "{err}");
        let run = w
            .workflows
            .start(By::Actor(&w.coach), "v", json!({}), "api")
            .await
            .unwrap();
        assert_eq!(run.version, 2);
        let runs = w
            .workflows
            .runs(By::Actor(&w.admin), Some("v"), &Default::default())
            .await
            .unwrap();
        assert_eq!(runs.items.len(), 1);
        let _ = &w.store;
    }
}

/// A crew's worker revises when criticised; its supervisor accepts the IntentManager's
/// second draft and never the Stubborn role's.
struct CrewModel;

#[async_trait]
impl ChatModel for CrewModel {
    fn name(&self) -> &str {
        "crew"
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatStream, ModelError> {
        let prompt = request
            .messages
            .last()
            .map(|m| m.content.clone())
            .unwrap_or_default();
        let system = request
            .messages
            .first()
            .map(|m| m.content.clone())
            .unwrap_or_default();
        let answer = if prompt.contains("Draft to check:") {
            let criteria: Vec<&str> = prompt
                .split("one per line:")
                .nth(1)
                .and_then(|r| r.split("Draft to check:").next())
                .unwrap_or("")
                .lines()
                .filter_map(|l| l.trim().strip_prefix("- "))
                .collect();
            let accept = system.contains("IntentManager") && prompt.contains("revised");
            let items: Vec<serde_json::Value> = criteria
                .iter()
                .enumerate()
                .map(|(i, c)| json!({"criterion": c, "met": accept || i == 0, "reason": "checked"}))
                .collect();
            json!({"criteria": items, "feedback": "add the audience"}).to_string()
        } else if prompt.contains("add the audience") {
            "A revised draft with the audience.".to_owned()
        } else {
            "A first draft.".to_owned()
        };
        let events = vec![
            Ok(ChatEvent::Token(answer)),
            Ok(ChatEvent::Done {
                usage: Usage::default(),
                finish: FinishReason::Stop,
            }),
        ];
        Ok(Box::pin(futures_util::stream::iter(events)))
    }
}

#[tokio::test]
async fn crew_roles_loop_until_their_gate_and_stop_at_it() {
    for db in TestDb::all().await.expect("db") {
        let (_store, jobs, workflows, actors) = build(&db, Arc::new(CrewModel)).await;
        let admin = &actors[0];
        // The shipped template is listed (version 0) and parses.
        let listed = workflows.list(By::Actor(admin)).await.unwrap();
        assert!(
            listed
                .iter()
                .any(|w| w.name == "deliverable-crew" && w.version == 0)
        );
        let def = json!({"name": "two-roles", "steps": [
            {"id": "intent", "kind": "crew", "role": "IntentManager", "task": "Clarify {{input.r}}",
             "criteria": ["states the goal", "names the audience"], "max_rounds": 3},
            {"id": "stubborn", "kind": "crew", "role": "Stubborn", "task": "Plan",
             "criteria": ["lists milestones", "gives dates"], "max_rounds": 2, "needs": ["intent"]},
            {"id": "after", "kind": "aggregate", "template": "x", "needs": ["stubborn"]}
        ]});
        workflows.save(By::Actor(admin), def).await.unwrap();
        let (stop, task) = start(&jobs);
        let run = workflows
            .start(
                By::Actor(admin),
                "two-roles",
                json!({"r": "a 10 km plan"}),
                "api",
            )
            .await
            .unwrap();
        let mut run_now = run.clone();
        for _ in 0..500 {
            run_now = workflows.run(By::Actor(admin), run.id).await.unwrap();
            if run_now.status.is_final() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let intent = &run_now.steps["intent"];
        assert_eq!(
            intent.status,
            Some(RunStatus::Succeeded),
            "{:?}",
            intent.error
        );
        let out = intent.output.as_ref().expect("output");
        assert_eq!(out["accepted"], true);
        assert_eq!(out["text"], "A revised draft with the audience.");
        let rounds = out["rounds"].as_array().expect("rounds");
        assert_eq!(rounds.len(), 2, "rejected once, then accepted");
        assert_eq!(rounds[0]["unmet"], json!(["names the audience"]));
        assert_eq!(rounds[0]["feedback"], "add the audience");

        let stubborn = &run_now.steps["stubborn"];
        assert_eq!(stubborn.status, Some(RunStatus::Failed));
        assert_eq!(stubborn.attempts, 1, "a closed gate is not retried");
        let why = stubborn.error.as_deref().expect("reasons");
        assert!(
            why.contains("not accepted after 2 rounds") && why.contains("gives dates"),
            "{why}"
        );
        assert_eq!(run_now.steps["after"].status, Some(RunStatus::Skipped));
        assert_eq!(run_now.status, RunStatus::Failed);
        let _ = stop.send(());
        task.await.unwrap();
    }
}

#[tokio::test]
async fn a_schedule_starts_a_workflow_through_a_job() {
    for w in worlds().await {
        let def = json!({"name": "nightly", "steps": [
            {"id": "note", "kind": "aggregate", "template": "night of {{input.day}}"}]});
        w.workflows.save(By::Actor(&w.admin), def).await.unwrap();
        // What a cron schedule of kind workflow.start enqueues when it fires.
        let job = coachlibre_core::job::NewJob::new(
            w.admin.tenant_id,
            START,
            json!({"workflow": "nightly", "input": {"day": "monday"}}),
        );
        let (job, _) = w.jobs.enqueue(job).await.unwrap();
        let (stop, task) = start(&w.jobs);
        let mut runs = Vec::new();
        for _ in 0..300 {
            runs = w
                .workflows
                .runs(By::Actor(&w.admin), Some("nightly"), &Default::default())
                .await
                .unwrap()
                .items;
            if runs.first().is_some_and(|r| r.status.is_final()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].trigger, "schedule");
        assert_eq!(runs[0].job_id, Some(job.id));
        assert_eq!(
            runs[0].steps["note"].output,
            Some(json!({"text": "night of monday"}))
        );
        let _ = stop.send(());
        task.await.unwrap();
    }
}
