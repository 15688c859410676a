//! People: their email, role, password and second factor.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ids::{TenantId, UserId};
use crate::{Error, Result};

/// What a user may do inside their tenant. Ordered: `Admin` > `Coach` > `Client`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A coach's client: sees only their own data.
    Client,
    /// A coach: manages their clients and agents.
    Coach,
    /// Runs the tenant: users, keys, audit log.
    Admin,
}

impl Role {
    /// The role as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Coach => "coach",
            Self::Client => "client",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "admin" => Ok(Self::Admin),
            "coach" => Ok(Self::Coach),
            "client" => Ok(Self::Client),
            _ => Err(Error::invalid(
                "role",
                "must be one of admin, coach, client",
            )),
        }
    }
}

/// A syntactically valid, lower-cased email address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    /// Validate and normalise (trim, lower-case) an address.
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim().to_lowercase();
        let bad = || Error::invalid("email", "not a valid email address");
        if s.len() > 254 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad());
        }
        let (local, domain) = s.rsplit_once('@').ok_or_else(bad)?;
        let domain_ok = !domain.is_empty()
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
            && !domain.contains('@');
        if local.is_empty() || local.len() > 64 || !domain_ok {
            return Err(bad());
        }
        Ok(Self(s))
    }

    /// The address as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Rebuild from storage (already validated when written).
    pub fn from_trusted(s: String) -> Self {
        Self(s)
    }
}

/// A plaintext password on its way to being hashed. Never printed.
#[derive(Clone)]
pub struct Password(String);

/// Shortest accepted password.
pub const MIN_PASSWORD_LEN: usize = 10;
/// Longest accepted password (bounds the hashing cost an attacker can impose).
pub const MAX_PASSWORD_LEN: usize = 256;

impl Password {
    /// Check the policy: 10 to 256 characters.
    pub fn parse(s: &str) -> Result<Self> {
        let n = s.chars().count();
        if n < MIN_PASSWORD_LEN {
            return Err(Error::invalid(
                "password",
                format!("must be at least {MIN_PASSWORD_LEN} characters"),
            ));
        }
        if n > MAX_PASSWORD_LEN {
            return Err(Error::invalid(
                "password",
                format!("must be at most {MAX_PASSWORD_LEN} characters"),
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// A random password that satisfies the policy (shown once to whoever asked for it).
    pub fn generate() -> Self {
        Self(crate::auth::secret::random_token(15))
    }

    /// The plaintext, for hashing or for showing once.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// Validate a human-readable name: trimmed, 1 to 200 characters, no control characters.
pub fn parse_display_name(field: &'static str, s: &str) -> Result<String> {
    let s = s.trim();
    if s.is_empty() || s.chars().count() > 200 || s.chars().any(char::is_control) {
        return Err(Error::invalid(
            field,
            "must be 1 to 200 characters without control characters",
        ));
    }
    Ok(s.to_owned())
}

/// Second-factor state of a user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MfaState {
    /// Sealed TOTP secret waiting for its first code (enrolment started, not finished).
    pub pending_secret: Option<String>,
    /// Sealed TOTP secret in force.
    pub secret: Option<String>,
    /// Last accepted TOTP time step, so a code is never accepted twice.
    pub last_step: i64,
}

impl MfaState {
    /// Whether sign-in requires a second factor.
    pub fn enabled(&self) -> bool {
        self.secret.is_some()
    }
}

/// A stored user, with its credentials. Never serialised as is: see [`UserView`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub tenant_id: TenantId,
    pub email: Email,
    pub display_name: String,
    pub role: Role,
    pub password_hash: String,
    pub mfa: MfaState,
    pub failed_logins: i32,
    pub locked_until: Option<chrono::DateTime<chrono::Utc>>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// What the API shows of a user.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserView {
    pub id: UserId,
    pub tenant_id: TenantId,
    pub email: String,
    pub display_name: String,
    pub role: Role,
    pub mfa_enabled: bool,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        Self {
            id: u.id,
            tenant_id: u.tenant_id,
            email: u.email.as_str().to_owned(),
            display_name: u.display_name.clone(),
            role: u.role,
            mfa_enabled: u.mfa.enabled(),
            created_at: u.created_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            Email::parse("  Ana@Example.ORG ").unwrap().as_str(),
            "ana@example.org"
        );
        for bad in [
            "",
            "a",
            "@x.org",
            "a@",
            "a@.x",
            "a@x.",
            "a b@x.org",
            "a@x..org",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn password_policy_and_redaction() {
        assert!(Password::parse("short").is_err());
        assert!(Password::parse(&"x".repeat(300)).is_err());
        let p = Password::parse("correct horse battery").unwrap();
        assert_eq!(format!("{p:?}"), "Password(***)");
        assert!(Password::parse(Password::generate().expose()).is_ok());
    }

    #[test]
    fn roles_parse_and_order() {
        assert_eq!("Coach".parse::<Role>().unwrap(), Role::Coach);
        assert!("root".parse::<Role>().is_err());
        assert!(Role::Admin > Role::Coach && Role::Coach > Role::Client);
    }
}
