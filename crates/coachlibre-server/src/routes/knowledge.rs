//! Knowledge: collections, documents (upload, URL import, status), passages and search.

use axum::extract::{Multipart, State};
use axum::http::StatusCode;
use coachlibre_core::Error;
use coachlibre_core::ids::{ChunkId, CollectionId, DocumentId, UserId};
use coachlibre_core::knowledge::{Collection, Document};
use coachlibre_core::page::Page;
use coachlibre_knowledge::{ChunkView, SearchRequest, SearchResult, Upload};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::PageParams;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{Caller, Json, Path, Query};
use crate::state::AppState;

/// A new collection.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCollection {
    #[schema(min_length = 1, max_length = 200, pattern = "\\S")]
    pub name: String,
    #[serde(default)]
    #[schema(max_length = 2000)]
    pub description: String,
    /// Admins only: the coach who owns it (default: shared by the practice).
    pub owner_id: Option<UserId>,
}

/// Fields to change (absent: kept).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateCollection {
    #[schema(min_length = 1, max_length = 200, pattern = "\\S")]
    pub name: Option<String>,
    #[schema(max_length = 2000)]
    pub description: Option<String>,
}

/// Create a collection (a coach's own; an admin's shared, or for a coach).
#[utoipa::path(post, path = "/api/v1/collections", tag = "knowledge",
    request_body = CreateCollection, security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = Collection),
        (status = 403, description = "Clients cannot create collections", body = ErrorBody),
        (status = 422, description = "Invalid input", body = ErrorBody)))]
pub async fn create_collection(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Json(req): Json<CreateCollection>,
) -> ApiResult<(StatusCode, Json<Collection>)> {
    let c = state
        .knowledge
        .create_collection(&actor, &req.name, &req.description, req.owner_id)
        .await?;
    Ok((StatusCode::CREATED, Json(c)))
}

/// Collections the caller may read.
#[utoipa::path(get, path = "/api/v1/collections", tag = "knowledge", params(PageParams),
    security(("bearer" = [])),
    responses((status = 200, description = "A page of collections", body = Page<Collection>)))]
pub async fn list_collections(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Query(q): Query<PageParams>,
) -> ApiResult<Json<Page<Collection>>> {
    let page = q.parse()?;
    let rows = state.knowledge.list_collections(&actor, &page).await?;
    Ok(Json(Page::from_rows(rows, &page, |c| c.id.as_uuid())))
}

/// One collection.
#[utoipa::path(get, path = "/api/v1/collections/{id}", tag = "knowledge",
    params(("id" = CollectionId, Path, description = "Collection id")), security(("bearer" = [])),
    responses(
        (status = 200, description = "The collection", body = Collection),
        (status = 404, description = "Not visible to the caller", body = ErrorBody)))]
pub async fn get_collection(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(id): Path<CollectionId>,
) -> ApiResult<Json<Collection>> {
    Ok(Json(state.knowledge.collection(&actor, id).await?))
}

/// Rename or describe a collection (its coach or an admin).
#[utoipa::path(patch, path = "/api/v1/collections/{id}", tag = "knowledge",
    request_body = UpdateCollection,
    params(("id" = CollectionId, Path, description = "Collection id")), security(("bearer" = [])),
    responses(
        (status = 200, description = "Updated", body = Collection),
        (status = 403, description = "Not the collection's coach", body = ErrorBody),
        (status = 422, description = "Invalid input", body = ErrorBody)))]
pub async fn update_collection(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(id): Path<CollectionId>,
    Json(req): Json<UpdateCollection>,
) -> ApiResult<Json<Collection>> {
    Ok(Json(
        state
            .knowledge
            .update_collection(&actor, id, req.name.as_deref(), req.description.as_deref())
            .await?,
    ))
}

/// Delete a collection with its documents, passages and vectors.
#[utoipa::path(delete, path = "/api/v1/collections/{id}", tag = "knowledge",
    params(("id" = CollectionId, Path, description = "Collection id")), security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Not the collection's coach", body = ErrorBody)))]
pub async fn delete_collection(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(id): Path<CollectionId>,
) -> ApiResult<StatusCode> {
    state.knowledge.delete_collection(&actor, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A document and what the upload did.
#[derive(Debug, Serialize, ToSchema)]
pub struct UploadReply {
    #[serde(flatten)]
    pub document: Document,
    /// `created`, `updated` (changed content: a new version is being ingested) or
    /// `unchanged` (same content: nothing to do).
    pub outcome: &'static str,
}

/// The fields of an upload.
#[derive(Debug, ToSchema)]
pub struct UploadForm {
    /// The document: text, Markdown, HTML or PDF, up to 20 MiB.
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
    /// A JSON object of metadata to filter searches by.
    pub metadata: Option<String>,
}

fn reply(document: Document, outcome: Upload) -> (StatusCode, Json<UploadReply>) {
    let (status, outcome) = match outcome {
        Upload::Created => (StatusCode::CREATED, "created"),
        Upload::Updated => (StatusCode::OK, "updated"),
        Upload::Unchanged => (StatusCode::OK, "unchanged"),
    };
    (status, Json(UploadReply { document, outcome }))
}

/// Upload a document (multipart: `file`, and optionally `metadata` as a JSON object). Text,
/// Markdown, HTML and PDF, up to 20 MiB. Ingestion runs in the background: poll
/// `GET /api/v1/documents/{id}` until `status` is `ready`.
#[utoipa::path(post, path = "/api/v1/collections/{id}/documents", tag = "knowledge",
    params(("id" = CollectionId, Path, description = "Collection id")), security(("bearer" = [])),
    request_body(content_type = "multipart/form-data", content = UploadForm,
        description = "Fields `file` (the document) and `metadata` (optional JSON object)"),
    responses(
        (status = 201, description = "Stored; ingestion queued", body = UploadReply),
        (status = 200, description = "Same content already stored, or a new version queued", body = UploadReply),
        (status = 413, description = "Too large", body = ErrorBody),
        (status = 415, description = "Unsupported file type", body = ErrorBody),
        (status = 422, description = "Empty, corrupt or encrypted file", body = ErrorBody)))]
pub async fn upload_document(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(id): Path<CollectionId>,
    mut form: Multipart,
) -> ApiResult<(StatusCode, Json<UploadReply>)> {
    let mut file: Option<(String, Option<String>, Vec<u8>)> = None;
    let mut metadata = serde_json::Map::new();
    let bad = |m: String| Error::invalid("file", m);
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| bad(format!("unreadable form: {}", e.body_text())))?
    {
        match field.name().unwrap_or_default() {
            "file" => {
                let name = field.file_name().unwrap_or("upload").to_owned();
                let ctype = field.content_type().map(str::to_owned);
                let bytes = field.bytes().await.map_err(|e| {
                    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                        Error::TooLarge(format!(
                            "the file is larger than the {} MiB limit",
                            coachlibre_knowledge::extract::MAX_UPLOAD_BYTES / 1024 / 1024
                        ))
                    } else {
                        bad(format!("unreadable file: {}", e.body_text()))
                    }
                })?;
                file = Some((name, ctype, bytes.to_vec()));
            }
            "metadata" => {
                let text = field
                    .text()
                    .await
                    .map_err(|e| Error::invalid("metadata", e.body_text()))?;
                metadata = serde_json::from_str(&text)
                    .map_err(|_| Error::invalid("metadata", "must be a JSON object"))?;
                let doc = serde_json::Value::Object(metadata.clone());
                if let Some((path, c)) = coachlibre_core::text::control_char_in_json(&doc) {
                    return Err(crate::extract::control_char_error(
                        &format!("metadata.{path}"),
                        c,
                    ));
                }
            }
            other => {
                return Err(Error::invalid(
                    "form",
                    format!("unknown field '{other}'; send `file` and optionally `metadata`"),
                )
                .into());
            }
        }
    }
    let (name, ctype, bytes) =
        file.ok_or_else(|| Error::invalid("file", "send the document in a field named `file`"))?;
    let (doc, outcome) = state
        .knowledge
        .upload(&actor, id, &name, ctype.as_deref(), bytes, metadata)
        .await?;
    Ok(reply(doc, outcome))
}

/// A URL to import.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportUrl {
    /// `http` or `https` URL of an HTML page, text, Markdown or PDF file.
    pub url: String,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Import a web page or file by URL (same rules as an upload; the URL is its source name).
#[utoipa::path(post, path = "/api/v1/collections/{id}/imports", tag = "knowledge",
    request_body = ImportUrl,
    params(("id" = CollectionId, Path, description = "Collection id")), security(("bearer" = [])),
    responses(
        (status = 201, description = "Stored; ingestion queued", body = UploadReply),
        (status = 200, description = "Same content already stored, or a new version queued", body = UploadReply),
        (status = 422, description = "Bad URL, unreachable, or unreadable content", body = ErrorBody)))]
pub async fn import_url(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(id): Path<CollectionId>,
    Json(req): Json<ImportUrl>,
) -> ApiResult<(StatusCode, Json<UploadReply>)> {
    let (doc, outcome) = state
        .knowledge
        .import_url(&actor, id, &req.url, req.metadata.unwrap_or_default())
        .await?;
    Ok(reply(doc, outcome))
}

/// Documents of a collection.
#[utoipa::path(get, path = "/api/v1/collections/{id}/documents", tag = "knowledge",
    params(("id" = CollectionId, Path, description = "Collection id"), PageParams),
    security(("bearer" = [])),
    responses((status = 200, description = "A page of documents", body = Page<Document>)))]
pub async fn list_documents(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(id): Path<CollectionId>,
    Query(q): Query<PageParams>,
) -> ApiResult<Json<Page<Document>>> {
    let page = q.parse()?;
    let rows = state.knowledge.list_documents(&actor, id, &page).await?;
    Ok(Json(Page::from_rows(rows, &page, |d| d.id.as_uuid())))
}

/// One document: its status (`pending`, `processing` with `chunks_done` of `chunks_total`,
/// `ready`, `failed` with `error`) and version.
#[utoipa::path(get, path = "/api/v1/documents/{id}", tag = "knowledge",
    params(("id" = DocumentId, Path, description = "Document id")), security(("bearer" = [])),
    responses(
        (status = 200, description = "The document", body = Document),
        (status = 404, description = "Not visible to the caller", body = ErrorBody)))]
pub async fn get_document(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(id): Path<DocumentId>,
) -> ApiResult<Json<Document>> {
    Ok(Json(state.knowledge.document(&actor, id).await?))
}

/// Delete a document: its passages and vectors stop being searchable at once.
#[utoipa::path(delete, path = "/api/v1/documents/{id}", tag = "knowledge",
    params(("id" = DocumentId, Path, description = "Document id")), security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Not the collection's coach", body = ErrorBody)))]
pub async fn delete_document(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(id): Path<DocumentId>,
) -> ApiResult<StatusCode> {
    state.knowledge.delete_document(&actor, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A passage (what a citation points at), with its document and surrounding text.
#[utoipa::path(get, path = "/api/v1/chunks/{id}", tag = "knowledge",
    params(("id" = ChunkId, Path, description = "Passage id")), security(("bearer" = [])),
    responses(
        (status = 200, description = "The passage", body = ChunkView),
        (status = 404, description = "Not visible to the caller", body = ErrorBody)))]
pub async fn get_chunk(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(id): Path<ChunkId>,
) -> ApiResult<Json<ChunkView>> {
    Ok(Json(state.knowledge.chunk(&actor, id).await?))
}

/// Search results.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchReply {
    pub results: Vec<SearchResult>,
}

/// Hybrid search (BM25 + vectors, fused by reciprocal rank) over the collections the caller
/// may read, or the ones named.
#[utoipa::path(post, path = "/api/v1/search", tag = "knowledge", request_body = SearchRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Best passages first", body = SearchReply),
        (status = 404, description = "A named collection is not visible", body = ErrorBody),
        (status = 422, description = "Empty query or bad limit", body = ErrorBody)))]
pub async fn search(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Json(req): Json<SearchRequest>,
) -> ApiResult<Json<SearchReply>> {
    Ok(Json(SearchReply {
        results: state.knowledge.search(&actor, req).await?,
    }))
}
