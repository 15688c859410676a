//! The client space: conversations with the coach's agents (the answer streams in), the
//! passages answers cite, goals, what the coach AI remembers (with delete), reminders.

use askama::Template;
use axum::Router;
use axum::extract::{Query, State};
use axum::routing::{get, post};
use coachlibre_core::conversation::{Channel, Citation, MessageStatus};
use coachlibre_core::goal::GoalStatus;
use coachlibre_core::ids::{AgentId, ChunkId, ConversationId, MemoryId};
use coachlibre_core::model::ChatRole;
use coachlibre_core::page::PageRequest;
use serde::Deserialize;

use super::view::{Cell, Field, FormSpec, Layout, Page, Post, Section, next_link, when};
use super::{Empty, Form, Listing, Web, WebError, WebResult, first, render, see, title_or};
use crate::extract::Path;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/app", get(home))
        .route("/app/conversations", post(start))
        .route("/app/c/{id}", get(chat))
        .route("/app/c/{id}/delete", post(delete_conversation))
        .route("/app/passages/{id}", get(passage))
        .route("/app/goals", get(goals))
        .route("/app/memory", get(memory))
        .route("/app/memory/{id}/delete", post(delete_memory))
        .route("/app/reminders", get(reminders))
}

async fn home(State(state): State<AppState>, web: Web, Query(q): Query<Listing>) -> WebResult {
    let page = q.page()?;
    let agents = state.coaching.list_agents(&web.actor, &first(200)?).await?;
    // The caller's own conversations (a coach's test chats too), not those they may read.
    let conversations = state
        .coaching
        .client_conversations(&web.actor, web.actor.user_id, false, &page)
        .await?;
    let rows = conversations
        .items
        .iter()
        .map(|c| {
            let agent = agents
                .items
                .iter()
                .find(|a| a.id == c.agent_id)
                .map_or("an agent", |a| a.name.as_str());
            vec![
                Cell::link(title_or(&c.title), format!("/app/c/{}", c.id)),
                Cell::text(agent),
                Cell::time(c.updated_at),
            ]
        })
        .collect();
    let start = if agents.items.is_empty() {
        Section::new("Start a conversation").intro(
            "No coach agent is available to you yet. Your coach will set one up and it will \
             appear here.",
        )
    } else {
        Section::new("Start a conversation").form(FormSpec::new(
            "/app/conversations",
            "Start",
            vec![
                Field::new("select", "agent_id", "Talk with")
                    .required()
                    .options(
                        agents
                            .items
                            .iter()
                            .map(|a| (a.id.to_string(), a.name.clone(), false))
                            .collect(),
                    ),
            ],
        ))
    };
    let l = web.layout("Conversations").notice(match q.done.as_deref() {
        Some("deleted") => Some("The conversation was deleted."),
        _ => None,
    });
    render(
        &Page::new(l, "Your conversations").section(start).section(
            Section::new("Recent")
                .table(vec!["Conversation", "With", "Last message"], rows)
                .empty("No conversation yet: start one above and ask your first question.")
                .next(next_link("/app", conversations.next_cursor)),
        ),
    )
}

#[derive(Debug, Deserialize)]
pub struct StartForm {
    agent_id: String,
}

async fn start(State(state): State<AppState>, Form(web, f): Form<StartForm>) -> WebResult {
    let agent: AgentId = f
        .agent_id
        .parse()
        .map_err(|_| WebError::bad_request("Choose an agent from the list."))?;
    let c = state
        .coaching
        .create_conversation(&web.actor, agent, Channel::Web, None)
        .await?;
    see(format!("/app/c/{}", c.id))
}

/// A message as the chat page shows it.
#[derive(Debug)]
struct Bubble {
    /// `user` or `assistant`.
    role: &'static str,
    text: String,
    /// Tools the agent used for this answer, shown discreetly.
    tools: Vec<String>,
    citations: Vec<Citation>,
    note: Option<&'static str>,
}

#[derive(Debug, Template)]
#[template(path = "chat.html")]
struct ChatPage {
    l: Layout,
    id: String,
    title: String,
    agent: String,
    bubbles: Vec<Bubble>,
    /// The conversation is someone else's (a coach reading a client's): no input box.
    read_only: bool,
    earlier: Option<String>,
}

async fn chat(
    State(state): State<AppState>,
    web: Web,
    Path(id): Path<ConversationId>,
    Query(q): Query<Listing>,
) -> WebResult {
    let c = state.coaching.get_conversation(&web.actor, id).await?;
    let agent = state
        .coaching
        .get_agent(&web.actor, c.agent_id)
        .await
        .map_or_else(|_| "The agent".to_owned(), |a| a.name);
    // The latest messages: pages run oldest first, so walk to the end (bounded).
    let mut cursor = q.cursor.clone();
    let mut messages = Vec::new();
    let mut earlier = None;
    for _ in 0..20 {
        let page = state
            .coaching
            .list_messages(
                &web.actor,
                id,
                &PageRequest::parse(Some(200), cursor.as_deref())?,
            )
            .await?;
        if messages.len() > 600 {
            earlier = cursor.clone();
            messages.clear();
        }
        messages.extend(page.items);
        match page.next_cursor {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    let mut bubbles: Vec<Bubble> = Vec::new();
    let mut pending_tools: Vec<String> = Vec::new();
    for m in messages {
        match m.role {
            ChatRole::User => bubbles.push(Bubble {
                role: "user",
                text: m.content,
                tools: Vec::new(),
                citations: Vec::new(),
                note: None,
            }),
            ChatRole::Assistant if !m.tool_calls.is_empty() && m.content.trim().is_empty() => {
                pending_tools.extend(m.tool_calls.iter().map(|t| t.name.clone()));
                if m.status == MessageStatus::AwaitingApproval {
                    bubbles.push(Bubble {
                        role: "assistant",
                        text: String::new(),
                        tools: std::mem::take(&mut pending_tools),
                        citations: Vec::new(),
                        note: Some("Waiting for your coach's approval."),
                    });
                }
            }
            ChatRole::Assistant => {
                pending_tools.extend(m.tool_calls.iter().map(|t| t.name.clone()));
                bubbles.push(Bubble {
                    role: "assistant",
                    note: (m.status == MessageStatus::Partial)
                        .then_some("This answer was interrupted."),
                    text: m.content,
                    tools: std::mem::take(&mut pending_tools),
                    citations: m.citations,
                })
            }
            ChatRole::System | ChatRole::Tool => {}
        }
    }
    let title = title_or(&c.title);
    render(&ChatPage {
        l: web.layout(title.clone()),
        id: c.id.to_string(),
        title,
        agent,
        bubbles,
        read_only: c.client_id != web.actor.user_id,
        earlier: earlier.map(|e| format!("/app/c/{id}?cursor={e}")),
    })
}

async fn delete_conversation(
    State(state): State<AppState>,
    Path(id): Path<ConversationId>,
    Form(web, Empty {}): Form<Empty>,
) -> WebResult {
    state.coaching.delete_conversation(&web.actor, id).await?;
    see("/app?done=deleted")
}

#[derive(Debug, Template)]
#[template(path = "passage.html")]
struct PassagePage {
    l: Layout,
    title: String,
    heading: String,
    source: String,
    before: String,
    text: String,
    after: String,
}

async fn passage(State(state): State<AppState>, web: Web, Path(id): Path<ChunkId>) -> WebResult {
    let v = state.knowledge.chunk(&web.actor, id).await?;
    render(&PassagePage {
        l: web.layout(format!("Source: {}", v.document_title)),
        title: v.document_title,
        heading: v.chunk.heading,
        source: v.document_source,
        before: v.before,
        text: v.chunk.text,
        after: v.after,
    })
}

async fn goals(State(state): State<AppState>, web: Web) -> WebResult {
    let goals = state
        .coaching
        .list_goals(&web.actor, web.actor.user_id)
        .await?;
    render(
        &Page::new(web.layout("Goals"), "Your goals").section(
            Section::new("")
                .table(
                    vec!["Goal", "Status", "Due", "Progress"],
                    goals.into_iter().map(goal_row).collect(),
                )
                .empty(
                    "No goal yet. Tell your coach agent what you want to achieve, and it will \
                     set a goal with you and track its progress here.",
                ),
        ),
    )
}

/// A goal as a table row (shared with the coach's client page).
pub fn goal_row(g: coachlibre_core::goal::GoalView) -> Vec<Cell> {
    let status = match g.goal.status {
        GoalStatus::Active => Cell::badge("active", "info"),
        GoalStatus::Achieved => Cell::badge("achieved", "ok"),
        GoalStatus::Abandoned => Cell::badge("abandoned", "warn"),
    };
    vec![
        Cell::text(g.goal.title),
        status,
        Cell::text(
            g.goal
                .due_date
                .map_or_else(|| "—".to_owned(), |d| d.to_string()),
        ),
        Cell::progress(g.progress * 100.0, format!("{:.0}%", g.progress * 100.0)),
    ]
}

async fn memory(State(state): State<AppState>, web: Web, Query(q): Query<Listing>) -> WebResult {
    let page = state
        .coaching
        .list_memories(&web.actor, web.actor.user_id, &q.page()?)
        .await?;
    let rows = page
        .items
        .into_iter()
        .map(|m| {
            vec![
                Cell::text(m.content),
                Cell::text(m.kind.as_str()),
                Cell::time(m.updated_at),
                Cell::posts(vec![
                    Post::new(format!("/app/memory/{}/delete", m.id), "Forget").danger(),
                ]),
            ]
        })
        .collect();
    let l = web.layout("Memory").notice(match q.done.as_deref() {
        Some("forgotten") => Some("Forgotten: the coach AI no longer knows this."),
        _ => None,
    });
    render(
        &Page::new(l, "What your coach AI remembers")
            .intro(
                "These notes help your coach agent pick up where you left off. Forget any you \
                 do not want it to keep: they are deleted for good.",
            )
            .section(
                Section::new("")
                    .table(vec!["Note", "Kind", "Updated", ""], rows)
                    .empty("Nothing remembered yet.")
                    .next(next_link("/app/memory", page.next_cursor)),
            ),
    )
}

async fn delete_memory(
    State(state): State<AppState>,
    Path(id): Path<MemoryId>,
    Form(web, Empty {}): Form<Empty>,
) -> WebResult {
    state
        .coaching
        .delete_memory(&web.actor, web.actor.user_id, id)
        .await?;
    see("/app/memory?done=forgotten")
}

async fn reminders(State(state): State<AppState>, web: Web, Query(q): Query<Listing>) -> WebResult {
    let page = state
        .coaching
        .list_reminders(&web.actor, web.actor.user_id, &q.page()?)
        .await?;
    let rows = page
        .items
        .into_iter()
        .map(|r| {
            vec![
                Cell::text(r.text),
                Cell::text(when(r.due_at)),
                Cell::badge(r.status.as_str(), "info"),
            ]
        })
        .collect();
    render(
        &Page::new(web.layout("Reminders"), "Your reminders").section(
            Section::new("")
                .table(vec!["Reminder", "When", "Status"], rows)
                .empty(
                    "No reminder. Ask your coach agent to remind you of something, e.g. \
                     “remind me on Friday to review my week”.",
                )
                .next(next_link("/app/reminders", page.next_cursor)),
        ),
    )
}
