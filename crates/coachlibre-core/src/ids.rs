//! Typed identifiers. Every id is a UUID v7 (time-ordered, so ids double as pagination
//! cursors), wrapped in its own type so a user id can never be passed where a tenant id is
//! expected.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
            serde::Serialize, serde::Deserialize, utoipa::ToSchema,
        )]
        #[serde(transparent)]
        #[schema(value_type = String, format = Uuid)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh, time-ordered id.
            pub fn generate() -> Self {
                Self(Uuid::now_v7())
            }

            /// The underlying UUID.
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(u: Uuid) -> Self {
                Self(u)
            }
        }
    };
}

id_type!(
    /// A tenant: a coaching practice or a school.
    TenantId
);
id_type!(
    /// A person with an account inside a tenant.
    UserId
);
id_type!(
    /// An API key issued to a user for integrations.
    ApiKeyId
);
id_type!(
    /// A stored refresh token.
    RefreshTokenId
);
id_type!(
    /// A chain of refresh tokens descended from one login.
    SessionFamilyId
);
id_type!(
    /// An audit log entry.
    AuditId
);

id_type!(
    /// An AI coach agent.
    AgentId
);
id_type!(
    /// A conversation between a client and an agent.
    ConversationId
);
id_type!(
    /// One message of a conversation.
    MessageId
);
id_type!(
    /// A long-term memory about a client.
    MemoryId
);
id_type!(
    /// A client's goal (an objective with key results).
    GoalId
);
id_type!(
    /// A reminder scheduled for a client.
    ReminderId
);
id_type!(
    /// A sensitive tool call waiting for a coach's decision.
    ApprovalId
);
id_type!(
    /// A notification for a coach or an admin.
    NotificationId
);
id_type!(
    /// A recorded model call (tokens and cost).
    UsageId
);
id_type!(
    /// A collection of a coach's documents.
    CollectionId
);
id_type!(
    /// A document of a collection.
    DocumentId
);
id_type!(
    /// A passage of a document.
    ChunkId
);
id_type!(
    /// A unit of background work in the durable queue.
    JobId
);
id_type!(
    /// A recurring (cron) schedule that enqueues jobs.
    ScheduleId
);
id_type!(
    /// A skill a tenant added to the built-in ones.
    SkillId
);
id_type!(
    /// A business analysis of a company's website.
    AnalysisId
);
id_type!(
    /// A version of a workflow definition.
    WorkflowId
);
id_type!(
    /// One run of a workflow.
    WorkflowRunId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_time_ordered_and_round_trip() {
        let a = UserId::generate();
        let b = UserId::generate();
        assert!(a < b);
        let parsed: UserId = a.to_string().parse().unwrap();
        assert_eq!(parsed, a);
        assert!("not-a-uuid".parse::<UserId>().is_err());
    }
}
