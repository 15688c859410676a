//! One skill: its definition, checks, prompt and run.

use coachlibre_core::ids::TenantId;
use coachlibre_core::model::{
    ChatEvent, ChatMessage, ChatModel, ChatRequest, GenerationParams, ToolCall, ToolSpec, Usage,
};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::tools::SkillTools;

/// What a skill's answer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// Text with Markdown headings; `sections` must each appear as a heading.
    #[default]
    Markdown,
    /// A JSON value matching `schema`.
    Json,
}

/// The output part of a definition.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    #[serde(default)]
    pub format: OutputFormat,
    #[serde(default)]
    pub sections: Vec<String>,
    #[serde(default)]
    pub schema: Option<Value>,
}

/// A parsed and checked skill.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Skill {
    pub name: String,
    pub category: String,
    pub description: String,
    #[serde(default = "one")]
    pub version: u32,
    /// The model to use (default: the configured skills model).
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub system: Option<String>,
    pub prompt: String,
    #[serde(default)]
    pub allowed_tools: Vec<String>,
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    #[serde(default = "default_temperature")]
    pub temperature: f32,
    /// JSON Schema of the input object.
    pub input: Value,
    #[serde(default)]
    pub output: OutputSpec,
}

fn one() -> u32 {
    1
}

fn default_max_tokens() -> u32 {
    600
}

fn default_temperature() -> f32 {
    0.3
}

/// Why a skill could not be defined or run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SkillError {
    /// The definition or the input is wrong (not worth retrying).
    #[error("{0}")]
    Invalid(String),
    /// The model failed or is missing (worth retrying later).
    #[error("model: {0}")]
    Model(String),
    /// The model's answer did not have the required shape, even after a second chance.
    #[error("the answer did not match the skill's output: {0}")]
    Output(String),
}

/// A run's result (stored as the job's result).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SkillOutput {
    pub skill: String,
    pub format: OutputFormat,
    /// The answer as written (Markdown, or the JSON text).
    pub text: String,
    /// JSON skills: the parsed value.
    pub data: Option<Value>,
    pub model: String,
    pub usage: Usage,
    /// True when the first answer was sent back once for not matching the output.
    pub corrected: bool,
    /// The tools the model called, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools_used: Vec<String>,
}

/// Allowed in names: lowercase letters, digits and '-' (they appear in URLs).
fn valid_name(s: &str) -> bool {
    (2..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
}

impl Skill {
    /// Parse a TOML definition and check it is usable.
    pub fn parse(text: &str) -> Result<Self, SkillError> {
        let skill: Skill = toml::from_str(text).map_err(|e| SkillError::Invalid(e.to_string()))?;
        skill.check()?;
        Ok(skill)
    }

    fn check(&self) -> Result<(), SkillError> {
        let bad = |m: String| Err(SkillError::Invalid(m));
        if !valid_name(&self.name) {
            return bad(format!(
                "name '{}': 2 to 64 lowercase letters, digits or '-'",
                self.name
            ));
        }
        if self.description.trim().is_empty() || self.prompt.trim().is_empty() {
            return bad("description and prompt must not be empty".into());
        }
        if let Some(t) = self
            .allowed_tools
            .iter()
            .find(|t| !crate::tools::NAMES.contains(&t.as_str()))
        {
            return bad(format!(
                "allowed_tools: there is no tool '{t}' (skills may use {})",
                crate::tools::NAMES.join(", ")
            ));
        }
        let props = self
            .input
            .get("properties")
            .and_then(Value::as_object)
            .filter(|_| self.input.get("type").and_then(Value::as_str) == Some("object"));
        let Some(props) = props else {
            return bad("input must be an object schema with properties".into());
        };
        for p in crate::template::placeholders(&self.prompt)
            .into_iter()
            .chain(
                self.system
                    .as_deref()
                    .map(crate::template::placeholders)
                    .unwrap_or_default(),
            )
        {
            if !props.contains_key(p) {
                return bad(format!(
                    "the prompt uses {{{{{p}}}}}, which the input does not define"
                ));
            }
        }
        if !(1..=8192).contains(&self.max_tokens) {
            return bad("max_tokens must be 1 to 8192".into());
        }
        if self.output.format == OutputFormat::Json && self.output.schema.is_none() {
            return bad("a JSON output needs output.schema".into());
        }
        Ok(())
    }

    /// Every violation of the input schema.
    pub fn check_input(&self, input: &Value) -> Result<(), Vec<String>> {
        coachlibre_core::schema::validate(&self.input, input)
    }

    /// The template with the input's fields in place (strings as they are, other values as
    /// JSON, absent optional fields as empty).
    pub fn render(&self, template: &str, input: &Value) -> String {
        crate::template::fill(template, |k| input.get(k))
    }

    /// What is wrong with an answer, if anything.
    fn problems(&self, text: &str) -> (Option<Value>, Vec<String>) {
        match self.output.format {
            OutputFormat::Markdown => {
                let headings: Vec<String> = text
                    .lines()
                    .map(str::trim_start)
                    .filter(|l| l.starts_with('#'))
                    .map(|l| l.trim_start_matches('#').trim().to_lowercase())
                    .collect();
                let missing = self
                    .output
                    .sections
                    .iter()
                    .filter(|s| {
                        let s = s.to_lowercase();
                        !headings.iter().any(|h| h.contains(&s))
                    })
                    .map(|s| format!("missing the section '## {s}'"))
                    .collect();
                (None, missing)
            }
            OutputFormat::Json => match extract_json(text) {
                None => (None, vec!["the answer is not a JSON object".into()]),
                Some(v) => {
                    let errors = match &self.output.schema {
                        Some(schema) => coachlibre_core::schema::validate(schema, &v)
                            .err()
                            .unwrap_or_default(),
                        None => Vec::new(),
                    };
                    (Some(v), errors)
                }
            },
        }
    }

    fn instructions(&self) -> String {
        match self.output.format {
            OutputFormat::Markdown if !self.output.sections.is_empty() => format!(
                "\n\nAnswer in Markdown with exactly these sections, each under a '## ' \
                 heading: {}.",
                self.output.sections.join(", ")
            ),
            OutputFormat::Markdown => String::new(),
            OutputFormat::Json => format!(
                "\n\nAnswer with one JSON object only, no prose, matching this JSON Schema: {}",
                self.output.schema.clone().unwrap_or_default()
            ),
        }
    }
}

/// The first balanced `{...}` of a text, parsed (models wrap JSON in prose or fences).
fn extract_json(text: &str) -> Option<Value> {
    let start = text.find('{')?;
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in text[start..].char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_string => escaped = true,
            '"' => in_string = !in_string,
            '{' if !in_string => depth += 1,
            '}' if !in_string => {
                depth -= 1;
                if depth == 0 {
                    return serde_json::from_str(&text[start..=start + i]).ok();
                }
            }
            _ => {}
        }
    }
    None
}

/// Rounds of tool calls a skill's model may make before it must answer.
const MAX_TOOL_ROUNDS: usize = 4;

/// One model call, collected: its text, the tools it called and its usage.
async fn call_model(
    model: &dyn ChatModel,
    messages: Vec<ChatMessage>,
    tools: Vec<ToolSpec>,
    params: &GenerationParams,
) -> Result<(String, Vec<ToolCall>, Usage), SkillError> {
    let mut stream = model
        .chat(ChatRequest {
            messages,
            tools,
            params: params.clone(),
        })
        .await
        .map_err(|e| SkillError::Model(e.to_string()))?;
    let mut text = String::new();
    let mut calls = Vec::new();
    let mut usage = Usage::default();
    while let Some(event) = stream.next().await {
        match event.map_err(|e| SkillError::Model(e.to_string()))? {
            ChatEvent::Token(t) => text.push_str(&t),
            ChatEvent::ToolCall(c) => calls.push(c),
            ChatEvent::Done { usage: u, .. } => usage = u,
            // Background work waits its turn silently.
            ChatEvent::Waiting { .. } => {}
        }
    }
    Ok((text, calls, usage))
}

fn add(total: &mut Usage, more: Usage) {
    total.prompt_tokens += more.prompt_tokens;
    total.completion_tokens += more.completion_tokens;
    total.cost_usd += more.cost_usd;
}

/// The skill's tools, for one run of it.
#[derive(Debug, Clone, Copy)]
pub struct ToolUse<'a> {
    pub tools: &'a SkillTools,
    pub tenant: TenantId,
}

/// Ask the model until it answers in text: the tools it calls (among `allowed`) run and their
/// results go back to it, for at most [`MAX_TOOL_ROUNDS`] rounds; `messages` ends with the
/// answer.
async fn complete(
    model: &dyn ChatModel,
    messages: &mut Vec<ChatMessage>,
    params: &GenerationParams,
    allowed: &[String],
    tools: Option<ToolUse<'_>>,
    used: &mut Vec<String>,
) -> Result<(String, Usage), SkillError> {
    let mut usage = Usage::default();
    for round in 0..=MAX_TOOL_ROUNDS {
        let specs = match tools {
            Some(_) if round < MAX_TOOL_ROUNDS => SkillTools::specs(allowed),
            _ => Vec::new(),
        };
        let (text, calls, u) = call_model(model, messages.clone(), specs, params).await?;
        add(&mut usage, u);
        let Some(t) = tools.filter(|_| !calls.is_empty() && round < MAX_TOOL_ROUNDS) else {
            messages.push(ChatMessage::assistant(text.clone()));
            return Ok((text, usage));
        };
        let mut asked = ChatMessage::assistant(text);
        asked.tool_calls = calls.clone();
        messages.push(asked);
        for call in calls {
            let result = if allowed.contains(&call.name) {
                t.tools.call(t.tenant, &call.name, &call.arguments).await
            } else {
                Err(format!("the tool '{}' is not allowed here", call.name))
            };
            used.push(call.name.clone());
            let content = match result {
                Ok(v) => v.to_string(),
                Err(e) => json!({"error": e}).to_string(),
            };
            messages.push(ChatMessage::tool(call.id, content));
        }
    }
    Err(SkillError::Model("the model kept calling tools".into()))
}

/// Check the input, ask the model, check the answer (sending it back once with what is
/// wrong), and return it.
pub async fn execute(
    skill: &Skill,
    input: &Value,
    model: &dyn ChatModel,
    tools: Option<ToolUse<'_>>,
) -> Result<SkillOutput, SkillError> {
    skill
        .check_input(input)
        .map_err(|errors| SkillError::Invalid(format!("input: {}", errors.join("; "))))?;
    let system = skill.system.as_deref().map_or_else(
        || format!("You are a careful analyst. {}", skill.description),
        |s| skill.render(s, input),
    );
    let prompt = format!(
        "{}{}",
        skill.render(&skill.prompt, input),
        skill.instructions()
    );
    let params = GenerationParams {
        max_tokens: skill.max_tokens,
        temperature: skill.temperature,
        ..GenerationParams::default()
    };
    let mut messages = vec![ChatMessage::system(system), ChatMessage::user(prompt)];
    let allowed = &skill.allowed_tools;
    let tools = tools.filter(|_| !allowed.is_empty());
    let mut used = Vec::new();
    let (mut text, mut usage) =
        complete(model, &mut messages, &params, allowed, tools, &mut used).await?;
    let (mut data, mut problems) = skill.problems(&text);
    let corrected = !problems.is_empty();
    if corrected {
        messages.push(ChatMessage::user(format!(
            "Your answer does not follow the required format: {}. Write the whole answer \
             again, correctly.",
            problems.join("; ")
        )));
        let (again, more) =
            complete(model, &mut messages, &params, allowed, None, &mut used).await?;
        add(&mut usage, more);
        (data, problems) = skill.problems(&again);
        text = again;
    }
    // A Markdown answer missing sections is still an answer (a small model often drops a
    // heading): kept, with the sections it lacks added empty so readers see the gap. JSON
    // that does not parse or match cannot be used.
    if !problems.is_empty() {
        match skill.output.format {
            OutputFormat::Json => return Err(SkillError::Output(problems.join("; "))),
            OutputFormat::Markdown => {
                for p in &problems {
                    if let Some(section) = p.strip_prefix("missing the section '## ") {
                        let section = section.trim_end_matches('\'');
                        text.push_str(&format!("\n\n## {section}\n\n_(not provided)_\n"));
                    }
                }
            }
        }
    }
    Ok(SkillOutput {
        skill: skill.name.clone(),
        format: skill.output.format,
        text,
        data,
        model: model.name().to_owned(),
        usage,
        corrected,
        tools_used: used,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
name = "echo"
category = "test"
description = "Says the topic back."
prompt = "Write about {{topic}} for {{who}}."
[input]
type = "object"
required = ["topic"]
additionalProperties = false
[input.properties.topic]
type = "string"
[input.properties.who]
type = "string"
[output]
sections = ["Summary"]
"#;

    #[test]
    fn definitions_are_checked() {
        let s = Skill::parse(MINIMAL).unwrap();
        assert_eq!(s.version, 1);
        assert_eq!(s.max_tokens, 600);
        let e = Skill::parse(&MINIMAL.replace("{{who}}", "{{whom}}")).unwrap_err();
        assert!(e.to_string().contains("whom"), "{e}");
        let e = Skill::parse(&MINIMAL.replace("\"echo\"", "\"Echo Skill\"")).unwrap_err();
        assert!(e.to_string().contains("lowercase"), "{e}");
        let e =
            Skill::parse(&MINIMAL.replace("[output]", "[output]\nformat = \"json\"")).unwrap_err();
        assert!(e.to_string().contains("schema"), "{e}");
        assert!(Skill::parse("name = ").is_err());
        assert!(Skill::parse(&format!("{MINIMAL}\nunknown = 1")).is_err());
    }

    #[test]
    fn rendering_and_input_checks() {
        let s = Skill::parse(MINIMAL).unwrap();
        let input = serde_json::json!({"topic": "sleep"});
        assert_eq!(s.render(&s.prompt, &input), "Write about sleep for .");
        assert!(s.check_input(&input).is_ok());
        assert!(s.check_input(&serde_json::json!({"who": "x"})).is_err());
        assert!(s.check_input(&serde_json::json!({"topic": 3})).is_err());
    }

    #[test]
    fn answers_are_checked() {
        let s = Skill::parse(MINIMAL).unwrap();
        assert!(s.problems("## Summary\nfine").1.is_empty());
        assert!(s.problems("# summary of it\nfine").1.is_empty());
        assert_eq!(s.problems("no headings").1.len(), 1);
        assert_eq!(
            extract_json("Sure! ```json\n{\"a\": \"}\", \"b\": {\"c\": 1}}\n``` done"),
            Some(serde_json::json!({"a": "}", "b": {"c": 1}}))
        );
        assert_eq!(extract_json("{not json}"), None);
        assert_eq!(extract_json("none"), None);
    }
}
