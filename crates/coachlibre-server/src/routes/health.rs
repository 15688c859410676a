//! Probes and metrics, outside `/api`: for load balancers, orchestrators and Prometheus.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ClientIp, Json};
use crate::state::AppState;

/// Probe answer (nothing about what runs behind it).
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: the database answers.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "Database unreachable", body = ErrorBody)))]
pub async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Health>> {
    match state.store.ping().await {
        Ok(()) => Ok(Json(Health { status: "ok" })),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "not ready",
            ))
        }
    }
}

/// Prometheus metrics (text exposition format): with `http.metrics_token` set, for requests
/// bearing it; otherwise for the machine itself (loopback) only.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    security(("bearer" = []), ()),
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain"),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "No token configured and not from this machine", body = ErrorBody)))]
pub async fn metrics(
    State(state): State<AppState>,
    parts: axum::http::request::Parts,
) -> ApiResult<impl IntoResponse> {
    // Probes are outside the middleware that resolves the client's address.
    let ClientIp(ip) = ClientIp::resolve(&parts, state.config.http.trust_forwarded_for);
    let headers = &parts.headers;
    match &state.config.http.metrics_token {
        Some(token) => {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            let same: bool =
                subtle::ConstantTimeEq::ct_eq(given.as_bytes(), token.expose().as_bytes()).into();
            if !same {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthenticated",
                    "send the metrics token as 'Authorization: Bearer <http.metrics_token>'",
                ));
            }
        }
        None if ip.is_some_and(|ip| ip.is_loopback()) => {}
        None => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "metrics are served to this machine only; set http.metrics_token to scrape \
                 them from elsewhere",
            ));
        }
    }
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    ))
}
