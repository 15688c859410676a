//! Tool calling for models without native tool support (the embedded SmolLM2): the tools are
//! described in the system prompt with one calling format, and a tolerant parser turns what
//! the model wrote into validated calls or a plain answer.
//!
//! The format is `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, the convention
//! SmolLM2-Instruct saw in training. Small models drift from it, so the parser also accepts a
//! missing closing tag, a fenced JSON block, a bare JSON object or list, `parameters`/`args`
//! for `arguments`, arguments given as a JSON string, trailing commas, single quotes, Python
//! literals and unclosed braces; tool names match case- and separator-insensitively. A call
//! is kept only if its arguments validate against the tool's schema; if none does, the
//! output is a plain answer.

use coachlibre_core::model::{ToolCall, ToolSpec};
use coachlibre_core::schema;
use serde_json::{Map, Value};

/// Opening tag of a call.
pub const OPEN: &str = "<tool_call>";
/// Closing tag of a call.
pub const CLOSE: &str = "</tool_call>";

/// Instructions to append to the system prompt when tools are offered.
pub fn tools_prompt(tools: &[ToolSpec]) -> String {
    let mut s = String::from(
        "You can use tools. To use one, answer with only a tool call, exactly like:\n\
         <tool_call>{\"name\": \"tool_name\", \"arguments\": {\"arg\": \"value\"}}</tool_call>\n\
         If no tool is needed, answer normally.\nTools:\n",
    );
    for t in tools {
        s.push_str(&format!(
            "- {}: {} Arguments (JSON Schema): {}\n",
            t.name, t.description, t.parameters
        ));
    }
    s
}

/// What the model's output amounts to.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// No (valid) tool call: show this text.
    Answer(String),
    /// Valid tool calls, and any text written around them.
    Calls { text: String, calls: Vec<ToolCall> },
}

/// Parse a complete model output.
pub fn parse(output: &str, tools: &[ToolSpec]) -> Parsed {
    if tools.is_empty() {
        return Parsed::Answer(output.trim().to_owned());
    }
    let (candidates, rest) = candidates(output);
    let mut calls = Vec::new();
    for c in candidates {
        let Some(v) = repair_and_parse(&c) else {
            continue;
        };
        let objects = match v {
            Value::Array(items) => items,
            other => vec![other],
        };
        for obj in objects {
            if let Some(call) = to_call(&obj, tools, calls.len()) {
                calls.push(call);
            }
        }
    }
    if calls.is_empty() {
        let cleaned = rest.trim();
        let text = if cleaned.is_empty() {
            output.trim()
        } else {
            cleaned
        };
        return Parsed::Answer(text.to_owned());
    }
    Parsed::Calls {
        text: rest.trim().to_owned(),
        calls,
    }
}

/// The pieces of `output` that may hold calls, and the text around them.
fn candidates(output: &str) -> (Vec<String>, String) {
    let mut found = Vec::new();
    let mut rest = String::new();
    if output.contains(OPEN) {
        let mut tail = output;
        while let Some(start) = tail.find(OPEN) {
            rest.push_str(&tail[..start]);
            let after = &tail[start + OPEN.len()..];
            match after.find(CLOSE) {
                Some(end) => {
                    found.push(after[..end].to_owned());
                    tail = &after[end + CLOSE.len()..];
                }
                None => {
                    found.push(after.to_owned());
                    tail = "";
                }
            }
        }
        rest.push_str(tail);
        return (found, rest);
    }
    if output.contains("```") {
        let parts: Vec<&str> = output.split("```").collect();
        for (i, part) in parts.iter().enumerate() {
            if i % 2 == 1 {
                let body = part
                    .strip_prefix("json")
                    .or_else(|| part.strip_prefix("JSON"))
                    .unwrap_or(part);
                found.push(body.to_owned());
            } else {
                rest.push_str(part);
            }
        }
        return (found, rest);
    }
    let t = output.trim();
    if t.starts_with('{') || t.starts_with('[') {
        return (vec![t.to_owned()], String::new());
    }
    (Vec::new(), output.to_owned())
}

/// Build a call from a parsed object if it names a known tool with valid arguments.
fn to_call(obj: &Value, tools: &[ToolSpec], n: usize) -> Option<ToolCall> {
    let obj = obj.as_object()?;
    let (name, args) = match obj.get("function") {
        Some(Value::Object(f)) => (
            f.get("name"),
            f.get("arguments").or_else(|| f.get("parameters")),
        ),
        _ => (
            ["name", "tool", "tool_name", "function"]
                .iter()
                .find_map(|k| obj.get(*k)),
            ["arguments", "parameters", "args", "input"]
                .iter()
                .find_map(|k| obj.get(*k)),
        ),
    };
    let tool = find_tool(name?.as_str()?, tools)?;
    let arguments = match args {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(Value::String(s)) => repair_and_parse(s)?,
        Some(v) => v.clone(),
    };
    schema::validate(&tool.parameters, &arguments).ok()?;
    Some(ToolCall {
        id: format!("call_{n}"),
        name: tool.name.clone(),
        arguments,
    })
}

fn normalise(name: &str) -> String {
    name.trim()
        .chars()
        .filter(|c| !matches!(c, '_' | '-' | ' '))
        .flat_map(char::to_lowercase)
        .collect()
}

fn find_tool<'a>(name: &str, tools: &'a [ToolSpec]) -> Option<&'a ToolSpec> {
    tools.iter().find(|t| t.name == name).or_else(|| {
        let n = normalise(name);
        tools.iter().find(|t| normalise(&t.name) == n)
    })
}

/// Parse JSON the way a small model writes it.
pub fn repair_and_parse(text: &str) -> Option<Value> {
    let t = text.trim();
    if let Ok(v) = serde_json::from_str(t) {
        return Some(v);
    }
    let start = t.find(['{', '['])?;
    let mut s = t[start..].to_owned();
    if !s.contains('"') {
        s = s.replace('\'', "\"");
    }
    let repaired = fix_outside_strings(&s);
    serde_json::from_str(&repaired).ok()
}

/// Drop trailing commas, map Python literals, close what was left open; strings untouched.
fn fix_outside_strings(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len() + 4);
    let mut stack = Vec::new();
    let (mut in_str, mut escaped) = (false, false);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if in_str {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_str = false;
            }
            i += 1;
            continue;
        }
        match c {
            '"' => {
                in_str = true;
                out.push(c);
            }
            '{' => {
                stack.push('}');
                out.push(c);
            }
            '[' => {
                stack.push(']');
                out.push(c);
            }
            '}' | ']' => {
                stack.pop();
                out.push(c);
                if stack.is_empty() {
                    // Anything after the outermost value is chatter.
                    break;
                }
            }
            ',' => {
                let next = chars[i + 1..].iter().find(|c| !c.is_whitespace());
                if !matches!(next, Some('}') | Some(']') | None) {
                    out.push(c);
                }
            }
            _ => {
                let word: String = chars[i..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphabetic())
                    .collect();
                let replacement = match word.as_str() {
                    "True" => Some("true"),
                    "False" => Some("false"),
                    "None" => Some("null"),
                    _ => None,
                };
                if let Some(r) = replacement {
                    out.push_str(r);
                    i += word.len();
                    continue;
                }
                out.push(c);
            }
        }
        i += 1;
    }
    if in_str {
        out.push('"');
    }
    while let Some(close) = stack.pop() {
        out.push(close);
    }
    out
}

/// Splits a token stream into text safe to show at once and a held-back tool call: text
/// stops flowing at `<tool_call>` (and a possible start of it is held until it is clear).
#[derive(Debug, Default)]
pub struct StreamSplitter {
    all: String,
    shown: usize,
    in_call: bool,
}

impl StreamSplitter {
    /// Add a token; returns the text that can be shown now.
    pub fn push(&mut self, token: &str) -> String {
        self.all.push_str(token);
        if self.in_call {
            return String::new();
        }
        let pending = &self.all[self.shown..];
        if let Some(pos) = pending.find(OPEN) {
            self.in_call = true;
            let out = pending[..pos].to_owned();
            self.shown += pos;
            return out;
        }
        // Hold back a suffix that could be the start of the opening tag.
        let hold = (1..OPEN.len().min(pending.len() + 1))
            .rev()
            .find(|&k| {
                pending.is_char_boundary(pending.len() - k)
                    && OPEN.starts_with(&pending[pending.len() - k..])
            })
            .unwrap_or(0);
        let cut = pending.len() - hold;
        let out = pending[..cut].to_owned();
        self.shown += cut;
        out
    }

    /// Whether a tool call has started.
    pub fn in_call(&self) -> bool {
        self.in_call
    }

    /// Everything received, for [`parse`] at the end.
    pub fn into_output(self) -> String {
        self.all
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn tools() -> Vec<ToolSpec> {
        vec![
            ToolSpec {
                name: "create_goal".into(),
                description: "Create a goal.".into(),
                parameters: json!({"type": "object", "properties": {
                    "title": {"type": "string"}, "target": {"type": "number"}},
                    "required": ["title"]}),
            },
            ToolSpec {
                name: "list_goals".into(),
                description: "List goals.".into(),
                parameters: json!({"type": "object", "properties": {}}),
            },
        ]
    }

    fn call(name: &str, args: Value) -> ToolCall {
        ToolCall {
            id: "call_0".into(),
            name: name.into(),
            arguments: args,
        }
    }

    #[test]
    fn the_canonical_format() {
        let out =
            r#"<tool_call>{"name": "create_goal", "arguments": {"title": "Run 10k"}}</tool_call>"#;
        assert_eq!(
            parse(out, &tools()),
            Parsed::Calls {
                text: String::new(),
                calls: vec![call("create_goal", json!({"title": "Run 10k"}))]
            }
        );
    }

    #[test]
    fn what_small_models_actually_write() {
        let cases = [
            // No closing tag, trailing comma.
            (
                r#"<tool_call>{"name": "create_goal", "arguments": {"title": "Run 10k",}}"#,
                json!({"title": "Run 10k"}),
            ),
            // Fenced JSON, "parameters", different case and separator.
            (
                "Sure!\n```json\n{\"tool\": \"Create-Goal\", \"parameters\": {\"title\": \"Sleep 8h\"}}\n```",
                json!({"title": "Sleep 8h"}),
            ),
            // Bare object, arguments as a JSON string.
            (
                r#"{"name": "create_goal", "arguments": "{\"title\": \"Read\", \"target\": 12}"}"#,
                json!({"title": "Read", "target": 12}),
            ),
            // Single quotes and unclosed braces.
            (
                "<tool_call>{'name': 'create_goal', 'arguments': {'title': 'Swim'",
                json!({"title": "Swim"}),
            ),
            // OpenAI-like nesting.
            (
                r#"{"function": {"name": "create_goal", "arguments": {"title": "Cook"}}}"#,
                json!({"title": "Cook"}),
            ),
        ];
        for (out, args) in cases {
            match parse(out, &tools()) {
                Parsed::Calls { calls, .. } => {
                    assert_eq!(calls, vec![call("create_goal", args)], "{out}")
                }
                other => panic!("{out}: {other:?}"),
            }
        }
    }

    #[test]
    fn json_repairs() {
        assert_eq!(
            repair_and_parse("{'a': True, 'b': None, 'c': [1, 2,],}"),
            Some(json!({"a": true, "b": null, "c": [1, 2]}))
        );
        assert_eq!(
            repair_and_parse(r#"{"s": "keep True, and } inside"}"#),
            Some(json!({"s": "keep True, and } inside"}))
        );
        assert_eq!(
            repair_and_parse(r#"{"a": {"b": [1"#),
            Some(json!({"a": {"b": [1]}}))
        );
        assert_eq!(
            repair_and_parse(r#"{"a": 1} and then some chatter"#),
            Some(json!({"a": 1}))
        );
        assert_eq!(repair_and_parse("no json here"), None);
    }

    #[test]
    fn invalid_or_unknown_calls_become_plain_answers() {
        // Missing required argument.
        let out = r#"<tool_call>{"name": "create_goal", "arguments": {}}</tool_call>"#;
        assert!(matches!(parse(out, &tools()), Parsed::Answer(_)));
        // Unknown tool.
        let out = r#"<tool_call>{"name": "launch_rockets", "arguments": {}}</tool_call>"#;
        assert!(matches!(parse(out, &tools()), Parsed::Answer(_)));
        // Prose stays prose, even with braces in it.
        let out = "Try the {morning} routine: 10 minutes of stretching.";
        assert_eq!(parse(out, &tools()), Parsed::Answer(out.into()));
        // No tools offered: never a call.
        let out = r#"{"name": "list_goals"}"#;
        assert_eq!(parse(out, &[]), Parsed::Answer(out.into()));
    }

    #[test]
    fn several_calls_and_surrounding_text() {
        let out = "Let me look.\n<tool_call>{\"name\": \"list_goals\"}</tool_call>\n<tool_call>[{\"name\": \"create_goal\", \"arguments\": {\"title\": \"Walk\"}}]</tool_call>";
        let Parsed::Calls { text, calls } = parse(out, &tools()) else {
            panic!()
        };
        assert_eq!(text, "Let me look.");
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].name, "list_goals");
        assert_eq!(calls[0].arguments, json!({}));
        assert_eq!(calls[1].id, "call_1");
    }

    #[test]
    fn the_stream_splitter_holds_back_tool_calls() {
        let mut s = StreamSplitter::default();
        let mut shown = String::new();
        for tok in [
            "Let",
            " me",
            " check",
            ".<",
            "tool",
            "_call>{\"name\"",
            ": \"list_goals\"}",
            "</tool_call>",
        ] {
            shown.push_str(&s.push(tok));
        }
        assert_eq!(shown, "Let me check.");
        assert!(s.in_call());
        let Parsed::Calls { calls, .. } = parse(&s.into_output(), &tools()) else {
            panic!()
        };
        assert_eq!(calls[0].name, "list_goals");

        // A '<' that does not start a call is released once it is clear.
        let mut s = StreamSplitter::default();
        let a = s.push("5 <");
        let b = s.push(" 7 é");
        assert_eq!(format!("{a}{b}"), "5 < 7 é");
    }

    #[test]
    fn the_prompt_lists_tools_and_the_format() {
        let p = tools_prompt(&tools());
        assert!(
            p.contains("<tool_call>") && p.contains("create_goal") && p.contains("\"required\"")
        );
    }
}
