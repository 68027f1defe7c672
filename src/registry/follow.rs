//! A follower's pull loop: ask the sequencer's admin API for the blocks
//! above our height, verify and apply them, again and again. A refused
//! block (tampered, forked, badly sealed) changes nothing: the last good
//! state keeps being served, and the loop keeps asking, so a sequencer that
//! fixes its feed is followed again.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::admin::Metrics;
use crate::admin::client::AdminClient;
use crate::registry::block::decode_block_batch;
use crate::registry::service::Registry;
use crate::registry::source::{MAX_BLOCKS_PER_FETCH, RegistrySource};

/// Pulls from `client` every `interval` until `shutdown`; a full batch is
/// followed by the next at once, so a far-behind follower catches up fast.
pub async fn follow(
    registry: Arc<Registry>,
    client: AdminClient,
    interval: Duration,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    // Problems are logged at warn when they start and at debug while they
    // last, so a sequencer that is down does not flood the log.
    let mut failing = false;
    let mut wait = Duration::ZERO;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        wait = interval;
        match pull_once(&registry, &client).await {
            Ok(fetched) => {
                if failing {
                    tracing::info!(
                        height = registry.read().height(),
                        "registry: following again"
                    );
                }
                failing = false;
                if fetched == MAX_BLOCKS_PER_FETCH {
                    wait = Duration::ZERO;
                }
            }
            Err(message) => {
                metrics.registry_follow_errors.inc();
                let height = registry.read().height();
                if failing {
                    tracing::debug!(%message, height, "registry: follow failed");
                } else {
                    tracing::warn!(%message, height, "registry: follow failed; serving the last good state");
                }
                failing = true;
            }
        }
    }
}

/// One pull: returns how many blocks came.
async fn pull_once(registry: &Arc<Registry>, client: &AdminClient) -> Result<usize, String> {
    let since = registry.read().height();
    let path = format!("/registry/blocks?since={since}&max={MAX_BLOCKS_PER_FETCH}");
    let response = client.get(&path).await.map_err(|e| e.to_string())?;
    if !response.status.is_success() {
        return Err(format!(
            "sequencer answered {}: {}",
            response.status,
            response.text()
        ));
    }
    let blocks = decode_block_batch(&response.body, MAX_BLOCKS_PER_FETCH)
        .map_err(|e| format!("sequencer sent a malformed block batch: {e}"))?;
    let fetched = blocks.len();
    let applied = registry
        .apply_blocks(blocks)
        .await
        .map_err(|e| format!("refused a block from the sequencer: {e}"))?;
    if applied > 0 {
        tracing::debug!(
            applied,
            height = registry.read().height(),
            "registry: blocks applied"
        );
    }
    Ok(fetched)
}
