//! The overlay [`Node`]: one peer's protocol state, driven from outside.
//!
//! Method groups, in the order a driver uses them (as quinn-proto's
//! `Connection` documents its own):
//!
//! 1. commands from the local node: [`Node::join`], [`Node::leave`],
//!    [`Node::restore_members`], [`Node::load_meter`];
//! 2. inputs: [`Node::handle_message`] for every packet received,
//!    [`Node::handle_timeout`] when the time from `poll_timeout` comes;
//! 3. outputs, drained after every input: [`Node::poll_transmit`] until
//!    `None`, [`Node::poll_event`] until `None`, then [`Node::poll_timeout`];
//! 4. queries for peer selection: [`Node::peer`], [`Node::estimate_rtt_to`].
//!
//! The node composes SWIM ([`super::swim`]), coordinates ([`super::coord`]),
//! load ([`super::load`]) and P-Grid ([`super::pgrid_node`]): coordinates
//! ride on acks and the RTT of each direct probe becomes a coordinate
//! sample; load and piggybacked membership updates ride on every packet,
//! P-Grid's included. P-Grid meets a random live member every
//! `pgrid_exchange_interval` (and every new member at once), routes by the
//! coordinates SWIM measured, and forgets members SWIM declares dead.
//! Trust messages have their kinds on the wire but are not composed here
//! yet; they are dropped.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand::seq::IteratorRandom;

use super::coord::{Coordinates, PeerCoord, estimate_rtt};
use super::idmap::{IdMap, id_map};
use super::load::{Load, LoadMeter};
use super::pgrid::{PGridPeer, Proximity};
use super::pgrid_node::{self, PGridNode, ValueRef};
use super::reputation::Reputation;
use super::swim::{MembershipEvent, Swim, SwimStats};
use super::trust::{Feedback, Standing};
use super::wire::{Body, DecodeError, MAX_PIGGYBACK, Message, Packet};
use super::{Config, Incarnation, MemberState, NodeId, OverlayRng};

/// A packet to send: the driver delivers `payload` to peer `to` as one frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The destination peer.
    pub to: NodeId,
    /// The encoded packet.
    pub payload: Vec<u8>,
}

/// Something the rest of the edge may want to know.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Membership changed.
    Membership(MembershipEvent),
    /// A P-Grid operation finished or failed, a value was stored here, or
    /// this node's path changed.
    PGrid(pgrid_node::Event),
}

/// What this node knows about a peer for peer selection.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PeerInfo {
    /// The peer's coordinates, from its last ack to us.
    pub coord: Option<PeerCoord>,
    /// The peer's load, from its last packet to us.
    pub load: Load,
    /// When we last heard from it.
    pub heard: Instant,
}

/// One overlay peer's state machine.
#[derive(Debug)]
pub struct Node {
    config: Config,
    rng: OverlayRng,
    now: Instant,
    swim: Swim,
    coords: Coordinates,
    load: LoadMeter,
    peers: IdMap<PeerInfo>,
    /// Insertion order of `peers`, for eviction of the oldest.
    peer_order: VecDeque<NodeId>,
    events: VecDeque<Event>,
    decode_errors: u64,
    pgrid: PGridNode,
    /// P-Grid counts time in milliseconds from here.
    start: Instant,
    next_exchange: Option<Instant>,
    /// The distributed reputation, once the driver gave a wall clock.
    reputation: Option<Reputation>,
    /// Reputation messages waiting for a packet.
    trust_out: VecDeque<(NodeId, super::trust::Message)>,
}

/// Predicted RTTs for P-Grid, from the coordinates this node has: its own
/// and those its peers' acks carried. A peer whose coordinate is unknown
/// sorts last (a far peer), so measured peers are preferred.
struct NodeProximity<'a> {
    me: NodeId,
    coords: &'a Coordinates,
    peers: &'a IdMap<PeerInfo>,
}

/// The predicted RTT of a peer with no coordinate, ms: past any real one.
const UNKNOWN_RTT_MS: f64 = 60_000.0;

impl Proximity for NodeProximity<'_> {
    fn rtt_ms(&self, a: NodeId, b: NodeId) -> f64 {
        let coord = |x: NodeId| {
            if x == self.me {
                Some(self.coords.peer_coord())
            } else {
                self.peers.get(&x).and_then(|p| p.coord)
            }
        };
        match (coord(a), coord(b)) {
            (Some(x), Some(y)) => estimate_rtt(&x, &y).as_secs_f64() * 1000.0,
            _ => UNKNOWN_RTT_MS,
        }
    }
}

impl Node {
    /// A node `id` that starts at `now` with randomness from `rng`.
    pub fn new(id: NodeId, config: Config, mut rng: OverlayRng, now: Instant) -> Self {
        let swim = Swim::new(id, config.clone(), &mut rng, now);
        let coords = Coordinates::new(config.vivaldi.clone(), id, &config.landmarks);
        let peers = id_map(&mut rng);
        let pgrid = PGridNode::new(
            PGridPeer::new(id),
            config.pgrid.clone(),
            config.pgrid_hop_timeout.as_millis() as u64,
            config.pgrid_cache_entries,
        );
        let next_exchange = config.pgrid_exchange_interval.map(|i| now + i);
        Self {
            config,
            rng,
            now,
            swim,
            coords,
            load: LoadMeter::default(),
            peers,
            peer_order: VecDeque::new(),
            events: VecDeque::new(),
            decode_errors: 0,
            pgrid,
            start: now,
            next_exchange,
            reputation: None,
            trust_out: VecDeque::new(),
        }
    }

    /// Starts the distributed reputation (if `trust_epoch` is set): at
    /// `now` the wall clock reads `unix_ms`. Epochs and rounds are slotted
    /// by it, so nodes with loosely synced clocks run them together.
    pub fn set_wall_clock(&mut self, now: Instant, unix_ms: u64) {
        let Some(epoch) = self.config.trust_epoch else {
            return;
        };
        let since_start = now.saturating_duration_since(self.start).as_millis() as u64;
        self.reputation = Some(Reputation::new(
            self.swim.id(),
            super::trust::TrustConfig::default(),
            unix_ms.saturating_sub(since_start),
            epoch.as_millis() as u64,
            self.config.trust_round.as_millis() as u64,
        ));
    }

    /// The reputation component, if running.
    pub fn reputation(&self) -> Option<&Reputation> {
        self.reputation.as_ref()
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.swim.id()
    }

    // ---- commands --------------------------------------------------------

    /// Joins the cluster through `seeds` (a push-pull with each).
    pub fn join(&mut self, now: Instant, seeds: &[NodeId]) {
        self.now = now;
        self.swim.join(now, seeds);
    }

    /// Restores known members from a snapshot, as alive, without gossip.
    pub fn restore_members(&mut self, now: Instant, ids: &[NodeId]) {
        self.now = now;
        self.swim.restore_members(now, &mut self.rng, ids);
        // Pharos needs its anchor RTTs early: probe them first.
        let landmarks = self.config.landmarks.clone();
        self.swim.probe_first(&landmarks);
    }

    /// Starts as a member of a formed cluster that already knows every id
    /// in `ids`: [`Node::restore_members`] without announcing this node,
    /// which everyone knows. For a simulation of a cluster in steady state;
    /// a real restart announces itself.
    pub fn restore_formed(&mut self, now: Instant, ids: &[NodeId]) {
        self.restore_members(now, ids);
        self.swim.forget_broadcasts();
    }

    /// Leaves the cluster: gossips `left` and stops probing. The driver
    /// keeps running the node for a few gossip intervals so it spreads.
    pub fn leave(&mut self, now: Instant) {
        self.now = now;
        self.swim.leave();
    }

    /// Stores `value` under `key` at the responsible peers (P-Grid); the
    /// answer comes as an [`Event::PGrid`] with the returned id.
    pub fn put(&mut self, now: Instant, key: [u8; 32], value: ValueRef) -> u64 {
        self.pgrid_op(now, |pgrid, ms, px, rng| pgrid.put(ms, key, value, px, rng))
    }

    /// Reads the values under `key` (P-Grid).
    pub fn get(&mut self, now: Instant, key: [u8; 32]) -> u64 {
        self.pgrid_op(now, |pgrid, ms, px, rng| pgrid.get(ms, key, px, rng))
    }

    /// Finds the peers that hold `key`'s object (P-Grid).
    pub fn holders(&mut self, now: Instant, key: [u8; 32]) -> u64 {
        self.pgrid_op(now, |pgrid, ms, px, rng| pgrid.holders(ms, key, px, rng))
    }

    /// Registers this node as a holder of `key`'s object for a while.
    pub fn announce(&mut self, now: Instant, key: [u8; 32]) -> u64 {
        self.pgrid_op(now, |pgrid, ms, px, rng| pgrid.announce(ms, key, px, rng))
    }

    /// Records the outcome of a content transfer with `peer` (a verified
    /// object, or a wrong hash) as reputation feedback.
    pub fn record(&mut self, now: Instant, peer: NodeId, feedback: Feedback) {
        self.now = now;
        let ms = self.ms(now);
        self.pgrid.record(ms, peer, feedback);
    }

    fn pgrid_op(
        &mut self,
        now: Instant,
        op: impl FnOnce(&mut PGridNode, u64, &dyn Proximity, &mut OverlayRng) -> u64,
    ) -> u64 {
        self.now = now;
        let ms = self.ms(now);
        let px = NodeProximity {
            me: self.swim.id(),
            coords: &self.coords,
            peers: &self.peers,
        };
        let id = op(&mut self.pgrid, ms, &px, &mut self.rng);
        self.drain_pgrid_events();
        id
    }

    fn ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.start).as_millis() as u64
    }

    /// The meter the edge updates as it serves; its reading rides on every
    /// packet.
    pub fn load_meter(&mut self) -> &mut LoadMeter {
        &mut self.load
    }

    // ---- inputs ----------------------------------------------------------

    /// A packet `payload` arrived from peer `from` at `now`.
    ///
    /// A malformed packet is dropped and the error returned, so the driver
    /// can count it against the peer's reputation; it never panics.
    pub fn handle_message(
        &mut self,
        now: Instant,
        from: NodeId,
        payload: &[u8],
    ) -> Result<(), DecodeError> {
        self.now = now;
        let packet = match Packet::decode(payload) {
            Ok(p) => p,
            Err(e) => {
                self.decode_errors += 1;
                return Err(e);
            }
        };
        if from != self.id() {
            self.note_peer(now, from, packet.load, None);
            self.swim.handle_heard(from);
        }
        for update in packet.piggyback {
            self.swim.handle_update(now, &mut self.rng, from, update);
        }
        let message = match packet.message {
            Body::Swim(message) => message,
            Body::PGrid(message) => {
                let ms = self.ms(now);
                let px = NodeProximity {
                    me: self.swim.id(),
                    coords: &self.coords,
                    peers: &self.peers,
                };
                self.pgrid
                    .handle_message(ms, from, message, &px, &mut self.rng);
                self.drain_swim_events();
                self.drain_pgrid_events();
                return Ok(());
            }
            Body::Trust(message) => {
                if let Some(rep) = &mut self.reputation {
                    let peers = self.swim.live_members().count() + 1;
                    rep.handle_message(from, message, &self.pgrid, peers);
                }
                self.drain_swim_events();
                self.drain_reputation();
                return Ok(());
            }
        };
        match message {
            Message::Ping { seq, target } => self.swim.handle_ping(from, seq, target),
            Message::IndirectPing {
                seq,
                target,
                want_nack,
            } => self
                .swim
                .handle_indirect_ping(now, from, seq, target, want_nack),
            Message::Ack { seq, coord } => {
                let rtt = self.swim.handle_ack(now, from, seq);
                if let Some(theirs) = coord {
                    self.note_peer(now, from, packet.load, Some(theirs));
                    if let Some(rtt) = rtt {
                        // An absurd sample is dropped; the coordinate stays.
                        let _ = self.coords.handle_sample(&mut self.rng, from, rtt, &theirs);
                    }
                }
            }
            Message::Nack { seq } => self.swim.handle_nack(seq),
            Message::PushPull(pp) => self.swim.handle_push_pull(now, &mut self.rng, from, pp),
            Message::Gossip => {}
        }
        self.drain_swim_events();
        Ok(())
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        self.swim.handle_timeout(now, &mut self.rng);
        self.drain_swim_events();
        let ms = self.ms(now);
        self.pgrid.handle_timeout(ms);
        if let (Some(at), Some(interval)) =
            (self.next_exchange, self.config.pgrid_exchange_interval)
            && now >= at
        {
            self.next_exchange = Some(now + interval);
            if let Some(peer) = self.swim.live_members().choose(&mut self.rng) {
                self.pgrid.meet(ms, peer);
            }
        }
        if let Some(rep) = &mut self.reputation
            && ms >= rep.poll_timeout()
        {
            let members: Vec<NodeId> = self.swim.live_members().collect();
            let pgrid = &self.pgrid;
            rep.handle_timeout(ms, pgrid, || pgrid.trust_report(ms), &members);
        }
        self.drain_reputation();
        self.drain_pgrid_events();
    }

    /// Moves what reputation produced: messages to self are handled at
    /// once (a node is one of its own managers), the rest wait for a
    /// packet; verdicts go to P-Grid, and a manager caught answering
    /// falsely is rated so and dropped.
    fn drain_reputation(&mut self) {
        let ms = self.ms(self.now);
        let Some(rep) = &mut self.reputation else {
            return;
        };
        let me = self.swim.id();
        let peers = self.swim.live_members().count() + 1;
        // Bounded: a message to self answers at most once (a query with a
        // standing answer), so a few passes empty the queue.
        for _ in 0..4 {
            let mut local = Vec::new();
            while let Some((to, message)) = rep.poll_transmit() {
                if to == me {
                    local.push(message);
                } else if self.trust_out.len() < self.config.max_transmit_queue {
                    self.trust_out.push_back((to, message));
                }
            }
            if local.is_empty() {
                break;
            }
            for message in local {
                rep.handle_message(me, message, &self.pgrid, peers);
            }
        }
        while let Some((peer, standing)) = rep.poll_verdict() {
            self.pgrid.set_standing(peer, standing);
        }
        while let Some(manager) = rep.poll_false_answer() {
            self.pgrid.record(ms, manager, Feedback::FalseAnswer);
            self.pgrid.set_standing(manager, Standing::Bad);
        }
    }

    // ---- outputs ---------------------------------------------------------

    /// The next packet to send, with as many queued updates piggybacked as
    /// fit the byte budget.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let Some(out) = self.swim.poll_outgoing() else {
            return self
                .poll_pgrid_transmit()
                .or_else(|| self.poll_trust_transmit());
        };
        let mut message = out.message;
        if let Message::Ack { coord, .. } = &mut message {
            *coord = Some(self.coords.peer_coord());
        }
        let mut budget = self.config.max_piggyback_bytes;
        let mut piggyback = Vec::new();
        if let Some(u) = out.priority {
            budget = budget.saturating_sub(u.encoded_len());
            piggyback.push(u);
        }
        // A full state exchange carries enough; keep it lean.
        if !matches!(message, Message::PushPull(_)) {
            piggyback.extend(
                self.swim
                    .take_broadcasts(budget, MAX_PIGGYBACK - piggyback.len()),
            );
        }
        let packet = Packet {
            load: self.load.load(self.now),
            message: Body::Swim(message),
            piggyback,
        };
        // The node never builds a packet over the wire limits (push-pull is
        // truncated, piggyback is capped), so encoding cannot fail; if it
        // ever did, dropping the packet is what loss would do anyway.
        let payload = packet.encode().ok()?;
        Some(Transmit {
            to: out.to,
            payload,
        })
    }

    /// A P-Grid message, with load and piggybacked updates as any packet.
    fn poll_pgrid_transmit(&mut self) -> Option<Transmit> {
        loop {
            let out = self.pgrid.poll_transmit()?;
            let piggyback = self
                .swim
                .take_broadcasts(self.config.max_piggyback_bytes, MAX_PIGGYBACK);
            let packet = Packet {
                load: self.load.load(self.now),
                message: Body::PGrid(out.message),
                piggyback,
            };
            // P-Grid bounds what it sends by the wire's limits; a message
            // that still does not encode is dropped, as loss would.
            if let Ok(payload) = packet.encode() {
                return Some(Transmit {
                    to: out.to,
                    payload,
                });
            }
        }
    }

    /// A reputation message, with load and piggybacked updates.
    fn poll_trust_transmit(&mut self) -> Option<Transmit> {
        loop {
            let (to, message) = self.trust_out.pop_front()?;
            let piggyback = self
                .swim
                .take_broadcasts(self.config.max_piggyback_bytes, MAX_PIGGYBACK);
            let packet = Packet {
                load: self.load.load(self.now),
                message: Body::Trust(message),
                piggyback,
            };
            if let Ok(payload) = packet.encode() {
                return Some(Transmit { to, payload });
            }
        }
    }

    /// When `handle_timeout` should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut at = self.swim.poll_timeout();
        if let Some(rep) = &self.reputation {
            at = at.min(self.start + Duration::from_millis(rep.poll_timeout()));
        }
        if let Some(ms) = self.pgrid.poll_timeout() {
            at = at.min(self.start + Duration::from_millis(ms));
        }
        if let Some(exchange) = self.next_exchange {
            at = at.min(exchange);
        }
        Some(at)
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ---- queries ---------------------------------------------------------

    /// This node's coordinates (what its acks carry).
    pub fn coordinates(&self) -> PeerCoord {
        self.coords.peer_coord()
    }

    /// The coordinate state (cluster, sample count).
    pub fn coordinate_state(&self) -> &Coordinates {
        &self.coords
    }

    /// What we know of `peer` for peer selection.
    pub fn peer(&self, peer: NodeId) -> Option<&PeerInfo> {
        self.peers.get(&peer)
    }

    /// Predicted RTT to `peer`, if we have its coordinates.
    pub fn estimate_rtt_to(&self, peer: NodeId) -> Option<Duration> {
        let theirs = self.peers.get(&peer)?.coord?;
        Some(estimate_rtt(&self.coords.peer_coord(), &theirs))
    }

    /// `peer` as a candidate for a request (a holder to fetch from): its
    /// predicted RTT (a peer with no coordinate sorts as far), load and
    /// reputation, for [`super::trust::rank_candidates`].
    pub fn candidate(&self, now: Instant, peer: NodeId) -> super::trust::Candidate {
        super::trust::Candidate {
            peer,
            rtt_ms: self
                .estimate_rtt_to(peer)
                .map_or(UNKNOWN_RTT_MS, |d| d.as_secs_f64() * 1000.0),
            load: self.peers.get(&peer).map(|p| p.load).unwrap_or_default(),
            standing: self.pgrid.standing(peer),
            locally_bad: self.pgrid.locally_bad(self.ms(now), peer),
        }
    }

    /// The state and incarnation of member `id`, if known.
    pub fn member(&self, id: NodeId) -> Option<(MemberState, Incarnation)> {
        self.swim.member(id)
    }

    /// Members other than this node that are alive or suspect.
    pub fn live_members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.swim.live_members()
    }

    /// Number of members known, any state, other than this node.
    pub fn member_count(&self) -> usize {
        self.swim.member_count()
    }

    /// This node's incarnation.
    pub fn incarnation(&self) -> Incarnation {
        self.swim.incarnation()
    }

    /// Local health score (Lifeguard); 0 is healthy.
    pub fn health_score(&self) -> u32 {
        self.swim.health_score()
    }

    /// SWIM counters.
    pub fn swim_stats(&self) -> SwimStats {
        self.swim.stats()
    }

    /// Packets that failed to decode.
    pub fn decode_errors(&self) -> u64 {
        self.decode_errors
    }

    /// The P-Grid state: path, references, replicas, store.
    pub fn pgrid(&self) -> &PGridNode {
        &self.pgrid
    }

    fn note_peer(&mut self, now: Instant, from: NodeId, load: Load, coord: Option<PeerCoord>) {
        if let Some(p) = self.peers.get_mut(&from) {
            p.load = load;
            p.heard = now;
            if coord.is_some() {
                p.coord = coord;
            }
            return;
        }
        if self.config.max_peer_info == 0 {
            return;
        }
        // FIFO eviction is O(1) per packet; an often-heard peer evicted
        // this way is back with its next packet.
        while self.peers.len() >= self.config.max_peer_info {
            match self.peer_order.pop_front() {
                Some(old) => {
                    self.peers.remove(&old);
                }
                None => break,
            }
        }
        self.peers.insert(
            from,
            PeerInfo {
                coord,
                load,
                heard: now,
            },
        );
        self.peer_order.push_back(from);
    }

    fn drain_swim_events(&mut self) {
        while let Some(e) = self.swim.poll_event() {
            match e {
                MembershipEvent::Failed { id } | MembershipEvent::Left { id } => {
                    self.pgrid.forget(id);
                }
                MembershipEvent::Joined { id } if self.config.pgrid_exchange_interval.is_some() => {
                    // A new member is met at once: a joining edge gets a
                    // path in its first seconds, not after a few intervals.
                    let ms = self.ms(self.now);
                    self.pgrid.meet(ms, id);
                }
                _ => {}
            }
            self.push_event(Event::Membership(e));
        }
    }

    fn drain_pgrid_events(&mut self) {
        while let Some(e) = self.pgrid.poll_event() {
            self.push_event(Event::PGrid(e));
        }
    }

    fn push_event(&mut self, event: Event) {
        if self.events.len() >= self.config.max_events {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }
}
