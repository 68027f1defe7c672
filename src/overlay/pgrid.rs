//! P-Grid (Aberer et al., "P-Grid: a self-organizing structured P2P
//! system", SIGMOD Record 2003; "Indexing data-oriented overlay networks",
//! VLDB 2005): a binary trie over the key space whose shape comes from the
//! exchanges of the peers that meet, not from a hash of their ids.
//!
//! Keys are 256-bit and order-preserving (the trie is a prefix tree, so a
//! prefix query is a subtree); the trie works on their first 64 bits, which
//! bounds a path to `maxl <= 64` levels. A peer's [`Path`] is the prefix it
//! is responsible for; for each level of it, up to `refmax` references to
//! peers on the other side of that bit. Peers with the same path are
//! replicas.
//!
//! [`exchange`] is the construction step two peers run when they meet
//! (the cases of the paper: same path, one path a prefix of the other,
//! diverging paths), made data-aware: a peer extends its path only while
//! the data under it is more than its storage share (`max_keys`), and when
//! it extends next to a deeper peer it picks the side with probability
//! proportional to the data there, so peers gather where keys are dense and
//! stored keys per peer stay balanced under skew. Reference choice is
//! proximity-aware: among candidates the lowest predicted RTT is kept.
//!
//! Like the rest of `overlay`, this does no IO: the driver (the simulator
//! now, the libp2p driver later) moves the messages; the data a peer holds
//! is seen through [`DataView`], and predicted RTTs through [`Proximity`].

use std::collections::{HashMap, VecDeque};

use rand::Rng;
use rand::seq::SliceRandom;

use crate::overlay::{NodeId, OverlayRng};

/// The longest path the trie supports (the bits of a key it reads).
pub const MAX_PATH_BITS: u8 = 64;

/// The P-Grid parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct PGridConfig {
    /// Longest path (`maxl`): bounds the depth of the trie, and so hops.
    pub maxl: u8,
    /// References kept per level (`refmax`): more survive more churn, at
    /// the cost of routing table size.
    pub refmax: usize,
    /// Recursion depth of an exchange (`recmax`): a peer that meets one on
    /// the other side also meets that peer's references on its own side,
    /// which spreads references and paths faster.
    pub recmax: u8,
    /// A peer's storage share: it splits its path (specialises) only while
    /// more keys than this fall under it. With K keys and N peers,
    /// `replicas * K / N` gives about `replicas` peers per leaf.
    pub max_keys: usize,
    /// A path splits only when both peers meeting on it know this many
    /// peers on it (themselves included) for each half, so that no leaf is
    /// left with fewer replicas than this by a split.
    pub min_replicas: usize,
    /// The least share of a path's peers that each side of it gets when
    /// they extend, however little data is there.
    pub min_side_share: f64,
    /// Replicas a peer remembers for its path.
    pub max_replicas: usize,
    /// How references are chosen when there are more than `refmax`.
    pub choice: RefChoice,
}

impl Default for PGridConfig {
    fn default() -> Self {
        Self {
            maxl: 48,
            refmax: 8,
            recmax: 2,
            max_keys: 64,
            min_replicas: 4,
            min_side_share: 0.15,
            max_replicas: 16,
            choice: RefChoice::Proximity,
        }
    }
}

/// How references are picked among candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefChoice {
    /// Keep the nearest by predicted RTT (proximity neighbour selection).
    Proximity,
    /// Keep a random sample (the baseline).
    Random,
}

/// A key's first 64 bits, which the trie reads.
pub fn key_bits(key: &[u8; 32]) -> u64 {
    u64::from_be_bytes(key[..8].try_into().expect("8 bytes"))
}

/// A bit string of up to 64 bits: bit 0 is the most significant bit of
/// `bits`, the rest of `bits` is zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Path {
    bits: u64,
    len: u8,
}

impl Path {
    /// The empty path (responsible for every key).
    pub const ROOT: Path = Path { bits: 0, len: 0 };

    /// The first `len` bits of `key` (64-bit key prefix).
    pub fn of_key(key: u64, len: u8) -> Self {
        let len = len.min(MAX_PATH_BITS);
        Self {
            bits: key & mask(len),
            len,
        }
    }

    /// Parses `"0110"`.
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() > MAX_PATH_BITS as usize {
            return None;
        }
        let mut path = Self::ROOT;
        for c in text.chars() {
            path = path.child(match c {
                '0' => 0,
                '1' => 1,
                _ => return None,
            });
        }
        Some(path)
    }

    /// The bits, from the most significant; the rest is zero.
    pub fn bits(&self) -> u64 {
        self.bits
    }

    /// Number of bits.
    pub fn len(&self) -> u8 {
        self.len
    }

    /// Whether this is the root.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bit `i` (0 or 1); `i < len`.
    pub fn bit(&self, i: u8) -> u8 {
        debug_assert!(i < self.len);
        ((self.bits >> (63 - i)) & 1) as u8
    }

    /// This path with one more bit.
    pub fn child(&self, bit: u8) -> Self {
        assert!(self.len < MAX_PATH_BITS, "path at its longest");
        Self {
            bits: self.bits | (u64::from(bit & 1) << (63 - self.len)),
            len: self.len + 1,
        }
    }

    /// The first `len` bits.
    pub fn prefix(&self, len: u8) -> Self {
        Self::of_key(self.bits, len.min(self.len))
    }

    /// Length of the common prefix with `other`.
    pub fn common(&self, other: &Path) -> u8 {
        let diff = (self.bits ^ other.bits).leading_zeros() as u8;
        diff.min(self.len).min(other.len)
    }

    /// Length of the common prefix with a key.
    pub fn common_with_key(&self, key: u64) -> u8 {
        ((self.bits ^ key).leading_zeros() as u8).min(self.len)
    }

    /// Whether `key` falls under this path.
    pub fn covers(&self, key: u64) -> bool {
        self.common_with_key(key) == self.len
    }

    /// Whether this path is a prefix of `other` (or equal).
    pub fn is_prefix_of(&self, other: &Path) -> bool {
        self.len <= other.len && self.common(other) == self.len
    }

    /// The other side of bit `level` (`level < len`): the first `level`
    /// bits, then the other bit. What a reference at that level covers.
    pub fn other_side(&self, level: u8) -> Self {
        self.prefix(level).child(1 - self.bit(level))
    }

    /// Whether the two share keys: one is a prefix of the other.
    pub fn overlaps(&self, other: &Path) -> bool {
        self.is_prefix_of(other) || other.is_prefix_of(self)
    }

    /// The smallest and largest 64-bit key prefixes under this path.
    pub fn range(&self) -> (u64, u64) {
        (self.bits, self.bits | !mask(self.len))
    }
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.len == 0 {
            return f.write_str("ε");
        }
        for i in 0..self.len {
            write!(f, "{}", self.bit(i))?;
        }
        Ok(())
    }
}

fn mask(len: u8) -> u64 {
    if len == 0 {
        0
    } else {
        u64::MAX << (64 - u32::from(len))
    }
}

/// How many keys lie under a path: what a peer holding that path's data
/// knows about it.
pub trait DataView {
    /// Keys under `path`.
    fn keys_under(&self, path: Path) -> usize;
}

/// The data under each path when the keys are known, sorted: the count is
/// two binary searches. What a simulation or a test hands to [`exchange`].
#[derive(Debug, Clone, Default)]
pub struct SortedKeys(Vec<u64>);

impl SortedKeys {
    /// Sorts and deduplicates `keys` (64-bit key prefixes).
    pub fn new(mut keys: Vec<u64>) -> Self {
        keys.sort_unstable();
        keys.dedup();
        Self(keys)
    }

    /// The keys, ascending.
    pub fn keys(&self) -> &[u64] {
        &self.0
    }
}

impl DataView for SortedKeys {
    fn keys_under(&self, path: Path) -> usize {
        let (lo, hi) = path.range();
        self.0.partition_point(|&k| k <= hi) - self.0.partition_point(|&k| k < lo)
    }
}

/// Predicted RTTs, from network coordinates.
pub trait Proximity {
    /// Predicted RTT between two peers, milliseconds.
    fn rtt_ms(&self, a: NodeId, b: NodeId) -> f64;
}

/// One peer's P-Grid state.
#[derive(Debug, Clone)]
pub struct PGridPeer {
    id: NodeId,
    path: Path,
    /// `refs[l]`: peers whose path agrees with ours on bits `0..l` and
    /// differs at bit `l`.
    refs: Vec<Vec<NodeId>>,
    replicas: Vec<NodeId>,
}

/// What a peer tells another of its routing state when they meet over the
/// network: the first half of an exchange is run by the peer met, on a
/// copy of the initiator made from this ([`PGridPeer::from_state`]), and
/// the initiator adopts the copy it gets back ([`PGridPeer::adopt`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerState {
    /// The path.
    pub path: Path,
    /// References per level of the path.
    pub refs: Vec<Vec<NodeId>>,
    /// Known replicas.
    pub replicas: Vec<NodeId>,
}

/// What the driver must do after an exchange.
#[derive(Debug, Default)]
pub struct ExchangeOutcome {
    /// Whether either path changed.
    pub path_changed: bool,
    /// Further exchanges the recursion asks for: `(peer, other)`.
    pub recurse: Vec<(NodeId, NodeId)>,
}

impl PGridPeer {
    /// A new peer, responsible for everything until it meets others.
    pub fn new(id: NodeId) -> Self {
        Self {
            id,
            path: Path::ROOT,
            refs: Vec::new(),
            replicas: Vec::new(),
        }
    }

    /// A peer `id` in `state`, as another peer told it: the tables are
    /// cut to the config's bounds and to the path, and `id` is left out of
    /// its own tables, so a copy made from a message is as well formed as
    /// one made here.
    pub fn from_state(id: NodeId, state: PeerState, config: &PGridConfig) -> Self {
        let mut peer = Self::new(id);
        peer.adopt(state, config);
        peer
    }

    /// This peer's routing state, to send.
    pub fn state(&self) -> PeerState {
        PeerState {
            path: self.path,
            refs: self.refs.clone(),
            replicas: self.replicas.clone(),
        }
    }

    /// Takes `state` as this peer's own (the result of an exchange the
    /// peer met ran on our copy), within the config's bounds.
    pub fn adopt(&mut self, state: PeerState, config: &PGridConfig) {
        let me = self.id;
        let len = state.path.len().min(config.maxl);
        self.path = state.path.prefix(len);
        self.refs = state.refs;
        self.refs.resize(len as usize, Vec::new());
        for level in &mut self.refs {
            distinct_others(level, me, config.refmax);
        }
        self.replicas = state.replicas;
        distinct_others(&mut self.replicas, me, config.max_replicas);
    }

    /// The peer's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The path it is responsible for.
    pub fn path(&self) -> Path {
        self.path
    }

    /// References at `level` (empty past the path).
    pub fn refs(&self, level: u8) -> &[NodeId] {
        self.refs.get(level as usize).map_or(&[], Vec::as_slice)
    }

    /// Known replicas (peers with the same path).
    pub fn replicas(&self) -> &[NodeId] {
        &self.replicas
    }

    /// Whether this peer is responsible for `key`.
    pub fn responsible_for(&self, key: u64) -> bool {
        self.path.covers(key)
    }

    /// The next hop for `key`: `None` when this peer is responsible, else
    /// the level where key and path differ and the candidates there,
    /// nearest first (or shuffled, for the random baseline). The driver
    /// tries them in order, moving on when one times out.
    pub fn route(
        &self,
        key: u64,
        proximity: &dyn Proximity,
        choice: RefChoice,
        rng: &mut OverlayRng,
    ) -> Option<(u8, Vec<NodeId>)> {
        if self.responsible_for(key) {
            return None;
        }
        let level = self.path.common_with_key(key);
        let mut candidates = self.refs(level).to_vec();
        order(self.id, &mut candidates, proximity, choice, rng);
        Some((level, candidates))
    }

    /// Drops a peer that gossip marked dead from every table.
    pub fn forget(&mut self, dead: NodeId) {
        self.forget_where(|p| p != dead);
    }

    /// Keeps only the peers `keep` accepts in every table.
    pub fn forget_where(&mut self, keep: impl Fn(NodeId) -> bool) {
        for level in &mut self.refs {
            level.retain(|&p| keep(p));
        }
        self.replicas.retain(|&p| keep(p));
    }

    /// Drops `other` from the tables where its path, as it is now, does
    /// not belong: a replica has the same path; a reference at level `l`
    /// is on the other side of bit `l` (its path and that side's prefix
    /// are one a prefix of the other, so it is responsible for some of
    /// that side's keys). Peers move (extend, or even out replicas), and
    /// this is how the others learn of it when they meet.
    ///
    /// Where `other` goes, the peers it knows on that side of ours take its
    /// place, so a level does not run out of references.
    fn tidy(
        &mut self,
        other: &PGridPeer,
        config: &PGridConfig,
        proximity: &dyn Proximity,
        rng: &mut OverlayRng,
    ) {
        let id = other.id;
        if other.path != self.path {
            self.replicas.retain(|&p| p != id);
        }
        for level in 0..self.path.len() {
            let side = self.path.other_side(level);
            let refs = &mut self.refs[level as usize];
            if side.overlaps(&other.path) || !refs.contains(&id) {
                continue;
            }
            refs.retain(|&p| p != id);
            // `other`'s references at a level whose side lies within ours.
            let stand_ins: Vec<NodeId> = (0..other.path.len())
                .filter(|&l| side.is_prefix_of(&other.path.other_side(l)))
                .flat_map(|l| other.refs(l).to_vec())
                .collect();
            for p in stand_ins {
                self.add_ref(level, p, config, proximity, rng);
            }
        }
    }

    fn set_path(&mut self, path: Path) {
        self.path = path;
        self.refs.truncate(path.len() as usize);
        self.refs.resize(path.len() as usize, Vec::new());
        // Replicas were for the old path; they are found again on meeting.
        self.replicas.clear();
    }

    fn add_ref(
        &mut self,
        level: u8,
        peer: NodeId,
        config: &PGridConfig,
        proximity: &dyn Proximity,
        rng: &mut OverlayRng,
    ) {
        let Some(refs) = self.refs.get_mut(level as usize) else {
            return;
        };
        if peer == self.id || refs.contains(&peer) {
            return;
        }
        refs.push(peer);
        if refs.len() > config.refmax {
            let me = self.id;
            order(me, refs, proximity, config.choice, rng);
            refs.truncate(config.refmax);
        }
    }

    fn add_replica(&mut self, peer: NodeId, max: usize) {
        if peer != self.id && !self.replicas.contains(&peer) {
            if self.replicas.len() >= max {
                self.replicas.remove(0);
            }
            self.replicas.push(peer);
        }
    }
}

/// Keeps the first `max` distinct peers of `peers` other than `me`, in
/// their order.
fn distinct_others(peers: &mut Vec<NodeId>, me: NodeId, max: usize) {
    let mut seen = std::collections::HashSet::new();
    peers.retain(|&p| p != me && seen.insert(p));
    peers.truncate(max);
}

fn order(
    me: NodeId,
    peers: &mut [NodeId],
    proximity: &dyn Proximity,
    choice: RefChoice,
    rng: &mut OverlayRng,
) {
    match choice {
        RefChoice::Proximity => peers.sort_by(|&a, &b| {
            proximity
                .rtt_ms(me, a)
                .total_cmp(&proximity.rtt_ms(me, b))
                .then(a.cmp(&b))
        }),
        RefChoice::Random => peers.shuffle(rng),
    }
}

/// Two peers meet: the P-Grid exchange. `a` initiated it; `depth` is the
/// recursion depth so far (0 for a meeting the driver chose).
pub fn exchange(
    a: &mut PGridPeer,
    b: &mut PGridPeer,
    depth: u8,
    config: &PGridConfig,
    data: &dyn DataView,
    proximity: &dyn Proximity,
    rng: &mut OverlayRng,
) -> ExchangeOutcome {
    let mut out = ExchangeOutcome::default();
    // What each knew of the other may be stale; the counts below need it
    // fresh.
    a.tidy(b, config, proximity, rng);
    b.tidy(a, config, proximity, rng);
    // Bounded: each pass extends a path by one bit.
    for _ in 0..=2 * MAX_PATH_BITS {
        let l = a.path.common(&b.path);
        let (la, lb) = (a.path.len(), b.path.len());
        if l == la && l == lb {
            // Same path: split it between the two if it holds more than a
            // peer's share and enough peers share it, else they are
            // replicas.
            if la < config.maxl
                && data.keys_under(a.path) > config.max_keys
                && known_on_path(a, b) >= 2 * config.min_replicas
            {
                let bit = rng.gen_range(0..=1u8);
                a.set_path(a.path.child(bit));
                b.set_path(b.path.child(1 - bit));
                a.add_ref(l, b.id, config, proximity, rng);
                b.add_ref(l, a.id, config, proximity, rng);
                out.path_changed = true;
            } else {
                // Replicas share what they know of the others.
                let (theirs, mine) = (b.replicas.clone(), a.replicas.clone());
                for p in theirs {
                    a.add_replica(p, config.max_replicas);
                }
                for p in mine {
                    b.add_replica(p, config.max_replicas);
                }
                a.add_replica(b.id, config.max_replicas);
                b.add_replica(a.id, config.max_replicas);
                merge_refs(a, b, la, config, proximity, rng);
            }
            break;
        }
        if l == la || l == lb {
            // One path is a prefix of the other: the shorter may extend.
            let (short, long) = if l == la {
                (&mut *a, &mut *b)
            } else {
                (&mut *b, &mut *a)
            };
            if short.path.len() >= config.maxl || data.keys_under(short.path) <= config.max_keys {
                merge_refs(short, long, l, config, proximity, rng);
                break;
            }
            let their_bit = long.path.bit(l);
            let theirs = data.keys_under(short.path.child(their_bit)) as f64;
            let total = data.keys_under(short.path) as f64;
            // Join the long peer's side with the share of the data there,
            // so peers gather where the keys are; but never less than
            // `min_side_share`, so a side with little data still gets
            // replicas.
            let floor = config.min_side_share;
            let share = if total > 0.0 { theirs / total } else { 0.5 };
            let join = rng.r#gen::<f64>() < share.clamp(floor, 1.0 - floor);
            merge_refs(short, long, l, config, proximity, rng);
            if join {
                let inherited = long.refs(l).to_vec();
                short.set_path(short.path.child(their_bit));
                for p in inherited {
                    short.add_ref(l, p, config, proximity, rng);
                }
                out.path_changed = true;
                // Compare again one level down.
                continue;
            }
            short.set_path(short.path.child(1 - their_bit));
            short.add_ref(l, long.id, config, proximity, rng);
            long.add_ref(l, short.id, config, proximity, rng);
            out.path_changed = true;
            break;
        }
        // Diverging paths. A leaf that churn or a lopsided extension left
        // with too few replicas first takes the other peer, if that one
        // is on the sibling leaf and its leaf has two to spare: a count
        // may still name a peer gone elsewhere, and with one to spare a
        // 20% crash lost every replica of 1.4% of keys on one seed at
        // 1,000 peers (none with two). Only there: a peer that moves anywhere else leaves references to it
        // on the wrong side all over the trie, and lookups wander.
        let (ka, kb) = (a.replicas.len() + 1, b.replicas.len() + 1);
        let min = config.min_replicas;
        let siblings = la == l + 1 && lb == l + 1;
        if siblings && ka < min && kb > min + 1 {
            move_to_sibling(b, a, config, proximity, rng);
            out.path_changed = true;
            break;
        }
        if siblings && kb < min && ka > min + 1 {
            move_to_sibling(a, b, config, proximity, rng);
            out.path_changed = true;
            break;
        }
        // Each is the other's reference at level l, and each meets one of
        // the other's references on its own side.
        merge_refs(a, b, l, config, proximity, rng);
        a.add_ref(l, b.id, config, proximity, rng);
        b.add_ref(l, a.id, config, proximity, rng);
        if depth < config.recmax {
            if let Some(&r) = b.refs(l).choose(rng)
                && r != a.id
            {
                out.recurse.push((a.id, r));
            }
            if let Some(&r) = a.refs(l).choose(rng)
                && r != b.id
            {
                out.recurse.push((b.id, r));
            }
        }
        break;
    }
    a.tidy(b, config, proximity, rng);
    b.tidy(a, config, proximity, rng);
    out
}

/// `donor` leaves its leaf for the sibling leaf of `receiver`, which has
/// too few replicas. Its old replicas become its references at the last
/// level, and the receiver's side (its references there, the receiver and
/// its replicas) its replicas. References to the donor from above the
/// last level stay right, as both leaves look alike there. Those at the
/// last level cost a hop until their owner meets it ([`PGridPeer::tidy`]).
/// The driver refills the donor's store from its new replicas.
fn move_to_sibling(
    donor: &mut PGridPeer,
    receiver: &mut PGridPeer,
    config: &PGridConfig,
    proximity: &dyn Proximity,
    rng: &mut OverlayRng,
) {
    let level = receiver.path.len() - 1;
    let old_side = std::mem::take(&mut donor.replicas);
    let new_side: Vec<NodeId> = std::mem::take(&mut donor.refs[level as usize])
        .into_iter()
        .chain(receiver.replicas.iter().copied())
        .chain([receiver.id])
        .collect();
    donor.path = receiver.path;
    for p in new_side {
        donor.add_replica(p, config.max_replicas);
    }
    for &p in &old_side {
        donor.add_ref(level, p, config, proximity, rng);
    }
    merge_refs(donor, receiver, receiver.path.len(), config, proximity, rng);
    receiver.add_replica(donor.id, config.max_replicas);
    // The donor was perhaps the receiver's only reference to that side.
    // (Taken out before the merge, the figures of `sim pgrid` move within
    // their noise: the same rule, other references kept at refmax.)
    receiver.refs[level as usize].retain(|&p| p != donor.id);
    for p in old_side {
        receiver.add_ref(level, p, config, proximity, rng);
    }
}

/// Peers known on the path two meeting peers share, themselves included.
fn known_on_path(a: &PGridPeer, b: &PGridPeer) -> usize {
    let mut all: Vec<NodeId> = a.replicas.iter().chain(&b.replicas).copied().collect();
    all.push(a.id);
    all.push(b.id);
    all.sort_unstable();
    all.dedup();
    all.len()
}

/// Both peers agree on bits `0..levels`: their references there are
/// interchangeable, so each takes the best of the union.
fn merge_refs(
    a: &mut PGridPeer,
    b: &mut PGridPeer,
    levels: u8,
    config: &PGridConfig,
    proximity: &dyn Proximity,
    rng: &mut OverlayRng,
) {
    for level in 0..levels {
        let theirs = b.refs(level).to_vec();
        let mine = a.refs(level).to_vec();
        for p in theirs {
            a.add_ref(level, p, config, proximity, rng);
        }
        for p in mine {
            b.add_ref(level, p, config, proximity, rng);
        }
    }
}

/// Who holds an object besides its responsible peers: peers that fetched
/// it and registered as holders for a while, as CoralCDN's index kept them.
/// Bounded in keys and in holders per key; expired entries are dropped on
/// access. Times are the driver's, in milliseconds.
#[derive(Debug, Clone)]
pub struct HolderIndex {
    max_keys: usize,
    max_holders: usize,
    entries: HashMap<[u8; 32], VecDeque<(NodeId, u64)>>,
    order: VecDeque<[u8; 32]>,
}

impl HolderIndex {
    /// An index of at most `max_keys` keys, `max_holders` each.
    pub fn new(max_keys: usize, max_holders: usize) -> Self {
        Self {
            max_keys: max_keys.max(1),
            max_holders: max_holders.max(1),
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// `holder` has `key` until `expires_ms`.
    pub fn register(&mut self, key: [u8; 32], holder: NodeId, expires_ms: u64) {
        if !self.entries.contains_key(&key) {
            if self.entries.len() >= self.max_keys
                && let Some(old) = self.order.pop_front()
            {
                self.entries.remove(&old);
            }
            self.order.push_back(key);
        }
        let list = self.entries.entry(key).or_default();
        list.retain(|(h, _)| *h != holder);
        if list.len() >= self.max_holders {
            list.pop_front();
        }
        list.push_back((holder, expires_ms));
    }

    /// The live holders of `key` at `now_ms`, newest last.
    pub fn holders(&mut self, key: &[u8; 32], now_ms: u64) -> Vec<NodeId> {
        let Some(list) = self.entries.get_mut(key) else {
            return Vec::new();
        };
        list.retain(|&(_, exp)| exp > now_ms);
        list.iter().map(|&(h, _)| h).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    pub(crate) use super::test_support::Flat;

    #[test]
    fn paths_compare_by_prefix() {
        let p = Path::parse("0110").unwrap();
        assert_eq!(p.to_string(), "0110");
        assert_eq!(p.common(&Path::parse("0111").unwrap()), 3);
        assert!(Path::parse("01").unwrap().is_prefix_of(&p));
        assert!(p.covers(0b0110 << 60));
        assert!(!p.covers(0b0111 << 60));
        assert_eq!(p.range(), (0b0110 << 60, (0b0111 << 60) - 1));
        assert_eq!(Path::ROOT.range(), (0, u64::MAX));
        assert!(Path::parse("012").is_none());
        assert_eq!(p.other_side(2), Path::parse("010").unwrap());
        assert!(Path::parse("01").unwrap().overlaps(&p) && p.overlaps(&p));
        assert!(!p.overlaps(&Path::parse("010").unwrap()));
    }

    #[test]
    fn equal_paths_split_when_data_exceeds_the_share_else_replicate() {
        let config = PGridConfig {
            max_keys: 2,
            min_replicas: 1,
            ..PGridConfig::default()
        };
        let mut rng = OverlayRng::seed_from_u64(1);
        let data = SortedKeys::new(vec![1, 2, u64::MAX - 1, u64::MAX]);
        let (mut a, mut b) = (PGridPeer::new(NodeId(1)), PGridPeer::new(NodeId(2)));
        let out = exchange(&mut a, &mut b, 0, &config, &data, &Flat, &mut rng);
        assert!(out.path_changed);
        assert_eq!(a.path().len(), 1);
        assert_ne!(a.path(), b.path());
        assert_eq!(a.refs(0), [NodeId(2)]);
        // Two keys under each half: no further split; a third peer that
        // meets `a` ends up on one side by the data there.
        let mut c = PGridPeer::new(NodeId(3));
        exchange(&mut c, &mut a, 0, &config, &data, &Flat, &mut rng);
        assert_eq!(c.path().len(), 1, "c extends once: {}", c.path());
        let same = if c.path() == a.path() { &a } else { &b };
        assert_eq!(c.path(), same.path());
    }

    #[test]
    fn a_leaf_short_of_replicas_takes_one_from_its_sibling() {
        let config = PGridConfig {
            min_replicas: 4,
            ..PGridConfig::default()
        };
        let mut rng = OverlayRng::seed_from_u64(3);
        let data = SortedKeys::new(Vec::new());
        let (zero, one) = (Path::parse("0").unwrap(), Path::parse("1").unwrap());
        let leaf = |id: u64, path: Path, replicas: &[u64], refs: &[u64]| {
            let mut p = PGridPeer::new(NodeId(id));
            p.set_path(path);
            p.replicas = replicas.iter().map(|&r| NodeId(r)).collect();
            p.refs[0] = refs.iter().map(|&r| NodeId(r)).collect();
            p
        };
        // "0" has one peer left; "1" has six.
        let mut a = leaf(1, zero, &[], &[2, 3]);
        let mut b = leaf(2, one, &[3, 4, 5, 6, 7], &[1]);
        let out = exchange(&mut a, &mut b, 0, &config, &data, &Flat, &mut rng);
        assert!(out.path_changed);
        assert_eq!(b.path(), zero, "the peer to spare moved");
        assert_eq!(b.replicas(), [NodeId(1)]);
        let rest: Vec<NodeId> = (3..=7).map(NodeId).collect();
        assert_eq!(b.refs(0), rest);
        assert_eq!(a.replicas(), [NodeId(2)]);
        assert_eq!(
            a.refs(0),
            rest,
            "the mover is no reference now; the peers it knew there are"
        );

        // An old replica of the mover learns of the move when they meet,
        // and with five left on "1" (one to spare) it does not move too.
        let mut c = leaf(3, one, &[2, 4, 5, 6, 7], &[1]);
        exchange(&mut c, &mut b, 0, &config, &data, &Flat, &mut rng);
        assert_eq!(c.path(), one);
        assert_eq!(c.replicas(), [NodeId(4), NodeId(5), NodeId(6), NodeId(7)]);
        assert!(c.refs(0).contains(&NodeId(2)));
        // Five on "1" and two on "0": no move either.
        let mut d = leaf(4, one, &[3, 5, 6, 7], &[]);
        exchange(&mut d, &mut b, 0, &config, &data, &Flat, &mut rng);
        assert_eq!((d.path(), b.path()), (one, zero));
    }

    #[test]
    fn routing_goes_to_the_other_side_at_the_first_differing_bit() {
        let mut rng = OverlayRng::seed_from_u64(2);
        let mut a = PGridPeer::new(NodeId(10));
        a.set_path(Path::parse("01").unwrap());
        a.refs[0] = vec![NodeId(30), NodeId(11)];
        a.refs[1] = vec![NodeId(12)];
        assert!(
            a.route(0b01 << 62, &Flat, RefChoice::Proximity, &mut rng)
                .is_none()
        );
        let (level, c) = a
            .route(0b1 << 63, &Flat, RefChoice::Proximity, &mut rng)
            .unwrap();
        assert_eq!((level, c), (0, vec![NodeId(11), NodeId(30)]));
        let (level, _) = a
            .route(0b001 << 61, &Flat, RefChoice::Proximity, &mut rng)
            .unwrap();
        assert_eq!(level, 1);
        a.forget(NodeId(11));
        assert_eq!(a.refs(0), [NodeId(30)]);
    }

    #[test]
    fn holder_index_is_bounded_and_expires() {
        let mut index = HolderIndex::new(2, 2);
        let (k1, k2, k3) = ([1; 32], [2; 32], [3; 32]);
        index.register(k1, NodeId(1), 100);
        index.register(k1, NodeId(2), 50);
        index.register(k1, NodeId(3), 100);
        assert_eq!(index.holders(&k1, 10), [NodeId(2), NodeId(3)]);
        assert_eq!(index.holders(&k1, 60), [NodeId(3)]);
        index.register(k2, NodeId(1), 100);
        index.register(k3, NodeId(1), 100);
        assert!(index.holders(&k1, 0).is_empty(), "oldest key evicted");
        assert_eq!(index.holders(&k3, 0), [NodeId(1)]);
    }
}

/// Test helpers shared by the P-Grid modules' tests.
#[cfg(test)]
pub(crate) mod test_support {
    use super::{NodeId, Proximity};

    /// Peers on a line: the RTT is the difference of their ids.
    pub struct Flat;

    impl Proximity for Flat {
        fn rtt_ms(&self, a: NodeId, b: NodeId) -> f64 {
            (a.0 as f64 - b.0 as f64).abs()
        }
    }
}
