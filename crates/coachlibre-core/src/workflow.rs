//! Workflows: a DAG of steps stored per tenant and versioned, and the state of each run.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ids::{JobId, TenantId, UserId, WorkflowId, WorkflowRunId};

/// A stored version of a workflow definition (the definition is JSON; the workflows crate
/// parses and checks it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StoredWorkflow {
    pub id: WorkflowId,
    pub tenant_id: TenantId,
    pub name: String,
    /// 1 for the first definition, then one more per change.
    pub version: u32,
    pub definition: serde_json::Value,
    pub created_by: Option<UserId>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Where a run or a step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
    /// Not run: a condition before it was false, or a step it needs failed.
    Skipped,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Running,
            Self::Succeeded,
            Self::Failed,
            Self::Skipped,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }

    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Skipped)
    }
}

/// What happened to one step of a run.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
pub struct StepState {
    pub status: Option<RunStatus>,
    pub attempts: u32,
    pub input: Option<serde_json::Value>,
    pub output: Option<serde_json::Value>,
    pub error: Option<String>,
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// One run of a workflow version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowRun {
    pub id: WorkflowRunId,
    pub tenant_id: TenantId,
    pub workflow: String,
    pub version: u32,
    /// The definition it runs (a later version does not change a run under way).
    pub definition: serde_json::Value,
    pub status: RunStatus,
    /// `api`, `cli`, `schedule`, ...
    pub trigger: String,
    pub input: serde_json::Value,
    pub steps: BTreeMap<String, StepState>,
    pub error: Option<String>,
    pub job_id: Option<JobId>,
    pub created_by: Option<UserId>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
}
