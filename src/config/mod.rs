//! The configuration: `RawConfig` mirrors the TOML file, `Config` is what the
//! code uses, with ranges checked, paths resolved and durations typed.
//!
//! The defaults are compiled in (`RawConfig::default()`), so `gridedge run`
//! works with no file at all; `config/gridedge.toml` documents every key and
//! a test checks that it parses to exactly these defaults.

mod raw;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

pub use raw::RawConfig;
use raw::{LogFormat, RawCache, RawContent, RawDns, RawForward, RawRateLimit, RawRegistry};

/// Why a config was rejected; every variant names the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The TOML did not parse or a key is unknown or mistyped.
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A value parsed but is out of range or inconsistent.
    #[error("invalid value for `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
}

/// Whether `ip` is in one of `nets` (an access list such as
/// `dns.allow_recursion` or `edge.proxy_allow`); an IPv4-mapped IPv6
/// address counts as its IPv4 address.
pub fn allows(nets: &[IpNet], ip: std::net::IpAddr) -> bool {
    let ip = canonical(ip);
    nets.iter().any(|n| n.contains(&ip))
}

/// `ip`, with an IPv4-mapped IPv6 address as its IPv4 address.
pub fn canonical(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
        v4 => v4,
    }
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

/// The validated configuration of one edge.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where the node keeps its identity key, certificates and stores.
    pub data_dir: PathBuf,
    pub log: LogConfig,
    pub dns: DnsConfig,
    pub admin: AdminConfig,
    /// The name registry; `None` when turned off.
    pub registry: Option<RegistryConfig>,
    pub content: ContentConfig,
    pub edge: EdgeConfig,
    /// The overlay; `None` when `overlay.listen` is empty.
    pub overlay: Option<crate::net::NetConfig>,
}

/// Logging.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// JSON lines instead of human-readable lines.
    pub json: bool,
    /// A tracing `EnvFilter` directive such as `info` or `gridedge=debug`.
    pub level: String,
}

/// The DNS service.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsConfig {
    pub listen_udp: Vec<SocketAddr>,
    pub listen_tcp: Vec<SocketAddr>,
    pub listen_tls: Vec<SocketAddr>,
    pub listen_https: Vec<SocketAddr>,
    /// PEM certificate chain and key for DoT and DoH.
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub zones_dir: PathBuf,
    pub allow_recursion: Vec<IpNet>,
    pub edns_udp_payload_bytes: u16,
    pub tcp_max_connections: usize,
    pub tcp_idle_timeout: Duration,
    pub udp_max_inflight: usize,
    pub forward: ForwardConfig,
    pub cache: CacheConfig,
    pub rate_limit: RateLimitConfig,
}

/// Where names outside the local zones go.
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardConfig {
    pub upstreams: Vec<Upstream>,
    pub timeout: Duration,
    pub attempts: usize,
    /// Extra PEM trust roots for DoT/DoH upstreams (besides the web PKI).
    pub upstream_ca: Option<PathBuf>,
}

/// One upstream resolver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub protocol: UpstreamProtocol,
    pub addr: SocketAddr,
    /// TLS server name for DoT and DoH.
    pub tls_name: Option<String>,
    /// HTTP path for DoH.
    pub path: Option<String>,
}

/// The transport to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// UDP, retried over TCP when the answer is truncated.
    Udp,
    Tcp,
    Tls,
    Https,
}

/// The answer cache.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    pub max_entries: usize,
    pub min_ttl: Duration,
    pub max_ttl: Duration,
    pub negative_max_ttl: Duration,
    /// How long after expiry an answer may still be served when upstreams
    /// fail (RFC 8767); zero turns serve-stale off.
    pub stale_window: Duration,
    pub stale_answer_ttl: Duration,
    pub prefetch: bool,
    pub prefetch_min_hits: u32,
}

/// Per-client response rate limiting.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitConfig {
    /// Zero turns rate limiting off.
    pub responses_per_second: u32,
    pub burst: u32,
    pub exempt: Vec<IpNet>,
    pub max_clients: usize,
}

/// The admin HTTP listener.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    pub listen: Option<SocketAddr>,
}

/// The name registry: which chain, and whether this edge seals or follows.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryConfig {
    /// The DNS suffix the registry answers for, e.g. `grid.`.
    pub zone: crate::registry::model::Zone,
    /// The genesis file; `None` is the devnet genesis compiled in (from
    /// `zones/genesis.toml`).
    pub genesis: Option<PathBuf>,
    /// Where the block log lives: DATA_DIR/registry.
    pub dir: PathBuf,
    pub role: RegistryRole,
    /// TTL of the zone's SOA, and so of negative answers.
    pub soa_ttl_secs: u32,
}

/// Whether this edge seals the devnet's blocks or pulls them.
#[derive(Debug, Clone, PartialEq)]
pub enum RegistryRole {
    /// Seal blocks with the key in this file, or with the well-known devnet
    /// sequencer key (dev key 0) when `None`.
    Sequencer { key_file: Option<PathBuf> },
    /// Pull blocks from this sequencer's admin API.
    Follower {
        /// `http://HOST:PORT` of the admin listener.
        url: String,
        interval: Duration,
    },
}

/// The content block store (`crate::content::BlockStore`).
#[derive(Debug, Clone, PartialEq)]
pub struct ContentConfig {
    /// Where blocks live: DATA_DIR/content unless set.
    pub store_dir: PathBuf,
    /// The store's bound: past it, the least recently used unpinned blocks
    /// are evicted.
    pub max_bytes: u64,
    /// The largest CAR the admin API takes in one `POST /content`.
    pub max_put_bytes: u64,
}

/// What the HTTP edge tells the world about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeConfig {
    /// Addresses where clients reach this edge's HTTP side; DNS answers a
    /// registry name that has content but no address with these.
    pub public_addresses: Vec<std::net::IpAddr>,
    /// The HTTP gateway's listener (`/ipfs/<cid>`); `None` turns it off.
    pub http_listen: Option<SocketAddr>,
    /// Worker threads of the gateway's own runtime.
    pub threads: usize,
    /// Requests served at once; more are answered 503 at once.
    pub max_concurrent_requests: usize,
    /// The longest a client may leave a connection silent (request headers,
    /// keep-alive) or stall a response it is reading.
    pub idle_timeout: Duration,
    /// The longest a fetch from another edge may wait for the next bytes.
    pub fetch_timeout: Duration,
    /// The HTTP proxy (forward, reverse, CONNECT, with the cache); `None`
    /// turns it off.
    pub proxy: Option<ProxyConfig>,
}

/// The HTTP proxy and its cache.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    /// Where it listens.
    pub listen: SocketAddr,
    /// Where the HTTPS front for registry names and sites listens (on
    /// when the local CA exists); `None` turns it off.
    pub https_listen: Option<SocketAddr>,
    /// Clients that may use it; others get 403.
    pub allow: Vec<IpNet>,
    /// Ports CONNECT may open tunnels to; empty allows any.
    pub connect_ports: Vec<u16>,
    /// Sites fronted as a reverse proxy: host (lower case, no port) to
    /// origin `host:port`.
    pub sites: Vec<(String, String)>,
    /// Where cached responses live.
    pub cache_dir: PathBuf,
    /// Bounds of the cache.
    pub cache: crate::edge::cache::Limits,
    /// Requests to one origin at once; more wait.
    pub max_origin_fetches: usize,
}

impl Default for Config {
    fn default() -> Self {
        RawConfig::default()
            .validate(Path::new("."))
            .expect("the compiled-in defaults are valid")
    }
}

impl Config {
    /// Reads and validates a config file; relative paths in it are resolved
    /// against the current directory, as the command line's are.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        RawConfig::load(path)?.validate(Path::new("."))
    }

    /// Parses and validates TOML text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        RawConfig::parse(text, path)?.validate(Path::new("."))
    }
}

impl RawConfig {
    /// Reads a config file without validating it, so that command-line
    /// overrides can be applied first.
    pub fn load(path: &Path) -> Result<RawConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses TOML text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<RawConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().replace('\n', " "),
        })
    }
}

impl RawConfig {
    /// Checks ranges, resolves paths against `base` and types durations.
    pub fn validate(self, base: &Path) -> Result<Config, ConfigError> {
        let data_dir = base.join(&self.data_dir);
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        let log = LogConfig {
            json: matches!(self.log.format, LogFormat::Json),
            level: self.log.level,
        };
        if tracing_subscriber::EnvFilter::try_new(&log.level).is_err() {
            return Err(invalid(
                "log.level",
                format!("`{}` is not a filter", log.level),
            ));
        }
        let dns = validate_dns(self.dns, base, &data_dir)?;
        let registry = validate_registry(self.registry, base, &data_dir)?;
        let content = validate_content(self.content, base, &data_dir)?;
        Ok(Config {
            log,
            dns,
            admin: AdminConfig {
                listen: self.admin.listen,
            },
            registry,
            content,
            overlay: validate_overlay(
                self.overlay,
                self.edge.http_listen.trim(),
                self.edge.proxy_listen.trim(),
            )?,
            edge: validate_edge(self.edge, base, &data_dir)?,
            data_dir,
        })
    }
}

fn validate_overlay(
    raw: raw::RawOverlay,
    http_listen: &str,
    proxy_listen: &str,
) -> Result<Option<crate::net::NetConfig>, ConfigError> {
    use libp2p::Multiaddr;
    let addrs = |key: &'static str, list: &[String]| -> Result<Vec<Multiaddr>, ConfigError> {
        list.iter()
            .map(|a| {
                a.parse::<Multiaddr>().map_err(|e| {
                    invalid(
                        key,
                        format!("`{a}` is not a multiaddr like /ip4/127.0.0.1/tcp/4100: {e}"),
                    )
                })
            })
            .collect()
    };
    let listen = addrs("overlay.listen", &raw.listen)?;
    let bootstrap = addrs("overlay.bootstrap", &raw.bootstrap)?;
    if listen.is_empty() {
        return Ok(None);
    }
    // One peer of a path keeps every object at 1; past 16 every replica
    // of a default path (max_replicas) would.
    if !(1..=16).contains(&raw.replication) {
        return Err(invalid("overlay.replication", "must be in 1..=16"));
    }
    if !(1..=100_000).contains(&raw.max_connections) {
        return Err(invalid("overlay.max_connections", "must be in 1..=100000"));
    }
    if !(1..=8).contains(&raw.max_connections_per_peer) {
        return Err(invalid(
            "overlay.max_connections_per_peer",
            "must be in 1..=8",
        ));
    }
    if !(1..=300).contains(&raw.request_timeout_secs) {
        return Err(invalid(
            "overlay.request_timeout_secs",
            "must be in 1..=300",
        ));
    }
    // An epoch holds a report slot, 8 rounds and two slots of 1 s (LAN)
    // or 3 s (WAN): 12 s or 36 s at least.
    let round_secs = crate::overlay::Config::preset(raw.preset)
        .trust_round
        .as_secs();
    let min_epoch = round_secs * 12;
    if let Some(e) = raw.trust_epoch_secs
        && !(min_epoch..=86_400).contains(&e)
    {
        return Err(invalid(
            "overlay.trust_epoch_secs",
            format!(
                "must be in {min_epoch}..=86400 for the {:?} preset",
                raw.preset
            ),
        ));
    }
    let http_url = match raw.advertise_http {
        Some(url) => {
            crate::edge::fetch::PeerUrl::parse(&url)
                .map_err(|e| invalid("overlay.advertise_http", format!("`{url}`: {e}")))?;
            Some(url)
        }
        None => match http_listen.parse::<SocketAddr>() {
            // An unspecified address cannot be fetched from; say which.
            Ok(addr) if addr.ip().is_unspecified() => {
                return Err(invalid(
                    "overlay.advertise_http",
                    "edge.http_listen is a wildcard address; set the URL other edges reach this gateway at",
                ));
            }
            Ok(addr) => Some(format!("http://{addr}")),
            Err(_) => None,
        },
    };
    Ok(Some(crate::net::NetConfig {
        listen,
        bootstrap,
        preset: raw.preset,
        limits: crate::net::behaviour::Limits {
            max_connections: raw.max_connections,
            max_connections_per_peer: raw.max_connections_per_peer,
            request_timeout: Duration::from_secs(raw.request_timeout_secs),
            max_streams: 256,
        },
        http_url,
        proxy_url: match proxy_listen.parse::<SocketAddr>() {
            Ok(addr) if !addr.ip().is_unspecified() => Some(format!("http://{addr}")),
            _ => None,
        },
        replication: raw.replication,
        keep_replicas: raw.keep_replicas,
        trust_epoch: raw.trust_epoch_secs.map(Duration::from_secs),
    }))
}

fn validate_edge(
    raw: raw::RawEdge,
    base: &Path,
    data_dir: &Path,
) -> Result<EdgeConfig, ConfigError> {
    // A runtime of more threads than this is a typo, not a plan: the
    // gateway's work is disk and network bound.
    if !(1..=64).contains(&raw.threads) {
        return Err(invalid("edge.threads", "must be in 1..=64"));
    }
    if !(1..=100_000).contains(&raw.max_concurrent_requests) {
        return Err(invalid(
            "edge.max_concurrent_requests",
            "must be in 1..=100000",
        ));
    }
    if !(1..=3600).contains(&raw.idle_timeout_secs) {
        return Err(invalid("edge.idle_timeout_secs", "must be in 1..=3600"));
    }
    if !(1..=3600).contains(&raw.fetch_timeout_secs) {
        return Err(invalid("edge.fetch_timeout_secs", "must be in 1..=3600"));
    }
    let http_listen = match raw.http_listen.trim() {
        "off" => None,
        addr => Some(addr.parse().map_err(|_| {
            invalid(
                "edge.http_listen",
                format!("`{addr}` is not an address like 127.0.0.1:8080, nor `off`"),
            )
        })?),
    };
    let proxy = match raw.proxy_listen.trim() {
        "off" => None,
        addr => {
            let listen = addr.parse().map_err(|_| {
                invalid(
                    "edge.proxy_listen",
                    format!("`{addr}` is not an address like 127.0.0.1:3128, nor `off`"),
                )
            })?;
            let mut sites = Vec::new();
            for site in &raw.sites {
                let host = site.host.trim().to_ascii_lowercase();
                if host.is_empty() || host.contains(['/', ':', ' ']) {
                    return Err(invalid(
                        "edge.sites",
                        format!("`{}` is not a host name like www.example.org", site.host),
                    ));
                }
                let origin = site.origin.trim();
                if origin
                    .rsplit_once(':')
                    .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
                {
                    return Err(invalid(
                        "edge.sites",
                        format!("origin `{origin}` of {host} is not host:port like 127.0.0.1:8000"),
                    ));
                }
                sites.push((host, origin.to_owned()));
            }
            if raw.cache_max_object_bytes == 0 || raw.cache_max_object_bytes > raw.cache_disk_bytes
            {
                return Err(invalid(
                    "edge.cache_max_object_bytes",
                    "must be at least 1 and at most edge.cache_disk_bytes",
                ));
            }
            if !(1..=100_000).contains(&raw.max_origin_fetches) {
                return Err(invalid("edge.max_origin_fetches", "must be in 1..=100000"));
            }
            let https_listen = match raw.https_listen.trim() {
                "off" => None,
                addr => Some(addr.parse().map_err(|_| {
                    invalid(
                        "edge.https_listen",
                        format!("`{addr}` is not an address like 127.0.0.1:4443, nor `off`"),
                    )
                })?),
            };
            Some(ProxyConfig {
                listen,
                https_listen,
                allow: raw.proxy_allow,
                connect_ports: raw.connect_ports,
                sites,
                cache_dir: raw
                    .cache_dir
                    .map_or_else(|| data_dir.join("http-cache"), |d| base.join(d)),
                cache: crate::edge::cache::Limits {
                    disk_bytes: raw.cache_disk_bytes,
                    memory_bytes: raw.cache_memory_bytes,
                    max_object_bytes: raw.cache_max_object_bytes,
                },
                max_origin_fetches: raw.max_origin_fetches,
            })
        }
    };
    Ok(EdgeConfig {
        proxy,
        public_addresses: raw.public_addresses,
        http_listen,
        threads: raw.threads,
        max_concurrent_requests: raw.max_concurrent_requests,
        idle_timeout: Duration::from_secs(raw.idle_timeout_secs),
        fetch_timeout: Duration::from_secs(raw.fetch_timeout_secs),
    })
}

/// Smallest store bound: a few of the largest blocks (2 MiB) must fit, or
/// one import could not even hold its own directory node.
const MIN_CONTENT_MAX_BYTES: u64 = 16 << 20;

fn validate_content(
    raw: RawContent,
    base: &Path,
    data_dir: &Path,
) -> Result<ContentConfig, ConfigError> {
    if raw.max_bytes < MIN_CONTENT_MAX_BYTES {
        return Err(invalid(
            "content.max_bytes",
            format!("must be at least {MIN_CONTENT_MAX_BYTES} (16 MiB)"),
        ));
    }
    if raw.max_put_bytes == 0 {
        return Err(invalid("content.max_put_bytes", "must be at least 1"));
    }
    Ok(ContentConfig {
        store_dir: raw
            .store_dir
            .map(|p| base.join(p))
            .unwrap_or_else(|| data_dir.join("content")),
        max_bytes: raw.max_bytes,
        max_put_bytes: raw.max_put_bytes,
    })
}

fn validate_registry(
    raw: RawRegistry,
    base: &Path,
    data_dir: &Path,
) -> Result<Option<RegistryConfig>, ConfigError> {
    if !raw.enabled {
        return Ok(None);
    }
    let zone = crate::registry::model::Zone::parse(&raw.zone)
        .map_err(|e| invalid("registry.zone", e.to_string()))?;
    if raw.follow_interval_ms == 0 {
        return Err(invalid("registry.follow_interval_ms", "must be at least 1"));
    }
    let role = match raw.follow {
        Some(url) => {
            if raw.sequencer_key_file.is_some() {
                return Err(invalid(
                    "registry.follow",
                    "a follower has no sequencer key; remove registry.sequencer_key_file",
                ));
            }
            crate::admin::client::AdminClient::new(&url)
                .map_err(|e| invalid("registry.follow", e.to_string()))?;
            RegistryRole::Follower {
                url,
                interval: Duration::from_millis(raw.follow_interval_ms),
            }
        }
        None => RegistryRole::Sequencer {
            key_file: raw.sequencer_key_file.map(|p| base.join(p)),
        },
    };
    Ok(Some(RegistryConfig {
        zone,
        genesis: raw.genesis.map(|p| base.join(p)),
        dir: data_dir.join("registry"),
        role,
        soa_ttl_secs: raw.soa_ttl_secs,
    }))
}

fn validate_dns(raw: RawDns, base: &Path, data_dir: &Path) -> Result<DnsConfig, ConfigError> {
    if raw.edns_udp_payload_bytes < 512 {
        return Err(invalid(
            "dns.edns_udp_payload_bytes",
            "must be at least 512 (RFC 6891 section 6.2.5)",
        ));
    }
    if raw.tcp_max_connections == 0 {
        return Err(invalid("dns.tcp_max_connections", "must be at least 1"));
    }
    if raw.udp_max_inflight == 0 {
        return Err(invalid("dns.udp_max_inflight", "must be at least 1"));
    }
    if raw.tcp_idle_timeout_secs == 0 {
        return Err(invalid("dns.tcp_idle_timeout_secs", "must be at least 1"));
    }
    let tls_cert = raw
        .tls_cert
        .map(|p| base.join(p))
        .unwrap_or_else(|| data_dir.join("certs/server.crt"));
    let tls_key = raw
        .tls_key
        .map(|p| base.join(p))
        .unwrap_or_else(|| data_dir.join("certs/server.key"));
    Ok(DnsConfig {
        listen_udp: raw.listen_udp,
        listen_tcp: raw.listen_tcp,
        listen_tls: raw.listen_tls,
        listen_https: raw.listen_https,
        tls_cert,
        tls_key,
        zones_dir: base.join(raw.zones_dir),
        allow_recursion: raw.allow_recursion,
        edns_udp_payload_bytes: raw.edns_udp_payload_bytes,
        tcp_max_connections: raw.tcp_max_connections,
        tcp_idle_timeout: Duration::from_secs(raw.tcp_idle_timeout_secs),
        udp_max_inflight: raw.udp_max_inflight,
        forward: validate_forward(raw.forward, base)?,
        cache: validate_cache(raw.cache)?,
        rate_limit: validate_rate_limit(raw.rate_limit)?,
    })
}

fn validate_forward(raw: RawForward, base: &Path) -> Result<ForwardConfig, ConfigError> {
    let upstreams = raw
        .upstreams
        .iter()
        .map(|s| parse_upstream(s))
        .collect::<Result<Vec<_>, _>>()?;
    if raw.timeout_ms == 0 {
        return Err(invalid("dns.forward.timeout_ms", "must be at least 1"));
    }
    if !(1..=10).contains(&raw.attempts) {
        return Err(invalid("dns.forward.attempts", "must be between 1 and 10"));
    }
    Ok(ForwardConfig {
        upstreams,
        timeout: Duration::from_millis(raw.timeout_ms),
        attempts: raw.attempts,
        upstream_ca: raw.upstream_ca.map(|p| base.join(p)),
    })
}

/// Parses `udp://IP:PORT`, `tcp://IP:PORT`, `tls://IP:PORT#NAME` and
/// `https://IP:PORT/PATH#NAME`; the port defaults to the protocol's.
pub fn parse_upstream(s: &str) -> Result<Upstream, ConfigError> {
    let bad = |reason: &str| invalid("dns.forward.upstreams", format!("`{s}`: {reason}"));
    let (scheme, rest) = s
        .split_once("://")
        .ok_or_else(|| bad("expected SCHEME://ADDRESS, e.g. udp://9.9.9.9:53"))?;
    let (protocol, default_port) = match scheme {
        "udp" => (UpstreamProtocol::Udp, 53),
        "tcp" => (UpstreamProtocol::Tcp, 53),
        "tls" => (UpstreamProtocol::Tls, 853),
        "https" => (UpstreamProtocol::Https, 443),
        _ => return Err(bad("scheme must be udp, tcp, tls or https")),
    };
    let (rest, tls_name) = match rest.split_once('#') {
        Some((r, name)) if !name.is_empty() => (r, Some(name.to_owned())),
        Some(_) => return Err(bad("empty TLS name after #")),
        None => (rest, None),
    };
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], Some(rest[i..].to_owned())),
        None => (rest, None),
    };
    let addr = match host.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => {
            let ip = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .map_err(|_| bad("address must be an IP address with an optional port"))?;
            SocketAddr::new(ip, default_port)
        }
    };
    match protocol {
        UpstreamProtocol::Tls | UpstreamProtocol::Https if tls_name.is_none() => {
            return Err(bad("tls and https upstreams need #TLS-NAME"));
        }
        UpstreamProtocol::Udp | UpstreamProtocol::Tcp | UpstreamProtocol::Tls if path.is_some() => {
            return Err(bad("only https upstreams take a path"));
        }
        _ => {}
    }
    let path = match protocol {
        UpstreamProtocol::Https => Some(path.unwrap_or_else(|| "/dns-query".to_owned())),
        _ => None,
    };
    Ok(Upstream {
        protocol,
        addr,
        tls_name,
        path,
    })
}

fn validate_cache(raw: RawCache) -> Result<CacheConfig, ConfigError> {
    if raw.max_entries == 0 {
        return Err(invalid("dns.cache.max_entries", "must be at least 1"));
    }
    if raw.min_ttl_secs > raw.max_ttl_secs {
        return Err(invalid(
            "dns.cache.min_ttl_secs",
            format!(
                "{} is above max_ttl_secs {}",
                raw.min_ttl_secs, raw.max_ttl_secs
            ),
        ));
    }
    if raw.max_ttl_secs > 7 * 86_400 {
        return Err(invalid(
            "dns.cache.max_ttl_secs",
            "must be at most 604800 (one week, RFC 8767 section 4)",
        ));
    }
    if raw.stale_answer_ttl_secs == 0 {
        return Err(invalid(
            "dns.cache.stale_answer_ttl_secs",
            "must be at least 1 (RFC 8767 section 4 recommends 30)",
        ));
    }
    Ok(CacheConfig {
        max_entries: raw.max_entries,
        min_ttl: Duration::from_secs(raw.min_ttl_secs.into()),
        max_ttl: Duration::from_secs(raw.max_ttl_secs.into()),
        negative_max_ttl: Duration::from_secs(raw.negative_max_ttl_secs.into()),
        stale_window: Duration::from_secs(raw.stale_window_secs.into()),
        stale_answer_ttl: Duration::from_secs(raw.stale_answer_ttl_secs.into()),
        prefetch: raw.prefetch,
        prefetch_min_hits: raw.prefetch_min_hits,
    })
}

fn validate_rate_limit(raw: RawRateLimit) -> Result<RateLimitConfig, ConfigError> {
    if raw.responses_per_second > 0 && raw.burst < raw.responses_per_second {
        return Err(invalid(
            "dns.rate_limit.burst",
            "must be at least responses_per_second",
        ));
    }
    if raw.max_clients == 0 {
        return Err(invalid("dns.rate_limit.max_clients", "must be at least 1"));
    }
    Ok(RateLimitConfig {
        responses_per_second: raw.responses_per_second,
        burst: raw.burst,
        exempt: raw.exempt,
        max_clients: raw.max_clients,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_parses_to_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/gridedge.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let shipped: RawConfig = toml::from_str(&text).unwrap();
        assert_eq!(shipped, RawConfig::default());
    }

    #[test]
    fn empty_file_is_the_defaults() {
        assert_eq!(
            Config::parse("", Path::new("x.toml")).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::parse("[dns]\nlisten_udpp = []\n", Path::new("x.toml")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("listen_udpp"), "{msg}");
        assert!(msg.contains("x.toml"), "{msg}");
    }

    #[test]
    fn bad_value_is_named() {
        let err = Config::parse(
            "[dns.cache]\nmin_ttl_secs = 10\nmax_ttl_secs = 5\n",
            Path::new("x.toml"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("dns.cache.min_ttl_secs"), "{err}");
        let err = Config::parse("[dns]\nallow_recursion = [\"nope\"]\n", Path::new("x.toml"))
            .unwrap_err();
        assert!(err.to_string().contains("allow_recursion"), "{err}");
        let err = Config::parse("[content]\nmax_bytes = 1000\n", Path::new("x.toml")).unwrap_err();
        assert!(err.to_string().contains("content.max_bytes"), "{err}");
        for (toml, key) in [
            ("[edge]\nthreads = 0\n", "edge.threads"),
            (
                "[edge]\nmax_concurrent_requests = 0\n",
                "edge.max_concurrent_requests",
            ),
            ("[edge]\nidle_timeout_secs = 0\n", "edge.idle_timeout_secs"),
            (
                "[edge]\nfetch_timeout_secs = 0\n",
                "edge.fetch_timeout_secs",
            ),
            ("[content]\nmax_put_bytes = 0\n", "content.max_put_bytes"),
        ] {
            let err = Config::parse(toml, Path::new("x.toml")).unwrap_err();
            assert!(err.to_string().contains(key), "{err}");
        }
        // The gateway can be turned off by leaving its address out.
        let config = Config::parse("[edge]\npublic_addresses = []\n", Path::new("x.toml")).unwrap();
        assert_eq!(
            config.edge.http_listen,
            Some("127.0.0.1:8080".parse().unwrap())
        );
    }

    #[test]
    fn upstreams_parse() {
        let u = parse_upstream("tls://9.9.9.9#dns.quad9.net").unwrap();
        assert_eq!(u.addr, "9.9.9.9:853".parse().unwrap());
        assert_eq!(u.tls_name.as_deref(), Some("dns.quad9.net"));
        let u = parse_upstream("https://[2620:fe::fe]/dns-query#dns.quad9.net").unwrap();
        assert_eq!(u.addr.port(), 443);
        assert_eq!(u.path.as_deref(), Some("/dns-query"));
        assert!(parse_upstream("tls://9.9.9.9").is_err());
        assert!(parse_upstream("ftp://9.9.9.9").is_err());
        assert!(parse_upstream("udp://dns.google").is_err());
    }
}
