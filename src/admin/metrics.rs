//! The metrics every service of the edge reports, in one Prometheus
//! registry served as text on the admin listener's `/metrics`.

use std::borrow::Cow;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

type Labels2 = [(&'static str, Cow<'static, str>); 2];
type Labels1 = [(&'static str, &'static str); 1];

/// Where a DNS answer came from, for the cache counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    Miss,
    Stale,
    Prefetch,
}

/// The metrics of the edge.
pub struct Metrics {
    registry: Registry,
    dns_queries: Family<Labels2, Counter>,
    dns_cache: Family<Labels1, Counter>,
    /// Upstream queries that failed or timed out.
    pub dns_upstream_errors: Counter,
    /// Seconds an upstream took to answer.
    pub dns_upstream_latency: Histogram,
    /// Responses dropped or truncated by the rate limiter.
    pub dns_rate_limited: Counter,
    /// Entries in the answer cache.
    pub dns_cache_entries: Gauge,
    /// TCP connections open now.
    pub dns_tcp_connections: Gauge,
    registry_ops: Family<[(&'static str, &'static str); 2], Counter>,
    /// The registry chain's height.
    pub registry_height: Gauge,
    /// Blocks refused at a follower's intake (tampered, forked, bad seal).
    pub registry_blocks_refused: Counter,
    /// Follower pulls that failed to reach the sequencer.
    pub registry_follow_errors: Counter,
    edge_requests: Family<Labels2, Counter>,
    edge_bytes: Family<Labels1, Counter>,
    /// Gateway requests being served now.
    pub edge_inflight: Gauge,
    content_puts: Family<Labels1, Counter>,
    proxy_requests: Family<Labels1, Counter>,
    proxy_cache: Family<Labels1, Counter>,
    proxy_bytes: Family<Labels1, Counter>,
    proxy_latency: Family<Labels1, Histogram>,
    /// Requests the proxy sent to origins.
    pub proxy_origin_fetches: Counter,
    /// Misses the proxy asked another edge for.
    pub proxy_peer_fetches: Counter,
    proxy_audits: Family<Labels1, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("gridedge");
        let dns_queries = Family::<Labels2, Counter>::default();
        registry.register(
            "dns_queries",
            "DNS queries answered, by query type and response code",
            dns_queries.clone(),
        );
        let dns_cache = Family::<Labels1, Counter>::default();
        registry.register(
            "dns_cache",
            "Forwarded questions by cache outcome (hit, miss, stale, prefetch)",
            dns_cache.clone(),
        );
        let dns_upstream_errors = Counter::default();
        registry.register(
            "dns_upstream_errors",
            "Upstream questions that failed or timed out",
            dns_upstream_errors.clone(),
        );
        // 0.5 ms to about 4 s: loopback upstreams to slow DoH over the WAN.
        let dns_upstream_latency = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 14),
        );
        registry.register(
            "dns_upstream_latency_seconds",
            "Time an upstream took to answer",
            dns_upstream_latency.clone(),
        );
        let dns_rate_limited = Counter::default();
        registry.register(
            "dns_rate_limited",
            "Responses dropped or truncated by the per-client rate limit",
            dns_rate_limited.clone(),
        );
        let dns_cache_entries = Gauge::default();
        registry.register(
            "dns_cache_entries",
            "Answers in the cache, fresh or stale",
            dns_cache_entries.clone(),
        );
        let dns_tcp_connections = Gauge::default();
        registry.register(
            "dns_tcp_connections",
            "DNS TCP connections open",
            dns_tcp_connections.clone(),
        );
        let registry_ops = Family::default();
        registry.register(
            "registry_ops",
            "Registry operations submitted, by kind and result (accepted or the reject reason)",
            registry_ops.clone(),
        );
        let registry_height = Gauge::default();
        registry.register(
            "registry_height",
            "Height of the registry chain",
            registry_height.clone(),
        );
        let registry_blocks_refused = Counter::default();
        registry.register(
            "registry_blocks_refused",
            "Blocks a follower refused (tampered, forked, bad seal or state root)",
            registry_blocks_refused.clone(),
        );
        let registry_follow_errors = Counter::default();
        registry.register(
            "registry_follow_errors",
            "Follower pulls that could not reach or read the sequencer",
            registry_follow_errors.clone(),
        );
        let edge_requests = Family::<Labels2, Counter>::default();
        registry.register(
            "edge_requests",
            "Gateway requests answered, by route (raw, car, file, dir, redirect, other) and status code",
            edge_requests.clone(),
        );
        let edge_bytes = Family::<Labels1, Counter>::default();
        registry.register(
            "edge_sent_bytes",
            "Response body bytes the gateway sent, by route",
            edge_bytes.clone(),
        );
        let edge_inflight = Gauge::default();
        registry.register(
            "edge_inflight",
            "Gateway requests being served now",
            edge_inflight.clone(),
        );
        let content_puts = Family::<Labels1, Counter>::default();
        registry.register(
            "content_puts",
            "CARs posted to the admin API, by result (stored or the refusal reason)",
            content_puts.clone(),
        );
        let proxy_requests = Family::<Labels1, Counter>::default();
        registry.register(
            "proxy_requests",
            "Proxy requests, by route (forward, site, connect, refused, unknown_site, bad)",
            proxy_requests.clone(),
        );
        let proxy_cache = Family::<Labels1, Counter>::default();
        registry.register(
            "proxy_cache",
            "Proxied requests by how the cache served them (HIT, MISS, STALE, UPDATING, EXPIRED, REVALIDATED, BYPASS)",
            proxy_cache.clone(),
        );
        let proxy_bytes = Family::<Labels1, Counter>::default();
        registry.register(
            "proxy_sent_bytes",
            "Response body bytes the proxy sent, by cache result",
            proxy_bytes.clone(),
        );
        let proxy_latency = Family::<Labels1, Histogram>::new_with_constructor(|| {
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.0005, 2.0, 16,
            ))
        });
        registry.register(
            "proxy_latency_seconds",
            "Seconds from request to logged response, by cache result (the source: cache, revalidation or origin)",
            proxy_latency.clone(),
        );
        let proxy_origin_fetches = Counter::default();
        registry.register(
            "proxy_origin_fetches",
            "Requests the proxy sent to origins",
            proxy_origin_fetches.clone(),
        );
        let proxy_peer_fetches = Counter::default();
        registry.register(
            "proxy_peer_fetches",
            "Misses the proxy asked another edge for (a holder the overlay named)",
            proxy_peer_fetches.clone(),
        );
        let proxy_audits = Family::<Labels1, Counter>::default();
        registry.register(
            "proxy_audits",
            "Holders' copies of web objects checked against the origin's, by result (verified, lie, inconclusive, failed)",
            proxy_audits.clone(),
        );
        Self {
            registry,
            proxy_peer_fetches,
            proxy_audits,
            proxy_requests,
            proxy_cache,
            proxy_bytes,
            proxy_latency,
            proxy_origin_fetches,
            edge_requests,
            edge_bytes,
            edge_inflight,
            content_puts,
            registry_ops,
            registry_height,
            registry_blocks_refused,
            registry_follow_errors,
            dns_queries,
            dns_cache,
            dns_upstream_errors,
            dns_upstream_latency,
            dns_rate_limited,
            dns_cache_entries,
            dns_tcp_connections,
        }
    }

    /// Counts one answered query.
    pub fn dns_query(&self, qtype: RecordType, rcode: ResponseCode) {
        self.dns_queries
            .get_or_create(&[
                ("qtype", qtype_label(qtype)),
                ("rcode", Cow::Borrowed(rcode_label(rcode))),
            ])
            .inc();
    }

    /// Counts one cache outcome.
    pub fn dns_cache(&self, outcome: CacheOutcome) {
        let label = match outcome {
            CacheOutcome::Hit => "hit",
            CacheOutcome::Miss => "miss",
            CacheOutcome::Stale => "stale",
            CacheOutcome::Prefetch => "prefetch",
        };
        self.dns_cache.get_or_create(&[("result", label)]).inc();
    }

    /// Counts one gateway response on `route` with `status`.
    pub fn edge_request(&self, route: &'static str, status: u16) {
        self.edge_requests
            .get_or_create(&[
                ("route", Cow::Borrowed(route)),
                // Only the codes the gateway sends reach here, so the label
                // set stays small.
                ("status", Cow::Owned(status.to_string())),
            ])
            .inc();
    }

    /// Counts `bytes` of response body sent on `route`.
    pub fn edge_sent(&self, route: &'static str, bytes: u64) {
        self.edge_bytes
            .get_or_create(&[("route", route)])
            .inc_by(bytes);
    }

    /// Counts one proxy request on `route`.
    pub fn proxy_request(&self, route: &'static str) {
        self.proxy_requests.get_or_create(&[("route", route)]).inc();
    }

    /// Counts one proxied request by its cache `result`.
    pub fn proxy_cache(&self, result: &'static str) {
        self.proxy_cache.get_or_create(&[("result", result)]).inc();
    }

    /// Counts `bytes` sent for a request with cache `result`.
    pub fn proxy_bytes(&self, result: &'static str, bytes: u64) {
        self.proxy_bytes
            .get_or_create(&[("result", result)])
            .inc_by(bytes);
    }

    /// Records how long a request with cache `result` took.
    pub fn proxy_latency(&self, result: &'static str, took: std::time::Duration) {
        self.proxy_latency
            .get_or_create(&[("result", result)])
            .observe(took.as_secs_f64());
    }

    /// Counts one audit of a holder by its `result`.
    pub fn proxy_audit(&self, result: &'static str) {
        self.proxy_audits.get_or_create(&[("result", result)]).inc();
    }

    /// Counts one miss asked of another edge.
    pub fn proxy_peer_fetch(&self) {
        self.proxy_peer_fetches.inc();
    }

    /// Counts one request sent to an origin.
    pub fn proxy_origin_fetch(&self) {
        self.proxy_origin_fetches.inc();
    }

    /// Counts one `POST /content` with its result.
    pub fn content_put(&self, result: &'static str) {
        self.content_puts.get_or_create(&[("result", result)]).inc();
    }

    /// Counts a registry operation of `kind` with `result`.
    pub fn registry_op(&self, kind: &'static str, result: &'static str) {
        self.registry_ops
            .get_or_create(&[("kind", kind), ("result", result)])
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

fn qtype_label(t: RecordType) -> Cow<'static, str> {
    Cow::Borrowed(match t {
        RecordType::A => "A",
        RecordType::AAAA => "AAAA",
        RecordType::CNAME => "CNAME",
        RecordType::MX => "MX",
        RecordType::TXT => "TXT",
        RecordType::NS => "NS",
        RecordType::SOA => "SOA",
        RecordType::PTR => "PTR",
        RecordType::SRV => "SRV",
        RecordType::HTTPS => "HTTPS",
        RecordType::SVCB => "SVCB",
        RecordType::CAA => "CAA",
        RecordType::DS => "DS",
        RecordType::DNSKEY => "DNSKEY",
        RecordType::TLSA => "TLSA",
        RecordType::ANY => "ANY",
        // Unbounded label values would make the metric unbounded.
        _ => "other",
    })
}

fn rcode_label(r: ResponseCode) -> &'static str {
    match r {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        _ => "other",
    }
}
