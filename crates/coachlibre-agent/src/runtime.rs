//! The turn loop.
//!
//! A turn: persist the client's message → check the monthly budget → assemble the prompt
//! (persona, profile, recalled memories, summary, recent window; folding older turns) → stream
//! the model's answer, running tool calls between steps (each checked, validated, audited;
//! sensitive ones wait for the coach) → persist the answer and usage → extract memories.
//!
//! Events go to a channel; when its receiver is dropped (the client disconnected), the model
//! stream is dropped too, which cancels generation, and the partial answer is stored and
//! marked [`MessageStatus::Partial`]. Every step is persisted before the next begins, so a turn
//! waiting for approval survives a restart and resumes from the database.

use coachlibre_core::event::{EventKind, EventSink, EventSlot};
use std::sync::Arc;

use coachlibre_core::agent::Agent;
use coachlibre_core::audit::{AuditEntry, action};
use coachlibre_core::conversation::{
    Approval, ApprovalStatus, Channel, Citation, Conversation, Message, MessageStatus, UsageRecord,
    month_start,
};
use coachlibre_core::goal::Notification;
use coachlibre_core::ids::{ApprovalId, ConversationId, MessageId, UsageId, UserId};
use coachlibre_core::knowledge::{KnowledgeSource, Passage};
use coachlibre_core::model::{
    ChatEvent, ChatMessage, ChatModel, ChatRequest, ChatRole, GenerationParams, ModelError,
    ModelSource, ToolCall, Usage,
};
use coachlibre_core::store::{Store, StoreError};
use coachlibre_core::{Error, Result};
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::memory::Memories;
use crate::prompt;
use crate::tools::{self, ToolContext};

/// How many model calls one turn may make (each tool round is one more).
pub const DEFAULT_MAX_STEPS: u32 = 4;
/// Messages after the summary loaded to build the window.
const HISTORY_LOAD: i64 = 200;
/// Passages retrieved into the prompt of an agent with collections.
const AUTO_SOURCES: usize = 3;
/// Events buffered between the turn and a slow reader.
const EVENT_BUFFER: usize = 64;

/// Why a turn ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TurnFinish {
    /// The agent answered.
    Stop,
    /// The answer reached the agent's `max_tokens`.
    Length,
    /// A sensitive tool call waits for the coach; the turn resumes once decided.
    AwaitingApproval,
    /// The client's monthly budget with this agent is spent.
    BudgetExceeded,
    /// The agent kept calling tools past the step limit.
    StepLimit,
}

/// One event of a streamed turn (the SSE event name is [`TurnEvent::name`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum TurnEvent {
    /// The model is busy: the answer starts once `ahead` requests before it are served.
    Waiting {
        ahead: usize,
        message: String,
    },
    Token {
        text: String,
    },
    ToolCall {
        id: String,
        name: String,
        arguments: Value,
    },
    ToolResult {
        id: String,
        name: String,
        ok: bool,
        result: Value,
    },
    ApprovalRequired {
        approval_id: ApprovalId,
        tool: String,
        arguments: Value,
    },
    /// A passage of the coach's material the answer is grounded in.
    Citation(Citation),
    Done {
        message_id: MessageId,
        finish: TurnFinish,
        usage: Usage,
    },
    Error {
        code: &'static str,
        message: String,
    },
}

impl TurnEvent {
    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Waiting { .. } => "waiting",
            Self::Token { .. } => "token",
            Self::ToolCall { .. } => "tool_call",
            Self::ToolResult { .. } => "tool_result",
            Self::ApprovalRequired { .. } => "approval_required",
            Self::Citation(_) => "citation",
            Self::Done { .. } => "done",
            Self::Error { .. } => "error",
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct TurnRequest {
    pub conversation: Conversation,
    pub agent: Agent,
    /// The client's message.
    pub text: String,
    /// Prior turns supplied by the caller (the OpenAI-compatible API sends the whole
    /// transcript); when set, it replaces the stored window and its system messages are added
    /// to the persona.
    pub history: Option<Vec<ChatMessage>>,
    /// Generation settings overriding the agent's for this turn.
    pub params: Option<GenerationParams>,
    /// `text` is an instruction from a workflow, not the client's words: it is not stored,
    /// publishes no event and feeds no memory; the agent's answer is written into the
    /// conversation as usual (the agent speaks first).
    pub instruction: bool,
    /// The id the client's message is stored under, when the caller chose it: a retried turn
    /// (a background job run again) finds its message already stored and does not store it
    /// twice.
    pub message_id: Option<MessageId>,
}

/// Where events go: a client's stream, or nowhere (a turn resumed in the background).
struct Sink(Option<mpsc::Sender<TurnEvent>>);

impl Sink {
    /// Send; false once the client has gone.
    async fn emit(&self, ev: TurnEvent) -> bool {
        match &self.0 {
            Some(tx) => tx.send(ev).await.is_ok(),
            None => true,
        }
    }

    /// Resolves when the client has gone (never for a background turn).
    async fn closed(&self) {
        match &self.0 {
            Some(tx) => tx.closed().await,
            None => std::future::pending().await,
        }
    }
}

/// The agent runtime.
#[derive(Clone)]
pub struct Runtime {
    store: Arc<dyn Store>,
    models: Arc<dyn ModelSource>,
    knowledge: Option<Arc<dyn KnowledgeSource>>,
    max_steps: u32,
    /// Where "message received" and "goal completed" are published.
    events: EventSlot,
}

impl Runtime {
    /// Where chat models come from.
    pub fn models(&self) -> &Arc<dyn ModelSource> {
        &self.models
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("max_steps", &self.max_steps)
            .finish_non_exhaustive()
    }
}

/// The outcome of streaming one model call.
struct Step {
    text: String,
    calls: Vec<ToolCall>,
    usage: Usage,
    finish: coachlibre_core::model::FinishReason,
}

enum StepEnd {
    Done(Step),
    /// The client went away; the text so far.
    Cancelled(String),
    /// The model failed after starting; the text so far.
    Failed(String, ModelError),
}

/// What a turn is working with.
struct Turn {
    conversation: Conversation,
    agent: Agent,
    model: Arc<dyn ChatModel>,
    params: GenerationParams,
    messages: Vec<ChatMessage>,
    /// Tokens of this turn's model calls.
    usage: Usage,
    /// Passages given to the model (numbered from 1 in this order).
    sources: Vec<Passage>,
}

impl Runtime {
    pub fn new(store: Arc<dyn Store>, models: Arc<dyn ModelSource>) -> Self {
        Self {
            store,
            models,
            knowledge: None,
            max_steps: DEFAULT_MAX_STEPS,
            events: EventSlot::default(),
        }
    }

    /// Answer from the coach's material (agents with collections).
    pub fn with_knowledge(mut self, knowledge: Arc<dyn KnowledgeSource>) -> Self {
        self.knowledge = Some(knowledge);
        self
    }

    /// Publish "message received" and "goal completed" events to `sink` (for this runtime
    /// and its clones; the first sink set stays).
    pub fn set_events(&self, sink: Arc<dyn EventSink>) {
        self.events.set(sink);
    }

    /// Change the step limit (at least 1).
    pub fn with_max_steps(mut self, steps: u32) -> Self {
        self.max_steps = steps.max(1);
        self
    }

    /// Where agents find the coach's material, if anywhere.
    pub fn knowledge(&self) -> Option<Arc<dyn KnowledgeSource>> {
        self.knowledge.clone()
    }

    /// The store turns write to.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn memories(&self) -> Memories {
        Memories::new(self.store.clone(), self.models.embedder())
    }

    /// Run a turn in the background; its events arrive on the returned channel. Dropping the
    /// receiver cancels generation (the partial answer is kept).
    pub fn start(&self, req: TurnRequest) -> mpsc::Receiver<TurnEvent> {
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        let rt = self.clone();
        tokio::spawn(coachlibre_core::model::Priority::carry(async move {
            let sink = Sink(Some(tx));
            if let Err(e) = rt.run(req, &sink).await {
                tracing::error!(error = %e, "turn failed");
                sink.emit(error_event(&e)).await;
            }
        }));
        rx
    }

    /// Run a turn to the end, sending its events to `tx`.
    pub async fn run_to(&self, req: TurnRequest, tx: mpsc::Sender<TurnEvent>) -> Result<()> {
        self.run(req, &Sink(Some(tx))).await
    }

    async fn run(&self, req: TurnRequest, sink: &Sink) -> Result<()> {
        let conv = req.conversation;
        let agent = req.agent;
        let text = coachlibre_core::conversation::parse_user_message(&req.text)?.to_owned();
        let instruction = req.instruction;
        if !instruction {
            let mut user_msg = Message::new(conv.tenant_id, conv.id, ChatRole::User, text.clone());
            if let Some(id) = req.message_id {
                user_msg.id = id;
            }
            let fresh = match self.store.insert_message(&user_msg).await {
                Ok(()) => true,
                // Stored by an earlier attempt of the same turn: not published again.
                Err(StoreError::Conflict(_)) if req.message_id.is_some() => false,
                Err(e) => return Err(e.into()),
            };
            if fresh {
                self.events
                    .publish(
                        conv.tenant_id,
                        EventKind::MessageReceived,
                        serde_json::json!({
                            "client_id": conv.client_id,
                            "conversation_id": conv.id,
                            "agent_id": agent.id,
                            "message_id": user_msg.id,
                            "text": text,
                        }),
                    )
                    .await;
            }
        }

        if let Some(reason) = self.budget_exceeded(&conv, &agent).await? {
            let answer = format!(
                "You have reached this month's limit with {} ({reason}). Your coach has been \
                 told; the conversation can go on next month or once your coach raises the limit.",
                agent.name
            );
            self.notify_budget(&conv, &agent).await?;
            let m = Message::new(conv.tenant_id, conv.id, ChatRole::Assistant, answer.clone());
            self.store.insert_message(&m).await?;
            sink.emit(TurnEvent::Token { text: answer }).await;
            sink.emit(TurnEvent::Done {
                message_id: m.id,
                finish: TurnFinish::BudgetExceeded,
                usage: Usage::default(),
            })
            .await;
            return Ok(());
        }

        let model = self.models.chat(&agent.model).map_err(model_error)?;
        let params = req.params.unwrap_or_else(|| agent.params.clone());
        let sources = self.retrieve(&conv, &agent, &text).await;
        let messages = match req.history {
            Some(history) => {
                self.prompt_from(&conv, &agent, &text, history, &sources)
                    .await?
            }
            None => {
                let mut m = self
                    .prompt(&conv, &agent, model.as_ref(), &text, &sources)
                    .await?;
                if instruction {
                    m.push(ChatMessage::user(format!(
                        "(An instruction from your coach's workflow, not a message from the \
                         client: do not mention it, write to the client directly.) {text}"
                    )));
                }
                m
            }
        };
        let mut turn = Turn {
            conversation: conv,
            agent,
            model,
            params,
            messages,
            usage: Usage::default(),
            sources,
        };
        let answered = self.steps(&mut turn, sink).await?;
        if answered && turn.agent.memory.extract && !instruction {
            let memories = self.memories();
            if let Err(e) = memories
                .extract_from(
                    turn.conversation.tenant_id,
                    turn.conversation.client_id,
                    &text,
                )
                .await
            {
                tracing::warn!(error = %e, "memory extraction failed");
            }
        }
        Ok(())
    }

    /// Model steps until an answer, an approval wait, a failure or the step limit. Returns
    /// whether the turn completed (answered or waiting for approval).
    async fn steps(&self, turn: &mut Turn, sink: &Sink) -> Result<bool> {
        let tenant = turn.conversation.tenant_id;
        let specs = tools::specs_for(&turn.agent);
        for _ in 0..self.max_steps {
            let request = ChatRequest {
                messages: turn.messages.clone(),
                tools: specs.clone(),
                params: turn.params.clone(),
            };
            let stream = tokio::select! {
                s = turn.model.chat(request) => s,
                () = sink.closed() => return Ok(false),
            };
            let stream = match stream {
                Ok(s) => s,
                Err(e) => {
                    sink.emit(model_event(&e)).await;
                    return Ok(false);
                }
            };
            let step = match consume(stream, sink).await {
                StepEnd::Done(step) => step,
                StepEnd::Cancelled(text) => {
                    self.save_partial(turn, text, None).await?;
                    return Ok(false);
                }
                StepEnd::Failed(text, e) => {
                    self.save_partial(turn, text, Some(&e)).await?;
                    sink.emit(model_event(&e)).await;
                    return Ok(false);
                }
            };
            let usage = Self::usage_record(turn, step.usage);
            let mut msg =
                Message::new(tenant, turn.conversation.id, ChatRole::Assistant, step.text);
            msg.prompt_tokens = turn.usage.prompt_tokens;
            msg.completion_tokens = turn.usage.completion_tokens;
            if step.calls.is_empty() {
                msg.citations = citations(&msg.content, &turn.sources);
                self.store.insert_message_with_usage(&msg, &usage).await?;
                for c in &msg.citations {
                    sink.emit(TurnEvent::Citation(c.clone())).await;
                }
                let finish = match step.finish {
                    coachlibre_core::model::FinishReason::Length => TurnFinish::Length,
                    _ => TurnFinish::Stop,
                };
                sink.emit(TurnEvent::Done {
                    message_id: msg.id,
                    finish,
                    usage: turn.usage,
                })
                .await;
                return Ok(true);
            }
            msg.tool_calls = step.calls.clone();
            self.store.insert_message_with_usage(&msg, &usage).await?;
            turn.messages.push(prompt::to_chat(&msg));
            for (i, call) in step.calls.iter().enumerate() {
                sink.emit(TurnEvent::ToolCall {
                    id: call.id.clone(),
                    name: call.name.clone(),
                    arguments: call.arguments.clone(),
                })
                .await;
                let checked = tools::check(&turn.agent, &call.name, &call.arguments);
                if checked.is_ok() && turn.agent.needs_approval(&call.name) {
                    // Calls after this one are answered now (not run), so that the stored
                    // transcript stays well-formed while the turn waits.
                    for later in &step.calls[i + 1..] {
                        let refused = Err(tools::ToolError(
                            "not run: an earlier call waits for the coach's approval; call it \
                             again afterwards"
                                .into(),
                        ));
                        self.finish_call(turn, later, refused, sink).await?;
                    }
                    let approval = self.request_approval(turn, &mut msg, call).await?;
                    sink.emit(TurnEvent::ApprovalRequired {
                        approval_id: approval.id,
                        tool: call.name.clone(),
                        arguments: call.arguments.clone(),
                    })
                    .await;
                    sink.emit(TurnEvent::Done {
                        message_id: msg.id,
                        finish: TurnFinish::AwaitingApproval,
                        usage: turn.usage,
                    })
                    .await;
                    return Ok(true);
                }
                let outcome = match checked {
                    Ok(_) => self.call_tool(turn, call).await,
                    Err(e) => Err(e),
                };
                self.finish_call(turn, call, outcome, sink).await?;
            }
        }
        let text = format!(
            "I stopped after {} steps without a final answer. Could you rephrase or ask \
             something more specific?",
            self.max_steps
        );
        let m = Message::new(
            tenant,
            turn.conversation.id,
            ChatRole::Assistant,
            text.clone(),
        );
        self.store.insert_message(&m).await?;
        sink.emit(TurnEvent::Token { text }).await;
        sink.emit(TurnEvent::Done {
            message_id: m.id,
            finish: TurnFinish::StepLimit,
            usage: turn.usage,
        })
        .await;
        Ok(true)
    }

    /// Run a call that `tools::check` accepted.
    /// What a tool runs with: `agent`'s tenant and material, for `client`.
    fn tool_context<'a>(
        &'a self,
        agent: &'a Agent,
        client: UserId,
        conversation: Option<ConversationId>,
        sources_before: usize,
    ) -> ToolContext<'a> {
        ToolContext {
            store: &self.store,
            embedder: self.models.embedder(),
            knowledge: self.knowledge.as_ref(),
            sources_before,
            tenant: agent.tenant_id,
            client,
            conversation,
            agent,
        }
    }

    /// Run one tool for a client outside a turn (a workflow's `tool` step), as `agent` would
    /// (its collections for `search_knowledge`); `conversation` is where a reminder is
    /// delivered. The call is audited like a turn's.
    pub async fn run_tool(
        &self,
        agent: &Agent,
        client: UserId,
        conversation: Option<ConversationId>,
        name: &str,
        arguments: &Value,
    ) -> Result<Value> {
        let checked = tools::check(agent, name, arguments);
        let ctx = self.tool_context(agent, client, conversation, 0);
        let outcome = match checked {
            Ok(_) => tools::execute(&ctx, name, arguments).await,
            Err(e) => Err(e),
        };
        self.tool_events(&ctx, name, &outcome).await;
        self.store
            .append_audit(
                &AuditEntry::new(Some(agent.tenant_id), None, action::TOOL_CALLED)
                    .target(client)
                    .detail(json!({
                        "tool": name,
                        "agent": agent.id,
                        "ok": outcome.is_ok(),
                        "by": "workflow",
                    })),
            )
            .await?;
        outcome.map_err(|e| Error::invalid("tool", e.0))
    }

    async fn call_tool(&self, turn: &Turn, call: &ToolCall) -> Result<Value, tools::ToolError> {
        let ctx = self.tool_context(
            &turn.agent,
            turn.conversation.client_id,
            Some(turn.conversation.id),
            turn.sources.len(),
        );
        let result = tools::execute(&ctx, &call.name, &call.arguments).await;
        self.tool_events(&ctx, &call.name, &result).await;
        result
    }

    /// The events a tool's result makes: a goal that became achieved.
    async fn tool_events(
        &self,
        ctx: &ToolContext<'_>,
        name: &str,
        result: &Result<Value, tools::ToolError>,
    ) {
        if let Ok(r) = result
            && name == "update_goal"
            && r["achieved_now"] == json!(true)
        {
            self.events
                .publish(
                    ctx.tenant,
                    EventKind::GoalCompleted,
                    json!({
                        "client_id": ctx.client,
                        "agent_id": ctx.agent.id,
                        "goal_id": r["goal_id"],
                        "title": r["title"],
                        "conversation_id": ctx.conversation,
                    }),
                )
                .await;
        }
    }

    /// Audit a call, store its result for the model, and tell the client.
    async fn finish_call(
        &self,
        turn: &mut Turn,
        call: &ToolCall,
        outcome: Result<Value, tools::ToolError>,
        sink: &Sink,
    ) -> Result<()> {
        let (ok, result) = match outcome {
            Ok(v) => (true, v),
            Err(e) => (false, json!({"error": e.0})),
        };
        if ok && call.name == "search_knowledge" {
            turn.sources.extend(tools::passages_of(&result));
        }
        let conv = &turn.conversation;
        self.store
            .append_audit(
                &AuditEntry::new(
                    Some(conv.tenant_id),
                    Some(conv.client_id),
                    action::TOOL_CALLED,
                )
                .target(&call.name)
                .detail(json!({
                    "agent_id": turn.agent.id,
                    "conversation_id": conv.id,
                    "arguments": call.arguments,
                    "ok": ok,
                    "result": result,
                })),
            )
            .await?;
        let mut m = Message::new(conv.tenant_id, conv.id, ChatRole::Tool, result.to_string());
        m.tool_call_id = Some(call.id.clone());
        self.store.insert_message(&m).await?;
        turn.messages.push(prompt::to_chat(&m));
        sink.emit(TurnEvent::ToolResult {
            id: call.id.clone(),
            name: call.name.clone(),
            ok,
            result,
        })
        .await;
        Ok(())
    }

    async fn request_approval(
        &self,
        turn: &Turn,
        msg: &mut Message,
        call: &ToolCall,
    ) -> Result<Approval> {
        let conv = &turn.conversation;
        msg.status = MessageStatus::AwaitingApproval;
        self.store.update_message(msg).await?;
        let approval = Approval {
            id: ApprovalId::generate(),
            tenant_id: conv.tenant_id,
            conversation_id: conv.id,
            message_id: msg.id,
            client_id: conv.client_id,
            agent_id: turn.agent.id,
            tool_call: call.clone(),
            status: ApprovalStatus::Pending,
            decided_by: None,
            resumed: false,
            created_at: coachlibre_core::now(),
            decided_at: None,
        };
        self.store.insert_approval(&approval).await?;
        self.store
            .append_audit(
                &AuditEntry::new(
                    Some(conv.tenant_id),
                    Some(conv.client_id),
                    action::TOOL_APPROVAL_REQUESTED,
                )
                .target(approval.id)
                .detail(json!({"tool": call.name, "arguments": call.arguments})),
            )
            .await?;
        let text = format!(
            "{} wants to run '{}' for a client and waits for your approval.",
            turn.agent.name, call.name
        );
        self.notify_coaches(
            conv,
            &turn.agent,
            "approval_requested",
            text,
            approval.id.to_string(),
        )
        .await?;
        Ok(approval)
    }

    /// Continue a turn whose sensitive call was decided (run at decision time, and for any
    /// decided-but-not-resumed approval at start-up). Safe to call twice: only one caller
    /// claims the resume.
    pub async fn resume(&self, approval: &Approval) -> Result<()> {
        let tenant = approval.tenant_id;
        if approval.status == ApprovalStatus::Pending
            || !self
                .store
                .claim_approval_resume(tenant, approval.id)
                .await?
        {
            return Ok(());
        }
        let conv = self
            .store
            .get_conversation(tenant, approval.conversation_id)
            .await?
            .ok_or_else(|| Error::not_found("conversation"))?;
        let agent = self
            .store
            .get_agent(tenant, approval.agent_id)
            .await?
            .ok_or_else(|| Error::not_found("agent"))?;
        if let Some(mut msg) = self.store.get_message(tenant, approval.message_id).await? {
            msg.status = MessageStatus::Complete;
            self.store.update_message(&msg).await?;
        }
        let model = self.models.chat(&agent.model).map_err(model_error)?;
        let messages = self.prompt(&conv, &agent, model.as_ref(), "", &[]).await?;
        let mut turn = Turn {
            conversation: conv,
            params: agent.params.clone(),
            agent,
            model,
            messages,
            usage: Usage::default(),
            sources: Vec::new(),
        };
        let call = &approval.tool_call;
        let outcome = if approval.status == ApprovalStatus::Approved {
            // Checked again: the agent may have changed while the call waited.
            match tools::check(&turn.agent, &call.name, &call.arguments) {
                Ok(_) => self.call_tool(&turn, call).await,
                Err(e) => Err(e),
            }
        } else {
            Err(tools::ToolError(
                "the coach declined this action; tell the client and go on without it".into(),
            ))
        };
        let sink = Sink(None);
        self.finish_call(&mut turn, call, outcome, &sink).await?;
        if self.steps(&mut turn, &sink).await? {
            self.text_answer(&turn.conversation).await?;
        }
        Ok(())
    }

    /// On the SMS channel, text the conversation's newest message when it is the agent's
    /// answer (a turn resumed after the coach's decision has no one waiting on a stream).
    async fn text_answer(&self, conv: &Conversation) -> Result<()> {
        if conv.channel != Channel::Sms {
            return Ok(());
        }
        let latest = self
            .store
            .recent_messages(conv.tenant_id, conv.id, None, 1)
            .await?;
        let Some(answer) = latest
            .last()
            .filter(|m| m.role == ChatRole::Assistant && m.tool_calls.is_empty())
        else {
            return Ok(());
        };
        if let Some(job) = coachlibre_core::sms::text_for(self.store.as_ref(), conv, answer).await?
        {
            self.store.enqueue(&job).await?;
        }
        Ok(())
    }

    /// Resume every decided approval left behind by a stop or crash.
    pub async fn resume_pending(&self) -> Result<usize> {
        let pending = self.store.approvals_to_resume().await?;
        let n = pending.len();
        for a in pending {
            if let Err(e) = self.resume(&a).await {
                tracing::warn!(approval = %a.id, error = %e, "could not resume a turn");
            }
        }
        Ok(n)
    }

    /// The prompt from the stored conversation; `text` is the newest client message (already
    /// stored), used to pick the memories to recall.
    async fn prompt(
        &self,
        conv: &Conversation,
        agent: &Agent,
        model: &dyn ChatModel,
        text: &str,
        sources: &[Passage],
    ) -> Result<Vec<ChatMessage>> {
        let history = self
            .store
            .recent_messages(conv.tenant_id, conv.id, conv.summary_upto, HISTORY_LOAD)
            .await?;
        let (fold, window) = prompt::plan_window(&history, agent.memory.window_tokens);
        let mut summary = conv.summary.clone();
        if let Some(last) = fold.last() {
            summary = self.fold(model, &summary, fold).await;
            self.store
                .set_summary(conv.tenant_id, conv.id, &summary, last.id)
                .await?;
        }
        let mut messages = vec![ChatMessage::system(
            self.system(conv, agent, text, &summary, &[], sources)
                .await?,
        )];
        messages.extend(
            window
                .iter()
                .filter(|m| m.status != MessageStatus::Partial || !m.content.is_empty())
                .map(prompt::to_chat),
        );
        Ok(messages)
    }

    /// The prompt from a transcript supplied by the caller.
    async fn prompt_from(
        &self,
        conv: &Conversation,
        agent: &Agent,
        text: &str,
        history: Vec<ChatMessage>,
        sources: &[Passage],
    ) -> Result<Vec<ChatMessage>> {
        let (system, turns): (Vec<ChatMessage>, Vec<ChatMessage>) = history
            .into_iter()
            .partition(|m| m.role == ChatRole::System);
        let extra: Vec<String> = system.into_iter().map(|m| m.content).collect();
        let mut messages = vec![ChatMessage::system(
            self.system(conv, agent, text, &conv.summary, &extra, sources)
                .await?,
        )];
        messages.extend(turns);
        messages.push(ChatMessage::user(text));
        Ok(messages)
    }

    async fn system(
        &self,
        conv: &Conversation,
        agent: &Agent,
        text: &str,
        summary: &str,
        extra: &[String],
        sources: &[Passage],
    ) -> Result<String> {
        let profile = self
            .store
            .get_profile(conv.tenant_id, conv.client_id)
            .await?;
        let recall_limit = usize::try_from(agent.memory.recall_limit).unwrap_or(0);
        let memories = self
            .memories()
            .recall(conv.tenant_id, conv.client_id, text, recall_limit)
            .await?;
        Ok(prompt::system_prompt(
            agent, &profile, &memories, sources, summary, extra,
        ))
    }

    /// Passages of the agent's collections relevant to the client's message (none when the
    /// agent has no collections; a retrieval failure is logged and the turn goes on).
    async fn retrieve(&self, conv: &Conversation, agent: &Agent, text: &str) -> Vec<Passage> {
        let Some(k) = &self.knowledge else {
            return Vec::new();
        };
        if agent.collections.is_empty() || text.trim().is_empty() {
            return Vec::new();
        }
        match k
            .retrieve(conv.tenant_id, &agent.collections, text, AUTO_SOURCES)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "knowledge retrieval failed; answering without it");
                Vec::new()
            }
        }
    }

    /// Fold turns into the summary with the model, or without it if it fails.
    async fn fold(&self, model: &dyn ChatModel, previous: &str, folded: &[Message]) -> String {
        let request = ChatRequest {
            messages: prompt::summary_request(previous, folded),
            tools: Vec::new(),
            params: GenerationParams {
                max_tokens: 200,
                temperature: 0.0,
                ..Default::default()
            },
        };
        let mut text = String::new();
        match model.chat(request).await {
            Ok(mut stream) => {
                while let Some(ev) = stream.next().await {
                    match ev {
                        Ok(ChatEvent::Token(t)) => text.push_str(&t),
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "summary failed midway");
                            text.clear();
                            break;
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "summary model unavailable"),
        }
        let text = text.trim();
        if text.is_empty() {
            prompt::fallback_summary(previous, folded)
        } else if previous.trim().is_empty() {
            prompt::clamp_summary(text)
        } else {
            prompt::clamp_summary(&format!("{} {text}", previous.trim()))
        }
    }

    async fn save_partial(
        &self,
        turn: &mut Turn,
        text: String,
        e: Option<&ModelError>,
    ) -> Result<()> {
        // Usage of a cut stream is estimated from what was generated.
        let usage = Usage {
            prompt_tokens: turn
                .messages
                .iter()
                .map(|m| prompt::estimate_tokens(&m.content))
                .sum(),
            completion_tokens: prompt::estimate_tokens(&text),
            cost_usd: 0.0,
            estimated: true,
        };
        let usage = Self::usage_record(turn, usage);
        let conv = &turn.conversation;
        let mut m = Message::new(conv.tenant_id, conv.id, ChatRole::Assistant, text);
        m.status = MessageStatus::Partial;
        m.prompt_tokens = turn.usage.prompt_tokens;
        m.completion_tokens = turn.usage.completion_tokens;
        self.store.insert_message_with_usage(&m, &usage).await?;
        tracing::info!(conversation = %conv.id, error = ?e.map(ToString::to_string), "partial answer kept");
        Ok(())
    }

    /// Add a model call's usage to the turn's; the record to store with its message.
    fn usage_record(turn: &mut Turn, usage: Usage) -> UsageRecord {
        turn.usage.prompt_tokens += usage.prompt_tokens;
        turn.usage.completion_tokens += usage.completion_tokens;
        turn.usage.cost_usd += usage.cost_usd;
        turn.usage.estimated |= usage.estimated;
        let conv = &turn.conversation;
        UsageRecord {
            id: UsageId::generate(),
            tenant_id: conv.tenant_id,
            client_id: conv.client_id,
            agent_id: turn.agent.id,
            conversation_id: Some(conv.id),
            model: turn.model.name().to_owned(),
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            cost_usd: usage.cost_usd,
            estimated: usage.estimated,
            created_at: coachlibre_core::now(),
        }
    }

    /// Why the client may not spend more this month, if so.
    async fn budget_exceeded(&self, conv: &Conversation, agent: &Agent) -> Result<Option<String>> {
        let b = agent.budget;
        if b.monthly_tokens.is_none() && b.monthly_cost_usd.is_none() {
            return Ok(None);
        }
        let used = self
            .store
            .usage_since(
                conv.tenant_id,
                conv.client_id,
                agent.id,
                month_start(coachlibre_core::now()),
            )
            .await?;
        if let Some(limit) = b.monthly_tokens
            && used.tokens >= limit
        {
            return Ok(Some(format!("{} of {limit} tokens used", used.tokens)));
        }
        if let Some(limit) = b.monthly_cost_usd
            && used.cost_usd >= limit
        {
            return Ok(Some(format!("${:.2} of ${limit:.2} spent", used.cost_usd)));
        }
        Ok(None)
    }

    async fn notify_budget(&self, conv: &Conversation, agent: &Agent) -> Result<()> {
        let month = coachlibre_core::now().format("%Y-%m");
        let client = self.store.get_user(conv.tenant_id, conv.client_id).await?;
        let who = client.map_or_else(|| "A client".to_owned(), |u| u.display_name);
        let text = format!(
            "{who} reached this month's budget with {}; the agent has stopped answering them \
             until next month or until the budget is raised.",
            agent.name
        );
        self.notify_coaches(
            conv,
            agent,
            "budget_exceeded",
            text,
            format!("budget:{}:{}:{month}", agent.id, conv.client_id),
        )
        .await
    }

    /// Notify the agent's owner and the client's coaches (or, with neither, the admins).
    async fn notify_coaches(
        &self,
        conv: &Conversation,
        agent: &Agent,
        kind: &str,
        text: String,
        dedup: String,
    ) -> Result<()> {
        let mut recipients: Vec<UserId> = self
            .store
            .coaches_of(conv.tenant_id, conv.client_id)
            .await?
            .into_iter()
            .map(|u| u.id)
            .collect();
        if let Some(owner) = agent.owner_id {
            recipients.push(owner);
        }
        if recipients.is_empty() {
            let admins = self
                .store
                .list_users(
                    conv.tenant_id,
                    &coachlibre_core::store::UserFilter {
                        role: Some(coachlibre_core::user::Role::Admin),
                        coach_id: None,
                    },
                    &coachlibre_core::page::PageRequest::default(),
                )
                .await?;
            recipients.extend(admins.into_iter().map(|u| u.id));
        }
        recipients.sort();
        recipients.dedup();
        for user in recipients {
            self.store
                .insert_notification(&Notification::new(
                    conv.tenant_id,
                    user,
                    kind,
                    text.clone(),
                    dedup.clone(),
                ))
                .await?;
        }
        Ok(())
    }
}

/// Stream one model call to the sink until it ends, fails or the client goes.
async fn consume(mut stream: coachlibre_core::model::ChatStream, sink: &Sink) -> StepEnd {
    let mut text = String::new();
    let mut calls = Vec::new();
    loop {
        let next = tokio::select! {
            ev = stream.next() => ev,
            () = sink.closed() => return StepEnd::Cancelled(text),
        };
        match next {
            Some(Ok(ChatEvent::Token(t))) => {
                text.push_str(&t);
                if !sink.emit(TurnEvent::Token { text: t }).await {
                    return StepEnd::Cancelled(text);
                }
            }
            Some(Ok(ChatEvent::ToolCall(c))) => calls.push(c),
            Some(Ok(ChatEvent::Waiting { ahead })) => {
                let message = if ahead == 0 {
                    "The coach is finishing another answer; yours comes next.".to_owned()
                } else {
                    format!("The coach is busy: {ahead} answer(s) before yours.")
                };
                if !sink.emit(TurnEvent::Waiting { ahead, message }).await {
                    return StepEnd::Cancelled(text);
                }
            }
            Some(Ok(ChatEvent::Done { usage, finish })) => {
                return StepEnd::Done(Step {
                    text,
                    calls,
                    usage,
                    finish,
                });
            }
            Some(Err(e)) => return StepEnd::Failed(text, e),
            None => {
                return StepEnd::Failed(
                    text,
                    ModelError::Malformed("the stream ended without finishing".into()),
                );
            }
        }
    }
}

/// The citations of an answer: the sources it cites as `[n]`, or, when it cites none by
/// number, every source it was given (the answer was grounded in them).
fn citations(answer: &str, sources: &[Passage]) -> Vec<Citation> {
    let cited: Vec<usize> = (1..=sources.len())
        .filter(|n| answer.contains(&format!("[{n}]")))
        .collect();
    let picked: Vec<usize> = if cited.is_empty() {
        (1..=sources.len()).collect()
    } else {
        cited
    };
    picked
        .into_iter()
        .filter_map(|n| {
            let p = sources.get(n - 1)?;
            Some(Citation {
                index: n,
                chunk_id: p.chunk_id,
                document_id: p.document_id,
                collection_id: p.collection_id,
                title: p.title.clone(),
                heading: p.heading.clone(),
                start: p.start,
                end: p.end,
                text: p.text.clone(),
            })
        })
        .collect()
}

fn model_error(e: ModelError) -> Error {
    match e {
        ModelError::NotConfigured(m) => {
            Error::Conflict(format!("the agent's model is not available: {m}"))
        }
        other => Error::Internal(other.to_string()),
    }
}

fn model_event(e: &ModelError) -> TurnEvent {
    TurnEvent::Error {
        code: "model_unavailable",
        message: e.to_string(),
    }
}

fn error_event(e: &Error) -> TurnEvent {
    TurnEvent::Error {
        code: e.code(),
        message: match e {
            Error::Internal(_) => "the turn failed; try again".into(),
            other => other.to_string(),
        },
    }
}
