//! The CoachLibre agent runtime: the turn loop ([`runtime::Runtime`]), prompt assembly with
//! tiered memory ([`prompt`], [`memory`]), the built-in tools ([`tools`]), and the coaching
//! service that applies who-may-do-what around them ([`service::Coaching`]).

pub mod memory;
pub mod prompt;
pub mod runtime;
pub mod service;
pub mod tools;
pub mod when;

pub use runtime::{Runtime, TurnEvent, TurnFinish, TurnRequest};
pub use service::Coaching;
