//! Objects this edge does not have, fetched from the edges that do, and
//! objects this edge keeps for the overlay.
//!
//! [`Retriever::fetch`]: P-Grid names the holders of a CID (its
//! responsible peers, their replicas and the edges that announced it), the
//! overlay ranks them by reputation, predicted RTT and load, and the
//! nearest is asked for the whole DAG as a CAR; every block is checked by
//! [`Fetcher`] before it is stored, and the next holder is tried on
//! failure. Each outcome becomes reputation feedback: a verified DAG is
//! good, bad data is a wrong hash, an unreachable or silent peer a
//! timeout (a 404 is not rated: the holder index may be stale). Once the
//! object is here the edge announces itself as a holder, so the next edge
//! can fetch from it (caching at every hop). Concurrent fetches of one CID
//! wait for one.
//!
//! [`keep`]: the values the overlay stores here, for which this edge is one
//! of the `overlay.replication` peers of its path, are fetched and pinned,
//! so a put survives the loss of its origin.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::content::{BlockStore, Cid, StoreError};
use crate::edge::fetch::{Fault, FetchError, FetchSummary, Fetcher, PeerUrl};
use crate::net::{NetError, Overlay, Stored, content_key};
use crate::overlay::trust::Feedback;

/// Most CIDs fetched at once; a fetch of another waits for a slot.
pub const MAX_CONCURRENT_FETCHES: usize = 64;

/// Most holders tried for one fetch.
pub const MAX_TRIES: usize = 16;

/// Why an object could not be fetched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RetrieveError {
    /// The overlay could not be asked, or did not answer (peers or local).
    #[error("the overlay lookup failed: {0}")]
    Lookup(#[from] NetError),
    /// No edge holds it (the object is unknown to the overlay).
    #[error("no edge holds {cid}")]
    NoHolders {
        /// What was asked for.
        cid: Cid,
    },
    /// Every holder asked failed; each reason is listed.
    #[error("every holder of {cid} failed: {}", .tried.join("; "))]
    AllFailed {
        /// What was asked for.
        cid: Cid,
        /// One line per holder tried.
        tried: Vec<String>,
    },
    /// The local store failed.
    #[error("the local store: {0}")]
    Store(#[from] StoreError),
}

/// Where an object came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retrieved {
    /// It was here, whole.
    Local,
    /// It was fetched from this holder's gateway.
    Peer {
        /// The gateway.
        from: String,
        /// What arrived.
        summary: FetchSummary,
    },
}

/// Fetches objects from holders through the overlay.
pub struct Retriever {
    overlay: Overlay,
    store: Arc<BlockStore>,
    fetcher: Fetcher,
    /// One lock per CID being fetched: a second fetch of it waits for the
    /// first, then finds it here.
    inflight: parking_lot::Mutex<HashMap<Cid, Arc<tokio::sync::Mutex<()>>>>,
    slots: tokio::sync::Semaphore,
}

impl Retriever {
    /// A retriever over `overlay` into `store`.
    pub fn new(overlay: Overlay, store: Arc<BlockStore>, fetcher: Fetcher) -> Self {
        Self {
            overlay,
            store,
            fetcher,
            inflight: parking_lot::Mutex::new(HashMap::new()),
            slots: tokio::sync::Semaphore::new(MAX_CONCURRENT_FETCHES),
        }
    }

    /// The overlay it asks.
    pub fn overlay(&self) -> &Overlay {
        &self.overlay
    }

    /// Whether the whole DAG under `cid` is here.
    pub async fn is_whole(&self, cid: &Cid) -> Result<bool, StoreError> {
        let store = self.store.clone();
        let cid = *cid;
        tokio::task::spawn_blocking(move || {
            if !store.has(&cid) {
                return Ok(false);
            }
            Ok(store.walk_dag(cid)?.missing.is_empty())
        })
        .await
        .expect("a DAG walk does not panic")
    }

    /// Makes the whole DAG under `cid` present here, from the holders if
    /// need be, and pins it if `pin`.
    pub async fn fetch(&self, cid: &Cid, pin: bool) -> Result<Retrieved, RetrieveError> {
        let lock = self
            .inflight
            .lock()
            .entry(*cid)
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(())))
            .clone();
        let result = {
            let _one = lock.lock().await;
            self.fetch_once(cid, pin).await
        };
        let mut inflight = self.inflight.lock();
        if Arc::strong_count(&lock) <= 2 {
            inflight.remove(cid);
        }
        result
    }

    async fn fetch_once(&self, cid: &Cid, pin: bool) -> Result<Retrieved, RetrieveError> {
        if self.is_whole(cid).await? {
            if pin {
                self.store.pin(cid)?;
            }
            return Ok(Retrieved::Local);
        }
        let _slot = self.slots.acquire().await.expect("never closed");
        let key = content_key(cid);
        let holders = self.overlay.holders(key).await?;
        if holders.is_empty() {
            return Err(RetrieveError::NoHolders { cid: *cid });
        }
        let mut tried = Vec::new();
        for holder in holders.into_iter().take(MAX_TRIES) {
            let url = match PeerUrl::parse(&holder.http) {
                Ok(url) => url,
                Err(e) => {
                    tried.push(e.to_string());
                    continue;
                }
            };
            match self
                .fetcher
                .fetch_dag(&url, cid, self.store.clone(), pin, None)
                .await
            {
                Ok(summary) => {
                    self.overlay.record(holder.node, Feedback::Verified);
                    tracing::info!(%cid, from = %url, blocks = summary.blocks, bytes = summary.bytes, "fetched from a holder");
                    self.announce(key);
                    return Ok(Retrieved::Peer {
                        from: holder.http,
                        summary,
                    });
                }
                Err(e) => {
                    tracing::info!(%cid, from = %url, error = %e, fault = %e.fault(), "a holder failed; trying the next");
                    match (e.fault(), &e) {
                        (Fault::Peer, _) => self.overlay.record(holder.node, Feedback::WrongHash),
                        (Fault::Unavailable, FetchError::NotFound { .. }) => {}
                        (Fault::Unavailable, _) => {
                            self.overlay.record(holder.node, Feedback::Timeout)
                        }
                        (Fault::Local, _) => {
                            if let FetchError::Store(e) = e {
                                return Err(RetrieveError::Store(e));
                            }
                        }
                    }
                    tried.push(e.to_string());
                }
            }
        }
        Err(RetrieveError::AllFailed { cid: *cid, tried })
    }

    /// Registers this edge as a holder of `key`, in the background.
    pub fn announce(&self, key: [u8; 32]) {
        let overlay = self.overlay.clone();
        tokio::spawn(async move {
            if let Err(e) = overlay.announce(key).await {
                tracing::debug!(error = %e, "announce failed");
            }
        });
    }

    /// Publishes an object put on this edge: this edge announces itself as
    /// a holder, and the CID goes to the responsible peers, which fetch
    /// and pin it (`overlay.replication` of them).
    pub async fn publish(&self, cid: &Cid) -> Result<(), NetError> {
        let key = content_key(cid);
        self.overlay.announce(key).await?;
        self.overlay.put(key, cid.to_string().into_bytes()).await
    }
}

/// Delays before each try to keep an object, seconds.
const KEEP_RETRY_SECS: [u64; 4] = [0, 2, 10, 30];

/// Objects kept at once; more wait in the overlay's queue.
const MAX_KEEPING: usize = 8;

/// Fetches and pins the objects the overlay stores here and this edge is
/// to keep, until `shutdown`.
pub async fn keep(
    retriever: Arc<Retriever>,
    mut stored: mpsc::Receiver<Stored>,
    shutdown: CancellationToken,
) {
    let mut keeping = tokio::task::JoinSet::new();
    loop {
        while keeping.len() >= MAX_KEEPING {
            keeping.join_next().await;
        }
        let value = tokio::select! {
            _ = shutdown.cancelled() => return,
            Some(_) = keeping.join_next(), if !keeping.is_empty() => continue,
            value = stored.recv() => match value {
                Some(v) => v,
                None => return,
            },
        };
        let Some(cid) = std::str::from_utf8(&value.value)
            .ok()
            .and_then(|text| text.parse::<Cid>().ok())
        else {
            tracing::debug!("overlay value is not a CID; not kept");
            continue;
        };
        if content_key(&cid) != value.key {
            tracing::debug!(%cid, "overlay value stored under another key; not kept");
            continue;
        }
        let retriever = retriever.clone();
        keeping.spawn(async move {
            // The value can arrive before the origin's announcement, or
            // before any holder has the blocks: try again a few times.
            for delay_secs in KEEP_RETRY_SECS {
                tokio::time::sleep(std::time::Duration::from_secs(delay_secs)).await;
                match retriever.fetch(&cid, true).await {
                    Ok(Retrieved::Local) => return,
                    Ok(Retrieved::Peer { from, .. }) => {
                        tracing::info!(%cid, %from, "keeping a replica");
                        return;
                    }
                    Err(e) => tracing::info!(%cid, error = %e, "cannot keep a replica yet"),
                }
            }
            tracing::warn!(%cid, "gave up keeping a replica");
        });
    }
}
