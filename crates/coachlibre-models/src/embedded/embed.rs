//! The embedded embedding model: all-MiniLM-L6-v2 through llama.cpp's BERT, from the GGUF that
//! `models pull` converts. Mean pooling, L2-normalised, 384 dimensions, batched.
//!
//! One worker thread owns the model and a single llama.cpp context for its whole life (the
//! context borrows the model, so both live in the thread's frame), and serves requests from a
//! bounded queue: no context is created per call, and calls never run side by side on the
//! cores. Texts longer than 256 word pieces are truncated, as sentence-transformers does.

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};

use async_trait::async_trait;
use coachlibre_core::model::{EmbeddingModel, ModelError};
use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use tokio::sync::oneshot;

/// Longest input, in word pieces (sentence-transformers' `max_seq_length` for this model).
pub const MAX_TOKENS: usize = 256;
/// Tokens decoded at once: a batch of texts is split so each decode stays under this.
/// llama.cpp attends over every token of a decode (masking other sequences), so large decodes
/// cost attention quadratic in the batch; 256 measured best (docs/benchmarks.md).
const BATCH_TOKENS: usize = 256;
// Every (truncated) text fits in one decode, so each decode takes at least one text.
const _: () = assert!(MAX_TOKENS <= BATCH_TOKENS);
/// Texts per decode at most.
const MAX_SEQS: usize = 64;
/// Requests waiting for the worker at most.
const QUEUE: usize = 32;

type Job = (
    Vec<String>,
    oneshot::Sender<Result<Vec<Vec<f32>>, ModelError>>,
);

/// all-MiniLM-L6-v2 (or another BERT GGUF) running in-process.
#[derive(Debug, Clone)]
pub struct EmbeddedEmbedder {
    name: String,
    dims: usize,
    jobs: SyncSender<Job>,
}

impl EmbeddedEmbedder {
    /// Load the GGUF and start the worker thread.
    pub fn load(name: &str, gguf: &Path, threads: i32) -> Result<Self, ModelError> {
        if !gguf.exists() {
            return Err(ModelError::NotConfigured(format!(
                "{} is missing: run `coachlibre models pull`",
                gguf.display()
            )));
        }
        let model =
            LlamaModel::load_from_file(super::chat::backend()?, gguf, &LlamaModelParams::default())
                .map_err(|e| {
                    ModelError::NotConfigured(format!("loading {}: {e}", gguf.display()))
                })?;
        let dims = usize::try_from(model.n_embd()).unwrap_or(0);
        let (jobs, rx) = sync_channel::<Job>(QUEUE);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name(format!("embed-{name}"))
            .spawn(move || worker(model, threads, rx, ready_tx))
            .map_err(|e| ModelError::NotConfigured(format!("embedding thread: {e}")))?;
        ready_rx.recv().map_err(|_| {
            ModelError::NotConfigured("the embedding worker did not start".into())
        })??;
        Ok(Self {
            name: name.to_owned(),
            dims,
            jobs,
        })
    }
}

fn worker(
    model: LlamaModel,
    threads: i32,
    rx: std::sync::mpsc::Receiver<Job>,
    ready: std::sync::mpsc::Sender<Result<(), ModelError>>,
) {
    let params = LlamaContextParams::default()
        .with_embeddings(true)
        .with_pooling_type(LlamaPoolingType::Mean)
        .with_n_ctx(NonZeroU32::new(BATCH_TOKENS as u32))
        .with_n_batch(BATCH_TOKENS as u32)
        .with_n_ubatch(BATCH_TOKENS as u32)
        .with_n_seq_max(MAX_SEQS as u32)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let backend = match super::chat::backend() {
        Ok(b) => b,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let mut ctx = match model.new_context(backend, params) {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(ModelError::NotConfigured(format!(
                "embedding context: {e}"
            ))));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let vocab = model.vocab();
    let mut batch = LlamaBatch::new(BATCH_TOKENS, MAX_SEQS as i32);
    while let Ok((texts, reply)) = rx.recv() {
        let result = (|| {
            let tokenized: Vec<Vec<_>> = texts
                .iter()
                .map(|t| {
                    let mut toks = vocab.tokenize(t.as_bytes(), true, false);
                    if toks.len() > MAX_TOKENS {
                        // Keep [CLS] … and the final [SEP].
                        let sep = toks[toks.len() - 1];
                        toks.truncate(MAX_TOKENS - 1);
                        toks.push(sep);
                    }
                    toks
                })
                .collect();
            let mut out = Vec::with_capacity(texts.len());
            let mut i = 0;
            while i < tokenized.len() {
                batch.clear();
                ctx.clear_kv_cache();
                let (mut used, start) = (0, i);
                while i < tokenized.len()
                    && i - start < MAX_SEQS
                    && used + tokenized[i].len() <= BATCH_TOKENS
                {
                    let seq = i32::try_from(i - start).unwrap_or(0);
                    for (pos, t) in tokenized[i].iter().enumerate() {
                        batch
                            .add(*t, i32::try_from(pos).unwrap_or(0), &[seq], true)
                            .map_err(|e| {
                                ModelError::Unavailable(format!("embedding batch: {e}"))
                            })?;
                    }
                    used += tokenized[i].len();
                    i += 1;
                }
                ctx.encode(&mut batch)
                    .map_err(|e| ModelError::Unavailable(format!("embedding encode: {e}")))?;
                for seq in 0..(i - start) {
                    let v = ctx
                        .embeddings_seq_ith(i32::try_from(seq).unwrap_or(0))
                        .map_err(|e| ModelError::Unavailable(format!("embedding output: {e}")))?;
                    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                    out.push(v.iter().map(|x| x / norm).collect());
                }
            }
            Ok(out)
        })();
        let _ = reply.send(result);
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
