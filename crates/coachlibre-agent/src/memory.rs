//! Archival memory: remembering with replacement (same key, or nearly the same text), recall
//! by similarity to the current message, and extraction after each turn.

use std::sync::Arc;

use coachlibre_core::ids::{TenantId, UserId};
use coachlibre_core::memory::{Memory, MemoryKind, SAME_MEMORY_SIMILARITY, cosine, extract};
use coachlibre_core::model::EmbeddingModel;
use coachlibre_core::store::Store;
use coachlibre_core::{Error, Result};

/// Memories considered for recall and for replacement (the newest).
const CANDIDATES: i64 = 500;

/// The memory service of the runtime.
#[derive(Clone)]
pub struct Memories {
    store: Arc<dyn Store>,
    embedder: Option<Arc<dyn EmbeddingModel>>,
}

impl std::fmt::Debug for Memories {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memories")
            .field(
                "embedder",
                &self.embedder.as_ref().map(|e| e.name().to_owned()),
            )
            .finish()
    }
}

impl Memories {
    pub fn new(store: Arc<dyn Store>, embedder: Option<Arc<dyn EmbeddingModel>>) -> Self {
        Self { store, embedder }
    }

    /// Embed one text; `None` without an embedder or when it fails (memory still works,
    /// ranked by recency).
    async fn embed(&self, text: &str) -> Option<Vec<f32>> {
        let e = self.embedder.as_ref()?;
        match e.embed(&[text.to_owned()]).await {
            Ok(mut v) => v.pop(),
            Err(err) => {
                tracing::warn!(error = %err, "embedding failed; memory ranked by recency");
                None
            }
        }
    }

    /// Store a memory, replacing the one it updates: the same key, or (without a key) the
    /// same kind with nearly the same meaning.
    pub async fn remember(
        &self,
        tenant: TenantId,
        client: UserId,
        kind: MemoryKind,
        key: Option<String>,
        content: &str,
        source: &str,
    ) -> Result<Memory> {
        let mut new = Memory::new(tenant, client, kind, key, content, source)?;
        new.embedding = self.embed(&new.content).await;
        let existing = match &new.key {
            Some(k) => self.store.find_memory_by_key(tenant, client, k).await?,
            None => {
                let candidates = self
                    .store
                    .memories_for_recall(tenant, client, CANDIDATES)
                    .await?;
                candidates.into_iter().find(|m| {
                    m.kind == new.kind
                        && (m.content.eq_ignore_ascii_case(&new.content)
                            || match (&m.embedding, &new.embedding) {
                                (Some(a), Some(b)) => cosine(a, b) >= SAME_MEMORY_SIMILARITY,
                                _ => false,
                            })
                })
            }
        };
        match existing {
            Some(mut old) => {
                old.kind = new.kind;
                old.content = new.content;
                old.source = new.source;
                old.embedding = new.embedding;
                old.updated_at = coachlibre_core::now();
                self.store.update_memory(&old).await?;
                Ok(old)
            }
            None => {
                self.store.insert_memory(&new).await?;
                Ok(new)
            }
        }
    }

    /// The `limit` memories most relevant to `query` (most recent without embeddings).
    pub async fn recall(
        &self,
        tenant: TenantId,
        client: UserId,
        query: &str,
        limit: usize,
    ) -> Result<Vec<Memory>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut all = self
            .store
            .memories_for_recall(tenant, client, CANDIDATES)
            .await
            .map_err(Error::from)?;
        if all.len() > limit
            && let Some(q) = self.embed(query).await
        {
            let mut scored: Vec<(f32, Memory)> = all
                .into_iter()
                .map(|m| {
                    let s = m.embedding.as_deref().map_or(-1.0, |e| cosine(e, &q));
                    (s, m)
                })
                .collect();
            scored.sort_by(|a, b| b.0.total_cmp(&a.0));
            all = scored.into_iter().map(|(_, m)| m).collect();
        }
        all.truncate(limit);
        Ok(all)
    }

    /// Remember what the client's message says about them, and fill their profile's empty
    /// fields (the name always follows the latest statement).
    pub async fn extract_from(
        &self,
        tenant: TenantId,
        client: UserId,
        text: &str,
    ) -> Result<usize> {
        let found = extract(text);
        if found.is_empty() {
            return Ok(0);
        }
        let mut profile = self.store.get_profile(tenant, client).await?;
        let mut profile_changed = false;
        for e in &found {
            self.remember(
                tenant,
                client,
                e.kind,
                e.key.map(str::to_owned),
                &e.content,
                "extracted",
            )
            .await?;
            if let Some((field, value)) = &e.profile_field {
                let current = profile
                    .fields()
                    .into_iter()
                    .find(|(f, _)| f == field)
                    .map(|(_, v)| v.to_owned());
                if (*field == "name" || current.is_none())
                    && current.as_deref() != Some(value.as_str())
                    && profile.set(field, value).is_ok()
                {
                    profile_changed = true;
                }
            }
        }
        if profile_changed {
            self.store.put_profile(tenant, client, &profile).await?;
        }
        Ok(found.len())
    }
}
