//! Models served over HTTP: any OpenAI-compatible server (Ollama, vLLM, llama.cpp's server,
//! OpenRouter, Mistral, OpenAI), with the resilience every remote call needs.

pub mod fallback;
pub mod openai;
pub mod resilience;
mod sse;

pub use fallback::FallbackChat;
pub use openai::{OpenAiCompatible, ProviderConfig};
pub use resilience::{CircuitBreaker, RetryPolicy};
