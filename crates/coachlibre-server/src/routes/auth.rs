//! Sign-in, token refresh, sign-out and two-factor enrolment.

use axum::extract::State;
use axum::http::StatusCode;
use coachlibre_core::auth::{LoginAttempt, MfaEnrollment, Session};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiResult, ErrorBody};
use crate::extract::{Caller, ClientIp, Json};
use crate::state::AppState;

/// Credentials.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    #[schema(format = Email, max_length = 254)]
    pub email: String,
    pub password: String,
    /// Tenant slug; needed only when the email has accounts in several tenants.
    #[serde(default)]
    #[schema(pattern = "^([A-Za-z0-9][A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")]
    pub tenant: Option<String>,
    /// Six-digit code from the authenticator app, when two-factor is enabled.
    #[serde(default)]
    pub totp_code: Option<String>,
    /// A recovery code instead of the TOTP code.
    #[serde(default)]
    pub recovery_code: Option<String>,
}

/// Sign in with email and password; returns an access token and a refresh token.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in", body = Session),
        (status = 401, description = "Wrong credentials, or `mfa_required`", body = ErrorBody),
        (status = 422, description = "Malformed input", body = ErrorBody),
        (status = 429, description = "Rate limited or account locked", body = ErrorBody)))]
pub async fn login(
    State(state): State<AppState>,
    ip: ClientIp,
    Json(req): Json<LoginRequest>,
) -> ApiResult<Json<Session>> {
    let session = state
        .auth
        .login(LoginAttempt {
            tenant: req.tenant,
            email: req.email,
            password: req.password,
            totp_code: req.totp_code,
            recovery_code: req.recovery_code,
            ip: ip.text(),
        })
        .await?;
    Ok(Json(session))
}

/// A refresh token.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// Exchange a refresh token for new tokens. Each refresh token works once; presenting a
/// used one revokes every token descended from the same sign-in.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses(
        (status = 200, description = "New tokens", body = Session),
        (status = 401, description = "Invalid, expired or reused token", body = ErrorBody)))]
pub async fn refresh(
    State(state): State<AppState>,
    ip: ClientIp,
    Json(req): Json<RefreshRequest>,
) -> ApiResult<Json<Session>> {
    Ok(Json(
        state
            .auth
            .refresh(&req.refresh_token, ip.text().as_deref())
            .await?,
    ))
}

/// What to sign out of.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogoutRequest {
    /// End this session only; without it, every session of the user ends.
    #[serde(default)]
    pub refresh_token: Option<String>,
}

/// Sign out: revoke the refresh token's session, or all of the user's sessions.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", request_body = LogoutRequest,
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Signed out"),
        (status = 401, description = "Not signed in", body = ErrorBody)))]
pub async fn logout(
    State(state): State<AppState>,
    Caller(actor): Caller,
    ip: ClientIp,
    Json(req): Json<LogoutRequest>,
) -> ApiResult<StatusCode> {
    state
        .auth
        .logout(&actor, req.refresh_token.as_deref(), ip.text().as_deref())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Start two-factor enrolment: returns the secret and an `otpauth://` URI for a QR code.
#[utoipa::path(post, path = "/api/v1/auth/mfa/enroll", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 200, description = "Secret to add to an authenticator app", body = MfaEnrollment),
        (status = 409, description = "Already enabled", body = ErrorBody)))]
pub async fn mfa_enroll(
    State(state): State<AppState>,
    Caller(actor): Caller,
) -> ApiResult<Json<MfaEnrollment>> {
    Ok(Json(state.auth.mfa_enroll(&actor).await?))
}

/// A code from the authenticator app.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MfaCode {
    pub code: String,
}

/// Recovery codes, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecoveryCodes {
    /// Each works once in place of a TOTP code. Store them somewhere safe.
    pub recovery_codes: Vec<String>,
}

/// Finish enrolment with a first code; two-factor is then required at sign-in.
#[utoipa::path(post, path = "/api/v1/auth/mfa/verify", tag = "auth", request_body = MfaCode,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Enabled; recovery codes", body = RecoveryCodes),
        (status = 401, description = "Wrong code", body = ErrorBody),
        (status = 409, description = "No enrolment in progress", body = ErrorBody)))]
pub async fn mfa_verify(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Json(req): Json<MfaCode>,
) -> ApiResult<Json<RecoveryCodes>> {
    let recovery_codes = state.auth.mfa_activate(&actor, &req.code).await?;
    Ok(Json(RecoveryCodes { recovery_codes }))
}

/// The current password, to confirm a sensitive change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordConfirmation {
    pub password: String,
}

/// Turn two-factor off (requires the password).
#[utoipa::path(post, path = "/api/v1/auth/mfa/disable", tag = "auth",
    request_body = PasswordConfirmation, security(("bearer" = [])),
    responses(
        (status = 204, description = "Disabled"),
        (status = 401, description = "Wrong password", body = ErrorBody)))]
pub async fn mfa_disable(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Json(req): Json<PasswordConfirmation>,
) -> ApiResult<StatusCode> {
    state.auth.mfa_disable(&actor, &req.password).await?;
    Ok(StatusCode::NO_CONTENT)
}
