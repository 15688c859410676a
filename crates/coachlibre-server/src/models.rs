//! The server's [`ModelSource`]: chat models from the configured registry (providers, chains,
//! embedded engines, loaded on first use) and the configured embedding model for memories.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use coachlibre_core::model::{ChatModel, EmbeddingModel, ModelError, ModelSource};
use coachlibre_models::registry::Registry;

/// Models by name from the configuration.
pub struct ConfiguredModels {
    registry: Registry,
    embedding: String,
    /// The embedder once it loaded (until then, each turn tries again: the models may be
    /// pulled while the server runs).
    embedder: OnceLock<Arc<dyn EmbeddingModel>>,
    warned: AtomicBool,
}

impl std::fmt::Debug for ConfiguredModels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfiguredModels")
            .field("registry", &self.registry)
            .field("embedding", &self.embedding)
            .finish_non_exhaustive()
    }
}

impl ConfiguredModels {
    pub fn new(registry: Registry, embedding: String) -> Self {
        Self {
            registry,
            embedding,
            embedder: OnceLock::new(),
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
        if let Some(e) = self.embedder.get() {
            return Some(e.clone());
        }
        match self.registry.embedding(&self.embedding) {
            Ok(e) => Some(self.embedder.get_or_init(|| e).clone()),
            Err(e) => {
                if !self.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "no embedding model: memories are recalled by recency (run `coachlibre models pull`)");
                }
                None
            }
        }
    }
}
