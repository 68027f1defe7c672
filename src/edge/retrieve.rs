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
use crate::overlay::NodeId;
use crate::overlay::pgrid_node::HOLDER_TTL_MS;
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
    /// need be (and `hint`, a holder named by other means, among them), and
    /// pins it if `pin`.
    pub async fn fetch(
        &self,
        cid: &Cid,
        pin: bool,
        hint: Option<NodeId>,
    ) -> Result<Retrieved, RetrieveError> {
        let lock = self
            .inflight
            .lock()
            .entry(*cid)
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(())))
            .clone();
        // Removes the entry when the last waiter is done, or gives up (a
        // client that hangs up cancels this future mid-way).
        let _guard = InflightGuard {
            map: &self.inflight,
            cid: *cid,
            lock: lock.clone(),
        };
        let _one = lock.lock().await;
        match self.fetch_once(cid, pin, hint).await {
            // Just after a publish, the holder index may not have reached
            // the replica that answered: one more look a moment later.
            Err(RetrieveError::NoHolders { .. } | RetrieveError::AllFailed { .. }) => {
                tokio::time::sleep(RETRY_LOOKUP_AFTER).await;
                self.fetch_once(cid, pin, hint).await
            }
            done => done,
        }
    }

    async fn fetch_once(
        &self,
        cid: &Cid,
        pin: bool,
        hint: Option<NodeId>,
    ) -> Result<Retrieved, RetrieveError> {
        if self.is_whole(cid).await? {
            if pin {
                self.store.pin(cid)?;
            }
            return Ok(Retrieved::Local);
        }
        let _slot = self.slots.acquire().await.expect("never closed");
        let key = content_key(cid);
        let holders = self.overlay.holders(key, hint.as_slice()).await?;
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
                    // Rated: bad data, and a peer that cannot be reached
                    // or goes silent. Not rated: a 404 (the index may be
                    // stale), another status (busy), an object past our
                    // own size bound.
                    match (e.fault(), &e) {
                        (_, FetchError::TooLarge { .. }) => {}
                        (Fault::Peer, _) => self.overlay.record(holder.node, Feedback::WrongHash),
                        (
                            Fault::Unavailable,
                            FetchError::Unreachable { .. } | FetchError::Timeout { .. },
                        ) => self.overlay.record(holder.node, Feedback::Timeout),
                        (Fault::Unavailable, _) => {}
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
    /// and pin it (`overlay.replication` of them). The value names this
    /// edge too (`<cid> <node id>`), so a keeper can fetch from it when
    /// its own holder index does not list it.
    pub async fn publish(&self, cid: &Cid) -> Result<(), NetError> {
        let key = content_key(cid);
        self.overlay.announce(key).await?;
        let value = format!("{cid} {}", self.overlay.node_id());
        self.overlay.put(key, value.into_bytes()).await
    }

    /// Announces every pinned object again, every half holder lifetime,
    /// so the holder index does not forget this edge; until `shutdown`.
    pub async fn reannounce(self: Arc<Self>, shutdown: CancellationToken) {
        let period = std::time::Duration::from_millis(HOLDER_TTL_MS / 2);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
            for cid in self.store.pins().into_iter().take(MAX_REANNOUNCE) {
                if shutdown.is_cancelled() {
                    return;
                }
                if let Err(e) = self.overlay.announce(content_key(&cid)).await {
                    tracing::debug!(%cid, error = %e, "re-announce failed");
                }
            }
        }
    }
}

/// How long a fetch that found no holder to deliver waits before it looks
/// up the holders once more (a registration copies to a path's replicas
/// within a round trip or two).
const RETRY_LOOKUP_AFTER: std::time::Duration = std::time::Duration::from_millis(500);

/// Most pinned objects announced again per period: each is one P-Grid
/// lookup, and an edge with more pins has them at its replicas anyway.
const MAX_REANNOUNCE: usize = 4096;

/// Drops a CID's in-flight entry when its last user is done with it.
struct InflightGuard<'a> {
    map: &'a parking_lot::Mutex<HashMap<Cid, Arc<tokio::sync::Mutex<()>>>>,
    cid: Cid,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.map.lock();
        // Ours, and the map's: nobody else waits on it.
        if Arc::strong_count(&self.lock) <= 2 {
            map.remove(&self.cid);
        }
    }
}

/// A stored value: `<cid>` or `<cid> <origin node id>`.
fn parse_value(value: &[u8]) -> Option<(Cid, Option<NodeId>)> {
    let text = std::str::from_utf8(value).ok()?;
    let mut parts = text.split(' ');
    let cid = parts.next()?.parse::<Cid>().ok()?;
    let origin = match parts.next() {
        Some(id) => Some(NodeId(u64::from_str_radix(id, 16).ok()?)),
        None => None,
    };
    if parts.next().is_some() {
        return None;
    }
    Some((cid, origin))
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
        let Some((cid, origin)) = parse_value(&value.value) else {
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
                match retriever.fetch(&cid, true, origin).await {
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
