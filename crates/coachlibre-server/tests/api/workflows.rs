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

        // The webhook: the secret in the URL, or an HMAC signature of the body.
        let r = app.get("/api/v1/workflows/welcome/webhook", &coach).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let hook = app
            .get("/api/v1/workflows/welcome/webhook", &admin)
            .await
            .body;
        let path = hook["path"].as_str().expect("path").to_owned();
        let secret = hook["secret"].as_str().expect("secret").to_owned();
        let post = |url: String, body: &'static str, sig: Option<String>| {
            let mut req = app.client.post(url).body(body);
            if let Some(s) = sig {
                req = req.header("x-coachlibre-signature", s);
            }
            req.send()
        };
        let r = post(app.url(&format!("{path}?token=nope")), "{}", None)
            .await
            .expect("call");
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let r = post(
            app.url(&format!("{path}?token={secret}")),
            r#"{"name": "Web"}"#,
            None,
        )
        .await
        .expect("call");
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let run: Value = r.json().await.expect("run");
        assert_eq!(run["trigger"], "webhook");
        assert_eq!(run["input"]["name"], "Web");
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
        mac.update(br#"{"name": "Signed"}"#);
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let r = post(
            app.url(&path),
            r#"{"name": "Signed"}"#,
            Some(format!("sha256={hex}")),
        )
        .await
        .expect("call");
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let r = post(app.url(&format!("{path}?token={secret}")), "not json", None)
            .await
            .expect("call");
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        app.stop().await;
    }
}
