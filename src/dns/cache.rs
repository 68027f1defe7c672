//! The answer cache of the forwarder: positive and negative answers
//! (RFC 2308), TTL clamps, serve-stale (RFC 8767) and prefetch hints, bounded
//! by entry count with least-recently-used eviction.
//!
//! The cache reads no clock: every call takes `now`. It is sharded so that
//! the UDP workers on different cores rarely wait on one lock.

use std::hash::BuildHasher;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{DNSClass, LowerName, RData, Record, RecordType};
use lru::LruCache;

use crate::config::CacheConfig;
use crate::dns::forward::UpstreamAnswer;

/// Shards of the cache; a power of two well above the core count.
const SHARDS: usize = 16;

/// What a cache entry is keyed by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub name: LowerName,
    pub rtype: RecordType,
    pub class: DNSClass,
}

/// A cached answer, shared by every client that reads it.
#[derive(Debug)]
pub struct CachedAnswer {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
}

impl CachedAnswer {
    /// The records with their TTL set to `ttl_secs`: what is left of the
    /// entry's TTL, or the stale TTL (RFC 8767 section 4).
    pub fn with_ttl(&self, ttl_secs: u32) -> (Vec<Record>, Vec<Record>) {
        let set = |records: &[Record]| {
            records
                .iter()
                .map(|r| {
                    let mut r = r.clone();
                    r.ttl = ttl_secs;
                    r
                })
                .collect()
        };
        (set(&self.answers), set(&self.authorities))
    }
}

/// The outcome of a cache lookup.
#[derive(Debug)]
pub enum Lookup {
    /// Fresh: serve it. `prefetch` asks the caller to refresh it in the
    /// background, since it is popular and about to expire.
    Fresh {
        answer: Arc<CachedAnswer>,
        ttl_secs: u32,
        prefetch: bool,
    },
    /// Expired, but within the stale window: serve it only if upstream fails.
    Stale(Arc<CachedAnswer>),
    /// Nothing usable.
    Miss,
}

struct Entry {
    answer: Arc<CachedAnswer>,
    stored: Instant,
    ttl: Duration,
    hits: u32,
    prefetching: bool,
}

/// The cache.
pub struct Cache {
    shards: Vec<Mutex<LruCache<CacheKey, Entry>>>,
    hasher: std::collections::hash_map::RandomState,
    config: CacheConfig,
}

impl Cache {
    /// An empty cache bounded by `config.max_entries`.
    pub fn new(config: CacheConfig) -> Self {
        let per_shard = config.max_entries.div_ceil(SHARDS).max(1);
        let cap = NonZeroUsize::new(per_shard).expect("at least one entry");
        Self {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(LruCache::new(cap)))
                .collect(),
            hasher: Default::default(),
            config,
        }
    }

    fn shard(&self, key: &CacheKey) -> &Mutex<LruCache<CacheKey, Entry>> {
        &self.shards[self.hasher.hash_one(key) as usize % SHARDS]
    }

    /// Looks `key` up at `now`.
    pub fn get(&self, key: &CacheKey, now: Instant) -> Lookup {
        let mut shard = self.shard(key).lock().expect("cache lock");
        let Some(entry) = shard.get_mut(key) else {
            return Lookup::Miss;
        };
        let age = now.saturating_duration_since(entry.stored);
        if age < entry.ttl {
            entry.hits = entry.hits.saturating_add(1);
            let left = entry.ttl - age;
            // Unbound's rule: refresh in the last tenth of the TTL.
            let prefetch = self.config.prefetch
                && !entry.prefetching
                && entry.hits >= self.config.prefetch_min_hits
                && left * 10 <= entry.ttl;
            if prefetch {
                entry.prefetching = true;
            }
            return Lookup::Fresh {
                answer: entry.answer.clone(),
                ttl_secs: left.as_secs().max(1) as u32,
                prefetch,
            };
        }
        if age < entry.ttl + self.config.stale_window {
            return Lookup::Stale(entry.answer.clone());
        }
        shard.pop(key);
        Lookup::Miss
    }

    /// Stores an upstream answer; returns false when it is not cacheable
    /// (SERVFAIL and the like, or a negative answer without an SOA).
    pub fn insert(&self, key: CacheKey, answer: &UpstreamAnswer, now: Instant) -> bool {
        let Some(ttl) = self.ttl_of(answer) else {
            return false;
        };
        let entry = Entry {
            answer: Arc::new(CachedAnswer {
                rcode: answer.rcode,
                answers: answer.answers.clone(),
                authorities: answer.authorities.clone(),
            }),
            stored: now,
            ttl,
            hits: 0,
            prefetching: false,
        };
        self.shard(&key).lock().expect("cache lock").put(key, entry);
        true
    }

    /// Lets a failed prefetch be tried again by a later hit.
    pub fn prefetch_failed(&self, key: &CacheKey) {
        if let Some(e) = self.shard(key).lock().expect("cache lock").peek_mut(key) {
            e.prefetching = false;
        }
    }

    /// The number of entries, fresh or stale.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().expect("cache lock").len())
            .sum()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn ttl_of(&self, answer: &UpstreamAnswer) -> Option<Duration> {
        match answer.rcode {
            ResponseCode::NoError if !answer.answers.is_empty() => {
                let min = answer.answers.iter().map(|r| r.ttl).min()?;
                let ttl = Duration::from_secs(min.into());
                Some(ttl.clamp(self.config.min_ttl, self.config.max_ttl))
            }
            // RFC 2308 section 5: the negative TTL is the minimum of the SOA
            // record's TTL and its MINIMUM field.
            ResponseCode::NoError | ResponseCode::NXDomain => {
                let soa_ttl = answer.authorities.iter().find_map(|r| match &r.data {
                    RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
                    _ => None,
                })?;
                let ttl = Duration::from_secs(soa_ttl.into());
                Some(ttl.min(self.config.negative_max_ttl))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::Name;
    use hickory_proto::rr::rdata::{A, SOA};

    fn config() -> CacheConfig {
        CacheConfig {
            max_entries: 32,
            min_ttl: Duration::from_secs(5),
            max_ttl: Duration::from_secs(100),
            negative_max_ttl: Duration::from_secs(50),
            stale_window: Duration::from_secs(30),
            stale_answer_ttl: Duration::from_secs(30),
            prefetch: true,
            prefetch_min_hits: 2,
        }
    }

    fn key(n: &str) -> CacheKey {
        CacheKey {
            name: LowerName::from(Name::from_ascii(n).unwrap()),
            rtype: RecordType::A,
            class: DNSClass::IN,
        }
    }

    fn positive(ttl: u32) -> UpstreamAnswer {
        let name = Name::from_ascii("a.test.").unwrap();
        UpstreamAnswer {
            rcode: ResponseCode::NoError,
            answers: vec![Record::from_rdata(name, ttl, RData::A(A::new(1, 2, 3, 4)))],
            authorities: vec![],
        }
    }

    fn negative(soa_ttl: u32, minimum: u32) -> UpstreamAnswer {
        let zone = Name::from_ascii("test.").unwrap();
        let soa = SOA::new(zone.clone(), zone.clone(), 1, 60, 60, 60, minimum);
        UpstreamAnswer {
            rcode: ResponseCode::NXDomain,
            answers: vec![],
            authorities: vec![Record::from_rdata(zone, soa_ttl, RData::SOA(soa))],
        }
    }

    #[test]
    fn fresh_then_stale_then_gone() {
        let cache = Cache::new(config());
        let t0 = Instant::now();
        assert!(cache.insert(key("a.test."), &positive(10), t0));
        match cache.get(&key("a.test."), t0 + Duration::from_secs(4)) {
            Lookup::Fresh { ttl_secs, .. } => assert_eq!(ttl_secs, 6),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            cache.get(&key("a.test."), t0 + Duration::from_secs(20)),
            Lookup::Stale(_)
        ));
        assert!(matches!(
            cache.get(&key("a.test."), t0 + Duration::from_secs(41)),
            Lookup::Miss
        ));
    }

    #[test]
    fn ttl_clamps() {
        let cache = Cache::new(config());
        let t0 = Instant::now();
        cache.insert(key("low.test."), &positive(1), t0);
        cache.insert(key("high.test."), &positive(10_000), t0);
        let ttl = |k| match cache.get(&key(k), t0) {
            Lookup::Fresh { ttl_secs, .. } => ttl_secs,
            other => panic!("{other:?}"),
        };
        assert_eq!(ttl("low.test."), 5);
        assert_eq!(ttl("high.test."), 100);
    }

    #[test]
    fn negative_ttl_is_soa_min_and_clamped() {
        let cache = Cache::new(config());
        let t0 = Instant::now();
        cache.insert(key("n1.test."), &negative(20, 7), t0);
        cache.insert(key("n2.test."), &negative(3_000, 3_000), t0);
        let ttl = |k| match cache.get(&key(k), t0) {
            Lookup::Fresh {
                ttl_secs, answer, ..
            } => {
                assert_eq!(answer.rcode, ResponseCode::NXDomain);
                ttl_secs
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(ttl("n1.test."), 7);
        assert_eq!(ttl("n2.test."), 50);
        let mut no_soa = negative(1, 1);
        no_soa.authorities.clear();
        assert!(!cache.insert(key("n3.test."), &no_soa, t0));
        let mut servfail = positive(10);
        servfail.rcode = ResponseCode::ServFail;
        assert!(!cache.insert(key("n4.test."), &servfail, t0));
    }

    #[test]
    fn prefetch_once_near_expiry_when_popular() {
        let cache = Cache::new(config());
        let t0 = Instant::now();
        cache.insert(key("p.test."), &positive(100), t0);
        let late = t0 + Duration::from_secs(95);
        let prefetch = |now| match cache.get(&key("p.test."), now) {
            Lookup::Fresh { prefetch, .. } => prefetch,
            other => panic!("{other:?}"),
        };
        assert!(!prefetch(t0), "early, and only one hit");
        assert!(prefetch(late), "second hit in the last tenth");
        assert!(!prefetch(late), "already prefetching");
        cache.prefetch_failed(&key("p.test."));
        assert!(prefetch(late));
    }

    #[test]
    fn bounded() {
        let cache = Cache::new(config());
        let t0 = Instant::now();
        for i in 0..1_000 {
            cache.insert(key(&format!("n{i}.test.")), &positive(60), t0);
        }
        assert!(cache.len() <= 32 + SHARDS, "{}", cache.len());
    }

    #[test]
    fn records_carry_the_remaining_ttl() {
        let cache = Cache::new(config());
        let t0 = Instant::now();
        cache.insert(key("a.test."), &positive(60), t0);
        let Lookup::Fresh {
            answer, ttl_secs, ..
        } = cache.get(&key("a.test."), t0 + Duration::from_secs(15))
        else {
            panic!()
        };
        let (answers, _) = answer.with_ttl(ttl_secs);
        assert_eq!(answers[0].ttl, 45);
    }
}
