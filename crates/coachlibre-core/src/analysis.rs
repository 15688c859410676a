//! Business analyses: a company's website read by the business-intelligence skills, one
//! section each, aggregated into one report.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ids::{AnalysisId, JobId, TenantId, UserId};

/// Where an analysis stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AnalysisStatus {
    Queued,
    Running,
    /// Every section written.
    Done,
    /// Some sections failed; the report says which.
    Partial,
    /// Nothing could be produced (site unreachable, refused by robots.txt, every skill failed).
    Failed,
}

impl AnalysisStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Done => "done",
            Self::Partial => "partial",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Queued,
            Self::Running,
            Self::Done,
            Self::Partial,
            Self::Failed,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }

    /// A report exists.
    pub fn has_report(self) -> bool {
        matches!(self, Self::Done | Self::Partial)
    }
}

/// One skill's part of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AnalysisSection {
    pub skill: String,
    /// Written (true) or failed (false, with `error`).
    pub ok: bool,
    pub text: Option<String>,
    pub error: Option<String>,
}

/// An analysis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Analysis {
    pub id: AnalysisId,
    pub tenant_id: TenantId,
    pub created_by: Option<UserId>,
    pub url: String,
    /// Named from the site (its title), else its host.
    pub company: String,
    pub status: AnalysisStatus,
    /// The job running it; follow its progress at `/api/v1/jobs/{id}/events`.
    pub job_id: Option<JobId>,
    pub sections: Vec<AnalysisSection>,
    /// The aggregated report (Markdown) once done or partial.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<String>,
    pub error: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
}
