//! The coaching service: who may see and change agents, conversations, memories, profiles,
//! goals, approvals and notifications, on top of the runtime.
//!
//! Visibility follows the accounts rules: an admin sees the whole tenant; a coach sees their
//! own agents, the tenant's agents, and their clients' conversations and memories; a client
//! sees their own. Anything else is *not found*.

use std::sync::Arc;

use coachlibre_core::actor::Actor;
use coachlibre_core::agent::{Agent, AgentInput};
use coachlibre_core::audit::{AuditEntry, action};
use coachlibre_core::conversation::{
    Approval, ApprovalStatus, Channel, Conversation, Message, parse_title,
};
use coachlibre_core::goal::{GoalView, Notification, Reminder};
use coachlibre_core::ids::{AgentId, ApprovalId, ConversationId, MemoryId, NotificationId, UserId};
use coachlibre_core::memory::{Memory, Profile};
use coachlibre_core::page::{Page, PageRequest};
use coachlibre_core::store::{ConversationFilter, Store};
use coachlibre_core::user::Role;
use coachlibre_core::{Error, Result};
use serde_json::json;
use tokio::sync::mpsc;

use crate::runtime::{Runtime, TurnEvent, TurnRequest};
use crate::tools;

/// Largest retention period an admin may set.
pub const MAX_RETENTION_DAYS: u32 = 36_500;

/// The coaching service.
#[derive(Clone)]
pub struct Coaching {
    store: Arc<dyn Store>,
    runtime: Runtime,
}

impl std::fmt::Debug for Coaching {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Coaching")
    }
}

/// Changes to a conversation.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConversationUpdate {
    #[schema(min_length = 1, max_length = 200, pattern = "\\S")]
    pub title: Option<String>,
    pub archived: Option<bool>,
}

impl Coaching {
    pub fn new(store: Arc<dyn Store>, runtime: Runtime) -> Self {
        Self { store, runtime }
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    async fn audit(&self, actor: &Actor, act: &str, target: impl ToString) -> Result<()> {
        self.store
            .append_audit(
                &AuditEntry::new(Some(actor.tenant_id), Some(actor.user_id), act).target(target),
            )
            .await
            .map_err(Error::from)
    }

    /// Whether `actor` may see what concerns `client`.
    async fn sees_client(&self, actor: &Actor, client: UserId) -> Result<bool> {
        Ok(match actor.role {
            _ if actor.user_id == client => true,
            // Someone of the tenant: an unknown or other tenant's id names nothing.
            Role::Admin => self
                .store
                .get_user(actor.tenant_id, client)
                .await?
                .is_some(),
            Role::Coach => {
                self.store
                    .is_coach_of(actor.tenant_id, actor.user_id, client)
                    .await?
            }
            Role::Client => false,
        })
    }

    async fn require_sees_client(&self, actor: &Actor, client: UserId) -> Result<()> {
        if self.sees_client(actor, client).await? {
            Ok(())
        } else {
            Err(Error::not_found("client"))
        }
    }

    // ----- agents -----

    /// The shipped templates.
    pub fn templates(&self) -> &'static [coachlibre_core::agent::Template] {
        coachlibre_core::agent::TEMPLATES
    }

    pub async fn create_agent(&self, actor: &Actor, input: AgentInput) -> Result<Agent> {
        actor.require_coach()?;
        let owner = match (actor.role, input.owner_id) {
            (Role::Admin, Some(owner)) => {
                let u = self
                    .store
                    .get_user(actor.tenant_id, owner)
                    .await?
                    .ok_or_else(|| Error::not_found("owner"))?;
                if u.role == Role::Client {
                    return Err(Error::invalid(
                        "owner_id",
                        "an agent's owner must be a coach",
                    ));
                }
                Some(owner)
            }
            (Role::Admin, None) => None,
            (_, Some(_)) => {
                return Err(Error::Forbidden(
                    "only an admin may choose an agent's owner".into(),
                ));
            }
            (_, None) => Some(actor.user_id),
        };
        let agent = Agent::create(actor.tenant_id, owner, input, &tools::names())?;
        self.check_collections(&agent).await?;
        self.store.insert_agent(&agent).await?;
        self.audit(actor, action::AGENT_CREATED, agent.id).await?;
        Ok(agent)
    }

    /// An agent answers from its owner's collections and the practice's shared ones (a
    /// tenant agent: shared ones only).
    async fn check_collections(&self, agent: &Agent) -> Result<()> {
        for id in &agent.collections {
            let c = self
                .store
                .get_collection(agent.tenant_id, *id)
                .await?
                .ok_or_else(|| Error::invalid("collections", format!("no collection {id}")))?;
            if c.owner_id.is_some() && c.owner_id != agent.owner_id {
                return Err(Error::invalid(
                    "collections",
                    format!("collection {id} belongs to another coach"),
                ));
            }
        }
        Ok(())
    }

    /// An agent the actor may see (and talk to).
    pub async fn get_agent(&self, actor: &Actor, id: AgentId) -> Result<Agent> {
        let agent = self
            .store
            .get_agent(actor.tenant_id, id)
            .await?
            .ok_or_else(|| Error::not_found("agent"))?;
        let visible = match (actor.role, agent.owner_id) {
            (Role::Admin, _) | (_, None) => true,
            (_, Some(owner)) if owner == actor.user_id => true,
            (Role::Client, Some(owner)) => {
                self.store
                    .is_coach_of(actor.tenant_id, owner, actor.user_id)
                    .await?
            }
            _ => false,
        };
        if visible {
            Ok(agent)
        } else {
            Err(Error::not_found("agent"))
        }
    }

    /// An agent the actor may change: its owner, or an admin.
    async fn owned_agent(&self, actor: &Actor, id: AgentId) -> Result<Agent> {
        let agent = self.get_agent(actor, id).await?;
        if actor.role == Role::Admin || agent.owner_id == Some(actor.user_id) {
            Ok(agent)
        } else {
            Err(Error::Forbidden(
                "only the agent's owner or an admin may change it".into(),
            ))
        }
    }

    pub async fn list_agents(&self, actor: &Actor, page: &PageRequest) -> Result<Page<Agent>> {
        let visible_to = (actor.role != Role::Admin).then_some(actor.user_id);
        let rows = self
            .store
            .list_agents(actor.tenant_id, visible_to, page)
            .await?;
        Ok(Page::from_rows(rows, page, |a| a.id.as_uuid()))
    }

    pub async fn update_agent(
        &self,
        actor: &Actor,
        id: AgentId,
        input: AgentInput,
    ) -> Result<Agent> {
        if input.template.is_some() || input.owner_id.is_some() {
            return Err(Error::invalid(
                "template",
                "template and owner_id are set at creation only",
            ));
        }
        let mut agent = self.owned_agent(actor, id).await?;
        agent.apply(input, &tools::names())?;
        self.check_collections(&agent).await?;
        self.store.update_agent(&agent).await?;
        self.audit(actor, action::AGENT_UPDATED, agent.id).await?;
        Ok(agent)
    }

    pub async fn delete_agent(&self, actor: &Actor, id: AgentId) -> Result<()> {
        let agent = self.owned_agent(actor, id).await?;
        self.store.delete_agent(actor.tenant_id, agent.id).await?;
        self.audit(actor, action::AGENT_DELETED, agent.id).await
    }

    // ----- conversations -----

    /// Start a conversation between the actor (as the client) and an agent they may see.
    pub async fn create_conversation(
        &self,
        actor: &Actor,
        agent: AgentId,
        channel: Channel,
        title: Option<&str>,
    ) -> Result<Conversation> {
        let agent = self.get_agent(actor, agent).await?;
        let c = Conversation::new(actor.tenant_id, actor.user_id, agent.id, channel, title)?;
        self.store.insert_conversation(&c).await?;
        Ok(c)
    }

    pub async fn get_conversation(
        &self,
        actor: &Actor,
        id: ConversationId,
    ) -> Result<Conversation> {
        let c = self
            .store
            .get_conversation(actor.tenant_id, id)
            .await?
            .ok_or_else(|| Error::not_found("conversation"))?;
        if self.sees_client(actor, c.client_id).await? {
            Ok(c)
        } else {
            Err(Error::not_found("conversation"))
        }
    }

    /// A conversation the actor takes part in (as its client), or any for an admin.
    async fn own_conversation(&self, actor: &Actor, id: ConversationId) -> Result<Conversation> {
        let c = self.get_conversation(actor, id).await?;
        if c.client_id == actor.user_id || actor.role == Role::Admin {
            Ok(c)
        } else {
            Err(Error::Forbidden(
                "only the conversation's client may do this".into(),
            ))
        }
    }

    pub async fn list_conversations(
        &self,
        actor: &Actor,
        agent: Option<AgentId>,
        include_archived: bool,
        page: &PageRequest,
    ) -> Result<Page<Conversation>> {
        let mut filter = ConversationFilter {
            agent_id: agent,
            include_archived,
            ..Default::default()
        };
        match actor.role {
            Role::Admin => {}
            Role::Coach => filter.coach_id = Some(actor.user_id),
            Role::Client => filter.client_id = Some(actor.user_id),
        }
        let rows = self
            .store
            .list_conversations(actor.tenant_id, &filter, page)
            .await?;
        Ok(Page::from_rows(rows, page, |c| c.id.as_uuid()))
    }

    /// One client's conversations, for themselves or someone who may see that client.
    pub async fn client_conversations(
        &self,
        actor: &Actor,
        client: UserId,
        include_archived: bool,
        page: &PageRequest,
    ) -> Result<Page<Conversation>> {
        self.require_sees_client(actor, client).await?;
        let filter = ConversationFilter {
            client_id: Some(client),
            include_archived,
            ..Default::default()
        };
        let rows = self
            .store
            .list_conversations(actor.tenant_id, &filter, page)
            .await?;
        Ok(Page::from_rows(rows, page, |c| c.id.as_uuid()))
    }

    pub async fn update_conversation(
        &self,
        actor: &Actor,
        id: ConversationId,
        update: ConversationUpdate,
    ) -> Result<Conversation> {
        let mut c = self.own_conversation(actor, id).await?;
        if let Some(t) = update.title {
            c.title = parse_title(&t)?;
        }
        if let Some(a) = update.archived {
            c.archived = a;
        }
        self.store
            .set_conversation_meta(actor.tenant_id, id, &c.title, c.archived)
            .await?;
        self.get_conversation(actor, id).await
    }

    pub async fn delete_conversation(&self, actor: &Actor, id: ConversationId) -> Result<()> {
        let c = self.own_conversation(actor, id).await?;
        self.store
            .delete_conversation(actor.tenant_id, c.id)
            .await?;
        Ok(())
    }

    pub async fn list_messages(
        &self,
        actor: &Actor,
        id: ConversationId,
        page: &PageRequest,
    ) -> Result<Page<Message>> {
        let c = self.get_conversation(actor, id).await?;
        let rows = self
            .store
            .list_messages(actor.tenant_id, c.id, page)
            .await?;
        Ok(Page::from_rows(rows, page, |m| m.id.as_uuid()))
    }

    /// Check everything a turn needs before streaming starts (so that refusals are plain
    /// 4xx answers), then start it.
    pub async fn send_message(
        &self,
        actor: &Actor,
        id: ConversationId,
        text: &str,
    ) -> Result<mpsc::Receiver<TurnEvent>> {
        let req = self.prepare_turn(actor, id, text, None).await?;
        Ok(self.runtime.start(req))
    }

    /// The checked request of a turn.
    pub async fn prepare_turn(
        &self,
        actor: &Actor,
        id: ConversationId,
        text: &str,
        history: Option<Vec<coachlibre_core::model::ChatMessage>>,
    ) -> Result<TurnRequest> {
        let conversation = self.get_conversation(actor, id).await?;
        if conversation.client_id != actor.user_id {
            return Err(Error::Forbidden(
                "only the conversation's client may send messages".into(),
            ));
        }
        if conversation.archived {
            return Err(Error::Conflict(
                "this conversation is archived; unarchive it to continue".into(),
            ));
        }
        coachlibre_core::conversation::parse_user_message(text)?;
        let agent = self
            .store
            .get_agent(actor.tenant_id, conversation.agent_id)
            .await?
            .ok_or_else(|| Error::not_found("agent"))?;
        Ok(TurnRequest {
            conversation,
            agent,
            text: text.to_owned(),
            history,
            params: None,
            instruction: false,
            message_id: None,
        })
    }

    /// The client's latest open conversation with an agent on a channel, or a new one.
    pub async fn conversation_for(
        &self,
        actor: &Actor,
        agent: AgentId,
        channel: Channel,
    ) -> Result<Conversation> {
        let agent = self.get_agent(actor, agent).await?;
        if let Some(c) = self
            .store
            .latest_conversation(actor.tenant_id, actor.user_id, agent.id, channel.as_str())
            .await?
        {
            return Ok(c);
        }
        self.create_conversation(actor, agent.id, channel, None)
            .await
    }

    // ----- memory -----

    pub async fn list_memories(
        &self,
        actor: &Actor,
        client: UserId,
        page: &PageRequest,
    ) -> Result<Page<Memory>> {
        self.require_sees_client(actor, client).await?;
        let rows = self
            .store
            .list_memories(actor.tenant_id, client, page)
            .await?;
        Ok(Page::from_rows(rows, page, |m| m.id.as_uuid()))
    }

    /// The client deletes what is remembered about them (an admin may too).
    pub async fn delete_memory(&self, actor: &Actor, client: UserId, id: MemoryId) -> Result<()> {
        if actor.user_id != client && actor.role != Role::Admin {
            self.require_sees_client(actor, client).await?;
            return Err(Error::Forbidden(
                "only the client (or an admin) may delete their memories".into(),
            ));
        }
        if !self
            .store
            .delete_memory(actor.tenant_id, client, id)
            .await?
        {
            return Err(Error::not_found("memory"));
        }
        self.audit(actor, action::MEMORY_DELETED, id).await
    }

    pub async fn get_profile(&self, actor: &Actor, client: UserId) -> Result<Profile> {
        self.require_sees_client(actor, client).await?;
        Ok(self.store.get_profile(actor.tenant_id, client).await?)
    }

    pub async fn put_profile(
        &self,
        actor: &Actor,
        client: UserId,
        profile: Profile,
    ) -> Result<Profile> {
        self.require_sees_client(actor, client).await?;
        profile.validate()?;
        self.store
            .put_profile(actor.tenant_id, client, &profile)
            .await?;
        self.audit(actor, action::PROFILE_UPDATED, client).await?;
        Ok(profile)
    }

    /// Admins set how long memories are kept (`None`: forever).
    pub async fn set_retention(&self, actor: &Actor, days: Option<u32>) -> Result<()> {
        actor.require_admin()?;
        if let Some(d) = days
            && !(1..=MAX_RETENTION_DAYS).contains(&d)
        {
            return Err(Error::invalid(
                "days",
                format!("must be between 1 and {MAX_RETENTION_DAYS}"),
            ));
        }
        self.store
            .set_memory_retention(actor.tenant_id, days)
            .await?;
        self.store
            .append_audit(
                &AuditEntry::new(
                    Some(actor.tenant_id),
                    Some(actor.user_id),
                    action::RETENTION_CHANGED,
                )
                .detail(json!({ "days": days })),
            )
            .await?;
        Ok(())
    }

    pub async fn retention(&self, actor: &Actor) -> Result<Option<u32>> {
        actor.require_coach()?;
        Ok(self.store.memory_retention(actor.tenant_id).await?)
    }

    // ----- goals and reminders -----

    pub async fn list_goals(&self, actor: &Actor, client: UserId) -> Result<Vec<GoalView>> {
        self.require_sees_client(actor, client).await?;
        Ok(self
            .store
            .list_goals(actor.tenant_id, client)
            .await?
            .into_iter()
            .map(GoalView::from)
            .collect())
    }

    pub async fn list_reminders(
        &self,
        actor: &Actor,
        client: UserId,
        page: &PageRequest,
    ) -> Result<Page<Reminder>> {
        self.require_sees_client(actor, client).await?;
        let rows = self
            .store
            .list_reminders(actor.tenant_id, client, page)
            .await?;
        Ok(Page::from_rows(rows, page, |r| r.id.as_uuid()))
    }

    // ----- approvals and notifications -----

    pub async fn list_approvals(
        &self,
        actor: &Actor,
        status: Option<ApprovalStatus>,
        page: &PageRequest,
    ) -> Result<Page<Approval>> {
        actor.require_coach()?;
        let coach = (actor.role != Role::Admin).then_some(actor.user_id);
        let rows = self
            .store
            .list_approvals(actor.tenant_id, status, coach, page)
            .await?;
        Ok(Page::from_rows(rows, page, |a| a.id.as_uuid()))
    }

    /// Approve or reject a waiting call; the turn then resumes in the background.
    pub async fn decide(&self, actor: &Actor, id: ApprovalId, approve: bool) -> Result<Approval> {
        let approval = self
            .store
            .get_approval(actor.tenant_id, id)
            .await?
            .ok_or_else(|| Error::not_found("approval"))?;
        if !self.sees_client(actor, approval.client_id).await? {
            return Err(Error::not_found("approval"));
        }
        if actor.role == Role::Client {
            return Err(Error::Forbidden(
                "only the client's coach or an admin may decide".into(),
            ));
        }
        let status = if approve {
            ApprovalStatus::Approved
        } else {
            ApprovalStatus::Rejected
        };
        if !self
            .store
            .decide_approval(
                actor.tenant_id,
                id,
                status,
                actor.user_id,
                coachlibre_core::now(),
            )
            .await?
        {
            return Err(Error::Conflict("this call was already decided".into()));
        }
        let act = if approve {
            action::TOOL_APPROVED
        } else {
            action::TOOL_REJECTED
        };
        self.audit(actor, act, id).await?;
        let decided = self
            .store
            .get_approval(actor.tenant_id, id)
            .await?
            .ok_or_else(|| Error::not_found("approval"))?;
        let runtime = self.runtime.clone();
        let resumed = decided.clone();
        tokio::spawn(async move {
            if let Err(e) = runtime.resume(&resumed).await {
                tracing::warn!(approval = %resumed.id, error = %e, "resume failed; retried at next start");
            }
        });
        Ok(decided)
    }

    pub async fn list_notifications(
        &self,
        actor: &Actor,
        page: &PageRequest,
    ) -> Result<Page<Notification>> {
        let rows = self
            .store
            .list_notifications(actor.tenant_id, actor.user_id, page)
            .await?;
        Ok(Page::from_rows(rows, page, |n| n.id.as_uuid()))
    }

    pub async fn mark_read(&self, actor: &Actor, id: NotificationId) -> Result<()> {
        if self
            .store
            .mark_notification_read(actor.tenant_id, actor.user_id, id, coachlibre_core::now())
            .await?
        {
            Ok(())
        } else {
            Err(Error::not_found("notification"))
        }
    }
}

/// Delete memories past each tenant's retention period; returns how many.
pub async fn expire_memories(store: &dyn Store) -> Result<u64> {
    let mut total = 0;
    for (tenant, days) in store.retention_policies().await? {
        let before = coachlibre_core::now() - chrono::Duration::days(i64::from(days));
        total += store.expire_memories(tenant, before).await?;
    }
    Ok(total)
}
