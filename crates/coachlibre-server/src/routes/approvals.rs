//! Approvals of sensitive tool calls, notifications, and the tenant's memory retention.

use axum::extract::State;
use axum::http::StatusCode;
use coachlibre_core::conversation::{Approval, ApprovalStatus};
use coachlibre_core::goal::Notification;
use coachlibre_core::ids::{ApprovalId, NotificationId};
use coachlibre_core::page::Page;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::PageParams;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{Caller, Json, Path, Query};
use crate::state::AppState;

/// Filters for the approval list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ApprovalListParams {
    pub status: Option<ApprovalStatus>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// Tool calls waiting for (or decided by) a coach: their clients' for a coach, all for an admin.
#[utoipa::path(get, path = "/api/v1/approvals", tag = "approvals", params(ApprovalListParams),
    security(("bearer" = [])),
    responses((status = 200, description = "A page of approvals", body = Page<Approval>)))]
pub async fn list_approvals(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Query(q): Query<ApprovalListParams>,
) -> ApiResult<Json<Page<Approval>>> {
    let page = PageParams {
        limit: q.limit,
        cursor: q.cursor,
    }
    .parse()?;
    Ok(Json(
        state
            .coaching
            .list_approvals(&actor, q.status, &page)
            .await?,
    ))
}

/// A decision.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    pub approve: bool,
}

/// Approve or reject a waiting call; the turn resumes in the background and its answer is
/// added to the conversation.
#[utoipa::path(post, path = "/api/v1/approvals/{id}", tag = "approvals", request_body = Decision,
    params(("id" = ApprovalId, Path, description = "Approval id")), security(("bearer" = [])),
    responses(
        (status = 200, description = "Decided", body = Approval),
        (status = 403, description = "Not the client's coach", body = ErrorBody),
        (status = 409, description = "Already decided", body = ErrorBody)))]
pub async fn decide(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(id): Path<ApprovalId>,
    Json(d): Json<Decision>,
) -> ApiResult<Json<Approval>> {
    Ok(Json(state.coaching.decide(&actor, id, d.approve).await?))
}

/// The caller's notifications, newest first.
#[utoipa::path(get, path = "/api/v1/notifications", tag = "approvals", params(PageParams),
    security(("bearer" = [])),
    responses((status = 200, description = "A page of notifications", body = Page<Notification>)))]
pub async fn list_notifications(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Query(q): Query<PageParams>,
) -> ApiResult<Json<Page<Notification>>> {
    Ok(Json(
        state
            .coaching
            .list_notifications(&actor, &q.parse()?)
            .await?,
    ))
}

/// Mark a notification read.
#[utoipa::path(post, path = "/api/v1/notifications/{id}/read", tag = "approvals",
    params(("id" = NotificationId, Path, description = "Notification id")), security(("bearer" = [])),
    responses((status = 204, description = "Marked read"),
        (status = 404, description = "Unknown or already read", body = ErrorBody)))]
pub async fn mark_read(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(id): Path<NotificationId>,
) -> ApiResult<StatusCode> {
    state.coaching.mark_read(&actor, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// How long the tenant keeps memories.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Days after their last update that memories are deleted; null keeps them forever.
    #[schema(minimum = 1, maximum = 36500)]
    pub days: Option<u32>,
}

/// The tenant's memory retention (coaches and admins).
#[utoipa::path(get, path = "/api/v1/tenant/memory-retention", tag = "memory",
    security(("bearer" = [])), responses((status = 200, description = "Retention", body = Retention)))]
pub async fn get_retention(
    State(state): State<AppState>,
    Caller(actor): Caller,
) -> ApiResult<Json<Retention>> {
    Ok(Json(Retention {
        days: state.coaching.retention(&actor).await?,
    }))
}

/// Set the tenant's memory retention (admin).
#[utoipa::path(put, path = "/api/v1/tenant/memory-retention", tag = "memory",
    request_body = Retention, security(("bearer" = [])),
    responses((status = 200, description = "Retention", body = Retention),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 422, description = "Out of range", body = ErrorBody)))]
pub async fn put_retention(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Json(r): Json<Retention>,
) -> ApiResult<Json<Retention>> {
    state.coaching.set_retention(&actor, r.days).await?;
    Ok(Json(r))
}
