//! Validation of JSON values against the subset of JSON Schema that tool definitions use:
//! `type` (one or a list), `properties`, `required`, `additionalProperties: false`, `enum`,
//! `items`, `minimum`/`maximum`, `minLength`/`maxLength`, `minItems`/`maxItems`.
//!
//! Used on every tool call, whatever the model: a call that does not match its tool's schema
//! goes back to the model as an error message it can act on, never to the user as a 500.

use serde_json::Value;

/// Every violation, each as `path: message` (path in JSON Pointer form, `/` for the root).
pub fn validate(schema: &Value, value: &Value) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    check(schema, value, "", &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => {
            v.as_i64().is_some()
                || v.as_u64().is_some()
                || v.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        _ => true,
    }
}

fn check(schema: &Value, v: &Value, path: &str, errors: &mut Vec<String>) {
    let at = if path.is_empty() { "/" } else { path };
    let Some(s) = schema.as_object() else {
        return;
    };
    if let Some(t) = s.get("type") {
        let types: Vec<&str> = match t {
            Value::String(one) => vec![one.as_str()],
            Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !types.is_empty() && !types.iter().any(|t| type_matches(t, v)) {
            errors.push(format!(
                "{at}: expected {}, got {}",
                types.join(" or "),
                kind(v)
            ));
            return;
        }
    }
    if let Some(allowed) = s.get("enum").and_then(Value::as_array)
        && !allowed.contains(v)
    {
        let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
        errors.push(format!("{at}: must be one of {}", list.join(", ")));
    }
    match v {
        Value::Object(obj) => {
            for name in s
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(name) = name.as_str()
                    && !obj.contains_key(name)
                {
                    errors.push(format!("{at}: missing required property '{name}'"));
                }
            }
            let props = s.get("properties").and_then(Value::as_object);
            for (key, val) in obj {
                match props.and_then(|p| p.get(key)) {
                    Some(sub) => check(sub, val, &format!("{path}/{key}"), errors),
                    None if s.get("additionalProperties") == Some(&Value::Bool(false)) => {
                        errors.push(format!("{at}: unknown property '{key}'"));
                    }
                    None => {}
                }
            }
        }
        Value::Array(items) => {
            let n = items.len() as u64;
            if let Some(min) = s.get("minItems").and_then(Value::as_u64)
                && n < min
            {
                errors.push(format!("{at}: needs at least {min} items"));
            }
            if let Some(max) = s.get("maxItems").and_then(Value::as_u64)
                && n > max
            {
                errors.push(format!("{at}: allows at most {max} items"));
            }
            if let Some(item_schema) = s.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(item_schema, item, &format!("{path}/{i}"), errors);
                }
            }
        }
        Value::String(text) => {
            let n = text.chars().count() as u64;
            if let Some(min) = s.get("minLength").and_then(Value::as_u64)
                && n < min
            {
                errors.push(format!("{at}: must be at least {min} characters"));
            }
            if let Some(max) = s.get("maxLength").and_then(Value::as_u64)
                && n > max
            {
                errors.push(format!("{at}: must be at most {max} characters"));
            }
        }
        Value::Number(num) => {
            let x = num.as_f64().unwrap_or(0.0);
            if let Some(min) = s.get("minimum").and_then(Value::as_f64)
                && x < min
            {
                errors.push(format!("{at}: must be at least {min}"));
            }
            if let Some(max) = s.get("maximum").and_then(Value::as_f64)
                && x > max
            {
                errors.push(format!("{at}: must be at most {max}"));
            }
        }
        _ => {}
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn goal_schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "title": {"type": "string", "minLength": 3, "maxLength": 80},
                "progress": {"type": "number", "minimum": 0, "maximum": 100},
                "status": {"enum": ["open", "done"]},
                "key_results": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
                "due": {"type": ["string", "null"]}
            },
            "required": ["title"],
            "additionalProperties": false
        })
    }

    #[test]
    fn valid_values_pass() {
        assert!(validate(&goal_schema(), &json!({"title": "Run 10k", "progress": 40, "status": "open", "key_results": ["3 runs a week"], "due": null})).is_ok());
        assert!(
            validate(&json!({}), &json!(42)).is_ok(),
            "an empty schema accepts anything"
        );
        assert!(validate(&json!({"type": "integer"}), &json!(3.0)).is_ok());
    }

    #[test]
    fn every_violation_is_reported_with_its_path() {
        let errs = validate(
            &goal_schema(),
            &json!({"progress": 140, "status": "maybe", "key_results": ["a", 2], "color": "red"}),
        )
        .unwrap_err();
        let all = errs.join("\n");
        for expected in [
            "/: missing required property 'title'",
            "/progress: must be at most 100",
            "/status: must be one of",
            "/key_results/1: expected string, got number",
            "/: unknown property 'color'",
        ] {
            assert!(all.contains(expected), "{expected} in\n{all}");
        }
        let errs = validate(&goal_schema(), &json!("just text")).unwrap_err();
        assert_eq!(errs, vec!["/: expected object, got string"]);
        let errs = validate(&goal_schema(), &json!({"title": "ab"})).unwrap_err();
        assert_eq!(errs, vec!["/title: must be at least 3 characters"]);
    }
}
