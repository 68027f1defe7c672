//! The HTTP edge, on pingora. So far: the content gateway (`/ipfs/<cid>`,
//! IPFS trustless gateway routes, `gateway.rs`) and the verifying fetcher
//! that pulls a DAG from another edge's gateway (`fetch.rs`), which the
//! `put` and `get` commands (`client.rs`) use.
//!
//! | file | holds |
//! | --- | --- |
//! | `request.rs` | what a gateway request asks for: route, format, dag-scope, Range (pure) |
//! | `gateway.rs` | the pingora `HttpServerApp` that answers from the block store |
//! | `mime.rs` | content types for deserialized files |
//! | `fetch.rs` | `Fetcher`: a DAG or a block from a peer edge, every block checked |
//! | `retrieve.rs` | `Retriever`: an object from the holders the overlay names, nearest first; the replicas this edge keeps |
//! | `client.rs` | `gridedge put` and `gridedge get` |
//! | `proxy.rs` | `EdgeProxy`: forward proxy, CONNECT, reverse proxy for sites, RFC 9111 caching (pingora-proxy) |
//! | `tls.rs` | the HTTPS front: per-name certificates from the local CA, relayed to the proxy |
//! | `audit.rs` | which holders of web objects the proxy takes copies from: each audited against the origin first |
//! | `cache.rs` | `DiskCache`: pingora-cache storage on disk with a memory tier, crash-safe |
//!
//! ## How pingora runs inside `gridedge run`
//!
//! pingora's `Server` owns the process: it parses its own options, installs
//! its own signal handlers and ends in `run_forever`, which never returns.
//! The daemon already owns signals and shutdown (one `CancellationToken`),
//! so the edge uses pingora one level down: a `listening::Service` holding
//! the gateway app, started with `start_service` on a tokio runtime of its
//! own (pingora gives each service its own runtime, and so does this: a
//! flood of HTTP cannot starve DNS), on a thread of its own. The listener is
//! bound here first and handed to pingora as an inherited socket (the
//! `ListenFds` table its graceful upgrade uses), so a taken port is an
//! error `gridedge run` reports, where pingora would panic on its thread.
//! Shutdown sets pingora's `ShutdownWatch`: the accept loops end, kept-alive
//! connections are not reused, and requests in flight get a grace period
//! before the runtime is dropped.

pub mod audit;
pub mod cache;
pub mod client;
pub mod fetch;
pub mod fuzz;
pub mod gateway;
pub mod mime;
pub mod proxy;
pub mod request;
pub mod retrieve;
pub mod tls;

use std::net::SocketAddr;
use std::os::fd::IntoRawFd;
use std::sync::Arc;
use std::time::Duration;

use pingora_core::server::Fds;
use pingora_core::services::Service as _;
use pingora_core::services::listening::Service;
use tokio_util::sync::CancellationToken;

use crate::admin::Metrics;
use crate::config::EdgeConfig;
use crate::content::BlockStore;

pub use fetch::{FetchError, Fetcher};

/// How long requests in flight may run on after shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the edge could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EdgeError {
    /// The gateway's address could not be bound (in use, not local, no
    /// permission).
    #[error("cannot listen on the HTTP gateway address {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The HTTP cache's directory could not be opened.
    #[error("cannot open the HTTP cache in {}: {source}", dir.display())]
    Cache {
        /// The directory.
        dir: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The gateway's runtime or thread could not be made.
    #[error("cannot start the HTTP gateway's runtime: {source}")]
    Runtime {
        /// The OS error.
        source: std::io::Error,
    },
}

/// The running gateway.
pub struct EdgeService {
    addr: SocketAddr,
    stopped: tokio::sync::oneshot::Receiver<()>,
}

impl EdgeService {
    /// Binds `config.http_listen` and serves the gateway on it until
    /// `shutdown` is cancelled. `None` when the gateway is turned off.
    pub fn start(
        config: &EdgeConfig,
        store: Arc<BlockStore>,
        metrics: Arc<Metrics>,
        retriever: Option<Arc<retrieve::Retriever>>,
        shutdown: CancellationToken,
    ) -> Result<Option<EdgeService>, EdgeError> {
        let Some(addr) = config.http_listen else {
            return Ok(None);
        };
        let gateway = gateway::Gateway::new(
            store,
            metrics,
            config.max_concurrent_requests,
            config.idle_timeout,
            retriever,
        );
        serve("gateway", addr, gateway, config.threads, shutdown).map(Some)
    }

    /// Opens the proxy's cache, when the proxy is on. pingora wants its
    /// storage `'static`: it lives as long as the process.
    pub fn open_cache(config: &EdgeConfig) -> Result<Option<&'static cache::DiskCache>, EdgeError> {
        let Some(proxy) = &config.proxy else {
            return Ok(None);
        };
        let cache = cache::DiskCache::open(&proxy.cache_dir, proxy.cache).map_err(|source| {
            EdgeError::Cache {
                dir: proxy.cache_dir.clone(),
                source,
            }
        })?;
        let usage = cache.usage();
        tracing::info!(
            dir = %proxy.cache_dir.display(),
            entries = usage.entries,
            bytes = usage.disk_bytes,
            "HTTP cache opened"
        );
        Ok(Some(cache.leak()))
    }

    /// Binds the proxy's address and serves the proxy and its cache until
    /// `shutdown` is cancelled. `None` when the proxy is turned off.
    pub fn start_proxy(
        config: &EdgeConfig,
        cache: &'static cache::DiskCache,
        metrics: Arc<Metrics>,
        registry: Option<Arc<crate::registry::service::Registry>>,
        gateway: Option<SocketAddr>,
        overlay: Option<crate::net::Overlay>,
        shutdown: CancellationToken,
    ) -> Result<Option<EdgeService>, EdgeError> {
        let Some(proxy) = &config.proxy else {
            return Ok(None);
        };
        let app = proxy::EdgeProxy::new(proxy, cache, metrics, registry, gateway, overlay);
        let conf = Arc::new(pingora_core::server::configuration::ServerConf::default());
        let mut app = pingora_proxy::http_proxy(&conf, app);
        let mut options = pingora_core::apps::HttpServerOptions::default();
        options.allow_connect_method_proxying = true;
        // HTTP/2 with prior knowledge in clear text, and behind the HTTPS
        // front when ALPN picks h2 (the relay passes its preface through).
        options.h2c = true;
        app.server_options = Some(options);
        serve("proxy", proxy.listen, app, config.threads, shutdown).map(Some)
    }

    /// The address the service listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits until the gateway has stopped (after shutdown).
    pub async fn stopped(self) {
        let _ = self.stopped.await;
    }
}

/// Binds `addr` and runs `app` on it, on a runtime and thread of its own,
/// until `shutdown` is cancelled.
fn serve<A>(
    name: &'static str,
    addr: SocketAddr,
    app: A,
    threads: usize,
    shutdown: CancellationToken,
) -> Result<EdgeService, EdgeError>
where
    A: pingora_core::apps::ServerApp + Send + Sync + 'static,
{
    let listener =
        std::net::TcpListener::bind(addr).map_err(|source| EdgeError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| EdgeError::Bind { addr, source })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| EdgeError::Bind { addr, source })?;
    let key = bound.to_string();
    let mut service = Service::new(name.into(), app);
    service.add_tcp(&key);
    let mut fds = Fds::new();
    // pingora takes the descriptor over (and closes it when done).
    fds.add(key, listener.into_raw_fd());
    let fds = Arc::new(parking_lot::Mutex::new(fds));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(format!("edge-{name}"))
        .enable_all()
        .build()
        .map_err(|source| EdgeError::Runtime { source })?;
    let (watch_tx, watch_rx) = tokio::sync::watch::channel(false);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(format!("{name}-main"))
        .spawn(move || {
            runtime.block_on(service.start_service(Some(fds), watch_rx, 1));
            // The accept loops have ended; connections still open finish
            // within the grace period or are dropped with the runtime.
            runtime.shutdown_timeout(SHUTDOWN_GRACE);
            let _ = done_tx.send(());
        })
        .map_err(|source| EdgeError::Runtime { source })?;
    tokio::spawn(async move {
        shutdown.cancelled().await;
        let _ = watch_tx.send(true);
        // Keep the sender until the service is gone: a dropped sender
        // reads as an error to pingora's accept loop, not a shutdown.
        watch_tx.closed().await;
    });
    tracing::info!(addr = %bound, service = name, "HTTP listening");
    Ok(EdgeService {
        addr: bound,
        stopped: done_rx,
    })
}
