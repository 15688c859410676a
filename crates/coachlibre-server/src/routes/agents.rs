//! Agents: templates, create, list, read, update, delete.

use axum::extract::State;
use axum::http::StatusCode;
use coachlibre_core::agent::{Agent, AgentInput, Template};
use coachlibre_core::ids::AgentId;
use coachlibre_core::page::Page;

use super::PageParams;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{Caller, Json, Path, Query};
use crate::state::AppState;

/// The shipped agent templates.
#[utoipa::path(get, path = "/api/v1/agent-templates", tag = "agents", security(("bearer" = [])),
    responses((status = 200, description = "Templates", body = Vec<Template>)))]
pub async fn list_templates(
    State(state): State<AppState>,
    Caller(_actor): Caller,
) -> Json<&'static [Template]> {
    Json(state.coaching.templates())
}

/// Create an agent (coaches own theirs; admins create tenant-wide agents or choose an owner).
#[utoipa::path(post, path = "/api/v1/agents", tag = "agents", request_body = AgentInput,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = Agent),
        (status = 403, description = "Clients cannot create agents", body = ErrorBody),
        (status = 422, description = "Invalid input", body = ErrorBody)))]
pub async fn create_agent(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Json(input): Json<AgentInput>,
) -> ApiResult<(StatusCode, Json<Agent>)> {
    let agent = state.coaching.create_agent(&actor, input).await?;
    Ok((StatusCode::CREATED, Json(agent)))
}

/// Agents the caller may see: all for an admin; the tenant's, their own and their coaches'
/// for others.
#[utoipa::path(get, path = "/api/v1/agents", tag = "agents", params(PageParams),
    security(("bearer" = [])),
    responses((status = 200, description = "A page of agents", body = Page<Agent>)))]
pub async fn list_agents(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Query(q): Query<PageParams>,
) -> ApiResult<Json<Page<Agent>>> {
    Ok(Json(state.coaching.list_agents(&actor, &q.parse()?).await?))
}

/// One agent.
#[utoipa::path(get, path = "/api/v1/agents/{id}", tag = "agents",
    params(("id" = AgentId, Path, description = "Agent id")), security(("bearer" = [])),
    responses(
        (status = 200, description = "The agent", body = Agent),
        (status = 404, description = "No such agent visible to the caller", body = ErrorBody)))]
pub async fn get_agent(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(id): Path<AgentId>,
) -> ApiResult<Json<Agent>> {
    Ok(Json(state.coaching.get_agent(&actor, id).await?))
}

/// Change an agent (its owner or an admin); absent fields are kept.
#[utoipa::path(patch, path = "/api/v1/agents/{id}", tag = "agents", request_body = AgentInput,
    params(("id" = AgentId, Path, description = "Agent id")), security(("bearer" = [])),
    responses(
        (status = 200, description = "The updated agent", body = Agent),
        (status = 403, description = "Not the owner", body = ErrorBody),
        (status = 422, description = "Invalid input", body = ErrorBody)))]
pub async fn update_agent(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(id): Path<AgentId>,
    Json(input): Json<AgentInput>,
) -> ApiResult<Json<Agent>> {
    Ok(Json(state.coaching.update_agent(&actor, id, input).await?))
}

/// Delete an agent and its conversations (its owner or an admin).
#[utoipa::path(delete, path = "/api/v1/agents/{id}", tag = "agents",
    params(("id" = AgentId, Path, description = "Agent id")), security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Not the owner", body = ErrorBody)))]
pub async fn delete_agent(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(id): Path<AgentId>,
) -> ApiResult<StatusCode> {
    state.coaching.delete_agent(&actor, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
