//! Agents, conversations, streamed turns, memory, approvals and the OpenAI-compatible facade,
//! over HTTP against the real server with a scripted model.

use std::sync::Arc;
use std::time::Duration;

use coachlibre_core::model::ModelSource;
use coachlibre_testkit::scripted::{HashEmbedder, Script, ScriptedModel, ScriptedSource};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, parse_sse};

/// One scripted model per server, kept to queue answers.
pub(crate) fn models(model: &Arc<ScriptedModel>) -> Arc<dyn ModelSource> {
    Arc::new(
        ScriptedSource::new()
            .with("scripted", model.clone())
            .with_embedder(Arc::new(HashEmbedder)),
    )
}

pub(crate) async fn apps() -> Vec<(TestApp, Arc<ScriptedModel>)> {
    let mut out = Vec::new();
    for db in coachlibre_testkit::TestDb::all().await.expect("db") {
        let model = Arc::new(ScriptedModel::new("scripted"));
        let app = TestApp::spawn_with_models(db, |_| {}, models(&model)).await;
        out.push((app, model));
    }
    out
}

/// A coach, their client (tokens and ids) and an agent of the coach.
pub(crate) struct Cast {
    pub coach: String,
    pub client: String,
    pub client_id: String,
    pub agent: String,
}

pub(crate) async fn cast(app: &TestApp, agent_extra: Value) -> Cast {
    let admin = app.admin_token().await;
    app.create_user(&admin, "coach@x.test", "coach").await;
    let coach = app.login("coach@x.test", "password for tests").await;
    let client_id = app.create_user(&coach, "client@x.test", "client").await;
    let client = app.login("client@x.test", "password for tests").await;
    let mut body = json!({"template": "life-coach", "model": "scripted"});
    if let (Some(b), Some(extra)) = (body.as_object_mut(), agent_extra.as_object()) {
        b.extend(extra.clone());
    }
    let r = app.post("/api/v1/agents", &coach, body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    Cast {
        coach,
        client,
        client_id,
        agent: r.body["id"].as_str().expect("id").to_owned(),
    }
}

pub(crate) async fn conversation(app: &TestApp, c: &Cast) -> String {
    let r = app
        .post(
            "/api/v1/conversations",
            &c.client,
            json!({"agent_id": c.agent}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body["id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn a_client_talks_with_their_coachs_agent_over_sse() {
    for (app, model) in apps().await {
        let c = cast(&app, json!({})).await;
        let conv = conversation(&app, &c).await;
        model.push(Script::text("Hello Alice! What would you like to work on?"));
        let (status, events) = app
            .post_sse(
                &format!("/api/v1/conversations/{conv}/messages"),
                &c.client,
                json!({"content": "Hi, my name is Alice."}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{}", app.backend);
        let text: String = events
            .iter()
            .filter(|(n, _)| n == "token")
            .filter_map(|(_, d)| d["text"].as_str())
            .collect();
        assert_eq!(text, "Hello Alice! What would you like to work on?");
        let (name, done) = events.last().expect("events");
        assert_eq!(name, "done");
        assert_eq!(done["finish"], "stop");
        assert!(done["usage"]["completion_tokens"].as_u64().unwrap_or(0) > 0);
        let msgs = app
            .get(&format!("/api/v1/conversations/{conv}/messages"), &c.client)
            .await;
        assert_eq!(msgs.body["items"].as_array().map(Vec::len), Some(2));
        // The coach sees the conversation and what was learned about the client.
        let list = app.get("/api/v1/conversations", &c.coach).await;
        assert_eq!(list.body["items"].as_array().map(Vec::len), Some(1));
        let profile = app
            .get(
                &format!("/api/v1/clients/{}/profile", c.client_id),
                &c.coach,
            )
            .await;
        assert_eq!(profile.body["name"], "Alice", "{}", profile.body);
        let memories = app
            .get(
                &format!("/api/v1/clients/{}/memories", c.client_id),
                &c.client,
            )
            .await;
        let items = memories.body["items"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(items.len(), 1);
        // The client forgets it.
        let id = items[0]["id"].as_str().expect("id");
        let r = app
            .call(
                Method::DELETE,
                &format!("/api/v1/clients/{}/memories/{id}", c.client_id),
                Some(&c.client),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        // Rename, archive (no more messages), delete.
        let r = app
            .call(
                Method::PATCH,
                &format!("/api/v1/conversations/{conv}"),
                Some(&c.client),
                Some(json!({"title": "First chat", "archived": true})),
            )
            .await;
        assert_eq!(r.body["title"], "First chat");
        let r = app
            .post(
                &format!("/api/v1/conversations/{conv}/messages"),
                &c.client,
                json!({"content": "hello"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
        let r = app
            .call(
                Method::DELETE,
                &format!("/api/v1/conversations/{conv}"),
                Some(&c.client),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        app.stop().await;
    }
}

#[tokio::test]
async fn refusals_are_clear_4xx() {
    for (app, _model) in apps().await {
        let c = cast(&app, json!({})).await;
        let conv = conversation(&app, &c).await;
        // Clients do not create agents; bad agent input names the field.
        let r = app
            .post("/api/v1/agents", &c.client, json!({"name": "Mine"}))
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let r = app
            .post(
                "/api/v1/agents",
                &c.coach,
                json!({"name": "x", "tools": ["format_disk"]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            r.body["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("format_disk")
        );
        let r = app
            .post(
                "/api/v1/agents",
                &c.coach,
                json!({"name": "x", "colour": "blue"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
        // Empty messages, unknown conversations, a coach writing in a client's conversation.
        let path = format!("/api/v1/conversations/{conv}/messages");
        let r = app.post(&path, &c.client, json!({"content": "  "})).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        let r = app.post(&path, &c.coach, json!({"content": "hi"})).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let r = app
            .post(
                "/api/v1/conversations/0190b6b8-0000-7000-8000-000000000000/messages",
                &c.client,
                json!({"content": "hi"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        // Another coach sees neither the agent nor the client's memory.
        let admin = app.admin_token().await;
        app.create_user(&admin, "other@x.test", "coach").await;
        let other = app.login("other@x.test", "password for tests").await;
        let r = app
            .get(&format!("/api/v1/agents/{}", c.agent), &other)
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        let r = app
            .get(&format!("/api/v1/clients/{}/memories", c.client_id), &other)
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        let r = app
            .get(&format!("/api/v1/conversations/{conv}"), &other)
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        app.stop().await;
    }
}

#[tokio::test]
async fn approvals_over_http() {
    for (app, model) in apps().await {
        let c = cast(&app, json!({"approval_tools": ["create_goal"]})).await;
        let conv = conversation(&app, &c).await;
        model.push(Script::call(
            "create_goal",
            json!({"title": "Sleep 8 hours"}),
        ));
        let (_, events) = app
            .post_sse(
                &format!("/api/v1/conversations/{conv}/messages"),
                &c.client,
                json!({"content": "I want to sleep better"}),
            )
            .await;
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, vec!["tool_call", "approval_required", "done"]);
        assert_eq!(events[2].1["finish"], "awaiting_approval");
        let pending = app.get("/api/v1/approvals?status=pending", &c.coach).await;
        let id = pending.body["items"][0]["id"]
            .as_str()
            .expect("approval")
            .to_owned();
        let notes = app.get("/api/v1/notifications", &c.coach).await;
        assert_eq!(notes.body["items"][0]["kind"], "approval_requested");
        let r = app
            .post(
                &format!("/api/v1/approvals/{id}"),
                &c.client,
                json!({"approve": true}),
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        model.push(Script::text("Your goal is saved."));
        let r = app
            .post(
                &format!("/api/v1/approvals/{id}"),
                &c.coach,
                json!({"approve": true}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["status"], "approved");
        let r = app
            .post(
                &format!("/api/v1/approvals/{id}"),
                &c.coach,
                json!({"approve": false}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CONFLICT);
        let mut last = Value::Null;
        for _ in 0..100 {
            let msgs = app
                .get(&format!("/api/v1/conversations/{conv}/messages"), &c.client)
                .await;
            last = msgs.body["items"]
                .as_array()
                .and_then(|v| v.last().cloned())
                .unwrap_or(Value::Null);
            if last["content"] == "Your goal is saved." {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(last["content"], "Your goal is saved.");
        let goals = app
            .get(&format!("/api/v1/clients/{}/goals", c.client_id), &c.client)
            .await;
        assert_eq!(goals.body[0]["title"], "Sleep 8 hours");
        assert_eq!(goals.body[0]["progress"], 0.0);
        app.stop().await;
    }
}

#[tokio::test]
async fn the_openai_facade_lists_agents_and_completes() {
    for (app, model) in apps().await {
        let c = cast(&app, json!({})).await;
        let key = app
            .post(
                "/api/v1/api-keys",
                &c.client,
                json!({"name": "chat ui", "scopes": ["read", "write"]}),
            )
            .await;
        assert_eq!(key.status, StatusCode::CREATED, "{}", key.body);
        let key = key.body["secret"].as_str().expect("secret").to_owned();
        let models = app.get("/v1/models", &key).await;
        assert_eq!(models.body["object"], "list");
        assert_eq!(models.body["data"][0]["id"], c.agent.as_str());

        model.push(Script::text("Breathe in, breathe out."));
        let r = app
            .post(
                "/v1/chat/completions",
                &key,
                json!({"model": c.agent, "messages": [
                    {"role": "system", "content": "Answer briefly."},
                    {"role": "user", "content": "I feel stressed."}
                ], "temperature": 0}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["object"], "chat.completion");
        assert_eq!(
            r.body["choices"][0]["message"]["content"],
            "Breathe in, breathe out."
        );
        assert_eq!(r.body["choices"][0]["finish_reason"], "stop");
        let sent = model.requests().pop().expect("request");
        assert!(sent.messages[0].content.contains("Answer briefly."));
        assert_eq!(sent.params.temperature, 0.0);

        model.push(Script::text("One step at a time."));
        let resp = app
            .client
            .post(app.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&json!({"model": "Life & business coach", "stream": true,
                "messages": [{"role": "user", "content": [{"type": "text", "text": "Help"}]}]}))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), StatusCode::OK);
        let events = parse_sse(&resp.text().await.expect("body"));
        let text: String = events
            .iter()
            .filter_map(|(_, d)| d["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, "One step at a time.");
        assert_eq!(
            events.last().map(|(_, d)| d.clone()),
            Some(Value::String("[DONE]".into()))
        );

        // Unknown models, bad transcripts and a read-only key are refused.
        let r = app
            .post(
                "/v1/chat/completions",
                &key,
                json!({"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        let r = app
            .post(
                "/v1/chat/completions",
                &key,
                json!({"model": c.agent, "messages": [{"role": "assistant", "content": "x"}]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        let ro = app
            .post(
                "/api/v1/api-keys",
                &c.client,
                json!({"name": "ro", "scopes": ["read"]}),
            )
            .await;
        let ro = ro.body["secret"].as_str().expect("secret").to_owned();
        let r = app
            .post(
                "/v1/chat/completions",
                &ro,
                json!({"model": c.agent, "messages": [{"role": "user", "content": "x"}]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        app.stop().await;
    }
}

/// End to end with the embedded model: the default agent model, configured as in production.
#[tokio::test]
async fn smoke_test_with_the_embedded_model() {
    let dir = crate::helpers::models_dir();
    let db = coachlibre_testkit::TestDb::sqlite().expect("db");
    let app = TestApp::spawn_configured(db, |c| c.models_dir = Some(dir.clone())).await;
    let admin = app.admin_token().await;
    app.create_user(&admin, "coach@e2e.test", "coach").await;
    let coach = app.login("coach@e2e.test", "password for tests").await;
    app.create_user(&coach, "client@e2e.test", "client").await;
    let client = app.login("client@e2e.test", "password for tests").await;
    let r = app
        .post(
            "/api/v1/agents",
            &coach,
            json!({"template": "sport-coach", "params": {"max_tokens": 24, "temperature": 0}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["model"], "smollm2-135m-instruct");
    let agent = r.body["id"].as_str().expect("id").to_owned();
    let r = app
        .post("/api/v1/conversations", &client, json!({"agent_id": agent}))
        .await;
    let conv = r.body["id"].as_str().expect("id").to_owned();
    let (status, events) = app
        .post_sse(
            &format!("/api/v1/conversations/{conv}/messages"),
            &client,
            json!({"content": "My name is Sam. How should I start running?"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let text: String = events
        .iter()
        .filter(|(n, _)| n == "token")
        .filter_map(|(_, d)| d["text"].as_str())
        .collect();
    assert!(text.split_whitespace().count() >= 3, "answer: {text:?}");
    let (name, done) = events.last().expect("events");
    assert_eq!(name, "done", "{events:?}");
    assert!(done["usage"]["prompt_tokens"].as_u64().unwrap_or(0) > 50);
    let profile = app.get("/api/v1/conversations", &client).await;
    assert_eq!(profile.body["items"].as_array().map(Vec::len), Some(1));
    app.stop().await;
}

const OPENAI_SCRIPT: &str = r#"
import json, sys
from openai import OpenAI
client = OpenAI(base_url=sys.argv[1], api_key=sys.argv[2])
models = [m.id for m in client.models.list()]
reply = client.chat.completions.create(
    model=sys.argv[3], messages=[{"role": "user", "content": "Hello coach"}])
stream = client.chat.completions.create(
    model=sys.argv[3], stream=True, messages=[{"role": "user", "content": "And now?"}])
streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
print(json.dumps({"models": models, "answer": reply.choices[0].message.content,
                  "total_tokens": reply.usage.total_tokens, "streamed": streamed}))
"#;

/// The facade with the official OpenAI Python client (CI installs it and sets
/// `TEST_OPENAI_PYTHON`; run with `cargo test --workspace -- --ignored`).
#[tokio::test]
#[ignore = "needs TEST_OPENAI_PYTHON, a Python with the `openai` package"]
async fn the_official_openai_client_talks_with_an_agent() {
    let python = std::env::var("TEST_OPENAI_PYTHON")
        .expect("set TEST_OPENAI_PYTHON to a Python with the `openai` package");
    let db = coachlibre_testkit::TestDb::sqlite().expect("db");
    let model = Arc::new(ScriptedModel::new("scripted"));
    let app = TestApp::spawn_with_models(db, |_| {}, models(&model)).await;
    let c = cast(&app, json!({})).await;
    let key = app
        .post(
            "/api/v1/api-keys",
            &c.client,
            json!({"name": "py", "scopes": ["read", "write"]}),
        )
        .await;
    let key = key.body["secret"].as_str().expect("secret").to_owned();
    model.push(Script::text("Hello! Ready when you are."));
    model.push(Script::text("Pick one small step."));
    let base = app.url("/v1");
    let agent = c.agent.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .args(["-c", OPENAI_SCRIPT, &base, &key, &agent])
            .output()
            .expect("run python")
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json from python");
    assert_eq!(v["models"], json!([c.agent]));
    assert_eq!(v["answer"], "Hello! Ready when you are.");
    assert_eq!(v["streamed"], "Pick one small step.");
    assert!(v["total_tokens"].as_u64().unwrap_or(0) > 0);
    app.stop().await;
}
