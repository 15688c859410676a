//! API keys for integrations: shown once, stored hashed, scoped, revocable.

use axum::extract::State;
use axum::http::StatusCode;
use coachlibre_core::accounts::{ApiKeyView, By, CreatedApiKey};
use coachlibre_core::actor::Scope;
use coachlibre_core::ids::{ApiKeyId, UserId};
use coachlibre_core::page::Page;
use serde::Deserialize;
use utoipa::ToSchema;

use super::PageParams;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{Caller, Json, Path, Query};
use crate::state::AppState;

/// API keys: all of the tenant's for an admin, one's own otherwise.
#[utoipa::path(get, path = "/api/v1/api-keys", tag = "api-keys", params(PageParams),
    security(("bearer" = [])),
    responses((status = 200, description = "A page of keys", body = Page<ApiKeyView>)))]
pub async fn list_api_keys(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Query(q): Query<PageParams>,
) -> ApiResult<Json<Page<ApiKeyView>>> {
    Ok(Json(
        state
            .accounts
            .list_api_keys(By::Actor(&actor), &q.parse()?)
            .await?,
    ))
}

/// A new key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    /// What the key is for, e.g. "Zapier".
    #[schema(min_length = 1, max_length = 200, pattern = "\\S")]
    pub name: String,
    /// `read`, `write`, `admin` (admin keys only for admins).
    #[schema(min_items = 1)]
    pub scopes: Vec<Scope>,
    /// Owner of the key; default the caller (another user: admins only).
    #[serde(default)]
    pub user_id: Option<UserId>,
}

/// Issue an API key. The response holds the key itself, shown this once.
#[utoipa::path(post, path = "/api/v1/api-keys", tag = "api-keys", request_body = CreateApiKey,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created; `secret` is shown only now", body = CreatedApiKey),
        (status = 422, description = "Invalid scopes", body = ErrorBody)))]
pub async fn create_api_key(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Json(req): Json<CreateApiKey>,
) -> ApiResult<(StatusCode, Json<CreatedApiKey>)> {
    let created = state
        .accounts
        .create_api_key(By::Actor(&actor), req.user_id, &req.name, &req.scopes)
        .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Revoke an API key: it stops working at once.
#[utoipa::path(delete, path = "/api/v1/api-keys/{id}", tag = "api-keys",
    params(("id" = ApiKeyId, Path, description = "Key id")), security(("bearer" = [])),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such key", body = ErrorBody),
        (status = 409, description = "Already revoked", body = ErrorBody)))]
pub async fn revoke_api_key(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(id): Path<ApiKeyId>,
) -> ApiResult<StatusCode> {
    state.accounts.revoke_api_key(By::Actor(&actor), id).await?;
    Ok(StatusCode::NO_CONTENT)
}
