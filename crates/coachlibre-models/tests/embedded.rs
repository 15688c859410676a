//! The embedded chat model, for real: SmolLM2-135M-Instruct through llama.cpp.
//!
//! Needs the model installed (`coachlibre models pull`): in `COACHLIBRE_MODELS_DIR`, else in
//! the workspace's `data/models` (where the README's commands put it). CI pulls it first.

use std::path::PathBuf;
use std::sync::Arc;

use coachlibre_core::model::{
    ChatEvent, ChatMessage, ChatModel, ChatRequest, FinishReason, GenerationParams, ModelError,
    ToolSpec,
};
use coachlibre_core::model::{PRIORITY, Priority};
use coachlibre_models::EmbeddedModel;
use coachlibre_models::embedded::{EmbeddedChat, EngineOptions};
use futures_util::StreamExt;

/// The file the engine of the installed model `name` loads.
fn installed(name: &str) -> PathBuf {
    let dir = std::env::var_os("COACHLIBRE_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/models"));
    let model = EmbeddedModel::by_name(name).expect("catalog");
    let path = model.primary_file(&dir).expect("model file");
    assert!(
        path.exists(),
        "{} is missing: run `cargo run -- models pull` (or set COACHLIBRE_MODELS_DIR)",
        path.display()
    );
    path
}

fn model_path() -> PathBuf {
    installed("smollm2-135m-instruct")
}

fn engine(options: EngineOptions) -> EmbeddedChat {
    EmbeddedChat::load("smollm2-135m-instruct", &model_path(), options).expect("load")
}

/// One engine for the tests that need no special options: loaded once, and its FIFO queue
/// runs their generations one after another instead of all at once on two cores.
fn shared() -> EmbeddedChat {
    static ENGINE: std::sync::OnceLock<EmbeddedChat> = std::sync::OnceLock::new();
    ENGINE
        .get_or_init(|| engine(EngineOptions::default()))
        .clone()
}

fn greedy(question: &str, max_tokens: u32) -> ChatRequest {
    ChatRequest {
        messages: vec![
            ChatMessage::system("You are a helpful assistant."),
            ChatMessage::user(question),
        ],
        tools: Vec::new(),
        params: GenerationParams {
            max_tokens,
            temperature: 0.0,
            ..GenerationParams::default()
        },
    }
}

async fn answer(model: &EmbeddedChat, req: ChatRequest) -> (String, Vec<ChatEvent>) {
    let events: Vec<ChatEvent> = model
        .chat(req)
        .await
        .expect("chat")
        .map(|e| e.expect("event"))
        .collect()
        .await;
    let text = events
        .iter()
        .filter_map(|e| match e {
            ChatEvent::Token(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    (text, events)
}

#[tokio::test]
async fn greedy_answers_are_deterministic_and_sensible() {
    let model = shared();
    let prompt = model
        .render_prompt(&greedy("What is the capital of France?", 48))
        .unwrap();
    assert!(
        prompt.starts_with("<|im_start|>system\nYou are a helpful assistant.<|im_end|>"),
        "{prompt}"
    );
    assert!(prompt.ends_with("<|im_start|>assistant\n"), "{prompt}");

    let (first, events) = answer(&model, greedy("What is the capital of France?", 48)).await;
    let (second, _) = answer(&model, greedy("What is the capital of France?", 48)).await;
    assert_eq!(first, second, "greedy decoding is deterministic");
    assert!(first.contains("Paris"), "{first}");
    let Some(ChatEvent::Done { usage, finish }) = events.last() else {
        panic!("{events:?}")
    };
    assert!(
        usage.prompt_tokens > 10 && usage.completion_tokens > 0,
        "{usage:?}"
    );
    assert_eq!(usage.cost_usd, 0.0);
    assert!(matches!(finish, FinishReason::Stop | FinishReason::Length));
}

#[tokio::test]
async fn max_tokens_and_stop_sequences_are_honoured() {
    let model = shared();
    let (_, events) = answer(&model, greedy("Write a long story about a dragon.", 5)).await;
    let Some(ChatEvent::Done { usage, finish }) = events.last() else {
        panic!()
    };
    assert_eq!(
        (usage.completion_tokens, *finish),
        (5, FinishReason::Length)
    );

    let (full, _) = answer(&model, greedy("What is the capital of France?", 48)).await;
    let word = full
        .split_whitespace()
        .nth(2)
        .expect("a few words")
        .to_owned();
    let mut req = greedy("What is the capital of France?", 48);
    req.params.stop = vec![word.clone()];
    let (cut, events) = answer(&model, req).await;
    assert!(
        !cut.contains(&word) && full.starts_with(&cut),
        "{cut:?} / {full:?}"
    );
    assert!(matches!(
        events.last(),
        Some(ChatEvent::Done {
            finish: FinishReason::Stop,
            ..
        })
    ));
}

#[tokio::test]
async fn sampling_with_a_seed_is_reproducible() {
    let model = shared();
    let mut req = greedy("Give me one tip to stay focused.", 24);
    req.params.temperature = 0.9;
    req.params.seed = Some(42);
    let (a, _) = answer(&model, req.clone()).await;
    let (b, _) = answer(&model, req).await;
    assert_eq!(a, b);
}

#[tokio::test]
async fn dropping_the_stream_cancels_and_the_queue_is_bounded() {
    let model = engine(EngineOptions {
        max_concurrent: 1,
        max_queue: 1,
        ..EngineOptions::default()
    });
    // Hold a generation open without reading it: it keeps the only slot.
    let mut holder = model
        .chat(greedy("Write a long story about a dragon.", 400))
        .await
        .unwrap();
    let _ = holder.next().await;
    // A second request waits in line...
    let waiting = {
        let m = model.clone();
        tokio::spawn(async move { answer(&m, greedy("Say hi.", 8)).await })
    };
    while model.queued() == 0 {
        tokio::task::yield_now().await;
    }
    // ...a third is refused at once: the line is full.
    match model.chat(greedy("Say hi.", 8)).await {
        Err(ModelError::Unavailable(m)) => assert!(m.contains("busy"), "{m}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a full queue must refuse"),
    }
    // Background work has its own line, a share of it per tenant: it does not take a
    // person's place, and one tenant cannot fill it.
    let tenant = coachlibre_core::ids::TenantId::generate();
    let background = Priority::Background { tenant };
    let in_background = {
        let m = model.clone();
        tokio::spawn(PRIORITY.scope(background, async move {
            answer(&m, greedy("Say yes.", 4)).await
        }))
    };
    while model.queued() < 2 {
        tokio::task::yield_now().await;
    }
    match PRIORITY
        .scope(background, model.chat(greedy("Say no.", 4)))
        .await
    {
        Err(ModelError::Unavailable(m)) => assert!(m.contains("organisation"), "{m}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a tenant's share of the background line is bounded"),
    }
    // Dropping the first stream cancels it and frees the slot for the waiting one, which
    // was told it waits.
    drop(holder);
    let (text, events) = waiting.await.unwrap();
    assert!(!text.is_empty());
    assert_eq!(events.first(), Some(&ChatEvent::Waiting { ahead: 0 }));
    assert!(matches!(events.last(), Some(ChatEvent::Done { .. })));
    let (_, events) = in_background.await.unwrap();
    assert!(matches!(events.last(), Some(ChatEvent::Done { .. })));
    assert_eq!(model.queued(), 0);
}

#[tokio::test]
async fn tools_are_offered_in_the_prompt_and_the_turn_always_ends() {
    let model = Arc::new(shared());
    let req = ChatRequest {
        messages: vec![
            ChatMessage::system("You are a coach."),
            ChatMessage::user("Create a goal titled 'Run 10k'."),
        ],
        tools: vec![ToolSpec {
            name: "create_goal".into(),
            description: "Create a goal for the client.".into(),
            parameters: serde_json::json!({"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]}),
        }],
        params: GenerationParams {
            max_tokens: 64,
            temperature: 0.0,
            ..GenerationParams::default()
        },
    };
    let prompt = model.render_prompt(&req).unwrap();
    assert!(
        prompt.contains("<tool_call>") && prompt.contains("create_goal"),
        "{prompt}"
    );
    // A 135M model may or may not call the tool; either way the turn is a valid answer or a
    // validated call, and it ends with Done.
    let (_, events) = answer(&model, req).await;
    for e in &events {
        if let ChatEvent::ToolCall(c) = e {
            assert_eq!(c.name, "create_goal");
            assert!(c.arguments["title"].is_string(), "{c:?}");
        }
    }
    assert!(
        matches!(events.last(), Some(ChatEvent::Done { .. })),
        "{events:?}"
    );
}

fn embedding_gguf() -> PathBuf {
    installed("all-minilm-l6-v2")
}

fn embedder() -> coachlibre_models::embedded::EmbeddedEmbedder {
    static ENGINE: std::sync::OnceLock<coachlibre_models::embedded::EmbeddedEmbedder> =
        std::sync::OnceLock::new();
    ENGINE
        .get_or_init(|| {
            coachlibre_models::embedded::EmbeddedEmbedder::load(
                "all-minilm-l6-v2",
                &embedding_gguf(),
                2,
            )
            .expect("load")
        })
        .clone()
}

/// The integer products (the default where the CPU has AMX or VNNI) give the f32 model's
/// vectors to within 1e-3, and the same neighbour order for every reference sentence,
/// near-ties included (the benchmark's eight sentences: docs/benchmarks.md), on each integer
/// kernel this CPU has.
#[tokio::test]
async fn integer_products_keep_the_f32_models_vectors_and_ranking() {
    use coachlibre_core::model::EmbeddingModel;
    use coachlibre_models::embedded::EmbeddedEmbedder;
    use coachlibre_models::embedded::bert::Precision;
    let texts: Vec<String> = include_str!("../../../bench/reference_sentences.txt")
        .lines()
        .map(str::to_owned)
        .collect();
    let gguf = embedding_gguf();
    let exact = EmbeddedEmbedder::load_with("exact", &gguf, 2, Precision::F32).expect("f32");
    let a = exact.embed(&texts).await.expect("f32");
    let order = |v: &[Vec<f32>], i: usize| {
        let mut sims: Vec<(f32, usize)> = (0..v.len())
            .filter(|&j| j != i)
            .map(|j| (cosine(&v[i], &v[j]), j))
            .collect();
        sims.sort_by(|x, y| y.0.total_cmp(&x.0));
        sims.into_iter().map(|(_, j)| j).collect::<Vec<_>>()
    };
    for precision in [Precision::Amx, Precision::Int16] {
        if !precision.available() {
            eprintln!("{precision:?}: not on this CPU, skipped");
            continue;
        }
        let fast = EmbeddedEmbedder::load_with("fast", &gguf, 2, precision).expect("integer");
        let b = fast.embed(&texts).await.expect("integer");
        for i in 0..texts.len() {
            let diff = a[i]
                .iter()
                .zip(&b[i])
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(
                diff < 1e-3,
                "{precision:?}, sentence {i}: largest difference {diff}"
            );
            assert_eq!(
                order(&a, i),
                order(&b, i),
                "{precision:?}: neighbours of sentence {i}"
            );
        }
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[tokio::test]
async fn embeddings_rank_a_paraphrase_above_an_unrelated_sentence() {
    use coachlibre_core::model::EmbeddingModel;
    let model = embedder();
    assert_eq!(model.dimensions(), 384);
    let texts: Vec<String> = [
        "How can I stay focused while studying?",
        "Tips for concentrating when revising for exams.",
        "The recipe needs two cups of flour and an egg.",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let v = model.embed(&texts).await.expect("embed");
    assert_eq!(v.len(), 3);
    for x in &v {
        assert_eq!(x.len(), 384);
        assert!((cosine(x, x) - 1.0).abs() < 1e-4, "L2-normalised");
    }
    let (para, unrelated) = (cosine(&v[0], &v[1]), cosine(&v[0], &v[2]));
    assert!(
        para > unrelated + 0.3,
        "paraphrase {para} vs unrelated {unrelated}"
    );

    // One at a time gives the same vectors as in a batch.
    let single = model.embed(&texts[1..2]).await.expect("embed");
    assert!(
        cosine(&single[0], &v[1]) > 0.99999,
        "{}",
        cosine(&single[0], &v[1])
    );
    // Long inputs are truncated, not refused; empty input is empty output.
    let long = vec!["focus ".repeat(2000)];
    assert_eq!(model.embed(&long).await.expect("long").len(), 1);
    assert!(model.embed(&[]).await.expect("empty").is_empty());
}
