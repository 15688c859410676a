//! What is known about a client: the core profile, archival memories, goals and reminders.

use axum::extract::State;
use axum::http::StatusCode;
use coachlibre_core::goal::{GoalView, Reminder};
use coachlibre_core::ids::{MemoryId, UserId};
use coachlibre_core::memory::{Memory, Profile};
use coachlibre_core::page::Page;

use super::PageParams;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{Caller, Json, Path, Query};
use crate::state::AppState;

/// The client's core profile (pinned in every prompt).
#[utoipa::path(get, path = "/api/v1/clients/{id}/profile", tag = "memory",
    params(("id" = UserId, Path, description = "Client id")), security(("bearer" = [])),
    responses(
        (status = 200, description = "The profile", body = Profile),
        (status = 404, description = "Not visible to the caller", body = ErrorBody)))]
pub async fn get_profile(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(id): Path<UserId>,
) -> ApiResult<Json<Profile>> {
    Ok(Json(state.coaching.get_profile(&actor, id).await?))
}

/// Replace the client's core profile (the client, their coach, or an admin).
#[utoipa::path(put, path = "/api/v1/clients/{id}/profile", tag = "memory", request_body = Profile,
    params(("id" = UserId, Path, description = "Client id")), security(("bearer" = [])),
    responses(
        (status = 200, description = "The profile", body = Profile),
        (status = 422, description = "A field is too long", body = ErrorBody)))]
pub async fn put_profile(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(id): Path<UserId>,
    Json(profile): Json<Profile>,
) -> ApiResult<Json<Profile>> {
    Ok(Json(state.coaching.put_profile(&actor, id, profile).await?))
}

/// What is remembered about the client, newest first (the client and their coach).
#[utoipa::path(get, path = "/api/v1/clients/{id}/memories", tag = "memory",
    params(("id" = UserId, Path, description = "Client id"), PageParams), security(("bearer" = [])),
    responses((status = 200, description = "A page of memories", body = Page<Memory>)))]
pub async fn list_memories(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(id): Path<UserId>,
    Query(q): Query<PageParams>,
) -> ApiResult<Json<Page<Memory>>> {
    Ok(Json(
        state
            .coaching
            .list_memories(&actor, id, &q.parse()?)
            .await?,
    ))
}

/// Forget one memory (the client themself, or an admin).
#[utoipa::path(delete, path = "/api/v1/clients/{id}/memories/{memory_id}", tag = "memory",
    params(("id" = UserId, Path, description = "Client id"),
           ("memory_id" = MemoryId, Path, description = "Memory id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Forgotten"),
        (status = 403, description = "Only the client or an admin", body = ErrorBody)))]
pub async fn delete_memory(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path((id, memory)): Path<(UserId, MemoryId)>,
) -> ApiResult<StatusCode> {
    state.coaching.delete_memory(&actor, id, memory).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The client's goals with their progress.
#[utoipa::path(get, path = "/api/v1/clients/{id}/goals", tag = "memory",
    params(("id" = UserId, Path, description = "Client id")), security(("bearer" = [])),
    responses((status = 200, description = "Goals", body = Vec<GoalView>)))]
pub async fn list_goals(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(id): Path<UserId>,
) -> ApiResult<Json<Vec<GoalView>>> {
    Ok(Json(state.coaching.list_goals(&actor, id).await?))
}

/// The client's reminders.
#[utoipa::path(get, path = "/api/v1/clients/{id}/reminders", tag = "memory",
    params(("id" = UserId, Path, description = "Client id"), PageParams), security(("bearer" = [])),
    responses((status = 200, description = "A page of reminders", body = Page<Reminder>)))]
pub async fn list_reminders(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(id): Path<UserId>,
    Query(q): Query<PageParams>,
) -> ApiResult<Json<Page<Reminder>>> {
    Ok(Json(
        state
            .coaching
            .list_reminders(&actor, id, &q.parse()?)
            .await?,
    ))
}
