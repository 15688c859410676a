//! The tools an agent may call. Each tool has a JSON schema for its arguments; the runtime
//! checks the agent's permission and validates the arguments before running it, and a refused
//! or failing call goes back to the model as an error result, never to the client as a 500.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use coachlibre_core::agent::Agent;
use coachlibre_core::goal::{Goal, GoalStatus, GoalUpdate, GoalView, KeyResult, Reminder};
use coachlibre_core::ids::{ConversationId, GoalId, TenantId, UserId};
use coachlibre_core::knowledge::{KnowledgeSource, Passage};
use coachlibre_core::memory::{MemoryKind, PROFILE_FIELDS};
use coachlibre_core::model::{EmbeddingModel, ToolSpec};
use coachlibre_core::store::Store;
use serde_json::{Value, json};

use crate::memory::Memories;

/// Everything a tool call may touch: one client of one tenant.
pub struct ToolContext<'a> {
    pub store: &'a Arc<dyn Store>,
    pub embedder: Option<Arc<dyn EmbeddingModel>>,
    pub tenant: TenantId,
    pub client: UserId,
    pub conversation: Option<ConversationId>,
    pub agent: &'a Agent,
    /// Where `search_knowledge` looks.
    pub knowledge: Option<&'a Arc<dyn KnowledgeSource>>,
    /// Passages already given to the model this turn (new ones are numbered after them).
    pub sources_before: usize,
}

impl std::fmt::Debug for ToolContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolContext")
            .field("tenant", &self.tenant)
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

/// Why a call did not run; the message goes back to the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolError(pub String);

impl std::fmt::Display for ToolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<coachlibre_core::Error> for ToolError {
    fn from(e: coachlibre_core::Error) -> Self {
        match e {
            coachlibre_core::Error::Internal(_) => Self("the tool failed; try again later".into()),
            other => Self(other.to_string()),
        }
    }
}

impl From<coachlibre_core::store::StoreError> for ToolError {
    fn from(e: coachlibre_core::store::StoreError) -> Self {
        coachlibre_core::Error::from(e).into()
    }
}

/// A built-in tool.
#[derive(Debug, Clone, Copy)]
pub struct Tool {
    pub name: &'static str,
    pub description: &'static str,
    parameters: fn() -> Value,
}

impl Tool {
    /// The tool as the model sees it.
    pub fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: self.name.to_owned(),
            description: self.description.to_owned(),
            parameters: (self.parameters)(),
        }
    }
}

/// Every built-in tool.
pub const BUILTIN: &[Tool] = &[
    Tool {
        name: "remember",
        description: "Save a lasting fact, commitment, preference, progress or constraint about the client.",
        parameters: || {
            json!({"type": "object", "required": ["content"], "additionalProperties": false,
            "properties": {
                "content": {"type": "string", "minLength": 1, "maxLength": 1000},
                "kind": {"type": "string", "enum": ["fact", "commitment", "preference", "progress", "constraint"]},
                "key": {"type": "string", "maxLength": 64}
            }})
        },
    },
    Tool {
        name: "recall",
        description: "Search what is remembered about the client and past conversations.",
        parameters: || {
            json!({"type": "object", "required": ["query"], "additionalProperties": false,
                "properties": {"query": {"type": "string", "minLength": 1, "maxLength": 500}}})
        },
    },
    Tool {
        name: "update_profile",
        description: "Update the client's profile: name, goals, preferences, constraints or notes.",
        parameters: || {
            json!({"type": "object", "required": ["field", "value"], "additionalProperties": false,
            "properties": {
                "field": {"type": "string", "enum": PROFILE_FIELDS},
                "value": {"type": "string", "maxLength": 500}
            }})
        },
    },
    Tool {
        name: "create_goal",
        description: "Create a goal for the client, with measurable key results.",
        parameters: || {
            json!({"type": "object", "required": ["title"], "additionalProperties": false,
            "properties": {
                "title": {"type": "string", "minLength": 1, "maxLength": 200},
                "description": {"type": "string", "maxLength": 2000},
                "due_date": {"type": "string", "description": "YYYY-MM-DD"},
                "key_results": {"type": "array", "maxItems": 10, "items": {
                    "type": "object", "required": ["title", "target"],
                    "properties": {
                        "title": {"type": "string"},
                        "target": {"type": "number"},
                        "current": {"type": "number"},
                        "unit": {"type": "string"}
                    }}}
            }})
        },
    },
    Tool {
        name: "update_goal",
        description: "Update a goal: its status, or the current value of one key result.",
        parameters: || {
            json!({"type": "object", "required": ["goal_id"], "additionalProperties": false,
            "properties": {
                "goal_id": {"type": "string"},
                "status": {"type": "string", "enum": ["active", "achieved", "abandoned"]},
                "key_result_index": {"type": "integer", "minimum": 0},
                "current": {"type": "number"}
            }})
        },
    },
    Tool {
        name: "list_goals",
        description: "List the client's goals with their progress.",
        parameters: || json!({"type": "object", "additionalProperties": false, "properties": {}}),
    },
    Tool {
        name: "schedule_reminder",
        description: "Schedule a reminder for the client, at a time (RFC 3339) or in a number of minutes.",
        parameters: || {
            json!({"type": "object", "required": ["text"], "additionalProperties": false,
            "properties": {
                "text": {"type": "string", "minLength": 1, "maxLength": 500},
                "at": {"type": "string", "description": "RFC 3339 date and time"},
                "in_minutes": {"type": "integer", "minimum": 1, "maximum": 525600}
            }})
        },
    },
    Tool {
        name: "search_knowledge",
        description: "Search your coach's material (programs, worksheets, articles) for passages to answer from; cite them by their number.",
        parameters: || {
            json!({"type": "object", "required": ["query"], "additionalProperties": false,
            "properties": {
                "query": {"type": "string", "minLength": 1, "maxLength": 500},
                "limit": {"type": "integer", "minimum": 1, "maximum": 8}
            }})
        },
    },
];

/// The passages in a `search_knowledge` result.
pub fn passages_of(result: &Value) -> Vec<Passage> {
    result
        .get("passages")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|p| serde_json::from_value(p.clone()).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Names of every built-in tool.
pub fn names() -> Vec<&'static str> {
    BUILTIN.iter().map(|t| t.name).collect()
}

/// The tool called `name`.
pub fn find(name: &str) -> Option<&'static Tool> {
    BUILTIN.iter().find(|t| t.name == name)
}

/// The specs of the tools `agent` may call.
pub fn specs_for(agent: &Agent) -> Vec<ToolSpec> {
    BUILTIN
        .iter()
        .filter(|t| agent.allows(t.name))
        .map(Tool::spec)
        .collect()
}

/// Check permission and arguments without running the call.
pub fn check(agent: &Agent, name: &str, args: &Value) -> Result<&'static Tool, ToolError> {
    let tool = find(name).ok_or_else(|| ToolError(format!("there is no tool named '{name}'")))?;
    if !agent.allows(name) {
        return Err(ToolError(format!(
            "this agent is not allowed to use '{name}'"
        )));
    }
    coachlibre_core::schema::validate(&(tool.parameters)(), args).map_err(|errors| {
        ToolError(format!(
            "invalid arguments for '{name}': {}",
            errors.join("; ")
        ))
    })?;
    Ok(tool)
}

fn str_arg<'a>(args: &'a Value, key: &str) -> Option<&'a str> {
    args.get(key).and_then(Value::as_str)
}

/// Run a call that [`check`] accepted.
pub async fn execute(ctx: &ToolContext<'_>, name: &str, args: &Value) -> Result<Value, ToolError> {
    let memories = Memories::new(ctx.store.clone(), ctx.embedder.clone());
    match name {
        "remember" => {
            let kind = str_arg(args, "kind")
                .and_then(MemoryKind::parse)
                .unwrap_or(MemoryKind::Fact);
            let key = str_arg(args, "key").map(str::to_owned);
            let content = str_arg(args, "content").unwrap_or_default();
            let m = memories
                .remember(ctx.tenant, ctx.client, kind, key, content, "tool")
                .await?;
            Ok(json!({"remembered": m.content, "id": m.id}))
        }
        "search_knowledge" => {
            let Some(k) = ctx.knowledge else {
                return Err(ToolError("no knowledge base is configured".into()));
            };
            if ctx.agent.collections.is_empty() {
                return Err(ToolError(
                    "this agent has no knowledge collections to search".into(),
                ));
            }
            let query = str_arg(args, "query").unwrap_or_default();
            let limit = args
                .get("limit")
                .and_then(Value::as_u64)
                .and_then(|l| usize::try_from(l).ok())
                .unwrap_or(3);
            let found = k
                .retrieve(ctx.tenant, &ctx.agent.collections, query, limit)
                .await?;
            let passages: Vec<Value> = found
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let mut v = serde_json::to_value(p).unwrap_or(Value::Null);
                    if let Some(o) = v.as_object_mut() {
                        o.insert("source".into(), json!(ctx.sources_before + i + 1));
                    }
                    v
                })
                .collect();
            Ok(json!({"passages": passages}))
        }
        "recall" => {
            let query = str_arg(args, "query").unwrap_or_default();
            let found = memories.recall(ctx.tenant, ctx.client, query, 5).await?;
            let messages = ctx
                .store
                .search_messages(ctx.tenant, ctx.client, query, 5)
                .await?;
            Ok(json!({
                "memories": found.iter().map(|m| json!({"kind": m.kind, "content": m.content})).collect::<Vec<_>>(),
                "messages": messages.iter().map(|m| json!({"role": m.role, "content": m.content, "at": m.created_at})).collect::<Vec<_>>(),
            }))
        }
        "update_profile" => {
            let field = str_arg(args, "field").unwrap_or_default();
            let value = str_arg(args, "value").unwrap_or_default();
            let mut p = ctx.store.get_profile(ctx.tenant, ctx.client).await?;
            p.set(field, value)?;
            ctx.store.put_profile(ctx.tenant, ctx.client, &p).await?;
            Ok(json!({"updated": field}))
        }
        "create_goal" => {
            let krs: Vec<KeyResult> = match args.get("key_results") {
                Some(v) => serde_json::from_value(v.clone())
                    .map_err(|e| ToolError(format!("key_results: {e}")))?,
                None => Vec::new(),
            };
            let due = match str_arg(args, "due_date") {
                Some(d) => Some(
                    d.parse::<chrono::NaiveDate>()
                        .map_err(|_| ToolError("due_date must be YYYY-MM-DD".into()))?,
                ),
                None => None,
            };
            let g = Goal::new(
                ctx.tenant,
                ctx.client,
                str_arg(args, "title").unwrap_or_default(),
                str_arg(args, "description"),
                krs,
                due,
            )?;
            ctx.store.insert_goal(&g).await?;
            Ok(json!({"goal_id": g.id, "title": g.title}))
        }
        "update_goal" => {
            let id: GoalId = str_arg(args, "goal_id")
                .unwrap_or_default()
                .parse()
                .map_err(|_| ToolError("goal_id is not a goal id".into()))?;
            let mut g = ctx
                .store
                .get_goal(ctx.tenant, id)
                .await?
                .filter(|g| g.client_id == ctx.client)
                .ok_or_else(|| ToolError("no such goal".into()))?;
            let progress = match (args.get("key_result_index"), args.get("current")) {
                (Some(i), Some(c)) => Some((
                    i.as_u64()
                        .and_then(|i| usize::try_from(i).ok())
                        .ok_or_else(|| ToolError("key_result_index".into()))?,
                    c.as_f64()
                        .ok_or_else(|| ToolError("current must be a number".into()))?,
                )),
                (None, None) => None,
                _ => {
                    return Err(ToolError("give both key_result_index and current".into()));
                }
            };
            let was_achieved = g.status == GoalStatus::Achieved;
            g.update(GoalUpdate {
                status: str_arg(args, "status").and_then(GoalStatus::parse),
                key_result_progress: progress,
                ..Default::default()
            })?;
            ctx.store.update_goal(&g).await?;
            let achieved_now = !was_achieved && g.status == GoalStatus::Achieved;
            let view = GoalView::from(g);
            Ok(json!({
                "goal_id": view.goal.id,
                "title": view.goal.title,
                "status": view.goal.status,
                "progress": view.progress,
                "achieved_now": achieved_now,
            }))
        }
        "list_goals" => {
            let goals = ctx.store.list_goals(ctx.tenant, ctx.client).await?;
            Ok(json!({"goals": goals.into_iter().map(|g| {
                let v = GoalView::from(g);
                json!({"goal_id": v.goal.id, "title": v.goal.title, "status": v.goal.status,
                       "progress": v.progress, "key_results": v.goal.key_results})
            }).collect::<Vec<_>>()}))
        }
        "schedule_reminder" => {
            let due: DateTime<Utc> = match (str_arg(args, "at"), args.get("in_minutes")) {
                (Some(at), None) => DateTime::parse_from_rfc3339(at)
                    .map_err(|_| ToolError("at must be an RFC 3339 date and time".into()))?
                    .with_timezone(&Utc),
                (None, Some(m)) => {
                    let minutes = m
                        .as_i64()
                        .ok_or_else(|| ToolError("in_minutes must be an integer".into()))?;
                    coachlibre_core::now() + chrono::Duration::minutes(minutes)
                }
                _ => return Err(ToolError("give either at or in_minutes".into())),
            };
            let r = Reminder::new(
                ctx.tenant,
                ctx.client,
                ctx.conversation,
                str_arg(args, "text").unwrap_or_default(),
                due,
            )?;
            ctx.store.insert_reminder(&r).await?;
            Ok(json!({"reminder_id": r.id, "due_at": r.due_at}))
        }
        other => Err(ToolError(format!("there is no tool named '{other}'"))),
    }
}
