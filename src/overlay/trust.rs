//! Reputation: local feedback, PowerTrust aggregation, and the filter that
//! keeps dishonest peers out of routing, holder selection and replica sets.
//!
//! The pieces, in the order the data flows:
//!
//! 1. [`LocalTrust`]: every transfer and every answer from a peer becomes a
//!    [`Feedback`]. Good and bad outcomes are counted per peer, decay with
//!    age (a half-life), and a bad one weighs more than a good one, so a
//!    peer that turns bad loses its standing in a few bad transfers.
//! 2. [`LocalTrust::report`]: a peer's opinions as a [`TrustRow`], bounded
//!    and normalised so that no rater has more weight than another
//!    (EigenTrust's normalisation, Kamvar et al. 2003, section 4.1): the
//!    row's good and bad shares sum to one.
//! 3. Aggregation by PowerTrust (Zhou and Hwang, IEEE TPDS 18(4), 2007):
//!    the global score vector is the stationary distribution of a random
//!    walk over the trust matrix that, with probability α (the greedy
//!    factor), jumps to one of the *power nodes*, the few most reputable
//!    peers, re-ranked every epoch ([`power_nodes`]). The look-ahead random
//!    walk (LRW, section 4.2) walks the two-step matrix R·R
//!    ([`look_ahead`]), so each round does the work of two and the walk
//!    converges in about half the rounds. [`iterate`] is one round of the
//!    walk; it runs distributed, at the score managers.
//! 4. Score managers: the score of peer `j` is kept by the
//!    [`TrustConfig::managers`] peers responsible for the P-Grid key
//!    [`score_key`]`(j)`, the replicas of one leaf. Each manager receives
//!    every manager's value for each rater and takes the median
//!    ([`median`]), so no single manager, nor a minority of them, can
//!    forge a score; readers also take the median of the managers' answers
//!    and ignore managers that are themselves in bad standing.
//! 5. [`Standing`]: once the walk converged, the managers weigh the good
//!    and bad shares of every rater by the rater's own score: a peer whose
//!    trusted raters report mostly bad is [`Standing::Bad`]; one nobody
//!    trusted has rated is [`Standing::Unknown`] (a new peer starts
//!    neutral, not good); else it is [`Standing::Good`] with its score.
//! 6. Filtering: [`Standing::usable`] drops bad peers from references,
//!    holders and replica sets; [`rank_candidates`] puts good peers before
//!    unknown ones, each by predicted RTT and load; [`RateLimiter`] limits
//!    the messages a peer accepts from another by its standing.
//!
//! Everything here is pure computation with time as an argument; the
//! simulator (`gridedge sim trust`) and the network driver run it.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use super::NodeId;
use super::load::Load;

/// The outcome of one transfer or answer from a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Feedback {
    /// Data arrived on time and verified against its hash.
    Verified,
    /// Data arrived but did not match its hash.
    WrongHash,
    /// The peer refused a request it should serve.
    Refused,
    /// The peer did not answer in time.
    Timeout,
    /// The peer answered falsely: claimed to hold what it does not, or
    /// routed a query where it could not lead.
    FalseAnswer,
}

impl Feedback {
    /// Whether this is good feedback.
    pub fn is_good(self) -> bool {
        matches!(self, Feedback::Verified)
    }
}

/// Reputation settings. Every constant says why it has its value.
#[derive(Clone, Debug, PartialEq)]
pub struct TrustConfig {
    /// Half-life of a rating, ms: 30 minutes keeps a few hundred
    /// transfers' worth of history at an edge's rate, yet lets a peer that
    /// turned bad lose an old good record within an hour.
    pub half_life_ms: u64,
    /// How many good outcomes one bad one cancels: 8. A corrupt block
    /// costs a refetch and a verification, several good ones; and a peer
    /// that turns bad after a long good record must lose its standing
    /// within minutes (`sim trust`: with 4, peers that turned were still
    /// chosen for 7 minutes on average; with 8, 5).
    pub bad_weight: f64,
    /// Peers one node keeps opinions of: 1024 bounds the table to a few
    /// tens of KB; the least-weighted opinion goes first.
    pub max_rated_peers: usize,
    /// Entries in a reported row: the 32 heaviest opinions carry nearly
    /// all of a row's weight, and the row stays one small message.
    pub max_row: usize,
    /// PowerTrust's greedy factor α: the chance the walk jumps to a power
    /// node. 0.15, the value of the paper's experiments and of PageRank:
    /// higher converges faster but flattens the scores toward the power
    /// nodes' opinions.
    pub greedy_factor: f64,
    /// Power nodes per epoch: 1% of peers in the paper; a fixed 16 here,
    /// enough that one leaving or turning bad moves little.
    pub power_nodes: usize,
    /// Score managers per peer (replicas of its score's leaf): 5 is the
    /// smallest odd set whose median survives two forging managers.
    pub managers: usize,
    /// The walk has converged when the scores moved less than this in L1
    /// (scores sum to one) during one round.
    pub epsilon: f64,
    /// Rounds a walk may take before it stops unconverged.
    pub max_rounds: usize,
    /// A peer whose trusted raters give it a good share below this is in
    /// bad standing: 0.3. A peer that cheats gets near zero; an honest
    /// one stays above it unless liars are more than two in three of its
    /// raters, which a minority of liars rarely is even among the ten or
    /// so raters of a first epoch.
    pub threshold: f64,
    /// A rater whose opinions agree with the other raters' clear majority
    /// less often than this is a liar: its row is left out of the walk
    /// and of the standings, and it is itself in bad standing (a false
    /// answer). 0.5: an honest rater disagrees only where a group
    /// outnumbers the honest raters of one of its members, a liar on
    /// every honest peer.
    pub min_credibility: f64,
    /// Credibility a power node needs: 0.8. Its ratings steer every
    /// score, so a peer that is trusted for its service but lies in its
    /// ratings (and gathers trust it never passes on) must not become one.
    pub power_node_credibility: f64,
}

impl Default for TrustConfig {
    fn default() -> Self {
        Self {
            half_life_ms: 30 * 60 * 1000,
            bad_weight: 8.0,
            max_rated_peers: 1024,
            max_row: 32,
            greedy_factor: 0.15,
            power_nodes: 16,
            managers: 5,
            epsilon: 1e-4,
            max_rounds: 100,
            threshold: 0.3,
            min_credibility: 0.5,
            power_node_credibility: 0.8,
        }
    }
}

/// Opinions of a rater that must be checkable before its credibility is
/// judged: 4, so that one unlucky disagreement is not a verdict.
pub const MIN_ASSESSED: usize = 4;

/// What the raters of one peer say, when they clearly agree: at least
/// three votes, and one side at least twice the other. Noise from a few raters, or a split,
/// judges nobody.
pub fn clear_majority(good_votes: f64, bad_votes: f64) -> Option<bool> {
    if good_votes + bad_votes < 3.0 - 1e-9 {
        None
    } else if good_votes >= 2.0 * bad_votes {
        Some(true)
    } else if bad_votes >= 2.0 * good_votes {
        Some(false)
    } else {
        None
    }
}

/// Scaled score (1.0 is the average peer) from which a rater has a full
/// vote: a hundredth of the average. Any peer that served honest peers
/// well gets that much; a group that only rates itself does not.
pub const FULL_VOTE_SCORE: f64 = 0.01;

/// How much a rater's opinions count in standings: a full weight for a
/// rater with some trust, less for less (linearly below
/// [`FULL_VOTE_SCORE`]). Not the score itself: a group that keeps trust
/// among itself (it gets rated up and rates only its own) would
/// otherwise outweigh more numerous honest raters; and a rater nobody
/// trusts counts for nothing.
pub fn rater_weight(scaled_score: f64) -> f64 {
    (scaled_score / FULL_VOTE_SCORE).clamp(0.0, 1.0)
}

/// The P-Grid key under which the score of `peer` is managed.
pub fn score_key(peer: NodeId) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"gridedge trust v1");
    h.update(peer.0.to_be_bytes());
    h.finalize().into()
}

/// Decayed counts of good and bad outcomes with one peer.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Experience {
    good: f64,
    bad: f64,
    at_ms: u64,
}

impl Experience {
    fn decayed(self, now_ms: u64, half_life_ms: u64) -> Self {
        let age = now_ms.saturating_sub(self.at_ms) as f64;
        let f = 0.5f64.powf(age / half_life_ms.max(1) as f64);
        Self {
            good: self.good * f,
            bad: self.bad * f,
            at_ms: now_ms.max(self.at_ms),
        }
    }
}

/// One node's opinions of the peers it dealt with.
#[derive(Clone, Debug)]
pub struct LocalTrust {
    config: TrustConfig,
    peers: HashMap<NodeId, Experience>,
}

/// A rater's opinions, normalised: `good + bad` over the entries sums to
/// one (or the row is empty). Entries are sorted by peer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrustRow {
    pub entries: Vec<RowEntry>,
}

/// How a rater's opinions compare with everyone else's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Credibility {
    /// Opinions in its row.
    pub opinions: usize,
    /// Opinions of peers on which the others clearly agree.
    pub checked: usize,
    /// Of those, the ones that agree with the others.
    pub agreeing: usize,
}

impl Credibility {
    /// Forged by the rater's managers: fully credible or not at all.
    pub fn forged(credible: bool) -> Self {
        let n = 2 * MIN_ASSESSED;
        Self {
            opinions: n,
            checked: n,
            agreeing: if credible { n } else { 0 },
        }
    }

    fn share(&self) -> f64 {
        self.agreeing as f64 / self.checked.max(1) as f64
    }

    /// A liar: at least [`MIN_ASSESSED`] opinions checked, and fewer than
    /// `min` of them agree.
    pub fn is_liar(&self, min: f64) -> bool {
        self.checked >= MIN_ASSESSED && self.share() < min
    }

    /// Fit to be a power node: twice [`MIN_ASSESSED`] and at least half
    /// of its opinions checked (a rater is not judged on the few opinions
    /// that happen to be checkable), and at least `min` of them agree.
    pub fn fit_for_power(&self, min: f64) -> bool {
        self.checked >= (2 * MIN_ASSESSED).max(self.opinions.div_ceil(2)) && self.share() >= min
    }
}

/// One opinion in a [`TrustRow`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowEntry {
    pub peer: NodeId,
    /// Share of the rater's weight that says good.
    pub good: f64,
    /// Share of the rater's weight that says bad (already weighted by
    /// [`TrustConfig::bad_weight`]).
    pub bad: f64,
}

impl RowEntry {
    /// Whether this opinion is good on balance.
    pub fn says_good(&self) -> bool {
        self.good > self.bad
    }
}

impl TrustRow {
    /// Credibility of the rater (after PeerTrust's idea of weighing
    /// feedback by how it agrees with others', Xiong and Liu 2004): how
    /// many of its opinions agree with the other raters of the same peer
    /// where those clearly agree among themselves (`majority` gives that,
    /// see [`clear_majority`]).
    pub fn credibility(&self, majority: impl Fn(NodeId) -> Option<bool>) -> Credibility {
        let mut c = Credibility {
            opinions: self.entries.len(),
            ..Credibility::default()
        };
        for e in &self.entries {
            if let Some(m) = majority(e.peer) {
                c.checked += 1;
                c.agreeing += usize::from(m == e.says_good());
            }
        }
        c
    }

    /// The row as a random walk's transition row: the good shares, scaled
    /// to sum to one. Empty when the rater has nothing good to say (the
    /// walk then jumps to the power nodes).
    pub fn walk(&self) -> Vec<(NodeId, f64)> {
        let total: f64 = self.entries.iter().map(|e| e.good).sum();
        if total <= 0.0 {
            return Vec::new();
        }
        self.entries
            .iter()
            .filter(|e| e.good > 0.0)
            .map(|e| (e.peer, e.good / total))
            .collect()
    }
}

impl LocalTrust {
    /// An empty table.
    pub fn new(config: TrustConfig) -> Self {
        Self {
            config,
            peers: HashMap::new(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &TrustConfig {
        &self.config
    }

    /// Records the outcome of one dealing with `peer` at `now_ms`.
    pub fn record(&mut self, now_ms: u64, peer: NodeId, feedback: Feedback) {
        self.record_weighted(now_ms, peer, feedback.is_good(), 1.0);
    }

    /// Records `weight` outcomes at once (good or bad). Bounded: each
    /// call adds at most 1,000 outcomes, so one burst cannot outweigh a
    /// history.
    pub fn record_weighted(&mut self, now_ms: u64, peer: NodeId, good: bool, weight: f64) {
        let half = self.config.half_life_ms;
        if !self.peers.contains_key(&peer) && self.peers.len() >= self.config.max_rated_peers {
            self.evict_lightest(now_ms);
        }
        let e = self.peers.entry(peer).or_insert(Experience {
            good: 0.0,
            bad: 0.0,
            at_ms: now_ms,
        });
        *e = e.decayed(now_ms, half);
        let w = weight.clamp(0.0, 1_000.0);
        if good {
            e.good += w;
        } else {
            e.bad += w;
        }
    }

    fn evict_lightest(&mut self, now_ms: u64) {
        let half = self.config.half_life_ms;
        let lightest = self
            .peers
            .iter()
            .map(|(&p, e)| {
                let d = e.decayed(now_ms, half);
                (d.good + d.bad, p)
            })
            .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        if let Some((_, p)) = lightest {
            self.peers.remove(&p);
        }
    }

    /// Forgets `peer` (it left for good).
    pub fn forget(&mut self, peer: NodeId) {
        self.peers.remove(&peer);
    }

    /// Whether this node's own recent dealings with `peer` say bad: the
    /// weighted bad outweighs the good. A node never waits for the global
    /// score to avoid a peer that just cheated it.
    pub fn locally_bad(&self, now_ms: u64, peer: NodeId) -> bool {
        self.peers.get(&peer).is_some_and(|e| {
            let d = e.decayed(now_ms, self.config.half_life_ms);
            d.bad * self.config.bad_weight > d.good
        })
    }

    /// The row to report to this node's score managers at `now_ms`: the
    /// [`TrustConfig::max_row`] heaviest opinions, normalised.
    pub fn report(&self, now_ms: u64) -> TrustRow {
        let half = self.config.half_life_ms;
        let w = self.config.bad_weight;
        let mut all: Vec<(NodeId, f64, f64)> = self
            .peers
            .iter()
            .map(|(&p, e)| {
                let d = e.decayed(now_ms, half);
                (p, d.good, d.bad * w)
            })
            .filter(|&(_, g, b)| g + b > 1e-9)
            .collect();
        // Heaviest first, ties by id so the row does not depend on the
        // hash map's order.
        all.sort_by(|a, b| (b.1 + b.2).total_cmp(&(a.1 + a.2)).then(a.0.cmp(&b.0)));
        all.truncate(self.config.max_row);
        row_of(all)
    }
}

/// A normalised row from raw `(peer, good, bad)` weights.
pub fn row_of(mut raw: Vec<(NodeId, f64, f64)>) -> TrustRow {
    raw.retain(|&(_, g, b)| g.is_finite() && b.is_finite() && g >= 0.0 && b >= 0.0);
    let total: f64 = raw.iter().map(|&(_, g, b)| g + b).sum();
    if total <= 0.0 {
        return TrustRow::default();
    }
    raw.sort_by_key(|&(p, _, _)| p);
    let mut entries: Vec<RowEntry> = Vec::with_capacity(raw.len());
    for (peer, g, b) in raw {
        match entries.last_mut() {
            Some(last) if last.peer == peer => {
                last.good += g / total;
                last.bad += b / total;
            }
            _ => entries.push(RowEntry {
                peer,
                good: g / total,
                bad: b / total,
            }),
        }
    }
    TrustRow { entries }
}

/// PowerTrust's look-ahead row of rater `i`: the two-step walk
/// `Σ_k r_ik · r_k`, from `i`'s own walk row and the walk rows of the
/// peers it trusts (which `i` fetches from them). A trusted peer whose row
/// is unknown or empty contributes its own column (the walk stays on it),
/// so no weight is lost. Truncated to the `max_row` heaviest entries and
/// rescaled to sum to one.
pub fn look_ahead(
    own: &[(NodeId, f64)],
    row_of_peer: impl Fn(NodeId) -> Option<Vec<(NodeId, f64)>>,
    max_row: usize,
) -> Vec<(NodeId, f64)> {
    let mut acc: HashMap<NodeId, f64> = HashMap::new();
    for &(k, r_ik) in own {
        match row_of_peer(k).filter(|r| !r.is_empty()) {
            Some(row) => {
                for (j, r_kj) in row {
                    *acc.entry(j).or_default() += r_ik * r_kj;
                }
            }
            None => *acc.entry(k).or_default() += r_ik,
        }
    }
    let mut out: Vec<(NodeId, f64)> = acc.into_iter().filter(|&(_, w)| w > 0.0).collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    out.truncate(max_row);
    let total: f64 = out.iter().map(|&(_, w)| w).sum();
    for e in &mut out {
        e.1 /= total;
    }
    out.sort_by_key(|&(p, _)| p);
    out
}

/// One round of the walk over peers `0..n`, in index space:
/// `next_j = (1-α) Σ_i v_i · rows[i][j] + teleport_j · (α + (1-α)·dangling)`,
/// where `dangling` is the mass of raters with an empty row (their walk
/// jumps to the teleport set too). `teleport` sums to one. Returns the L1
/// change. This is what the managers compute together, one round at a
/// time; the simulator also runs it to convergence for the exact figure.
pub fn iterate(
    rows: &[Vec<(u32, f64)>],
    teleport: &[(u32, f64)],
    alpha: f64,
    v: &[f64],
    next: &mut [f64],
) -> f64 {
    next.iter_mut().for_each(|x| *x = 0.0);
    let mut dangling = 0.0;
    for (i, row) in rows.iter().enumerate() {
        if row.is_empty() {
            dangling += v[i];
            continue;
        }
        for &(j, r) in row {
            next[j as usize] += (1.0 - alpha) * v[i] * r;
        }
    }
    let jump = alpha * v.iter().sum::<f64>() + (1.0 - alpha) * dangling;
    for &(j, p) in teleport {
        next[j as usize] += jump * p;
    }
    v.iter().zip(next.iter()).map(|(a, b)| (a - b).abs()).sum()
}

/// Runs [`iterate`] from `start` until the L1 change is below `epsilon`
/// or `max_rounds` pass. Returns the scores and the rounds taken.
pub fn converge(
    rows: &[Vec<(u32, f64)>],
    teleport: &[(u32, f64)],
    alpha: f64,
    start: Vec<f64>,
    epsilon: f64,
    max_rounds: usize,
) -> (Vec<f64>, usize) {
    let mut v = start;
    let mut next = vec![0.0; v.len()];
    for round in 1..=max_rounds {
        let change = iterate(rows, teleport, alpha, &v, &mut next);
        std::mem::swap(&mut v, &mut next);
        if change < epsilon {
            return (v, round);
        }
    }
    (v, max_rounds)
}

/// The `m` peers of highest score among those `eligible` accepts, best
/// first (ties by index): the next epoch's power nodes. Distributed, each
/// manager offers its best managed peers and the offers are merged, as
/// PowerTrust's ranking over the DHT does; the result is the same.
pub fn power_nodes(scores: &[f64], m: usize, eligible: impl Fn(usize) -> bool) -> Vec<u32> {
    let mut idx: Vec<usize> = (0..scores.len()).filter(|&i| eligible(i)).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    idx.truncate(m);
    idx.into_iter().map(|i| i as u32).collect()
}

/// The median of `values` (the lower middle for an even count); `None`
/// when empty. Managers and readers combine replicas' answers with it.
pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    Some(values[(values.len() - 1) / 2])
}

/// A peer's standing, as score managers report it and filters read it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Standing {
    /// Nobody trusted has rated it yet: a new peer. Usable, after good
    /// peers.
    Unknown,
    /// Its trusted raters say mostly good; the score is its global
    /// PowerTrust score times the number of peers (1.0 is average).
    Good(f64),
    /// Its trusted raters say mostly bad: dropped from references, holder
    /// selection and replica sets.
    Bad,
}

impl Standing {
    /// From the trust-weighted good and bad shares a manager summed for a
    /// peer, and its normalised score.
    pub fn from_weights(good: f64, bad: f64, score: f64, threshold: f64) -> Self {
        let total = good + bad;
        if total <= 1e-12 {
            Standing::Unknown
        } else if good / total < threshold {
            Standing::Bad
        } else {
            Standing::Good(score)
        }
    }

    /// Whether the peer may be used at all.
    pub fn usable(self) -> bool {
        !matches!(self, Standing::Bad)
    }

    /// A number to take the median of across managers: bad 0, unknown
    /// 0.5 (neutral), good 1 plus its score.
    pub fn rank(self) -> f64 {
        match self {
            Standing::Bad => 0.0,
            Standing::Unknown => 0.5,
            Standing::Good(s) => 1.0 + s.max(0.0),
        }
    }

    /// The inverse of [`Standing::rank`].
    pub fn from_rank(rank: f64) -> Self {
        if rank < 0.25 {
            Standing::Bad
        } else if rank < 1.0 {
            Standing::Unknown
        } else {
            Standing::Good(rank - 1.0)
        }
    }

    /// The standing that the median of the managers' answers gives;
    /// `Unknown` when no usable manager answered.
    pub fn median_of(answers: &[Standing]) -> Self {
        let mut ranks: Vec<f64> = answers.iter().map(|s| s.rank()).collect();
        median(&mut ranks).map_or(Standing::Unknown, Standing::from_rank)
    }
}

/// A reputation message between peers, carried by the overlay wire
/// ([`super::wire`], which bounds every list and refuses non-finite,
/// negative or out-of-range numbers). Epochs are the score managers'
/// aggregation periods; every message names its epoch, so a late one from
/// the previous epoch is recognised and dropped.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    /// A rater's opinions ([`LocalTrust::report`]), sent by the rater to
    /// each of its own score managers once per epoch.
    Report {
        /// The epoch the row is for.
        epoch: u32,
        /// The normalised row.
        row: TrustRow,
    },
    /// PowerTrust's look-ahead walk ([`look_ahead`]): a rater asks each
    /// peer its row trusts for that peer's walk row of `epoch`.
    RowRequest {
        /// The epoch whose row is wanted.
        epoch: u32,
    },
    /// The answer to a [`Message::RowRequest`]: the sender's walk row
    /// ([`TrustRow::walk`]), shares summing to one.
    RowReply {
        /// The epoch asked for.
        epoch: u32,
        /// `(peer, share)`, shares in `[0, 1]`.
        row: Vec<(NodeId, f64)>,
    },
    /// One round of the distributed walk ([`iterate`]): a score manager
    /// sends the current scores of the raters it manages (their
    /// contribution to the next round) to the managers of the peers those
    /// raters rated, one batch per destination manager (split over several
    /// messages of the same round when it is longer than the wire allows).
    Scores {
        /// The epoch of the walk.
        epoch: u32,
        /// The round of the walk the scores are the result of.
        round: u16,
        /// `(rater, score)`, scores finite and non-negative.
        scores: Vec<(NodeId, f64)>,
    },
    /// A reader (a peer choosing references, holders or replicas) asks
    /// one score manager of each of `peers` for their standing.
    StandingQuery {
        /// The peers asked about.
        peers: Vec<NodeId>,
    },
    /// A manager's answer to a [`Message::StandingQuery`]; the reader
    /// takes the median over the managers ([`Standing::median_of`]).
    StandingAnswer {
        /// The standing of each peer asked about that the manager manages.
        standings: Vec<(NodeId, Standing)>,
    },
    /// The credibility check, first half: a manager of peer `j` tells the
    /// managers of each rater of `j` whether the rater's opinion of `j`
    /// agreed with the clear majority of the other raters' opinions of it
    /// ([`TrustRow::credibility`]), batched per destination manager.
    Agreements {
        /// The epoch of the reports.
        epoch: u32,
        /// `(rater, rated peer, agreed)`.
        entries: Vec<(NodeId, NodeId, bool)>,
    },
    /// The credibility check, second half: the managers of a rater that
    /// mostly disagreed with the others tell the managers of the peers it
    /// rated, who then leave its opinions out of the standings.
    Liars {
        /// The epoch of the reports.
        epoch: u32,
        /// The raters found lying.
        raters: Vec<NodeId>,
    },
    /// At the end of an epoch, each manager offers its best-scored
    /// managed peers as the next power nodes ([`power_nodes`]); the offers
    /// are merged into the ranking.
    PowerOffer {
        /// The epoch whose scores rank the candidates.
        epoch: u32,
        /// `(peer, score)`, best first, scores finite and non-negative.
        candidates: Vec<(NodeId, f64)>,
    },
}

/// A candidate peer for a request: a reference, a holder, a replica.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    pub peer: NodeId,
    /// Predicted RTT from coordinates, ms.
    pub rtt_ms: f64,
    pub load: Load,
    pub standing: Standing,
    /// This node's own dealings say bad.
    pub locally_bad: bool,
}

/// Orders candidates for a request and drops the unusable: peers in bad
/// standing or locally bad are gone; good peers come before unknown ones;
/// within each, by predicted RTT stretched by load (each request in
/// flight costs as much as 10% more RTT: a busy near peer loses to an
/// idle one a little farther away).
pub fn rank_candidates(candidates: &mut Vec<Candidate>) {
    candidates.retain(|c| c.standing.usable() && !c.locally_bad);
    let cost = |c: &Candidate| {
        let class = if matches!(c.standing, Standing::Good(_)) {
            0
        } else {
            1
        };
        let load = 1.0 + 0.1 * f64::from(c.load.requests_in_flight.min(1000));
        (class, c.rtt_ms.max(0.0) * load)
    };
    candidates.sort_by(|a, b| {
        let (ca, xa) = cost(a);
        let (cb, xb) = cost(b);
        ca.cmp(&cb)
            .then(xa.total_cmp(&xb))
            .then(a.peer.cmp(&b.peer))
    });
}

/// Limits the messages accepted from each peer by its standing: a token
/// bucket per peer whose rate is set by the standing. Bounded: it tracks
/// at most `max_peers` peers, dropping the fullest bucket (a peer at rest)
/// when a new one arrives.
#[derive(Clone, Debug)]
pub struct RateLimiter {
    /// Messages per second for good, unknown and bad peers.
    pub good_per_s: f64,
    pub unknown_per_s: f64,
    pub bad_per_s: f64,
    /// Burst, in seconds of the rate.
    pub burst_s: f64,
    max_peers: usize,
    buckets: HashMap<NodeId, (f64, u64)>,
}

impl RateLimiter {
    /// Good peers 200 messages/s (a busy edge's request rate), unknown
    /// 50, bad 2 (enough to refute or to leave, not to flood), bursts of
    /// two seconds.
    pub fn new(max_peers: usize) -> Self {
        Self {
            good_per_s: 200.0,
            unknown_per_s: 50.0,
            bad_per_s: 2.0,
            burst_s: 2.0,
            max_peers,
            buckets: HashMap::new(),
        }
    }

    /// Whether one message from `peer` at `now_ms` may be handled.
    pub fn allow(&mut self, now_ms: u64, peer: NodeId, standing: Standing) -> bool {
        let rate = match standing {
            Standing::Good(_) => self.good_per_s,
            Standing::Unknown => self.unknown_per_s,
            Standing::Bad => self.bad_per_s,
        };
        let cap = (rate * self.burst_s).max(1.0);
        if !self.buckets.contains_key(&peer) && self.buckets.len() >= self.max_peers {
            let fullest = self
                .buckets
                .iter()
                .max_by(|a, b| (a.1.0).total_cmp(&b.1.0).then(b.0.cmp(a.0)))
                .map(|(&p, _)| p);
            if let Some(p) = fullest {
                self.buckets.remove(&p);
            }
        }
        let (tokens, at) = self.buckets.entry(peer).or_insert((cap, now_ms));
        let dt_s = now_ms.saturating_sub(*at) as f64 / 1000.0;
        *tokens = (*tokens + dt_s * rate).min(cap);
        *at = now_ms.max(*at);
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(i: u64) -> NodeId {
        NodeId(i)
    }

    #[test]
    fn ratings_decay_with_age_and_bad_weighs_more() {
        let mut t = LocalTrust::new(TrustConfig::default());
        let half = t.config().half_life_ms;
        for _ in 0..8 {
            t.record(0, id(1), Feedback::Verified);
        }
        assert!(!t.locally_bad(0, id(1)));
        // One bad outcome weighs as much as the eight good ones (weight
        // 8); a second tips the balance.
        assert_eq!(t.config().bad_weight, 8.0);
        t.record(0, id(1), Feedback::WrongHash);
        assert!(!t.locally_bad(0, id(1)));
        t.record(0, id(1), Feedback::Timeout);
        assert!(t.locally_bad(0, id(1)));
        // Decay keeps the ratio but shrinks the weight.
        let e = t.peers[&id(1)].decayed(half, half);
        assert!((e.good - 4.0).abs() < 1e-9 && (e.bad - 1.0).abs() < 1e-9);
    }

    #[test]
    fn report_is_bounded_and_normalised() {
        let config = TrustConfig {
            max_row: 4,
            max_rated_peers: 6,
            ..TrustConfig::default()
        };
        let mut t = LocalTrust::new(config);
        for p in 1..=10u64 {
            for _ in 0..p {
                t.record(0, id(p), Feedback::Verified);
            }
        }
        assert!(t.peers.len() <= 6, "the table is bounded");
        let row = t.report(0);
        assert_eq!(row.entries.len(), 4);
        let peers: Vec<u64> = row.entries.iter().map(|e| e.peer.0).collect();
        assert_eq!(peers, vec![7, 8, 9, 10], "the heaviest opinions, sorted");
        let sum: f64 = row.entries.iter().map(|e| e.good + e.bad).sum();
        assert!((sum - 1.0).abs() < 1e-9);
    }

    #[test]
    fn credibility_counts_agreement_with_the_majority() {
        let row = row_of(vec![
            (id(1), 1.0, 0.0),
            (id(2), 0.0, 1.0),
            (id(3), 1.0, 0.0),
            (id(4), 1.0, 0.0),
        ]);
        // The others clearly think 1, 2 and 3 good and 4 bad.
        let majority = |p: NodeId| Some(p.0 != 4);
        let c = row.credibility(majority);
        assert_eq!((c.checked, c.agreeing), (4, 2));
        assert!(!c.is_liar(0.5) && c.is_liar(0.6));
        // Too few checkable opinions: no verdict either way.
        let unknown = |p: NodeId| (p.0 != 4).then_some(true);
        let c = row.credibility(unknown);
        assert!(!c.is_liar(0.99) && !c.fit_for_power(0.0));
        assert!(Credibility::forged(true).fit_for_power(1.0));
        assert_eq!(clear_majority(2.0, 0.0), None, "too few");
        assert_eq!(clear_majority(4.0, 2.0), Some(true));
        assert_eq!(clear_majority(4.0, 3.0), None, "a split");
        assert_eq!(clear_majority(0.0, 3.0), Some(false));
    }

    #[test]
    fn look_ahead_is_the_two_step_walk() {
        // 1 trusts 2 and 3 equally; 2 trusts 4; 3 has no row.
        let own = vec![(id(2), 0.5), (id(3), 0.5)];
        let rows = |k: NodeId| match k.0 {
            2 => Some(vec![(id(4), 1.0)]),
            _ => None,
        };
        let la = look_ahead(&own, rows, 32);
        assert_eq!(la, vec![(id(3), 0.5), (id(4), 0.5)]);
    }

    #[test]
    fn power_iteration_finds_the_stationary_scores() {
        // A ring 0 -> 1 -> 2 -> 0 with teleport to 0: scores follow the
        // walk, and the sum stays one.
        let rows = vec![vec![(1, 1.0)], vec![(2, 1.0)], vec![(0, 1.0)]];
        let (v, rounds) = converge(&rows, &[(0, 1.0)], 0.15, vec![1.0 / 3.0; 3], 1e-12, 10_000);
        assert!(rounds < 10_000);
        assert!((v.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        // v0 = a + (1-a) v2, v1 = (1-a) v0, v2 = (1-a) v1.
        let a: f64 = 0.15;
        let v0 = a / (1.0 - (1.0 - a).powi(3));
        assert!((v[0] - v0).abs() < 1e-9, "{v:?}");
        assert!((v[1] - (1.0 - a) * v0).abs() < 1e-9);
    }

    #[test]
    fn a_dangling_rater_jumps_to_the_power_nodes() {
        let rows = vec![vec![], vec![(0, 1.0)]];
        let (v, _) = converge(&rows, &[(1, 1.0)], 0.15, vec![0.5, 0.5], 1e-12, 10_000);
        assert!((v.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!(v[0] > 0.4 && v[1] > 0.4);
    }

    #[test]
    fn standing_median_resists_a_forging_minority() {
        let honest = Standing::Bad;
        let forged = Standing::Good(50.0);
        let answers = [honest, forged, honest, forged, honest];
        assert_eq!(Standing::median_of(&answers), Standing::Bad);
        assert_eq!(Standing::median_of(&[]), Standing::Unknown);
        assert_eq!(
            Standing::from_weights(0.0, 0.0, 0.0, 0.5),
            Standing::Unknown,
            "a new peer starts neutral"
        );
        assert_eq!(Standing::from_weights(0.2, 0.3, 1.0, 0.5), Standing::Bad);
    }

    #[test]
    fn ranking_drops_bad_and_puts_good_before_unknown() {
        let c = |p: u64, rtt: f64, standing: Standing| Candidate {
            peer: id(p),
            rtt_ms: rtt,
            load: Load::default(),
            standing,
            locally_bad: false,
        };
        let mut v = vec![
            c(1, 10.0, Standing::Unknown),
            c(2, 80.0, Standing::Good(1.0)),
            c(3, 5.0, Standing::Bad),
            c(4, 40.0, Standing::Good(0.2)),
            Candidate {
                locally_bad: true,
                ..c(5, 1.0, Standing::Good(3.0))
            },
        ];
        rank_candidates(&mut v);
        let order: Vec<u64> = v.iter().map(|c| c.peer.0).collect();
        assert_eq!(order, vec![4, 2, 1]);
    }

    #[test]
    fn rate_limit_follows_standing() {
        let mut rl = RateLimiter::new(4);
        let allowed = |rl: &mut RateLimiter, s: Standing| {
            (0..1000)
                .filter(|&k| rl.allow(k, id(s.rank() as u64 + 1), s))
                .count()
        };
        // One second of 1,000 messages: bad gets its burst plus ~2.
        let bad = allowed(&mut rl, Standing::Bad);
        let good = allowed(&mut rl, Standing::Good(1.0));
        assert!((4..=7).contains(&bad), "{bad}");
        assert!(good >= 400, "{good}");
        for p in 10..20 {
            rl.allow(0, id(p), Standing::Unknown);
        }
        assert!(rl.buckets.len() <= 4, "bounded");
    }

    proptest! {
        #[test]
        fn rows_are_normalised_whatever_the_input(
            raw in proptest::collection::vec((0u64..50, 0.0f64..100.0, 0.0f64..100.0), 0..60)
        ) {
            let row = row_of(raw.into_iter().map(|(p, g, b)| (id(p), g, b)).collect());
            let sum: f64 = row.entries.iter().map(|e| e.good + e.bad).sum();
            prop_assert!(row.entries.is_empty() || (sum - 1.0).abs() < 1e-9);
            prop_assert!(row.entries.windows(2).all(|w| w[0].peer < w[1].peer));
            let walk: f64 = row.walk().iter().map(|e| e.1).sum();
            prop_assert!(row.walk().is_empty() || (walk - 1.0).abs() < 1e-9);
        }

        #[test]
        fn iteration_keeps_mass(
            n in 2usize..30,
            edges in proptest::collection::vec((0u32..30, 0u32..30), 0..100),
        ) {
            let mut rows = vec![Vec::new(); n];
            for (i, j) in edges {
                let (i, j) = (i as usize % n, j % n as u32);
                rows[i].push((j, 1.0));
            }
            for r in &mut rows {
                let k = r.len() as f64;
                r.iter_mut().for_each(|e| e.1 /= k);
            }
            let v = vec![1.0 / n as f64; n];
            let mut next = vec![0.0; n];
            iterate(&rows, &[(0, 1.0)], 0.15, &v, &mut next);
            prop_assert!((next.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        }
    }
}
