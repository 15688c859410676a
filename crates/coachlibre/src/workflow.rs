//! `coachlibre workflow list|run`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use coachlibre_core::accounts::{Accounts, By};
use coachlibre_core::store::Store;
use coachlibre_core::workflow::RunStatus;
use coachlibre_jobs::Jobs;
use coachlibre_workflows::Workflows;

use crate::cli::TenantArg;

#[derive(Debug, Subcommand)]
pub enum WorkflowCmd {
    /// The tenant's workflows (latest versions).
    List {
        #[command(flatten)]
        tenant: TenantArg,
    },
    /// Save a definition from a JSON file (a new version when the name exists).
    Save {
        #[command(flatten)]
        tenant: TenantArg,
        file: std::path::PathBuf,
    },
    /// Start a run and follow it with a progress bar until it ends (a worker must be running:
    /// `serve` or `worker`).
    Run {
        #[command(flatten)]
        tenant: TenantArg,
        name: String,
        /// JSON input (`{{input.*}}` in the steps).
        #[arg(long, default_value = "{}")]
        input: String,
        /// Start it and return at once.
        #[arg(long)]
        no_wait: bool,
    },
}

pub async fn run(
    config: &coachlibre_server::config::Config,
    accounts: &Accounts,
    store: Arc<dyn Store>,
    cmd: WorkflowCmd,
) -> anyhow::Result<()> {
    let models = Arc::new(coachlibre_server::models::ConfiguredModels::new(
        config.model_registry(),
        config.agents.embedding_model.clone(),
    ));
    let (registry, catalog) = coachlibre_server::standalone_registry(config, store.clone(), models);
    let jobs = Jobs::new(store.clone(), registry);
    let workflows = Workflows::new(store, jobs, catalog);
    match cmd {
        WorkflowCmd::List { tenant } => {
            let t = tenant.find(accounts).await?;
            println!("{:<32} {:>7} {:>6} DESCRIPTION", "NAME", "VERSION", "STEPS");
            for w in workflows.list(By::Operator(t.id)).await? {
                let steps = w.definition["steps"].as_array().map_or(0, Vec::len);
                let description = w.definition["description"].as_str().unwrap_or("");
                println!("{:<32} {:>7} {:>6} {description}", w.name, w.version, steps);
            }
        }
        WorkflowCmd::Save { tenant, file } => {
            let t = tenant.find(accounts).await?;
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let definition: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", file.display()))?;
            let w = workflows.save(By::Operator(t.id), definition).await?;
            println!("saved {} version {}", w.name, w.version);
        }
        WorkflowCmd::Run {
            tenant,
            name,
            input,
            no_wait,
        } => {
            let t = tenant.find(accounts).await?;
            let by = By::Operator(t.id);
            let input: serde_json::Value =
                serde_json::from_str(&input).context("--input is not valid JSON")?;
            let run = workflows.start(by, &name, input, "cli").await?;
            println!(
                "started run {} of {} v{}",
                run.id, run.workflow, run.version
            );
            if no_wait {
                return Ok(());
            }
            let total = run.definition["steps"].as_array().map_or(0, Vec::len);
            let bar = indicatif::ProgressBar::new(u64::try_from(total).unwrap_or(0));
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {pos}/{len} steps {elapsed}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            let started = std::time::Instant::now();
            let run = loop {
                let r = workflows.run(by, run.id).await?;
                let done = r
                    .steps
                    .values()
                    .filter(|s| s.status.is_some_and(RunStatus::is_final))
                    .count();
                bar.set_position(u64::try_from(done).unwrap_or(0));
                bar.set_message(
                    if r.status == RunStatus::Pending && started.elapsed() > Duration::from_secs(5)
                    {
                        "waiting: is a worker running (`coachlibre serve` or `coachlibre worker`)?"
                            .to_owned()
                    } else {
                        r.status.as_str().to_owned()
                    },
                );
                if r.status.is_final() {
                    break r;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            };
            bar.finish_and_clear();
            println!("run {} {}", run.id, run.status.as_str());
            for (id, s) in &run.steps {
                println!(
                    "  {id:<24} {:<10} attempts {} {}",
                    s.status.map_or("-", RunStatus::as_str),
                    s.attempts,
                    s.error.as_deref().unwrap_or("")
                );
            }
            if run.status != RunStatus::Succeeded {
                anyhow::bail!("the run {}", run.status.as_str());
            }
        }
    }
    Ok(())
}
