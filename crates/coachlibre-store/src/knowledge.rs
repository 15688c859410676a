//! Storage of collections, documents and chunks, for both drivers. A document's extracted
//! text lives in its row (so chunks can be rebuilt from the database alone); embeddings are
//! little-endian `f32` bytes with the name of the model that made them.

use async_trait::async_trait;
use coachlibre_core::ids::{ChunkId, CollectionId, DocumentId, TenantId, UserId};
use coachlibre_core::knowledge::{Chunk, Collection, Document, DocumentStatus};
use coachlibre_core::page::PageRequest;
use coachlibre_core::store::{KnowledgeStore, StoreResult};
use uuid::Uuid;

use crate::coaching::{embedding_bytes, embedding_of, from_json, parse_enum, to_json};
use crate::rows::{col, fetch_opt, fetch_vec};
use crate::{SqlStore, db_err, on_pool, on_pool_write, one_row};

const COLLECTION_COLS: &str = "id, tenant_id, owner_id, name, description, created_at, updated_at";

macro_rules! collection_row {
    ($r:expr) => {{
        let r = &$r;
        Collection {
            id: col!(r, "id", Uuid).into(),
            tenant_id: col!(r, "tenant_id", Uuid).into(),
            owner_id: col!(r, "owner_id", Option<Uuid>).map(Into::into),
            name: col!(r, "name"),
            description: col!(r, "description"),
            created_at: col!(r, "created_at"),
            updated_at: col!(r, "updated_at"),
        }
    }};
}

const DOCUMENT_COLS: &str = "id, tenant_id, collection_id, title, source, media_type, \
    content_hash, size_bytes, version, status, error, chunks_total, chunks_done, metadata, \
    created_at, updated_at";

macro_rules! document_row {
    ($r:expr) => {{
        let r = &$r;
        Document {
            id: col!(r, "id", Uuid).into(),
            tenant_id: col!(r, "tenant_id", Uuid).into(),
            collection_id: col!(r, "collection_id", Uuid).into(),
            title: col!(r, "title"),
            source: col!(r, "source"),
            media_type: col!(r, "media_type"),
            content_hash: col!(r, "content_hash"),
            size_bytes: col!(r, "size_bytes", i64),
            version: col!(r, "version", i32),
            status: parse_enum(&col!(r, "status", String), DocumentStatus::parse)?,
            error: col!(r, "error"),
            chunks_total: col!(r, "chunks_total", i32),
            chunks_done: col!(r, "chunks_done", i32),
            metadata: from_json(&col!(r, "metadata", String))?,
            created_at: col!(r, "created_at"),
            updated_at: col!(r, "updated_at"),
        }
    }};
}

const CHUNK_COLS: &str = "id, tenant_id, collection_id, document_id, ordinal, heading, text, \
    span_start, span_end, embedding";

macro_rules! chunk_row {
    ($r:expr) => {{
        let r = &$r;
        Chunk {
            id: col!(r, "id", Uuid).into(),
            tenant_id: col!(r, "tenant_id", Uuid).into(),
            collection_id: col!(r, "collection_id", Uuid).into(),
            document_id: col!(r, "document_id", Uuid).into(),
            ordinal: col!(r, "ordinal", i32),
            heading: col!(r, "heading"),
            text: col!(r, "text"),
            start: col!(r, "span_start", i64),
            end: col!(r, "span_end", i64),
            embedding: embedding_of(col!(r, "embedding", Option<Vec<u8>>)),
        }
    }};
}

/// `UPDATE tenants SET knowledge_epoch = knowledge_epoch + 1` inside transaction `$tx`.
macro_rules! bump_epoch {
    ($tx:expr, $tenant:expr) => {
        sqlx::query("UPDATE tenants SET knowledge_epoch = knowledge_epoch + 1 WHERE id = $1")
            .bind($tenant.as_uuid())
            .execute(&mut *$tx)
            .await
            .map_err(db_err)?
    };
}

impl SqlStore {
    /// Delete a collection or document of the tenant (its documents and chunks go with it by
    /// the foreign keys' cascade) and, if it existed, bump the tenant's knowledge epoch in the
    /// same transaction.
    async fn delete_bumping_epoch(
        &self,
        table: &'static str,
        tenant: TenantId,
        id: Uuid,
    ) -> StoreResult<bool> {
        on_pool_write!(self, p => {
            let mut tx = p.begin().await.map_err(db_err)?;
            let r = sqlx::query(&format!("DELETE FROM {table} WHERE tenant_id = $1 AND id = $2"))
                .bind(tenant.as_uuid())
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            let deleted = r.rows_affected() == 1;
            if deleted {
                bump_epoch!(tx, tenant);
            }
            tx.commit().await.map_err(db_err)?;
            Ok(deleted)
        })
    }
}

#[async_trait]
impl KnowledgeStore for SqlStore {
    async fn insert_collection(&self, c: &Collection) -> StoreResult<()> {
        on_pool_write!(self, p => {
            sqlx::query(&format!(
                "INSERT INTO collections ({COLLECTION_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
            ))
            .bind(c.id.as_uuid())
            .bind(c.tenant_id.as_uuid())
            .bind(c.owner_id.map(|o| o.as_uuid()))
            .bind(&c.name)
            .bind(&c.description)
            .bind(c.created_at)
            .bind(c.updated_at)
            .execute(p)
            .await
            .map_err(db_err)?;
        });
        Ok(())
    }

    async fn get_collection(
        &self,
        tenant: TenantId,
        id: CollectionId,
    ) -> StoreResult<Option<Collection>> {
        on_pool!(self, p => {
            Ok(fetch_opt!(sqlx::query(&format!(
                "SELECT {COLLECTION_COLS} FROM collections WHERE tenant_id = $1 AND id = $2"
            ))
            .bind(tenant.as_uuid())
            .bind(id.as_uuid()), p, collection_row))
        })
    }

    async fn update_collection(&self, c: &Collection) -> StoreResult<()> {
        on_pool_write!(self, p => {
            let r = sqlx::query(
                "UPDATE collections SET name = $3, description = $4, updated_at = $5 \
                 WHERE tenant_id = $1 AND id = $2",
            )
            .bind(c.tenant_id.as_uuid())
            .bind(c.id.as_uuid())
            .bind(&c.name)
            .bind(&c.description)
            .bind(c.updated_at)
            .execute(p)
            .await
            .map_err(db_err)?;
            one_row(r.rows_affected())
        })
    }

    async fn delete_collection(&self, tenant: TenantId, id: CollectionId) -> StoreResult<bool> {
        self.delete_bumping_epoch("collections", tenant, id.as_uuid())
            .await
    }

    async fn list_collections(
        &self,
        tenant: TenantId,
        owner: Option<UserId>,
        page: &PageRequest,
    ) -> StoreResult<Vec<Collection>> {
        on_pool!(self, p => {
            Ok(fetch_vec!(sqlx::query(&format!(
                "SELECT {COLLECTION_COLS} FROM collections WHERE tenant_id = $1 \
                 AND ($2 IS NULL OR owner_id = $2 OR owner_id IS NULL) \
                 AND ($3 IS NULL OR id > $3) ORDER BY id LIMIT $4"
            ))
            .bind(tenant.as_uuid())
            .bind(owner.map(|o| o.as_uuid()))
            .bind(page.cursor)
            .bind(page.fetch_limit()), p, collection_row))
        })
    }

    async fn insert_document(&self, d: &Document, text: &str) -> StoreResult<()> {
        let metadata = to_json(&d.metadata)?;
        on_pool_write!(self, p => {
            sqlx::query(&format!(
                "INSERT INTO documents ({DOCUMENT_COLS}, text) VALUES ($1, $2, $3, $4, $5, $6, \
                 $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
            ))
            .bind(d.id.as_uuid())
            .bind(d.tenant_id.as_uuid())
            .bind(d.collection_id.as_uuid())
            .bind(&d.title)
            .bind(&d.source)
            .bind(&d.media_type)
            .bind(&d.content_hash)
            .bind(d.size_bytes)
            .bind(d.version)
            .bind(d.status.as_str())
            .bind(d.error.as_deref())
            .bind(d.chunks_total)
            .bind(d.chunks_done)
            .bind(&metadata)
            .bind(d.created_at)
            .bind(d.updated_at)
            .bind(text)
            .execute(p)
            .await
            .map_err(db_err)?;
        });
        Ok(())
    }

    async fn get_document(
        &self,
        tenant: TenantId,
        id: DocumentId,
    ) -> StoreResult<Option<Document>> {
        on_pool!(self, p => {
            Ok(fetch_opt!(sqlx::query(&format!(
                "SELECT {DOCUMENT_COLS} FROM documents WHERE tenant_id = $1 AND id = $2"
            ))
            .bind(tenant.as_uuid())
            .bind(id.as_uuid()), p, document_row))
        })
    }

    async fn find_document(
        &self,
        tenant: TenantId,
        collection: CollectionId,
        source: &str,
    ) -> StoreResult<Option<Document>> {
        on_pool!(self, p => {
            Ok(fetch_opt!(sqlx::query(&format!(
                "SELECT {DOCUMENT_COLS} FROM documents \
                 WHERE tenant_id = $1 AND collection_id = $2 AND source = $3"
            ))
            .bind(tenant.as_uuid())
            .bind(collection.as_uuid())
            .bind(source), p, document_row))
        })
    }

    async fn document_text(&self, tenant: TenantId, id: DocumentId) -> StoreResult<Option<String>> {
        on_pool!(self, p => {
            sqlx::query_scalar("SELECT text FROM documents WHERE tenant_id = $1 AND id = $2")
                .bind(tenant.as_uuid())
                .bind(id.as_uuid())
                .fetch_optional(p)
                .await
                .map_err(db_err)
        })
    }

    async fn update_document(&self, d: &Document, text: Option<&str>) -> StoreResult<()> {
        let metadata = to_json(&d.metadata)?;
        on_pool_write!(self, p => {
            let r = sqlx::query(
                "UPDATE documents SET title = $3, media_type = $4, content_hash = $5, \
                 size_bytes = $6, version = $7, status = $8, error = $9, chunks_total = $10, \
                 chunks_done = $11, metadata = $12, updated_at = $13, text = COALESCE($14, text) \
                 WHERE tenant_id = $1 AND id = $2",
            )
            .bind(d.tenant_id.as_uuid())
            .bind(d.id.as_uuid())
            .bind(&d.title)
            .bind(&d.media_type)
            .bind(&d.content_hash)
            .bind(d.size_bytes)
            .bind(d.version)
            .bind(d.status.as_str())
            .bind(d.error.as_deref())
            .bind(d.chunks_total)
            .bind(d.chunks_done)
            .bind(&metadata)
            .bind(d.updated_at)
            .bind(text)
            .execute(p)
            .await
            .map_err(db_err)?;
            one_row(r.rows_affected())
        })
    }

    async fn set_document_progress(&self, d: &Document) -> StoreResult<()> {
        on_pool_write!(self, p => {
            let r = sqlx::query(
                "UPDATE documents SET status = $3, error = $4, chunks_total = $5, \
                 chunks_done = $6, updated_at = $7 WHERE tenant_id = $1 AND id = $2",
            )
            .bind(d.tenant_id.as_uuid())
            .bind(d.id.as_uuid())
            .bind(d.status.as_str())
            .bind(d.error.as_deref())
            .bind(d.chunks_total)
            .bind(d.chunks_done)
            .bind(d.updated_at)
            .execute(p)
            .await
            .map_err(db_err)?;
            one_row(r.rows_affected())
        })
    }

    async fn delete_document(&self, tenant: TenantId, id: DocumentId) -> StoreResult<bool> {
        self.delete_bumping_epoch("documents", tenant, id.as_uuid())
            .await
    }

    async fn list_documents(
        &self,
        tenant: TenantId,
        collection: CollectionId,
        page: &PageRequest,
    ) -> StoreResult<Vec<Document>> {
        on_pool!(self, p => {
            Ok(fetch_vec!(sqlx::query(&format!(
                "SELECT {DOCUMENT_COLS} FROM documents WHERE tenant_id = $1 \
                 AND collection_id = $2 AND ($3 IS NULL OR id > $3) ORDER BY id LIMIT $4"
            ))
            .bind(tenant.as_uuid())
            .bind(collection.as_uuid())
            .bind(page.cursor)
            .bind(page.fetch_limit()), p, document_row))
        })
    }

    async fn documents_to_ingest(&self) -> StoreResult<Vec<Document>> {
        on_pool!(self, p => {
            Ok(fetch_vec!(sqlx::query(&format!(
                "SELECT {DOCUMENT_COLS} FROM documents \
                 WHERE status IN ('pending', 'processing') ORDER BY updated_at, id"
            )), p, document_row))
        })
    }

    async fn replace_chunks(&self, d: &Document, chunks: &[Chunk], model: &str) -> StoreResult<()> {
        let metadata = to_json(&d.metadata)?;
        on_pool_write!(self, p => {
            let mut tx = p.begin().await.map_err(db_err)?;
            sqlx::query("DELETE FROM chunks WHERE tenant_id = $1 AND document_id = $2")
                .bind(d.tenant_id.as_uuid())
                .bind(d.id.as_uuid())
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            for c in chunks {
                sqlx::query(&format!(
                    "INSERT INTO chunks ({CHUNK_COLS}, embedding_model) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
                ))
                .bind(c.id.as_uuid())
                .bind(c.tenant_id.as_uuid())
                .bind(c.collection_id.as_uuid())
                .bind(c.document_id.as_uuid())
                .bind(c.ordinal)
                .bind(&c.heading)
                .bind(&c.text)
                .bind(c.start)
                .bind(c.end)
                .bind(embedding_bytes(&c.embedding))
                .bind(model)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            }
            let r = sqlx::query(
                "UPDATE documents SET status = $3, error = $4, chunks_total = $5, \
                 chunks_done = $6, metadata = $7, updated_at = $8, version = $9, title = $10 \
                 WHERE tenant_id = $1 AND id = $2",
            )
            .bind(d.tenant_id.as_uuid())
            .bind(d.id.as_uuid())
            .bind(d.status.as_str())
            .bind(d.error.as_deref())
            .bind(d.chunks_total)
            .bind(d.chunks_done)
            .bind(&metadata)
            .bind(d.updated_at)
            .bind(d.version)
            .bind(&d.title)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
            one_row(r.rows_affected())?;
            bump_epoch!(tx, d.tenant_id);
            tx.commit().await.map_err(db_err)?;
        });
        Ok(())
    }

    async fn get_chunk(&self, tenant: TenantId, id: ChunkId) -> StoreResult<Option<Chunk>> {
        on_pool!(self, p => {
            Ok(fetch_opt!(sqlx::query(&format!(
                "SELECT {CHUNK_COLS} FROM chunks WHERE tenant_id = $1 AND id = $2"
            ))
            .bind(tenant.as_uuid())
            .bind(id.as_uuid()), p, chunk_row))
        })
    }

    async fn chunks_after(
        &self,
        tenant: TenantId,
        after: Option<ChunkId>,
        limit: i64,
    ) -> StoreResult<Vec<Chunk>> {
        on_pool!(self, p => {
            Ok(fetch_vec!(sqlx::query(&format!(
                "SELECT {CHUNK_COLS} FROM chunks WHERE tenant_id = $1 \
                 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3"
            ))
            .bind(tenant.as_uuid())
            .bind(after.map(|a| a.as_uuid()))
            .bind(limit), p, chunk_row))
        })
    }

    async fn chunks_not_embedded_by(
        &self,
        tenant: TenantId,
        model: &str,
        limit: i64,
    ) -> StoreResult<Vec<Chunk>> {
        on_pool!(self, p => {
            Ok(fetch_vec!(sqlx::query(&format!(
                "SELECT {CHUNK_COLS} FROM chunks WHERE tenant_id = $1 \
                 AND embedding_model <> $2 ORDER BY id LIMIT $3"
            ))
            .bind(tenant.as_uuid())
            .bind(model)
            .bind(limit), p, chunk_row))
        })
    }

    async fn count_chunks(&self, tenant: TenantId) -> StoreResult<u64> {
        on_pool!(self, p => {
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM chunks WHERE tenant_id = $1")
                .bind(tenant.as_uuid())
                .fetch_one(p)
                .await
                .map_err(db_err)?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }

    async fn count_chunks_not_embedded_by(
        &self,
        tenant: TenantId,
        model: &str,
    ) -> StoreResult<u64> {
        on_pool!(self, p => {
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM chunks WHERE tenant_id = $1 AND embedding_model <> $2",
            )
            .bind(tenant.as_uuid())
            .bind(model)
            .fetch_one(p)
            .await
            .map_err(db_err)?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }

    async fn document_metadata(
        &self,
        tenant: TenantId,
    ) -> StoreResult<Vec<(DocumentId, serde_json::Map<String, serde_json::Value>)>> {
        on_pool!(self, p => {
            let rows = sqlx::query(
                "SELECT id, metadata FROM documents WHERE tenant_id = $1 AND metadata <> '{}'",
            )
            .bind(tenant.as_uuid())
            .fetch_all(p)
            .await
            .map_err(db_err)?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                out.push((
                    col!(&r, "id", Uuid).into(),
                    from_json(&col!(&r, "metadata", String))?,
                ));
            }
            Ok(out)
        })
    }

    async fn set_chunk_embeddings(
        &self,
        tenant: TenantId,
        embeddings: &[(ChunkId, Vec<f32>)],
        model: &str,
    ) -> StoreResult<()> {
        on_pool_write!(self, p => {
            let mut tx = p.begin().await.map_err(db_err)?;
            for (id, v) in embeddings {
                sqlx::query(
                    "UPDATE chunks SET embedding = $3, embedding_model = $4 \
                     WHERE tenant_id = $1 AND id = $2",
                )
                .bind(tenant.as_uuid())
                .bind(id.as_uuid())
                .bind(v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>())
                .bind(model)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            }
            bump_epoch!(tx, tenant);
            tx.commit().await.map_err(db_err)?;
        });
        Ok(())
    }

    async fn knowledge_epoch(&self, tenant: TenantId) -> StoreResult<i64> {
        on_pool!(self, p => {
            let v: Option<i64> =
                sqlx::query_scalar("SELECT knowledge_epoch FROM tenants WHERE id = $1")
                    .bind(tenant.as_uuid())
                    .fetch_optional(p)
                    .await
                    .map_err(db_err)?;
            Ok(v.unwrap_or(0))
        })
    }
}
