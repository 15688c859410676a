//! Embedded chat throughput: prompt tokens/s, generated tokens/s, time to first token.
//!
//!   cargo run --release -p coachlibre-models --example chat_bench -- MODEL.gguf [RUNS] [THREADS]
//!
//! Greedy, 64 new tokens at most, the same prompt as bench/chat_llama_cpp_python.py; prints
//! the median of RUNS runs (default 6) after one warm-up, and the peak RSS.

mod common;

use std::time::Instant;

use coachlibre_core::model::{ChatEvent, ChatMessage, ChatModel, ChatRequest, GenerationParams};
use coachlibre_models::embedded::{EmbeddedChat, EngineOptions};
use futures_util::StreamExt;

const SYSTEM: &str = "You are a helpful study coach. Answer in a few sentences.";
const USER: &str = "Give me one practical tip that can help me stay focused while studying for my exams this week.";

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .ok_or("usage: chat_bench MODEL.gguf [RUNS] [THREADS]")?;
    let runs: usize = args.get(2).map_or(Ok(6), |s| s.parse())?;
    let threads: i32 = args.get(3).map_or(Ok(2), |s| s.parse())?;
    let t0 = Instant::now();
    let model = EmbeddedChat::load(
        "bench",
        path.as_ref(),
        EngineOptions {
            threads,
            ..EngineOptions::default()
        },
    )?;
    let load = t0.elapsed().as_secs_f64();
    let req = ChatRequest {
        messages: vec![ChatMessage::system(SYSTEM), ChatMessage::user(USER)],
        tools: Vec::new(),
        params: GenerationParams {
            max_tokens: 64,
            temperature: 0.0,
            ..GenerationParams::default()
        },
    };
    let (mut pp, mut tg, mut ttft) = (Vec::new(), Vec::new(), Vec::new());
    let mut answer = String::new();
    for run in 0..=runs {
        let start = Instant::now();
        let mut stream = model.chat(req.clone()).await?;
        let mut first = None;
        let mut text = String::new();
        let mut usage = None;
        while let Some(ev) = stream.next().await {
            match ev? {
                ChatEvent::Token(t) => {
                    first.get_or_insert_with(|| start.elapsed().as_secs_f64());
                    text.push_str(&t);
                }
                ChatEvent::Done { usage: u, .. } => usage = Some(u),
                ChatEvent::ToolCall(_) | ChatEvent::Waiting { .. } => {}
            }
        }
        let total = start.elapsed().as_secs_f64();
        let (Some(first), Some(u)) = (first, usage) else {
            return Err("no tokens".into());
        };
        if run == 0 {
            answer = text;
            continue; // warm-up
        }
        ttft.push(first * 1000.0);
        pp.push(f64::from(u.prompt_tokens) / first);
        tg.push(f64::from(u.completion_tokens.saturating_sub(1)) / (total - first));
    }
    println!(
        "engine: CoachLibre embedded (llama.cpp via llama-cpp-2), threads {threads}, load {load:.2} s"
    );
    println!(
        "prompt tok/s {:.0} | generated tok/s {:.1} | TTFT ms {:.1} | peak RSS MB {:.0}",
        median(&mut pp),
        median(&mut tg),
        median(&mut ttft),
        common::peak_rss_mb()
    );
    println!("answer: {answer}");
    Ok(())
}
