//! How long the web app's pages take: each main page fetched many times by a signed-in browser
//! session, over loopback, from a server holding a realistic practice (a coach with 200
//! clients, an agent, a collection of documents, a conversation of 100 messages, memories,
//! an audit log of a few hundred entries).
//!
//! ```sh
//! cargo run --release -p coachlibre-server --example page_bench -- [REQUESTS]
//! ```
//!
//! REQUESTS per page defaults to 300 (after 20 warm-up requests). The server runs in this
//! process on a fresh SQLite database, built as `coachlibre serve` builds it, with a scripted
//! chat model and a hashing embedder (the pages, not the models, are measured). Prints p50,
//! p99 and max per page; the time includes the loopback round trip, so it bounds the
//! server-side time from above.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use coachlibre_server::Application;
use coachlibre_server::config::{Config, Secret};
use coachlibre_testkit::TempDir;
use coachlibre_testkit::scripted::{HashEmbedder, Script, ScriptedModel, ScriptedSource};
use serde_json::{Value, json};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ADMIN: &str = "admin@bench.test";
const PASSWORD: &str = "bench password 123";

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn post(&self, path: &str, token: &str, body: Value) -> anyhow::Result<Value> {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await?;
        let status = r.status();
        let text = r.text().await?;
        anyhow::ensure!(status.is_success(), "{path}: {status} {text}");
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn login(&self, email: &str) -> anyhow::Result<String> {
        let r = self
            .http
            .post(format!("{}/api/v1/auth/login", self.base))
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await?
            .json::<Value>()
            .await?;
        Ok(r["access_token"].as_str().context("token")?.to_owned())
    }

    /// Sign in through the form, as a browser does: the session cookie.
    async fn browser_session(&self, email: &str) -> anyhow::Result<String> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let page = http.get(format!("{}/login", self.base)).send().await?;
        let cookie = page
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("cl_login="))
            .and_then(|v| v.split(';').next())
            .context("login cookie")?
            .to_owned();
        let html = page.text().await?;
        let at = html.find("name=\"_csrf\" value=\"").context("csrf")? + 20;
        let csrf = &html[at..at + html[at..].find('"').context("csrf end")?];
        let r = http
            .post(format!("{}/login", self.base))
            .header("cookie", cookie)
            .form(&[("_csrf", csrf), ("email", email), ("password", PASSWORD)])
            .send()
            .await?;
        let session = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("cl_session="))
            .and_then(|v| v.split(';').next())
            .context("session cookie")?
            .to_owned();
        Ok(session)
    }
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let requests: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()
        .context("REQUESTS")?
        .unwrap_or(300);
    let tmp = TempDir::new()?;
    let model = ScriptedModel::new("scripted")
        .always(Script::text(
            "Run twenty minutes, three times this week [1].",
        ))
        .without_recording();
    let source = ScriptedSource::new()
        .with("scripted", Arc::new(model))
        .with_embedder(Arc::new(HashEmbedder));
    let mut config = Config {
        bind: "127.0.0.1:0".parse()?,
        data_dir: tmp.path().to_path_buf(),
        database_url: Some(Secret::new(format!(
            "sqlite://{}",
            tmp.path().join("bench.db").display()
        ))),
        admin_email: Some(ADMIN.into()),
        admin_password: Some(Secret::new(PASSWORD)),
        ..Config::default()
    };
    config.rate_limit.enabled = false;
    config.jobs.run_in_serve = false;
    let app = Application::build_with_models(config, Arc::new(source)).await?;
    let addr: SocketAddr = app.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stop_rx.await;
    }));
    let api = Api {
        http: reqwest::Client::new(),
        base: format!("http://{addr}"),
    };

    // The practice.
    let admin = api.login(ADMIN).await?;
    api.post(
        "/api/v1/users",
        &admin,
        json!({"email": "coach@bench.test", "display_name": "Camille", "role": "coach", "password": PASSWORD}),
    )
    .await?;
    let coach = api.login("coach@bench.test").await?;
    for i in 0..200 {
        api.post(
            "/api/v1/users",
            &coach,
            json!({"email": format!("client{i}@bench.test"), "display_name": format!("Client {i}"),
                   "role": "client", "password": PASSWORD}),
        )
        .await?;
    }
    let col = api
        .post("/api/v1/collections", &coach, json!({"name": "Programmes"}))
        .await?;
    let col = col["id"].as_str().context("collection")?.to_owned();
    for i in 0..20 {
        let form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(
                format!("# Programme {i}\n\nRun {i} minutes, walk one, repeat.\n").into_bytes(),
            )
            .file_name(format!("programme-{i}.md")),
        );
        api.http
            .post(format!("{}/api/v1/collections/{col}/documents", api.base))
            .bearer_auth(&coach)
            .multipart(form)
            .send()
            .await?;
    }
    let agent = api
        .post(
            "/api/v1/agents",
            &coach,
            json!({"template": "sport-coach", "model": "scripted", "collections": [col]}),
        )
        .await?;
    let agent = agent["id"].as_str().context("agent")?.to_owned();
    let client = api.login("client0@bench.test").await?;
    let conv = api
        .post(
            "/api/v1/conversations",
            &client,
            json!({"agent_id": agent, "title": "Half marathon"}),
        )
        .await?;
    let conv = conv["id"].as_str().context("conversation")?.to_owned();
    for i in 0..50 {
        api.http
            .post(format!("{}/api/v1/conversations/{conv}/messages", api.base))
            .bearer_auth(&client)
            .json(&json!({"content": format!("Question {i}: how far should I run this week?")}))
            .send()
            .await?
            .text()
            .await?;
    }

    let coach_session = api.browser_session("coach@bench.test").await?;
    let client_session = api.browser_session("client0@bench.test").await?;
    let admin_session = api.browser_session(ADMIN).await?;
    let pages: Vec<(&str, String, &str)> = vec![
        ("coach dashboard", "/coach".into(), &coach_session),
        ("clients (200)", "/coach/clients".into(), &coach_session),
        ("agents", "/coach/agents".into(), &coach_session),
        (
            "agent editor",
            format!("/coach/agents/{agent}"),
            &coach_session,
        ),
        ("knowledge", "/coach/knowledge".into(), &coach_session),
        (
            "collection (20 docs)",
            format!("/coach/knowledge/{col}"),
            &coach_session,
        ),
        ("skills & workflows", "/coach/work".into(), &coach_session),
        ("approvals", "/coach/approvals".into(), &coach_session),
        ("client conversations", "/app".into(), &client_session),
        (
            "chat (100 messages)",
            format!("/app/c/{conv}"),
            &client_session,
        ),
        ("client memory", "/app/memory".into(), &client_session),
        ("admin status", "/admin".into(), &admin_session),
        ("admin users", "/admin/users".into(), &admin_session),
        ("audit log", "/admin/audit".into(), &admin_session),
    ];
    println!(
        "{:<24} {:>9} {:>9} {:>9} {:>9}",
        "page", "p50 ms", "p99 ms", "max ms", "KiB"
    );
    for (name, path, cookie) in pages {
        let url = format!("{}{path}", api.base);
        let mut times = Vec::with_capacity(requests);
        let mut size = 0;
        for i in 0..requests + 20 {
            let start = Instant::now();
            let r = api.http.get(&url).header("cookie", cookie).send().await?;
            anyhow::ensure!(r.status().is_success(), "{path}: {}", r.status());
            size = r.bytes().await?.len();
            if i >= 20 {
                times.push(start.elapsed());
            }
        }
        times.sort();
        println!(
            "{:<24} {:>9.2} {:>9.2} {:>9.2} {:>9.1}",
            name,
            pct(&times, 0.5),
            pct(&times, 0.99),
            pct(&times, 1.0),
            size as f64 / 1024.0
        );
    }
    let _ = stop_tx.send(());
    let _ = server.await;
    Ok(())
}
