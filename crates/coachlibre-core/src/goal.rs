//! Goals with key results (the OKRs of the design documents), reminders, and notifications
//! for coaches.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ids::{ConversationId, GoalId, NotificationId, ReminderId, TenantId, UserId};
use crate::{Error, Result, Timestamp};

/// Most key results on one goal.
pub const MAX_KEY_RESULTS: usize = 10;

/// Where a goal stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum GoalStatus {
    Active,
    Achieved,
    Abandoned,
}

impl GoalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Achieved => "achieved",
            Self::Abandoned => "abandoned",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "achieved" => Some(Self::Achieved),
            "abandoned" => Some(Self::Abandoned),
            _ => None,
        }
    }
}

/// A measurable result that tells whether the goal is reached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyResult {
    pub title: String,
    /// The value to reach.
    pub target: f64,
    /// Where the client is now.
    #[serde(default)]
    pub current: f64,
    #[serde(default)]
    pub unit: Option<String>,
}

/// A goal of a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Goal {
    pub id: GoalId,
    pub tenant_id: TenantId,
    pub client_id: UserId,
    pub title: String,
    pub description: String,
    pub status: GoalStatus,
    pub key_results: Vec<KeyResult>,
    pub due_date: Option<chrono::NaiveDate>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

fn check_title(field: &'static str, t: &str) -> Result<String> {
    let t = t.trim();
    if t.is_empty() || t.chars().count() > 200 {
        return Err(Error::invalid(field, "must be 1 to 200 characters"));
    }
    Ok(t.to_owned())
}

fn check_key_results(krs: &[KeyResult]) -> Result<()> {
    if krs.len() > MAX_KEY_RESULTS {
        return Err(Error::invalid(
            "key_results",
            format!("at most {MAX_KEY_RESULTS}"),
        ));
    }
    for kr in krs {
        check_title("key_results.title", &kr.title)?;
        if !(kr.target.is_finite() && kr.current.is_finite()) || kr.target == 0.0 {
            return Err(Error::invalid(
                "key_results.target",
                "target must be a non-zero number and current a number",
            ));
        }
    }
    Ok(())
}

impl Goal {
    pub fn new(
        tenant_id: TenantId,
        client_id: UserId,
        title: &str,
        description: Option<&str>,
        key_results: Vec<KeyResult>,
        due_date: Option<chrono::NaiveDate>,
    ) -> Result<Self> {
        check_key_results(&key_results)?;
        let now = crate::now();
        Ok(Self {
            id: GoalId::generate(),
            tenant_id,
            client_id,
            title: check_title("title", title)?,
            description: description.unwrap_or_default().trim().to_owned(),
            status: GoalStatus::Active,
            key_results,
            due_date,
            created_at: now,
            updated_at: now,
        })
    }

    /// Progress from 0 to 1: the mean of the key results' progress (each capped at 1), or 1
    /// for an achieved goal without key results.
    pub fn progress(&self) -> f64 {
        if self.key_results.is_empty() {
            return if self.status == GoalStatus::Achieved {
                1.0
            } else {
                0.0
            };
        }
        let sum: f64 = self
            .key_results
            .iter()
            .map(|k| (k.current / k.target).clamp(0.0, 1.0))
            .sum();
        sum / self.key_results.len() as f64
    }

    /// Apply an update.
    pub fn update(&mut self, u: GoalUpdate) -> Result<()> {
        if let Some(t) = u.title {
            self.title = check_title("title", &t)?;
        }
        if let Some(d) = u.description {
            self.description = d.trim().to_owned();
        }
        if let Some(s) = u.status {
            self.status = s;
        }
        if let Some(krs) = u.key_results {
            check_key_results(&krs)?;
            self.key_results = krs;
        }
        if let Some((index, current)) = u.key_result_progress {
            let kr = self
                .key_results
                .get_mut(index)
                .ok_or_else(|| Error::invalid("key_result_index", "no key result at this index"))?;
            if !current.is_finite() {
                return Err(Error::invalid("current", "must be a number"));
            }
            kr.current = current;
        }
        if let Some(d) = u.due_date {
            self.due_date = Some(d);
        }
        self.updated_at = crate::now();
        Ok(())
    }
}

/// Changes to a goal.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GoalUpdate {
    pub title: Option<String>,
    pub description: Option<String>,
    pub status: Option<GoalStatus>,
    pub key_results: Option<Vec<KeyResult>>,
    /// Set the current value of one key result: `[index, value]`.
    pub key_result_progress: Option<(usize, f64)>,
    pub due_date: Option<chrono::NaiveDate>,
}

/// What a goal looks like to the API (with its computed progress).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GoalView {
    #[serde(flatten)]
    pub goal: Goal,
    /// 0 to 1.
    pub progress: f64,
}

impl From<Goal> for GoalView {
    fn from(goal: Goal) -> Self {
        let progress = goal.progress();
        Self { goal, progress }
    }
}

/// Where a reminder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReminderStatus {
    /// Waiting for its time (delivered by the job workers).
    Scheduled,
    Sent,
    Cancelled,
}

impl ReminderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Sent => "sent",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "scheduled" => Some(Self::Scheduled),
            "sent" => Some(Self::Sent),
            "cancelled" => Some(Self::Cancelled),
            _ => None,
        }
    }
}

/// A reminder for a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Reminder {
    pub id: ReminderId,
    pub tenant_id: TenantId,
    pub client_id: UserId,
    pub conversation_id: Option<ConversationId>,
    pub text: String,
    pub due_at: chrono::DateTime<chrono::Utc>,
    pub status: ReminderStatus,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl Reminder {
    pub fn new(
        tenant_id: TenantId,
        client_id: UserId,
        conversation_id: Option<ConversationId>,
        text: &str,
        due_at: Timestamp,
    ) -> Result<Self> {
        let text = text.trim();
        if text.is_empty() || text.chars().count() > 500 {
            return Err(Error::invalid("text", "must be 1 to 500 characters"));
        }
        let now = crate::now();
        if due_at <= now {
            return Err(Error::invalid("due_at", "must be in the future"));
        }
        Ok(Self {
            id: ReminderId::generate(),
            tenant_id,
            client_id,
            conversation_id,
            text: text.to_owned(),
            due_at,
            status: ReminderStatus::Scheduled,
            created_at: now,
        })
    }
}

/// Something a coach or admin should know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Notification {
    pub id: NotificationId,
    pub tenant_id: TenantId,
    /// Who it is for.
    pub user_id: UserId,
    /// `budget_exceeded`, `approval_requested`, ...
    pub kind: String,
    pub message: String,
    /// Deduplicates: one notification per key and recipient.
    #[serde(skip)]
    pub dedup_key: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub read_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl Notification {
    pub fn new(
        tenant_id: TenantId,
        user_id: UserId,
        kind: &str,
        message: String,
        dedup_key: String,
    ) -> Self {
        Self {
            id: NotificationId::generate(),
            tenant_id,
            user_id,
            kind: kind.to_owned(),
            message,
            dedup_key,
            created_at: crate::now(),
            read_at: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kr(target: f64, current: f64) -> KeyResult {
        KeyResult {
            title: "km per week".into(),
            target,
            current,
            unit: None,
        }
    }

    #[test]
    fn progress_is_the_mean_of_capped_key_results() {
        let t = TenantId::generate();
        let c = UserId::generate();
        let mut g = Goal::new(t, c, "Run", None, vec![kr(10.0, 5.0), kr(4.0, 8.0)], None).unwrap();
        assert!((g.progress() - 0.75).abs() < 1e-9);
        g.update(GoalUpdate {
            key_result_progress: Some((0, 10.0)),
            ..Default::default()
        })
        .unwrap();
        assert!((g.progress() - 1.0).abs() < 1e-9);
        assert!(
            g.update(GoalUpdate {
                key_result_progress: Some((5, 1.0)),
                ..Default::default()
            })
            .is_err()
        );
        assert!(Goal::new(t, c, "x", None, vec![kr(0.0, 0.0)], None).is_err());
        assert!(Goal::new(t, c, " ", None, vec![], None).is_err());
    }

    #[test]
    fn reminders_must_be_in_the_future() {
        let t = TenantId::generate();
        let c = UserId::generate();
        let past = crate::now() - chrono::Duration::minutes(1);
        assert!(Reminder::new(t, c, None, "stretch", past).is_err());
        let future = crate::now() + chrono::Duration::minutes(1);
        assert!(Reminder::new(t, c, None, "stretch", future).is_ok());
    }
}
