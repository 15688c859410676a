//! The server's [`ModelSource`]: chat models from the configured registry (providers, chains,
//! embedded engines, loaded on first use) and the configured embedding model for memories.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use coachlibre_core::model::{ChatModel, EmbeddingModel, ModelError, ModelSource};
use coachlibre_models::registry::Registry;

/// Models by name from the configuration.
#[derive(Debug)]
pub struct ConfiguredModels {
    registry: Registry,
    embedding: String,
    warned: AtomicBool,
}

impl ConfiguredModels {
    pub fn new(registry: Registry, embedding: String) -> Self {
        Self {
            registry,
            embedding,
            warned: AtomicBool::new(false),
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

impl ModelSource for ConfiguredModels {
    fn chat(&self, name: &str) -> Result<Arc<dyn ChatModel>, ModelError> {
        self.registry.chat(name)
    }

    fn embedder(&self) -> Option<Arc<dyn EmbeddingModel>> {
        match self.registry.embedding(&self.embedding) {
            Ok(e) => Some(e),
            Err(e) => {
                if !self.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "no embedding model: memories are recalled by recency (run `coachlibre models pull`)");
                }
                None
            }
        }
    }
}
