//! The config file as written: every key optional, unknown keys rejected.
//! Each default here is documented, key by key, in `config/gridedge.toml`.

use std::net::SocketAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::Deserialize;

/// The whole config file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub data_dir: PathBuf,
    pub log: RawLog,
    pub dns: RawDns,
    pub admin: RawAdmin,
    pub registry: RawRegistry,
    pub content: RawContent,
    pub edge: RawEdge,
    pub overlay: RawOverlay,
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            data_dir: "data".into(),
            log: RawLog::default(),
            dns: RawDns::default(),
            admin: RawAdmin::default(),
            registry: RawRegistry::default(),
            content: RawContent::default(),
            edge: RawEdge::default(),
            overlay: RawOverlay::default(),
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    pub format: LogFormat,
    pub level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

fn loopback() -> Vec<IpNet> {
    vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()]
}

/// `[dns]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDns {
    pub listen_udp: Vec<SocketAddr>,
    pub listen_tcp: Vec<SocketAddr>,
    pub listen_tls: Vec<SocketAddr>,
    pub listen_https: Vec<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub zones_dir: PathBuf,
    pub allow_recursion: Vec<IpNet>,
    pub edns_udp_payload_bytes: u16,
    pub tcp_max_connections: usize,
    pub tcp_idle_timeout_secs: u64,
    pub udp_max_inflight: usize,
    pub forward: RawForward,
    pub cache: RawCache,
    pub rate_limit: RawRateLimit,
}

impl Default for RawDns {
    fn default() -> Self {
        let local: SocketAddr = "127.0.0.1:5300".parse().unwrap();
        Self {
            listen_udp: vec![local],
            listen_tcp: vec![local],
            listen_tls: vec!["127.0.0.1:8530".parse().unwrap()],
            listen_https: vec!["127.0.0.1:8443".parse().unwrap()],
            tls_cert: None,
            tls_key: None,
            zones_dir: "zones".into(),
            allow_recursion: loopback(),
            edns_udp_payload_bytes: 1232,
            tcp_max_connections: 512,
            tcp_idle_timeout_secs: 10,
            udp_max_inflight: 4096,
            forward: RawForward::default(),
            cache: RawCache::default(),
            rate_limit: RawRateLimit::default(),
        }
    }
}

/// `[dns.forward]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawForward {
    pub upstreams: Vec<String>,
    pub timeout_ms: u64,
    pub attempts: usize,
    pub upstream_ca: Option<PathBuf>,
}

impl Default for RawForward {
    fn default() -> Self {
        Self {
            upstreams: vec![
                "tls://9.9.9.9:853#dns.quad9.net".into(),
                "tls://149.112.112.112:853#dns.quad9.net".into(),
            ],
            timeout_ms: 1500,
            attempts: 2,
            upstream_ca: None,
        }
    }
}

/// `[dns.cache]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCache {
    pub max_entries: usize,
    pub min_ttl_secs: u32,
    pub max_ttl_secs: u32,
    pub negative_max_ttl_secs: u32,
    pub stale_window_secs: u32,
    pub stale_answer_ttl_secs: u32,
    pub prefetch: bool,
    pub prefetch_min_hits: u32,
}

impl Default for RawCache {
    fn default() -> Self {
        Self {
            max_entries: 100_000,
            min_ttl_secs: 0,
            max_ttl_secs: 86_400,
            negative_max_ttl_secs: 3_600,
            stale_window_secs: 86_400,
            stale_answer_ttl_secs: 30,
            prefetch: true,
            prefetch_min_hits: 2,
        }
    }
}

/// `[dns.rate_limit]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRateLimit {
    pub responses_per_second: u32,
    pub burst: u32,
    pub exempt: Vec<IpNet>,
    pub max_clients: usize,
}

impl Default for RawRateLimit {
    fn default() -> Self {
        Self {
            responses_per_second: 100,
            burst: 200,
            exempt: loopback(),
            max_clients: 65_536,
        }
    }
}

/// `[admin]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdmin {
    pub listen: Option<SocketAddr>,
}

impl Default for RawAdmin {
    fn default() -> Self {
        Self {
            listen: Some("127.0.0.1:9100".parse().unwrap()),
        }
    }
}

/// `[registry]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRegistry {
    pub enabled: bool,
    pub zone: String,
    pub genesis: Option<PathBuf>,
    pub sequencer_key_file: Option<PathBuf>,
    pub follow: Option<String>,
    pub follow_interval_ms: u64,
    pub soa_ttl_secs: u32,
}

impl Default for RawRegistry {
    fn default() -> Self {
        Self {
            enabled: true,
            zone: "grid.".into(),
            genesis: None,
            sequencer_key_file: None,
            follow: None,
            follow_interval_ms: 1000,
            soa_ttl_secs: 60,
        }
    }
}

/// `[content]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawContent {
    pub store_dir: Option<PathBuf>,
    pub max_bytes: u64,
    pub max_put_bytes: u64,
}

impl Default for RawContent {
    fn default() -> Self {
        Self {
            store_dir: None,
            max_bytes: 10 << 30,
            max_put_bytes: 4 << 30,
        }
    }
}

/// `[edge]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawEdge {
    pub public_addresses: Vec<std::net::IpAddr>,
    /// An address, or `off`.
    pub http_listen: String,
    pub threads: usize,
    pub max_concurrent_requests: usize,
    pub idle_timeout_secs: u64,
    pub fetch_timeout_secs: u64,
    /// The proxy's listener, or `off`.
    pub proxy_listen: String,
    /// The HTTPS front's listener, or `off`.
    pub https_listen: String,
    pub proxy_allow: Vec<IpNet>,
    pub connect_ports: Vec<u16>,
    pub sites: Vec<RawSite>,
    pub cache_dir: Option<std::path::PathBuf>,
    pub cache_disk_bytes: u64,
    pub cache_memory_bytes: u64,
    pub cache_max_object_bytes: u64,
    pub max_origin_fetches: usize,
}

/// `[[edge.sites]]`: a site the proxy fronts.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSite {
    pub host: String,
    pub origin: String,
}

impl Default for RawEdge {
    fn default() -> Self {
        Self {
            public_addresses: vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
            http_listen: "127.0.0.1:8080".into(),
            threads: 2,
            max_concurrent_requests: 256,
            idle_timeout_secs: 30,
            fetch_timeout_secs: 30,
            proxy_listen: "127.0.0.1:3128".into(),
            https_listen: "127.0.0.1:4443".into(),
            proxy_allow: loopback(),
            connect_ports: vec![443],
            sites: Vec::new(),
            cache_dir: None,
            cache_disk_bytes: 1 << 30,
            cache_memory_bytes: 64 << 20,
            cache_max_object_bytes: 64 << 20,
            max_origin_fetches: 64,
        }
    }
}

/// `[overlay]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawOverlay {
    /// libp2p multiaddrs; empty turns the overlay off.
    pub listen: Vec<String>,
    pub bootstrap: Vec<String>,
    pub preset: crate::overlay::Preset,
    /// The gateway URL told to other edges; by default from `edge.http_listen`.
    pub advertise_http: Option<String>,
    pub replication: usize,
    pub keep_replicas: bool,
    pub max_connections: u32,
    pub max_connections_per_peer: u32,
    pub request_timeout_secs: u64,
    /// Unset means the preset's (60 s LAN, 300 s WAN).
    pub trust_epoch_secs: Option<u64>,
}

impl Default for RawOverlay {
    fn default() -> Self {
        Self {
            listen: vec!["/ip4/127.0.0.1/tcp/4100".into()],
            bootstrap: Vec::new(),
            preset: crate::overlay::Preset::Lan,
            advertise_http: None,
            replication: 3,
            keep_replicas: true,
            max_connections: 256,
            max_connections_per_peer: 2,
            request_timeout_secs: 10,
            trust_epoch_secs: None,
        }
    }
}
