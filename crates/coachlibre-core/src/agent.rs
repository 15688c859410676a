//! AI coach agents: who they are (persona), what they run on (model and generation settings),
//! what they may do (tools), what they remember (memory policy) and what they may spend
//! (a monthly budget per client).
//!
//! An agent belongs to a coach (`owner_id`) or to the whole tenant (no owner, created by an
//! admin). Four templates from the design documents give a coach a working agent in one call.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ids::{AgentId, TenantId, UserId};
use crate::model::GenerationParams;
use crate::{Error, Result};

/// Longest agent name.
pub const MAX_NAME_CHARS: usize = 80;
/// Longest persona (system prompt).
pub const MAX_PERSONA_CHARS: usize = 8_000;
/// The model an agent runs on when none is named: the embedded chat model.
pub const DEFAULT_MODEL: &str = "smollm2-135m-instruct";

/// What an agent remembers and how much history its prompt holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryPolicy {
    /// Extract long-term memories (facts, commitments, progress) after each turn.
    pub extract: bool,
    /// Long-term memories recalled into each prompt (the most relevant first).
    pub recall_limit: u32,
    /// Token budget of the recent-history window; older turns fold into a rolling summary.
    pub window_tokens: u32,
}

impl Default for MemoryPolicy {
    fn default() -> Self {
        Self {
            extract: true,
            recall_limit: 4,
            window_tokens: 1_024,
        }
    }
}

/// Monthly spending limits, per client (absent: unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Budget {
    /// Prompt + completion tokens per client per calendar month (UTC).
    pub monthly_tokens: Option<u64>,
    /// Cost in US dollars per client per calendar month (UTC).
    pub monthly_cost_usd: Option<f64>,
}

/// A stored agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Agent {
    pub id: AgentId,
    pub tenant_id: TenantId,
    /// The coach who owns it; absent for an agent of the whole tenant.
    pub owner_id: Option<UserId>,
    pub name: String,
    /// The system prompt: who the agent is and how it coaches.
    pub persona: String,
    /// A model or chain name from the configuration, or an embedded model.
    pub model: String,
    pub params: GenerationParams,
    /// Names of the tools this agent may call.
    pub tools: Vec<String>,
    /// Tools (among `tools`) whose calls wait for the coach's approval.
    pub approval_tools: Vec<String>,
    /// Knowledge collections it answers from.
    pub collections: Vec<crate::ids::CollectionId>,
    pub memory: MemoryPolicy,
    pub budget: Budget,
    /// The template it was created from, if any.
    pub template: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// Fields to create or replace an agent (unset fields take defaults or the template's).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentInput {
    pub name: Option<String>,
    pub persona: Option<String>,
    pub model: Option<String>,
    pub params: Option<GenerationParams>,
    pub tools: Option<Vec<String>>,
    /// Tools whose calls wait for the coach's approval (each must be in `tools`).
    pub approval_tools: Option<Vec<String>>,
    pub collections: Option<Vec<crate::ids::CollectionId>>,
    pub memory: Option<MemoryPolicy>,
    pub budget: Option<Budget>,
    /// Start from one of the shipped templates (`GET /api/v1/agent-templates`).
    pub template: Option<String>,
    /// Admins only: the coach who will own the agent (default: the tenant).
    pub owner_id: Option<UserId>,
}

/// A shipped starting point for an agent.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct Template {
    pub key: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub persona: &'static str,
    #[schema(value_type = Vec<String>)]
    pub tools: &'static [&'static str],
}

/// The tools of the templates: memory, profile and goals, then reminders (which the career
/// coach, a conversation about a search, does without).
const WITH_REMINDERS: &[&str] = &[
    "remember",
    "recall",
    "update_profile",
    "create_goal",
    "update_goal",
    "list_goals",
    "schedule_reminder",
];
const WITHOUT_REMINDERS: &[&str] = WITH_REMINDERS.split_at(WITH_REMINDERS.len() - 1).0;

/// The four templates of the design documents.
pub const TEMPLATES: &[Template] = &[
    Template {
        key: "life-coach",
        name: "Life & business coach",
        description: "Helps clients clarify goals, turn them into objectives with key results, and keep commitments between sessions.",
        persona: "You are a warm, direct life and business coach. Ask one question at a time. \
Help the client clarify what they want, turn it into a goal with measurable key results, and \
agree on the next small step. Remind them of what they committed to. Never give medical, legal \
or financial advice; suggest a professional instead. Keep answers short.",
        tools: WITH_REMINDERS,
    },
    Template {
        key: "sport-coach",
        name: "Sport coach",
        description: "Endurance coach: training load, recovery, periodised plans, and the athlete's constraints.",
        persona: "You are an endurance sport coach. Ask about recent training, sleep, fatigue and \
pain before suggesting anything. Plan progressively (no more than 10% more volume per week), \
respect rest days, and adapt to the athlete's schedule and constraints. If the athlete reports \
pain or illness, advise rest and a medical opinion. Keep answers short and concrete.",
        tools: WITH_REMINDERS,
    },
    Template {
        key: "career-coach",
        name: "Career coach (Socratic)",
        description: "Walks a student through the phases of an internship search by asking questions rather than giving answers.",
        persona: "You are a Socratic career coach for students looking for an internship. Do not \
hand out answers: ask one open question at a time that helps the student discover their \
strengths, the companies that fit them, and how to present themselves. When the student shows \
a competence, name it and record it. Encourage, stay concrete, keep answers short.",
        tools: WITHOUT_REMINDERS,
    },
    Template {
        key: "adhd-assistant",
        name: "ADHD assistant",
        description: "A patient daily assistant by SMS: breaks tasks into small steps, sets reminders, remembers what matters.",
        persona: "You are a patient assistant for a person with ADHD. Write very short messages \
(two sentences at most). Break any task into one small next step. Offer to set a reminder for \
it. Never judge a missed task; help restart. Remember routines, preferences and commitments.",
        tools: WITH_REMINDERS,
    },
];

/// The template called `key`.
pub fn template(key: &str) -> Result<&'static Template> {
    TEMPLATES.iter().find(|t| t.key == key).ok_or_else(|| {
        let keys: Vec<&str> = TEMPLATES.iter().map(|t| t.key).collect();
        Error::invalid(
            "template",
            format!("unknown template '{key}'; one of: {}", keys.join(", ")),
        )
    })
}

/// Validate a name: trimmed, non-empty, bounded.
pub fn parse_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() {
        return Err(Error::invalid("name", "must not be empty"));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(Error::invalid(
            "name",
            format!("at most {MAX_NAME_CHARS} characters"),
        ));
    }
    Ok(name.to_owned())
}

fn check_params(p: &GenerationParams) -> Result<()> {
    if p.max_tokens == 0 || p.max_tokens > 8_192 {
        return Err(Error::invalid(
            "params.max_tokens",
            "must be between 1 and 8192",
        ));
    }
    if !(0.0..=2.0).contains(&p.temperature) {
        return Err(Error::invalid(
            "params.temperature",
            "must be between 0 and 2",
        ));
    }
    if !(p.top_p > 0.0 && p.top_p <= 1.0) {
        return Err(Error::invalid("params.top_p", "must be in (0, 1]"));
    }
    if p.stop.len() > 8 || p.stop.iter().any(|s| s.is_empty() || s.len() > 64) {
        return Err(Error::invalid(
            "params.stop",
            "at most 8 non-empty stop sequences of up to 64 bytes",
        ));
    }
    Ok(())
}

fn check_memory(m: &MemoryPolicy) -> Result<()> {
    if m.recall_limit > 32 {
        return Err(Error::invalid("memory.recall_limit", "at most 32"));
    }
    if !(128..=131_072).contains(&m.window_tokens) {
        return Err(Error::invalid(
            "memory.window_tokens",
            "must be between 128 and 131072",
        ));
    }
    Ok(())
}

fn check_budget(b: &Budget) -> Result<()> {
    if let Some(c) = b.monthly_cost_usd
        && !(c.is_finite() && c >= 0.0)
    {
        return Err(Error::invalid(
            "budget.monthly_cost_usd",
            "must be a non-negative number",
        ));
    }
    Ok(())
}

impl Agent {
    /// Build a new agent from input, a template and defaults. `known_tools` are the names the
    /// runtime can run; any other name is refused.
    pub fn create(
        tenant_id: TenantId,
        owner_id: Option<UserId>,
        input: AgentInput,
        known_tools: &[&str],
    ) -> Result<Self> {
        let tpl = input.template.as_deref().map(template).transpose()?;
        let name = match (&input.name, tpl) {
            (Some(n), _) => parse_name(n)?,
            (None, Some(t)) => t.name.to_owned(),
            (None, None) => return Err(Error::invalid("name", "is required")),
        };
        let now = crate::now();
        let mut agent = Self {
            id: AgentId::generate(),
            tenant_id,
            owner_id,
            name,
            persona: tpl.map(|t| t.persona.to_owned()).unwrap_or_default(),
            model: DEFAULT_MODEL.to_owned(),
            params: GenerationParams::default(),
            tools: tpl
                .map(|t| t.tools.iter().map(|s| (*s).to_owned()).collect())
                .unwrap_or_default(),
            approval_tools: Vec::new(),
            collections: Vec::new(),
            memory: MemoryPolicy::default(),
            budget: Budget::default(),
            template: tpl.map(|t| t.key.to_owned()),
            created_at: now,
            updated_at: now,
        };
        agent.apply(input, known_tools)?;
        Ok(agent)
    }

    /// Apply the set fields of `input` (the template and owner are not changed here).
    pub fn apply(&mut self, input: AgentInput, known_tools: &[&str]) -> Result<()> {
        if let Some(n) = input.name {
            self.name = parse_name(&n)?;
        }
        if let Some(p) = input.persona {
            if p.chars().count() > MAX_PERSONA_CHARS {
                return Err(Error::invalid(
                    "persona",
                    format!("at most {MAX_PERSONA_CHARS} characters"),
                ));
            }
            self.persona = p;
        }
        if let Some(m) = input.model {
            let m = m.trim();
            if m.is_empty() || m.len() > 128 {
                return Err(Error::invalid("model", "must be 1 to 128 characters"));
            }
            self.model = m.to_owned();
        }
        if let Some(p) = input.params {
            check_params(&p)?;
            self.params = p;
        }
        if let Some(mut tools) = input.tools {
            tools.sort();
            tools.dedup();
            if let Some(bad) = tools.iter().find(|t| !known_tools.contains(&t.as_str())) {
                return Err(Error::invalid(
                    "tools",
                    format!(
                        "unknown tool '{bad}'; available: {}",
                        known_tools.join(", ")
                    ),
                ));
            }
            self.tools = tools;
        }
        if let Some(mut sensitive) = input.approval_tools {
            sensitive.sort();
            sensitive.dedup();
            if let Some(bad) = sensitive.iter().find(|t| !self.tools.contains(t)) {
                return Err(Error::invalid(
                    "approval_tools",
                    format!("'{bad}' is not among the agent's tools"),
                ));
            }
            self.approval_tools = sensitive;
        }
        if let Some(c) = input.collections {
            if c.len() > 64 {
                return Err(Error::invalid("collections", "at most 64 collections"));
            }
            self.collections = c;
        }
        if let Some(m) = input.memory {
            check_memory(&m)?;
            self.memory = m;
        }
        if let Some(b) = input.budget {
            check_budget(&b)?;
            self.budget = b;
        }
        self.updated_at = crate::now();
        Ok(())
    }

    /// Whether the agent may call `tool`.
    pub fn allows(&self, tool: &str) -> bool {
        self.tools.iter().any(|t| t == tool)
    }

    /// Whether calls of `tool` wait for the coach's approval.
    pub fn needs_approval(&self, tool: &str) -> bool {
        self.approval_tools.iter().any(|t| t == tool)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOOLS: &[&str] = &[
        "remember",
        "recall",
        "update_profile",
        "create_goal",
        "update_goal",
        "list_goals",
        "schedule_reminder",
    ];

    #[test]
    fn templates_create_working_agents() {
        for t in TEMPLATES {
            let a = Agent::create(
                TenantId::generate(),
                None,
                AgentInput {
                    template: Some(t.key.into()),
                    ..Default::default()
                },
                TOOLS,
            )
            .unwrap();
            assert_eq!(a.name, t.name);
            assert!(!a.persona.is_empty());
            assert!(a.allows("remember"));
            assert_eq!(a.template.as_deref(), Some(t.key));
        }
    }

    #[test]
    fn bad_input_is_refused_with_the_field() {
        let t = TenantId::generate();
        let err = |input: AgentInput| Agent::create(t, None, input, TOOLS).unwrap_err();
        assert!(matches!(
            err(AgentInput::default()),
            Error::Invalid { field: "name", .. }
        ));
        assert!(matches!(
            err(AgentInput { name: Some("x".into()), tools: Some(vec!["rm_rf".into()]), ..Default::default() }),
            Error::Invalid { field: "tools", message } if message.contains("rm_rf")
        ));
        assert!(matches!(
            err(AgentInput {
                name: Some("x".into()),
                template: Some("nope".into()),
                ..Default::default()
            }),
            Error::Invalid {
                field: "template",
                ..
            }
        ));
        assert!(matches!(
            err(AgentInput {
                name: Some("x".into()),
                params: Some(GenerationParams {
                    temperature: 9.0,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            Error::Invalid {
                field: "params.temperature",
                ..
            }
        ));
        assert!(matches!(
            err(AgentInput {
                name: Some("x".into()),
                budget: Some(Budget {
                    monthly_cost_usd: Some(-1.0),
                    monthly_tokens: None
                }),
                ..Default::default()
            }),
            Error::Invalid {
                field: "budget.monthly_cost_usd",
                ..
            }
        ));
    }
}
