//! The built-in job kinds.

use async_trait::async_trait;
use coachlibre_core::conversation::Message;
use coachlibre_core::goal::Notification;
use coachlibre_core::ids::{ConversationId, ReminderId, UserId};
use coachlibre_core::job::{Job, NewJob};
use coachlibre_core::model::ChatRole;
use coachlibre_core::sms;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{Handler, JobContext, JobError};

/// Delivers a due reminder.
pub const REMINDER: &str = "reminder.deliver";
/// Checks the queue end to end: does nothing, or sleeps, reports progress, or fails on demand.
pub const PROBE: &str = "system.probe";

/// The payload of a [`REMINDER`] job (written by the scheduler from the reminder's row).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReminderPayload {
    pub reminder_id: ReminderId,
    pub client_id: UserId,
    pub conversation_id: Option<ConversationId>,
    pub text: String,
}

/// Writes the reminder into its conversation (so the agent sees what was sent, and the client
/// reads it in the conversation whatever its channel) and notifies the client, once. On the
/// SMS channel it is also texted: the text is enqueued (an `sms.send` job) in the same
/// transaction that marks the reminder sent, so it is neither lost nor sent twice.
#[derive(Debug)]
pub struct DeliverReminder;

#[async_trait]
impl Handler for DeliverReminder {
    /// Small work on trusted data: a lost attempt is run again.
    fn rerun_after_crash(&self) -> bool {
        true
    }

    async fn run(&self, ctx: &JobContext, job: &Job) -> Result<serde_json::Value, JobError> {
        let p: ReminderPayload = serde_json::from_value(job.payload.clone())
            .map_err(|e| JobError::Permanent(format!("bad reminder payload: {e}")))?;
        let text = format!("Reminder: {}", p.text);
        let message = p
            .conversation_id
            .map(|c| Message::new(job.tenant_id, c, ChatRole::Assistant, text.clone()));
        let outbox = match &message {
            Some(m) => sms_for(ctx, job, m)
                .await
                .map_err(|e| JobError::Retry(e.to_string()))?,
            None => None,
        };
        let delivered = ctx
            .store
            .deliver_reminder(
                job.tenant_id,
                p.reminder_id,
                message.as_ref(),
                outbox.as_ref(),
            )
            .await
            .map_err(|e| JobError::Retry(e.to_string()))?;
        if delivered {
            let n = Notification::new(
                job.tenant_id,
                p.client_id,
                "reminder",
                text,
                format!("reminder:{}", p.reminder_id),
            );
            ctx.store
                .insert_notification(&n)
                .await
                .map_err(|e| JobError::Retry(e.to_string()))?;
        }
        Ok(json!({
            "delivered": delivered,
            "message_id": message.filter(|_| delivered).map(|m| m.id),
            "texted": delivered && outbox.is_some(),
        }))
    }
}

/// The text that carries a reminder's `message`, when its conversation is on the SMS channel
/// (see [`sms::text_for`]).
async fn sms_for(
    ctx: &JobContext,
    job: &Job,
    message: &Message,
) -> coachlibre_core::store::StoreResult<Option<NewJob>> {
    match ctx
        .store
        .get_conversation(job.tenant_id, message.conversation_id)
        .await?
    {
        Some(conversation) => sms::text_for(ctx.store.as_ref(), &conversation, message).await,
        None => Ok(None),
    }
}

/// What a [`PROBE`] job should do; every field is optional (`{}` is a no-op).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProbePayload {
    /// Sleep this long (at most ten minutes), in `steps` steps reporting progress.
    #[serde(default)]
    sleep_ms: u64,
    #[serde(default)]
    steps: Option<u64>,
    /// `retry` or `permanent`: fail that way.
    #[serde(default)]
    fail: Option<String>,
}

#[derive(Debug)]
pub struct Probe;

#[async_trait]
impl Handler for Probe {
    /// Small work on trusted data: a lost attempt is run again.
    fn rerun_after_crash(&self) -> bool {
        true
    }

    async fn run(&self, ctx: &JobContext, job: &Job) -> Result<serde_json::Value, JobError> {
        let p: ProbePayload = if job.payload.is_null() {
            ProbePayload::default()
        } else {
            serde_json::from_value(job.payload.clone())
                .map_err(|e| JobError::Permanent(format!("bad probe payload: {e}")))?
        };
        let total = p.sleep_ms.min(600_000);
        let steps = p.steps.unwrap_or(1).clamp(1, 1000);
        if total > 0 {
            for i in 1..=steps {
                tokio::time::sleep(std::time::Duration::from_millis(total / steps)).await;
                if p.steps.is_some() {
                    ctx.progress(i, Some(steps), format!("step {i} of {steps}"))
                        .await;
                }
            }
        }
        match p.fail.as_deref() {
            Some("retry") => Err(JobError::Retry("the probe was asked to fail".into())),
            Some("permanent") => Err(JobError::Permanent("the probe was asked to fail".into())),
            Some(other) => Err(JobError::Permanent(format!(
                "fail must be 'retry' or 'permanent', not '{other}'"
            ))),
            None => Ok(json!({"ok": true, "attempt": job.attempts})),
        }
    }
}
