//! The remote providers against a scripted local server: streaming with tool calls (OpenAI
//! and Anthropic dialects), 429 with Retry-After, 5xx retries, the circuit breaker, slow and
//! malformed answers, refusals, fallback to another model, and embeddings.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use coachlibre_core::model::{
    ChatEvent, ChatMessage, ChatModel, ChatRequest, EmbeddingModel, FinishReason, ModelError,
    ToolCall, ToolSpec,
};
use coachlibre_models::remote::{
    Anthropic, FallbackChat, OpenAiCompatible, ProviderConfig, ProviderKind, RetryPolicy,
    chat_model,
};
use futures_util::StreamExt;
use serde_json::{Value, json};

enum Reply {
    Status(u16, Option<u64>),
    Stream(Vec<Value>),
    Raw(&'static str),
    Slow(Duration),
    Json(Value),
}

#[derive(Default)]
struct Script {
    replies: Mutex<VecDeque<Reply>>,
    requests: Mutex<Vec<Value>>,
}

impl Script {
    fn count(&self) -> usize {
        self.requests.lock().expect("script lock").len()
    }
}

async fn handle(State(s): State<Arc<Script>>, body: axum::Json<Value>) -> Response {
    s.requests.lock().expect("script lock").push(body.0);
    let reply = s
        .replies
        .lock()
        .expect("script lock")
        .pop_front()
        .unwrap_or(Reply::Status(500, None));
    match reply {
        Reply::Status(code, retry_after) => {
            let mut r = (
                StatusCode::from_u16(code).expect("status"),
                "scripted failure",
            )
                .into_response();
            if let Some(secs) = retry_after {
                r.headers_mut().insert(
                    header::RETRY_AFTER,
                    secs.to_string().parse().expect("header"),
                );
            }
            r
        }
        Reply::Stream(chunks) => {
            let mut body = String::new();
            for c in chunks {
                body.push_str(&format!("data: {c}\n\n"));
            }
            body.push_str("data: [DONE]\n\n");
            ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response()
        }
        Reply::Raw(text) => ([(header::CONTENT_TYPE, "text/event-stream")], text).into_response(),
        Reply::Slow(d) => {
            tokio::time::sleep(d).await;
            "too late".into_response()
        }
        Reply::Json(v) => axum::Json(v).into_response(),
    }
}

async fn server(replies: Vec<Reply>) -> (Arc<Script>, String) {
    let script = Arc::new(Script {
        replies: Mutex::new(replies.into()),
        requests: Mutex::default(),
    });
    let app = Router::new()
        .route("/v1/chat/completions", post(handle))
        .route("/v1/embeddings", post(handle))
        .route("/v1/messages", post(handle))
        .with_state(script.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    (script, format!("http://{addr}/v1"))
}

fn provider(url: &str, tweak: impl FnOnce(&mut ProviderConfig)) -> OpenAiCompatible {
    let mut cfg = ProviderConfig::new(url, "test-model");
    cfg.prompt_price_per_mtok = 1.0;
    cfg.completion_price_per_mtok = 2.0;
    tweak(&mut cfg);
    OpenAiCompatible::new("scripted", cfg)
        .expect("provider")
        .with_retry(RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            max_retry_after: Duration::from_secs(2),
        })
}

fn delta(v: Value) -> Value {
    json!({"choices": [{"index": 0, "delta": v, "finish_reason": null}]})
}

async fn collect(model: &dyn ChatModel, req: ChatRequest) -> Result<Vec<ChatEvent>, ModelError> {
    let stream = model.chat(req).await?;
    stream.collect::<Vec<_>>().await.into_iter().collect()
}

fn hello() -> ChatRequest {
    ChatRequest {
        messages: vec![ChatMessage::user("hello")],
        ..ChatRequest::default()
    }
}

#[tokio::test]
async fn streams_tokens_tool_calls_and_usage() {
    let (script, url) = server(vec![Reply::Stream(vec![
        delta(json!({"role": "assistant", "content": ""})),
        delta(json!({"content": "Let me "})),
        delta(json!({"content": "check."})),
        delta(json!({"tool_calls": [{"index": 0, "id": "call_a", "type": "function", "function": {"name": "list_goals", "arguments": "{\"sta"}}]})),
        delta(json!({"tool_calls": [{"index": 0, "function": {"arguments": "tus\": \"open\"}"}}]})),
        json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
        json!({"choices": [], "usage": {"prompt_tokens": 1000, "completion_tokens": 500}}),
    ])])
    .await;
    let model = provider(&url, |_| {});
    let req = ChatRequest {
        messages: vec![
            ChatMessage::system("You are a coach."),
            ChatMessage::user("What are my goals?"),
            ChatMessage {
                tool_calls: vec![ToolCall {
                    id: "c0".into(),
                    name: "recall".into(),
                    arguments: json!({}),
                }],
                ..ChatMessage::assistant("")
            },
            ChatMessage::tool("c0", "nothing"),
        ],
        tools: vec![ToolSpec {
            name: "list_goals".into(),
            description: "List goals".into(),
            parameters: json!({"type": "object"}),
        }],
        ..ChatRequest::default()
    };
    let events = collect(&model, req).await.unwrap();
    assert_eq!(events[0], ChatEvent::Token("Let me ".into()));
    assert_eq!(events[1], ChatEvent::Token("check.".into()));
    assert_eq!(
        events[2],
        ChatEvent::ToolCall(ToolCall {
            id: "call_a".into(),
            name: "list_goals".into(),
            arguments: json!({"status": "open"})
        })
    );
    let ChatEvent::Done { usage, finish } = &events[3] else {
        panic!("{events:?}")
    };
    assert_eq!(*finish, FinishReason::ToolCalls);
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (1000, 500));
    assert!((usage.cost_usd - 0.002).abs() < 1e-12, "{}", usage.cost_usd);
    assert!(!usage.estimated, "reported by the server");

    // What was sent: OpenAI's wire format.
    let sent = &script.requests.lock().unwrap()[0];
    assert_eq!(sent["model"], "test-model");
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["tools"][0]["function"]["name"], "list_goals");
    assert_eq!(
        sent["messages"][2]["tool_calls"][0]["function"]["name"],
        "recall"
    );
    assert_eq!(sent["messages"][3]["role"], "tool");
    assert_eq!(sent["messages"][3]["tool_call_id"], "c0");
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retried() {
    let ok = || Reply::Stream(vec![delta(json!({"content": "hi"}))]);
    let (script, url) = server(vec![
        Reply::Status(429, Some(0)),
        Reply::Status(503, None),
        ok(),
    ])
    .await;
    let model = provider(&url, |_| {});
    let events = collect(&model, hello()).await.unwrap();
    assert_eq!(events[0], ChatEvent::Token("hi".into()));
    assert_eq!(script.count(), 3);

    // A Retry-After longer than the policy accepts is reported, not waited for.
    let (script, url) = server(vec![Reply::Status(429, Some(120))]).await;
    let err = collect(&provider(&url, |_| {}), hello()).await.unwrap_err();
    assert_eq!(
        err,
        ModelError::RateLimited {
            retry_after: Some(Duration::from_secs(120))
        }
    );
    assert_eq!(script.count(), 1);
}

#[tokio::test]
async fn refusals_are_not_retried() {
    let (script, url) = server(vec![Reply::Status(400, None)]).await;
    let err = collect(&provider(&url, |_| {}), hello()).await.unwrap_err();
    assert!(
        matches!(err, ModelError::Rejected(ref m) if m.contains("400")),
        "{err}"
    );
    assert_eq!(script.count(), 1);
}

#[tokio::test]
async fn the_breaker_opens_after_repeated_failures() {
    let (script, url) = server(vec![]).await; // every call: 500
    let model = provider(&url, |c| {
        c.breaker_threshold = 3;
        c.breaker_cooldown_secs = 3600;
    });
    let err = collect(&model, hello()).await.unwrap_err();
    assert!(
        matches!(err, ModelError::CircuitOpen(_) | ModelError::Unavailable(_)),
        "{err}"
    );
    assert_eq!(script.count(), 3);
    assert!(model.breaker().is_open());
    // Open: refused without touching the server.
    let err = collect(&model, hello()).await.unwrap_err();
    assert!(matches!(err, ModelError::CircuitOpen(_)), "{err}");
    assert_eq!(script.count(), 3);
}

#[tokio::test]
async fn slow_and_malformed_answers() {
    let (_, url) = server(vec![
        Reply::Slow(Duration::from_secs(5)),
        Reply::Slow(Duration::from_secs(5)),
        Reply::Slow(Duration::from_secs(5)),
    ])
    .await;
    let model = provider(&url, |c| c.timeout_secs = 1);
    let err = collect(&model, hello()).await.unwrap_err();
    assert!(matches!(err, ModelError::Unavailable(_)), "{err}");

    let (_, url) = server(vec![Reply::Raw("data: {not json\n\n")]).await;
    let err = collect(&provider(&url, |_| {}), hello()).await.unwrap_err();
    assert!(matches!(err, ModelError::Malformed(_)), "{err}");

    // A stream that ends without [DONE] still finishes cleanly with what it had.
    let (_, url) = server(vec![Reply::Raw(
        "data: {\"choices\":[{\"delta\":{\"content\":\"partial\"}}]}\n\n",
    )])
    .await;
    let events = collect(&provider(&url, |_| {}), hello()).await.unwrap();
    assert_eq!(events[0], ChatEvent::Token("partial".into()));
    // No usage reported: estimated (one streamed chunk; "hello" is 5 characters, ~2 tokens).
    let Some(ChatEvent::Done { usage, .. }) = events.last() else {
        panic!("{events:?}")
    };
    assert!(usage.estimated, "{usage:?}");
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (2, 1));
}

#[tokio::test]
async fn fallback_moves_on_when_the_first_model_is_down() {
    let (down, down_url) = server(vec![]).await;
    let (_, up_url) = server(vec![Reply::Stream(vec![delta(
        json!({"content": "from backup"}),
    )])])
    .await;
    let chain = FallbackChat::new(vec![
        Arc::new(provider(&down_url, |_| {})) as Arc<dyn ChatModel>,
        Arc::new(provider(&up_url, |_| {})),
    ]);
    assert_eq!(chain.name(), "scripted -> scripted");
    let events = collect(&chain, hello()).await.unwrap();
    assert_eq!(events[0], ChatEvent::Token("from backup".into()));
    assert_eq!(down.count(), 3);

    // A refusal is final: the backup is not asked.
    let (_, bad_url) = server(vec![Reply::Status(422, None)]).await;
    let (backup, backup_url) = server(vec![]).await;
    let chain = FallbackChat::new(vec![
        Arc::new(provider(&bad_url, |_| {})) as Arc<dyn ChatModel>,
        Arc::new(provider(&backup_url, |_| {})),
    ]);
    assert!(matches!(
        collect(&chain, hello()).await,
        Err(ModelError::Rejected(_))
    ));
    assert_eq!(backup.count(), 0);
}

#[tokio::test]
async fn embeddings_come_back_in_input_order() {
    let (script, url) = server(vec![
        Reply::Status(502, None),
        Reply::Json(json!({"data": [
            {"index": 1, "embedding": [0.0, 1.0]},
            {"index": 0, "embedding": [1.0, 0.0]}
        ]})),
        Reply::Json(json!({"data": [{"index": 0, "embedding": [1.0, "x"]}]})),
    ])
    .await;
    let model = provider(&url, |c| c.dimensions = Some(2));
    assert_eq!(model.dimensions(), 2);
    let v = model.embed(&["a".into(), "b".into()]).await.unwrap();
    assert_eq!(v, vec![vec![1.0, 0.0], vec![0.0, 1.0]]);
    assert_eq!(script.count(), 2);
    assert_eq!(
        script.requests.lock().unwrap()[1]["input"],
        json!(["a", "b"])
    );
    let err = model.embed(&["c".into()]).await.unwrap_err();
    assert!(matches!(err, ModelError::Malformed(_)), "{err}");
    assert!(model.embed(&[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn anthropic_streams_text_and_tool_use() {
    let events = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":200,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: ping\ndata: {\"type\":\"ping\"}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Sure, \"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"booking.\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"schedule_reminder\",\"input\":{}}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"at\\\": \\\"09:00\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"}\"}}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":40}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );
    let (script, url) = server(vec![Reply::Raw(events)]).await;
    let base = url.trim_end_matches("/v1").to_owned();
    let mut cfg = ProviderConfig::new(base, "claude-test");
    cfg.kind = ProviderKind::Anthropic;
    cfg.api_key = Some("sk-test".into());
    cfg.prompt_price_per_mtok = 3.0;
    cfg.completion_price_per_mtok = 15.0;
    let model = chat_model("claude", cfg).expect("model");
    let req = ChatRequest {
        messages: vec![
            ChatMessage::system("You are a coach."),
            ChatMessage::user("Remind me at 9"),
        ],
        tools: vec![ToolSpec {
            name: "schedule_reminder".into(),
            description: "Remind".into(),
            parameters: json!({"type": "object"}),
        }],
        ..ChatRequest::default()
    };
    let events = collect(model.as_ref(), req).await.unwrap();
    assert_eq!(events[0], ChatEvent::Token("Sure, ".into()));
    assert_eq!(events[1], ChatEvent::Token("booking.".into()));
    assert_eq!(
        events[2],
        ChatEvent::ToolCall(ToolCall {
            id: "toolu_1".into(),
            name: "schedule_reminder".into(),
            arguments: json!({"at": "09:00"})
        })
    );
    let ChatEvent::Done { usage, finish } = &events[3] else {
        panic!("{events:?}")
    };
    assert_eq!(*finish, FinishReason::ToolCalls);
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (200, 40));
    assert!((usage.cost_usd - (200.0 * 3.0 + 40.0 * 15.0) / 1e6).abs() < 1e-12);
    let sent = script.requests.lock().unwrap()[0].clone();
    assert_eq!(sent["system"], "You are a coach.");
    assert_eq!(sent["tools"][0]["input_schema"], json!({"type": "object"}));
    assert_eq!(sent["model"], "claude-test");

    // Overload (529) is retried like any 5xx; the retry policy is the provider's.
    let (script, url) = server(vec![
        Reply::Status(529, None),
        Reply::Raw("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"),
    ])
    .await;
    let mut cfg = ProviderConfig::new(url.trim_end_matches("/v1"), "claude-test");
    cfg.kind = ProviderKind::Anthropic;
    let model = Anthropic::new("claude", cfg)
        .expect("model")
        .with_retry(RetryPolicy {
            max_attempts: 2,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            max_retry_after: Duration::from_secs(1),
        });
    let events = collect(&model, hello()).await.unwrap();
    assert!(matches!(events.last(), Some(ChatEvent::Done { .. })));
    assert_eq!(script.count(), 2);
}
