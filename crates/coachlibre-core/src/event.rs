//! Things that happen in a tenant that workflows can start on: a client's message, a goal
//! achieved, a document ready to be cited. Services publish them to an [`EventSink`]; the
//! server's sink starts the workflows that listen (see `coachlibre-workflows`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ids::TenantId;

/// The kinds of events a workflow can listen to (its `on` list).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A client sent a message to an agent. Data: `client_id`, `conversation_id`, `agent_id`,
    /// `message_id`, `text`.
    MessageReceived,
    /// A goal became achieved. Data: `client_id`, `agent_id`, `goal_id`, `title`,
    /// `conversation_id`.
    GoalCompleted,
    /// A document finished ingestion. Data: `collection_id`, `document_id`, `title`,
    /// `chunks`.
    DocumentReady,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MessageReceived => "message_received",
            Self::GoalCompleted => "goal_completed",
            Self::DocumentReady => "document_ready",
        }
    }
}

/// One event of one tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub tenant: TenantId,
    pub kind: EventKind,
    pub data: serde_json::Value,
}

/// Where services publish events. Publishing never fails the action that caused it: a sink
/// logs what it could not do.
#[async_trait::async_trait]
pub trait EventSink: Send + Sync + std::fmt::Debug {
    async fn publish(&self, event: Event);
}

/// A place for a sink set after the service that publishes was built (services are built
/// before the workflows that listen); clones share it.
#[derive(Debug, Clone, Default)]
pub struct EventSlot(std::sync::Arc<std::sync::OnceLock<std::sync::Arc<dyn EventSink>>>);

impl EventSlot {
    /// Set the sink (the first one set stays).
    pub fn set(&self, sink: std::sync::Arc<dyn EventSink>) {
        let _ = self.0.set(sink);
    }

    /// Publish to the sink, if one is set.
    pub async fn publish(&self, tenant: TenantId, kind: EventKind, data: serde_json::Value) {
        if let Some(sink) = self.0.get() {
            sink.publish(Event { tenant, kind, data }).await;
        }
    }
}
