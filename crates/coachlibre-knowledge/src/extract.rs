//! From uploaded bytes to text with its structure: plain text and Markdown as they are,
//! HTML to Markdown-style text (headings as `#` lines, one paragraph per block), PDF through
//! `pdf-extract` (one paragraph per text block, pages apart).

use scraper::{ElementRef, Html, Node};

/// Largest accepted upload.
pub const MAX_UPLOAD_BYTES: usize = 20 * 1024 * 1024;

/// The formats understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Markdown,
    Html,
    Pdf,
}

impl Format {
    pub fn media_type(self) -> &'static str {
        match self {
            Self::Text => "text/plain",
            Self::Markdown => "text/markdown",
            Self::Html => "text/html",
            Self::Pdf => "application/pdf",
        }
    }

    /// Its name on a command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Markdown => "markdown",
            Self::Html => "html",
            Self::Pdf => "pdf",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Text, Self::Markdown, Self::Html, Self::Pdf]
            .into_iter()
            .find(|f| f.name() == name)
    }

    /// Its name in messages.
    pub fn label(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Markdown => "Markdown",
            Self::Html => "HTML",
            Self::Pdf => "PDF",
        }
    }

    /// The format of an upload, from its content (PDF magic), declared type and name.
    pub fn detect(bytes: &[u8], declared: Option<&str>, name: &str) -> Option<Self> {
        if bytes.starts_with(b"%PDF-") {
            return Some(Self::Pdf);
        }
        let declared = declared
            .map(|d| d.split(';').next().unwrap_or(d).trim().to_ascii_lowercase())
            .unwrap_or_default();
        let ext = name
            .rsplit_once('.')
            .map(|(_, e)| e.to_ascii_lowercase())
            .unwrap_or_default();
        match (declared.as_str(), ext.as_str()) {
            ("application/pdf", _) | (_, "pdf") => Some(Self::Pdf),
            ("text/html" | "application/xhtml+xml", _) | (_, "html" | "htm" | "xhtml") => {
                Some(Self::Html)
            }
            ("text/markdown" | "text/x-markdown", _) | (_, "md" | "markdown") => {
                Some(Self::Markdown)
            }
            ("text/plain", _) | (_, "txt" | "text") => Some(Self::Text),
            // Untyped uploads: HTML if it looks like it, text if it decodes.
            ("" | "application/octet-stream", _) => {
                let head = String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).to_lowercase();
                if head.contains("<html") || head.contains("<!doctype html") {
                    Some(Self::Html)
                } else if std::str::from_utf8(bytes).is_ok() {
                    Some(Self::Text)
                } else {
                    None
                }
            }
            _ => None,
        }
    }
}

/// Why an upload cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtractError {
    #[error(
        "unsupported file type: upload plain text (.txt), Markdown (.md), HTML (.html) or PDF (.pdf)"
    )]
    Unsupported,
    #[error("the file ({0} bytes) is larger than the {limit} MiB limit", limit = MAX_UPLOAD_BYTES / 1024 / 1024)]
    TooLarge(usize),
    #[error("the PDF is encrypted; upload a copy without a password")]
    Encrypted,
    #[error("the file could not be read as {format}: {reason}")]
    Corrupt {
        format: &'static str,
        reason: String,
    },
    #[error("the file has no extractable text (a scanned PDF needs OCR first)")]
    Empty,
    #[error("the document nests about {depth} levels deep; {limit} is the most accepted")]
    TooDeep { depth: usize, limit: usize },
    #[error("reading the file took longer than {0} s; split it into smaller files")]
    TooSlow(u64),
}

/// The text of an upload in `format`.
pub fn extract(bytes: &[u8], format: Format) -> Result<String, ExtractError> {
    if bytes.len() > MAX_UPLOAD_BYTES {
        return Err(ExtractError::TooLarge(bytes.len()));
    }
    let text = match format {
        Format::Text | Format::Markdown => normalise(&decode(bytes)),
        Format::Html => html_to_text(&decode(bytes))?,
        Format::Pdf => pdf_to_text(bytes)?,
    };
    if text.trim().is_empty() {
        return Err(ExtractError::Empty);
    }
    Ok(text)
}

/// UTF-8 (with or without BOM), else Windows-1252 (what older French text files use).
fn decode(bytes: &[u8]) -> String {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => encoding_rs::WINDOWS_1252.decode(bytes).0.into_owned(),
    }
}

/// `\n` line ends, no trailing spaces, at most one blank line in a row, no control characters.
pub fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank = 0;
    for line in text.replace("\r\n", "\n").replace('\r', "\n").lines() {
        let line: String = line
            .chars()
            .filter(|c| !c.is_control() || *c == '\t')
            .collect();
        let line = line.trim_end();
        if line.trim().is_empty() {
            blank += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank > 0 { "\n\n" } else { "\n" });
        }
        blank = 0;
        out.push_str(line);
    }
    out
}

/// Elements whose text is not content.
const SKIPPED: &[&str] = &[
    "script", "style", "noscript", "head", "template", "svg", "iframe", "nav", "form", "button",
];
/// Elements that start a new paragraph.
const BLOCKS: &[&str] = &[
    "p",
    "div",
    "section",
    "article",
    "main",
    "header",
    "footer",
    "aside",
    "blockquote",
    "pre",
    "ul",
    "ol",
    "li",
    "dl",
    "dt",
    "dd",
    "table",
    "tr",
    "figure",
    "figcaption",
    "hr",
    "address",
];

/// Deepest element nesting read from an HTML document. Real pages stay under a few dozen
/// levels; hostile ones nest thousands deep to exhaust a parser's stack or time (the HTML
/// tree builder scans its stack of open elements at each start tag, so a document nested
/// `n` deep costs `n²`).
pub const MAX_HTML_DEPTH: usize = 512;

/// Elements that never have content.
const VOID: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
    "track", "wbr",
];
/// Elements whose end tag may be left out (the next sibling closes them), so that they do not
/// count towards the nesting estimate: each nests only through an element that does count.
const OPTIONAL_END: &[&str] = &[
    "html", "head", "body", "p", "li", "dt", "dd", "rt", "rp", "optgroup", "option", "colgroup",
    "caption", "thead", "tbody", "tfoot", "tr", "td", "th",
];
/// Elements whose content is raw text: tags inside them are not tags.
const RAW_TEXT: &[&str] = &["script", "style", "textarea", "title", "xmp", "plaintext"];

/// An upper estimate of how deep `html` nests, read in one linear pass over its tags (the
/// tree builder can add at most a few implied levels per counted one, e.g. a table's body
/// and row). Comments, raw text, void elements and elements with optional end tags are not
/// counted, nor self-closed ones inside SVG or MathML (in HTML, `<div/>` opens a `div`); an
/// end tag closes one level.
pub fn html_depth(html: &str) -> usize {
    let bytes = html.as_bytes();
    let (mut i, mut depth, mut max) = (0, 0usize, 0usize);
    // Open `svg` and `math` elements, where `/>` closes an element.
    let mut foreign = 0usize;
    while let Some(off) = memchr_lt(&bytes[i..]) {
        i += off + 1;
        let rest = &bytes[i..];
        if rest.starts_with(b"!--") {
            i = find(bytes, i + 3, b"-->").map_or(bytes.len(), |e| e + 3);
            continue;
        }
        let closing = rest.first() == Some(&b'/');
        let name_start = i + usize::from(closing);
        let name_len = bytes[name_start..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || **b == b'-')
            .count();
        if name_len == 0 || !bytes[name_start].is_ascii_alphabetic() {
            continue;
        }
        let name = html[name_start..name_start + name_len].to_ascii_lowercase();
        let tag_end = find(bytes, name_start + name_len, b">").unwrap_or(bytes.len());
        i = (tag_end + 1).min(bytes.len());
        let is_foreign = name == "svg" || name == "math";
        if closing {
            if is_foreign {
                foreign = foreign.saturating_sub(1);
            }
            if !VOID.contains(&name.as_str()) && !OPTIONAL_END.contains(&name.as_str()) {
                depth = depth.saturating_sub(1);
            }
            continue;
        }
        if RAW_TEXT.contains(&name.as_str()) {
            let close = format!("</{name}");
            let lower = |b: &u8| b.to_ascii_lowercase();
            i = bytes[i..]
                .windows(close.len())
                .position(|w| w.iter().map(lower).eq(close.bytes()))
                .map_or(bytes.len(), |p| i + p);
            continue;
        }
        let self_closed = tag_end > 0 && bytes.get(tag_end - 1) == Some(&b'/');
        if is_foreign && !self_closed {
            foreign += 1;
        }
        if (self_closed && (foreign > 0 || is_foreign))
            || VOID.contains(&name.as_str())
            || OPTIONAL_END.contains(&name.as_str())
        {
            continue;
        }
        depth += 1;
        max = max.max(depth);
    }
    max
}

fn memchr_lt(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|b| *b == b'<')
}

fn find(bytes: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    bytes
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| from + p)
}

/// HTML to Markdown-style text: `#` headings, paragraphs apart, list items as `- `.
/// A document nested deeper than [`MAX_HTML_DEPTH`] is refused before it is parsed.
pub fn html_to_text(html: &str) -> Result<String, ExtractError> {
    let depth = html_depth(html);
    if depth > MAX_HTML_DEPTH {
        return Err(ExtractError::TooDeep {
            depth,
            limit: MAX_HTML_DEPTH,
        });
    }
    let doc = Html::parse_document(html);
    Ok(normalise(&render(doc.root_element())))
}

/// What is still to write: a node, or the text that follows an element's content.
enum Step<'a> {
    Node(ego_tree::NodeRef<'a, Node>),
    Text(&'static str),
    /// A heading's content, written since `start`, collapsed to one line.
    EndHeading(usize),
}

/// The text of `root`'s content, walked with an explicit stack: no recursion, whatever the
/// depth of the tree.
fn render(root: ElementRef<'_>) -> String {
    let mut out = String::new();
    let mut stack: Vec<Step<'_>> = root.children().rev().map(Step::Node).collect();
    while let Some(step) = stack.pop() {
        let node = match step {
            Step::Node(node) => node,
            Step::Text(t) => {
                out.push_str(t);
                continue;
            }
            Step::EndHeading(start) => {
                let line = out[start..]
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ");
                out.truncate(start);
                out.push_str(&line);
                out.push_str("\n\n");
                continue;
            }
        };
        match node.value() {
            Node::Text(t) => {
                // Collapse HTML whitespace.
                let mut last_space = out.ends_with([' ', '\n']);
                for c in t.chars() {
                    if c.is_whitespace() {
                        if !last_space {
                            out.push(' ');
                            last_space = true;
                        }
                    } else {
                        out.push(c);
                        last_space = false;
                    }
                }
            }
            Node::Element(e) => {
                let name = e.name();
                if SKIPPED.contains(&name) {
                    continue;
                }
                let heading = match name {
                    "h1" => 1,
                    "h2" => 2,
                    "h3" => 3,
                    "h4" => 4,
                    "h5" => 5,
                    "h6" => 6,
                    _ => 0,
                };
                // What follows the content is pushed first, then the children, last first.
                if heading > 0 {
                    out.push_str("\n\n");
                    out.push_str(&"#".repeat(heading));
                    out.push(' ');
                    stack.push(Step::EndHeading(out.len()));
                } else if name == "br" {
                    out.push('\n');
                } else if name == "li" {
                    if !out.ends_with('\n') {
                        out.push('\n');
                    }
                    out.push_str("- ");
                    stack.push(Step::Text("\n"));
                } else if BLOCKS.contains(&name) {
                    out.push_str("\n\n");
                    stack.push(Step::Text("\n\n"));
                }
                stack.extend(node.children().rev().map(Step::Node));
            }
            _ => {}
        }
    }
    out
}

/// The text of a PDF. `pdf-extract` panics on some malformed files; that is caught and
/// reported as a corrupt file.
fn pdf_to_text(bytes: &[u8]) -> Result<String, ExtractError> {
    let encrypted = bytes.windows(8).any(|w| w == b"/Encrypt");
    let result = std::panic::catch_unwind(|| pdf_text(bytes));
    match result {
        Ok(Ok(text)) => Ok(pdf_paragraphs(&text)),
        _ if encrypted => Err(ExtractError::Encrypted),
        Ok(Err(reason)) => Err(ExtractError::Corrupt {
            format: "PDF",
            reason,
        }),
        Err(_) => Err(ExtractError::Corrupt {
            format: "PDF",
            reason: "its structure is invalid".into(),
        }),
    }
}

/// `pdf-extract` puts a line break at each line of the page: rejoin lines into paragraphs
/// (a blank line or a page break ends one), undoing end-of-line hyphenation.
/// What `pdf_extract::extract_text_from_mem` does, with the page tree checked first: the
/// reader looks up a page's inherited attributes through its `/Parent` links without
/// remembering where it has been, so a page that is its own ancestor recurses until the stack
/// overflows (found by fuzzing).
fn pdf_text(bytes: &[u8]) -> Result<String, String> {
    let mut doc = pdf_extract::Document::load_mem(bytes).map_err(|e| e.to_string())?;
    if doc.is_encrypted() {
        // Files locked with an empty user password open as they are.
        doc.decrypt("").map_err(|e| e.to_string())?;
    }
    for page in doc.get_pages().into_values() {
        page_ancestry_ends(&doc, page)?;
    }
    let mut text = String::new();
    pdf_extract::output_doc(&doc, &mut pdf_extract::PlainTextOutput::new(&mut text))
        .map_err(|e| e.to_string())?;
    Ok(text)
}

/// Deepest page tree accepted (real files have a handful of levels).
const MAX_PAGE_TREE_DEPTH: usize = 256;

/// Whether the `/Parent` links from `page` reach the root without a loop.
fn page_ancestry_ends(
    doc: &pdf_extract::Document,
    page: pdf_extract::ObjectId,
) -> Result<(), String> {
    let mut seen = std::collections::HashSet::from([page]);
    let mut node = doc.get_dictionary(page).ok();
    while let Some(dict) = node {
        let Ok(parent) = dict
            .get(b"Parent")
            .and_then(pdf_extract::Object::as_reference)
        else {
            return Ok(());
        };
        if !seen.insert(parent) || seen.len() > MAX_PAGE_TREE_DEPTH {
            return Err("its page tree loops back on itself".into());
        }
        node = doc.get_dictionary(parent).ok();
    }
    Ok(())
}

fn pdf_paragraphs(text: &str) -> String {
    let text = text.replace('\u{c}', "\n\n");
    let mut out = String::with_capacity(text.len());
    for para in text.split("\n\n") {
        let mut p = String::new();
        for line in para.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if p.ends_with('-') && line.starts_with(char::is_lowercase) {
                p.pop();
            } else if !p.is_empty() {
                p.push(' ');
            }
            p.push_str(line);
        }
        if !p.is_empty() {
            out.push_str(&p);
            out.push_str("\n\n");
        }
    }
    normalise(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_detected_by_magic_type_and_name() {
        assert_eq!(
            Format::detect(b"%PDF-1.4 ...", None, "x.bin"),
            Some(Format::Pdf)
        );
        assert_eq!(
            Format::detect(b"# T", None, "notes.md"),
            Some(Format::Markdown)
        );
        assert_eq!(
            Format::detect(b"<p>x</p>", Some("text/html; charset=utf-8"), "page"),
            Some(Format::Html)
        );
        assert_eq!(
            Format::detect(b"<!DOCTYPE html><html>", None, "upload"),
            Some(Format::Html)
        );
        assert_eq!(Format::detect(b"hello", None, "a.txt"), Some(Format::Text));
        assert_eq!(
            Format::detect(b"\x00\x01\xff", Some("image/png"), "a.png"),
            None
        );
        assert_eq!(Format::detect(b"\xff\xfe\x00", None, "blob"), None);
    }

    #[test]
    fn html_keeps_headings_paragraphs_and_lists_and_drops_scripts() {
        let html = "<html><head><title>T</title><style>p{}</style></head><body>\
            <nav>menu</nav><h1>Programme  <em>10 km</em></h1><p>Courir   trois fois\n par \
            semaine.</p><script>alert(1)</script><ul><li>Lundi: repos</li><li>Mardi: \
            fractionn&eacute;</li></ul><h2>Semaine 2</h2><div>Plus long.<br>Toujours.</div>\
            </body></html>";
        let text = html_to_text(html).expect("shallow");
        assert_eq!(
            text,
            "# Programme 10 km\n\nCourir trois fois par semaine.\n\n- Lundi: repos\n- Mardi: \
             fractionné\n\n## Semaine 2\n\nPlus long.\nToujours."
        );
    }

    #[test]
    fn deep_documents_are_refused_before_parsing_and_deep_trees_walked_without_recursion() {
        let nested = |n: usize, tag: &str| {
            format!(
                "<html><body>{}x{}</body></html>",
                format!("<{tag}>").repeat(n),
                format!("</{tag}>").repeat(n)
            )
        };
        // The reproduction: 10,000 nested divs (110 KB) overflowed the stack.
        let err = extract(nested(10_000, "div").as_bytes(), Format::Html);
        assert_eq!(
            err,
            Err(ExtractError::TooDeep {
                depth: 10_000,
                limit: MAX_HTML_DEPTH
            })
        );
        // Under the limit, a deep tree is walked with a small stack.
        let html = nested(MAX_HTML_DEPTH, "blockquote");
        let text = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || html_to_text(&html))
            .expect("thread")
            .join()
            .expect("no overflow");
        assert_eq!(text.as_deref(), Ok("x"));
        // Elements with optional end tags, void elements, comments and scripts do not count.
        let flat = format!(
            "<ul>{}</ul><p>a<p>b<br><img src=x><!-- <div><div> --><script>'<div>'</script>",
            "<li>item".repeat(5_000)
        );
        assert_eq!(html_depth(&flat), 1);
        assert!(html_to_text(&flat).is_ok());
        assert_eq!(html_depth("<div><div/><span>a</span></div>"), 3);
        assert_eq!(html_depth("<svg><path/><g><path/></g></svg>"), 2);
        assert_eq!(html_depth(&"<div/>".repeat(600)), 600);
    }

    #[test]
    fn text_is_normalised_and_latin1_decoded() {
        assert_eq!(normalise("a\r\nb  \n\n\n\nc\u{7}"), "a\nb\n\nc");
        assert_eq!(
            extract(b"caf\xe9 cr\xe8me", Format::Text).ok().as_deref(),
            Some("café crème")
        );
        assert_eq!(extract(b"  \n ", Format::Text), Err(ExtractError::Empty));
    }

    #[test]
    fn broken_pdfs_get_clear_errors() {
        let err = extract(b"%PDF-1.4\nthis is not a pdf at all", Format::Pdf);
        assert!(matches!(err, Err(ExtractError::Corrupt { .. })), "{err:?}");
        let err = extract(
            b"%PDF-1.4\ntrailer << /Encrypt 5 0 R >>\n%%EOF",
            Format::Pdf,
        );
        assert_eq!(err, Err(ExtractError::Encrypted));
    }

    #[test]
    fn a_page_that_is_its_own_parent_is_refused_not_recursed() {
        let good = coachlibre_testkit::fixtures::pdf(&["Semaine 13"]);
        let text = String::from_utf8(good).unwrap();
        assert!(text.contains("/Parent 2 0 R"));
        // Same length: the cross-reference offsets stay right.
        let looped = text.replace("/Parent 2 0 R", "/Parent 3 0 R");
        match extract(looped.as_bytes(), Format::Pdf) {
            Err(ExtractError::Corrupt { reason, .. }) => {
                assert!(reason.contains("loops"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        assert!(
            extract(text.as_bytes(), Format::Pdf)
                .unwrap()
                .contains("Semaine 13")
        );
    }

    #[test]
    fn pdf_lines_are_rejoined_into_paragraphs() {
        assert_eq!(
            pdf_paragraphs("Le plan d'entraî-\nnement dure\nhuit semaines.\n\n\u{c}Page deux."),
            "Le plan d'entraînement dure huit semaines.\n\nPage deux."
        );
    }
}
