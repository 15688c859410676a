//! The OpenAI-compatible dialect: `/chat/completions` (streamed over SSE, with tool calls)
//! and `/embeddings`. One implementation covers Ollama, vLLM, llama.cpp's server, OpenRouter,
//! Mistral and OpenAI itself: they differ only in base URL, key and model name.

use std::collections::BTreeMap;

use async_trait::async_trait;
use coachlibre_core::model::{
    ChatEvent, ChatMessage, ChatModel, ChatRequest, ChatRole, ChatStream, EmbeddingModel,
    FinishReason, ModelError, ToolCall,
};
use serde_json::{Value, json};

use super::http::{Assembler, Endpoint, parse_arguments, spawn_stream};
use super::sse::SseEvent;

/// A model on an OpenAI-compatible server.
#[derive(Debug, Clone)]
pub struct OpenAiCompatible {
    endpoint: Endpoint,
}

super::http::endpoint_provider!(OpenAiCompatible);

impl OpenAiCompatible {
    fn headers(&self) -> Vec<(&'static str, String)> {
        self.endpoint
            .config
            .api_key
            .as_ref()
            .map(|k| vec![("authorization", format!("Bearer {k}"))])
            .unwrap_or_default()
    }

    fn chat_body(&self, req: &ChatRequest) -> Value {
        let p = &req.params;
        let mut body = json!({
            "model": self.endpoint.config.model,
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
struct OpenAiAssembler {
    calls: BTreeMap<u64, PartialCall>,
    finish: Option<String>,
    usage: Option<(u32, u32)>,
    /// For servers that report no usage: streamed content chunks (about one token each)...
    chunks: u32,
    /// ...and the prompt's size in characters.
    prompt_chars: usize,
}

fn tokens(v: &Value, key: &str) -> u32 {
    v.get(key)
        .and_then(Value::as_u64)
        .and_then(|x| u32::try_from(x).ok())
        .unwrap_or(0)
}

impl Assembler for OpenAiAssembler {
    fn feed(&mut self, ev: &SseEvent) -> Result<Option<Vec<ChatEvent>>, ModelError> {
        let data = ev.data.trim();
        if data == "[DONE]" {
            return Ok(None);
        }
        let v: Value = serde_json::from_str(data).map_err(|e| {
            ModelError::Malformed(format!("stream chunk is not JSON ({e}): {data:.200}"))
        })?;
        if let Some(err) = v.get("error") {
            return Err(ModelError::Unavailable(format!("provider error: {err}")));
        }
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            self.usage = Some((tokens(u, "prompt_tokens"), tokens(u, "completion_tokens")));
        }
        let Some(choice) = v.get("choices").and_then(|c| c.get(0)) else {
            return Ok(Some(Vec::new()));
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
        let token = delta
            .get("content")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(|s| ChatEvent::Token(s.to_owned()));
        self.chunks += u32::from(token.is_some());
        Ok(Some(token.into_iter().collect()))
    }

    fn finish(self: Box<Self>, endpoint: &Endpoint) -> Vec<ChatEvent> {
        let this = *self;
        let mut out: Vec<ChatEvent> = this
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
                    arguments: parse_arguments(c.arguments),
                })
            })
            .collect();
        let finish = match this.finish.as_deref() {
            Some("length") => FinishReason::Length,
            Some("tool_calls") => FinishReason::ToolCalls,
            _ if !out.is_empty() => FinishReason::ToolCalls,
            _ => FinishReason::Stop,
        };
        let estimate = || {
            let prompt = u32::try_from(this.prompt_chars.div_ceil(4)).unwrap_or(u32::MAX);
            (prompt, this.chunks + u32::try_from(out.len()).unwrap_or(0))
        };
        let ((prompt, completion), estimated) = match this.usage {
            Some(u) => (u, false),
            None => (estimate(), true),
        };
        out.push(endpoint.done(prompt, completion, estimated, finish));
        out
    }
}

#[async_trait]
impl ChatModel for OpenAiCompatible {
    fn name(&self) -> &str {
        &self.endpoint.name
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatStream, ModelError> {
        let body = self.chat_body(&request);
        let resp = self
            .endpoint
            .post("chat/completions", &self.headers(), &body)
            .await?;
        let prompt_chars = request
            .messages
            .iter()
            .map(|m| m.content.chars().count())
            .sum();
        Ok(spawn_stream(
            self.endpoint.clone(),
            resp,
            Box::new(OpenAiAssembler {
                prompt_chars,
                ..OpenAiAssembler::default()
            }),
        ))
    }
}

#[async_trait]
impl EmbeddingModel for OpenAiCompatible {
    fn name(&self) -> &str {
        &self.endpoint.name
    }

    fn dimensions(&self) -> usize {
        self.endpoint.config.dimensions.unwrap_or(0)
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ModelError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let body = json!({"model": self.endpoint.config.model, "input": texts});
        let headers = self.headers();
        let ep = &self.endpoint;
        let v: Value = super::resilience::call_with_retries(&ep.retry, &ep.breaker, || async {
            let resp = ep.post_once("embeddings", &headers, &body).await?;
            resp.json::<Value>()
                .await
                .map_err(|e| ModelError::Malformed(format!("{}: embeddings: {e}", ep.name)))
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
