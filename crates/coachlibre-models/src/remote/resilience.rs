//! Retries with exponential backoff and jitter, `Retry-After`, and a circuit breaker.
//!
//! A call is retried only for transient errors (connection failures, timeouts, 5xx, 429).
//! Each provider has one [`CircuitBreaker`]: after `threshold` consecutive transient failures
//! it opens and refuses calls at once for `cooldown`, so a dead provider costs nothing and a
//! fallback takes over immediately; after the cooldown one call is let through to probe it.

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use coachlibre_core::model::ModelError;
use rand::Rng;

/// How often and how patiently to retry.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Delay before the first retry; doubles each time.
    pub base_delay: Duration,
    /// Longest computed delay.
    pub max_delay: Duration,
    /// A `Retry-After` longer than this is not waited for: the error is returned.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (0-based), given the error, or `None` to give up.
    /// Exponential with "full jitter" (uniform between half and all of the step), or exactly
    /// the server's `Retry-After` when it sent one.
    pub fn delay(&self, retry: u32, error: &ModelError) -> Option<Duration> {
        if retry + 1 >= self.max_attempts || !error.is_transient() {
            return None;
        }
        if let ModelError::CircuitOpen(_) = error {
            return None;
        }
        if let ModelError::RateLimited {
            retry_after: Some(after),
        } = error
        {
            return (*after <= self.max_retry_after).then_some(*after);
        }
        let step = self
            .base_delay
            .checked_mul(1u32.checked_shl(retry).unwrap_or(u32::MAX))
            .unwrap_or(self.max_delay)
            .min(self.max_delay);
        let jitter = rand::thread_rng().gen_range(0.5..=1.0);
        Some(step.mul_f64(jitter))
    }
}

#[derive(Debug, Default)]
struct BreakerState {
    consecutive_failures: u32,
    open_until: Option<Instant>,
}

/// A per-provider circuit breaker.
#[derive(Debug)]
pub struct CircuitBreaker {
    name: String,
    threshold: u32,
    cooldown: Duration,
    state: Mutex<BreakerState>,
}

impl CircuitBreaker {
    pub fn new(name: impl Into<String>, threshold: u32, cooldown: Duration) -> Self {
        Self {
            name: name.into(),
            threshold: threshold.max(1),
            cooldown,
            state: Mutex::new(BreakerState::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Refuse at once while open; after the cooldown, let one probe through.
    pub fn check(&self) -> Result<(), ModelError> {
        let mut s = self.state();
        match s.open_until {
            Some(until) if Instant::now() < until => {
                Err(ModelError::CircuitOpen(self.name.clone()))
            }
            Some(_) => {
                // Half-open: this call probes; a failure re-opens at once.
                s.open_until = None;
                s.consecutive_failures = self.threshold.saturating_sub(1);
                Ok(())
            }
            None => Ok(()),
        }
    }

    pub fn record_success(&self) {
        let mut s = self.state();
        s.consecutive_failures = 0;
        s.open_until = None;
    }

    pub fn record_failure(&self) {
        let mut s = self.state();
        s.consecutive_failures += 1;
        if s.consecutive_failures >= self.threshold {
            s.open_until = Some(Instant::now() + self.cooldown);
            tracing::warn!(provider = %self.name, cooldown_secs = self.cooldown.as_secs(), "circuit opened");
        }
    }

    /// Whether calls are currently refused.
    pub fn is_open(&self) -> bool {
        self.state().open_until.is_some_and(|u| Instant::now() < u)
    }
}

/// Run `call` under the breaker, retrying transient failures by `policy`.
pub async fn call_with_retries<T, F, Fut>(
    policy: &RetryPolicy,
    breaker: &CircuitBreaker,
    mut call: F,
) -> Result<T, ModelError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ModelError>>,
{
    let mut retry = 0;
    loop {
        breaker.check()?;
        let error = match call().await {
            Ok(v) => {
                breaker.record_success();
                return Ok(v);
            }
            Err(e) => e,
        };
        if error.is_transient() || matches!(error, ModelError::Malformed(_)) {
            breaker.record_failure();
        }
        match policy.delay(retry, &error) {
            Some(wait) => {
                tracing::debug!(%error, retry, wait_ms = wait.as_millis() as u64, "retrying model call");
                tokio::time::sleep(wait).await;
                retry += 1;
            }
            None => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_honours_retry_after() {
        let p = RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(500),
            max_retry_after: Duration::from_secs(10),
        };
        let down = ModelError::Unavailable("x".into());
        for (retry, step) in [(0, 100), (1, 200), (2, 400), (3, 500)] {
            if retry + 1 >= p.max_attempts {
                break;
            }
            let d = p.delay(retry, &down).unwrap();
            assert!(
                d >= Duration::from_millis(step / 2) && d <= Duration::from_millis(step),
                "{retry}: {d:?}"
            );
        }
        assert_eq!(p.delay(4, &down), None, "attempts exhausted");
        let limited = ModelError::RateLimited {
            retry_after: Some(Duration::from_secs(3)),
        };
        assert_eq!(p.delay(0, &limited), Some(Duration::from_secs(3)));
        let too_long = ModelError::RateLimited {
            retry_after: Some(Duration::from_secs(30)),
        };
        assert_eq!(p.delay(0, &too_long), None);
        assert_eq!(p.delay(0, &ModelError::Rejected("bad".into())), None);
    }

    #[test]
    fn breaker_opens_after_threshold_and_probes_after_cooldown() {
        let b = CircuitBreaker::new("p", 2, Duration::from_millis(0));
        b.record_failure();
        assert!(b.check().is_ok());
        b.record_failure();
        // Cooldown of zero: the next check is the half-open probe.
        assert!(b.check().is_ok());
        b.record_failure();
        let b = CircuitBreaker::new("p", 2, Duration::from_secs(3600));
        b.record_failure();
        b.record_failure();
        assert!(matches!(b.check(), Err(ModelError::CircuitOpen(_))));
        assert!(b.is_open());
        let b = CircuitBreaker::new("p", 2, Duration::from_secs(3600));
        b.record_failure();
        b.record_success();
        b.record_failure();
        assert!(b.check().is_ok(), "success resets the count");
    }
}
