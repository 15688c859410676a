//! Knowledge over HTTP: collections, multipart upload, ingestion status, search, URL import,
//! and an agent's answer citing passages that the client can open.

use std::time::Duration;

use coachlibre_testkit::fixtures;
use coachlibre_testkit::scripted::Script;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::agents::{apps, cast, conversation};
use crate::helpers::TestApp;

async fn upload(
    app: &TestApp,
    token: &str,
    collection: &str,
    name: &str,
    bytes: Vec<u8>,
) -> (StatusCode, Value) {
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(bytes).file_name(name.to_owned()),
        )
        .text("metadata", r#"{"level": "beginner"}"#);
    let resp = app
        .client
        .post(app.url(&format!("/api/v1/collections/{collection}/documents")))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .expect("upload");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Poll a document until it is ready (or failed), up to ten seconds.
async fn ready(app: &TestApp, token: &str, id: &str) -> Value {
    let mut doc = Value::Null;
    for _ in 0..500 {
        doc = app
            .get(&format!("/api/v1/documents/{id}"), token)
            .await
            .body;
        if doc["status"] == "ready" || doc["status"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    doc
}

async fn collection(app: &TestApp, token: &str, name: &str) -> String {
    let r = app
        .post("/api/v1/collections", token, json!({"name": name}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body["id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn a_coach_uploads_and_searches_their_material() {
    for (app, _model) in apps().await {
        let c = cast(&app, json!({})).await;
        let col = collection(&app, &c.coach, "Running programs").await;
        let (status, doc) = upload(
            &app,
            &c.coach,
            &col,
            "plan.md",
            b"# Plan\n\n## Intervals\n\nSix times 400 metres at threshold pace.\n\n## Recovery\n\nSleep and easy jogging."
                .to_vec(),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{doc}");
        assert_eq!(doc["outcome"], "created");
        let id = doc["id"].as_str().expect("id").to_owned();
        assert!(["pending", "processing", "ready"].contains(&doc["status"].as_str().unwrap_or("")));
        let doc = ready(&app, &c.coach, &id).await;
        assert_eq!(doc["status"], "ready", "{doc}");
        assert_eq!(doc["metadata"]["level"], "beginner");

        let pdf = fixtures::pdf(&["Strength training", "Squats and lunges twice a week."]);
        let (status, pdoc) = upload(&app, &c.coach, &col, "strength.pdf", pdf.clone()).await;
        assert_eq!(status, StatusCode::CREATED, "{pdoc}");
        let pid = pdoc["id"].as_str().expect("id").to_owned();
        assert_eq!(ready(&app, &c.coach, &pid).await["status"], "ready");
        // The same file again: nothing to do.
        let (status, again) = upload(&app, &c.coach, &col, "strength.pdf", pdf).await;
        assert_eq!(
            (status, again["outcome"].as_str()),
            (StatusCode::OK, Some("unchanged"))
        );

        let r = app
            .post(
                "/api/v1/search",
                &c.coach,
                json!({"query": "threshold intervals", "collection_ids": [col], "limit": 3}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let first = &r.body["results"][0];
        assert_eq!(first["document_id"], id.as_str());
        assert!(first["text"].as_str().unwrap_or("").contains("400 metres"));
        assert!(first["score"].as_f64().unwrap_or(0.0) > 0.0);
        assert!(first["chunk_id"].is_string());
        let r = app
            .post(
                "/api/v1/search",
                &c.coach,
                json!({"query": "squats", "metadata": {"level": "expert"}}),
            )
            .await;
        assert_eq!(r.body["results"].as_array().map(Vec::len), Some(0));

        let list = app
            .get(&format!("/api/v1/collections/{col}/documents"), &c.coach)
            .await;
        assert_eq!(list.body["items"].as_array().map(Vec::len), Some(2));

        // Refusals: bad type, corrupt and encrypted PDF, a client uploading, empty query.
        let (status, body) = upload(
            &app,
            &c.coach,
            &col,
            "a.png",
            b"\x89PNG\r\n\x1a\n\0".to_vec(),
        )
        .await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
        let (status, body) = upload(
            &app,
            &c.coach,
            &col,
            "bad.pdf",
            b"%PDF-1.5 nothing".to_vec(),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let (status, body) = upload(
            &app,
            &c.coach,
            &col,
            "locked.pdf",
            fixtures::encrypted_pdf(&["x"]),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("encrypted")
        );
        let (status, _) = upload(&app, &c.client, &col, "x.md", b"x".to_vec()).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let r = app
            .post("/api/v1/search", &c.coach, json!({"query": ""}))
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        let r = app
            .post(
                "/api/v1/search",
                &c.coach,
                json!({"query": "x", "limit": 500}),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);

        // Delete: nothing left to find.
        let r = app
            .call(
                Method::DELETE,
                &format!("/api/v1/documents/{id}"),
                Some(&c.coach),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        let r = app
            .post(
                "/api/v1/search",
                &c.coach,
                json!({"query": "threshold intervals"}),
            )
            .await;
        assert!(
            r.body["results"]
                .as_array()
                .is_some_and(|a| a.iter().all(|h| h["document_id"] != id.as_str())),
            "{}",
            r.body
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn an_agent_with_collections_cites_passages_the_client_can_open() {
    for (app, model) in apps().await {
        let c0 = cast(&app, json!({})).await;
        let col = collection(&app, &c0.coach, "Nutrition").await;
        let (_, doc) = upload(
            &app,
            &c0.coach,
            &col,
            "hydration.md",
            b"# Hydration\n\nDrink 500 ml of water two hours before a long run.".to_vec(),
        )
        .await;
        let doc_id = doc["id"].as_str().expect("id").to_owned();
        assert_eq!(ready(&app, &c0.coach, &doc_id).await["status"], "ready");
        // Attach the collection to the agent.
        let r = app
            .call(
                Method::PATCH,
                &format!("/api/v1/agents/{}", c0.agent),
                Some(&c0.coach),
                Some(json!({"collections": [col]})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let conv = conversation(&app, &c0).await;
        model.push(Script::text("Drink about 500 ml two hours before [1]."));
        let (status, events) = app
            .post_sse(
                &format!("/api/v1/conversations/{conv}/messages"),
                &c0.client,
                json!({"content": "How much water should I drink before a long run?"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let citations: Vec<&Value> = events
            .iter()
            .filter(|(n, _)| n == "citation")
            .map(|(_, d)| d)
            .collect();
        assert_eq!(citations.len(), 1, "{events:?}");
        assert_eq!(citations[0]["index"], 1);
        assert_eq!(citations[0]["document_id"], doc_id.as_str());
        assert_eq!(events.last().map(|(n, _)| n.as_str()), Some("done"));
        // The passage was in the model's prompt.
        let prompt = &model.requests()[0].messages[0].content;
        assert!(prompt.contains("[1] Hydration"), "{prompt}");
        // The client opens the cited passage.
        let chunk = citations[0]["chunk_id"].as_str().expect("chunk");
        let r = app
            .get(&format!("/api/v1/chunks/{chunk}"), &c0.client)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["document_title"], "Hydration");
        assert!(r.body["text"].as_str().unwrap_or("").contains("500 ml"));
        // A collection of another coach cannot be attached.
        let admin = app.admin_token().await;
        app.create_user(&admin, "coach2@x.test", "coach").await;
        let coach2 = app.login("coach2@x.test", "password for tests").await;
        let r = app
            .post(
                "/api/v1/agents",
                &coach2,
                json!({"name": "B", "collections": [col]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
        app.stop().await;
    }
}

#[tokio::test]
async fn urls_are_imported_and_private_addresses_refused_by_default() {
    // A small web server with one page.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let site = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let page = axum::Router::new()
            .route(
                "/moved",
                axum::routing::get(|| async { axum::response::Redirect::permanent("/article.html") }),
            )
            .route(
            "/article.html",
            axum::routing::get(|| async {
                axum::response::Html(
                    "<html><body><h1>Sleep and recovery</h1><p>Athletes need eight hours.</p></body></html>",
                )
            }),
        );
        let _ = axum::serve(listener, page).await;
    });
    let url = format!("http://{site}/article.html");
    for db in coachlibre_testkit::TestDb::all().await.expect("db") {
        let model =
            std::sync::Arc::new(coachlibre_testkit::scripted::ScriptedModel::new("scripted"));
        let app = TestApp::spawn_with_models(
            db,
            |c| c.knowledge.allow_private_urls = true,
            crate::agents::models(&model),
        )
        .await;
        let c = cast(&app, json!({})).await;
        let col = collection(&app, &c.coach, "Articles").await;
        let r = app
            .post(
                &format!("/api/v1/collections/{col}/imports"),
                &c.coach,
                json!({"url": url}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        assert_eq!(r.body["source"], url.as_str());
        assert_eq!(r.body["media_type"], "text/html");
        let id = r.body["id"].as_str().expect("id").to_owned();
        assert_eq!(
            ready(&app, &c.coach, &id).await["title"],
            "Sleep and recovery"
        );
        // Redirects are followed (each hop checked).
        let moved = format!("http://{site}/moved");
        let r = app
            .post(
                &format!("/api/v1/collections/{col}/imports"),
                &c.coach,
                json!({"url": moved}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        assert_eq!(r.body["outcome"], "created");
        let r = app
            .post(
                &format!("/api/v1/collections/{col}/imports"),
                &c.coach,
                json!({"url": "ftp://x/y"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        app.stop().await;
    }
    // Default settings: loopback is refused with a clear message.
    for (app, _model) in apps().await {
        let c = cast(&app, json!({})).await;
        let col = collection(&app, &c.coach, "Articles").await;
        let r = app
            .post(
                &format!("/api/v1/collections/{col}/imports"),
                &c.coach,
                json!({"url": url}),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
        assert!(
            r.body["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("private")
        );
        app.stop().await;
    }
}
