//! Integration tests: the real server on a random port, over HTTP, against a fresh database
//! on SQLite and (when `TEST_DATABASE_URL` is set) PostgreSQL.

mod agents;
mod analysis;
mod auth;
mod browser;
mod errors;
mod helpers;
mod isolation;
mod jobs;
mod knowledge;
mod operations;
mod skills;
mod sms;
mod users;
mod web;
mod workflows;
