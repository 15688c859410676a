//! Workflows: definitions (versioned), runs and their step-by-step state.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use coachlibre_core::Error;
use coachlibre_core::accounts::By;
use coachlibre_core::ids::{TenantId, WorkflowRunId};
use coachlibre_core::page::Page;
use coachlibre_core::workflow::{StoredWorkflow, WorkflowRun};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

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

/// How to call a workflow's webhook.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookInfo {
    /// POST the run's input (JSON) here.
    pub path: String,
    /// Append `?token=<secret>`, or send `X-CoachLibre-Signature: sha256=<hex HMAC-SHA256 of
    /// the body with the secret>`. Derived from `secret_key` (changing it changes this).
    pub secret: String,
}

fn webhook_scope(tenant: TenantId, name: &str) -> String {
    format!("{tenant}/workflows/{name}")
}

/// The webhook of a workflow (admins): its path and secret.
#[utoipa::path(get, path = "/api/v1/workflows/{name}/webhook", tag = "workflows",
    params(("name" = String, Path, description = "Workflow name")), security(("bearer" = [])),
    responses(
        (status = 200, description = "Path and secret", body = WebhookInfo),
        (status = 403, description = "Admins only", body = ErrorBody),
        (status = 404, description = "No such workflow", body = ErrorBody)))]
pub async fn get_webhook(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<WebhookInfo>> {
    actor.require_admin()?;
    let w = state.workflows.get(By::Actor(&actor), &name).await?;
    Ok(Json(WebhookInfo {
        path: format!("/api/v1/hooks/{}/workflows/{}", actor.tenant_id, w.name),
        secret: state
            .auth
            .keys()
            .webhook_secret(&webhook_scope(actor.tenant_id, &w.name)),
    }))
}

/// The token of a webhook call, when given in the URL.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HookQuery {
    pub token: Option<String>,
}

/// Start a run from outside (no sign-in: the secret of the workflow's webhook proves the
/// caller, in `?token=` or as an HMAC signature of the body). The body (JSON, may be empty)
/// is the run's input.
#[utoipa::path(post, path = "/api/v1/hooks/{tenant}/workflows/{name}", tag = "workflows",
    params(("tenant" = TenantId, Path, description = "Tenant id"),
           ("name" = String, Path, description = "Workflow name"), HookQuery,
           ("X-CoachLibre-Signature" = Option<String>, Header, description = "sha256=<hex HMAC>")),
    responses(
        (status = 202, description = "Started", body = WorkflowRun),
        (status = 403, description = "Wrong token or signature", body = ErrorBody),
        (status = 404, description = "No such workflow", body = ErrorBody),
        (status = 422, description = "The body is not JSON", body = ErrorBody)))]
pub async fn webhook(
    State(state): State<AppState>,
    Path((tenant, name)): Path<(TenantId, String)>,
    Query(q): Query<HookQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<WorkflowRun>)> {
    let signature = headers
        .get("x-coachlibre-signature")
        .and_then(|v| v.to_str().ok());
    // Checked before anything is looked up: a wrong secret learns nothing.
    if !state.auth.keys().verify_webhook(
        &webhook_scope(tenant, &name),
        q.token.as_deref(),
        signature,
        &body,
    ) {
        return Err(Error::Forbidden("the webhook token or signature is wrong".into()).into());
    }
    let input: serde_json::Value = if body.iter().all(u8::is_ascii_whitespace) {
        serde_json::json!({})
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| Error::invalid("body", format!("not JSON: {e}")))?
    };
    let run = state
        .workflows
        .start(By::Operator(tenant), &name, input, "webhook")
        .await?;
    Ok((StatusCode::ACCEPTED, Json(run)))
}
