//! Skills: declarative prompt programs.
//!
//! A skill is a TOML file: name, category, description, an input schema (the JSON Schema
//! subset of [`coachlibre_core::schema`]), a prompt template (`{{field}}` takes an input
//! field), the tools it may use, and what its output must be (Markdown with given sections, or
//! JSON matching a schema). The built-in skills ship in the binary (`skills/*.toml`); a tenant
//! adds its own through the API. A run is a background job (`skill.run`): the input is checked
//! before it is queued, the output after the model answers; a Markdown answer missing sections
//! or a JSON answer that does not parse or match is sent back to the model once with what was
//! wrong.

pub mod builtin;
mod skill;
pub mod template;
pub mod tools;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use coachlibre_core::accounts::By;
use coachlibre_core::ids::SkillId;
use coachlibre_core::job::{Job, NewJob, StoredSkill};
use coachlibre_core::model::ModelSource;
use coachlibre_core::store::Store;
use coachlibre_core::{Error, Result};
use coachlibre_jobs::{Handler, JobContext, JobError, Jobs};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use skill::{OutputFormat, Skill, SkillError, SkillOutput, ToolUse, execute};
pub use tools::SkillTools;

/// Runs skills.
pub const RUN: &str = "skill.run";

/// A skill as listed by the API.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SkillInfo {
    pub name: String,
    pub category: String,
    pub description: String,
    pub version: u32,
    /// Shipped with CoachLibre (false: added by the tenant).
    pub builtin: bool,
    pub input_schema: serde_json::Value,
    pub output_format: OutputFormat,
    /// Markdown skills: the sections the answer must have.
    pub sections: Vec<String>,
    pub allowed_tools: Vec<String>,
}

impl SkillInfo {
    fn of(s: &Skill, builtin: bool) -> Self {
        Self {
            name: s.name.clone(),
            category: s.category.clone(),
            description: s.description.clone(),
            version: s.version,
            builtin,
            input_schema: s.input.clone(),
            output_format: s.output.format,
            sections: s.output.sections.clone(),
            allowed_tools: s.allowed_tools.clone(),
        }
    }
}

/// The payload of a [`RUN`] job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunPayload {
    pub skill: String,
    pub input: serde_json::Value,
}

/// Built-in and tenant skills, and the models that run them. Cheap to clone.
#[derive(Clone)]
pub struct Catalog {
    store: Arc<dyn Store>,
    models: Arc<dyn ModelSource>,
    builtin: Arc<BTreeMap<String, Skill>>,
    default_model: String,
    tools: SkillTools,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("builtin", &self.builtin.len())
            .field("default_model", &self.default_model)
            .finish()
    }
}

impl Catalog {
    /// The built-in skills (which must parse: they are checked by the tests) and the model
    /// used by skills that name none.
    pub fn new(store: Arc<dyn Store>, models: Arc<dyn ModelSource>, default_model: &str) -> Self {
        let mut builtin = BTreeMap::new();
        for (file, text) in builtin::FILES {
            match Skill::parse(text) {
                Ok(s) => {
                    builtin.insert(s.name.clone(), s);
                }
                Err(e) => tracing::error!(file, error = %e, "a built-in skill does not parse"),
            }
        }
        Self {
            store,
            models,
            builtin: Arc::new(builtin),
            default_model: default_model.to_owned(),
            tools: SkillTools::default(),
        }
    }

    /// The means of the skills' tools (`search_knowledge`, `fetch_page`).
    pub fn with_tools(mut self, tools: SkillTools) -> Self {
        self.tools = tools;
        self
    }

    /// The skill of that name for the tenant: its own, else the built-in one.
    pub async fn find(
        &self,
        tenant: coachlibre_core::ids::TenantId,
        name: &str,
    ) -> Result<(Skill, bool)> {
        if let Some(s) = self.builtin.get(name) {
            return Ok((s.clone(), true));
        }
        let stored = self
            .store
            .get_skill(tenant, name)
            .await?
            .ok_or_else(|| Error::not_found("skill"))?;
        let skill = Skill::parse(&stored.definition)
            .map_err(|e| Error::Internal(format!("stored skill {name}: {e}")))?;
        Ok((skill, false))
    }

    /// Run a skill now (the job handler calls this).
    pub async fn run(
        &self,
        tenant: coachlibre_core::ids::TenantId,
        name: &str,
        input: &serde_json::Value,
    ) -> std::result::Result<SkillOutput, SkillError> {
        let (skill, _) = self
            .find(tenant, name)
            .await
            .map_err(|e| SkillError::Invalid(e.to_string()))?;
        let model_name = skill.model.as_deref().unwrap_or(&self.default_model);
        let model = self
            .models
            .chat(model_name)
            .map_err(|e| SkillError::Model(e.to_string()))?;
        let tools = ToolUse {
            tools: &self.tools,
            tenant,
        };
        execute(&skill, input, model.as_ref(), Some(tools)).await
    }
}

/// The skills as the API and the CLI see them.
#[derive(Debug, Clone)]
pub struct Skills {
    catalog: Catalog,
    jobs: Jobs,
}

impl Skills {
    pub fn new(catalog: Catalog, jobs: Jobs) -> Self {
        Self { catalog, jobs }
    }

    /// Coaches and admins use skills (clients do not).
    fn require_staff(by: By<'_>) -> Result<()> {
        match by {
            By::Actor(a) => a.require_coach(),
            By::Operator(_) => Ok(()),
        }
    }

    /// Built-in skills, then the tenant's, each by name.
    pub async fn list(&self, by: By<'_>) -> Result<Vec<SkillInfo>> {
        Self::require_staff(by)?;
        let mut out: Vec<SkillInfo> = self
            .catalog
            .builtin
            .values()
            .map(|s| SkillInfo::of(s, true))
            .collect();
        for stored in self.catalog.store.list_skills(by.tenant()).await? {
            match Skill::parse(&stored.definition) {
                Ok(s) => out.push(SkillInfo::of(&s, false)),
                Err(e) => {
                    tracing::warn!(skill = stored.name, error = %e, "stored skill does not parse")
                }
            }
        }
        Ok(out)
    }

    pub async fn get(&self, by: By<'_>, name: &str) -> Result<SkillInfo> {
        Self::require_staff(by)?;
        let (s, builtin) = self.catalog.find(by.tenant(), name).await?;
        Ok(SkillInfo::of(&s, builtin))
    }

    /// Check the input and queue a run; the job's result is the [`SkillOutput`].
    pub async fn start(&self, by: By<'_>, name: &str, input: serde_json::Value) -> Result<Job> {
        Self::require_staff(by)?;
        by.require_write()?;
        let (skill, _) = self.catalog.find(by.tenant(), name).await?;
        skill
            .check_input(&input)
            .map_err(|errors| Error::invalid("input", errors.join("; ")))?;
        let mut job = NewJob::new(
            by.tenant(),
            RUN,
            serde_json::to_value(RunPayload {
                skill: name.to_owned(),
                input,
            })
            .map_err(|e| Error::Internal(e.to_string()))?,
        )
        .max_attempts(2);
        job.created_by = by.actor_id();
        Ok(self.jobs.enqueue(job).await?.0)
    }

    /// Add or replace one of the tenant's skills from its TOML text (admins). A built-in
    /// name cannot be taken.
    pub async fn put(&self, by: By<'_>, definition: &str) -> Result<SkillInfo> {
        by.require_admin()?;
        by.require_write()?;
        let skill =
            Skill::parse(definition).map_err(|e| Error::invalid("definition", e.to_string()))?;
        if self.catalog.builtin.contains_key(&skill.name) {
            return Err(Error::Conflict(format!(
                "'{}' is a built-in skill: choose another name",
                skill.name
            )));
        }
        let now = coachlibre_core::now();
        self.catalog
            .store
            .put_skill(&StoredSkill {
                id: SkillId::generate(),
                tenant_id: by.tenant(),
                name: skill.name.clone(),
                definition: definition.to_owned(),
                created_by: by.actor_id(),
                created_at: now,
                updated_at: now,
            })
            .await?;
        Ok(SkillInfo::of(&skill, false))
    }

    /// Remove one of the tenant's skills (admins).
    pub async fn delete(&self, by: By<'_>, name: &str) -> Result<()> {
        by.require_admin()?;
        by.require_write()?;
        if self.catalog.builtin.contains_key(name) {
            return Err(Error::Conflict("built-in skills cannot be deleted".into()));
        }
        if self.catalog.store.delete_skill(by.tenant(), name).await? {
            Ok(())
        } else {
            Err(Error::not_found("skill"))
        }
    }
}

/// The [`RUN`] job handler.
#[derive(Debug, Clone)]
pub struct RunSkill(pub Catalog);

#[async_trait]
impl Handler for RunSkill {
    async fn run(
        &self,
        ctx: &JobContext,
        job: &Job,
    ) -> std::result::Result<serde_json::Value, JobError> {
        let p: RunPayload = serde_json::from_value(job.payload.clone())
            .map_err(|e| JobError::Permanent(format!("bad skill payload: {e}")))?;
        ctx.progress(0, Some(1), format!("running {}", p.skill))
            .await;
        let out = self
            .0
            .run(job.tenant_id, &p.skill, &p.input)
            .await
            .map_err(|e| match e {
                SkillError::Model(m) => JobError::Retry(m),
                other => JobError::Permanent(other.to_string()),
            })?;
        ctx.progress(1, Some(1), "done").await;
        serde_json::to_value(out).map_err(|e| JobError::Permanent(e.to_string()))
    }

    fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(900)
    }
}
