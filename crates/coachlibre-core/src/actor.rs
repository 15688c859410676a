//! Who is asking: the authenticated principal every service call receives.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ids::{ApiKeyId, TenantId, UserId};
use crate::user::Role;
use crate::{Error, Result};

/// What an API key may do. A session (password login) may do everything its role allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Read-only requests (GET).
    Read,
    /// Requests that change data.
    Write,
    /// Tenant administration (users, keys, audit log); only for admins' keys.
    Admin,
}

impl Scope {
    /// The scope as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Admin => "admin",
        }
    }

    /// Parse one stored or requested scope.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "read" => Ok(Self::Read),
            "write" => Ok(Self::Write),
            "admin" => Ok(Self::Admin),
            _ => Err(Error::invalid(
                "scopes",
                "each scope must be read, write or admin",
            )),
        }
    }
}

/// How the actor authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A JWT access token from a password login.
    Session,
    /// An API key, limited to its scopes.
    ApiKey { id: ApiKeyId, scopes: Vec<Scope> },
}

/// An authenticated caller inside one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub user_id: UserId,
    pub tenant_id: TenantId,
    pub role: Role,
    pub credential: Credential,
}

impl Actor {
    /// Whether the credential carries `scope` (sessions carry all).
    pub fn has_scope(&self, scope: Scope) -> bool {
        match &self.credential {
            Credential::Session => true,
            Credential::ApiKey { scopes, .. } => scopes.contains(&scope),
        }
    }

    /// Refuse unless the credential carries `scope`.
    pub fn require_scope(&self, scope: Scope) -> Result<()> {
        if self.has_scope(scope) {
            Ok(())
        } else {
            Err(Error::Forbidden(format!(
                "this API key lacks the '{}' scope",
                scope.as_str()
            )))
        }
    }

    /// Refuse unless the actor is an admin with an admin-capable credential.
    pub fn require_admin(&self) -> Result<()> {
        if self.role != Role::Admin {
            return Err(Error::Forbidden("only an admin may do this".into()));
        }
        self.require_scope(Scope::Admin)
    }

    /// Refuse unless the actor is at least a coach.
    pub fn require_coach(&self) -> Result<()> {
        if self.role < Role::Coach {
            return Err(Error::Forbidden(
                "only a coach or an admin may do this".into(),
            ));
        }
        Ok(())
    }
}
