//! Workflows over HTTP: saved by an admin (422 for a cycle), run by a coach through the
//! server's own workers, the run's steps readable; clients refused.

use std::time::Duration;

use coachlibre_testkit::scripted::Script;
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

/// Wait until the workflow `name` has `n` runs, all finished; the runs, newest first.
async fn finished_runs(app: &TestApp, token: &str, name: &str, n: usize) -> Vec<Value> {
    let mut runs = Vec::new();
    for _ in 0..400 {
        let r = app
            .get(&format!("/api/v1/workflows/{name}/runs"), token)
            .await;
        runs = r.body["items"].as_array().cloned().unwrap_or_default();
        let done = runs
            .iter()
            .all(|r| r["status"] == "succeeded" || r["status"] == "failed");
        if runs.len() >= n && done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    runs
}

#[tokio::test]
async fn events_start_the_workflows_that_listen() {
    for (app, model) in crate::agents::apps().await {
        model.push(Script::text("Noted."));
        let c = crate::agents::cast(&app, json!({})).await;
        let admin = app.admin_token().await;
        let on_message = json!({"definition": {"name": "triage", "on": ["message_received"],
            "steps": [{"id": "note", "kind": "aggregate",
                       "template": "{{input.event}}: {{input.text}}"}]}});
        let r = app.post("/api/v1/workflows", &admin, on_message).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let on_document = json!({"definition": {"name": "index-report", "on": ["document_ready"],
            "steps": [{"id": "note", "kind": "aggregate", "template": "ready: {{input.title}}"}]}});
        let r = app.post("/api/v1/workflows", &admin, on_document).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let bad = json!({"definition": {"name": "x", "on": ["moon_rise"],
            "steps": [{"id": "a", "kind": "transform", "value": 1}]}});
        let r = app.post("/api/v1/workflows", &admin, bad).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);

        // A client's message starts "triage" once, with the message as input.
        let conv = crate::agents::conversation(&app, &c).await;
        let (status, _) = app
            .post_sse(
                &format!("/api/v1/conversations/{conv}/messages"),
                &c.client,
                json!({"content": "I missed my run today"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let runs = finished_runs(&app, &admin, "triage", 1).await;
        assert_eq!(runs.len(), 1, "{runs:?}");
        assert_eq!(runs[0]["trigger"], "event:message_received");
        assert_eq!(runs[0]["status"], "succeeded", "{}", runs[0]);
        assert_eq!(runs[0]["input"]["conversation_id"], conv.as_str());
        assert_eq!(
            runs[0]["steps"]["note"]["output"]["text"],
            "message_received: I missed my run today"
        );

        // A document finishing ingestion starts "index-report"; "triage" does not run again.
        let col = app
            .post("/api/v1/collections", &c.coach, json!({"name": "Plans"}))
            .await;
        let col = col.body["id"].as_str().expect("id").to_owned();
        let form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(b"# Plan\n\nRun easy on Mondays.\n".to_vec())
                .file_name("plan.md"),
        );
        let resp = app
            .client
            .post(app.url(&format!("/api/v1/collections/{col}/documents")))
            .bearer_auth(&c.coach)
            .multipart(form)
            .send()
            .await
            .expect("upload");
        assert_eq!(resp.status(), StatusCode::CREATED);
        let runs = finished_runs(&app, &admin, "index-report", 1).await;
        assert_eq!(runs.len(), 1, "{runs:?}");
        assert_eq!(runs[0]["trigger"], "event:document_ready");
        assert_eq!(runs[0]["steps"]["note"]["output"]["text"], "ready: Plan");
        assert_eq!(finished_runs(&app, &admin, "triage", 1).await.len(), 1);

        // A goal the agent marks achieved starts "celebrate", once.
        let on_goal = json!({"definition": {"name": "celebrate", "on": ["goal_completed"],
            "steps": [{"id": "note", "kind": "aggregate", "template": "done: {{input.title}}"}]}});
        let r = app.post("/api/v1/workflows", &admin, on_goal).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let turn = |text: &'static str| {
            let (app, c, conv) = (&app, &c, &conv);
            async move {
                let (status, events) = app
                    .post_sse(
                        &format!("/api/v1/conversations/{conv}/messages"),
                        &c.client,
                        json!({"content": text}),
                    )
                    .await;
                assert_eq!(status, StatusCode::OK);
                assert_eq!(
                    events.last().map(|e| e.0.as_str()),
                    Some("done"),
                    "{events:?}"
                );
            }
        };
        model.push(Script::call("create_goal", json!({"title": "Run 5 km"})));
        model.push(Script::text("Goal set."));
        turn("I want to run 5 km").await;
        let goals = app
            .get(&format!("/api/v1/clients/{}/goals", c.client_id), &c.client)
            .await;
        let goal = goals.body[0]["goal"]["id"]
            .as_str()
            .or(goals.body[0]["id"].as_str())
            .unwrap_or_else(|| panic!("a goal: {}", goals.body))
            .to_owned();
        for _ in 0..2 {
            model.push(Script::call(
                "update_goal",
                json!({"goal_id": goal, "status": "achieved"}),
            ));
            model.push(Script::text("Well done!"));
            turn("I ran 5 km!").await;
        }
        let runs = finished_runs(&app, &admin, "celebrate", 1).await;
        assert_eq!(runs.len(), 1, "achieved twice, completed once: {runs:?}");
        assert_eq!(runs[0]["trigger"], "event:goal_completed");
        assert_eq!(runs[0]["steps"]["note"]["output"]["text"], "done: Run 5 km");
        app.stop().await;
    }
}

#[tokio::test]
async fn agent_and_tool_steps_act_for_a_client() {
    for (app, model) in crate::agents::apps().await {
        let c = crate::agents::cast(&app, json!({})).await;
        let admin = app.admin_token().await;
        let unknown = json!({"definition": {"name": "x", "steps": [
            {"id": "a", "kind": "tool", "tool": "fly", "agent": "a", "client": "b"}]}});
        let r = app.post("/api/v1/workflows", &admin, unknown).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
        assert!(
            r.body["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("no tool 'fly'")
        );
        let kickoff = json!({"definition": {"name": "kickoff", "steps": [
            {"id": "goal", "kind": "tool", "tool": "create_goal", "agent": "{{input.agent}}",
             "client": "{{input.client}}", "arguments": {"title": "Walk 10,000 steps a day"}},
            {"id": "hello", "kind": "agent", "needs": ["goal"], "agent": "{{input.agent}}",
             "client": "{{input.client}}",
             "message": "Tell the client their goal '{{steps.goal.title}}' is set."}]}});
        let r = app.post("/api/v1/workflows", &admin, kickoff).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);

        model.push(Script::text("Your goal is set: well done for starting!"));
        let r = app
            .post(
                "/api/v1/workflows/kickoff/runs",
                &c.coach,
                json!({"input": {"agent": c.agent, "client": c.client_id}}),
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
        let runs = finished_runs(&app, &c.coach, "kickoff", 1).await;
        let run = &runs[0];
        assert_eq!(run["status"], "succeeded", "{run}");
        assert_eq!(
            run["steps"]["goal"]["output"]["title"],
            "Walk 10,000 steps a day"
        );
        let hello = &run["steps"]["hello"]["output"];
        assert_eq!(hello["text"], "Your goal is set: well done for starting!");
        // The instruction reached the model, in the client's context, but is not stored:
        // the conversation holds the agent's message only.
        let asked = model.requests();
        let last = asked.last().expect("a model request");
        assert!(
            last.messages.iter().any(|m| m
                .content
                .contains("Tell the client their goal 'Walk 10,000 steps a day' is set.")),
            "{last:?}"
        );
        let conv = hello["conversation_id"].as_str().expect("conversation");
        let msgs = app
            .get(&format!("/api/v1/conversations/{conv}/messages"), &c.client)
            .await;
        let items = msgs.body["items"].as_array().cloned().unwrap_or_default();
        assert_eq!(items.len(), 1, "{items:?}");
        assert_eq!(items[0]["role"], "assistant");
        assert_eq!(items[0]["id"], hello["message_id"]);
        let goals = app
            .get(&format!("/api/v1/clients/{}/goals", c.client_id), &c.client)
            .await;
        assert_eq!(
            goals.body.as_array().map(Vec::len),
            Some(1),
            "{}",
            goals.body
        );

        // A tool the agent may not use fails the step at once, with the reason.
        let denied = json!({"definition": {"name": "denied", "steps": [
            {"id": "search", "kind": "tool", "tool": "search_knowledge", "agent": "{{input.agent}}",
             "client": "{{input.client}}", "arguments": {"query": "plans"}}]}});
        let r = app.post("/api/v1/workflows", &admin, denied).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        app.post(
            "/api/v1/workflows/denied/runs",
            &c.coach,
            json!({"input": {"agent": c.agent, "client": c.client_id}}),
        )
        .await;
        let runs = finished_runs(&app, &c.coach, "denied", 1).await;
        assert_eq!(runs[0]["status"], "failed", "{}", runs[0]);
        assert_eq!(runs[0]["steps"]["search"]["attempts"], 1);
        assert!(
            runs[0]["steps"]["search"]["error"]
                .as_str()
                .unwrap_or("")
                .contains("search_knowledge"),
            "{}",
            runs[0]
        );
        app.stop().await;
    }
}
