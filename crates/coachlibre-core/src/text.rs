//! Text that can be stored: no control characters but tab and line breaks.
//!
//! PostgreSQL refuses NUL in text (`invalid byte sequence for encoding "UTF8": 0x00`) while
//! SQLite stores it, so data with NUL could not move from one to the other; other control
//! characters break logs, CSV exports and terminals. Every text that comes from outside is
//! checked at the edge with [`control_char`] and refused with a 422 naming the field.

/// The first character of `s` that may not be stored: a C0 control other than tab, line feed
/// and carriage return, DEL, or a C1 control.
pub fn control_char(s: &str) -> Option<char> {
    s.chars().find(|c| is_forbidden(*c))
}

/// Whether `c` may not be stored (see [`control_char`]).
pub fn is_forbidden(c: char) -> bool {
    c.is_control() && !matches!(c, '\t' | '\n' | '\r')
}

/// How to name `c` in a message: `U+0000 (NUL)`.
pub fn describe(c: char) -> String {
    let name = match c {
        '\0' => " (NUL)",
        '\u{7f}' => " (DEL)",
        '\u{1b}' => " (ESC)",
        _ => "",
    };
    format!("U+{:04X}{name}", u32::from(c))
}

/// Whether a JSON text may hold a string with a control character that cannot be stored (see
/// [`control_char`]): an escape `\u00XX` of one, the escapes `\b` and `\f`, or a raw DEL or
/// C1 control (raw C0 controls are not valid JSON). One pass over the bytes; only then is the
/// document walked.
pub fn json_may_hold_control_chars(bytes: &[u8]) -> bool {
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => {
                if matches!(bytes.get(i + 1), Some(b'b' | b'f')) {
                    return true;
                }
                if bytes.get(i + 1) == Some(&b'u')
                    && let Some(hex) = bytes.get(i + 2..i + 6)
                    && let Ok(hex) = std::str::from_utf8(hex)
                    && let Ok(code) = u32::from_str_radix(hex, 16)
                    && char::from_u32(code).is_some_and(is_forbidden)
                {
                    return true;
                }
                i += 2;
            }
            0x7f => return true,
            0xc2 if bytes.get(i + 1).is_some_and(|b| (0x80..=0x9f).contains(b)) => return true,
            _ => i += 1,
        }
    }
    false
}

/// The path (`persona`, `steps[2].name`) and the character of the first string, key or value,
/// holding a control character that cannot be stored.
pub fn control_char_in_json(doc: &serde_json::Value) -> Option<(String, char)> {
    use serde_json::Value;
    let mut stack = vec![(String::new(), doc)];
    while let Some((path, v)) = stack.pop() {
        match v {
            Value::String(s) => {
                if let Some(c) = control_char(s) {
                    return Some((path, c));
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate().rev() {
                    stack.push((format!("{path}[{i}]"), item));
                }
            }
            Value::Object(fields) => {
                for (k, item) in fields {
                    let here = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    if let Some(c) = control_char(k) {
                        return Some((here, c));
                    }
                    stack.push((here, item));
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tabs_and_line_breaks_pass() {
        assert_eq!(control_char("Semaine 1\n\tlundi\r\n: repos — été"), None);
        assert_eq!(control_char("a\u{0}b"), Some('\0'));
        assert_eq!(control_char("a\u{1b}[31m"), Some('\u{1b}'));
        assert_eq!(control_char("x\u{7f}"), Some('\u{7f}'));
        assert_eq!(control_char("x\u{85}"), Some('\u{85}'));
        assert_eq!(describe('\0'), "U+0000 (NUL)");
        assert_eq!(describe('\u{85}'), "U+0085");
    }

    #[test]
    fn json_is_scanned_then_walked() {
        let doc = br#"{"name": "ok", "steps": [{"note": "a\u0000b"}]}"#;
        assert!(json_may_hold_control_chars(doc));
        let v: serde_json::Value = serde_json::from_slice(doc).unwrap();
        assert_eq!(
            control_char_in_json(&v),
            Some(("steps[0].note".into(), '\0'))
        );
        // An escaped backslash before `u0000` is text, and so are line breaks.
        let fine = br#"{"a": "C:\\u0000", "b": "line\nbreak\t"}"#;
        assert!(!json_may_hold_control_chars(fine));
        let v: serde_json::Value = serde_json::from_slice(fine).unwrap();
        assert_eq!(control_char_in_json(&v), None);
        assert!(json_may_hold_control_chars(
            "{\"x\": \"\u{85}\"}".as_bytes()
        ));
        // Short escapes of controls: backspace and form feed (found by fuzzing).
        for doc in [br#"{"name": "a\bb"}"#, br#"{"name": "a\fb"}"#] {
            assert!(json_may_hold_control_chars(doc));
            let v: serde_json::Value = serde_json::from_slice(doc).unwrap();
            assert!(control_char_in_json(&v).is_some());
        }
    }
}
