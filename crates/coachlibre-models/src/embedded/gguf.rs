//! Converting the embedding model's Hugging Face files (safetensors, `config.json`,
//! `vocab.txt`) into a GGUF file for llama.cpp: its WordPiece tokenizer reads the vocabulary
//! from it (the encoder itself, [`super::bert`], runs the safetensors), and llama.cpp's BERT can
//! run it whole, which the benchmarks compared against.
//!
//! The GGUF layout (v3): header, metadata key/values, tensor descriptors, then the tensor data,
//! each tensor aligned to 32 bytes. Tensor and key names are llama.cpp's for the `bert`
//! architecture. The WordPiece vocabulary is rewritten the way llama.cpp's tokenizer reads it:
//! a word-initial piece carries a leading "▁", a continuation piece loses its "##". The
//! matrix weights can be stored as f32 or as Q8_0 (blocks of 32 int8 values with one f16
//! scale), which lets llama.cpp use its int8 dot-product kernels.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde_json::Value;

/// How the six matrices of each layer are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatrixType {
    F32,
    F16,
    Bf16,
    Q8_0,
}

/// Why a conversion failed.
#[derive(Debug, thiserror::Error)]
#[error("converting the embedding model: {0}")]
pub struct ConvertError(String);

fn err(m: impl Into<String>) -> ConvertError {
    ConvertError(m.into())
}

const ALIGN: usize = 32;
const GGML_F32: u32 = 0;
const GGML_F16: u32 = 1;
const GGML_Q8_0: u32 = 8;
const GGML_BF16: u32 = 30;

/// A tensor read from the safetensors file: shape as stored (row-major, outermost first).
pub(crate) struct Tensor {
    pub(crate) shape: Vec<usize>,
    pub(crate) data: Vec<f32>,
}

/// Read every f32 tensor of a safetensors file (other types, such as `position_ids`, are
/// skipped); sizes and offsets are checked against the data, never trusted.
pub(crate) fn read_safetensors(path: &Path) -> Result<BTreeMap<String, Tensor>, ConvertError> {
    let bytes = std::fs::read(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
    let n = u64::from_le_bytes(
        bytes
            .get(..8)
            .ok_or_else(|| err("safetensors too short"))?
            .try_into()
            .map_err(|_| err("header"))?,
    ) as usize;
    let header: BTreeMap<String, Value> =
        serde_json::from_slice(bytes.get(8..8 + n).ok_or_else(|| err("truncated header"))?)
            .map_err(|e| err(format!("safetensors header: {e}")))?;
    let data = &bytes[8 + n..];
    let mut out = BTreeMap::new();
    for (name, info) in header {
        if name == "__metadata__" || info["dtype"] != "F32" {
            continue; // position_ids (I64) is not needed.
        }
        let shape: Vec<usize> = info["shape"]
            .as_array()
            .ok_or_else(|| err("shape"))?
            .iter()
            .filter_map(|d| d.as_u64().map(|d| d as usize))
            .collect();
        let off = info["data_offsets"]
            .as_array()
            .ok_or_else(|| err("offsets"))?;
        let bound = |i: usize| {
            off.get(i)
                .and_then(Value::as_u64)
                .and_then(|v| usize::try_from(v).ok())
                .ok_or_else(|| err(format!("{name}: bad data_offsets")))
        };
        let (start, end) = (bound(0)?, bound(1)?);
        let raw = data
            .get(start..end)
            .ok_or_else(|| err(format!("{name}: data out of range")))?;
        if raw.len() != 4 * shape.iter().product::<usize>() {
            return Err(err(format!(
                "{name}: {} bytes for shape {shape:?}",
                raw.len()
            )));
        }
        let values = raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        out.insert(
            name,
            Tensor {
                shape,
                data: values,
            },
        );
    }
    Ok(out)
}

/// f32 → IEEE half, round to nearest even.
fn f16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32;
    let mant = b & 0x7f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if mant != 0 { 0x200 } else { 0 };
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    if e <= 0 {
        if e < -10 {
            return sign;
        }
        let m = (mant | 0x80_0000) >> (1 - e);
        let round = (m >> 12) & 1 != 0 && ((m & 0x1fff) != 0x1000 || (m >> 13) & 1 != 0);
        return sign | ((m >> 13) as u16 + u16::from(round));
    }
    let round = (mant >> 12) & 1 != 0 && ((mant & 0x1fff) != 0x1000 || (mant >> 13) & 1 != 0);
    let v = ((e as u32) << 10 | (mant >> 13)) + u32::from(round);
    sign | v as u16
}

#[cfg(test)]
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h & 0x8000) << 16;
    let exp = u32::from((h >> 10) & 0x1f);
    let mant = u32::from(h & 0x3ff);
    let bits = match (exp, mant) {
        (0, 0) => sign,
        (0, m) => {
            let shift = m.leading_zeros() - 21;
            sign | ((113 - shift) << 23) | ((m << (shift + 1)) & 0x3ff) << 13
        }
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 112) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

/// f32 → bfloat16, round to nearest even.
fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    let round = 0x7fff + ((b >> 16) & 1);
    (b.wrapping_add(round) >> 16) as u16
}

/// Q8_0: per block of 32, scale d = max|x| / 127 (stored f16), q = round(x / d).
fn quantize_q8_0(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() / 32 * 34);
    for block in values.chunks(32) {
        let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let dh = f16_bits(d);
        let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&dh.to_le_bytes());
        for v in block {
            out.push(((v * inv).round().clamp(-127.0, 127.0) as i8) as u8);
        }
    }
    out
}

/// Metadata value.
enum Kv {
    U32(u32),
    F32(f32),
    Bool(bool),
    Str(String),
    Strs(Vec<String>),
    I32s(Vec<i32>),
}

fn put_str(w: &mut Vec<u8>, s: &str) {
    w.extend_from_slice(&(s.len() as u64).to_le_bytes());
    w.extend_from_slice(s.as_bytes());
}

fn put_kv(w: &mut Vec<u8>, key: &str, v: &Kv) {
    put_str(w, key);
    match v {
        Kv::U32(x) => {
            w.extend_from_slice(&4u32.to_le_bytes());
            w.extend_from_slice(&x.to_le_bytes());
        }
        Kv::F32(x) => {
            w.extend_from_slice(&6u32.to_le_bytes());
            w.extend_from_slice(&x.to_le_bytes());
        }
        Kv::Bool(x) => {
            w.extend_from_slice(&7u32.to_le_bytes());
            w.push(u8::from(*x));
        }
        Kv::Str(s) => {
            w.extend_from_slice(&8u32.to_le_bytes());
            put_str(w, s);
        }
        Kv::Strs(items) => {
            w.extend_from_slice(&9u32.to_le_bytes());
            w.extend_from_slice(&8u32.to_le_bytes());
            w.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for s in items {
                put_str(w, s);
            }
        }
        Kv::I32s(items) => {
            w.extend_from_slice(&9u32.to_le_bytes());
            w.extend_from_slice(&5u32.to_le_bytes());
            w.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for x in items {
                w.extend_from_slice(&x.to_le_bytes());
            }
        }
    }
}

/// llama.cpp's name for a Hugging Face BERT tensor, and whether it is a layer matrix.
fn gguf_name(hf: &str) -> Option<(String, bool)> {
    let fixed = match hf {
        "embeddings.word_embeddings.weight" => Some("token_embd.weight"),
        "embeddings.position_embeddings.weight" => Some("position_embd.weight"),
        "embeddings.token_type_embeddings.weight" => Some("token_types.weight"),
        "embeddings.LayerNorm.weight" => Some("token_embd_norm.weight"),
        "embeddings.LayerNorm.bias" => Some("token_embd_norm.bias"),
        _ => None,
    };
    if let Some(n) = fixed {
        return Some((n.to_owned(), false));
    }
    let rest = hf.strip_prefix("encoder.layer.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (base, kind) = part.rsplit_once('.')?;
    let target = match base {
        "attention.self.query" => "attn_q",
        "attention.self.key" => "attn_k",
        "attention.self.value" => "attn_v",
        "attention.output.dense" => "attn_output",
        "attention.output.LayerNorm" => "attn_output_norm",
        "intermediate.dense" => "ffn_up",
        "output.dense" => "ffn_down",
        "output.LayerNorm" => "layer_output_norm",
        _ => return None,
    };
    let is_matrix = kind == "weight" && !target.ends_with("norm");
    Some((format!("blk.{layer}.{target}.{kind}"), is_matrix))
}

/// The WordPiece vocabulary as llama.cpp's tokenizer expects it, with token types.
fn vocab(path: &Path) -> Result<(Vec<String>, Vec<i32>), ConvertError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
    let mut tokens = Vec::new();
    let mut types = Vec::new();
    for tok in text.lines() {
        let special = tok.starts_with('[') && tok.ends_with(']');
        tokens.push(if special {
            tok.to_owned()
        } else if let Some(cont) = tok.strip_prefix("##") {
            cont.to_owned()
        } else {
            format!("\u{2581}{tok}")
        });
        types.push(match tok {
            "[UNK]" => 2,
            "[PAD]" | "[CLS]" | "[SEP]" | "[MASK]" => 3,
            _ => 1,
        });
    }
    Ok((tokens, types))
}

/// The model's `config.json`, parsed.
pub(crate) fn read_config(dir: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(dir.join("config.json"))
        .map_err(|e| format!("config.json: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("config.json: {e}"))
}

/// Write `dir/<out>` from the Hugging Face files in `dir`.
pub fn convert_bert(dir: &Path, out: &Path, matrices: MatrixType) -> Result<(), ConvertError> {
    let cfg = read_config(dir).map_err(err)?;
    let n = |k: &str| {
        cfg[k]
            .as_u64()
            .map(|v| v as u32)
            .ok_or_else(|| err(format!("config.json lacks {k}")))
    };
    let tensors = read_safetensors(&dir.join("model.safetensors"))?;
    let (tokens, types) = vocab(&dir.join("vocab.txt"))?;
    let id = |t: &str| tokens.iter().position(|x| x == t).map_or(0, |p| p as u32);
    let kvs: Vec<(&str, Kv)> = vec![
        ("general.architecture", Kv::Str("bert".into())),
        ("general.name", Kv::Str("all-MiniLM-L6-v2".into())),
        ("general.alignment", Kv::U32(ALIGN as u32)),
        (
            "bert.context_length",
            Kv::U32(n("max_position_embeddings")?),
        ),
        ("bert.embedding_length", Kv::U32(n("hidden_size")?)),
        ("bert.feed_forward_length", Kv::U32(n("intermediate_size")?)),
        ("bert.block_count", Kv::U32(n("num_hidden_layers")?)),
        (
            "bert.attention.head_count",
            Kv::U32(n("num_attention_heads")?),
        ),
        (
            "bert.attention.layer_norm_epsilon",
            Kv::F32(cfg["layer_norm_eps"].as_f64().unwrap_or(1e-12) as f32),
        ),
        ("bert.attention.causal", Kv::Bool(false)),
        ("bert.pooling_type", Kv::U32(1)), // mean
        ("tokenizer.ggml.model", Kv::Str("bert".into())),
        (
            "tokenizer.ggml.token_type_count",
            Kv::U32(n("type_vocab_size")?),
        ),
        ("tokenizer.ggml.unknown_token_id", Kv::U32(id("[UNK]"))),
        ("tokenizer.ggml.bos_token_id", Kv::U32(id("[CLS]"))),
        ("tokenizer.ggml.seperator_token_id", Kv::U32(id("[SEP]"))),
        ("tokenizer.ggml.padding_token_id", Kv::U32(id("[PAD]"))),
        ("tokenizer.ggml.mask_token_id", Kv::U32(id("[MASK]"))),
        ("tokenizer.ggml.add_bos_token", Kv::Bool(true)),
        ("tokenizer.ggml.add_sep_token", Kv::Bool(true)),
        ("tokenizer.ggml.normalizer.lowercase", Kv::Bool(true)),
        ("tokenizer.ggml.normalizer.strip_accents", Kv::Bool(true)),
        ("tokenizer.ggml.tokens", Kv::Strs(tokens.clone())),
        ("tokenizer.ggml.token_type", Kv::I32s(types)),
    ];
    // Tensor descriptors and data.
    let mut infos = Vec::new();
    let mut blob: Vec<u8> = Vec::new();
    for (hf, t) in &tensors {
        let Some((name, is_matrix)) = gguf_name(hf) else {
            continue;
        };
        let blocks_fit = t.shape.last().is_some_and(|c| c.is_multiple_of(32));
        let (ty, bytes): (u32, Vec<u8>) = match matrices {
            MatrixType::Q8_0 if is_matrix && blocks_fit => (GGML_Q8_0, quantize_q8_0(&t.data)),
            MatrixType::F16 if is_matrix => (
                GGML_F16,
                t.data
                    .iter()
                    .flat_map(|v| f16_bits(*v).to_le_bytes())
                    .collect(),
            ),
            MatrixType::Bf16 if is_matrix => (
                GGML_BF16,
                t.data
                    .iter()
                    .flat_map(|v| bf16_bits(*v).to_le_bytes())
                    .collect(),
            ),
            _ => (
                GGML_F32,
                t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
        };
        while !blob.len().is_multiple_of(ALIGN) {
            blob.push(0);
        }
        let offset = blob.len() as u64;
        blob.extend_from_slice(&bytes);
        // ggml lists dimensions innermost first.
        let dims: Vec<u64> = t.shape.iter().rev().map(|d| *d as u64).collect();
        infos.push((name, dims, ty, offset));
    }
    let mut head = Vec::new();
    head.extend_from_slice(b"GGUF");
    head.extend_from_slice(&3u32.to_le_bytes());
    head.extend_from_slice(&(infos.len() as u64).to_le_bytes());
    head.extend_from_slice(&(kvs.len() as u64).to_le_bytes());
    for (k, v) in &kvs {
        put_kv(&mut head, k, v);
    }
    for (name, dims, ty, offset) in &infos {
        put_str(&mut head, name);
        head.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in dims {
            head.extend_from_slice(&d.to_le_bytes());
        }
        head.extend_from_slice(&ty.to_le_bytes());
        head.extend_from_slice(&offset.to_le_bytes());
    }
    while !head.len().is_multiple_of(ALIGN) {
        head.push(0);
    }
    let tmp = out.with_extension("gguf.tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| err(format!("{}: {e}", tmp.display())))?;
    f.write_all(&head)
        .and_then(|()| f.write_all(&blob))
        .and_then(|()| f.sync_all())
        .map_err(|e| err(format!("{}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, out).map_err(|e| err(format!("{}: {e}", out.display())))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_round_trips() {
        for x in [0.0f32, 1.0, -2.5, 0.000_123, 65504.0, 1e-7, 0.333_333] {
            let back = f16_to_f32(f16_bits(x));
            assert!((back - x).abs() <= x.abs() * 1e-3 + 1e-7, "{x} -> {back}");
        }
    }

    #[test]
    fn q8_0_blocks() {
        let v: Vec<f32> = (0..64).map(|i| (i as f32 - 32.0) / 10.0).collect();
        let q = quantize_q8_0(&v);
        assert_eq!(q.len(), 2 * 34);
        let d = f16_to_f32(u16::from_le_bytes([q[0], q[1]]));
        assert!((d - 3.2 / 127.0).abs() < 1e-4, "{d}");
        // Dequantised values stay within half a step.
        for (i, x) in v[..32].iter().enumerate() {
            let back = f32::from(q[2 + i] as i8) * d;
            assert!((back - x).abs() <= d / 2.0 + 1e-6, "{x} {back}");
        }
    }

    #[test]
    fn names_and_vocab_mapping() {
        assert_eq!(
            gguf_name("encoder.layer.3.attention.self.query.weight"),
            Some(("blk.3.attn_q.weight".into(), true))
        );
        assert_eq!(
            gguf_name("encoder.layer.0.output.LayerNorm.bias"),
            Some(("blk.0.layer_output_norm.bias".into(), false))
        );
        assert_eq!(
            gguf_name("encoder.layer.5.intermediate.dense.bias"),
            Some(("blk.5.ffn_up.bias".into(), false))
        );
        assert_eq!(gguf_name("pooler.dense.weight"), None);
    }
}
