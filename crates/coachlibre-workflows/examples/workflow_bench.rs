//! Workflow runs per second and the overhead of a step, without any model: a three-step
//! workflow (transform → aggregate → condition) started through the service (a run row and a
//! job each) and executed by one worker in this process, as `serve` runs it.
//!
//! ```sh
//! cargo run --release -p coachlibre-workflows --example workflow_bench -- [RUNS] [DATABASE_URL]
//! ```
//!
//! RUNS defaults to 2000; DATABASE_URL to a fresh SQLite file. Peer figure: n8n publishes
//! about 220 workflow executions per second for one instance (not measured here: n8n is not
//! installed on this machine).

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use coachlibre_core::accounts::By;
use coachlibre_core::store::Store;
use coachlibre_core::tenant::{Tenant, TenantSlug};
use coachlibre_core::user::Role;
use coachlibre_jobs::worker::{Worker, WorkerConfig};
use coachlibre_jobs::{JobEvent, JobEventKind, Jobs, Registry};
use coachlibre_skills::Catalog;
use coachlibre_store::{ConnectOptions, SqlStore};
use coachlibre_testkit::TempDir;
use coachlibre_testkit::people::{actor, person};
use coachlibre_testkit::scripted::ScriptedSource;
use coachlibre_workflows::{RUN, RunWorkflow, Workflows};
use serde_json::json;
use tokio::sync::broadcast;

/// Wait for `k` jobs to finish (a lagging receiver counts what it skipped).
async fn finished(events: &mut broadcast::Receiver<JobEvent>, k: usize) {
    let mut seen = 0;
    while seen < k {
        match events.recv().await {
            Ok(e) if matches!(e.kind, JobEventKind::Finished { .. }) => seen += 1,
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(m)) => {
                seen += usize::try_from(m).unwrap_or(0);
            }
            Err(_) => break,
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(2000);
    let tmp = TempDir::new()?;
    let url = args
        .next()
        .unwrap_or_else(|| format!("sqlite://{}", tmp.path().join("bench.db").display()));
    let engine = if url.starts_with("postgres") {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    let sql = SqlStore::connect(&url, &ConnectOptions::default()).await?;
    sql.migrate().await?;
    let store: Arc<dyn Store> = Arc::new(sql.clone());
    let id = coachlibre_core::ids::JobId::generate().to_string();
    let slug = format!("wf{}", &id[id.len() - 8..]);
    let tenant = Tenant::new(TenantSlug::parse(&slug)?, "Bench")?;
    store.insert_tenant(&tenant).await?;
    let admin = person(tenant.id, &format!("admin@{slug}.test"), Role::Admin);
    store.insert_user(&admin).await?;
    let admin = actor(&admin);
    let catalog = Catalog::new(store.clone(), Arc::new(ScriptedSource::new()), "none");
    let mut registry = Registry::builtin();
    registry.register(RUN, Arc::new(RunWorkflow::new(catalog.clone())));
    let jobs = Jobs::new(store.clone(), registry);
    let workflows = Workflows::new(store.clone(), jobs.clone(), catalog);
    workflows
        .save(
            By::Actor(&admin),
            json!({"name": "three", "steps": [
                {"id": "shape", "kind": "transform", "value": {"n": "{{input.n}}"}},
                {"id": "say", "kind": "aggregate", "template": "n={{steps.shape.n}}",
                 "needs": ["shape"]},
                {"id": "check", "kind": "condition", "path": "steps.shape.n", "equals": 1,
                 "needs": ["say"]}
            ]}),
        )
        .await?;
    let mut events = jobs.subscribe();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(
        Worker::new(jobs.clone(), WorkerConfig::default()).run(async {
            let _ = stopped.await;
        }),
    );
    // Warm-up.
    for i in 0..100 {
        workflows
            .start(By::Actor(&admin), "three", json!({"n": i}), "bench")
            .await?;
    }
    finished(&mut events, 100).await;

    let t = Instant::now();
    for i in 0..n {
        workflows
            .start(By::Actor(&admin), "three", json!({"n": i}), "bench")
            .await?;
    }
    finished(&mut events, n).await;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{engine}: {n} runs of a 3-step workflow, started one by one, done in {secs:.2} s: \
         {:.0} runs/s ({:.0} steps/s)",
        n as f64 / secs,
        3.0 * n as f64 / secs
    );

    // Runs started by many clients at once, as webhooks and API calls arrive on a server.
    let clients = std::env::var("CLIENTS")
        .ok()
        .map(|c| c.parse())
        .transpose()?
        .unwrap_or(16usize);
    let t = Instant::now();
    let mut starters = tokio::task::JoinSet::new();
    for c in 0..clients {
        let (workflows, admin) = (workflows.clone(), admin.clone());
        starters.spawn(async move {
            for i in (c..n).step_by(clients) {
                workflows
                    .start(By::Actor(&admin), "three", json!({"n": i}), "bench")
                    .await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = starters.join_next().await {
        done??;
    }
    finished(&mut events, n).await;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{engine}: {n} runs of a 3-step workflow, started by {clients} clients at once, done in \
         {secs:.2} s: {:.0} runs/s ({:.0} steps/s)",
        n as f64 / secs,
        3.0 * n as f64 / secs
    );

    // One run at a time on an idle queue: what a run costs end to end.
    let mut lat = Vec::new();
    for i in 0..200 {
        let t = Instant::now();
        workflows
            .start(By::Actor(&admin), "three", json!({"n": i}), "bench")
            .await?;
        finished(&mut events, 1).await;
        lat.push(t.elapsed());
    }
    lat.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p50 = lat[lat.len() / 2];
    println!(
        "{engine}: one run at a time, start to done: p50 {:.2} ms, p99 {:.2} ms \
         ({:.2} ms per step at p50)",
        ms(p50),
        ms(lat[lat.len() * 99 / 100]),
        ms(p50) / 3.0
    );
    let _ = stop.send(());
    worker.await?;
    sql.close().await;
    Ok(())
}
