//! An OpenAI-compatible facade over the caller's agents, so that existing OpenAI clients and
//! chat UIs talk with a CoachLibre coach: `GET /v1/models` lists the agents the caller may
//! talk to (by id; the name is accepted too), `POST /v1/chat/completions` runs a turn with one,
//! streamed (`stream: true`, OpenAI's chunk format ending with `data: [DONE]`) or not.
//!
//! The transcript the client sends is the prompt's window; the new user message and the
//! answer are also stored in the caller's API conversation with the agent, so memory works
//! as on the other channels.

use std::convert::Infallible;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use coachlibre_agent::{TurnEvent, TurnFinish};
use coachlibre_core::Error;
use coachlibre_core::actor::Actor;
use coachlibre_core::agent::Agent;
use coachlibre_core::conversation::Channel;
use coachlibre_core::model::{ChatMessage, GenerationParams, Usage};
use coachlibre_core::page::PageRequest;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Caller, Json};
use crate::state::AppState;

/// One model (agent) of the list.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelCard {
    /// The agent id: pass it as `model`.
    pub id: String,
    pub object: &'static str,
    pub created: i64,
    pub owned_by: &'static str,
    /// The agent's name (also accepted as `model`).
    pub name: String,
}

/// The model list.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelCard>,
}

async fn visible_agents(state: &AppState, actor: &Actor) -> Result<Vec<Agent>, ApiError> {
    let page = PageRequest::parse(Some(coachlibre_core::page::MAX_LIMIT), None)?;
    Ok(state.coaching.list_agents(actor, &page).await?.items)
}

/// The agents the caller may talk to, as OpenAI models.
#[utoipa::path(get, path = "/v1/models", tag = "openai", security(("bearer" = [])),
    responses((status = 200, description = "The caller's agents", body = ModelList)))]
pub async fn list_models(
    State(state): State<AppState>,
    Caller(actor): Caller,
) -> ApiResult<Json<ModelList>> {
    let data = visible_agents(&state, &actor)
        .await?
        .into_iter()
        .map(|a| ModelCard {
            id: a.id.to_string(),
            object: "model",
            created: a.created_at.timestamp(),
            owned_by: "coachlibre",
            name: a.name,
        })
        .collect();
    Ok(Json(ModelList {
        object: "list",
        data,
    }))
}

/// Message content: a string, or parts of which the text ones are read.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    #[schema(value_type = Vec<Object>)]
    Parts(Vec<Value>),
}

impl Content {
    fn text(&self) -> String {
        match self {
            Self::Text(t) => t.clone(),
            Self::Parts(parts) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

/// One message of the transcript.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CompletionMessage {
    /// `system`, `developer`, `user` or `assistant` (tool messages are ignored: the agent's
    /// tools run inside CoachLibre).
    pub role: String,
    pub content: Option<Content>,
}

/// Stop sequences: one or several.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

/// A chat completion request (fields CoachLibre does not use are accepted and ignored).
#[derive(Debug, Deserialize, ToSchema)]
pub struct CompletionRequest {
    /// An agent id from `GET /v1/models`, or its name.
    pub model: String,
    pub messages: Vec<CompletionMessage>,
    #[serde(default)]
    pub stream: bool,
    pub max_tokens: Option<u32>,
    pub max_completion_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub seed: Option<u64>,
    pub stop: Option<Stop>,
}

fn invalid(field: &'static str, message: &str) -> ApiError {
    Error::invalid(field, message).into()
}

impl CompletionRequest {
    /// The agent's settings with this request's overrides.
    fn params(&self, agent: &Agent) -> Result<GenerationParams, ApiError> {
        let mut p = agent.params.clone();
        if let Some(m) = self.max_completion_tokens.or(self.max_tokens) {
            if m == 0 || m > 8_192 {
                return Err(invalid("max_tokens", "must be between 1 and 8192"));
            }
            p.max_tokens = m;
        }
        if let Some(t) = self.temperature {
            if !(0.0..=2.0).contains(&t) {
                return Err(invalid("temperature", "must be between 0 and 2"));
            }
            p.temperature = t;
        }
        if let Some(t) = self.top_p {
            if !(t > 0.0 && t <= 1.0) {
                return Err(invalid("top_p", "must be in (0, 1]"));
            }
            p.top_p = t;
        }
        if self.seed.is_some() {
            p.seed = self.seed;
        }
        match &self.stop {
            Some(Stop::One(s)) => p.stop = vec![s.clone()],
            Some(Stop::Many(v)) if v.len() <= 4 => p.stop = v.clone(),
            Some(Stop::Many(_)) => return Err(invalid("stop", "at most 4 stop sequences")),
            None => {}
        }
        Ok(p)
    }

    /// The earlier transcript and the new user message.
    fn split(&self) -> Result<(Vec<ChatMessage>, String), ApiError> {
        let mut history = Vec::new();
        for m in &self.messages {
            let text = m.content.as_ref().map(Content::text).unwrap_or_default();
            match m.role.as_str() {
                "system" | "developer" => history.push(ChatMessage::system(text)),
                "user" => history.push(ChatMessage::user(text)),
                "assistant" => history.push(ChatMessage::assistant(text)),
                "tool" | "function" => {}
                other => {
                    return Err(invalid("messages", &format!("unknown role '{other}'")));
                }
            }
        }
        match history.pop() {
            Some(last) if last.role == coachlibre_core::model::ChatRole::User => {
                Ok((history, last.content))
            }
            _ => Err(invalid("messages", "the last message must be the user's")),
        }
    }
}

fn finish_reason(f: TurnFinish) -> &'static str {
    match f {
        TurnFinish::Length => "length",
        _ => "stop",
    }
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
    })
}

/// Talk with an agent the OpenAI way.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "openai", request_body = CompletionRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A chat.completion, or chat.completion.chunk events when streaming", body = Object),
        (status = 404, description = "No such agent for the caller", body = ErrorBody),
        (status = 422, description = "Invalid request", body = ErrorBody),
        (status = 503, description = "The agent's model is unavailable", body = ErrorBody)))]
pub async fn chat_completions(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Json(req): Json<CompletionRequest>,
) -> ApiResult<Response> {
    let agents = visible_agents(&state, &actor).await?;
    let agent = agents
        .into_iter()
        .find(|a| a.id.to_string() == req.model || a.name.eq_ignore_ascii_case(&req.model))
        .ok_or_else(|| ApiError::from(Error::not_found("model (agent)")))?;
    let params = req.params(&agent)?;
    let (history, text) = req.split()?;
    let conv = state
        .coaching
        .conversation_for(&actor, agent.id, Channel::Api)
        .await?;
    let mut turn = state
        .coaching
        .prepare_turn(&actor, conv.id, &text, Some(history))
        .await?;
    turn.params = Some(params);
    let rx = state.coaching.runtime().start(turn);
    let id = format!("chatcmpl-{}", uuid::Uuid::now_v7().simple());
    let created = coachlibre_core::now().timestamp();
    let model = agent.id.to_string();
    if req.stream {
        return Ok(stream(rx, id, created, model).into_response());
    }
    collect(rx, id, created, model).await
}

async fn collect(
    mut rx: mpsc::Receiver<TurnEvent>,
    id: String,
    created: i64,
    model: String,
) -> ApiResult<Response> {
    let mut text = String::new();
    while let Some(ev) = rx.recv().await {
        match ev {
            TurnEvent::Token { text: t } => text.push_str(&t),
            TurnEvent::Done { finish, usage, .. } => {
                return Ok(Json(json!({
                    "id": id,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [{
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": finish_reason(finish),
                    }],
                    "usage": usage_json(&usage),
                }))
                .into_response());
            }
            TurnEvent::Error { code, message } => {
                let status = if code == "model_unavailable" {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::CONFLICT
                };
                return Err(ApiError::new(status, code, message));
            }
            _ => {}
        }
    }
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "model_unavailable",
        "the turn ended without an answer",
    ))
}

fn chunk(id: &str, created: i64, model: &str, delta: Value, finish: Option<&str>) -> Event {
    Event::default().data(
        json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
        .to_string(),
    )
}

fn stream(
    rx: mpsc::Receiver<TurnEvent>,
    id: String,
    created: i64,
    model: String,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    // State: the receiver, whether the role chunk was sent, whether [DONE] was sent.
    let first = chunk(
        &id,
        created,
        &model,
        json!({"role": "assistant", "content": ""}),
        None,
    );
    let events = futures_util::stream::unfold(
        (rx, Some(first), false),
        move |(mut rx, mut opening, finished)| {
            let (id, model) = (id.clone(), model.clone());
            async move {
                if let Some(ev) = opening.take() {
                    return Some((Ok(ev), (rx, None, false)));
                }
                if finished {
                    return None;
                }
                loop {
                    match rx.recv().await {
                        Some(TurnEvent::Token { text }) => {
                            let ev = chunk(&id, created, &model, json!({"content": text}), None);
                            return Some((Ok(ev), (rx, None, false)));
                        }
                        Some(TurnEvent::Done { finish, usage, .. }) => {
                            let data = json!({
                                "id": id, "object": "chat.completion.chunk", "created": created,
                                "model": model,
                                "choices": [{"index": 0, "delta": {}, "finish_reason": finish_reason(finish)}],
                                "usage": usage_json(&usage),
                            });
                            let ev = Event::default().data(data.to_string());
                            return Some((Ok(ev), (rx, None, true)));
                        }
                        Some(TurnEvent::Error { code, message }) => {
                            let ev = Event::default().data(
                                json!({"error": {"code": code, "message": message}}).to_string(),
                            );
                            return Some((Ok(ev), (rx, None, true)));
                        }
                        Some(_) => {}
                        None => return None,
                    }
                }
            }
        },
    )
    .chain(futures_util::stream::once(async {
        Ok(Event::default().data("[DONE]"))
    }));
    Sse::new(events).keep_alive(KeepAlive::default())
}
