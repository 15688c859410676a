//! Text messages: clients' phone numbers, the tenant's numbers (each answered by one agent),
//! and the outbound message as a job, so that a text leaves at least once even if the process
//! stops between deciding to send it and sending it.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::conversation::{Channel, Conversation, Message};
use crate::ids::{AgentId, ConversationId, MessageId, TenantId};
use crate::job::NewJob;
use crate::store::{Store, StoreResult};
use crate::{Error, Result};

/// The job kind that sends one text through the gateway.
pub const SEND: &str = "sms.send";
/// The job kind that answers a client's text with an agent's turn.
pub const REPLY: &str = "sms.reply";
/// Longest text sent: gateways split a long text into up to ten segments (1,600 characters).
pub const MAX_BODY_CHARS: usize = 1600;

/// A phone number in E.164 form: `+`, then 8 to 15 digits, the first not 0.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(transparent)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    /// Validate a number written with its country code; spaces, dots, dashes and parentheses
    /// are dropped, and a leading `00` stands for `+`.
    pub fn parse(s: &str) -> Result<Self> {
        Self::parse_field("phone", s)
    }

    /// [`PhoneNumber::parse`], naming `field` in the error.
    pub fn parse_field(field: &'static str, s: &str) -> Result<Self> {
        let bad = || {
            Error::invalid(
                field,
                "must be an international number with its country code, like +33612345678",
            )
        };
        let compact: String = s
            .trim()
            .chars()
            .filter(|c| !matches!(c, ' ' | '.' | '-' | '(' | ')' | '\u{a0}'))
            .collect();
        let digits = compact
            .strip_prefix('+')
            .or_else(|| compact.strip_prefix("00"))
            .ok_or_else(bad)?;
        let ok = (8..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        if !ok {
            return Err(bad());
        }
        Ok(Self(format!("+{digits}")))
    }

    /// Rebuild from storage (validated when written).
    pub fn from_trusted(s: String) -> Self {
        Self(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One of the tenant's numbers: texts to it are answered by `agent_id`, and that agent's
/// texts (answers, reminders) leave from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct SmsNumber {
    pub number: PhoneNumber,
    pub tenant_id: TenantId,
    pub agent_id: AgentId,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// What an [`SEND`] job sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendPayload {
    pub from: String,
    pub to: String,
    pub body: String,
    /// The conversation message it carries, when there is one.
    #[serde(default)]
    pub message_id: Option<MessageId>,
}

/// What an [`REPLY`] job answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyPayload {
    pub conversation_id: ConversationId,
    /// The client's text.
    pub text: String,
    /// Where the answer goes, and from which of the tenant's numbers.
    pub to: String,
    pub from: String,
    /// The id the client's text is stored under (chosen when it arrives, so that a retried
    /// reply finds it stored and does not store it twice).
    #[serde(default)]
    pub message_id: Option<MessageId>,
}

/// `body` cut to [`MAX_BODY_CHARS`] characters (an ellipsis marks a cut).
pub fn clip_body(body: &str) -> String {
    let body = body.trim();
    if body.chars().count() <= MAX_BODY_CHARS {
        return body.to_owned();
    }
    let mut out: String = body.chars().take(MAX_BODY_CHARS - 1).collect();
    out.push('…');
    out
}

/// The job that texts `body` from `from` to `to`; `key` makes it once-only (a retried caller
/// enqueues the same key, and the queue keeps the first).
pub fn send_job(
    tenant: TenantId,
    from: &PhoneNumber,
    to: &PhoneNumber,
    body: &str,
    message_id: Option<MessageId>,
    key: String,
) -> NewJob {
    let payload = SendPayload {
        from: from.as_str().to_owned(),
        to: to.as_str().to_owned(),
        body: clip_body(body),
        message_id,
    };
    // A payload of strings and ids always serialises.
    let payload = serde_json::to_value(payload).unwrap_or_default();
    NewJob::new(tenant, SEND, payload).priority(10).key(key)
}

/// The text that carries an agent's `message` to the client when its conversation is on the
/// SMS channel, the client has a phone number and the agent one of the tenant's numbers
/// (keyed by the message, so enqueuing it twice sends it once); `None` otherwise.
pub async fn text_for(
    store: &dyn Store,
    conversation: &Conversation,
    message: &Message,
) -> StoreResult<Option<NewJob>> {
    if conversation.channel != Channel::Sms || message.content.trim().is_empty() {
        return Ok(None);
    }
    let tenant = conversation.tenant_id;
    let Some(to) = store.get_phone(tenant, conversation.client_id).await? else {
        tracing::warn!(client = %conversation.client_id, "an SMS conversation's client has no phone number: not texted");
        return Ok(None);
    };
    let Some(from) = store
        .sms_number_for_agent(tenant, conversation.agent_id)
        .await?
    else {
        tracing::warn!(agent = %conversation.agent_id, "an SMS conversation's agent has no number: not texted");
        return Ok(None);
    };
    Ok(Some(text_of(tenant, &from.number, &to, message)))
}

/// The text that carries `message` from `from` to `to`, keyed by the message (enqueuing it
/// twice sends it once).
pub fn text_of(
    tenant: TenantId,
    from: &PhoneNumber,
    to: &PhoneNumber,
    message: &Message,
) -> NewJob {
    send_job(
        tenant,
        from,
        to,
        &message.content,
        Some(message.id),
        format!("sms:{}", message.id),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_normalised_to_e164() {
        for (input, want) in [
            ("+33 6 12 34 56 78", "+33612345678"),
            ("0033612345678", "+33612345678"),
            ("+1 (415) 555-0100", "+14155550100"),
            (" +44.20.7946.0958 ", "+442079460958"),
        ] {
            assert_eq!(PhoneNumber::parse(input).unwrap().as_str(), want, "{input}");
        }
        for bad in [
            "",
            "0612345678",
            "+0612345678",
            "+33",
            "+336123456789012345",
            "+33 6 12 AB",
            "++33612345678",
        ] {
            assert!(PhoneNumber::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn long_bodies_are_clipped_and_send_jobs_carry_their_key() {
        assert_eq!(clip_body("  hi "), "hi");
        let long = "é".repeat(2000);
        let clipped = clip_body(&long);
        assert_eq!(clipped.chars().count(), MAX_BODY_CHARS);
        assert!(clipped.ends_with('…'));
        let (a, b) = (
            PhoneNumber::parse("+33612345678").unwrap(),
            PhoneNumber::parse("+33698765432").unwrap(),
        );
        let job = send_job(TenantId::generate(), &a, &b, "hello", None, "k1".into());
        assert_eq!(job.kind, SEND);
        assert_eq!(job.idempotency_key.as_deref(), Some("k1"));
        let p: SendPayload = serde_json::from_value(job.payload.clone()).unwrap();
        assert_eq!(
            (p.from.as_str(), p.to.as_str()),
            ("+33612345678", "+33698765432")
        );
        assert_eq!(p.body, "hello");
        assert!(job.validate().is_ok());
    }
}
