//! Storage traits: what the domain needs from a database, nothing about how.
//!
//! Every method that reads or changes tenant data takes the [`TenantId`] and must filter on
//! it: a record of another tenant is indistinguishable from a missing one. The only lookups
//! that cross tenants are those keyed by an unguessable secret (a refresh-token hash, an API
//! key prefix whose hash is then checked) and login by email, which is how a person names
//! their account before any tenant is known.
//!
//! The contract test suite in `coachlibre-store` runs every backend through these methods.

use async_trait::async_trait;

use crate::Timestamp;
use crate::actor::Scope;
use crate::audit::AuditEntry;
use crate::ids::{ApiKeyId, RefreshTokenId, SessionFamilyId, TenantId, UserId};
use crate::page::PageRequest;
use crate::tenant::Tenant;
use crate::user::{Email, MfaState, Role, User};

/// What a backend can report.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The record to change does not exist (in this tenant).
    #[error("not found")]
    NotFound,
    /// A uniqueness constraint refused the write.
    #[error("{0}")]
    Conflict(String),
    /// The database failed; the text is for the logs.
    #[error("database error: {0}")]
    Backend(String),
}

/// Result of a storage call.
pub type StoreResult<T> = Result<T, StoreError>;

/// Tenants.
#[async_trait]
pub trait TenantStore {
    async fn insert_tenant(&self, tenant: &Tenant) -> StoreResult<()>;
    async fn get_tenant(&self, id: TenantId) -> StoreResult<Option<Tenant>>;
    async fn get_tenant_by_slug(&self, slug: &str) -> StoreResult<Option<Tenant>>;
    async fn list_tenants(&self) -> StoreResult<Vec<Tenant>>;
}

/// Which users to list.
#[derive(Debug, Clone, Default)]
pub struct UserFilter {
    /// Only users with this role.
    pub role: Option<Role>,
    /// Only clients of this coach.
    pub coach_id: Option<UserId>,
}

/// Users, their credentials and coach–client links.
#[async_trait]
pub trait UserStore {
    /// Insert; a duplicate email in the tenant is a [`StoreError::Conflict`].
    async fn insert_user(&self, user: &User) -> StoreResult<()>;
    async fn get_user(&self, tenant: TenantId, id: UserId) -> StoreResult<Option<User>>;
    async fn get_user_by_email(&self, tenant: TenantId, email: &Email)
    -> StoreResult<Option<User>>;
    /// Accounts with this email in every tenant (login only).
    async fn find_users_by_email(&self, email: &Email) -> StoreResult<Vec<User>>;
    /// Users ordered by id, after the cursor.
    async fn list_users(
        &self,
        tenant: TenantId,
        filter: &UserFilter,
        page: &PageRequest,
    ) -> StoreResult<Vec<User>>;
    async fn count_users_with_role(&self, tenant: TenantId, role: Role) -> StoreResult<i64>;
    async fn set_role(&self, tenant: TenantId, id: UserId, role: Role) -> StoreResult<()>;
    async fn set_password_hash(&self, tenant: TenantId, id: UserId, hash: &str) -> StoreResult<()>;
    /// Count one more failed login; returns the new count.
    async fn record_login_failure(&self, tenant: TenantId, id: UserId) -> StoreResult<i32>;
    async fn lock_user(&self, tenant: TenantId, id: UserId, until: Timestamp) -> StoreResult<()>;
    /// Clear the failure count and any lock.
    async fn clear_login_failures(&self, tenant: TenantId, id: UserId) -> StoreResult<()>;
    /// Replace the second-factor secrets (not `last_step`, see below).
    async fn set_mfa(&self, tenant: TenantId, id: UserId, mfa: &MfaState) -> StoreResult<()>;
    /// Accept TOTP step `step` only if it is newer than the last accepted one. Atomic, so two
    /// concurrent logins cannot both use the same code.
    async fn advance_totp_step(&self, tenant: TenantId, id: UserId, step: i64)
    -> StoreResult<bool>;
    async fn replace_recovery_codes(
        &self,
        tenant: TenantId,
        user: UserId,
        hashes: &[String],
    ) -> StoreResult<()>;
    /// Mark a recovery code used; false if unknown or already used.
    async fn consume_recovery_code(
        &self,
        tenant: TenantId,
        user: UserId,
        hash: &str,
    ) -> StoreResult<bool>;
    async fn link_coach(&self, tenant: TenantId, coach: UserId, client: UserId) -> StoreResult<()>;
    /// False if there was no such link.
    async fn unlink_coach(
        &self,
        tenant: TenantId,
        coach: UserId,
        client: UserId,
    ) -> StoreResult<bool>;
    async fn is_coach_of(
        &self,
        tenant: TenantId,
        coach: UserId,
        client: UserId,
    ) -> StoreResult<bool>;
    async fn coaches_of(&self, tenant: TenantId, client: UserId) -> StoreResult<Vec<User>>;
}

/// A stored refresh token (only its hash is kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshToken {
    pub id: RefreshTokenId,
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub family_id: SessionFamilyId,
    pub token_hash: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    /// Set when the token was exchanged for a new one.
    pub used_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
}

/// Refresh tokens, grouped in families (one per login).
#[async_trait]
pub trait SessionStore {
    async fn insert_refresh_token(&self, token: &RefreshToken) -> StoreResult<()>;
    async fn find_refresh_token(&self, hash: &str) -> StoreResult<Option<RefreshToken>>;
    /// Mark used if not used yet; false if another request used it first.
    async fn mark_refresh_token_used(&self, id: RefreshTokenId, at: Timestamp)
    -> StoreResult<bool>;
    async fn revoke_family(&self, family: SessionFamilyId, at: Timestamp) -> StoreResult<()>;
    async fn revoke_user_sessions(
        &self,
        tenant: TenantId,
        user: UserId,
        at: Timestamp,
    ) -> StoreResult<()>;
}

/// A stored API key (only its hash is kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub name: String,
    /// Public part of the key, shown in listings to tell keys apart.
    pub prefix: String,
    pub key_hash: String,
    pub scopes: Vec<Scope>,
    pub created_at: Timestamp,
    pub last_used_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
}

/// API keys.
#[async_trait]
pub trait ApiKeyStore {
    async fn insert_api_key(&self, key: &ApiKey) -> StoreResult<()>;
    async fn find_api_key_by_prefix(&self, prefix: &str) -> StoreResult<Option<ApiKey>>;
    async fn get_api_key(&self, tenant: TenantId, id: ApiKeyId) -> StoreResult<Option<ApiKey>>;
    /// Keys ordered by id; only `user`'s when given.
    async fn list_api_keys(
        &self,
        tenant: TenantId,
        user: Option<UserId>,
        page: &PageRequest,
    ) -> StoreResult<Vec<ApiKey>>;
    /// False if unknown or already revoked.
    async fn revoke_api_key(
        &self,
        tenant: TenantId,
        id: ApiKeyId,
        at: Timestamp,
    ) -> StoreResult<bool>;
    async fn touch_api_key(&self, id: ApiKeyId, at: Timestamp) -> StoreResult<()>;
}

/// The audit trail.
#[async_trait]
pub trait AuditStore {
    async fn append_audit(&self, entry: &AuditEntry) -> StoreResult<()>;
    /// Newest first, before the cursor.
    async fn list_audit(
        &self,
        tenant: TenantId,
        page: &PageRequest,
    ) -> StoreResult<Vec<AuditEntry>>;
}

/// Whole-database operations.
#[async_trait]
pub trait SystemStore {
    /// Cheap round trip, for readiness probes.
    async fn ping(&self) -> StoreResult<()>;
    /// Whether [`SystemStore::bootstrap`] ever succeeded on this database.
    async fn is_bootstrapped(&self) -> StoreResult<bool>;
    /// Create the first tenant and its admin, once in the life of the database. Returns false
    /// (and writes nothing) if the database was bootstrapped before, even if that tenant has
    /// since been removed.
    async fn bootstrap(&self, tenant: &Tenant, admin: &User) -> StoreResult<bool>;
    /// Which backend this is (`sqlite` or `postgres`).
    fn backend(&self) -> &'static str;
}

/// Every storage capability; what services hold as `Arc<dyn Store>`.
pub trait Store:
    TenantStore + UserStore + SessionStore + ApiKeyStore + AuditStore + SystemStore + Send + Sync
{
}

impl<T> Store for T where
    T: TenantStore
        + UserStore
        + SessionStore
        + ApiKeyStore
        + AuditStore
        + SystemStore
        + Send
        + Sync
{
}

/// Every storage trait, to call store methods directly (`use coachlibre_core::store::prelude::*`).
pub mod prelude {
    pub use super::{
        ApiKeyStore, AuditStore, SessionStore, Store, SystemStore, TenantStore, UserStore,
    };
}
