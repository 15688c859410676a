//! The embedded embedding model: all-MiniLM-L6-v2 on the native encoder ([`super::bert`]),
//! mean pooling, L2-normalised, 384 dimensions, batched.
//!
//! Tokenisation is llama.cpp's WordPiece tokenizer, read (vocabulary only) from the GGUF that
//! `models pull` converts; the encoder runs the safetensors beside it. One worker thread owns
//! both and serves requests from a bounded queue, so calls never run side by side on the cores;
//! a batch is spread over `threads` threads by the encoder. Texts longer than 256 word pieces
//! are truncated, as sentence-transformers does.

use std::path::Path;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};

use async_trait::async_trait;
use coachlibre_core::model::{EmbeddingModel, ModelError};
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use tokio::sync::oneshot;

use super::bert::{Bert, Precision};

/// Longest input, in word pieces (sentence-transformers' `max_seq_length` for this model).
pub const MAX_TOKENS: usize = 256;
/// Requests waiting for the worker at most.
const QUEUE: usize = 32;

type Job = (
    Vec<String>,
    oneshot::Sender<Result<Vec<Vec<f32>>, ModelError>>,
);

/// all-MiniLM-L6-v2 (or another BERT in Hugging Face's layout) running in-process.
#[derive(Debug, Clone)]
pub struct EmbeddedEmbedder {
    name: String,
    dims: usize,
    precision: Precision,
    jobs: SyncSender<Job>,
}

impl EmbeddedEmbedder {
    /// Load the model whose GGUF is `gguf` (its vocabulary tokenises; `model.safetensors` and
    /// `config.json` beside it hold the encoder), with the precision
    /// [`Precision::from_env_or_best`] picks.
    pub fn load(name: &str, gguf: &Path, threads: i32) -> Result<Self, ModelError> {
        Self::load_with(name, gguf, threads, Precision::from_env_or_best())
    }

    /// [`load`](Self::load) with the products' precision chosen by the caller.
    pub fn load_with(
        name: &str,
        gguf: &Path,
        threads: i32,
        precision: Precision,
    ) -> Result<Self, ModelError> {
        if !gguf.exists() {
            return Err(ModelError::NotConfigured(format!(
                "{} is missing: run `coachlibre models pull`",
                gguf.display()
            )));
        }
        let dir = gguf.parent().unwrap_or(Path::new("."));
        let bert = Bert::load(dir, precision)
            .map_err(|e| ModelError::NotConfigured(format!("{}: {e}", dir.display())))?;
        let vocab = LlamaModel::load_from_file(
            super::chat::backend()?,
            gguf,
            &LlamaModelParams::default().with_vocab_only(true),
        )
        .map_err(|e| ModelError::NotConfigured(format!("loading {}: {e}", gguf.display())))?;
        let dims = bert.dimensions();
        let threads = usize::try_from(threads).unwrap_or(1).max(1);
        let (jobs, rx) = sync_channel::<Job>(QUEUE);
        std::thread::Builder::new()
            .name(format!("embed-{name}"))
            .spawn(move || worker(&bert, &vocab, threads, &rx))
            .map_err(|e| ModelError::NotConfigured(format!("embedding thread: {e}")))?;
        Ok(Self {
            name: name.to_owned(),
            dims,
            precision,
            jobs,
        })
    }

    /// How the encoder's matrix products run.
    pub fn precision(&self) -> Precision {
        self.precision
    }
}

fn worker(bert: &Bert, vocab: &LlamaModel, threads: usize, rx: &std::sync::mpsc::Receiver<Job>) {
    let max = MAX_TOKENS.min(bert.max_positions());
    while let Ok((texts, reply)) = rx.recv() {
        let vocab = vocab.vocab();
        let seqs: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| {
                let mut toks: Vec<u32> = vocab
                    .tokenize(t.as_bytes(), true, false)
                    .into_iter()
                    .map(|t| u32::try_from(t.0).unwrap_or(0))
                    .collect();
                if toks.len() > max {
                    // Keep [CLS] … and the final [SEP].
                    let sep = toks[toks.len() - 1];
                    toks.truncate(max - 1);
                    toks.push(sep);
                }
                toks
            })
            .collect();
        let _ = reply.send(Ok(bert.embed(&seqs, threads)));
    }
}

#[async_trait]
impl EmbeddingModel for EmbeddedEmbedder {
    fn name(&self) -> &str {
        &self.name
    }

    fn dimensions(&self) -> usize {
        self.dims
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ModelError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let (tx, rx) = oneshot::channel();
        match self.jobs.try_send((texts.to_vec(), tx)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(ModelError::Unavailable(format!(
                    "{} is busy: {QUEUE} requests already waiting",
                    self.name
                )));
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(ModelError::Unavailable(
                    "the embedding worker stopped".into(),
                ));
            }
        }
        rx.await
            .map_err(|_| ModelError::Unavailable("the embedding worker stopped".into()))?
    }
}
