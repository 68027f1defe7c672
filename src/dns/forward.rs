//! The forwarder: sends a question to the configured upstreams (UDP with TCP
//! retry on truncation, TCP, DoT, DoH) through hickory-resolver's name server
//! pool, which keeps connections, ranks upstreams by smoothed RTT and joins
//! identical questions in flight.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hickory_proto::op::{DnsRequest, DnsRequestOptions, Query, ResponseCode};
use hickory_proto::rr::Record;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::xfer::DnsHandle;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::{NameServerPool, PoolContext, TlsConfig};

use crate::config::{ForwardConfig, UpstreamProtocol};

/// An answer from upstream, positive or negative.
#[derive(Debug, Clone)]
pub struct UpstreamAnswer {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
}

/// Why no answer came back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardError {
    /// No upstreams are configured.
    #[error("no upstream resolvers are configured")]
    NoUpstreams,
    /// Every upstream failed or timed out.
    #[error("upstream failed: {0}")]
    Upstream(#[source] NetError),
    /// The trust roots for TLS upstreams could not be loaded.
    #[error("cannot load upstream CA {path}: {reason}")]
    Ca { path: String, reason: String },
    /// rustls refused the client configuration.
    #[error("TLS client configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// The configured upstreams.
pub struct Forwarder {
    pool: Option<NameServerPool<TokioRuntimeProvider>>,
}

impl Forwarder {
    /// Builds the pool; nothing connects until the first question.
    pub fn new(config: &ForwardConfig) -> Result<Self, ForwardError> {
        if config.upstreams.is_empty() {
            return Ok(Self { pool: None });
        }
        let servers = config.upstreams.iter().map(|u| {
            let mut conn = match u.protocol {
                UpstreamProtocol::Udp => ConnectionConfig::udp(),
                UpstreamProtocol::Tcp => ConnectionConfig::tcp(),
                UpstreamProtocol::Tls => {
                    ConnectionConfig::tls(u.tls_name.as_deref().unwrap_or_default().into())
                }
                UpstreamProtocol::Https => ConnectionConfig::https(
                    u.tls_name.as_deref().unwrap_or_default().into(),
                    u.path.as_deref().map(Into::into),
                ),
            };
            conn.port = u.addr.port();
            let mut conns = vec![conn];
            // A truncated UDP answer is retried over TCP on the same server.
            if u.protocol == UpstreamProtocol::Udp {
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = u.addr.port();
                conns.push(tcp);
            }
            NameServerConfig::new(u.addr.ip(), true, conns)
        });
        let mut opts = ResolverOpts::default();
        opts.timeout = config.timeout;
        opts.attempts = config.attempts;
        opts.edns0 = true;
        opts.cache_size = 0;
        let tls = TlsConfig {
            config: client_tls_config(config)?,
        };
        let cx = Arc::new(PoolContext::new(opts, tls));
        let pool = NameServerPool::from_config(servers, cx, TokioRuntimeProvider::default());
        Ok(Self { pool: Some(pool) })
    }

    /// Asks the upstreams; a negative answer (NXDOMAIN, NODATA) is an `Ok`.
    pub async fn resolve(&self, query: Query) -> Result<(UpstreamAnswer, Duration), ForwardError> {
        let pool = self.pool.as_ref().ok_or(ForwardError::NoUpstreams)?;
        let mut options = DnsRequestOptions::default();
        options.recursion_desired = true;
        options.use_edns = true;
        let started = Instant::now();
        let result = pool
            .send(DnsRequest::from_query(query, options))
            .next()
            .await
            .unwrap_or(Err(NetError::Timeout));
        let elapsed = started.elapsed();
        match result {
            Ok(response) => Ok((
                UpstreamAnswer {
                    rcode: response.response_code,
                    answers: response.answers.clone(),
                    authorities: response.authorities.clone(),
                },
                elapsed,
            )),
            Err(NetError::Dns(DnsError::NoRecordsFound(no)))
                if matches!(
                    no.response_code,
                    ResponseCode::NXDomain | ResponseCode::NoError
                ) =>
            {
                let authorities = match (&no.authorities, &no.soa) {
                    (Some(a), _) => a.to_vec(),
                    (None, Some(soa)) => vec![soa.clone().into_record_of_rdata()],
                    (None, None) => Vec::new(),
                };
                Ok((
                    UpstreamAnswer {
                        rcode: no.response_code,
                        answers: Vec::new(),
                        authorities,
                    },
                    elapsed,
                ))
            }
            Err(e) => Err(ForwardError::Upstream(e)),
        }
    }
}

/// The web PKI roots plus the configured extra CA, on ring.
fn client_tls_config(config: &ForwardConfig) -> Result<rustls::ClientConfig, ForwardError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = &config.upstream_ca {
        let ca_err = |reason: String| ForwardError::Ca {
            path: path.display().to_string(),
            reason,
        };
        for cert in crate::cert::read_certs(path).map_err(|e| ca_err(e.to_string()))? {
            roots.add(cert).map_err(|e| ca_err(e.to_string()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}
