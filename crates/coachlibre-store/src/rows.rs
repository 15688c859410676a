//! Row decoding, shared by both drivers. These are macros rather than functions because a
//! generic function over `sqlx::Row` would need a bound per decoded type; expanded inside an
//! `on_pool!` arm, the row type is concrete and each column decodes natively.

use coachlibre_core::actor::Scope;
use coachlibre_core::store::StoreError;
use coachlibre_core::user::Role;

/// Columns of `users`, in the order [`user_row!`] reads them by name.
macro_rules! user_cols {
    () => {
        "id, tenant_id, email, display_name, role, password_hash, totp_pending_secret, \
         totp_secret, totp_last_step, failed_logins, locked_until, created_at, updated_at"
    };
}
pub(crate) use user_cols;

macro_rules! user_row {
    ($r:expr) => {{
        use sqlx::Row as _;
        let r = &$r;
        coachlibre_core::user::User {
            id: r
                .try_get::<uuid::Uuid, _>("id")
                .map_err($crate::db_err)?
                .into(),
            tenant_id: r
                .try_get::<uuid::Uuid, _>("tenant_id")
                .map_err($crate::db_err)?
                .into(),
            email: coachlibre_core::user::Email::from_trusted(
                r.try_get("email").map_err($crate::db_err)?,
            ),
            display_name: r.try_get("display_name").map_err($crate::db_err)?,
            role: $crate::rows::role(&r.try_get::<String, _>("role").map_err($crate::db_err)?)?,
            password_hash: r.try_get("password_hash").map_err($crate::db_err)?,
            mfa: coachlibre_core::user::MfaState {
                pending_secret: r.try_get("totp_pending_secret").map_err($crate::db_err)?,
                secret: r.try_get("totp_secret").map_err($crate::db_err)?,
                last_step: r.try_get("totp_last_step").map_err($crate::db_err)?,
            },
            failed_logins: r.try_get("failed_logins").map_err($crate::db_err)?,
            locked_until: r.try_get("locked_until").map_err($crate::db_err)?,
            created_at: r.try_get("created_at").map_err($crate::db_err)?,
            updated_at: r.try_get("updated_at").map_err($crate::db_err)?,
        }
    }};
}
pub(crate) use user_row;

macro_rules! tenant_row {
    ($r:expr) => {{
        use sqlx::Row as _;
        let r = &$r;
        coachlibre_core::tenant::Tenant::from_parts(
            r.try_get::<uuid::Uuid, _>("id")
                .map_err($crate::db_err)?
                .into(),
            r.try_get("slug").map_err($crate::db_err)?,
            r.try_get("name").map_err($crate::db_err)?,
            r.try_get("created_at").map_err($crate::db_err)?,
        )
    }};
}
pub(crate) use tenant_row;

macro_rules! refresh_row {
    ($r:expr) => {{
        use sqlx::Row as _;
        let r = &$r;
        coachlibre_core::store::RefreshToken {
            id: r
                .try_get::<uuid::Uuid, _>("id")
                .map_err($crate::db_err)?
                .into(),
            tenant_id: r
                .try_get::<uuid::Uuid, _>("tenant_id")
                .map_err($crate::db_err)?
                .into(),
            user_id: r
                .try_get::<uuid::Uuid, _>("user_id")
                .map_err($crate::db_err)?
                .into(),
            family_id: r
                .try_get::<uuid::Uuid, _>("family_id")
                .map_err($crate::db_err)?
                .into(),
            token_hash: r.try_get("token_hash").map_err($crate::db_err)?,
            created_at: r.try_get("created_at").map_err($crate::db_err)?,
            expires_at: r.try_get("expires_at").map_err($crate::db_err)?,
            used_at: r.try_get("used_at").map_err($crate::db_err)?,
            revoked_at: r.try_get("revoked_at").map_err($crate::db_err)?,
        }
    }};
}
pub(crate) use refresh_row;

macro_rules! api_key_row {
    ($r:expr) => {{
        use sqlx::Row as _;
        let r = &$r;
        coachlibre_core::store::ApiKey {
            id: r
                .try_get::<uuid::Uuid, _>("id")
                .map_err($crate::db_err)?
                .into(),
            tenant_id: r
                .try_get::<uuid::Uuid, _>("tenant_id")
                .map_err($crate::db_err)?
                .into(),
            user_id: r
                .try_get::<uuid::Uuid, _>("user_id")
                .map_err($crate::db_err)?
                .into(),
            name: r.try_get("name").map_err($crate::db_err)?,
            prefix: r.try_get("prefix").map_err($crate::db_err)?,
            key_hash: r.try_get("key_hash").map_err($crate::db_err)?,
            scopes: $crate::rows::scopes(
                &r.try_get::<String, _>("scopes").map_err($crate::db_err)?,
            )?,
            created_at: r.try_get("created_at").map_err($crate::db_err)?,
            last_used_at: r.try_get("last_used_at").map_err($crate::db_err)?,
            revoked_at: r.try_get("revoked_at").map_err($crate::db_err)?,
        }
    }};
}
pub(crate) use api_key_row;

macro_rules! audit_row {
    ($r:expr) => {{
        use sqlx::Row as _;
        let r = &$r;
        let detail: String = r.try_get("detail").map_err($crate::db_err)?;
        coachlibre_core::audit::AuditEntry {
            id: r
                .try_get::<uuid::Uuid, _>("id")
                .map_err($crate::db_err)?
                .into(),
            tenant_id: r
                .try_get::<Option<uuid::Uuid>, _>("tenant_id")
                .map_err($crate::db_err)?
                .map(Into::into),
            actor_id: r
                .try_get::<Option<uuid::Uuid>, _>("actor_id")
                .map_err($crate::db_err)?
                .map(Into::into),
            action: r.try_get("action").map_err($crate::db_err)?,
            target: r.try_get("target").map_err($crate::db_err)?,
            ip: r.try_get("ip").map_err($crate::db_err)?,
            detail: serde_json::from_str(&detail)
                .map_err(|e| coachlibre_core::store::StoreError::Backend(e.to_string()))?,
            created_at: r.try_get("created_at").map_err($crate::db_err)?,
        }
    }};
}
pub(crate) use audit_row;

/// Decode a stored role.
pub(crate) fn role(s: &str) -> Result<Role, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Backend(format!("unknown role '{s}' in database")))
}

/// Decode stored scopes (space-separated).
pub(crate) fn scopes(s: &str) -> Result<Vec<Scope>, StoreError> {
    s.split_whitespace()
        .map(|x| Scope::parse(x).map_err(|_| StoreError::Backend(format!("unknown scope '{x}'"))))
        .collect()
}

/// Encode scopes for storage.
pub(crate) fn scopes_text(scopes: &[Scope]) -> String {
    scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}
