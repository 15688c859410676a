//! Anthropic's Messages API (`/v1/messages`), streamed, with tool use.
//!
//! Differences from the OpenAI dialect handled here: the system prompt is a field of its own;
//! roles must alternate, so consecutive messages of one role are merged; tool calls are
//! `tool_use` content blocks and their answers `tool_result` blocks in a user message; the
//! stream is typed events (`content_block_start`, `content_block_delta` with `text_delta` or
//! `input_json_delta`, `message_delta` with the stop reason and output tokens).

use std::collections::BTreeMap;

use async_trait::async_trait;
use coachlibre_core::model::{
    ChatEvent, ChatModel, ChatRequest, ChatRole, ChatStream, FinishReason, ModelError, ToolCall,
};
use serde_json::{Value, json};

use super::http::{Assembler, Endpoint, parse_arguments, spawn_stream};
use super::sse::SseEvent;

/// The API version this client speaks.
const API_VERSION: &str = "2023-06-01";

/// A Claude model (or anything speaking the Messages API); `base_url` is the API root, e.g.
/// `https://api.anthropic.com`.
#[derive(Debug, Clone)]
pub struct Anthropic {
    endpoint: Endpoint,
}

super::http::endpoint_provider!(Anthropic);

impl Anthropic {
    fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = vec![("anthropic-version", API_VERSION.to_owned())];
        if let Some(k) = &self.endpoint.config.api_key {
            h.push(("x-api-key", k.clone()));
        }
        h
    }
}

/// The request body: system text apart, alternating roles, content blocks.
pub(crate) fn body(model: &str, req: &ChatRequest) -> Value {
    let system: Vec<&str> = req
        .messages
        .iter()
        .filter(|m| m.role == ChatRole::System)
        .map(|m| m.content.as_str())
        .collect();
    let mut messages: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for m in req.messages.iter().filter(|m| m.role != ChatRole::System) {
        let (role, blocks) = match m.role {
            ChatRole::Tool => (
                "user",
                vec![json!({"type": "tool_result",
                    "tool_use_id": m.tool_call_id.clone().unwrap_or_default(),
                    "content": m.content})],
            ),
            ChatRole::Assistant => {
                let mut b = Vec::new();
                if !m.content.is_empty() {
                    b.push(json!({"type": "text", "text": m.content}));
                }
                b.extend(m.tool_calls.iter().map(|c| {
                    json!({"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments})
                }));
                ("assistant", b)
            }
            _ => ("user", vec![json!({"type": "text", "text": m.content})]),
        };
        match messages.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(blocks),
            _ => messages.push((role, blocks)),
        }
    }
    let p = &req.params;
    let mut body = json!({
        "model": model,
        "max_tokens": p.max_tokens,
        "messages": messages.into_iter()
            .map(|(role, content)| json!({"role": role, "content": content}))
            .collect::<Vec<_>>(),
        "stream": true,
        "temperature": p.temperature,
        "top_p": p.top_p,
    });
    if !system.is_empty() {
        body["system"] = json!(system.join("\n\n"));
    }
    if !p.stop.is_empty() {
        body["stop_sequences"] = json!(p.stop);
    }
    if !req.tools.is_empty() {
        body["tools"] = req
            .tools
            .iter()
            .map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.parameters}))
            .collect();
    }
    body
}

#[derive(Debug, Default)]
struct Block {
    id: String,
    name: String,
    json: String,
}

#[derive(Debug, Default)]
struct AnthropicAssembler {
    tool_blocks: BTreeMap<u64, Block>,
    input_tokens: u32,
    output_tokens: u32,
    stop_reason: Option<String>,
}

fn count(v: &Value, key: &str) -> Option<u32> {
    v.get(key)
        .and_then(Value::as_u64)
        .and_then(|x| u32::try_from(x).ok())
}

impl Assembler for AnthropicAssembler {
    fn feed(&mut self, ev: &SseEvent) -> Result<Option<Vec<ChatEvent>>, ModelError> {
        let v: Value = serde_json::from_str(&ev.data).map_err(|e| {
            ModelError::Malformed(format!("stream event is not JSON ({e}): {:.200}", ev.data))
        })?;
        let kind = ev
            .event
            .as_deref()
            .or_else(|| v.get("type").and_then(Value::as_str))
            .unwrap_or("");
        let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
        match kind {
            "message_start" => {
                let usage = &v["message"]["usage"];
                self.input_tokens = count(usage, "input_tokens").unwrap_or(0);
                self.output_tokens = count(usage, "output_tokens").unwrap_or(0);
            }
            "content_block_start" => {
                let block = &v["content_block"];
                if block["type"] == "tool_use" {
                    self.tool_blocks.insert(
                        index,
                        Block {
                            id: block["id"].as_str().unwrap_or_default().to_owned(),
                            name: block["name"].as_str().unwrap_or_default().to_owned(),
                            json: String::new(),
                        },
                    );
                } else if let Some(text) = block["text"].as_str().filter(|t| !t.is_empty()) {
                    return Ok(Some(vec![ChatEvent::Token(text.to_owned())]));
                }
            }
            "content_block_delta" => {
                let delta = &v["delta"];
                match delta["type"].as_str() {
                    Some("text_delta") => {
                        let text = delta["text"].as_str().unwrap_or_default();
                        if !text.is_empty() {
                            return Ok(Some(vec![ChatEvent::Token(text.to_owned())]));
                        }
                    }
                    Some("input_json_delta") => {
                        if let Some(b) = self.tool_blocks.get_mut(&index) {
                            b.json
                                .push_str(delta["partial_json"].as_str().unwrap_or_default());
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(r) = v["delta"]["stop_reason"].as_str() {
                    self.stop_reason = Some(r.to_owned());
                }
                if let Some(n) = count(&v["usage"], "output_tokens") {
                    self.output_tokens = n;
                }
            }
            "message_stop" => return Ok(None),
            "error" => {
                let e = &v["error"];
                let msg = format!("{}: {}", e["type"], e["message"]);
                return Err(if e["type"] == "overloaded_error" {
                    ModelError::Unavailable(msg)
                } else {
                    ModelError::Rejected(msg)
                });
            }
            _ => {}
        }
        Ok(Some(Vec::new()))
    }

    fn finish(self: Box<Self>, endpoint: &Endpoint) -> Vec<ChatEvent> {
        let this = *self;
        let mut out: Vec<ChatEvent> = this
            .tool_blocks
            .into_values()
            .map(|b| {
                ChatEvent::ToolCall(ToolCall {
                    id: b.id,
                    name: b.name,
                    arguments: parse_arguments(b.json),
                })
            })
            .collect();
        let finish = match this.stop_reason.as_deref() {
            Some("max_tokens") => FinishReason::Length,
            Some("tool_use") => FinishReason::ToolCalls,
            _ if !out.is_empty() => FinishReason::ToolCalls,
            _ => FinishReason::Stop,
        };
        out.push(endpoint.done(this.input_tokens, this.output_tokens, false, finish));
        out
    }
}

#[async_trait]
impl ChatModel for Anthropic {
    fn name(&self) -> &str {
        &self.endpoint.name
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatStream, ModelError> {
        let body = body(&self.endpoint.config.model, &request);
        let resp = self
            .endpoint
            .post("v1/messages", &self.headers(), &body)
            .await?;
        Ok(spawn_stream(
            self.endpoint.clone(),
            resp,
            Box::<AnthropicAssembler>::default(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use coachlibre_core::model::ChatMessage;

    use super::*;

    #[test]
    fn system_apart_roles_alternate_tool_results_are_user_blocks() {
        let req = ChatRequest {
            messages: vec![
                ChatMessage::system("Be kind."),
                ChatMessage::user("hi"),
                ChatMessage {
                    tool_calls: vec![ToolCall {
                        id: "t1".into(),
                        name: "recall".into(),
                        arguments: json!({"q": "x"}),
                    }],
                    ..ChatMessage::assistant("looking")
                },
                ChatMessage::tool("t1", "found"),
                ChatMessage::user("thanks"),
            ],
            ..ChatRequest::default()
        };
        let b = body("claude", &req);
        assert_eq!(b["system"], "Be kind.");
        let msgs = b["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 3, "{b}");
        assert_eq!(msgs[1]["content"][1]["type"], "tool_use");
        assert_eq!(msgs[1]["content"][1]["input"], json!({"q": "x"}));
        assert_eq!(msgs[2]["role"], "user");
        assert_eq!(msgs[2]["content"][0]["type"], "tool_result");
        assert_eq!(msgs[2]["content"][1]["text"], "thanks");
    }
}
