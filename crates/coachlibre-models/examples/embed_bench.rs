//! Embedded embeddings: measure sentences/s at batch 1 and 32 on the native encoder (12-bit
//! integer products on AMX tiles or with VNNI, or f32 products) and dump the vectors of the reference sentences as JSON lines (compared with
//! sentence-transformers' by bench/embed_sentence_transformers.py).
//!
//!   cargo run --release -p coachlibre-models --example embed_bench -- MODEL_DIR amx|int16|f32 [THREADS] [OUT.jsonl]
//!
//! MODEL_DIR is the installed model (`models pull`): its safetensors, config and GGUF.

mod common;

use std::time::Instant;

use coachlibre_core::model::EmbeddingModel;
use coachlibre_models::embedded::EmbeddedEmbedder;
use coachlibre_models::embedded::bert::Precision;

/// The reference sentences, shared with the peer's script and the accuracy test.
fn sentences() -> Vec<String> {
    include_str!("../../../bench/reference_sentences.txt")
        .lines()
        .map(str::to_owned)
        .collect()
}

fn corpus(n: usize) -> Vec<String> {
    let words = [
        "coach", "goal", "habit", "focus", "sleep", "run", "career", "plan", "week", "progress",
        "client", "session",
    ];
    (0..n)
        .map(|i| {
            (0..(8 + i % 17))
                .map(|j| words[(i * 7 + j * 3) % words.len()])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(
        args.get(1)
            .ok_or("usage: embed_bench MODEL_DIR amx|int16|f32 [THREADS] [OUT]")?,
    );
    let precision = match args.get(2).map(String::as_str) {
        Some("f32") => Precision::F32,
        Some("int16") => Precision::Int16,
        Some("amx") => Precision::Amx,
        _ => Precision::best_available(),
    };
    if !precision.available() {
        return Err(format!("{precision:?} needs instructions this CPU does not have").into());
    }
    let threads: i32 = args.get(3).map_or(Ok(2), |s| s.parse())?;
    let t = Instant::now();
    let model = EmbeddedEmbedder::load_with(
        "minilm",
        &dir.join(coachlibre_models::pull::EMBEDDING_GGUF),
        threads,
        precision,
    )?;
    let load = t.elapsed().as_secs_f64();
    let reference = model.embed(&sentences()).await?;
    if let Some(out) = args.get(4) {
        let lines: Vec<String> = reference
            .iter()
            .map(|v| serde_json::to_string(v).unwrap_or_default())
            .collect();
        std::fs::write(out, lines.join("\n"))?;
    }
    let texts = corpus(512);
    let _ = model.embed(&texts[..32]).await?; // warm-up
    let t = Instant::now();
    for chunk in texts.chunks(32) {
        model.embed(chunk).await?;
    }
    let b32 = texts.len() as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for s in &texts[..128] {
        model.embed(std::slice::from_ref(s)).await?;
    }
    let b1 = 128.0 / t.elapsed().as_secs_f64();
    let rss = common::peak_rss_mb();
    println!(
        "engine: CoachLibre embedded encoder ({precision:?} products), threads {threads}, load {load:.2} s"
    );
    println!(
        "batch 1: {b1:.0} sentences/s | batch 32: {b32:.0} sentences/s | dims {} | peak RSS MB {rss:.0}",
        model.dimensions()
    );
    Ok(())
}
