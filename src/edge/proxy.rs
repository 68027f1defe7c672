//! The HTTP proxy on pingora-proxy, with pingora-cache over this edge's
//! own storage (`cache.rs`): a forward proxy for absolute-URI requests
//! (`curl -x`), CONNECT tunnels, and a reverse proxy for configured sites.
//!
//! Only clients of `edge.proxy_allow` are served (loopback by default), so
//! the edge is never an open proxy; CONNECT opens tunnels only to
//! `edge.connect_ports` (443 by default), as Squid's SSL_ports do.
//!
//! Caching follows RFC 9111 as a shared cache: GET and HEAD responses are
//! stored when their freshness is explicit (s-maxage, max-age, Expires) or
//! heuristic (a tenth of the time since Last-Modified, at most a day, for
//! the status codes §4.2.2 allows), minus the age they arrived with;
//! `no-store`, `private` and requests with Authorization are not stored;
//! Vary selects among stored variants, `Vary: *` is never stored; 404 and
//! 410 without freshness are cached for `NEGATIVE_TTL`. pingora serves
//! hits with Age, answers conditional requests and ranges from the cache,
//! revalidates stale entries with If-None-Match / If-Modified-Since, waits
//! concurrent misses on one fill (its cache lock), and serves stale
//! entries within stale-while-revalidate and stale-if-error (RFC 5861).
//! A successful unsafe request (POST, PUT, DELETE, ...) invalidates its
//! URL, and the Location and Content-Location of the same host.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use http::Method;
use ipnet::IpNet;
use parking_lot::Mutex;
use pingora_cache::cache_control::{CacheControl, InterpretCacheControl};
use pingora_cache::key::{CacheHashKey, CacheKey};
use pingora_cache::lock::{CacheKeyLockImpl, CacheLock};
use pingora_cache::{CacheMeta, NoCacheReason, RespCacheable, VarianceBuilder};
use pingora_core::protocols::http::ServerSession;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorType, Result};
use pingora_http::authority::{RawTargetAuthority, raw_target_authority};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{ProxyHttp, Session};
use tokio::io::AsyncWriteExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::admin::Metrics;
use crate::config::ProxyConfig;
use crate::edge::audit::{Audit, Audits, Hashing, Verdict};
use crate::edge::cache::DiskCache;
use crate::net::{Holder, Overlay};
use crate::overlay::trust::Feedback;
use crate::registry::service::Registry;
use crate::registry::source::RegistrySource;

/// How long 404 and 410 responses without freshness of their own are
/// cached (negative caching: short, so a fixed page shows up soon).
pub const NEGATIVE_TTL: Duration = Duration::from_secs(10);

/// The longest heuristic freshness (RFC 9111 §4.2.2 suggests a tenth of
/// the time since Last-Modified; this caps it, as Squid and Varnish do).
pub const MAX_HEURISTIC: Duration = Duration::from_secs(24 * 3600);

/// How long a cache fill may hold other requests for its key waiting.
const FILL_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// Connecting to an origin or a CONNECT target.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// An origin that sends nothing for this long is given up on.
const ORIGIN_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Holders of a URL asked on a miss before the origin.
const MAX_PEER_TRIES: usize = 2;

/// The longest a miss waits for the overlay to name holders.
const HOLDERS_TIMEOUT: Duration = Duration::from_secs(2);

/// The overlay key of a URL (its cache key's URL): edges that cached it
/// announce themselves under it, as CoralCDN's index did.
pub fn url_key(url: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"gridedge url\0");
    h.update(url.as_bytes());
    h.finalize().into()
}

fn only_if_cached(req: &RequestHeader) -> bool {
    CacheControl::from_req_headers(req).is_some_and(|cc| cc.only_if_cached())
}

/// Status codes cacheable by heuristic freshness (RFC 9110 §15.1).
const HEURISTIC_STATUSES: [u16; 12] = [200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501];

/// The proxy application.
pub struct EdgeProxy {
    cache: &'static DiskCache,
    lock: &'static CacheKeyLockImpl,
    allow: Vec<IpNet>,
    connect_ports: Vec<u16>,
    sites: HashMap<String, String>,
    max_origin_fetches: usize,
    origins: Mutex<HashMap<String, Arc<Semaphore>>>,
    metrics: Arc<Metrics>,
    /// Content by name: registry names are served from this edge's
    /// gateway (`/ipfs/<cid>/...`).
    registry: Option<Arc<Registry>>,
    gateway: Option<SocketAddr>,
    /// The overlay, where misses look for edges that cached the URL.
    overlay: Option<Overlay>,
    /// Which of those edges this one takes copies from.
    audits: Arc<Audits>,
    /// The source address of asks to other edges: the address this
    /// edge's proxy is known by, so theirs recognise it as a member's.
    source: Option<IpAddr>,
}

/// What a request for content resolves to.
enum Content {
    /// Not a content request.
    No,
    /// Served from the gateway at this target.
    Yes(Target),
    /// A content request that cannot be served: status and why.
    Refused(u16, String),
}

impl EdgeProxy {
    /// The proxy of `config`, caching in `cache`.
    pub fn new(
        config: &ProxyConfig,
        cache: &'static DiskCache,
        metrics: Arc<Metrics>,
        registry: Option<Arc<Registry>>,
        gateway: Option<SocketAddr>,
        overlay: Option<Overlay>,
    ) -> EdgeProxy {
        let lock: Box<CacheKeyLockImpl> = CacheLock::new_boxed(FILL_LOCK_TIMEOUT);
        EdgeProxy {
            cache,
            lock: Box::leak(lock),
            allow: config.allow.clone(),
            connect_ports: config.connect_ports.clone(),
            sites: config.sites.iter().cloned().collect(),
            max_origin_fetches: config.max_origin_fetches,
            origins: Mutex::new(HashMap::new()),
            metrics,
            registry,
            gateway,
            overlay,
            audits: Arc::default(),
            source: Some(config.listen.ip()).filter(|ip| !ip.is_unspecified()),
        }
    }

    /// Reputation feedback on a holder asked for a miss.
    fn rate(&self, node: crate::overlay::NodeId, feedback: Feedback) {
        if let Some(overlay) = &self.overlay {
            overlay.record(node, feedback);
        }
    }

    /// The next edge to ask for a miss, from the holders the overlay
    /// names for the URL (looked up once per request) that this edge has
    /// vouched for, nearest first; none when the miss audits a holder.
    async fn next_holder(&self, session: &Session, ctx: &mut Ctx) -> Option<Holder> {
        let overlay = self.overlay.as_ref()?;
        let target = ctx.target.as_ref()?;
        let req = session.req_header();
        // Content names are the gateway's (which asks the overlay itself);
        // an edge asking this one must not start a chain of asks.
        if target.ipfs_prefix.is_some()
            || !matches!(req.method, Method::GET | Method::HEAD)
            || only_if_cached(req)
            || ctx.peer_tries >= MAX_PEER_TRIES
        {
            return None;
        }
        if ctx.holders.is_none() {
            let key = url_key(&target.url);
            let found = tokio::time::timeout(HOLDERS_TIMEOUT, overlay.holders(key, &[])).await;
            let mut holders = match found {
                Ok(Ok(holders)) => holders,
                _ => Vec::new(),
            };
            holders.retain(|h| proxy_addr(h).is_some() && h.node != overlay.node_id());
            let (holders, audit) =
                self.audits
                    .choose(holders, rand::random(), req.method == Method::GET);
            ctx.holders = Some(holders);
            ctx.audit = audit;
        }
        let holder = ctx.holders.as_ref()?.get(ctx.peer_tries)?.clone();
        ctx.peer_tries += 1;
        Some(holder)
    }

    /// Content by name: `host` under the registry zone serves its name's
    /// content CID, and a path `/ipfs/<cid>/...` serves that CID, both from
    /// this edge's gateway (whose answers are immutable, so cached long).
    /// `shown` is the authority as the client wrote it.
    fn content(&self, host: &str, path: &str, shown: &str) -> Content {
        let mut prefix = None;
        if let Some(registry) = &self.registry
            && let Ok((name, sub)) = registry.zone().split(&format!("{host}."))
        {
            let source = registry.read();
            let Some(state) = source.state().lookup(&name, source.height()) else {
                return Content::Refused(404, format!("{} is not registered", name.as_str()));
            };
            let Some(cid) = &state.content else {
                return Content::Refused(404, format!("{} has no content", name.as_str()));
            };
            if !sub.is_apex() {
                return Content::Refused(
                    404,
                    format!("{host} has no content (only {} does)", name.as_str()),
                );
            }
            prefix = Some(format!("/ipfs/{cid}"));
        } else if !path.starts_with("/ipfs/") {
            return Content::No;
        }
        let Some(gateway) = self.gateway else {
            return Content::Refused(503, "this edge's gateway is off (edge.http_listen)".into());
        };
        Content::Yes(Target {
            url: format!("http://{shown}{path}"),
            authority: shown.to_owned(),
            connect: gateway.to_string(),
            path_and_query: format!("{}{path}", prefix.as_deref().unwrap_or("")),
            ipfs_prefix: prefix,
        })
    }

    fn allowed(&self, ip: IpAddr) -> bool {
        crate::config::allows(&self.allow, ip)
    }

    /// A permit to fetch from `origin`; waits while `max_origin_fetches`
    /// requests to it are out.
    async fn origin_permit(&self, origin: &str) -> OwnedSemaphorePermit {
        let semaphore = {
            let mut origins = self.origins.lock();
            if origins.len() > 4096 {
                origins.retain(|_, s| Arc::strong_count(s) > 1);
            }
            origins
                .entry(origin.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(self.max_origin_fetches)))
                .clone()
        };
        semaphore
            .acquire_owned()
            .await
            .expect("origin semaphores are never closed")
    }

    /// Opens a CONNECT tunnel for the session, which it takes over.
    async fn tunnel(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        let target = String::from_utf8_lossy(session.req_header().raw_path()).into_owned();
        let Some(port) = target
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
        else {
            return respond(
                session,
                400,
                &format!("CONNECT needs host:port, not `{target}`"),
            )
            .await;
        };
        if !self.connect_ports.is_empty() && !self.connect_ports.contains(&port) {
            return respond(
                session,
                403,
                &format!("CONNECT to port {port} is not allowed here (edge.connect_ports)"),
            )
            .await;
        }
        if !matches!(*session.downstream_session, ServerSession::H1(_)) {
            return respond(session, 405, "CONNECT is served over HTTP/1.1 only").await;
        }
        let upstream =
            match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&target))
                .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    return respond(session, 502, &format!("cannot reach {target}: {e}")).await;
                }
                Err(_) => {
                    return respond(session, 504, &format!("{target} did not answer in time"))
                        .await;
                }
            };
        ctx.tunnel = true;
        self.metrics.proxy_request("connect");
        // Take the client's connection out of the session: pingora is left a
        // closed placeholder to finish.
        let (placeholder, _) = tokio::io::duplex(1);
        let taken = std::mem::replace(
            &mut *session.downstream_session,
            ServerSession::new_http1(Box::new(placeholder)),
        );
        let ServerSession::H1(h1) = taken else {
            unreachable!("checked above");
        };
        let mut client = h1.into_inner();
        tokio::spawn(async move {
            let mut upstream = upstream;
            // The stream is buffered: the 200 goes out on the flush.
            let answered = client
                .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                .await;
            if answered.is_ok() && client.flush().await.is_ok() {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            }
        });
        Ok(())
    }

    /// Registers this edge as a holder of `url` as it starts to fetch it,
    /// so other edges that miss meanwhile ask it and wait on its fill (an
    /// ask waits on the cache lock), as CoralCDN's edges did.
    fn announce(&self, url: &str) {
        if let Some(overlay) = &self.overlay {
            let overlay = overlay.clone();
            let key = url_key(url);
            tokio::spawn(async move {
                if let Err(e) = overlay.announce(key).await {
                    tracing::debug!(error = %e, "proxy: cannot announce a URL");
                }
            });
        }
    }

    /// Compares `audit`'s holder's copy of the request's URL with the
    /// origin's, `origin`, in the background, and settles what it finds.
    fn audit(
        &self,
        audit: Audit,
        origin: crate::edge::audit::Copy,
        session: &Session,
        target: &Target,
    ) {
        let Some(addr) = proxy_addr(&audit.holder) else {
            self.audits.settle(audit, Verdict::Inconclusive);
            return;
        };
        let (audits, overlay, metrics) = (
            self.audits.clone(),
            self.overlay.clone(),
            self.metrics.clone(),
        );
        let client = session.req_header().clone();
        let (url, authority) = (target.url.clone(), target.authority.clone());
        let (max, source) = (self.cache.limits().max_object_bytes, self.source);
        tokio::spawn(async move {
            let node = audit.holder.node;
            let asked = crate::edge::audit::fetch(addr, source, &url, &authority, &client, max);
            let verdict = match asked.await {
                Ok(held) => crate::edge::audit::judge(&origin, &held),
                Err(e) => {
                    tracing::info!(error = %e, "proxy: an audit could not reach the holder");
                    Verdict::Failed
                }
            };
            let feedback = match verdict {
                Verdict::Verified => Some(Feedback::Verified),
                Verdict::Lie => Some(Feedback::WrongHash),
                Verdict::Failed => Some(Feedback::Timeout),
                Verdict::Inconclusive => None,
            };
            if verdict == Verdict::Lie {
                tracing::warn!(holder = %node, url, "proxy: a holder's copy is not the origin's");
            }
            if let (Some(overlay), Some(feedback)) = (&overlay, feedback) {
                overlay.record(node, feedback);
            }
            metrics.proxy_audit(verdict.label());
            audits.settle(audit, verdict);
        });
    }

    /// Invalidates what is cached for `url` (a cache key's URL).
    fn invalidate(&self, url: &str) {
        if purge(self.cache, url) {
            tracing::debug!(url, "HTTP cache: invalidated");
        }
    }
}

/// The address of a holder's proxy.
fn proxy_addr(holder: &Holder) -> Option<SocketAddr> {
    crate::net::proxy_socket(holder.proxy.as_deref()?)
}

/// Drops what `cache` holds for `url` (`http://host[:port]/path?query`,
/// as the proxy keys it: host lower case, port 80 left out); whether it
/// held anything. The variants of a `Vary` response go with it: pingora
/// reaches them through the primary entry removed here.
pub fn purge(cache: &DiskCache, url: &str) -> bool {
    let url = match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let path = if path.is_empty() { "/" } else { path };
            match split_authority(authority, 80) {
                Some((host, 80)) => format!("{}://{host}{path}", scheme.to_ascii_lowercase()),
                Some((host, port)) => {
                    format!("{}://{host}:{port}{path}", scheme.to_ascii_lowercase())
                }
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    };
    cache.remove(&CacheKey::new(url, "").combined())
}

/// Drops what `cache` holds that was served from `cid`'s DAG (registry
/// names and `/ipfs/` paths: the gateway's `X-Ipfs-Path` names the root);
/// how many responses went.
pub fn purge_cid(cache: &DiskCache, cid: &crate::content::Cid) -> usize {
    let root = cid.to_v1();
    cache.remove_where(|meta| {
        meta.headers()
            .get("x-ipfs-path")
            .and_then(|v| v.to_str().ok())
            .and_then(|p| p.strip_prefix("/ipfs/"))
            .and_then(|p| p.split('/').next())
            .and_then(|c| c.parse::<crate::content::Cid>().ok())
            .is_some_and(|c| c.to_v1() == root)
    })
}

/// Where a request goes.
#[derive(Debug, Clone)]
struct Target {
    /// The authority as the client named it (the Host header sent on).
    authority: String,
    /// host:port to connect to.
    connect: String,
    /// Origin-form request target.
    path_and_query: String,
    /// The URL the cache knows it by.
    url: String,
    /// For a registry name, the `/ipfs/<cid>` put before the client's
    /// path, taken back out of redirects.
    ipfs_prefix: Option<String>,
}

/// Per-request state.
pub struct Ctx {
    target: Option<Target>,
    /// Edges the overlay named as holders of the URL.
    holders: Option<Vec<Holder>>,
    /// The edge asked now, if the request is with a peer.
    peer: Option<Holder>,
    peer_tries: usize,
    /// The peer answered that it does not have the URL.
    peer_miss: bool,
    /// A holder this miss audits, and the origin's response to compare
    /// its copy with.
    audit: Option<Audit>,
    hashing: Option<Hashing>,
    /// This edge announced itself as a holder of the URL.
    announced: bool,
    permit: Option<OwnedSemaphorePermit>,
    tunnel: bool,
    route: &'static str,
    started: Instant,
}

async fn respond(session: &mut Session, status: u16, message: &str) -> Result<()> {
    let body = Bytes::from(format!("{message}\n"));
    let mut header = ResponseHeader::build(status, Some(4))?;
    header.insert_header("Content-Type", "text/plain; charset=utf-8")?;
    header.insert_header("Content-Length", body.len().to_string())?;
    header.insert_header("Cache-Control", "no-store")?;
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session.write_response_body(Some(body), true).await
}

/// Splits an authority into host and port (default `default_port`),
/// lower-casing the host; IPv6 literals keep their brackets.
fn split_authority(authority: &str, default_port: u16) -> Option<(String, u16)> {
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        (format!("[{inside}]"), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), p.parse().ok()?),
            None => (authority.to_owned(), default_port),
        }
    };
    if host.is_empty() {
        return None;
    }
    Some((host.to_ascii_lowercase(), port))
}

fn is_safe(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// The freshness of a response the cache may store (RFC 9111 §4.2 for a
/// shared cache), or why it may not.
pub fn cacheable(req: &RequestHeader, resp: &ResponseHeader, now: SystemTime) -> RespCacheable {
    let cc = CacheControl::from_resp_headers(resp);
    let authorization = req.headers.contains_key(http::header::AUTHORIZATION);
    if authorization
        && !cc
            .as_ref()
            .is_some_and(|cc| cc.allow_caching_authorized_req())
    {
        return RespCacheable::Uncacheable(NoCacheReason::Custom("authorization"));
    }
    if cc.as_ref().is_some_and(|cc| cc.no_store() || cc.private()) {
        return RespCacheable::Uncacheable(NoCacheReason::OriginNotCache);
    }
    let vary_star = resp.headers.get_all(http::header::VARY).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|f| f.trim() == "*"))
    });
    if vary_star {
        return RespCacheable::Uncacheable(NoCacheReason::Custom("vary: *"));
    }
    let date = header_date(resp, "date");
    let status = resp.status.as_u16();
    let lifetime = cc
        .as_ref()
        .and_then(|cc| cc.fresh_duration())
        .or_else(|| {
            let mut expires = resp.headers.get_all("expires").iter();
            let first = expires.next()?;
            if expires.next().is_some() {
                return Some(Duration::ZERO);
            }
            // An invalid Expires means already expired (§5.3).
            let Some(at) = first
                .to_str()
                .ok()
                .and_then(|v| httpdate::parse_http_date(v).ok())
            else {
                return Some(Duration::ZERO);
            };
            Some(
                at.duration_since(date.unwrap_or(now))
                    .unwrap_or(Duration::ZERO),
            )
        })
        .or_else(|| {
            if !HEURISTIC_STATUSES.contains(&status) {
                return None;
            }
            let modified = header_date(resp, "last-modified")?;
            let since = date.unwrap_or(now).duration_since(modified).ok()?;
            Some((since / 10).min(MAX_HEURISTIC))
        })
        .or_else(|| matches!(status, 404 | 410).then_some(NEGATIVE_TTL));
    let Some(lifetime) = lifetime else {
        return RespCacheable::Uncacheable(NoCacheReason::OriginNotCache);
    };
    // The age it arrived with (§4.2.3): the larger of the origin's Age and
    // the apparent age from its Date.
    let age_value = resp
        .headers
        .get("age")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_secs);
    let apparent = date
        .and_then(|d| now.duration_since(d).ok())
        .unwrap_or(Duration::ZERO);
    let age = age_value.max(apparent);
    let created = now - age;
    let fresh_until = if lifetime > age {
        now + (lifetime - age)
    } else {
        // Stale already: stored, but revalidated before use.
        now - Duration::from_secs(1)
    };
    let revalidate = cc.as_ref().is_some_and(|cc| {
        cc.must_revalidate() || cc.proxy_revalidate() || cc.s_maxage().ok().flatten().is_some()
    });
    let (swr, sie) = match (&cc, revalidate) {
        (Some(cc), false) => (
            cc.stale_while_revalidate().ok().flatten().unwrap_or(0),
            cc.stale_if_error().ok().flatten().unwrap_or(0),
        ),
        _ => (0, 0),
    };
    let mut header = resp.clone();
    if let Some(cc) = &cc {
        cc.strip_private_headers(&mut header);
    }
    // Hop-by-hop and per-response headers are not stored.
    for name in ["connection", "keep-alive", "transfer-encoding", "age"] {
        header.remove_header(name);
    }
    RespCacheable::Cacheable(CacheMeta::new(fresh_until, created, swr, sie, header))
}

fn header_date(resp: &ResponseHeader, name: &str) -> Option<SystemTime> {
    let value = resp.headers.get(name)?.to_str().ok()?;
    httpdate::parse_http_date(value).ok()
}

#[async_trait]
impl ProxyHttp for EdgeProxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            target: None,
            holders: None,
            peer: None,
            peer_tries: 0,
            peer_miss: false,
            audit: None,
            hashing: None,
            announced: false,
            permit: None,
            tunnel: false,
            route: "none",
            started: Instant::now(),
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let client = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        // A background refresh (stale-while-revalidate) is pingora's own
        // subrequest, with no client of its own.
        let internal = session.subrequest_ctx.is_some();
        // Another edge of the overlay may read this cache (only-if-cached
        // GET and HEAD, which never fetch), wherever it is.
        let req = session.req_header();
        let member = matches!(req.method, Method::GET | Method::HEAD)
            && only_if_cached(req)
            && client
                .zip(self.overlay.as_ref())
                .is_some_and(|(ip, o)| o.is_member_proxy(ip));
        if !internal && !member && !client.is_some_and(|ip| self.allowed(ip)) {
            ctx.route = "refused";
            let who = client.map_or("this client".to_owned(), |ip| ip.to_string());
            respond(
                session,
                403,
                &format!("{who} may not use this proxy (edge.proxy_allow)"),
            )
            .await?;
            return Ok(true);
        }
        if session.req_header().method == Method::CONNECT {
            ctx.route = "connect";
            self.tunnel(session, ctx).await?;
            return Ok(true);
        }
        let req = session.req_header();
        let target = match raw_target_authority(req.raw_path()) {
            RawTargetAuthority::Absolute {
                scheme,
                authority,
                path_and_query,
            } => {
                if !scheme.eq_ignore_ascii_case(b"http") {
                    ctx.route = "bad";
                    respond(
                        session,
                        400,
                        "only http:// URLs are proxied in absolute form; https:// goes through CONNECT",
                    )
                    .await?;
                    return Ok(true);
                }
                let authority = String::from_utf8_lossy(authority).into_owned();
                let path = match String::from_utf8_lossy(path_and_query).into_owned() {
                    p if p.is_empty() => "/".to_owned(),
                    p => p,
                };
                let Some((host, port)) = split_authority(&authority, 80) else {
                    ctx.route = "bad";
                    respond(session, 400, &format!("`{authority}` is not a host[:port]")).await?;
                    return Ok(true);
                };
                let shown = if port == 80 {
                    host.clone()
                } else {
                    format!("{host}:{port}")
                };
                match self.content(&host, &path, &shown) {
                    Content::Yes(target) => {
                        ctx.route = "content";
                        target
                    }
                    Content::Refused(status, why) => {
                        ctx.route = "content";
                        respond(session, status, &why).await?;
                        return Ok(true);
                    }
                    Content::No => {
                        ctx.route = "forward";
                        Target {
                            url: format!("http://{shown}{path}"),
                            authority: shown,
                            connect: format!("{host}:{port}"),
                            path_and_query: path,
                            ipfs_prefix: None,
                        }
                    }
                }
            }
            RawTargetAuthority::None => {
                // HTTP/2 names the host in :authority, HTTP/1.1 in Host.
                let host = req
                    .headers
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .or_else(|| req.uri.authority().map(|a| a.as_str()))
                    .and_then(|h| split_authority(h, 80));
                let path = String::from_utf8_lossy(req.raw_path()).into_owned();
                let site = host
                    .as_ref()
                    .and_then(|(h, _)| self.sites.get(h).map(|o| (h.clone(), o.clone())));
                if site.is_none() {
                    let (name, shown) = match &host {
                        Some((h, 80)) => (h.clone(), h.clone()),
                        Some((h, p)) => (h.clone(), format!("{h}:{p}")),
                        None => (String::new(), "localhost".to_owned()),
                    };
                    match self.content(&name, &path, &shown) {
                        Content::Yes(target) => {
                            ctx.route = "content";
                            ctx.target = Some(target);
                            return Ok(false);
                        }
                        Content::Refused(status, why) => {
                            ctx.route = "content";
                            respond(session, status, &why).await?;
                            return Ok(true);
                        }
                        Content::No => {}
                    }
                }
                let Some((host, origin)) = site else {
                    ctx.route = "unknown_site";
                    let name = host.map_or("(no Host)".to_owned(), |(h, _)| h);
                    respond(
                        session,
                        404,
                        &format!(
                            "this edge fronts no site named {name} (edge.sites); to reach other \
                             sites, use it as an HTTP proxy"
                        ),
                    )
                    .await?;
                    return Ok(true);
                };
                ctx.route = "site";
                Target {
                    url: format!("http://{host}{path}"),
                    authority: host,
                    connect: origin,
                    path_and_query: path,
                    ipfs_prefix: None,
                }
            }
            RawTargetAuthority::AmbiguousAuthority => {
                ctx.route = "bad";
                respond(session, 400, "the request target's authority is ambiguous").await?;
                return Ok(true);
            }
        };
        ctx.target = Some(target);
        Ok(false)
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        let method = &session.req_header().method;
        let purge = method.as_str() == "PURGE";
        if ctx.target.is_some() && (matches!(*method, Method::GET | Method::HEAD) || purge) {
            session
                .cache
                .enable(self.cache, None, None, Some(self.lock), None);
            session
                .cache
                .set_max_file_size_bytes(self.cache.limits().max_object_bytes as usize);
        }
        Ok(())
    }

    fn should_serve_stale(
        &self,
        _session: &mut Session,
        _ctx: &mut Ctx,
        error: Option<&Error>,
    ) -> bool {
        // Within the windows the response granted (RFC 5861; pingora checks
        // them against the entry): while one request refreshes it in the
        // background, and when the origin fails.
        error.is_none_or(|e| e.esource() == &pingora_core::ErrorSource::Upstream)
    }

    fn cache_key_callback(&self, _session: &Session, ctx: &mut Ctx) -> Result<CacheKey> {
        let target = ctx.target.as_ref().ok_or_else(|| {
            Error::explain(ErrorType::InternalError, "no target for the cache key")
        })?;
        Ok(CacheKey::new(target.url.clone(), ""))
    }

    fn is_purge(&self, session: &Session, _ctx: &Ctx) -> bool {
        session.req_header().method.as_str() == "PURGE"
    }

    fn response_cache_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        _ctx: &mut Ctx,
    ) -> Result<RespCacheable> {
        Ok(cacheable(session.req_header(), resp, SystemTime::now()))
    }

    fn cache_vary_filter(
        &self,
        meta: &CacheMeta,
        _ctx: &mut Ctx,
        req: &RequestHeader,
    ) -> Option<pingora_cache::key::HashBinary> {
        let mut names: Vec<String> = meta
            .headers()
            .get_all(http::header::VARY)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .collect();
        if names.is_empty() {
            return None;
        }
        names.sort();
        names.dedup();
        let mut variance = VarianceBuilder::new();
        for name in &names {
            let values: Vec<&[u8]> = req
                .headers
                .get_all(name.as_str())
                .iter()
                .map(|v| v.as_bytes())
                .collect();
            variance.add_owned_value(name, values.join(&b","[..]));
        }
        variance.finalize()
    }

    async fn proxy_upstream_filter(&self, session: &mut Session, _ctx: &mut Ctx) -> Result<bool> {
        // An edge asking for what this one has cached: a miss is a 504
        // (RFC 9111 §5.2.1.7), never a fetch of its own.
        if only_if_cached(session.req_header()) {
            respond(session, 504, "not cached here (only-if-cached)").await?;
            return Ok(false);
        }
        Ok(true)
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let target = ctx
            .target
            .clone()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no target to proxy to"))?;
        if !ctx.announced
            && session.cache.enabled()
            && session.req_header().method == Method::GET
            && target.ipfs_prefix.is_none()
        {
            ctx.announced = true;
            self.announce(&target.url);
        }
        ctx.peer = self.next_holder(session, ctx).await;
        if let Some(addr) = ctx.peer.as_ref().and_then(proxy_addr) {
            self.metrics.proxy_peer_fetch();
            let mut peer = HttpPeer::new(addr, false, String::new());
            peer.options.connection_timeout = Some(CONNECT_TIMEOUT);
            peer.options.read_timeout = Some(ORIGIN_READ_TIMEOUT);
            if let Some(ip) = self.source.filter(|ip| ip.is_ipv4() == addr.is_ipv4()) {
                let mut bind = pingora_core::connectors::l4::BindTo::default();
                bind.addr = Some(SocketAddr::new(ip, 0));
                peer.options.bind_to = Some(bind);
            }
            return Ok(Box::new(peer));
        }
        let addr =
            match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::lookup_host(&target.connect))
                .await
            {
                Ok(Ok(mut addrs)) => addrs.next(),
                _ => None,
            };
        let Some(addr) = addr else {
            return Err(Error::explain(
                ErrorType::ConnectNoRoute,
                format!("cannot resolve {}", target.connect),
            ));
        };
        if ctx.permit.is_none() {
            ctx.permit = Some(self.origin_permit(&target.connect).await);
        }
        self.metrics.proxy_origin_fetch();
        let mut peer = HttpPeer::new(addr, false, String::new());
        peer.options.connection_timeout = Some(CONNECT_TIMEOUT);
        peer.options.read_timeout = Some(ORIGIN_READ_TIMEOUT);
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let Some(target) = &ctx.target else {
            return Ok(());
        };
        if ctx.peer.is_some() {
            // To another edge's proxy: the absolute URL, and only from its
            // cache.
            upstream.set_raw_path(target.url.as_bytes())?;
            upstream.insert_header(http::header::CACHE_CONTROL, "only-if-cached")?;
        } else {
            upstream.set_raw_path(target.path_and_query.as_bytes())?;
        }
        upstream.insert_header(http::header::HOST, target.authority.as_str())?;
        for name in ["proxy-connection", "proxy-authorization"] {
            upstream.remove_header(name);
        }
        let via = match upstream
            .headers
            .get(http::header::VIA)
            .and_then(|v| v.to_str().ok())
        {
            Some(v) => format!("{v}, 1.1 gridedge"),
            None => "1.1 gridedge".to_owned(),
        };
        upstream.insert_header(http::header::VIA, via)?;
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if ctx.peer.is_some() && resp.status.as_u16() == 504 {
            // The peer does not have it (any more): the next, or the origin.
            ctx.peer_miss = true;
            let mut e = Error::explain(
                ErrorType::HTTPStatus(504),
                "the holder named by the overlay has not cached it",
            );
            e.set_retry(true);
            return Err(e);
        }
        if ctx.audit.is_some() && ctx.peer.is_none() {
            ctx.hashing = Some(Hashing::new(resp.status.as_u16(), &resp.headers));
        }
        resp.remove_header("x-cache-status");
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        if let Some(hashing) = &mut ctx.hashing {
            hashing.update(body.as_deref().unwrap_or_default());
        }
        Ok(None)
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        let holder = ctx.peer.take();
        let with_peer = holder.is_some();
        if let Some(holder) = holder
            && !std::mem::take(&mut ctx.peer_miss)
        {
            // A broken transfer is rated (a 504 is not: the holder may
            // have evicted it honestly).
            tracing::info!(error = %e, "proxy: a holder failed; the next, or the origin");
            self.rate(holder.node, Feedback::Refused);
        }
        if with_peer {
            // A miss asked of a peer goes on to the next holder or the
            // origin (only GET and HEAD are ever asked of peers).
            e.set_retry(true);
        } else if !session.req_header().method.is_idempotent()
            || session.as_ref().retry_buffer_truncated()
        {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(holder) = ctx.peer.take() {
            tracing::info!(error = %e, "proxy: cannot reach a holder; the next, or the origin");
            self.rate(holder.node, Feedback::Timeout);
            e.set_retry(true);
        }
        e
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let method = session.req_header().method.clone();
        if !is_safe(&method)
            && resp.status.as_u16() < 400
            && let Some(target) = &ctx.target
        {
            // RFC 9111 §4.4: a successful unsafe request invalidates its
            // URL, and the Location and Content-Location on the same host.
            self.invalidate(&target.url);
            for name in ["location", "content-location"] {
                if let Some(v) = resp.headers.get(name).and_then(|v| v.to_str().ok()) {
                    let url = if v.starts_with('/') {
                        format!("http://{}{v}", target.authority)
                    } else {
                        v.to_owned()
                    };
                    if url.starts_with(&format!("http://{}/", target.authority)) {
                        self.invalidate(&url);
                    }
                }
            }
        }
        if let Some(prefix) = ctx.target.as_ref().and_then(|t| t.ipfs_prefix.as_deref())
            && let Some(location) = resp.headers.get("location").and_then(|v| v.to_str().ok())
            && let Some(rest) = location.strip_prefix(prefix)
        {
            let rest = if rest.is_empty() { "/" } else { rest }.to_owned();
            resp.insert_header("Location", rest)?;
        }
        let status = cache_status(session);
        resp.insert_header("X-Cache-Status", status)?;
        Ok(())
    }

    async fn logging(&self, session: &mut Session, error: Option<&Error>, ctx: &mut Ctx) {
        if ctx.tunnel {
            return;
        }
        let status = cache_status(session);
        self.metrics.proxy_request(ctx.route);
        if let Some(audit) = ctx.audit.take() {
            let origin = ctx.hashing.take().and_then(Hashing::finish);
            match (origin, &ctx.target) {
                (Some(origin), Some(target)) if error.is_none() => {
                    self.audit(audit, origin, session, target)
                }
                _ => self.audits.settle(audit, Verdict::Inconclusive),
            }
        }
        if ctx.target.is_some() {
            self.metrics.proxy_cache(status);
            self.metrics
                .proxy_bytes(status, session.body_bytes_sent() as u64);
            self.metrics.proxy_latency(status, ctx.started.elapsed());
        }
        if let Some(e) = error {
            tracing::info!(route = ctx.route, error = %e, "proxy: request failed");
        }
    }
}

/// How the cache took part, as nginx's `$upstream_cache_status` says it.
fn cache_status(session: &Session) -> &'static str {
    use pingora_cache::CachePhase;
    match session.cache.phase() {
        CachePhase::Hit => "HIT",
        CachePhase::Miss => "MISS",
        CachePhase::Stale => "STALE",
        CachePhase::StaleUpdating => "UPDATING",
        CachePhase::Expired => "EXPIRED",
        CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => "REVALIDATED",
        _ => "BYPASS",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(200, None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn get() -> RequestHeader {
        RequestHeader::build("GET", b"/", None).unwrap()
    }

    fn fresh_for(r: RespCacheable, now: SystemTime) -> Option<u64> {
        match r {
            RespCacheable::Cacheable(meta) => Some(
                meta.fresh_until()
                    .duration_since(now)
                    .map_or(0, |d| d.as_secs()),
            ),
            RespCacheable::Uncacheable(_) => None,
        }
    }

    #[test]
    fn freshness_follows_rfc_9111() {
        let now = SystemTime::now();
        let date = httpdate::fmt_http_date(now);
        // max-age less the age it arrived with.
        let r = resp(&[
            ("cache-control", "max-age=100"),
            ("age", "30"),
            ("date", &date),
        ]);
        assert_eq!(fresh_for(cacheable(&get(), &r, now), now), Some(70));
        // s-maxage wins for a shared cache.
        let r = resp(&[("cache-control", "max-age=100, s-maxage=10")]);
        assert_eq!(fresh_for(cacheable(&get(), &r, now), now), Some(10));
        // Expires relative to Date.
        let expires = httpdate::fmt_http_date(now + Duration::from_secs(50));
        let r = resp(&[("expires", &expires), ("date", &date)]);
        assert!(matches!(
            fresh_for(cacheable(&get(), &r, now), now),
            Some(49..=50)
        ));
        // An invalid Expires is already stale, but stored.
        let r = resp(&[("expires", "0")]);
        assert_eq!(fresh_for(cacheable(&get(), &r, now), now), Some(0));
        // Heuristic: a tenth of the time since Last-Modified.
        let modified = httpdate::fmt_http_date(now - Duration::from_secs(1000));
        let r = resp(&[("last-modified", &modified), ("date", &date)]);
        assert!(matches!(
            fresh_for(cacheable(&get(), &r, now), now),
            Some(99..=100)
        ));
        // No freshness at all: not stored.
        assert_eq!(fresh_for(cacheable(&get(), &resp(&[]), now), now), None);
        for cc in ["no-store", "private", "max-age=60, private"] {
            let r = resp(&[("cache-control", cc)]);
            assert_eq!(fresh_for(cacheable(&get(), &r, now), now), None, "{cc}");
        }
        let r = resp(&[("cache-control", "max-age=60"), ("vary", "accept, *")]);
        assert_eq!(fresh_for(cacheable(&get(), &r, now), now), None);
        // Authorization: only with public (or s-maxage, must-revalidate).
        let mut authed = get();
        authed.insert_header("authorization", "Basic eA==").unwrap();
        let r = resp(&[("cache-control", "max-age=60")]);
        assert_eq!(fresh_for(cacheable(&authed, &r, now), now), None);
        let r = resp(&[("cache-control", "public, max-age=60")]);
        assert_eq!(fresh_for(cacheable(&authed, &r, now), now), Some(60));
        // A 404 without freshness is cached briefly.
        let mut r = resp(&[]);
        r.set_status(404).unwrap();
        assert_eq!(
            fresh_for(cacheable(&get(), &r, now), now),
            Some(NEGATIVE_TTL.as_secs())
        );
    }

    #[test]
    fn authorities_split_with_default_ports() {
        assert_eq!(
            split_authority("Example.org", 80),
            Some(("example.org".into(), 80))
        );
        assert_eq!(split_authority("a:8080", 80), Some(("a".into(), 8080)));
        assert_eq!(split_authority("[::1]:81", 80), Some(("[::1]".into(), 81)));
        assert_eq!(split_authority("[::1]", 80), Some(("[::1]".into(), 80)));
        assert_eq!(split_authority("a:x", 80), None);
        assert_eq!(split_authority("", 80), None);
    }
}
