//! `{{name}}` templates, shared by skills (input fields) and workflows (dotted paths).

use serde_json::Value;

/// The placeholders of a template, trimmed.
pub fn placeholders(template: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        out.push(after[..end].trim());
        rest = &after[end + 2..];
    }
    out
}

/// The template with each placeholder replaced by `get(name)`: strings as they are, other
/// values as JSON, absent or null as nothing. An unclosed `{{` is kept as text.
pub fn fill<'a>(template: &str, get: impl Fn(&str) -> Option<&'a Value>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        match get(after[..end].trim()) {
            Some(Value::String(s)) => out.push_str(s),
            Some(Value::Null) | None => {}
            Some(v) => out.push_str(&v.to_string()),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_and_lists() {
        let v = serde_json::json!({"a": "x", "n": 2});
        assert_eq!(
            fill("{{a}}-{{ n }}-{{none}}-{{open", |k| v.get(k)),
            "x-2--{{open"
        );
        assert_eq!(placeholders("{{a}} and {{ b }} {{c"), vec!["a", "b"]);
    }
}
