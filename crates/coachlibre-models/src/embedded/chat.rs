//! The embedded chat model: SmolLM2-135M-Instruct through llama.cpp.
//!
//! Each turn runs on a blocking thread with its own llama.cpp context (the model weights are
//! shared, memory-mapped once). Generation is admitted through a [`Gate`], so concurrent chats
//! are served in turn instead of thrashing the cores: people in a conversation before
//! background work, tenants' background work in turn. The waiting lines are bounded: past
//! them a request fails at once with a transient error (a fallback model can take it); a
//! request that must wait says so first ([`ChatEvent::Waiting`]).
//! Tokens are sent as they are produced; when the consumer drops the stream, the next send
//! fails and generation stops.

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use coachlibre_core::model::{
    ChatEvent, ChatMessage, ChatModel, ChatRequest, ChatRole, ChatStream, FinishReason,
    GenerationParams, ModelError, Priority, ToolSpec, Usage,
};
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use tokio::sync::mpsc;

use super::gate::{Admission, Gate, Refused};

use super::text::{Step, StopWatch, Utf8Buffer};
use crate::toolcall::{self, Parsed, StreamSplitter};

/// llama.cpp's global state: initialised once per process.
pub(crate) fn backend() -> Result<&'static LlamaBackend, ModelError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            LlamaBackend::init()
                .map(|mut b| {
                    b.void_logs();
                    b
                })
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| ModelError::NotConfigured(format!("llama.cpp backend: {e}")))
}

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// CPU threads per generation (default: all cores).
    pub threads: i32,
    /// Generations running at once (default 1: on a few cores, one at a time is fastest).
    pub max_concurrent: usize,
    /// Requests allowed to wait for a slot; more are refused at once.
    pub max_queue: usize,
    /// Largest context (prompt + answer) in tokens; capped by what the model was trained on.
    pub max_context: u32,
}

impl Default for EngineOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        Self {
            threads: i32::try_from(cores).unwrap_or(2),
            max_concurrent: 1,
            max_queue: 16,
            max_context: 8192,
        }
    }
}

/// The loaded model, shared by every turn.
struct Loaded {
    model: LlamaModel,
    template: LlamaChatTemplate,
    /// Creating contexts concurrently is unsound in llama.cpp (it may write to the model).
    context_lock: Mutex<()>,
}

/// SmolLM2 (or any GGUF chat model) running in-process.
#[derive(Clone)]
pub struct EmbeddedChat {
    name: String,
    loaded: Arc<Loaded>,
    options: EngineOptions,
    gate: Gate,
}

impl std::fmt::Debug for EmbeddedChat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedChat")
            .field("name", &self.name)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl EmbeddedChat {
    /// Load a GGUF file (memory-mapped).
    pub fn load(name: &str, path: &Path, options: EngineOptions) -> Result<Self, ModelError> {
        if !path.exists() {
            return Err(ModelError::NotConfigured(format!(
                "{} is missing: run `coachlibre models pull`",
                path.display()
            )));
        }
        let model = LlamaModel::load_from_file(backend()?, path, &LlamaModelParams::default())
            .map_err(|e| ModelError::NotConfigured(format!("loading {}: {e}", path.display())))?;
        let template = model.chat_template(None).map_err(|e| {
            ModelError::NotConfigured(format!(
                "{} has no usable chat template: {e}",
                path.display()
            ))
        })?;
        let max_context = options.max_context.min(model.n_ctx_train().max(512));
        let options = EngineOptions {
            max_context,
            ..options
        };
        Ok(Self {
            name: name.to_owned(),
            gate: Gate::new(options.max_concurrent.max(1), options.max_queue),
            loaded: Arc::new(Loaded {
                model,
                template,
                context_lock: Mutex::new(()),
            }),
            options,
        })
    }

    /// Requests waiting for a generation slot.
    pub fn queued(&self) -> usize {
        self.gate.waiting()
    }

    /// The prompt text for a request, in the model's own chat template.
    pub fn render_prompt(&self, request: &ChatRequest) -> Result<String, ModelError> {
        let messages = prompt_messages(&request.messages, &request.tools)?;
        self.loaded
            .model
            .apply_chat_template(&self.loaded.template, &messages, true)
            .map_err(|e| ModelError::Rejected(format!("cannot apply the chat template: {e}")))
    }
}

/// Messages in the template's terms: tools described in the system prompt, calls written in
/// the format the parser reads back.
fn prompt_messages(
    messages: &[ChatMessage],
    tools: &[ToolSpec],
) -> Result<Vec<LlamaChatMessage>, ModelError> {
    let mut out = Vec::with_capacity(messages.len() + 1);
    let tool_text = (!tools.is_empty()).then(|| toolcall::tools_prompt(tools));
    let has_system = messages.iter().any(|m| m.role == ChatRole::System);
    let msg = |role: &str, content: String| {
        LlamaChatMessage::new(role.to_owned(), content)
            .map_err(|e| ModelError::Rejected(format!("message contains a NUL byte: {e}")))
    };
    if let (Some(t), false) = (&tool_text, has_system) {
        out.push(msg("system", t.clone())?);
    }
    for m in messages {
        let (role, content) = match m.role {
            ChatRole::System => (
                "system",
                match &tool_text {
                    Some(t) => format!("{}\n\n{t}", m.content),
                    None => m.content.clone(),
                },
            ),
            ChatRole::User => ("user", m.content.clone()),
            ChatRole::Assistant => {
                let mut c = m.content.clone();
                for call in &m.tool_calls {
                    let json = serde_json::json!({"name": call.name, "arguments": call.arguments});
                    c.push_str(&format!("{}{json}{}", toolcall::OPEN, toolcall::CLOSE));
                }
                ("assistant", c)
            }
            ChatRole::Tool => ("tool", m.content.clone()),
        };
        out.push(msg(role, content)?);
    }
    Ok(out)
}

fn sampler(p: &GenerationParams) -> LlamaSampler {
    if p.temperature <= 0.0 {
        return LlamaSampler::greedy();
    }
    let seed = p
        .seed
        .map_or_else(rand::random::<u32>, |s| (s & 0xFFFF_FFFF) as u32);
    LlamaSampler::chain_simple([
        LlamaSampler::top_p(p.top_p.clamp(0.01, 1.0), 1),
        LlamaSampler::temp(p.temperature),
        LlamaSampler::dist(seed),
    ])
}

type Sink = mpsc::Sender<Result<ChatEvent, ModelError>>;

/// Send an event from the generating thread; false when the consumer is gone.
fn send(tx: &Sink, ev: Result<ChatEvent, ModelError>) -> bool {
    tx.blocking_send(ev).is_ok()
}

/// One turn, on a blocking thread. Returns early (without error) when the consumer leaves.
fn generate(
    engine: &EmbeddedChat,
    request: &ChatRequest,
    prompt: &str,
    tx: &Sink,
) -> Result<(), ModelError> {
    let loaded = &engine.loaded;
    let vocab = loaded.model.vocab();
    let tokens = vocab.tokenize(prompt.as_bytes(), vocab.should_add_bos(), true);
    let prompt_len = u32::try_from(tokens.len()).unwrap_or(u32::MAX);
    let max_new = request.params.max_tokens.max(1);
    let budget = engine.options.max_context;
    if prompt_len >= budget {
        return Err(ModelError::Rejected(format!(
            "the prompt is {prompt_len} tokens; this model's context holds {budget}"
        )));
    }
    let max_new = max_new.min(budget - prompt_len);
    let n_ctx = prompt_len + max_new;
    let mut ctx = {
        let _guard = loaded
            .context_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(n_ctx))
            .with_n_batch(n_ctx.clamp(64, 512))
            .with_n_threads(engine.options.threads)
            .with_n_threads_batch(engine.options.threads);
        loaded
            .model
            .new_context(backend()?, params)
            .map_err(|e| ModelError::Unavailable(format!("llama.cpp context: {e}")))?
    };
    // Prompt, in batches; logits only for its last token.
    let n_batch = usize::try_from(ctx.n_batch()).unwrap_or(512).max(1);
    let mut batch = LlamaBatch::new(n_batch, 1);
    let last = tokens.len().saturating_sub(1);
    for (chunk_no, chunk) in tokens.chunks(n_batch).enumerate() {
        batch.clear();
        for (i, t) in chunk.iter().enumerate() {
            let pos = chunk_no * n_batch + i;
            batch
                .add(
                    *t,
                    i32::try_from(pos).unwrap_or(i32::MAX),
                    &[0],
                    pos == last,
                )
                .map_err(|e| ModelError::Unavailable(format!("llama.cpp batch: {e}")))?;
        }
        ctx.decode(&mut batch)
            .map_err(|e| ModelError::Unavailable(format!("llama.cpp decode: {e}")))?;
    }
    let mut sampler = sampler(&request.params);
    let mut utf8 = Utf8Buffer::default();
    let mut stops = StopWatch::new(&request.params.stop);
    let mut splitter = StreamSplitter::default();
    let tools = &request.tools;
    let mut emit = |text: String| -> bool {
        if text.is_empty() {
            return true;
        }
        let shown = if tools.is_empty() {
            text
        } else {
            splitter.push(&text)
        };
        shown.is_empty() || send(tx, Ok(ChatEvent::Token(shown)))
    };
    let mut pos = i32::try_from(tokens.len()).unwrap_or(i32::MAX);
    let mut generated = 0u32;
    let mut finish = FinishReason::Length;
    while generated < max_new {
        let token = sampler.sample(&ctx, batch.n_tokens() - 1);
        sampler.accept(token);
        generated += 1;
        if vocab.is_eog(token) {
            finish = FinishReason::Stop;
            break;
        }
        let piece = utf8.push(&vocab.token_to_piece(token, false, None));
        match stops.push(&piece) {
            Step::Emit(text) => {
                if !emit(text) {
                    return Ok(());
                }
            }
            Step::Stop(text) => {
                if !emit(text) {
                    return Ok(());
                }
                finish = FinishReason::Stop;
                break;
            }
        }
        batch.clear();
        batch
            .add(token, pos, &[0], true)
            .map_err(|e| ModelError::Unavailable(format!("llama.cpp batch: {e}")))?;
        pos += 1;
        ctx.decode(&mut batch)
            .map_err(|e| ModelError::Unavailable(format!("llama.cpp decode: {e}")))?;
    }
    let tail = stops.flush();
    if !emit(tail) {
        return Ok(());
    }
    if !tools.is_empty() {
        let held_back = splitter.in_call();
        let output = std::mem::take(&mut splitter).into_output();
        match toolcall::parse(&output, tools) {
            Parsed::Calls { calls, .. } => {
                finish = FinishReason::ToolCalls;
                for c in calls {
                    if !send(tx, Ok(ChatEvent::ToolCall(c))) {
                        return Ok(());
                    }
                }
            }
            // Not a valid call after all: show what was held back.
            Parsed::Answer(_) if held_back => {
                let shown_len = output.find(toolcall::OPEN).unwrap_or(output.len());
                let rest = output[shown_len..].to_owned();
                if !rest.is_empty() && !send(tx, Ok(ChatEvent::Token(rest))) {
                    return Ok(());
                }
            }
            Parsed::Answer(_) => {}
        }
    }
    send(
        tx,
        Ok(ChatEvent::Done {
            usage: Usage {
                prompt_tokens: prompt_len,
                completion_tokens: generated,
                cost_usd: 0.0,
                estimated: false,
            },
            finish,
        }),
    );
    Ok(())
}

#[async_trait]
impl ChatModel for EmbeddedChat {
    fn name(&self) -> &str {
        &self.name
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatStream, ModelError> {
        let prompt = self.render_prompt(&request)?;
        let admission = self.gate.admit(Priority::current()).map_err(|r| {
            ModelError::Unavailable(match r {
                Refused::Full { waiting } => {
                    format!("{} is busy: {waiting} requests already waiting", self.name)
                }
                Refused::TenantShare { share } => format!(
                    "{} is busy: this organisation already has {share} background requests \
                     waiting",
                    self.name
                ),
            })
        })?;
        let (tx, rx) = mpsc::channel(32);
        let engine = self.clone();
        let run = move |slot, tx: mpsc::Sender<_>| {
            tokio::task::spawn_blocking(move || {
                let _slot = slot;
                if let Err(e) = generate(&engine, &request, &prompt, &tx) {
                    let _ = tx.blocking_send(Err(e));
                }
            });
        };
        match admission {
            Admission::Now(slot) => run(slot, tx),
            Admission::Later { ahead, slot } => {
                let _ = tx.try_send(Ok(ChatEvent::Waiting { ahead }));
                tokio::spawn(async move {
                    tokio::select! {
                        slot = slot => match slot {
                            Ok(slot) => run(slot, tx),
                            Err(_) => {
                                let _ = tx
                                    .send(Err(ModelError::Unavailable(
                                        "the engine is shutting down".into(),
                                    )))
                                    .await;
                            }
                        },
                        // Whoever asked went away: leave the line.
                        () = tx.closed() => {}
                    }
                });
            }
        }
        Ok(Box::pin(futures_util::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|item| (item, rx)) },
        )))
    }
}
