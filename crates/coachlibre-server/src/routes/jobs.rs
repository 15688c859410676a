//! Background jobs and their schedules: list, inspect, follow live, cancel, retry.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use coachlibre_core::accounts::By;
use coachlibre_core::ids::{JobId, ScheduleId};
use coachlibre_core::job::{Job, JobFilter, JobStatus, NewJob, Schedule};
use coachlibre_core::page::{Page, PageRequest};
use coachlibre_jobs::{JobEventKind, ScheduleInput};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiResult, ErrorBody};
use crate::extract::{Caller, Json, Path, Query};
use crate::state::AppState;

/// Filters and pagination of the job list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobQuery {
    /// queued, running, succeeded, failed or cancelled.
    #[param(value_type = Option<JobStatus>)]
    pub status: Option<String>,
    /// Only this kind, e.g. `reminder.deliver`.
    pub kind: Option<String>,
    /// Items per page (1–200, default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A job to enqueue (admins).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitJob {
    #[schema(pattern = "^[A-Za-z0-9._-]{1,100}$")]
    pub kind: String,
    #[serde(default)]
    pub payload: serde_json::Value,
    /// Higher runs first (default 0).
    #[serde(default)]
    pub priority: i32,
    /// When it becomes due (default now).
    pub run_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Default 5.
    #[schema(minimum = 1, maximum = 100)]
    pub max_attempts: Option<u32>,
    /// A second submission with the same key returns the first job (200 instead of 201).
    pub idempotency_key: Option<String>,
}

/// Jobs per status.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobCounts {
    pub counts: BTreeMap<JobStatus, u64>,
}

/// Jobs the caller may see (admins: the tenant's; others: those they started), newest first.
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", params(JobQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of jobs", body = Page<Job>),
        (status = 422, description = "Unknown status", body = ErrorBody)))]
pub async fn list_jobs(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Query(q): Query<JobQuery>,
) -> ApiResult<Json<Page<Job>>> {
    let page = PageRequest::parse(q.limit, q.cursor.as_deref())?;
    let filter = JobFilter {
        status: q.status.as_deref().map(str::parse).transpose()?,
        kind: q.kind,
        created_by: None,
    };
    Ok(Json(
        state.jobs.list(By::Actor(&actor), filter, &page).await?,
    ))
}

/// Enqueue a job (admins; jobs run with the system's rights).
#[utoipa::path(post, path = "/api/v1/jobs", tag = "jobs", request_body = SubmitJob,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Enqueued", body = Job),
        (status = 200, description = "The job already enqueued with this idempotency key", body = Job),
        (status = 403, description = "Admins only", body = ErrorBody),
        (status = 422, description = "Unknown kind or invalid field", body = ErrorBody)))]
pub async fn submit_job(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Json(req): Json<SubmitJob>,
) -> ApiResult<(StatusCode, Json<Job>)> {
    let mut job = NewJob::new(actor.tenant_id, &req.kind, req.payload).priority(req.priority);
    if let Some(at) = req.run_at {
        job = job.run_at(at);
    }
    if let Some(n) = req.max_attempts {
        job = job.max_attempts(n);
    }
    if let Some(k) = req.idempotency_key {
        job = job.key(k);
    }
    let (job, created) = state.jobs.submit(By::Actor(&actor), job).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(job)))
}

/// One job.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs",
    params(("id" = JobId, Path, description = "Job id")), security(("bearer" = [])),
    responses(
        (status = 200, description = "The job", body = Job),
        (status = 404, description = "Not visible to the caller", body = ErrorBody)))]
pub async fn get_job(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(id): Path<JobId>,
) -> ApiResult<Json<Job>> {
    Ok(Json(state.jobs.get(By::Actor(&actor), id).await?))
}

/// Cancel a queued or running job (a running one stops within a third of its lease).
#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", tag = "jobs",
    params(("id" = JobId, Path, description = "Job id")), security(("bearer" = [])),
    responses(
        (status = 200, description = "Cancelled", body = Job),
        (status = 404, description = "Not visible to the caller", body = ErrorBody),
        (status = 409, description = "Already finished", body = ErrorBody)))]
pub async fn cancel_job(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(id): Path<JobId>,
) -> ApiResult<Json<Job>> {
    Ok(Json(state.jobs.cancel(By::Actor(&actor), id).await?))
}

/// Queue a failed or cancelled job again with fresh attempts.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/retry", tag = "jobs",
    params(("id" = JobId, Path, description = "Job id")), security(("bearer" = [])),
    responses(
        (status = 200, description = "Queued again", body = Job),
        (status = 404, description = "Not visible to the caller", body = ErrorBody),
        (status = 409, description = "Not failed or cancelled", body = ErrorBody)))]
pub async fn retry_job(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(id): Path<JobId>,
) -> ApiResult<Json<Job>> {
    Ok(Json(state.jobs.retry(By::Actor(&actor), id).await?))
}

/// How many of the tenant's jobs are in each status (admins): the queue depth.
#[utoipa::path(get, path = "/api/v1/jobs-summary", tag = "jobs", security(("bearer" = [])),
    responses(
        (status = 200, description = "Counts per status", body = JobCounts),
        (status = 403, description = "Admins only", body = ErrorBody)))]
pub async fn job_counts(
    State(state): State<AppState>,
    Caller(actor): Caller,
) -> ApiResult<Json<JobCounts>> {
    Ok(Json(JobCounts {
        counts: state.jobs.counts(By::Actor(&actor)).await?,
    }))
}

/// Follow a job as Server-Sent Events: `job` (the job now), then `progress`
/// (`{done, total, message}`) as its handler reports it, and `job` again when it ends; the
/// stream closes once the job is finished.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/events", tag = "jobs",
    params(("id" = JobId, Path, description = "Job id")), security(("bearer" = [])),
    responses(
        (status = 200, description = "text/event-stream of job events"),
        (status = 404, description = "Not visible to the caller", body = ErrorBody)))]
pub async fn job_events(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(id): Path<JobId>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let job = state.jobs.get(By::Actor(&actor), id).await?;
    Ok(follow(&state, job))
}

/// The SSE stream of a job the caller may see (see [`job_events`]).
pub(crate) fn follow(
    state: &AppState,
    job: Job,
) -> Sse<impl Stream<Item = Result<Event, Infallible>> + use<>> {
    let id = job.id;
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(64);
    let jobs = state.jobs.clone();
    let mut events = jobs.subscribe();
    tokio::spawn(async move {
        if tx.send(event("job", &job)).await.is_err() || job.status.is_final() {
            return;
        }
        // Progress of jobs run by this process arrives as events; a job run by another node
        // is seen by reading it again every second.
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut last = job;
        loop {
            tokio::select! {
                e = events.recv() => match e {
                    Ok(e) if e.job_id == id => {
                        if let JobEventKind::Progress(p) = &e.kind
                            && tx.send(event("progress", p)).await.is_err()
                        {
                            return;
                        }
                        if matches!(e.kind, JobEventKind::Finished { .. }) {
                            tick.reset_immediately();
                        }
                    }
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                },
                _ = tick.tick() => {
                    let Ok(Some(now)) = jobs.store().get_job(last.tenant_id, id).await else {
                        return;
                    };
                    if now.progress != last.progress
                        && let Some(p) = &now.progress
                        && tx.send(event("progress", p)).await.is_err()
                    {
                        return;
                    }
                    if now.status.is_final() {
                        let _ = tx.send(event("job", &now)).await;
                        return;
                    }
                    last = now;
                }
            }
        }
    });
    let stream =
        futures_util::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) },
        );
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// A named SSE event with a JSON body.
fn event<T: Serialize>(name: &str, data: &T) -> Event {
    Event::default()
        .event(name)
        .json_data(data)
        .unwrap_or_else(|_| Event::default().event("error").data("{}"))
}

/// The tenant's cron schedules (admins).
#[utoipa::path(get, path = "/api/v1/schedules", tag = "jobs", security(("bearer" = [])),
    responses(
        (status = 200, description = "Schedules by name", body = Vec<Schedule>),
        (status = 403, description = "Admins only", body = ErrorBody)))]
pub async fn list_schedules(
    State(state): State<AppState>,
    Caller(actor): Caller,
) -> ApiResult<Json<Vec<Schedule>>> {
    Ok(Json(state.jobs.schedules(By::Actor(&actor)).await?))
}

/// Create a cron schedule that enqueues a job each time it fires (admins).
#[utoipa::path(post, path = "/api/v1/schedules", tag = "jobs", request_body = ScheduleInput,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created, with its first firing time", body = Schedule),
        (status = 403, description = "Admins only", body = ErrorBody),
        (status = 409, description = "Name taken", body = ErrorBody),
        (status = 422, description = "Bad cron expression, time zone or kind", body = ErrorBody)))]
pub async fn create_schedule(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Json(req): Json<ScheduleInput>,
) -> ApiResult<(StatusCode, Json<Schedule>)> {
    let s = state.jobs.create_schedule(By::Actor(&actor), req).await?;
    Ok((StatusCode::CREATED, Json(s)))
}

/// Delete a schedule (jobs it already enqueued stay).
#[utoipa::path(delete, path = "/api/v1/schedules/{id}", tag = "jobs",
    params(("id" = ScheduleId, Path, description = "Schedule id")), security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such schedule", body = ErrorBody)))]
pub async fn delete_schedule(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(id): Path<ScheduleId>,
) -> ApiResult<StatusCode> {
    state.jobs.delete_schedule(By::Actor(&actor), id).await?;
    Ok(StatusCode::NO_CONTENT)
}
