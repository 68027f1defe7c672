//! The DNS service on hickory-server: the registry zone, local zones, a forwarder with a cache,
//! recursion ACL, rate limits, UDP, TCP, DoT and DoH.
//!
//! `DnsService::start` binds every configured listener and returns once
//! they are bound, so a caller (or a test) can query right away.

pub mod cache;
pub mod doh;
pub mod forward;
pub mod fuzz;
pub mod handler;
pub mod listen;
pub mod rate_limit;
pub mod registry;
pub mod zones;

use std::sync::Arc;
use std::time::Duration;

use hickory_server::Server;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::admin::Metrics;
use crate::config::DnsConfig;
use handler::DnsHandler;
use listen::SharedHandler;

/// Why the DNS service could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// A listener could not be bound.
    #[error("cannot listen on {what} {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    /// The upstream configuration is unusable.
    #[error(transparent)]
    Forward(#[from] forward::ForwardError),
    /// The DoT/DoH certificate could not be loaded.
    #[error(transparent)]
    Cert(#[from] crate::cert::CertError),
}

/// The running DNS service.
pub struct DnsService {
    tasks: JoinSet<()>,
    tls_server: Option<Server<SharedHandler>>,
}

/// How long a TLS handshake (and an idle DoT connection) may take.
const TLS_TIMEOUT: Duration = Duration::from_secs(10);

impl DnsService {
    /// Loads the zones, binds every listener and starts serving.
    pub async fn start(
        config: &DnsConfig,
        registry: Option<registry::RegistryZone>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Result<Self, DnsError> {
        let loaded = zones::load_dir(&config.zones_dir);
        for error in &loaded.errors {
            tracing::error!(%error, "zone file skipped");
        }
        for origin in &loaded.origins {
            tracing::info!(zone = %origin, "local zone loaded");
        }
        let forwarder = forward::Forwarder::new(&config.forward)?;
        let handler = Arc::new(DnsHandler::new(
            config,
            registry,
            loaded.catalog,
            loaded.origins,
            forwarder,
            metrics.clone(),
        ));
        let mut tasks = JoinSet::new();
        for &addr in &config.listen_udp {
            let socket =
                tokio::net::UdpSocket::bind(addr)
                    .await
                    .map_err(|source| DnsError::Bind {
                        what: "udp",
                        addr,
                        source,
                    })?;
            tracing::info!(%addr, "dns udp listening");
            tasks.spawn(listen::serve_udp(
                socket,
                handler.clone(),
                config.udp_max_inflight,
                shutdown.clone(),
            ));
        }
        for &addr in &config.listen_tcp {
            let listener = bind_tcp("tcp", addr).await?;
            tracing::info!(%addr, "dns tcp listening");
            tasks.spawn(listen::serve_tcp(
                listener,
                handler.clone(),
                metrics.clone(),
                config.tcp_max_connections,
                config.tcp_idle_timeout,
                shutdown.clone(),
            ));
        }
        let tls_server = start_tls(config, &handler, &mut tasks, &shutdown).await?;
        Ok(Self { tasks, tls_server })
    }

    /// Waits for the listeners to stop (after the shutdown token fires).
    pub async fn stopped(mut self) {
        if let Some(server) = &mut self.tls_server {
            let _ = server.shutdown_gracefully().await;
        }
        while self.tasks.join_next().await.is_some() {}
    }
}

async fn bind_tcp(
    what: &'static str,
    addr: std::net::SocketAddr,
) -> Result<tokio::net::TcpListener, DnsError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| DnsError::Bind { what, addr, source })
}

/// DoT and DoH, when listeners are configured and the certificate exists.
async fn start_tls(
    config: &DnsConfig,
    handler: &Arc<DnsHandler>,
    tasks: &mut JoinSet<()>,
    shutdown: &CancellationToken,
) -> Result<Option<Server<SharedHandler>>, DnsError> {
    if config.listen_tls.is_empty() && config.listen_https.is_empty() {
        return Ok(None);
    }
    if !config.tls_cert.exists() {
        tracing::warn!(
            cert = %config.tls_cert.display(),
            "no certificate: DoT and DoH are off (run `gridedge cert dev` to make one)"
        );
        return Ok(None);
    }
    let mut server = Server::new(SharedHandler(handler.clone()));
    for &addr in &config.listen_tls {
        let tls = crate::cert::server_config(&config.tls_cert, &config.tls_key, &[b"dot"])?;
        let listener = bind_tcp("dot", addr).await?;
        server
            .register_tls_listener_with_tls_config(listener, TLS_TIMEOUT, tls)
            .map_err(|source| DnsError::Bind {
                what: "dot",
                addr,
                source,
            })?;
        tracing::info!(%addr, "dns over tls listening");
    }
    for &addr in &config.listen_https {
        let tls =
            crate::cert::server_config(&config.tls_cert, &config.tls_key, &[b"h2", b"http/1.1"])?;
        let listener = bind_tcp("doh", addr).await?;
        tasks.spawn(doh::serve(
            listener,
            tls,
            handler.clone(),
            config.tcp_max_connections,
            TLS_TIMEOUT,
            shutdown.clone(),
        ));
        tracing::info!(%addr, "dns over https listening on {}", doh::PATH);
    }
    Ok(Some(server))
}
