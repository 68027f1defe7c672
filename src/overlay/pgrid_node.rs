//! A P-Grid peer's operations as a sans-IO state machine: `put`, `get` and
//! `holders`, routed hop by hop over [`PGridPeer`]'s routing table, with
//! replies going back along the request's path so that every relay caches
//! the answer (caching at every hop), and a timeout on each hop that moves
//! on to the next candidate reference.
//!
//! Inputs: [`PGridNode::put`], [`PGridNode::get`], [`PGridNode::holders`]
//! from the local node, [`PGridNode::handle_message`] and
//! [`PGridNode::handle_timeout`]. Outputs: [`PGridNode::poll_transmit`],
//! [`PGridNode::poll_timeout`], [`PGridNode::poll_event`]. Time is the
//! driver's, in milliseconds; randomness is the seeded RNG it hands in.
//!
//! Reputation ([`crate::overlay::trust`]): every hop that answers is rated
//! good and every hop that times out bad, in the node's [`LocalTrust`],
//! which the edge also feeds with the outcome of content transfers
//! ([`PGridNode::record`]). Peers in bad standing (from the score
//! managers, [`PGridNode::set_standing`]) or bad in this node's own
//! dealings are skipped as next hops, left out of holder answers, dropped
//! from the routing table and replica set, and their messages are rate
//! limited.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::num::NonZeroUsize;

use crate::overlay::pgrid::{
    HolderIndex, PGridConfig, PGridPeer, Path, PeerState, Proximity, SortedKeys, exchange, key_bits,
};
use crate::overlay::trust::{Feedback, LocalTrust, RateLimiter, Standing, TrustConfig, TrustRow};
use crate::overlay::{NodeId, OverlayRng};

/// What a key maps to: the name of where the object is (a CID, a URL
/// key), bounded in size by the wire encoding.
pub type ValueRef = Vec<u8>;

/// Most queries a peer waits on at once (its own and relayed); beyond it
/// a relayed query is dropped (the hop before times out and moves on) and
/// a local one fails at once.
pub const MAX_PENDING: usize = 4096;

/// How often a peer sends a batch of its entries to a replica, ms.
pub const SYNC_INTERVAL_MS: u64 = 5_000;

/// Most entries in one replication batch, and most a replica takes from
/// one. A batch is cut after the key that reaches this, so it may carry
/// up to [`MAX_VALUES_PER_KEY`]` - 1` more (the wire allows for them).
pub const MAX_SYNC_ENTRIES: usize = 256;

/// Most values a peer stores under one key (the oldest goes first), and
/// so in one answer: a key names one object, and a few places to fetch it
/// from are enough.
pub const MAX_VALUES_PER_KEY: usize = 16;

/// Most peers whose standing a node keeps: the peers it can deal with in
/// practice; beyond it the oldest verdicts are forgotten (and re-read
/// from the score managers when they matter).
pub const MAX_STANDINGS: usize = 65_536;

/// Most key prefixes an exchange carries: the initiator's view of the data
/// under its path, which the peer met merges with its own to decide a
/// split (a sample, evenly spaced over the store, when there are more).
pub const MAX_EXCHANGE_KEYS: usize = 4096;

/// Most exchanges a peer waits on at once; one more is not started.
pub const MAX_EXCHANGES: usize = 64;

/// How long an exchange waits for its reply, ms; a late reply is dropped.
pub const EXCHANGE_TIMEOUT_MS: u64 = 10_000;

/// How long a relayed answer is served from the cache, ms: long enough to
/// absorb a burst of gets for a popular key, short enough that new holders
/// show up and dead ones leave within a minute.
pub const CACHE_TTL_MS: u64 = 30_000;

/// Most events queued for the driver.
pub const MAX_EVENTS: usize = 4096;

/// How long a registered holder stays in the index, ms.
pub const HOLDER_TTL_MS: u64 = 10 * 60 * 1000;

/// The operation a query carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Store `value` under the key at the responsible peers.
    Put(ValueRef),
    /// Read the values under the key.
    Get,
    /// Who holds the object: the responsible peers and registered holders.
    Holders,
    /// Register the origin as a holder of the object.
    Announce,
}

/// A P-Grid message between peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A query on its way to the responsible peers.
    Query {
        /// The key queried.
        key: [u8; 32],
        /// What to do at the responsible peers.
        op: Op,
        /// The peers it passed, origin first: the way back.
        path: Vec<NodeId>,
    },
    /// The answer, on its way back along `path`.
    Reply {
        /// The key queried.
        key: [u8; 32],
        /// What the responsible peer (or a relay's cache) found.
        answer: Answer,
        /// The query's path, up to the peer that answered.
        path: Vec<NodeId>,
    },
    /// Entries copied to a replica of the responsible path: a new put, or
    /// a batch of the periodic anti-entropy that repairs replicas after
    /// churn (a new or restarted replica fills up from the others).
    Replicate {
        /// `(key, value)`, whole keys, at most [`MAX_SYNC_ENTRIES`] plus
        /// the rest of the last key.
        entries: Vec<([u8; 32], ValueRef)>,
    },
    /// The initiator's half of an exchange over the network: its routing
    /// state and a sample of the keys it stores. The peer met runs
    /// [`exchange`] on a copy of the initiator made from it and on itself.
    Exchange {
        /// Recursion depth of this meeting (0 when the node chose it).
        depth: u8,
        /// The initiator's routing state.
        state: PeerState,
        /// 64-bit prefixes of keys the initiator stores, ascending.
        keys: Vec<u64>,
    },
    /// The peer met's answer: the initiator's state after the exchange,
    /// which it adopts if its path is still `basis`, and the peers the
    /// exchange's recursion asks it to meet next.
    ExchangeReply {
        /// The path the initiator sent.
        basis: Path,
        /// The initiator's new routing state.
        state: PeerState,
        /// Peers to meet next, at depth + 1.
        meet: Vec<NodeId>,
    },
    /// A holder registered at one replica of the responsible path, copied
    /// to the others: a lookup answered by any replica names it.
    Announced {
        /// The key.
        key: [u8; 32],
        /// The peer that announced itself as a holder of it.
        holder: NodeId,
    },
}

/// What a query found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Answer {
    pub values: Vec<ValueRef>,
    pub holders: Vec<NodeId>,
    /// The peer that answered.
    pub answered_by: Option<NodeId>,
    /// Whether a relay's cache answered, not a responsible peer.
    pub from_cache: bool,
}

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub to: NodeId,
    pub message: Message,
}

/// What the local node learns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A local operation finished.
    Done { id: u64, answer: Answer },
    /// A local operation failed: every candidate at some hop timed out.
    Failed { id: u64 },
    /// A value new to this peer was stored under a key it is responsible
    /// for (a put, or a replica's copy): the edge may fetch the object.
    Stored { key: [u8; 32], value: ValueRef },
    /// This peer's path changed in an exchange.
    PathChanged { path: Path },
}

/// A query this peer sent on and waits for.
#[derive(Debug)]
struct Pending {
    key: [u8; 32],
    op: Op,
    path: Vec<NodeId>,
    /// Candidates not tried yet at this hop.
    rest: Vec<NodeId>,
    /// The candidate asked last, rated when it answers or times out.
    asked: Option<NodeId>,
    deadline_ms: u64,
}

/// One peer's store and its operations.
pub struct PGridNode {
    peer: PGridPeer,
    config: PGridConfig,
    hop_timeout_ms: u64,
    next_id: u64,
    /// Values of the keys this peer is responsible for.
    store: BTreeMap<[u8; 32], Vec<ValueRef>>,
    max_values_per_key: usize,
    holders: HolderIndex,
    /// Answers relayed here, each with the time it expires, ms.
    cache: lru::LruCache<[u8; 32], (Answer, u64)>,
    pending: HashMap<u64, Pending>,
    /// Anti-entropy: when, to which replica next, and where in the store.
    next_sync_ms: u64,
    sync_replica: usize,
    sync_cursor: [u8; 32],
    sync_last: Option<[u8; 32]>,
    out: VecDeque<Transmit>,
    events: VecDeque<Event>,
    trust: LocalTrust,
    standing: HashMap<NodeId, Standing>,
    standing_order: VecDeque<NodeId>,
    limiter: RateLimiter,
    /// Messages dropped by the rate limit.
    limited: u64,
    /// Exchanges this peer started and waits on: peer, depth, deadline.
    exchanges: HashMap<NodeId, (u8, u64)>,
    /// Exchanges run, as initiator or as the peer met.
    exchange_count: u64,
}

impl std::fmt::Debug for PGridNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PGridNode")
            .field("id", &self.peer.id())
            .field("path", &self.peer.path())
            .field("keys", &self.store.len())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl PGridNode {
    /// A node over `peer`'s routing state.
    pub fn new(peer: PGridPeer, config: PGridConfig, hop_timeout_ms: u64, cache: usize) -> Self {
        Self {
            peer,
            config,
            hop_timeout_ms,
            next_id: 1,
            store: BTreeMap::new(),
            max_values_per_key: MAX_VALUES_PER_KEY,
            holders: HolderIndex::new(4096, 16),
            // Sparse: a node that relays little allocates little, which 10,000
            // simulated nodes in one process need.
            cache: lru::LruCache::sparse(NonZeroUsize::new(cache.max(1)).expect("non-zero")),
            pending: HashMap::new(),
            next_sync_ms: SYNC_INTERVAL_MS,
            sync_replica: 0,
            sync_cursor: [0; 32],
            sync_last: None,
            out: VecDeque::new(),
            events: VecDeque::new(),
            trust: LocalTrust::new(TrustConfig::default()),
            standing: HashMap::new(),
            standing_order: VecDeque::new(),
            limiter: RateLimiter::new(MAX_STANDINGS),
            limited: 0,
            exchanges: HashMap::new(),
            exchange_count: 0,
        }
    }

    /// Meets `peer`: starts an exchange with it (the paper's construction
    /// step), unless one with it is already under way or too many are.
    pub fn meet(&mut self, now_ms: u64, peer: NodeId) {
        self.start_exchange(now_ms, peer, 0);
    }

    fn start_exchange(&mut self, now_ms: u64, peer: NodeId, depth: u8) {
        self.exchanges
            .retain(|_, &mut (_, deadline)| deadline > now_ms);
        if peer == self.peer.id()
            || self.exchanges.contains_key(&peer)
            || self.exchanges.len() >= MAX_EXCHANGES
        {
            return;
        }
        self.exchanges
            .insert(peer, (depth, now_ms + EXCHANGE_TIMEOUT_MS));
        let keys = self.key_sample();
        self.out.push_back(Transmit {
            to: peer,
            message: Message::Exchange {
                depth,
                state: self.peer.state(),
                keys,
            },
        });
    }

    /// Up to [`MAX_EXCHANGE_KEYS`] key prefixes of the store, evenly spaced.
    fn key_sample(&self) -> Vec<u64> {
        let step = self.store.len().div_ceil(MAX_EXCHANGE_KEYS).max(1);
        let mut keys: Vec<u64> = self.store.keys().step_by(step).map(key_bits).collect();
        keys.dedup();
        keys
    }

    /// Exchanges run so far, as initiator or as the peer met.
    pub fn exchange_count(&self) -> u64 {
        self.exchange_count
    }

    /// Drops `peer` from the routing table and replica set (gossip found
    /// it dead, or it left).
    pub fn forget(&mut self, peer: NodeId) {
        self.peer.forget(peer);
    }

    /// Number of keys stored here.
    pub fn stored_keys(&self) -> usize {
        self.store.len()
    }

    /// Records the outcome of a dealing with `peer` outside P-Grid's own
    /// messages: a content transfer that verified, or a wrong hash.
    pub fn record(&mut self, now_ms: u64, peer: NodeId, feedback: Feedback) {
        self.trust.record(now_ms, peer, feedback);
    }

    /// This node's opinions, to report to its score managers.
    pub fn trust_report(&self, now_ms: u64) -> TrustRow {
        self.trust.report(now_ms)
    }

    /// The standing of `peer` as the score managers last said.
    pub fn standing(&self, peer: NodeId) -> Standing {
        self.standing
            .get(&peer)
            .copied()
            .unwrap_or(Standing::Unknown)
    }

    /// The score managers' verdict on `peer`. A peer in bad standing is
    /// dropped from the routing table and the replica set at once; it
    /// may come back through later exchanges, but is skipped as a next
    /// hop and as a holder while the verdict stands.
    pub fn set_standing(&mut self, peer: NodeId, standing: Standing) {
        if self.standing.insert(peer, standing).is_none() {
            self.standing_order.push_back(peer);
            if self.standing_order.len() > MAX_STANDINGS
                && let Some(old) = self.standing_order.pop_front()
            {
                self.standing.remove(&old);
            }
        }
        if !standing.usable() {
            self.peer.forget(peer);
        }
    }

    /// Messages dropped so far by the per-peer rate limit.
    pub fn rate_limited(&self) -> u64 {
        self.limited
    }

    /// Whether this node's own recent dealings with `peer` were bad.
    pub fn locally_bad(&self, now_ms: u64, peer: NodeId) -> bool {
        self.trust.locally_bad(now_ms, peer)
    }

    /// Whether `peer` may be asked or named: not in bad standing, and not
    /// bad in this node's own recent dealings.
    fn usable(&self, now_ms: u64, peer: NodeId) -> bool {
        self.standing(peer).usable() && !self.trust.locally_bad(now_ms, peer)
    }

    /// The routing state.
    pub fn peer(&self) -> &PGridPeer {
        &self.peer
    }

    /// Values stored here for `key`.
    pub fn stored(&self, key: &[u8; 32]) -> &[ValueRef] {
        self.store.get(key).map_or(&[], Vec::as_slice)
    }

    /// Stores `value` under `key` at the responsible peers; returns the
    /// operation's id.
    pub fn put(
        &mut self,
        now_ms: u64,
        key: [u8; 32],
        value: ValueRef,
        px: &dyn Proximity,
        rng: &mut OverlayRng,
    ) -> u64 {
        self.start(now_ms, key, Op::Put(value), px, rng)
    }

    /// Reads `key`.
    pub fn get(
        &mut self,
        now_ms: u64,
        key: [u8; 32],
        px: &dyn Proximity,
        rng: &mut OverlayRng,
    ) -> u64 {
        self.start(now_ms, key, Op::Get, px, rng)
    }

    /// Finds who holds `key`'s object.
    pub fn holders(
        &mut self,
        now_ms: u64,
        key: [u8; 32],
        px: &dyn Proximity,
        rng: &mut OverlayRng,
    ) -> u64 {
        self.start(now_ms, key, Op::Holders, px, rng)
    }

    /// Registers this peer as a holder of `key`'s object for a while.
    pub fn announce(
        &mut self,
        now_ms: u64,
        key: [u8; 32],
        px: &dyn Proximity,
        rng: &mut OverlayRng,
    ) -> u64 {
        self.start(now_ms, key, Op::Announce, px, rng)
    }

    fn start(
        &mut self,
        now_ms: u64,
        key: [u8; 32],
        op: Op,
        px: &dyn Proximity,
        rng: &mut OverlayRng,
    ) -> u64 {
        let id = self.fresh_id();
        let path = vec![self.peer.id()];
        self.advance(now_ms, id, key, op, path, px, rng);
        id
    }

    fn fresh_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// A message from `from`.
    pub fn handle_message(
        &mut self,
        now_ms: u64,
        from: NodeId,
        message: Message,
        px: &dyn Proximity,
        rng: &mut OverlayRng,
    ) {
        if !self.limiter.allow(now_ms, from, self.standing(from)) {
            self.limited += 1;
            return;
        }
        match message {
            Message::Query { key, op, mut path } => {
                if path.len() > 2 * usize::from(self.config.maxl) + 2 || path.last() != Some(&from)
                {
                    return; // a looping or forged path: drop it
                }
                path.push(self.peer.id());
                let id = self.fresh_id();
                self.advance(now_ms, id, key, op, path, px, rng);
            }
            Message::Reply {
                key,
                answer,
                mut path,
            } => {
                // We are the last peer of the path; the pending query under
                // which we forwarded is found by key and next hop.
                let Some(pos) = path.iter().rposition(|&p| p == self.peer.id()) else {
                    return;
                };
                path.truncate(pos + 1);
                let Some((&id, _)) = self
                    .pending
                    .iter()
                    // Only the peer asked may answer: an answer from
                    // anyone else would be cached and served on.
                    .find(|(_, p)| p.key == key && p.path == path && p.asked == Some(from))
                else {
                    return; // late, already answered, or not from the peer asked
                };
                let pending = self.pending.remove(&id).expect("found above");
                if let Some(asked) = pending.asked {
                    self.trust.record(now_ms, asked, Feedback::Verified);
                }
                if matches!(pending.op, Op::Get | Op::Holders) {
                    self.cache.put(key, (answer.clone(), now_ms + CACHE_TTL_MS));
                }
                self.finish(id, key, answer, pending.path);
            }
            Message::Replicate { entries } => {
                for (key, value) in entries.into_iter().take(MAX_SYNC_ENTRIES) {
                    if self.peer.responsible_for(key_bits(&key)) {
                        self.store_value(key, value);
                    }
                }
            }
            Message::Announced { key, holder } => {
                // Only from a replica of this path: anyone else could name
                // arbitrary peers as holders.
                if self.peer.replicas().contains(&from) && self.peer.responsible_for(key_bits(&key))
                {
                    self.holders.register(key, holder, now_ms + HOLDER_TTL_MS);
                }
            }
            Message::Exchange { depth, state, keys } => {
                if depth > self.config.recmax {
                    return;
                }
                let me = self.peer.id();
                let mut theirs = PGridPeer::from_state(from, state, &self.config);
                let basis = theirs.path();
                let before = self.peer.path();
                let mut all = keys;
                all.truncate(MAX_EXCHANGE_KEYS);
                all.extend(self.key_sample());
                let data = SortedKeys::new(all);
                let outcome = exchange(
                    &mut theirs,
                    &mut self.peer,
                    depth,
                    &self.config,
                    &data,
                    px,
                    rng,
                );
                self.exchange_count += 1;
                let mut meet = Vec::new();
                for (who, other) in outcome.recurse {
                    if who == from {
                        meet.push(other);
                    } else if who == me {
                        self.start_exchange(now_ms, other, depth + 1);
                    }
                }
                self.out.push_back(Transmit {
                    to: from,
                    message: Message::ExchangeReply {
                        basis,
                        state: theirs.state(),
                        meet,
                    },
                });
                self.note_path(before);
            }
            Message::ExchangeReply { basis, state, meet } => {
                let Some((depth, _)) = self.exchanges.remove(&from) else {
                    return; // not asked, or too late
                };
                if self.peer.path() != basis {
                    return; // another exchange moved us meanwhile
                }
                // An exchange extends a path, or moves a leaf to its sibling
                // leaf; a reply that would move us elsewhere in the trie is
                // not one.
                let sibling = !basis.is_empty() && state.path == basis.other_side(basis.len() - 1);
                if !basis.is_prefix_of(&state.path) && !sibling {
                    return;
                }
                let before = self.peer.path();
                self.peer.adopt(state, &self.config);
                self.exchange_count += 1;
                if depth < self.config.recmax {
                    for other in meet.into_iter().take(2) {
                        self.start_exchange(now_ms, other, depth + 1);
                    }
                }
                self.note_path(before);
            }
        }
    }

    /// Queues an event; past [`MAX_EVENTS`] the oldest goes (a driver
    /// that does not drain them loses old news, not memory).
    fn push_event(&mut self, event: Event) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    fn note_path(&mut self, before: Path) {
        let path = self.peer.path();
        if path != before {
            self.push_event(Event::PathChanged { path });
        }
    }

    /// Moves `id` on: answer it here, or send it to the best candidate.
    #[allow(clippy::too_many_arguments)]
    fn advance(
        &mut self,
        now_ms: u64,
        id: u64,
        key: [u8; 32],
        op: Op,
        path: Vec<NodeId>,
        px: &dyn Proximity,
        rng: &mut OverlayRng,
    ) {
        let bits = key_bits(&key);
        if matches!(op, Op::Get | Op::Holders)
            && let Some((cached, expires_ms)) = self.cache.get(&key)
            && *expires_ms > now_ms
        {
            let mut answer = cached.clone();
            answer.answered_by = Some(self.peer.id());
            answer.from_cache = true;
            self.finish(id, key, answer, path);
            return;
        }
        let candidates = match self.peer.route(bits, px, self.config.choice, rng) {
            Some((_, candidates)) => candidates,
            None => {
                let others = self.replicas_to_ask(now_ms, &key, &op, &path);
                if others.is_empty() {
                    let answer = self.answer_here(now_ms, key, op, path.first().copied());
                    self.finish(id, key, answer, path);
                    return;
                }
                others
            }
        };
        if self.pending.len() >= MAX_PENDING {
            if path.len() == 1 {
                self.push_event(Event::Failed { id });
            }
            return;
        }
        let mut rest: Vec<NodeId> = candidates
            .into_iter()
            .filter(|&c| !path.contains(&c) && self.usable(now_ms, c))
            .collect();
        rest.reverse(); // pop() takes the best
        let pending = Pending {
            key,
            op,
            path,
            rest,
            asked: None,
            deadline_ms: now_ms,
        };
        self.pending.insert(id, pending);
        self.try_next(now_ms, id);
    }

    /// A get that finds nothing at a responsible peer goes on to one of its
    /// replicas before the answer is "none": this peer may be new on the
    /// path (it extended, or moved to even out replicas) and still
    /// filling up by anti-entropy. Only once: a replica asked by a replica
    /// answers. The rest are tried if the first times out.
    fn replicas_to_ask(
        &self,
        now_ms: u64,
        key: &[u8; 32],
        op: &Op,
        path: &[NodeId],
    ) -> Vec<NodeId> {
        let has = self.store.get(key).is_some_and(|v| !v.is_empty());
        let asked_by_replica = path
            .len()
            .checked_sub(2)
            .is_some_and(|i| self.peer.replicas().contains(&path[i]));
        if !matches!(op, Op::Get) || has || asked_by_replica {
            return Vec::new();
        }
        self.peer
            .replicas()
            .iter()
            .copied()
            .filter(|&r| !path.contains(&r) && self.usable(now_ms, r))
            .collect()
    }

    fn try_next(&mut self, now_ms: u64, id: u64) {
        let Some(pending) = self.pending.get_mut(&id) else {
            return;
        };
        match pending.rest.pop() {
            Some(next) => {
                pending.asked = Some(next);
                pending.deadline_ms = now_ms + self.hop_timeout_ms;
                self.out.push_back(Transmit {
                    to: next,
                    message: Message::Query {
                        key: pending.key,
                        op: pending.op.clone(),
                        path: pending.path.clone(),
                    },
                });
            }
            None => {
                let pending = self.pending.remove(&id).expect("present");
                if pending.path.len() == 1 {
                    self.push_event(Event::Failed { id });
                }
                // A relay that runs out stays silent; the hop before it
                // times out and tries its own next candidate.
            }
        }
    }

    fn answer_here(
        &mut self,
        now_ms: u64,
        key: [u8; 32],
        op: Op,
        origin: Option<NodeId>,
    ) -> Answer {
        let me = self.peer.id();
        match op {
            Op::Put(value) => {
                self.store_value(key, value.clone());
                for &r in self.peer.replicas() {
                    self.out.push_back(Transmit {
                        to: r,
                        message: Message::Replicate {
                            entries: vec![(key, value.clone())],
                        },
                    });
                }
            }
            Op::Announce => {
                if let Some(origin) = origin {
                    self.holders.register(key, origin, now_ms + HOLDER_TTL_MS);
                    for &r in self.peer.replicas() {
                        self.out.push_back(Transmit {
                            to: r,
                            message: Message::Announced {
                                key,
                                holder: origin,
                            },
                        });
                    }
                }
            }
            Op::Get | Op::Holders => {}
        }
        let mut holders = vec![me];
        holders.extend_from_slice(self.peer.replicas());
        holders.extend(self.holders.holders(&key, now_ms));
        holders.retain(|&h| h == me || self.usable(now_ms, h));
        Answer {
            values: self.stored(&key).to_vec(),
            holders,
            answered_by: Some(me),
            from_cache: false,
        }
    }

    fn store_value(&mut self, key: [u8; 32], value: ValueRef) {
        let values = self.store.entry(key).or_default();
        if !values.contains(&value) {
            if values.len() >= self.max_values_per_key {
                values.remove(0);
            }
            values.push(value.clone());
            self.push_event(Event::Stored { key, value });
        }
    }

    /// Sends `answer` to the peer before us on `path`; at the origin, the
    /// operation `id` is done.
    fn finish(&mut self, id: u64, key: [u8; 32], answer: Answer, path: Vec<NodeId>) {
        if path.len() <= 1 {
            self.push_event(Event::Done { id, answer });
            return;
        }
        let to = path[path.len() - 2];
        self.out.push_back(Transmit {
            to,
            message: Message::Reply { key, answer, path },
        });
    }

    /// Timers: a hop that did not answer in time is skipped.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        if now_ms >= self.next_sync_ms {
            self.next_sync_ms = now_ms + SYNC_INTERVAL_MS;
            self.sync_one_replica();
        }
        let due: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline_ms <= now_ms)
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            if let Some(asked) = self.pending.get_mut(&id).and_then(|p| p.asked.take()) {
                self.trust.record(now_ms, asked, Feedback::Timeout);
            }
            self.try_next(now_ms, id);
        }
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// When [`PGridNode::handle_timeout`] should be called next.
    pub fn poll_timeout(&self) -> Option<u64> {
        let pending = self.pending.values().map(|p| p.deadline_ms).min();
        let sync = (!self.store.is_empty() && !self.peer.replicas().is_empty())
            .then_some(self.next_sync_ms);
        pending.into_iter().chain(sync).min()
    }

    /// Anti-entropy: the next batch of this peer's entries to the next
    /// replica, round robin over both, so every replica receives every
    /// entry within (entries / batch) x replicas intervals.
    fn sync_one_replica(&mut self) {
        let replicas = self.peer.replicas();
        if replicas.is_empty() || self.store.is_empty() {
            return;
        }
        let to = replicas[self.sync_replica % replicas.len()];
        self.sync_replica = self.sync_replica.wrapping_add(1);
        let mut entries = Vec::new();
        let start = self.sync_cursor;
        let skip = self.sync_last;
        let mut last = None;
        for (k, values) in self.store.range(start..).filter(|(k, _)| Some(**k) != skip) {
            for v in values {
                entries.push((*k, v.clone()));
            }
            last = Some(*k);
            if entries.len() >= MAX_SYNC_ENTRIES {
                break;
            }
        }
        if last.is_some() {
            self.sync_last = last;
        }
        if entries.is_empty() {
            // Wrapped: start again from the first key next time.
            self.sync_cursor = [0; 32];
            self.sync_last = None;
            return;
        }
        self.sync_cursor = self.sync_last.expect("set with an entry");
        self.out.push_back(Transmit {
            to,
            message: Message::Replicate { entries },
        });
    }

    /// The next event for the local node.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::overlay::pgrid::test_support::Flat;
    use crate::overlay::pgrid::{SortedKeys, exchange};

    /// 64 peers that built a trie over 1,000 random keys, as nodes.
    fn grid(seed: u64) -> (Vec<PGridNode>, OverlayRng) {
        let mut rng = OverlayRng::seed_from_u64(seed);
        let keys = SortedKeys::new((0..1000).map(|_| rng.r#gen()).collect());
        let config = PGridConfig {
            max_keys: 100,
            min_replicas: 2,
            ..PGridConfig::default()
        };
        let n = 64;
        let mut peers: Vec<PGridPeer> = (0..n).map(|i| PGridPeer::new(NodeId(i + 1))).collect();
        for _ in 0..60 {
            for i in 0..n as usize {
                let j = (i + rng.gen_range(1..n as usize)) % n as usize;
                let (lo, hi) = (i.min(j), i.max(j));
                let (left, right) = peers.split_at_mut(hi);
                exchange(
                    &mut left[lo],
                    &mut right[0],
                    0,
                    &config,
                    &keys,
                    &Flat,
                    &mut rng,
                );
            }
        }
        let nodes = peers
            .into_iter()
            .map(|p| PGridNode::new(p, config.clone(), 500, 32))
            .collect();
        (nodes, rng)
    }

    /// Delivers every message at once, dropping those to `dead` peers;
    /// when nothing is in flight, jumps to the next hop timeout (sync timers
    /// are left alone). Returns the events.
    fn run(
        nodes: &mut [PGridNode],
        dead: &HashSet<NodeId>,
        now: &mut u64,
        rng: &mut OverlayRng,
    ) -> Vec<Event> {
        let mut events = Vec::new();
        for _ in 0..10_000 {
            let mut moved = false;
            for i in 0..nodes.len() {
                while let Some(t) = nodes[i].poll_transmit() {
                    moved = true;
                    if dead.contains(&t.to) {
                        continue;
                    }
                    let from = nodes[i].peer().id();
                    nodes[t.to.0 as usize - 1].handle_message(*now, from, t.message, &Flat, rng);
                }
                while let Some(e) = nodes[i].poll_event() {
                    if matches!(e, Event::Done { .. } | Event::Failed { .. }) {
                        events.push(e);
                    }
                }
            }
            if moved {
                continue;
            }
            let next = nodes
                .iter()
                .enumerate()
                .filter(|(i, _)| !dead.contains(&NodeId(*i as u64 + 1)))
                .filter_map(|(_, n)| n.pending.values().map(|p| p.deadline_ms).min())
                .min();
            match next {
                Some(t) => {
                    *now = t.max(*now);
                    for n in nodes.iter_mut() {
                        n.handle_timeout(*now);
                    }
                }
                None => return events,
            }
        }
        panic!("messages still moving after 10,000 rounds");
    }

    fn key(i: u8) -> [u8; 32] {
        let mut k = [0u8; 32];
        k[0] = i.wrapping_mul(37);
        k[1] = i;
        k
    }

    /// Exchanges carried as messages (as the libp2p driver carries them)
    /// build a trie from peers that all start at the root: paths split,
    /// every key stays covered, and gets are routed to values.
    #[test]
    fn exchanges_over_messages_build_a_trie_that_routes() {
        let mut rng = OverlayRng::seed_from_u64(3);
        let config = PGridConfig {
            max_keys: 40,
            min_replicas: 2,
            ..PGridConfig::default()
        };
        let n = 32u64;
        let mut nodes: Vec<PGridNode> = (1..=n)
            .map(|i| PGridNode::new(PGridPeer::new(NodeId(i)), config.clone(), 500, 0))
            .collect();
        let keys: Vec<[u8; 32]> = (0..400).map(|_| rng.r#gen()).collect();
        for node in &mut nodes {
            for k in &keys {
                node.store_value(*k, k[..4].to_vec());
            }
            while node.poll_event().is_some() {}
        }
        let none = HashSet::new();
        let mut now = 0;
        for _ in 0..30 {
            for i in 0..n {
                let j = (i + rng.gen_range(1..n)) % n;
                nodes[i as usize].meet(now, NodeId(j + 1));
            }
            run(&mut nodes, &none, &mut now, &mut rng);
            now += 1000;
        }
        let paths: HashSet<_> = nodes.iter().map(|n| n.peer().path()).collect();
        assert!(paths.len() >= 4, "only {} distinct paths", paths.len());
        for k in &keys {
            assert!(
                nodes.iter().any(|n| n.peer().responsible_for(key_bits(k))),
                "key {} not covered by any path",
                hex::encode(k)
            );
        }
        assert!(nodes.iter().all(|n| n.exchange_count() > 0));
        for k in keys.iter().take(50) {
            let id = nodes[0].get(now, *k, &Flat, &mut rng);
            let events = run(&mut nodes, &none, &mut now, &mut rng);
            match &events[..] {
                [Event::Done { id: got, answer }] if *got == id => {
                    assert_eq!(answer.values, vec![k[..4].to_vec()]);
                }
                other => panic!("get {}: {other:?}", hex::encode(k)),
            }
        }
    }

    #[test]
    fn put_then_get_from_another_peer_and_hop_caching() {
        let (mut nodes, mut rng) = grid(1);
        let none = HashSet::new();
        let mut now = 0;
        for i in 0..20u8 {
            let id = nodes[0].put(now, key(i), vec![i], &Flat, &mut rng);
            let events = run(&mut nodes, &none, &mut now, &mut rng);
            assert!(
                matches!(&events[..], [Event::Done { id: got, .. }] if *got == id),
                "{events:?}"
            );
        }
        // Every responsible peer that the put reached as a replica has it.
        let holders_of = |nodes: &[PGridNode], k: [u8; 32]| {
            nodes
                .iter()
                .filter(|n| n.stored(&k) == [vec![k[1]]])
                .count()
        };
        assert!(holders_of(&nodes, key(3)) >= 1);
        for i in 0..20u8 {
            let id = nodes[40].get(now, key(i), &Flat, &mut rng);
            let events = run(&mut nodes, &none, &mut now, &mut rng);
            let [Event::Done { id: got, answer }] = &events[..] else {
                panic!("{events:?}")
            };
            assert_eq!(*got, id);
            assert_eq!(answer.values, [vec![i]], "key {i}");
        }
        // Asked again from a third peer: relays answer from their caches.
        let mut early = 0;
        for i in 0..20u8 {
            nodes[41].get(now, key(i), &Flat, &mut rng);
            let events = run(&mut nodes, &none, &mut now, &mut rng);
            let [Event::Done { answer, .. }] = &events[..] else {
                panic!("{events:?}")
            };
            assert_eq!(answer.values, [vec![i]]);
            early += usize::from(answer.from_cache);
        }
        assert!(early > 0, "no get was answered by a relay's cache");
    }

    #[test]
    fn holders_include_announcers_and_dead_hops_are_skipped() {
        let (mut nodes, mut rng) = grid(2);
        let mut dead = HashSet::new();
        let mut now = 0;
        let k = key(9);
        nodes[5].announce(now, k, &Flat, &mut rng);
        run(&mut nodes, &dead, &mut now, &mut rng);
        nodes[6].holders(now, k, &Flat, &mut rng);
        let events = run(&mut nodes, &dead, &mut now, &mut rng);
        let [Event::Done { answer, .. }] = &events[..] else {
            panic!("{events:?}")
        };
        assert!(answer.holders.contains(&NodeId(6)), "{answer:?}");
        // Every replica of the responsible path names it, whichever one
        // the announcement reached: each answers its own lookup.
        let responsible: Vec<usize> = (0..nodes.len())
            .filter(|&i| nodes[i].peer().responsible_for(key_bits(&k)))
            .collect();
        assert!(responsible.len() >= 2, "needs replicas: {responsible:?}");
        for i in responsible {
            nodes[i].holders(now, k, &Flat, &mut rng);
            let events = run(&mut nodes, &dead, &mut now, &mut rng);
            let [Event::Done { answer, .. }] = &events[..] else {
                panic!("{events:?}")
            };
            assert!(
                answer.holders.contains(&NodeId(6)),
                "replica {} does not name the holder: {answer:?}",
                i + 1
            );
        }
        // Kill the origin's first choice at the first hop: the query times
        // out there and goes to the next candidate.
        let origin = 20;
        let target = key(200);
        let (_, first) = nodes[origin]
            .peer()
            .route(
                key_bits(&target),
                &Flat,
                nodes[origin].config.choice,
                &mut rng,
            )
            .expect("not responsible");
        assert!(first.len() >= 2, "needs a second candidate");
        dead.insert(first[0]);
        let before = now;
        nodes[origin].get(now, target, &Flat, &mut rng);
        let events = run(&mut nodes, &dead, &mut now, &mut rng);
        assert!(matches!(&events[..], [Event::Done { .. }]), "{events:?}");
        assert!(now >= before + 500, "no timeout was waited for");
    }

    #[test]
    fn hops_are_rated_and_peers_in_bad_standing_are_skipped() {
        let (mut nodes, mut rng) = grid(4);
        let mut dead = HashSet::new();
        let mut now = 0;
        let target = key(77);
        // A peer with two candidates for the first hop.
        let origin = (20..nodes.len())
            .find(|&i| {
                nodes[i]
                    .peer()
                    .route(key_bits(&target), &Flat, nodes[i].config.choice, &mut rng)
                    .is_some_and(|(_, c)| c.len() >= 2)
            })
            .expect("a peer with two candidates");
        let first = |nodes: &[PGridNode], rng: &mut OverlayRng| {
            nodes[origin]
                .peer()
                .route(key_bits(&target), &Flat, nodes[origin].config.choice, rng)
                .expect("not responsible")
                .1
        };
        let candidates = first(&nodes, &mut rng);
        // A silent first hop: a timeout is a bad rating, and with no good
        // ones to outweigh it the hop is no longer asked.
        dead.insert(candidates[0]);
        for round in 0..3 {
            let before = now;
            nodes[origin].get(now, target, &Flat, &mut rng);
            let events = run(&mut nodes, &dead, &mut now, &mut rng);
            assert!(matches!(&events[..], [Event::Done { .. }]), "{events:?}");
            let waited = now >= before + 500;
            assert_eq!(waited, round < 1, "round {round}: waited {waited}");
            nodes[origin].cache.clear();
        }
        assert!(nodes[origin].trust.locally_bad(now, candidates[0]));
        // The hop that answered was rated good (a later candidate that
        // timed out as well, for want of a way on, was rated bad).
        let row = nodes[origin].trust_report(now);
        let other = candidates[1..]
            .iter()
            .copied()
            .find(|&c| {
                row.entries
                    .iter()
                    .any(|e| e.peer == c && e.good > 0.0 && e.bad == 0.0)
            })
            .unwrap_or_else(|| panic!("no candidate rated good: {row:?}"));
        // The score managers' verdict drops a peer from the table at once,
        // and from holder answers.
        nodes[origin].set_standing(other, Standing::Bad);
        assert!(!first(&nodes, &mut rng).contains(&other));
        let k = key(9);
        nodes[5].announce(now, k, &Flat, &mut rng);
        run(&mut nodes, &dead, &mut now, &mut rng);
        for n in nodes.iter_mut() {
            n.set_standing(NodeId(6), Standing::Bad);
            n.cache.clear();
        }
        nodes[30].holders(now, k, &Flat, &mut rng);
        let events = run(&mut nodes, &dead, &mut now, &mut rng);
        let [Event::Done { answer, .. }] = &events[..] else {
            panic!("{events:?}")
        };
        assert!(!answer.holders.contains(&NodeId(6)), "{answer:?}");
    }

    #[test]
    fn a_flood_from_a_peer_in_bad_standing_is_rate_limited() {
        let (mut nodes, mut rng) = grid(5);
        let flooder = NodeId(9);
        nodes[0].set_standing(flooder, Standing::Bad);
        for k in 0..1000u64 {
            let message = Message::Replicate { entries: vec![] };
            nodes[0].handle_message(k, flooder, message, &Flat, &mut rng);
        }
        // One second: the burst of four and about two per second.
        let limited = nodes[0].rate_limited();
        assert!((990..=997).contains(&limited), "{limited}");
        // A peer in good standing is not limited at that rate.
        let good = NodeId(10);
        nodes[0].set_standing(good, Standing::Good(1.0));
        for k in 0..100u64 {
            let message = Message::Replicate { entries: vec![] };
            nodes[0].handle_message(k, good, message, &Flat, &mut rng);
        }
        assert_eq!(nodes[0].rate_limited(), limited);
    }

    #[test]
    fn a_replica_that_lost_its_store_is_refilled_by_anti_entropy() {
        let (mut nodes, mut rng) = grid(3);
        let none = HashSet::new();
        let mut now = 0;
        for i in 0..50u8 {
            nodes[0].put(now, key(i), vec![i], &Flat, &mut rng);
            run_until_quiet(&mut nodes, &none, &mut now, &mut rng);
        }
        // A peer that holds entries and has replicas restarts empty.
        let victim = (0..nodes.len())
            .find(|&i| !nodes[i].store.is_empty() && !nodes[i].peer.replicas().is_empty())
            .expect("a peer with entries and replicas");
        let had = nodes[victim].store.len();
        let lost = *nodes[victim].store.keys().next().expect("entries");
        nodes[victim].store.clear();
        // Before it refills, a get it answers asks a replica.
        assert!(nodes[victim].peer.responsible_for(key_bits(&lost)));
        let id = nodes[victim].get(now, lost, &Flat, &mut rng);
        let events = run(&mut nodes, &none, &mut now, &mut rng);
        let [Event::Done { id: got, answer }] = &events[..] else {
            panic!("{events:?}")
        };
        assert_eq!(*got, id);
        assert_eq!(answer.values, [vec![lost[1]]], "{answer:?}");
        assert_ne!(answer.answered_by, Some(nodes[victim].peer.id()));
        // Run the timers for a few sync intervals.
        let end = now + 20 * SYNC_INTERVAL_MS;
        while now < end {
            now += SYNC_INTERVAL_MS;
            for n in nodes.iter_mut() {
                n.handle_timeout(now);
            }
            run_until_quiet(&mut nodes, &none, &mut now, &mut rng);
        }
        assert!(
            nodes[victim].store.len() >= had,
            "refilled {} of {had}",
            nodes[victim].store.len()
        );
    }

    /// Delivers messages until none is in flight (timers not advanced).
    fn run_until_quiet(
        nodes: &mut [PGridNode],
        dead: &HashSet<NodeId>,
        now: &mut u64,
        rng: &mut OverlayRng,
    ) {
        loop {
            let mut moved = false;
            for i in 0..nodes.len() {
                while let Some(t) = nodes[i].poll_transmit() {
                    moved = true;
                    if !dead.contains(&t.to) {
                        let from = nodes[i].peer().id();
                        nodes[t.to.0 as usize - 1]
                            .handle_message(*now, from, t.message, &Flat, rng);
                    }
                }
                while nodes[i].poll_event().is_some() {}
            }
            if !moved {
                return;
            }
        }
    }
}
