//! The one HTTP error type.
//!
//! Policy: every failure leaves the server as `{"error": {"code", "message"}}` with a stable
//! `code`. Domain errors map to statuses here and nowhere else. A 5xx is logged with its cause
//! and answered with a generic message, so internals (SQL, paths) never reach a client.
//! Rejections of malformed requests (bad JSON, wrong types, oversize bodies, unknown routes)
//! are converted to the same shape by the extractors in `extract` and by
//! [`json_error_bodies`], which rewrites any error response that was not already JSON.

use axum::Json;
use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use coachlibre_core::Error;
use coachlibre_core::error::AuthFailure;
use serde::Serialize;
use utoipa::ToSchema;

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds, for `Retry-After` on 429 and locked accounts.
    pub retry_after: Option<u64>,
}

/// The error body, as documented in the OpenAPI document.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `not_found`, `invalid_input`, `rate_limited`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 429 with the seconds to wait.
    pub fn rate_limited(retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after.max(1)),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests; slow down and retry after the number of seconds in Retry-After",
            )
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::NotFound { .. } => StatusCode::NOT_FOUND,
            Error::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::Locked { .. } | Error::TooManyAttempts { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let retry_after = match &e {
            Error::Locked { retry_after_secs } | Error::TooManyAttempts { retry_after_secs } => {
                Some(*retry_after_secs)
            }
            _ => None,
        };
        let message = if status.is_server_error() {
            tracing::error!(error = %e, "internal error");
            "internal error; it has been logged".to_owned()
        } else {
            e.to_string()
        };
        Self {
            status,
            code: e.code(),
            message,
            retry_after,
        }
    }
}

impl From<AuthFailure> for ApiError {
    fn from(f: AuthFailure) -> Self {
        Error::Unauthenticated(f).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: printable(&self.message),
            },
        };
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// Give error responses produced outside our handlers (unknown route, wrong method, body
/// limit, timeout, panic) the standard JSON shape.
pub async fn json_error_bodies(resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    // JSON errors are already shaped; the web app's error pages are HTML on purpose.
    let shaped = resp.headers().get(header::CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        v.starts_with(b"application/json") || v.starts_with(b"text/html")
    });
    if shaped {
        return resp;
    }
    let (code, message) = match status {
        StatusCode::NOT_FOUND => ("not_found", "no such route; see /docs for the API"),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this route does not accept this HTTP method",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "payload_too_large",
            "the request body is larger than the configured limit",
        ),
        StatusCode::REQUEST_TIMEOUT | StatusCode::SERVICE_UNAVAILABLE => {
            ("timeout", "the request took too long and was cancelled")
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported_media_type",
            "send the body as application/json",
        ),
        s if s.is_server_error() => ("internal", "internal error; it has been logged"),
        _ => ("bad_request", "the request could not be understood"),
    };
    let (mut parts, _) = resp.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let body = serde_json::json!({"error": {"code": code, "message": message}});
    Response::from_parts(parts, Body::from(body.to_string()))
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

/// `message` with its control characters (echoed from input, in a field name or a parser's
/// message) written as escapes, so that no answer carries them into a log or a terminal.
fn printable(message: &str) -> String {
    if coachlibre_core::text::control_char(message).is_none() {
        return message.to_owned();
    }
    message
        .chars()
        .map(|c| {
            if coachlibre_core::text::is_forbidden(c) {
                format!("\\u{{{:04x}}}", u32::from(c))
            } else {
                c.to_string()
            }
        })
        .collect()
}
