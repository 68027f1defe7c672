//! Per-client response rate limiting: a token bucket per client address
//! (IPv4 /32, IPv6 /56, as one IPv6 customer usually holds a /56), bounded
//! by the number of clients tracked. Reads no clock: callers pass `now`.

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::Instant;

use ipnet::IpNet;
use lru::LruCache;

use crate::config::RateLimitConfig;

/// What to do with a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it.
    Allow,
    /// Over the limit: answer with TC set and no records, so a real client
    /// retries over TCP while a spoofed victim receives nothing big ("slip").
    Slip,
    /// Over the limit: send nothing.
    Drop,
}

struct Bucket {
    tokens: f64,
    last: Instant,
    limited: u64,
}

/// The limiter.
pub struct RateLimiter {
    config: RateLimitConfig,
    buckets: Option<Mutex<LruCache<IpAddr, Bucket>>>,
}

impl RateLimiter {
    /// A limiter for `config`; with zero responses per second it allows all.
    pub fn new(config: RateLimitConfig) -> Self {
        let buckets = (config.responses_per_second > 0).then(|| {
            Mutex::new(LruCache::new(
                NonZeroUsize::new(config.max_clients).expect("validated"),
            ))
        });
        Self { config, buckets }
    }

    /// Charges one response to `client` at `now`.
    pub fn check(&self, client: IpAddr, now: Instant) -> Verdict {
        let Some(buckets) = &self.buckets else {
            return Verdict::Allow;
        };
        if self.config.exempt.iter().any(|n| n.contains(&client)) {
            return Verdict::Allow;
        }
        let key = prefix(client);
        let rate = f64::from(self.config.responses_per_second);
        let burst = f64::from(self.config.burst);
        let mut buckets = buckets.lock().expect("rate limit lock");
        let bucket = buckets.get_or_insert_mut(key, || Bucket {
            tokens: burst,
            last: now,
            limited: 0,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Verdict::Allow;
        }
        bucket.limited += 1;
        // BIND's default slip of 2: every second limited response is a
        // truncated one.
        if bucket.limited % 2 == 0 {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }
}

fn prefix(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => IpNet::new(IpAddr::V6(v6), 56)
            .map(|n| n.network())
            .unwrap_or(ip),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limiter() -> RateLimiter {
        RateLimiter::new(RateLimitConfig {
            responses_per_second: 10,
            burst: 20,
            exempt: vec!["127.0.0.0/8".parse().unwrap()],
            max_clients: 4,
        })
    }

    #[test]
    fn burst_then_limited_then_refilled() {
        let rl = limiter();
        let t0 = Instant::now();
        let c: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..20 {
            assert_eq!(rl.check(c, t0), Verdict::Allow);
        }
        assert_ne!(rl.check(c, t0), Verdict::Allow);
        assert_ne!(rl.check(c, t0), Verdict::Allow);
        assert_eq!(rl.check(c, t0 + Duration::from_millis(200)), Verdict::Allow);
        // Another client is not affected; exempt clients never are.
        assert_eq!(rl.check("192.0.2.2".parse().unwrap(), t0), Verdict::Allow);
        for _ in 0..100 {
            assert_eq!(rl.check("127.0.0.9".parse().unwrap(), t0), Verdict::Allow);
        }
    }

    #[test]
    fn ipv6_clients_share_a_slash_56() {
        let rl = limiter();
        let t0 = Instant::now();
        for i in 0..20u16 {
            let ip: IpAddr = format!("2001:db8:0:{i:x}::1").parse().unwrap();
            assert_eq!(rl.check(ip, t0), Verdict::Allow);
        }
        assert_ne!(
            rl.check("2001:db8:0:ff::1".parse().unwrap(), t0),
            Verdict::Allow
        );
    }
}
