//! Overlay configuration: the LAN and WAN presets, every constant explained.
//!
//! The numbers follow hashicorp/memberlist's `DefaultLANConfig` and
//! `DefaultWANConfig` (themselves tuned in the Lifeguard paper, Dadgar et al.
//! 2018) and serf's `coordinate.DefaultConfig`, so that operators who know
//! Consul find the same knobs. The `src/config/` layer turns the TOML into
//! this struct; here it is already validated and typed.

use std::time::Duration;

use super::NodeId;
use super::coord::VivaldiConfig;
use super::pgrid::PGridConfig;

/// Which network the defaults are tuned for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// Peers in one data centre or one region: RTTs of a few milliseconds.
    Lan,
    /// Peers across the internet: RTTs up to about a second, more loss.
    Wan,
}

/// Settings of one overlay [`Node`](super::Node).
#[derive(Clone, Debug)]
pub struct Config {
    /// Time between two failure-detection probes (SWIM's protocol period).
    /// Scaled up by the local health multiplier (Lifeguard section 4.1).
    pub probe_interval: Duration,
    /// How long to wait for a direct ack before asking `indirect_checks`
    /// peers to probe for us. Must exceed the RTT to almost every peer, and
    /// is also scaled by local health.
    pub probe_timeout: Duration,
    /// Number of peers asked to probe indirectly (SWIM's k, section 3.1).
    pub indirect_checks: usize,
    /// Multiplier of the minimum suspicion timeout:
    /// `suspicion_mult * log10(N) * probe_interval`. It is also the number
    /// of expected independent confirmations plus two (Lifeguard 4.2).
    pub suspicion_mult: u32,
    /// The maximum suspicion timeout, as a multiple of the minimum; a
    /// suspicion with no confirmations runs this long.
    pub suspicion_max_timeout_mult: u32,
    /// λ: a membership update is piggybacked at most
    /// `retransmit_mult * ceil(log10(N + 1))` times (SWIM section 4.1).
    pub retransmit_mult: u32,
    /// Time between two gossip rounds that push queued updates.
    pub gossip_interval: Duration,
    /// Number of random peers each gossip round sends to.
    pub gossip_nodes: usize,
    /// For how long a dead peer still receives gossip (so it can learn it
    /// was declared dead and refute), and stays in the member table.
    pub gossip_to_the_dead: Duration,
    /// Base period of the anti-entropy full state exchange with one random
    /// peer; scaled by `log2(N/32)` above 32 members as memberlist does, so
    /// its cost per node stays near flat.
    pub push_pull_interval: Duration,
    /// How often a join's push-pull is repeated while no member is known:
    /// the transport may lose it, and memberlist's join over TCP would
    /// fail and be retried by the operator's agent.
    pub join_retry_interval: Duration,
    /// How often a node considers a push-pull with a member it declared
    /// dead and forgot (serf's `ReconnectInterval`): a member that was only
    /// cut off, by a partition, comes back this way.
    pub reconnect_interval: Duration,
    /// For how long a forgotten dead member is still tried (serf's
    /// `ReconnectTimeout`, 24 h by default).
    pub reconnect_timeout: Duration,
    /// Maximum local health score; timeouts are scaled by `score + 1`.
    pub awareness_max_multiplier: u32,
    /// Maximum bytes of piggybacked updates in one packet (memberlist keeps
    /// a packet under a UDP datagram; we keep the same budget so one packet
    /// is one frame on any transport).
    pub max_piggyback_bytes: usize,
    /// Maximum size of the member table. Bounds memory and push-pull size.
    pub max_members: usize,
    /// Maximum number of peers whose coordinate and load are cached for
    /// peer selection; the least recently heard is evicted.
    pub max_peer_info: usize,
    /// Maximum number of indirect probes relayed for others at once.
    pub max_pending_relays: usize,
    /// Maximum queued outgoing packets; more are dropped and counted.
    pub max_transmit_queue: usize,
    /// Maximum queued events; the oldest are dropped and counted.
    pub max_events: usize,
    /// Vivaldi and Pharos settings.
    pub vivaldi: VivaldiConfig,
    /// Pharos anchors: well-known peers spread over the world. A node's
    /// cluster is its nearest anchor by measured RTT (Pharos section 3, after
    /// the landmark binning of Ratnasamy et al. 2002). Empty disables the
    /// local coordinate.
    pub landmarks: Vec<NodeId>,
    /// P-Grid's trie parameters.
    pub pgrid: PGridConfig,
    /// How long a P-Grid hop may take to answer before the next
    /// reference is tried: a few RTTs.
    pub pgrid_hop_timeout: Duration,
    /// Answers a peer keeps from the queries it relays (caching at every
    /// hop).
    pub pgrid_cache_entries: usize,
    /// Time between two P-Grid exchanges with a random live member (and a
    /// new member is met at once). `None` runs no exchanges: a gossip-only
    /// simulation measures SWIM alone.
    pub pgrid_exchange_interval: Option<Duration>,
    /// Length of a reputation epoch (the score managers' aggregation);
    /// `None` runs no aggregation over the network (a gossip-only
    /// simulation, or a node whose driver has no wall clock).
    pub trust_epoch: Option<Duration>,
    /// One round of the distributed walk: a few RTTs, so a round's copies
    /// arrive within it.
    pub trust_round: Duration,
}

impl Config {
    /// The defaults for `preset`.
    pub fn preset(preset: Preset) -> Self {
        match preset {
            Preset::Lan => Self::lan(),
            Preset::Wan => Self::wan(),
        }
    }

    /// memberlist's `DefaultLANConfig`: detects a crash in a few seconds on
    /// a LAN; with N = 10,000 the minimum suspicion timeout is 16 s.
    pub fn lan() -> Self {
        Self {
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_millis(500),
            indirect_checks: 3,
            suspicion_mult: 4,
            suspicion_max_timeout_mult: 6,
            retransmit_mult: 4,
            gossip_interval: Duration::from_millis(200),
            gossip_nodes: 3,
            gossip_to_the_dead: Duration::from_secs(30),
            push_pull_interval: Duration::from_secs(30),
            join_retry_interval: Duration::from_secs(2),
            reconnect_interval: Duration::from_secs(30),
            reconnect_timeout: Duration::from_secs(24 * 3600),
            awareness_max_multiplier: 8,
            max_piggyback_bytes: 1200,
            max_members: 65_536,
            max_peer_info: 512,
            max_pending_relays: 256,
            max_transmit_queue: 1024,
            max_events: 4096,
            vivaldi: VivaldiConfig::default(),
            landmarks: Vec::new(),
            pgrid: PGridConfig::default(),
            // LAN RTTs are milliseconds; a hop that takes a second is gone.
            pgrid_hop_timeout: Duration::from_secs(1),
            pgrid_cache_entries: 4096,
            // Paths settle in tens of exchanges per peer (sim pgrid), so
            // one every 5 s settles a small edge in a few minutes while
            // costing one packet pair per peer per interval.
            pgrid_exchange_interval: Some(Duration::from_secs(5)),
            // A minute: a peer that turns bad is out of every edge's
            // choices within about two, at a report, 8 rounds of scores
            // and a query per peer per minute.
            trust_epoch: Some(Duration::from_secs(60)),
            trust_round: Duration::from_secs(1),
        }
    }

    /// memberlist's `DefaultWANConfig`: the probe timeout of 3 s covers the
    /// worst internet RTTs (PlanetLab's worst median is 675 ms), and the
    /// larger suspicion multiplier tolerates the loss of long paths.
    pub fn wan() -> Self {
        Self {
            probe_interval: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(3),
            suspicion_mult: 6,
            gossip_interval: Duration::from_millis(500),
            gossip_nodes: 4,
            gossip_to_the_dead: Duration::from_secs(60),
            push_pull_interval: Duration::from_secs(60),
            join_retry_interval: Duration::from_secs(10),
            // Internet RTTs reach ~700 ms (PlanetLab's worst median).
            pgrid_hop_timeout: Duration::from_secs(3),
            pgrid_exchange_interval: Some(Duration::from_secs(15)),
            // The simulator's epoch (sim trust), and rounds of a few
            // internet RTTs.
            trust_epoch: Some(Duration::from_secs(300)),
            trust_round: Duration::from_secs(3),
            ..Self::lan()
        }
    }

    /// The number of independent confirmations that shrink a suspicion to
    /// its minimum timeout (Lifeguard's K, memberlist `SuspicionMult - 2`).
    pub(crate) fn suspicion_k(&self) -> u32 {
        self.suspicion_mult.saturating_sub(2)
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::lan()
    }
}
