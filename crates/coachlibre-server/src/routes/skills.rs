//! Skills: list, inspect, run (as a job), and the tenant's own definitions.

use axum::extract::State;
use axum::http::StatusCode;
use coachlibre_core::accounts::By;
use coachlibre_core::job::Job;
use coachlibre_skills::SkillInfo;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::error::{ApiResult, ErrorBody};
use crate::extract::{Caller, Json, Path};
use crate::state::AppState;

/// A run request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunSkill {
    /// Matches the skill's `input_schema`.
    pub input: serde_json::Value,
}

/// A tenant skill's definition.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutSkill {
    /// The TOML text (see the built-in skills for the format).
    pub definition: String,
}

/// Built-in skills and the tenant's own (coaches and admins).
#[utoipa::path(get, path = "/api/v1/skills", tag = "skills", security(("bearer" = [])),
    responses(
        (status = 200, description = "Skills by name, built-in first", body = Vec<SkillInfo>),
        (status = 403, description = "Clients do not use skills", body = ErrorBody)))]
pub async fn list_skills(
    State(state): State<AppState>,
    Caller(actor): Caller,
) -> ApiResult<Json<Vec<SkillInfo>>> {
    Ok(Json(state.skills.list(By::Actor(&actor)).await?))
}

/// One skill, with its input schema.
#[utoipa::path(get, path = "/api/v1/skills/{name}", tag = "skills",
    params(("name" = String, Path, description = "Skill name")), security(("bearer" = [])),
    responses(
        (status = 200, description = "The skill", body = SkillInfo),
        (status = 404, description = "No such skill", body = ErrorBody)))]
pub async fn get_skill(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<SkillInfo>> {
    Ok(Json(state.skills.get(By::Actor(&actor), &name).await?))
}

/// Run a skill: the input is checked now, the run is a job (`202` with it); follow it with
/// `GET /api/v1/jobs/{id}/events`; its `result` is `{skill, format, text, data, model, usage,
/// corrected}`.
#[utoipa::path(post, path = "/api/v1/skills/{name}/run", tag = "skills", request_body = RunSkill,
    params(("name" = String, Path, description = "Skill name")), security(("bearer" = [])),
    responses(
        (status = 202, description = "Queued", body = Job),
        (status = 404, description = "No such skill", body = ErrorBody),
        (status = 422, description = "The input does not match the skill's schema", body = ErrorBody)))]
pub async fn run_skill(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(name): Path<String>,
    Json(req): Json<RunSkill>,
) -> ApiResult<(StatusCode, Json<Job>)> {
    let job = state
        .skills
        .start(By::Actor(&actor), &name, req.input)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(job)))
}

/// Add or replace one of the tenant's skills (admins).
#[utoipa::path(post, path = "/api/v1/skills", tag = "skills", request_body = PutSkill,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Saved", body = SkillInfo),
        (status = 409, description = "A built-in skill has that name", body = ErrorBody),
        (status = 422, description = "The definition does not parse or is inconsistent", body = ErrorBody)))]
pub async fn put_skill(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Json(req): Json<PutSkill>,
) -> ApiResult<(StatusCode, Json<SkillInfo>)> {
    let info = state.skills.put(By::Actor(&actor), &req.definition).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

/// Delete one of the tenant's skills (admins).
#[utoipa::path(delete, path = "/api/v1/skills/{name}", tag = "skills",
    params(("name" = String, Path, description = "Skill name")), security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such tenant skill", body = ErrorBody),
        (status = 409, description = "Built-in skills cannot be deleted", body = ErrorBody)))]
pub async fn delete_skill(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    state.skills.delete(By::Actor(&actor), &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
