//! No-op job throughput (enqueue to done) and latency, the peer being `bench/jobs_celery.py`.
//!
//! ```sh
//! cargo run --release -p coachlibre-jobs --example queue_bench -- [JOBS] [DATABASE_URL]
//! ```
//!
//! JOBS defaults to 20000; DATABASE_URL to a fresh SQLite file (`synchronous = FULL`, as in
//! production). One worker with the default settings (32 jobs at once; the environment
//! variable `CONCURRENCY` changes it) runs in this process on two runtime threads. Three measurements:
//! - one producer enqueueing jobs one by one (each enqueue its own committed transaction, as
//!   Celery's `delay()` is one message), timed from the first enqueue to the last job done;
//! - the same with 16 producers at once, each enqueueing one job at a time (on SQLite, enqueues
//!   made at the same time share a commit);
//! - the same jobs enqueued in batches of 500 (one transaction each);
//! - latency: one job at a time, from enqueue to its outcome being committed (500 samples).

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use coachlibre_core::ids::TenantId;
use coachlibre_core::job::NewJob;
use coachlibre_core::store::Store;
use coachlibre_core::tenant::{Tenant, TenantSlug};
use coachlibre_jobs::worker::{Worker, WorkerConfig};
use coachlibre_jobs::{JobEvent, JobEventKind, Jobs, Registry};
use coachlibre_store::{ConnectOptions, SqlStore};
use coachlibre_testkit::TempDir;
use tokio::sync::broadcast;

const KIND: &str = coachlibre_jobs::handlers::PROBE;
/// Concurrent producers in the second measurement.
const PRODUCERS: usize = 16;

/// Wait until `n` jobs have finished, counting events (a lagging receiver counts the events
/// it skipped: each is one finish).
async fn finished(rx: &mut broadcast::Receiver<JobEvent>, n: usize) -> anyhow::Result<()> {
    let mut seen = 0;
    while seen < n {
        match rx.recv().await {
            Ok(e) if matches!(e.kind, JobEventKind::Finished { .. }) => seen += 1,
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(k)) => seen += usize::try_from(k)?,
            Err(e) => anyhow::bail!("event stream ended: {e}"),
        }
    }
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn job(tenant: TenantId) -> NewJob {
    NewJob::new(tenant, KIND, serde_json::json!({}))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(20_000);
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
    let slug = format!("bench{}", &uuid_tail());
    let tenant = Tenant::new(TenantSlug::parse(&slug)?, "Bench")?;
    store.insert_tenant(&tenant).await?;
    let jobs = Jobs::new(store.clone(), Registry::builtin());
    let mut events = jobs.subscribe();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(
        Worker::new(
            jobs.clone(),
            WorkerConfig {
                concurrency: match std::env::var("CONCURRENCY") {
                    Ok(v) => v.parse()?,
                    Err(_) => WorkerConfig::default().concurrency,
                },
                ..WorkerConfig::default()
            },
        )
        .run(async {
            let _ = stopped.await;
        }),
    );

    // Warm-up.
    for _ in 0..200 {
        jobs.enqueue(job(tenant.id)).await?;
    }
    finished(&mut events, 200).await?;

    println!("| engine | measurement | jobs | seconds | jobs/s |");
    println!("|---|---|---|---|---|");
    let start = Instant::now();
    for _ in 0..n {
        jobs.enqueue(job(tenant.id)).await?;
    }
    finished(&mut events, n).await?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "| {engine} | enqueued one by one, to done | {n} | {secs:.2} | {:.0} |",
        n as f64 / secs
    );

    // Many producers at once, each enqueueing one job at a time, as API calls and webhooks
    // arrive on a server.
    let start = Instant::now();
    let mut producers = tokio::task::JoinSet::new();
    for p in 0..PRODUCERS {
        let (jobs, tenant) = (jobs.clone(), tenant.id);
        producers.spawn(async move {
            for _ in (p..n).step_by(PRODUCERS) {
                jobs.enqueue(job(tenant)).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = producers.join_next().await {
        done??;
    }
    finished(&mut events, n).await?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "| {engine} | enqueued one by one by {PRODUCERS} producers, to done | {n} | {secs:.2} | {:.0} |",
        n as f64 / secs
    );

    let start = Instant::now();
    let batch: Vec<NewJob> = (0..500).map(|_| job(tenant.id)).collect();
    for _ in 0..n / 500 {
        jobs.enqueue_many(&batch).await?;
    }
    let m = (n / 500) * 500;
    finished(&mut events, m).await?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "| {engine} | enqueued by 500, to done | {m} | {secs:.2} | {:.0} |",
        m as f64 / secs
    );

    let mut lat = Vec::with_capacity(500);
    for _ in 0..500 {
        let t = Instant::now();
        jobs.enqueue(job(tenant.id)).await?;
        finished(&mut events, 1).await?;
        lat.push(t.elapsed());
    }
    lat.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "\n{engine} latency, enqueue to done (ms, 500 jobs one at a time): p50 {:.2}, p90 {:.2}, p99 {:.2}, max {:.2}",
        ms(percentile(&lat, 50.0)),
        ms(percentile(&lat, 90.0)),
        ms(percentile(&lat, 99.0)),
        ms(lat.last().copied().unwrap_or_default())
    );
    let _ = stop.send(());
    worker.await?;
    sql.close().await;
    Ok(())
}

fn uuid_tail() -> String {
    let id = coachlibre_core::ids::JobId::generate().to_string();
    id[id.len() - 8..].to_owned()
}
