//! A business analysis of a site served by the test on localhost: robots.txt respected, the
//! twelve skills run (one fails on purpose), the partial report says what is missing, and the
//! three exports open with independent readers.

use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::routing::get;
use calamine::{Data, Reader, Xlsx, open_workbook_from_rs};
use coachlibre_core::model::{
    ChatEvent, ChatModel, ChatRequest, ChatStream, FinishReason, ModelError, Usage,
};
use coachlibre_testkit::scripted::ScriptedSource;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::TestApp;

/// Answers every skill with the sections its prompt asks for; fails the legal scan.
struct SiteModel;

#[async_trait]
impl ChatModel for SiteModel {
    fn name(&self) -> &str {
        "site"
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatStream, ModelError> {
        let prompt = request
            .messages
            .iter()
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        if prompt.contains("legal obligations") {
            return Err(ModelError::Unavailable(
                "the test's model refuses legal scans".into(),
            ));
        }
        let sections = prompt
            .split_once("heading: ")
            .map(|(_, rest)| rest.split_once('.').map_or(rest, |(s, _)| s))
            .unwrap_or("Notes");
        let mut answer = String::new();
        for s in sections.split(", ") {
            answer.push_str(&format!("## {s}\nAcme Yoga teaches beginners in Lyon.\n\n"));
        }
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

/// The company's site: a home page, and a robots.txt closing /private to everyone.
async fn site() -> String {
    let app = Router::new()
        .route(
            "/",
            get(|| async {
                (
                    [("content-type", "text/html; charset=utf-8")],
                    "<html><head><title>Acme</title></head><body><h1>Acme Yoga</h1>\
                     <p>Cours de yoga pour débutants à Lyon. Réservez en ligne.</p>\
                     <ul><li>Cours collectifs</li><li>15 € la séance</li></ul></body></html>",
                )
            }),
        )
        .route(
            "/robots.txt",
            get(|| async { "User-agent: *\nDisallow: /private\n" }),
        )
        .route("/private/page", get(|| async { "secret" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

async fn finished(app: &TestApp, token: &str, id: &str) -> Value {
    for _ in 0..400 {
        let a = app.get(&format!("/api/v1/analysis/{id}"), token).await.body;
        if ["done", "partial", "failed"].contains(&a["status"].as_str().unwrap_or("")) {
            return a;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the analysis did not finish");
}

async fn download(app: &TestApp, token: &str, path: &str) -> (StatusCode, String, Vec<u8>) {
    let resp = app
        .client
        .get(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    let status = resp.status();
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (status, ctype, resp.bytes().await.expect("body").to_vec())
}

#[tokio::test]
async fn an_analysis_of_a_local_site_produces_all_three_formats() {
    let base = site().await;
    for db in coachlibre_testkit::TestDb::all().await.expect("db") {
        let models = Arc::new(ScriptedSource::new().with("site", Arc::new(SiteModel)));
        let app = TestApp::spawn_with_models(
            db,
            |c| {
                c.skills.model = "site".into();
                c.knowledge.allow_private_urls = true;
            },
            models,
        )
        .await;
        let admin = app.admin_token().await;
        app.create_user(&admin, "coach@a.test", "coach").await;
        app.create_user(&admin, "client@a.test", "client").await;
        let coach = app.login("coach@a.test", "password for tests").await;
        let client = app.login("client@a.test", "password for tests").await;

        let r = app
            .post("/api/v1/analysis", &client, json!({"url": base}))
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let r = app
            .post("/api/v1/analysis", &coach, json!({"url": "ftp://x.test"}))
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);

        let r = app
            .post(
                "/api/v1/analysis",
                &coach,
                json!({"url": format!("{base}/")}),
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
        assert!(r.body["job_id"].is_string());
        let id = r.body["id"].as_str().expect("id").to_owned();
        let a = finished(&app, &coach, &id).await;
        assert_eq!(a["status"], "partial", "{}: {a}", app.backend);
        assert_eq!(a["company"], "Acme Yoga");
        let sections = a["sections"].as_array().expect("sections");
        assert_eq!(sections.len(), 12);
        let failed: Vec<&Value> = sections.iter().filter(|s| s["ok"] == false).collect();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0]["skill"], "legal-compliance-scanner");
        assert!(
            failed[0]["error"]
                .as_str()
                .expect("error")
                .contains("refuses legal scans")
        );

        // Progress was streamed per skill; the finished job's stream ends with it.
        let (status, _, body) =
            download(&app, &coach, &format!("/api/v1/analysis/{id}/events")).await;
        assert_eq!(status, StatusCode::OK);
        let events = crate::helpers::parse_sse(&String::from_utf8_lossy(&body));
        assert_eq!(events.last().expect("event").1["status"], "succeeded");

        let (status, ctype, md) =
            download(&app, &coach, &format!("/api/v1/analysis/{id}/report.md")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(ctype.starts_with("text/markdown"));
        let md = String::from_utf8(md).expect("utf-8");
        assert!(md.starts_with("# Business analysis: Acme Yoga"), "{md}");
        assert!(
            md.contains("## Business model extractor\n\n### Offer"),
            "{md}"
        );
        assert!(
            md.contains("## What is missing\n\n- legal-compliance-scanner"),
            "{md}"
        );

        let (status, ctype, pdf) =
            download(&app, &coach, &format!("/api/v1/analysis/{id}/report.pdf")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ctype, "application/pdf");
        let text = pdf_extract::extract_text_from_mem(&pdf).expect("the PDF parses");
        assert!(text.contains("Business analysis: Acme Yoga"), "{text}");
        assert!(text.contains("Competitor intelligence"), "{text}");

        let (status, _, xlsx) =
            download(&app, &coach, &format!("/api/v1/analysis/{id}/report.xlsx")).await;
        assert_eq!(status, StatusCode::OK);
        let mut wb: Xlsx<_> = open_workbook_from_rs(Cursor::new(xlsx)).expect("the XLSX opens");
        assert_eq!(
            wb.sheet_names(),
            vec!["Report".to_owned(), "Skills".to_owned()]
        );
        let skills = wb.worksheet_range("Skills").expect("sheet");
        let rows: Vec<Vec<String>> = skills
            .rows()
            .map(|r| {
                r.iter()
                    .map(|c| match c {
                        Data::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect()
            })
            .collect();
        assert_eq!(rows.len(), 13);
        assert!(
            rows.iter()
                .any(|r| r[0] == "legal-compliance-scanner" && r[1] == "missing")
        );

        let (status, _, _) =
            download(&app, &coach, &format!("/api/v1/analysis/{id}/report.doc")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let r = app.get(&format!("/api/v1/analysis/{id}"), &client).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "not the client's");
        let r = app.get("/api/v1/analysis", &admin).await;
        assert_eq!(r.body["items"].as_array().expect("items").len(), 1);

        // robots.txt closes /private: the analysis fails, saying why, with no report.
        let r = app
            .post(
                "/api/v1/analysis",
                &coach,
                json!({"url": format!("{base}/private/page")}),
            )
            .await;
        let id = r.body["id"].as_str().expect("id").to_owned();
        let a = finished(&app, &coach, &id).await;
        assert_eq!(a["status"], "failed", "{a}");
        assert!(
            a["error"].as_str().expect("error").contains("robots.txt"),
            "{a}"
        );
        let (status, _, _) =
            download(&app, &coach, &format!("/api/v1/analysis/{id}/report.pdf")).await;
        assert_eq!(status, StatusCode::CONFLICT);
        app.stop().await;
    }
}
