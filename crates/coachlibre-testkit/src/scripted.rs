//! Test doubles for the model interface: a chat model that replays scripted tokens, tool calls
//! and failures (for deterministic tests of the agent loop and for fault injection), and a
//! deterministic embedder. Never used outside tests.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use coachlibre_core::model::{
    ChatEvent, ChatModel, ChatRequest, ChatStream, EmbeddingModel, FinishReason, ModelError,
    ModelSource, ToolCall, Usage,
};

/// One step of a scripted answer.
#[derive(Debug, Clone)]
pub enum Step {
    /// A streamed piece of text.
    Token(String),
    /// A complete tool call.
    Call(String, serde_json::Value),
    /// The stream fails here.
    Fail(ModelError),
    /// The stream stops producing (until dropped).
    Hang,
}

/// One scripted answer.
#[derive(Debug, Clone, Default)]
pub struct Script {
    pub steps: Vec<Step>,
    /// Reported usage (default: 10 prompt tokens, one completion token per text step).
    pub usage: Option<Usage>,
    /// The call fails before streaming.
    pub refuse: Option<ModelError>,
}

impl Script {
    /// Text streamed word by word.
    pub fn text(text: &str) -> Self {
        Self {
            steps: words(text).into_iter().map(Step::Token).collect(),
            ..Default::default()
        }
    }

    /// One tool call.
    pub fn call(name: &str, args: serde_json::Value) -> Self {
        Self {
            steps: vec![Step::Call(name.to_owned(), args)],
            ..Default::default()
        }
    }

    /// Replace the reported usage.
    pub fn with_usage(mut self, prompt: u32, completion: u32, cost_usd: f64) -> Self {
        self.usage = Some(Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            cost_usd,
            estimated: false,
        });
        self
    }
}

fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in text.chars() {
        cur.push(c);
        if c == ' ' {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// A chat model that answers from a queue of scripts, recording every request.
#[derive(Debug)]
pub struct ScriptedModel {
    name: String,
    queue: Mutex<VecDeque<Script>>,
    /// Answer used when the queue is empty.
    fallback: Option<Script>,
    /// Delay before each token (to hold streams open at a fixed rate).
    token_delay: Option<Duration>,
    requests: Mutex<Vec<ChatRequest>>,
    /// Keep every request (for assertions); off in benchmarks, where it is the double's
    /// own memory, not the server's.
    record: bool,
}

impl ScriptedModel {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            queue: Mutex::new(VecDeque::new()),
            fallback: None,
            token_delay: None,
            requests: Mutex::new(Vec::new()),
            record: true,
        }
    }

    /// Do not keep requests ([`ScriptedModel::requests`] stays empty).
    pub fn without_recording(mut self) -> Self {
        self.record = false;
        self
    }

    /// Answer with `script` whenever the queue is empty.
    pub fn always(mut self, script: Script) -> Self {
        self.fallback = Some(script);
        self
    }

    /// Wait this long before each token.
    pub fn token_delay(mut self, d: Duration) -> Self {
        self.token_delay = Some(d);
        self
    }

    /// Queue the next answer.
    pub fn push(&self, script: Script) {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(script);
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<ChatRequest> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Scripts not consumed yet.
    pub fn pending(&self) -> usize {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[async_trait]
impl ChatModel for ScriptedModel {
    fn name(&self) -> &str {
        &self.name
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatStream, ModelError> {
        if self.record {
            self.requests
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(request);
        }
        let script = self
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front()
            .or_else(|| self.fallback.clone())
            .ok_or_else(|| ModelError::Unavailable("the script is exhausted".into()))?;
        if let Some(e) = script.refuse {
            return Err(e);
        }
        let texts = script
            .steps
            .iter()
            .filter(|s| matches!(s, Step::Token(_)))
            .count();
        let usage = script.usage.unwrap_or(Usage {
            prompt_tokens: 10,
            completion_tokens: u32::try_from(texts).unwrap_or(u32::MAX),
            cost_usd: 0.0,
            estimated: false,
        });
        let has_calls = script.steps.iter().any(|s| matches!(s, Step::Call(..)));
        let mut steps: VecDeque<Step> = script.steps.into();
        let delay = self.token_delay;
        let mut call_no = 0u32;
        let mut done = false;
        let stream = futures_util::stream::unfold((), move |()| {
            let next = steps.pop_front();
            let finished = done;
            if next.is_none() {
                done = true;
            }
            call_no += 1;
            let id = format!("call_{call_no}");
            async move {
                if finished {
                    return None;
                }
                let ev = match next {
                    None => Ok(ChatEvent::Done {
                        usage,
                        finish: if has_calls {
                            FinishReason::ToolCalls
                        } else {
                            FinishReason::Stop
                        },
                    }),
                    Some(Step::Token(t)) => {
                        if let Some(d) = delay {
                            tokio::time::sleep(d).await;
                        }
                        Ok(ChatEvent::Token(t))
                    }
                    Some(Step::Call(name, arguments)) => Ok(ChatEvent::ToolCall(ToolCall {
                        id,
                        name,
                        arguments,
                    })),
                    Some(Step::Fail(e)) => Err(e),
                    Some(Step::Hang) => std::future::pending().await,
                };
                Some((ev, ()))
            }
        });
        Ok(Box::pin(stream))
    }
}

/// A deterministic embedder: hashed bags of lowercase words, L2-normalised. Texts sharing
/// words are close; unrelated texts are near-orthogonal.
#[derive(Debug, Default)]
pub struct HashEmbedder;

/// Dimensions of [`HashEmbedder`] vectors.
pub const HASH_DIMENSIONS: usize = 256;

#[async_trait]
impl EmbeddingModel for HashEmbedder {
    fn name(&self) -> &str {
        "hash-embedder"
    }

    fn dimensions(&self) -> usize {
        HASH_DIMENSIONS
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ModelError> {
        Ok(texts
            .iter()
            .map(|t| {
                let mut v = vec![0.0f32; HASH_DIMENSIONS];
                for w in t
                    .to_lowercase()
                    .split(|c: char| !c.is_alphanumeric())
                    .filter(|w| w.len() > 2)
                {
                    let h = w.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
                    });
                    v[usize::try_from(h % HASH_DIMENSIONS as u64).unwrap_or(0)] += 1.0;
                }
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                if n > 0.0 {
                    v.iter_mut().for_each(|x| *x /= n);
                }
                v
            })
            .collect())
    }
}

/// A [`ModelSource`] over named test models.
#[derive(Default)]
pub struct ScriptedSource {
    models: HashMap<String, Arc<dyn ChatModel>>,
    embedder: Option<Arc<dyn EmbeddingModel>>,
}

impl std::fmt::Debug for ScriptedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedSource")
            .field("models", &self.models.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ScriptedSource {
    pub fn new() -> Self {
        Self::default()
    }

    /// Serve `model` under `name`.
    pub fn with(mut self, name: &str, model: Arc<dyn ChatModel>) -> Self {
        self.models.insert(name.to_owned(), model);
        self
    }

    /// Use `embedder` for memories.
    pub fn with_embedder(mut self, embedder: Arc<dyn EmbeddingModel>) -> Self {
        self.embedder = Some(embedder);
        self
    }
}

impl ModelSource for ScriptedSource {
    fn chat(&self, name: &str) -> Result<Arc<dyn ChatModel>, ModelError> {
        self.models
            .get(name)
            .cloned()
            .ok_or_else(|| ModelError::NotConfigured(format!("no test model named '{name}'")))
    }

    fn embedder(&self) -> Option<Arc<dyn EmbeddingModel>> {
        self.embedder.clone()
    }
}
