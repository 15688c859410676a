//! Sign-in, sign-out and the account page (password, two-factor enrolment with a QR code).

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect};
use coachlibre_core::Error;
use coachlibre_core::auth::LoginAttempt;
use coachlibre_core::auth::secret::random_token;
use coachlibre_core::error::AuthFailure;
use serde::Deserialize;

use super::view::Layout;
use super::{
    Empty, Form, LOGIN_COOKIE, SESSION_COOKIE, Web, WebError, WebResult, check_csrf, cookie,
    render, secure, see, session_cookie, set_cookie,
};
use crate::extract::ClientIp;
use crate::state::AppState;

#[derive(Debug, Template)]
#[template(path = "login.html")]
struct LoginPage {
    l: Layout,
    email: String,
    next: String,
    error: Option<String>,
    /// Ask for the authenticator code.
    ask_code: bool,
    /// Ask for the organisation (the email has accounts in several).
    ask_tenant: bool,
    tenant: String,
}

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    #[serde(default)]
    next: Option<String>,
    #[serde(default)]
    changed: Option<String>,
}

/// Only paths of this site, so a link cannot send a user elsewhere after signing in.
fn safe_next(next: Option<&str>) -> Option<&str> {
    next.filter(|n| n.starts_with('/') && !n.starts_with("//") && !n.starts_with("/\\"))
}

fn login_response(
    state: &AppState,
    headers: &HeaderMap,
    status: StatusCode,
    mut page: LoginPage,
) -> WebResult {
    // The form's token is bound to a random cookie of its own until there is a session.
    let (binding, fresh) = match cookie(headers, LOGIN_COOKIE) {
        Some(b) => (b.to_owned(), false),
        None => (random_token(24), true),
    };
    page.l.csrf = state.auth.keys().csrf_token(&binding);
    let mut response = (status, axum::response::Html(page.render()?)).into_response();
    if fresh {
        response.headers_mut().append(
            header::SET_COOKIE,
            set_cookie(LOGIN_COOKIE, &binding, 3600, secure(state, headers)),
        );
    }
    Ok(response)
}

pub async fn login_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> WebResult {
    if let Some(token) = session_cookie(&headers)
        && let Ok((actor, _)) = state.auth.authenticate_session(token).await
    {
        let to = safe_next(q.next.as_deref()).unwrap_or(Web::home(actor.role));
        return see(to);
    }
    let notice = q
        .changed
        .is_some()
        .then_some("Your password was changed: sign in with the new one.");
    let page = LoginPage {
        l: Layout::bare("Sign in").notice(notice),
        email: String::new(),
        next: safe_next(q.next.as_deref()).unwrap_or("").to_owned(),
        error: None,
        ask_code: false,
        ask_tenant: false,
        tenant: String::new(),
    };
    login_response(&state, &headers, StatusCode::OK, page)
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    next: String,
}

pub async fn login(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> WebResult {
    check_csrf(&state, cookie(&headers, LOGIN_COOKIE).unwrap_or(""), &body)?;
    let form: LoginForm = serde_urlencoded::from_bytes(&body)
        .map_err(|e| WebError::bad_request(format!("The form could not be read: {e}.")))?;
    let code = form.code.trim();
    // A code of the recovery shape (longer than six digits) is taken as a recovery code.
    let (totp_code, recovery_code) = match code {
        "" => (None, None),
        c if c.len() <= 6 => (Some(c.to_owned()), None),
        c => (None, Some(c.to_owned())),
    };
    let attempt = LoginAttempt {
        tenant: Some(form.tenant.trim().to_owned()).filter(|t| !t.is_empty()),
        email: form.email.trim().to_owned(),
        password: form.password,
        totp_code,
        recovery_code,
        ip: ip.text(),
    };
    let mut page = LoginPage {
        l: Layout::bare("Sign in"),
        email: form.email.trim().to_owned(),
        next: safe_next(Some(&form.next)).unwrap_or("").to_owned(),
        error: None,
        ask_code: false,
        ask_tenant: !form.tenant.is_empty(),
        tenant: form.tenant.clone(),
    };
    let (status, error) = match state.auth.login(attempt).await {
        Ok(session) => {
            let to = safe_next(Some(&form.next))
                .unwrap_or(Web::home(session.user.role))
                .to_owned();
            let secure = secure(&state, &headers);
            let max_age = state.auth.policy().refresh_ttl.as_secs();
            let mut response = Redirect::to(&to).into_response();
            let h = response.headers_mut();
            h.append(
                header::SET_COOKIE,
                set_cookie(SESSION_COOKIE, &session.refresh_token, max_age, secure),
            );
            h.append(header::SET_COOKIE, set_cookie(LOGIN_COOKIE, "", 0, secure));
            return Ok(response);
        }
        Err(Error::Unauthenticated(AuthFailure::MfaRequired)) => {
            page.ask_code = true;
            (
                StatusCode::UNAUTHORIZED,
                "This account uses two-factor authentication: enter your password again and \
                 the 6-digit code from your authenticator app (or a recovery code)."
                    .to_owned(),
            )
        }
        Err(Error::Unauthenticated(AuthFailure::InvalidMfaCode)) => {
            page.ask_code = true;
            (
                StatusCode::UNAUTHORIZED,
                "That code is not right. Codes change every 30 seconds: try the current one."
                    .to_owned(),
            )
        }
        Err(Error::Unauthenticated(_)) => (
            StatusCode::UNAUTHORIZED,
            "The email or the password is not right.".to_owned(),
        ),
        Err(Error::Locked { retry_after_secs }) => (
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "Too many failed sign-ins on this account from several places: it is locked \
                 for {} more minute(s). With two-factor sign-in on, your code opens it now; \
                 otherwise an administrator can reset your password.",
                retry_after_secs.div_ceil(60)
            ),
        ),
        Err(Error::TooManyAttempts { retry_after_secs }) => (
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "Too many failed sign-ins from here: wait {} minute(s) and try again.",
                retry_after_secs.div_ceil(60)
            ),
        ),
        Err(Error::Invalid {
            field: "tenant",
            message,
        }) => {
            page.ask_tenant = true;
            (StatusCode::UNPROCESSABLE_ENTITY, format!("{message}."))
        }
        Err(Error::Invalid { message, .. }) => {
            (StatusCode::UNPROCESSABLE_ENTITY, format!("{message}."))
        }
        Err(e) => return Err(e.into()),
    };
    page.error = Some(error);
    login_response(&state, &headers, status, page)
}

pub async fn logout(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Form(web, Empty {}): Form<Empty>,
) -> WebResult {
    let token = session_cookie(&headers).unwrap_or("");
    state
        .auth
        .logout(&web.actor, Some(token), ip.text().as_deref())
        .await?;
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, "", 0, secure(&state, &headers)),
    );
    Ok(response)
}

// ---------------------------------------------------------------------------------------------
// Account

#[derive(Debug, Template)]
#[template(path = "account.html")]
struct AccountPage {
    l: Layout,
    role: &'static str,
    mfa_enabled: bool,
    /// During enrolment: the QR code (SVG) and the secret to type instead.
    enrol: Option<(String, String)>,
    recovery_codes: Vec<String>,
    error: Option<String>,
}

impl AccountPage {
    fn new(web: &Web) -> Self {
        Self {
            l: web.layout("Account"),
            role: web.actor.role.as_str(),
            mfa_enabled: web.user.mfa_enabled,
            enrol: None,
            recovery_codes: Vec::new(),
            error: None,
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct Notice {
    #[serde(default)]
    done: Option<String>,
}

pub async fn page(web: Web, Query(q): Query<Notice>) -> WebResult {
    let mut page = AccountPage::new(&web);
    page.l = page.l.notice(match q.done.as_deref() {
        Some("mfa-off") => Some("Two-factor authentication is off."),
        _ => None,
    });
    render(&page)
}

fn with_error(web: &Web, status: StatusCode, e: WebError, prefix: &str) -> WebResult {
    let mut page = AccountPage::new(web);
    page.error = Some(format!("{prefix}{}", e.message));
    let mut r = render(&page)?;
    *r.status_mut() = status;
    Ok(r)
}

#[derive(Debug, Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    current: String,
    #[serde(default)]
    new: String,
    #[serde(default)]
    confirm: String,
}

pub async fn change_password(
    State(state): State<AppState>,
    Form(web, f): Form<PasswordForm>,
) -> WebResult {
    if f.new != f.confirm {
        return with_error(
            &web,
            StatusCode::UNPROCESSABLE_ENTITY,
            WebError::bad_request("the two new passwords differ"),
            "Password not changed: ",
        );
    }
    match state
        .auth
        .change_password(&web.actor, &f.current, &f.new)
        .await
    {
        // Every session ends with a password change, this one too.
        Ok(()) => see("/login?changed=1"),
        Err(Error::Unauthenticated(_)) => with_error(
            &web,
            StatusCode::UNAUTHORIZED,
            WebError::bad_request("the current password is not right"),
            "Password not changed: ",
        ),
        Err(e) => {
            let e = WebError::from(e);
            with_error(&web, e.status, e, "Password not changed: ")
        }
    }
}

/// An `otpauth://` URI as an SVG QR code.
fn qr_svg(uri: &str) -> WebResult<String> {
    let code = qrcode::QrCode::new(uri.as_bytes())
        .map_err(|e| WebError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(220, 220)
        .quiet_zone(true)
        .build())
}

pub async fn mfa_enroll(
    State(state): State<AppState>,
    Form(web, Empty {}): Form<Empty>,
) -> WebResult {
    let enrolment = state.auth.mfa_enroll(&web.actor).await?;
    let mut page = AccountPage::new(&web);
    page.enrol = Some((qr_svg(&enrolment.otpauth_uri)?, enrolment.secret));
    render(&page)
}

#[derive(Debug, Deserialize)]
pub struct CodeForm {
    #[serde(default)]
    code: String,
}

pub async fn mfa_verify(State(state): State<AppState>, Form(web, f): Form<CodeForm>) -> WebResult {
    match state.auth.mfa_activate(&web.actor, f.code.trim()).await {
        Ok(codes) => {
            let mut page = AccountPage::new(&web);
            page.mfa_enabled = true;
            page.recovery_codes = codes;
            page.l = page.l.notice(Some("Two-factor authentication is on."));
            render(&page)
        }
        Err(Error::Unauthenticated(_)) => with_error(
            &web,
            StatusCode::UNAUTHORIZED,
            WebError::bad_request(
                "that code is not right; start again and type the code your app shows now",
            ),
            "Not enabled: ",
        ),
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Deserialize)]
pub struct ConfirmForm {
    #[serde(default)]
    password: String,
}

pub async fn mfa_disable(
    State(state): State<AppState>,
    Form(web, f): Form<ConfirmForm>,
) -> WebResult {
    match state.auth.mfa_disable(&web.actor, &f.password).await {
        Ok(()) => see("/account?done=mfa-off"),
        Err(Error::Unauthenticated(_)) => with_error(
            &web,
            StatusCode::UNAUTHORIZED,
            WebError::bad_request("the password is not right"),
            "Still on: ",
        ),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next(Some("/coach")), Some("/coach"));
        assert_eq!(safe_next(Some("//evil.example")), None);
        assert_eq!(safe_next(Some("https://evil.example")), None);
        assert_eq!(safe_next(Some("/\\evil.example")), None);
        assert_eq!(safe_next(None), None);
    }
}
