//! In-process token-bucket rate limiting, keyed by client IP or by user.
//!
//! Each key has a bucket of `burst` tokens refilled at `rate` per second; a request takes one
//! token or is refused with the exact wait until the next token. Buckets live in shards so
//! that concurrent requests rarely contend on one lock, and idle buckets (full again) are
//! dropped when a shard grows, so memory stays bounded under address scans.
//!
//! Scope: one process. Several nodes behind a load balancer each enforce their own limits;
//! a shared limiter (Redis) belongs with the scale-out work.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SHARDS: usize = 16;
/// A shard larger than this is swept for idle buckets.
const SWEEP_ABOVE: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// A set of token buckets sharing one rate.
#[derive(Debug)]
pub struct RateLimiter<K> {
    rate: f64,
    burst: f64,
    hasher: RandomState,
    shards: Vec<Mutex<HashMap<K, Bucket>>>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// `rate` tokens per second, at most `burst` saved up.
    pub fn new(rate: f64, burst: u32) -> Self {
        Self {
            rate: rate.max(f64::MIN_POSITIVE),
            burst: f64::from(burst.max(1)),
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    /// Take a token for `key` at `now`; on refusal, how long until one is available.
    pub fn check_at(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let shard = &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS];
        let mut map = shard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() > SWEEP_ABOVE {
            let (rate, burst) = (self.rate, self.burst);
            map.retain(|_, b| b.tokens + now.duration_since(b.last).as_secs_f64() * rate < burst);
        }
        let b = map.entry(key.clone()).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.rate))
        }
    }

    /// Take a token now.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        self.check_at(key, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let rl = RateLimiter::new(2.0, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(rl.check_at(&"a", t0).is_ok());
        }
        let wait = rl.check_at(&"a", t0).unwrap_err();
        assert!(
            wait > Duration::from_millis(400) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        // Another key has its own bucket.
        assert!(rl.check_at(&"b", t0).is_ok());
        // Half a second later one token is back.
        assert!(rl.check_at(&"a", t0 + Duration::from_millis(500)).is_ok());
        assert!(rl.check_at(&"a", t0 + Duration::from_millis(500)).is_err());
    }

    #[test]
    fn idle_buckets_are_swept() {
        let rl = RateLimiter::new(1000.0, 1);
        let t0 = Instant::now();
        for i in 0..(SWEEP_ABOVE * SHARDS * 2) {
            let _ = rl.check_at(&i, t0);
        }
        let later = t0 + Duration::from_secs(1);
        let _ = rl.check_at(&usize::MAX, later);
        let total: usize = rl.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(total < SWEEP_ABOVE * SHARDS * 2, "{total}");
    }
}
