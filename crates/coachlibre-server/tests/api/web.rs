//! The web app. Over plain HTTP (both backends): pages need a session, forms need their
//! anti-forgery token, the API called with the cookie needs the token header, cookies are
//! `HttpOnly`. In a real browser (Debian's Chromium, headless, through chromedriver) with the
//! embedded models: a coach signs in, creates an agent and uploads a document; a client asks
//! a question, sees the streamed answer with a citation and deletes a memory; an admin reads
//! the audit log; two-factor enrolment and sign-in. Each main page also passes the
//! accessibility check of [`crate::browser::A11Y_CHECK`], and is saved as a screenshot when
//! `COACHLIBRE_SCREENSHOTS` names a directory (that is how `docs/screenshots/` is made).

use std::sync::Arc;
use std::time::Duration;

use coachlibre_core::memory::{Memory, MemoryKind};
use coachlibre_core::store::Store;
use coachlibre_store::{ConnectOptions, SqlStore};
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::{Value, json};

use crate::browser::Browser;
use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, TestApp, models_dir};

const PASSWORD: &str = "password for tests";

/// A client without redirects or cookies, to look at answers as they are.
fn raw() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// The value of `name=` in a response's `Set-Cookie` headers.
fn set_cookie<'a>(resp: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    resp.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
}

/// The `_csrf` hidden field of a page.
fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"_csrf\" value=\"").expect("a _csrf field");
    let rest = &html[at + "name=\"_csrf\" value=\"".len()..];
    rest[..rest.find('"').expect("end of value")].to_owned()
}

/// Sign in through the form; returns the session cookie (`cl_session=...`).
async fn form_login(app: &TestApp, email: &str, password: &str) -> String {
    let http = raw();
    let page = http
        .get(app.url("/login"))
        .send()
        .await
        .expect("login page");
    let login_cookie = set_cookie(&page, "cl_login")
        .and_then(|c| c.split(';').next())
        .expect("login cookie")
        .to_owned();
    let token = csrf_of(&page.text().await.expect("html"));
    let resp = http
        .post(app.url("/login"))
        .header(COOKIE, &login_cookie)
        .form(&[
            ("_csrf", token.as_str()),
            ("email", email),
            ("password", password),
            ("next", ""),
        ])
        .send()
        .await
        .expect("login");
    assert_eq!(resp.status(), StatusCode::SEE_OTHER, "sign-in redirects");
    let cookie = set_cookie(&resp, "cl_session").expect("session cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    cookie.split(';').next().expect("pair").to_owned()
}

#[tokio::test]
async fn pages_need_a_session_and_changes_need_the_anti_forgery_token() {
    for app in TestApp::each().await {
        let http = raw();
        // No session: to the sign-in page, remembering where the user was going.
        let r = http
            .get(app.url("/coach/agents"))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(
            r.headers()[LOCATION].to_str().ok(),
            Some("/login?next=%2Fcoach%2Fagents")
        );
        // A wrong password: the form again, with a clear message, and no session.
        let page = http.get(app.url("/login")).send().await.expect("page");
        let login_cookie = set_cookie(&page, "cl_login")
            .and_then(|c| c.split(';').next())
            .expect("cookie")
            .to_owned();
        let token = csrf_of(&page.text().await.expect("html"));
        let r = http
            .post(app.url("/login"))
            .header(COOKIE, &login_cookie)
            .form(&[
                ("_csrf", token.as_str()),
                ("email", ADMIN_EMAIL),
                ("password", "nope"),
            ])
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(set_cookie(&r, "cl_session").is_none());
        assert!(r.text().await.unwrap_or_default().contains("not right"));
        // The sign-in form without its token is refused.
        let r = http
            .post(app.url("/login"))
            .header(COOKIE, &login_cookie)
            .form(&[("email", ADMIN_EMAIL), ("password", ADMIN_PASSWORD)])
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), StatusCode::FORBIDDEN);

        let session = form_login(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
        let page = http
            .get(app.url("/coach/knowledge"))
            .header(COOKIE, &session)
            .send()
            .await
            .expect("page");
        assert_eq!(page.status(), StatusCode::OK);
        let token = csrf_of(&page.text().await.expect("html"));
        // A form posted without the token, or with another session's, changes nothing.
        for bad in ["", "0123456789abcdef"] {
            let r = http
                .post(app.url("/coach/knowledge"))
                .header(COOKIE, &session)
                .form(&[("_csrf", bad), ("name", "Forged")])
                .send()
                .await
                .expect("post");
            assert_eq!(r.status(), StatusCode::FORBIDDEN);
        }
        let r = http
            .post(app.url("/coach/knowledge"))
            .header(COOKIE, &session)
            .form(&[("_csrf", token.as_str()), ("name", "Programmes")])
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        // The API with the cookie: reading is fine, a change needs the token header.
        let r = http
            .get(app.url("/api/v1/collections"))
            .header(COOKIE, &session)
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), StatusCode::OK);
        let names: Vec<String> = r.json::<Value>().await.expect("json")["items"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(names, ["Programmes"]);
        let r = http
            .post(app.url("/api/v1/collections"))
            .header(COOKIE, &session)
            .json(&json!({"name": "Forged"}))
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["error"]["code"], "csrf_failed");
        let r = http
            .post(app.url("/api/v1/collections"))
            .header(COOKIE, &session)
            .header("x-csrf-token", &token)
            .json(&json!({"name": "Worksheets"}))
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), StatusCode::CREATED);
        // A client is kept out of the backoffice with a clear page, not an error.
        let admin = app.admin_token().await;
        app.create_user(&admin, "client@web.test", "client").await;
        let client = form_login(&app, "client@web.test", PASSWORD).await;
        let r = http
            .get(app.url("/coach"))
            .header(COOKIE, &client)
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert!(r.text().await.unwrap_or_default().contains("for coaches"));
        // A malformed id is a 404 page.
        let r = http
            .get(app.url("/app/c/not-an-id"))
            .header(COOKIE, &client)
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        // An unknown address is a page for browsers, JSON under /api.
        let r = http
            .get(app.url("/no-such-page"))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap_or("")
                .starts_with("text/html")
        );
        let r = http
            .get(app.url("/api/v1/no-such-route"))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            r.json::<Value>().await.expect("json")["error"]["code"],
            "not_found"
        );
        // Signing out ends the session: the cookie no longer opens anything.
        let page = http
            .get(app.url("/app"))
            .header(COOKIE, &client)
            .send()
            .await
            .expect("get");
        let token = csrf_of(&page.text().await.expect("html"));
        let r = http
            .post(app.url("/logout"))
            .header(COOKIE, &client)
            .form(&[("_csrf", token.as_str())])
            .send()
            .await
            .expect("logout");
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let r = http
            .get(app.url("/app"))
            .header(COOKIE, &client)
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        app.stop().await;
    }
}

/// A server with the embedded models, a coach and a client of theirs.
async fn embedded_app() -> TestApp {
    let dir = models_dir();
    let db = coachlibre_testkit::TestDb::sqlite().expect("db");
    let app = TestApp::spawn_configured(db, |c| c.models_dir = Some(dir.clone())).await;
    let admin = app.admin_token().await;
    app.create_user(&admin, "coach@web.test", "coach").await;
    let coach = app.login("coach@web.test", PASSWORD).await;
    app.create_user(&coach, "client@web.test", "client").await;
    app
}

async fn sign_in(b: &Browser, app: &TestApp, email: &str, password: &str) {
    b.goto(&app.url("/login")).await;
    b.fill("#email", email).await;
    b.fill("#password", password).await;
    b.press("form.stack button[type=submit]").await;
    b.wait_for("header.top nav", 20).await;
}

async fn sign_out(b: &Browser) {
    b.press("header.top .who button").await;
    b.wait_for("#email", 10).await;
}

/// The page passes the accessibility check, on a desktop and on a phone.
async fn accessible(b: &Browser, page: &str) {
    for (w, h) in [(1280, 900), (390, 844)] {
        b.resize(w, h).await;
        let problems = b.accessibility_problems().await;
        assert!(problems.is_empty(), "{page} at {w}px: {problems:#?}");
    }
    b.resize(1280, 900).await;
}

const PROGRAMME: &str = "# Beginner running programme\n\n\
## Week one\n\n\
Run for twenty minutes, three times this week, at a pace where you can still talk. \
Walk for one minute whenever you need to. Stretch your calves after each run.\n\n\
## Week two\n\n\
Run for twenty-five minutes, three times this week. Add one short hill.\n";

#[tokio::test]
async fn a_coach_signs_in_creates_an_agent_and_uploads_a_document() {
    let app = embedded_app().await;
    let b = Browser::start().await;
    sign_in(&b, &app, "coach@web.test", PASSWORD).await;
    assert!(b.url().await.ends_with("/coach"), "{}", b.url().await);
    // A new coach is told what to do first.
    b.wait_text("Create your first agent", 10).await;
    accessible(&b, "dashboard").await;
    b.screenshot("coach-dashboard").await;

    // A collection, then a document uploaded into it: its ingestion shows and completes.
    b.press("nav a[href='/coach/knowledge']").await;
    b.fill("#f-name", "Running programmes").await;
    b.fill("#f-description", "What I give every new runner")
        .await;
    b.press("form[action='/coach/knowledge'] button[type=submit]")
        .await;
    b.wait_text("Created.", 10).await;
    let dir = coachlibre_testkit::TempDir::new().expect("dir");
    let file = dir.path().join("beginner-running.md");
    std::fs::write(&file, PROGRAMME).expect("write");
    let input = b.find("input[type=file]").await;
    b.type_into(&input, &file.to_string_lossy()).await;
    b.press("form[enctype='multipart/form-data'] button[type=submit]")
        .await;
    b.wait_text("Uploaded", 10).await;
    b.wait_for("section[data-refresh] .badge.ok", 60).await;
    b.wait_text("Beginner running programme", 5).await;
    accessible(&b, "collection").await;
    b.screenshot("coach-knowledge").await;

    // An agent from a template, answering from that collection.
    b.press("nav a[href='/coach/agents']").await;
    b.wait_text("No agent yet", 10).await;
    b.press("a.button[href='/coach/agents/new']").await;
    b.find("#f-template").await;
    b.script(
        "const s = document.getElementById('f-template'); s.value = 'sport-coach'; return s.value;",
    )
    .await;
    b.fill("#f-name", "Running coach").await;
    let collection_box = b.find("input[name^='collection:']").await;
    b.click(&collection_box).await;
    b.press("form[action='/coach/agents'] button[type=submit]")
        .await;
    b.wait_text("Created.", 10).await;
    assert_eq!(
        b.script("return document.querySelector(\"input[name^='collection:']\").checked")
            .await,
        Value::Bool(true)
    );
    assert_eq!(
        b.script("return document.querySelector(\"input[name='tool:create_goal']\").checked")
            .await,
        Value::Bool(true),
        "the template's tools are kept"
    );
    accessible(&b, "agent editor").await;
    b.screenshot("coach-agent-editor").await;

    // The agents list shows it; the test chat opens a conversation with it.
    b.press("nav a[href='/coach/agents']").await;
    b.wait_text("Running coach", 10).await;
    b.screenshot("coach-agents").await;
    b.quit().await;
    app.stop().await;
}

/// Set up through the API: a collection with the programme, ready, and an agent using it.
async fn coach_material(app: &TestApp) -> String {
    let coach = app.login("coach@web.test", PASSWORD).await;
    let r = app
        .post("/api/v1/collections", &coach, json!({"name": "Running"}))
        .await;
    let col = r.body["id"].as_str().expect("id").to_owned();
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(PROGRAMME.as_bytes().to_vec())
            .file_name("beginner-running.md"),
    );
    let resp = app
        .client
        .post(app.url(&format!("/api/v1/collections/{col}/documents")))
        .bearer_auth(&coach)
        .multipart(form)
        .send()
        .await
        .expect("upload");
    let doc: Value = resp.json().await.expect("json");
    let doc = doc["document"]["id"]
        .as_str()
        .or(doc["id"].as_str())
        .expect("doc id")
        .to_owned();
    for _ in 0..600 {
        let d = app.get(&format!("/api/v1/documents/{doc}"), &coach).await;
        if d.body["status"] == "ready" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = app
        .post(
            "/api/v1/agents",
            &coach,
            json!({"template": "sport-coach", "name": "Running coach", "collections": [col],
                   "params": {"max_tokens": 48, "temperature": 0}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body["id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn a_client_sees_a_streamed_answer_with_a_citation_and_deletes_a_memory() {
    let app = embedded_app().await;
    coach_material(&app).await;
    // Something the agents remember about the client.
    let store: Arc<dyn Store> = Arc::new(
        SqlStore::connect(&app.db.url, &ConnectOptions::default())
            .await
            .expect("store"),
    );
    let admin = app.admin_token().await;
    let users = app.get("/api/v1/users?role=client", &admin).await;
    let client_id = users.body["items"][0]["id"]
        .as_str()
        .expect("client")
        .to_owned();
    let tenant_id = users.body["items"][0]["tenant_id"]
        .as_str()
        .expect("tenant")
        .to_owned();
    let memory = Memory::new(
        tenant_id.parse().expect("tenant"),
        client_id.parse().expect("client"),
        MemoryKind::Constraint,
        None,
        "Has a sore left knee since March",
        "conversation",
    )
    .expect("memory");
    store.insert_memory(&memory).await.expect("insert memory");

    let b = Browser::start().await;
    sign_in(&b, &app, "client@web.test", PASSWORD).await;
    assert!(b.url().await.ends_with("/app"), "{}", b.url().await);
    b.wait_text("No conversation yet", 10).await;
    accessible(&b, "conversations").await;
    b.screenshot("client-conversations").await;

    b.press("form[action='/app/conversations'] button[type=submit]")
        .await;
    b.find("#chat-input").await;
    b.wait_text("Ask your first question", 10).await;
    b.fill("#chat-input", "How long should I run in week one?")
        .await;
    b.press("#chat-send").await;
    // The answer streams into its bubble, then the turn ends with its sources.
    b.wait_for("li.bubble.assistant.streaming", 30).await;
    let done = b.wait_for("li.bubble.assistant[data-done]", 180).await;
    let answer = b.text(&done).await;
    assert!(answer.split_whitespace().count() >= 3, "answer: {answer:?}");
    let cite = b.wait_for("li.bubble.assistant ul.citations a", 10).await;
    let source = b.text(&cite).await;
    assert!(source.contains("Beginner running programme"), "{source}");
    accessible(&b, "chat").await;
    b.screenshot("client-chat").await;

    // The citation opens the cited passage, marked in its document.
    b.click(&cite).await;
    let mark = b.wait_for("mark#cited", 10).await;
    assert!(
        b.text(&mark).await.contains("minutes"),
        "{}",
        b.text(&mark).await
    );
    accessible(&b, "passage").await;
    b.screenshot("client-passage").await;

    // Reloaded, the conversation still shows the answer's sources (they are stored).
    b.script("history.back(); return true").await;
    b.wait_for("#chat-input", 10).await;
    b.script("location.reload(); return true").await;
    b.wait_for("li.bubble.assistant ul.citations a", 10).await;

    // What the coach AI remembers, and forgetting it.
    b.press("nav a[href='/app/memory']").await;
    b.wait_text("sore left knee", 10).await;
    accessible(&b, "memory").await;
    b.screenshot("client-memory").await;
    b.press("form[action$='/delete'] button").await;
    b.wait_text("Forgotten", 10).await;
    assert!(!b.body_text().await.contains("sore left knee"));
    let left = store
        .list_memories(
            memory.tenant_id,
            memory.client_id,
            &coachlibre_core::page::PageRequest::parse(Some(10), None).expect("page"),
        )
        .await
        .expect("list");
    assert!(left.is_empty(), "deleted for good: {left:?}");

    b.press("nav a[href='/app/goals']").await;
    b.wait_text("No goal yet", 10).await;
    accessible(&b, "goals").await;
    b.screenshot("client-goals").await;
    b.quit().await;
    app.stop().await;
}

#[tokio::test]
async fn an_admin_reads_the_audit_log_and_the_system_status() {
    let app = TestApp::spawn(coachlibre_testkit::TestDb::sqlite().expect("db"), |_| {}).await;
    let b = Browser::start().await;
    sign_in(&b, &app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    b.press("nav a[href='/admin/audit']").await;
    b.wait_text("Audit log", 10).await;
    b.wait_text("auth.login_succeeded", 10).await;
    accessible(&b, "audit log").await;
    b.screenshot("admin-audit").await;

    b.press("nav a[href='/admin/users']").await;
    b.fill("#f-display_name", "Camille Coach").await;
    b.fill("#f-email", "camille@web.test").await;
    b.script("document.getElementById('f-role').value = 'coach'; return true")
        .await;
    b.press("form[action='/admin/users'] button[type=submit]")
        .await;
    b.wait_text("shown only now", 10).await;
    b.press("a.button[href='/admin/users']").await;
    b.wait_text("camille@web.test", 10).await;
    accessible(&b, "users").await;
    b.screenshot("admin-users").await;

    b.press("nav a[href='/admin']").await;
    b.wait_text("System status", 10).await;
    b.wait_text("requests/s", 10).await;
    accessible(&b, "status").await;
    b.screenshot("admin-status").await;

    // A phone-sized view of the dashboard.
    b.resize(390, 844).await;
    b.goto(&app.url("/coach")).await;
    b.wait_text("Dashboard", 10).await;
    b.screenshot("mobile-dashboard").await;
    b.quit().await;
    app.stop().await;
}

fn base32_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = Vec::new();
    let (mut buf, mut bits) = (0u32, 0u32);
    for c in s.trim().trim_end_matches('=').bytes() {
        let v = ALPHABET
            .iter()
            .position(|a| *a == c.to_ascii_uppercase())
            .expect("base32");
        buf = (buf << 5) | u32::try_from(v).expect("small");
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((buf >> bits) & 0xff).expect("byte"));
        }
    }
    out
}

#[tokio::test]
async fn two_factor_is_set_up_with_a_qr_code_and_asked_at_sign_in() {
    let app = TestApp::spawn(coachlibre_testkit::TestDb::sqlite().expect("db"), |_| {}).await;
    let b = Browser::start().await;
    sign_in(&b, &app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    b.press("nav a[href='/account']").await;
    b.press("form[action='/account/mfa/enroll'] button").await;
    b.wait_for(".qr svg", 10).await;
    accessible(&b, "two-factor enrolment").await;
    b.screenshot("account-two-factor").await;
    let secret = b.text(&b.find("#mfa-secret").await).await;
    let key = base32_decode(&secret);
    let now = chrono::Utc::now().timestamp();
    let code =
        coachlibre_core::auth::totp::code_at(&key, coachlibre_core::auth::totp::step_of(now));
    b.fill("#mfa-code", &code).await;
    b.press("form[action='/account/mfa/verify'] button").await;
    b.wait_text("Two-factor authentication is on", 10).await;
    let recovery = b.text(&b.find("ul.codes code").await).await;

    sign_out(&b).await;
    b.fill("#email", ADMIN_EMAIL).await;
    b.fill("#password", ADMIN_PASSWORD).await;
    b.press("form.stack button[type=submit]").await;
    b.wait_for("#code", 10).await;
    b.wait_text("two-factor", 5).await;
    b.fill("#password", ADMIN_PASSWORD).await;
    b.fill("#code", &recovery).await;
    b.press("form.stack button[type=submit]").await;
    b.wait_for("header.top nav", 10).await;
    assert!(b.url().await.ends_with("/coach"));
    b.quit().await;
    app.stop().await;
}

#[tokio::test]
async fn a_coach_approves_a_waiting_tool_call_from_the_backoffice() {
    for (app, model) in crate::agents::apps().await {
        let c = crate::agents::cast(&app, json!({"approval_tools": ["create_goal"]})).await;
        let conv = crate::agents::conversation(&app, &c).await;
        model.push(coachlibre_testkit::scripted::Script::call(
            "create_goal",
            json!({"title": "Sleep 8 hours"}),
        ));
        app.post_sse(
            &format!("/api/v1/conversations/{conv}/messages"),
            &c.client,
            json!({"content": "I want to sleep better"}),
        )
        .await;
        let http = raw();
        let coach = form_login(&app, "coach@x.test", PASSWORD).await;
        let page = http
            .get(app.url("/coach/approvals"))
            .header(COOKIE, &coach)
            .send()
            .await
            .expect("page");
        assert_eq!(page.status(), StatusCode::OK);
        let html = page.text().await.expect("html");
        assert!(
            html.contains("create_goal") && html.contains("Sleep 8 hours"),
            "{html}"
        );
        let at = html
            .find("action=\"/coach/approvals/")
            .expect("a decision form")
            + 8;
        let action = &html[at..at + html[at..].find('"').expect("end")];
        // The dashboard lists it too.
        let dash = http
            .get(app.url("/coach"))
            .header(COOKIE, &coach)
            .send()
            .await
            .expect("dashboard")
            .text()
            .await
            .expect("html");
        assert!(
            dash.contains(action),
            "the dashboard offers the same decision"
        );
        model.push(coachlibre_testkit::scripted::Script::text(
            "Your goal is saved.",
        ));
        let token = csrf_of(&html);
        let r = http
            .post(app.url(action))
            .header(COOKIE, &coach)
            .form(&[("_csrf", token.as_str()), ("decision", "approve")])
            .send()
            .await
            .expect("decide");
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let after = http
            .get(app.url("/coach/approvals?done=decided"))
            .header(COOKIE, &coach)
            .send()
            .await
            .expect("page")
            .text()
            .await
            .expect("html");
        assert!(after.contains("Decision recorded"));
        assert!(after.contains("Nothing waits for your approval"), "{after}");
        let decided = app.get("/api/v1/approvals?status=approved", &c.coach).await;
        assert_eq!(decided.body["items"].as_array().map(Vec::len), Some(1));
        // Deciding again is a clear conflict page, not an error.
        let r = http
            .post(app.url(action))
            .header(COOKIE, &coach)
            .form(&[("_csrf", token.as_str()), ("decision", "reject")])
            .send()
            .await
            .expect("decide");
        assert_eq!(r.status(), StatusCode::CONFLICT);
        app.stop().await;
    }
}

#[tokio::test]
async fn an_admin_manages_text_message_numbers_and_phones_from_the_backoffice() {
    for (app, _model) in crate::agents::apps().await {
        let c = crate::agents::cast(&app, json!({})).await;
        let http = raw();
        let admin = form_login(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
        let get = |path: &'static str| {
            let (http, admin, url) = (http.clone(), admin.clone(), app.url(path));
            async move {
                let r = http
                    .get(url)
                    .header(COOKIE, admin)
                    .send()
                    .await
                    .expect("page");
                (r.status(), r.text().await.expect("html"))
            }
        };
        let (status, html) = get("/admin/sms").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            html.contains("No number yet") && html.contains("No gateway is configured"),
            "{html}"
        );
        let token = csrf_of(&html);
        let r = http
            .post(app.url("/admin/sms"))
            .header(COOKIE, &admin)
            .form(&[
                ("_csrf", token.as_str()),
                ("number", "+33 7 00 00 00 01"),
                ("agent_id", c.agent.as_str()),
            ])
            .send()
            .await
            .expect("add");
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        // A bad number is a clear page, not an error.
        let r = http
            .post(app.url("/admin/sms"))
            .header(COOKIE, &admin)
            .form(&[
                ("_csrf", token.as_str()),
                ("number", "0700"),
                ("agent_id", c.agent.as_str()),
            ])
            .send()
            .await
            .expect("add");
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(r.text().await.unwrap_or_default().contains("country code"));
        let r = http
            .post(app.url("/admin/sms/phone"))
            .header(COOKIE, &admin)
            .form(&[
                ("_csrf", token.as_str()),
                ("user_id", c.client_id.as_str()),
                ("phone", "+33 6 12 34 56 78"),
            ])
            .send()
            .await
            .expect("phone");
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let phone = app
            .get(&format!("/api/v1/users/{}/phone", c.client_id), &c.coach)
            .await;
        assert_eq!(phone.body["phone"], "+33612345678");
        let (_, html) = get("/admin/sms").await;
        assert!(html.contains("+33700000001"), "{html}");
        let r = http
            .post(app.url("/admin/sms/remove?number=%2B33700000001"))
            .header(COOKIE, &admin)
            .form(&[("_csrf", token.as_str())])
            .send()
            .await
            .expect("remove");
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(r.headers()[LOCATION], "/admin/sms?done=removed");
        let (_, html) = get("/admin/sms?done=removed").await;
        assert!(
            html.contains("Number removed") && html.contains("No number yet"),
            "{html}"
        );
        // Coaches do not manage numbers.
        let coach = form_login(&app, "coach@x.test", PASSWORD).await;
        let r = http
            .get(app.url("/admin/sms"))
            .header(COOKIE, &coach)
            .send()
            .await
            .expect("page");
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        app.stop().await;
    }
}
