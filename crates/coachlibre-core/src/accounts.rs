//! Accounts: tenants, users, roles, coach–client links, API keys and the audit log, with the
//! rules of who may do what.
//!
//! Visibility rules: an admin sees every user of their tenant; a coach sees themself and their
//! own clients; a client sees themself. Anything else is reported as *not found*, so that ids
//! of other tenants (or of other coaches' clients) reveal nothing.

use std::sync::Arc;

use serde::Serialize;
use utoipa::ToSchema;

use crate::actor::{Actor, Scope};
use crate::audit::{AuditEntry, action};
use crate::auth::{generate_api_key, password};
use crate::ids::{ApiKeyId, TenantId, UserId};
use crate::page::{Page, PageRequest};
use crate::store::{ApiKey, Store, StoreError, UserFilter};
use crate::tenant::{Tenant, TenantSlug};
use crate::user::{Email, MfaState, Password, Role, User, UserView, parse_display_name};
use crate::{Error, Result};

/// A request to create a user.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: String,
    pub display_name: String,
    pub role: Role,
    /// If absent, a password is generated and returned once.
    pub password: Option<String>,
}

/// A created user and, if it was generated, their initial password (shown once).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CreatedUser {
    pub user: UserView,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_password: Option<String>,
}

/// What the API shows of an API key (never the key itself, except once at creation).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApiKeyView {
    pub id: ApiKeyId,
    pub user_id: UserId,
    pub name: String,
    /// The public part, e.g. `cl_ab12cd34ef56_…`, to tell keys apart.
    pub prefix: String,
    pub scopes: Vec<Scope>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub last_used_at: Option<chrono::DateTime<chrono::Utc>>,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl From<&ApiKey> for ApiKeyView {
    fn from(k: &ApiKey) -> Self {
        Self {
            id: k.id,
            user_id: k.user_id,
            name: k.name.clone(),
            prefix: format!("{}{}_…", crate::auth::API_KEY_PREFIX, k.prefix),
            scopes: k.scopes.clone(),
            created_at: k.created_at,
            last_used_at: k.last_used_at,
            revoked_at: k.revoked_at,
        }
    }
}

/// A new API key: its description and the key itself, shown this once.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub key: ApiKeyView,
    /// The secret key. Store it now: it cannot be shown again.
    pub secret: String,
}

/// Who performs an administrative operation: a signed-in actor, or the operator at the CLI.
#[derive(Debug, Clone, Copy)]
pub enum By<'a> {
    Actor(&'a Actor),
    /// The operator running the `coachlibre` CLI on the server, acting inside one tenant.
    Operator(TenantId),
}

impl By<'_> {
    /// The tenant acted in.
    pub fn tenant(&self) -> TenantId {
        match self {
            Self::Actor(a) => a.tenant_id,
            Self::Operator(t) => *t,
        }
    }

    /// The signed-in user, if any.
    pub fn actor_id(&self) -> Option<UserId> {
        match self {
            Self::Actor(a) => Some(a.user_id),
            Self::Operator(_) => None,
        }
    }

    /// Admins and the operator.
    pub fn require_admin(&self) -> Result<()> {
        match self {
            Self::Actor(a) => a.require_admin(),
            Self::Operator(_) => Ok(()),
        }
    }

    /// A change: an API key needs the `write` scope (the operator may).
    pub fn require_write(&self) -> Result<()> {
        match self {
            Self::Actor(a) => a.require_scope(crate::actor::Scope::Write),
            Self::Operator(_) => Ok(()),
        }
    }

    /// Sees everything in the tenant: an admin or the operator.
    pub fn sees_all(&self) -> bool {
        match self {
            Self::Actor(a) => a.role == crate::user::Role::Admin,
            Self::Operator(_) => true,
        }
    }
}

/// The accounts service.
#[derive(Clone)]
pub struct Accounts {
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Accounts")
    }
}

fn conflict_on_duplicate(e: StoreError, what: &str) -> Error {
    match e {
        StoreError::Conflict(_) => Error::Conflict(format!("{what} already exists")),
        other => other.into(),
    }
}

impl Accounts {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    async fn audit(&self, entry: AuditEntry) -> Result<()> {
        self.store.append_audit(&entry).await.map_err(Error::from)
    }

    // ----- tenants (operator only: the CLI) -----

    /// Create a tenant.
    pub async fn create_tenant(&self, slug: &str, name: &str) -> Result<Tenant> {
        let tenant = Tenant::new(TenantSlug::parse(slug)?, name)?;
        self.store
            .insert_tenant(&tenant)
            .await
            .map_err(|e| conflict_on_duplicate(e, "a tenant with this slug"))?;
        self.audit(
            AuditEntry::new(Some(tenant.id), None, action::TENANT_CREATED).target(tenant.id),
        )
        .await?;
        Ok(tenant)
    }

    /// Every tenant.
    pub async fn list_tenants(&self) -> Result<Vec<Tenant>> {
        Ok(self.store.list_tenants().await?)
    }

    /// A tenant by slug.
    pub async fn tenant_by_slug(&self, slug: &str) -> Result<Tenant> {
        let slug = TenantSlug::parse(slug)?;
        self.store
            .get_tenant_by_slug(slug.as_str())
            .await?
            .ok_or_else(|| Error::not_found("tenant"))
    }

    /// The tenant of the actor.
    pub async fn tenant_of(&self, actor: &Actor) -> Result<Tenant> {
        self.store
            .get_tenant(actor.tenant_id)
            .await?
            .ok_or_else(|| Error::not_found("tenant"))
    }

    /// On an empty database, create the `default` tenant and its first admin. Returns `None`
    /// if the database was ever bootstrapped. The password is generated when not given.
    pub async fn bootstrap(
        &self,
        admin_email: &str,
        admin_password: Option<&str>,
    ) -> Result<Option<(Tenant, CreatedUser)>> {
        if self.store.is_bootstrapped().await? {
            return Ok(None);
        }
        let tenant = Tenant::new(TenantSlug::parse("default")?, "Default")?;
        let (password, generated) = match admin_password {
            Some(p) => (Password::parse(p)?, false),
            None => (Password::generate(), true),
        };
        let admin = build_user(
            tenant.id,
            Email::parse(admin_email)?,
            "Administrator",
            Role::Admin,
            password::hash_async(password.clone()).await?,
        );
        if !self.store.bootstrap(&tenant, &admin).await? {
            return Ok(None);
        }
        self.audit(
            AuditEntry::new(Some(tenant.id), None, action::TENANT_CREATED).target(tenant.id),
        )
        .await?;
        self.audit(
            AuditEntry::new(Some(tenant.id), None, action::USER_CREATED)
                .target(admin.id)
                .detail(serde_json::json!({"role": "admin", "bootstrap": true})),
        )
        .await?;
        let created = CreatedUser {
            user: UserView::from(&admin),
            initial_password: generated.then(|| password.expose().to_owned()),
        };
        Ok(Some((tenant, created)))
    }

    // ----- users -----

    /// Whether `actor` may see `user` (same tenant is already guaranteed by the lookup).
    async fn can_see(&self, actor: &Actor, user: &User) -> Result<bool> {
        Ok(match actor.role {
            Role::Admin => true,
            _ if actor.user_id == user.id => true,
            Role::Coach => {
                user.role == Role::Client
                    && self
                        .store
                        .is_coach_of(actor.tenant_id, actor.user_id, user.id)
                        .await?
            }
            Role::Client => false,
        })
    }

    /// A user visible to the actor.
    pub async fn get_user(&self, actor: &Actor, id: UserId) -> Result<User> {
        let user = self
            .store
            .get_user(actor.tenant_id, id)
            .await?
            .ok_or_else(|| Error::not_found("user"))?;
        if self.can_see(actor, &user).await? {
            Ok(user)
        } else {
            Err(Error::not_found("user"))
        }
    }

    /// Create a user. Admins (and the operator) create any role; a coach creates clients,
    /// who become theirs.
    pub async fn create_user(&self, by: By<'_>, new: NewUser) -> Result<CreatedUser> {
        let tenant = by.tenant();
        if let By::Actor(actor) = by {
            actor.require_scope(Scope::Write)?;
            match actor.role {
                Role::Admin => actor.require_scope(Scope::Admin)?,
                Role::Coach if new.role == Role::Client => {}
                Role::Coach => {
                    return Err(Error::Forbidden("a coach may only create clients".into()));
                }
                Role::Client => {
                    return Err(Error::Forbidden("a client may not create accounts".into()));
                }
            }
        }
        let email = Email::parse(&new.email)?;
        let (password, generated) = match new.password.as_deref() {
            Some(p) => (Password::parse(p)?, false),
            None => (Password::generate(), true),
        };
        let display_name = parse_display_name("display_name", &new.display_name)?;
        let user = build_user(
            tenant,
            email,
            &display_name,
            new.role,
            password::hash_async(password.clone()).await?,
        );
        self.store
            .insert_user(&user)
            .await
            .map_err(|e| conflict_on_duplicate(e, "an account with this email"))?;
        if let By::Actor(actor) = by
            && actor.role == Role::Coach
        {
            self.store
                .link_coach(tenant, actor.user_id, user.id)
                .await?;
        }
        self.audit(
            AuditEntry::new(Some(tenant), by.actor_id(), action::USER_CREATED)
                .target(user.id)
                .detail(serde_json::json!({"role": user.role, "email": user.email})),
        )
        .await?;
        Ok(CreatedUser {
            user: UserView::from(&user),
            initial_password: generated.then(|| password.expose().to_owned()),
        })
    }

    /// Users visible to the actor: all for an admin, their clients for a coach.
    pub async fn list_users(
        &self,
        by: By<'_>,
        role: Option<Role>,
        page: &PageRequest,
    ) -> Result<Page<UserView>> {
        let filter = match by {
            By::Operator(_) => UserFilter {
                role,
                coach_id: None,
            },
            By::Actor(a) => match a.role {
                Role::Admin => UserFilter {
                    role,
                    coach_id: None,
                },
                Role::Coach => UserFilter {
                    role,
                    coach_id: Some(a.user_id),
                },
                Role::Client => {
                    return Err(Error::Forbidden("a client may not list accounts".into()));
                }
            },
        };
        let rows = self.store.list_users(by.tenant(), &filter, page).await?;
        Ok(Page::from_rows(rows, page, |u| u.id.as_uuid()).map(|u| UserView::from(&u)))
    }

    /// A user by email in the operator's tenant (CLI).
    pub async fn user_by_email(&self, tenant: TenantId, email: &str) -> Result<User> {
        self.store
            .get_user_by_email(tenant, &Email::parse(email)?)
            .await?
            .ok_or_else(|| Error::not_found("user"))
    }

    async fn user_in_tenant(&self, by: By<'_>, id: UserId) -> Result<User> {
        match by {
            By::Actor(a) => self.get_user(a, id).await,
            By::Operator(t) => self
                .store
                .get_user(t, id)
                .await?
                .ok_or_else(|| Error::not_found("user")),
        }
    }

    /// Change a user's role (admin). The last admin of a tenant cannot be demoted. The
    /// user's sessions end, so the new role applies from their next sign-in.
    pub async fn set_role(&self, by: By<'_>, id: UserId, role: Role) -> Result<UserView> {
        let user = self.user_in_tenant(by, id).await?;
        by.require_admin()?;
        if user.role == role {
            return Ok(UserView::from(&user));
        }
        if user.role == Role::Admin
            && self
                .store
                .count_users_with_role(user.tenant_id, Role::Admin)
                .await?
                <= 1
        {
            return Err(Error::Conflict(
                "this is the last admin of the tenant; promote another user first".into(),
            ));
        }
        self.store.set_role(user.tenant_id, id, role).await?;
        self.store
            .revoke_user_sessions(user.tenant_id, id, crate::now())
            .await?;
        self.audit(
            AuditEntry::new(Some(user.tenant_id), by.actor_id(), action::ROLE_CHANGED)
                .target(id)
                .detail(serde_json::json!({"from": user.role, "to": role})),
        )
        .await?;
        Ok(UserView::from(&User { role, ..user }))
    }

    /// Set a new random password (admin or operator); returned once. Clears lockout, turns
    /// nothing else off, ends the user's sessions.
    pub async fn reset_password(&self, by: By<'_>, id: UserId) -> Result<String> {
        let user = self.user_in_tenant(by, id).await?;
        by.require_admin()?;
        let password = Password::generate();
        let hash = password::hash_async(password.clone()).await?;
        self.store
            .set_password_hash(user.tenant_id, id, &hash)
            .await?;
        self.store.clear_login_failures(user.tenant_id, id).await?;
        self.store
            .revoke_user_sessions(user.tenant_id, id, crate::now())
            .await?;
        self.audit(
            AuditEntry::new(Some(user.tenant_id), by.actor_id(), action::PASSWORD_RESET).target(id),
        )
        .await?;
        Ok(password.expose().to_owned())
    }

    /// Make `coach_id` a coach of `client_id` (admin).
    pub async fn assign_coach(
        &self,
        actor: &Actor,
        client_id: UserId,
        coach_id: UserId,
    ) -> Result<()> {
        let client = self.get_user(actor, client_id).await?;
        let coach = self.get_user(actor, coach_id).await?;
        actor.require_admin()?;
        if client.role != Role::Client {
            return Err(Error::invalid("client_id", "this user is not a client"));
        }
        if coach.role < Role::Coach {
            return Err(Error::invalid("coach_id", "this user is not a coach"));
        }
        self.store
            .link_coach(actor.tenant_id, coach_id, client_id)
            .await?;
        self.audit(
            AuditEntry::new(
                Some(actor.tenant_id),
                Some(actor.user_id),
                action::COACH_ASSIGNED,
            )
            .target(client_id)
            .detail(serde_json::json!({"coach_id": coach_id})),
        )
        .await
    }

    /// Remove a coach from a client (admin).
    pub async fn unassign_coach(
        &self,
        actor: &Actor,
        client_id: UserId,
        coach_id: UserId,
    ) -> Result<()> {
        self.get_user(actor, client_id).await?;
        actor.require_admin()?;
        if !self
            .store
            .unlink_coach(actor.tenant_id, coach_id, client_id)
            .await?
        {
            return Err(Error::not_found("coach assignment"));
        }
        self.audit(
            AuditEntry::new(
                Some(actor.tenant_id),
                Some(actor.user_id),
                action::COACH_UNASSIGNED,
            )
            .target(client_id)
            .detail(serde_json::json!({"coach_id": coach_id})),
        )
        .await
    }

    /// The coaches of a client visible to the actor.
    pub async fn coaches_of(&self, actor: &Actor, client_id: UserId) -> Result<Vec<UserView>> {
        self.get_user(actor, client_id).await?;
        let coaches = self.store.coaches_of(actor.tenant_id, client_id).await?;
        Ok(coaches.iter().map(UserView::from).collect())
    }

    // ----- API keys -----

    /// Issue an API key for `owner` (default: the actor; another user: admins only). Scopes
    /// cannot exceed the owner's role: only an admin's key may carry `admin`.
    pub async fn create_api_key(
        &self,
        by: By<'_>,
        owner: Option<UserId>,
        name: &str,
        scopes: &[Scope],
    ) -> Result<CreatedApiKey> {
        let name = parse_display_name("name", name)?;
        let owner_id = match (by, owner) {
            (By::Actor(a), None) => a.user_id,
            (By::Actor(a), Some(o)) if o == a.user_id => o,
            (_, Some(o)) => {
                by.require_admin()?;
                o
            }
            (By::Operator(_), None) => {
                return Err(Error::invalid(
                    "user",
                    "the operator must name the key's owner",
                ));
            }
        };
        if let By::Actor(a) = by {
            // Keys are minted from sessions or admin keys, never escalate a narrower key.
            for s in scopes {
                a.require_scope(*s)?;
            }
        }
        let owner = self.user_in_tenant(by, owner_id).await?;
        if scopes.is_empty() {
            return Err(Error::invalid("scopes", "give at least one scope"));
        }
        if scopes.contains(&Scope::Admin) && owner.role != Role::Admin {
            return Err(Error::invalid(
                "scopes",
                "only an admin's key may carry the admin scope",
            ));
        }
        let mut scopes = scopes.to_vec();
        scopes.sort_by_key(|s| s.as_str());
        scopes.dedup();
        let (secret, prefix, hash) = generate_api_key();
        let key = ApiKey {
            id: ApiKeyId::generate(),
            tenant_id: owner.tenant_id,
            user_id: owner.id,
            name,
            prefix,
            key_hash: hash,
            scopes,
            created_at: crate::now(),
            last_used_at: None,
            revoked_at: None,
        };
        self.store.insert_api_key(&key).await?;
        self.audit(
            AuditEntry::new(Some(key.tenant_id), by.actor_id(), action::APIKEY_CREATED)
                .target(key.id)
                .detail(serde_json::json!({"owner": owner.id, "scopes": key.scopes})),
        )
        .await?;
        Ok(CreatedApiKey {
            key: ApiKeyView::from(&key),
            secret,
        })
    }

    /// Keys visible to the caller: all for an admin or the operator, one's own otherwise.
    pub async fn list_api_keys(&self, by: By<'_>, page: &PageRequest) -> Result<Page<ApiKeyView>> {
        let only = match by {
            By::Actor(a) if a.role != Role::Admin => Some(a.user_id),
            _ => None,
        };
        let rows = self.store.list_api_keys(by.tenant(), only, page).await?;
        Ok(Page::from_rows(rows, page, |k| k.id.as_uuid()).map(|k| ApiKeyView::from(&k)))
    }

    /// Revoke a key: one's own, or any in the tenant for an admin or the operator.
    pub async fn revoke_api_key(&self, by: By<'_>, id: ApiKeyId) -> Result<()> {
        let key = self
            .store
            .get_api_key(by.tenant(), id)
            .await?
            .ok_or_else(|| Error::not_found("api key"))?;
        if let By::Actor(a) = by
            && key.user_id != a.user_id
        {
            if a.role != Role::Admin {
                return Err(Error::not_found("api key"));
            }
            a.require_admin()?;
        }
        if !self
            .store
            .revoke_api_key(by.tenant(), id, crate::now())
            .await?
        {
            return Err(Error::Conflict("this key is already revoked".into()));
        }
        self.audit(
            AuditEntry::new(Some(by.tenant()), by.actor_id(), action::APIKEY_REVOKED).target(id),
        )
        .await
    }

    // ----- audit -----

    /// The tenant's audit log, newest first (admin).
    pub async fn audit_log(&self, actor: &Actor, page: &PageRequest) -> Result<Page<AuditEntry>> {
        actor.require_admin()?;
        let rows = self.store.list_audit(actor.tenant_id, page).await?;
        Ok(Page::from_rows(rows, page, |e| e.id.as_uuid()))
    }
}

fn build_user(tenant: TenantId, email: Email, name: &str, role: Role, hash: String) -> User {
    let now = crate::now();
    User {
        id: UserId::generate(),
        tenant_id: tenant,
        email,
        display_name: name.trim().to_owned(),
        role,
        password_hash: hash,
        mfa: MfaState::default(),
        failed_logins: 0,
        locked_until: None,
        created_at: now,
        updated_at: now,
    }
}
