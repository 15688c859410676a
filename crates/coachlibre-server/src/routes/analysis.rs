//! Business analyses: start one on a URL, follow it, download its report.

use std::convert::Infallible;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::response::sse::{Event, Sse};
use coachlibre_analysis::ExportFormat;
use coachlibre_core::Error;
use coachlibre_core::accounts::By;
use coachlibre_core::analysis::Analysis;
use coachlibre_core::ids::AnalysisId;
use coachlibre_core::page::Page;
use futures_util::Stream;
use serde::Deserialize;
use utoipa::ToSchema;

use super::PageParams;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{Caller, Json, Path, Query};
use crate::state::AppState;

/// A site to analyse.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartAnalysis {
    /// http or https URL of the company's site (its home page, usually).
    pub url: String,
}

/// Analyse a company's website (coaches and admins): `202` with the analysis and its
/// `job_id`; the twelve business-intelligence skills run in the background.
#[utoipa::path(post, path = "/api/v1/analysis", tag = "analysis", request_body = StartAnalysis,
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Queued", body = Analysis),
        (status = 403, description = "Clients cannot start analyses", body = ErrorBody),
        (status = 422, description = "Not an http(s) URL", body = ErrorBody)))]
pub async fn start_analysis(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Json(req): Json<StartAnalysis>,
) -> ApiResult<(StatusCode, Json<Analysis>)> {
    let a = state.analyses.start(By::Actor(&actor), &req.url).await?;
    Ok((StatusCode::ACCEPTED, Json(a)))
}

/// Analyses (admins: the tenant's; coaches: their own), newest first, without reports.
#[utoipa::path(get, path = "/api/v1/analysis", tag = "analysis", params(PageParams),
    security(("bearer" = [])),
    responses((status = 200, description = "A page of analyses", body = Page<Analysis>)))]
pub async fn list_analyses(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Query(q): Query<PageParams>,
) -> ApiResult<Json<Page<Analysis>>> {
    let page = q.parse()?;
    Ok(Json(state.analyses.list(By::Actor(&actor), &page).await?))
}

/// One analysis: status, sections as they are written, and the report once done.
#[utoipa::path(get, path = "/api/v1/analysis/{id}", tag = "analysis",
    params(("id" = AnalysisId, Path, description = "Analysis id")), security(("bearer" = [])),
    responses(
        (status = 200, description = "The analysis", body = Analysis),
        (status = 404, description = "Not visible to the caller", body = ErrorBody)))]
pub async fn get_analysis(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(id): Path<AnalysisId>,
) -> ApiResult<Json<Analysis>> {
    Ok(Json(state.analyses.get(By::Actor(&actor), id).await?))
}

/// Follow an analysis as Server-Sent Events (its job's `job` and `progress` events: one
/// progress step per skill).
#[utoipa::path(get, path = "/api/v1/analysis/{id}/events", tag = "analysis",
    params(("id" = AnalysisId, Path, description = "Analysis id")), security(("bearer" = [])),
    responses(
        (status = 200, description = "text/event-stream"),
        (status = 404, description = "Not visible to the caller", body = ErrorBody)))]
pub async fn analysis_events(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(id): Path<AnalysisId>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let a = state.analyses.get(By::Actor(&actor), id).await?;
    let job_id = a.job_id.ok_or_else(|| Error::not_found("job"))?;
    let job = state
        .store
        .get_job(a.tenant_id, job_id)
        .await
        .map_err(Error::from)?
        .ok_or_else(|| Error::not_found("job"))?;
    Ok(super::jobs::follow(&state, job))
}

/// Download the report: `report.md`, `report.pdf` or `report.xlsx` (409 until the analysis
/// is done or partial).
#[utoipa::path(get, path = "/api/v1/analysis/{id}/{file}", tag = "analysis",
    params(("id" = AnalysisId, Path, description = "Analysis id"),
           ("file" = String, Path, description = "report.md, report.pdf or report.xlsx")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The report file"),
        (status = 404, description = "Not visible, or not one of the three files", body = ErrorBody),
        (status = 409, description = "Not finished", body = ErrorBody)))]
pub async fn analysis_report(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path((id, file)): Path<(AnalysisId, String)>,
) -> ApiResult<impl IntoResponse> {
    let format = ExportFormat::of_file(&file).ok_or_else(|| Error::not_found("report format"))?;
    let (bytes, name) = state.analyses.export(By::Actor(&actor), id, format).await?;
    Ok((
        [
            (header::CONTENT_TYPE, format.content_type().to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        bytes,
    ))
}
