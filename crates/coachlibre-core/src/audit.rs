//! The audit trail: who did what, when, from where. Written for logins, failures, role and
//! key changes; read by admins.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ids::{AuditId, TenantId, UserId};

/// Stable names of audited actions.
pub mod action {
    pub const LOGIN_SUCCEEDED: &str = "auth.login_succeeded";
    pub const LOGIN_FAILED: &str = "auth.login_failed";
    pub const LOGIN_LOCKED: &str = "auth.login_locked";
    pub const LOGOUT: &str = "auth.logout";
    pub const REFRESH_REUSED: &str = "auth.refresh_reused";
    pub const MFA_ENABLED: &str = "auth.mfa_enabled";
    pub const MFA_DISABLED: &str = "auth.mfa_disabled";
    pub const RECOVERY_CODE_USED: &str = "auth.recovery_code_used";
    pub const PASSWORD_CHANGED: &str = "user.password_changed";
    pub const PASSWORD_RESET: &str = "user.password_reset";
    pub const USER_CREATED: &str = "user.created";
    pub const ROLE_CHANGED: &str = "user.role_changed";
    pub const COACH_ASSIGNED: &str = "user.coach_assigned";
    pub const COACH_UNASSIGNED: &str = "user.coach_unassigned";
    pub const APIKEY_CREATED: &str = "apikey.created";
    pub const APIKEY_REVOKED: &str = "apikey.revoked";
    pub const TENANT_CREATED: &str = "tenant.created";
    pub const AGENT_CREATED: &str = "agent.created";
    pub const AGENT_UPDATED: &str = "agent.updated";
    pub const AGENT_DELETED: &str = "agent.deleted";
    pub const TOOL_CALLED: &str = "tool.called";
    pub const TOOL_APPROVAL_REQUESTED: &str = "tool.approval_requested";
    pub const TOOL_APPROVED: &str = "tool.approved";
    pub const TOOL_REJECTED: &str = "tool.rejected";
    pub const MEMORY_DELETED: &str = "memory.deleted";
    pub const PROFILE_UPDATED: &str = "profile.updated";
    pub const RETENTION_CHANGED: &str = "tenant.retention_changed";
    pub const PHONE_CHANGED: &str = "user.phone_changed";
    pub const SMS_NUMBER_ADDED: &str = "sms.number_added";
    pub const SMS_NUMBER_REMOVED: &str = "sms.number_removed";
}

/// One audited event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    pub id: AuditId,
    /// The tenant concerned; absent for failed logins to an unknown account.
    pub tenant_id: Option<TenantId>,
    /// Who acted; absent for the system or an anonymous caller.
    pub actor_id: Option<UserId>,
    pub action: String,
    /// What was acted on (a user id, a key id, an email for failed logins).
    pub target: Option<String>,
    /// Client IP address, when the action came over HTTP.
    pub ip: Option<String>,
    /// Action-specific details (never secrets); `null` when the action has none.
    #[schema(value_type = Option<Object>)]
    pub detail: serde_json::Value,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl AuditEntry {
    /// A new entry stamped now.
    pub fn new(tenant_id: Option<TenantId>, actor_id: Option<UserId>, action: &str) -> Self {
        Self {
            id: AuditId::generate(),
            tenant_id,
            actor_id,
            action: action.to_owned(),
            target: None,
            ip: None,
            detail: serde_json::Value::Null,
            created_at: crate::now(),
        }
    }

    /// Set what was acted on.
    pub fn target(mut self, target: impl ToString) -> Self {
        self.target = Some(target.to_string());
        self
    }

    /// Set the client's address.
    pub fn ip(mut self, ip: Option<&str>) -> Self {
        self.ip = ip.map(str::to_owned);
        self
    }

    /// Attach details.
    pub fn detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = detail;
        self
    }
}
