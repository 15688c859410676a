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
}
