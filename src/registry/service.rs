//! The registry as the running edge holds it: the devnet source behind a
//! lock, shared by the DNS handler (reads), the admin API (reads, submits)
//! and the follower (block intake). Writes run on the blocking pool, since
//! each one `fsync`s the block log before it is acknowledged.

use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::admin::Metrics;
use crate::config::{RegistryConfig, RegistryRole};
use crate::registry::block::Block;
use crate::registry::genesis::{DEVNET_GENESIS, Genesis};
use crate::registry::keys::{self, KeyError};
use crate::registry::model::Zone;
use crate::registry::op::Operation;
use crate::registry::source::{Applied, DevnetSource, Receipt, RegistrySource, SourceError};

/// Why the registry could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The sequencer key file could not be read.
    #[error("registry.sequencer_key_file {path}: {source}")]
    Key {
        path: std::path::PathBuf,
        source: KeyError,
    },
    /// The chain could not be opened.
    #[error("registry: {0}")]
    Source(#[from] SourceError),
}

/// The registry of one edge.
pub struct Registry {
    zone: Zone,
    soa_ttl_secs: u32,
    source: RwLock<DevnetSource>,
    metrics: Arc<Metrics>,
}

impl Registry {
    /// Opens the chain under the configured directory, cutting a torn tail
    /// and replaying every block.
    pub fn open(config: &RegistryConfig, metrics: Arc<Metrics>) -> Result<Self, RegistryError> {
        let key = match &config.role {
            RegistryRole::Sequencer {
                key_file: Some(path),
            } => Some(
                keys::read_key_file(path).map_err(|source| RegistryError::Key {
                    path: path.clone(),
                    source,
                })?,
            ),
            // The devnet's well-known sequencer key, as anvil's accounts.
            RegistryRole::Sequencer { key_file: None } => Some(keys::dev_key(0)),
            RegistryRole::Follower { .. } => None,
        };
        let genesis = match &config.genesis {
            Some(path) => Genesis::load(path).map_err(SourceError::from)?,
            None => Genesis::from_toml_str(DEVNET_GENESIS)
                .expect("the compiled-in devnet genesis is valid (a test checks it)"),
        };
        let (source, recovery) = DevnetSource::open(&config.dir, genesis, key)?;
        if let Some(at) = recovery.truncated_at {
            tracing::warn!(
                offset = at,
                cut_bytes = recovery.cut_bytes,
                "registry: cut a torn block at the end of the log (an unacknowledged write)"
            );
        }
        tracing::info!(
            zone = %config.zone.to_fqdn(),
            height = source.height(),
            names = source.state().len(),
            sequencer = source.is_sequencer(),
            "registry loaded"
        );
        metrics.registry_height.set(source.height() as i64);
        Ok(Self {
            zone: config.zone.clone(),
            soa_ttl_secs: config.soa_ttl_secs,
            source: RwLock::new(source),
            metrics,
        })
    }

    /// The DNS suffix names live under.
    pub fn zone(&self) -> &Zone {
        &self.zone
    }

    /// TTL of the zone's SOA and of negative answers.
    pub fn soa_ttl_secs(&self) -> u32 {
        self.soa_ttl_secs
    }

    /// The chain, for reading. Hold the guard briefly: writers wait on it.
    pub fn read(&self) -> RwLockReadGuard<'_, DevnetSource> {
        // A writer that panicked left the source as it was before the write
        // (every write is all or nothing), so the state is still good.
        self.source.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Validates, seals, stores and applies `op`; returns once durable.
    pub async fn submit(self: &Arc<Self>, op: Operation) -> Result<Receipt, SourceError> {
        let kind = op.body.action.kind();
        let result = self
            .write(move |source| source.submit(op, now_unix()))
            .await;
        match &result {
            Ok(_) => self.metrics.registry_op(kind, "accepted"),
            Err(SourceError::Rejected { source }) => {
                self.metrics.registry_op(kind, source.reason())
            }
            Err(_) => self.metrics.registry_op(kind, "error"),
        }
        result
    }

    /// Seals `count` empty blocks (devnet only, like anvil's mine).
    pub async fn mine(self: &Arc<Self>, count: u64) -> Result<Receipt, SourceError> {
        self.write(move |source| source.mine_empty(count, now_unix()))
            .await
    }

    /// A follower's intake: verifies, stores and applies `blocks` in
    /// order, stopping at the first refused one. Returns how many were new.
    pub async fn apply_blocks(self: &Arc<Self>, blocks: Vec<Block>) -> Result<usize, SourceError> {
        let metrics = self.metrics.clone();
        self.write(move |source| {
            let mut applied = 0;
            for block in blocks {
                match source.apply_block(block) {
                    Ok(Applied::Applied) => applied += 1,
                    Ok(Applied::AlreadyHave) => {}
                    Err(e) => {
                        metrics.registry_blocks_refused.inc();
                        return Err(e);
                    }
                }
            }
            Ok(applied)
        })
        .await
    }

    async fn write<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut DevnetSource) -> Result<T, SourceError> + Send + 'static,
    ) -> Result<T, SourceError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut source = this.source.write().unwrap_or_else(|e| e.into_inner());
            let result = f(&mut source);
            this.metrics.registry_height.set(source.height() as i64);
            result
        })
        .await
        .expect("registry writes do not panic")
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
