//! Phone numbers and the tenant's SMS numbers, for both drivers.

use async_trait::async_trait;
use coachlibre_core::ids::{AgentId, TenantId, UserId};
use coachlibre_core::sms::{PhoneNumber, SmsNumber};
use coachlibre_core::store::{SmsStore, StoreError, StoreResult};
use uuid::Uuid;

use crate::rows::{col, fetch_opt, fetch_vec};
use crate::{SqlStore, db_err, on_pool, on_pool_write};

const NUMBER_COLS: &str = "number, tenant_id, agent_id, created_at";

macro_rules! number_row {
    ($r:expr) => {{
        let r = &$r;
        SmsNumber {
            number: PhoneNumber::from_trusted(col!(r, "number")),
            tenant_id: col!(r, "tenant_id", Uuid).into(),
            agent_id: col!(r, "agent_id", Uuid).into(),
            created_at: col!(r, "created_at"),
        }
    }};
}

macro_rules! phone_row {
    ($r:expr) => {
        PhoneNumber::from_trusted(col!(&$r, "number"))
    };
}

macro_rules! user_id_row {
    ($r:expr) => {
        UserId::from(col!(&$r, "user_id", Uuid))
    };
}

#[async_trait]
impl SmsStore for SqlStore {
    async fn set_phone(
        &self,
        tenant: TenantId,
        user: UserId,
        phone: Option<&PhoneNumber>,
    ) -> StoreResult<()> {
        let now = coachlibre_core::now();
        on_pool_write!(self, p => {
            let mut tx = p.begin().await.map_err(db_err)?;
            let exists = sqlx::query("SELECT 1 FROM users WHERE tenant_id = $1 AND id = $2")
                .bind(tenant.as_uuid())
                .bind(user.as_uuid())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?
                .is_some();
            if !exists {
                return Err(StoreError::NotFound);
            }
            match phone {
                Some(n) => {
                    sqlx::query(
                        "INSERT INTO phones (user_id, tenant_id, number, updated_at) \
                         VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (user_id) DO UPDATE \
                         SET number = excluded.number, updated_at = excluded.updated_at",
                    )
                    .bind(user.as_uuid())
                    .bind(tenant.as_uuid())
                    .bind(n.as_str())
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                }
                None => {
                    sqlx::query("DELETE FROM phones WHERE tenant_id = $1 AND user_id = $2")
                        .bind(tenant.as_uuid())
                        .bind(user.as_uuid())
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                }
            }
            tx.commit().await.map_err(db_err)?;
        });
        Ok(())
    }

    async fn get_phone(&self, tenant: TenantId, user: UserId) -> StoreResult<Option<PhoneNumber>> {
        on_pool!(self, p => {
            let q = sqlx::query("SELECT number FROM phones WHERE tenant_id = $1 AND user_id = $2")
                .bind(tenant.as_uuid())
                .bind(user.as_uuid());
            Ok(fetch_opt!(q, p, phone_row))
        })
    }

    async fn user_by_phone(
        &self,
        tenant: TenantId,
        phone: &PhoneNumber,
    ) -> StoreResult<Option<UserId>> {
        on_pool!(self, p => {
            let q = sqlx::query("SELECT user_id FROM phones WHERE tenant_id = $1 AND number = $2")
                .bind(tenant.as_uuid())
                .bind(phone.as_str());
            Ok(fetch_opt!(q, p, user_id_row))
        })
    }

    async fn insert_sms_number(&self, n: &SmsNumber) -> StoreResult<()> {
        on_pool_write!(self, p => {
            // The agent must be the tenant's: the foreign key alone would accept another's.
            let mut tx = p.begin().await.map_err(db_err)?;
            let agent = sqlx::query("SELECT 1 FROM agents WHERE tenant_id = $1 AND id = $2")
                .bind(n.tenant_id.as_uuid())
                .bind(n.agent_id.as_uuid())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
            if agent.is_none() {
                return Err(StoreError::NotFound);
            }
            sqlx::query(&format!(
                "INSERT INTO sms_numbers ({NUMBER_COLS}) VALUES ($1, $2, $3, $4)"
            ))
            .bind(n.number.as_str())
            .bind(n.tenant_id.as_uuid())
            .bind(n.agent_id.as_uuid())
            .bind(n.created_at)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
            tx.commit().await.map_err(db_err)?;
        });
        Ok(())
    }

    async fn delete_sms_number(&self, tenant: TenantId, number: &PhoneNumber) -> StoreResult<bool> {
        on_pool_write!(self, p => {
            let n = sqlx::query("DELETE FROM sms_numbers WHERE tenant_id = $1 AND number = $2")
                .bind(tenant.as_uuid())
                .bind(number.as_str())
                .execute(p)
                .await
                .map_err(db_err)?
                .rows_affected();
            Ok(n == 1)
        })
    }

    async fn list_sms_numbers(&self, tenant: TenantId) -> StoreResult<Vec<SmsNumber>> {
        let sql = format!(
            "SELECT {NUMBER_COLS} FROM sms_numbers WHERE tenant_id = $1 \
             ORDER BY created_at, number"
        );
        on_pool!(self, p => {
            let q = sqlx::query(&sql).bind(tenant.as_uuid());
            Ok(fetch_vec!(q, p, number_row))
        })
    }

    async fn find_sms_number(&self, number: &PhoneNumber) -> StoreResult<Option<SmsNumber>> {
        let sql = format!("SELECT {NUMBER_COLS} FROM sms_numbers WHERE number = $1");
        on_pool!(self, p => {
            let q = sqlx::query(&sql).bind(number.as_str());
            Ok(fetch_opt!(q, p, number_row))
        })
    }

    async fn sms_number_for_agent(
        &self,
        tenant: TenantId,
        agent: AgentId,
    ) -> StoreResult<Option<SmsNumber>> {
        let sql = format!(
            "SELECT {NUMBER_COLS} FROM sms_numbers WHERE tenant_id = $1 AND agent_id = $2 \
             ORDER BY created_at, number LIMIT 1"
        );
        on_pool!(self, p => {
            let q = sqlx::query(&sql).bind(tenant.as_uuid()).bind(agent.as_uuid());
            Ok(fetch_opt!(q, p, number_row))
        })
    }
}
