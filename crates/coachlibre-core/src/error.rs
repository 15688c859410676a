//! The domain error: what went wrong, in terms a caller can act on.
//!
//! Each variant has a stable machine-readable [`Error::code`]; the HTTP layer maps variants to
//! status codes in one place. Internal failures carry their source for the logs but never show
//! it to the caller.

use crate::store::StoreError;

/// Result with the domain [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why an authentication attempt was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// Unknown account or wrong password (never says which).
    InvalidCredentials,
    /// Password accepted; a TOTP or recovery code is required to finish signing in.
    MfaRequired,
    /// The TOTP or recovery code was wrong or already used.
    InvalidMfaCode,
    /// No credentials were presented.
    MissingCredentials,
    /// The token is malformed, forged, revoked or unknown.
    InvalidToken,
    /// The token was valid once and has expired.
    TokenExpired,
    /// A refresh token was presented after it had been rotated: its family is now revoked.
    TokenReused,
}

impl AuthFailure {
    /// Stable code for API clients.
    pub fn code(self) -> &'static str {
        match self {
            Self::InvalidCredentials => "invalid_credentials",
            Self::MfaRequired => "mfa_required",
            Self::InvalidMfaCode => "invalid_mfa_code",
            Self::MissingCredentials => "missing_credentials",
            Self::InvalidToken => "invalid_token",
            Self::TokenExpired => "token_expired",
            Self::TokenReused => "token_reused",
        }
    }

    fn message(self) -> &'static str {
        match self {
            Self::InvalidCredentials => "email or password is incorrect",
            Self::MfaRequired => {
                "this account uses two-factor authentication: send totp_code or recovery_code"
            }
            Self::InvalidMfaCode => "the two-factor code is incorrect or was already used",
            Self::MissingCredentials => {
                "authentication required: send 'Authorization: Bearer <token>'"
            }
            Self::InvalidToken => "the token is invalid or revoked",
            Self::TokenExpired => "the token has expired",
            Self::TokenReused => {
                "this refresh token was already used; all sessions of its family were revoked"
            }
        }
    }
}

/// Everything the domain can refuse or fail at.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The thing does not exist *for this caller* (also used to hide other tenants' data).
    #[error("{what} not found")]
    NotFound { what: &'static str },
    /// Input failed validation.
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// The request conflicts with the current state (duplicate email, last admin, ...).
    #[error("{0}")]
    Conflict(String),
    /// Authentication failed.
    #[error("{}", .0.message())]
    Unauthenticated(AuthFailure),
    /// Authenticated, but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// Too many failed logins: the account is temporarily locked.
    #[error("too many failed attempts; try again in {retry_after_secs} s")]
    Locked { retry_after_secs: u64 },
    /// Too many failed sign-ins from this address for this email: wait before trying again.
    #[error("too many failed sign-ins from this address; try again in {retry_after_secs} s")]
    TooManyAttempts { retry_after_secs: u64 },
    /// The upload is larger than accepted.
    #[error("{0}")]
    TooLarge(String),
    /// The upload's format is not one that is understood.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A failure that is not the caller's fault. The message is logged, never returned.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Stable, documented error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "not_found",
            Self::Invalid { .. } => "invalid_input",
            Self::Conflict(_) => "conflict",
            Self::Unauthenticated(f) => f.code(),
            Self::Forbidden(_) => "forbidden",
            Self::Locked { .. } => "account_locked",
            Self::TooManyAttempts { .. } => "too_many_attempts",
            Self::TooLarge(_) => "too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::Internal(_) => "internal",
        }
    }

    /// Shorthand for a validation error.
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            message: message.into(),
        }
    }

    /// Shorthand for a missing or hidden record.
    pub fn not_found(what: &'static str) -> Self {
        Self::NotFound { what }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::NotFound { what: "record" },
            StoreError::Conflict(m) => Self::Conflict(m),
            StoreError::Backend(m) => Self::Internal(m),
        }
    }
}
