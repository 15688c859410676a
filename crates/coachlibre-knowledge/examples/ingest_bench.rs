//! Ingestion throughput with the embedded embedding model: upload N synthetic Markdown
//! documents (coaching programs, about 1,500 words each, headings and paragraphs) to a fresh
//! SQLite database, wait until every one is `ready`, print documents/s and chunks/s and how the
//! time splits between extraction + chunking, embedding and storage.
//!
//! ```sh
//! COACHLIBRE_MODELS_DIR=~/.cache/coachlibre/models \
//!   cargo run --release -p coachlibre-knowledge --example ingest_bench -- 100
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use coachlibre_core::knowledge::{ChunkPolicy, DocumentStatus, chunk_text};
use coachlibre_core::model::EmbeddingModel;
use coachlibre_core::store::Store;
use coachlibre_core::tenant::{Tenant, TenantSlug};
use coachlibre_core::user::Role;
use coachlibre_knowledge::Knowledge;
use coachlibre_store::{ConnectOptions, SqlStore};
use coachlibre_testkit::TempDir;
use coachlibre_testkit::people::{actor, person};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const WORDS: &[&str] = &[
    "run",
    "easy",
    "tempo",
    "interval",
    "recovery",
    "sleep",
    "hydration",
    "strength",
    "squat",
    "lunge",
    "mobility",
    "stretch",
    "pace",
    "threshold",
    "heart",
    "rate",
    "zone",
    "week",
    "session",
    "goal",
    "habit",
    "focus",
    "breathing",
    "stress",
    "motivation",
    "plan",
    "progress",
    "rest",
    "nutrition",
    "protein",
    "carbohydrate",
    "race",
    "marathon",
    "kilometre",
    "minute",
    "warm-up",
    "cool-down",
    "coach",
    "client",
    "journal",
    "reflection",
    "value",
    "career",
    "interview",
    "skill",
    "feedback",
    "routine",
    "morning",
    "evening",
    "energy",
];

/// A document of `paragraphs` paragraphs under `sections` headings.
fn document(seed: u64, sections: usize, paragraphs: usize) -> String {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut word = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        WORDS[(s % WORDS.len() as u64) as usize]
    };
    let mut out = format!("# Program {seed}\n\n");
    for sec in 0..sections {
        out.push_str(&format!("## Week {}\n\n", sec + 1));
        for _ in 0..paragraphs {
            for sentence in 0..4 {
                let n = 8 + sentence * 3;
                let words: Vec<&str> = (0..n).map(|_| word()).collect();
                out.push_str(&words.join(" "));
                out.push_str(". ");
            }
            out.push_str("\n\n");
        }
    }
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(100);
    let models_dir = std::env::var_os("COACHLIBRE_MODELS_DIR")
        .map(std::path::PathBuf::from)
        .context(
            "set COACHLIBRE_MODELS_DIR to where `coachlibre models pull` installed the models",
        )?;
    let registry =
        coachlibre_models::registry::Registry::new(BTreeMap::new(), BTreeMap::new(), models_dir);
    let embedder: Arc<dyn EmbeddingModel> = registry
        .embedding("all-minilm-l6-v2")
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // Load the model before timing.
    embedder
        .embed(&["warm up".to_owned()])
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    let tmp = TempDir::new()?;
    let url = format!("sqlite://{}", tmp.path().join("bench.db").display());
    let sql = SqlStore::connect(&url, &ConnectOptions::default()).await?;
    sql.migrate().await?;
    let store: Arc<dyn Store> = Arc::new(sql);
    let tenant = Tenant::new(TenantSlug::parse("bench")?, "Bench")?;
    store.insert_tenant(&tenant).await?;
    let coach = person(tenant.id, "coach@bench.test", Role::Coach);
    store.insert_user(&coach).await?;
    let actor = actor(&coach);
    let knowledge = Knowledge::new(store.clone(), Some(embedder.clone()));
    let collection = knowledge
        .create_collection(&actor, "Programs", "", None)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    let docs: Vec<String> = (0..n as u64).map(|i| document(i, 6, 5)).collect();
    let words: usize = docs.iter().map(|d| d.split_whitespace().count()).sum();

    // The parts on their own: chunking, and embedding the same chunks.
    let t = Instant::now();
    let mut texts = Vec::new();
    for d in &docs {
        for s in chunk_text(d, ChunkPolicy::default()) {
            texts.push(format!("{}\n{}", s.heading, &d[s.start..s.end]));
        }
    }
    let chunk_s = t.elapsed().as_secs_f64();
    let chunks = texts.len();

    let t = Instant::now();
    for batch in texts.chunks(32) {
        embedder
            .embed(batch)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let embed_s = t.elapsed().as_secs_f64();

    // The whole path: upload → background ingestion → ready.
    let t = Instant::now();
    for (i, d) in docs.iter().enumerate() {
        knowledge
            .upload(
                &actor,
                collection.id,
                &format!("program-{i}.md"),
                None,
                d.as_bytes().to_vec(),
                serde_json::Map::new(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let uploaded_s = t.elapsed().as_secs_f64();
    if !knowledge
        .wait_idle(tenant.id, Duration::from_secs(3600))
        .await
    {
        anyhow::bail!("ingestion did not finish");
    }
    let total_s = t.elapsed().as_secs_f64();
    let listed = knowledge
        .list_documents(
            &actor,
            collection.id,
            &coachlibre_core::page::PageRequest {
                limit: coachlibre_core::page::MAX_LIMIT,
                cursor: None,
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let not_ready = listed
        .iter()
        .filter(|d| d.status != DocumentStatus::Ready)
        .count();

    println!(
        "{n} documents, {words} words, {chunks} chunks ({:.0} words per chunk); embedding model {}",
        words as f64 / chunks as f64,
        embedder.name()
    );
    println!();
    println!("| stage | seconds | documents/s | chunks/s |");
    println!("|---|---|---|---|");
    println!(
        "| chunking alone | {chunk_s:.3} | {:.0} | {:.0} |",
        n as f64 / chunk_s,
        chunks as f64 / chunk_s
    );
    println!(
        "| embedding alone (batches of 32) | {embed_s:.1} | {:.1} | {:.0} |",
        n as f64 / embed_s,
        chunks as f64 / embed_s
    );
    println!(
        "| upload accepted (text stored, queued) | {uploaded_s:.2} | {:.0} | — |",
        n as f64 / uploaded_s
    );
    println!(
        "| upload to ready (whole ingestion) | {total_s:.1} | {:.1} | {:.0} |",
        n as f64 / total_s,
        chunks as f64 / total_s
    );
    if not_ready > 0 {
        println!("{not_ready} documents not ready (of the first page listed)");
    }
    Ok(())
}
