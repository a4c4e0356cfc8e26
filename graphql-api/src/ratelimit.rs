//! In-memory token buckets, one per caller (API key, session or, for anonymous
//! requests, client IP). Memory stays bounded: idle buckets are pruned once
//! the table grows past a threshold.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Bucket size and refill rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Requests allowed in a burst.
    pub burst: u32,
    /// Tokens added per second.
    pub per_second: f64,
}

/// Who a bucket belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BucketKey {
    ApiKey(uuid::Uuid),
    Session(uuid::Uuid),
    Ip(String),
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Table size past which idle buckets are dropped.
const PRUNE_THRESHOLD: usize = 10_000;

#[derive(Debug)]
pub struct RateLimiter {
    authenticated: Rate,
    anonymous: Rate,
    buckets: Mutex<HashMap<BucketKey, Bucket>>,
}

impl RateLimiter {
    pub fn new(authenticated: Rate, anonymous: Rate) -> RateLimiter {
        RateLimiter { authenticated, anonymous, buckets: Mutex::new(HashMap::new()) }
    }

    /// Take one token. `Err(seconds)` says how long until one is available.
    pub fn check(&self, key: BucketKey) -> Result<(), u64> {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: BucketKey, now: Instant) -> Result<(), u64> {
        let rate = match key {
            BucketKey::Ip(_) => self.anonymous,
            _ => self.authenticated,
        };
        let mut buckets = self.buckets.lock().expect("rate limiter lock");
        if buckets.len() >= PRUNE_THRESHOLD {
            // A bucket idle long enough to have refilled is the same as no bucket.
            let full_after = Duration::from_secs_f64(rate.burst as f64 / rate.per_second.max(0.001));
            buckets.retain(|_, b| now.saturating_duration_since(b.last) < full_after);
        }
        let bucket = buckets.entry(key).or_insert(Bucket { tokens: rate.burst as f64, last: now });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate.per_second).min(rate.burst as f64);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / rate.per_second.max(0.001);
            Err(wait.ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_refills() {
        let rl = RateLimiter::new(Rate { burst: 3, per_second: 1.0 }, Rate { burst: 1, per_second: 0.5 });
        let t0 = Instant::now();
        let k = BucketKey::ApiKey(uuid::Uuid::nil());
        for _ in 0..3 {
            assert!(rl.check_at(k.clone(), t0).is_ok());
        }
        assert_eq!(rl.check_at(k.clone(), t0), Err(1));
        assert!(rl.check_at(k.clone(), t0 + Duration::from_millis(1100)).is_ok());
        // Buckets are separate per caller, and anonymous callers get the smaller rate.
        let ip = BucketKey::Ip("10.0.0.1".into());
        assert!(rl.check_at(ip.clone(), t0).is_ok());
        assert_eq!(rl.check_at(ip, t0), Err(2));
        assert!(rl.check_at(BucketKey::Ip("10.0.0.2".into()), t0).is_ok());
    }
}
