//! The deterministic simulator: the real overlay core, many nodes, one
//! thread, a virtual clock.
//!
//! As TigerBeetle's VOPR does for its replicas, the simulator runs the very
//! [`crate::overlay::Node`] the daemon runs, over a simulated network
//! ([`net`]) with latencies from a measured matrix ([`matrix`]), loss, slow
//! nodes, crashes and partitions, all drawn from one seed: the same seed
//! gives the same run, and a failing run prints its seed.
//!
//! The experiments are library entry points the CLI wires up
//! (`gridedge sim gossip`, `gridedge sim coords`): [`run_gossip`] and
//! [`run_coords`] take their options, report progress through a callback
//! (for stderr), and return a report that prints as a table (`Display`) or
//! serialises to JSON.

pub mod cli;
pub mod coords;
pub mod gossip;
pub mod matrix;
pub mod net;
pub mod pgrid;
pub mod stats;
pub mod trust;

pub use cli::{SimCliError, SimCommand};
pub use coords::{CoordsOpts, CoordsReport, run_coords};
pub use gossip::{GossipOpts, GossipReport, run_gossip};
pub use matrix::MatrixError;

use std::time::Duration;

use crate::overlay::NodeId;

/// Errors of a simulation run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// The latency matrix could not be loaded (the operator's input).
    #[error(transparent)]
    Matrix(#[from] MatrixError),
    /// A packet the real core sent failed to decode at its receiver: the
    /// encoder and decoder disagree, a bug in the core.
    #[error("{count} packets sent by the core failed to decode (replay with --seed {seed})")]
    UndecodablePackets {
        /// The seed that replays the run.
        seed: u64,
        /// Packets that failed to decode.
        count: u64,
    },
}

/// How far a long simulation has come, for a progress line on stderr.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// Simulated time so far.
    pub simulated: Duration,
    /// Simulated time of the whole run.
    pub total: Duration,
    /// Simulator events processed so far.
    pub events: u64,
}

/// The id of simulated node `i`. Ascending in `i`, so experiments can map
/// an id back to its index by binary search.
pub fn node_id(i: usize) -> NodeId {
    NodeId(i as u64 + 1)
}
