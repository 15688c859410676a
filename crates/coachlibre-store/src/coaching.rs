//! Storage of agents, conversations, memory, goals, approvals, usage and notifications, for
//! both drivers (see the crate docs). Structured fields (generation settings, tool lists, key
//! results, tool calls) are stored as JSON text; embeddings as little-endian `f32` bytes.

use async_trait::async_trait;
use coachlibre_core::Timestamp;
use coachlibre_core::agent::Agent;
use coachlibre_core::conversation::{
    Approval, ApprovalStatus, Conversation, Message, UsageRecord, UsageTotals,
};
use coachlibre_core::goal::{Goal, Notification, Reminder};
use coachlibre_core::ids::{
    AgentId, ApprovalId, ConversationId, GoalId, MemoryId, MessageId, NotificationId, TenantId,
    UserId,
};
use coachlibre_core::memory::{Memory, Profile};
use coachlibre_core::page::PageRequest;
use coachlibre_core::store::{
    AgentStore, ConversationFilter, ConversationStore, GoalStore, MemoryStore, StoreError,
    StoreResult,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::rows::{col, fetch_opt, fetch_vec};
use crate::{SqlStore, db_err, on_pool, on_pool_write, one_row};

/// Encode a structured field.
pub(crate) fn to_json<T: Serialize>(v: &T) -> StoreResult<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Backend(e.to_string()))
}

/// Decode a structured field.
pub(crate) fn from_json<T: DeserializeOwned>(s: &str) -> StoreResult<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Backend(format!("stored JSON: {e}")))
}

/// Decode a stored enum with its `parse`.
pub(crate) fn parse_enum<T>(s: &str, parse: impl Fn(&str) -> Option<T>) -> StoreResult<T> {
    parse(s).ok_or_else(|| StoreError::Backend(format!("unknown value '{s}' in database")))
}

pub(crate) fn embedding_bytes(v: &Option<Vec<f32>>) -> Option<Vec<u8>> {
    v.as_ref()
        .map(|v| v.iter().flat_map(|x| x.to_le_bytes()).collect())
}

pub(crate) fn embedding_of(bytes: Option<Vec<u8>>) -> Option<Vec<f32>> {
    bytes.map(|b| {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    })
}

fn count(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

const AGENT_COLS: &str = "id, tenant_id, owner_id, name, persona, model, params, tools, \
    approval_tools, collections, memory, budget, template, created_at, updated_at";

/// An agent's structured fields, encoded for storage.
struct AgentJson {
    params: String,
    tools: String,
    approval_tools: String,
    collections: String,
    memory: String,
    budget: String,
}

impl AgentJson {
    fn of(a: &Agent) -> StoreResult<Self> {
        Ok(Self {
            params: to_json(&a.params)?,
            tools: to_json(&a.tools)?,
            approval_tools: to_json(&a.approval_tools)?,
            collections: to_json(&a.collections)?,
            memory: to_json(&a.memory)?,
            budget: to_json(&a.budget)?,
        })
    }
}

macro_rules! agent_row {
    ($r:expr) => {{
        let r = &$r;
        Agent {
            id: col!(r, "id", Uuid).into(),
            tenant_id: col!(r, "tenant_id", Uuid).into(),
            owner_id: col!(r, "owner_id", Option<Uuid>).map(Into::into),
            name: col!(r, "name"),
            persona: col!(r, "persona"),
            model: col!(r, "model"),
            params: from_json(&col!(r, "params", String))?,
            tools: from_json(&col!(r, "tools", String))?,
            approval_tools: from_json(&col!(r, "approval_tools", String))?,
            collections: from_json(&col!(r, "collections", String))?,
            memory: from_json(&col!(r, "memory", String))?,
            budget: from_json(&col!(r, "budget", String))?,
            template: col!(r, "template"),
            created_at: col!(r, "created_at"),
            updated_at: col!(r, "updated_at"),
        }
    }};
}

const CONV_COLS: &str = "id, tenant_id, client_id, agent_id, channel, title, summary, \
    summary_upto, archived, created_at, updated_at";

macro_rules! conversation_row {
    ($r:expr) => {{
        let r = &$r;
        Conversation {
            id: col!(r, "id", Uuid).into(),
            tenant_id: col!(r, "tenant_id", Uuid).into(),
            client_id: col!(r, "client_id", Uuid).into(),
            agent_id: col!(r, "agent_id", Uuid).into(),
            channel: parse_enum(
                &col!(r, "channel", String),
                coachlibre_core::conversation::Channel::parse,
            )?,
            title: col!(r, "title"),
            summary: col!(r, "summary"),
            summary_upto: col!(r, "summary_upto", Option<Uuid>).map(Into::into),
            archived: col!(r, "archived", bool),
            created_at: col!(r, "created_at"),
            updated_at: col!(r, "updated_at"),
        }
    }};
}

const MSG_COLS: &str = "id, tenant_id, conversation_id, role, content, tool_calls, \
    tool_call_id, status, prompt_tokens, completion_tokens, created_at, citations";

macro_rules! message_row {
    ($r:expr) => {{
        let r = &$r;
        Message {
            id: col!(r, "id", Uuid).into(),
            tenant_id: col!(r, "tenant_id", Uuid).into(),
            conversation_id: col!(r, "conversation_id", Uuid).into(),
            role: parse_enum(&col!(r, "role", String), role_of)?,
            content: col!(r, "content"),
            tool_calls: from_json(&col!(r, "tool_calls", String))?,
            tool_call_id: col!(r, "tool_call_id"),
            status: parse_enum(
                &col!(r, "status", String),
                coachlibre_core::conversation::MessageStatus::parse,
            )?,
            prompt_tokens: count(col!(r, "prompt_tokens", i64)),
            completion_tokens: count(col!(r, "completion_tokens", i64)),
            created_at: col!(r, "created_at"),
            citations: from_json(&col!(r, "citations", String))?,
        }
    }};
}

const APPROVAL_COLS: &str = "id, tenant_id, conversation_id, message_id, client_id, agent_id, \
    tool_call, status, decided_by, resumed, created_at, decided_at";

macro_rules! approval_row {
    ($r:expr) => {{
        let r = &$r;
        Approval {
            id: col!(r, "id", Uuid).into(),
            tenant_id: col!(r, "tenant_id", Uuid).into(),
            conversation_id: col!(r, "conversation_id", Uuid).into(),
            message_id: col!(r, "message_id", Uuid).into(),
            client_id: col!(r, "client_id", Uuid).into(),
            agent_id: col!(r, "agent_id", Uuid).into(),
            tool_call: from_json(&col!(r, "tool_call", String))?,
            status: parse_enum(&col!(r, "status", String), ApprovalStatus::parse)?,
            decided_by: col!(r, "decided_by", Option<Uuid>).map(Into::into),
            resumed: col!(r, "resumed", bool),
            created_at: col!(r, "created_at"),
            decided_at: col!(r, "decided_at"),
        }
    }};
}

const MEMORY_COLS: &str =
    "id, tenant_id, client_id, kind, key, content, source, embedding, created_at, updated_at";

macro_rules! memory_row {
    ($r:expr) => {{
        let r = &$r;
        Memory {
            id: col!(r, "id", Uuid).into(),
            tenant_id: col!(r, "tenant_id", Uuid).into(),
            client_id: col!(r, "client_id", Uuid).into(),
            kind: parse_enum(
                &col!(r, "kind", String),
                coachlibre_core::memory::MemoryKind::parse,
            )?,
            key: col!(r, "key"),
            content: col!(r, "content"),
            source: col!(r, "source"),
            embedding: embedding_of(col!(r, "embedding", Option<Vec<u8>>)),
            created_at: col!(r, "created_at"),
            updated_at: col!(r, "updated_at"),
        }
    }};
}

const GOAL_COLS: &str = "id, tenant_id, client_id, title, description, status, key_results, \
    due_date, created_at, updated_at";

macro_rules! goal_row {
    ($r:expr) => {{
        let r = &$r;
        Goal {
            id: col!(r, "id", Uuid).into(),
            tenant_id: col!(r, "tenant_id", Uuid).into(),
            client_id: col!(r, "client_id", Uuid).into(),
            title: col!(r, "title"),
            description: col!(r, "description"),
            status: parse_enum(
                &col!(r, "status", String),
                coachlibre_core::goal::GoalStatus::parse,
            )?,
            key_results: from_json(&col!(r, "key_results", String))?,
            due_date: col!(r, "due_date"),
            created_at: col!(r, "created_at"),
            updated_at: col!(r, "updated_at"),
        }
    }};
}

macro_rules! reminder_row {
    ($r:expr) => {{
        let r = &$r;
        coachlibre_core::goal::Reminder {
            id: col!(r, "id", Uuid).into(),
            tenant_id: col!(r, "tenant_id", Uuid).into(),
            client_id: col!(r, "client_id", Uuid).into(),
            conversation_id: col!(r, "conversation_id", Option<Uuid>).map(Into::into),
            text: col!(r, "text"),
            due_at: col!(r, "due_at"),
            status: $crate::coaching::parse_enum(
                &col!(r, "status", String),
                coachlibre_core::goal::ReminderStatus::parse,
            )?,
            created_at: col!(r, "created_at"),
        }
    }};
}
pub(crate) use reminder_row;

macro_rules! notification_row {
    ($r:expr) => {{
        let r = &$r;
        Notification {
            id: col!(r, "id", Uuid).into(),
            tenant_id: col!(r, "tenant_id", Uuid).into(),
            user_id: col!(r, "user_id", Uuid).into(),
            kind: col!(r, "kind"),
            message: col!(r, "message"),
            dedup_key: col!(r, "dedup_key"),
            created_at: col!(r, "created_at"),
            read_at: col!(r, "read_at"),
        }
    }};
}

fn role_of(s: &str) -> Option<coachlibre_core::model::ChatRole> {
    use coachlibre_core::model::ChatRole;
    match s {
        "system" => Some(ChatRole::System),
        "user" => Some(ChatRole::User),
        "assistant" => Some(ChatRole::Assistant),
        "tool" => Some(ChatRole::Tool),
        _ => None,
    }
}

/// Insert a message if its conversation is the tenant's (no row otherwise); bind with
/// [`bind_message!`].
pub(crate) fn message_insert_sql() -> String {
    format!(
        "INSERT INTO messages ({MSG_COLS}) \
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12 \
         WHERE EXISTS (SELECT 1 FROM conversations WHERE tenant_id = $2 AND id = $3)"
    )
}

/// Bind message `$m` (its tool calls and citations encoded as `$calls` and `$cites`) to
/// [`message_insert_sql`].
macro_rules! bind_message {
    ($q:expr, $m:expr, $calls:expr, $cites:expr) => {
        $q.bind($m.id.as_uuid())
            .bind($m.tenant_id.as_uuid())
            .bind($m.conversation_id.as_uuid())
            .bind($crate::coaching::role_text($m))
            .bind(&$m.content)
            .bind(&$calls)
            .bind($m.tool_call_id.as_deref())
            .bind($m.status.as_str())
            .bind(i64::from($m.prompt_tokens))
            .bind(i64::from($m.completion_tokens))
            .bind($m.created_at)
            .bind(&$cites)
    };
}
pub(crate) use bind_message;

pub(crate) fn role_text(m: &Message) -> &'static str {
    match m.role {
        coachlibre_core::model::ChatRole::System => "system",
        coachlibre_core::model::ChatRole::User => "user",
        coachlibre_core::model::ChatRole::Assistant => "assistant",
        coachlibre_core::model::ChatRole::Tool => "tool",
    }
}

impl SqlStore {
    /// A message (and the usage of the model call that produced it) in one transaction: one
    /// commit, so one disk flush, per model step. A trigger marks the conversation updated;
    /// the insert only happens if the conversation is the tenant's.
    async fn insert_message_inner(&self, m: &Message, u: Option<&UsageRecord>) -> StoreResult<()> {
        let calls = to_json(&m.tool_calls)?;
        let cites = to_json(&m.citations)?;
        let insert = message_insert_sql();
        macro_rules! message_insert {
            () => {
                bind_message!(sqlx::query(&insert), m, calls, cites)
            };
        }
        on_pool_write!(self, p => {
            let Some(u) = u else {
                let r = message_insert!().execute(p).await.map_err(db_err)?;
                return one_row(r.rows_affected());
            };
            let mut tx = p.begin().await.map_err(db_err)?;
            sqlx::query(
                "INSERT INTO usage_records (id, tenant_id, client_id, agent_id, \
                 conversation_id, model, prompt_tokens, completion_tokens, cost_usd, \
                 estimated, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(u.id.as_uuid())
            .bind(u.tenant_id.as_uuid())
            .bind(u.client_id.as_uuid())
            .bind(u.agent_id.as_uuid())
            .bind(u.conversation_id.map(|c| c.as_uuid()))
            .bind(&u.model)
            .bind(i64::from(u.prompt_tokens))
            .bind(i64::from(u.completion_tokens))
            .bind(u.cost_usd)
            .bind(u.estimated)
            .bind(u.created_at)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
            let r = message_insert!().execute(&mut *tx).await.map_err(db_err)?;
            one_row(r.rows_affected())?;
            tx.commit().await.map_err(db_err)?;
        });
        Ok(())
    }
}

#[async_trait]
impl AgentStore for SqlStore {
    async fn insert_agent(&self, a: &Agent) -> StoreResult<()> {
        let AgentJson {
            params,
            tools,
            approval_tools: sensitive,
            collections,
            memory,
            budget,
        } = AgentJson::of(a)?;
        on_pool_write!(self, p => {
            sqlx::query(&format!(
                "INSERT INTO agents ({AGENT_COLS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
            ))
            .bind(a.id.as_uuid())
            .bind(a.tenant_id.as_uuid())
            .bind(a.owner_id.map(|o| o.as_uuid()))
            .bind(&a.name)
            .bind(&a.persona)
            .bind(&a.model)
            .bind(&params)
            .bind(&tools)
            .bind(&sensitive)
            .bind(&collections)
            .bind(&memory)
            .bind(&budget)
            .bind(a.template.as_deref())
            .bind(a.created_at)
            .bind(a.updated_at)
            .execute(p)
            .await
            .map_err(db_err)?;
        });
        Ok(())
    }

    async fn get_agent(&self, tenant: TenantId, id: AgentId) -> StoreResult<Option<Agent>> {
        on_pool!(self, p => {
            Ok(fetch_opt!(sqlx::query(&format!(
                "SELECT {AGENT_COLS} FROM agents WHERE tenant_id = $1 AND id = $2"
            ))
            .bind(tenant.as_uuid())
            .bind(id.as_uuid()), p, agent_row))
        })
    }

    async fn update_agent(&self, a: &Agent) -> StoreResult<()> {
        let AgentJson {
            params,
            tools,
            approval_tools: sensitive,
            collections,
            memory,
            budget,
        } = AgentJson::of(a)?;
        on_pool_write!(self, p => {
            let r = sqlx::query(
                "UPDATE agents SET name = $3, persona = $4, model = $5, params = $6, tools = $7, \
                 collections = $8, memory = $9, budget = $10, updated_at = $11, approval_tools = $12 \
                 WHERE tenant_id = $1 AND id = $2",
            )
            .bind(a.tenant_id.as_uuid())
            .bind(a.id.as_uuid())
            .bind(&a.name)
            .bind(&a.persona)
            .bind(&a.model)
            .bind(&params)
            .bind(&tools)
            .bind(&collections)
            .bind(&memory)
            .bind(&budget)
            .bind(a.updated_at)
            .bind(&sensitive)
            .execute(p)
            .await
            .map_err(db_err)?;
            one_row(r.rows_affected())
        })
    }

    async fn delete_agent(&self, tenant: TenantId, id: AgentId) -> StoreResult<bool> {
        on_pool_write!(self, p => {
            let r = sqlx::query("DELETE FROM agents WHERE tenant_id = $1 AND id = $2")
                .bind(tenant.as_uuid())
                .bind(id.as_uuid())
                .execute(p)
                .await
                .map_err(db_err)?;
            Ok(r.rows_affected() == 1)
        })
    }

    async fn list_agents(
        &self,
        tenant: TenantId,
        visible_to: Option<UserId>,
        page: &PageRequest,
    ) -> StoreResult<Vec<Agent>> {
        on_pool!(self, p => {
            Ok(fetch_vec!(sqlx::query(&format!(
                "SELECT {AGENT_COLS} FROM agents a WHERE a.tenant_id = $1 \
                 AND ($2 IS NULL OR a.owner_id IS NULL OR a.owner_id = $2 \
                      OR EXISTS (SELECT 1 FROM coach_clients c WHERE c.tenant_id = $1 \
                                 AND c.coach_id = a.owner_id AND c.client_id = $2)) \
                 AND ($3 IS NULL OR a.id > $3) ORDER BY a.id LIMIT $4"
            ))
            .bind(tenant.as_uuid())
            .bind(visible_to.map(|u| u.as_uuid()))
            .bind(page.cursor)
            .bind(page.fetch_limit()), p, agent_row))
        })
    }
}

#[async_trait]
impl ConversationStore for SqlStore {
    async fn insert_conversation(&self, c: &Conversation) -> StoreResult<()> {
        on_pool_write!(self, p => {
            sqlx::query(&format!(
                "INSERT INTO conversations ({CONV_COLS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
            ))
            .bind(c.id.as_uuid())
            .bind(c.tenant_id.as_uuid())
            .bind(c.client_id.as_uuid())
            .bind(c.agent_id.as_uuid())
            .bind(c.channel.as_str())
            .bind(&c.title)
            .bind(&c.summary)
            .bind(c.summary_upto.map(|m| m.as_uuid()))
            .bind(c.archived)
            .bind(c.created_at)
            .bind(c.updated_at)
            .execute(p)
            .await
            .map_err(db_err)?;
        });
        Ok(())
    }

    async fn get_conversation(
        &self,
        tenant: TenantId,
        id: ConversationId,
    ) -> StoreResult<Option<Conversation>> {
        on_pool!(self, p => {
            Ok(fetch_opt!(sqlx::query(&format!(
                "SELECT {CONV_COLS} FROM conversations WHERE tenant_id = $1 AND id = $2"
            ))
            .bind(tenant.as_uuid())
            .bind(id.as_uuid()), p, conversation_row))
        })
    }

    async fn list_conversations(
        &self,
        tenant: TenantId,
        f: &ConversationFilter,
        page: &PageRequest,
    ) -> StoreResult<Vec<Conversation>> {
        on_pool!(self, p => {
            Ok(fetch_vec!(sqlx::query(&format!(
                "SELECT {CONV_COLS} FROM conversations v WHERE v.tenant_id = $1 \
                 AND ($2 IS NULL OR v.client_id = $2) \
                 AND ($3 IS NULL OR v.client_id = $3 \
                      OR EXISTS (SELECT 1 FROM coach_clients c WHERE c.tenant_id = $1 \
                      AND c.coach_id = $3 AND c.client_id = v.client_id)) \
                 AND ($4 IS NULL OR v.agent_id = $4) \
                 AND ($5 OR v.archived = $6) \
                 AND ($7 IS NULL OR v.id > $7) ORDER BY v.id LIMIT $8"
            ))
            .bind(tenant.as_uuid())
            .bind(f.client_id.map(|u| u.as_uuid()))
            .bind(f.coach_id.map(|u| u.as_uuid()))
            .bind(f.agent_id.map(|a| a.as_uuid()))
            .bind(f.include_archived)
            .bind(false)
            .bind(page.cursor)
            .bind(page.fetch_limit()), p, conversation_row))
        })
    }

    async fn set_conversation_meta(
        &self,
        tenant: TenantId,
        id: ConversationId,
        title: &str,
        archived: bool,
    ) -> StoreResult<()> {
        on_pool_write!(self, p => {
            let r = sqlx::query(
                "UPDATE conversations SET title = $3, archived = $4, updated_at = $5 \
                 WHERE tenant_id = $1 AND id = $2",
            )
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .bind(title)
            .bind(archived)
            .bind(coachlibre_core::now())
            .execute(p)
            .await
            .map_err(db_err)?;
            one_row(r.rows_affected())
        })
    }

    async fn set_summary(
        &self,
        tenant: TenantId,
        id: ConversationId,
        summary: &str,
        upto: MessageId,
    ) -> StoreResult<()> {
        on_pool_write!(self, p => {
            let r = sqlx::query(
                "UPDATE conversations SET summary = $3, summary_upto = $4 \
                 WHERE tenant_id = $1 AND id = $2",
            )
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .bind(summary)
            .bind(upto.as_uuid())
            .execute(p)
            .await
            .map_err(db_err)?;
            one_row(r.rows_affected())
        })
    }

    async fn delete_conversation(&self, tenant: TenantId, id: ConversationId) -> StoreResult<bool> {
        on_pool_write!(self, p => {
            let r = sqlx::query("DELETE FROM conversations WHERE tenant_id = $1 AND id = $2")
                .bind(tenant.as_uuid())
                .bind(id.as_uuid())
                .execute(p)
                .await
                .map_err(db_err)?;
            Ok(r.rows_affected() == 1)
        })
    }

    async fn latest_conversation(
        &self,
        tenant: TenantId,
        client: UserId,
        agent: AgentId,
        channel: &str,
    ) -> StoreResult<Option<Conversation>> {
        on_pool!(self, p => {
            Ok(fetch_opt!(sqlx::query(&format!(
                "SELECT {CONV_COLS} FROM conversations WHERE tenant_id = $1 AND client_id = $2 \
                 AND agent_id = $3 AND channel = $4 AND archived = $5 ORDER BY id DESC LIMIT 1"
            ))
            .bind(tenant.as_uuid())
            .bind(client.as_uuid())
            .bind(agent.as_uuid())
            .bind(channel)
            .bind(false), p, conversation_row))
        })
    }

    async fn insert_message(&self, m: &Message) -> StoreResult<()> {
        self.insert_message_inner(m, None).await
    }

    async fn insert_message_with_usage(&self, m: &Message, u: &UsageRecord) -> StoreResult<()> {
        self.insert_message_inner(m, Some(u)).await
    }

    async fn update_message(&self, m: &Message) -> StoreResult<()> {
        let calls = to_json(&m.tool_calls)?;
        let cites = to_json(&m.citations)?;
        on_pool_write!(self, p => {
            let r = sqlx::query(
                "UPDATE messages SET content = $3, tool_calls = $4, status = $5, \
                 prompt_tokens = $6, completion_tokens = $7, citations = $8 \
                 WHERE tenant_id = $1 AND id = $2",
            )
            .bind(m.tenant_id.as_uuid())
            .bind(m.id.as_uuid())
            .bind(&m.content)
            .bind(&calls)
            .bind(m.status.as_str())
            .bind(i64::from(m.prompt_tokens))
            .bind(i64::from(m.completion_tokens))
            .bind(&cites)
            .execute(p)
            .await
            .map_err(db_err)?;
            one_row(r.rows_affected())
        })
    }

    async fn get_message(&self, tenant: TenantId, id: MessageId) -> StoreResult<Option<Message>> {
        on_pool!(self, p => {
            Ok(fetch_opt!(sqlx::query(&format!(
                "SELECT {MSG_COLS} FROM messages WHERE tenant_id = $1 AND id = $2"
            ))
            .bind(tenant.as_uuid())
            .bind(id.as_uuid()), p, message_row))
        })
    }

    async fn list_messages(
        &self,
        tenant: TenantId,
        conversation: ConversationId,
        page: &PageRequest,
    ) -> StoreResult<Vec<Message>> {
        on_pool!(self, p => {
            Ok(fetch_vec!(sqlx::query(&format!(
                "SELECT {MSG_COLS} FROM messages WHERE tenant_id = $1 AND conversation_id = $2 \
                 AND ($3 IS NULL OR id > $3) ORDER BY id LIMIT $4"
            ))
            .bind(tenant.as_uuid())
            .bind(conversation.as_uuid())
            .bind(page.cursor)
            .bind(page.fetch_limit()), p, message_row))
        })
    }

    async fn recent_messages(
        &self,
        tenant: TenantId,
        conversation: ConversationId,
        after: Option<MessageId>,
        limit: i64,
    ) -> StoreResult<Vec<Message>> {
        let mut rows = on_pool!(self, p => {
            fetch_vec!(sqlx::query(&format!(
                "SELECT {MSG_COLS} FROM messages WHERE tenant_id = $1 AND conversation_id = $2 \
                 AND ($3 IS NULL OR id > $3) ORDER BY id DESC LIMIT $4"
            ))
            .bind(tenant.as_uuid())
            .bind(conversation.as_uuid())
            .bind(after.map(|m| m.as_uuid()))
            .bind(limit), p, message_row)
        });
        rows.reverse();
        Ok(rows)
    }

    async fn search_messages(
        &self,
        tenant: TenantId,
        client: UserId,
        text: &str,
        limit: i64,
    ) -> StoreResult<Vec<Message>> {
        // LIKE with the wildcards of the input escaped, lowercased on both sides.
        let pattern = format!(
            "%{}%",
            text.to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        on_pool!(self, p => {
            Ok(fetch_vec!(sqlx::query(&format!(
                "SELECT {} FROM messages m WHERE m.tenant_id = $1 \
                 AND m.role IN ('user', 'assistant') \
                 AND EXISTS (SELECT 1 FROM conversations v WHERE v.tenant_id = $1 \
                             AND v.id = m.conversation_id AND v.client_id = $2) \
                 AND LOWER(m.content) LIKE $3 ESCAPE '\\' ORDER BY m.id DESC LIMIT $4",
                MSG_COLS.split(", ").map(|c| format!("m.{c}")).collect::<Vec<_>>().join(", ")
            ))
            .bind(tenant.as_uuid())
            .bind(client.as_uuid())
            .bind(&pattern)
            .bind(limit), p, message_row))
        })
    }

    async fn insert_approval(&self, a: &Approval) -> StoreResult<()> {
        let call = to_json(&a.tool_call)?;
        on_pool_write!(self, p => {
            sqlx::query(&format!(
                "INSERT INTO approvals ({APPROVAL_COLS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
            ))
            .bind(a.id.as_uuid())
            .bind(a.tenant_id.as_uuid())
            .bind(a.conversation_id.as_uuid())
            .bind(a.message_id.as_uuid())
            .bind(a.client_id.as_uuid())
            .bind(a.agent_id.as_uuid())
            .bind(&call)
            .bind(a.status.as_str())
            .bind(a.decided_by.map(|u| u.as_uuid()))
            .bind(a.resumed)
            .bind(a.created_at)
            .bind(a.decided_at)
            .execute(p)
            .await
            .map_err(db_err)?;
        });
        Ok(())
    }

    async fn get_approval(
        &self,
        tenant: TenantId,
        id: ApprovalId,
    ) -> StoreResult<Option<Approval>> {
        on_pool!(self, p => {
            Ok(fetch_opt!(sqlx::query(&format!(
                "SELECT {APPROVAL_COLS} FROM approvals WHERE tenant_id = $1 AND id = $2"
            ))
            .bind(tenant.as_uuid())
            .bind(id.as_uuid()), p, approval_row))
        })
    }

    async fn list_approvals(
        &self,
        tenant: TenantId,
        status: Option<ApprovalStatus>,
        coach: Option<UserId>,
        page: &PageRequest,
    ) -> StoreResult<Vec<Approval>> {
        on_pool!(self, p => {
            Ok(fetch_vec!(sqlx::query(&format!(
                "SELECT {APPROVAL_COLS} FROM approvals a WHERE a.tenant_id = $1 \
                 AND ($2 IS NULL OR a.status = $2) \
                 AND ($3 IS NULL OR EXISTS (SELECT 1 FROM coach_clients c WHERE c.tenant_id = $1 \
                      AND c.coach_id = $3 AND c.client_id = a.client_id)) \
                 AND ($4 IS NULL OR a.id > $4) ORDER BY a.id LIMIT $5"
            ))
            .bind(tenant.as_uuid())
            .bind(status.map(ApprovalStatus::as_str))
            .bind(coach.map(|u| u.as_uuid()))
            .bind(page.cursor)
            .bind(page.fetch_limit()), p, approval_row))
        })
    }

    async fn decide_approval(
        &self,
        tenant: TenantId,
        id: ApprovalId,
        status: ApprovalStatus,
        by: UserId,
        at: Timestamp,
    ) -> StoreResult<bool> {
        on_pool_write!(self, p => {
            let r = sqlx::query(
                "UPDATE approvals SET status = $3, decided_by = $4, decided_at = $5 \
                 WHERE tenant_id = $1 AND id = $2 AND status = 'pending'",
            )
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .bind(status.as_str())
            .bind(by.as_uuid())
            .bind(at)
            .execute(p)
            .await
            .map_err(db_err)?;
            Ok(r.rows_affected() == 1)
        })
    }

    async fn claim_approval_resume(&self, tenant: TenantId, id: ApprovalId) -> StoreResult<bool> {
        on_pool_write!(self, p => {
            let r = sqlx::query(
                "UPDATE approvals SET resumed = $3 WHERE tenant_id = $1 AND id = $2 \
                 AND status <> 'pending' AND resumed = $4",
            )
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .bind(true)
            .bind(false)
            .execute(p)
            .await
            .map_err(db_err)?;
            Ok(r.rows_affected() == 1)
        })
    }

    async fn approvals_to_resume(&self) -> StoreResult<Vec<Approval>> {
        on_pool!(self, p => {
            Ok(fetch_vec!(sqlx::query(&format!(
                "SELECT {APPROVAL_COLS} FROM approvals WHERE status <> 'pending' AND resumed = $1 \
                 ORDER BY id LIMIT 1000"
            ))
            .bind(false), p, approval_row))
        })
    }

    async fn insert_usage(&self, u: &UsageRecord) -> StoreResult<()> {
        on_pool_write!(self, p => {
            sqlx::query(
                "INSERT INTO usage_records (id, tenant_id, client_id, agent_id, conversation_id, \
                 model, prompt_tokens, completion_tokens, cost_usd, estimated, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(u.id.as_uuid())
            .bind(u.tenant_id.as_uuid())
            .bind(u.client_id.as_uuid())
            .bind(u.agent_id.as_uuid())
            .bind(u.conversation_id.map(|c| c.as_uuid()))
            .bind(&u.model)
            .bind(i64::from(u.prompt_tokens))
            .bind(i64::from(u.completion_tokens))
            .bind(u.cost_usd)
            .bind(u.estimated)
            .bind(u.created_at)
            .execute(p)
            .await
            .map_err(db_err)?;
        });
        Ok(())
    }

    async fn usage_since(
        &self,
        tenant: TenantId,
        client: UserId,
        agent: AgentId,
        since: Timestamp,
    ) -> StoreResult<UsageTotals> {
        on_pool!(self, p => {
            let row = sqlx::query(
                "SELECT CAST(COALESCE(SUM(prompt_tokens + completion_tokens), 0) AS BIGINT) AS tokens, \
                 CAST(COALESCE(SUM(cost_usd), 0) AS DOUBLE PRECISION) AS cost \
                 FROM usage_records WHERE tenant_id = $1 AND client_id = $2 AND agent_id = $3 \
                 AND created_at >= $4",
            )
            .bind(tenant.as_uuid())
            .bind(client.as_uuid())
            .bind(agent.as_uuid())
            .bind(since)
            .fetch_one(p)
            .await
            .map_err(db_err)?;
            let tokens: i64 = col!(&row, "tokens");
            let cost: f64 = col!(&row, "cost");
            Ok(UsageTotals {
                tokens: u64::try_from(tokens).unwrap_or(0),
                cost_usd: cost,
            })
        })
    }
}

#[async_trait]
impl MemoryStore for SqlStore {
    async fn get_profile(&self, tenant: TenantId, client: UserId) -> StoreResult<Profile> {
        let text: Option<String> = on_pool!(self, p => {
            sqlx::query_scalar("SELECT profile FROM client_profiles WHERE tenant_id = $1 AND client_id = $2")
                .bind(tenant.as_uuid())
                .bind(client.as_uuid())
                .fetch_optional(p)
                .await
                .map_err(db_err)?
        });
        text.map_or_else(|| Ok(Profile::default()), |t| from_json(&t))
    }

    async fn put_profile(
        &self,
        tenant: TenantId,
        client: UserId,
        prof: &Profile,
    ) -> StoreResult<()> {
        let text = to_json(prof)?;
        on_pool_write!(self, p => {
            sqlx::query(
                "INSERT INTO client_profiles (tenant_id, client_id, profile, updated_at) \
                 SELECT $1, $2, $3, $4 WHERE EXISTS \
                   (SELECT 1 FROM users WHERE tenant_id = $1 AND id = $2) \
                 ON CONFLICT (client_id) DO UPDATE SET profile = excluded.profile, \
                   updated_at = excluded.updated_at",
            )
            .bind(tenant.as_uuid())
            .bind(client.as_uuid())
            .bind(&text)
            .bind(coachlibre_core::now())
            .execute(p)
            .await
            .map_err(db_err)?;
        });
        Ok(())
    }

    async fn insert_memory(&self, m: &Memory) -> StoreResult<()> {
        let emb = embedding_bytes(&m.embedding);
        on_pool_write!(self, p => {
            sqlx::query(&format!(
                "INSERT INTO memories ({MEMORY_COLS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            ))
            .bind(m.id.as_uuid())
            .bind(m.tenant_id.as_uuid())
            .bind(m.client_id.as_uuid())
            .bind(m.kind.as_str())
            .bind(m.key.as_deref())
            .bind(&m.content)
            .bind(&m.source)
            .bind(emb.as_deref())
            .bind(m.created_at)
            .bind(m.updated_at)
            .execute(p)
            .await
            .map_err(db_err)?;
        });
        Ok(())
    }

    async fn update_memory(&self, m: &Memory) -> StoreResult<()> {
        let emb = embedding_bytes(&m.embedding);
        on_pool_write!(self, p => {
            let r = sqlx::query(
                "UPDATE memories SET kind = $3, key = $4, content = $5, source = $6, \
                 embedding = $7, updated_at = $8 WHERE tenant_id = $1 AND id = $2",
            )
            .bind(m.tenant_id.as_uuid())
            .bind(m.id.as_uuid())
            .bind(m.kind.as_str())
            .bind(m.key.as_deref())
            .bind(&m.content)
            .bind(&m.source)
            .bind(emb.as_deref())
            .bind(m.updated_at)
            .execute(p)
            .await
            .map_err(db_err)?;
            one_row(r.rows_affected())
        })
    }

    async fn find_memory_by_key(
        &self,
        tenant: TenantId,
        client: UserId,
        key: &str,
    ) -> StoreResult<Option<Memory>> {
        on_pool!(self, p => {
            Ok(fetch_opt!(sqlx::query(&format!(
                "SELECT {MEMORY_COLS} FROM memories WHERE tenant_id = $1 AND client_id = $2 \
                 AND key = $3 ORDER BY id DESC LIMIT 1"
            ))
            .bind(tenant.as_uuid())
            .bind(client.as_uuid())
            .bind(key), p, memory_row))
        })
    }

    async fn list_memories(
        &self,
        tenant: TenantId,
        client: UserId,
        page: &PageRequest,
    ) -> StoreResult<Vec<Memory>> {
        on_pool!(self, p => {
            Ok(fetch_vec!(sqlx::query(&format!(
                "SELECT {MEMORY_COLS} FROM memories WHERE tenant_id = $1 AND client_id = $2 \
                 AND ($3 IS NULL OR id < $3) ORDER BY id DESC LIMIT $4"
            ))
            .bind(tenant.as_uuid())
            .bind(client.as_uuid())
            .bind(page.cursor)
            .bind(page.fetch_limit()), p, memory_row))
        })
    }

    async fn memories_for_recall(
        &self,
        tenant: TenantId,
        client: UserId,
        limit: i64,
    ) -> StoreResult<Vec<Memory>> {
        on_pool!(self, p => {
            Ok(fetch_vec!(sqlx::query(&format!(
                "SELECT {MEMORY_COLS} FROM memories WHERE tenant_id = $1 AND client_id = $2 \
                 ORDER BY updated_at DESC, id DESC LIMIT $3"
            ))
            .bind(tenant.as_uuid())
            .bind(client.as_uuid())
            .bind(limit), p, memory_row))
        })
    }

    async fn delete_memory(
        &self,
        tenant: TenantId,
        client: UserId,
        id: MemoryId,
    ) -> StoreResult<bool> {
        on_pool_write!(self, p => {
            let r = sqlx::query(
                "DELETE FROM memories WHERE tenant_id = $1 AND client_id = $2 AND id = $3",
            )
            .bind(tenant.as_uuid())
            .bind(client.as_uuid())
            .bind(id.as_uuid())
            .execute(p)
            .await
            .map_err(db_err)?;
            Ok(r.rows_affected() == 1)
        })
    }

    async fn expire_memories(&self, tenant: TenantId, before: Timestamp) -> StoreResult<u64> {
        on_pool_write!(self, p => {
            let r = sqlx::query("DELETE FROM memories WHERE tenant_id = $1 AND updated_at < $2")
                .bind(tenant.as_uuid())
                .bind(before)
                .execute(p)
                .await
                .map_err(db_err)?;
            Ok(r.rows_affected())
        })
    }

    async fn memory_retention(&self, tenant: TenantId) -> StoreResult<Option<u32>> {
        let days: Option<Option<i32>> = on_pool!(self, p => {
            sqlx::query_scalar("SELECT memory_retention_days FROM tenants WHERE id = $1")
                .bind(tenant.as_uuid())
                .fetch_optional(p)
                .await
                .map_err(db_err)?
        });
        Ok(days.flatten().and_then(|d| u32::try_from(d).ok()))
    }

    async fn set_memory_retention(&self, tenant: TenantId, days: Option<u32>) -> StoreResult<()> {
        let days = days.map(|d| i32::try_from(d).unwrap_or(i32::MAX));
        on_pool_write!(self, p => {
            let r = sqlx::query("UPDATE tenants SET memory_retention_days = $2 WHERE id = $1")
                .bind(tenant.as_uuid())
                .bind(days)
                .execute(p)
                .await
                .map_err(db_err)?;
            one_row(r.rows_affected())
        })
    }

    async fn retention_policies(&self) -> StoreResult<Vec<(TenantId, u32)>> {
        let rows: Vec<(Uuid, i32)> = on_pool!(self, p => {
            sqlx::query_as(
                "SELECT id, memory_retention_days FROM tenants \
                 WHERE memory_retention_days IS NOT NULL",
            )
            .fetch_all(p)
            .await
            .map_err(db_err)?
        });
        Ok(rows
            .into_iter()
            .filter_map(|(t, d)| u32::try_from(d).ok().map(|d| (t.into(), d)))
            .collect())
    }
}

#[async_trait]
impl GoalStore for SqlStore {
    async fn insert_goal(&self, g: &Goal) -> StoreResult<()> {
        let krs = to_json(&g.key_results)?;
        on_pool_write!(self, p => {
            sqlx::query(&format!(
                "INSERT INTO goals ({GOAL_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            ))
            .bind(g.id.as_uuid())
            .bind(g.tenant_id.as_uuid())
            .bind(g.client_id.as_uuid())
            .bind(&g.title)
            .bind(&g.description)
            .bind(g.status.as_str())
            .bind(&krs)
            .bind(g.due_date)
            .bind(g.created_at)
            .bind(g.updated_at)
            .execute(p)
            .await
            .map_err(db_err)?;
        });
        Ok(())
    }

    async fn get_goal(&self, tenant: TenantId, id: GoalId) -> StoreResult<Option<Goal>> {
        on_pool!(self, p => {
            Ok(fetch_opt!(sqlx::query(&format!(
                "SELECT {GOAL_COLS} FROM goals WHERE tenant_id = $1 AND id = $2"
            ))
            .bind(tenant.as_uuid())
            .bind(id.as_uuid()), p, goal_row))
        })
    }

    async fn update_goal(&self, g: &Goal) -> StoreResult<()> {
        let krs = to_json(&g.key_results)?;
        on_pool_write!(self, p => {
            let r = sqlx::query(
                "UPDATE goals SET title = $3, description = $4, status = $5, key_results = $6, \
                 due_date = $7, updated_at = $8 WHERE tenant_id = $1 AND id = $2",
            )
            .bind(g.tenant_id.as_uuid())
            .bind(g.id.as_uuid())
            .bind(&g.title)
            .bind(&g.description)
            .bind(g.status.as_str())
            .bind(&krs)
            .bind(g.due_date)
            .bind(g.updated_at)
            .execute(p)
            .await
            .map_err(db_err)?;
            one_row(r.rows_affected())
        })
    }

    async fn list_goals(&self, tenant: TenantId, client: UserId) -> StoreResult<Vec<Goal>> {
        on_pool!(self, p => {
            Ok(fetch_vec!(sqlx::query(&format!(
                "SELECT {GOAL_COLS} FROM goals WHERE tenant_id = $1 AND client_id = $2 \
                 ORDER BY id LIMIT 500"
            ))
            .bind(tenant.as_uuid())
            .bind(client.as_uuid()), p, goal_row))
        })
    }

    async fn insert_reminder(&self, r: &Reminder) -> StoreResult<()> {
        on_pool_write!(self, p => {
            sqlx::query(
                "INSERT INTO reminders (id, tenant_id, client_id, conversation_id, text, due_at, \
                 status, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(r.id.as_uuid())
            .bind(r.tenant_id.as_uuid())
            .bind(r.client_id.as_uuid())
            .bind(r.conversation_id.map(|c| c.as_uuid()))
            .bind(&r.text)
            .bind(r.due_at)
            .bind(r.status.as_str())
            .bind(r.created_at)
            .execute(p)
            .await
            .map_err(db_err)?;
        });
        Ok(())
    }

    async fn list_reminders(
        &self,
        tenant: TenantId,
        client: UserId,
        page: &PageRequest,
    ) -> StoreResult<Vec<Reminder>> {
        on_pool!(self, p => {
            Ok(fetch_vec!(sqlx::query(
                "SELECT id, tenant_id, client_id, conversation_id, text, due_at, status, created_at \
                 FROM reminders WHERE tenant_id = $1 AND client_id = $2 \
                 AND ($3 IS NULL OR id > $3) ORDER BY id LIMIT $4"
            )
            .bind(tenant.as_uuid())
            .bind(client.as_uuid())
            .bind(page.cursor)
            .bind(page.fetch_limit()), p, reminder_row))
        })
    }

    async fn insert_notification(&self, n: &Notification) -> StoreResult<bool> {
        on_pool_write!(self, p => {
            let r = sqlx::query(
                "INSERT INTO notifications (id, tenant_id, user_id, kind, message, dedup_key, \
                 created_at, read_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (user_id, dedup_key) DO NOTHING",
            )
            .bind(n.id.as_uuid())
            .bind(n.tenant_id.as_uuid())
            .bind(n.user_id.as_uuid())
            .bind(&n.kind)
            .bind(&n.message)
            .bind(&n.dedup_key)
            .bind(n.created_at)
            .bind(n.read_at)
            .execute(p)
            .await
            .map_err(db_err)?;
            Ok(r.rows_affected() == 1)
        })
    }

    async fn list_notifications(
        &self,
        tenant: TenantId,
        user: UserId,
        page: &PageRequest,
    ) -> StoreResult<Vec<Notification>> {
        on_pool!(self, p => {
            Ok(fetch_vec!(sqlx::query(
                "SELECT id, tenant_id, user_id, kind, message, dedup_key, created_at, read_at \
                 FROM notifications WHERE tenant_id = $1 AND user_id = $2 \
                 AND ($3 IS NULL OR id < $3) ORDER BY id DESC LIMIT $4"
            )
            .bind(tenant.as_uuid())
            .bind(user.as_uuid())
            .bind(page.cursor)
            .bind(page.fetch_limit()), p, notification_row))
        })
    }

    async fn mark_notification_read(
        &self,
        tenant: TenantId,
        user: UserId,
        id: NotificationId,
        at: Timestamp,
    ) -> StoreResult<bool> {
        on_pool_write!(self, p => {
            let r = sqlx::query(
                "UPDATE notifications SET read_at = $4 \
                 WHERE tenant_id = $1 AND user_id = $2 AND id = $3 AND read_at IS NULL",
            )
            .bind(tenant.as_uuid())
            .bind(user.as_uuid())
            .bind(id.as_uuid())
            .bind(at)
            .execute(p)
            .await
            .map_err(db_err)?;
            Ok(r.rows_affected() == 1)
        })
    }
}
