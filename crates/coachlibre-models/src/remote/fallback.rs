//! A chain of chat models: the first that starts answering wins (e.g. remote → embedded).

use std::sync::Arc;

use async_trait::async_trait;
use coachlibre_core::model::{ChatModel, ChatRequest, ChatStream, ModelError};

/// Tries each model in order while the failure is transient (unreachable, rate limited,
/// circuit open); a refusal of the request itself is returned at once, since another model
/// would refuse it too.
#[derive(Clone)]
pub struct FallbackChat {
    name: String,
    chain: Vec<Arc<dyn ChatModel>>,
}

impl std::fmt::Debug for FallbackChat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.chain.iter().map(|m| m.name()).collect();
        f.debug_struct("FallbackChat")
            .field("chain", &names)
            .finish()
    }
}

impl FallbackChat {
    pub fn new(chain: Vec<Arc<dyn ChatModel>>) -> Self {
        let name = chain
            .iter()
            .map(|m| m.name())
            .collect::<Vec<_>>()
            .join(" -> ");
        Self { name, chain }
    }
}

#[async_trait]
impl ChatModel for FallbackChat {
    fn name(&self) -> &str {
        &self.name
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatStream, ModelError> {
        let mut last = ModelError::NotConfigured("the fallback chain is empty".into());
        for model in &self.chain {
            match model.chat(request.clone()).await {
                Ok(stream) => return Ok(stream),
                Err(e) if e.is_transient() => {
                    tracing::warn!(model = model.name(), error = %e, "falling back to the next model");
                    last = e;
                }
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }
}
