//! Markdown read as a flat list of blocks: enough for reports written by people and models.

/// One block of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    /// Level 1 to 6.
    Heading(u8, String),
    Paragraph(String),
    /// A list item; `Some(n)` when numbered.
    Item(Option<u32>, String),
    /// Preformatted lines (fenced code, and table rows kept as they are).
    Code(Vec<String>),
}

/// Inline markup reduced to plain text: `**bold**` and `` `code` `` markers dropped, links
/// shown as `text (url)`.
pub fn plain(s: &str) -> String {
    let s = s.replace("**", "").replace("__", "").replace('`', "");
    let mut out = String::with_capacity(s.len());
    let mut rest = s.as_str();
    while let Some(open) = rest.find('[') {
        let after = &rest[open + 1..];
        let Some(close) = after.find("](") else {
            break;
        };
        let Some(end) = after[close + 2..].find(')') else {
            break;
        };
        out.push_str(&rest[..open]);
        let text = &after[..close];
        let url = &after[close + 2..close + 2 + end];
        out.push_str(text);
        if !url.is_empty() && url != text {
            out.push_str(&format!(" ({url})"));
        }
        rest = &after[close + 2 + end + 1..];
    }
    out.push_str(rest);
    out.trim().to_owned()
}

fn list_item(line: &str) -> Option<(Option<u32>, &str)> {
    for bullet in ["- ", "* ", "+ "] {
        if let Some(rest) = line.strip_prefix(bullet) {
            return Some((None, rest));
        }
    }
    let digits = line.bytes().take_while(u8::is_ascii_digit).count();
    if digits > 0 && digits < 4 {
        let rest = &line[digits..];
        if let Some(text) = rest.strip_prefix(". ").or_else(|| rest.strip_prefix(") ")) {
            return Some((line[..digits].parse().ok(), text));
        }
    }
    None
}

/// The blocks of a Markdown text.
pub fn blocks(md: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut para: Vec<&str> = Vec::new();
    let mut code: Option<Vec<String>> = None;
    let mut table: Vec<String> = Vec::new();
    let flush_para = |para: &mut Vec<&str>, out: &mut Vec<Block>| {
        if !para.is_empty() {
            out.push(Block::Paragraph(plain(&para.join(" "))));
            para.clear();
        }
    };
    let flush_table = |table: &mut Vec<String>, out: &mut Vec<Block>| {
        if !table.is_empty() {
            out.push(Block::Code(std::mem::take(table)));
        }
    };
    for raw in md.lines() {
        let line = raw.trim_end();
        if let Some(lines) = code.as_mut() {
            if line.trim_start().starts_with("```") {
                out.push(Block::Code(code.take().unwrap_or_default()));
            } else {
                lines.push(line.to_owned());
            }
            continue;
        }
        let t = line.trim_start();
        if t.starts_with("```") {
            flush_para(&mut para, &mut out);
            flush_table(&mut table, &mut out);
            code = Some(Vec::new());
            continue;
        }
        if t.starts_with('|') {
            flush_para(&mut para, &mut out);
            // The separator row of a Markdown table carries nothing to read.
            if !t.chars().all(|c| matches!(c, '|' | '-' | ':' | ' ')) {
                table.push(t.to_owned());
            }
            continue;
        }
        flush_table(&mut table, &mut out);
        if t.is_empty() {
            flush_para(&mut para, &mut out);
            continue;
        }
        let hashes = t.bytes().take_while(|b| *b == b'#').count();
        if (1..=6).contains(&hashes) && t[hashes..].starts_with(' ') {
            flush_para(&mut para, &mut out);
            let level = u8::try_from(hashes).unwrap_or(6);
            out.push(Block::Heading(level, plain(&t[hashes..])));
            continue;
        }
        if let Some((n, text)) = list_item(t) {
            flush_para(&mut para, &mut out);
            out.push(Block::Item(n, plain(text)));
            continue;
        }
        para.push(t);
    }
    flush_para(&mut para, &mut out);
    flush_table(&mut table, &mut out);
    if let Some(lines) = code {
        out.push(Block::Code(lines));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_usual_blocks() {
        let md = "# Title\n\nA **bold** first\nparagraph with a [link](https://x.test).\n\n\
                  ## Section\n- one\n* two\n1. first\n\n```\ncode line\n```\n\
                  | a | b |\n|---|---|\n| 1 | 2 |\ntext after";
        assert_eq!(
            blocks(md),
            vec![
                Block::Heading(1, "Title".into()),
                Block::Paragraph("A bold first paragraph with a link (https://x.test).".into()),
                Block::Heading(2, "Section".into()),
                Block::Item(None, "one".into()),
                Block::Item(None, "two".into()),
                Block::Item(Some(1), "first".into()),
                Block::Code(vec!["code line".into()]),
                Block::Code(vec!["| a | b |".into(), "| 1 | 2 |".into()]),
                Block::Paragraph("text after".into()),
            ]
        );
        assert_eq!(
            blocks("#nospace"),
            vec![Block::Paragraph("#nospace".into())]
        );
        assert_eq!(
            blocks("```\nunclosed"),
            vec![Block::Code(vec!["unclosed".into()])]
        );
    }
}
