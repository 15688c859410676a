//! Text messages over HTTP: a client texts the tenant's number (a signed webhook), the agent's
//! answer is texted back through the gateway (a Twilio-compatible server run by the test,
//! which refuses its first call to check the retry), a reminder set by text is texted when
//! due, an answer that waited for the coach's approval is texted once approved; phone numbers
//! and the tenant's numbers with their permissions and errors.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::routing::post;
use coachlibre_testkit::scripted::{Script, ScriptedModel};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::agents::{cast, models};
use crate::helpers::TestApp;

const SID: &str = "AC0123456789";
const TOKEN: &str = "gateway auth token";
const NUMBER: &str = "+14155550100";
const CLIENT_PHONE: &str = "+33612345678";

/// A text the fake gateway received: its form and its `Authorization` header.
#[derive(Debug, Clone)]
struct Sent {
    form: Vec<(String, String)>,
    authorization: String,
}

impl Sent {
    fn field(&self, name: &str) -> &str {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }
}

#[derive(Clone, Default)]
struct Gateway {
    sent: Arc<Mutex<Vec<Sent>>>,
    calls: Arc<Mutex<u32>>,
}

/// The Messages API: the first call answers 503 (the job must retry), the others 201.
async fn messages(
    State(g): State<Gateway>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (AxumStatus, String) {
    let first = {
        let mut calls = g.calls.lock().expect("lock");
        *calls += 1;
        *calls == 1
    };
    if first {
        return (
            AxumStatus::SERVICE_UNAVAILABLE,
            "{\"message\":\"busy\"}".into(),
        );
    }
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).expect("form");
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut sent = g.sent.lock().expect("lock");
    sent.push(Sent {
        form,
        authorization,
    });
    (
        AxumStatus::CREATED,
        json!({"sid": format!("SM{}", sent.len())}).to_string(),
    )
}

async fn gateway() -> (String, Gateway) {
    let g = Gateway::default();
    let app = axum::Router::new()
        .route(
            &format!("/2010-04-01/Accounts/{SID}/Messages.json"),
            post(messages),
        )
        .with_state(g.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), g)
}

/// The texts received so far with this body, waiting up to 20 s for at least one.
async fn wait_for(g: &Gateway, body: &str) -> Vec<Sent> {
    for _ in 0..200 {
        let found: Vec<Sent> = g
            .sent
            .lock()
            .expect("lock")
            .iter()
            .filter(|s| s.field("Body") == body)
            .cloned()
            .collect();
        if !found.is_empty() {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the gateway never received {body:?}; it has {:?}",
        g.sent.lock().expect("lock")
    );
}

/// Post a text to the webhook, signed with `token` (as the gateway would).
async fn text_in(
    app: &TestApp,
    token: &str,
    from: &str,
    to: &str,
    body: &str,
    sid: &str,
) -> reqwest::Response {
    let form = vec![
        ("AccountSid".to_owned(), SID.to_owned()),
        ("Body".to_owned(), body.to_owned()),
        ("From".to_owned(), from.to_owned()),
        ("MessageSid".to_owned(), sid.to_owned()),
        ("NumMedia".to_owned(), "0".to_owned()),
        ("To".to_owned(), to.to_owned()),
    ];
    let url = app.url("/api/v1/hooks/sms/twilio");
    let signature = coachlibre_sms::twilio_signature(token, &url, &form);
    app.client
        .post(&url)
        .header("X-Twilio-Signature", signature)
        .form(&form)
        .send()
        .await
        .expect("webhook")
}

async fn sms_apps() -> Vec<(TestApp, Arc<ScriptedModel>, Gateway)> {
    let mut out = Vec::new();
    for db in coachlibre_testkit::TestDb::all().await.expect("db") {
        let (base, g) = gateway().await;
        let model = Arc::new(ScriptedModel::new("scripted"));
        let app = TestApp::spawn_with_models(
            db,
            |c| {
                c.sms.api_base = base.clone();
                c.sms.account_sid = Some(SID.into());
                c.sms.auth_token = Some(coachlibre_server::config::Secret::new(TOKEN));
                c.jobs.retry_base_secs = 1;
                c.jobs.poll_ms = 50;
            },
            models(&model),
        )
        .await;
        out.push((app, model, g));
    }
    out
}

#[tokio::test]
async fn a_client_texts_the_agent_and_gets_its_answer_and_reminders_by_text() {
    for (app, model, gateway) in sms_apps().await {
        let c = cast(&app, json!({})).await;
        let admin = app.admin_token().await;

        // The tenant's number, answered by the coach's agent (admins only).
        let number = json!({"number": "+1 415 555 0100", "agent_id": c.agent});
        let r = app
            .post("/api/v1/sms/numbers", &c.coach, number.clone())
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
        let r = app
            .post("/api/v1/sms/numbers", &admin, number.clone())
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        assert_eq!(r.body["number"], NUMBER);
        let r = app.post("/api/v1/sms/numbers", &admin, number).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
        let r = app
            .post(
                "/api/v1/sms/numbers",
                &admin,
                json!({"number": "555 0100", "agent_id": c.agent}),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
        assert!(
            r.body["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("country code")
        );
        let r = app
            .post(
                "/api/v1/sms/numbers",
                &admin,
                json!({"number": "+14155550199", "agent_id": "0190f0f0-0000-7000-8000-000000000000"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
        let listed = app.get("/api/v1/sms/numbers", &c.coach).await;
        assert_eq!(
            listed.body.as_array().map(Vec::len),
            Some(1),
            "{}",
            listed.body
        );
        let r = app.get("/api/v1/sms/numbers", &c.client).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);

        // The coach sets their client's phone; the client reads it; bad numbers are refused.
        let path = format!("/api/v1/users/{}/phone", c.client_id);
        let r = app
            .call(
                Method::PUT,
                &path,
                Some(&c.coach),
                Some(json!({"phone": "+33 6 12 34 56 78"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["phone"], CLIENT_PHONE);
        assert_eq!(app.get(&path, &c.client).await.body["phone"], CLIENT_PHONE);
        let r = app
            .call(
                Method::PUT,
                &path,
                Some(&c.coach),
                Some(json!({"phone": "06 12"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);

        // Unsigned, wrongly signed, or to a number nobody has: refused, nothing stored.
        let url = app.url("/api/v1/hooks/sms/twilio");
        let form = [
            ("From", CLIENT_PHONE),
            ("To", NUMBER),
            ("Body", "hi"),
            ("MessageSid", "SMx"),
        ];
        let r = app
            .client
            .post(&url)
            .form(&form)
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let r = text_in(&app, "not the token", CLIENT_PHONE, NUMBER, "hi", "SM0").await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let r = text_in(&app, TOKEN, CLIENT_PHONE, "+14155550999", "hi", "SM0").await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);

        // The client texts; the webhook answers at once with empty TwiML, and the agent's
        // answer arrives by text (after the gateway's first refusal), from the tenant's
        // number, with the account's credentials.
        model.push(Script::text("Hello by text! What is on your mind?"));
        let r = text_in(&app, TOKEN, CLIENT_PHONE, NUMBER, "Hi coach", "SM1").await;
        assert_eq!(r.status(), StatusCode::OK);
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap_or("")
                .contains("xml")
        );
        assert!(r.text().await.unwrap_or_default().contains("<Response>"));
        // The gateway retried its webhook: the same message is not answered twice.
        let r = text_in(&app, TOKEN, CLIENT_PHONE, NUMBER, "Hi coach", "SM1").await;
        assert_eq!(r.status(), StatusCode::OK);
        let sent = wait_for(&gateway, "Hello by text! What is on your mind?").await;
        assert_eq!(sent.len(), 1, "{}", app.backend);
        assert_eq!(sent[0].field("To"), CLIENT_PHONE);
        assert_eq!(sent[0].field("From"), NUMBER);
        let basic = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{SID}:{TOKEN}"),
        );
        assert_eq!(sent[0].authorization, format!("Basic {basic}"));

        // The exchange is in the client's SMS conversation.
        let convs = app.get("/api/v1/conversations", &c.client).await;
        let sms: Vec<&serde_json::Value> = convs.body["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter(|v| v["channel"] == "sms")
            .collect();
        assert_eq!(sms.len(), 1, "{}", convs.body);
        let conv = sms[0]["id"].as_str().expect("id").to_owned();
        let msgs = app
            .get(&format!("/api/v1/conversations/{conv}/messages"), &c.client)
            .await;
        let contents: Vec<(&str, &str)> = msgs.body["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|m| {
                (
                    m["role"].as_str().unwrap_or(""),
                    m["content"].as_str().unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(
            contents,
            vec![
                ("user", "Hi coach"),
                ("assistant", "Hello by text! What is on your mind?")
            ]
        );

        // A reminder asked for by text is texted when due (and written into the conversation).
        let at = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
        model.push(Script::call(
            "schedule_reminder",
            json!({"text": "Drink a glass of water", "at": at}),
        ));
        model.push(Script::text("I will text you."));
        let r = text_in(
            &app,
            TOKEN,
            CLIENT_PHONE,
            NUMBER,
            "Remind me to drink",
            "SM2",
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK);
        wait_for(&gateway, "I will text you.").await;
        let reminder = wait_for(&gateway, "Reminder: Drink a glass of water").await;
        assert_eq!(reminder.len(), 1, "{}", app.backend);
        assert_eq!(reminder[0].field("To"), CLIENT_PHONE);

        // An answer that waits for the coach's approval is texted once the coach approves.
        let r = app
            .call(
                Method::PATCH,
                &format!("/api/v1/agents/{}", c.agent),
                Some(&c.coach),
                Some(json!({"approval_tools": ["create_goal"]})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        model.push(Script::call(
            "create_goal",
            json!({"title": "Sleep 8 hours"}),
        ));
        let r = text_in(
            &app,
            TOKEN,
            CLIENT_PHONE,
            NUMBER,
            "I want to sleep better",
            "SM5",
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK);
        let mut id = String::new();
        for _ in 0..200 {
            let pending = app.get("/api/v1/approvals?status=pending", &c.coach).await;
            if let Some(found) = pending.body["items"][0]["id"].as_str() {
                id = found.to_owned();
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!id.is_empty(), "{}: no approval was requested", app.backend);
        model.push(Script::text("Your sleep goal is saved."));
        let r = app
            .post(
                &format!("/api/v1/approvals/{id}"),
                &c.coach,
                json!({"approve": true}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let approved = wait_for(&gateway, "Your sleep goal is saved.").await;
        assert_eq!(approved.len(), 1, "{}", app.backend);
        assert_eq!(approved[0].field("To"), CLIENT_PHONE);

        // A text from a number no client has: accepted, ignored.
        let before = gateway.sent.lock().expect("lock").len();
        let r = text_in(&app, TOKEN, "+33700000000", NUMBER, "who is this", "SM3").await;
        assert_eq!(r.status(), StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(gateway.sent.lock().expect("lock").len(), before);

        // The number is removed: texts to it are no longer answered.
        let r = app
            .call(
                Method::DELETE,
                "/api/v1/sms/numbers/%2B14155550100",
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
        let r = text_in(&app, TOKEN, CLIENT_PHONE, NUMBER, "still there?", "SM4").await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        app.stop().await;
    }
}

#[tokio::test]
async fn without_a_gateway_the_webhook_is_not_there() {
    for app in TestApp::each().await {
        let r = app
            .client
            .post(app.url("/api/v1/hooks/sms/twilio"))
            .header("x-twilio-signature", "anything")
            .form(&[("From", CLIENT_PHONE)])
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let body: serde_json::Value = r.json().await.unwrap_or_default();
        assert_eq!(body["error"]["code"], "not_found");
        // Unsigned, it is refused before anything is said.
        let r = app
            .client
            .post(app.url("/api/v1/hooks/sms/twilio"))
            .form(&[("From", CLIENT_PHONE)])
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        app.stop().await;
    }
}
