//! Workflow definitions: steps, their dependencies, and the checks that make a DAG of them.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A workflow: named steps, each run once all the steps it `needs` are done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workflow {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Events that start a run (besides the API, webhooks, schedules and the CLI); the run's
    /// input is the event's data with its kind under `event`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on: Vec<coachlibre_core::event::EventKind>,
    pub steps: Vec<Step>,
}

/// One step. (Unknown fields cannot be refused here: serde does not combine that with the
/// flattened action.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub id: String,
    /// Steps that must be done first (their outputs are `{{steps.ID...}}`).
    #[serde(default)]
    pub needs: Vec<String>,
    /// Attempts before the step (and the run) fails; default 2.
    #[serde(default = "two")]
    pub attempts: u32,
    #[serde(flatten)]
    pub action: Action,
}

fn two() -> u32 {
    2
}

/// What a step does. Strings in inputs and templates take `{{input.x}}`, `{{steps.ID.y}}` and,
/// in a map, `{{item}}`; a string that is only a placeholder takes the value itself (an
/// object, a list).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// Run a skill; the output is the skill's output (`text`, `data`, ...).
    Skill { skill: String, input: Value },
    /// Fan-out: run a skill once per element of a list; the output is the list of outputs.
    Map {
        over: String,
        skill: String,
        input: Value,
    },
    /// Fan-in: join what earlier steps produced into one text (`{"text": ...}`).
    Aggregate { template: String },
    /// Go on only if the value at `path` equals `equals` (or, as text, contains `contains`);
    /// otherwise the steps that need this one are skipped. Output: `{"passed": bool}`.
    Condition {
        path: String,
        #[serde(default)]
        equals: Option<Value>,
        #[serde(default)]
        contains: Option<String>,
    },
    /// Shape data: the output is `value` with its placeholders filled.
    Transform { value: Value },
    /// One turn of an agent with a client: `message` is an instruction to the agent (not
    /// stored, not shown); the agent answers with its persona, what it knows of the client,
    /// its tools and its material, and the answer is written into its conversation with the
    /// client (the latest, or a new one). `agent` and `client` are ids (placeholders allowed).
    /// Output: `{"text", "message_id", "conversation_id", "citations"}`.
    Agent {
        agent: String,
        client: String,
        message: String,
    },
    /// Call one of an agent's tools for a client (`create_goal`, `schedule_reminder`...), as
    /// that agent (it must have the tool). Output: the tool's result.
    Tool {
        tool: String,
        agent: String,
        client: String,
        #[serde(default)]
        arguments: Value,
    },
    /// One role of a crew: a worker drafts, a supervisor checks the draft against each
    /// criterion, the worker revises with the critique, until the acceptance gate passes
    /// (every criterion met) or `max_rounds` is reached (the step then fails, with the
    /// reasons). The worker sees the texts of the steps it needs. Output: `{"text",
    /// "accepted": true, "rounds": [{"round", "unmet", "feedback"}]}`.
    Crew {
        role: String,
        task: String,
        criteria: Vec<String>,
        #[serde(default = "three")]
        max_rounds: u32,
    },
}

fn three() -> u32 {
    3
}

/// Why a definition was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DefinitionError(pub String);

fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl Workflow {
    /// Parse and check a definition.
    pub fn parse(v: &Value) -> Result<Self, DefinitionError> {
        let w: Workflow =
            serde_json::from_value(v.clone()).map_err(|e| DefinitionError(e.to_string()))?;
        w.check()?;
        Ok(w)
    }

    fn check(&self) -> Result<(), DefinitionError> {
        let bad = |m: String| Err(DefinitionError(m));
        if !valid_name(&self.name) {
            return bad(format!(
                "name '{}': 1 to 64 lowercase letters, digits, '-' or '_'",
                self.name
            ));
        }
        if self.steps.is_empty() || self.steps.len() > 200 {
            return bad("a workflow has 1 to 200 steps".into());
        }
        let mut ids = BTreeSet::new();
        for s in &self.steps {
            if !valid_name(&s.id) {
                return bad(format!(
                    "step id '{}': lowercase letters, digits, '-' or '_'",
                    s.id
                ));
            }
            if !ids.insert(s.id.as_str()) {
                return bad(format!("two steps are called '{}'", s.id));
            }
            if !(1..=10).contains(&s.attempts) {
                return bad(format!("step '{}': attempts must be 1 to 10", s.id));
            }
            if let Action::Crew {
                criteria,
                max_rounds,
                ..
            } = &s.action
                && (criteria.is_empty() || !(1..=10).contains(max_rounds))
            {
                return bad(format!(
                    "step '{}': a crew role needs criteria and 1 to 10 rounds",
                    s.id
                ));
            }
        }
        for s in &self.steps {
            let mut seen = BTreeSet::new();
            for n in &s.needs {
                if !seen.insert(n.as_str()) {
                    return bad(format!("step '{}' needs '{n}' twice", s.id));
                }
                if !ids.contains(n.as_str()) {
                    return bad(format!("step '{}' needs '{n}', which does not exist", s.id));
                }
            }
        }
        // A DAG: every step can be ordered after what it needs.
        let mut done: BTreeSet<&str> = BTreeSet::new();
        while done.len() < self.steps.len() {
            let before = done.len();
            for s in &self.steps {
                if !done.contains(s.id.as_str())
                    && s.needs.iter().all(|n| done.contains(n.as_str()))
                {
                    done.insert(&s.id);
                }
            }
            if done.len() == before {
                let stuck: Vec<&str> = self
                    .steps
                    .iter()
                    .map(|s| s.id.as_str())
                    .filter(|id| !done.contains(id))
                    .collect();
                return bad(format!(
                    "the steps {} depend on each other in a cycle",
                    stuck.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// The skills the steps use (to check they exist when saving).
    pub fn skills(&self) -> BTreeSet<&str> {
        self.steps
            .iter()
            .filter_map(|s| match &s.action {
                Action::Skill { skill, .. } | Action::Map { skill, .. } => Some(skill.as_str()),
                _ => None,
            })
            .chain(
                self.steps
                    .iter()
                    .filter(|s| matches!(s.action, Action::Crew { .. }))
                    .flat_map(|_| [crate::CREW_WORKER, crate::CREW_SUPERVISOR]),
            )
            .collect()
    }

    /// Steps that (directly or not) need `id`.
    pub fn dependents(&self, id: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut frontier = vec![id.to_owned()];
        while let Some(cur) = frontier.pop() {
            for s in &self.steps {
                if s.needs.contains(&cur) && out.insert(s.id.clone()) {
                    frontier.push(s.id.clone());
                }
            }
        }
        out
    }
}

/// The value at a dotted path (`steps.summary.text`, `input.items.0`).
pub fn lookup<'a>(ctx: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(ctx, |v, key| match v {
        Value::Object(m) => m.get(key),
        Value::Array(a) => key.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

/// Fill the placeholders of a value from `ctx`.
pub fn render(value: &Value, ctx: &Value) -> Value {
    match value {
        Value::String(s) => {
            let t = s.trim();
            if t.starts_with("{{") && t.ends_with("}}") && t[2..t.len() - 2].find("{{").is_none() {
                return lookup(ctx, t[2..t.len() - 2].trim())
                    .cloned()
                    .unwrap_or(Value::Null);
            }
            Value::String(render_text(s, ctx))
        }
        Value::Array(a) => Value::Array(a.iter().map(|v| render(v, ctx)).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), render(v, ctx)))
                .collect::<serde_json::Map<_, _>>(),
        ),
        other => other.clone(),
    }
}

/// Fill placeholders in a text (strings as they are, other values as JSON).
pub fn render_text(s: &str, ctx: &Value) -> String {
    coachlibre_skills::template::fill(s, |path| lookup(ctx, path))
}

/// Outputs of finished steps, as the context of templates.
pub fn context(input: &Value, outputs: &BTreeMap<String, Value>, item: Option<&Value>) -> Value {
    let mut ctx = serde_json::json!({"input": input, "steps": outputs});
    if let (Some(item), Some(m)) = (item, ctx.as_object_mut()) {
        m.insert("item".into(), item.clone());
    }
    ctx
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn definitions_are_checked() {
        let ok = json!({"name": "onboarding", "steps": [
            {"id": "a", "kind": "transform", "value": {"x": "{{input.x}}"}},
            {"id": "b", "kind": "aggregate", "template": "{{steps.a.x}}", "needs": ["a"]}
        ]});
        let w = Workflow::parse(&ok).unwrap();
        assert_eq!(w.steps[0].attempts, 2);
        assert_eq!(w.dependents("a"), BTreeSet::from(["b".to_owned()]));
        let cycle = json!({"name": "c", "steps": [
            {"id": "a", "kind": "transform", "value": 1, "needs": ["b"]},
            {"id": "b", "kind": "transform", "value": 1, "needs": ["a"]}
        ]});
        assert!(Workflow::parse(&cycle).unwrap_err().0.contains("cycle"));
        let missing = json!({"name": "m", "steps": [{"id": "a", "kind": "transform", "value": 1, "needs": ["z"]}]});
        assert!(Workflow::parse(&missing).unwrap_err().0.contains("'z'"));
        let dup = json!({"name": "d", "steps": [
            {"id": "a", "kind": "transform", "value": 1}, {"id": "a", "kind": "transform", "value": 2}]});
        assert!(Workflow::parse(&dup).is_err());
        let twice = json!({"name": "t", "steps": [
            {"id": "a", "kind": "transform", "value": 1},
            {"id": "b", "kind": "transform", "value": 2, "needs": ["a", "a"]}]});
        assert!(Workflow::parse(&twice).unwrap_err().0.contains("twice"));
        assert!(
            Workflow::parse(&json!({"name": "x", "steps": [{"id": "a", "kind": "fly"}]})).is_err()
        );
    }

    #[test]
    fn templates() {
        let ctx = json!({"input": {"n": 3, "who": "Ana", "list": [1, 2]}, "steps": {"a": {"text": "hi"}}});
        assert_eq!(render(&json!("{{input.list}}"), &ctx), json!([1, 2]));
        assert_eq!(render(&json!("{{ input.n }}"), &ctx), json!(3));
        assert_eq!(
            render(
                &json!("Dear {{input.who}}: {{steps.a.text}} x{{input.n}}"),
                &ctx
            ),
            json!("Dear Ana: hi x3")
        );
        assert_eq!(
            render(&json!({"k": ["{{input.list.1}}"]}), &ctx),
            json!({"k": [2]})
        );
        assert_eq!(render(&json!("{{nope}}"), &ctx), Value::Null);
    }
}
