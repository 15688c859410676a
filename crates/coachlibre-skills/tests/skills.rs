//! Skills on SQLite and (with `TEST_DATABASE_URL`) PostgreSQL, run as jobs by a real worker
//! with a scripted model: every built-in skill parses; input is checked before queueing; an
//! answer missing sections is sent back once; JSON answers are parsed and checked; tenant
//! skills are added, listed, run and deleted; clients cannot use skills.

use std::sync::Arc;
use std::time::Duration;

use coachlibre_core::Error;
use coachlibre_core::accounts::By;
use coachlibre_core::actor::Actor;
use coachlibre_core::ids::JobId;
use coachlibre_core::job::{Job, JobStatus};
use coachlibre_core::store::Store;
use coachlibre_core::tenant::{Tenant, TenantSlug};
use coachlibre_core::user::Role;
use coachlibre_jobs::worker::{Worker, WorkerConfig};
use coachlibre_jobs::{Jobs, Registry};
use coachlibre_skills::{Catalog, RUN, RunSkill, SkillOutput, Skills, builtin};
use coachlibre_store::{ConnectOptions, SqlStore};
use coachlibre_testkit::TestDb;
use coachlibre_testkit::people::{actor, person};
use coachlibre_testkit::scripted::{Script, ScriptedModel, ScriptedSource};
use serde_json::json;

struct World {
    store: Arc<dyn Store>,
    skills: Skills,
    model: Arc<ScriptedModel>,
    admin: Actor,
    coach: Actor,
    client: Actor,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _db: TestDb,
}

async fn worlds() -> Vec<World> {
    let mut out = Vec::new();
    for db in TestDb::all().await.expect("db") {
        let sql = SqlStore::connect(&db.url, &ConnectOptions::default())
            .await
            .expect("connect");
        sql.migrate().await.expect("migrate");
        let store: Arc<dyn Store> = Arc::new(sql);
        let t = Tenant::new(TenantSlug::parse("skills").expect("slug"), "P").expect("t");
        store.insert_tenant(&t).await.expect("tenant");
        let mut actors = Vec::new();
        for (name, role) in [
            ("admin", Role::Admin),
            ("coach", Role::Coach),
            ("client", Role::Client),
        ] {
            let u = person(t.id, &format!("{name}@skills.test"), role);
            store.insert_user(&u).await.expect("user");
            actors.push(actor(&u));
        }
        let model = Arc::new(ScriptedModel::new("scripted"));
        let source = Arc::new(ScriptedSource::new().with("scripted", model.clone()));
        let catalog = Catalog::new(store.clone(), source, "scripted");
        let mut registry = Registry::builtin();
        registry.register(RUN, Arc::new(RunSkill(catalog.clone())));
        let jobs = Jobs::new(store.clone(), registry);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let config = WorkerConfig {
            poll: Duration::from_millis(20),
            ..WorkerConfig::default()
        };
        tokio::spawn(Worker::new(jobs.clone(), config).run(async move {
            let _ = stopped.await;
        }));
        out.push(World {
            skills: Skills::new(catalog, jobs),
            store,
            model,
            admin: actors[0].clone(),
            coach: actors[1].clone(),
            client: actors[2].clone(),
            stop: Some(stop),
            _db: db,
        });
    }
    out
}

impl World {
    async fn finished(&self, id: JobId) -> Job {
        for _ in 0..500 {
            let job = self
                .store
                .get_job(self.admin.tenant_id, id)
                .await
                .expect("get")
                .expect("job");
            if job.status.is_final() {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("skill job did not finish");
    }

    async fn output(&self, id: JobId) -> SkillOutput {
        let job = self.finished(id).await;
        assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.last_error);
        serde_json::from_value(job.result.expect("result")).expect("skill output")
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

#[test]
fn every_builtin_skill_parses() {
    assert_eq!(builtin::FILES.len(), 17);
    let mut names = Vec::new();
    for (file, text) in builtin::FILES {
        let s = coachlibre_skills::Skill::parse(text).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(format!("{}.toml", s.name), *file);
        names.push(s.name);
    }
    assert_eq!(builtin::BUSINESS_INTELLIGENCE.len(), 12);
    for n in builtin::BUSINESS_INTELLIGENCE {
        assert!(names.iter().any(|x| x == n), "{n}");
    }
    for n in [
        "session-summary",
        "smart-goal",
        "weekly-action-plan",
        "crew-worker",
        "crew-supervisor",
    ] {
        assert!(names.iter().any(|x| x == n), "{n}");
    }
}

#[tokio::test]
async fn a_skill_runs_as_a_job_and_its_answer_is_checked() {
    for w in worlds().await {
        let input = json!({"company": "Acme Yoga", "url": "https://acme.test",
                           "site_text": "Yoga classes for beginners in Lyon. Book online."});
        // Bad input is refused before anything is queued.
        let err = w
            .skills
            .start(
                By::Actor(&w.coach),
                "swot-analysis",
                json!({"company": "Acme"}),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Invalid { field: "input", .. }),
            "{err}"
        );
        let err = w
            .skills
            .start(By::Actor(&w.coach), "no-such-skill", input.clone())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err}");

        // The first answer lacks two sections: sent back once, the second is complete.
        w.model.push(Script::text(
            "## Strengths\nFriendly teachers.\n## Weaknesses\nFew classes.",
        ));
        w.model.push(Script::text(
            "## Strengths\nFriendly.\n## Weaknesses\nFew.\n## Opportunities\nOffices.\n## Threats\nApps.",
        ));
        let job = w
            .skills
            .start(By::Actor(&w.coach), "swot-analysis", input.clone())
            .await
            .unwrap();
        assert_eq!(job.created_by, Some(w.coach.user_id));
        let out = w.output(job.id).await;
        assert!(out.corrected);
        assert!(out.text.contains("## Threats\nApps."), "{}", out.text);
        let requests = w.model.requests();
        let first = &requests[requests.len() - 2];
        let prompt = &first.messages[1].content;
        assert!(
            prompt.contains("Acme Yoga") && prompt.contains("Book online"),
            "{prompt}"
        );
        assert!(
            prompt.contains("Opportunities"),
            "the sections are asked for"
        );
        let second = requests.last().expect("second call");
        assert!(
            second
                .messages
                .last()
                .expect("m")
                .content
                .contains("Opportunities")
        );

        // Still missing after the second chance: kept, the gap shown.
        w.model.push(Script::text("Just prose."));
        w.model.push(Script::text("## Strengths\nStill prose."));
        let job = w
            .skills
            .start(By::Actor(&w.coach), "swot-analysis", input)
            .await
            .unwrap();
        let out = w.output(job.id).await;
        assert!(
            out.text.contains("## Threats\n\n_(not provided)_"),
            "{}",
            out.text
        );
    }
}

#[tokio::test]
async fn json_skills_are_parsed_and_validated() {
    for w in worlds().await {
        let goal = json!({"title": "Run 10 km", "specific": "Run 10 km without stopping",
            "measurable": "distance", "achievable": "3 runs a week", "relevant": "health",
            "time_bound": "by June", "key_results": [{"title": "long run", "target": 10, "unit": "km"}]});
        w.model
            .push(Script::text(&format!("Here it is:\n```json\n{goal}\n```")));
        let job = w
            .skills
            .start(
                By::Actor(&w.coach),
                "smart-goal",
                json!({"goal": "run more"}),
            )
            .await
            .unwrap();
        let out = w.output(job.id).await;
        assert_eq!(out.data, Some(goal));
        assert!(!out.corrected);

        // Never valid: the job fails (permanently: the answer, not the service, is wrong).
        w.model.push(Script::text("{\"title\": \"x\"}"));
        w.model.push(Script::text("no json at all"));
        let job = w
            .skills
            .start(
                By::Actor(&w.coach),
                "smart-goal",
                json!({"goal": "run more"}),
            )
            .await
            .unwrap();
        let job = w.finished(job.id).await;
        assert_eq!(job.status, JobStatus::Failed);
        assert_eq!(job.attempts, 1);
        assert!(job.last_error.expect("error").contains("not a JSON object"));
    }
}

#[tokio::test]
async fn tenants_add_their_own_skills() {
    for w in worlds().await {
        let def = r#"
name = "gratitude-letter"
category = "coaching"
description = "A short gratitude letter the client can adapt."
prompt = "Write a gratitude letter to {{recipient}}."
[input]
type = "object"
required = ["recipient"]
[input.properties.recipient]
type = "string"
[output]
sections = ["Letter"]
"#;
        let err = w.skills.put(By::Actor(&w.coach), def).await.unwrap_err();
        assert!(matches!(err, Error::Forbidden(_)), "{err}");
        let err = w
            .skills
            .put(By::Actor(&w.admin), "name = \"broken\"")
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
        let err = w
            .skills
            .put(
                By::Actor(&w.admin),
                &def.replace("gratitude-letter", "smart-goal"),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Conflict(_)), "{err}");
        let info = w.skills.put(By::Actor(&w.admin), def).await.unwrap();
        assert!(!info.builtin);
        let listed = w.skills.list(By::Actor(&w.coach)).await.unwrap();
        assert_eq!(listed.len(), 18);
        assert!(
            listed
                .iter()
                .any(|s| s.name == "gratitude-letter" && !s.builtin)
        );

        w.model
            .push(Script::text("## Letter\nDear Sam, thank you."));
        let job = w
            .skills
            .start(
                By::Actor(&w.coach),
                "gratitude-letter",
                json!({"recipient": "Sam"}),
            )
            .await
            .unwrap();
        assert!(w.output(job.id).await.text.contains("Dear Sam"));

        let err = w.skills.list(By::Actor(&w.client)).await.unwrap_err();
        assert!(matches!(err, Error::Forbidden(_)), "{err}");
        let err = w
            .skills
            .delete(By::Actor(&w.admin), "smart-goal")
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Conflict(_)), "{err}");
        w.skills
            .delete(By::Actor(&w.admin), "gratitude-letter")
            .await
            .unwrap();
        assert_eq!(w.skills.list(By::Actor(&w.admin)).await.unwrap().len(), 17);
    }
}

#[tokio::test]
async fn skills_call_their_allowed_tools_before_answering() {
    for w in worlds().await {
        let def = r#"
name = "dated-plan"
category = "coaching"
description = "A plan for the coming days, dated."
prompt = "Plan the next three days for {{goal}}."
allowed_tools = ["current_date"]
[input]
type = "object"
required = ["goal"]
[input.properties.goal]
type = "string"
[output]
sections = ["Plan"]
"#;
        let err = w
            .skills
            .put(
                By::Actor(&w.admin),
                &def.replace(r#"["current_date"]"#, r#"["teleport"]"#),
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no tool 'teleport'"), "{err}");
        w.skills.put(By::Actor(&w.admin), def).await.unwrap();

        // The model asks for the date, then a tool it may not use, then answers.
        w.model.push(Script::call("current_date", json!({})));
        w.model.push(Script::call(
            "fetch_page",
            json!({"url": "https://example.org"}),
        ));
        w.model
            .push(Script::text("## Plan\nMonday: walk 20 minutes."));
        let job = w
            .skills
            .start(
                By::Actor(&w.coach),
                "dated-plan",
                json!({"goal": "walking"}),
            )
            .await
            .unwrap();
        let out = w.output(job.id).await;
        assert_eq!(out.tools_used, ["current_date", "fetch_page"]);
        assert!(out.text.contains("Monday"));
        let requests = w.model.requests();
        let last = requests.last().expect("requests");
        let results: Vec<&str> = last
            .messages
            .iter()
            .filter(|m| m.role == coachlibre_core::model::ChatRole::Tool)
            .map(|m| m.content.as_str())
            .collect();
        let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
        assert!(results[0].contains(&today), "{results:?}");
        assert!(results[1].contains("not allowed"), "{results:?}");
        // Only the allowed tool was offered to the model.
        let offered: Vec<&str> = requests[0].tools.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(offered, ["current_date"]);
    }
}
