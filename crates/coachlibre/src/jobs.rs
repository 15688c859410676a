//! `coachlibre jobs`: the operator's view of the queue.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use coachlibre_core::accounts::{Accounts, By};
use coachlibre_core::ids::JobId;
use coachlibre_core::job::{Job, JobFilter, JobStatus, NewJob};
use coachlibre_core::page::{MAX_LIMIT, PageRequest};
use coachlibre_core::store::Store;
use coachlibre_jobs::Jobs;

use crate::cli::TenantArg;

#[derive(Debug, Subcommand)]
pub enum JobsCmd {
    /// Jobs of a tenant, newest first, with the count per status.
    List {
        #[command(flatten)]
        tenant: TenantArg,
        /// queued, running, succeeded, failed or cancelled.
        #[arg(long)]
        status: Option<JobStatus>,
        /// Only this kind.
        #[arg(long)]
        kind: Option<String>,
        /// How many to show.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// One job in full (JSON).
    Show {
        #[command(flatten)]
        tenant: TenantArg,
        id: JobId,
    },
    /// Queue a failed or cancelled job again with fresh attempts.
    Retry {
        #[command(flatten)]
        tenant: TenantArg,
        id: JobId,
    },
    /// Cancel a queued or running job.
    Cancel {
        #[command(flatten)]
        tenant: TenantArg,
        id: JobId,
    },
    /// Enqueue a job, e.g. `coachlibre jobs enqueue system.probe --payload '{"sleep_ms":3000,"steps":30}' --wait`.
    Enqueue {
        #[command(flatten)]
        tenant: TenantArg,
        kind: String,
        /// JSON payload.
        #[arg(long, default_value = "{}")]
        payload: String,
        /// Idempotency key: a second enqueue with it returns the first job.
        #[arg(long)]
        key: Option<String>,
        /// Follow the job with a progress bar until it ends (a worker must be running:
        /// `serve` or `worker`).
        #[arg(long)]
        wait: bool,
    },
}

pub async fn run(
    config: &coachlibre_server::config::Config,
    accounts: &Accounts,
    store: Arc<dyn Store>,
    cmd: JobsCmd,
) -> anyhow::Result<()> {
    // The same kinds as the workers know (the handlers are not run from here).
    let models = Arc::new(coachlibre_server::models::ConfiguredModels::new(
        config.model_registry(),
        config.agents.embedding_model.clone(),
    ));
    let (registry, _) = coachlibre_server::standalone_registry(config, store.clone(), models);
    let jobs = Jobs::new(store, registry);
    match cmd {
        JobsCmd::List {
            tenant,
            status,
            kind,
            limit,
        } => {
            let t = tenant.find(accounts).await?;
            let by = By::Operator(t.id);
            let counts = jobs.counts(by).await?;
            let summary: Vec<String> = counts.iter().map(|(s, n)| format!("{s} {n}")).collect();
            println!("{}", summary.join(" · "));
            let filter = JobFilter {
                status,
                kind,
                created_by: None,
            };
            let page = PageRequest {
                limit: limit.clamp(1, MAX_LIMIT),
                cursor: None,
            };
            let page = jobs.list(by, filter, &page).await?;
            println!(
                "{:<36} {:<20} {:<9} {:>8} {:<20} ERROR",
                "ID", "KIND", "STATUS", "ATTEMPTS", "RUN AT (UTC)"
            );
            for j in &page.items {
                println!(
                    "{:<36} {:<20} {:<9} {:>8} {:<20} {}",
                    j.id,
                    j.kind,
                    j.status,
                    format!("{}/{}", j.attempts, j.max_attempts),
                    j.run_at.format("%Y-%m-%d %H:%M:%S"),
                    j.last_error.as_deref().unwrap_or("")
                );
            }
            if page.next_cursor.is_some() {
                println!("(more: raise --limit or filter by --status/--kind)");
            }
        }
        JobsCmd::Show { tenant, id } => {
            let t = tenant.find(accounts).await?;
            let job = jobs.get(By::Operator(t.id), id).await?;
            println!("{}", serde_json::to_string_pretty(&job)?);
        }
        JobsCmd::Retry { tenant, id } => {
            let t = tenant.find(accounts).await?;
            let job = jobs.retry(By::Operator(t.id), id).await?;
            println!("{} is {} again", job.id, job.status);
        }
        JobsCmd::Cancel { tenant, id } => {
            let t = tenant.find(accounts).await?;
            let job = jobs.cancel(By::Operator(t.id), id).await?;
            println!("{} is {}", job.id, job.status);
        }
        JobsCmd::Enqueue {
            tenant,
            kind,
            payload,
            key,
            wait,
        } => {
            let t = tenant.find(accounts).await?;
            let payload: serde_json::Value =
                serde_json::from_str(&payload).context("--payload is not valid JSON")?;
            let mut job = NewJob::new(t.id, &kind, payload);
            if let Some(k) = key {
                job = job.key(k);
            }
            let (job, created) = jobs.submit(By::Operator(t.id), job).await?;
            if created {
                println!("enqueued {} ({})", job.id, job.kind);
            } else {
                println!(
                    "already enqueued with this key: {} ({})",
                    job.id, job.status
                );
            }
            if wait {
                let job = follow(&jobs, job).await?;
                println!("{} {}", job.id, job.status);
                if let Some(r) = &job.result {
                    println!("{r}");
                }
                if job.status != JobStatus::Succeeded {
                    anyhow::bail!(
                        "the job ended {}: {}",
                        job.status,
                        job.last_error.as_deref().unwrap_or("no error recorded")
                    );
                }
            }
        }
    }
    Ok(())
}

/// Poll a job until it ends, showing its progress.
async fn follow(jobs: &Jobs, mut job: Job) -> anyhow::Result<Job> {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(120));
    let mut styled = false;
    let started = std::time::Instant::now();
    while !job.status.is_final() {
        match (&job.progress, job.status) {
            (Some(p), _) => {
                if let Some(total) = p.total {
                    if !styled {
                        if let Ok(style) = indicatif::ProgressStyle::with_template(
                            "{msg} [{bar:30}] {pos}/{len} eta {eta}",
                        ) {
                            bar.set_style(style.progress_chars("=> "));
                        }
                        styled = true;
                    }
                    bar.set_length(total);
                    bar.set_position(p.done);
                }
                bar.set_message(p.message.clone());
            }
            (None, JobStatus::Queued) if started.elapsed() > Duration::from_secs(5) => {
                bar.set_message(
                    "queued: is a worker running (`coachlibre serve` or `coachlibre worker`)?",
                );
            }
            (None, status) => bar.set_message(status.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        job = jobs
            .store()
            .get_job(job.tenant_id, job.id)
            .await?
            .context("the job disappeared")?;
    }
    bar.finish_and_clear();
    Ok(job)
}
