//! Users of the tenant: list, create, read, change role, reset password, coach links.

use axum::extract::State;
use axum::http::StatusCode;
use coachlibre_core::accounts::{By, CreatedUser, NewUser};
use coachlibre_core::ids::UserId;
use coachlibre_core::page::Page;
use coachlibre_core::user::{Role, UserView};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::PageParams;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{Caller, Json, Path, Query};
use crate::state::AppState;

/// Filters for the user list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserListParams {
    /// Only users with this role.
    pub role: Option<Role>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// List users: every user for an admin, their own clients for a coach.
#[utoipa::path(get, path = "/api/v1/users", tag = "users", params(UserListParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of users", body = Page<UserView>),
        (status = 403, description = "Clients cannot list users", body = ErrorBody)))]
pub async fn list_users(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Query(q): Query<UserListParams>,
) -> ApiResult<Json<Page<UserView>>> {
    let page = PageParams {
        limit: q.limit,
        cursor: q.cursor,
    }
    .parse()?;
    Ok(Json(
        state
            .accounts
            .list_users(By::Actor(&actor), q.role, &page)
            .await?,
    ))
}

/// A new user.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    #[schema(format = Email, max_length = 254)]
    pub email: String,
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u001F\\u007F-\\u009F]*$"
    )]
    pub display_name: String,
    pub role: Role,
    /// Initial password (10+ characters); when absent one is generated and returned once.
    #[serde(default)]
    #[schema(min_length = 10, max_length = 256)]
    pub password: Option<String>,
}

/// Create a user. Admins create any role; coaches create clients, who become theirs.
#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = CreateUser,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = CreatedUser),
        (status = 403, description = "Role not allowed to create this user", body = ErrorBody),
        (status = 409, description = "Email already used in this tenant", body = ErrorBody),
        (status = 422, description = "Invalid input", body = ErrorBody)))]
pub async fn create_user(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Json(req): Json<CreateUser>,
) -> ApiResult<(StatusCode, Json<CreatedUser>)> {
    let created = state
        .accounts
        .create_user(
            By::Actor(&actor),
            NewUser {
                email: req.email,
                display_name: req.display_name,
                role: req.role,
                password: req.password,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// A user the caller may see.
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users",
    params(("id" = UserId, Path, description = "User id")), security(("bearer" = [])),
    responses(
        (status = 200, description = "The user", body = UserView),
        (status = 404, description = "No such user visible to the caller", body = ErrorBody)))]
pub async fn get_user(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(id): Path<UserId>,
) -> ApiResult<Json<UserView>> {
    Ok(Json(UserView::from(
        &state.accounts.get_user(&actor, id).await?,
    )))
}

/// A role change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRole {
    pub role: Role,
}

/// Change a user's role (admin). The user's sessions end; the last admin cannot be demoted.
#[utoipa::path(put, path = "/api/v1/users/{id}/role", tag = "users", request_body = SetRole,
    params(("id" = UserId, Path, description = "User id")), security(("bearer" = [])),
    responses(
        (status = 200, description = "Updated user", body = UserView),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 409, description = "Last admin", body = ErrorBody)))]
pub async fn set_user_role(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(id): Path<UserId>,
    Json(req): Json<SetRole>,
) -> ApiResult<Json<UserView>> {
    Ok(Json(
        state
            .accounts
            .set_role(By::Actor(&actor), id, req.role)
            .await?,
    ))
}

/// A generated password, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct NewPassword {
    pub password: String,
}

/// Reset a user's password to a generated one (admin); clears any lockout.
#[utoipa::path(post, path = "/api/v1/users/{id}/password-reset", tag = "users",
    params(("id" = UserId, Path, description = "User id")), security(("bearer" = [])),
    responses(
        (status = 200, description = "The new password, shown once", body = NewPassword),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody)))]
pub async fn reset_user_password(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(id): Path<UserId>,
) -> ApiResult<Json<NewPassword>> {
    let password = state.accounts.reset_password(By::Actor(&actor), id).await?;
    Ok(Json(NewPassword { password }))
}

/// The coaches of a client.
#[utoipa::path(get, path = "/api/v1/users/{id}/coaches", tag = "users",
    params(("id" = UserId, Path, description = "Client id")), security(("bearer" = [])),
    responses(
        (status = 200, description = "The client's coaches", body = Vec<UserView>),
        (status = 404, description = "No such client", body = ErrorBody)))]
pub async fn list_user_coaches(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(id): Path<UserId>,
) -> ApiResult<Json<Vec<UserView>>> {
    Ok(Json(state.accounts.coaches_of(&actor, id).await?))
}

/// Make a coach one of the client's coaches (admin).
#[utoipa::path(put, path = "/api/v1/users/{id}/coaches/{coach_id}", tag = "users",
    params(("id" = UserId, Path, description = "Client id"),
           ("coach_id" = UserId, Path, description = "Coach id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Assigned"),
        (status = 404, description = "No such client or coach", body = ErrorBody),
        (status = 422, description = "Wrong roles", body = ErrorBody)))]
pub async fn assign_coach(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path((id, coach_id)): Path<(UserId, UserId)>,
) -> ApiResult<StatusCode> {
    state.accounts.assign_coach(&actor, id, coach_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Remove a coach from the client (admin).
#[utoipa::path(delete, path = "/api/v1/users/{id}/coaches/{coach_id}", tag = "users",
    params(("id" = UserId, Path, description = "Client id"),
           ("coach_id" = UserId, Path, description = "Coach id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such assignment", body = ErrorBody)))]
pub async fn unassign_coach(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path((id, coach_id)): Path<(UserId, UserId)>,
) -> ApiResult<StatusCode> {
    state.accounts.unassign_coach(&actor, id, coach_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
