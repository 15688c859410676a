//! Row decoding, shared by both drivers. These are macros rather than functions because a
//! generic function over `sqlx::Row` would need a bound per decoded type; expanded inside an
//! `on_pool!` arm, the row type is concrete and each column decodes natively.

/// Decode column `$name` of row `$r` (type inferred), mapping driver errors.
macro_rules! col {
    ($r:expr, $name:literal) => {
        sqlx::Row::try_get($r, $name).map_err($crate::db_err)?
    };
    ($r:expr, $name:literal, $t:ty) => {
        sqlx::Row::try_get::<$t, _>($r, $name).map_err($crate::db_err)?
    };
}
pub(crate) use col;

/// Run `$q` with `fetch_optional` on pool `$p` and decode the row with macro `$decode`.
macro_rules! fetch_opt {
    ($q:expr, $p:expr, $decode:ident) => {
        match $q.fetch_optional($p).await.map_err($crate::db_err)? {
            Some(r) => Some($decode!(r)),
            None => None,
        }
    };
}
pub(crate) use fetch_opt;

/// Run `$q` with `fetch_all` on pool `$p` and decode every row with macro `$decode`.
macro_rules! fetch_vec {
    ($q:expr, $p:expr, $decode:ident) => {{
        let rows = $q.fetch_all($p).await.map_err($crate::db_err)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push($decode!(r));
        }
        out
    }};
}
pub(crate) use fetch_vec;

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
        let r = &$r;
        coachlibre_core::user::User {
            id: $crate::rows::col!(r, "id", uuid::Uuid).into(),
            tenant_id: $crate::rows::col!(r, "tenant_id", uuid::Uuid).into(),
            email: coachlibre_core::user::Email::from_trusted($crate::rows::col!(r, "email")),
            display_name: $crate::rows::col!(r, "display_name"),
            role: $crate::rows::role(&$crate::rows::col!(r, "role", String))?,
            password_hash: $crate::rows::col!(r, "password_hash"),
            mfa: coachlibre_core::user::MfaState {
                pending_secret: $crate::rows::col!(r, "totp_pending_secret"),
                secret: $crate::rows::col!(r, "totp_secret"),
                last_step: $crate::rows::col!(r, "totp_last_step"),
            },
            failed_logins: $crate::rows::col!(r, "failed_logins"),
            locked_until: $crate::rows::col!(r, "locked_until"),
            created_at: $crate::rows::col!(r, "created_at"),
            updated_at: $crate::rows::col!(r, "updated_at"),
        }
    }};
}
pub(crate) use user_row;

macro_rules! tenant_row {
    ($r:expr) => {{
        let r = &$r;
        coachlibre_core::tenant::Tenant::from_parts(
            $crate::rows::col!(r, "id", uuid::Uuid).into(),
            $crate::rows::col!(r, "slug"),
            $crate::rows::col!(r, "name"),
            $crate::rows::col!(r, "created_at"),
        )
    }};
}
pub(crate) use tenant_row;

macro_rules! refresh_row {
    ($r:expr) => {{
        let r = &$r;
        coachlibre_core::store::RefreshToken {
            id: $crate::rows::col!(r, "id", uuid::Uuid).into(),
            tenant_id: $crate::rows::col!(r, "tenant_id", uuid::Uuid).into(),
            user_id: $crate::rows::col!(r, "user_id", uuid::Uuid).into(),
            family_id: $crate::rows::col!(r, "family_id", uuid::Uuid).into(),
            token_hash: $crate::rows::col!(r, "token_hash"),
            created_at: $crate::rows::col!(r, "created_at"),
            expires_at: $crate::rows::col!(r, "expires_at"),
            used_at: $crate::rows::col!(r, "used_at"),
            revoked_at: $crate::rows::col!(r, "revoked_at"),
        }
    }};
}
pub(crate) use refresh_row;

macro_rules! api_key_row {
    ($r:expr) => {{
        let r = &$r;
        coachlibre_core::store::ApiKey {
            id: $crate::rows::col!(r, "id", uuid::Uuid).into(),
            tenant_id: $crate::rows::col!(r, "tenant_id", uuid::Uuid).into(),
            user_id: $crate::rows::col!(r, "user_id", uuid::Uuid).into(),
            name: $crate::rows::col!(r, "name"),
            prefix: $crate::rows::col!(r, "prefix"),
            key_hash: $crate::rows::col!(r, "key_hash"),
            scopes: $crate::rows::scopes(&$crate::rows::col!(r, "scopes", String))?,
            created_at: $crate::rows::col!(r, "created_at"),
            last_used_at: $crate::rows::col!(r, "last_used_at"),
            revoked_at: $crate::rows::col!(r, "revoked_at"),
        }
    }};
}
pub(crate) use api_key_row;

macro_rules! audit_row {
    ($r:expr) => {{
        let r = &$r;
        let detail: String = $crate::rows::col!(r, "detail");
        coachlibre_core::audit::AuditEntry {
            id: $crate::rows::col!(r, "id", uuid::Uuid).into(),
            tenant_id: $crate::rows::col!(r, "tenant_id", Option<uuid::Uuid>).map(Into::into),
            actor_id: $crate::rows::col!(r, "actor_id", Option<uuid::Uuid>).map(Into::into),
            action: $crate::rows::col!(r, "action"),
            target: $crate::rows::col!(r, "target"),
            ip: $crate::rows::col!(r, "ip"),
            detail: serde_json::from_str(&detail)
                .map_err(|e| coachlibre_core::store::StoreError::Backend(e.to_string()))?,
            created_at: $crate::rows::col!(r, "created_at"),
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
