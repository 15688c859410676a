//! The coach's own material: collections of documents that agents answer from and cite.
//!
//! - [`extract`]: uploaded bytes to structured text (plain text, Markdown, HTML, PDF);
//! - chunking: [`coachlibre_core::knowledge::chunk_text`] (headings, paragraphs, overlap, a
//!   token budget);
//! - ingestion: uploads are stored at once with status `pending`; a background worker chunks
//!   and embeds them in batches (progress in `chunks_done`/`chunks_total`) and replaces the
//!   document's chunks in one transaction (status `ready`); documents left pending by a stop
//!   are taken up again at start;
//! - [`index`]: per-tenant in-memory BM25 + vector index, rebuilt from the database when the
//!   tenant's knowledge epoch moves (so several processes on one PostgreSQL stay in step);
//! - [`Knowledge`]: the service, with its permission rules: a coach manages their own
//!   collections and reads the practice's shared ones; an admin manages all; a client reads
//!   (searches, opens cited passages) their coaches' and the shared collections.

pub mod extract;
pub mod fetch;
pub mod hnsw;
pub mod index;
pub mod sandbox;
pub mod simd;

use coachlibre_core::event::{EventKind, EventSink, EventSlot};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use coachlibre_core::actor::Actor;
use coachlibre_core::ids::{ChunkId, CollectionId, DocumentId, TenantId, UserId};
use coachlibre_core::knowledge::{
    Chunk, ChunkPolicy, Collection, Document, DocumentStatus, KnowledgeSource, Passage,
    check_description, check_name, chunk_text, title_of,
};
use coachlibre_core::model::EmbeddingModel;
use coachlibre_core::page::PageRequest;
use coachlibre_core::store::Store;
use coachlibre_core::user::Role;
use coachlibre_core::{Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::extract::{ExtractError, Format};
use crate::index::{Filter, TenantIndex};

/// Texts embedded per model call.
const EMBED_BATCH: usize = 32;
/// Chunks read per query when loading an index.
const LOAD_PAGE: i64 = 2_000;
/// Longest search query.
const MAX_QUERY_CHARS: usize = 2_000;
/// Most results per search.
pub const MAX_SEARCH_LIMIT: usize = 50;
/// Name recorded for chunks stored without an embedding model.
const NO_EMBEDDINGS: &str = "none";

/// A search request.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    #[schema(min_length = 1, max_length = 2000, pattern = "\\S")]
    pub query: String,
    /// Only these collections (default: every collection the caller may read).
    #[serde(default)]
    pub collection_ids: Option<Vec<CollectionId>>,
    /// At most this many results (default 10, at most 50).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 50)]
    pub limit: Option<usize>,
    /// Only documents whose metadata has these values.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// One search result.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SearchResult {
    pub chunk_id: ChunkId,
    pub document_id: DocumentId,
    pub collection_id: CollectionId,
    pub title: String,
    pub heading: String,
    pub text: String,
    /// Byte span of the passage in the document's text.
    pub start: i64,
    pub end: i64,
    /// Reciprocal-rank-fused score (higher is better).
    pub score: f32,
    /// Rank in the lexical (BM25) and vector rankings, when ranked there.
    pub lexical_rank: Option<usize>,
    pub vector_rank: Option<usize>,
}

/// A stored passage with its document, as a client opens a citation.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ChunkView {
    #[serde(flatten)]
    pub chunk: Chunk,
    pub document_title: String,
    pub document_source: String,
    /// Text just before and after the passage in the document (up to 300 bytes each).
    pub before: String,
    pub after: String,
}

/// What an upload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upload {
    /// A new document.
    Created,
    /// Changed content for an existing document: a new version is being ingested.
    Updated,
    /// The same content as stored: nothing to do.
    Unchanged,
}

/// How much one tenant may put in its library, so that no tenant's upload holds the shared
/// ingestion for long or fills the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Passages one document may make.
    pub document_passages: usize,
    /// Passages a tenant may have in all.
    pub tenant_passages: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            document_passages: 10_000,
            tenant_passages: 200_000,
        }
    }
}

/// Batches a document is embedded in before the ingestion turns to another tenant's work.
const SLICE_BATCHES: usize = 4;

/// The knowledge service (cheap to clone).
#[derive(Clone)]
pub struct Knowledge {
    store: Arc<dyn Store>,
    embedder: Option<Arc<dyn EmbeddingModel>>,
    indexes: Arc<Mutex<HashMap<TenantId, Arc<TenantIndex>>>>,
    /// Serialises index builds so that concurrent queries build a stale tenant once.
    building: Arc<tokio::sync::Mutex<()>>,
    queue: mpsc::UnboundedSender<(TenantId, DocumentId)>,
    policy: ChunkPolicy,
    limits: Limits,
    http: reqwest::Client,
    allow_private_urls: bool,
    /// Where "document ready" is published.
    events: EventSlot,
}

impl std::fmt::Debug for Knowledge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Knowledge")
            .field("embedder", &self.model_name())
            .finish_non_exhaustive()
    }
}

impl Knowledge {
    /// The service with its ingestion worker running, and its recovery: documents left
    /// pending by a previous run are ingested, passages embedded by another model re-embedded
    /// (call within a Tokio runtime).
    pub fn start(store: Arc<dyn Store>, embedder: Option<Arc<dyn EmbeddingModel>>) -> Self {
        let k = Self::new(store, embedder);
        k.recover();
        k
    }

    /// The service with its ingestion worker only (for one-off commands).
    pub fn new(store: Arc<dyn Store>, embedder: Option<Arc<dyn EmbeddingModel>>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let k = Self {
            store,
            embedder,
            indexes: Arc::default(),
            building: Arc::default(),
            queue: tx,
            policy: ChunkPolicy::default(),
            limits: Limits::default(),
            http: fetch::client(
                "CoachLibre knowledge import",
                std::time::Duration::from_secs(30),
            ),
            allow_private_urls: false,
            events: EventSlot::default(),
        };
        tokio::spawn(k.clone().worker(rx));
        k
    }

    /// Start the recovery [`Knowledge::start`] does, on a service configured since
    /// [`Knowledge::new`] (so that events of recovered documents reach their sink).
    pub fn resume(self) -> Self {
        self.recover();
        self
    }

    fn recover(&self) {
        let again = self.clone();
        tokio::spawn(async move {
            match again.store.documents_to_ingest().await {
                Ok(docs) => {
                    if !docs.is_empty() {
                        tracing::info!(documents = docs.len(), "resuming ingestion");
                    }
                    for d in docs {
                        let _ = again.queue.send((d.tenant_id, d.id));
                    }
                }
                Err(e) => tracing::error!(error = %e, "could not list documents to ingest"),
            }
            // Passages embedded by another model (the configured one changed): re-embed them
            // in the background; until then they are found by words only.
            match again.stale().await {
                Ok(true) => {
                    tracing::warn!("re-embedding passages made by another embedding model");
                    let mut last = 0;
                    let r = again
                        .rebuild(|done, total| {
                            if done >= last + 1000 || done == total {
                                last = done;
                                tracing::info!(done, total, "re-embedding passages");
                            }
                        })
                        .await;
                    if let Err(e) = r {
                        tracing::error!(error = %e, "re-embedding failed; run `coachlibre index rebuild`");
                    }
                }
                Ok(false) => {}
                Err(e) => tracing::error!(error = %e, "could not check the passages' embeddings"),
            }
        });
    }

    /// Publish "document ready" events to `sink` (for this service and its clones, the
    /// ingestion worker too; the first sink set stays).
    pub fn set_events(&self, sink: Arc<dyn EventSink>) {
        self.events.set(sink);
    }

    /// What one tenant may store (see [`Limits`]).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Allow URL imports from loopback and private networks (off by default: a coach could
    /// otherwise read internal services through the server).
    pub fn allow_private_urls(mut self, allow: bool) -> Self {
        self.allow_private_urls = allow;
        self
    }

    /// The embedding model's name (`none` without one).
    pub fn model_name(&self) -> String {
        self.embedder
            .as_ref()
            .map_or_else(|| NO_EMBEDDINGS.to_owned(), |e| e.name().to_owned())
    }

    // ---- permissions

    async fn coaches_of(&self, actor: &Actor) -> Result<Vec<UserId>> {
        Ok(self
            .store
            .coaches_of(actor.tenant_id, actor.user_id)
            .await?
            .into_iter()
            .map(|u| u.id)
            .collect())
    }

    fn manages(actor: &Actor, c: &Collection) -> bool {
        match actor.role {
            Role::Admin => true,
            Role::Coach => c.owner_id == Some(actor.user_id),
            Role::Client => false,
        }
    }

    async fn reads(&self, actor: &Actor, c: &Collection) -> Result<bool> {
        Ok(match actor.role {
            Role::Admin => true,
            Role::Coach => c.owner_id.is_none() || c.owner_id == Some(actor.user_id),
            Role::Client => match c.owner_id {
                None => true,
                Some(owner) => self.coaches_of(actor).await?.contains(&owner),
            },
        })
    }

    /// The collection if the caller may read it (else not found: others' collections are
    /// invisible).
    pub async fn collection(&self, actor: &Actor, id: CollectionId) -> Result<Collection> {
        let c = self
            .store
            .get_collection(actor.tenant_id, id)
            .await?
            .ok_or_else(|| Error::not_found("collection"))?;
        if self.reads(actor, &c).await? {
            Ok(c)
        } else {
            Err(Error::not_found("collection"))
        }
    }

    async fn managed(&self, actor: &Actor, id: CollectionId) -> Result<Collection> {
        let c = self.collection(actor, id).await?;
        if Self::manages(actor, &c) {
            Ok(c)
        } else {
            Err(Error::Forbidden(
                "only the collection's coach or an admin may change it".into(),
            ))
        }
    }

    // ---- collections

    /// A coach creates their own collection; an admin a shared one (or one for `owner`).
    pub async fn create_collection(
        &self,
        actor: &Actor,
        name: &str,
        description: &str,
        owner: Option<UserId>,
    ) -> Result<Collection> {
        let owner = match actor.role {
            Role::Coach if owner.is_none_or(|o| o == actor.user_id) => Some(actor.user_id),
            Role::Admin => {
                if let Some(o) = owner {
                    let u = self
                        .store
                        .get_user(actor.tenant_id, o)
                        .await?
                        .ok_or_else(|| Error::invalid("owner_id", "no such user"))?;
                    if u.role != Role::Coach {
                        return Err(Error::invalid("owner_id", "the owner must be a coach"));
                    }
                }
                owner
            }
            _ => {
                return Err(Error::Forbidden(
                    "only coaches and admins create collections".into(),
                ));
            }
        };
        let c = Collection::new(actor.tenant_id, owner, name, description)?;
        self.store.insert_collection(&c).await?;
        Ok(c)
    }

    /// Collections the caller may read, oldest first.
    pub async fn list_collections(
        &self,
        actor: &Actor,
        page: &PageRequest,
    ) -> Result<Vec<Collection>> {
        match actor.role {
            Role::Admin => Ok(self
                .store
                .list_collections(actor.tenant_id, None, page)
                .await?),
            Role::Coach => Ok(self
                .store
                .list_collections(actor.tenant_id, Some(actor.user_id), page)
                .await?),
            Role::Client => {
                // A client has few coaches: read each coach's view (theirs and the shared
                // ones) and merge. Without a coach, the client's own view is the shared ones
                // (a client owns no collection).
                let mut owners = self.coaches_of(actor).await?;
                if owners.is_empty() {
                    owners.push(actor.user_id);
                }
                let mut all = Vec::new();
                let mut seen = std::collections::HashSet::new();
                for owner in owners {
                    for c in self
                        .store
                        .list_collections(actor.tenant_id, Some(owner), page)
                        .await?
                    {
                        if seen.insert(c.id) {
                            all.push(c);
                        }
                    }
                }
                all.sort_by_key(|c| c.id);
                all.truncate(usize::try_from(page.fetch_limit()).unwrap_or(usize::MAX));
                Ok(all)
            }
        }
    }

    pub async fn update_collection(
        &self,
        actor: &Actor,
        id: CollectionId,
        name: Option<&str>,
        description: Option<&str>,
    ) -> Result<Collection> {
        let mut c = self.managed(actor, id).await?;
        if let Some(n) = name {
            c.name = check_name(n)?;
        }
        if let Some(d) = description {
            c.description = check_description(d)?;
        }
        c.updated_at = coachlibre_core::now();
        self.store.update_collection(&c).await?;
        Ok(c)
    }

    pub async fn delete_collection(&self, actor: &Actor, id: CollectionId) -> Result<()> {
        self.managed(actor, id).await?;
        self.store.delete_collection(actor.tenant_id, id).await?;
        Ok(())
    }

    // ---- documents

    /// Store an upload and queue its ingestion. The same content under the same name is a
    /// no-op; changed content becomes a new version (the old chunks stay searchable until
    /// the new ones are ready).
    pub async fn upload(
        &self,
        actor: &Actor,
        collection: CollectionId,
        name: &str,
        declared_type: Option<&str>,
        bytes: Vec<u8>,
        metadata: serde_json::Map<String, serde_json::Value>,
    ) -> Result<(Document, Upload)> {
        let c = self.managed(actor, collection).await?;
        let source = check_source(name)?;
        self.store_upload(&c, source, declared_type, bytes, metadata)
            .await
    }

    /// Fetch a web page or file and store it like an upload (the URL is its source name).
    pub async fn import_url(
        &self,
        actor: &Actor,
        collection: CollectionId,
        url: &str,
        metadata: serde_json::Map<String, serde_json::Value>,
    ) -> Result<(Document, Upload)> {
        let c = self.managed(actor, collection).await?;
        let url = url.trim();
        let parsed = fetch::parse_url(url)?;
        let fetched = fetch::get(
            &self.http,
            parsed,
            self.allow_private_urls,
            extract::MAX_UPLOAD_BYTES,
        )
        .await?;
        let source = check_source(url).map_err(|_| {
            Error::invalid(
                "url",
                "the URL is too long to name a document (500 characters)",
            )
        })?;
        self.store_upload(
            &c,
            source,
            fetched.content_type.as_deref(),
            fetched.bytes,
            metadata,
        )
        .await
    }

    async fn store_upload(
        &self,
        c: &Collection,
        source: String,
        declared_type: Option<&str>,
        bytes: Vec<u8>,
        metadata: serde_json::Map<String, serde_json::Value>,
    ) -> Result<(Document, Upload)> {
        if bytes.len() > extract::MAX_UPLOAD_BYTES {
            return Err(Error::TooLarge(
                ExtractError::TooLarge(bytes.len()).to_string(),
            ));
        }
        if bytes.is_empty() {
            return Err(Error::invalid("file", "the file is empty"));
        }
        let format = Format::detect(&bytes, declared_type, &source)
            .ok_or_else(|| Error::UnsupportedMediaType(ExtractError::Unsupported.to_string()))?;
        let hash = hex(&Sha256::digest(&bytes));
        let existing = self.store.find_document(c.tenant_id, c.id, &source).await?;
        if let Some(d) = &existing
            && d.content_hash == hash
            && d.status != DocumentStatus::Failed
        {
            return Ok((d.clone(), Upload::Unchanged));
        }
        let size = i64::try_from(bytes.len()).unwrap_or(i64::MAX);
        let text = sandbox::read(bytes, format).await.map_err(|e| match e {
            ExtractError::Unsupported => Error::UnsupportedMediaType(e.to_string()),
            ExtractError::TooLarge(_) => Error::TooLarge(e.to_string()),
            other => Error::invalid("file", other.to_string()),
        })?;
        self.check_limits(c.tenant_id, &text, existing.as_ref())
            .await?;
        let now = coachlibre_core::now();
        let (doc, outcome) = match existing {
            Some(mut d) => {
                d.title = title_of(&text, &source);
                d.media_type = format.media_type().to_owned();
                d.content_hash = hash;
                d.size_bytes = size;
                d.version += 1;
                d.status = DocumentStatus::Pending;
                d.error = None;
                d.chunks_total = 0;
                d.chunks_done = 0;
                if !metadata.is_empty() {
                    d.metadata = metadata;
                }
                d.updated_at = now;
                self.store.update_document(&d, Some(&text)).await?;
                (d, Upload::Updated)
            }
            None => {
                let d = Document {
                    id: DocumentId::generate(),
                    tenant_id: c.tenant_id,
                    collection_id: c.id,
                    title: title_of(&text, &source),
                    source,
                    media_type: format.media_type().to_owned(),
                    content_hash: hash,
                    size_bytes: size,
                    version: 1,
                    status: DocumentStatus::Pending,
                    error: None,
                    chunks_total: 0,
                    chunks_done: 0,
                    metadata,
                    created_at: now,
                    updated_at: now,
                };
                self.store.insert_document(&d, &text).await?;
                (d, Upload::Created)
            }
        };
        let _ = self.queue.send((doc.tenant_id, doc.id));
        Ok((doc, outcome))
    }

    /// Refuse a text that would make more passages than a document or its tenant may have
    /// (`replacing`: the version it replaces, whose passages go).
    async fn check_limits(
        &self,
        tenant: TenantId,
        text: &str,
        replacing: Option<&Document>,
    ) -> Result<()> {
        let passages = chunk_text(text, self.policy).len();
        let limit = self.limits.document_passages;
        if passages > limit {
            return Err(Error::TooLarge(format!(
                "the document would make {passages} passages; one document may make {limit}: \
                 split it into smaller files"
            )));
        }
        let have = self.store.count_chunks(tenant).await?;
        let freed = replacing.map_or(0, |d| u64::try_from(d.chunks_total).unwrap_or(0));
        let after = have.saturating_sub(freed) + passages as u64;
        let limit = self.limits.tenant_passages;
        if after > limit {
            return Err(Error::TooLarge(format!(
                "the library would hold {after} passages; this organisation may hold {limit}: \
                 remove documents first, or ask the server's operator to raise \
                 knowledge.max_tenant_passages"
            )));
        }
        Ok(())
    }

    pub async fn document(&self, actor: &Actor, id: DocumentId) -> Result<Document> {
        let d = self
            .store
            .get_document(actor.tenant_id, id)
            .await?
            .ok_or_else(|| Error::not_found("document"))?;
        self.collection(actor, d.collection_id)
            .await
            .map_err(|_| Error::not_found("document"))?;
        Ok(d)
    }

    /// The document's extracted text (what chunk spans point into).
    pub async fn document_text(&self, actor: &Actor, id: DocumentId) -> Result<String> {
        self.document(actor, id).await?;
        self.store
            .document_text(actor.tenant_id, id)
            .await?
            .ok_or_else(|| Error::not_found("document"))
    }

    pub async fn list_documents(
        &self,
        actor: &Actor,
        collection: CollectionId,
        page: &PageRequest,
    ) -> Result<Vec<Document>> {
        self.collection(actor, collection).await?;
        Ok(self
            .store
            .list_documents(actor.tenant_id, collection, page)
            .await?)
    }

    /// Delete a document, its chunks and their vectors.
    pub async fn delete_document(&self, actor: &Actor, id: DocumentId) -> Result<()> {
        let d = self.document(actor, id).await?;
        self.managed(actor, d.collection_id).await?;
        self.store.delete_document(actor.tenant_id, id).await?;
        Ok(())
    }

    /// A passage the caller may read, with its document's title and surroundings.
    pub async fn chunk(&self, actor: &Actor, id: ChunkId) -> Result<ChunkView> {
        let chunk = self
            .store
            .get_chunk(actor.tenant_id, id)
            .await?
            .ok_or_else(|| Error::not_found("passage"))?;
        let d = self
            .document(actor, chunk.document_id)
            .await
            .map_err(|_| Error::not_found("passage"))?;
        let text = self
            .store
            .document_text(actor.tenant_id, d.id)
            .await?
            .unwrap_or_default();
        let (before, after) = surroundings(&text, chunk.start, chunk.end, 300);
        Ok(ChunkView {
            chunk,
            document_title: d.title,
            document_source: d.source,
            before,
            after,
        })
    }

    // ---- ingestion

    /// Ingest queued documents fairly: tenants take turns, and a large document is embedded a
    /// slice at a time ([`SLICE_BATCHES`] batches), so another tenant's small document passes
    /// it instead of waiting for all of it.
    async fn worker(self, mut rx: mpsc::UnboundedReceiver<(TenantId, DocumentId)>) {
        let mut lanes = Lanes::default();
        loop {
            while let Ok((tenant, id)) = rx.try_recv() {
                lanes.push(tenant, id);
            }
            let Some(tenant) = lanes.next_tenant() else {
                match rx.recv().await {
                    Some((tenant, id)) => lanes.push(tenant, id),
                    None => return,
                }
                continue;
            };
            let work = match lanes.active.remove(&tenant) {
                Some(w) => Some(w),
                None => match lanes.take_document(tenant) {
                    Some(id) => match self.begin(tenant, id).await {
                        Ok(w) => w,
                        Err(e) => {
                            self.failed(tenant, id, &e).await;
                            None
                        }
                    },
                    None => None,
                },
            };
            if let Some(mut w) = work {
                match self.embed_slice(&mut w, SLICE_BATCHES).await {
                    Ok(true) => {
                        let id = w.doc.id;
                        if let Err(e) = self.finish(w).await {
                            self.failed(tenant, id, &e).await;
                        }
                    }
                    Ok(false) => {
                        lanes.active.insert(tenant, w);
                    }
                    Err(e) => self.failed(tenant, w.doc.id, &e).await,
                }
            }
            lanes.requeue(tenant);
        }
    }

    async fn failed(&self, tenant: TenantId, id: DocumentId, e: &Error) {
        tracing::error!(document = %id, error = %e, "ingestion failed");
        if let Ok(Some(mut d)) = self.store.get_document(tenant, id).await {
            d.status = DocumentStatus::Failed;
            d.error = Some("ingestion failed; upload the file again".into());
            d.updated_at = coachlibre_core::now();
            let _ = self.store.set_document_progress(&d).await;
        }
    }

    /// Chunk, embed and store one document (skips documents no longer pending, e.g. when
    /// queued twice).
    pub async fn ingest(&self, tenant: TenantId, id: DocumentId) -> Result<()> {
        let Some(mut w) = self.begin(tenant, id).await? else {
            return Ok(());
        };
        while !self.embed_slice(&mut w, usize::MAX).await? {}
        self.finish(w).await
    }

    /// Chunk a pending document and mark it processing; `None` if there is nothing to do.
    async fn begin(&self, tenant: TenantId, id: DocumentId) -> Result<Option<Ingesting>> {
        let Some(mut d) = self.store.get_document(tenant, id).await? else {
            return Ok(None);
        };
        if !matches!(
            d.status,
            DocumentStatus::Pending | DocumentStatus::Processing
        ) {
            return Ok(None);
        }
        let Some(text) = self.store.document_text(tenant, id).await? else {
            return Ok(None);
        };
        let spans = chunk_text(&text, self.policy);
        d.status = DocumentStatus::Processing;
        d.chunks_total = i32::try_from(spans.len()).unwrap_or(i32::MAX);
        d.chunks_done = 0;
        d.updated_at = coachlibre_core::now();
        self.store.set_document_progress(&d).await?;
        let chunks: Vec<Chunk> = spans
            .iter()
            .enumerate()
            .map(|(i, s)| Chunk {
                id: ChunkId::generate(),
                tenant_id: tenant,
                collection_id: d.collection_id,
                document_id: d.id,
                ordinal: i32::try_from(i).unwrap_or(i32::MAX),
                heading: s.heading.clone(),
                text: text[s.start..s.end].to_owned(),
                start: i64::try_from(s.start).unwrap_or(i64::MAX),
                end: i64::try_from(s.end).unwrap_or(i64::MAX),
                embedding: None,
            })
            .collect();
        Ok(Some(Ingesting {
            doc: d,
            chunks,
            embedded: 0,
        }))
    }

    /// Embed up to `batches` more batches of the document; whether it is all embedded.
    async fn embed_slice(&self, w: &mut Ingesting, batches: usize) -> Result<bool> {
        let Some(e) = &self.embedder else {
            return Ok(true);
        };
        for _ in 0..batches {
            let end = (w.embedded + EMBED_BATCH).min(w.chunks.len());
            if w.embedded >= end {
                return Ok(true);
            }
            let batch = &mut w.chunks[w.embedded..end];
            let texts: Vec<String> = batch.iter().map(Chunk::indexed_text).collect();
            let vectors = e
                .embed(&texts)
                .await
                .map_err(|e| Error::Internal(format!("embedding: {e}")))?;
            for (c, v) in batch.iter_mut().zip(vectors) {
                c.embedding = Some(v);
            }
            w.embedded = end;
            w.doc.chunks_done = i32::try_from(end).unwrap_or(i32::MAX);
            w.doc.updated_at = coachlibre_core::now();
            self.store.set_document_progress(&w.doc).await?;
        }
        Ok(w.embedded >= w.chunks.len())
    }

    /// Store the passages of an embedded document and say it is ready.
    async fn finish(&self, w: Ingesting) -> Result<()> {
        let Ingesting {
            doc: mut d, chunks, ..
        } = w;
        let tenant = d.tenant_id;
        d.status = DocumentStatus::Ready;
        d.chunks_done = d.chunks_total;
        d.error = None;
        d.updated_at = coachlibre_core::now();
        self.store
            .replace_chunks(&d, &chunks, &self.model_name())
            .await?;
        tracing::info!(document = %d.id, chunks = chunks.len(), version = d.version, "document ready");
        self.events
            .publish(
                tenant,
                EventKind::DocumentReady,
                serde_json::json!({
                    "collection_id": d.collection_id,
                    "document_id": d.id,
                    "title": d.title,
                    "chunks": chunks.len(),
                }),
            )
            .await;
        Ok(())
    }

    /// Wait until no document of the tenant is pending or processing (tests, CLI).
    pub async fn wait_idle(&self, tenant: TenantId, timeout: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.store.documents_to_ingest().await {
                Ok(docs) if !docs.iter().any(|d| d.tenant_id == tenant) => return true,
                _ => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    // ---- index and search

    /// The tenant's index, rebuilt if the database moved since it was built.
    async fn index(&self, tenant: TenantId) -> Result<Arc<TenantIndex>> {
        let epoch = self.store.knowledge_epoch(tenant).await?;
        if let Some(idx) = self.cached(tenant)
            && idx.epoch == epoch
        {
            return Ok(idx);
        }
        let _guard = self.building.lock().await;
        if let Some(idx) = self.cached(tenant)
            && idx.epoch == epoch
        {
            return Ok(idx);
        }
        let idx = Arc::new(self.build(tenant, epoch).await?);
        self.indexes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(tenant, idx.clone());
        if idx.vector_count() >= index::GRAPH_MIN {
            // Large libraries: an approximate graph, built off the async threads; queries
            // stay exact until it is ready.
            let building = idx.clone();
            tokio::task::spawn_blocking(move || {
                let started = std::time::Instant::now();
                if building.build_graph(hnsw::Params::default()) {
                    tracing::info!(
                        %tenant,
                        vectors = building.vector_count(),
                        secs = started.elapsed().as_secs_f64(),
                        "approximate vector index ready"
                    );
                }
            });
        }
        Ok(idx)
    }

    fn cached(&self, tenant: TenantId) -> Option<Arc<TenantIndex>> {
        self.indexes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&tenant)
            .cloned()
    }

    async fn build(&self, tenant: TenantId, epoch: i64) -> Result<TenantIndex> {
        let dims = self.embedder.as_ref().map_or(0, |e| e.dimensions());
        let mut idx = TenantIndex::new(epoch, dims);
        let mut after = None;
        loop {
            let page = self.store.chunks_after(tenant, after, LOAD_PAGE).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            for c in &page {
                idx.add(c);
            }
        }
        for (id, metadata) in self.store.document_metadata(tenant).await? {
            idx.set_metadata(id, metadata);
        }
        Ok(idx)
    }

    /// Forget every cached index (the next query rebuilds from the database).
    pub fn drop_indexes(&self) {
        self.indexes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    async fn embed_query(&self, query: &str) -> Option<Vec<f32>> {
        let e = self.embedder.as_ref()?;
        match e.embed(&[query.to_owned()]).await {
            Ok(mut v) => v.pop(),
            Err(err) => {
                tracing::warn!(error = %err, "query embedding failed; lexical search only");
                None
            }
        }
    }

    /// Hybrid search within `collections` (already permission-checked), best first.
    async fn search_in(
        &self,
        tenant: TenantId,
        collections: &[CollectionId],
        query: &str,
        metadata: serde_json::Map<String, serde_json::Value>,
        limit: usize,
    ) -> Result<Vec<SearchResult>> {
        if collections.is_empty() {
            return Ok(Vec::new());
        }
        let idx = self.index(tenant).await?;
        let embedding = self.embed_query(query).await;
        let filter = Filter {
            collections: collections.iter().copied().collect(),
            metadata,
        };
        let hits = idx.search(query, embedding.as_deref(), &filter, limit);
        let mut out = Vec::with_capacity(hits.len());
        let mut titles: HashMap<DocumentId, String> = HashMap::new();
        for h in hits {
            // The index may be a moment behind a delete: skip what is gone.
            let Some(c) = self.store.get_chunk(tenant, h.chunk_id).await? else {
                continue;
            };
            let title = match titles.get(&c.document_id) {
                Some(t) => t.clone(),
                None => {
                    let t = self
                        .store
                        .get_document(tenant, c.document_id)
                        .await?
                        .map(|d| d.title)
                        .unwrap_or_default();
                    titles.insert(c.document_id, t.clone());
                    t
                }
            };
            out.push(SearchResult {
                chunk_id: c.id,
                document_id: c.document_id,
                collection_id: c.collection_id,
                title,
                heading: c.heading,
                text: c.text,
                start: c.start,
                end: c.end,
                score: h.score,
                lexical_rank: h.lexical_rank,
                vector_rank: h.vector_rank,
            });
        }
        Ok(out)
    }

    /// Search what the caller may read.
    pub async fn search(&self, actor: &Actor, req: SearchRequest) -> Result<Vec<SearchResult>> {
        let query = req.query.trim();
        if query.is_empty() || query.chars().count() > MAX_QUERY_CHARS {
            return Err(Error::invalid(
                "query",
                format!("give a query of 1 to {MAX_QUERY_CHARS} characters"),
            ));
        }
        let limit = req.limit.unwrap_or(10);
        if !(1..=MAX_SEARCH_LIMIT).contains(&limit) {
            return Err(Error::invalid(
                "limit",
                format!("between 1 and {MAX_SEARCH_LIMIT}"),
            ));
        }
        let collections = match req.collection_ids {
            Some(ids) => {
                let mut ok = Vec::with_capacity(ids.len());
                for id in ids {
                    ok.push(self.collection(actor, id).await?.id);
                }
                ok
            }
            None => {
                let mut all = Vec::new();
                let mut page = PageRequest {
                    limit: coachlibre_core::page::MAX_LIMIT,
                    cursor: None,
                };
                loop {
                    let batch = self.list_collections(actor, &page).await?;
                    let n = batch.len();
                    let last = batch.last().map(|c| c.id.as_uuid());
                    all.extend(batch.into_iter().map(|c| c.id));
                    if n <= usize::try_from(page.limit).unwrap_or(0) {
                        break;
                    }
                    page.cursor = last;
                }
                all
            }
        };
        self.search_in(
            actor.tenant_id,
            &collections,
            query,
            req.metadata.unwrap_or_default(),
            limit,
        )
        .await
    }

    /// Whether some passage was embedded by another model than the configured one.
    pub async fn stale(&self) -> Result<bool> {
        let Some(e) = &self.embedder else {
            return Ok(false);
        };
        for t in self.store.list_tenants().await? {
            if self
                .store
                .count_chunks_not_embedded_by(t.id, e.name())
                .await?
                > 0
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Re-embed every chunk of every tenant not embedded by the current model, in batches,
    /// calling `progress(done, total)`; then forget cached indexes. Returns chunks updated.
    pub async fn rebuild(&self, mut progress: impl FnMut(u64, u64)) -> Result<u64> {
        let Some(e) = self.embedder.clone() else {
            self.drop_indexes();
            return Ok(0);
        };
        let model = e.name().to_owned();
        let mut done = 0u64;
        let tenants = self.store.list_tenants().await?;
        // Count first, for the progress bar.
        let mut total = 0u64;
        for t in &tenants {
            total += self
                .store
                .count_chunks_not_embedded_by(t.id, &model)
                .await?;
        }
        progress(0, total);
        for t in &tenants {
            loop {
                let batch = self
                    .store
                    .chunks_not_embedded_by(t.id, &model, EMBED_BATCH as i64)
                    .await?;
                if batch.is_empty() {
                    break;
                }
                let texts: Vec<String> = batch.iter().map(Chunk::indexed_text).collect();
                let vectors = e
                    .embed(&texts)
                    .await
                    .map_err(|err| Error::Internal(format!("embedding: {err}")))?;
                let updates: Vec<(ChunkId, Vec<f32>)> =
                    batch.iter().map(|c| c.id).zip(vectors).collect();
                self.store
                    .set_chunk_embeddings(t.id, &updates, &model)
                    .await?;
                done += updates.len() as u64;
                progress(done, total.max(done));
            }
        }
        self.drop_indexes();
        Ok(done)
    }
}

#[async_trait::async_trait]
impl KnowledgeSource for Knowledge {
    async fn retrieve(
        &self,
        tenant: TenantId,
        collections: &[CollectionId],
        query: &str,
        limit: usize,
    ) -> Result<Vec<Passage>> {
        let query: String = query.chars().take(MAX_QUERY_CHARS).collect();
        if query.trim().is_empty() {
            return Ok(Vec::new());
        }
        let hits = self
            .search_in(
                tenant,
                collections,
                &query,
                serde_json::Map::new(),
                limit.min(MAX_SEARCH_LIMIT),
            )
            .await?;
        Ok(hits
            .into_iter()
            .map(|h| Passage {
                chunk_id: h.chunk_id,
                document_id: h.document_id,
                collection_id: h.collection_id,
                title: h.title,
                heading: h.heading,
                text: h.text,
                start: h.start,
                end: h.end,
                score: h.score,
            })
            .collect())
    }
}

/// A document's source name: a file name or URL, trimmed, 1 to 500 characters.
/// A document being ingested: its passages, embedded up to `embedded`.
struct Ingesting {
    doc: Document,
    chunks: Vec<Chunk>,
    embedded: usize,
}

/// The ingestion's work, per tenant, and whose turn it is.
#[derive(Default)]
struct Lanes {
    /// Documents waiting, per tenant, in the order they came.
    waiting: HashMap<TenantId, std::collections::VecDeque<DocumentId>>,
    /// The document each tenant has under way.
    active: HashMap<TenantId, Ingesting>,
    /// Tenants with work, in turn.
    ring: std::collections::VecDeque<TenantId>,
}

impl Lanes {
    fn push(&mut self, tenant: TenantId, id: DocumentId) {
        let q = self.waiting.entry(tenant).or_default();
        if q.contains(&id) {
            return;
        }
        q.push_back(id);
        if !self.ring.contains(&tenant) {
            self.ring.push_back(tenant);
        }
    }

    /// The tenant whose turn it is (taken off the ring; see [`Lanes::requeue`]).
    fn next_tenant(&mut self) -> Option<TenantId> {
        self.ring.pop_front()
    }

    fn take_document(&mut self, tenant: TenantId) -> Option<DocumentId> {
        let q = self.waiting.get_mut(&tenant)?;
        let id = q.pop_front();
        if q.is_empty() {
            self.waiting.remove(&tenant);
        }
        id
    }

    /// Back of the ring if the tenant still has work.
    fn requeue(&mut self, tenant: TenantId) {
        if (self.active.contains_key(&tenant) || self.waiting.contains_key(&tenant))
            && !self.ring.contains(&tenant)
        {
            self.ring.push_back(tenant);
        }
    }
}

fn check_source(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 500 || name.chars().any(char::is_control) {
        return Err(Error::invalid(
            "file",
            "give the file a name of 1 to 500 characters",
        ));
    }
    Ok(name.to_owned())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Up to `n` bytes of `text` before `start` and after `end`, cut at char boundaries.
fn surroundings(text: &str, start: i64, end: i64, n: usize) -> (String, String) {
    let len = text.len();
    let start = usize::try_from(start).unwrap_or(0).min(len);
    let end = usize::try_from(end).unwrap_or(0).clamp(start, len);
    let mut from = start.saturating_sub(n);
    while !text.is_char_boundary(from) {
        from += 1;
    }
    let mut to = (end + n).min(len);
    while !text.is_char_boundary(to) {
        to -= 1;
    }
    let (s, e) = (
        if text.is_char_boundary(start) {
            start
        } else {
            from
        },
        if text.is_char_boundary(end) { end } else { to },
    );
    (text[from..s].to_owned(), text[e..to].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surroundings_stay_on_char_boundaries() {
        let t = "ééé passage ààà";
        let (b, a) = surroundings(t, 7, 14, 3);
        assert!(b.len() <= 3 && a.len() <= 3);
        assert_eq!(
            surroundings("abc", 0, 3, 10),
            (String::new(), String::new())
        );
    }

    #[test]
    fn sources_are_checked() {
        assert!(check_source(" ").is_err());
        assert!(check_source("a\u{0}b").is_err());
        assert_eq!(check_source(" plan.md ").ok().as_deref(), Some("plan.md"));
    }
}
