//! XLSX: the report's text by section, and one sheet per table.

use rust_xlsxwriter::{Format, Workbook, XlsxError};

use crate::Report;
use crate::markdown::{Block, blocks};

/// Excel's limit for one cell.
const MAX_CELL: usize = 32_000;

fn cell(s: &str) -> String {
    if s.len() <= MAX_CELL {
        return s.to_owned();
    }
    let mut end = MAX_CELL;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// A sheet name Excel accepts: at most 31 characters, none of `[]:*?/\`, unique.
fn sheet_name(name: &str, taken: &mut Vec<String>) -> String {
    let clean: String = name
        .chars()
        .filter(|c| !"[]:*?/\\".contains(*c))
        .take(28)
        .collect();
    let base = if clean.trim().is_empty() {
        "Table".to_owned()
    } else {
        clean.trim().to_owned()
    };
    let mut candidate = base.clone();
    let mut n = 2;
    while taken.iter().any(|t| t.eq_ignore_ascii_case(&candidate)) || candidate == "Report" {
        candidate = format!("{base} {n}");
        n += 1;
    }
    taken.push(candidate.clone());
    candidate
}

pub fn render(r: &Report) -> Result<Vec<u8>, XlsxError> {
    let mut wb = Workbook::new();
    let bold = Format::new().set_bold();
    let title = Format::new().set_bold().set_font_size(14);
    let wrap = Format::new().set_text_wrap();
    {
        let ws = wb.add_worksheet();
        ws.set_name("Report")?;
        ws.set_column_width(0, 36)?;
        ws.set_column_width(1, 110)?;
        ws.write_string_with_format(0, 0, cell(&r.title), &title)?;
        if let Some(s) = &r.subtitle {
            ws.write_string(1, 0, cell(s))?;
        }
        ws.write_string_with_format(3, 0, "Section", &bold)?;
        ws.write_string_with_format(3, 1, "Text", &bold)?;
        let mut row = 4;
        let mut path: Vec<(u8, String)> = Vec::new();
        for block in blocks(&r.markdown) {
            let text = match block {
                Block::Heading(level, text) => {
                    path.retain(|(l, _)| *l < level);
                    path.push((level, text));
                    continue;
                }
                Block::Paragraph(t) => t,
                Block::Item(Some(n), t) => format!("{n}. {t}"),
                Block::Item(None, t) => format!("• {t}"),
                Block::Code(lines) => lines.join("\n"),
            };
            let section = path
                .iter()
                .map(|(_, t)| t.as_str())
                .collect::<Vec<_>>()
                .join(" › ");
            ws.write_string(row, 0, cell(&section))?;
            ws.write_string_with_format(row, 1, cell(&text), &wrap)?;
            row += 1;
        }
    }
    let mut taken = Vec::new();
    for t in &r.tables {
        let ws = wb.add_worksheet();
        ws.set_name(sheet_name(&t.name, &mut taken))?;
        for (c, h) in t.headers.iter().enumerate() {
            let c = u16::try_from(c).unwrap_or(u16::MAX);
            ws.write_string_with_format(0, c, cell(h), &bold)?;
            ws.set_column_width(c, 30)?;
        }
        for (r_i, row) in t.rows.iter().enumerate() {
            let r_i = u32::try_from(r_i + 1).unwrap_or(u32::MAX);
            for (c, v) in row.iter().enumerate() {
                let c = u16::try_from(c).unwrap_or(u16::MAX);
                ws.write_string_with_format(r_i, c, cell(v), &wrap)?;
            }
        }
    }
    wb.save_to_buffer()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sheet_names_are_valid_and_unique() {
        let mut taken = Vec::new();
        assert_eq!(
            sheet_name("Skills: status/errors", &mut taken),
            "Skills statuserrors"
        );
        assert_eq!(
            sheet_name("Skills: status/errors", &mut taken),
            "Skills statuserrors 2"
        );
        assert_eq!(sheet_name("Report", &mut taken), "Report 2");
        assert_eq!(sheet_name("", &mut taken), "Table");
        assert!(sheet_name(&"x".repeat(60), &mut taken).chars().count() <= 31);
    }
}
