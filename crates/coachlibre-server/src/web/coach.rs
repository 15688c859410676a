//! The coach backoffice: dashboard, clients, agents (with a test chat), knowledge collections
//! (upload and ingestion progress), skills and workflows (run history, reports), approvals.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Multipart, Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use coachlibre_core::accounts::By;
use coachlibre_core::agent::{AgentInput, Budget};
use coachlibre_core::conversation::{ApprovalStatus, Channel};
use coachlibre_core::goal::GoalStatus;
use coachlibre_core::ids::{AgentId, ApprovalId, CollectionId, JobId, UserId, WorkflowRunId};
use coachlibre_core::job::{JobFilter, JobStatus};
use coachlibre_core::knowledge::DocumentStatus;
use coachlibre_core::page::PageRequest;
use coachlibre_core::user::{Role, UserView};
use coachlibre_core::workflow::RunStatus;
use serde::Deserialize;

use super::client::goal_row;
use super::view::{Cell, Field, FormSpec, Page, Post, Section, Stat, next_link, when};
use super::{
    Empty, Form, Listing, Web, WebError, WebResult, first, fragment, render, see, session_cookie,
    title_or,
};
use crate::extract::Path;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/coach", get(dashboard))
        .route("/coach/clients", get(clients))
        .route("/coach/clients/{id}", get(client_page))
        .route("/coach/agents", get(agents).post(create_agent))
        .route("/coach/agents/new", get(new_agent))
        .route("/coach/agents/{id}", get(agent_page).post(update_agent))
        .route("/coach/agents/{id}/test", post(test_agent))
        .route("/coach/agents/{id}/delete", post(delete_agent))
        .route("/coach/knowledge", get(knowledge).post(create_collection))
        .route("/coach/knowledge/{id}", get(collection_page))
        .route("/coach/knowledge/{id}/documents", get(documents_fragment))
        .route(
            "/coach/knowledge/{id}/upload",
            post(upload).layer(axum::extract::DefaultBodyLimit::max(
                coachlibre_knowledge::extract::MAX_UPLOAD_BYTES + 64 * 1024,
            )),
        )
        .route("/coach/knowledge/{id}/import", post(import_url))
        .route("/coach/work", get(work))
        .route("/coach/work/skills/{name}", get(skill_page).post(run_skill))
        .route("/coach/work/jobs/{id}", get(job_page))
        .route("/coach/work/jobs/{id}/status", get(job_fragment))
        .route("/coach/work/jobs/{id}/{file}", get(job_report))
        .route(
            "/coach/work/workflows/{name}",
            get(workflow_page).post(start_workflow),
        )
        .route("/coach/work/runs/{id}", get(run_page))
        .route("/coach/work/runs/{id}/status", get(run_fragment))
        .route("/coach/work/runs/{id}/{file}", get(run_report))
        .route("/coach/work/analyses", post(start_analysis))
        .route("/coach/approvals", get(approvals))
        .route("/coach/approvals/{id}", post(decide))
}

fn all() -> WebResult<PageRequest> {
    first(200)
}

fn notice(done: Option<&str>) -> Option<&'static str> {
    match done? {
        "saved" => Some("Saved."),
        "created" => Some("Created."),
        "deleted" => Some("Deleted."),
        "uploaded" => Some("Uploaded: the document is being read and indexed below."),
        "duplicate" => Some("This document was already in the collection: nothing changed."),
        "decided" => Some("Decision recorded: the conversation goes on."),
        "started" => Some("Started."),
        _ => None,
    }
}

/// The coach's clients (an admin: every client), by id.
async fn client_names(state: &AppState, web: &Web) -> WebResult<HashMap<UserId, UserView>> {
    let page = state
        .accounts
        .list_users(By::Actor(&web.actor), Some(Role::Client), &all()?)
        .await?;
    Ok(page.items.into_iter().map(|u| (u.id, u)).collect())
}

fn name_of(names: &HashMap<UserId, UserView>, id: UserId) -> String {
    names
        .get(&id)
        .map_or_else(|| "a client".to_owned(), |u| u.display_name.clone())
}

fn more(n: usize, has_more: bool) -> String {
    if has_more {
        format!("{n}+")
    } else {
        n.to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// Dashboard and clients

async fn dashboard(State(state): State<AppState>, web: Web) -> WebResult {
    web.require_coach()?;
    let clients = state
        .accounts
        .list_users(By::Actor(&web.actor), Some(Role::Client), &all()?)
        .await?;
    let names: HashMap<UserId, UserView> =
        clients.items.iter().map(|u| (u.id, u.clone())).collect();
    let agents = state.coaching.list_agents(&web.actor, &all()?).await?;
    let collections = state
        .knowledge
        .list_collections(&web.actor, &all()?)
        .await?;
    let approvals = state
        .coaching
        .list_approvals(&web.actor, Some(ApprovalStatus::Pending), &all()?)
        .await?;
    let recent = state
        .coaching
        .list_conversations(&web.actor, None, false, &first(10)?)
        .await?;
    // Goals at risk: active, due within a week or overdue, less than half done.
    let soon = chrono::Utc::now().date_naive() + chrono::Duration::days(7);
    let mut at_risk = Vec::new();
    for c in clients.items.iter().take(100) {
        for g in state.coaching.list_goals(&web.actor, c.id).await? {
            let due_soon = g.goal.due_date.is_some_and(|d| d <= soon);
            if g.goal.status == GoalStatus::Active && due_soon && g.progress < 0.5 {
                let mut row = vec![Cell::link(
                    c.display_name.clone(),
                    format!("/coach/clients/{}", c.id),
                )];
                row.extend(goal_row(g));
                at_risk.push(row);
            }
        }
    }
    let mut first_steps = Section::new("Getting started");
    if agents.items.is_empty() {
        first_steps = first_steps.link("1. Create your first agent", "/coach/agents/new");
    }
    if collections.is_empty() {
        first_steps = first_steps.link("2. Upload your material", "/coach/knowledge");
    }
    if clients.items.is_empty() && web.is_admin() {
        first_steps = first_steps.link("3. Invite a client", "/admin/users");
    }
    let mut page = Page::new(web.layout("Dashboard"), "Dashboard").stats(vec![
        Stat::new(
            "clients",
            more(clients.items.len(), clients.next_cursor.is_some()),
            Some("/coach/clients"),
        ),
        Stat::new("agents", agents.items.len(), Some("/coach/agents")),
        Stat::new("collections", collections.len(), Some("/coach/knowledge")),
        Stat::new(
            "approvals waiting",
            approvals.items.len(),
            Some("/coach/approvals"),
        ),
    ]);
    if !first_steps.links.is_empty() {
        page = page.section(first_steps.intro(
            "CoachLibre answers your clients with agents you configure, from the material you \
             upload. Start here:",
        ));
    }
    let conversation_rows = recent
        .items
        .iter()
        .map(|c| {
            vec![
                Cell::link(title_or(&c.title), format!("/app/c/{}", c.id)),
                Cell::text(if c.client_id == web.actor.user_id {
                    "you (test)".to_owned()
                } else {
                    name_of(&names, c.client_id)
                }),
                Cell::time(c.updated_at),
            ]
        })
        .collect();
    let approval_rows = approvals
        .items
        .iter()
        .take(10)
        .map(|a| approval_row(a, &names))
        .collect();
    render(
        &page
            .section(
                Section::new("Approvals waiting")
                    .table(
                        vec!["Client", "Tool", "Arguments", "Asked", "Decision"],
                        approval_rows,
                    )
                    .empty("Nothing waits for you."),
            )
            .section(
                Section::new("Goals at risk")
                    .intro("Active goals due within a week and less than half done.")
                    .table(vec!["Client", "Goal", "Status", "Due", "Progress"], at_risk)
                    .empty("No goal at risk."),
            )
            .section(
                Section::new("Recent conversations")
                    .table(
                        vec!["Conversation", "Client", "Last message"],
                        conversation_rows,
                    )
                    .empty(
                        "No conversation yet. Once your clients talk with your agents, their \
                         conversations appear here.",
                    ),
            ),
    )
}

async fn clients(State(state): State<AppState>, web: Web, Query(q): Query<Listing>) -> WebResult {
    web.require_coach()?;
    let page = state
        .accounts
        .list_users(By::Actor(&web.actor), Some(Role::Client), &q.page()?)
        .await?;
    let rows = page
        .items
        .into_iter()
        .map(|u| {
            vec![
                Cell::link(u.display_name.clone(), format!("/coach/clients/{}", u.id)),
                Cell::text(u.email),
                Cell::time(u.created_at),
            ]
        })
        .collect();
    let empty = if web.is_admin() {
        "No client yet. Create client accounts under Admin › Users and assign them a coach."
    } else {
        "No client assigned to you yet. Your organisation's administrator assigns clients to \
         coaches."
    };
    render(
        &Page::new(web.layout("Clients"), "Clients").section(
            Section::new("")
                .table(vec!["Name", "Email", "Since"], rows)
                .empty(empty)
                .next(next_link("/coach/clients", page.next_cursor)),
        ),
    )
}

async fn client_page(State(state): State<AppState>, web: Web, Path(id): Path<UserId>) -> WebResult {
    web.require_coach()?;
    let user = state.accounts.get_user(&web.actor, id).await?;
    if user.role != Role::Client {
        return Err(WebError::not_found());
    }
    let profile = state.coaching.get_profile(&web.actor, id).await?;
    let goals = state.coaching.list_goals(&web.actor, id).await?;
    let memories = state
        .coaching
        .list_memories(&web.actor, id, &first(50)?)
        .await?;
    let conversations = state
        .coaching
        .client_conversations(&web.actor, id, true, &all()?)
        .await?;
    let profile_text = serde_json::to_string_pretty(&profile).unwrap_or_default();
    let conversation_rows = conversations
        .items
        .iter()
        .map(|c| {
            vec![
                Cell::link(title_or(&c.title), format!("/app/c/{}", c.id)),
                Cell::text(if c.archived { "archived" } else { "" }),
                Cell::time(c.updated_at),
            ]
        })
        .collect();
    render(
        &Page::new(
            web.layout(user.display_name.clone()),
            user.display_name.clone(),
        )
        .intro(user.email.as_str().to_owned())
        .section(
            Section::new("Conversations")
                .table(vec!["Conversation", "", "Last message"], conversation_rows)
                .empty("This client has not talked with an agent yet."),
        )
        .section(
            Section::new("Goals")
                .table(
                    vec!["Goal", "Status", "Due", "Progress"],
                    goals.into_iter().map(goal_row).collect(),
                )
                .empty("No goal yet."),
        )
        .section(
            Section::new("What the agents remember")
                .table(
                    vec!["Note", "Kind", "Updated"],
                    memories
                        .items
                        .into_iter()
                        .map(|m| {
                            vec![
                                Cell::text(m.content),
                                Cell::text(m.kind.as_str()),
                                Cell::time(m.updated_at),
                            ]
                        })
                        .collect(),
                )
                .empty("Nothing remembered yet."),
        )
        .section(Section::new("Profile").pre(profile_text)),
    )
}

// ---------------------------------------------------------------------------------------------
// Agents

async fn agents(State(state): State<AppState>, web: Web, Query(q): Query<Listing>) -> WebResult {
    web.require_coach()?;
    let page = state.coaching.list_agents(&web.actor, &q.page()?).await?;
    let rows = page
        .items
        .into_iter()
        .map(|a| {
            vec![
                Cell::link(a.name.clone(), format!("/coach/agents/{}", a.id)),
                Cell::text(a.model),
                Cell::text(a.tools.join(", ")),
                Cell::text(a.collections.len().to_string()),
                Cell::time(a.updated_at),
            ]
        })
        .collect();
    render(
        &Page::new(
            web.layout("Agents").notice(notice(q.done.as_deref())),
            "Agents",
        )
        .section(
            Section::new("")
                .link("New agent", "/coach/agents/new")
                .table(
                    vec!["Name", "Model", "Tools", "Collections", "Updated"],
                    rows,
                )
                .empty(
                    "No agent yet. An agent is your AI coach: its persona, the tools it may \
                     use and the material it answers from. Create one to start.",
                )
                .next(next_link("/coach/agents", page.next_cursor)),
        ),
    )
}

/// The agent form's fields, filled from `agent` when editing.
async fn agent_fields(
    state: &AppState,
    web: &Web,
    agent: Option<&coachlibre_core::agent::Agent>,
) -> WebResult<Vec<Field>> {
    let mut fields = Vec::new();
    if agent.is_none() {
        let mut options = vec![(String::new(), "None: start blank".to_owned(), true)];
        options.extend(state.coaching.templates().iter().map(|t| {
            (
                t.key.to_owned(),
                format!("{} — {}", t.name, t.description),
                false,
            )
        }));
        fields.push(
            Field::new("select", "template", "Start from a template")
                .options(options)
                .help("A template fills the persona and tools; what you type below wins."),
        );
    }
    fields.push(
        Field::new("text", "name", "Name")
            .value(agent.map(|a| a.name.clone()).unwrap_or_default())
            .required(),
    );
    fields.push(
        Field::new("textarea", "persona", "Persona")
            .value(agent.map(|a| a.persona.clone()).unwrap_or_default())
            .help("Who the agent is and how it coaches: it is the agent's system prompt."),
    );
    fields.push(
        Field::new("text", "model", "Model")
            .value(
                agent
                    .map(|a| a.model.clone())
                    .unwrap_or_else(|| state.config.skills.model.clone()),
            )
            .help("An embedded model, a provider model or a chain from the configuration (`coachlibre models list`)."),
    );
    for tool in coachlibre_agent::tools::names() {
        let on = agent.is_some_and(|a| a.tools.iter().any(|t| t == tool));
        fields.push(
            Field::new(
                "checkbox",
                &format!("tool:{tool}"),
                &format!("Tool: {tool}"),
            )
            .value(if on { "on" } else { "" }),
        );
    }
    for tool in coachlibre_agent::tools::names() {
        let on = agent.is_some_and(|a| a.approval_tools.iter().any(|t| t == tool));
        fields.push(
            Field::new(
                "checkbox",
                &format!("approve:{tool}"),
                &format!("Ask me before it uses {tool}"),
            )
            .value(if on { "on" } else { "" }),
        );
    }
    let collections = state
        .knowledge
        .list_collections(&web.actor, &all()?)
        .await?;
    for c in collections {
        let on = agent.is_some_and(|a| a.collections.contains(&c.id));
        fields.push(
            Field::new(
                "checkbox",
                &format!("collection:{}", c.id),
                &format!("Answer from: {}", c.name),
            )
            .value(if on { "on" } else { "" }),
        );
    }
    let budget = agent.map(|a| a.budget).unwrap_or_default();
    fields.push(
        Field::new("number", "monthly_tokens", "Monthly tokens per client")
            .value(
                budget
                    .monthly_tokens
                    .map(|t| t.to_string())
                    .unwrap_or_default(),
            )
            .help("Empty: no limit."),
    );
    fields.push(
        Field::new("text", "monthly_cost_usd", "Monthly cost per client (USD)")
            .value(
                budget
                    .monthly_cost_usd
                    .map(|t| t.to_string())
                    .unwrap_or_default(),
            )
            .help("Empty: no limit. Embedded models cost nothing."),
    );
    Ok(fields)
}

async fn new_agent(State(state): State<AppState>, web: Web) -> WebResult {
    web.require_coach()?;
    let fields = agent_fields(&state, &web, None).await?;
    render(
        &Page::new(web.layout("New agent"), "New agent")
            .section(Section::new("").form(FormSpec::new("/coach/agents", "Create agent", fields))),
    )
}

/// An agent from the submitted form's fields.
fn agent_input(pairs: &[(String, String)], creating: bool) -> WebResult<AgentInput> {
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_owned())
    };
    let listed = |prefix: &str| -> Vec<String> {
        pairs
            .iter()
            .filter_map(|(k, _)| k.strip_prefix(prefix).map(str::to_owned))
            .collect()
    };
    let collections = listed("collection:")
        .iter()
        .map(|c| c.parse::<CollectionId>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| WebError::bad_request("A chosen collection is not valid: reload the page."))?;
    let number = |name: &str| get(name).filter(|v| !v.is_empty());
    let invalid = |m: &str| WebError::new(StatusCode::UNPROCESSABLE_ENTITY, m);
    let monthly_tokens = number("monthly_tokens")
        .map(|v| v.parse::<u64>())
        .transpose()
        .map_err(|_| invalid("Monthly tokens must be a whole number."))?;
    let monthly_cost_usd = number("monthly_cost_usd")
        .map(|v| v.parse::<f64>())
        .transpose()
        .map_err(|_| invalid("Monthly cost must be a number, like 5 or 2.50."))?;
    let template = get("template").filter(|t| !t.is_empty() && creating);
    let persona = get("persona").filter(|p| !p.is_empty() || template.is_none());
    let tools = listed("tool:");
    Ok(AgentInput {
        name: get("name"),
        persona,
        model: get("model").filter(|m| !m.is_empty()),
        params: None,
        // With a template and no box ticked, the template's tools stay.
        tools: (!(tools.is_empty() && template.is_some())).then_some(tools),
        approval_tools: Some(listed("approve:")),
        collections: Some(collections),
        memory: None,
        budget: Some(Budget {
            monthly_tokens,
            monthly_cost_usd,
        }),
        template,
        owner_id: None,
    })
}

async fn create_agent(
    State(state): State<AppState>,
    Form(web, pairs): Form<Vec<(String, String)>>,
) -> WebResult {
    web.require_coach()?;
    let input = agent_input(&pairs, true)?;
    let agent = state.coaching.create_agent(&web.actor, input).await?;
    see(format!("/coach/agents/{}?done=created", agent.id))
}

async fn agent_page(
    State(state): State<AppState>,
    web: Web,
    Path(id): Path<AgentId>,
    Query(q): Query<Listing>,
) -> WebResult {
    web.require_coach()?;
    let agent = state.coaching.get_agent(&web.actor, id).await?;
    let fields = agent_fields(&state, &web, Some(&agent)).await?;
    render(
        &Page::new(
            web.layout(agent.name.clone()).notice(notice(q.done.as_deref())),
            agent.name.clone(),
        )
        .section(
            Section::new("Try it")
                .intro("Talk with the agent as a client would: the conversation is yours and stays in your list.")
                .button(Post::new(format!("/coach/agents/{id}/test"), "Open a test chat")),
        )
        .section(Section::new("Settings").form(FormSpec::new(
            format!("/coach/agents/{id}"),
            "Save",
            fields,
        )))
        .section(
            Section::new("Delete")
                .intro("Deleting the agent also deletes its conversations with your clients.")
                .button(Post::new(format!("/coach/agents/{id}/delete"), "Delete this agent")
                    .danger()
                    .confirm("Delete this agent and all its conversations?")),
        ),
    )
}

async fn update_agent(
    State(state): State<AppState>,
    Path(id): Path<AgentId>,
    Form(web, pairs): Form<Vec<(String, String)>>,
) -> WebResult {
    web.require_coach()?;
    let input = agent_input(&pairs, false)?;
    state.coaching.update_agent(&web.actor, id, input).await?;
    see(format!("/coach/agents/{id}?done=saved"))
}

async fn test_agent(
    State(state): State<AppState>,
    Path(id): Path<AgentId>,
    Form(web, Empty {}): Form<Empty>,
) -> WebResult {
    web.require_coach()?;
    let c = state
        .coaching
        .create_conversation(&web.actor, id, Channel::Web, Some("Test chat"))
        .await?;
    see(format!("/app/c/{}", c.id))
}

async fn delete_agent(
    State(state): State<AppState>,
    Path(id): Path<AgentId>,
    Form(web, Empty {}): Form<Empty>,
) -> WebResult {
    web.require_coach()?;
    state.coaching.delete_agent(&web.actor, id).await?;
    see("/coach/agents?done=deleted")
}

// ---------------------------------------------------------------------------------------------
// Knowledge

async fn knowledge(State(state): State<AppState>, web: Web, Query(q): Query<Listing>) -> WebResult {
    web.require_coach()?;
    let collections = state
        .knowledge
        .list_collections(&web.actor, &all()?)
        .await?;
    let rows = collections
        .into_iter()
        .map(|c| {
            vec![
                Cell::link(c.name.clone(), format!("/coach/knowledge/{}", c.id)),
                Cell::text(c.description),
                Cell::text(if c.owner_id.is_none() {
                    "whole organisation"
                } else {
                    "yours"
                }),
                Cell::time(c.updated_at),
            ]
        })
        .collect();
    render(
        &Page::new(
            web.layout("Knowledge").notice(notice(q.done.as_deref())),
            "Knowledge",
        )
        .intro(
            "Your material (programmes, worksheets, articles), which agents answer from and cite.",
        )
        .section(
            Section::new("Collections")
                .table(
                    vec!["Collection", "Description", "Shared with", "Updated"],
                    rows,
                )
                .empty("No collection yet: create one below, then upload documents into it."),
        )
        .section(Section::new("New collection").form(FormSpec::new(
            "/coach/knowledge",
            "Create collection",
            vec![
                Field::new("text", "name", "Name").required(),
                Field::new("text", "description", "Description"),
            ],
        ))),
    )
}

#[derive(Debug, Deserialize)]
pub struct CollectionForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
}

async fn create_collection(
    State(state): State<AppState>,
    Form(web, f): Form<CollectionForm>,
) -> WebResult {
    web.require_coach()?;
    let c = state
        .knowledge
        .create_collection(&web.actor, &f.name, &f.description, None)
        .await?;
    see(format!("/coach/knowledge/{}?done=created", c.id))
}

async fn documents_section(state: &AppState, web: &Web, id: CollectionId) -> WebResult<Section> {
    let docs = state
        .knowledge
        .list_documents(&web.actor, id, &all()?)
        .await?;
    let mut pending = false;
    let rows = docs
        .into_iter()
        .map(|d| {
            let status = match d.status {
                DocumentStatus::Ready => Cell::badge("ready", "ok"),
                DocumentStatus::Failed => {
                    Cell::badge(d.error.clone().unwrap_or_else(|| "failed".into()), "bad")
                }
                DocumentStatus::Pending | DocumentStatus::Processing => {
                    pending = true;
                    let pct = if d.chunks_total > 0 {
                        f64::from(d.chunks_done) * 100.0 / f64::from(d.chunks_total)
                    } else {
                        0.0
                    };
                    Cell::progress(
                        pct,
                        format!("indexing {}/{}", d.chunks_done, d.chunks_total),
                    )
                }
            };
            vec![
                Cell::text(d.title),
                status,
                Cell::text(d.chunks_total.to_string()),
                Cell::text(format!("{:.1} KiB", d.size_bytes as f64 / 1024.0)),
                Cell::time(d.updated_at),
            ]
        })
        .collect();
    Ok(Section::new("Documents")
        .table(
            vec!["Document", "Status", "Passages", "Size", "Updated"],
            rows,
        )
        .empty("No document yet: upload a PDF, Word, Markdown, HTML or text file below.")
        .refresh(format!("/coach/knowledge/{id}/documents"), pending))
}

async fn collection_page(
    State(state): State<AppState>,
    web: Web,
    Path(id): Path<CollectionId>,
    Query(q): Query<Listing>,
) -> WebResult {
    web.require_coach()?;
    let c = state.knowledge.collection(&web.actor, id).await?;
    let docs = documents_section(&state, &web, id).await?;
    render(
        &Page::new(
            web.layout(c.name.clone()).notice(notice(q.done.as_deref())),
            c.name.clone(),
        )
        .intro(c.description)
        .section(docs)
        .section(
            Section::new("Upload a document").form(
                FormSpec::new(
                    format!("/coach/knowledge/{id}/upload"),
                    "Upload",
                    vec![Field::new("file", "file", "File").required().help(
                        "PDF, DOCX, Markdown, HTML or plain text, up to 20 MiB. It is read, cut \
                         into passages and indexed; progress shows above.",
                    )],
                )
                .multipart(),
            ),
        )
        .section(Section::new("Import a web page").form(FormSpec::new(
            format!("/coach/knowledge/{id}/import"),
            "Import",
            vec![Field::new("url", "url", "Address (https://…)").required()],
        ))),
    )
}

async fn documents_fragment(
    State(state): State<AppState>,
    web: Web,
    Path(id): Path<CollectionId>,
) -> WebResult {
    web.require_coach()?;
    fragment(&web, documents_section(&state, &web, id).await?)
}

/// The upload form: multipart, its anti-forgery token in the first field.
async fn upload(
    State(state): State<AppState>,
    web: Web,
    headers: axum::http::HeaderMap,
    Path(id): Path<CollectionId>,
    mut form: Multipart,
) -> WebResult {
    web.require_coach()?;
    let binding = session_cookie(&headers).unwrap_or("");
    let mut checked = false;
    let mut file = None;
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| WebError::bad_request(format!("The upload could not be read: {e}.")))?
    {
        match field.name().unwrap_or_default() {
            "_csrf" => {
                let token = field.text().await.unwrap_or_default();
                checked = state.auth.keys().verify_csrf(binding, &token);
            }
            "file" if checked => {
                let name = field.file_name().unwrap_or("upload").to_owned();
                let ctype = field.content_type().map(str::to_owned);
                let bytes = field.bytes().await.map_err(|e| {
                    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                        WebError::new(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "The file is larger than the upload limit.",
                        )
                    } else {
                        WebError::bad_request(format!("The file could not be read: {e}."))
                    }
                })?;
                file = Some((name, ctype, bytes.to_vec()));
            }
            _ => {}
        }
    }
    if !checked {
        return Err(super::forged());
    }
    let Some((name, ctype, bytes)) = file.filter(|f| !f.2.is_empty()) else {
        return Err(WebError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Choose a file to upload.",
        ));
    };
    let (_, outcome) = state
        .knowledge
        .upload(
            &web.actor,
            id,
            &name,
            ctype.as_deref(),
            bytes,
            serde_json::Map::new(),
        )
        .await?;
    let done = if matches!(outcome, coachlibre_knowledge::Upload::Unchanged) {
        "duplicate"
    } else {
        "uploaded"
    };
    see(format!("/coach/knowledge/{id}?done={done}"))
}

#[derive(Debug, Deserialize)]
pub struct UrlForm {
    #[serde(default)]
    url: String,
}

async fn import_url(
    State(state): State<AppState>,
    Path(id): Path<CollectionId>,
    Form(web, f): Form<UrlForm>,
) -> WebResult {
    web.require_coach()?;
    state
        .knowledge
        .import_url(&web.actor, id, &f.url, serde_json::Map::new())
        .await?;
    see(format!("/coach/knowledge/{id}?done=uploaded"))
}

// ---------------------------------------------------------------------------------------------
// Skills, workflows, analyses

fn job_badge(s: JobStatus) -> Cell {
    let class = match s {
        JobStatus::Succeeded => "ok",
        JobStatus::Failed | JobStatus::Cancelled => "bad",
        _ => "info",
    };
    Cell::badge(s.as_str(), class)
}

fn run_badge(s: RunStatus) -> Cell {
    let class = match s {
        RunStatus::Succeeded => "ok",
        RunStatus::Failed => "bad",
        _ => "info",
    };
    Cell::badge(s.as_str(), class)
}

async fn work(State(state): State<AppState>, web: Web, Query(q): Query<Listing>) -> WebResult {
    web.require_coach()?;
    let by = By::Actor(&web.actor);
    let skills = state.skills.list(by).await?;
    let workflows = state.workflows.list(by).await?;
    let jobs = state
        .jobs
        .list(
            by,
            JobFilter {
                kind: Some(coachlibre_skills::RUN.to_owned()),
                ..JobFilter::default()
            },
            &first(20)?,
        )
        .await?;
    let runs = state.workflows.runs(by, None, &first(20)?).await?;
    let analyses = state.analyses.list(by, &first(20)?).await?;
    let skill_rows = skills
        .into_iter()
        .map(|s| {
            vec![
                Cell::link(s.name.clone(), format!("/coach/work/skills/{}", s.name)),
                Cell::text(s.category),
                Cell::text(s.description),
            ]
        })
        .collect();
    let job_rows = jobs
        .items
        .into_iter()
        .map(|j| {
            let skill = j.payload["skill"].as_str().unwrap_or("skill").to_owned();
            vec![
                Cell::link(skill, format!("/coach/work/jobs/{}", j.id)),
                job_badge(j.status),
                Cell::time(j.created_at),
            ]
        })
        .collect();
    let workflow_rows = workflows
        .into_iter()
        .map(|w| {
            vec![
                Cell::link(w.name.clone(), format!("/coach/work/workflows/{}", w.name)),
                Cell::text(format!("v{}", w.version)),
                Cell::time(w.created_at),
            ]
        })
        .collect();
    let run_rows = runs
        .items
        .into_iter()
        .map(|r| {
            vec![
                Cell::link(r.workflow.clone(), format!("/coach/work/runs/{}", r.id)),
                run_badge(r.status),
                Cell::text(r.trigger),
                Cell::time(r.created_at),
            ]
        })
        .collect();
    let analysis_rows = analyses
        .items
        .into_iter()
        .map(|a| {
            let done = a.report.is_some();
            let mut row = vec![
                Cell::text(if a.company.is_empty() {
                    a.url.clone()
                } else {
                    a.company.clone()
                }),
                Cell::badge(a.status.as_str(), if done { "ok" } else { "info" }),
                Cell::time(a.created_at),
            ];
            row.push(if done {
                Cell::link("PDF", format!("/api/v1/analysis/{}/report.pdf", a.id))
            } else {
                Cell::text("")
            });
            row.push(if done {
                Cell::link("Excel", format!("/api/v1/analysis/{}/report.xlsx", a.id))
            } else {
                Cell::text("")
            });
            row
        })
        .collect();
    render(
        &Page::new(
            web.layout("Skills & workflows")
                .notice(notice(q.done.as_deref())),
            "Skills & workflows",
        )
        .section(
            Section::new("Recent skill runs")
                .table(vec!["Skill", "Status", "Started"], job_rows)
                .empty("No skill run yet: open a skill below and run it."),
        )
        .section(
            Section::new("Workflow runs")
                .table(
                    vec!["Workflow", "Status", "Started by", "Started"],
                    run_rows,
                )
                .empty("No workflow run yet."),
        )
        .section(
            Section::new("Business analyses")
                .table(vec!["Company", "Status", "Started", "", ""], analysis_rows)
                .empty("No analysis yet: give a company's website below.")
                .form(FormSpec::new(
                    "/coach/work/analyses",
                    "Analyse",
                    vec![Field::new("url", "url", "Company website").required()],
                )),
        )
        .section(
            Section::new("Workflows")
                .table(vec!["Workflow", "Version", "Saved"], workflow_rows)
                .empty("No workflow saved yet (`coachlibre workflow save` or the API)."),
        )
        .section(
            Section::new("Skills").table(vec!["Skill", "Category", "What it does"], skill_rows),
        ),
    )
}

/// A JSON object with each required field of a skill's input schema, empty, as a start.
fn input_example(schema: &serde_json::Value) -> String {
    let mut example = serde_json::Map::new();
    if let Some(props) = schema["properties"].as_object() {
        for (name, spec) in props {
            let v = match spec["type"].as_str() {
                Some("array") => serde_json::json!([]),
                Some("number" | "integer") => serde_json::json!(0),
                _ => serde_json::json!(""),
            };
            example.insert(name.clone(), v);
        }
    }
    serde_json::to_string_pretty(&example).unwrap_or_else(|_| "{}".into())
}

async fn skill_page(
    State(state): State<AppState>,
    web: Web,
    Path(name): Path<String>,
) -> WebResult {
    web.require_coach()?;
    let s = state.skills.get(By::Actor(&web.actor), &name).await?;
    render(
        &Page::new(web.layout(s.name.clone()), s.name.clone())
            .intro(s.description.clone())
            .section(Section::new("Run").form(FormSpec::new(
                format!("/coach/work/skills/{name}"),
                "Run skill",
                vec![
                    Field::new("textarea", "input", "Input (JSON)")
                        .value(input_example(&s.input_schema))
                        .required()
                        .help("Fill the fields; the run goes to the queue and its page shows progress."),
                ],
            )))
            .section(
                Section::new("Input schema")
                    .pre(serde_json::to_string_pretty(&s.input_schema).unwrap_or_default()),
            ),
    )
}

#[derive(Debug, Deserialize)]
pub struct InputForm {
    #[serde(default)]
    input: String,
}

fn parse_input(text: &str) -> WebResult<serde_json::Value> {
    let text = if text.trim().is_empty() { "{}" } else { text };
    serde_json::from_str(text).map_err(|e| {
        WebError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("The input is not valid JSON: {e}."),
        )
    })
}

async fn run_skill(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Form(web, f): Form<InputForm>,
) -> WebResult {
    web.require_coach()?;
    let input = parse_input(&f.input)?;
    let job = state
        .skills
        .start(By::Actor(&web.actor), &name, input)
        .await?;
    see(format!("/coach/work/jobs/{}", job.id))
}

async fn job_section(state: &AppState, web: &Web, id: JobId) -> WebResult<Section> {
    let j = state.jobs.get(By::Actor(&web.actor), id).await?;
    let pending = !j.status.is_final();
    let text = j
        .result
        .as_ref()
        .and_then(|r| r["text"].as_str())
        .unwrap_or("");
    let mut s = Section::new("Result")
        .table(
            vec!["Status", "Attempts", "Progress", "Finished"],
            vec![vec![
                job_badge(j.status),
                Cell::text(format!("{}/{}", j.attempts, j.max_attempts)),
                Cell::text(
                    j.progress
                        .as_ref()
                        .map(|p| p.message.clone())
                        .unwrap_or_default(),
                ),
                Cell::text(j.finished_at.map(when).unwrap_or_default()),
            ]],
        )
        .refresh(format!("/coach/work/jobs/{id}/status"), pending);
    if let Some(e) = &j.last_error {
        s = s.intro(format!("Last error: {e}"));
    }
    if !text.is_empty() {
        s = s
            .pre(text.to_owned())
            .link(
                "Download Markdown",
                format!("/coach/work/jobs/{id}/report.md"),
            )
            .link("Download PDF", format!("/coach/work/jobs/{id}/report.pdf"));
    }
    Ok(s)
}

async fn job_page(State(state): State<AppState>, web: Web, Path(id): Path<JobId>) -> WebResult {
    web.require_coach()?;
    let j = state.jobs.get(By::Actor(&web.actor), id).await?;
    let skill = j.payload["skill"]
        .as_str()
        .unwrap_or("Skill run")
        .to_owned();
    let s = job_section(&state, &web, id).await?;
    render(
        &Page::new(web.layout(skill.clone()), skill)
            .intro(format!("Started {}", when(j.created_at)))
            .section(s)
            .section(
                Section::new("Input")
                    .pre(serde_json::to_string_pretty(&j.payload["input"]).unwrap_or_default()),
            ),
    )
}

async fn job_fragment(State(state): State<AppState>, web: Web, Path(id): Path<JobId>) -> WebResult {
    web.require_coach()?;
    fragment(&web, job_section(&state, &web, id).await?)
}

/// A deliverable as a download.
fn download(title: &str, markdown: String, file: &str) -> WebResult {
    let report = coachlibre_export::Report {
        title: title.to_owned(),
        subtitle: Some(format!("CoachLibre · {}", when(chrono::Utc::now()))),
        markdown,
        tables: Vec::new(),
    };
    let slug: String = title
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let (body, ctype, ext) = match file {
        "report.md" => (
            coachlibre_export::to_markdown(&report).into_bytes(),
            "text/markdown; charset=utf-8",
            "md",
        ),
        "report.pdf" => (coachlibre_export::to_pdf(&report), "application/pdf", "pdf"),
        _ => return Err(WebError::not_found()),
    };
    Ok((
        [
            (header::CONTENT_TYPE, ctype.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{slug}.{ext}\""),
            ),
        ],
        body,
    )
        .into_response())
}

async fn job_report(
    State(state): State<AppState>,
    web: Web,
    Path((id, file)): Path<(JobId, String)>,
) -> WebResult {
    web.require_coach()?;
    let j = state.jobs.get(By::Actor(&web.actor), id).await?;
    let text = j
        .result
        .as_ref()
        .and_then(|r| r["text"].as_str())
        .ok_or_else(|| WebError::new(StatusCode::CONFLICT, "This run has no result yet."))?;
    let skill = j.payload["skill"].as_str().unwrap_or("skill");
    download(skill, text.to_owned(), &file)
}

async fn workflow_page(
    State(state): State<AppState>,
    web: Web,
    Path(name): Path<String>,
    Query(q): Query<Listing>,
) -> WebResult {
    web.require_coach()?;
    let by = By::Actor(&web.actor);
    let w = state.workflows.get(by, &name).await?;
    let runs = state.workflows.runs(by, Some(&name), &q.page()?).await?;
    let rows = runs
        .items
        .into_iter()
        .map(|r| {
            vec![
                Cell::link(when(r.created_at), format!("/coach/work/runs/{}", r.id)),
                run_badge(r.status),
                Cell::text(r.trigger),
                Cell::text(r.finished_at.map(when).unwrap_or_default()),
            ]
        })
        .collect();
    render(
        &Page::new(web.layout(w.name.clone()), w.name.clone())
            .intro(format!("Version {}", w.version))
            .section(Section::new("Start a run").form(FormSpec::new(
                format!("/coach/work/workflows/{name}"),
                "Start",
                vec![Field::new("textarea", "input", "Input (JSON)").value("{}")],
            )))
            .section(
                Section::new("Runs")
                    .table(vec!["Started", "Status", "Started by", "Finished"], rows)
                    .empty("No run yet.")
                    .next(next_link(
                        &format!("/coach/work/workflows/{name}"),
                        runs.next_cursor,
                    )),
            )
            .section(
                Section::new("Definition")
                    .pre(serde_json::to_string_pretty(&w.definition).unwrap_or_default()),
            ),
    )
}

async fn start_workflow(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Form(web, f): Form<InputForm>,
) -> WebResult {
    web.require_coach()?;
    let input = parse_input(&f.input)?;
    let run = state
        .workflows
        .start(By::Actor(&web.actor), &name, input, "web")
        .await?;
    see(format!("/coach/work/runs/{}", run.id))
}

/// The text a run produced: its last finished step's output.
fn run_text(r: &coachlibre_core::workflow::WorkflowRun) -> Option<String> {
    let last = r
        .steps
        .values()
        .filter(|s| s.output.is_some())
        .max_by_key(|s| s.finished_at)?;
    let out = last.output.as_ref()?;
    Some(match out {
        serde_json::Value::String(s) => s.clone(),
        other => other["text"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| serde_json::to_string_pretty(other).unwrap_or_default()),
    })
}

async fn run_section(state: &AppState, web: &Web, id: WorkflowRunId) -> WebResult<Section> {
    let r = state.workflows.run(By::Actor(&web.actor), id).await?;
    let pending = !r.status.is_final();
    let rows = r
        .steps
        .iter()
        .map(|(name, s)| {
            vec![
                Cell::text(name.clone()),
                s.status.map_or_else(|| Cell::text("waiting"), run_badge),
                Cell::text(s.attempts.to_string()),
                Cell::text(s.error.clone().unwrap_or_default()),
            ]
        })
        .collect();
    let mut s = Section::new("Steps")
        .table(vec!["Step", "Status", "Attempts", "Error"], rows)
        .empty("No step has started yet.")
        .refresh(format!("/coach/work/runs/{id}/status"), pending);
    if let Some(e) = &r.error {
        s = s.intro(format!("Error: {e}"));
    }
    if !pending && let Some(text) = run_text(&r) {
        s = s
            .pre(text)
            .link(
                "Download Markdown",
                format!("/coach/work/runs/{id}/report.md"),
            )
            .link("Download PDF", format!("/coach/work/runs/{id}/report.pdf"));
    }
    Ok(s)
}

async fn run_page(
    State(state): State<AppState>,
    web: Web,
    Path(id): Path<WorkflowRunId>,
) -> WebResult {
    web.require_coach()?;
    let r = state.workflows.run(By::Actor(&web.actor), id).await?;
    let s = run_section(&state, &web, id).await?;
    render(
        &Page::new(
            web.layout(r.workflow.clone()),
            format!("{} · run", r.workflow),
        )
        .intro(format!("Started {} ({})", when(r.created_at), r.trigger))
        .section(s)
        .section(
            Section::new("Input").pre(serde_json::to_string_pretty(&r.input).unwrap_or_default()),
        ),
    )
}

async fn run_fragment(
    State(state): State<AppState>,
    web: Web,
    Path(id): Path<WorkflowRunId>,
) -> WebResult {
    web.require_coach()?;
    fragment(&web, run_section(&state, &web, id).await?)
}

async fn run_report(
    State(state): State<AppState>,
    web: Web,
    Path((id, file)): Path<(WorkflowRunId, String)>,
) -> WebResult {
    web.require_coach()?;
    let r = state.workflows.run(By::Actor(&web.actor), id).await?;
    let text = run_text(&r)
        .ok_or_else(|| WebError::new(StatusCode::CONFLICT, "This run has no result yet."))?;
    download(&r.workflow, text, &file)
}

async fn start_analysis(State(state): State<AppState>, Form(web, f): Form<UrlForm>) -> WebResult {
    web.require_coach()?;
    state.analyses.start(By::Actor(&web.actor), &f.url).await?;
    see("/coach/work?done=started")
}

// ---------------------------------------------------------------------------------------------
// Approvals

fn approval_row(
    a: &coachlibre_core::conversation::Approval,
    names: &HashMap<UserId, UserView>,
) -> Vec<Cell> {
    let args = serde_json::to_string(&a.tool_call.arguments).unwrap_or_default();
    vec![
        Cell::link(
            name_of(names, a.client_id),
            format!("/app/c/{}", a.conversation_id),
        ),
        Cell::text(a.tool_call.name.clone()),
        Cell::text(args),
        Cell::time(a.created_at),
        Cell::posts(vec![
            Post::new(format!("/coach/approvals/{}", a.id), "Approve").field("decision", "approve"),
            Post::new(format!("/coach/approvals/{}", a.id), "Reject")
                .field("decision", "reject")
                .danger(),
        ]),
    ]
}

async fn approvals(State(state): State<AppState>, web: Web, Query(q): Query<Listing>) -> WebResult {
    web.require_coach()?;
    let names = client_names(&state, &web).await?;
    let page = state
        .coaching
        .list_approvals(&web.actor, Some(ApprovalStatus::Pending), &q.page()?)
        .await?;
    let rows = page.items.iter().map(|a| approval_row(a, &names)).collect();
    render(
        &Page::new(
            web.layout("Approvals").notice(notice(q.done.as_deref())),
            "Approvals",
        )
        .intro(
            "Agents ask before using the tools you marked sensitive. The conversation resumes \
             as soon as you decide.",
        )
        .section(
            Section::new("")
                .table(
                    vec!["Client", "Tool", "Arguments", "Asked", "Decision"],
                    rows,
                )
                .empty("Nothing waits for your approval.")
                .next(next_link("/coach/approvals", page.next_cursor)),
        ),
    )
}

#[derive(Debug, Deserialize)]
pub struct Decision {
    #[serde(default)]
    decision: String,
}

async fn decide(
    State(state): State<AppState>,
    Path(id): Path<ApprovalId>,
    Form(web, f): Form<Decision>,
) -> WebResult {
    web.require_coach()?;
    let approve = match f.decision.as_str() {
        "approve" => true,
        "reject" => false,
        _ => return Err(WebError::bad_request("Choose approve or reject.")),
    };
    state.coaching.decide(&web.actor, id, approve).await?;
    see("/coach/approvals?done=decided")
}
