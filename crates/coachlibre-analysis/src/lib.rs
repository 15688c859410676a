//! Business analysis (seed 001's data flow): `POST /api/v1/analysis {url}` creates an analysis
//! and a job; the job fetches the site (robots.txt respected, size and time limits, HTML to
//! text), runs the business-intelligence skills in parallel, and aggregates their sections
//! into one report, exported as Markdown, PDF and XLSX. A skill that fails leaves its section
//! marked missing, with the reason, and the analysis `partial`; a retried job keeps the
//! sections already written.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use coachlibre_core::accounts::By;
use coachlibre_core::analysis::{Analysis, AnalysisSection, AnalysisStatus};
use coachlibre_core::ids::AnalysisId;
use coachlibre_core::job::{Job, NewJob};
use coachlibre_core::page::{Page, PageRequest};
use coachlibre_core::store::Store;
use coachlibre_core::{Error, Result};
use coachlibre_export::{Report, Table};
use coachlibre_jobs::{Handler, JobContext, JobError, Jobs};
use coachlibre_knowledge::extract::Format;
use coachlibre_knowledge::fetch;
use coachlibre_skills::Catalog;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

/// Runs analyses.
pub const RUN: &str = "analysis.run";
/// How CoachLibre names itself to web servers (and in robots.txt rules).
pub const USER_AGENT: &str = "CoachLibre";
/// Largest page read.
const MAX_PAGE_BYTES: usize = 2 * 1024 * 1024;
/// The site text given to each skill (a small model's context is short).
const MAX_SITE_CHARS: usize = 6_000;
/// Skills run at once (the embedded model serves one request at a time anyway).
const PARALLEL: usize = 4;
/// Longest a skill may take.
const SKILL_TIMEOUT: Duration = Duration::from_secs(600);

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Markdown,
    Pdf,
    Xlsx,
}

impl ExportFormat {
    /// From a file name: `report.md`, `report.pdf`, `report.xlsx`.
    pub fn of_file(name: &str) -> Option<Self> {
        match name {
            "report.md" => Some(Self::Markdown),
            "report.pdf" => Some(Self::Pdf),
            "report.xlsx" => Some(Self::Xlsx),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Markdown => "text/markdown; charset=utf-8",
            Self::Pdf => "application/pdf",
            Self::Xlsx => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Self::Markdown => "md",
            Self::Pdf => "pdf",
            Self::Xlsx => "xlsx",
        }
    }
}

/// The payload of a [`RUN`] job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunPayload {
    pub analysis_id: AnalysisId,
}

/// Analyses as the API sees them.
#[derive(Clone)]
pub struct Analyses {
    store: Arc<dyn Store>,
    jobs: Jobs,
}

impl std::fmt::Debug for Analyses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Analyses")
    }
}

impl Analyses {
    pub fn new(store: Arc<dyn Store>, jobs: Jobs) -> Self {
        Self { store, jobs }
    }

    /// Start analysing `url` (coaches and admins): the analysis, queued with its job.
    pub async fn start(&self, by: By<'_>, url: &str) -> Result<Analysis> {
        if let By::Actor(a) = by {
            a.require_coach()?;
        }
        by.require_write()?;
        let parsed = fetch::parse_url(url)?;
        let now = coachlibre_core::now();
        let host = parsed
            .host_str()
            .unwrap_or_default()
            .trim_start_matches("www.");
        let a = Analysis {
            id: AnalysisId::generate(),
            tenant_id: by.tenant(),
            created_by: by.actor_id(),
            url: parsed.to_string(),
            company: host.to_owned(),
            status: AnalysisStatus::Queued,
            // Chosen before the job is queued: a worker may load the analysis before this
            // call returns, and must see it.
            job_id: Some(coachlibre_core::ids::JobId::generate()),
            sections: Vec::new(),
            report: None,
            error: None,
            created_at: now,
            updated_at: now,
            finished_at: None,
        };
        self.store.insert_analysis(&a).await?;
        let payload = serde_json::to_value(RunPayload { analysis_id: a.id })
            .map_err(|e| Error::Internal(e.to_string()))?;
        let mut job = NewJob::new(a.tenant_id, RUN, payload)
            .max_attempts(3)
            .key(format!("analysis:{}", a.id));
        job.id = a.job_id;
        job.created_by = a.created_by;
        self.jobs.enqueue(job).await?;
        Ok(a)
    }

    /// Admins see every analysis, coaches their own.
    pub async fn get(&self, by: By<'_>, id: AnalysisId) -> Result<Analysis> {
        let a = self
            .store
            .get_analysis(by.tenant(), id)
            .await?
            .ok_or_else(|| Error::not_found("analysis"))?;
        if by.sees_all() || a.created_by.is_some_and(|u| by.actor_id() == Some(u)) {
            Ok(a)
        } else {
            Err(Error::not_found("analysis"))
        }
    }

    pub async fn list(&self, by: By<'_>, page: &PageRequest) -> Result<Page<Analysis>> {
        let mine = (!by.sees_all()).then(|| by.actor_id()).flatten();
        if !by.sees_all() && mine.is_none() {
            return Ok(Page::from_rows(Vec::new(), page, |a: &Analysis| {
                a.id.as_uuid()
            }));
        }
        let rows = self.store.list_analyses(by.tenant(), mine, page).await?;
        Ok(Page::from_rows(rows, page, |a| a.id.as_uuid()))
    }

    /// The report in a format: bytes and a file name.
    pub async fn export(
        &self,
        by: By<'_>,
        id: AnalysisId,
        format: ExportFormat,
    ) -> Result<(Vec<u8>, String)> {
        let a = self.get(by, id).await?;
        if !a.status.has_report() {
            return Err(Error::Conflict(format!(
                "the analysis is {}; its report is not ready",
                a.status.as_str()
            )));
        }
        let report = report_of(&a);
        let bytes = match format {
            ExportFormat::Markdown => coachlibre_export::to_markdown(&report).into_bytes(),
            ExportFormat::Pdf => coachlibre_export::to_pdf(&report),
            ExportFormat::Xlsx => {
                coachlibre_export::to_xlsx(&report).map_err(|e| Error::Internal(e.to_string()))?
            }
        };
        let slug: String = a
            .company
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        Ok((bytes, format!("analysis-{slug}.{}", format.extension())))
    }
}

/// A skill's name as a heading: `business-model-extractor` → `Business model extractor`.
fn title_of_skill(name: &str) -> String {
    let words = name.replace('-', " ");
    let mut c = words.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

/// Headings of a section one level down (the section's own title is the `##`).
fn demote(text: &str) -> String {
    text.lines()
        .map(|l| {
            if l.trim_start().starts_with('#') {
                format!("#{}", l.trim_start())
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The aggregated Markdown of the sections.
fn aggregate(a: &Analysis) -> String {
    let ok = a.sections.iter().filter(|s| s.ok).count();
    let mut md = format!(
        "Analysis of {} by {} skills: {ok} written, {} missing.\n\n",
        a.url,
        a.sections.len(),
        a.sections.len() - ok
    );
    for s in &a.sections {
        md.push_str(&format!("## {}\n\n", title_of_skill(&s.skill)));
        match (&s.text, &s.error) {
            (Some(t), _) if s.ok => md.push_str(&demote(t.trim())),
            (_, e) => md.push_str(&format!(
                "_Missing: this section could not be written ({})._",
                e.as_deref().unwrap_or("unknown error")
            )),
        }
        md.push_str("\n\n");
    }
    let missing: Vec<&AnalysisSection> = a.sections.iter().filter(|s| !s.ok).collect();
    if !missing.is_empty() {
        md.push_str("## What is missing\n\n");
        for s in missing {
            md.push_str(&format!(
                "- {}: {}\n",
                s.skill,
                s.error.as_deref().unwrap_or("unknown error")
            ));
        }
    }
    md
}

/// The exportable report of an analysis.
pub fn report_of(a: &Analysis) -> Report {
    Report {
        title: format!("Business analysis: {}", a.company),
        subtitle: Some(format!(
            "{} · {}",
            a.url,
            a.finished_at
                .unwrap_or(a.updated_at)
                .format("%Y-%m-%d %H:%M UTC")
        )),
        markdown: a.report.clone().unwrap_or_else(|| aggregate(a)),
        tables: vec![Table {
            name: "Skills".into(),
            headers: vec!["Skill".into(), "Status".into(), "Error".into()],
            rows: a
                .sections
                .iter()
                .map(|s| {
                    vec![
                        s.skill.clone(),
                        if s.ok { "written" } else { "missing" }.into(),
                        s.error.clone().unwrap_or_default(),
                    ]
                })
                .collect(),
        }],
    }
}

/// The [`RUN`] job handler.
#[derive(Clone)]
pub struct RunAnalysis {
    catalog: Catalog,
    http: reqwest::Client,
    allow_private: bool,
    skills: Vec<String>,
}

impl std::fmt::Debug for RunAnalysis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunAnalysis")
            .field("skills", &self.skills)
            .finish()
    }
}

impl RunAnalysis {
    /// With the built-in business-intelligence skills; `allow_private` lets it fetch sites on
    /// private networks (as `knowledge.allow_private_urls`).
    pub fn new(catalog: Catalog, allow_private: bool) -> Self {
        let http = fetch::client(
            &format!("{USER_AGENT}/{}", env!("CARGO_PKG_VERSION")),
            Duration::from_secs(20),
        );
        Self {
            catalog,
            http,
            allow_private,
            skills: coachlibre_skills::builtin::BUSINESS_INTELLIGENCE
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
        }
    }

    /// The site's text and its name, or why it cannot be read.
    async fn read_site(&self, url: &str) -> Result<(String, Option<String>)> {
        let parsed = fetch::parse_url(url)?;
        let mut robots_url = parsed.clone();
        robots_url.set_path("/robots.txt");
        robots_url.set_query(None);
        // No robots.txt (or an unreadable one) means no rules.
        if let Ok(r) = fetch::get(&self.http, robots_url, self.allow_private, 512 * 1024).await {
            let text = String::from_utf8_lossy(&r.bytes);
            if !fetch::robots_allows(&text, USER_AGENT, parsed.path()) {
                return Err(Error::Forbidden(format!(
                    "the site's robots.txt does not allow {USER_AGENT} to read {}",
                    parsed.path()
                )));
            }
        }
        let page = fetch::get(&self.http, parsed, self.allow_private, MAX_PAGE_BYTES).await?;
        let format = Format::detect(&page.bytes, page.content_type.as_deref(), page.url.path())
            .unwrap_or(Format::Html);
        let text = coachlibre_knowledge::sandbox::read(page.bytes, format)
            .await
            .map_err(|e| Error::invalid("url", format!("the page could not be read: {e}")))?;
        let title = coachlibre_core::knowledge::title_of(&text, "");
        let title = (!title.is_empty()).then_some(title);
        let mut end = text.len().min(MAX_SITE_CHARS);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        Ok((text[..end].to_owned(), title))
    }
}

#[async_trait]
impl Handler for RunAnalysis {
    async fn run(
        &self,
        ctx: &JobContext,
        job: &Job,
    ) -> std::result::Result<serde_json::Value, JobError> {
        let p: RunPayload = serde_json::from_value(job.payload.clone())
            .map_err(|e| JobError::Permanent(format!("bad analysis payload: {e}")))?;
        let store = ctx.store.clone();
        let retry = |e: coachlibre_core::store::StoreError| JobError::Retry(e.to_string());
        let mut a = store
            .get_analysis(job.tenant_id, p.analysis_id)
            .await
            .map_err(retry)?
            .ok_or_else(|| JobError::Permanent("the analysis was deleted".into()))?;
        a.status = AnalysisStatus::Running;
        a.updated_at = coachlibre_core::now();
        store.update_analysis(&a).await.map_err(retry)?;
        let total = u64::try_from(self.skills.len()).unwrap_or(0) + 1;
        ctx.progress(0, Some(total), format!("reading {}", a.url))
            .await;

        let (site_text, title) = match self.read_site(&a.url).await {
            Ok(site) => site,
            Err(e) => {
                // The site cannot be read: nothing to analyse (a network error is retried).
                let message = e.to_string();
                let permanent = !matches!(e, Error::Internal(_));
                a.status = AnalysisStatus::Failed;
                a.error = Some(message.clone());
                a.finished_at = Some(coachlibre_core::now());
                a.updated_at = coachlibre_core::now();
                store.update_analysis(&a).await.map_err(retry)?;
                return Err(if permanent {
                    JobError::Permanent(message)
                } else {
                    JobError::Retry(message)
                });
            }
        };
        if let Some(t) = title {
            a.company = t.chars().take(120).collect();
        }
        ctx.progress(1, Some(total), "site read; running the skills")
            .await;

        // Sections already written by an earlier attempt are kept.
        let done: Vec<String> = a
            .sections
            .iter()
            .filter(|s| s.ok)
            .map(|s| s.skill.clone())
            .collect();
        a.sections.retain(|s| s.ok);
        let input = serde_json::json!({"company": a.company, "url": a.url, "site_text": site_text});
        let mut pending: Vec<String> = self
            .skills
            .iter()
            .filter(|s| !done.contains(s))
            .cloned()
            .collect();
        let mut running = JoinSet::new();
        let mut finished = u64::try_from(done.len()).unwrap_or(0) + 1;
        loop {
            while running.len() < PARALLEL
                && let Some(skill) = pending.pop()
            {
                let catalog = self.catalog.clone();
                let (tenant, input) = (job.tenant_id, input.clone());
                running.spawn(coachlibre_core::model::Priority::carry(async move {
                    let out =
                        tokio::time::timeout(SKILL_TIMEOUT, catalog.run(tenant, &skill, &input))
                            .await;
                    match out {
                        Ok(Ok(o)) => AnalysisSection {
                            skill: skill.clone(),
                            ok: true,
                            text: Some(o.text),
                            error: None,
                        },
                        Ok(Err(e)) => AnalysisSection {
                            skill: skill.clone(),
                            ok: false,
                            text: None,
                            error: Some(e.to_string()),
                        },
                        Err(_) => AnalysisSection {
                            skill: skill.clone(),
                            ok: false,
                            text: None,
                            error: Some(format!("timed out after {} s", SKILL_TIMEOUT.as_secs())),
                        },
                    }
                }));
            }
            let Some(next) = running.join_next().await else {
                break;
            };
            let section = match next {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "an analysis skill task failed");
                    continue;
                }
            };
            finished += 1;
            ctx.progress(
                finished,
                Some(total),
                format!(
                    "{} {}",
                    section.skill,
                    if section.ok { "written" } else { "failed" }
                ),
            )
            .await;
            a.sections.push(section);
            a.updated_at = coachlibre_core::now();
            store.update_analysis(&a).await.map_err(retry)?;
        }
        // In the skills' order, whatever order they finished in.
        a.sections.sort_by_key(|s| {
            self.skills
                .iter()
                .position(|k| *k == s.skill)
                .unwrap_or(usize::MAX)
        });
        let ok = a.sections.iter().filter(|s| s.ok).count();
        a.status = match ok {
            0 => AnalysisStatus::Failed,
            n if n == a.sections.len() => AnalysisStatus::Done,
            _ => AnalysisStatus::Partial,
        };
        if a.status == AnalysisStatus::Failed {
            a.error = Some("every skill failed; see the sections".into());
        } else {
            a.report = Some(aggregate(&a));
        }
        a.finished_at = Some(coachlibre_core::now());
        a.updated_at = coachlibre_core::now();
        store.update_analysis(&a).await.map_err(retry)?;
        Ok(serde_json::json!({
            "analysis_id": a.id,
            "status": a.status,
            "sections_written": ok,
            "sections_missing": a.sections.len() - ok,
        }))
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(3600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_titled_and_demoted() {
        assert_eq!(
            title_of_skill("business-model-extractor"),
            "Business model extractor"
        );
        assert_eq!(demote("## Offer\ntext\n# Top"), "### Offer\ntext\n## Top");
        assert_eq!(ExportFormat::of_file("report.pdf"), Some(ExportFormat::Pdf));
        assert_eq!(ExportFormat::of_file("report.doc"), None);
    }
}
