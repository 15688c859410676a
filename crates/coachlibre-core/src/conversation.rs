//! Conversations between a client and an agent, their messages, the sensitive tool calls that
//! wait for a coach, and the usage every model call records.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ids::{
    AgentId, ApprovalId, ChunkId, CollectionId, ConversationId, DocumentId, MessageId, TenantId,
    UsageId, UserId,
};
use crate::model::{ChatRole, ToolCall};
use crate::{Error, Result, Timestamp};

/// Longest user message accepted in one turn.
pub const MAX_MESSAGE_CHARS: usize = 16_000;

/// How the client reaches the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Web,
    Sms,
    Api,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Web => "web",
            Self::Sms => "sms",
            Self::Api => "api",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "web" => Some(Self::Web),
            "sms" => Some(Self::Sms),
            "api" => Some(Self::Api),
            _ => None,
        }
    }
}

/// A conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Conversation {
    pub id: ConversationId,
    pub tenant_id: TenantId,
    /// The person the agent talks with.
    pub client_id: UserId,
    pub agent_id: AgentId,
    pub channel: Channel,
    pub title: String,
    /// Rolling summary of the turns that no longer fit the prompt's window.
    pub summary: String,
    /// The last message folded into `summary`.
    #[serde(skip)]
    pub summary_upto: Option<MessageId>,
    pub archived: bool,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

impl Conversation {
    pub fn new(
        tenant_id: TenantId,
        client_id: UserId,
        agent_id: AgentId,
        channel: Channel,
        title: Option<&str>,
    ) -> Result<Self> {
        let now = crate::now();
        Ok(Self {
            id: ConversationId::generate(),
            tenant_id,
            client_id,
            agent_id,
            channel,
            title: parse_title(title.unwrap_or("New conversation"))?,
            summary: String::new(),
            summary_upto: None,
            archived: false,
            created_at: now,
            updated_at: now,
        })
    }
}

/// Validate a conversation title.
pub fn parse_title(title: &str) -> Result<String> {
    let t = title.trim();
    if t.is_empty() || t.chars().count() > 200 {
        return Err(Error::invalid("title", "must be 1 to 200 characters"));
    }
    Ok(t.to_owned())
}

/// Where a message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    /// Written in full.
    Complete,
    /// Generation stopped early (the client disconnected, or the model failed midway): the
    /// text is what was generated before.
    Partial,
    /// An assistant message whose tool calls wait for a coach's approval.
    AwaitingApproval,
}

impl MessageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Complete => "complete",
            Self::Partial => "partial",
            Self::AwaitingApproval => "awaiting_approval",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "complete" => Some(Self::Complete),
            "partial" => Some(Self::Partial),
            "awaiting_approval" => Some(Self::AwaitingApproval),
            _ => None,
        }
    }
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Message {
    pub id: MessageId,
    pub tenant_id: TenantId,
    pub conversation_id: ConversationId,
    pub role: ChatRole,
    pub content: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    pub status: MessageStatus,
    /// Tokens of the model calls that produced this message (assistant messages).
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// The passages of the coach's material the answer is grounded in (assistant messages).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub citations: Vec<Citation>,
}

/// A passage of the coach's material an answer is grounded in; `index` is the number the
/// answer cites it by, like `[1]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Citation {
    pub index: usize,
    pub chunk_id: ChunkId,
    pub document_id: DocumentId,
    pub collection_id: CollectionId,
    /// The document's title.
    pub title: String,
    /// The headings above the passage.
    pub heading: String,
    /// Byte span of the passage in the document's text.
    pub start: i64,
    pub end: i64,
    pub text: String,
}

impl Message {
    pub fn new(
        tenant_id: TenantId,
        conversation_id: ConversationId,
        role: ChatRole,
        content: impl Into<String>,
    ) -> Self {
        Self {
            id: MessageId::generate(),
            tenant_id,
            conversation_id,
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
            status: MessageStatus::Complete,
            prompt_tokens: 0,
            completion_tokens: 0,
            created_at: crate::now(),
            citations: Vec::new(),
        }
    }
}

/// Validate what a client sends in a turn.
pub fn parse_user_message(text: &str) -> Result<&str> {
    let t = text.trim();
    if t.is_empty() {
        return Err(Error::invalid("content", "must not be empty"));
    }
    if t.chars().count() > MAX_MESSAGE_CHARS {
        return Err(Error::invalid(
            "content",
            format!("at most {MAX_MESSAGE_CHARS} characters"),
        ));
    }
    Ok(t)
}

/// The state of a sensitive tool call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalStatus {
    Pending,
    /// Approved; the turn is resuming or has resumed.
    Approved,
    Rejected,
}

impl ApprovalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "approved" => Some(Self::Approved),
            "rejected" => Some(Self::Rejected),
            _ => None,
        }
    }
}

/// A sensitive tool call waiting for (or decided by) a coach.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Approval {
    pub id: ApprovalId,
    pub tenant_id: TenantId,
    pub conversation_id: ConversationId,
    /// The assistant message that made the call.
    pub message_id: MessageId,
    pub client_id: UserId,
    pub agent_id: AgentId,
    pub tool_call: ToolCall,
    pub status: ApprovalStatus,
    pub decided_by: Option<UserId>,
    /// True once the turn has continued after the decision.
    pub resumed: bool,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub decided_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// One model call's consumption, for budgets and reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageRecord {
    pub id: UsageId,
    pub tenant_id: TenantId,
    pub client_id: UserId,
    pub agent_id: AgentId,
    pub conversation_id: Option<ConversationId>,
    pub model: String,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub cost_usd: f64,
    pub estimated: bool,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Totals over a period.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, ToSchema)]
pub struct UsageTotals {
    pub tokens: u64,
    pub cost_usd: f64,
}

/// The first instant of the calendar month (UTC) containing `at`.
pub fn month_start(at: Timestamp) -> Timestamp {
    use chrono::{Datelike, TimeZone};
    chrono::Utc
        .with_ymd_and_hms(at.year(), at.month(), 1, 0, 0, 0)
        .single()
        .unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn month_start_is_the_first_at_midnight() {
        let t: Timestamp = "2026-11-21T13:45:00Z".parse().unwrap();
        assert_eq!(month_start(t).to_rfc3339(), "2026-11-01T00:00:00+00:00");
    }

    #[test]
    fn user_messages_are_trimmed_and_bounded() {
        assert_eq!(parse_user_message("  hi ").unwrap(), "hi");
        assert!(parse_user_message("   ").is_err());
        assert!(parse_user_message(&"x".repeat(MAX_MESSAGE_CHARS + 1)).is_err());
    }
}
