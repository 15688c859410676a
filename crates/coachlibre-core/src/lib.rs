//! The CoachLibre domain: tenants, people and their roles, authentication rules, the audit
//! trail, and the storage traits that every backend implements.
//!
//! This crate knows no HTTP and no SQL. Its services ([`accounts::Accounts`],
//! [`auth::Auth`]) hold the rules (who may see or change what, how logins lock out, how
//! refresh tokens rotate), so that the HTTP server and the CLI are thin adapters around them
//! and every rule is tested once, here and in the storage contract suite.

pub mod accounts;
pub mod actor;
pub mod agent;
pub mod analysis;
pub mod audit;
pub mod auth;
pub mod conversation;
pub mod error;
pub mod event;
pub mod goal;
pub mod ids;
pub mod job;
pub mod knowledge;
pub mod memory;
pub mod model;
pub mod page;
pub mod schema;
pub mod sms;
pub mod store;
pub mod tenant;
pub mod text;
pub mod user;
pub mod workflow;

pub use error::{Error, Result};

/// Instants are stored in UTC everywhere; presentation converts to the user's zone.
pub type Timestamp = chrono::DateTime<chrono::Utc>;

/// The current instant, truncated to microseconds so that a value read back from either
/// database equals the value written (PostgreSQL keeps microseconds).
pub fn now() -> Timestamp {
    use chrono::SubsecRound;
    chrono::Utc::now().trunc_subsecs(6)
}
