//! Models served over HTTP: any OpenAI-compatible server (Ollama, vLLM, llama.cpp's server,
//! OpenRouter, Mistral, OpenAI) and Anthropic's Messages API, with the resilience every
//! remote call needs: timeouts, retries with backoff and jitter honouring `Retry-After`, a
//! circuit breaker per provider, and fallback chains.

pub mod anthropic;
pub mod fallback;
mod http;
pub mod openai;
pub mod resilience;
mod sse;

use std::sync::Arc;

use coachlibre_core::model::{ChatModel, ModelError};
use serde::{Deserialize, Serialize};

pub use anthropic::Anthropic;
pub use fallback::FallbackChat;
pub use openai::OpenAiCompatible;
pub use resilience::{CircuitBreaker, RetryPolicy};

/// The wire protocol a provider speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// `/chat/completions` and `/embeddings`.
    #[default]
    OpenAi,
    /// `/v1/messages`.
    Anthropic,
}

/// How a provider is configured (`[providers.NAME]` in `coachlibre.toml`).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// `openai` (default) or `anthropic`.
    #[serde(default)]
    pub kind: ProviderKind,
    /// e.g. `http://127.0.0.1:11434/v1` (Ollama) or `https://api.mistral.ai/v1`.
    pub base_url: String,
    /// Sent as a bearer token (OpenAI) or `x-api-key` (Anthropic) when present. Printed as
    /// `***` whenever the configuration is shown.
    #[serde(default, serialize_with = "masked")]
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
            .field("kind", &self.kind)
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
            kind: ProviderKind::OpenAi,
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

fn masked<S: serde::Serializer>(key: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match key {
        Some(_) => s.serialize_str("***"),
        None => s.serialize_none(),
    }
}

/// Build the chat model a configuration describes.
pub fn chat_model(name: &str, config: ProviderConfig) -> Result<Arc<dyn ChatModel>, ModelError> {
    Ok(match config.kind {
        ProviderKind::OpenAi => Arc::new(OpenAiCompatible::new(name, config)?),
        ProviderKind::Anthropic => Arc::new(Anthropic::new(name, config)?),
    })
}
