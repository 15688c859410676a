//! The web app: server-rendered pages for clients, coaches and admins, from the same binary as
//! the API. Templates are compiled with the binary (askama checks them at build time); the
//! stylesheet and the one script are embedded too, so nothing is fetched from elsewhere.
//!
//! A browser signs in with a form; its session is a `HttpOnly`, `SameSite=Lax` cookie holding
//! an unrotated refresh token (see [`coachlibre_core::auth::Auth::authenticate_session`]).
//! Every form carries an anti-forgery token bound to that cookie (`_csrf`); the page's script
//! sends the same token in `X-CSRF-Token` when it calls the JSON API with the cookie.

mod account;
mod admin;
mod client;
mod coach;
mod view;

use askama::Template;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use coachlibre_core::actor::Actor;
use coachlibre_core::user::{Role, UserView};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::state::AppState;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "cl_session";
/// Header carrying the anti-forgery token on API calls made with the cookie.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Cookie binding the sign-in form's anti-forgery token before there is a session.
const LOGIN_COOKIE: &str = "cl_login";
/// Largest form body (uploads have their own limit).
const FORM_LIMIT: usize = 256 * 1024;

/// The value of cookie `name`, if sent and non-empty.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// The session cookie's value, if any.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    cookie(headers, SESSION_COOKIE)
}

/// Whether cookies must be `Secure`: always when configured, else when a trusted proxy says
/// the browser came over TLS.
fn secure(state: &AppState, headers: &HeaderMap) -> bool {
    state.config.http.secure_cookies || forwarded_https(state, headers)
}

/// Whether a trusted proxy (`http.trust_forwarded_for`) says the request came over TLS.
pub(crate) fn forwarded_https(state: &AppState, headers: &HeaderMap) -> bool {
    crate::middleware::forwarded_https(&state.config.http, headers)
}

/// A `Set-Cookie` value; `max_age` 0 deletes the cookie.
fn set_cookie(name: &str, value: &str, max_age: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("cl_invalid=; Max-Age=0"))
}

// ---------------------------------------------------------------------------------------------
// Errors

/// An error shown as a page: the status and a message saying what to do.
#[derive(Debug)]
pub struct WebError {
    status: StatusCode,
    message: String,
}

impl WebError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "There is nothing at this address, or it is not yours to see.",
        )
    }
}

impl From<coachlibre_core::Error> for WebError {
    fn from(e: coachlibre_core::Error) -> Self {
        ApiError::from(e).into()
    }
}

impl From<ApiError> for WebError {
    fn from(e: ApiError) -> Self {
        if e.status.is_server_error() {
            tracing::error!(code = e.code, message = %e.message, "page failed");
            return Self::new(
                e.status,
                "Something went wrong on our side; it has been logged. Try again in a moment.",
            );
        }
        Self::new(e.status, e.message)
    }
}

impl From<askama::Error> for WebError {
    fn from(e: askama::Error) -> Self {
        tracing::error!(error = %e, "template failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "This page could not be drawn; it has been logged.",
        )
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    l: view::Layout,
    status: u16,
    reason: &'a str,
    message: &'a str,
}

impl std::fmt::Debug for ErrorPage<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ErrorPage")
            .field("status", &self.status)
            .finish()
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let page = ErrorPage {
            l: view::Layout::bare("Error"),
            status: self.status.as_u16(),
            reason: self.status.canonical_reason().unwrap_or("Error"),
            message: &self.message,
        };
        match page.render() {
            Ok(html) => (self.status, Html(html)).into_response(),
            Err(_) => (self.status, self.message).into_response(),
        }
    }
}

pub type WebResult<T = Response> = Result<T, WebError>;

/// Render a template as a page.
fn render(t: &impl Template) -> WebResult {
    Ok(Html(t.render()?).into_response())
}

/// Where to go after a change: a redirect (303, so the browser fetches it with GET).
fn see(path: impl AsRef<str>) -> WebResult {
    Ok(Redirect::to(path.as_ref()).into_response())
}

// ---------------------------------------------------------------------------------------------
// The signed-in user

/// A signed-in browser: who it is and its anti-forgery token. Pages that take it send
/// everyone else to the sign-in page.
#[derive(Debug, Clone)]
pub struct Web {
    pub actor: Actor,
    pub user: UserView,
    pub csrf: String,
    /// The path asked for, to mark the current menu entry.
    pub path: String,
}

impl Web {
    fn is_coach(&self) -> bool {
        matches!(self.actor.role, Role::Coach | Role::Admin)
    }

    fn is_admin(&self) -> bool {
        self.actor.role == Role::Admin
    }

    fn require_coach(&self) -> WebResult<()> {
        if self.is_coach() {
            Ok(())
        } else {
            Err(WebError::forbidden(
                "This part of CoachLibre is for coaches. Your conversations are under “Conversations”.",
            ))
        }
    }

    fn require_admin(&self) -> WebResult<()> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(WebError::forbidden(
                "Only an administrator of your organisation can open this page.",
            ))
        }
    }

    /// The page layout for this user.
    fn layout(&self, title: impl Into<String>) -> view::Layout {
        view::Layout::for_user(self, title.into())
    }

    /// Where this user starts.
    fn home(role: Role) -> &'static str {
        match role {
            Role::Client => "/app",
            Role::Coach | Role::Admin => "/coach",
        }
    }
}

impl FromRequestParts<AppState> for Web {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let path = parts.uri.path().to_owned();
        let to_login = || {
            let next = parts
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned();
            let query = serde_urlencoded::to_string([("next", next)]).unwrap_or_default();
            Redirect::to(&format!("/login?{query}")).into_response()
        };
        let Some(token) = session_cookie(&parts.headers) else {
            return Err(to_login());
        };
        match state.auth.authenticate_session(token).await {
            Ok((actor, user)) => Ok(Self {
                csrf: state.auth.keys().csrf_token(token),
                actor,
                user,
                path,
            }),
            Err(coachlibre_core::Error::Unauthenticated(_)) => Err(to_login()),
            Err(e) => Err(WebError::from(e).into_response()),
        }
    }
}

/// The anti-forgery field every form sends.
#[derive(Deserialize)]
struct CsrfField {
    #[serde(rename = "_csrf", default)]
    csrf: String,
}

fn forged() -> WebError {
    WebError::forbidden(
        "This form is out of date or did not come from this site. Go back, reload the page and \
         send it again.",
    )
}

/// A submitted form from a signed-in browser, its anti-forgery token checked. `T` should not
/// deny unknown fields (`_csrf` is one).
#[derive(Debug)]
pub struct Form<T>(pub Web, pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for Form<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let web = Web::from_request_parts(&mut parts, state).await?;
        let bytes = axum::body::to_bytes(body, FORM_LIMIT).await.map_err(|_| {
            WebError::new(StatusCode::PAYLOAD_TOO_LARGE, "This form is too large.").into_response()
        })?;
        let token = session_cookie(&parts.headers).unwrap_or("");
        check_csrf(state, token, &bytes).map_err(IntoResponse::into_response)?;
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes).unwrap_or_default();
        if let Some((field, c)) = pairs
            .iter()
            .find_map(|(k, v)| Some((k, coachlibre_core::text::control_char(v)?)))
        {
            return Err(WebError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "The field “{field}” contains an invisible control character ({}). Remove \
                     it (it often comes with text pasted from another program) and send again.",
                    coachlibre_core::text::describe(c)
                ),
            )
            .into_response());
        }
        let value = serde_urlencoded::from_bytes(&bytes).map_err(|e| {
            WebError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("The form could not be read: {e}."),
            )
            .into_response()
        })?;
        Ok(Self(web, value))
    }
}

fn check_csrf(state: &AppState, binding: &str, body: &Bytes) -> WebResult<()> {
    let field: CsrfField = serde_urlencoded::from_bytes(body).map_err(|_| forged())?;
    if binding.is_empty() || !state.auth.keys().verify_csrf(binding, &field.csrf) {
        return Err(forged());
    }
    Ok(())
}

/// The query of a list page: the next page's cursor, and what was just done (`?done=...`,
/// shown as a notice by the page's own wording).
#[derive(Debug, Default, Deserialize)]
pub struct Listing {
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    done: Option<String>,
}

impl Listing {
    /// This page, of 50 rows.
    fn page(&self) -> WebResult<coachlibre_core::page::PageRequest> {
        Ok(coachlibre_core::page::PageRequest::parse(
            Some(50),
            self.cursor.as_deref(),
        )?)
    }
}

/// The first `n` rows (pages that show a bounded list, not paginated).
fn first(n: u32) -> WebResult<coachlibre_core::page::PageRequest> {
    Ok(coachlibre_core::page::PageRequest::parse(Some(n), None)?)
}

/// One section alone, for the script that refreshes it while work is in progress.
fn fragment(web: &Web, s: view::Section) -> WebResult {
    render(&view::Fragment {
        l: web.layout(""),
        s,
    })
}

/// A conversation's title, or what to show when it has none.
fn title_or(t: &str) -> String {
    if t.trim().is_empty() {
        "Untitled conversation".to_owned()
    } else {
        t.to_owned()
    }
}

/// A form with no fields but its token (buttons that delete, approve, sign out...).
#[derive(Debug, Deserialize)]
pub struct Empty {}

// ---------------------------------------------------------------------------------------------
// Assets and routes

const CSS: &str = include_str!("../../assets/app.css");
const JS: &str = include_str!("../../assets/app.js");

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

async fn root(headers: HeaderMap, state: axum::extract::State<AppState>) -> Response {
    if let Some(token) = session_cookie(&headers)
        && let Ok((actor, _)) = state.auth.authenticate_session(token).await
    {
        return Redirect::to(Web::home(actor.role)).into_response();
    }
    Redirect::to("/login").into_response()
}

/// What answers an address no route knows: a page for browsers, JSON under `/api` (the
/// error layer shapes it).
pub async fn fallback(uri: axum::http::Uri) -> Response {
    if uri.path().starts_with("/api/") {
        return StatusCode::NOT_FOUND.into_response();
    }
    WebError::not_found().into_response()
}

/// The web app's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(root))
        .route(
            "/assets/app.css",
            get(|| async { asset("text/css; charset=utf-8", CSS) }),
        )
        .route(
            "/assets/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", JS) }),
        )
        .route("/login", get(account::login_page).post(account::login))
        .route("/logout", post(account::logout))
        .route("/account", get(account::page))
        .route("/account/password", post(account::change_password))
        .route("/account/mfa/enroll", post(account::mfa_enroll))
        .route("/account/mfa/verify", post(account::mfa_verify))
        .route("/account/mfa/disable", post(account::mfa_disable))
        .merge(client::routes())
        .merge(coach::routes())
        .merge(admin::routes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; cl_session=abc ; b=2"),
        );
        assert_eq!(session_cookie(&h), Some("abc"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "c"), None);
        let mut empty = HeaderMap::new();
        empty.append(header::COOKIE, HeaderValue::from_static("cl_session="));
        assert_eq!(session_cookie(&empty), None);
    }

    #[test]
    fn session_cookies_are_http_only_and_same_site() {
        let c = set_cookie(SESSION_COOKIE, "t", 60, true);
        let c = c.to_str().unwrap_or_default();
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Lax") && c.contains("Secure"));
        let plain = set_cookie(SESSION_COOKIE, "t", 60, false);
        assert!(!plain.to_str().unwrap_or_default().contains("Secure"));
    }
}
