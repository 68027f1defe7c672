//! The overlay core: protocol logic with no IO and no clock.
//!
//! Everything here is a deterministic state machine in the style of
//! quinn-proto (see DESIGN.md, "The core idea"). A driver (`src/net/` on
//! libp2p, `src/sim/` with a virtual clock) feeds a [`Node`] with
//! [`Node::handle_message`] and [`Node::handle_timeout`], and drains it with
//! [`Node::poll_transmit`], [`Node::poll_timeout`] and [`Node::poll_event`].
//! Time is always an argument (`now: Instant`); randomness comes from the
//! seeded [`OverlayRng`] the driver hands in. A simulation is therefore
//! replayable from its seed.
//!
//! Concerns, one per file:
//!
//! - [`wire`]: the versioned binary encoding of every message between peers;
//! - [`swim`]: SWIM membership and failure detection with the Lifeguard
//!   refinements, built from [`suspicion`] (shrinking suspicion timeouts),
//!   [`awareness`] (local health) and [`broadcast`] (the piggyback queue);
//! - [`coord`]: Vivaldi network coordinates with height, and Pharos
//!   (a global coordinate plus one inside the local cluster);
//! - [`idmap`]: maps keyed by peer with a cheap keyed hash (the hot path);
//! - [`load`]: per-node load that rides on every packet;
//! - [`trust`]: local feedback, PowerTrust aggregation and the filter on
//!   peers in bad standing; [`score_manager`]: one peer's part of the
//!   distributed aggregation;
//! - [`node`]: the [`Node`] that composes them, and the peer cache that
//!   later peer selection reads;
//! - [`config`]: LAN and WAN presets, every constant explained.

pub mod awareness;
pub mod broadcast;
pub mod config;
pub mod coord;
pub mod idmap;
pub mod load;
pub mod node;
pub mod pgrid;
pub mod pgrid_node;
pub mod reputation;
pub mod score_manager;
pub mod suspicion;
pub mod swim;
pub mod trust;
pub mod wire;

pub use config::{Config, Preset};
pub use coord::{Coordinate, PeerCoord, estimate_rtt};
pub use load::Load;
pub use node::{Event, Node, PeerInfo, Transmit};
pub use swim::MemberState;

/// The seeded random number generator a driver hands to a [`Node`].
///
/// A concrete type (not a generic) keeps `Node` simple to embed; ChaCha8 is
/// fast, portable and reproducible across platforms, which replay needs.
pub type OverlayRng = rand_chacha::ChaCha8Rng;

/// The identity of a peer inside the overlay core.
///
/// The core works on a compact 64-bit id, not on the full libp2p `PeerId`:
/// a simulated 10,000-node cluster holds 10^8 membership entries, and the id
/// is on every gossip update on the wire. The network driver derives it from
/// the peer's Ed25519 key (the first 8 bytes of its hash) and keeps the map
/// back to the `PeerId` and its addresses; it must refuse a second key whose
/// id collides with a known one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NodeId(pub u64);

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A member's incarnation number: only the member itself raises it, to
/// refute a suspicion about it (SWIM, Das et al. 2002, section 4.2).
pub type Incarnation = u32;
