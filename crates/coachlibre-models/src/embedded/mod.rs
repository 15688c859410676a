//! The embedded engines: models that run inside the CoachLibre process on the CPU.
//!
//! Chat runs SmolLM2's GGUF through llama.cpp (compiled from source by `llama-cpp-sys-2`):
//! the engine was chosen by measurement (see `shared/notes/embedded-models-probe.md` and
//! `docs/benchmarks.md`). Tokenizer and chat template come from the GGUF itself. Embeddings
//! run MiniLM on CoachLibre's own encoder ([`bert`]: 16-bit integer products with the CPU's
//! VNNI instructions), tokenised by llama.cpp from the GGUF converted at install time ([`gguf`]).

pub mod bert;
pub mod chat;
pub mod embed;
pub mod gate;
pub mod gguf;
pub mod text;

pub use chat::{EmbeddedChat, EngineOptions};
pub use embed::EmbeddedEmbedder;
