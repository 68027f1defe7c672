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

pub mod client;
pub mod fetch;
pub mod fuzz;
pub mod gateway;
pub mod mime;
pub mod request;
pub mod retrieve;

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
        let listener =
            std::net::TcpListener::bind(addr).map_err(|source| EdgeError::Bind { addr, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| EdgeError::Bind { addr, source })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| EdgeError::Bind { addr, source })?;
        let gateway = gateway::Gateway::new(
            store,
            metrics,
            config.max_concurrent_requests,
            config.idle_timeout,
            retriever,
        );
        let key = bound.to_string();
        let mut service = Service::new("gateway".into(), gateway);
        service.add_tcp(&key);
        let mut fds = Fds::new();
        // pingora takes the descriptor over (and closes it when done).
        fds.add(key, listener.into_raw_fd());
        let fds = Arc::new(parking_lot::Mutex::new(fds));

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.threads)
            .thread_name("edge-http")
            .enable_all()
            .build()
            .map_err(|source| EdgeError::Runtime { source })?;
        let (watch_tx, watch_rx) = tokio::sync::watch::channel(false);
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("edge-main".into())
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
        tracing::info!(addr = %bound, "HTTP gateway listening");
        Ok(Some(EdgeService {
            addr: bound,
            stopped: done_rx,
        }))
    }

    /// The address the gateway listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits until the gateway has stopped (after shutdown).
    pub async fn stopped(self) {
        let _ = self.stopped.await;
    }
}
