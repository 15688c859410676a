//! Conversations and their messages; a turn is streamed as Server-Sent Events.

use std::convert::Infallible;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use coachlibre_agent::TurnEvent;
use coachlibre_agent::service::ConversationUpdate;
use coachlibre_core::conversation::{Channel, Conversation, Message};
use coachlibre_core::ids::{AgentId, ConversationId};
use coachlibre_core::page::Page;
use futures_util::Stream;
use serde::Deserialize;
use tokio::sync::mpsc;
use utoipa::{IntoParams, ToSchema};

use super::PageParams;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{Caller, Json, Path, Query};
use crate::state::AppState;

/// A new conversation.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateConversation {
    pub agent_id: AgentId,
    /// Default `web`.
    #[serde(default)]
    pub channel: Option<Channel>,
    #[schema(min_length = 1, max_length = 200, pattern = "\\S")]
    pub title: Option<String>,
}

/// Start a conversation between the caller (as the client) and an agent.
#[utoipa::path(post, path = "/api/v1/conversations", tag = "conversations",
    request_body = CreateConversation, security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = Conversation),
        (status = 404, description = "No such agent visible to the caller", body = ErrorBody)))]
pub async fn create_conversation(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Json(req): Json<CreateConversation>,
) -> ApiResult<(StatusCode, Json<Conversation>)> {
    let c = state
        .coaching
        .create_conversation(
            &actor,
            req.agent_id,
            req.channel.unwrap_or(Channel::Web),
            req.title.as_deref(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(c)))
}

/// Filters for the conversation list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConversationListParams {
    pub agent_id: Option<AgentId>,
    /// Include archived conversations.
    #[serde(default)]
    pub archived: bool,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// Conversations the caller may see: their own; a coach also sees their clients'.
#[utoipa::path(get, path = "/api/v1/conversations", tag = "conversations",
    params(ConversationListParams), security(("bearer" = [])),
    responses((status = 200, description = "A page of conversations", body = Page<Conversation>)))]
pub async fn list_conversations(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Query(q): Query<ConversationListParams>,
) -> ApiResult<Json<Page<Conversation>>> {
    let page = PageParams {
        limit: q.limit,
        cursor: q.cursor,
    }
    .parse()?;
    Ok(Json(
        state
            .coaching
            .list_conversations(&actor, q.agent_id, q.archived, &page)
            .await?,
    ))
}

/// One conversation.
#[utoipa::path(get, path = "/api/v1/conversations/{id}", tag = "conversations",
    params(("id" = ConversationId, Path, description = "Conversation id")), security(("bearer" = [])),
    responses(
        (status = 200, description = "The conversation", body = Conversation),
        (status = 404, description = "Not visible to the caller", body = ErrorBody)))]
pub async fn get_conversation(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(id): Path<ConversationId>,
) -> ApiResult<Json<Conversation>> {
    Ok(Json(state.coaching.get_conversation(&actor, id).await?))
}

/// Rename or (un)archive a conversation (its client, or an admin).
#[utoipa::path(patch, path = "/api/v1/conversations/{id}", tag = "conversations",
    request_body = ConversationUpdate,
    params(("id" = ConversationId, Path, description = "Conversation id")), security(("bearer" = [])),
    responses(
        (status = 200, description = "Updated", body = Conversation),
        (status = 403, description = "Not the conversation's client", body = ErrorBody)))]
pub async fn update_conversation(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(id): Path<ConversationId>,
    Json(update): Json<ConversationUpdate>,
) -> ApiResult<Json<Conversation>> {
    Ok(Json(
        state
            .coaching
            .update_conversation(&actor, id, update)
            .await?,
    ))
}

/// Delete a conversation and its messages (its client, or an admin).
#[utoipa::path(delete, path = "/api/v1/conversations/{id}", tag = "conversations",
    params(("id" = ConversationId, Path, description = "Conversation id")), security(("bearer" = [])),
    responses((status = 204, description = "Deleted")))]
pub async fn delete_conversation(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(id): Path<ConversationId>,
) -> ApiResult<StatusCode> {
    state.coaching.delete_conversation(&actor, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Messages, oldest first.
#[utoipa::path(get, path = "/api/v1/conversations/{id}/messages", tag = "conversations",
    params(("id" = ConversationId, Path, description = "Conversation id"), PageParams),
    security(("bearer" = [])),
    responses((status = 200, description = "A page of messages", body = Page<Message>)))]
pub async fn list_messages(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(id): Path<ConversationId>,
    Query(q): Query<PageParams>,
) -> ApiResult<Json<Page<Message>>> {
    Ok(Json(
        state
            .coaching
            .list_messages(&actor, id, &q.parse()?)
            .await?,
    ))
}

/// What the client says.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendMessage {
    /// Its text (surrounding spaces are dropped; some text must remain).
    #[schema(min_length = 1, max_length = 16_000, pattern = "\\S")]
    pub content: String,
}

/// The turn's events as SSE.
pub fn sse_of(rx: mpsc::Receiver<TurnEvent>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let ev = rx.recv().await?;
        let event = Event::default()
            .event(ev.name())
            .json_data(&ev)
            .unwrap_or_else(|_| Event::default().event("error").data("{}"));
        Some((Ok(event), rx))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// Send a message and stream the agent's turn as Server-Sent Events: `waiting`
/// (`{ahead, message}`, once, when the model is busy and the turn waits its turn), `token` (`{text}`),
/// `tool_call` (`{id, name, arguments}`), `tool_result` (`{id, name, ok, result}`),
/// `approval_required` (`{approval_id, tool, arguments}`), then `done` (`{message_id,
/// finish, usage}`) or `error` (`{code, message}`). Closing the connection cancels
/// generation; the partial answer is kept, marked `partial`.
#[utoipa::path(post, path = "/api/v1/conversations/{id}/messages", tag = "conversations",
    request_body = SendMessage,
    params(("id" = ConversationId, Path, description = "Conversation id")), security(("bearer" = [])),
    responses(
        (status = 200, description = "The turn, as text/event-stream", content_type = "text/event-stream", body = String),
        (status = 403, description = "Not the conversation's client", body = ErrorBody),
        (status = 409, description = "Archived, or the agent's model is unavailable", body = ErrorBody),
        (status = 422, description = "Empty or oversized message", body = ErrorBody)))]
pub async fn send_message(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(id): Path<ConversationId>,
    Json(req): Json<SendMessage>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let rx = state
        .coaching
        .send_message(&actor, id, &req.content)
        .await?;
    Ok(sse_of(rx))
}
