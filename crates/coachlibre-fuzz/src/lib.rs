//! What must hold for any input to each parser of untrusted input: one function per fuzz
//! target, taking the fuzzer's bytes and panicking when a property is broken.
//!
//! The fuzz targets (`fuzz/`, built by `.ci/fuzz`) call these under libFuzzer; the tests of
//! this crate call them on every file of the committed corpus (`fuzz/corpus/TARGET/`), which
//! holds the seeds and every input a fuzzer once found, so a fixed crash stays fixed.
//!
//! A parser here is code of ours or a library we feed untrusted bytes: uploaded documents
//! (HTML, PDF, text and Markdown), a file reader's answer across the sandbox pipe, JSON bodies
//! checked for control characters, workflow definitions, skill definitions (TOML), the JSON
//! schemas of skill inputs and the dates and times clients write.

use coachlibre_knowledge::extract::{self, ExtractError, Format};
use serde_json::Value;

/// A fuzz target: its name (a folder of `fuzz/corpus/`) and its property.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, by name.
pub const TARGETS: &[Target] = &[
    ("html", html),
    ("pdf", pdf),
    ("text", text),
    ("sandbox_answer", sandbox_answer),
    ("json_body", json_body),
    ("workflow", workflow),
    ("skill", skill),
    ("schema", schema),
    ("when", when),
];

/// The property of the target called `name`.
pub fn target(name: &str) -> Option<fn(&[u8])> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// An HTML upload or page: text or a clear error; never deeper than the limit once accepted.
pub fn html(data: &[u8]) {
    let result = extract::extract(data, Format::Html);
    check_extracted(&result);
    if let Ok(text) = std::str::from_utf8(data)
        && result.is_ok()
    {
        assert!(extract::html_depth(text) <= extract::MAX_HTML_DEPTH);
    }
}

/// A PDF upload: text or a clear error. (`pdf-extract` panics on some files; `extract` turns
/// that into an error, and the sandbox turns a reader that dies into one too.)
pub fn pdf(data: &[u8]) {
    check_extracted(&read(data, Format::Pdf));
}

/// A PDF is read as a reading child reads it: on a thread with its deep stack (`pdf-extract`
/// recurses).
fn read(data: &[u8], format: Format) -> Result<String, ExtractError> {
    coachlibre_knowledge::sandbox::read_here(data.to_vec(), format)
}

/// A text or Markdown upload, in UTF-8 or Windows-1252.
pub fn text(data: &[u8]) {
    for format in [Format::Text, Format::Markdown] {
        let result = extract::extract(data, format);
        check_extracted(&result);
        if let Ok(text) = result {
            // Normalising is idempotent: a passage reads the same whichever way it came.
            assert_eq!(extract::normalise(&text), text);
        }
    }
}

fn check_extracted(result: &Result<String, ExtractError>) {
    match result {
        Ok(text) => assert!(!text.trim().is_empty(), "an accepted file has text"),
        Err(e) => assert!(!e.to_string().is_empty(), "an error says why"),
    }
}

/// What a file reader wrote on its pipe: read back or refused, and what can be written reads
/// back the same.
pub fn sandbox_answer(data: &[u8]) {
    use coachlibre_knowledge::sandbox::{decode, encode};
    if let Some(answer) = decode(data) {
        assert_eq!(decode(&encode(&answer)), Some(answer));
    }
    let text = String::from_utf8_lossy(data).into_owned();
    let ok = Ok(text.clone());
    assert_eq!(decode(&encode(&ok)), Some(ok));
    let corrupt = Err(ExtractError::Corrupt {
        format: "",
        reason: text,
    });
    assert_eq!(decode(&encode(&corrupt)), Some(corrupt));
}

/// A JSON request body: the one-pass byte scan never misses a control character that the walk
/// of the parsed document finds (the scan decides whether the walk runs at all).
pub fn json_body(data: &[u8]) {
    let Ok(doc) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    if let Some((path, c)) = coachlibre_core::text::control_char_in_json(&doc) {
        assert!(
            coachlibre_core::text::json_may_hold_control_chars(data),
            "the scan missed {c:?} at {path}"
        );
        assert!(coachlibre_core::text::is_forbidden(c));
    }
}

/// A workflow definition (JSON, from the API or a file): accepted as a DAG or refused with a
/// reason; an accepted one can be walked and its templates filled.
pub fn workflow(data: &[u8]) {
    use coachlibre_workflows::definition::{Workflow, context, render};
    let Ok(doc) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let w = match Workflow::parse(&doc) {
        Ok(w) => w,
        Err(e) => {
            assert!(!e.0.is_empty());
            return;
        }
    };
    let _ = w.skills();
    let outputs = w
        .steps
        .iter()
        .map(|s| (s.id.clone(), doc.clone()))
        .collect();
    let ctx = context(&doc, &outputs, Some(&doc));
    for step in &w.steps {
        assert!(!w.dependents(&step.id).contains(&step.id), "a cycle passed");
        let _ = render(
            &serde_json::to_value(&step.action).unwrap_or_default(),
            &ctx,
        );
    }
}

/// A skill definition (TOML, written by a coach): accepted or refused with a reason; an
/// accepted one checks inputs and fills its prompt.
pub fn skill(data: &[u8]) {
    use coachlibre_skills::Skill;
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let skill = match Skill::parse(text) {
        Ok(s) => s,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    for input in [Value::Null, serde_json::json!({}), skill.input.clone()] {
        if let Err(problems) = skill.check_input(&input) {
            assert!(!problems.is_empty());
        }
        let _ = skill.render(&skill.prompt, &input);
    }
}

/// A JSON schema and a value (a skill's input schema and what a client sent): checked without
/// panicking, every violation named.
pub fn schema(data: &[u8]) {
    let mut docs = serde_json::Deserializer::from_slice(data).into_iter::<Value>();
    let (Some(Ok(schema)), Some(Ok(value))) = (docs.next(), docs.next()) else {
        return;
    };
    if let Err(problems) = coachlibre_core::schema::validate(&schema, &value) {
        assert!(problems.iter().all(|p| !p.is_empty()));
    }
}

/// A client's words read for a date or time ("demain à 8h"): a moment or nothing, and any
/// moment has an instant in any zone, clock changes included.
pub fn when(data: &[u8]) {
    use coachlibre_agent::when::parse;
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let now = chrono::DateTime::from_timestamp(1_790_000_000, 0).unwrap_or_default();
    let eight = chrono::NaiveTime::from_hms_opt(8, 0, 0).unwrap_or_default();
    for tz in [
        chrono_tz::Europe::Paris,
        chrono_tz::America::New_York,
        chrono_tz::Pacific::Chatham,
    ] {
        if let Some(m) = parse(text, now, tz) {
            let _ = m.instant(tz, eight);
        }
    }
}
