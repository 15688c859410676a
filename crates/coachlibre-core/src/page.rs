//! Keyset pagination. Ids are UUID v7, so "after this id" is "created after this record": a
//! cursor stays valid while rows are inserted, unlike an offset.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Error, Result};

/// Default number of items per page.
pub const DEFAULT_LIMIT: u32 = 50;
/// Largest page a caller may ask for.
pub const MAX_LIMIT: u32 = 200;

/// A validated page request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// Items per page, 1..=[`MAX_LIMIT`].
    pub limit: u32,
    /// Return items strictly past this id in the listing order.
    pub cursor: Option<Uuid>,
}

impl Default for PageRequest {
    fn default() -> Self {
        Self {
            limit: DEFAULT_LIMIT,
            cursor: None,
        }
    }
}

impl PageRequest {
    /// Validate raw query parameters.
    pub fn parse(limit: Option<u32>, cursor: Option<&str>) -> Result<Self> {
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if limit == 0 || limit > MAX_LIMIT {
            return Err(Error::invalid(
                "limit",
                format!("must be between 1 and {MAX_LIMIT}"),
            ));
        }
        let cursor = match cursor {
            None | Some("") => None,
            Some(c) => Some(
                Uuid::parse_str(c)
                    .map_err(|_| Error::invalid("cursor", "not a cursor returned by this API"))?,
            ),
        };
        Ok(Self { limit, cursor })
    }

    /// Rows to fetch: one more than the page, to know whether another page follows.
    pub fn fetch_limit(&self) -> i64 {
        i64::from(self.limit) + 1
    }
}

/// One page of results and the cursor of the next, if any.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Build a page from `limit + 1` fetched rows.
    pub fn from_rows(mut rows: Vec<T>, req: &PageRequest, id_of: impl Fn(&T) -> Uuid) -> Self {
        let limit = req.limit as usize;
        let next_cursor = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|r| id_of(r).to_string())
        } else {
            None
        };
        Self {
            items: rows,
            next_cursor,
        }
    }

    /// Transform the items, keeping the cursor.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next_cursor: self.next_cursor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_is_bounded() {
        assert!(PageRequest::parse(Some(0), None).is_err());
        assert!(PageRequest::parse(Some(MAX_LIMIT + 1), None).is_err());
        assert_eq!(PageRequest::parse(None, None).unwrap().limit, DEFAULT_LIMIT);
        assert!(PageRequest::parse(None, Some("zzz")).is_err());
    }

    #[test]
    fn page_has_cursor_only_when_more_rows_exist() {
        let req = PageRequest::parse(Some(2), None).unwrap();
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        let page = Page::from_rows(ids.clone(), &req, |u| *u);
        assert_eq!(page.items.len(), 2);
        assert_eq!(page.next_cursor, Some(ids[1].to_string()));
        let page = Page::from_rows(ids[..2].to_vec(), &req, |u| *u);
        assert_eq!(page.next_cursor, None);
    }
}
