//! Jobs over HTTP: a reminder set by the agent is delivered into the conversation by the
//! server's own workers; jobs submitted, deduplicated, followed live, cancelled and retried;
//! schedules validated; permissions and clear errors.

use std::time::Duration;

use coachlibre_testkit::scripted::Script;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::agents::{apps, cast, conversation};
use crate::helpers::{TestApp, parse_sse};

async fn get_sse(app: &TestApp, path: &str, token: &str) -> (StatusCode, Vec<(String, Value)>) {
    let resp = app
        .client
        .get(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    let status = resp.status();
    let text = resp.text().await.expect("body");
    (status, parse_sse(&text))
}

#[tokio::test]
async fn a_reminder_set_by_the_agent_arrives_in_the_conversation() {
    for (app, model) in apps().await {
        let c = cast(&app, json!({})).await;
        let conv = conversation(&app, &c).await;
        let at = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
        model.push(Script::call(
            "schedule_reminder",
            json!({"text": "Go for a ten-minute walk", "at": at}),
        ));
        model.push(Script::text("Done: I will remind you."));
        let (status, events) = app
            .post_sse(
                &format!("/api/v1/conversations/{conv}/messages"),
                &c.client,
                json!({"content": "Remind me to walk in a moment"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            events
                .iter()
                .any(|(n, v)| n == "tool_result" && v["ok"] == true),
            "{events:?}"
        );

        // Delivered by the server's workers: written into the conversation, once.
        let mut found = Vec::new();
        for _ in 0..100 {
            let messages = app
                .get(&format!("/api/v1/conversations/{conv}/messages"), &c.client)
                .await;
            found = messages.body["items"]
                .as_array()
                .expect("items")
                .iter()
                .filter(|m| m["content"] == "Reminder: Go for a ten-minute walk")
                .cloned()
                .collect();
            if !found.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            found.len(),
            1,
            "{}: the reminder was not delivered",
            app.backend
        );
        assert_eq!(found[0]["role"], "assistant");
        let reminders = app
            .get(
                &format!("/api/v1/clients/{}/reminders", c.client_id),
                &c.client,
            )
            .await;
        assert_eq!(reminders.body["items"][0]["status"], "sent");
        let notes = app.get("/api/v1/notifications", &c.client).await;
        assert_eq!(notes.body["items"][0]["kind"], "reminder");
        app.stop().await;
    }
}

#[tokio::test]
async fn jobs_are_submitted_followed_and_managed() {
    for app in TestApp::each().await {
        let admin = app.admin_token().await;
        app.create_user(&admin, "coach@j.test", "coach").await;
        let coach = app.login("coach@j.test", "password for tests").await;

        let probe = json!({"kind": "system.probe", "payload": {"sleep_ms": 300, "steps": 3}});
        let r = app.post("/api/v1/jobs", &coach, probe.clone()).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
        let r = app
            .post("/api/v1/jobs", &admin, json!({"kind": "nope"}))
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
        assert!(
            r.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("system.probe")
        );

        let r = app.post("/api/v1/jobs", &admin, probe).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let id = r.body["id"].as_str().expect("id").to_owned();
        let (status, events) = get_sse(&app, &format!("/api/v1/jobs/{id}/events"), &admin).await;
        assert_eq!(status, StatusCode::OK);
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.first(), Some(&"job"), "{names:?}");
        assert_eq!(names.last(), Some(&"job"), "{names:?}");
        assert!(names.contains(&"progress"), "{}: {names:?}", app.backend);
        let last = &events.last().expect("event").1;
        assert_eq!(last["status"], "succeeded", "{last}");
        assert_eq!(last["result"]["ok"], true);

        // Idempotency: 201, then 200 with the same job.
        let keyed = json!({"kind": "system.probe", "idempotency_key": "import-42",
                           "run_at": "2099-01-01T00:00:00Z"});
        let first = app.post("/api/v1/jobs", &admin, keyed.clone()).await;
        assert_eq!(first.status, StatusCode::CREATED);
        let second = app.post("/api/v1/jobs", &admin, keyed).await;
        assert_eq!(second.status, StatusCode::OK);
        assert_eq!(first.body["id"], second.body["id"]);
        let later = first.body["id"].as_str().expect("id").to_owned();

        let r = app
            .post(&format!("/api/v1/jobs/{id}/cancel"), &admin, json!({}))
            .await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
        let r = app
            .post(&format!("/api/v1/jobs/{later}/cancel"), &admin, json!({}))
            .await;
        assert_eq!(r.body["status"], "cancelled", "{}", r.body);
        let r = app
            .post(&format!("/api/v1/jobs/{later}/retry"), &admin, json!({}))
            .await;
        assert_eq!(r.body["status"], "queued", "{}", r.body);
        let r = app.get(&format!("/api/v1/jobs/{later}"), &coach).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "not the coach's job");

        let r = app.get("/api/v1/jobs?status=finished", &admin).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
        // Retried, it is due now: the server's worker runs it.
        for _ in 0..100 {
            let r = app.get(&format!("/api/v1/jobs/{later}"), &admin).await;
            if r.body["status"] == "succeeded" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let r = app.get("/api/v1/jobs?status=succeeded", &admin).await;
        assert_eq!(
            r.body["items"].as_array().expect("items").len(),
            2,
            "{}",
            app.backend
        );
        let r = app.get("/api/v1/jobs-summary", &admin).await;
        assert_eq!(r.body["counts"]["succeeded"], 2, "{}", r.body);
        assert_eq!(r.body["counts"]["queued"], 0, "{}", r.body);
        app.stop().await;
    }
}

#[tokio::test]
async fn schedules_over_http() {
    for app in TestApp::each().await {
        let admin = app.admin_token().await;
        let bad = app
            .post(
                "/api/v1/schedules",
                &admin,
                json!({"name": "x", "cron": "0 9 * *", "kind": "system.probe"}),
            )
            .await;
        assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.body);
        assert!(
            bad.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("five")
        );
        let r = app
            .post(
                "/api/v1/schedules",
                &admin,
                json!({"name": "monday check", "cron": "0 9 * * mon",
                       "timezone": "America/New_York", "kind": "system.probe"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let id = r.body["id"].as_str().expect("id").to_owned();
        assert!(r.body["next_run_at"].as_str().is_some());
        let listed = app.get("/api/v1/schedules", &admin).await;
        assert_eq!(listed.body.as_array().expect("list").len(), 1);
        let r = app
            .call(
                reqwest::Method::DELETE,
                &format!("/api/v1/schedules/{id}"),
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        app.stop().await;
    }
}
