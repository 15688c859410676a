//! The model interface every agent talks to, whatever serves the model: the embedded engines
//! or a remote provider (OpenAI-compatible servers, Anthropic).
//!
//! A chat turn is a stream of [`ChatEvent`]s: text as it is generated, tool calls once they are
//! complete, and a final `Done` with token usage and cost. Dropping the stream cancels the
//! generation. Tool calls go through the same interface for every provider.

use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use futures_core::Stream;
use serde::{Deserialize, Serialize};

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChatRole {
    System,
    User,
    Assistant,
    /// The result of a tool call, answering `tool_call_id`.
    Tool,
}

/// A call the model asks the runtime to make.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ToolCall {
    /// Provider-assigned id, echoed in the tool's answer.
    pub id: String,
    pub name: String,
    /// The arguments, parsed as JSON (validated against the tool's schema by the runtime).
    #[schema(value_type = Object)]
    pub arguments: serde_json::Value,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: ChatRole,
    pub content: String,
    /// Calls made by an assistant message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For `Tool` messages: the call answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    fn plain(role: ChatRole, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }

    pub fn system(content: impl Into<String>) -> Self {
        Self::plain(ChatRole::System, content)
    }

    pub fn user(content: impl Into<String>) -> Self {
        Self::plain(ChatRole::User, content)
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        Self::plain(ChatRole::Assistant, content)
    }

    /// The answer to tool call `id`.
    pub fn tool(id: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            tool_call_id: Some(id.into()),
            ..Self::plain(ChatRole::Tool, content)
        }
    }
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments object.
    pub parameters: serde_json::Value,
}

/// Sampling and length settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct GenerationParams {
    pub max_tokens: u32,
    /// 0 means greedy.
    pub temperature: f32,
    pub top_p: f32,
    /// Fixes sampling for reproducible answers, where the provider supports it.
    pub seed: Option<u64>,
    /// Generation stops before any of these strings.
    pub stop: Vec<String>,
}

impl Default for GenerationParams {
    fn default() -> Self {
        Self {
            max_tokens: 512,
            temperature: 0.7,
            top_p: 0.95,
            seed: None,
            stop: Vec::new(),
        }
    }
}

/// A chat completion request.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    #[serde(default)]
    pub tools: Vec<ToolSpec>,
    #[serde(default)]
    pub params: GenerationParams,
}

/// Tokens consumed by one call, and what they cost.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// In US dollars, from the provider's configured prices (0 for embedded models).
    pub cost_usd: f64,
    /// True when the provider reported no usage and the counts are estimates (streamed
    /// chunks for the answer, characters / 4 for the prompt).
    #[serde(default)]
    pub estimated: bool,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model finished its answer (or hit a stop sequence).
    Stop,
    /// `max_tokens` was reached.
    Length,
    /// The model asked for tool calls.
    ToolCalls,
}

/// One step of a streamed answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ChatEvent {
    /// The model is busy: the request waits behind `ahead` others before it starts (sent at
    /// most once, first, by models that queue).
    Waiting { ahead: usize },
    /// Generated text.
    Token(String),
    /// A complete, parsed tool call.
    ToolCall(ToolCall),
    /// The end, with usage.
    Done { usage: Usage, finish: FinishReason },
}

/// What can go wrong talking to a model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    /// The provider cannot be reached or failed (connection error, timeout, 5xx). Retryable.
    #[error("model provider unavailable: {0}")]
    Unavailable(String),
    /// The provider asks us to slow down. Retryable after the delay.
    #[error("model provider rate limit{}", .retry_after.map(|d| format!(", retry after {} s", d.as_secs())).unwrap_or_default())]
    RateLimited { retry_after: Option<Duration> },
    /// The circuit breaker is open after repeated failures: not tried at all.
    #[error("model provider '{0}' is failing; not retried until it cools down")]
    CircuitOpen(String),
    /// The provider refused the request (4xx other than 429): not retryable.
    #[error("model provider refused the request: {0}")]
    Rejected(String),
    /// The provider answered something we cannot read.
    #[error("model provider answered malformed data: {0}")]
    Malformed(String),
    /// The model is not installed or not configured.
    #[error("model not available: {0}")]
    NotConfigured(String),
}

impl ModelError {
    /// Whether trying again (or another provider) may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Unavailable(_) | Self::RateLimited { .. } | Self::CircuitOpen(_)
        )
    }
}

/// A stream of chat events; dropping it cancels generation.
pub type ChatStream = Pin<Box<dyn Stream<Item = Result<ChatEvent, ModelError>> + Send>>;

/// A chat model.
#[async_trait]
pub trait ChatModel: Send + Sync {
    /// Name for logs and usage records.
    fn name(&self) -> &str;
    /// Start generating. Errors before the first event are returned here (so callers may
    /// retry or fall back); errors after it arrive in the stream.
    async fn chat(&self, request: ChatRequest) -> Result<ChatStream, ModelError>;
}

/// An embedding model.
#[async_trait]
pub trait EmbeddingModel: Send + Sync {
    /// Name for logs and usage records.
    fn name(&self) -> &str;
    /// Vector size.
    fn dimensions(&self) -> usize;
    /// One vector per text, in order.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ModelError>;
}

/// Where the runtime gets its models: chat models by name, and the embedding model used for
/// memories (absent when none is installed; recall then falls back to recency).
pub trait ModelSource: Send + Sync {
    /// The chat model (or chain) called `name`.
    fn chat(&self, name: &str) -> Result<std::sync::Arc<dyn ChatModel>, ModelError>;
    /// The embedding model for memories, if one is available.
    fn embedder(&self) -> Option<std::sync::Arc<dyn EmbeddingModel>>;
}

/// Who waits for a model: a person in a conversation, or background work (skills, workflows,
/// analyses) of a tenant. A model that queues serves people first, and lets no tenant's
/// background work fill its waiting line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Priority {
    #[default]
    Interactive,
    Background {
        tenant: crate::ids::TenantId,
    },
}

tokio::task_local! {
    /// The priority of the work the current task does (set around background jobs).
    pub static PRIORITY: Priority;
}

impl Priority {
    /// The current task's priority: interactive unless it runs inside
    /// [`PRIORITY`]`.scope(...)`.
    pub fn current() -> Self {
        PRIORITY.try_with(|p| *p).unwrap_or_default()
    }

    /// `fut`, run with the current task's priority (for work it spawns: task-locals do not
    /// cross `tokio::spawn`).
    pub fn carry<F: std::future::Future>(fut: F) -> impl std::future::Future<Output = F::Output> {
        PRIORITY.scope(Self::current(), fut)
    }
}
