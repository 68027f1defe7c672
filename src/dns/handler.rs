//! The one request handler behind every DNS listener (UDP, TCP, DoT, DoH).
//!
//! It decides, in this order: rate limit (UDP only, where sources can be
//! spoofed), a name of the registry zone (answered from the verified chain
//! state), a name of a local zone (answered by the zone catalog), then
//! recursion, allowed only for the configured client networks, answered
//! from the cache or the upstreams, with serve-stale and prefetch.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{
    Edns, Header, HeaderCounts, LowerQuery, MessageType, Metadata, OpCode, ResponseCode,
};
use hickory_proto::rr::{LowerName, Record};
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{Catalog, MessageResponseBuilder};
use ipnet::IpNet;
use tokio::sync::Semaphore;

use crate::admin::metrics::{CacheOutcome, Metrics};
use crate::config::DnsConfig;
use crate::dns::cache::{Cache, CacheKey, CachedAnswer, Lookup};
use crate::dns::forward::Forwarder;
use crate::dns::rate_limit::{RateLimiter, Verdict};
use crate::dns::registry::{Answer, RegistryZone};

/// How long a client waits for a refresh before it gets the stale answer
/// (RFC 8767 section 5 suggests 1.8 seconds for the client response timer).
const STALE_CLIENT_TIMEOUT: Duration = Duration::from_millis(1800);

/// The handler; cheap to share, one per process.
pub struct DnsHandler {
    registry: Option<RegistryZone>,
    catalog: Catalog,
    zones: Vec<LowerName>,
    cache: Arc<Cache>,
    forwarder: Arc<Forwarder>,
    allow_recursion: Vec<IpNet>,
    rate_limit: RateLimiter,
    metrics: Arc<Metrics>,
    edns_payload: u16,
    stale_ttl: u32,
    /// Bounds the questions waiting on upstreams.
    upstream_slots: Arc<Semaphore>,
}

impl DnsHandler {
    /// A handler answering `registry`, then `zones`, and forwarding the
    /// rest to `forwarder`.
    pub fn new(
        config: &DnsConfig,
        registry: Option<RegistryZone>,
        catalog: Catalog,
        zones: Vec<LowerName>,
        forwarder: Forwarder,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            registry,
            catalog,
            zones,
            cache: Arc::new(Cache::new(config.cache.clone())),
            forwarder: Arc::new(forwarder),
            allow_recursion: config.allow_recursion.clone(),
            rate_limit: RateLimiter::new(config.rate_limit.clone()),
            metrics,
            edns_payload: config.edns_udp_payload_bytes,
            stale_ttl: config.cache.stale_answer_ttl.as_secs() as u32,
            upstream_slots: Arc::new(Semaphore::new(config.udp_max_inflight)),
        }
    }

    /// The largest UDP response this server sends.
    pub fn edns_payload(&self) -> u16 {
        self.edns_payload
    }

    fn in_local_zone(&self, name: &LowerName) -> bool {
        self.zones.iter().any(|z| z.zone_of(name))
    }

    fn recursion_allowed(&self, ip: IpAddr) -> bool {
        crate::config::allows(&self.allow_recursion, ip)
    }

    async fn forward<R: ResponseHandler>(
        &self,
        request: &Request,
        query: &LowerQuery,
        edns: Option<&Edns>,
        response_handle: R,
    ) -> ResponseInfo {
        let now = Instant::now();
        let key = CacheKey {
            name: query.name().clone(),
            rtype: query.query_type(),
            class: query.query_class(),
        };
        let stale = match self.cache.get(&key, now) {
            Lookup::Fresh {
                answer,
                ttl_secs,
                prefetch,
            } => {
                self.metrics.dns_cache(CacheOutcome::Hit);
                if prefetch {
                    self.metrics.dns_cache(CacheOutcome::Prefetch);
                    self.spawn_refresh(key, query);
                }
                return send_answer(request, edns, &answer, Some(ttl_secs), response_handle).await;
            }
            Lookup::Stale(answer) => Some(answer),
            Lookup::Miss => None,
        };
        self.metrics.dns_cache(CacheOutcome::Miss);
        let refresh = self.spawn_refresh(key, query);
        let fresh = match (&stale, refresh) {
            (_, None) => None,
            (Some(_), Some(task)) => tokio::time::timeout(STALE_CLIENT_TIMEOUT, task)
                .await
                .ok()
                .and_then(|r| r.ok().flatten()),
            (None, Some(task)) => task.await.ok().flatten(),
        };
        match (fresh, stale) {
            (Some(answer), _) => send_answer(request, edns, &answer, None, response_handle).await,
            (None, Some(answer)) => {
                self.metrics.dns_cache(CacheOutcome::Stale);
                send_answer(
                    request,
                    edns,
                    &answer,
                    Some(self.stale_ttl),
                    response_handle,
                )
                .await
            }
            (None, None) => {
                send_error(request, edns, ResponseCode::ServFail, response_handle).await
            }
        }
    }

    /// Asks upstream in a task of its own, so that the cache is filled even
    /// when the client has already been answered from a stale entry.
    /// `None` when every upstream slot is taken.
    fn spawn_refresh(
        &self,
        key: CacheKey,
        query: &LowerQuery,
    ) -> Option<tokio::task::JoinHandle<Option<Arc<CachedAnswer>>>> {
        let permit = self.upstream_slots.clone().try_acquire_owned().ok()?;
        let cache = self.cache.clone();
        let forwarder = self.forwarder.clone();
        let metrics = self.metrics.clone();
        let query = query.original().clone();
        Some(tokio::spawn(async move {
            let _permit = permit;
            match forwarder.resolve(query).await {
                Ok((answer, rtt)) => {
                    metrics.dns_upstream_latency.observe(rtt.as_secs_f64());
                    let now = Instant::now();
                    if cache.insert(key.clone(), &answer, now) {
                        metrics.dns_cache_entries.set(cache.len() as i64);
                    }
                    Some(Arc::new(CachedAnswer {
                        rcode: answer.rcode,
                        answers: answer.answers,
                        authorities: answer.authorities,
                    }))
                }
                Err(e) => {
                    metrics.dns_upstream_errors.inc();
                    tracing::debug!(error = %e, name = %key.name, "upstream failed");
                    cache.prefetch_failed(&key);
                    None
                }
            }
        }))
    }
}

#[async_trait::async_trait]
impl RequestHandler for DnsHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        let info = self.handle::<R, T>(request, response_handle).await;
        if let Ok(q) = request.request_info() {
            self.metrics
                .dns_query(q.query.query_type(), info.response_code);
        }
        info
    }
}

impl DnsHandler {
    async fn handle<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        // Never answer a response: that is how reflection loops start.
        if request.metadata.message_type != MessageType::Query {
            return dropped(request);
        }
        let response_edns = request.edns.as_ref().map(|req| {
            let mut edns = Edns::new();
            edns.set_max_payload(req.max_payload().clamp(512, self.edns_payload));
            edns
        });
        if request.protocol() == Protocol::Udp {
            match self.rate_limit.check(request.src().ip(), Instant::now()) {
                Verdict::Allow => {}
                Verdict::Drop => {
                    self.metrics.dns_rate_limited.inc();
                    return dropped(request);
                }
                Verdict::Slip => {
                    self.metrics.dns_rate_limited.inc();
                    let mut metadata = Metadata::response_from_request(&request.metadata);
                    metadata.truncation = true;
                    let builder = MessageResponseBuilder::new(&request.queries, None);
                    return send(builder.build_no_records(metadata), response_handle, request)
                        .await;
                }
            }
        }
        if request.metadata.op_code != OpCode::Query {
            return send_error(
                request,
                response_edns.as_ref(),
                ResponseCode::NotImp,
                response_handle,
            )
            .await;
        }
        if let Some(edns) = &request.edns
            && edns.version() > 0
        {
            // RFC 6891 section 6.1.3: we speak EDNS version 0 only.
            return send_error(
                request,
                response_edns.as_ref(),
                ResponseCode::BADVERS,
                response_handle,
            )
            .await;
        }
        let query = match request.request_info() {
            Ok(info) => info.query,
            Err(_) => {
                return send_error(
                    request,
                    response_edns.as_ref(),
                    ResponseCode::FormErr,
                    response_handle,
                )
                .await;
            }
        };
        if let Some(zone) = &self.registry
            && zone.contains(query.name())
        {
            let answer = zone.answer(query.name(), query.query_type());
            return send_registry(request, response_edns.as_ref(), &answer, response_handle).await;
        }
        if self.in_local_zone(query.name()) {
            return self
                .catalog
                .handle_request::<R, T>(request, response_handle)
                .await;
        }
        if !self.recursion_allowed(request.src().ip()) {
            return send_error(
                request,
                response_edns.as_ref(),
                ResponseCode::Refused,
                response_handle,
            )
            .await;
        }
        self.forward(request, query, response_edns.as_ref(), response_handle)
            .await
    }
}

async fn send_answer<R: ResponseHandler>(
    request: &Request,
    edns: Option<&Edns>,
    answer: &CachedAnswer,
    ttl_secs: Option<u32>,
    response_handle: R,
) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.recursion_available = true;
    metadata.response_code = answer.rcode;
    // `None`: straight from upstream, with the TTLs it gave.
    let (answers, authorities): (Vec<Record>, Vec<Record>) = match ttl_secs {
        Some(ttl) => answer.with_ttl(ttl),
        None => (answer.answers.clone(), answer.authorities.clone()),
    };
    let mut builder = MessageResponseBuilder::new(&request.queries, None);
    if let Some(edns) = edns {
        builder.edns(edns);
    }
    let response = builder.build(metadata, answers.iter(), authorities.iter(), [], []);
    send(response, response_handle, request).await
}

async fn send_registry<R: ResponseHandler>(
    request: &Request,
    edns: Option<&Edns>,
    answer: &Answer,
    response_handle: R,
) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.recursion_available = true;
    metadata.authoritative = answer.authoritative;
    metadata.response_code = answer.rcode;
    let mut builder = MessageResponseBuilder::new(&request.queries, None);
    if let Some(edns) = edns {
        builder.edns(edns);
    }
    let response = builder.build(
        metadata,
        answer.answers.iter(),
        answer.authorities.iter(),
        [],
        answer.additionals.iter(),
    );
    send(response, response_handle, request).await
}

async fn send_error<R: ResponseHandler>(
    request: &Request,
    edns: Option<&Edns>,
    rcode: ResponseCode,
    response_handle: R,
) -> ResponseInfo {
    let mut builder = MessageResponseBuilder::new(&request.queries, None);
    if let Some(edns) = edns {
        builder.edns(edns);
    }
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.recursion_available = true;
    send(
        builder.error_msg(&metadata, rcode),
        response_handle,
        request,
    )
    .await
}

async fn send<'a, R: ResponseHandler>(
    response: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    mut response_handle: R,
    request: &Request,
) -> ResponseInfo {
    match response_handle.send_response(response).await {
        Ok(info) => info,
        Err(e) => {
            tracing::debug!(error = %e, src = %request.src(), "failed to send response");
            servfail_info(request)
        }
    }
}

fn servfail_info(request: &Request) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = ResponseCode::ServFail;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

/// The info of a response that was never sent.
fn dropped(request: &Request) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = ResponseCode::Refused;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}
