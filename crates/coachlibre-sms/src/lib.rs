//! Text messages (SMS) as a channel of conversation.
//!
//! - A user has at most one phone number (E.164, unique in the tenant); a client's coach, an
//!   admin or the user sets it.
//! - A tenant registers its numbers (admins), each answered by one agent.
//! - An inbound text (the gateway's signed webhook) is matched to its tenant by the number it
//!   was sent to and to the client by the number it came from; it is answered by an
//!   [`coachlibre_core::sms::REPLY`] job that runs the agent's turn in the client's SMS
//!   conversation. The webhook answers at once; the turn may take longer than the gateway
//!   waits.
//! - Every outbound text (an answer, a reminder) is an [`coachlibre_core::sms::SEND`] job with
//!   an idempotency key, enqueued in the same transaction as what it carries where possible:
//!   a text is sent at least once, retried with backoff while the gateway is down, and
//!   dead-lettered (visible in `coachlibre jobs list`) when the gateway refuses it.

pub mod gateway;

use std::sync::Arc;

use async_trait::async_trait;
use coachlibre_agent::{Runtime, TurnEvent, TurnRequest};
use coachlibre_core::accounts::Accounts;
use coachlibre_core::actor::{Actor, Scope};
use coachlibre_core::audit::{AuditEntry, action};
use coachlibre_core::conversation::{Channel, Conversation};
use coachlibre_core::ids::{AgentId, JobId, MessageId, UserId};
use coachlibre_core::job::{Job, NewJob};
use coachlibre_core::model::ChatRole;
use coachlibre_core::sms::{self, PhoneNumber, ReplyPayload, SendPayload, SmsNumber};
use coachlibre_core::store::{Store, StoreError};
use coachlibre_core::user::Role;
use coachlibre_core::{Error, Result};
use coachlibre_jobs::{Handler, JobContext, JobError, Jobs};
use serde_json::{Value, json};

pub use gateway::{Gateway, SendError, Twilio, twilio_signature, verify_twilio};

/// An inbound text, as the gateway's webhook gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    pub from: String,
    pub to: String,
    pub body: String,
    /// The gateway's id of the message (a retried webhook repeats it).
    pub message_sid: String,
}

/// What became of an inbound text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// The answer is on its way: the reply job.
    Queued { job_id: JobId },
    /// The sender is none of the tenant's clients: nothing was stored.
    UnknownSender,
    /// A text without words (a picture alone, say): nothing to answer.
    Empty,
}

/// The SMS service: phone numbers, the tenant's numbers, inbound texts.
#[derive(Clone)]
pub struct Sms {
    store: Arc<dyn Store>,
    accounts: Accounts,
    jobs: Jobs,
}

impl std::fmt::Debug for Sms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sms").finish_non_exhaustive()
    }
}

impl Sms {
    pub fn new(store: Arc<dyn Store>, jobs: Jobs) -> Self {
        Self {
            accounts: Accounts::new(store.clone()),
            store,
            jobs,
        }
    }

    async fn audit(&self, actor: &Actor, what: &str, target: String, detail: Value) -> Result<()> {
        let mut entry =
            AuditEntry::new(Some(actor.tenant_id), Some(actor.user_id), what).target(target);
        if !detail.is_null() {
            entry = entry.detail(detail);
        }
        Ok(self.store.append_audit(&entry).await?)
    }

    /// A user's phone number; visible to whoever sees the user.
    pub async fn phone(&self, actor: &Actor, user: UserId) -> Result<Option<PhoneNumber>> {
        let user = self.accounts.get_user(actor, user).await?;
        Ok(self.store.get_phone(actor.tenant_id, user.id).await?)
    }

    /// Set (or clear, with `None`) a user's phone number: the user themself, their coach or
    /// an admin.
    pub async fn set_phone(
        &self,
        actor: &Actor,
        user: UserId,
        phone: Option<&str>,
    ) -> Result<Option<PhoneNumber>> {
        actor.require_scope(Scope::Write)?;
        let user = self.accounts.get_user(actor, user).await?;
        let phone = phone
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(PhoneNumber::parse)
            .transpose()?;
        self.store
            .set_phone(actor.tenant_id, user.id, phone.as_ref())
            .await
            .map_err(|e| match e {
                StoreError::Conflict(_) => Error::Conflict(
                    "another user of this organisation has this phone number".into(),
                ),
                other => other.into(),
            })?;
        self.audit(
            actor,
            action::PHONE_CHANGED,
            user.id.to_string(),
            json!({"set": phone.is_some()}),
        )
        .await?;
        Ok(phone)
    }

    /// The tenant's numbers (coaches and admins).
    pub async fn numbers(&self, actor: &Actor) -> Result<Vec<SmsNumber>> {
        actor.require_coach()?;
        Ok(self.store.list_sms_numbers(actor.tenant_id).await?)
    }

    /// Register one of the tenant's numbers, answered by `agent` (admins).
    pub async fn add_number(
        &self,
        actor: &Actor,
        number: &str,
        agent: AgentId,
    ) -> Result<SmsNumber> {
        actor.require_admin()?;
        let number = PhoneNumber::parse_field("number", number)?;
        let n = SmsNumber {
            number,
            tenant_id: actor.tenant_id,
            agent_id: agent,
            created_at: coachlibre_core::now(),
        };
        self.store
            .insert_sms_number(&n)
            .await
            .map_err(|e| match e {
                StoreError::NotFound => Error::not_found("agent"),
                StoreError::Conflict(_) => Error::Conflict(format!(
                    "{} is already registered here, or is not available on this server (the \
                     server's operator can tell why)",
                    n.number
                )),
                other => other.into(),
            })?;
        self.audit(
            actor,
            action::SMS_NUMBER_ADDED,
            n.number.to_string(),
            json!({"agent_id": agent}),
        )
        .await?;
        Ok(n)
    }

    /// Remove one of the tenant's numbers (admins); texts to it are no longer answered.
    pub async fn remove_number(&self, actor: &Actor, number: &str) -> Result<()> {
        actor.require_admin()?;
        let number = PhoneNumber::parse(number).map_err(|_| Error::not_found("number"))?;
        if !self
            .store
            .delete_sms_number(actor.tenant_id, &number)
            .await?
        {
            return Err(Error::not_found("number"));
        }
        self.audit(
            actor,
            action::SMS_NUMBER_REMOVED,
            number.to_string(),
            Value::Null,
        )
        .await?;
        Ok(())
    }

    /// An inbound text, its signature already checked: find the tenant by the number it was
    /// sent to, the client by the number it came from, their SMS conversation with the
    /// number's agent (or a new one), and queue the answer. A webhook the gateway retries
    /// (same message id) queues nothing more.
    pub async fn receive(&self, text: &Inbound) -> Result<Received> {
        let to =
            PhoneNumber::parse(&text.to).map_err(|_| Error::invalid("To", "not a phone number"))?;
        let from = PhoneNumber::parse(&text.from)
            .map_err(|_| Error::invalid("From", "not a phone number"))?;
        let sid_ok = !text.message_sid.is_empty()
            && text.message_sid.len() <= 64
            && text.message_sid.bytes().all(|b| b.is_ascii_alphanumeric());
        if !sid_ok {
            return Err(Error::invalid(
                "MessageSid",
                "must be 1 to 64 letters or digits",
            ));
        }
        let number = self
            .store
            .find_sms_number(&to)
            .await?
            .ok_or_else(|| Error::not_found("number"))?;
        let tenant = number.tenant_id;
        let Some(client) = self.store.user_by_phone(tenant, &from).await? else {
            tracing::info!(%tenant, number = %to, "a text from a number no client has: ignored");
            return Ok(Received::UnknownSender);
        };
        let Some(user) = self.store.get_user(tenant, client).await? else {
            return Ok(Received::UnknownSender);
        };
        if user.role != Role::Client {
            tracing::info!(%tenant, user = %client, "a text from a user who is not a client: ignored");
            return Ok(Received::UnknownSender);
        }
        let body = text.body.trim();
        if body.is_empty() {
            return Ok(Received::Empty);
        }
        coachlibre_core::conversation::parse_user_message(body)?;
        let conversation = match self
            .store
            .latest_conversation(tenant, client, number.agent_id, Channel::Sms.as_str())
            .await?
            .filter(|c| !c.archived)
        {
            Some(c) => c,
            None => {
                let c = Conversation::new(
                    tenant,
                    client,
                    number.agent_id,
                    Channel::Sms,
                    Some("Texts"),
                )?;
                self.store.insert_conversation(&c).await?;
                c
            }
        };
        let payload = ReplyPayload {
            conversation_id: conversation.id,
            text: body.to_owned(),
            to: from.as_str().to_owned(),
            from: to.as_str().to_owned(),
            message_id: Some(MessageId::generate()),
        };
        let job = NewJob::new(tenant, sms::REPLY, json!(payload))
            .by(client)
            .priority(10)
            .key(format!("sms-in:{}", text.message_sid));
        let (job, _) = self.jobs.enqueue(job).await?;
        Ok(Received::Queued { job_id: job.id })
    }
}

/// The [`sms::SEND`] handler: one text through the gateway.
#[derive(Debug, Clone)]
pub struct SendSms(pub Option<Arc<dyn Gateway>>);

#[async_trait]
impl Handler for SendSms {
    /// Small work on trusted data: a lost attempt is run again.
    fn rerun_after_crash(&self) -> bool {
        true
    }

    async fn run(&self, _ctx: &JobContext, job: &Job) -> std::result::Result<Value, JobError> {
        let text: SendPayload = serde_json::from_value(job.payload.clone())
            .map_err(|e| JobError::Permanent(format!("bad sms.send payload: {e}")))?;
        let Some(gateway) = &self.0 else {
            return Err(JobError::Permanent(
                "no SMS gateway is configured (set sms.account_sid and sms.auth_token), so the text was not sent"
                    .into(),
            ));
        };
        match gateway.send(&text).await {
            Ok(sid) => Ok(json!({"sid": sid, "to": text.to})),
            Err(SendError::Retry(e)) => Err(JobError::Retry(e)),
            Err(SendError::Permanent(e)) => Err(JobError::Permanent(e)),
        }
    }
}

/// The [`sms::REPLY`] handler: the agent's turn on the client's text, then the answer texted
/// back (an [`sms::SEND`] job keyed by the answer's message, so it leaves once).
#[derive(Clone)]
pub struct ReplySms(pub Runtime);

impl std::fmt::Debug for ReplySms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplySms").finish_non_exhaustive()
    }
}

#[async_trait]
impl Handler for ReplySms {
    /// Small work on trusted data: a lost attempt is run again.
    fn rerun_after_crash(&self) -> bool {
        true
    }

    /// A client who texted waits for the answer.
    fn serves_a_person(&self) -> bool {
        true
    }

    async fn run(&self, ctx: &JobContext, job: &Job) -> std::result::Result<Value, JobError> {
        let p: ReplyPayload = serde_json::from_value(job.payload.clone())
            .map_err(|e| JobError::Permanent(format!("bad sms.reply payload: {e}")))?;
        let retry = |e: StoreError| JobError::Retry(e.to_string());
        let tenant = job.tenant_id;
        let conversation = ctx
            .store
            .get_conversation(tenant, p.conversation_id)
            .await
            .map_err(retry)?
            .ok_or_else(|| JobError::Permanent("the conversation was deleted".into()))?;
        let agent = ctx
            .store
            .get_agent(tenant, conversation.agent_id)
            .await
            .map_err(retry)?
            .ok_or_else(|| JobError::Permanent("the conversation's agent was deleted".into()))?;
        let (from, to) = match (PhoneNumber::parse(&p.from), PhoneNumber::parse(&p.to)) {
            (Ok(f), Ok(t)) => (f, t),
            _ => {
                return Err(JobError::Permanent(
                    "bad phone numbers in the payload".into(),
                ));
            }
        };
        // A retry after the turn got going (the process stopped, say): the client's text is
        // stored; text the answer it got, if any, rather than answering twice.
        if job.attempts > 1
            && let Some(asked) = p.message_id
        {
            let after = ctx
                .store
                .recent_messages(tenant, conversation.id, Some(asked), 50)
                .await
                .map_err(retry)?;
            if !after.is_empty() {
                let answer = after.iter().rev().find(|m| {
                    m.role == ChatRole::Assistant
                        && m.tool_calls.is_empty()
                        && !m.content.trim().is_empty()
                });
                let Some(answer) = answer else {
                    return Ok(json!({"answered_before": true, "texted": false}));
                };
                let send = sms::text_of(tenant, &from, &to, answer);
                ctx.store.enqueue(&send).await.map_err(retry)?;
                return Ok(
                    json!({"message_id": answer.id, "answered_before": true, "texted": true}),
                );
            }
        }
        let mut rx = self.0.start(TurnRequest {
            conversation,
            agent,
            text: p.text,
            history: None,
            params: None,
            instruction: false,
            message_id: p.message_id,
        });
        let (mut message_id, mut finish) = (None, None);
        while let Some(ev) = rx.recv().await {
            match ev {
                TurnEvent::Done {
                    message_id: id,
                    finish: f,
                    ..
                } => {
                    message_id = Some(id);
                    finish = Some(f);
                }
                TurnEvent::Error { code, message } => {
                    // The model failed (what it wrote is kept, marked): not retried, which
                    // would text that partial answer.
                    return Err(JobError::Permanent(format!(
                        "the turn failed ({code}): {message}"
                    )));
                }
                _ => {}
            }
        }
        let message_id = message_id
            .ok_or_else(|| JobError::Permanent("the turn ended without an answer".into()))?;
        let answer = ctx
            .store
            .get_message(tenant, message_id)
            .await
            .map_err(retry)?
            .filter(|m| !m.content.trim().is_empty());
        let Some(answer) = answer else {
            return Ok(json!({"message_id": message_id, "finish": finish, "texted": false}));
        };
        let (sent, _) = ctx
            .store
            .enqueue(&sms::text_of(tenant, &from, &to, &answer))
            .await
            .map_err(retry)?;
        Ok(json!({
            "message_id": message_id,
            "finish": finish,
            "texted": true,
            "send_job_id": sent.id,
        }))
    }
}
