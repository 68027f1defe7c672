//! SWIM membership and failure detection, with the Lifeguard refinements.
//!
//! This is the protocol of hashicorp/memberlist (`state.go`), as a state
//! machine with no IO:
//!
//! - every protocol period a node probes the next member of a shuffled
//!   round-robin list (SWIM, Das et al. 2002, section 4.3), and if no ack
//!   comes within the probe timeout asks `k` random members to probe it
//!   indirectly (section 3.1), and pings it directly once more beside them
//!   (memberlist's fallback ping, which it sends over TCP);
//! - a member that answers neither way is suspected, not killed (section
//!   4.2); the suspicion is gossiped, and the member refutes it by gossiping
//!   `alive` with a higher incarnation; a suspicion not refuted in time
//!   becomes `dead`, after one last ping of the suspect goes unanswered;
//! - the suspicion timeout starts long and shrinks with independent
//!   confirmations ([`super::suspicion`], Lifeguard 4.2); the prober's own
//!   health stretches its probe timing ([`super::awareness`], Lifeguard 4.1);
//!   a probe of a suspect carries the suspicion, so the suspect learns of it
//!   at once (Lifeguard 4.3, "buddy system");
//! - updates ride on every packet ([`super::broadcast`]); a periodic full
//!   state exchange with one random member (push-pull) repairs what gossip
//!   missed, and is how a node joins.
//!
//! The member table is a vector (compact: 24 bytes a member, which matters
//! when a simulation holds 10^8 of them) with a hash index by id, since
//! every piggybacked update looks a member up, plus the probe order.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use rand::Rng;
use rand::seq::SliceRandom;

use super::awareness::Awareness;
use super::broadcast::{BroadcastQueue, retransmit_limit};
use super::idmap::{IdMap, id_map};
use super::suspicion::{self, Suspicion};
use super::wire::{MAX_PUSH_PULL_MEMBERS, MemberEntry, Message, PushPull, Update};
use super::{Config, Incarnation, NodeId, OverlayRng};

/// A member's state (SWIM plus memberlist's `left`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum MemberState {
    /// Answers probes.
    Alive = 0,
    /// Failed a probe; dead unless it refutes in time.
    Suspect = 1,
    /// Declared failed.
    Dead = 2,
    /// Left on purpose.
    Left = 3,
}

impl MemberState {
    /// The state for a wire byte.
    pub fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0 => Self::Alive,
            1 => Self::Suspect,
            2 => Self::Dead,
            3 => Self::Left,
            _ => return None,
        })
    }

    /// Whether the member is still probed and gossiped to.
    pub fn is_live(self) -> bool {
        matches!(self, Self::Alive | Self::Suspect)
    }
}

/// A change in membership, reported through `poll_event`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MembershipEvent {
    /// A member became known, or came back after being dead or gone.
    Joined {
        /// The member.
        id: NodeId,
    },
    /// A member is suspected.
    Suspected {
        /// The member.
        id: NodeId,
    },
    /// A suspected member refuted the suspicion.
    Refuted {
        /// The member.
        id: NodeId,
    },
    /// A member was declared dead.
    Failed {
        /// The member.
        id: NodeId,
    },
    /// A member left.
    Left {
        /// The member.
        id: NodeId,
    },
    /// This node was suspected or declared dead, and refuted it.
    SelfRefuted {
        /// The new incarnation.
        incarnation: Incarnation,
    },
}

#[derive(Clone, Copy, Debug)]
struct Member {
    id: NodeId,
    incarnation: Incarnation,
    /// Seconds since the node's epoch at which the state last changed.
    since_s: u32,
    state: MemberState,
}

/// The probe of the current protocol period.
#[derive(Clone, Debug)]
struct Probe {
    seq: u32,
    target: NodeId,
    sent: Instant,
    indirect_at: Instant,
    indirect_sent: bool,
    /// The second direct ping sent with the indirect ones, and when.
    retry: Option<(u32, Instant)>,
    expected_nacks: u32,
    nacks: u32,
}

/// An indirect probe run on behalf of another member.
#[derive(Clone, Debug)]
struct Relay {
    seq: u32,
    origin: NodeId,
    origin_seq: u32,
    deadline: Instant,
    want_nack: bool,
}

/// A message waiting to be encoded, with an update that must ride first.
#[derive(Clone, Debug)]
pub(crate) struct Outgoing {
    pub(crate) to: NodeId,
    pub(crate) message: Message,
    pub(crate) priority: Option<Update>,
}

/// Counters for operators and simulations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SwimStats {
    /// Probes started.
    pub probes: u64,
    /// Probes that failed (no direct or indirect ack).
    pub failed_probes: u64,
    /// Times this node refuted a suspicion of itself.
    pub refutations: u64,
    /// Outgoing messages dropped because the queue was full.
    pub dropped_transmits: u64,
    /// Events dropped because the queue was full.
    pub dropped_events: u64,
    /// Members refused because the table was full.
    pub refused_members: u64,
}

/// The SWIM/Lifeguard state machine of one node.
#[derive(Debug)]
pub struct Swim {
    config: Config,
    me: NodeId,
    incarnation: Incarnation,
    epoch: Instant,
    /// The member table, in insertion order (sorted after a restore).
    members: Vec<Member>,
    /// Position of each member in `members`.
    index: IdMap<u32>,
    probe_order: Vec<NodeId>,
    probe_index: usize,
    suspicions: BTreeMap<NodeId, Suspicion>,
    /// The suspicions ordered by deadline, so the next timeout is O(log n)
    /// even with hundreds of suspicions running (heavy loss, large N).
    deadlines: BTreeSet<(Instant, NodeId)>,
    awareness: Awareness,
    broadcasts: BroadcastQueue,
    seq: u32,
    probe: Option<Probe>,
    relays: VecDeque<Relay>,
    next_probe: Instant,
    next_gossip: Instant,
    next_push_pull: Instant,
    /// Seeds of a join still unanswered, retried until a member is known.
    join_seeds: Vec<NodeId>,
    next_join: Instant,
    /// Members declared dead and since forgotten by the table, oldest
    /// first, still tried now and then in case they were only cut off
    /// (serf's `reconnect`): how two halves of a healed partition find
    /// each other again.
    failed: VecDeque<(NodeId, u32)>,
    next_reconnect: Instant,
    outbox: VecDeque<Outgoing>,
    events: VecDeque<MembershipEvent>,
    leaving: bool,
    stats: SwimStats,
}

/// Most seeds a join tries: a node is given a few well-known peers, and
/// each costs a full state exchange.
const MAX_JOIN_SEEDS: usize = 16;

/// Most forgotten dead members remembered for reconnection. One answer
/// from across a healed partition merges the whole other side, so a sample
/// of it is enough; the oldest are dropped first.
const MAX_FAILED: usize = 1024;

/// memberlist's `pushPullScale`: above 32 members, stretch the push-pull
/// period by `ceil(log2(n) - log2(32)) + 1`, so that the state exchanged per
/// node per second grows only with log N.
fn push_pull_scale(interval: Duration, n: usize) -> Duration {
    const THRESHOLD: f64 = 32.0;
    if (n as f64) <= THRESHOLD {
        return interval;
    }
    let mult = ((n as f64).log2() - THRESHOLD.log2()).ceil() + 1.0;
    interval * mult as u32
}

impl Swim {
    /// A node alone in its cluster at `now`. Its timers start at random
    /// offsets within one period, so that nodes started together do not
    /// probe in lockstep.
    pub fn new(me: NodeId, config: Config, rng: &mut OverlayRng, now: Instant) -> Self {
        let jitter = |rng: &mut OverlayRng, d: Duration| now + d.mul_f64(rng.gen_range(0.0..1.0));
        let next_probe = jitter(rng, config.probe_interval);
        let next_gossip = jitter(rng, config.gossip_interval);
        let next_push_pull = jitter(rng, config.push_pull_interval);
        let next_reconnect = jitter(rng, config.reconnect_interval);
        let mut swim = Self {
            awareness: Awareness::new(config.awareness_max_multiplier),
            broadcasts: BroadcastQueue::new(config.max_members, rng),
            me,
            incarnation: 0,
            epoch: now,
            members: Vec::new(),
            index: id_map(rng),
            probe_order: Vec::new(),
            probe_index: 0,
            suspicions: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            seq: rng.r#gen(),
            probe: None,
            relays: VecDeque::new(),
            next_probe,
            next_gossip,
            next_push_pull,
            join_seeds: Vec::new(),
            next_join: now,
            failed: VecDeque::new(),
            next_reconnect,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            leaving: false,
            stats: SwimStats::default(),
            config,
        };
        swim.broadcasts.push(Update::Alive {
            id: me,
            incarnation: 0,
        });
        swim
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.me
    }

    /// This node's incarnation.
    pub fn incarnation(&self) -> Incarnation {
        self.incarnation
    }

    /// The local health score (0 is healthy).
    pub fn health_score(&self) -> u32 {
        self.awareness.score()
    }

    /// Counters.
    pub fn stats(&self) -> SwimStats {
        self.stats
    }

    /// Number of members in the table other than this node, any state.
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// The state and incarnation of `id`, if known.
    pub fn member(&self, id: NodeId) -> Option<(MemberState, Incarnation)> {
        self.find(id)
            .map(|i| (self.members[i].state, self.members[i].incarnation))
    }

    /// Members other than this node that are alive or suspect.
    pub fn live_members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.members
            .iter()
            .filter(|m| m.state.is_live())
            .map(|m| m.id)
    }

    /// Updates waiting to be gossiped.
    pub fn pending_broadcasts(&self) -> usize {
        self.broadcasts.len()
    }

    fn find(&self, id: NodeId) -> Option<usize> {
        self.index.get(&id).map(|&i| i as usize)
    }

    fn reindex(&mut self) {
        self.index.clear();
        for (i, m) in self.members.iter().enumerate() {
            self.index.insert(m.id, i as u32);
        }
    }

    fn since(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.epoch)
            .as_secs()
            .min(u64::from(u32::MAX)) as u32
    }

    fn cluster_size(&self) -> usize {
        self.members.len() + 1
    }

    fn send(&mut self, to: NodeId, message: Message, priority: Option<Update>) {
        if self.outbox.len() >= self.config.max_transmit_queue {
            self.stats.dropped_transmits += 1;
            return;
        }
        self.outbox.push_back(Outgoing {
            to,
            message,
            priority,
        });
    }

    fn emit(&mut self, event: MembershipEvent) {
        if self.events.len() >= self.config.max_events {
            self.events.pop_front();
            self.stats.dropped_events += 1;
        }
        self.events.push_back(event);
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    pub(crate) fn poll_outgoing(&mut self) -> Option<Outgoing> {
        self.outbox.pop_front()
    }

    /// The next membership event.
    pub fn poll_event(&mut self) -> Option<MembershipEvent> {
        self.events.pop_front()
    }

    /// Updates for one packet (see [`BroadcastQueue::take`]).
    pub(crate) fn take_broadcasts(&mut self, max_bytes: usize, max_count: usize) -> Vec<Update> {
        let limit = retransmit_limit(self.config.retransmit_mult, self.cluster_size());
        self.broadcasts.take(max_bytes, max_count, limit)
    }

    // ---- commands ------------------------------------------------------

    /// Join through `seeds`: a push-pull with each (memberlist `Join`),
    /// repeated every `join_retry_interval` until some member is known,
    /// since the transport may lose the first one.
    pub fn join(&mut self, now: Instant, seeds: &[NodeId]) {
        let me = self.me;
        self.join_seeds = seeds
            .iter()
            .copied()
            .filter(|&s| s != me)
            .take(MAX_JOIN_SEEDS)
            .collect();
        self.send_join(now);
    }

    fn send_join(&mut self, now: Instant) {
        for i in 0..self.join_seeds.len() {
            let message = Message::PushPull(self.local_state(true, false));
            self.send(self.join_seeds[i], message, None);
        }
        self.next_join = now + self.config.join_retry_interval;
    }

    /// Adds `ids` as alive members without gossip: a restart from a
    /// snapshot of the member table (serf's snapshot), or a simulation
    /// that starts from a formed cluster.
    pub fn restore_members(&mut self, now: Instant, rng: &mut OverlayRng, ids: &[NodeId]) {
        let since_s = self.since(now);
        let room = self.config.max_members.saturating_sub(self.members.len());
        // Append, then sort once: inserting one by one into the sorted
        // table would be quadratic for a large snapshot.
        self.members.extend(
            ids.iter()
                .filter(|&&id| id != self.me)
                .take(room)
                .map(|&id| Member {
                    id,
                    incarnation: 0,
                    since_s,
                    state: MemberState::Alive,
                }),
        );
        self.members.sort_by_key(|m| m.id);
        self.members.dedup_by_key(|m| m.id);
        self.reindex();
        self.reset_probe_order(now, rng);
    }

    /// Drops the updates queued so far, the announcement of this node
    /// included: for a driver that starts every member of an already
    /// formed cluster at once (the simulator's steady state), where all
    /// 10^4 announcements would otherwise be gossiped to all 10^4 members.
    pub fn forget_broadcasts(&mut self) {
        self.broadcasts.clear();
    }

    /// Moves `ids` to the front of the current probe round: Pharos wants
    /// the RTTs to its anchors early, and a shuffled round would take up to
    /// N probe periods to reach them.
    pub fn probe_first(&mut self, ids: &[NodeId]) {
        let rest = self.probe_order.split_off(self.probe_index);
        let (first, others): (Vec<NodeId>, Vec<NodeId>) =
            rest.into_iter().partition(|id| ids.contains(id));
        self.probe_order.extend(first);
        self.probe_order.extend(others);
    }

    /// Leave on purpose: gossip `left` about ourselves and stop probing.
    pub fn leave(&mut self) {
        self.leaving = true;
        self.broadcasts.push(Update::Dead {
            id: self.me,
            incarnation: self.incarnation,
            from: self.me,
        });
    }

    // ---- inputs --------------------------------------------------------

    /// Applies one piggybacked update received from `sender`.
    pub fn handle_update(
        &mut self,
        now: Instant,
        rng: &mut OverlayRng,
        sender: NodeId,
        update: Update,
    ) {
        if let Update::Suspect {
            id,
            incarnation,
            from,
        }
        | Update::Dead {
            id,
            incarnation,
            from,
        } = update
            && id == self.me
            && incarnation < self.incarnation
            && from == sender
            && sender != self.me
            && !self.leaving
        {
            // An accuser with a stale view of us: it missed our earlier
            // refutation, and nobody else forwards its stale suspicion, so
            // no confirmation will come and it would declare us dead on its
            // own after the full timeout. Answer it directly. This is not in
            // memberlist (it relies on push-pull); it costs one packet per
            // stale accusation heard from the accuser itself.
            let incarnation = self.incarnation;
            self.send(
                sender,
                Message::Gossip,
                Some(Update::Alive {
                    id: self.me,
                    incarnation,
                }),
            );
        }
        match update {
            Update::Alive { id, incarnation } => self.on_alive(now, rng, id, incarnation),
            Update::Suspect {
                id,
                incarnation,
                from,
            } => self.on_suspect(now, id, incarnation, from),
            Update::Dead {
                id,
                incarnation,
                from,
            } => self.on_dead(now, id, incarnation, from),
        }
    }

    /// A packet came straight from `from`: evidence that it is alive, which
    /// a suspicion of it takes into account when it expires.
    pub fn handle_heard(&mut self, from: NodeId) {
        if let Some(s) = self.suspicions.get_mut(&from) {
            s.heard_from_suspect = true;
        }
    }

    /// A ping for us: ack it. The node adds its coordinates to the ack.
    pub fn handle_ping(&mut self, from: NodeId, seq: u32, target: NodeId) {
        // memberlist checks the target name: a ping meant for an old owner
        // of our address must not be acked by us.
        if target == self.me {
            self.send(from, Message::Ack { seq, coord: None }, None);
        }
    }

    /// Somebody asks us to probe `target` for them.
    pub fn handle_indirect_ping(
        &mut self,
        now: Instant,
        from: NodeId,
        origin_seq: u32,
        target: NodeId,
        want_nack: bool,
    ) {
        if self.relays.len() >= self.config.max_pending_relays || target == self.me {
            return;
        }
        let seq = self.next_seq();
        self.relays.push_back(Relay {
            seq,
            origin: from,
            origin_seq,
            deadline: now + self.config.probe_timeout,
            want_nack,
        });
        self.send(target, Message::Ping { seq, target }, None);
    }

    /// An ack arrived. Returns the RTT when it answers our own direct
    /// probe, which is a coordinate sample.
    pub fn handle_ack(&mut self, now: Instant, from: NodeId, seq: u32) -> Option<Duration> {
        if let Some(pos) = self.relays.iter().position(|r| r.seq == seq) {
            let relay = self.relays.remove(pos)?;
            let message = Message::Ack {
                seq: relay.origin_seq,
                coord: None,
            };
            self.send(relay.origin, message, None);
            return None;
        }
        let probe = self.probe.as_ref()?;
        let sent = match probe.retry {
            _ if seq == probe.seq => probe.sent,
            Some((retry, at)) if seq == retry => at,
            _ => return None,
        };
        let rtt = (from == probe.target).then(|| now.saturating_duration_since(sent));
        self.probe = None;
        // Lifeguard 4.1: a successful probe is evidence of our own health.
        self.awareness.apply_delta(-1);
        rtt
    }

    /// A nack for our indirect probe arrived: the helper is alive, so our
    /// own network works (Lifeguard 4.1).
    pub fn handle_nack(&mut self, seq: u32) {
        if let Some(p) = self.probe.as_mut()
            && p.seq == seq
        {
            p.nacks += 1;
        }
    }

    /// A push-pull arrived: answer it unless it is an answer, then merge.
    pub fn handle_push_pull(
        &mut self,
        now: Instant,
        rng: &mut OverlayRng,
        from: NodeId,
        pp: PushPull,
    ) {
        if !pp.reply {
            let message = Message::PushPull(self.local_state(false, true));
            self.send(from, message, None);
        }
        for m in pp.members {
            match m.state {
                MemberState::Alive => self.on_alive(now, rng, m.id, m.incarnation),
                MemberState::Left => self.on_dead(now, m.id, m.incarnation, m.id),
                // memberlist mergeState: a remote `dead` is only a suspicion
                // here; our own probes must confirm it.
                MemberState::Dead | MemberState::Suspect => {
                    self.on_suspect(now, m.id, m.incarnation, from)
                }
            }
        }
    }

    fn local_state(&self, join: bool, reply: bool) -> PushPull {
        let mut members = Vec::with_capacity(self.members.len().min(MAX_PUSH_PULL_MEMBERS));
        members.push(MemberEntry {
            id: self.me,
            incarnation: self.incarnation,
            state: if self.leaving {
                MemberState::Left
            } else {
                MemberState::Alive
            },
        });
        members.extend(
            self.members
                .iter()
                .take(MAX_PUSH_PULL_MEMBERS - 1)
                .map(|m| MemberEntry {
                    id: m.id,
                    incarnation: m.incarnation,
                    state: m.state,
                }),
        );
        PushPull {
            join,
            reply,
            members,
        }
    }

    // ---- membership rules (memberlist aliveNode/suspectNode/deadNode) --

    fn refute(&mut self, accused: Incarnation) {
        self.incarnation = self.incarnation.max(accused).saturating_add(1);
        self.broadcasts.push(Update::Alive {
            id: self.me,
            incarnation: self.incarnation,
        });
        // Lifeguard 4.1: being suspected hints that we are the slow one.
        self.awareness.apply_delta(1);
        self.stats.refutations += 1;
        let incarnation = self.incarnation;
        self.emit(MembershipEvent::SelfRefuted { incarnation });
    }

    fn on_alive(&mut self, now: Instant, rng: &mut OverlayRng, id: NodeId, inc: Incarnation) {
        if id == self.me {
            // Someone gossips an older life of ours as alive with a higher
            // incarnation than ours: take a higher one still.
            if inc > self.incarnation && !self.leaving {
                self.refute(inc);
            }
            return;
        }
        let since_s = self.since(now);
        match self.find(id) {
            None => {
                if self.members.len() >= self.config.max_members {
                    self.stats.refused_members += 1;
                    return;
                }
                self.index.insert(id, self.members.len() as u32);
                self.members.push(Member {
                    id,
                    incarnation: inc,
                    since_s,
                    state: MemberState::Alive,
                });
                // memberlist inserts a new node at a random place in the
                // probe order, so it is probed within one round.
                let at = rng.gen_range(self.probe_index..=self.probe_order.len());
                self.probe_order.insert(at, id);
                self.emit(MembershipEvent::Joined { id });
            }
            Some(i) => {
                let m = self.members[i];
                if inc <= m.incarnation {
                    return;
                }
                self.remove_suspicion(id);
                self.members[i] = Member {
                    id,
                    incarnation: inc,
                    since_s: if m.state == MemberState::Alive {
                        m.since_s
                    } else {
                        since_s
                    },
                    state: MemberState::Alive,
                };
                match m.state {
                    MemberState::Suspect => self.emit(MembershipEvent::Refuted { id }),
                    MemberState::Dead | MemberState::Left => {
                        self.probe_order.push(id);
                        self.emit(MembershipEvent::Joined { id });
                    }
                    MemberState::Alive => {}
                }
            }
        }
        self.broadcasts.push(Update::Alive {
            id,
            incarnation: inc,
        });
    }

    fn on_suspect(&mut self, now: Instant, id: NodeId, inc: Incarnation, from: NodeId) {
        if id == self.me {
            if !self.leaving && inc >= self.incarnation {
                self.refute(inc);
            }
            return;
        }
        let Some(i) = self.find(id) else { return };
        let m = self.members[i];
        if inc < m.incarnation {
            return;
        }
        if let Some(s) = self.suspicions.get_mut(&id) {
            if inc <= s.incarnation {
                let before = s.deadline();
                if s.confirm(from) {
                    let after = s.deadline();
                    self.deadlines.remove(&(before, id));
                    self.deadlines.insert((after, id));
                    // A new confirmation is news for the others too.
                    self.broadcasts.push(Update::Suspect {
                        id,
                        incarnation: inc,
                        from,
                    });
                }
                return;
            }
            // A suspicion of a newer incarnation means the member refuted
            // the one we hold; the refuting `alive` may never reach us, as
            // the newer suspicion replaces it in every gossip queue. So
            // start over at the new incarnation instead of confirming the
            // old suspicion (memberlist confirms it, and then kills a member
            // that had refuted).
            self.remove_suspicion(id);
            self.emit(MembershipEvent::Refuted { id });
        } else if m.state != MemberState::Alive {
            return;
        }
        let since_s = self.since(now);
        self.members[i] = Member {
            incarnation: inc,
            since_s,
            state: MemberState::Suspect,
            ..m
        };
        let (k, min, max) = self.suspicion_bounds();
        self.add_suspicion(id, Suspicion::new(now, from, inc, k, min, max));
        self.broadcasts.push(Update::Suspect {
            id,
            incarnation: inc,
            from,
        });
        self.emit(MembershipEvent::Suspected { id });
    }

    fn add_suspicion(&mut self, id: NodeId, s: Suspicion) {
        self.remove_suspicion(id);
        self.deadlines.insert((s.deadline(), id));
        self.suspicions.insert(id, s);
    }

    fn remove_suspicion(&mut self, id: NodeId) -> Option<Suspicion> {
        let s = self.suspicions.remove(&id)?;
        self.deadlines.remove(&(s.deadline(), id));
        Some(s)
    }

    /// Lifeguard's k, minimum and maximum timeout for the current size.
    fn suspicion_bounds(&self) -> (u32, Duration, Duration) {
        let n = self.cluster_size();
        let mut k = self.config.suspicion_k();
        // Too few members to expect k independent confirmations.
        if n.saturating_sub(2) < k as usize {
            k = 0;
        }
        let min = suspicion::min_timeout(self.config.suspicion_mult, n, self.config.probe_interval);
        (k, min, min * self.config.suspicion_max_timeout_mult)
    }

    fn on_dead(&mut self, now: Instant, id: NodeId, inc: Incarnation, from: NodeId) {
        if id == self.me {
            if !self.leaving && inc >= self.incarnation {
                self.refute(inc);
            }
            return;
        }
        let Some(i) = self.find(id) else { return };
        let m = self.members[i];
        if inc < m.incarnation || !m.state.is_live() {
            return;
        }
        self.remove_suspicion(id);
        let state = if from == id {
            MemberState::Left
        } else {
            MemberState::Dead
        };
        self.members[i] = Member {
            incarnation: inc,
            since_s: self.since(now),
            state,
            ..m
        };
        self.broadcasts.push(Update::Dead {
            id,
            incarnation: inc,
            from,
        });
        self.emit(if state == MemberState::Left {
            MembershipEvent::Left { id }
        } else {
            MembershipEvent::Failed { id }
        });
    }

    // ---- timers --------------------------------------------------------

    /// The earliest time `handle_timeout` has work to do.
    pub fn poll_timeout(&self) -> Instant {
        let mut t = self
            .next_gossip
            .min(self.next_push_pull)
            .min(self.next_probe);
        if let Some(p) = &self.probe
            && !p.indirect_sent
        {
            t = t.min(p.indirect_at);
        }
        if let Some(r) = self.relays.front() {
            t = t.min(r.deadline);
        }
        if let Some(&(d, _)) = self.deadlines.first() {
            t = t.min(d);
        }
        if !self.join_seeds.is_empty() {
            t = t.min(self.next_join);
        }
        if !self.failed.is_empty() {
            t = t.min(self.next_reconnect);
        }
        t
    }

    /// Runs every timer that is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant, rng: &mut OverlayRng) {
        self.expire_relays(now);
        self.expire_suspicions(now);
        if let Some(p) = &self.probe
            && !p.indirect_sent
            && now >= p.indirect_at
        {
            self.send_indirect(now, rng);
        }
        if now >= self.next_probe {
            self.finish_probe(now);
            if !self.leaving {
                self.start_probe(now, rng);
            }
            self.next_probe = now + self.awareness.scale(self.config.probe_interval);
        }
        if now >= self.next_gossip {
            self.gossip(now, rng);
            self.next_gossip = now + self.config.gossip_interval;
        }
        if !self.join_seeds.is_empty() && now >= self.next_join {
            if self.members.is_empty() {
                self.send_join(now);
            } else {
                self.join_seeds.clear();
            }
        }
        if now >= self.next_reconnect {
            self.reconnect(now, rng);
            self.next_reconnect = now + self.config.reconnect_interval;
        }
        if now >= self.next_push_pull {
            self.push_pull(rng);
            self.next_push_pull =
                now + push_pull_scale(self.config.push_pull_interval, self.cluster_size());
        }
    }

    fn expire_relays(&mut self, now: Instant) {
        while let Some(r) = self.relays.front() {
            if r.deadline > now {
                break;
            }
            let Some(r) = self.relays.pop_front() else {
                break;
            };
            if r.want_nack {
                self.send(r.origin, Message::Nack { seq: r.origin_seq }, None);
            }
        }
    }

    fn expire_suspicions(&mut self, now: Instant) {
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            let Some(s) = self.remove_suspicion(id) else {
                self.deadlines.pop_first();
                continue;
            };
            let inc = s.incarnation;
            if self.member(id) != Some((MemberState::Suspect, inc)) {
                continue;
            }
            if s.heard_from_suspect {
                // The suspect talked to us during the suspicion, so it is
                // alive and only its refutation got lost on the way to us.
                // Direct evidence beats a timeout: ask it once more,
                // directly, and suspect afresh instead of killing it. A
                // crashed member sends nothing, so detection is unaffected.
                let me = self.me;
                let (k, min, max) = self.suspicion_bounds();
                self.add_suspicion(id, Suspicion::new(now, me, inc, k, min, max));
                let accusation = Update::Suspect {
                    id,
                    incarnation: inc,
                    from: me,
                };
                self.send(id, Message::Gossip, Some(accusation));
                continue;
            }
            if !s.last_call {
                // A last call before the verdict: ping the suspect once,
                // carrying the suspicion, and wait one probe period for
                // any packet from it. At N = 1,000 under 5% loss one node
                // in 10^5 misses every gossiped copy of a refutation, and
                // with thousands of refuted suspicions an hour that was
                // every false declaration left. A crashed member costs one
                // ping from each member and a probe period of detection.
                let mut s = s;
                s.call_last(now + self.config.probe_interval);
                self.add_suspicion(id, s);
                let seq = self.next_seq();
                let accusation = Update::Suspect {
                    id,
                    incarnation: inc,
                    from: self.me,
                };
                self.send(id, Message::Ping { seq, target: id }, Some(accusation));
                continue;
            }
            self.on_dead(now, id, inc, self.me);
        }
    }

    fn finish_probe(&mut self, now: Instant) {
        let Some(p) = self.probe.take() else { return };
        self.stats.failed_probes += 1;
        // Lifeguard 4.1: nacks we expected but did not get mean our own
        // network or CPU is the problem; no helpers at all counts as one.
        let delta = if p.expected_nacks > 0 {
            p.expected_nacks.saturating_sub(p.nacks) as i32
        } else {
            1
        };
        self.awareness.apply_delta(delta);
        let me = self.me;
        match self.member(p.target) {
            Some((MemberState::Alive, inc)) => {
                self.on_suspect(now, p.target, inc, me);
                // Tell the suspect itself at once (the Lifeguard buddy
                // system, section 4.3, applied at the moment of suspicion
                // rather than at our next probe of it, a whole round away).
                let accusation = Update::Suspect {
                    id: p.target,
                    incarnation: inc,
                    from: me,
                };
                self.send(p.target, Message::Gossip, Some(accusation));
            }
            // A failed probe of a member someone else suspects is our
            // independent confirmation (memberlist `suspectNode` on an
            // already suspect node): it shortens the suspicion for all.
            // The ping already carried the accusation to the suspect.
            Some((MemberState::Suspect, inc)) => self.on_suspect(now, p.target, inc, me),
            _ => {}
        }
    }

    fn start_probe(&mut self, now: Instant, rng: &mut OverlayRng) {
        let mut checked = 0;
        let target = loop {
            if self.probe_index >= self.probe_order.len() {
                self.reset_probe_order(now, rng);
                if self.probe_order.is_empty() {
                    return;
                }
            }
            let id = self.probe_order[self.probe_index];
            self.probe_index += 1;
            if let Some((state, inc)) = self.member(id)
                && state.is_live()
            {
                break (id, state, inc);
            }
            checked += 1;
            if checked > self.probe_order.len() {
                return;
            }
        };
        let (target, state, inc) = target;
        let seq = self.next_seq();
        self.stats.probes += 1;
        self.probe = Some(Probe {
            seq,
            target,
            sent: now,
            indirect_at: now + self.awareness.scale(self.config.probe_timeout),
            indirect_sent: false,
            retry: None,
            expected_nacks: 0,
            nacks: 0,
        });
        // Lifeguard 4.3: tell a suspect directly that it is suspected.
        let priority = (state == MemberState::Suspect).then_some(Update::Suspect {
            id: target,
            incarnation: inc,
            from: self.me,
        });
        self.send(target, Message::Ping { seq, target }, priority);
    }

    fn send_indirect(&mut self, now: Instant, rng: &mut OverlayRng) {
        let retry = self.next_seq();
        let Some(p) = self.probe.as_mut() else { return };
        p.indirect_sent = true;
        p.retry = Some((retry, now));
        let (seq, target) = (p.seq, p.target);
        // memberlist's fallback: a second direct ping beside the indirect
        // ones (memberlist sends it over TCP). A lost ping or ack is the
        // usual cause of a missed ack, and most of all for a slow member,
        // whose answers through helpers come too late for their relay
        // deadline; each suspicion costs the whole cluster λ·log N
        // transmissions of it and of its refutation.
        self.send(target, Message::Ping { seq: retry, target }, None);
        let helpers = self.random_members(rng, self.config.indirect_checks, |m| {
            m.state == MemberState::Alive && m.id != target
        });
        if let Some(p) = self.probe.as_mut() {
            p.expected_nacks = helpers.len() as u32;
        }
        for h in helpers {
            let message = Message::IndirectPing {
                seq,
                target,
                want_nack: true,
            };
            self.send(h, message, None);
        }
    }

    fn gossip(&mut self, now: Instant, rng: &mut OverlayRng) {
        if self.broadcasts.is_empty() {
            return;
        }
        let now_s = self.since(now);
        let dead_s = self.config.gossip_to_the_dead.as_secs() as u32;
        // Recently dead members still get gossip, so that one falsely
        // declared dead learns it and refutes (memberlist `gossip`).
        let targets = self.random_members(rng, self.config.gossip_nodes, |m| {
            m.state.is_live() || now_s.saturating_sub(m.since_s) < dead_s
        });
        for t in targets {
            self.send(t, Message::Gossip, None);
        }
    }

    /// serf `reconnect`: with probability failed/alive (so the whole
    /// cluster makes about one attempt per failed member and interval),
    /// a push-pull to one random forgotten dead member.
    fn reconnect(&mut self, now: Instant, rng: &mut OverlayRng) {
        let now_s = self.since(now);
        let timeout_s = self.config.reconnect_timeout.as_secs() as u32;
        self.failed
            .retain(|&(_, since_s)| now_s.saturating_sub(since_s) < timeout_s);
        if self.failed.is_empty() || self.leaving {
            return;
        }
        let prob = self.failed.len() as f64 / self.cluster_size() as f64;
        if rng.gen_range(0.0..1.0) >= prob {
            return;
        }
        let pick = rng.gen_range(0..self.failed.len());
        let (id, _) = self.failed[pick];
        if self.find(id).is_some() {
            // Back in the table through gossip: nothing to reconnect.
            self.failed.remove(pick);
            return;
        }
        let message = Message::PushPull(self.local_state(false, false));
        self.send(id, message, None);
    }

    fn push_pull(&mut self, rng: &mut OverlayRng) {
        let peers = self.random_members(rng, 1, |m| m.state == MemberState::Alive);
        if let Some(&peer) = peers.first() {
            let message = Message::PushPull(self.local_state(false, false));
            self.send(peer, message, None);
        }
    }

    /// Up to `k` distinct random members passing `keep` (memberlist
    /// `kRandomNodes`: 3k random draws, so it stays O(k) on huge tables).
    fn random_members(
        &self,
        rng: &mut OverlayRng,
        k: usize,
        keep: impl Fn(&Member) -> bool,
    ) -> Vec<NodeId> {
        let n = self.members.len();
        let mut out = Vec::with_capacity(k);
        if n == 0 {
            return out;
        }
        for _ in 0..3 * n.min(k.max(1) * 8) {
            if out.len() >= k {
                break;
            }
            let m = &self.members[rng.gen_range(0..n)];
            if keep(m) && !out.contains(&m.id) {
                out.push(m.id);
            }
        }
        out
    }

    // End of a probe round: forget members dead for long enough and
    // reshuffle the live ones (memberlist `resetNodes`).
    fn reset_probe_order(&mut self, now: Instant, rng: &mut OverlayRng) {
        let now_s = self.since(now);
        let dead_s = self.config.gossip_to_the_dead.as_secs() as u32;
        let mut forgotten = Vec::new();
        self.members.retain(|m| {
            let keep = m.state.is_live() || now_s.saturating_sub(m.since_s) < dead_s;
            if !keep && m.state == MemberState::Dead {
                forgotten.push((m.id, m.since_s));
            }
            keep
        });
        self.reindex();
        for f in forgotten {
            if self.failed.len() >= MAX_FAILED {
                self.failed.pop_front();
            }
            self.failed.push_back(f);
        }
        self.probe_order.clear();
        self.probe_order.extend(
            self.members
                .iter()
                .filter(|m| m.state.is_live())
                .map(|m| m.id),
        );
        self.probe_order.shuffle(rng);
        self.probe_index = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn swim(id: u64) -> (Swim, OverlayRng, Instant) {
        let mut rng = OverlayRng::seed_from_u64(id);
        let t0 = Instant::now();
        let s = Swim::new(NodeId(id), Config::lan(), &mut rng, t0);
        (s, rng, t0)
    }

    #[test]
    fn suspect_then_dead_after_timeout() {
        let (mut s, mut rng, t0) = swim(1);
        let ids: Vec<NodeId> = (2..12).map(NodeId).collect();
        s.restore_members(t0, &mut rng, &ids);
        s.handle_update(
            t0,
            &mut rng,
            NodeId(99),
            Update::Suspect {
                id: NodeId(5),
                incarnation: 0,
                from: NodeId(2),
            },
        );
        assert_eq!(s.member(NodeId(5)), Some((MemberState::Suspect, 0)));
        // n = 11, k = 2: min = 4 * log10(11) s, max = 6 * min.
        let min = suspicion::min_timeout(4, 11, Duration::from_secs(1));
        s.handle_timeout(t0 + min, &mut rng);
        assert_eq!(s.member(NodeId(5)), Some((MemberState::Suspect, 0)));
        // Two confirmations bring the deadline down to min.
        for from in [3, 4] {
            s.handle_update(
                t0,
                &mut rng,
                NodeId(99),
                Update::Suspect {
                    id: NodeId(5),
                    incarnation: 0,
                    from: NodeId(from),
                },
            );
        }
        // The timeout ran out: the suspect gets a last ping carrying the
        // suspicion, and one probe period to answer it.
        s.handle_timeout(t0 + min, &mut rng);
        assert_eq!(s.member(NodeId(5)), Some((MemberState::Suspect, 0)));
        let last = std::iter::from_fn(|| s.poll_outgoing())
            .find(|o| o.to == NodeId(5))
            .expect("a last ping to the suspect");
        assert!(matches!(last.message, Message::Ping { target, .. } if target == NodeId(5)));
        assert!(matches!(last.priority, Some(Update::Suspect { id, .. }) if id == NodeId(5)));
        // No answer: dead.
        s.handle_timeout(t0 + min + Duration::from_secs(1), &mut rng);
        assert_eq!(s.member(NodeId(5)), Some((MemberState::Dead, 0)));
    }

    #[test]
    fn a_suspect_that_answers_the_last_call_is_not_declared_dead() {
        let (mut s, mut rng, t0) = swim(1);
        let ids: Vec<NodeId> = (2..12).map(NodeId).collect();
        s.restore_members(t0, &mut rng, &ids);
        let suspect = Update::Suspect {
            id: NodeId(5),
            incarnation: 0,
            from: NodeId(2),
        };
        s.handle_update(t0, &mut rng, NodeId(99), suspect);
        let max = suspicion::min_timeout(4, 11, Duration::from_secs(1)) * 6;
        s.handle_timeout(t0 + max, &mut rng);
        while s.poll_outgoing().is_some() {}
        // The suspect's ack comes back, with its refutation riding on it.
        s.handle_heard(NodeId(5));
        let refutation = Update::Alive {
            id: NodeId(5),
            incarnation: 1,
        };
        s.handle_update(t0 + max, &mut rng, NodeId(5), refutation);
        s.handle_timeout(t0 + max + Duration::from_secs(1), &mut rng);
        assert_eq!(s.member(NodeId(5)), Some((MemberState::Alive, 1)));
        // Had only the ack come back, the suspicion starts over instead.
        s.handle_update(
            t0 + max,
            &mut rng,
            NodeId(99),
            Update::Suspect {
                id: NodeId(5),
                incarnation: 1,
                from: NodeId(2),
            },
        );
        let t1 = t0 + max + max;
        s.handle_timeout(t1, &mut rng);
        s.handle_heard(NodeId(5));
        s.handle_timeout(t1 + Duration::from_secs(1), &mut rng);
        assert_eq!(s.member(NodeId(5)), Some((MemberState::Suspect, 1)));
    }

    #[test]
    fn a_lost_ping_is_sent_again_beside_the_indirect_probes() {
        let (mut s, mut rng, t0) = swim(1);
        let ids: Vec<NodeId> = (2..12).map(NodeId).collect();
        s.restore_members(t0, &mut rng, &ids);
        // Run timers until the first probe goes out; its ping is "lost".
        let mut now = t0;
        let (target, first) = loop {
            now = s.poll_timeout().max(now);
            s.handle_timeout(now, &mut rng);
            let ping = std::iter::from_fn(|| s.poll_outgoing()).find_map(|o| match o.message {
                Message::Ping { seq, target } => Some((target, seq)),
                _ => None,
            });
            if let Some(p) = ping {
                break p;
            }
        };
        let sent = now;
        // At the probe timeout: helpers are asked, and the target is
        // pinged once more, under a sequence number of its own.
        now = sent + Config::default().probe_timeout;
        s.handle_timeout(now, &mut rng);
        let out: Vec<Outgoing> = std::iter::from_fn(|| s.poll_outgoing()).collect();
        let retry = out
            .iter()
            .find_map(|o| match o.message {
                Message::Ping { seq, target: t } if o.to == target && t == target => Some(seq),
                _ => None,
            })
            .expect("a second direct ping");
        assert_ne!(retry, first);
        let helpers = out
            .iter()
            .filter(|o| matches!(o.message, Message::IndirectPing { .. }))
            .count();
        assert_eq!(helpers, Config::default().indirect_checks);
        // Its ack ends the probe well, and the RTT is the retry's own.
        let rtt = s.handle_ack(now + Duration::from_millis(40), target, retry);
        assert_eq!(rtt, Some(Duration::from_millis(40)));
        s.handle_timeout(sent + Config::default().probe_interval, &mut rng);
        assert_eq!(s.member(target), Some((MemberState::Alive, 0)));
        assert_eq!(s.stats().failed_probes, 0);
    }

    #[test]
    fn refutes_suspicion_of_itself() {
        let (mut s, mut rng, t0) = swim(1);
        s.handle_update(
            t0,
            &mut rng,
            NodeId(99),
            Update::Suspect {
                id: NodeId(1),
                incarnation: 0,
                from: NodeId(2),
            },
        );
        assert_eq!(s.incarnation(), 1);
        assert_eq!(s.health_score(), 1);
        // An old suspicion does not make it refute again.
        s.handle_update(
            t0,
            &mut rng,
            NodeId(99),
            Update::Dead {
                id: NodeId(1),
                incarnation: 0,
                from: NodeId(2),
            },
        );
        assert_eq!(s.incarnation(), 1);
    }

    #[test]
    fn higher_alive_clears_suspicion_and_dead_is_final_for_its_incarnation() {
        let (mut s, mut rng, t0) = swim(1);
        s.restore_members(t0, &mut rng, &[NodeId(2), NodeId(3)]);
        let suspect = Update::Suspect {
            id: NodeId(2),
            incarnation: 0,
            from: NodeId(3),
        };
        s.handle_update(t0, &mut rng, NodeId(3), suspect);
        s.handle_update(
            t0,
            &mut rng,
            NodeId(99),
            Update::Alive {
                id: NodeId(2),
                incarnation: 0,
            },
        );
        assert_eq!(s.member(NodeId(2)), Some((MemberState::Suspect, 0)));
        s.handle_update(
            t0,
            &mut rng,
            NodeId(99),
            Update::Alive {
                id: NodeId(2),
                incarnation: 1,
            },
        );
        assert_eq!(s.member(NodeId(2)), Some((MemberState::Alive, 1)));
        s.handle_update(
            t0,
            &mut rng,
            NodeId(99),
            Update::Dead {
                id: NodeId(3),
                incarnation: 0,
                from: NodeId(3),
            },
        );
        assert_eq!(s.member(NodeId(3)), Some((MemberState::Left, 0)));
        s.handle_update(
            t0,
            &mut rng,
            NodeId(99),
            Update::Alive {
                id: NodeId(3),
                incarnation: 0,
            },
        );
        assert_eq!(s.member(NodeId(3)), Some((MemberState::Left, 0)));
    }

    #[test]
    fn push_pull_scale_grows_with_log_n() {
        let i = Duration::from_secs(30);
        assert_eq!(push_pull_scale(i, 32), i);
        assert_eq!(push_pull_scale(i, 64), i * 2);
        assert_eq!(push_pull_scale(i, 10_000), i * 10);
    }
}
