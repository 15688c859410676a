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
use crate::agent::Agent;
use crate::analysis::Analysis;
use crate::audit::AuditEntry;
use crate::conversation::{
    Approval, ApprovalStatus, Conversation, Message, UsageRecord, UsageTotals,
};
use crate::goal::{Goal, Notification, Reminder};
use crate::ids::{
    AgentId, AnalysisId, ApiKeyId, ApprovalId, ChunkId, CollectionId, ConversationId, DocumentId,
    GoalId, JobId, MemoryId, MessageId, NotificationId, RefreshTokenId, ReminderId, ScheduleId,
    SessionFamilyId, TenantId, UserId, WorkflowRunId,
};
use crate::job::{Job, JobFilter, JobStatus, NewJob, Outcome, Progress, Schedule, StoredSkill};
use crate::knowledge::{Chunk, Collection, Document};
use crate::memory::{Memory, Profile};
use crate::page::PageRequest;
use crate::sms::{PhoneNumber, SmsNumber};
use crate::tenant::Tenant;
use crate::user::{Email, MfaState, Role, User};
use crate::workflow::{StoredWorkflow, WorkflowRun};

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

/// Agents.
#[async_trait]
pub trait AgentStore {
    async fn insert_agent(&self, agent: &Agent) -> StoreResult<()>;
    async fn get_agent(&self, tenant: TenantId, id: AgentId) -> StoreResult<Option<Agent>>;
    /// Replace the stored fields of `agent` (matched by tenant and id).
    async fn update_agent(&self, agent: &Agent) -> StoreResult<()>;
    /// Delete an agent and its conversations; false if unknown.
    async fn delete_agent(&self, tenant: TenantId, id: AgentId) -> StoreResult<bool>;
    /// Agents ordered by id. With `visible_to`, only tenant-wide agents, the user's own, and
    /// those of the user's coaches.
    async fn list_agents(
        &self,
        tenant: TenantId,
        visible_to: Option<UserId>,
        page: &PageRequest,
    ) -> StoreResult<Vec<Agent>>;
}

/// Which conversations to list.
#[derive(Debug, Clone, Default)]
pub struct ConversationFilter {
    /// Only this client's.
    pub client_id: Option<UserId>,
    /// Only this coach's own and those of their clients.
    pub coach_id: Option<UserId>,
    pub agent_id: Option<AgentId>,
    pub include_archived: bool,
}

/// Conversations, messages, approvals and usage.
#[async_trait]
pub trait ConversationStore {
    async fn insert_conversation(&self, c: &Conversation) -> StoreResult<()>;
    async fn get_conversation(
        &self,
        tenant: TenantId,
        id: ConversationId,
    ) -> StoreResult<Option<Conversation>>;
    /// Newest activity first is not stable under writes: conversations are ordered by id.
    async fn list_conversations(
        &self,
        tenant: TenantId,
        filter: &ConversationFilter,
        page: &PageRequest,
    ) -> StoreResult<Vec<Conversation>>;
    async fn set_conversation_meta(
        &self,
        tenant: TenantId,
        id: ConversationId,
        title: &str,
        archived: bool,
    ) -> StoreResult<()>;
    async fn set_summary(
        &self,
        tenant: TenantId,
        id: ConversationId,
        summary: &str,
        upto: MessageId,
    ) -> StoreResult<()>;
    async fn delete_conversation(&self, tenant: TenantId, id: ConversationId) -> StoreResult<bool>;
    /// The client's latest unarchived conversation with an agent on a channel.
    async fn latest_conversation(
        &self,
        tenant: TenantId,
        client: UserId,
        agent: AgentId,
        channel: &str,
    ) -> StoreResult<Option<Conversation>>;

    /// Append a message (and touch the conversation).
    async fn insert_message(&self, m: &Message) -> StoreResult<()>;
    /// A message with the usage of the model call that produced it, in one transaction.
    async fn insert_message_with_usage(&self, m: &Message, u: &UsageRecord) -> StoreResult<()>;
    /// Replace a message's content, tool calls, status and token counts.
    async fn update_message(&self, m: &Message) -> StoreResult<()>;
    async fn get_message(&self, tenant: TenantId, id: MessageId) -> StoreResult<Option<Message>>;
    /// Messages oldest first, after the cursor.
    async fn list_messages(
        &self,
        tenant: TenantId,
        conversation: ConversationId,
        page: &PageRequest,
    ) -> StoreResult<Vec<Message>>;
    /// The newest `limit` messages after `after` (all when absent), returned oldest first.
    async fn recent_messages(
        &self,
        tenant: TenantId,
        conversation: ConversationId,
        after: Option<MessageId>,
        limit: i64,
    ) -> StoreResult<Vec<Message>>;
    /// Messages of all the client's conversations containing `text` (case-insensitive),
    /// newest first.
    async fn search_messages(
        &self,
        tenant: TenantId,
        client: UserId,
        text: &str,
        limit: i64,
    ) -> StoreResult<Vec<Message>>;

    async fn insert_approval(&self, a: &Approval) -> StoreResult<()>;
    async fn get_approval(&self, tenant: TenantId, id: ApprovalId)
    -> StoreResult<Option<Approval>>;
    /// Approvals ordered by id; only those of one status and of one coach's clients when given.
    async fn list_approvals(
        &self,
        tenant: TenantId,
        status: Option<ApprovalStatus>,
        coach: Option<UserId>,
        page: &PageRequest,
    ) -> StoreResult<Vec<Approval>>;
    /// Decide a pending approval; false if it was already decided.
    async fn decide_approval(
        &self,
        tenant: TenantId,
        id: ApprovalId,
        status: ApprovalStatus,
        by: UserId,
        at: Timestamp,
    ) -> StoreResult<bool>;
    /// Claim a decided approval for resuming its turn; false if already claimed.
    async fn claim_approval_resume(&self, tenant: TenantId, id: ApprovalId) -> StoreResult<bool>;
    /// Decided approvals whose turn has not resumed yet, in every tenant (recovery at start).
    async fn approvals_to_resume(&self) -> StoreResult<Vec<Approval>>;

    async fn insert_usage(&self, u: &UsageRecord) -> StoreResult<()>;
    /// Tokens and cost of a client with an agent since an instant.
    async fn usage_since(
        &self,
        tenant: TenantId,
        client: UserId,
        agent: AgentId,
        since: Timestamp,
    ) -> StoreResult<UsageTotals>;
}

/// The core profile and archival memories.
#[async_trait]
pub trait MemoryStore {
    /// The client's profile (empty if never set).
    async fn get_profile(&self, tenant: TenantId, client: UserId) -> StoreResult<Profile>;
    async fn put_profile(&self, tenant: TenantId, client: UserId, p: &Profile) -> StoreResult<()>;
    async fn insert_memory(&self, m: &Memory) -> StoreResult<()>;
    /// Replace a memory's kind, key, content, embedding and update time.
    async fn update_memory(&self, m: &Memory) -> StoreResult<()>;
    async fn find_memory_by_key(
        &self,
        tenant: TenantId,
        client: UserId,
        key: &str,
    ) -> StoreResult<Option<Memory>>;
    /// Memories newest first, before the cursor.
    async fn list_memories(
        &self,
        tenant: TenantId,
        client: UserId,
        page: &PageRequest,
    ) -> StoreResult<Vec<Memory>>;
    /// The newest `limit` memories with their embeddings, for similarity ranking.
    async fn memories_for_recall(
        &self,
        tenant: TenantId,
        client: UserId,
        limit: i64,
    ) -> StoreResult<Vec<Memory>>;
    async fn delete_memory(
        &self,
        tenant: TenantId,
        client: UserId,
        id: MemoryId,
    ) -> StoreResult<bool>;
    /// Delete the tenant's memories last updated before `before`; returns how many.
    async fn expire_memories(&self, tenant: TenantId, before: Timestamp) -> StoreResult<u64>;
    /// Days memories are kept in a tenant (absent: forever).
    async fn memory_retention(&self, tenant: TenantId) -> StoreResult<Option<u32>>;
    async fn set_memory_retention(&self, tenant: TenantId, days: Option<u32>) -> StoreResult<()>;
    /// Tenants with a retention period, for the expiry sweep.
    async fn retention_policies(&self) -> StoreResult<Vec<(TenantId, u32)>>;
}

/// Goals, reminders and notifications.
#[async_trait]
pub trait GoalStore {
    async fn insert_goal(&self, g: &Goal) -> StoreResult<()>;
    async fn get_goal(&self, tenant: TenantId, id: GoalId) -> StoreResult<Option<Goal>>;
    async fn update_goal(&self, g: &Goal) -> StoreResult<()>;
    /// The client's goals, oldest first (a client has few).
    async fn list_goals(&self, tenant: TenantId, client: UserId) -> StoreResult<Vec<Goal>>;
    async fn insert_reminder(&self, r: &Reminder) -> StoreResult<()>;
    /// The client's reminders ordered by id.
    async fn list_reminders(
        &self,
        tenant: TenantId,
        client: UserId,
        page: &PageRequest,
    ) -> StoreResult<Vec<Reminder>>;
    /// Insert unless one with the same recipient and dedup key exists; true if inserted.
    async fn insert_notification(&self, n: &Notification) -> StoreResult<bool>;
    /// The user's notifications, newest first.
    async fn list_notifications(
        &self,
        tenant: TenantId,
        user: UserId,
        page: &PageRequest,
    ) -> StoreResult<Vec<Notification>>;
    async fn mark_notification_read(
        &self,
        tenant: TenantId,
        user: UserId,
        id: NotificationId,
        at: Timestamp,
    ) -> StoreResult<bool>;
}

/// The durable job queue and its schedules.
///
/// Claims are atomic: two workers (threads, processes or machines) never hold the same job.
/// Every change a worker makes is conditional on it still holding the job (same worker,
/// still `running`), so a worker whose lease expired cannot overwrite what its successor did.
/// Methods without a tenant are the workers' and the scheduler's, across tenants.
#[async_trait]
pub trait JobStore {
    /// Insert, unless the tenant has a job with the same idempotency key: then that job is
    /// returned and `false`.
    async fn enqueue(&self, job: &NewJob) -> StoreResult<(Job, bool)>;
    /// Insert many in one transaction (keys deduplicate as above); returns how many were new.
    async fn enqueue_many(&self, jobs: &[NewJob]) -> StoreResult<u64>;
    /// Take up to `limit` due jobs, highest priority then earliest first, for `worker` until
    /// `lease_until`; each claim counts an attempt.
    async fn claim_jobs(
        &self,
        worker: &str,
        limit: u32,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> StoreResult<Vec<Job>>;
    /// Extend the lease of every job `worker` holds; returns the ids it still holds (a job
    /// cancelled meanwhile is missing from them).
    async fn heartbeat(&self, worker: &str, lease_until: Timestamp) -> StoreResult<Vec<JobId>>;
    /// Record the outcomes of several attempts in one transaction; returns how many were
    /// still held by `worker` (the others were cancelled or taken over, and are left alone).
    async fn finish_jobs(
        &self,
        worker: &str,
        outcomes: &[(JobId, Outcome)],
        now: Timestamp,
    ) -> StoreResult<u64>;
    /// [`finish_jobs`](Self::finish_jobs) then [`claim_jobs`](Self::claim_jobs) in one
    /// transaction: a worker's whole turn costs one commit.
    async fn finish_and_claim(
        &self,
        worker: &str,
        outcomes: &[(JobId, Outcome)],
        limit: u32,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> StoreResult<Vec<Job>>;
    /// Queue again (or dead-letter, when no attempt is left) the running jobs whose lease
    /// expired before `now`: their worker is gone. Their `last_error` becomes
    /// [`LOST_ATTEMPT`](crate::job::LOST_ATTEMPT), so the next worker can tell. Returns how many.
    async fn reap_expired(&self, now: Timestamp) -> StoreResult<u64>;
    async fn set_job_progress(&self, worker: &str, id: JobId, p: &Progress) -> StoreResult<()>;
    async fn get_job(&self, tenant: TenantId, id: JobId) -> StoreResult<Option<Job>>;
    /// Newest first.
    async fn list_jobs(
        &self,
        tenant: TenantId,
        filter: &JobFilter,
        page: &PageRequest,
    ) -> StoreResult<Vec<Job>>;
    /// Cancel a job that is queued or running; `None` if it does not exist, else the job
    /// after the change (unchanged when it had already finished).
    async fn cancel_job(&self, tenant: TenantId, id: JobId) -> StoreResult<Option<Job>>;
    /// Queue a failed or cancelled job again with fresh attempts; same return as cancel.
    async fn retry_job(
        &self,
        tenant: TenantId,
        id: JobId,
        now: Timestamp,
    ) -> StoreResult<Option<Job>>;
    /// How many of the tenant's jobs are in each status (all tenants with `None`).
    async fn count_jobs(&self, tenant: Option<TenantId>) -> StoreResult<Vec<(JobStatus, u64)>>;
    /// Delete finished jobs that ended before `before`; returns how many.
    async fn purge_jobs(&self, before: Timestamp) -> StoreResult<u64>;

    /// Insert; the same name twice in a tenant is a conflict.
    async fn insert_schedule(&self, s: &Schedule) -> StoreResult<()>;
    async fn list_schedules(&self, tenant: TenantId) -> StoreResult<Vec<Schedule>>;
    async fn delete_schedule(&self, tenant: TenantId, id: ScheduleId) -> StoreResult<bool>;
    /// Enabled schedules due at `now`, across tenants.
    async fn due_schedules(&self, now: Timestamp, limit: u32) -> StoreResult<Vec<Schedule>>;
    /// Move a schedule from `fired` to `next` and enqueue its job, in one transaction; false
    /// (and nothing enqueued) if another scheduler did it first.
    async fn fire_schedule(
        &self,
        id: ScheduleId,
        fired: Timestamp,
        next: Timestamp,
        job: &NewJob,
    ) -> StoreResult<bool>;
    /// Scheduled reminders due at `now`, across tenants, oldest first.
    async fn due_reminders(&self, now: Timestamp, limit: u32) -> StoreResult<Vec<Reminder>>;
    /// Mark a scheduled reminder sent and, in the same transaction, write `message` into its
    /// conversation and enqueue `outbox` (the text that carries it, on the SMS channel);
    /// false (and nothing written) if it was not scheduled any more (sent or cancelled).
    async fn deliver_reminder(
        &self,
        tenant: TenantId,
        id: ReminderId,
        message: Option<&Message>,
        outbox: Option<&NewJob>,
    ) -> StoreResult<bool>;
}

/// Business analyses.
#[async_trait]
pub trait AnalysisStore {
    async fn insert_analysis(&self, a: &Analysis) -> StoreResult<()>;
    /// Everything but the id, tenant and creation.
    async fn update_analysis(&self, a: &Analysis) -> StoreResult<()>;
    async fn get_analysis(&self, tenant: TenantId, id: AnalysisId)
    -> StoreResult<Option<Analysis>>;
    /// Newest first, without their reports; with `created_by`, only theirs.
    async fn list_analyses(
        &self,
        tenant: TenantId,
        created_by: Option<UserId>,
        page: &PageRequest,
    ) -> StoreResult<Vec<Analysis>>;
}

/// Workflow definitions (versioned) and runs.
#[async_trait]
pub trait WorkflowStore {
    /// Store a new version (the caller numbers it: latest + 1; a race is a conflict).
    async fn insert_workflow(&self, w: &StoredWorkflow) -> StoreResult<()>;
    /// The latest version of the tenant's workflow of that name.
    async fn latest_workflow(
        &self,
        tenant: TenantId,
        name: &str,
    ) -> StoreResult<Option<StoredWorkflow>>;
    /// The latest version of each of the tenant's workflows, by name.
    async fn list_workflows(&self, tenant: TenantId) -> StoreResult<Vec<StoredWorkflow>>;
    async fn insert_run(&self, r: &WorkflowRun) -> StoreResult<()>;
    /// Insert a run and enqueue the job that executes it, in one transaction.
    async fn insert_run_with_job(&self, r: &WorkflowRun, job: &NewJob) -> StoreResult<()>;
    /// Status, steps, error, job, times.
    async fn update_run(&self, r: &WorkflowRun) -> StoreResult<()>;
    async fn get_run(
        &self,
        tenant: TenantId,
        id: WorkflowRunId,
    ) -> StoreResult<Option<WorkflowRun>>;
    /// Newest first; with `workflow`, that workflow's runs only.
    async fn list_runs(
        &self,
        tenant: TenantId,
        workflow: Option<&str>,
        page: &PageRequest,
    ) -> StoreResult<Vec<WorkflowRun>>;
}

/// Skills a tenant added.
#[async_trait]
pub trait SkillStore {
    /// Insert or replace the tenant's skill of that name.
    async fn put_skill(&self, s: &StoredSkill) -> StoreResult<()>;
    async fn get_skill(&self, tenant: TenantId, name: &str) -> StoreResult<Option<StoredSkill>>;
    /// By name.
    async fn list_skills(&self, tenant: TenantId) -> StoreResult<Vec<StoredSkill>>;
    async fn delete_skill(&self, tenant: TenantId, name: &str) -> StoreResult<bool>;
}

/// Collections, documents and their chunks.
///
/// Every change to a tenant's chunks (new version ready, document or collection deleted,
/// embeddings replaced) bumps the tenant's knowledge epoch in the same transaction, so a
/// process holding an index in memory knows, with one cheap read, when to reload it.
#[async_trait]
pub trait KnowledgeStore {
    async fn insert_collection(&self, c: &Collection) -> StoreResult<()>;
    async fn get_collection(
        &self,
        tenant: TenantId,
        id: CollectionId,
    ) -> StoreResult<Option<Collection>>;
    /// Name and description.
    async fn update_collection(&self, c: &Collection) -> StoreResult<()>;
    /// Deletes its documents and chunks too (bumping the epoch when it existed).
    async fn delete_collection(&self, tenant: TenantId, id: CollectionId) -> StoreResult<bool>;
    /// Oldest first; with `owner`, only that coach's collections and the tenant's shared
    /// ones (no owner).
    async fn list_collections(
        &self,
        tenant: TenantId,
        owner: Option<UserId>,
        page: &PageRequest,
    ) -> StoreResult<Vec<Collection>>;

    /// A new document with its extracted text.
    async fn insert_document(&self, d: &Document, text: &str) -> StoreResult<()>;
    async fn get_document(&self, tenant: TenantId, id: DocumentId)
    -> StoreResult<Option<Document>>;
    /// The document of this collection with this source (file name or URL).
    async fn find_document(
        &self,
        tenant: TenantId,
        collection: CollectionId,
        source: &str,
    ) -> StoreResult<Option<Document>>;
    /// The stored text of the document's latest upload.
    async fn document_text(&self, tenant: TenantId, id: DocumentId) -> StoreResult<Option<String>>;
    /// Replace a document's metadata and status (and, with `text`, its content).
    async fn update_document(&self, d: &Document, text: Option<&str>) -> StoreResult<()>;
    /// Status and progress only (cheap, for the ingestion loop).
    async fn set_document_progress(&self, d: &Document) -> StoreResult<()>;
    /// Deletes its chunks too (bumping the epoch when it existed).
    async fn delete_document(&self, tenant: TenantId, id: DocumentId) -> StoreResult<bool>;
    /// Oldest first.
    async fn list_documents(
        &self,
        tenant: TenantId,
        collection: CollectionId,
        page: &PageRequest,
    ) -> StoreResult<Vec<Document>>;
    /// Documents of every tenant waiting for (or interrupted in) ingestion.
    async fn documents_to_ingest(&self) -> StoreResult<Vec<Document>>;

    /// In one transaction: replace the document's chunks with `chunks` (embedded by `model`),
    /// store `d` (status ready), bump the epoch.
    async fn replace_chunks(&self, d: &Document, chunks: &[Chunk], model: &str) -> StoreResult<()>;
    async fn get_chunk(&self, tenant: TenantId, id: ChunkId) -> StoreResult<Option<Chunk>>;
    /// The tenant's chunks in id order after `after`, at most `limit` (to load an index).
    async fn chunks_after(
        &self,
        tenant: TenantId,
        after: Option<ChunkId>,
        limit: i64,
    ) -> StoreResult<Vec<Chunk>>;
    /// Chunks of the tenant whose embedding was not made by `model`, at most `limit`.
    async fn chunks_not_embedded_by(
        &self,
        tenant: TenantId,
        model: &str,
        limit: i64,
    ) -> StoreResult<Vec<Chunk>>;
    /// How many chunks (passages) the tenant has.
    async fn count_chunks(&self, tenant: TenantId) -> StoreResult<u64>;
    /// How many of the tenant's chunks were not embedded by `model`.
    async fn count_chunks_not_embedded_by(&self, tenant: TenantId, model: &str)
    -> StoreResult<u64>;
    /// Metadata of the tenant's documents that have some (for search filters).
    async fn document_metadata(
        &self,
        tenant: TenantId,
    ) -> StoreResult<Vec<(DocumentId, serde_json::Map<String, serde_json::Value>)>>;
    /// Store new embeddings (made by `model`) and bump the epoch.
    async fn set_chunk_embeddings(
        &self,
        tenant: TenantId,
        embeddings: &[(ChunkId, Vec<f32>)],
        model: &str,
    ) -> StoreResult<()>;
    /// Counter bumped by every change to the tenant's chunks.
    async fn knowledge_epoch(&self, tenant: TenantId) -> StoreResult<i64>;
}

/// Text messages: clients' phone numbers and the tenant's numbers.
#[async_trait]
pub trait SmsStore {
    /// Set or clear a user's phone number; a number another user of the tenant has is a
    /// [`StoreError::Conflict`], an unknown user [`StoreError::NotFound`].
    async fn set_phone(
        &self,
        tenant: TenantId,
        user: UserId,
        phone: Option<&PhoneNumber>,
    ) -> StoreResult<()>;
    async fn get_phone(&self, tenant: TenantId, user: UserId) -> StoreResult<Option<PhoneNumber>>;
    async fn user_by_phone(
        &self,
        tenant: TenantId,
        phone: &PhoneNumber,
    ) -> StoreResult<Option<UserId>>;
    /// Add one of the tenant's numbers; a number already registered (by any tenant) is a
    /// [`StoreError::Conflict`].
    async fn insert_sms_number(&self, n: &SmsNumber) -> StoreResult<()>;
    /// False if the tenant has no such number.
    async fn delete_sms_number(&self, tenant: TenantId, number: &PhoneNumber) -> StoreResult<bool>;
    /// The tenant's numbers, oldest first.
    async fn list_sms_numbers(&self, tenant: TenantId) -> StoreResult<Vec<SmsNumber>>;
    /// The tenant a number belongs to, across tenants: how an inbound text (addressed to a
    /// number, not to a tenant) finds its tenant.
    async fn find_sms_number(&self, number: &PhoneNumber) -> StoreResult<Option<SmsNumber>>;
    /// The oldest of the tenant's numbers answered by `agent` (its texts leave from it).
    async fn sms_number_for_agent(
        &self,
        tenant: TenantId,
        agent: AgentId,
    ) -> StoreResult<Option<SmsNumber>>;
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
    TenantStore
    + UserStore
    + SessionStore
    + ApiKeyStore
    + AuditStore
    + AgentStore
    + ConversationStore
    + MemoryStore
    + GoalStore
    + KnowledgeStore
    + JobStore
    + SkillStore
    + AnalysisStore
    + WorkflowStore
    + SmsStore
    + SystemStore
    + Send
    + Sync
{
}

impl<T> Store for T where
    T: TenantStore
        + UserStore
        + SessionStore
        + ApiKeyStore
        + AuditStore
        + AgentStore
        + ConversationStore
        + MemoryStore
        + GoalStore
        + KnowledgeStore
        + JobStore
        + SkillStore
        + AnalysisStore
        + WorkflowStore
        + SmsStore
        + SystemStore
        + Send
        + Sync
{
}

/// Every storage trait, to call store methods directly (`use coachlibre_core::store::prelude::*`).
pub mod prelude {
    pub use super::{
        AgentStore, AnalysisStore, ApiKeyStore, AuditStore, ConversationStore, GoalStore, JobStore,
        KnowledgeStore, MemoryStore, SessionStore, SkillStore, SmsStore, Store, SystemStore,
        TenantStore, UserStore,
    };
}
