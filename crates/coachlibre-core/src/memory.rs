//! What an agent remembers about a client, in three tiers:
//!
//! - the **core profile**, a small block pinned in every prompt ([`Profile`]);
//! - **recall**, the conversation history (messages, and the rolling summary of old turns);
//! - **archival** memories ([`Memory`]): facts, commitments, preferences and progress, each
//!   with an embedding, the most relevant recalled into each prompt.
//!
//! An archival memory may carry a `key` (`location`, `occupation`, ...): a new memory with the
//! same key replaces the old one, so that "I moved to Lyon" updates "I live in Paris" instead of
//! piling up next to it. Without a key, a new memory nearly identical to an old one (cosine
//! similarity at least [`SAME_MEMORY_SIMILARITY`]) replaces it too.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ids::{MemoryId, TenantId, UserId};
use crate::{Error, Result};

/// Longest memory text.
pub const MAX_MEMORY_CHARS: usize = 1_000;
/// Longest value of a profile field.
pub const MAX_PROFILE_FIELD_CHARS: usize = 500;
/// Two unkeyed memories this similar are the same memory, updated.
pub const SAME_MEMORY_SIMILARITY: f32 = 0.9;

/// The kind of an archival memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MemoryKind {
    /// Something true about the client (where they live, what they do).
    Fact,
    /// Something the client said they will do.
    Commitment,
    /// A like, dislike or way of working.
    Preference,
    /// Something the client achieved.
    Progress,
    /// A limit to respect (injury, schedule, allergy).
    Constraint,
}

impl MemoryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fact => "fact",
            Self::Commitment => "commitment",
            Self::Preference => "preference",
            Self::Progress => "progress",
            Self::Constraint => "constraint",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "fact" => Some(Self::Fact),
            "commitment" => Some(Self::Commitment),
            "preference" => Some(Self::Preference),
            "progress" => Some(Self::Progress),
            "constraint" => Some(Self::Constraint),
            _ => None,
        }
    }
}

/// An archival memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Memory {
    pub id: MemoryId,
    pub tenant_id: TenantId,
    pub client_id: UserId,
    pub kind: MemoryKind,
    /// Memories with the same key replace each other.
    pub key: Option<String>,
    pub content: String,
    /// Where it came from: `extracted`, `tool` (the agent's `remember`), or `coach`.
    pub source: String,
    #[serde(skip)]
    pub embedding: Option<Vec<f32>>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

impl Memory {
    pub fn new(
        tenant_id: TenantId,
        client_id: UserId,
        kind: MemoryKind,
        key: Option<String>,
        content: &str,
        source: &str,
    ) -> Result<Self> {
        let content = content.trim();
        if content.is_empty() || content.chars().count() > MAX_MEMORY_CHARS {
            return Err(Error::invalid(
                "content",
                format!("must be 1 to {MAX_MEMORY_CHARS} characters"),
            ));
        }
        let now = crate::now();
        Ok(Self {
            id: MemoryId::generate(),
            tenant_id,
            client_id,
            kind,
            key,
            content: content.to_owned(),
            source: source.to_owned(),
            embedding: None,
            created_at: now,
            updated_at: now,
        })
    }
}

/// The core profile, pinned in every prompt.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Profile {
    pub name: Option<String>,
    pub goals: Option<String>,
    pub preferences: Option<String>,
    pub constraints: Option<String>,
    pub notes: Option<String>,
}

/// The fields of [`Profile`], by name.
pub const PROFILE_FIELDS: &[&str] = &["name", "goals", "preferences", "constraints", "notes"];

impl Profile {
    /// Set one field (an empty value clears it).
    pub fn set(&mut self, field: &str, value: &str) -> Result<()> {
        let value = value.trim();
        if value.chars().count() > MAX_PROFILE_FIELD_CHARS {
            return Err(Error::invalid(
                "value",
                format!("at most {MAX_PROFILE_FIELD_CHARS} characters"),
            ));
        }
        let value = (!value.is_empty()).then(|| value.to_owned());
        let slot = match field {
            "name" => &mut self.name,
            "goals" => &mut self.goals,
            "preferences" => &mut self.preferences,
            "constraints" => &mut self.constraints,
            "notes" => &mut self.notes,
            _ => {
                return Err(Error::invalid(
                    "field",
                    format!("one of: {}", PROFILE_FIELDS.join(", ")),
                ));
            }
        };
        *slot = value;
        Ok(())
    }

    /// Check every field's length (for a whole profile sent by a coach).
    pub fn validate(&self) -> Result<()> {
        let mut copy = Self::default();
        for (field, value) in self.fields() {
            copy.set(field, value)?;
        }
        Ok(())
    }

    /// The set fields, in a fixed order.
    pub fn fields(&self) -> Vec<(&'static str, &str)> {
        [
            ("name", &self.name),
            ("goals", &self.goals),
            ("preferences", &self.preferences),
            ("constraints", &self.constraints),
            ("notes", &self.notes),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
        .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.fields().is_empty()
    }
}

/// Cosine similarity of two vectors (0 when either is empty or zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() || a.is_empty() {
        return 0.0;
    }
    let (mut dot, mut na, mut nb) = (0.0f32, 0.0f32, 0.0f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na.sqrt() * nb.sqrt())
    }
}

/// A memory candidate found in what the client wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    pub kind: MemoryKind,
    pub key: Option<&'static str>,
    pub content: String,
    /// When set, the profile field this statement also fills.
    pub profile_field: Option<(&'static str, String)>,
}

/// One pattern: a lowercase phrase that opens a first-person statement (English or French).
struct Cue {
    phrase: &'static str,
    kind: MemoryKind,
    key: Option<&'static str>,
    /// The profile field the rest of the sentence fills.
    profile: Option<&'static str>,
}

const CUES: &[Cue] = &[
    Cue {
        phrase: "my name is ",
        kind: MemoryKind::Fact,
        key: Some("name"),
        profile: Some("name"),
    },
    Cue {
        phrase: "call me ",
        kind: MemoryKind::Fact,
        key: Some("name"),
        profile: Some("name"),
    },
    Cue {
        phrase: "je m'appelle ",
        kind: MemoryKind::Fact,
        key: Some("name"),
        profile: Some("name"),
    },
    Cue {
        phrase: "i live in ",
        kind: MemoryKind::Fact,
        key: Some("location"),
        profile: None,
    },
    Cue {
        phrase: "i moved to ",
        kind: MemoryKind::Fact,
        key: Some("location"),
        profile: None,
    },
    Cue {
        phrase: "j'habite à ",
        kind: MemoryKind::Fact,
        key: Some("location"),
        profile: None,
    },
    Cue {
        phrase: "i work as ",
        kind: MemoryKind::Fact,
        key: Some("occupation"),
        profile: None,
    },
    Cue {
        phrase: "i work at ",
        kind: MemoryKind::Fact,
        key: Some("employer"),
        profile: None,
    },
    Cue {
        phrase: "je travaille ",
        kind: MemoryKind::Fact,
        key: Some("occupation"),
        profile: None,
    },
    Cue {
        phrase: "my goal is ",
        kind: MemoryKind::Commitment,
        key: None,
        profile: Some("goals"),
    },
    Cue {
        phrase: "i want to ",
        kind: MemoryKind::Commitment,
        key: None,
        profile: None,
    },
    Cue {
        phrase: "mon objectif est ",
        kind: MemoryKind::Commitment,
        key: None,
        profile: Some("goals"),
    },
    Cue {
        phrase: "je veux ",
        kind: MemoryKind::Commitment,
        key: None,
        profile: None,
    },
    Cue {
        phrase: "i will ",
        kind: MemoryKind::Commitment,
        key: None,
        profile: None,
    },
    Cue {
        phrase: "i'll ",
        kind: MemoryKind::Commitment,
        key: None,
        profile: None,
    },
    Cue {
        phrase: "i promise ",
        kind: MemoryKind::Commitment,
        key: None,
        profile: None,
    },
    Cue {
        phrase: "je vais ",
        kind: MemoryKind::Commitment,
        key: None,
        profile: None,
    },
    Cue {
        phrase: "i prefer ",
        kind: MemoryKind::Preference,
        key: None,
        profile: Some("preferences"),
    },
    Cue {
        phrase: "i like ",
        kind: MemoryKind::Preference,
        key: None,
        profile: None,
    },
    Cue {
        phrase: "i love ",
        kind: MemoryKind::Preference,
        key: None,
        profile: None,
    },
    Cue {
        phrase: "i hate ",
        kind: MemoryKind::Preference,
        key: None,
        profile: None,
    },
    Cue {
        phrase: "i don't like ",
        kind: MemoryKind::Preference,
        key: None,
        profile: None,
    },
    Cue {
        phrase: "je préfère ",
        kind: MemoryKind::Preference,
        key: None,
        profile: Some("preferences"),
    },
    Cue {
        phrase: "j'aime ",
        kind: MemoryKind::Preference,
        key: None,
        profile: None,
    },
    Cue {
        phrase: "i am allergic to ",
        kind: MemoryKind::Constraint,
        key: None,
        profile: Some("constraints"),
    },
    Cue {
        phrase: "i'm allergic to ",
        kind: MemoryKind::Constraint,
        key: None,
        profile: Some("constraints"),
    },
    Cue {
        phrase: "i can't ",
        kind: MemoryKind::Constraint,
        key: None,
        profile: None,
    },
    Cue {
        phrase: "i cannot ",
        kind: MemoryKind::Constraint,
        key: None,
        profile: None,
    },
    Cue {
        phrase: "je ne peux pas ",
        kind: MemoryKind::Constraint,
        key: None,
        profile: None,
    },
    Cue {
        phrase: "i finished ",
        kind: MemoryKind::Progress,
        key: None,
        profile: None,
    },
    Cue {
        phrase: "i completed ",
        kind: MemoryKind::Progress,
        key: None,
        profile: None,
    },
    Cue {
        phrase: "i managed to ",
        kind: MemoryKind::Progress,
        key: None,
        profile: None,
    },
    Cue {
        phrase: "j'ai terminé ",
        kind: MemoryKind::Progress,
        key: None,
        profile: None,
    },
    Cue {
        phrase: "j'ai réussi ",
        kind: MemoryKind::Progress,
        key: None,
        profile: None,
    },
];

/// Find first-person statements worth remembering in a client's message.
///
/// This is the extractor every model gets, including the small embedded one, which cannot be
/// trusted to extract facts itself: each sentence is matched against cue phrases ("my name
/// is", "I live in", "I will", "je vais", ...) and kept whole as the memory's text, in the
/// client's words. Agents on capable models add more through the `remember` tool.
pub fn extract(text: &str) -> Vec<Extracted> {
    let mut out: Vec<Extracted> = Vec::new();
    for sentence in text.split(['.', '!', '?', '\n', ';']) {
        let sentence = sentence.trim();
        if sentence.len() < 6 {
            continue;
        }
        let lower = sentence.to_lowercase().replace('’', "'");
        for cue in CUES {
            let Some(pos) = find_word_start(&lower, cue.phrase) else {
                continue;
            };
            let rest_lower = &lower[pos + cue.phrase.len()..];
            let rest_chars = rest_lower.chars().count();
            let total = lower.chars().count();
            // The same tail in the original casing (lowercasing may change byte lengths).
            let rest: String = sentence.chars().skip(total - rest_chars).collect();
            let rest = rest.trim().trim_end_matches(',').to_owned();
            if rest.is_empty() || rest.chars().count() > MAX_MEMORY_CHARS {
                continue;
            }
            let profile_field = cue.profile.map(|f| {
                let value = if f == "name" {
                    rest.split_whitespace()
                        .take(3)
                        .collect::<Vec<_>>()
                        .join(" ")
                        .trim_end_matches(',')
                        .to_owned()
                } else {
                    rest.clone()
                };
                (f, value)
            });
            // The statement from its cue on, in the client's words ("News: I moved to
            // Lyon" → "I moved to Lyon").
            let from_cue = rest_chars + cue.phrase.chars().count();
            let statement: String = sentence
                .chars()
                .skip(total.saturating_sub(from_cue))
                .collect();
            let content = truncate_chars(statement.trim(), MAX_MEMORY_CHARS);
            if !out.iter().any(|e| e.content == content) {
                out.push(Extracted {
                    kind: cue.kind,
                    key: cue.key,
                    content,
                    profile_field,
                });
            }
            break;
        }
    }
    out
}

/// Byte position where `phrase` starts at a word boundary in `s`.
fn find_word_start(s: &str, phrase: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = s[from..].find(phrase) {
        let at = from + i;
        let boundary = s[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_alphanumeric() && c != '\'');
        if boundary {
            return Some(at);
        }
        from = at + phrase.len();
    }
    None
}

fn truncate_chars(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_keyed_facts_commitments_and_profile_fields() {
        let found = extract(
            "Hi! My name is Alice Martin. I live in Paris. I will run three times a week; \
             what do you think?",
        );
        assert_eq!(found.len(), 3, "{found:?}");
        assert_eq!(found[0].key, Some("name"));
        assert_eq!(
            found[0].profile_field,
            Some(("name", "Alice Martin".to_owned()))
        );
        assert_eq!(found[1].content, "I live in Paris");
        assert_eq!(found[1].key, Some("location"));
        assert_eq!(found[2].kind, MemoryKind::Commitment);
        assert_eq!(found[2].content, "I will run three times a week");
        assert_eq!(
            extract("News: I moved to Lyon")[0].content,
            "I moved to Lyon"
        );
    }

    #[test]
    fn french_and_word_boundaries() {
        let found = extract("Je m’appelle Léa. Mon objectif est de courir un 10 km.");
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].profile_field, Some(("name", "Léa".to_owned())));
        assert_eq!(
            found[1].profile_field,
            Some(("goals", "de courir un 10 km".to_owned()))
        );
        // "wi will" inside a word is not a cue; questions about the coach are not facts.
        assert!(extract("Kiwi will grow. What is your name?").is_empty());
    }

    #[test]
    fn profile_fields_are_checked() {
        let mut p = Profile::default();
        p.set("name", "Alice").unwrap();
        assert!(p.set("shoe_size", "42").is_err());
        assert!(
            p.set("notes", &"x".repeat(MAX_PROFILE_FIELD_CHARS + 1))
                .is_err()
        );
        assert_eq!(p.fields(), vec![("name", "Alice")]);
        p.set("name", "").unwrap();
        assert!(p.is_empty());
    }

    #[test]
    fn cosine_of_vectors() {
        assert!((cosine(&[1.0, 0.0], &[1.0, 0.0]) - 1.0).abs() < 1e-6);
        assert_eq!(cosine(&[1.0, 0.0], &[0.0, 1.0]), 0.0);
        assert_eq!(cosine(&[], &[]), 0.0);
        assert_eq!(cosine(&[0.0], &[1.0]), 0.0);
    }
}
