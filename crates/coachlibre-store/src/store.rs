//! The storage traits, implemented once for both drivers (see the crate docs).

use async_trait::async_trait;
use coachlibre_core::Timestamp;
use coachlibre_core::audit::AuditEntry;
use coachlibre_core::ids::{ApiKeyId, RefreshTokenId, SessionFamilyId, TenantId, UserId};
use coachlibre_core::page::PageRequest;
use coachlibre_core::store::{
    ApiKey, ApiKeyStore, AuditStore, RefreshToken, SessionStore, StoreResult, SystemStore,
    TenantStore, UserFilter, UserStore,
};
use coachlibre_core::tenant::Tenant;
use coachlibre_core::user::{Email, MfaState, Role, User};
use uuid::Uuid;

use crate::rows::{
    api_key_row, audit_row, fetch_opt, fetch_vec, refresh_row, scopes_text, tenant_row, user_cols,
    user_row,
};
use crate::{SqlStore, db_err, on_pool, on_pool_write, one_row};

#[async_trait]
impl TenantStore for SqlStore {
    async fn insert_tenant(&self, t: &Tenant) -> StoreResult<()> {
        on_pool_write!(self, p => {
            sqlx::query("INSERT INTO tenants (id, slug, name, created_at) VALUES ($1, $2, $3, $4)")
                .bind(t.id.as_uuid())
                .bind(t.slug.as_str())
                .bind(&t.name)
                .bind(t.created_at)
                .execute(p)
                .await
                .map_err(db_err)?;
        });
        Ok(())
    }

    async fn get_tenant(&self, id: TenantId) -> StoreResult<Option<Tenant>> {
        on_pool!(self, p => {
            Ok(fetch_opt!(sqlx::query("SELECT id, slug, name, created_at FROM tenants WHERE id = $1")
                .bind(id.as_uuid()), p, tenant_row))
        })
    }

    async fn get_tenant_by_slug(&self, slug: &str) -> StoreResult<Option<Tenant>> {
        on_pool!(self, p => {
            Ok(fetch_opt!(sqlx::query("SELECT id, slug, name, created_at FROM tenants WHERE slug = $1")
                .bind(slug), p, tenant_row))
        })
    }

    async fn list_tenants(&self) -> StoreResult<Vec<Tenant>> {
        on_pool!(self, p => {
            Ok(fetch_vec!(sqlx::query("SELECT id, slug, name, created_at FROM tenants ORDER BY slug"), p, tenant_row))
        })
    }
}

#[async_trait]
impl UserStore for SqlStore {
    async fn insert_user(&self, u: &User) -> StoreResult<()> {
        on_pool!(self, p => {
            insert_user_query(u).execute(p).await.map_err(db_err)?;
        });
        Ok(())
    }

    async fn get_user(&self, tenant: TenantId, id: UserId) -> StoreResult<Option<User>> {
        on_pool!(self, p => {
            Ok(fetch_opt!(sqlx::query(concat!(
                "SELECT ", user_cols!(), " FROM users WHERE tenant_id = $1 AND id = $2"
            ))
            .bind(tenant.as_uuid())
            .bind(id.as_uuid()), p, user_row))
        })
    }

    async fn get_user_by_email(
        &self,
        tenant: TenantId,
        email: &Email,
    ) -> StoreResult<Option<User>> {
        on_pool!(self, p => {
            Ok(fetch_opt!(sqlx::query(concat!(
                "SELECT ", user_cols!(), " FROM users WHERE tenant_id = $1 AND email = $2"
            ))
            .bind(tenant.as_uuid())
            .bind(email.as_str()), p, user_row))
        })
    }

    async fn find_users_by_email(&self, email: &Email) -> StoreResult<Vec<User>> {
        on_pool!(self, p => {
            Ok(fetch_vec!(sqlx::query(concat!(
                "SELECT ", user_cols!(), " FROM users WHERE email = $1 ORDER BY id"
            ))
            .bind(email.as_str()), p, user_row))
        })
    }

    async fn list_users(
        &self,
        tenant: TenantId,
        filter: &UserFilter,
        page: &PageRequest,
    ) -> StoreResult<Vec<User>> {
        on_pool!(self, p => {
            Ok(fetch_vec!(sqlx::query(concat!(
                "SELECT ", user_cols!(), " FROM users u WHERE u.tenant_id = $1 \
                 AND ($2 IS NULL OR u.role = $2) \
                 AND ($3 IS NULL OR EXISTS (SELECT 1 FROM coach_clients c \
                      WHERE c.tenant_id = $1 AND c.coach_id = $3 AND c.client_id = u.id)) \
                 AND ($4 IS NULL OR u.id > $4) \
                 ORDER BY u.id LIMIT $5"
            ))
            .bind(tenant.as_uuid())
            .bind(filter.role.map(Role::as_str))
            .bind(filter.coach_id.map(|c| c.as_uuid()))
            .bind(page.cursor)
            .bind(page.fetch_limit()), p, user_row))
        })
    }

    async fn count_users_with_role(&self, tenant: TenantId, role: Role) -> StoreResult<i64> {
        on_pool!(self, p => {
            sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE tenant_id = $1 AND role = $2")
                .bind(tenant.as_uuid())
                .bind(role.as_str())
                .fetch_one(p)
                .await
                .map_err(db_err)
        })
    }

    async fn set_role(&self, tenant: TenantId, id: UserId, role: Role) -> StoreResult<()> {
        on_pool_write!(self, p => {
            let r = sqlx::query(
                "UPDATE users SET role = $3, updated_at = $4 WHERE tenant_id = $1 AND id = $2",
            )
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .bind(role.as_str())
            .bind(coachlibre_core::now())
            .execute(p)
            .await
            .map_err(db_err)?;
            one_row(r.rows_affected())
        })
    }

    async fn set_password_hash(&self, tenant: TenantId, id: UserId, hash: &str) -> StoreResult<()> {
        on_pool_write!(self, p => {
            let r = sqlx::query(
                "UPDATE users SET password_hash = $3, updated_at = $4 \
                 WHERE tenant_id = $1 AND id = $2",
            )
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .bind(hash)
            .bind(coachlibre_core::now())
            .execute(p)
            .await
            .map_err(db_err)?;
            one_row(r.rows_affected())
        })
    }

    async fn record_login_failure(&self, tenant: TenantId, id: UserId) -> StoreResult<i32> {
        on_pool_write!(self, p => {
            sqlx::query_scalar(
                "UPDATE users SET failed_logins = failed_logins + 1 \
                 WHERE tenant_id = $1 AND id = $2 RETURNING failed_logins",
            )
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .fetch_one(p)
            .await
            .map_err(db_err)
        })
    }

    async fn lock_user(&self, tenant: TenantId, id: UserId, until: Timestamp) -> StoreResult<()> {
        on_pool_write!(self, p => {
            let r = sqlx::query("UPDATE users SET locked_until = $3 WHERE tenant_id = $1 AND id = $2")
                .bind(tenant.as_uuid())
                .bind(id.as_uuid())
                .bind(until)
                .execute(p)
                .await
                .map_err(db_err)?;
            one_row(r.rows_affected())
        })
    }

    async fn clear_login_failures(&self, tenant: TenantId, id: UserId) -> StoreResult<()> {
        on_pool_write!(self, p => {
            sqlx::query(
                "UPDATE users SET failed_logins = 0, locked_until = NULL \
                 WHERE tenant_id = $1 AND id = $2 AND (failed_logins <> 0 OR locked_until IS NOT NULL)",
            )
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .execute(p)
            .await
            .map_err(db_err)?;
        });
        Ok(())
    }

    async fn set_mfa(&self, tenant: TenantId, id: UserId, mfa: &MfaState) -> StoreResult<()> {
        on_pool_write!(self, p => {
            let r = sqlx::query(
                "UPDATE users SET totp_pending_secret = $3, totp_secret = $4, updated_at = $5 \
                 WHERE tenant_id = $1 AND id = $2",
            )
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .bind(mfa.pending_secret.as_deref())
            .bind(mfa.secret.as_deref())
            .bind(coachlibre_core::now())
            .execute(p)
            .await
            .map_err(db_err)?;
            one_row(r.rows_affected())
        })
    }

    async fn advance_totp_step(
        &self,
        tenant: TenantId,
        id: UserId,
        step: i64,
    ) -> StoreResult<bool> {
        on_pool_write!(self, p => {
            let r = sqlx::query(
                "UPDATE users SET totp_last_step = $3 \
                 WHERE tenant_id = $1 AND id = $2 AND totp_last_step < $3",
            )
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .bind(step)
            .execute(p)
            .await
            .map_err(db_err)?;
            Ok(r.rows_affected() == 1)
        })
    }

    async fn replace_recovery_codes(
        &self,
        tenant: TenantId,
        user: UserId,
        hashes: &[String],
    ) -> StoreResult<()> {
        on_pool_write!(self, p => {
            let mut tx = p.begin().await.map_err(db_err)?;
            sqlx::query("DELETE FROM recovery_codes WHERE tenant_id = $1 AND user_id = $2")
                .bind(tenant.as_uuid())
                .bind(user.as_uuid())
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            for h in hashes {
                sqlx::query(
                    "INSERT INTO recovery_codes (user_id, tenant_id, code_hash) VALUES ($1, $2, $3)",
                )
                .bind(user.as_uuid())
                .bind(tenant.as_uuid())
                .bind(h)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            }
            tx.commit().await.map_err(db_err)?;
        });
        Ok(())
    }

    async fn consume_recovery_code(
        &self,
        tenant: TenantId,
        user: UserId,
        hash: &str,
    ) -> StoreResult<bool> {
        on_pool_write!(self, p => {
            let r = sqlx::query(
                "UPDATE recovery_codes SET used_at = $4 \
                 WHERE tenant_id = $1 AND user_id = $2 AND code_hash = $3 AND used_at IS NULL",
            )
            .bind(tenant.as_uuid())
            .bind(user.as_uuid())
            .bind(hash)
            .bind(coachlibre_core::now())
            .execute(p)
            .await
            .map_err(db_err)?;
            Ok(r.rows_affected() == 1)
        })
    }

    async fn link_coach(&self, tenant: TenantId, coach: UserId, client: UserId) -> StoreResult<()> {
        on_pool_write!(self, p => {
            sqlx::query(
                "INSERT INTO coach_clients (tenant_id, coach_id, client_id, created_at) \
                 SELECT $1, $2, $3, $4 WHERE \
                   EXISTS (SELECT 1 FROM users WHERE tenant_id = $1 AND id = $2) AND \
                   EXISTS (SELECT 1 FROM users WHERE tenant_id = $1 AND id = $3) \
                 ON CONFLICT (coach_id, client_id) DO NOTHING",
            )
            .bind(tenant.as_uuid())
            .bind(coach.as_uuid())
            .bind(client.as_uuid())
            .bind(coachlibre_core::now())
            .execute(p)
            .await
            .map_err(db_err)?;
        });
        Ok(())
    }

    async fn unlink_coach(
        &self,
        tenant: TenantId,
        coach: UserId,
        client: UserId,
    ) -> StoreResult<bool> {
        on_pool_write!(self, p => {
            let r = sqlx::query(
                "DELETE FROM coach_clients WHERE tenant_id = $1 AND coach_id = $2 AND client_id = $3",
            )
            .bind(tenant.as_uuid())
            .bind(coach.as_uuid())
            .bind(client.as_uuid())
            .execute(p)
            .await
            .map_err(db_err)?;
            Ok(r.rows_affected() == 1)
        })
    }

    async fn is_coach_of(
        &self,
        tenant: TenantId,
        coach: UserId,
        client: UserId,
    ) -> StoreResult<bool> {
        on_pool!(self, p => {
            let found: Option<i64> = sqlx::query_scalar(
                "SELECT CAST(1 AS BIGINT) FROM coach_clients WHERE tenant_id = $1 AND coach_id = $2 AND client_id = $3",
            )
            .bind(tenant.as_uuid())
            .bind(coach.as_uuid())
            .bind(client.as_uuid())
            .fetch_optional(p)
            .await
            .map_err(db_err)?;
            Ok(found.is_some())
        })
    }

    async fn coaches_of(&self, tenant: TenantId, client: UserId) -> StoreResult<Vec<User>> {
        on_pool_write!(self, p => {
            Ok(fetch_vec!(sqlx::query(concat!(
                "SELECT ", user_cols!(), " FROM users WHERE tenant_id = $1 AND id IN \
                 (SELECT coach_id FROM coach_clients WHERE tenant_id = $1 AND client_id = $2) \
                 ORDER BY id"
            ))
            .bind(tenant.as_uuid())
            .bind(client.as_uuid()), p, user_row))
        })
    }
}

/// The insert shared by `insert_user` and `bootstrap`.
macro_rules! insert_user_sql {
    () => {
        concat!(
            "INSERT INTO users (",
            user_cols!(),
            ") \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        )
    };
}

fn insert_user_query<DB>(
    u: &User,
) -> sqlx::query::Query<'static, DB, <DB as sqlx::Database>::Arguments<'static>>
where
    DB: sqlx::Database,
    Uuid: sqlx::Encode<'static, DB> + sqlx::Type<DB>,
    String: sqlx::Encode<'static, DB> + sqlx::Type<DB>,
    Option<String>: sqlx::Encode<'static, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'static, DB> + sqlx::Type<DB>,
    i32: sqlx::Encode<'static, DB> + sqlx::Type<DB>,
    Timestamp: sqlx::Encode<'static, DB> + sqlx::Type<DB>,
    Option<Timestamp>: sqlx::Encode<'static, DB> + sqlx::Type<DB>,
{
    sqlx::query(insert_user_sql!())
        .bind(u.id.as_uuid())
        .bind(u.tenant_id.as_uuid())
        .bind(u.email.as_str().to_owned())
        .bind(u.display_name.clone())
        .bind(u.role.as_str().to_owned())
        .bind(u.password_hash.clone())
        .bind(u.mfa.pending_secret.clone())
        .bind(u.mfa.secret.clone())
        .bind(u.mfa.last_step)
        .bind(u.failed_logins)
        .bind(u.locked_until)
        .bind(u.created_at)
        .bind(u.updated_at)
}

#[async_trait]
impl SessionStore for SqlStore {
    async fn insert_refresh_token(&self, t: &RefreshToken) -> StoreResult<()> {
        on_pool_write!(self, p => {
            sqlx::query(
                "INSERT INTO refresh_tokens (id, tenant_id, user_id, family_id, token_hash, \
                 created_at, expires_at, used_at, revoked_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(t.id.as_uuid())
            .bind(t.tenant_id.as_uuid())
            .bind(t.user_id.as_uuid())
            .bind(t.family_id.as_uuid())
            .bind(&t.token_hash)
            .bind(t.created_at)
            .bind(t.expires_at)
            .bind(t.used_at)
            .bind(t.revoked_at)
            .execute(p)
            .await
            .map_err(db_err)?;
        });
        Ok(())
    }

    async fn find_refresh_token(&self, hash: &str) -> StoreResult<Option<RefreshToken>> {
        on_pool!(self, p => {
            Ok(fetch_opt!(sqlx::query(
                "SELECT id, tenant_id, user_id, family_id, token_hash, created_at, expires_at, \
                 used_at, revoked_at FROM refresh_tokens WHERE token_hash = $1",
            )
            .bind(hash), p, refresh_row))
        })
    }

    async fn mark_refresh_token_used(
        &self,
        id: RefreshTokenId,
        at: Timestamp,
    ) -> StoreResult<bool> {
        on_pool_write!(self, p => {
            let r = sqlx::query(
                "UPDATE refresh_tokens SET used_at = $2 WHERE id = $1 AND used_at IS NULL",
            )
            .bind(id.as_uuid())
            .bind(at)
            .execute(p)
            .await
            .map_err(db_err)?;
            Ok(r.rows_affected() == 1)
        })
    }

    async fn revoke_family(&self, family: SessionFamilyId, at: Timestamp) -> StoreResult<()> {
        on_pool_write!(self, p => {
            sqlx::query(
                "UPDATE refresh_tokens SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL",
            )
            .bind(family.as_uuid())
            .bind(at)
            .execute(p)
            .await
            .map_err(db_err)?;
        });
        Ok(())
    }

    async fn revoke_user_sessions(
        &self,
        tenant: TenantId,
        user: UserId,
        at: Timestamp,
    ) -> StoreResult<()> {
        on_pool_write!(self, p => {
            sqlx::query(
                "UPDATE refresh_tokens SET revoked_at = $3 \
                 WHERE tenant_id = $1 AND user_id = $2 AND revoked_at IS NULL",
            )
            .bind(tenant.as_uuid())
            .bind(user.as_uuid())
            .bind(at)
            .execute(p)
            .await
            .map_err(db_err)?;
        });
        Ok(())
    }
}

/// Columns of `api_keys`.
macro_rules! api_key_cols {
    () => {
        "id, tenant_id, user_id, name, prefix, key_hash, scopes, created_at, last_used_at, revoked_at"
    };
}

#[async_trait]
impl ApiKeyStore for SqlStore {
    async fn insert_api_key(&self, k: &ApiKey) -> StoreResult<()> {
        on_pool_write!(self, p => {
            sqlx::query(concat!(
                "INSERT INTO api_keys (", api_key_cols!(), ") \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            ))
            .bind(k.id.as_uuid())
            .bind(k.tenant_id.as_uuid())
            .bind(k.user_id.as_uuid())
            .bind(&k.name)
            .bind(&k.prefix)
            .bind(&k.key_hash)
            .bind(scopes_text(&k.scopes))
            .bind(k.created_at)
            .bind(k.last_used_at)
            .bind(k.revoked_at)
            .execute(p)
            .await
            .map_err(db_err)?;
        });
        Ok(())
    }

    async fn find_api_key_by_prefix(&self, prefix: &str) -> StoreResult<Option<ApiKey>> {
        on_pool!(self, p => {
            Ok(fetch_opt!(sqlx::query(concat!("SELECT ", api_key_cols!(), " FROM api_keys WHERE prefix = $1"))
                .bind(prefix), p, api_key_row))
        })
    }

    async fn get_api_key(&self, tenant: TenantId, id: ApiKeyId) -> StoreResult<Option<ApiKey>> {
        on_pool!(self, p => {
            Ok(fetch_opt!(sqlx::query(concat!(
                "SELECT ", api_key_cols!(), " FROM api_keys WHERE tenant_id = $1 AND id = $2"
            ))
            .bind(tenant.as_uuid())
            .bind(id.as_uuid()), p, api_key_row))
        })
    }

    async fn list_api_keys(
        &self,
        tenant: TenantId,
        user: Option<UserId>,
        page: &PageRequest,
    ) -> StoreResult<Vec<ApiKey>> {
        on_pool!(self, p => {
            Ok(fetch_vec!(sqlx::query(concat!(
                "SELECT ", api_key_cols!(), " FROM api_keys WHERE tenant_id = $1 \
                 AND ($2 IS NULL OR user_id = $2) AND ($3 IS NULL OR id > $3) \
                 ORDER BY id LIMIT $4"
            ))
            .bind(tenant.as_uuid())
            .bind(user.map(|u| u.as_uuid()))
            .bind(page.cursor)
            .bind(page.fetch_limit()), p, api_key_row))
        })
    }

    async fn revoke_api_key(
        &self,
        tenant: TenantId,
        id: ApiKeyId,
        at: Timestamp,
    ) -> StoreResult<bool> {
        on_pool_write!(self, p => {
            let r = sqlx::query(
                "UPDATE api_keys SET revoked_at = $3 \
                 WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL",
            )
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .bind(at)
            .execute(p)
            .await
            .map_err(db_err)?;
            Ok(r.rows_affected() == 1)
        })
    }

    async fn touch_api_key(&self, id: ApiKeyId, at: Timestamp) -> StoreResult<()> {
        on_pool_write!(self, p => {
            sqlx::query("UPDATE api_keys SET last_used_at = $2 WHERE id = $1")
                .bind(id.as_uuid())
                .bind(at)
                .execute(p)
                .await
                .map_err(db_err)?;
        });
        Ok(())
    }
}

#[async_trait]
impl AuditStore for SqlStore {
    async fn append_audit(&self, e: &AuditEntry) -> StoreResult<()> {
        on_pool_write!(self, p => {
            sqlx::query(
                "INSERT INTO audit_log (id, tenant_id, actor_id, action, target, ip, detail, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(e.id.as_uuid())
            .bind(e.tenant_id.map(|t| t.as_uuid()))
            .bind(e.actor_id.map(|a| a.as_uuid()))
            .bind(&e.action)
            .bind(e.target.as_deref())
            .bind(e.ip.as_deref())
            .bind(e.detail.to_string())
            .bind(e.created_at)
            .execute(p)
            .await
            .map_err(db_err)?;
        });
        Ok(())
    }

    async fn list_audit(
        &self,
        tenant: TenantId,
        page: &PageRequest,
    ) -> StoreResult<Vec<AuditEntry>> {
        on_pool!(self, p => {
            Ok(fetch_vec!(sqlx::query(
                "SELECT id, tenant_id, actor_id, action, target, ip, detail, created_at \
                 FROM audit_log WHERE tenant_id = $1 AND ($2 IS NULL OR id < $2) \
                 ORDER BY id DESC LIMIT $3",
            )
            .bind(tenant.as_uuid())
            .bind(page.cursor)
            .bind(page.fetch_limit()), p, audit_row))
        })
    }
}

#[async_trait]
impl SystemStore for SqlStore {
    async fn ping(&self) -> StoreResult<()> {
        on_pool!(self, p => {
            sqlx::query("SELECT 1").execute(p).await.map_err(db_err)?;
        });
        Ok(())
    }

    async fn is_bootstrapped(&self) -> StoreResult<bool> {
        on_pool!(self, p => {
            let v: Option<String> =
                sqlx::query_scalar("SELECT value FROM system_state WHERE key = 'bootstrapped'")
                    .fetch_optional(p)
                    .await
                    .map_err(db_err)?;
            Ok(v.is_some())
        })
    }

    async fn bootstrap(&self, tenant: &Tenant, admin: &User) -> StoreResult<bool> {
        on_pool_write!(self, p => {
            let mut tx = p.begin().await.map_err(db_err)?;
            let claimed = sqlx::query(
                "INSERT INTO system_state (key, value) VALUES ('bootstrapped', $1) \
                 ON CONFLICT (key) DO NOTHING",
            )
            .bind(coachlibre_core::now().to_rfc3339())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected()
                == 1;
            if !claimed {
                return Ok(false);
            }
            sqlx::query("INSERT INTO tenants (id, slug, name, created_at) VALUES ($1, $2, $3, $4)")
                .bind(tenant.id.as_uuid())
                .bind(tenant.slug.as_str())
                .bind(&tenant.name)
                .bind(tenant.created_at)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            insert_user_query(admin).execute(&mut *tx).await.map_err(db_err)?;
            tx.commit().await.map_err(db_err)?;
            Ok(true)
        })
    }

    fn backend(&self) -> &'static str {
        match self.pool {
            crate::Pool::Sqlite { .. } => "sqlite",
            crate::Pool::Postgres(_) => "postgres",
        }
    }
}
