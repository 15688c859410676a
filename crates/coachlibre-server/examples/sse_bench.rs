//! How many concurrent streamed chats one server process holds, and its memory with them open.
//!
//! ```sh
//! ulimit -n 20000
//! cargo run --release -p coachlibre-server --example sse_bench -- [STREAMS] [TOKENS] [TOKEN_MS]
//! ```
//!
//! Defaults: 10000 streams, each a turn whose scripted answer streams 60 tokens, one every
//! 1000 ms (so a stream lasts a minute and all of them are open at once). The server runs in
//! this process on a fresh SQLite database, exactly as `coachlibre serve` builds it, with the
//! scripted model in place of the embedded one; the clients run in a child process (this
//! program again, `client` mode) so that the server's memory is measured alone. Prints the
//! server's resident memory before, with every stream open, and at its peak, and what the
//! clients received.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use coachlibre_server::Application;
use coachlibre_server::config::{Config, Secret};
use coachlibre_testkit::TempDir;
use coachlibre_testkit::scripted::{HashEmbedder, Script, ScriptedModel, ScriptedSource};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

/// The allocator of the shipped binary.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ADMIN: &str = "admin@bench.test";
const PASSWORD: &str = "bench password 123";
/// Connections being opened at once by the client process.
const OPENING: usize = 200;

/// (VmRSS, VmHWM) of a process in KiB.
fn memory_kib(pid: &str) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("client") {
        return client(&args[1..]).await;
    }
    let arg = |i: usize, default: u64| -> anyhow::Result<u64> {
        args.get(i)
            .map(|a| {
                a.parse()
                    .with_context(|| format!("argument {}: {a}", i + 1))
            })
            .transpose()
            .map(|v| v.unwrap_or(default))
    };
    let streams = arg(0, 10_000)?;
    let tokens = arg(1, 60)?;
    let token_ms = arg(2, 1000)?;
    server(streams, tokens, token_ms).await
}

async fn server(streams: u64, tokens: u64, token_ms: u64) -> anyhow::Result<()> {
    let tmp = TempDir::new()?;
    let words: Vec<String> = (0..tokens).map(|i| format!("word{i} ")).collect();
    let model = ScriptedModel::new("scripted")
        .always(Script::text(&words.concat()))
        .token_delay(Duration::from_millis(token_ms))
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
    let app = Application::build_with_models(config, Arc::new(source)).await?;
    let addr = app.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stop_rx.await;
    }));

    let http = reqwest::Client::new();
    let (token, conversations) = setup(&http, addr, streams).await?;
    let ids = tmp.path().join("conversations.txt");
    std::fs::write(&ids, conversations.join("\n"))?;

    let me = std::process::id().to_string();
    let (before, _) = memory_kib(&me);
    println!(
        "server on {addr}, {streams} conversations ready; resident memory {:.1} MiB",
        mib(before)
    );
    println!("opening {streams} streams ({tokens} tokens each, one every {token_ms} ms)...");

    let exe = std::env::current_exe()?;
    let mut child = std::process::Command::new(exe)
        .args(["client", &addr.to_string(), &token])
        .arg(&ids)
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().context("client stdout")?;

    // Sample the server's memory while the clients run.
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let peak = peak.clone();
        let me = me.clone();
        tokio::spawn(async move {
            loop {
                let (rss, _) = memory_kib(&me);
                peak.fetch_max(rss, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let lines = tokio::task::spawn_blocking(move || {
        let mut open_rss = None;
        let mut out = Vec::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("open") {
                open_rss = Some(memory_kib(&std::process::id().to_string()).0);
            }
            println!("client: {line}");
            out.push(line);
        }
        (open_rss, out)
    })
    .await?;
    let status = child.wait()?;
    sampler.abort();
    let (after, hwm) = memory_kib(&me);
    let (open_rss, lines) = lines;
    if !status.success() {
        bail!("the client process failed: {status}");
    }
    let open_rss = open_rss.context("the clients never had every stream open")?;
    let peak = peak.load(Ordering::Relaxed).max(open_rss);
    println!();
    println!(
        "| streams | before MiB | all open MiB | peak MiB (VmHWM) | per stream KiB | after MiB |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| {streams} | {:.1} | {:.1} | {:.1} ({:.1}) | {:.1} | {:.1} |",
        mib(before),
        mib(open_rss),
        mib(peak),
        mib(hwm),
        (open_rss.saturating_sub(before)) as f64 / streams as f64,
        mib(after),
    );
    for l in lines.iter().filter(|l| l.starts_with("done")) {
        println!("{l}");
    }
    let _ = stop_tx.send(());
    server.await??;
    Ok(())
}

/// A coach, a client, an agent and `n` conversations; returns the client's token and the ids.
async fn setup(
    http: &reqwest::Client,
    addr: SocketAddr,
    n: u64,
) -> anyhow::Result<(String, Vec<String>)> {
    let url = |p: &str| format!("http://{addr}{p}");
    let post = |path: String, token: Option<String>, body: Value| {
        let mut req = http.post(url(&path)).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move {
            let resp = req.send().await?;
            let status = resp.status();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            if !status.is_success() {
                bail!("POST {path}: {status} {body}");
            }
            anyhow::Ok(body)
        }
    };
    let login = |email: &'static str| async move {
        let r = post(
            "/api/v1/auth/login".into(),
            None,
            json!({"email": email, "password": PASSWORD}),
        )
        .await?;
        r["access_token"]
            .as_str()
            .map(str::to_owned)
            .context("no access token")
    };
    let admin = login(ADMIN).await?;
    let user = |email: &str, role: &str| json!({"email": email, "display_name": role, "role": role, "password": PASSWORD});
    post(
        "/api/v1/users".into(),
        Some(admin),
        user("coach@bench.test", "coach"),
    )
    .await?;
    let coach = login("coach@bench.test").await?;
    // Created by the coach: the client is the coach's.
    post(
        "/api/v1/users".into(),
        Some(coach.clone()),
        user("client@bench.test", "client"),
    )
    .await?;
    let client = login("client@bench.test").await?;
    let agent = post(
        "/api/v1/agents".into(),
        Some(coach),
        json!({"template": "sport-coach", "model": "scripted"}),
    )
    .await?;
    let agent = agent["id"].as_str().context("agent id")?.to_owned();

    let started = Instant::now();
    let mut ids = Vec::with_capacity(usize::try_from(n)?);
    let mut pending = futures_util::stream::FuturesUnordered::new();
    use futures_util::StreamExt;
    for i in 0..n {
        pending.push(post(
            "/api/v1/conversations".into(),
            Some(client.clone()),
            json!({"agent_id": agent, "title": format!("bench {i}")}),
        ));
        if pending.len() >= 32
            && let Some(r) = pending.next().await
        {
            ids.push(r?["id"].as_str().context("conversation id")?.to_owned());
        }
    }
    while let Some(r) = pending.next().await {
        ids.push(r?["id"].as_str().context("conversation id")?.to_owned());
    }
    println!(
        "created {n} conversations in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok((client, ids))
}

/// Client mode: one stream per conversation id; prints `open ...` once every stream has
/// received its first token (or failed), then `done ...`.
async fn client(args: &[String]) -> anyhow::Result<()> {
    let [addr, token, ids] = args else {
        bail!("usage: sse_bench client ADDR TOKEN IDS_FILE");
    };
    let ids: Vec<String> = std::fs::read_to_string(Path::new(ids))?
        .lines()
        .map(str::to_owned)
        .collect();
    let n = ids.len();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    let opening = Arc::new(Semaphore::new(OPENING));
    let open = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let tokens = Arc::new(AtomicU64::new(0));
    let all_open = Arc::new(tokio::sync::Notify::new());
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for id in ids {
        let permit = opening.clone().acquire_owned().await?;
        let (http, open, failed, tokens, all_open) = (
            http.clone(),
            open.clone(),
            failed.clone(),
            tokens.clone(),
            all_open.clone(),
        );
        let url = format!("http://{addr}/api/v1/conversations/{id}/messages");
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let mut permit = Some(permit);
            let mut opened = false;
            let check = |open: &AtomicUsize, failed: &AtomicUsize| {
                if open.load(Ordering::SeqCst) + failed.load(Ordering::SeqCst) == n {
                    all_open.notify_one();
                }
            };
            let result: anyhow::Result<u64> = async {
                let mut resp = http
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({"content": "How should I train this week?"}))
                    .send()
                    .await?;
                if !resp.status().is_success() {
                    bail!("{}", resp.status());
                }
                let mut got = 0u64;
                let mut done = false;
                while let Some(chunk) = resp.chunk().await? {
                    let text = String::from_utf8_lossy(&chunk);
                    let t = text.matches("event: token").count() as u64;
                    done |= text.contains("event: done");
                    if text.contains("event: error") {
                        bail!("error event: {text}");
                    }
                    got += t;
                    if t > 0 && !opened {
                        opened = true;
                        permit.take();
                        open.fetch_add(1, Ordering::SeqCst);
                        check(&open, &failed);
                    }
                }
                if !done {
                    bail!("the stream ended before `done`");
                }
                Ok(got)
            }
            .await;
            match result {
                Ok(t) => {
                    tokens.fetch_add(t, Ordering::Relaxed);
                    true
                }
                Err(e) => {
                    if !opened {
                        failed.fetch_add(1, Ordering::SeqCst);
                        check(&open, &failed);
                    }
                    eprintln!("stream {url}: {e:#}");
                    false
                }
            }
        }));
    }
    all_open.notified().await;
    println!(
        "open {} of {n} streams after {:.1} s ({} failed to open)",
        open.load(Ordering::SeqCst),
        started.elapsed().as_secs_f64(),
        failed.load(Ordering::SeqCst)
    );
    std::io::stdout().flush()?;
    let mut ok = 0usize;
    for t in tasks {
        if t.await? {
            ok += 1;
        }
    }
    println!(
        "done: {ok} of {n} streams complete, {} tokens received, {:.1} s in all",
        tokens.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
