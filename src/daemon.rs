//! `gridedge run`: the edge process. It owns the services (DNS, admin, the
//! HTTP gateway), starts them and stops them cleanly on SIGINT or SIGTERM.
//! DNS and admin share one tokio runtime; the gateway runs on pingora with
//! a runtime of its own (see `edge`), stopped by the same token.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::admin::{self, Metrics};
use crate::config::{Config, RegistryRole};
use crate::content::{BlockStore, StoreError};
use crate::dns::registry::RegistryZone;
use crate::dns::{DnsError, DnsService};
use crate::edge::retrieve::Retriever;
use crate::edge::{EdgeError, EdgeService, Fetcher};
use crate::identity::{Identity, IdentityError};
use crate::net::{NetError, Overlay};
use crate::registry::service::{Registry, RegistryError};

/// Why the edge stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The data directory could not be made.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// The node's identity key could not be loaded.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The registry could not be opened.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The DNS service could not start.
    #[error(transparent)]
    Dns(#[from] DnsError),
    /// The block store could not be opened.
    #[error("cannot open the content store: {0}")]
    Content(#[from] StoreError),
    /// The HTTP gateway could not start.
    #[error(transparent)]
    Edge(#[from] EdgeError),
    /// The overlay could not start.
    #[error(transparent)]
    Overlay(#[from] NetError),
    /// The admin listener could not be bound.
    #[error("cannot listen on admin {addr}: {source}")]
    Admin {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    /// The HTTPS front could not be bound.
    #[error("cannot listen on HTTPS {addr}: {source}")]
    Https {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Runs the edge until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| RunError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let identity = Identity::load_or_create(&config.data_dir)?;
    tracing::info!(node = %identity.node_id(), data_dir = %config.data_dir.display(), "starting gridedge");
    let metrics = Arc::new(Metrics::new());
    let registry = match &config.registry {
        Some(rc) => Some(Arc::new(Registry::open(rc, metrics.clone())?)),
        None => None,
    };
    // Opening indexes every block file; off the async threads.
    let content = config.content.clone();
    let (store, report) = tokio::task::spawn_blocking(move || {
        BlockStore::open(&content.store_dir, content.max_bytes)
    })
    .await
    .expect("opening the store does not panic")?;
    tracing::info!(
        dir = %config.content.store_dir.display(),
        blocks = report.blocks,
        "content store open"
    );
    let store = Arc::new(store);
    let (retriever, overlay_task) = match &config.overlay {
        Some(net) => {
            let started =
                Overlay::start(net.clone(), identity.secret_bytes(), shutdown.clone()).await?;
            let fetcher = Fetcher::new(config.edge.fetch_timeout, config.content.max_put_bytes)
                .only_if_cached();
            let retriever = Arc::new(Retriever::new(started.overlay, store.clone(), fetcher));
            tokio::spawn(crate::edge::retrieve::keep(
                retriever.clone(),
                started.stored,
                shutdown.clone(),
            ));
            tokio::spawn(retriever.clone().reannounce(shutdown.clone()));
            (Some(retriever), Some(started.task))
        }
        None => (None, None),
    };
    let edge = EdgeService::start(
        &config.edge,
        store.clone(),
        metrics.clone(),
        retriever.clone(),
        shutdown.clone(),
    )?;
    let http_cache = EdgeService::open_cache(&config.edge)?;
    let proxy = match http_cache {
        Some(cache) => EdgeService::start_proxy(
            &config.edge,
            cache,
            metrics.clone(),
            registry.clone(),
            edge.as_ref().map(EdgeService::addr),
            retriever.as_ref().map(|r| r.overlay().clone()),
            shutdown.clone(),
        )?,
        None => None,
    };
    let https = match (&config.edge.proxy, &proxy) {
        (Some(p), Some(running)) => match p.https_listen {
            Some(addr) => match crate::cert::NameIssuer::load(&config.data_dir) {
                Ok(Some(issuer)) => Some(
                    crate::edge::tls::serve(
                        addr,
                        issuer,
                        registry.as_ref().map(|r| r.zone().clone()),
                        p.sites.iter().map(|(host, _)| host.clone()).collect(),
                        p.allow.clone(),
                        running.addr(),
                        shutdown.clone(),
                    )
                    .await
                    .map_err(|source| RunError::Https { addr, source })?,
                ),
                Ok(None) => {
                    tracing::info!(
                        "no local CA: HTTPS for registry names is off (run `gridedge cert dev` to make one)"
                    );
                    None
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot load the local CA: HTTPS for registry names is off");
                    None
                }
            },
            None => None,
        },
        _ => None,
    };
    let registry_zone = registry
        .as_ref()
        .map(|r| RegistryZone::new(r.clone(), config.edge.public_addresses.clone()));
    let dns = DnsService::start(
        &config.dns,
        registry_zone,
        metrics.clone(),
        shutdown.clone(),
    )
    .await?;
    let follower = match (&registry, config.registry.as_ref().map(|r| &r.role)) {
        (Some(registry), Some(RegistryRole::Follower { url, interval })) => {
            let client = crate::admin::client::AdminClient::new(url)
                .expect("the config checked the follow URL");
            tracing::info!(sequencer = %url, "registry: following");
            Some(tokio::spawn(crate::registry::follow::follow(
                registry.clone(),
                client,
                *interval,
                metrics.clone(),
                shutdown.clone(),
            )))
        }
        _ => None,
    };
    let admin = match config.admin.listen {
        Some(addr) => Some(
            admin::serve(
                addr,
                metrics.clone(),
                registry.clone(),
                Some((store.clone(), config.content.max_put_bytes)),
                retriever.clone(),
                http_cache,
                shutdown.clone(),
            )
            .await
            .map_err(|source| RunError::Admin { addr, source })?,
        ),
        None => None,
    };
    tracing::info!("ready");
    shutdown.cancelled().await;
    tracing::info!("shutting down");
    dns.stopped().await;
    if let Some(follower) = follower {
        let _ = follower.await;
    }
    if let Some(admin) = admin {
        let _ = admin.await;
    }
    if let Some(edge) = edge {
        edge.stopped().await;
    }
    if let Some(proxy) = proxy {
        proxy.stopped().await;
    }
    if let Some(https) = https {
        let _ = https.await;
    }
    if let Some(task) = overlay_task {
        let _ = task.await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Cancels `token` on the first SIGINT or SIGTERM.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("installing a SIGTERM handler");
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        token.cancel();
    });
}
