//! Workflows: definitions (versioned), runs and their step-by-step state.

use axum::extract::State;
use axum::http::StatusCode;
use coachlibre_core::accounts::By;
use coachlibre_core::ids::WorkflowRunId;
use coachlibre_core::page::Page;
use coachlibre_core::workflow::{StoredWorkflow, WorkflowRun};
use serde::Deserialize;
use utoipa::ToSchema;

use super::PageParams;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{Caller, Json, Path, Query};
use crate::state::AppState;

/// A definition to save.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SaveWorkflow {
    /// `{"name", "description"?, "steps": [{"id", "kind": "skill"|"map"|"aggregate"|
    /// "condition"|"transform", "needs"?, "attempts"?, ...}]}`
    pub definition: serde_json::Value,
}

/// A run to start.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRun {
    /// `{{input.*}}` in the steps.
    #[serde(default)]
    pub input: serde_json::Value,
}

/// The latest version of each workflow (coaches and admins).
#[utoipa::path(get, path = "/api/v1/workflows", tag = "workflows", security(("bearer" = [])),
    responses(
        (status = 200, description = "Workflows by name", body = Vec<StoredWorkflow>),
        (status = 403, description = "Clients do not use workflows", body = ErrorBody)))]
pub async fn list_workflows(
    State(state): State<AppState>,
    Caller(actor): Caller,
) -> ApiResult<Json<Vec<StoredWorkflow>>> {
    Ok(Json(state.workflows.list(By::Actor(&actor)).await?))
}

/// Save a definition (admins): version 1, or the next version of that name. Runs already
/// started keep the version they started with.
#[utoipa::path(post, path = "/api/v1/workflows", tag = "workflows", request_body = SaveWorkflow,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Saved", body = StoredWorkflow),
        (status = 403, description = "Admins only", body = ErrorBody),
        (status = 422, description = "Not a valid DAG, or an unknown skill", body = ErrorBody)))]
pub async fn save_workflow(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Json(req): Json<SaveWorkflow>,
) -> ApiResult<(StatusCode, Json<StoredWorkflow>)> {
    let w = state
        .workflows
        .save(By::Actor(&actor), req.definition)
        .await?;
    Ok((StatusCode::CREATED, Json(w)))
}

/// The latest version of a workflow.
#[utoipa::path(get, path = "/api/v1/workflows/{name}", tag = "workflows",
    params(("name" = String, Path, description = "Workflow name")), security(("bearer" = [])),
    responses(
        (status = 200, description = "The workflow", body = StoredWorkflow),
        (status = 404, description = "No such workflow", body = ErrorBody)))]
pub async fn get_workflow(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<StoredWorkflow>> {
    Ok(Json(state.workflows.get(By::Actor(&actor), &name).await?))
}

/// Start a run (`202`; follow its job at `/api/v1/jobs/{job_id}/events`).
#[utoipa::path(post, path = "/api/v1/workflows/{name}/runs", tag = "workflows",
    request_body = StartRun,
    params(("name" = String, Path, description = "Workflow name")), security(("bearer" = [])),
    responses(
        (status = 202, description = "Started", body = WorkflowRun),
        (status = 404, description = "No such workflow", body = ErrorBody)))]
pub async fn start_run(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(name): Path<String>,
    Json(req): Json<StartRun>,
) -> ApiResult<(StatusCode, Json<WorkflowRun>)> {
    let run = state
        .workflows
        .start(By::Actor(&actor), &name, req.input, "api")
        .await?;
    Ok((StatusCode::ACCEPTED, Json(run)))
}

/// Runs of a workflow, newest first.
#[utoipa::path(get, path = "/api/v1/workflows/{name}/runs", tag = "workflows",
    params(("name" = String, Path, description = "Workflow name"), PageParams),
    security(("bearer" = [])),
    responses((status = 200, description = "A page of runs", body = Page<WorkflowRun>)))]
pub async fn list_runs(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(name): Path<String>,
    Query(q): Query<PageParams>,
) -> ApiResult<Json<Page<WorkflowRun>>> {
    let page = q.parse()?;
    Ok(Json(
        state
            .workflows
            .runs(By::Actor(&actor), Some(&name), &page)
            .await?,
    ))
}

/// One run, with every step's status, input, output, attempts, timings and error.
#[utoipa::path(get, path = "/api/v1/workflow-runs/{id}", tag = "workflows",
    params(("id" = WorkflowRunId, Path, description = "Run id")), security(("bearer" = [])),
    responses(
        (status = 200, description = "The run", body = WorkflowRun),
        (status = 404, description = "No such run", body = ErrorBody)))]
pub async fn get_run(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(id): Path<WorkflowRunId>,
) -> ApiResult<Json<WorkflowRun>> {
    Ok(Json(state.workflows.run(By::Actor(&actor), id).await?))
}
