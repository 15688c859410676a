//! In-process token-bucket rate limiting, keyed by client IP or by user.
//!
//! Each key has a bucket of `burst` tokens refilled at `rate` per second; a request takes one
//! token or is refused with the exact wait until the next token. Buckets live in shards so
//! that concurrent requests rarely contend on one lock, and idle buckets (full again) are
//! dropped when a shard grows, so memory stays bounded under address scans. A shard is swept
//! only when it has doubled since its last sweep, so the cost of sweeping stays amortised
//! O(1) per request even when every bucket is busy.
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

#[derive(Debug)]
struct Shard<K> {
    buckets: HashMap<K, Bucket>,
    /// Sweep when the shard grows past this size.
    sweep_at: usize,
}

/// A set of token buckets sharing one rate.
#[derive(Debug)]
pub struct RateLimiter<K> {
    rate: f64,
    burst: f64,
    hasher: RandomState,
    shards: Vec<Mutex<Shard<K>>>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// `rate` tokens per second, at most `burst` saved up.
    pub fn new(rate: f64, burst: u32) -> Self {
        Self {
            rate: rate.max(f64::MIN_POSITIVE),
            burst: f64::from(burst.max(1)),
            hasher: RandomState::new(),
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        buckets: HashMap::new(),
                        sweep_at: SWEEP_ABOVE,
                    })
                })
                .collect(),
        }
    }

    /// Take a token for `key` at `now`; on refusal, how long until one is available.
    pub fn check_at(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let shard = &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS];
        let mut shard = shard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if shard.buckets.len() > shard.sweep_at {
            let (rate, burst) = (self.rate, self.burst);
            shard.buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rate < burst
            });
            shard.sweep_at = (shard.buckets.len() * 2).max(SWEEP_ABOVE);
        }
        let b = shard.buckets.entry(key.clone()).or_insert(Bucket {
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
    fn idle_buckets_are_swept_when_shards_grow() {
        let rl = RateLimiter::new(1000.0, 1);
        let n = SWEEP_ABOVE * SHARDS * 2;
        let t0 = Instant::now();
        // A scan of busy keys: nothing is idle, nothing can go.
        for i in 0..n {
            let _ = rl.check_at(&i, t0);
        }
        let total = |rl: &RateLimiter<usize>| -> usize {
            rl.shards
                .iter()
                .map(|s| s.lock().unwrap().buckets.len())
                .sum()
        };
        assert_eq!(total(&rl), n);
        // A second scan a second later: the first scan's buckets are full again, so idle,
        // and are dropped as the shards grow.
        let later = t0 + Duration::from_secs(1);
        for i in n..2 * n {
            let _ = rl.check_at(&i, later);
        }
        assert!(total(&rl) < n * 3 / 2, "{}", total(&rl));
    }
}
