//! Workflows over HTTP: saved by an admin (422 for a cycle), run by a coach through the
//! server's own workers, the run's steps readable; clients refused.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::TestApp;

#[tokio::test]
async fn workflows_over_http() {
    for app in TestApp::each().await {
        let admin = app.admin_token().await;
        app.create_user(&admin, "coach@w.test", "coach").await;
        app.create_user(&admin, "client@w.test", "client").await;
        let coach = app.login("coach@w.test", "password for tests").await;
        let client = app.login("client@w.test", "password for tests").await;

        let cycle = json!({"definition": {"name": "c", "steps": [
            {"id": "a", "kind": "transform", "value": 1, "needs": ["b"]},
            {"id": "b", "kind": "transform", "value": 1, "needs": ["a"]}]}});
        let r = app.post("/api/v1/workflows", &admin, cycle).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
        assert!(
            r.body["error"]["message"]
                .as_str()
                .expect("m")
                .contains("cycle")
        );
        let def = json!({"definition": {"name": "welcome", "steps": [
            {"id": "hello", "kind": "aggregate", "template": "Welcome {{input.name}}"}]}});
        let r = app.post("/api/v1/workflows", &coach, def.clone()).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let r = app.post("/api/v1/workflows", &admin, def).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);

        let r = app
            .post(
                "/api/v1/workflows/welcome/runs",
                &coach,
                json!({"input": {"name": "Ana"}}),
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
        let id = r.body["id"].as_str().expect("id").to_owned();
        let mut run = Value::Null;
        for _ in 0..200 {
            run = app
                .get(&format!("/api/v1/workflow-runs/{id}"), &coach)
                .await
                .body;
            if run["status"] == "succeeded" || run["status"] == "failed" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(run["status"], "succeeded", "{run}");
        assert_eq!(run["steps"]["hello"]["output"]["text"], "Welcome Ana");
        let r = app.get("/api/v1/workflows/welcome/runs", &admin).await;
        assert_eq!(r.body["items"].as_array().expect("items").len(), 1);
        let r = app.get("/api/v1/workflows", &client).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        app.stop().await;
    }
}
