//! Workflows: a DAG of steps (skill, fan-out over a list, fan-in, condition, transform),
//! stored per tenant and versioned; each run is a job (`workflow.run`) that executes the steps
//! whose dependencies are done (in parallel when several are), records every step's input,
//! output, attempts, timings and error as it finishes, retries a failing step by its policy,
//! and, when the job is taken over after a crash, resumes from the steps already finished.

pub mod definition;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use coachlibre_agent::{Runtime, TurnEvent, TurnRequest};
use coachlibre_core::accounts::By;
use coachlibre_core::agent::Agent;
use coachlibre_core::conversation::{Channel, Conversation};
use coachlibre_core::event::{Event, EventSink};
use coachlibre_core::ids::{AgentId, TenantId, UserId, WorkflowId, WorkflowRunId};
use coachlibre_core::job::{Effect, Job, NewJob};
use coachlibre_core::page::{Page, PageRequest};
use coachlibre_core::store::{Store, StoreError};
use coachlibre_core::user::Role;
use coachlibre_core::workflow::{RunStatus, StepState, StoredWorkflow, WorkflowRun};
use coachlibre_core::{Error, Result};
use coachlibre_jobs::{Handler, JobContext, JobError, Jobs};
use coachlibre_skills::Catalog;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::task::JoinSet;

pub use definition::{Action, Step, Workflow};

/// Runs workflows.
pub const RUN: &str = "workflow.run";
/// The skills a crew role runs.
pub const CREW_WORKER: &str = "crew-worker";
pub const CREW_SUPERVISOR: &str = "crew-supervisor";

/// Workflow templates shipped in the binary: `(name, JSON definition)`. A tenant's own
/// workflow of the same name takes precedence.
pub const TEMPLATES: &[(&str, &str)] = &[(
    "deliverable-crew",
    include_str!("../templates/deliverable-crew.json"),
)];

fn template(name: &str, tenant: TenantId) -> Option<StoredWorkflow> {
    let (_, text) = TEMPLATES.iter().find(|(n, _)| *n == name)?;
    let definition: Value = serde_json::from_str(text).ok()?;
    Some(StoredWorkflow {
        id: WorkflowId(uuid_nil()),
        tenant_id: tenant,
        name: name.to_owned(),
        version: 0,
        definition,
        created_by: None,
        created_at: chrono_epoch(),
    })
}

fn uuid_nil() -> uuid::Uuid {
    uuid::Uuid::nil()
}

fn chrono_epoch() -> coachlibre_core::Timestamp {
    chrono::DateTime::<chrono::Utc>::UNIX_EPOCH
}

/// The payload of a [`RUN`] job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunPayload {
    pub run_id: WorkflowRunId,
}

/// Workflows as the API and the CLI see them.
#[derive(Clone)]
pub struct Workflows {
    store: Arc<dyn Store>,
    jobs: Jobs,
    catalog: Catalog,
}

impl std::fmt::Debug for Workflows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Workflows")
    }
}

fn staff(by: By<'_>) -> Result<()> {
    match by {
        By::Actor(a) => a.require_coach(),
        By::Operator(_) => Ok(()),
    }
}

impl Workflows {
    pub fn new(store: Arc<dyn Store>, jobs: Jobs, catalog: Catalog) -> Self {
        Self {
            store,
            jobs,
            catalog,
        }
    }

    /// Save a definition (admins): version 1, or the next version of the same name.
    pub async fn save(&self, by: By<'_>, definition: Value) -> Result<StoredWorkflow> {
        by.require_admin()?;
        by.require_write()?;
        let w = Workflow::parse(&definition).map_err(|e| Error::invalid("definition", e.0))?;
        let known = coachlibre_agent::tools::names();
        for step in &w.steps {
            if let Action::Tool { tool, .. } = &step.action
                && !known.contains(&tool.as_str())
            {
                return Err(Error::invalid(
                    "definition",
                    format!(
                        "step '{}': there is no tool '{tool}' (tools: {})",
                        step.id,
                        known.join(", ")
                    ),
                ));
            }
        }
        // Ids written as they are (not placeholders) must name the tenant's own agents and
        // people: another tenant's ids are refused now rather than failing every run.
        for step in &w.steps {
            let (Action::Agent { agent, client, .. } | Action::Tool { agent, client, .. }) =
                &step.action
            else {
                continue;
            };
            if let Ok(id) = agent.trim().parse::<uuid::Uuid>()
                && self
                    .store
                    .get_agent(by.tenant(), id.into())
                    .await?
                    .is_none()
            {
                return Err(Error::invalid(
                    "definition",
                    format!("step '{}': there is no agent {id} here", step.id),
                ));
            }
            if let Ok(id) = client.trim().parse::<uuid::Uuid>()
                && self.store.get_user(by.tenant(), id.into()).await?.is_none()
            {
                return Err(Error::invalid(
                    "definition",
                    format!("step '{}': there is no client {id} here", step.id),
                ));
            }
        }
        for skill in w.skills() {
            self.catalog.find(by.tenant(), skill).await.map_err(|_| {
                Error::invalid("definition", format!("there is no skill '{skill}'"))
            })?;
        }
        let version = self
            .store
            .latest_workflow(by.tenant(), &w.name)
            .await?
            .map_or(1, |l| l.version + 1);
        let stored = StoredWorkflow {
            id: WorkflowId::generate(),
            tenant_id: by.tenant(),
            name: w.name.clone(),
            version,
            definition,
            created_by: by.actor_id(),
            created_at: coachlibre_core::now(),
        };
        self.store
            .insert_workflow(&stored)
            .await
            .map_err(|e| match e {
                StoreError::Conflict(_) => {
                    Error::Conflict("the workflow changed meanwhile; save again".into())
                }
                other => other.into(),
            })?;
        Ok(stored)
    }

    /// The latest version of each workflow (coaches and admins), and the shipped templates
    /// the tenant has not replaced (version 0).
    pub async fn list(&self, by: By<'_>) -> Result<Vec<StoredWorkflow>> {
        staff(by)?;
        let mut out = self.store.list_workflows(by.tenant()).await?;
        for (name, _) in TEMPLATES {
            if !out.iter().any(|w| w.name == *name)
                && let Some(t) = template(name, by.tenant())
            {
                out.push(t);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    pub async fn get(&self, by: By<'_>, name: &str) -> Result<StoredWorkflow> {
        staff(by)?;
        match self.store.latest_workflow(by.tenant(), name).await? {
            Some(w) => Ok(w),
            None => template(name, by.tenant()).ok_or_else(|| Error::not_found("workflow")),
        }
    }

    /// Start a run of the latest version with `input` (coaches and admins); `trigger` says
    /// what started it (`api`, `cli`, `schedule`...).
    pub async fn start(
        &self,
        by: By<'_>,
        name: &str,
        input: Value,
        trigger: &str,
    ) -> Result<WorkflowRun> {
        by.require_write()?;
        let w = self.get(by, name).await?;
        self.start_version(by, w, input, trigger).await
    }

    async fn start_version(
        &self,
        by: By<'_>,
        w: StoredWorkflow,
        input: Value,
        trigger: &str,
    ) -> Result<WorkflowRun> {
        let now = coachlibre_core::now();
        // The job's id is chosen first, so that the run is written once, with it.
        let job_id = coachlibre_core::ids::JobId::generate();
        let run = WorkflowRun {
            id: WorkflowRunId::generate(),
            tenant_id: by.tenant(),
            workflow: w.name.clone(),
            version: w.version,
            definition: w.definition,
            status: RunStatus::Pending,
            trigger: trigger.to_owned(),
            input,
            steps: BTreeMap::new(),
            error: None,
            job_id: Some(job_id),
            created_by: by.actor_id(),
            created_at: now,
            updated_at: now,
            finished_at: None,
        };
        let payload = serde_json::to_value(RunPayload { run_id: run.id })
            .map_err(|e| Error::Internal(e.to_string()))?;
        let mut job = NewJob::new(run.tenant_id, RUN, payload).max_attempts(5);
        job.id = Some(job_id);
        job.created_by = run.created_by;
        self.jobs.check(&job)?;
        // One transaction: a run is never left without the job that executes it.
        self.store.insert_run_with_job(&run, &job).await?;
        self.jobs.notify();
        Ok(run)
    }

    pub async fn run(&self, by: By<'_>, id: WorkflowRunId) -> Result<WorkflowRun> {
        staff(by)?;
        self.store
            .get_run(by.tenant(), id)
            .await?
            .ok_or_else(|| Error::not_found("workflow run"))
    }

    pub async fn runs(
        &self,
        by: By<'_>,
        workflow: Option<&str>,
        page: &PageRequest,
    ) -> Result<Page<WorkflowRun>> {
        staff(by)?;
        let rows = self.store.list_runs(by.tenant(), workflow, page).await?;
        Ok(Page::from_rows(rows, page, |r| r.id.as_uuid()))
    }
}

/// Events start the latest version of every workflow of the tenant that lists them in `on`.
#[async_trait]
impl EventSink for Workflows {
    async fn publish(&self, event: Event) {
        let kind = event.kind.as_str();
        let workflows = match self.store.list_workflows(event.tenant).await {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, event = kind, "could not list the workflows to start");
                return;
            }
        };
        for w in workflows {
            let listens = w.definition["on"]
                .as_array()
                .is_some_and(|on| on.iter().any(|k| k == kind));
            if !listens {
                continue;
            }
            let mut input = event.data.clone();
            if let Some(o) = input.as_object_mut() {
                o.insert("event".into(), Value::from(kind));
            }
            let name = w.name.clone();
            let by = By::Operator(event.tenant);
            match self
                .start_version(by, w, input, &format!("event:{kind}"))
                .await
            {
                Ok(run) => {
                    tracing::info!(workflow = %name, run = %run.id, event = kind, "workflow started by an event")
                }
                Err(e) => {
                    tracing::error!(workflow = %name, error = %e, event = kind, "could not start a workflow on an event")
                }
            }
        }
    }
}

/// The [`RUN`] job handler.
#[derive(Debug, Clone)]
pub struct RunWorkflow {
    catalog: Catalog,
    /// Runs `agent` and `tool` steps (without it, they fail with a clear message).
    agents: Option<Runtime>,
    /// Wait before a failed step's next attempt (doubles each time).
    retry_delay: Duration,
}

impl RunWorkflow {
    pub fn new(catalog: Catalog) -> Self {
        Self {
            catalog,
            agents: None,
            retry_delay: Duration::from_millis(500),
        }
    }

    /// Run `agent` and `tool` steps with this agent runtime.
    pub fn with_agents(mut self, runtime: Runtime) -> Self {
        self.agents = Some(runtime);
        self
    }

    /// With another delay between a step's attempts (tests).
    pub fn retry_delay(mut self, d: Duration) -> Self {
        self.retry_delay = d;
        self
    }
}

/// Run one attempt of a step.
/// A step's task's end: its id, attempts so far, and (input, output) or the error.
type StepDone = (String, u32, std::result::Result<(Value, Value), String>);

/// Why a step attempt failed, and whether another attempt may help (a crew's gate closing
/// is a decision, not a fault: not retried).
struct StepFailure {
    message: String,
    retry: bool,
}

impl From<String> for StepFailure {
    fn from(message: String) -> Self {
        Self {
            message,
            retry: true,
        }
    }
}

async fn execute(
    catalog: &Catalog,
    agents: Option<&Runtime>,
    tenant: TenantId,
    step: &Step,
    ctx: &Value,
) -> std::result::Result<(Value, Value), StepFailure> {
    match &step.action {
        Action::Agent {
            agent,
            client,
            message,
        } => {
            let runtime = agents.ok_or_else(no_agents)?;
            let (agent, client) = agent_and_client(runtime, tenant, agent, client, ctx).await?;
            let message = definition::render_text(message, ctx);
            let input =
                serde_json::json!({"agent": agent.id, "client": client, "message": message});
            let output = agent_turn(runtime, agent, client, message).await?;
            Ok((input, output))
        }
        Action::Tool {
            tool,
            agent,
            client,
            arguments,
        } => {
            let runtime = agents.ok_or_else(no_agents)?;
            let (agent, client) = agent_and_client(runtime, tenant, agent, client, ctx).await?;
            let arguments = definition::render(arguments, ctx);
            let conversation = runtime
                .store()
                .latest_conversation(tenant, client, agent.id, Channel::Web.as_str())
                .await
                .map_err(|e| e.to_string())?
                .map(|c| c.id);
            let output = runtime
                .run_tool(&agent, client, conversation, tool, &arguments)
                .await
                .map_err(|e| StepFailure {
                    message: e.to_string(),
                    // A refused call (unknown tool, bad arguments) fails the same way again.
                    retry: !matches!(e, Error::Invalid { .. }),
                })?;
            let input = serde_json::json!({"tool": tool, "agent": agent.id, "client": client,
                                           "arguments": arguments});
            Ok((input, output))
        }
        Action::Skill { skill, input } => {
            let input = definition::render(input, ctx);
            let out = catalog
                .run(tenant, skill, &input)
                .await
                .map_err(|e| e.to_string())?;
            let out = serde_json::to_value(out).map_err(|e| e.to_string())?;
            Ok((input, out))
        }
        Action::Map { over, skill, input } => {
            let items = definition::lookup(ctx, over)
                .and_then(Value::as_array)
                .cloned()
                .ok_or_else(|| format!("'{over}' is not a list"))?;
            let mut outputs = Vec::with_capacity(items.len());
            let mut inputs = Vec::with_capacity(items.len());
            for item in &items {
                let mut item_ctx = ctx.clone();
                if let Some(m) = item_ctx.as_object_mut() {
                    m.insert("item".into(), item.clone());
                }
                let input = definition::render(input, &item_ctx);
                let out = catalog
                    .run(tenant, skill, &input)
                    .await
                    .map_err(|e| format!("item {}: {e}", outputs.len()))?;
                inputs.push(input);
                outputs.push(serde_json::to_value(out).map_err(|e| e.to_string())?);
            }
            Ok((Value::Array(inputs), Value::Array(outputs)))
        }
        Action::Aggregate { template } => Ok((
            Value::Null,
            serde_json::json!({"text": definition::render_text(template, ctx)}),
        )),
        Action::Condition {
            path,
            equals,
            contains,
        } => {
            let v = definition::lookup(ctx, path)
                .cloned()
                .unwrap_or(Value::Null);
            let passed = match (equals, contains) {
                (Some(e), _) => &v == e,
                (None, Some(c)) => match &v {
                    Value::String(s) => s.contains(c.as_str()),
                    other => other.to_string().contains(c.as_str()),
                },
                (None, None) => !(v.is_null() || v == Value::Bool(false)),
            };
            Ok((v, serde_json::json!({"passed": passed})))
        }
        Action::Transform { value } => Ok((Value::Null, definition::render(value, ctx))),
        Action::Crew { .. } => crew(catalog, tenant, step, ctx).await,
    }
}

fn no_agents() -> StepFailure {
    StepFailure {
        message: "agent and tool steps need the agent runtime; this worker was built without it"
            .into(),
        retry: false,
    }
}

fn permanent(message: String) -> StepFailure {
    StepFailure {
        message,
        retry: false,
    }
}

/// The step's agent and client, from their (rendered) ids: the agent of the tenant, and a
/// client account of the tenant.
async fn agent_and_client(
    runtime: &Runtime,
    tenant: TenantId,
    agent: &str,
    client: &str,
    ctx: &Value,
) -> std::result::Result<(Agent, UserId), StepFailure> {
    let agent_id: AgentId = definition::render_text(agent, ctx)
        .trim()
        .parse()
        .map_err(|_| permanent(format!("agent '{agent}' is not an agent id")))?;
    let client_id: UserId = definition::render_text(client, ctx)
        .trim()
        .parse()
        .map_err(|_| permanent(format!("client '{client}' is not a user id")))?;
    let store = runtime.store();
    let agent = store
        .get_agent(tenant, agent_id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| permanent(format!("there is no agent {agent_id}")))?;
    let user = store
        .get_user(tenant, client_id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| permanent(format!("there is no user {client_id}")))?;
    if user.role != Role::Client {
        return Err(permanent(format!("{client_id} is not a client")));
    }
    Ok((agent, client_id))
}

/// One instructed turn of `agent` in its latest web conversation with `client` (or a new
/// one); the answer is stored there. Output: text, message, conversation and citations.
async fn agent_turn(
    runtime: &Runtime,
    agent: Agent,
    client: UserId,
    message: String,
) -> std::result::Result<Value, StepFailure> {
    let store = runtime.store();
    let conversation = match store
        .latest_conversation(agent.tenant_id, client, agent.id, Channel::Web.as_str())
        .await
        .map_err(|e| e.to_string())?
    {
        Some(c) => c,
        None => {
            let c = Conversation::new(agent.tenant_id, client, agent.id, Channel::Web, None)
                .map_err(|e| permanent(e.to_string()))?;
            store
                .insert_conversation(&c)
                .await
                .map_err(|e| e.to_string())?;
            c
        }
    };
    let conversation_id = conversation.id;
    let mut rx = runtime.start(TurnRequest {
        conversation,
        agent,
        text: message,
        history: None,
        params: None,
        instruction: true,
        message_id: None,
    });
    let (mut text, mut citations, mut message_id) = (String::new(), Vec::new(), None);
    while let Some(ev) = rx.recv().await {
        match ev {
            TurnEvent::Token { text: t } => text.push_str(&t),
            TurnEvent::Citation(c) => citations.push(c),
            TurnEvent::Done { message_id: id, .. } => message_id = Some(id),
            TurnEvent::Error { message, .. } => return Err(message.into()),
            _ => {}
        }
    }
    let message_id =
        message_id.ok_or_else(|| "the agent's turn ended without an answer".to_owned())?;
    Ok(serde_json::json!({
        "text": text,
        "message_id": message_id,
        "conversation_id": conversation_id,
        "citations": citations,
    }))
}

/// Whether the supervisor's verdict says criterion `i` (`text`) is met: the item naming it,
/// else the item in its position.
fn met(verdict: &Value, i: usize, text: &str) -> bool {
    let items = verdict.get("criteria").and_then(Value::as_array);
    let Some(items) = items else { return false };
    let named = items.iter().find(|c| {
        c.get("criterion")
            .and_then(Value::as_str)
            .is_some_and(|s| s.trim().eq_ignore_ascii_case(text.trim()))
    });
    named
        .or_else(|| items.get(i))
        .and_then(|c| c.get("met"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// One crew role: draft, critique, revise, until the gate passes or the rounds run out.
async fn crew(
    catalog: &Catalog,
    tenant: TenantId,
    step: &Step,
    ctx: &Value,
) -> std::result::Result<(Value, Value), StepFailure> {
    let Action::Crew {
        role,
        task,
        criteria,
        max_rounds,
    } = &step.action
    else {
        return Err("not a crew step".to_owned().into());
    };
    let (role, max_rounds) = (role.as_str(), *max_rounds);
    let task = definition::render_text(task, ctx);
    let context: String = step
        .needs
        .iter()
        .filter_map(|n| {
            definition::lookup(ctx, &format!("steps.{n}.text"))
                .and_then(Value::as_str)
                .map(|t| format!("## {n}\n\n{t}"))
        })
        .collect::<Vec<_>>()
        .join("\n\n");
    let criteria_text = criteria
        .iter()
        .map(|c| format!("- {c}"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut draft = String::new();
    let mut feedback = String::new();
    let mut rounds = Vec::new();
    for round in 1..=max_rounds {
        let written = catalog
            .run(
                tenant,
                CREW_WORKER,
                &serde_json::json!({"role": role, "task": task, "context": context,
                    "criteria": criteria_text, "draft": draft, "feedback": feedback}),
            )
            .await
            .map_err(|e| format!("{role} (round {round}): {e}"))?;
        draft = written.text;
        let checked = catalog
            .run(
                tenant,
                CREW_SUPERVISOR,
                &serde_json::json!({"role": role, "task": task, "criteria": criteria_text,
                    "draft": draft}),
            )
            .await
            .map_err(|e| format!("supervisor of the {role} (round {round}): {e}"))?;
        let verdict = checked.data.unwrap_or(Value::Null);
        let unmet: Vec<&String> = criteria
            .iter()
            .enumerate()
            .filter(|(i, c)| !met(&verdict, *i, c))
            .map(|(_, c)| c)
            .collect();
        feedback = verdict
            .get("feedback")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        rounds.push(serde_json::json!({"round": round, "unmet": unmet, "feedback": feedback}));
        if unmet.is_empty() {
            let input = serde_json::json!({"role": role, "task": task, "criteria": criteria});
            return Ok((
                input,
                serde_json::json!({"text": draft, "accepted": true, "rounds": rounds}),
            ));
        }
    }
    Err(StepFailure {
        message: format!(
            "the {role}'s work was not accepted after {max_rounds} rounds: {}",
            Value::Array(rounds)
        ),
        retry: false,
    })
}

#[async_trait]
impl Handler for RunWorkflow {
    async fn run(&self, ctx: &JobContext, job: &Job) -> std::result::Result<Value, JobError> {
        let p: RunPayload = serde_json::from_value(job.payload.clone())
            .map_err(|e| JobError::Permanent(format!("bad workflow payload: {e}")))?;
        self.execute_run(ctx, job, p.run_id).await
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(6 * 3600)
    }
}

/// Starts a run (`workflow.start`, e.g. from a cron schedule: payload `{"workflow", "input"}`)
/// and executes it in the same job.
#[derive(Debug, Clone)]
pub struct StartWorkflow(pub RunWorkflow);

/// The payload of a [`START`] job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartPayload {
    pub workflow: String,
    #[serde(default)]
    pub input: Value,
}

/// Starts and runs a workflow (for schedules and other system triggers).
pub const START: &str = "workflow.start";

#[async_trait]
impl Handler for StartWorkflow {
    async fn run(&self, ctx: &JobContext, job: &Job) -> std::result::Result<Value, JobError> {
        let p: StartPayload = serde_json::from_value(job.payload.clone())
            .map_err(|e| JobError::Permanent(format!("bad workflow.start payload: {e}")))?;
        let retry = |e: StoreError| JobError::Retry(e.to_string());
        // A retried job resumes the run it created rather than starting another.
        let existing = ctx
            .store
            .list_runs(job.tenant_id, Some(&p.workflow), &PageRequest::default())
            .await
            .map_err(retry)?
            .into_iter()
            .find(|r| r.job_id == Some(job.id));
        let run_id = match existing {
            Some(r) => r.id,
            None => {
                let w = match ctx
                    .store
                    .latest_workflow(job.tenant_id, &p.workflow)
                    .await
                    .map_err(retry)?
                {
                    Some(w) => w,
                    None => template(&p.workflow, job.tenant_id).ok_or_else(|| {
                        JobError::Permanent(format!("no workflow '{}'", p.workflow))
                    })?,
                };
                let now = coachlibre_core::now();
                let run = WorkflowRun {
                    id: WorkflowRunId::generate(),
                    tenant_id: job.tenant_id,
                    workflow: w.name,
                    version: w.version,
                    definition: w.definition,
                    status: RunStatus::Pending,
                    trigger: "schedule".into(),
                    input: p.input,
                    steps: BTreeMap::new(),
                    error: None,
                    job_id: Some(job.id),
                    created_by: job.created_by,
                    created_at: now,
                    updated_at: now,
                    finished_at: None,
                };
                ctx.store.insert_run(&run).await.map_err(retry)?;
                run.id
            }
        };
        self.0.execute_run(ctx, job, run_id).await
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(6 * 3600)
    }
}

impl RunWorkflow {
    /// Execute (or resume) a run.
    async fn execute_run(
        &self,
        ctx: &JobContext,
        job: &Job,
        run_id: WorkflowRunId,
    ) -> std::result::Result<Value, JobError> {
        let store = ctx.store.clone();
        let retry = |e: StoreError| JobError::Retry(e.to_string());
        let mut run = store
            .get_run(job.tenant_id, run_id)
            .await
            .map_err(retry)?
            .ok_or_else(|| JobError::Permanent("the run was deleted".into()))?;
        let w = Workflow::parse(&run.definition)
            .map_err(|e| JobError::Permanent(format!("stored definition: {}", e.0)))?;
        run.status = RunStatus::Running;
        // Steps interrupted by a crash start again; finished ones are kept.
        for state in run.steps.values_mut() {
            if state.status == Some(RunStatus::Running) {
                state.status = Some(RunStatus::Pending);
            }
        }
        let total = u64::try_from(w.steps.len()).unwrap_or(0);
        let status_of = |run: &WorkflowRun, id: &str| run.steps.get(id).and_then(|s| s.status);
        let mut running: JoinSet<StepDone> = JoinSet::new();
        loop {
            // Skip what cannot run: after a failed or skipped step, or a false condition.
            for s in &w.steps {
                if status_of(&run, &s.id).is_some_and(RunStatus::is_final)
                    || status_of(&run, &s.id) == Some(RunStatus::Running)
                {
                    continue;
                }
                let blocked = s.needs.iter().find_map(|n| match status_of(&run, n) {
                    Some(RunStatus::Failed) => Some(format!("'{n}' failed")),
                    Some(RunStatus::Skipped) => Some(format!("'{n}' was skipped")),
                    Some(RunStatus::Succeeded)
                        if run
                            .steps
                            .get(n)
                            .and_then(|st| st.output.as_ref())
                            .and_then(|o| o.get("passed"))
                            == Some(&Value::Bool(false))
                            && matches!(
                                w.steps.iter().find(|x| &x.id == n).map(|x| &x.action),
                                Some(Action::Condition { .. })
                            ) =>
                    {
                        Some(format!("the condition '{n}' was false"))
                    }
                    _ => None,
                });
                if let Some(why) = blocked {
                    let st = run.steps.entry(s.id.clone()).or_default();
                    st.status = Some(RunStatus::Skipped);
                    st.error = Some(format!("not run: {why}"));
                    st.finished_at = Some(coachlibre_core::now());
                }
            }
            // Start what is ready.
            let mut progressed = false;
            let mut spawned = false;
            let outputs: BTreeMap<String, Value> = run
                .steps
                .iter()
                .filter(|(_, s)| s.status == Some(RunStatus::Succeeded))
                .filter_map(|(id, s)| s.output.clone().map(|o| (id.clone(), o)))
                .collect();
            let template_ctx = definition::context(&run.input, &outputs, None);
            for s in &w.steps {
                let state = status_of(&run, &s.id);
                let ready = !state.is_some_and(RunStatus::is_final)
                    && state != Some(RunStatus::Running)
                    && s.needs
                        .iter()
                        .all(|n| status_of(&run, n) == Some(RunStatus::Succeeded));
                if !ready {
                    continue;
                }
                // Steps that only compute run here and now: nothing to persist before they
                // finish (a crash just computes them again).
                if matches!(
                    s.action,
                    Action::Transform { .. } | Action::Aggregate { .. } | Action::Condition { .. }
                ) {
                    let now = coachlibre_core::now();
                    let result = execute(
                        &self.catalog,
                        self.agents.as_ref(),
                        job.tenant_id,
                        s,
                        &template_ctx,
                    )
                    .await;
                    let st = run.steps.entry(s.id.clone()).or_default();
                    st.attempts += 1;
                    st.started_at = Some(now);
                    st.finished_at = Some(coachlibre_core::now());
                    match result {
                        Ok((input, output)) => {
                            st.status = Some(RunStatus::Succeeded);
                            st.input = (!input.is_null()).then_some(input);
                            st.output = Some(output);
                        }
                        Err(e) => {
                            st.status = Some(RunStatus::Failed);
                            st.error = Some(e.message);
                        }
                    }
                    // Outputs changed: compute the context again before going on.
                    progressed = true;
                    break;
                }
                let st = run.steps.entry(s.id.clone()).or_default();
                st.status = Some(RunStatus::Running);
                st.started_at = Some(coachlibre_core::now());
                spawned = true;
                let (catalog, agents, step, tctx, tenant, delay) = (
                    self.catalog.clone(),
                    self.agents.clone(),
                    s.clone(),
                    template_ctx.clone(),
                    job.tenant_id,
                    self.retry_delay,
                );
                let earlier = st.attempts;
                running.spawn(coachlibre_core::model::Priority::carry(async move {
                    let mut attempts = earlier;
                    let mut wait = delay;
                    loop {
                        attempts += 1;
                        match execute(&catalog, agents.as_ref(), tenant, &step, &tctx).await {
                            Ok(v) => return (step.id, attempts, Ok(v)),
                            Err(e) if !e.retry || attempts - earlier >= step.attempts => {
                                return (step.id, attempts, Err(e.message));
                            }
                            Err(_) => {
                                tokio::time::sleep(wait).await;
                                wait *= 2;
                            }
                        }
                    }
                }));
            }
            if progressed {
                // An instant step finished: its dependents may be ready now.
                if spawned {
                    run.updated_at = coachlibre_core::now();
                    store.update_run(&run).await.map_err(retry)?;
                }
                continue;
            }
            if spawned {
                // Steps that take time are marked running (and what finished before them
                // saved) before waiting for them.
                run.updated_at = coachlibre_core::now();
                store.update_run(&run).await.map_err(retry)?;
            }
            let Some(done) = running.join_next().await else {
                break;
            };
            let (id, attempts, result) = done.map_err(|e| JobError::Retry(e.to_string()))?;
            let st: &mut StepState = run.steps.entry(id.clone()).or_default();
            st.attempts = attempts;
            st.finished_at = Some(coachlibre_core::now());
            match result {
                Ok((input, output)) => {
                    st.status = Some(RunStatus::Succeeded);
                    st.input = (!input.is_null()).then_some(input);
                    st.output = Some(output);
                    st.error = None;
                }
                Err(e) => {
                    st.status = Some(RunStatus::Failed);
                    st.error = Some(e);
                }
            }
            let finished = run
                .steps
                .values()
                .filter(|s| s.status.is_some_and(RunStatus::is_final))
                .count();
            ctx.progress(
                u64::try_from(finished).unwrap_or(0),
                Some(total),
                format!(
                    "step {id} {}",
                    run.steps[&id].status.map_or("", RunStatus::as_str)
                ),
            )
            .await;
        }
        let failed: Vec<&String> = run
            .steps
            .iter()
            .filter(|(_, s)| s.status == Some(RunStatus::Failed))
            .map(|(id, _)| id)
            .collect();
        run.status = if failed.is_empty() {
            RunStatus::Succeeded
        } else {
            RunStatus::Failed
        };
        run.error = (!failed.is_empty()).then(|| {
            format!(
                "failed steps: {}",
                failed
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        });
        run.finished_at = Some(coachlibre_core::now());
        run.updated_at = coachlibre_core::now();
        // The job succeeded in running the workflow, whatever the steps did. The run's final
        // state is written with the job's success, in the worker's transaction.
        let result = serde_json::json!({"run_id": run.id, "status": run.status});
        ctx.on_success(Effect::UpdateRun(Box::new(run)));
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_templates_parse() {
        for (name, text) in TEMPLATES {
            let v: Value = serde_json::from_str(text).expect("JSON");
            let w = Workflow::parse(&v).unwrap_or_else(|e| panic!("{name}: {}", e.0));
            assert_eq!(w.name, *name);
            assert!(w.skills().contains(CREW_WORKER));
        }
    }
}
