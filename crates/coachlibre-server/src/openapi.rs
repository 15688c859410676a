//! What every operation of the OpenAPI document shares, added in one place rather than
//! repeated on each route: the error answers the middleware and the extractors give, and the
//! constraints they enforce on every input.
//!
//! - Errors: `401`/`403` on authenticated operations (no or bad credentials, a role or key
//!   scope that is not enough), `404` where a path names a record, `400`/`413`/`415`/`422`
//!   where a body is read, `422` where query or path parameters are, `429` everywhere under
//!   `/api` (rate limits), each with the error body.
//! - Text: no string accepts control characters other than tab and line breaks
//!   (`coachlibre_core::text`), so string schemas say so with a `pattern`.
//! - Pages: `limit` is 1 to [`MAX_LIMIT`].

use coachlibre_core::page::MAX_LIMIT;
use serde_json::{Map, Value, json};

/// Strings without control characters other than tab, line feed and carriage return.
pub const NO_CONTROL_CHARS: &str =
    "^[^\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F\\u007F-\\u009F]*$";

const METHODS: &[&str] = &["get", "put", "post", "delete", "patch"];

/// The document, as served, with the shared answers and constraints added (as JSON: utoipa's
/// types do not read back every schema they write).
pub fn complete(doc: &utoipa::openapi::OpenApi) -> Value {
    let mut v = serde_json::to_value(doc).unwrap_or_else(|_| json!({}));
    if let Some(paths) = v.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for method in METHODS {
                if let Some(op) = item.get_mut(*method).and_then(Value::as_object_mut) {
                    operation(path, op);
                }
            }
        }
    }
    if let Some(schemas) = v
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        for schema in schemas.values_mut() {
            no_control_chars(schema);
        }
    }
    v
}

fn error(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    })
}

fn operation(path: &str, op: &mut Map<String, Value>) {
    let authenticated = op
        .get("security")
        .and_then(Value::as_array)
        .is_some_and(|s| {
            !s.is_empty() && !s.iter().any(|r| r.as_object().is_some_and(Map::is_empty))
        });
    let has_body = op.contains_key("requestBody");
    let params: Vec<(String, String)> = op
        .get("parameters")
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .filter_map(|p| {
                    Some((
                        p.get("in")?.as_str()?.to_owned(),
                        p.get("name")?.as_str()?.to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut add = |code: &str, description: &str| {
        let responses = op
            .entry("responses")
            .or_insert_with(|| json!({}))
            .as_object_mut();
        if let Some(r) = responses
            && !r.contains_key(code)
        {
            r.insert(code.to_owned(), error(description));
        }
    };
    if authenticated {
        add("401", "Missing, invalid or expired credentials");
        add("403", "Not allowed for the caller's role or key scope");
    }
    if path.contains('{') {
        add(
            "404",
            "No such record visible to the caller (also a malformed id)",
        );
    }
    if has_body {
        add(
            "404",
            "A record the body names does not exist or is not visible to the caller",
        );
        add("400", "The body is not valid JSON");
        add("413", "The body is larger than accepted");
        add("415", "The body's content type is not the one expected");
        add("422", "A field is missing, of the wrong type or invalid");
    }
    if params.iter().any(|(at, _)| at == "query" || at == "path") {
        add("422", "A parameter is invalid");
    }
    if path.starts_with("/api/") {
        add("429", "Too many requests: wait for `Retry-After` seconds");
    }
    if let Some(ps) = op.get_mut("parameters").and_then(Value::as_array_mut) {
        for p in ps {
            let query = p.get("in").and_then(Value::as_str) == Some("query");
            let name = p
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            if let Some(schema) = p.get_mut("schema") {
                if query && name == "limit" {
                    limit(schema);
                }
                // Cursors are the ids of the last row of a page.
                if query
                    && name == "cursor"
                    && let Some(o) = schema.as_object_mut()
                {
                    o.insert("format".into(), json!("uuid"));
                }
                no_control_chars(schema);
            }
        }
    }
    // Server-sent events: each an `event` name and its `data` (a JSON text).
    if let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) {
        for r in responses.values_mut() {
            if let Some(sse) = r.pointer_mut("/content/text~1event-stream") {
                sse["schema"] = json!({
                    "type": "object",
                    "properties": {"event": {"type": "string"}, "data": {"type": "string"}, "id": {"type": "string"}}
                });
            }
        }
    }
    if let Some(content) = op
        .get_mut("requestBody")
        .and_then(|b| b.get_mut("content"))
        .and_then(Value::as_object_mut)
    {
        for media in content.values_mut() {
            if let Some(schema) = media.get_mut("schema") {
                no_control_chars(schema);
            }
        }
    }
}

/// `limit`: 1 to [`MAX_LIMIT`], whichever way the schema spells an optional integer.
fn limit(schema: &mut Value) {
    if let Some(o) = schema.as_object_mut() {
        o.insert("minimum".into(), json!(1));
        o.insert("maximum".into(), json!(MAX_LIMIT));
    }
}

/// Add [`NO_CONTROL_CHARS`] to every plain string schema within `schema`.
fn no_control_chars(schema: &mut Value) {
    let mut stack = vec![schema];
    while let Some(s) = stack.pop() {
        match s {
            Value::Object(o) => {
                let is_string = match o.get("type") {
                    Some(Value::String(t)) => t == "string",
                    Some(Value::Array(ts)) => ts.iter().any(|t| t == "string"),
                    _ => false,
                };
                if is_string
                    && !o.contains_key("format")
                    && !o.contains_key("enum")
                    && !o.contains_key("const")
                {
                    if o.contains_key("pattern") {
                        // A schema with its own pattern gets this one besides.
                        if o.get("pattern") != Some(&json!(NO_CONTROL_CHARS))
                            && !o.contains_key("allOf")
                        {
                            o.insert("allOf".into(), json!([{"pattern": NO_CONTROL_CHARS}]));
                        }
                    } else {
                        o.insert("pattern".into(), json!(NO_CONTROL_CHARS));
                    }
                }
                let is_object = match o.get("type") {
                    Some(Value::String(t)) => t == "object",
                    Some(Value::Array(ts)) => ts.iter().any(|t| t == "object"),
                    _ => false,
                };
                if is_object && !o.contains_key("propertyNames") {
                    o.insert("propertyNames".into(), json!({"pattern": NO_CONTROL_CHARS}));
                }
                for (k, child) in o.iter_mut() {
                    // Examples and defaults are values, not schemas.
                    if !matches!(
                        k.as_str(),
                        "example" | "examples" | "default" | "enum" | "const"
                    ) {
                        stack.push(child);
                    }
                }
            }
            Value::Array(items) => stack.extend(items.iter_mut()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_refuses_what_the_server_refuses() {
        // The JSON Schema pattern and the server's rule agree on every code point they name.
        let class: Vec<(u32, u32)> = vec![(0, 8), (0xB, 0xC), (0xE, 0x1F), (0x7F, 0x9F)];
        for c in (0u32..0x200).filter_map(char::from_u32) {
            let in_class = class.iter().any(|(a, b)| (*a..=*b).contains(&u32::from(c)));
            assert_eq!(in_class, coachlibre_core::text::is_forbidden(c), "{c:?}");
        }
    }

    #[test]
    fn operations_get_the_shared_errors_and_constraints() {
        let mut op = json!({
            "security": [{"bearer": []}],
            "parameters": [
                {"in": "query", "name": "limit", "schema": {"type": ["integer", "null"]}},
                {"in": "path", "name": "id", "schema": {"type": "string", "format": "uuid"}},
                {"in": "query", "name": "cursor", "schema": {"type": ["string", "null"]}},
                {"in": "query", "name": "q", "schema": {"type": "string"}}
            ],
            "responses": {"200": {"description": "ok"}}
        });
        operation("/api/v1/things/{id}", op.as_object_mut().expect("object"));
        for code in ["401", "403", "404", "422", "429"] {
            assert!(op["responses"].get(code).is_some(), "{code}");
        }
        assert!(op["responses"].get("415").is_none());
        assert_eq!(op["parameters"][0]["schema"]["maximum"], MAX_LIMIT);
        assert!(op["parameters"][1]["schema"].get("pattern").is_none());
        assert_eq!(op["parameters"][2]["schema"]["format"], "uuid");
        assert_eq!(op["parameters"][3]["schema"]["pattern"], NO_CONTROL_CHARS);
    }
}
