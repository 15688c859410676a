//! Request pipeline pieces: client address and rate limits, authentication, metrics.

pub mod metrics;
pub mod ratelimit;

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use coachlibre_core::actor::Scope;
use coachlibre_core::error::AuthFailure;

use crate::error::ApiError;
use crate::extract::ClientIp;
use crate::state::AppState;

fn retry_secs(d: std::time::Duration) -> u64 {
    d.as_secs_f64().ceil() as u64
}

/// Resolve the client address and apply the per-IP limit (stricter on sign-in).
pub async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let ip = ClientIp::resolve(&parts, state.config.http.trust_forwarded_for);
    parts.extensions.insert(ip);
    if state.limits.enabled {
        let is_login = matches!(parts.uri.path(), "/api/v1/auth/login" | "/login")
            && parts.method == Method::POST;
        let limited = state.limits.per_ip.check(&ip.0).err().or_else(|| {
            is_login
                .then(|| state.limits.login_per_ip.check(&ip.0).err())
                .flatten()
        });
        if let Some(wait) = limited {
            return ApiError::rate_limited(retry_secs(wait)).into_response();
        }
    }
    next.run(Request::from_parts(parts, body)).await
}

/// Authenticate the bearer credential, check the API key scope the method needs, apply the
/// per-user limit, and hand the [`Actor`](coachlibre_core::actor::Actor) to the handler.
pub async fn require_auth(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let resolved = match (bearer, crate::web::session_cookie(req.headers())) {
        (Some(bearer), _) => state.auth.authenticate(bearer).await,
        // The web app's own scripts call the API with the session cookie; a change must
        // then carry the session's anti-forgery token in `X-CSRF-Token`.
        (None, Some(cookie)) => {
            let token = req
                .headers()
                .get(crate::web::CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !safe && !state.auth.keys().verify_csrf(cookie, token) {
                return ApiError::new(
                    http::StatusCode::FORBIDDEN,
                    "csrf_failed",
                    "a change made with the session cookie needs the page's X-CSRF-Token header",
                )
                .into_response();
            }
            state
                .auth
                .authenticate_session(cookie)
                .await
                .map(|(actor, _)| actor)
        }
        (None, None) => return ApiError::from(AuthFailure::MissingCredentials).into_response(),
    };
    let actor = match resolved {
        Ok(a) => a,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let needed = if safe { Scope::Read } else { Scope::Write };
    if let Err(e) = actor.require_scope(needed) {
        return ApiError::from(e).into_response();
    }
    if state.limits.enabled
        && let Err(wait) = state.limits.per_user.check(&actor.user_id)
    {
        return ApiError::rate_limited(retry_secs(wait)).into_response();
    }
    req.extensions_mut().insert(actor);
    next.run(req).await
}

/// Whether the browser came over TLS to a trusted proxy that says so (`X-Forwarded-Proto`).
pub(crate) fn forwarded_https(
    http: &crate::config::HttpConfig,
    headers: &header::HeaderMap,
) -> bool {
    http.trust_forwarded_for
        && headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

/// Headers that depend on the request: `Cache-Control: no-store` unless the handler chose
/// caching (pages, data and tokens are per person: no shared or browser cache keeps them), and
/// `Strict-Transport-Security` when the browser came over TLS (`http.secure_cookies`, or a
/// trusted proxy's `X-Forwarded-Proto: https`).
pub async fn transport_headers(
    State(http): State<std::sync::Arc<crate::config::HttpConfig>>,
    req: Request,
    next: Next,
) -> Response {
    let tls = http.secure_cookies || forwarded_https(&http, req.headers());
    let mut res = next.run(req).await;
    let headers = res.headers_mut();
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-store"),
        );
    }
    if tls {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            header::HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        );
    }
    res
}
