//! The coach's own material: collections of documents, cut into chunks that agents retrieve
//! and cite.
//!
//! A [`Document`] is identified within its collection by its `source` (file name or URL) and
//! versioned by the SHA-256 of its content: uploading the same content again changes nothing,
//! changed content replaces the document's chunks and bumps its version. The extracted text is
//! kept with the document, so chunks and vectors can always be rebuilt from the database.
//! A [`Chunk`] points into that text by a byte span (`start..end`), which is what a citation
//! shows.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ids::{ChunkId, CollectionId, DocumentId, TenantId, UserId};
use crate::{Error, Result};

/// Longest collection name.
pub const MAX_COLLECTION_NAME_CHARS: usize = 200;
/// Longest collection description.
pub const MAX_DESCRIPTION_CHARS: usize = 2_000;

/// A named set of documents, owned by a coach (or by the tenant when `owner_id` is empty).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Collection {
    pub id: CollectionId,
    pub tenant_id: TenantId,
    /// The coach who owns it; empty for the practice's shared collections.
    pub owner_id: Option<UserId>,
    pub name: String,
    pub description: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

impl Collection {
    pub fn new(
        tenant: TenantId,
        owner: Option<UserId>,
        name: &str,
        description: &str,
    ) -> Result<Self> {
        let now = crate::now();
        Ok(Self {
            id: CollectionId::generate(),
            tenant_id: tenant,
            owner_id: owner,
            name: check_name(name)?,
            description: check_description(description)?,
            created_at: now,
            updated_at: now,
        })
    }
}

/// A valid collection name (trimmed).
pub fn check_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_COLLECTION_NAME_CHARS {
        return Err(Error::invalid(
            "name",
            format!("give a name of 1 to {MAX_COLLECTION_NAME_CHARS} characters"),
        ));
    }
    Ok(name.to_owned())
}

/// A valid description (trimmed).
pub fn check_description(d: &str) -> Result<String> {
    let d = d.trim();
    if d.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(Error::invalid(
            "description",
            format!("at most {MAX_DESCRIPTION_CHARS} characters"),
        ));
    }
    Ok(d.to_owned())
}

/// Where a document is in its ingestion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DocumentStatus {
    /// Accepted, waiting for the ingestion worker.
    Pending,
    /// Being chunked and embedded (`chunks_done` of `chunks_total`).
    Processing,
    /// Searchable.
    Ready,
    /// Ingestion failed (`error` says why); the previous version, if any, stays searchable.
    Failed,
}

impl DocumentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::Ready => "ready",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "processing" => Some(Self::Processing),
            "ready" => Some(Self::Ready),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// A document of a collection (its text is stored beside it, not in this struct).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Document {
    pub id: DocumentId,
    pub tenant_id: TenantId,
    pub collection_id: CollectionId,
    /// Display title (the first heading, or the file name).
    pub title: String,
    /// File name or URL; identifies the document within its collection.
    pub source: String,
    /// `text/plain`, `text/markdown`, `text/html` or `application/pdf`.
    pub media_type: String,
    /// SHA-256 (hex) of the uploaded bytes.
    pub content_hash: String,
    pub size_bytes: i64,
    /// 1 for the first upload, +1 for each changed content.
    pub version: i32,
    pub status: DocumentStatus,
    /// Why ingestion failed.
    pub error: Option<String>,
    pub chunks_total: i32,
    pub chunks_done: i32,
    /// Free key/value metadata, usable as a search filter.
    #[schema(value_type = Object)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// A passage of a document, with its embedding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Chunk {
    pub id: ChunkId,
    pub tenant_id: TenantId,
    pub collection_id: CollectionId,
    pub document_id: DocumentId,
    /// Position in the document, from 0.
    pub ordinal: i32,
    /// The headings above the passage, joined with " > ".
    pub heading: String,
    /// The passage: exactly `document_text[start..end]`.
    pub text: String,
    /// Byte offsets of the passage in the document's text.
    pub start: i64,
    pub end: i64,
    /// The embedding (not serialised in API answers).
    #[serde(skip)]
    pub embedding: Option<Vec<f32>>,
}

impl Chunk {
    /// What gets embedded and indexed: the headings give a short passage its context.
    pub fn indexed_text(&self) -> String {
        if self.heading.is_empty() {
            self.text.clone()
        } else {
            format!("{}\n{}", self.heading, self.text)
        }
    }
}

/// A retrieved passage, as an agent cites it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Passage {
    pub chunk_id: ChunkId,
    pub document_id: DocumentId,
    pub collection_id: CollectionId,
    /// The document's title.
    pub title: String,
    /// The headings above the passage.
    pub heading: String,
    pub text: String,
    /// Byte span of the passage in the document's text.
    pub start: i64,
    pub end: i64,
    /// Fused rank score (higher is better).
    pub score: f32,
}

/// Where agents retrieve passages from (implemented by the knowledge service).
#[async_trait::async_trait]
pub trait KnowledgeSource: Send + Sync {
    /// The passages of `collections` (of `tenant`) most relevant to `query`, best first.
    async fn retrieve(
        &self,
        tenant: TenantId,
        collections: &[CollectionId],
        query: &str,
        limit: usize,
    ) -> Result<Vec<Passage>>;
}

/// How to cut text into chunks.
#[derive(Debug, Clone, Copy)]
pub struct ChunkPolicy {
    /// Estimated tokens per chunk at most (all-MiniLM-L6-v2 reads 256 word pieces).
    pub max_tokens: usize,
    /// Estimated tokens repeated from the end of the previous chunk of the same section.
    pub overlap_tokens: usize,
}

impl Default for ChunkPolicy {
    fn default() -> Self {
        Self {
            max_tokens: 180,
            overlap_tokens: 30,
        }
    }
}

/// A passage found by [`chunk_text`]: headings above it and its byte span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub heading: String,
    pub start: usize,
    pub end: usize,
}

/// Estimated tokens of a text (word pieces of a BERT-style vocabulary run about 1.3 per
/// word; punctuation counts apart).
pub fn estimate_tokens(text: &str) -> usize {
    let words = text.split_whitespace().count();
    let punct = text.chars().filter(|c| c.is_ascii_punctuation()).count();
    (words * 4).div_ceil(3) + punct / 2
}

/// A block of the text: a heading (with its level) or a paragraph, by byte span.
#[derive(Debug)]
struct Block {
    level: usize,
    start: usize,
    end: usize,
}

/// Headings (`#` lines, Markdown style) and paragraphs (separated by blank lines).
fn blocks(text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut para: Option<(usize, usize)> = None;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        let trimmed = line.trim();
        let content_end = start + line.trim_end().len();
        let level = trimmed.bytes().take_while(|b| *b == b'#').count();
        let is_heading =
            (1..=6).contains(&level) && trimmed.as_bytes().get(level).is_some_and(|b| *b == b' ');
        if trimmed.is_empty() || is_heading {
            if let Some((s, e)) = para.take() {
                out.push(Block {
                    level: 0,
                    start: s,
                    end: e,
                });
            }
            if is_heading {
                let lead = line.len() - line.trim_start().len();
                out.push(Block {
                    level,
                    start: start + lead,
                    end: content_end,
                });
            }
            continue;
        }
        let lead = line.len() - line.trim_start().len();
        para = Some(match para {
            Some((s, _)) => (s, content_end),
            None => (start + lead, content_end),
        });
    }
    if let Some((s, e)) = para {
        out.push(Block {
            level: 0,
            start: s,
            end: e,
        });
    }
    out
}

/// Byte offsets in `text[start..end]` where sentences start (after `.`, `!`, `?` or a line
/// break followed by whitespace), always including `start`.
fn sentence_starts(text: &str, start: usize, end: usize) -> Vec<usize> {
    let mut out = vec![start];
    let slice = &text[start..end];
    let mut prev_end = false;
    for (i, c) in slice.char_indices() {
        if prev_end && !c.is_whitespace() {
            out.push(start + i);
            prev_end = false;
        } else if matches!(c, '.' | '!' | '?' | '\n') {
            prev_end = true;
        } else if !c.is_whitespace() {
            prev_end = false;
        }
    }
    out.dedup();
    out
}

/// Word starts in `text[start..end]`, including `start`.
fn word_starts(text: &str, start: usize, end: usize) -> Vec<usize> {
    let mut out = vec![start];
    let mut prev_space = false;
    for (i, c) in text[start..end].char_indices() {
        if prev_space && !c.is_whitespace() {
            out.push(start + i);
        }
        prev_space = c.is_whitespace();
    }
    out
}

/// Cut `text` into passages of at most `policy.max_tokens` (estimated), following its
/// structure: a chunk never spans two sections; paragraphs are packed whole when they fit,
/// long ones are cut at sentence ends (or, for a run-on sentence, between words); a chunk
/// continuing a section repeats the last sentences of the previous one, up to
/// `policy.overlap_tokens`. Headings are not part of a chunk's span but named in its
/// `heading`.
pub fn chunk_text(text: &str, policy: ChunkPolicy) -> Vec<Span> {
    let max = policy.max_tokens.max(8);
    let mut out: Vec<Span> = Vec::new();
    let mut headings: Vec<(usize, String)> = Vec::new();
    // The section being packed: its heading and the pieces (byte spans) not yet emitted.
    let mut pieces: Vec<(usize, usize)> = Vec::new();
    let mut section = String::new();

    let flush = |pieces: &mut Vec<(usize, usize)>, section: &str, out: &mut Vec<Span>| {
        let mut i = 0;
        while i < pieces.len() {
            // Greedily take pieces while they fit.
            let start = pieces[i].0;
            let mut j = i;
            while j + 1 < pieces.len() && estimate_tokens(&text[start..pieces[j + 1].1]) <= max {
                j += 1;
            }
            out.push(Span {
                heading: section.to_owned(),
                start,
                end: pieces[j].1,
            });
            if j + 1 >= pieces.len() {
                break;
            }
            // Overlap: step back over the last pieces while they stay within the budget.
            let mut k = j + 1;
            while k > i + 1
                && estimate_tokens(&text[pieces[k - 1].0..pieces[j].1]) <= policy.overlap_tokens
            {
                k -= 1;
            }
            i = k;
        }
        pieces.clear();
    };

    for b in blocks(text) {
        if b.level > 0 {
            flush(&mut pieces, &section, &mut out);
            let title = text[b.start..b.end]
                .trim_start_matches('#')
                .trim()
                .to_owned();
            headings.retain(|(l, _)| *l < b.level);
            headings.push((b.level, title));
            section = headings
                .iter()
                .map(|(_, t)| t.as_str())
                .collect::<Vec<_>>()
                .join(" > ");
            continue;
        }
        // A paragraph: whole if it fits, else by sentences, else by words.
        if estimate_tokens(&text[b.start..b.end]) <= max {
            pieces.push((b.start, b.end));
            continue;
        }
        let starts = sentence_starts(text, b.start, b.end);
        for (n, &s) in starts.iter().enumerate() {
            let e = starts.get(n + 1).copied().unwrap_or(b.end);
            let e = s + text[s..e].trim_end().len();
            if estimate_tokens(&text[s..e]) <= max {
                pieces.push((s, e));
                continue;
            }
            let words = word_starts(text, s, e);
            let mut w = 0;
            while w < words.len() {
                let mut v = w + 1;
                while v < words.len() && estimate_tokens(&text[words[w]..words[v]]) < max {
                    v += 1;
                }
                let end = if v < words.len() { words[v] } else { e };
                let end = words[w] + text[words[w]..end].trim_end().len();
                pieces.push((words[w], end));
                w = v;
            }
        }
    }
    flush(&mut pieces, &section, &mut out);
    out.retain(|s| !text[s.start..s.end].trim().is_empty());
    out
}

/// The title of a text: its first heading, else `fallback`.
pub fn title_of(text: &str, fallback: &str) -> String {
    blocks(text)
        .into_iter()
        .find(|b| b.level > 0)
        .map(|b| {
            text[b.start..b.end]
                .trim_start_matches('#')
                .trim()
                .to_owned()
        })
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| fallback.to_owned())
        .chars()
        .take(300)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts<'a>(text: &'a str, spans: &[Span]) -> Vec<&'a str> {
        spans.iter().map(|s| &text[s.start..s.end]).collect()
    }

    #[test]
    fn chunks_follow_headings_and_never_span_sections() {
        let text = "# Program\n\nIntro paragraph.\n\n## Week 1\n\nRun easy.\nTwice.\n\n## Week 2\n\nRun longer.\n";
        let spans = chunk_text(text, ChunkPolicy::default());
        assert_eq!(
            texts(text, &spans),
            vec!["Intro paragraph.", "Run easy.\nTwice.", "Run longer."]
        );
        assert_eq!(spans[0].heading, "Program");
        assert_eq!(spans[1].heading, "Program > Week 1");
        assert_eq!(spans[2].heading, "Program > Week 2");
    }

    #[test]
    fn small_paragraphs_are_packed_and_long_ones_cut_at_sentences_with_overlap() {
        let sentence = "The athlete runs easy on Monday and rests on Tuesday. ";
        let long = sentence.repeat(40);
        let text = format!("Short one.\n\nShort two.\n\n{long}");
        let policy = ChunkPolicy {
            max_tokens: 60,
            overlap_tokens: 15,
        };
        let spans = chunk_text(&text, policy);
        assert!(spans.len() > 3);
        for s in &spans {
            assert!(estimate_tokens(&text[s.start..s.end]) <= 60, "{s:?}");
            assert!(text.is_char_boundary(s.start) && text.is_char_boundary(s.end));
        }
        assert!(text[spans[0].start..spans[0].end].starts_with("Short one.\n\nShort two."));
        // Consecutive chunks of the long paragraph overlap by a sentence.
        assert!(spans[2].start < spans[1].end);
        // Together they cover all the text.
        let last = spans.last().map(|s| s.end).unwrap_or(0);
        assert_eq!(last, text.trim_end().len());
    }

    #[test]
    fn a_run_on_sentence_is_cut_between_words() {
        let text = "mot ".repeat(500);
        let spans = chunk_text(&text, ChunkPolicy::default());
        assert!(spans.len() >= 3);
        for s in &spans {
            assert!(estimate_tokens(&text[s.start..s.end]) <= 180);
            assert!(!text[s.start..s.end].starts_with(' '));
        }
    }

    #[test]
    fn multibyte_text_keeps_char_boundaries() {
        let text =
            "# Séance\n\nÉchauffement très léger… puis fractionné à allure cible. ".repeat(30);
        for s in chunk_text(
            &text,
            ChunkPolicy {
                max_tokens: 20,
                overlap_tokens: 5,
            },
        ) {
            assert!(text.is_char_boundary(s.start) && text.is_char_boundary(s.end));
        }
    }

    #[test]
    fn empty_text_has_no_chunks_and_titles_fall_back() {
        assert!(chunk_text("\n\n   \n", ChunkPolicy::default()).is_empty());
        assert_eq!(title_of("no heading here", "notes.txt"), "notes.txt");
        assert_eq!(
            title_of("text\n\n## Plan de course\n", "x"),
            "Plan de course"
        );
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("  ").is_err());
        assert_eq!(check_name(" Programme ").ok().as_deref(), Some("Programme"));
        assert!(check_description(&"x".repeat(MAX_DESCRIPTION_CHARS + 1)).is_err());
    }
}
