//! The tools a skill may call (its `allowed_tools`). A skill works for the tenant, not for a
//! client, so these are the tenant-level ones: today's date, the coach's material, a public
//! web page. The model calls them in rounds before it writes its answer.

use std::sync::Arc;

use coachlibre_core::ids::TenantId;
use coachlibre_core::knowledge::KnowledgeSource;
use coachlibre_core::model::ToolSpec;
use coachlibre_core::page::PageRequest;
use coachlibre_core::store::Store;
use serde_json::{Value, json};

/// Every tool a skill may list in `allowed_tools`.
pub const NAMES: &[&str] = &["current_date", "search_knowledge", "fetch_page"];

/// The most text a tool hands back to the model (small models have small contexts).
const MAX_TOOL_CHARS: usize = 6_000;
/// The largest page `fetch_page` reads.
const MAX_PAGE_BYTES: usize = 2 * 1024 * 1024;

/// What the tools need: the tenant's material and a web client. Without them,
/// `search_knowledge` and `fetch_page` answer that they are unavailable.
#[derive(Clone, Default)]
pub struct SkillTools {
    material: Option<(Arc<dyn Store>, Arc<dyn KnowledgeSource>)>,
    web: Option<(reqwest::Client, bool)>,
}

impl std::fmt::Debug for SkillTools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SkillTools")
            .field("material", &self.material.is_some())
            .field("web", &self.web.is_some())
            .finish()
    }
}

fn cut(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

impl SkillTools {
    /// `search_knowledge` searches every collection of the tenant.
    pub fn with_knowledge(mut self, store: Arc<dyn Store>, k: Arc<dyn KnowledgeSource>) -> Self {
        self.material = Some((store, k));
        self
    }

    /// `fetch_page` reads public pages (and private ones when `allow_private`).
    pub fn with_web(mut self, allow_private: bool) -> Self {
        let http = coachlibre_knowledge::fetch::client(
            "CoachLibre skill",
            std::time::Duration::from_secs(20),
        );
        self.web = Some((http, allow_private));
        self
    }

    /// The specifications of `names` given to the model.
    pub fn specs(names: &[String]) -> Vec<ToolSpec> {
        names
            .iter()
            .filter_map(|n| {
                let (description, parameters) = match n.as_str() {
                    "current_date" => (
                        "Today's date (UTC) and weekday.",
                        json!({"type": "object", "properties": {}}),
                    ),
                    "search_knowledge" => (
                        "Search the coach's own material (programmes, worksheets, articles) for \
                         passages about a subject.",
                        json!({"type": "object", "required": ["query"], "properties": {
                            "query": {"type": "string", "description": "what to look for"},
                            "limit": {"type": "integer", "description": "passages, 1 to 8"}}}),
                    ),
                    "fetch_page" => (
                        "Read a public web page as text.",
                        json!({"type": "object", "required": ["url"], "properties": {
                            "url": {"type": "string", "description": "http or https address"}}}),
                    ),
                    _ => return None,
                };
                Some(ToolSpec {
                    name: n.clone(),
                    description: description.to_owned(),
                    parameters,
                })
            })
            .collect()
    }

    /// Run one call; an error is a message for the model (it may try otherwise).
    pub async fn call(&self, tenant: TenantId, name: &str, args: &Value) -> Result<Value, String> {
        match name {
            "current_date" => {
                let now = chrono::Utc::now();
                Ok(json!({
                    "date": now.format("%Y-%m-%d").to_string(),
                    "weekday": now.format("%A").to_string(),
                }))
            }
            "search_knowledge" => {
                let Some((store, knowledge)) = &self.material else {
                    return Err("the coach's material is not available here".into());
                };
                let query = args["query"]
                    .as_str()
                    .filter(|q| !q.trim().is_empty())
                    .ok_or("give a query")?;
                let limit = args["limit"].as_u64().unwrap_or(4).clamp(1, 8);
                let page = PageRequest::parse(Some(200), None).map_err(|e| e.to_string())?;
                let collections: Vec<_> = store
                    .list_collections(tenant, None, &page)
                    .await
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .map(|c| c.id)
                    .collect();
                if collections.is_empty() {
                    return Ok(json!({"passages": [], "note": "the coach has no material yet"}));
                }
                let found = knowledge
                    .retrieve(
                        tenant,
                        &collections,
                        query,
                        usize::try_from(limit).unwrap_or(4),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                let passages: Vec<Value> = found
                    .iter()
                    .map(|p| {
                        json!({"title": p.title, "heading": p.heading,
                               "text": cut(&p.text, MAX_TOOL_CHARS / 4)})
                    })
                    .collect();
                Ok(json!({ "passages": passages }))
            }
            "fetch_page" => {
                let Some((http, allow_private)) = &self.web else {
                    return Err("reading web pages is not available here".into());
                };
                let url = args["url"].as_str().ok_or("give a url")?;
                let parsed =
                    coachlibre_knowledge::fetch::parse_url(url).map_err(|e| e.to_string())?;
                let page =
                    coachlibre_knowledge::fetch::get(http, parsed, *allow_private, MAX_PAGE_BYTES)
                        .await
                        .map_err(|e| e.to_string())?;
                let format = coachlibre_knowledge::extract::Format::detect(
                    &page.bytes,
                    page.content_type.as_deref(),
                    page.url.path(),
                )
                .unwrap_or(coachlibre_knowledge::extract::Format::Html);
                let text = coachlibre_knowledge::sandbox::read(page.bytes, format)
                    .await
                    .map_err(|e| format!("the page could not be read: {e}"))?;
                Ok(json!({"url": url, "text": cut(&text, MAX_TOOL_CHARS)}))
            }
            other => Err(format!("there is no tool '{other}'")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_has_a_spec() {
        let names: Vec<String> = NAMES.iter().map(|n| (*n).to_owned()).collect();
        assert_eq!(SkillTools::specs(&names).len(), NAMES.len());
        assert!(SkillTools::specs(&["teleport".to_owned()]).is_empty());
    }

    #[tokio::test]
    async fn tools_without_their_means_say_so() {
        let t = SkillTools::default();
        let tenant = TenantId::generate();
        let date = t.call(tenant, "current_date", &json!({})).await;
        assert_eq!(date.map(|d| d["date"].as_str().map(str::len)), Ok(Some(10)));
        assert!(
            t.call(tenant, "search_knowledge", &json!({"query": "x"}))
                .await
                .is_err_and(|e| e.contains("not available"))
        );
        assert!(t.call(tenant, "nope", &json!({})).await.is_err());
    }
}
