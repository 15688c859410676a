//! The OpenAI-compatible provider against a real server installed from a registry:
//! llama-cpp-python's OpenAI-compatible server, serving the embedded model's GGUF.
//!
//! Ignored by default (it needs `pip install 'llama-cpp-python[server]'`); CI installs it and
//! runs `cargo test --workspace -- --ignored` with
//! `TEST_LLAMA_PYTHON` naming that Python.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use coachlibre_core::model::{
    ChatEvent, ChatMessage, ChatModel, ChatRequest, FinishReason, GenerationParams,
};
use coachlibre_models::EmbeddedModel;
use coachlibre_models::remote::{OpenAiCompatible, ProviderConfig};
use futures_util::StreamExt;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn gguf() -> PathBuf {
    let dir = std::env::var_os("COACHLIBRE_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/models"));
    EmbeddedModel::by_name("smollm2-135m-instruct")
        .and_then(|m| m.primary_file(&dir))
        .expect("catalog")
}

async fn start() -> (Server, String) {
    let python = std::env::var("TEST_LLAMA_PYTHON")
        .expect("set TEST_LLAMA_PYTHON to a Python with llama-cpp-python[server]");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let child = Command::new(python)
        .args(["-m", "llama_cpp.server", "--model"])
        .arg(gguf())
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--n_threads",
            "2",
            "--model_alias",
            "smol",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start llama_cpp.server");
    let server = Server(child);
    let base = format!("http://127.0.0.1:{port}/v1");
    let client = reqwest::Client::new();
    for _ in 0..120 {
        if client
            .get(format!("{base}/models"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return (server, base);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("llama_cpp.server did not come up");
}

#[tokio::test]
#[ignore = "needs llama-cpp-python[server]; CI runs it with --ignored"]
async fn streams_from_llama_cpp_python_server() {
    let (_server, base) = start().await;
    let model = OpenAiCompatible::new("llama-cpp-python", ProviderConfig::new(base, "smol"))
        .expect("provider");
    let req = |max_tokens| ChatRequest {
        messages: vec![
            ChatMessage::system("You are a helpful assistant."),
            ChatMessage::user("What is the capital of France?"),
        ],
        tools: Vec::new(),
        params: GenerationParams {
            max_tokens,
            temperature: 0.0,
            ..GenerationParams::default()
        },
    };
    let events: Vec<ChatEvent> = model
        .chat(req(48))
        .await
        .expect("chat")
        .map(|e| e.expect("event"))
        .collect()
        .await;
    let text: String = events
        .iter()
        .filter_map(|e| match e {
            ChatEvent::Token(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    assert!(text.contains("Paris"), "{text}");
    assert!(
        events
            .iter()
            .filter(|e| matches!(e, ChatEvent::Token(_)))
            .count()
            > 1,
        "streamed in pieces"
    );
    let Some(ChatEvent::Done { usage, .. }) = events.last() else {
        panic!("{events:?}")
    };
    // This server does not report usage when streaming: counts are estimated, never zero.
    assert!(
        usage.completion_tokens > 0 && usage.prompt_tokens > 0,
        "{usage:?}"
    );

    let events: Vec<ChatEvent> = model
        .chat(req(3))
        .await
        .expect("chat")
        .map(|e| e.expect("event"))
        .collect()
        .await;
    assert!(
        matches!(
            events.last(),
            Some(ChatEvent::Done {
                finish: FinishReason::Length,
                ..
            })
        ),
        "{events:?}"
    );
}
