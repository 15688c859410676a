//! PDF layout: A4, margins of 2 cm, Helvetica for text, Helvetica-Bold for headings, Courier
//! for code; lines wrapped by estimated glyph widths; a footer with the page number.

use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str, TextStr};

use crate::Report;
use crate::markdown::{Block, blocks};

const WIDTH: f32 = 595.0;
const HEIGHT: f32 = 842.0;
const MARGIN: f32 = 56.0;
const BOTTOM: f32 = MARGIN + 20.0;

#[derive(Clone, Copy, PartialEq)]
enum Font {
    Regular,
    Bold,
    Mono,
}

impl Font {
    fn name(self) -> Name<'static> {
        match self {
            Self::Regular => Name(b"F1"),
            Self::Bold => Name(b"F2"),
            Self::Mono => Name(b"F3"),
        }
    }
}

/// Estimated advance of a character in ems (Helvetica's proportions; Courier is fixed).
fn advance(c: char, font: Font) -> f32 {
    if font == Font::Mono {
        return 0.6;
    }
    let w = match c {
        ' ' | 'i' | 'j' | 'l' | 'I' | '.' | ',' | ';' | ':' | '\'' | '!' | '|' => 0.28,
        'f' | 't' | 'r' | '(' | ')' | '[' | ']' | '-' | '/' => 0.34,
        'm' | 'w' | 'M' | 'W' | '@' | '%' => 0.86,
        c if c.is_ascii_digit() => 0.56,
        c if c.is_uppercase() => 0.70,
        _ => 0.56,
    };
    if font == Font::Bold { w * 1.07 } else { w }
}

fn text_width(s: &str, font: Font, size: f32) -> f32 {
    s.chars().map(|c| advance(c, font)).sum::<f32>() * size
}

/// Words packed into lines no wider than `width`; a word longer than a line is cut.
fn wrap(text: &str, font: Font, size: f32, width: f32) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let candidate = if line.is_empty() {
            word.to_owned()
        } else {
            format!("{line} {word}")
        };
        if text_width(&candidate, font, size) <= width {
            line = candidate;
            continue;
        }
        if !line.is_empty() {
            lines.push(std::mem::take(&mut line));
        }
        let mut piece = String::new();
        for c in word.chars() {
            piece.push(c);
            if text_width(&piece, font, size) > width {
                piece.pop();
                lines.push(std::mem::take(&mut piece));
                piece.push(c);
            }
        }
        line = piece;
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// Text in the standard fonts' WinAnsi encoding (Latin-1 and typographic punctuation);
/// anything else becomes '?'.
fn win_ansi(s: &str) -> Vec<u8> {
    s.chars()
        .map(|c| match c {
            ' '..='~' => c as u8,
            '\u{a0}'..='\u{ff}' => u8::try_from(u32::from(c)).unwrap_or(b'?'),
            '€' => 0x80,
            '‚' => 0x82,
            '„' => 0x84,
            '…' => 0x85,
            '‘' => 0x91,
            '’' => 0x92,
            '“' => 0x93,
            '”' => 0x94,
            '•' => 0x95,
            '–' => 0x96,
            '—' => 0x97,
            '™' => 0x99,
            'œ' => 0x9c,
            'Œ' => 0x8c,
            'Ÿ' => 0x9f,
            '\t' => b' ',
            _ => b'?',
        })
        .collect()
}

/// Lines placed on pages.
struct Layout {
    pages: Vec<Content>,
    y: f32,
}

impl Layout {
    fn new() -> Self {
        let mut l = Self {
            pages: Vec::new(),
            y: 0.0,
        };
        l.new_page();
        l
    }

    fn new_page(&mut self) {
        self.pages.push(Content::new());
        self.y = HEIGHT - MARGIN;
    }

    fn space(&mut self, pts: f32) {
        self.y -= pts;
    }

    fn line(&mut self, text: &str, font: Font, size: f32, x: f32) {
        let leading = size * 1.35;
        if self.y - leading < BOTTOM {
            self.new_page();
        }
        self.y -= leading;
        if let Some(page) = self.pages.last_mut() {
            page.begin_text();
            page.set_font(font.name(), size);
            page.next_line(x, self.y);
            page.show(Str(&win_ansi(text)));
            page.end_text();
        }
    }

    fn paragraph(&mut self, text: &str, font: Font, size: f32, indent: f32) {
        let width = WIDTH - 2.0 * MARGIN - indent;
        for l in wrap(text, font, size, width) {
            self.line(&l, font, size, MARGIN + indent);
        }
    }
}

pub fn render(r: &Report) -> Vec<u8> {
    let mut layout = Layout::new();
    layout.paragraph(&r.title, Font::Bold, 20.0, 0.0);
    if let Some(s) = &r.subtitle {
        layout.paragraph(s, Font::Regular, 10.0, 0.0);
    }
    layout.space(10.0);
    for block in blocks(&r.markdown) {
        match block {
            Block::Heading(level, text) => {
                let size = match level {
                    1 => 16.0,
                    2 => 13.5,
                    _ => 11.5,
                };
                // Keep a heading with at least two lines of what follows.
                if layout.y - size * 1.35 * 3.0 < BOTTOM {
                    layout.new_page();
                }
                layout.space(8.0);
                layout.paragraph(&text, Font::Bold, size, 0.0);
                layout.space(2.0);
            }
            Block::Paragraph(text) => {
                layout.paragraph(&text, Font::Regular, 10.5, 0.0);
                layout.space(5.0);
            }
            Block::Item(n, text) => {
                let marker = n.map_or_else(|| "•".to_owned(), |n| format!("{n}."));
                let lines = wrap(&text, Font::Regular, 10.5, WIDTH - 2.0 * MARGIN - 16.0);
                for (i, l) in lines.iter().enumerate() {
                    if i == 0 {
                        // The marker sits in the indent on the item's first line.
                        layout.line(&format!("{marker} {l}"), Font::Regular, 10.5, MARGIN + 4.0);
                    } else {
                        layout.line(l, Font::Regular, 10.5, MARGIN + 16.0);
                    }
                }
                layout.space(2.0);
            }
            Block::Code(lines) => {
                for l in lines {
                    layout.paragraph(&l, Font::Mono, 9.0, 8.0);
                }
                layout.space(5.0);
            }
        }
    }
    for t in &r.tables {
        layout.space(8.0);
        layout.paragraph(&t.name, Font::Bold, 13.5, 0.0);
        layout.paragraph(&t.headers.join(" | "), Font::Bold, 9.5, 0.0);
        for row in &t.rows {
            layout.paragraph(&row.join(" | "), Font::Regular, 9.5, 0.0);
        }
    }

    // Objects: 1 catalog, 2 page tree, 3-5 fonts, 6 info, then two per page.
    let mut pdf = Pdf::new();
    let catalog = Ref::new(1);
    let tree = Ref::new(2);
    let fonts = [
        (Font::Regular, Ref::new(3), "Helvetica"),
        (Font::Bold, Ref::new(4), "Helvetica-Bold"),
        (Font::Mono, Ref::new(5), "Courier"),
    ];
    let total = layout.pages.len();
    let page_ids: Vec<Ref> = (0..total)
        .map(|i| Ref::new(7 + 2 * i32::try_from(i).unwrap_or(0)))
        .collect();
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree)
        .kids(page_ids.iter().copied())
        .count(i32::try_from(total).unwrap_or(i32::MAX));
    for (font, id, base) in fonts {
        let _ = font;
        pdf.type1_font(id)
            .base_font(Name(base.as_bytes()))
            .encoding_predefined(Name(b"WinAnsiEncoding"));
    }
    pdf.document_info(Ref::new(6))
        .title(TextStr(&r.title))
        .producer(TextStr("CoachLibre"));
    for (i, mut content) in layout.pages.into_iter().enumerate() {
        let footer = format!("{} · {} / {total}", r.title, i + 1);
        content.begin_text();
        content.set_font(Font::Regular.name(), 8.0);
        content.next_line(MARGIN, MARGIN - 18.0);
        content.show(Str(&win_ansi(&footer)));
        content.end_text();
        let page_id = page_ids[i];
        let content_id = Ref::new(page_id.get() + 1);
        let mut page = pdf.page(page_id);
        page.parent(tree)
            .media_box(Rect::new(0.0, 0.0, WIDTH, HEIGHT))
            .contents(content_id);
        let mut resources = page.resources();
        let mut font_dict = resources.fonts();
        for (font, id, _) in fonts {
            font_dict.pair(font.name(), id);
        }
        font_dict.finish();
        resources.finish();
        page.finish();
        pdf.stream(content_id, content.finish().as_slice());
    }
    pdf.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapping_respects_the_width() {
        let text = "Le fractionné alterne des efforts courts et des récupérations en trottinant";
        let lines = wrap(text, Font::Regular, 10.0, 120.0);
        assert!(lines.len() > 2);
        for l in &lines {
            assert!(text_width(l, Font::Regular, 10.0) <= 120.0, "{l}");
        }
        assert_eq!(lines.join(" "), text);
        let long = wrap(&"x".repeat(100), Font::Mono, 10.0, 60.0);
        assert!(long.iter().all(|l| l.chars().count() <= 10));
    }

    #[test]
    fn encodes_french_text() {
        assert_eq!(
            win_ansi("é à ç €"),
            vec![0xe9, b' ', 0xe0, b' ', 0xe7, b' ', 0x80]
        );
        assert_eq!(win_ansi("日"), vec![b'?']);
    }
}
