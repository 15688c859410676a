//! What every HTTP provider shares: the client, the retry policy and breaker, the mapping of
//! HTTP failures to [`ModelError`]s, prices, and the task that turns an SSE response into a
//! [`ChatStream`].

use std::sync::Arc;
use std::time::Duration;

use coachlibre_core::model::{ChatEvent, ChatStream, ModelError};
use serde_json::Value;

use super::ProviderConfig;
use super::resilience::{CircuitBreaker, RetryPolicy, call_with_retries};
use super::sse::{SseDecoder, SseEvent};

/// A provider endpoint: where, with which credentials, how resiliently.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub name: String,
    pub config: ProviderConfig,
    client: reqwest::Client,
    pub retry: RetryPolicy,
    pub breaker: Arc<CircuitBreaker>,
}

impl Endpoint {
    pub fn new(name: String, config: ProviderConfig) -> Result<Self, ModelError> {
        let timeout = Duration::from_secs(config.timeout_secs.max(1));
        let client = reqwest::Client::builder()
            .connect_timeout(timeout)
            .read_timeout(timeout)
            .build()
            .map_err(|e| ModelError::NotConfigured(format!("HTTP client: {e}")))?;
        let breaker = Arc::new(CircuitBreaker::new(
            name.clone(),
            config.breaker_threshold,
            Duration::from_secs(config.breaker_cooldown_secs),
        ));
        let retry = RetryPolicy {
            max_attempts: config.max_attempts.max(1),
            ..RetryPolicy::default()
        };
        Ok(Self {
            name,
            config,
            client,
            retry,
            breaker,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{}", self.config.base_url.trim_end_matches('/'), path)
    }

    /// One POST; a non-2xx answer becomes the matching error.
    pub async fn post_once(
        &self,
        path: &str,
        headers: &[(&str, String)],
        body: &Value,
    ) -> Result<reqwest::Response, ModelError> {
        let mut req = self.client.post(self.url(path)).json(body);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| ModelError::Unavailable(format!("{}: {e}", self.name)))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text: String = resp
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(500)
            .collect();
        Err(match status.as_u16() {
            429 => ModelError::RateLimited { retry_after },
            408 | 500..=599 => {
                ModelError::Unavailable(format!("{}: HTTP {status}: {text}", self.name))
            }
            _ => ModelError::Rejected(format!("{}: HTTP {status}: {text}", self.name)),
        })
    }

    /// POST with retries under the breaker.
    pub async fn post(
        &self,
        path: &str,
        headers: &[(&str, String)],
        body: &Value,
    ) -> Result<reqwest::Response, ModelError> {
        call_with_retries(&self.retry, &self.breaker, || {
            self.post_once(path, headers, body)
        })
        .await
    }

    /// The event that ends a streamed answer, with usage priced by this endpoint.
    pub fn done(
        &self,
        prompt: u32,
        completion: u32,
        estimated: bool,
        finish: coachlibre_core::model::FinishReason,
    ) -> ChatEvent {
        ChatEvent::Done {
            usage: coachlibre_core::model::Usage {
                prompt_tokens: prompt,
                completion_tokens: completion,
                cost_usd: self.cost(prompt, completion),
                estimated,
            },
            finish,
        }
    }

    /// Cost in dollars of a call, from the configured prices.
    pub fn cost(&self, prompt: u32, completion: u32) -> f64 {
        (f64::from(prompt) * self.config.prompt_price_per_mtok
            + f64::from(completion) * self.config.completion_price_per_mtok)
            / 1e6
    }
}

/// Turns a provider's stream of SSE events into chat events.
pub(crate) trait Assembler: Send + 'static {
    /// Read one event; returns the chat events it completes. `Ok(None)` ends the stream.
    fn feed(&mut self, event: &SseEvent) -> Result<Option<Vec<ChatEvent>>, ModelError>;
    /// The events that close the stream (tool calls, `Done`).
    fn finish(self: Box<Self>, endpoint: &Endpoint) -> Vec<ChatEvent>;
}

/// Read `resp` on a task, feeding `asm`, and hand the events over as a stream. The task
/// stops, dropping the connection (which cancels generation upstream), as soon as the
/// consumer drops the stream.
pub(crate) fn spawn_stream(
    endpoint: Endpoint,
    mut resp: reqwest::Response,
    asm: Box<dyn Assembler>,
) -> ChatStream {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<ChatEvent, ModelError>>(64);
    tokio::spawn(async move {
        let mut asm = asm;
        let mut decoder = SseDecoder::default();
        'read: loop {
            let chunk = match resp.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => {
                    endpoint.breaker.record_failure();
                    let msg = format!("{}: stream interrupted: {e}", endpoint.name);
                    let _ = tx.send(Err(ModelError::Unavailable(msg))).await;
                    return;
                }
            };
            for ev in decoder.push(&chunk) {
                match asm.feed(&ev) {
                    Ok(Some(events)) => {
                        for e in events {
                            if tx.send(Ok(e)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Ok(None) => break 'read,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
        }
        for ev in asm.finish(&endpoint) {
            if tx.send(Ok(ev)).await.is_err() {
                return;
            }
        }
    });
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

/// Parse streamed tool-call arguments. Unparseable arguments are passed on as text: the
/// runtime's schema validation turns them into an error the model can correct.
pub(crate) fn parse_arguments(raw: String) -> Value {
    if raw.trim().is_empty() {
        return Value::Object(serde_json::Map::new());
    }
    serde_json::from_str(&raw).unwrap_or(Value::String(raw))
}

/// The constructor and accessors every provider over an [`Endpoint`] shares.
macro_rules! endpoint_provider {
    ($ty:ident) => {
        impl $ty {
            /// A provider named `name` (for logs and usage records).
            pub fn new(
                name: impl Into<String>,
                config: $crate::remote::ProviderConfig,
            ) -> Result<Self, coachlibre_core::model::ModelError> {
                Ok(Self {
                    endpoint: $crate::remote::http::Endpoint::new(name.into(), config)?,
                })
            }

            /// Replace the retry policy (tests use short delays).
            pub fn with_retry(mut self, retry: $crate::remote::resilience::RetryPolicy) -> Self {
                self.endpoint.retry = retry;
                self
            }

            /// The provider's circuit breaker (to report its state).
            pub fn breaker(&self) -> &$crate::remote::resilience::CircuitBreaker {
                &self.endpoint.breaker
            }
        }
    };
}
pub(crate) use endpoint_provider;
