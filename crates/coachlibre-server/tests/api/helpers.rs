//! `TestApp`: one server per test, with a helper per common call.

use std::net::SocketAddr;
use std::sync::Arc;

use coachlibre_core::model::ModelSource;
use coachlibre_testkit::scripted::ScriptedSource;

use coachlibre_server::Application;
use coachlibre_server::config::{Config, Secret};
use coachlibre_testkit::TestDb;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

pub const ADMIN_EMAIL: &str = "admin@example.org";
pub const ADMIN_PASSWORD: &str = "admin password 123";

pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub db: TestDb,
    pub backend: &'static str,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

/// A response: status, headers and JSON body (Null when empty or not JSON).
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

impl TestApp {
    /// A server on each configured backend.
    pub async fn each() -> Vec<TestApp> {
        Self::each_with(|_| {}).await
    }

    /// Same, with config tweaks.
    pub async fn each_with(tweak: impl Fn(&mut Config)) -> Vec<TestApp> {
        let mut apps = Vec::new();
        for db in TestDb::all().await.expect("test database") {
            apps.push(Self::spawn(db, &tweak).await);
        }
        apps
    }

    pub async fn spawn(db: TestDb, tweak: impl Fn(&mut Config)) -> TestApp {
        let models: Arc<dyn ModelSource> = Arc::new(ScriptedSource::new());
        Self::spawn_with_models(db, tweak, models).await
    }

    /// A server whose models come from its configuration, as in production.
    pub async fn spawn_configured(db: TestDb, tweak: impl Fn(&mut Config)) -> TestApp {
        Self::start(db, tweak, None).await
    }

    pub async fn spawn_with_models(
        db: TestDb,
        tweak: impl Fn(&mut Config),
        models: Arc<dyn ModelSource>,
    ) -> TestApp {
        Self::start(db, tweak, Some(models)).await
    }

    async fn start(
        db: TestDb,
        tweak: impl Fn(&mut Config),
        models: Option<Arc<dyn ModelSource>>,
    ) -> TestApp {
        let mut config = Config {
            bind: "127.0.0.1:0".parse().expect("addr"),
            data_dir: db.dir().to_path_buf(),
            database_url: Some(Secret::new(db.url.clone())),
            admin_email: Some(ADMIN_EMAIL.into()),
            admin_password: Some(Secret::new(ADMIN_PASSWORD)),
            ..Config::default()
        };
        config.rate_limit.enabled = false;
        tweak(&mut config);
        let app = match models {
            Some(m) => Application::build_with_models(config, m).await,
            None => Application::build(config).await,
        }
        .expect("build app");
        let addr = app.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(async move {
            app.run_until_stopped(async {
                let _ = rx.await;
            })
            .await
            .expect("server");
        });
        let backend = match db.kind {
            coachlibre_testkit::Kind::Sqlite => "sqlite",
            coachlibre_testkit::Kind::Postgres => "postgres",
        };
        TestApp {
            addr,
            client: reqwest::Client::new(),
            db,
            backend,
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    /// Stop the server and wait for it to drain.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.server.take() {
            let _ = h.await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Any request; `token` is sent as a bearer credential.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut req = self.client.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    /// POST and read a Server-Sent Events body to its end: (status, [(event, data)]).
    pub async fn post_sse(
        &self,
        path: &str,
        token: &str,
        body: Value,
    ) -> (StatusCode, Vec<(String, Value)>) {
        let resp = self
            .client
            .post(self.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        (status, parse_sse(&text))
    }

    /// Sign in; returns the full reply.
    pub async fn login_reply(&self, email: &str, password: &str) -> Reply {
        self.call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"email": email, "password": password})),
        )
        .await
    }

    /// Sign in and return the access token (panics on failure).
    pub async fn login(&self, email: &str, password: &str) -> String {
        let r = self.login_reply(email, password).await;
        assert_eq!(r.status, StatusCode::OK, "login {email}: {}", r.body);
        r.body["access_token"].as_str().expect("token").to_owned()
    }

    pub async fn admin_token(&self) -> String {
        self.login(ADMIN_EMAIL, ADMIN_PASSWORD).await
    }

    /// Create a user as `token`; returns its id.
    pub async fn create_user(&self, token: &str, email: &str, role: &str) -> String {
        let r = self
            .post(
                "/api/v1/users",
                token,
                json!({"email": email, "display_name": email, "role": role, "password": "password for tests"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.body["user"]["id"].as_str().expect("id").to_owned()
    }
}

/// Parse an SSE body into (event name, JSON data) pairs; comments (keep-alives) are skipped
/// and events without a name are called `message`.
pub fn parse_sse(text: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let mut name = String::from("message");
        let mut data = String::new();
        for line in block.lines() {
            if let Some(n) = line.strip_prefix("event:") {
                name = n.trim().to_owned();
            } else if let Some(d) = line.strip_prefix("data:") {
                data.push_str(d.trim_start());
            }
        }
        if !data.is_empty() {
            let value = serde_json::from_str(&data).unwrap_or(Value::String(data));
            out.push((name, value));
        }
    }
    out
}

/// Where `cargo run -- models pull` installed the embedded models.
pub fn models_dir() -> std::path::PathBuf {
    std::env::var_os("COACHLIBRE_MODELS_DIR").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/models"),
        std::path::PathBuf::from,
    )
}
