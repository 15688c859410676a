//! The audit log, for admins.

use axum::extract::State;
use coachlibre_core::audit::AuditEntry;
use coachlibre_core::page::Page;

use super::PageParams;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{Caller, Json, Query};
use crate::state::AppState;

/// The tenant's audit log, newest first (admin).
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(PageParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of entries", body = Page<AuditEntry>),
        (status = 403, description = "Not an admin", body = ErrorBody)))]
pub async fn list_audit(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Query(q): Query<PageParams>,
) -> ApiResult<Json<Page<AuditEntry>>> {
    Ok(Json(state.accounts.audit_log(&actor, &q.parse()?).await?))
}
