//! Skills over HTTP: listed for coaches, refused to clients, run as a job whose result is the
//! checked answer, bad input refused with the schema's complaint, tenant skills added.

use std::sync::Arc;
use std::time::Duration;

use coachlibre_testkit::scripted::{Script, ScriptedModel};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::agents::models;
use crate::helpers::TestApp;

#[tokio::test]
async fn skills_are_listed_run_and_added() {
    for db in coachlibre_testkit::TestDb::all().await.expect("db") {
        let model = Arc::new(ScriptedModel::new("scripted"));
        let app =
            TestApp::spawn_with_models(db, |c| c.skills.model = "scripted".into(), models(&model))
                .await;
        let admin = app.admin_token().await;
        app.create_user(&admin, "coach@s.test", "coach").await;
        app.create_user(&admin, "client@s.test", "client").await;
        let coach = app.login("coach@s.test", "password for tests").await;
        let client = app.login("client@s.test", "password for tests").await;

        let r = app.get("/api/v1/skills", &coach).await;
        assert_eq!(r.status, StatusCode::OK);
        let names: Vec<&str> = r
            .body
            .as_array()
            .expect("list")
            .iter()
            .map(|s| s["name"].as_str().expect("name"))
            .collect();
        assert_eq!(names.len(), 17, "{names:?}");
        assert!(names.contains(&"business-model-extractor") && names.contains(&"session-summary"));
        let r = app.get("/api/v1/skills", &client).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let r = app.get("/api/v1/skills/smart-goal", &coach).await;
        assert_eq!(r.body["output_format"], "json");

        let r = app
            .post(
                "/api/v1/skills/session-summary/run",
                &coach,
                json!({"input": {"notes": 42}}),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
        assert!(
            r.body["error"]["message"]
                .as_str()
                .expect("msg")
                .contains("/notes"),
            "{}",
            r.body
        );

        model.push(Script::text(
            "## What we discussed\nSleep.\n## Insights\nScreens late.\n## Your commitments\n\
             Phone out of the bedroom.\n## For next session\nA sleep diary.",
        ));
        let r = app
            .post(
                "/api/v1/skills/session-summary/run",
                &coach,
                json!({"input": {"client_name": "Alice", "notes": "We talked about sleep."}}),
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
        let id = r.body["id"].as_str().expect("job id").to_owned();
        let mut job = Value::Null;
        for _ in 0..200 {
            job = app.get(&format!("/api/v1/jobs/{id}"), &coach).await.body;
            if job["status"] == "succeeded" || job["status"] == "failed" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(job["status"], "succeeded", "{job}");
        assert!(
            job["result"]["text"]
                .as_str()
                .expect("text")
                .contains("sleep diary")
        );
        assert_eq!(job["result"]["skill"], "session-summary");

        let def = "name = \"intake\"\ncategory = \"coaching\"\ndescription = \"Intake questions.\"\n\
                   prompt = \"Questions for {{topic}}.\"\n[input]\ntype = \"object\"\n\
                   [input.properties.topic]\ntype = \"string\"\n";
        let r = app
            .post("/api/v1/skills", &coach, json!({"definition": def}))
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let r = app
            .post("/api/v1/skills", &admin, json!({"definition": def}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let r = app
            .post("/api/v1/skills", &admin, json!({"definition": "name = 1"}))
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
        let r = app.get("/api/v1/skills", &coach).await;
        assert_eq!(r.body.as_array().expect("list").len(), 18);
        let r = app
            .call(
                reqwest::Method::DELETE,
                "/api/v1/skills/intake",
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        app.stop().await;
    }
}
