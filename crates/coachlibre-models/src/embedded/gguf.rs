//! The embedding model's files: reading its safetensors and `config.json` (the encoder,
//! [`super::bert`], runs them), and writing its WordPiece vocabulary as a GGUF file that
//! llama.cpp's tokenizer loads (vocabulary only: the file holds metadata and no tensors).
//!
//! The GGUF layout (v3): header, metadata key/values (no tensor descriptors). Key names are
//! llama.cpp's for the `bert` architecture. The WordPiece vocabulary is rewritten the way
//! llama.cpp's tokenizer reads it: a word-initial piece carries a leading "▁", a continuation
//! piece loses its "##".

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde_json::Value;

/// Why a conversion failed.
#[derive(Debug, thiserror::Error)]
#[error("converting the embedding model: {0}")]
pub struct ConvertError(String);

fn err(m: impl Into<String>) -> ConvertError {
    ConvertError(m.into())
}

const ALIGN: usize = 32;

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

/// Write `out`, the vocabulary GGUF, from the Hugging Face files in `dir` (`config.json`,
/// `vocab.txt`).
pub fn write_vocabulary(dir: &Path, out: &Path) -> Result<(), ConvertError> {
    let cfg = read_config(dir).map_err(err)?;
    let n = |k: &str| {
        cfg[k]
            .as_u64()
            .map(|v| v as u32)
            .ok_or_else(|| err(format!("config.json lacks {k}")))
    };
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
    let mut head = Vec::new();
    head.extend_from_slice(b"GGUF");
    head.extend_from_slice(&3u32.to_le_bytes());
    head.extend_from_slice(&0u64.to_le_bytes()); // tensors
    head.extend_from_slice(&(kvs.len() as u64).to_le_bytes());
    for (k, v) in &kvs {
        put_kv(&mut head, k, v);
    }
    while !head.len().is_multiple_of(ALIGN) {
        head.push(0);
    }
    let tmp = out.with_extension("gguf.tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| err(format!("{}: {e}", tmp.display())))?;
    f.write_all(&head)
        .and_then(|()| f.sync_all())
        .map_err(|e| err(format!("{}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, out).map_err(|e| err(format!("{}: {e}", out.display())))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabulary_is_rewritten_for_llamas_tokenizer() {
        let dir = std::env::temp_dir().join(format!("cl-vocab-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("vocab.txt"), "[PAD]\n[UNK]\n[CLS]\nrun\n##ning\n").unwrap();
        let (tokens, types) = vocab(&dir.join("vocab.txt")).unwrap();
        assert_eq!(tokens, ["[PAD]", "[UNK]", "[CLS]", "\u{2581}run", "ning"]);
        assert_eq!(types, [3, 2, 3, 1, 1]);
        std::fs::write(
            dir.join("config.json"),
            r#"{"max_position_embeddings": 512, "hidden_size": 384, "intermediate_size": 1536,
                "num_hidden_layers": 6, "num_attention_heads": 12, "type_vocab_size": 2}"#,
        )
        .unwrap();
        let out = dir.join("vocab.gguf");
        write_vocabulary(&dir, &out).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(&bytes[..4], b"GGUF");
        assert_eq!(
            u64::from_le_bytes(bytes[8..16].try_into().unwrap()),
            0,
            "no tensors"
        );
        assert!(bytes.len() < 4096);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
