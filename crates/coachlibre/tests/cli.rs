//! The real binary: first start creates the admin and prints its password once; the admin
//! CLI commands work; `config` masks secrets; SIGTERM stops the server gracefully.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use coachlibre_testkit::TestDb;

const BIN: &str = env!("CARGO_BIN_EXE_coachlibre");

/// `coachlibre` with no `COACHLIBRE_*` variables, run in `dir`.
fn bare(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("COACHLIBRE_") {
            cmd.env_remove(k);
        }
    }
    cmd.current_dir(dir);
    cmd
}

/// `coachlibre` with a clean environment pointed at `db`.
fn coachlibre(db: &TestDb) -> Command {
    let mut cmd = bare(db.dir());
    cmd.arg("--data-dir")
        .arg(db.dir().join("data"))
        .arg("--database-url")
        .arg(&db.url);
    cmd
}

fn run(db: &TestDb, args: &[&str]) -> String {
    let out: Output = coachlibre(db).args(args).output().expect("run coachlibre");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "coachlibre {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Start `serve` on a random port; returns the child, the address and the lines printed
/// before "listening".
fn serve(db: &TestDb, envs: &[(&str, &str)]) -> (Child, String, Vec<String>) {
    let mut child = coachlibre(db)
        .args(["serve", "--bind", "127.0.0.1:0"])
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("line");
        if let Some(rest) = line.strip_prefix("CoachLibre is listening on http://") {
            let addr = rest.split_whitespace().next().expect("addr").to_owned();
            return (child, addr, lines);
        }
        lines.push(line);
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("serve exited before listening: {lines:?}");
}

fn terminate(mut child: Child) {
    let pid = child.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    for _ in 0..100 {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "graceful shutdown exits 0, got {status}");
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("serve did not stop within 10 s of SIGTERM");
}

async fn login(addr: &str, email: &str, password: &str) -> reqwest::StatusCode {
    reqwest::Client::new()
        .post(format!("http://{addr}/api/v1/auth/login"))
        .json(&serde_json::json!({"email": email, "password": password}))
        .send()
        .await
        .expect("login request")
        .status()
}

#[tokio::test]
async fn first_run_prints_a_password_once_and_sigterm_stops_gracefully() {
    for db in TestDb::all().await.expect("db") {
        let (child, addr, lines) = serve(&db, &[]);
        let password = lines
            .iter()
            .find_map(|l| l.trim().strip_prefix("password: "))
            .unwrap_or_else(|| panic!("password printed on first run: {lines:?}"))
            .to_owned();
        assert!(
            lines.iter().any(|l| l.contains("admin@localhost")),
            "{lines:?}"
        );
        assert_eq!(login(&addr, "admin@localhost", &password).await, 200);
        terminate(child);

        // Second start: nothing created, nothing printed, same password still valid.
        let (child, addr, lines) = serve(&db, &[("COACHLIBRE_LOG_FORMAT", "json")]);
        assert!(lines.is_empty(), "{lines:?}");
        assert_eq!(login(&addr, "admin@localhost", &password).await, 200);
        terminate(child);
    }
}

#[tokio::test]
async fn admin_email_and_password_from_the_environment() {
    let db = TestDb::sqlite().expect("db");
    let (child, addr, lines) = serve(
        &db,
        &[
            ("COACHLIBRE_ADMIN_EMAIL", "boss@example.org"),
            ("COACHLIBRE_ADMIN_PASSWORD", "a chosen password"),
        ],
    );
    assert!(
        lines.iter().all(|l| !l.contains("a chosen password")),
        "{lines:?}"
    );
    assert_eq!(
        login(&addr, "boss@example.org", "a chosen password").await,
        200
    );
    terminate(child);
}

#[test]
fn admin_commands() {
    let db = TestDb::sqlite().expect("db");
    assert!(run(&db, &["migrate"]).contains("latest schema"));
    assert!(
        run(
            &db,
            &["tenant", "create", "acme", "--name", "Acme Coaching"]
        )
        .contains("created tenant acme")
    );
    assert!(run(&db, &["tenant", "list"]).contains("Acme Coaching"));

    let out = run(
        &db,
        &[
            "user",
            "create",
            "--tenant",
            "acme",
            "--email",
            "Coach@Acme.org",
            "--name",
            "Coach",
            "--role",
            "coach",
        ],
    );
    assert!(out.contains("created coach coach@acme.org"), "{out}");
    assert!(out.contains("password: "), "{out}");
    let out = run(&db, &["user", "list", "--tenant", "acme"]);
    assert!(
        out.contains("coach@acme.org") && out.contains("coach"),
        "{out}"
    );
    let out = run(
        &db,
        &[
            "user",
            "set-role",
            "--tenant",
            "acme",
            "--email",
            "coach@acme.org",
            "admin",
        ],
    );
    assert!(out.contains("is now admin"), "{out}");
    let out = run(
        &db,
        &[
            "user",
            "reset-password",
            "--tenant",
            "acme",
            "--email",
            "coach@acme.org",
        ],
    );
    assert!(out.contains("new password for coach@acme.org"), "{out}");

    let out = run(
        &db,
        &[
            "apikey",
            "create",
            "--tenant",
            "acme",
            "--email",
            "coach@acme.org",
            "--name",
            "zapier",
            "--scopes",
            "read,write",
        ],
    );
    let key = out
        .lines()
        .find(|l| l.starts_with("cl_"))
        .unwrap_or_else(|| panic!("{out}"))
        .to_owned();
    let id = out.split_whitespace().nth(3).expect("id").to_owned();
    let list = run(&db, &["apikey", "list", "--tenant", "acme"]);
    assert!(
        list.contains("zapier") && list.contains("active") && !list.contains(&key),
        "{list}"
    );
    run(&db, &["apikey", "revoke", "--tenant", "acme", &id]);
    assert!(run(&db, &["apikey", "list", "--tenant", "acme"]).contains("revoked"));

    // Errors are clear and exit non-zero.
    let out = coachlibre(&db)
        .args(["user", "list", "--tenant", "nope"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no tenant 'nope'") && err.contains("tenant create"),
        "{err}"
    );
    let out = coachlibre(&db)
        .args([
            "user", "create", "--tenant", "acme", "--email", "x", "--name", "X", "--role", "coach",
        ])
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("email"));
}

#[test]
fn config_masks_secrets_and_rejects_unknown_keys() {
    let db = TestDb::sqlite().expect("db");
    let out = bare(db.dir())
        .args([
            "--database-url",
            "postgres://app:hunter2@db.example.org/coach",
            "config",
        ])
        .env(
            "COACHLIBRE_SECRET_KEY",
            "a-very-secret-master-key-of-enough-length",
        )
        .env("COACHLIBRE_HTTP__BODY_LIMIT_BYTES", "4096")
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        !text.contains("hunter2") && !text.contains("a-very-secret"),
        "{text}"
    );
    assert!(
        text.contains("postgres://app:***@db.example.org/coach"),
        "{text}"
    );
    assert!(text.contains("body_limit_bytes = 4096"), "{text}");

    std::fs::write(
        Path::new(db.dir()).join("coachlibre.toml"),
        "bnid = \"0.0.0.0:1\"\n",
    )
    .expect("write");
    let out = bare(db.dir()).arg("config").output().expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bnid"));
}

#[test]
fn models_list_and_install_from_a_local_file() {
    let db = TestDb::sqlite().expect("db");
    let models = db.dir().join("models-here");
    let list = || {
        let out = coachlibre(&db)
            .args(["models", "list"])
            .env("COACHLIBRE_MODELS_DIR", &models)
            .output()
            .expect("run");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let before = list();
    assert!(
        before.contains("smollm2-135m-instruct") && before.contains("missing"),
        "{before}"
    );
    assert!(
        before.contains("models-here"),
        "COACHLIBRE_MODELS_DIR is honoured: {before}"
    );

    let gguf = db.dir().join("SmolLM2.gguf");
    std::fs::write(&gguf, b"GGUF test bytes").expect("write");
    let out = coachlibre(&db)
        .args(["models", "pull", "--from"])
        .arg(&gguf)
        .env("COACHLIBRE_MODELS_DIR", &models)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = list();
    let line = after
        .lines()
        .find(|l| l.starts_with("smollm2"))
        .expect("line");
    assert!(line.contains("installed"), "{after}");

    let out = coachlibre(&db)
        .args(["models", "pull", "no-such-model"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("the embedded models are"));
}

/// A one-shot HTTP server answering any request with an OpenAI-style SSE stream.
fn canned_sse_server() -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        let (mut sock, _) = listener.accept().expect("accept");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        // Read headers, then the body announced by Content-Length.
        loop {
            let n = sock.read(&mut chunk).expect("read");
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let len: usize = text
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len || n == 0 {
                    break;
                }
            }
        }
        let body = concat!(
            "data: {\"choices\":[{\"delta\":{\"content\":\"Keep \"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"going!\"},\"finish_reason\":\"stop\"}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3}}\n\n",
            "data: [DONE]\n\n"
        );
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        sock.write_all(resp.as_bytes()).expect("write");
    });
    format!("http://{addr}/v1")
}

#[test]
fn chat_streams_a_configured_provider_and_config_masks_its_key() {
    let db = TestDb::sqlite().expect("db");
    let url = canned_sse_server();
    let out = coachlibre(&db)
        .args(["chat", "--model", "local", "Motivate me"])
        .env("COACHLIBRE_PROVIDERS__LOCAL__BASE_URL", &url)
        .env("COACHLIBRE_PROVIDERS__LOCAL__MODEL", "smol")
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(stdout.trim(), "Keep going!");
    assert!(
        stderr.contains("12 prompt + 3 completion tokens"),
        "{stderr}"
    );

    let out = coachlibre(&db)
        .args(["chat", "--model", "nope", "hi"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no chat model named 'nope'"));

    let out = bare(db.dir())
        .arg("config")
        .env("COACHLIBRE_PROVIDERS__CLAUDE__KIND", "anthropic")
        .env(
            "COACHLIBRE_PROVIDERS__CLAUDE__BASE_URL",
            "https://api.anthropic.com",
        )
        .env("COACHLIBRE_PROVIDERS__CLAUDE__MODEL", "claude-x")
        .env(
            "COACHLIBRE_PROVIDERS__CLAUDE__API_KEY",
            "sk-ant-very-secret",
        )
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("[providers.claude]") && text.contains("kind = \"anthropic\""),
        "{text}"
    );
    assert!(!text.contains("sk-ant-very-secret"), "{text}");
}

/// `coachlibre jobs show ID` as JSON.
fn job(db: &TestDb, id: &str) -> serde_json::Value {
    serde_json::from_str(&run(db, &["jobs", "show", id])).expect("job JSON")
}

fn wait_status(db: &TestDb, id: &str, want: &str) -> serde_json::Value {
    for _ in 0..300 {
        let j = job(db, id);
        if j["status"] == want {
            return j;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("job {id} never became {want}: {}", job(db, id));
}

fn worker(db: &TestDb) -> Child {
    coachlibre(db)
        .arg("worker")
        .envs([
            ("COACHLIBRE_JOBS__LEASE_SECS", "1"),
            ("COACHLIBRE_JOBS__POLL_MS", "50"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn worker")
}

#[test]
fn a_worker_killed_mid_job_loses_nothing() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    for db in rt.block_on(TestDb::all()).expect("test db") {
        run(&db, &["tenant", "create", "default", "--name", "Practice"]);
        let out = run(
            &db,
            &[
                "jobs",
                "enqueue",
                "system.probe",
                "--payload",
                r#"{"sleep_ms":3000}"#,
            ],
        );
        let slow = out
            .split_whitespace()
            .nth(1)
            .expect("enqueued ID")
            .to_owned();
        for i in 0..20 {
            run(
                &db,
                &[
                    "jobs",
                    "enqueue",
                    "system.probe",
                    "--key",
                    &format!("quick-{i}"),
                ],
            );
        }
        // The same key again is the same job.
        let again = run(
            &db,
            &["jobs", "enqueue", "system.probe", "--key", "quick-0"],
        );
        assert!(again.starts_with("already enqueued"), "{again}");

        let mut first = worker(&db);
        wait_status(&db, &slow, "running");
        first.kill().expect("SIGKILL the worker");
        first.wait().expect("reaped");

        // A new worker takes the job over once the dead one's lease has expired.
        let second = worker(&db);
        let done = wait_status(&db, &slow, "succeeded");
        assert_eq!(done["attempts"], 2, "{done}");
        let listed = run(&db, &["jobs", "list"]);
        let summary = listed.lines().next().expect("summary line");
        assert!(summary.contains("succeeded 21"), "{listed}");
        assert!(
            summary.contains("queued 0") && summary.contains("running 0"),
            "{listed}"
        );
        terminate(second);
    }
}

#[tokio::test]
async fn models_list_shows_what_uses_each_model() {
    let db = TestDb::sqlite().expect("db");
    std::fs::write(
        db.dir().join("coachlibre.toml"),
        "[providers.ollama]\nbase_url = \"http://127.0.0.1:9/v1\"\nmodel = \"llama3.2\"\n\n\
         [chains]\ncoach = [\"ollama\", \"smollm2-135m-instruct\"]\n\n\
         [skills]\nmodel = \"coach\"\n",
    )
    .expect("config");
    // Before any database exists, listing models does not create one.
    let out = run(&db, &["models", "list"]);
    assert!(!db.dir().join("data").join("coachlibre.db").exists());
    let line = |out: &str, start: &str| {
        out.lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line for {start}: {out}"))
            .to_owned()
    };
    assert!(
        line(&out, "all-minilm").contains("memory and knowledge embeddings"),
        "{out}"
    );
    assert!(line(&out, "chain coach").contains("skills"), "{out}");
    assert!(
        line(&out, "provider ollama").contains("skills via coach"),
        "{out}"
    );

    // An agent on the embedded model is counted.
    let (child, addr, _) = serve(&db, &[("COACHLIBRE_ADMIN_PASSWORD", "a chosen password")]);
    let client = reqwest::Client::new();
    let token = &admin_token(&addr).await;
    let created = client
        .post(format!("http://{addr}/api/v1/agents"))
        .bearer_auth(token)
        .json(&serde_json::json!({"template": "life-coach"}))
        .send()
        .await
        .expect("agent");
    assert_eq!(created.status(), 201);
    terminate(child);
    let out = run(&db, &["models", "list"]);
    let smol = line(&out, "smollm2");
    assert!(
        smol.contains("1 agent") && smol.contains("skills via coach"),
        "{out}"
    );
}

#[test]
fn workflows_are_saved_and_run_from_the_command_line() {
    let db = TestDb::sqlite().expect("db");
    run(&db, &["tenant", "create", "default", "--name", "Practice"]);
    let file = db.dir().join("flow.json");
    std::fs::write(
        &file,
        r#"{"name": "shape", "description": "Two transforms", "steps": [
            {"id": "a", "kind": "transform", "value": {"n": "{{input.n}}"}},
            {"id": "b", "kind": "aggregate", "template": "n is {{steps.a.n}}", "needs": ["a"]}]}"#,
    )
    .expect("write");
    let out = run(&db, &["workflow", "save", file.to_str().expect("path")]);
    assert!(out.contains("saved shape version 1"), "{out}");
    let out = run(&db, &["workflow", "list"]);
    assert!(
        out.contains("shape") && out.contains("Two transforms"),
        "{out}"
    );
    let w = worker(&db);
    let out = run(&db, &["workflow", "run", "shape", "--input", r#"{"n": 7}"#]);
    assert!(out.contains("succeeded"), "{out}");
    assert!(out.contains("  b ") || out.contains(" b  "), "{out}");
    terminate(w);
    let bad = coachlibre(&db)
        .args(["workflow", "run", "nope"])
        .output()
        .expect("run");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not found"));
}

/// Sign in as the admin whose password is "a chosen password"; the access token.
async fn admin_token(addr: &str) -> String {
    let login: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{addr}/api/v1/auth/login"))
        .json(&serde_json::json!({"email": "admin@localhost", "password": "a chosen password"}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json");
    login["access_token"].as_str().expect("token").to_owned()
}

/// Upload `bytes` as `name` to a new collection; the status and the body.
async fn upload(addr: &str, token: &str, name: &str, bytes: Vec<u8>) -> (u16, serde_json::Value) {
    let client = reqwest::Client::new();
    let col: serde_json::Value = client
        .post(format!("http://{addr}/api/v1/collections"))
        .bearer_auth(token)
        .json(&serde_json::json!({"name": name}))
        .send()
        .await
        .expect("collection")
        .json()
        .await
        .expect("json");
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(bytes).file_name(name.to_owned()),
    );
    let res = client
        .post(format!(
            "http://{addr}/api/v1/collections/{}/documents",
            col["id"].as_str().expect("collection id")
        ))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .expect("upload");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or_default())
}

/// The reproductions of a hostile document that aborted the server (an HTML page nested
/// 10,000 deep; a PDF whose page nests an array 100,000 deep): each gets a 422 naming the
/// problem, the server keeps serving, and a real PDF is still read (in a child process).
#[tokio::test]
async fn hostile_documents_get_an_error_and_the_server_keeps_serving() {
    let db = TestDb::sqlite().expect("db");
    let (child, addr, _) = serve(&db, &[("COACHLIBRE_ADMIN_PASSWORD", "a chosen password")]);
    let token = &admin_token(&addr).await;

    let html = format!(
        "<html><body>{}x{}</body></html>",
        "<div>".repeat(10_000),
        "</div>".repeat(10_000)
    );
    let (status, body) = upload(&addr, token, "n.html", html.into_bytes()).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("10000 levels deep")),
        "{body}"
    );

    let pdf = coachlibre_testkit::fixtures::nested_pdf(100_000);
    let (status, body) = upload(&addr, token, "n.pdf", pdf).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_input", "{body}");

    let pdf = coachlibre_testkit::fixtures::pdf(&["Semaine 13 : sortie longue de 32 km."]);
    let (status, body) = upload(&addr, token, "plan.pdf", pdf).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["outcome"], "created", "{body}");

    let ready = reqwest::get(format!("http://{addr}/readyz"))
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    terminate(child);
}

/// Nothing acknowledged is lost when the server is killed (SIGKILL) under a write load
/// through the HTTP API: every collection and job the server answered 201 for is there after
/// a restart, on SQLite and PostgreSQL.
#[tokio::test]
async fn acknowledged_writes_survive_sigkill_under_load() {
    let env = [
        ("COACHLIBRE_ADMIN_PASSWORD", "a chosen password"),
        ("COACHLIBRE_RATE_LIMIT__ENABLED", "false"),
        ("COACHLIBRE_JOBS__RUN_IN_SERVE", "false"),
    ];
    for db in TestDb::all().await.expect("db") {
        let (mut child, addr, _) = serve(&db, &env);
        let client = reqwest::Client::new();
        let token = admin_token(&addr).await;

        let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, String)>::new()));
        let mut writers = Vec::new();
        for w in 0..8 {
            let (client, addr, token, acked) =
                (client.clone(), addr.clone(), token.clone(), acked.clone());
            writers.push(tokio::spawn(async move {
                for i in 0.. {
                    let (path, body) = if i % 2 == 0 {
                        (
                            "collections",
                            serde_json::json!({"name": format!("c{w}-{i}")}),
                        )
                    } else {
                        ("jobs", serde_json::json!({"kind": "system.probe"}))
                    };
                    let Ok(res) = client
                        .post(format!("http://{addr}/api/v1/{path}"))
                        .bearer_auth(&token)
                        .json(&body)
                        .send()
                        .await
                    else {
                        return;
                    };
                    if res.status() != 201 {
                        continue;
                    }
                    let Ok(v) = res.json::<serde_json::Value>().await else {
                        return;
                    };
                    let id = v["id"].as_str().expect("id").to_owned();
                    acked.lock().expect("lock").push((path.to_owned(), id));
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        for w in writers {
            let _ = w.await;
        }
        let acked = acked.lock().expect("lock").clone();
        assert!(acked.len() > 50, "{}: only {} writes", db.url, acked.len());

        let (child, addr, _) = serve(&db, &env);
        let token = admin_token(&addr).await;
        let mut lost = Vec::new();
        for (path, id) in &acked {
            let res = client
                .get(format!("http://{addr}/api/v1/{path}/{id}"))
                .bearer_auth(&token)
                .send()
                .await
                .expect("get");
            if res.status() != 200 {
                lost.push((path, id, res.status()));
            }
        }
        assert!(
            lost.is_empty(),
            "lost {} of {}: {lost:?}",
            lost.len(),
            acked.len()
        );
        eprintln!("{} acknowledged writes, none lost", acked.len());
        terminate(child);
    }
}
