//! HTTP handlers, one module per resource. Each handler is thin: parse, call a service of
//! `coachlibre-core`, shape the answer. Every route is listed in [`crate::router`].

pub mod agents;
pub mod analysis;
pub mod api_keys;
pub mod approvals;
pub mod audit;
pub mod auth;
pub mod clients;
pub mod conversations;
pub mod health;
pub mod jobs;
pub mod knowledge;
pub mod me;
pub mod openai;
pub mod skills;
pub mod sms;
pub mod users;
pub mod workflows;

use coachlibre_core::page::PageRequest;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::ApiError;

/// Pagination parameters shared by every list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Items per page (1–200, default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageParams {
    pub fn parse(&self) -> Result<PageRequest, ApiError> {
        Ok(PageRequest::parse(self.limit, self.cursor.as_deref())?)
    }
}
