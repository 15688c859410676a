//! The signed-in user: who am I, my tenant, my password.

use axum::extract::State;
use axum::http::StatusCode;
use coachlibre_core::tenant::Tenant;
use coachlibre_core::user::UserView;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::error::{ApiResult, ErrorBody};
use crate::extract::{Caller, Json};
use crate::state::AppState;

/// The signed-in user.
#[utoipa::path(get, path = "/api/v1/me", tag = "me", security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller", body = UserView),
        (status = 401, description = "Not signed in", body = ErrorBody)))]
pub async fn get_me(
    State(state): State<AppState>,
    Caller(actor): Caller,
) -> ApiResult<Json<UserView>> {
    let user = state.accounts.get_user(&actor, actor.user_id).await?;
    Ok(Json(UserView::from(&user)))
}

/// The caller's tenant.
#[utoipa::path(get, path = "/api/v1/tenant", tag = "me", security(("bearer" = [])),
    responses((status = 200, description = "The caller's tenant", body = Tenant)))]
pub async fn get_tenant(
    State(state): State<AppState>,
    Caller(actor): Caller,
) -> ApiResult<Json<Tenant>> {
    Ok(Json(state.accounts.tenant_of(&actor).await?))
}

/// A password change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    pub current_password: String,
    /// 10 to 256 characters.
    pub new_password: String,
}

/// Change one's password; every session ends (sign in again).
#[utoipa::path(post, path = "/api/v1/me/password", tag = "me", request_body = ChangePassword,
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Changed"),
        (status = 401, description = "Wrong current password", body = ErrorBody),
        (status = 422, description = "New password too weak", body = ErrorBody)))]
pub async fn change_password(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Json(req): Json<ChangePassword>,
) -> ApiResult<StatusCode> {
    state
        .auth
        .change_password(&actor, &req.current_password, &req.new_password)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
