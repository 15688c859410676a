//! The embedded engines: models that run inside the CoachLibre process on the CPU.
//!
//! Chat runs SmolLM2's GGUF through llama.cpp (compiled from source by `llama-cpp-sys-2`):
//! the engine was chosen by measurement (see `shared/notes/embedded-models-probe.md` and
//! `docs/benchmarks.md`). Tokenizer and chat template come from the GGUF itself.

pub mod chat;
pub mod text;

pub use chat::{EmbeddedChat, EngineOptions};
