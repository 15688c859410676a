//! The OpenAI-compatible provider: `/chat/completions` (streamed over SSE, with tool calls)
//! and `/embeddings`. One implementation covers Ollama, vLLM, llama.cpp's server, OpenRouter,
//! Mistral and OpenAI itself: they differ only in base URL, key and model name.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use coachlibre_core::model::{
    ChatEvent, ChatMessage, ChatModel, ChatRequest, ChatRole, ChatStream, EmbeddingModel,
    FinishReason, ModelError, ToolCall, Usage,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::resilience::{CircuitBreaker, RetryPolicy, call_with_retries};
use super::sse::SseDecoder;

/// How a provider is configured (`[providers.NAME]` in `coachlibre.toml`).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// e.g. `http://127.0.0.1:11434/v1` (Ollama) or `https://api.mistral.ai/v1`.
    pub base_url: String,
    /// Sent as a bearer token when present.
    #[serde(default)]
    pub api_key: Option<String>,
    /// The provider's model name.
    pub model: String,
    /// Vector size, for embedding models.
    #[serde(default)]
    pub dimensions: Option<usize>,
    /// US dollars per million prompt tokens.
    #[serde(default)]
    pub prompt_price_per_mtok: f64,
    /// US dollars per million completion tokens.
    #[serde(default)]
    pub completion_price_per_mtok: f64,
    /// Longest wait for a connection or for the next bytes of an answer.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Attempts per call, the first included.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Consecutive failures that open the circuit breaker.
    #[serde(default = "default_breaker_threshold")]
    pub breaker_threshold: u32,
    /// How long the breaker stays open.
    #[serde(default = "default_breaker_cooldown_secs")]
    pub breaker_cooldown_secs: u64,
}

fn default_timeout_secs() -> u64 {
    60
}
fn default_attempts() -> u32 {
    4
}
fn default_breaker_threshold() -> u32 {
    5
}
fn default_breaker_cooldown_secs() -> u64 {
    30
}

impl std::fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

impl ProviderConfig {
    /// A configuration with the defaults for everything but the address and model.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: None,
            model: model.into(),
            dimensions: None,
            prompt_price_per_mtok: 0.0,
            completion_price_per_mtok: 0.0,
            timeout_secs: default_timeout_secs(),
            max_attempts: default_attempts(),
            breaker_threshold: default_breaker_threshold(),
            breaker_cooldown_secs: default_breaker_cooldown_secs(),
        }
    }
}

/// A model on an OpenAI-compatible server.
#[derive(Debug, Clone)]
pub struct OpenAiCompatible {
    name: String,
    config: ProviderConfig,
    client: reqwest::Client,
    retry: RetryPolicy,
    breaker: Arc<CircuitBreaker>,
}

impl OpenAiCompatible {
    /// A provider named `name` (for logs and usage records).
    pub fn new(name: impl Into<String>, config: ProviderConfig) -> Result<Self, ModelError> {
        let name = name.into();
        let timeout = Duration::from_secs(config.timeout_secs.max(1));
        let client = reqwest::Client::builder()
            .connect_timeout(timeout)
            .read_timeout(timeout)
            .build()
            .map_err(|e| ModelError::NotConfigured(format!("HTTP client: {e}")))?;
        let breaker = Arc::new(CircuitBreaker::new(
            name.clone(),
            config.breaker_threshold,
            Duration::from_secs(config.breaker_cooldown_secs),
        ));
        let retry = RetryPolicy {
            max_attempts: config.max_attempts.max(1),
            ..RetryPolicy::default()
        };
        Ok(Self {
            name,
            config,
            client,
            retry,
            breaker,
        })
    }

    /// Replace the retry policy (tests use short delays).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The provider's breaker (to report its state).
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{}", self.config.base_url.trim_end_matches('/'), path)
    }

    async fn post(&self, path: &str, body: &Value) -> Result<reqwest::Response, ModelError> {
        let mut req = self.client.post(self.url(path)).json(body);
        if let Some(key) = &self.config.api_key {
            req = req.bearer_auth(key);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| ModelError::Unavailable(format!("{}: {e}", self.name)))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = resp.text().await.unwrap_or_default();
        let text: String = text.chars().take(500).collect();
        Err(match status.as_u16() {
            429 => ModelError::RateLimited { retry_after },
            408 | 500..=599 => {
                ModelError::Unavailable(format!("{}: HTTP {status}: {text}", self.name))
            }
            _ => ModelError::Rejected(format!("{}: HTTP {status}: {text}", self.name)),
        })
    }

    fn cost(&self, prompt: u32, completion: u32) -> f64 {
        (f64::from(prompt) * self.config.prompt_price_per_mtok
            + f64::from(completion) * self.config.completion_price_per_mtok)
            / 1e6
    }

    fn chat_body(&self, req: &ChatRequest) -> Value {
        let p = &req.params;
        let mut body = json!({
            "model": self.config.model,
            "messages": req.messages.iter().map(message_json).collect::<Vec<_>>(),
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_tokens": p.max_tokens,
            "temperature": p.temperature,
            "top_p": p.top_p,
        });
        if let Some(seed) = p.seed {
            body["seed"] = json!(seed);
        }
        if !p.stop.is_empty() {
            body["stop"] = json!(p.stop);
        }
        if !req.tools.is_empty() {
            body["tools"] = req
                .tools
                .iter()
                .map(|t| {
                    json!({"type": "function", "function": {
                        "name": t.name, "description": t.description, "parameters": t.parameters}})
                })
                .collect();
        }
        body
    }
}

fn message_json(m: &ChatMessage) -> Value {
    let role = match m.role {
        ChatRole::System => "system",
        ChatRole::User => "user",
        ChatRole::Assistant => "assistant",
        ChatRole::Tool => "tool",
    };
    let mut v = json!({"role": role, "content": m.content});
    if !m.tool_calls.is_empty() {
        v["tool_calls"] = m
            .tool_calls
            .iter()
            .map(|c| {
                json!({"id": c.id, "type": "function", "function": {
                    "name": c.name, "arguments": c.arguments.to_string()}})
            })
            .collect();
    }
    if let Some(id) = &m.tool_call_id {
        v["tool_call_id"] = json!(id);
    }
    v
}

/// A tool call being assembled from streamed fragments.
#[derive(Debug, Default)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
}

/// Accumulates one streamed completion.
#[derive(Debug, Default)]
struct Assembler {
    calls: BTreeMap<u64, PartialCall>,
    finish: Option<String>,
    usage: Option<(u32, u32)>,
}

impl Assembler {
    /// Read one `data:` payload; returns the text it adds.
    fn feed(&mut self, data: &str) -> Result<Option<String>, ModelError> {
        let v: Value = serde_json::from_str(data).map_err(|e| {
            ModelError::Malformed(format!("stream chunk is not JSON ({e}): {data:.200}"))
        })?;
        if let Some(err) = v.get("error") {
            return Err(ModelError::Unavailable(format!("provider error: {err}")));
        }
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            let n = |k: &str| {
                u.get(k)
                    .and_then(Value::as_u64)
                    .and_then(|x| u32::try_from(x).ok())
                    .unwrap_or(0)
            };
            self.usage = Some((n("prompt_tokens"), n("completion_tokens")));
        }
        let Some(choice) = v.get("choices").and_then(|c| c.get(0)) else {
            return Ok(None);
        };
        if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish = Some(f.to_owned());
        }
        let delta = choice.get("delta").unwrap_or(&Value::Null);
        for tc in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let index = tc.get("index").and_then(Value::as_u64).unwrap_or(0);
            let call = self.calls.entry(index).or_default();
            if let Some(id) = tc.get("id").and_then(Value::as_str) {
                call.id = id.to_owned();
            }
            if let Some(f) = tc.get("function") {
                if let Some(name) = f.get("name").and_then(Value::as_str) {
                    call.name.push_str(name);
                }
                if let Some(args) = f.get("arguments").and_then(Value::as_str) {
                    call.arguments.push_str(args);
                }
            }
        }
        Ok(delta
            .get("content")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned))
    }

    /// The tool calls and the final event.
    fn finish(self, cost: impl Fn(u32, u32) -> f64) -> Vec<ChatEvent> {
        let mut out: Vec<ChatEvent> = self
            .calls
            .into_values()
            .enumerate()
            .map(|(i, c)| {
                ChatEvent::ToolCall(ToolCall {
                    id: if c.id.is_empty() {
                        format!("call_{i}")
                    } else {
                        c.id
                    },
                    name: c.name,
                    // Unparseable arguments are passed on as text: the runtime's schema
                    // validation turns them into an error the model can correct.
                    arguments: serde_json::from_str(&c.arguments)
                        .unwrap_or(Value::String(c.arguments)),
                })
            })
            .collect();
        let has_calls = !out.is_empty();
        let finish = match self.finish.as_deref() {
            Some("length") => FinishReason::Length,
            Some("tool_calls") => FinishReason::ToolCalls,
            _ if has_calls => FinishReason::ToolCalls,
            _ => FinishReason::Stop,
        };
        let (prompt, completion) = self.usage.unwrap_or((0, 0));
        out.push(ChatEvent::Done {
            usage: Usage {
                prompt_tokens: prompt,
                completion_tokens: completion,
                cost_usd: cost(prompt, completion),
            },
            finish,
        });
        out
    }
}

#[async_trait]
impl ChatModel for OpenAiCompatible {
    fn name(&self) -> &str {
        &self.name
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatStream, ModelError> {
        let body = self.chat_body(&request);
        let mut resp = call_with_retries(&self.retry, &self.breaker, || {
            self.post("chat/completions", &body)
        })
        .await?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<ChatEvent, ModelError>>(64);
        let this = self.clone();
        // The reader stops (and drops the connection, cancelling generation upstream) as soon
        // as the consumer drops the stream.
        tokio::spawn(async move {
            let mut decoder = SseDecoder::default();
            let mut asm = Assembler::default();
            let mut done = false;
            while !done {
                let chunk = match resp.chunk().await {
                    Ok(Some(c)) => c,
                    Ok(None) => break,
                    Err(e) => {
                        this.breaker.record_failure();
                        let _ = tx
                            .send(Err(ModelError::Unavailable(format!(
                                "{}: stream interrupted: {e}",
                                this.name
                            ))))
                            .await;
                        return;
                    }
                };
                for ev in decoder.push(&chunk) {
                    if ev.data.trim() == "[DONE]" {
                        done = true;
                        break;
                    }
                    match asm.feed(&ev.data) {
                        Ok(Some(text)) => {
                            if tx.send(Ok(ChatEvent::Token(text))).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                    }
                }
            }
            for ev in asm.finish(|p, c| this.cost(p, c)) {
                if tx.send(Ok(ev)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Box::pin(futures_util::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|item| (item, rx)) },
        )))
    }
}

#[async_trait]
impl EmbeddingModel for OpenAiCompatible {
    fn name(&self) -> &str {
        &self.name
    }

    fn dimensions(&self) -> usize {
        self.config.dimensions.unwrap_or(0)
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ModelError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let body = json!({"model": self.config.model, "input": texts});
        let v: Value = call_with_retries(&self.retry, &self.breaker, || async {
            let resp = self.post("embeddings", &body).await?;
            resp.json::<Value>()
                .await
                .map_err(|e| ModelError::Malformed(format!("{}: embeddings: {e}", self.name)))
        })
        .await?;
        let data = v
            .get("data")
            .and_then(Value::as_array)
            .ok_or_else(|| ModelError::Malformed("embeddings answer has no data array".into()))?;
        let mut out: Vec<(u64, Vec<f32>)> = Vec::with_capacity(data.len());
        for (i, item) in data.iter().enumerate() {
            let index = item
                .get("index")
                .and_then(Value::as_u64)
                .unwrap_or(i as u64);
            let vector: Vec<f32> = item
                .get("embedding")
                .and_then(Value::as_array)
                .ok_or_else(|| ModelError::Malformed("embedding item without a vector".into()))?
                .iter()
                .map(|x| x.as_f64().map(|f| f as f32))
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    ModelError::Malformed("embedding vector holds a non-number".into())
                })?;
            out.push((index, vector));
        }
        if out.len() != texts.len() {
            return Err(ModelError::Malformed(format!(
                "asked for {} embeddings, got {}",
                texts.len(),
                out.len()
            )));
        }
        out.sort_by_key(|(i, _)| *i);
        Ok(out.into_iter().map(|(_, v)| v).collect())
    }
}
