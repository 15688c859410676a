//! Tenants: a coaching practice or a school. Every other record belongs to exactly one.

use serde::Serialize;
use utoipa::ToSchema;

use crate::ids::TenantId;
use crate::{Error, Result, Timestamp};

/// A tenant's short, URL-safe name: `a-z`, `0-9` and `-`, 2 to 63 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(transparent)]
pub struct TenantSlug(String);

impl TenantSlug {
    /// Validate a slug.
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        let ok_len = (2..=63).contains(&s.len());
        let ok_chars = s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok_len || !ok_chars || s.starts_with('-') || s.ends_with('-') {
            return Err(Error::invalid(
                "slug",
                "use 2 to 63 characters among a-z, 0-9 and '-', not starting or ending with '-'",
            ));
        }
        Ok(Self(s))
    }

    /// The slug as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A practice or a school.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Tenant {
    pub id: TenantId,
    pub slug: TenantSlug,
    pub name: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl Tenant {
    /// A new tenant with a validated name.
    pub fn new(slug: TenantSlug, name: &str) -> Result<Self> {
        Ok(Self {
            id: TenantId::generate(),
            slug,
            name: crate::user::parse_display_name("name", name)?,
            created_at: crate::now(),
        })
    }

    /// Rebuild from storage (already validated when written).
    pub fn from_parts(id: TenantId, slug: String, name: String, created_at: Timestamp) -> Self {
        Self {
            id,
            slug: TenantSlug(slug),
            name,
            created_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert_eq!(TenantSlug::parse(" Acme-2 ").unwrap().as_str(), "acme-2");
        for bad in ["a", "-ab", "ab-", "a b", "é-x", ""] {
            assert!(TenantSlug::parse(bad).is_err(), "{bad}");
        }
    }
}
