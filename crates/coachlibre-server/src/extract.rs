//! Extractors that turn every malformed input into an [`ApiError`] with a clear message,
//! instead of axum's plain-text rejections; and the authenticated caller.

use std::net::{IpAddr, SocketAddr};

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use coachlibre_core::actor::Actor;
use coachlibre_core::error::AuthFailure;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// JSON body; rejections become `invalid_json`, `invalid_input`, `payload_too_large` or
/// `unsupported_media_type`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !json_content_type(req.headers()) {
            return Err(json_rejection(&JsonRejection::MissingJsonContentType(
                Default::default(),
            )));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|rej| {
                if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        "the request body is larger than the configured limit",
                    )
                } else {
                    ApiError::new(rej.status(), "bad_request", rej.body_text())
                }
            })?;
        let value = match axum::Json::<T>::from_bytes(&bytes) {
            Ok(axum::Json(v)) => v,
            // `1.0` is an integer in JSON (and to JSON Schema): read it as one.
            Err(rej @ JsonRejection::JsonDataError(_)) => {
                match serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()
                    .and_then(|mut doc| integral_floats_as_integers(&mut doc).then_some(doc))
                    .and_then(|doc| serde_json::from_value::<T>(doc).ok())
                {
                    Some(v) => v,
                    None => return Err(json_rejection(&rej)),
                }
            }
            Err(rej) => return Err(json_rejection(&rej)),
        };
        if coachlibre_core::text::json_may_hold_control_chars(&bytes)
            && let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&bytes)
            && let Some((path, c)) = coachlibre_core::text::control_char_in_json(&doc)
        {
            return Err(control_char_error(&path, c));
        }
        Ok(Self(value))
    }
}

/// Turn every number written with a fraction of zero (`1.0`, `2e3`) into an integer; whether
/// any was.
fn integral_floats_as_integers(doc: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    let mut changed = false;
    let mut stack = vec![doc];
    while let Some(v) = stack.pop() {
        match v {
            Value::Number(n) if n.is_f64() => {
                if let Some(f) = n.as_f64()
                    && f.fract() == 0.0
                    && f.abs() < 9.0e15
                {
                    // Exact below 2^53.
                    let i = f as i64;
                    *v = Value::from(i);
                    changed = true;
                }
            }
            Value::Array(items) => stack.extend(items.iter_mut()),
            Value::Object(fields) => stack.extend(fields.values_mut()),
            _ => {}
        }
    }
    changed
}

/// `application/json`, or a `+json` type.
fn json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(ct) = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// 422 `invalid_input` for a control character in `field`.
pub(crate) fn control_char_error(field: &str, c: char) -> ApiError {
    let field = if field.is_empty() { "the body" } else { field };
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_input",
        format!(
            "{field}: contains the control character {}; only tabs and line breaks are accepted",
            coachlibre_core::text::describe(c)
        ),
    )
}

fn json_rejection(rej: &JsonRejection) -> ApiError {
    let text = rej.body_text();
    match rej {
        JsonRejection::JsonDataError(_) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input", text)
        }
        JsonRejection::JsonSyntaxError(_) => {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", text)
        }
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with 'Content-Type: application/json'",
        ),
        _ if rej.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is larger than the configured limit",
        ),
        _ => ApiError::new(rej.status(), "bad_request", text),
    }
}

impl<T: serde::Serialize> axum::response::IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

/// Path parameters; a malformed id is a 404 (it names nothing), other errors a 400.
#[derive(Debug, Clone, Copy)]
pub struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(c) = percent_decoded_control(parts.uri.path()) {
            return Err(control_char_error("the path", c));
        }
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Self(v)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no such resource ({})", e.body_text()),
            )),
            Err(rej) => Err(ApiError::new(rej.status(), "bad_request", rej.body_text())),
        }
    }
}

/// Query string; rejections become `invalid_input`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        for (k, v) in form_urlencoded_pairs(query) {
            if let Some(c) = coachlibre_core::text::control_char(&v) {
                return Err(control_char_error(&k, c));
            }
        }
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Self(v))
            .map_err(|rej: QueryRejection| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_input",
                    rej.body_text(),
                )
            })
    }
}

/// The first control character that cannot be stored in a percent-encoded path.
fn percent_decoded_control(path: &str) -> Option<char> {
    let bytes = path.as_bytes();
    let decoded: Vec<u8> = {
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%'
                && let Some(hex) = path.get(i + 1..i + 3)
                && let Ok(b) = u8::from_str_radix(hex, 16)
            {
                out.push(b);
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        out
    };
    coachlibre_core::text::control_char(&String::from_utf8_lossy(&decoded))
}

/// The pairs of a query string or form body, decoded.
pub(crate) fn form_urlencoded_pairs(s: &str) -> Vec<(String, String)> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(s).unwrap_or_default()
}

/// The authenticated caller, put in the request by the auth middleware.
#[derive(Debug, Clone)]
pub struct Caller(pub Actor);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Actor>()
            .cloned()
            .map(Caller)
            .ok_or_else(|| AuthFailure::MissingCredentials.into())
    }
}

/// The client's address, resolved once per request by the middleware.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientIp(pub Option<IpAddr>);

impl ClientIp {
    /// Resolve from the socket, or from `X-Forwarded-For` when the proxy is trusted.
    pub fn resolve(parts: &axum::http::request::Parts, trust_forwarded_for: bool) -> Self {
        if trust_forwarded_for
            && let Some(ip) = parts
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.trim().parse().ok())
        {
            return Self(Some(ip));
        }
        Self(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ci| ci.0.ip()),
        )
    }

    /// As text for the audit log.
    pub fn text(&self) -> Option<String> {
        self.0.map(|ip| ip.to_string())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<ClientIp>()
            .copied()
            .unwrap_or(ClientIp(None)))
    }
}
