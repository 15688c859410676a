//! Exports: a report (a title, Markdown text and tables) as Markdown, PDF or XLSX.
//!
//! The Markdown is read as blocks (headings, paragraphs, lists, code, table lines), which the
//! PDF writer lays out on A4 pages with the standard PDF fonts (Helvetica, Courier: nothing to
//! embed, Latin-1 text including French accents) and the XLSX writer puts one per row under
//! its section. Used by analyses today, by training plans and CVs later.

mod markdown;
mod pdf;
mod xlsx;

pub use markdown::{Block, blocks};

/// What to export.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub title: String,
    /// A line under the title (source, date).
    pub subtitle: Option<String>,
    /// The body, in Markdown.
    pub markdown: String,
    /// Tables, each exported as a Markdown table, a PDF section and an XLSX sheet.
    pub tables: Vec<Table>,
}

/// A table of text cells.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    pub name: String,
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
#[error("export failed: {0}")]
pub struct ExportError(String);

/// The report as one Markdown document.
pub fn to_markdown(r: &Report) -> String {
    let mut out = format!("# {}\n\n", r.title.trim());
    if let Some(s) = &r.subtitle {
        out.push_str(&format!("_{}_\n\n", s.trim()));
    }
    out.push_str(r.markdown.trim());
    out.push('\n');
    for t in &r.tables {
        out.push_str(&format!("\n## {}\n\n", t.name));
        let cell = |c: &str| c.replace('|', "\\|").replace('\n', " ");
        out.push_str(&format!(
            "| {} |\n|{}|\n",
            t.headers
                .iter()
                .map(|h| cell(h))
                .collect::<Vec<_>>()
                .join(" | "),
            vec!["---"; t.headers.len().max(1)].join("|")
        ));
        for row in &t.rows {
            out.push_str(&format!(
                "| {} |\n",
                row.iter().map(|c| cell(c)).collect::<Vec<_>>().join(" | ")
            ));
        }
    }
    out
}

/// The report as a PDF (A4, standard fonts).
pub fn to_pdf(r: &Report) -> Vec<u8> {
    pdf::render(r)
}

/// The report as an XLSX workbook: a "Report" sheet (section, text) and one sheet per table.
pub fn to_xlsx(r: &Report) -> Result<Vec<u8>, ExportError> {
    xlsx::render(r).map_err(|e| ExportError(e.to_string()))
}
