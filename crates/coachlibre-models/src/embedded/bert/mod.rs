//! A BERT encoder for sentence embeddings (all-MiniLM-L6-v2), run natively on the CPU from the
//! Hugging Face safetensors.
//!
//! Why not llama.cpp's BERT: it attends over every token of a decode (other sequences masked
//! out), so a batch packed into one decode pays attention quadratic in the batch, and its f32
//! matrix products leave the CPU's integer dot-product instructions unused. Here each sequence
//! attends only to itself, the six layers' matrix products run on 16-bit integer weights (one
//! scale per output) and activations (one scale per token) with AVX-512 VNNI ([`kernels`]),
//! and a batch is split across threads by sequence, so threads never wait on each other inside
//! a layer. On CPUs without VNNI the same encoder runs its products in f32.
//!
//! Layer by layer it is the standard post-norm BERT: embeddings (word + position + token type
//! 0) and LayerNorm; then per layer fused Q/K/V, softmax attention per head, output projection,
//! residual and LayerNorm, the GELU (erf) feed-forward, residual and LayerNorm. Pooling is the
//! mean over the sequence's tokens, then L2 normalisation (sentence-transformers' pipeline).

pub mod kernels;
mod math;

use std::path::Path;

use kernels::{F32Matrix, Layout, QuantMatrix, QuantRows};

use super::gguf::{Tensor, read_config, read_safetensors};

/// How the encoder's matrix products run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// 12-bit integer weights and activations on AMX tiles (four 8-bit tile products per
    /// 12-bit product, exact); the default where the CPU has AMX.
    Amx,
    /// The same 12-bit integer products as 16-bit integers with AVX-512 VNNI; the default
    /// where the CPU has VNNI but not AMX.
    Int16,
    /// f32 throughout: the exact reference, and the path on CPUs without VNNI.
    F32,
}

impl Precision {
    /// Whether the running CPU can run this precision's kernel (f32 runs everywhere).
    pub fn available(self) -> bool {
        match self {
            Self::Amx => kernels::amx_available(),
            Self::Int16 => kernels::vnni_available(),
            Self::F32 => true,
        }
    }

    /// The precision `COACHLIBRE_EMBEDDING_PRECISION` (`amx`, `int16`, `f32`) names, when the
    /// CPU can run it (an operator's override, e.g. to leave AMX aside); otherwise
    /// [`best_available`](Self::best_available).
    pub fn from_env_or_best() -> Self {
        let named = std::env::var("COACHLIBRE_EMBEDDING_PRECISION").ok();
        match named.as_deref().map(str::trim) {
            Some("amx") if Self::Amx.available() => Self::Amx,
            Some("int16") if Self::Int16.available() => Self::Int16,
            Some("f32") => Self::F32,
            Some(other) => {
                tracing::warn!(
                    precision = other,
                    "COACHLIBRE_EMBEDDING_PRECISION is not amx, int16 or f32 this CPU can run; using the best available"
                );
                Self::best_available()
            }
            None => Self::best_available(),
        }
    }

    /// AMX, else Int16 (VNNI), when the running CPU has the instructions, f32 otherwise.
    pub fn best_available() -> Self {
        if kernels::amx_available() {
            Self::Amx
        } else if kernels::vnni_available() {
            Self::Int16
        } else {
            Self::F32
        }
    }
}

/// Why the encoder could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("loading the embedding model: {0}")]
pub struct LoadError(String);

fn err(m: impl Into<String>) -> LoadError {
    LoadError(m.into())
}

#[derive(Debug)]
enum Linear {
    Quant(QuantMatrix),
    F32(F32Matrix),
}

impl Linear {
    fn new(
        weight: &[f32],
        bias: &[f32],
        outputs: usize,
        inputs: usize,
        precision: Precision,
    ) -> Result<Self, LoadError> {
        let quant = |layout| QuantMatrix::new(weight, bias, outputs, inputs, layout);
        let quant = match precision {
            // A shape the tiles cannot take falls back to pairs, then to f32.
            Precision::Amx => quant(Layout::Tiles).or_else(|| quant(Layout::Pairs)),
            Precision::Int16 => quant(Layout::Pairs),
            Precision::F32 => None,
        };
        quant
            .map(Self::Quant)
            .or_else(|| F32Matrix::new(weight, bias, outputs, inputs).map(Self::F32))
            .ok_or_else(|| err(format!("a {outputs}×{inputs} matrix has the wrong size")))
    }

    fn outputs(&self) -> usize {
        match self {
            Self::Quant(m) => m.outputs(),
            Self::F32(m) => m.outputs(),
        }
    }

    /// `out = x · wᵀ + b`; `q` is scratch space for the quantised rows.
    fn apply(&self, x: &[f32], out: &mut [f32], q: &mut QuantRows) {
        match self {
            Self::Quant(m) => {
                q.quantise(x, m);
                kernels::matmul_quant(q, m, out);
            }
            Self::F32(m) => m.matmul(x, out),
        }
    }
}

#[derive(Debug)]
struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

#[derive(Debug)]
struct Layer {
    qkv: Linear,
    out: Linear,
    attn_norm: Norm,
    up: Linear,
    down: Linear,
    out_norm: Norm,
}

/// The loaded encoder. Immutable once built, so threads share it.
#[derive(Debug)]
pub struct Bert {
    hidden: usize,
    heads: usize,
    intermediate: usize,
    eps: f32,
    vocab: usize,
    max_positions: usize,
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    embed_norm: Norm,
    layers: Vec<Layer>,
    precision: Precision,
}

struct Weights(std::collections::BTreeMap<String, Tensor>);

impl Weights {
    fn get(&self, name: &str, shape: &[usize]) -> Result<&[f32], LoadError> {
        let t = self
            .0
            .get(name)
            .or_else(|| self.0.get(&format!("bert.{name}")))
            .ok_or_else(|| err(format!("model.safetensors lacks {name}")))?;
        if t.shape != shape {
            return Err(err(format!(
                "{name} has shape {:?}, expected {shape:?}",
                t.shape
            )));
        }
        Ok(&t.data)
    }

    fn norm(&self, prefix: &str, hidden: usize) -> Result<Norm, LoadError> {
        Ok(Norm {
            gamma: self.get(&format!("{prefix}.weight"), &[hidden])?.to_vec(),
            beta: self.get(&format!("{prefix}.bias"), &[hidden])?.to_vec(),
        })
    }
}

impl Bert {
    /// Load `config.json` and `model.safetensors` from a Hugging Face model directory.
    pub fn load(dir: &Path, precision: Precision) -> Result<Self, LoadError> {
        let cfg = read_config(dir).map_err(err)?;
        let n = |k: &str| {
            cfg[k]
                .as_u64()
                .and_then(|v| usize::try_from(v).ok())
                .filter(|&v| v > 0)
                .ok_or_else(|| err(format!("config.json lacks {k}")))
        };
        let (hidden, heads, layers, intermediate) = (
            n("hidden_size")?,
            n("num_attention_heads")?,
            n("num_hidden_layers")?,
            n("intermediate_size")?,
        );
        let (vocab, max_positions) = (n("vocab_size")?, n("max_position_embeddings")?);
        let types = n("type_vocab_size").unwrap_or(2);
        if !hidden.is_multiple_of(heads) {
            return Err(err("hidden_size is not a multiple of num_attention_heads"));
        }
        if let Some(act) = cfg["hidden_act"].as_str()
            && act != "gelu"
        {
            return Err(err(format!("unsupported activation {act}")));
        }
        let eps = cfg["layer_norm_eps"].as_f64().unwrap_or(1e-12) as f32;
        let w = Weights(
            read_safetensors(&dir.join("model.safetensors")).map_err(|e| err(e.to_string()))?,
        );
        let mut blocks = Vec::with_capacity(layers);
        for l in 0..layers {
            let p = format!("encoder.layer.{l}");
            let mut qkv_w = Vec::with_capacity(3 * hidden * hidden);
            let mut qkv_b = Vec::with_capacity(3 * hidden);
            for part in ["query", "key", "value"] {
                qkv_w.extend_from_slice(w.get(
                    &format!("{p}.attention.self.{part}.weight"),
                    &[hidden, hidden],
                )?);
                qkv_b.extend_from_slice(
                    w.get(&format!("{p}.attention.self.{part}.bias"), &[hidden])?,
                );
            }
            let linear = |name: &str, outputs: usize, inputs: usize| {
                Linear::new(
                    w.get(&format!("{p}.{name}.weight"), &[outputs, inputs])?,
                    w.get(&format!("{p}.{name}.bias"), &[outputs])?,
                    outputs,
                    inputs,
                    precision,
                )
            };
            blocks.push(Layer {
                qkv: Linear::new(&qkv_w, &qkv_b, 3 * hidden, hidden, precision)?,
                out: linear("attention.output.dense", hidden, hidden)?,
                attn_norm: w.norm(&format!("{p}.attention.output.LayerNorm"), hidden)?,
                up: linear("intermediate.dense", intermediate, hidden)?,
                down: linear("output.dense", hidden, intermediate)?,
                out_norm: w.norm(&format!("{p}.output.LayerNorm"), hidden)?,
            });
        }
        let token_type = w.get("embeddings.token_type_embeddings.weight", &[types, hidden])?;
        Ok(Self {
            hidden,
            heads,
            intermediate,
            eps,
            vocab,
            max_positions,
            word: w
                .get("embeddings.word_embeddings.weight", &[vocab, hidden])?
                .to_vec(),
            position: w
                .get(
                    "embeddings.position_embeddings.weight",
                    &[max_positions, hidden],
                )?
                .to_vec(),
            token_type: token_type[..hidden].to_vec(),
            embed_norm: w.norm("embeddings.LayerNorm", hidden)?,
            layers: blocks,
            precision,
        })
    }

    /// Output dimensions.
    pub fn dimensions(&self) -> usize {
        self.hidden
    }

    /// Longest sequence the position table allows.
    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    /// How the products run.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Embed tokenised sequences (each with its `[CLS]`/`[SEP]`), spreading them over up to
    /// `threads` threads by token count. Token ids outside the vocabulary and positions past
    /// the table are refused by the caller's tokenizer; here they are clamped so no input can
    /// index out of bounds.
    pub fn embed(&self, seqs: &[Vec<u32>], threads: usize) -> Vec<Vec<f32>> {
        let total: usize = seqs.iter().map(Vec::len).sum();
        let threads = threads.clamp(1, seqs.len().max(1));
        if threads == 1 {
            return self.forward(seqs);
        }
        // Contiguous groups of roughly equal token counts.
        let mut groups: Vec<&[Vec<u32>]> = Vec::with_capacity(threads);
        let (mut start, mut acc) = (0, 0);
        for (i, s) in seqs.iter().enumerate() {
            acc += s.len();
            let target = total * (groups.len() + 1) / threads;
            if acc >= target && groups.len() + 1 < threads {
                groups.push(&seqs[start..=i]);
                start = i + 1;
            }
        }
        if start < seqs.len() {
            groups.push(&seqs[start..]);
        }
        std::thread::scope(|scope| {
            let mut handles = Vec::with_capacity(groups.len());
            let (first, rest) = groups
                .split_first()
                .map_or((&[][..], &[][..]), |(f, r)| (*f, r));
            for g in rest {
                handles.push(scope.spawn(|| self.forward(g)));
            }
            let mut out = self.forward(first);
            for h in handles {
                // A worker can only fail by panicking, which would be a bug in this module.
                out.extend(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
            }
            out
        })
    }

    /// The whole encoder over `seqs` on the calling thread.
    fn forward(&self, seqs: &[Vec<u32>]) -> Vec<Vec<f32>> {
        let h = self.hidden;
        let lens: Vec<usize> = seqs
            .iter()
            .map(|s| s.len().min(self.max_positions))
            .collect();
        let total: usize = lens.iter().sum();
        if total == 0 {
            return seqs.iter().map(|_| vec![0.0; h]).collect();
        }
        let mut x = vec![0f32; total * h];
        let mut rows = x.chunks_exact_mut(h);
        for (s, &len) in seqs.iter().zip(&lens) {
            for (pos, &tok) in s.iter().take(len).enumerate() {
                let Some(row) = rows.next() else { break };
                let t = (tok as usize).min(self.vocab - 1);
                let word = &self.word[t * h..(t + 1) * h];
                let position = &self.position[pos * h..(pos + 1) * h];
                for (((d, a), b), c) in row.iter_mut().zip(word).zip(position).zip(&self.token_type)
                {
                    *d = a + b + c;
                }
            }
        }
        layer_norm(&mut x, h, &self.embed_norm, self.eps);

        let mut q = QuantRows::default();
        let mut qkv = vec![0f32; total * 3 * h];
        let mut ctx = vec![0f32; total * h];
        let mut tmp = vec![0f32; total * h];
        let mut up = vec![0f32; total * self.intermediate];
        let (mut scores, mut keys) = (Vec::new(), Vec::new());
        for layer in &self.layers {
            layer.qkv.apply(&x, &mut qkv, &mut q);
            let mut offset = 0;
            for &len in &lens {
                attention(
                    &qkv[offset * 3 * h..(offset + len) * 3 * h],
                    &mut ctx[offset * h..(offset + len) * h],
                    h,
                    self.heads,
                    (&mut scores, &mut keys),
                );
                offset += len;
            }
            layer.out.apply(&ctx, &mut tmp, &mut q);
            for (t, &r) in tmp.iter_mut().zip(&x) {
                *t += r;
            }
            layer_norm(&mut tmp, h, &layer.attn_norm, self.eps);
            std::mem::swap(&mut x, &mut tmp);
            layer.up.apply(&x, &mut up, &mut q);
            gelu_all(&mut up);
            debug_assert_eq!(layer.down.outputs(), h);
            layer.down.apply(&up, &mut tmp, &mut q);
            for (t, &r) in tmp.iter_mut().zip(&x) {
                *t += r;
            }
            layer_norm(&mut tmp, h, &layer.out_norm, self.eps);
            std::mem::swap(&mut x, &mut tmp);
        }

        let mut out = Vec::with_capacity(seqs.len());
        let mut offset = 0;
        for &len in &lens {
            let mut v = vec![0f32; h];
            for row in x[offset * h..(offset + len) * h].chunks_exact(h) {
                for (d, r) in v.iter_mut().zip(row) {
                    *d += r;
                }
            }
            offset += len;
            let norm = math::dot(&v, &v).sqrt();
            if norm > 0.0 {
                for d in &mut v {
                    *d /= norm;
                }
            }
            out.push(v);
        }
        out
    }
}

/// GELU over every value, in place.
fn gelu_all(x: &mut [f32]) {
    for v in x {
        *v = math::gelu(*v);
    }
}

/// LayerNorm over each row of `x`, in place.
fn layer_norm(x: &mut [f32], width: usize, norm: &Norm, eps: f32) {
    let inv_n = 1.0 / width as f32;
    for row in x.chunks_exact_mut(width) {
        let mean = math::sum(row) * inv_n;
        let var = math::sum_sq_dev(row, mean) * inv_n;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, g), b) in row.iter_mut().zip(&norm.gamma).zip(&norm.beta) {
            *v = (*v - mean) * inv * g + b;
        }
    }
}

/// Multi-head self-attention of one sequence: `qkv` holds its rows (Q, K, V side by side,
/// `3 × hidden` wide), `ctx` receives the `hidden`-wide context rows.
fn attention(
    qkv: &[f32],
    ctx: &mut [f32],
    hidden: usize,
    heads: usize,
    scratch: (&mut Vec<f32>, &mut Vec<f32>),
) {
    let len = ctx.len() / hidden;
    let d = hidden / heads;
    let scale = 1.0 / (d as f32).sqrt();
    let row = |t: usize, part: usize, head: usize| {
        let at = t * 3 * hidden + part * hidden + head * d;
        &qkv[at..at + d]
    };
    // The head's keys transposed, in blocks of 8 keys: for each block, `d` rows of 8 values.
    // A query's scores for 8 keys then build up in one vector register over the `d` inputs,
    // with no store until the end (keys past `len` are zero and their scores are ignored).
    const B: usize = 8;
    let blocks = len.div_ceil(B);
    let (scores, keys) = scratch;
    scores.resize(blocks * B, 0.0);
    keys.clear();
    keys.resize(blocks * d * B, 0.0);
    for head in 0..heads {
        for j in 0..len {
            let (block, lane) = (j / B, j % B);
            for (dd, &k) in row(j, 1, head).iter().enumerate() {
                keys[(block * d + dd) * B + lane] = k;
            }
        }
        let (key_rows, _) = keys.as_chunks::<B>();
        for i in 0..len {
            let q = row(i, 0, head);
            // Four blocks of keys at a time: four independent accumulators keep the FMA
            // units busy (one accumulator would wait on each previous FMA's latency).
            let (score_blocks, _) = scores.as_chunks_mut::<B>();
            let mut groups = score_blocks.chunks_exact_mut(4);
            for (g, outs) in groups.by_ref().enumerate() {
                let kb = &key_rows[g * 4 * d..(g + 1) * 4 * d];
                let mut acc = [[0f32; B]; 4];
                for (dd, &qv) in q.iter().enumerate() {
                    for (b, a) in acc.iter_mut().enumerate() {
                        let k = &kb[b * d + dd];
                        for l in 0..B {
                            a[l] = qv.mul_add(k[l], a[l]);
                        }
                    }
                }
                for (o, a) in outs.iter_mut().zip(&acc) {
                    for l in 0..B {
                        o[l] = a[l] * scale;
                    }
                }
            }
            let first = (blocks / 4) * 4;
            for (b, o) in groups.into_remainder().iter_mut().enumerate() {
                let kb = &key_rows[(first + b) * d..(first + b + 1) * d];
                let mut acc = [0f32; B];
                for (&qv, k) in q.iter().zip(kb) {
                    for l in 0..B {
                        acc[l] = qv.mul_add(k[l], acc[l]);
                    }
                }
                for l in 0..B {
                    o[l] = acc[l] * scale;
                }
            }
            let scores = &mut scores[..len];
            // Separate passes, so each one vectorises (a running max or sum would not).
            let max = math::max(scores);
            for s in scores.iter_mut() {
                *s = math::exp(*s - max);
            }
            let inv = 1.0 / math::sum(scores);
            // The context, 32 outputs (four registers) at a time, accumulated over the keys.
            let out = &mut ctx[i * hidden + head * d..i * hidden + (head + 1) * d];
            let (out_blocks, out_tail) = out.as_chunks_mut::<B>();
            let mut groups = out_blocks.chunks_exact_mut(4);
            for (g, outs) in groups.by_ref().enumerate() {
                let mut acc = [[0f32; B]; 4];
                for (j, &p) in scores.iter().enumerate() {
                    let (v, _) = row(j, 2, head)[g * 4 * B..(g + 1) * 4 * B].as_chunks::<B>();
                    for (c, a) in acc.iter_mut().enumerate() {
                        for l in 0..B {
                            a[l] = p.mul_add(v[c][l], a[l]);
                        }
                    }
                }
                for (o, a) in outs.iter_mut().zip(&acc) {
                    for l in 0..B {
                        o[l] = a[l] * inv;
                    }
                }
            }
            let first = (d / B / 4) * 4;
            for (c, o) in groups.into_remainder().iter_mut().enumerate() {
                let at = (first + c) * B;
                let mut acc = [0f32; B];
                for (j, &p) in scores.iter().enumerate() {
                    let v = &row(j, 2, head)[at..at + B];
                    for l in 0..B {
                        acc[l] = p.mul_add(v[l], acc[l]);
                    }
                }
                for l in 0..B {
                    o[l] = acc[l] * inv;
                }
            }
            let done = out_blocks.len() * B;
            for (t, o) in out_tail.iter_mut().enumerate() {
                *o = scores
                    .iter()
                    .enumerate()
                    .map(|(j, &p)| p * row(j, 2, head)[done + t])
                    .sum::<f32>()
                    * inv;
            }
        }
    }
}
