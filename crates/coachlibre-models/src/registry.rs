//! Chat models by name: a configured provider, an embedded model, or a fallback chain of
//! those (`[chains] coach = ["claude", "smollm2-135m-instruct"]`). Embedded engines are loaded
//! once and shared.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use coachlibre_core::model::{ChatModel, EmbeddingModel, ModelError};

use crate::catalog::{EMBEDDED, EmbeddedModel, ModelKind};
use crate::embedded::{EmbeddedChat, EmbeddedEmbedder, EngineOptions};
use crate::remote::{FallbackChat, OpenAiCompatible, ProviderConfig, ProviderKind, chat_model};

/// Chains may name chains; deeper than this is a configuration loop.
const MAX_DEPTH: usize = 4;

/// Resolves model names to chat models.
pub struct Registry {
    providers: BTreeMap<String, ProviderConfig>,
    chains: BTreeMap<String, Vec<String>>,
    models_dir: PathBuf,
    engines: Mutex<HashMap<&'static str, Arc<EmbeddedChat>>>,
    embedders: Mutex<HashMap<&'static str, Arc<EmbeddedEmbedder>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("providers", &self.providers.keys().collect::<Vec<_>>())
            .field("chains", &self.chains)
            .finish_non_exhaustive()
    }
}

impl Registry {
    pub fn new(
        providers: BTreeMap<String, ProviderConfig>,
        chains: BTreeMap<String, Vec<String>>,
        models_dir: PathBuf,
    ) -> Self {
        Self {
            providers,
            chains,
            models_dir,
            engines: Mutex::new(HashMap::new()),
            embedders: Mutex::new(HashMap::new()),
        }
    }

    /// Every chat model name this registry knows.
    pub fn chat_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.providers.keys().cloned().collect();
        names.extend(self.chains.keys().cloned());
        names.extend(
            EMBEDDED
                .iter()
                .filter(|m| m.kind == ModelKind::Chat)
                .map(|m| m.name.to_owned()),
        );
        names
    }

    /// The chat model called `name`.
    pub fn chat(&self, name: &str) -> Result<Arc<dyn ChatModel>, ModelError> {
        self.resolve(name, 0)
    }

    fn resolve(&self, name: &str, depth: usize) -> Result<Arc<dyn ChatModel>, ModelError> {
        if depth > MAX_DEPTH {
            return Err(ModelError::NotConfigured(format!(
                "chain '{name}' nests too deep (is there a loop in [chains]?)"
            )));
        }
        if let Some(p) = self.providers.get(name) {
            return chat_model(name, p.clone());
        }
        if let Some(members) = self.chains.get(name) {
            let chain = members
                .iter()
                .map(|m| self.resolve(m, depth + 1))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Arc::new(FallbackChat::new(chain)));
        }
        match EmbeddedModel::by_name(name) {
            Some(m) if m.kind == ModelKind::Chat => Ok(self.engine(m)?),
            _ => Err(ModelError::NotConfigured(format!(
                "no chat model named '{name}'; available: {}",
                self.chat_names().join(", ")
            ))),
        }
    }

    /// The embedding model called `name`: an OpenAI-compatible provider, or the embedded one.
    pub fn embedding(&self, name: &str) -> Result<Arc<dyn EmbeddingModel>, ModelError> {
        if let Some(p) = self.providers.get(name) {
            if p.kind != ProviderKind::OpenAi {
                return Err(ModelError::NotConfigured(format!(
                    "provider '{name}' has no embeddings API"
                )));
            }
            return Ok(Arc::new(OpenAiCompatible::new(name, p.clone())?));
        }
        let model = EmbeddedModel::by_name(name)
            .filter(|m| m.kind == ModelKind::Embedding)
            .ok_or_else(|| {
                ModelError::NotConfigured(format!("no embedding model named '{name}'"))
            })?;
        let path = model.primary_file(&self.models_dir).ok_or_else(|| {
            ModelError::NotConfigured(format!("{} has no model file", model.name))
        })?;
        let threads = EngineOptions::default().threads;
        Ok(get_or_load(&self.embedders, model.name, || {
            EmbeddedEmbedder::load(model.name, &path, threads)
        })?)
    }

    fn engine(&self, model: &'static EmbeddedModel) -> Result<Arc<EmbeddedChat>, ModelError> {
        let path = model.primary_file(&self.models_dir).ok_or_else(|| {
            ModelError::NotConfigured(format!("{} has no model file", model.name))
        })?;
        get_or_load(&self.engines, model.name, || {
            EmbeddedChat::load(model.name, &path, EngineOptions::default())
        })
    }
}

/// The engine loaded under `name`, loading it on first use (each engine holds its model in
/// memory, so it is loaded once).
fn get_or_load<T>(
    cache: &Mutex<HashMap<&'static str, Arc<T>>>,
    name: &'static str,
    load: impl FnOnce() -> Result<T, ModelError>,
) -> Result<Arc<T>, ModelError> {
    let mut cache = cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(e) = cache.get(name) {
        return Ok(e.clone());
    }
    let engine = Arc::new(load()?);
    cache.insert(name, engine.clone());
    Ok(engine)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_chains_and_loops() {
        let mut providers = BTreeMap::new();
        providers.insert(
            "remote".to_owned(),
            ProviderConfig::new("http://127.0.0.1:9/v1", "m"),
        );
        let mut chains = BTreeMap::new();
        chains.insert(
            "coach".to_owned(),
            vec!["remote".to_owned(), "remote".to_owned()],
        );
        chains.insert("loop".to_owned(), vec!["loop".to_owned()]);
        chains.insert("broken".to_owned(), vec!["nowhere".to_owned()]);
        let r = Registry::new(providers, chains, PathBuf::from("/nonexistent"));
        assert_eq!(r.chat("remote").unwrap().name(), "remote");
        assert_eq!(r.chat("coach").unwrap().name(), "remote -> remote");
        assert!(matches!(r.chat("loop"), Err(ModelError::NotConfigured(m)) if m.contains("loop")));
        assert!(
            matches!(r.chat("broken"), Err(ModelError::NotConfigured(m)) if m.contains("nowhere"))
        );
        // The embedded model without its file: a clear error, not a crash.
        assert!(
            matches!(r.chat("smollm2-135m-instruct"), Err(ModelError::NotConfigured(m)) if m.contains("models pull"))
        );
        assert!(r.chat_names().contains(&"smollm2-135m-instruct".to_owned()));
    }
}
