//! The score manager: the distributed PowerTrust aggregation, one peer's
//! part of it, as a sans-IO state machine.
//!
//! The score of peer `j` is kept by the peers responsible for the P-Grid
//! key [`score_key`](super::trust::score_key)`(j)`: several of them, which
//! a [`Directory`] names (the driver asks P-Grid). Every epoch:
//!
//! 1. each rater `i` sends its walk row (its normalised good opinions, or
//!    the power nodes if it has none: a peer with no opinion defers to
//!    them, which is the walk's jump for a dangling row) as a
//!    [`ScoreManager::handle_report`] to its own managers and, entry by
//!    entry, to the managers of each peer it rated (so that `j`'s
//!    managers know `r_ij` for every rater of `j`);
//! 2. then rounds: at the start of a round ([`ScoreManager::start_round`])
//!    every manager of `i` sends `i`'s current score to the managers of
//!    every peer `i` rated, batched per destination; at the end
//!    ([`ScoreManager::end_round`]) every manager of `j` takes, for each
//!    rater, the median of the copies its managers sent (so no single
//!    manager, nor a minority, can forge it; copies from peers that are
//!    not the rater's managers are refused) and computes
//!    `v_j = (1-α) Σ_i median(v_i) · r_ij + α · [j is a power node] / m`,
//!    PowerTrust's walk with the jump to the power nodes ([`iterate`] is
//!    the same computation over a whole matrix, which the tests compare);
//! 3. meanwhile, the credibility check (after PeerTrust, as `sim trust`
//!    runs it): every manager of `j` tells the managers of each rater of
//!    `j` whether its opinion agreed with the clear majority of the other
//!    raters' ([`ScoreManager::agreements`]); the managers of a rater
//!    whose checked opinions mostly disagree find it a liar and tell the
//!    managers of the peers it rated ([`ScoreManager::liars`]);
//! 4. after the rounds, [`ScoreManager::standing`] weighs each rater's good
//!    and bad shares of `j` by the rater's score ([`rater_weight`]),
//!    leaving out raters that most of their managers found lying; a liar
//!    is itself in bad standing.
//!
//! Rounds are slotted in time by the driver (every manager starts and
//! ends round `t` of epoch `e` at the same instants, from loosely synced
//! clocks); a copy that arrives late or for another round is dropped,
//! and a rater none of whose copies arrived counts with its last score.
//!
//! A manager that forges standings is caught by the readers, who compare
//! the answers of all managers of a peer ([`super::reputation`]).
//!
//! [`iterate`]: super::trust::iterate

use std::collections::{BTreeMap, HashMap};

use super::NodeId;
use super::trust::{
    Credibility, Standing, TrustConfig, TrustRow, clear_majority, median, rater_weight,
};

/// Who manages whose score: the replicas of the P-Grid leaf responsible
/// for [`super::trust::score_key`]`(peer)`.
pub trait Directory {
    /// The score managers of `peer`.
    fn managers(&self, peer: NodeId) -> Vec<NodeId>;
}

/// Most raters a manager keeps in-opinions from, per managed peer: every
/// rater's row is bounded ([`TrustConfig::max_row`]), so a peer's raters
/// are many only if it serves many; 4,096 keeps a popular edge's raters
/// and bounds the memory an attacker can make a manager spend.
pub const MAX_RATERS_PER_PEER: usize = 4096;

/// Most peers one manager manages (as a rater or a rated peer): far above
/// the few dozen a P-Grid leaf's share of the network gives it.
pub const MAX_MANAGED: usize = 65_536;

/// A batch of scores to send: `scores` of raters to manager `to`.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoresOut {
    pub to: NodeId,
    pub epoch: u32,
    pub round: u16,
    pub scores: Vec<(NodeId, f64)>,
}

/// `(rater, rated peer, agreed)`: one check of a rater's opinion, for
/// the rater's managers.
pub type Agreement = (NodeId, NodeId, bool);

/// One rater's opinion of a managed peer.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Opinion {
    walk: f64,
    good: f64,
    bad: f64,
}

/// What a manager knows of one peer it manages.
#[derive(Clone, Debug, Default)]
struct Managed {
    /// Its walk row, when it rated others (as a rater).
    row: Vec<(NodeId, f64)>,
    /// Opinions of it (as a rated peer): rater to the walk's `r_ij` and
    /// the rater's good and bad shares of it.
    raters: BTreeMap<NodeId, Opinion>,
    /// Its current score.
    score: f64,
    /// The peers it rated, good or bad (as a rater).
    rated: Vec<NodeId>,
    /// What the managers of each peer it rated said of its opinion of
    /// that peer (as a rater): peer to (manager, agreed).
    checks: BTreeMap<NodeId, Vec<(NodeId, bool)>>,
    /// Found lying this epoch (as a rater).
    liar: bool,
}

/// One peer's part of the distributed aggregation.
#[derive(Debug)]
pub struct ScoreManager {
    me: NodeId,
    config: TrustConfig,
    epoch: u32,
    round: u16,
    /// The power nodes of this epoch, published with it.
    power: Vec<NodeId>,
    /// Initial score (one over the peers known).
    start: f64,
    managed: BTreeMap<NodeId, Managed>,
    /// Copies received this round: rater to (sending manager, score).
    copies: HashMap<NodeId, Vec<(NodeId, f64)>>,
    /// Copies refused (wrong round or not from one of the rater's
    /// managers).
    refused: u64,
    /// Raters found lying this epoch, and which of their managers said so.
    liar_notices: BTreeMap<NodeId, Vec<NodeId>>,
}

impl ScoreManager {
    /// A manager for epoch 0 in a network of about `peers` peers, with
    /// `power` as the first power nodes.
    pub fn new(me: NodeId, config: TrustConfig, peers: usize, power: Vec<NodeId>) -> Self {
        Self {
            me,
            config,
            epoch: 0,
            round: 0,
            power,
            start: 1.0 / peers.max(1) as f64,
            managed: BTreeMap::new(),
            copies: HashMap::new(),
            refused: 0,
            liar_notices: BTreeMap::new(),
        }
    }

    /// A new epoch: reports of the last one are forgotten, scores kept
    /// as the walk's starting point.
    pub fn begin_epoch(&mut self, epoch: u32, power: Vec<NodeId>) {
        self.epoch = epoch;
        self.round = 0;
        self.power = power;
        self.copies.clear();
        self.liar_notices.clear();
        for m in self.managed.values_mut() {
            m.row.clear();
            m.raters.clear();
            m.rated.clear();
            m.checks.clear();
            m.liar = false;
        }
    }

    /// The row a rater reports: its good opinions as a walk row, or the
    /// power nodes when it has none (the walk's jump from a dangling row).
    pub fn walk_row(row: &TrustRow, power: &[NodeId]) -> Vec<(NodeId, f64)> {
        let walk = row.walk();
        if !walk.is_empty() || power.is_empty() {
            return walk;
        }
        let share = 1.0 / power.len() as f64;
        power.iter().map(|&p| (p, share)).collect()
    }

    /// A rater's report for this epoch. The manager keeps what concerns
    /// the peers it manages: the whole row if it manages the rater, the
    /// opinions of the peers it manages otherwise. `from` must be the
    /// rater itself (the transport authenticates it).
    pub fn handle_report(&mut self, from: NodeId, epoch: u32, row: &TrustRow, dir: &dyn Directory) {
        if epoch != self.epoch {
            return;
        }
        let walk = Self::walk_row(row, &self.power);
        let start = self.start;
        if dir.managers(from).contains(&self.me)
            && let Some(m) = self.entry(from, start)
        {
            m.row = walk.clone();
            m.rated = row.entries.iter().map(|e| e.peer).collect();
        }
        let mut opinions: BTreeMap<NodeId, Opinion> = BTreeMap::new();
        for &(j, r) in &walk {
            opinions.entry(j).or_default().walk = r;
        }
        for e in &row.entries {
            let o = opinions.entry(e.peer).or_default();
            o.good = e.good;
            o.bad = e.bad;
        }
        for (j, opinion) in opinions {
            if j == from || !dir.managers(j).contains(&self.me) {
                continue;
            }
            if let Some(m) = self.entry(j, start)
                && (m.raters.len() < MAX_RATERS_PER_PEER || m.raters.contains_key(&from))
            {
                m.raters.insert(from, opinion);
            }
        }
    }

    /// The credibility check's first half, once the reports are in: for
    /// every rater of every managed peer, whether its opinion agreed with
    /// the clear majority of the others' (no entry where they have none),
    /// batched per manager of the rater. Every rater counts one vote, not
    /// weighted by score: liars that serve well gather trust they never
    /// pass on, and would outweigh the honest raters they lie about.
    pub fn agreements(&self, dir: &dyn Directory) -> Vec<(NodeId, Vec<Agreement>)> {
        let mut batches: BTreeMap<NodeId, Vec<Agreement>> = BTreeMap::new();
        for (&j, m) in &self.managed {
            let says: Vec<(NodeId, bool)> = m
                .raters
                .iter()
                .filter(|(_, o)| o.good + o.bad > 0.0)
                .map(|(&i, o)| (i, o.good > o.bad))
                .collect();
            let good = says.iter().filter(|s| s.1).count() as f64;
            let bad = says.len() as f64 - good;
            for &(i, good_of_j) in &says {
                let others = if good_of_j {
                    clear_majority(good - 1.0, bad)
                } else {
                    clear_majority(good, bad - 1.0)
                };
                let Some(majority) = others else { continue };
                for to in dir.managers(i) {
                    batches
                        .entry(to)
                        .or_default()
                        .push((i, j, good_of_j == majority));
                }
            }
        }
        batches.into_iter().collect()
    }

    /// Agreements from manager `from`: kept for each rater managed here,
    /// about a peer it did rate, if `from` manages that peer.
    pub fn handle_agreements(
        &mut self,
        from: NodeId,
        epoch: u32,
        entries: &[Agreement],
        dir: &dyn Directory,
    ) {
        if epoch != self.epoch {
            self.refused += entries.len() as u64;
            return;
        }
        for &(i, j, agreed) in entries {
            let Some(m) = self.managed.get_mut(&i) else {
                continue;
            };
            if !m.rated.contains(&j) || !dir.managers(j).contains(&from) {
                self.refused += 1;
                continue;
            }
            let copies = m.checks.entry(j).or_default();
            match copies.iter_mut().find(|(c, _)| *c == from) {
                Some(c) => c.1 = agreed,
                None => copies.push((from, agreed)),
            }
        }
    }

    /// The credibility check's second half: every managed rater whose
    /// checked opinions mostly disagree with the others' is a liar
    /// ([`Credibility::is_liar`]); returns the notices for the managers of
    /// the peers it rated, batched per destination.
    pub fn liars(&mut self, dir: &dyn Directory) -> Vec<(NodeId, Vec<NodeId>)> {
        let min = self.config.min_credibility;
        let mut batches: BTreeMap<NodeId, Vec<NodeId>> = BTreeMap::new();
        for (&i, m) in self.managed.iter_mut() {
            let mut c = Credibility {
                opinions: m.rated.len(),
                ..Credibility::default()
            };
            for copies in m.checks.values() {
                // One check per peer: the median of its managers' copies.
                let yes = copies.iter().filter(|c| c.1).count();
                let no = copies.len() - yes;
                if yes != no {
                    c.checked += 1;
                    c.agreeing += usize::from(yes > no);
                }
            }
            m.liar = c.is_liar(min);
            if m.liar {
                for &j in &m.rated {
                    for to in dir.managers(j) {
                        let batch = batches.entry(to).or_default();
                        if batch.last() != Some(&i) {
                            batch.push(i);
                        }
                    }
                }
            }
        }
        batches.into_iter().collect()
    }

    /// Liar notices from manager `from`, kept for the raters it manages.
    pub fn handle_liars(
        &mut self,
        from: NodeId,
        epoch: u32,
        raters: &[NodeId],
        dir: &dyn Directory,
    ) {
        if epoch != self.epoch {
            self.refused += raters.len() as u64;
            return;
        }
        for &i in raters {
            // Bounded like the managed peers: a manager of many raters
            // cannot make this one keep notices without end.
            let full =
                self.liar_notices.len() >= MAX_MANAGED && !self.liar_notices.contains_key(&i);
            if full || !dir.managers(i).contains(&from) {
                self.refused += 1;
                continue;
            }
            let notices = self.liar_notices.entry(i).or_default();
            if !notices.contains(&from) {
                notices.push(from);
            }
        }
    }

    /// Whether most of `rater`'s managers found it lying.
    fn is_liar(&self, rater: NodeId, dir: &dyn Directory) -> bool {
        if self.managed.get(&rater).is_some_and(|m| m.liar) {
            return true;
        }
        let said = self.liar_notices.get(&rater).map_or(0, Vec::len);
        said > 0 && 2 * said > dir.managers(rater).len()
    }

    fn entry(&mut self, peer: NodeId, start: f64) -> Option<&mut Managed> {
        if !self.managed.contains_key(&peer) && self.managed.len() >= MAX_MANAGED {
            return None;
        }
        Some(self.managed.entry(peer).or_insert_with(|| Managed {
            score: start,
            ..Managed::default()
        }))
    }

    /// Round `round` begins: the scores of the raters this node manages,
    /// batched per destination manager (the managers of the peers each
    /// rater rated).
    pub fn start_round(&mut self, round: u16, dir: &dyn Directory) -> Vec<ScoresOut> {
        self.round = round;
        self.copies.clear();
        let mut batches: BTreeMap<NodeId, Vec<(NodeId, f64)>> = BTreeMap::new();
        for (&i, m) in &self.managed {
            if m.row.is_empty() {
                continue;
            }
            let mut sent_to: Vec<NodeId> = Vec::new();
            for &(j, _) in &m.row {
                for to in dir.managers(j) {
                    if !sent_to.contains(&to) {
                        sent_to.push(to);
                        batches.entry(to).or_default().push((i, m.score));
                    }
                }
            }
        }
        batches
            .into_iter()
            .map(|(to, scores)| ScoresOut {
                to,
                epoch: self.epoch,
                round,
                scores,
            })
            .collect()
    }

    /// Scores from manager `from` for round `round`: each copy is kept if
    /// `from` is one of that rater's managers and the rater rated a peer
    /// managed here.
    pub fn handle_scores(
        &mut self,
        from: NodeId,
        epoch: u32,
        round: u16,
        scores: &[(NodeId, f64)],
        dir: &dyn Directory,
    ) {
        if epoch != self.epoch || round != self.round {
            self.refused += scores.len() as u64;
            return;
        }
        for &(i, v) in scores {
            let valid = v.is_finite() && (0.0..=1.0).contains(&v);
            if !valid || !dir.managers(i).contains(&from) {
                self.refused += 1;
                continue;
            }
            let copies = self.copies.entry(i).or_default();
            // One copy per manager: a repeat replaces the first.
            match copies.iter_mut().find(|(m, _)| *m == from) {
                Some(c) => c.1 = v,
                None => copies.push((from, v)),
            }
        }
    }

    /// The round ends: every managed peer's new score from the medians of
    /// its raters' copies. Returns the L1 change over the managed peers.
    pub fn end_round(&mut self) -> f64 {
        let alpha = self.config.greedy_factor;
        let m = self.power.len().max(1) as f64;
        let seen = self.seen_scores();
        let mut change = 0.0;
        let power = &self.power;
        for (j, managed) in self.managed.iter_mut() {
            let mut v = if power.contains(j) { alpha / m } else { 0.0 };
            for (i, o) in &managed.raters {
                if let Some(&s) = seen.get(i) {
                    v += (1.0 - alpha) * s * o.walk;
                }
            }
            change += (v - managed.score).abs();
            managed.score = v;
        }
        change
    }

    /// Each rater's score as this round's copies say (their median), or
    /// the score kept here when no copy came.
    fn seen_scores(&self) -> HashMap<NodeId, f64> {
        let mut seen: HashMap<NodeId, f64> =
            self.managed.iter().map(|(&p, m)| (p, m.score)).collect();
        for (&i, copies) in &self.copies {
            let mut values: Vec<f64> = copies.iter().map(|c| c.1).collect();
            if let Some(v) = median(&mut values) {
                seen.insert(i, v);
            }
        }
        seen
    }

    /// The score of a managed peer.
    pub fn score(&self, peer: NodeId) -> Option<f64> {
        self.managed.get(&peer).map(|m| m.score)
    }

    /// Copies refused so far.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// The standing of a managed peer after the rounds: its raters' good
    /// and bad shares weighed by their scores (as the last round's copies
    /// gave them) over `peers` peers in all, liars left out; a liar is in
    /// bad standing itself. `None` if not managed here.
    pub fn standing(&self, peer: NodeId, peers: usize, dir: &dyn Directory) -> Option<Standing> {
        let managed = self.managed.get(&peer)?;
        if managed.liar {
            return Some(Standing::Bad);
        }
        let seen = self.seen_scores();
        let n = peers.max(1) as f64;
        let (mut good, mut bad) = (0.0, 0.0);
        for (i, o) in &managed.raters {
            if self.is_liar(*i, dir) {
                continue;
            }
            let w = rater_weight(n * seen.get(i).copied().unwrap_or(0.0));
            good += w * o.good;
            bad += w * o.bad;
        }
        Some(Standing::from_weights(
            good,
            bad,
            n * managed.score,
            self.config.threshold,
        ))
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::overlay::OverlayRng;
    use crate::overlay::trust::{converge, row_of};

    /// Managers by hash: `r` peers per peer, as P-Grid's leaf replicas.
    struct Hashed {
        n: u64,
        r: u64,
    }

    impl Directory for Hashed {
        fn managers(&self, peer: NodeId) -> Vec<NodeId> {
            let h = peer.0.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let mut out: Vec<NodeId> = Vec::new();
            let mut k = 0;
            while out.len() < self.r as usize {
                let id = NodeId(1 + (h.wrapping_add(k * 0x632b_e59b_d9b4_e019) >> 16) % self.n);
                if !out.contains(&id) {
                    out.push(id);
                }
                k += 1;
            }
            out
        }
    }

    /// Random rows over `n` peers: each rates 3 to 12 others.
    fn rows(n: usize, seed: u64) -> Vec<TrustRow> {
        let mut rng = OverlayRng::seed_from_u64(seed);
        (1..=n as u64)
            .map(|i| {
                let k = rng.gen_range(3..=12);
                row_of(
                    (0..k)
                        .map(|_| {
                            let j = rng.gen_range(1..=n as u64);
                            let good = rng.gen_range(0.0..10.0);
                            (NodeId(if j == i { j % n as u64 + 1 } else { j }), good, 0.0)
                        })
                        .collect(),
                )
            })
            .collect()
    }

    /// Runs `rounds` rounds among `n` managers, some of which (`forgers`)
    /// send `forged` instead of the scores they hold. Returns the scores
    /// the managers hold (the median over each peer's managers).
    fn run(
        n: usize,
        rows: &[TrustRow],
        power: &[NodeId],
        rounds: u16,
        forgers: &[NodeId],
        forged: f64,
    ) -> Vec<f64> {
        let dir = Hashed { n: n as u64, r: 5 };
        let config = TrustConfig::default();
        let mut managers: Vec<ScoreManager> = (1..=n as u64)
            .map(|i| ScoreManager::new(NodeId(i), config.clone(), n, power.to_vec()))
            .collect();
        for m in &mut managers {
            m.begin_epoch(1, power.to_vec());
        }
        // Each rater reports to its managers and to its rated peers'.
        for (i, row) in rows.iter().enumerate() {
            let rater = NodeId(i as u64 + 1);
            let walk = ScoreManager::walk_row(row, power);
            let mut to: Vec<NodeId> = dir.managers(rater);
            for (j, _) in &walk {
                to.extend(dir.managers(*j));
            }
            to.sort();
            to.dedup();
            for t in to {
                managers[t.0 as usize - 1].handle_report(rater, 1, row, &dir);
            }
        }
        for round in 0..rounds {
            let mut mail: Vec<(NodeId, ScoresOut)> = Vec::new();
            for m in &mut managers {
                let me = m.me;
                for mut out in m.start_round(round, &dir) {
                    if forgers.contains(&me) {
                        out.scores.iter_mut().for_each(|s| s.1 = forged);
                    }
                    mail.push((me, out));
                }
            }
            for (from, out) in mail {
                let to = out.to.0 as usize - 1;
                managers[to].handle_scores(from, out.epoch, out.round, &out.scores, &dir);
            }
            for m in &mut managers {
                m.end_round();
            }
        }
        (1..=n as u64)
            .map(|j| {
                let mut held: Vec<f64> = dir
                    .managers(NodeId(j))
                    .iter()
                    .filter_map(|m| managers[m.0 as usize - 1].score(NodeId(j)))
                    .collect();
                median(&mut held).unwrap_or(0.0)
            })
            .collect()
    }

    fn exact(n: usize, rows: &[TrustRow], power: &[NodeId]) -> Vec<f64> {
        let matrix: Vec<Vec<(u32, f64)>> = rows
            .iter()
            .map(|r| {
                ScoreManager::walk_row(r, power)
                    .into_iter()
                    .map(|(p, w)| (p.0 as u32 - 1, w))
                    .collect()
            })
            .collect();
        let teleport: Vec<(u32, f64)> = power
            .iter()
            .map(|p| (p.0 as u32 - 1, 1.0 / power.len() as f64))
            .collect();
        converge(
            &matrix,
            &teleport,
            0.15,
            vec![1.0 / n as f64; n],
            1e-12,
            10_000,
        )
        .0
    }

    fn rms(n: usize, a: &[f64], b: &[f64]) -> f64 {
        let sum: f64 = a
            .iter()
            .zip(b)
            .map(|(x, y)| (n as f64 * (x - y)).powi(2))
            .sum();
        (sum / n as f64).sqrt()
    }

    #[test]
    fn message_rounds_reach_the_exact_scores() {
        let n = 200;
        let rows = rows(n, 1);
        let power: Vec<NodeId> = (1..=8).map(NodeId).collect();
        let distributed = run(n, &rows, &power, 60, &[], 0.0);
        let exact = exact(n, &rows, &power);
        let err = rms(n, &distributed, &exact);
        assert!(err < 1e-3, "rms {err}");
        // A dangling rater (no opinions) defers to the power nodes.
        let walk = ScoreManager::walk_row(&TrustRow::default(), &power);
        assert_eq!(walk.len(), 8);
    }

    #[test]
    fn a_forging_minority_of_managers_moves_nothing() {
        let n = 200;
        let rows = rows(n, 2);
        let power: Vec<NodeId> = (1..=8).map(NodeId).collect();
        let dir = Hashed { n: n as u64, r: 5 };
        // Forgers: at most two of every peer's five managers.
        let mut forgers: Vec<NodeId> = Vec::new();
        for p in (1..=n as u64).map(NodeId) {
            let ok = (1..=n as u64).map(NodeId).all(|j| {
                let ms = dir.managers(j);
                !ms.contains(&p) || ms.iter().filter(|m| forgers.contains(m)).count() < 2
            });
            if ok && forgers.len() < 30 {
                forgers.push(p);
            }
        }
        assert!(forgers.len() >= 10, "{}", forgers.len());
        let honest = run(n, &rows, &power, 60, &[], 0.0);
        let forged = run(n, &rows, &power, 60, &forgers, 1.0);
        let err = rms(n, &honest, &forged);
        assert!(err < 1e-6, "rms {err} with {} forgers", forgers.len());
    }

    #[test]
    fn standing_weighs_bad_reports_by_the_raters_scores() {
        let dir = Hashed { n: 20, r: 20 };
        let power = vec![NodeId(1)];
        let mut m = ScoreManager::new(NodeId(1), TrustConfig::default(), 20, power.clone());
        m.begin_epoch(1, power);
        // The power node trusts six raters; five of them say 9 is bad, one
        // says good; 10 is only rated good.
        let trusted = row_of((2..=7u64).map(|i| (NodeId(i), 1.0, 0.0)).collect());
        m.handle_report(NodeId(1), 1, &trusted, &dir);
        for i in 2..=7u64 {
            let (g, b) = if i == 2 { (1.0, 0.0) } else { (0.0, 1.0) };
            let row = row_of(vec![(NodeId(9), g, b), (NodeId(10), 1.0, 0.0)]);
            m.handle_report(NodeId(i), 1, &row, &dir);
        }
        for round in 0..30 {
            let out = m.start_round(round, &dir);
            for o in out {
                m.handle_scores(NodeId(1), o.epoch, o.round, &o.scores, &dir);
            }
            m.end_round();
        }
        assert_eq!(m.standing(NodeId(9), 20, &dir), Some(Standing::Bad));
        assert!(matches!(
            m.standing(NodeId(10), 20, &dir),
            Some(Standing::Good(_))
        ));
        assert_eq!(m.standing(NodeId(11), 20, &dir), None);
    }

    #[test]
    fn a_rater_that_contradicts_the_others_is_found_lying_by_its_managers() {
        let n = 60u64;
        let dir = Hashed { n, r: 5 };
        let power: Vec<NodeId> = (1..=8).map(NodeId).collect();
        let mut managers: Vec<ScoreManager> = (1..=n)
            .map(|i| ScoreManager::new(NodeId(i), TrustConfig::default(), 60, power.clone()))
            .collect();
        for m in &mut managers {
            m.begin_epoch(1, power.clone());
        }
        // Peers 51 to 60 serve corrupt data. Every rater rates 12 random
        // peers truthfully, but rater 1 calls the good bad and the bad good.
        let bad = |j: u64| j > 50;
        let liar = NodeId(1);
        let mut rng = OverlayRng::seed_from_u64(5);
        for i in 1..=n {
            let mut rated: Vec<u64> = Vec::new();
            while rated.len() < 12 {
                let j = rng.gen_range(1..=n);
                if j != i && !rated.contains(&j) {
                    rated.push(j);
                }
            }
            let row = row_of(
                rated
                    .iter()
                    .map(|&j| {
                        let says_good = bad(j) == (i == 1);
                        (NodeId(j), f64::from(says_good), f64::from(!says_good))
                    })
                    .collect(),
            );
            let mut to = dir.managers(NodeId(i));
            for &j in &rated {
                to.extend(dir.managers(NodeId(j)));
            }
            to.sort();
            to.dedup();
            for t in to {
                managers[t.0 as usize - 1].handle_report(NodeId(i), 1, &row, &dir);
            }
        }
        let mail: Vec<_> = managers
            .iter()
            .flat_map(|m| {
                let from = m.me;
                m.agreements(&dir).into_iter().map(move |b| (from, b))
            })
            .collect();
        for (from, (to, entries)) in mail {
            managers[to.0 as usize - 1].handle_agreements(from, 1, &entries, &dir);
        }
        let mut mail = Vec::new();
        for m in &mut managers {
            let from = m.me;
            mail.extend(m.liars(&dir).into_iter().map(|b| (from, b)));
        }
        for (from, (to, raters)) in mail {
            managers[to.0 as usize - 1].handle_liars(from, 1, &raters, &dir);
        }
        let at = |m: NodeId| &managers[m.0 as usize - 1];
        // The liar's managers find it out, and so do the managers of the
        // peers it lied about; no honest rater is taken for a liar.
        for m in dir.managers(liar) {
            assert_eq!(at(m).standing(liar, 60, &dir), Some(Standing::Bad));
        }
        let lied_about = at(dir.managers(liar)[0]).managed[&liar].rated.clone();
        for j in lied_about {
            for m in dir.managers(j) {
                assert!(at(m).is_liar(liar, &dir), "manager {m:?} of {j:?}");
            }
        }
        for i in (2..=n).map(NodeId) {
            for m in dir.managers(i) {
                assert!(!at(m).is_liar(i, &dir), "{i:?} at {m:?}");
            }
        }
    }

    #[test]
    fn copies_from_strangers_and_other_rounds_are_refused() {
        let dir = Hashed { n: 50, r: 5 };
        let mut m = ScoreManager::new(NodeId(1), TrustConfig::default(), 50, vec![NodeId(2)]);
        m.begin_epoch(3, vec![NodeId(2)]);
        m.start_round(4, &dir);
        let rater = NodeId(7);
        let stranger = (1..=50)
            .map(NodeId)
            .find(|p| !dir.managers(rater).contains(p))
            .unwrap();
        m.handle_scores(stranger, 3, 4, &[(rater, 0.5)], &dir);
        m.handle_scores(dir.managers(rater)[0], 3, 5, &[(rater, 0.5)], &dir);
        m.handle_scores(dir.managers(rater)[0], 3, 4, &[(rater, f64::NAN)], &dir);
        assert_eq!(m.refused(), 3);
        assert!(m.copies.is_empty());
    }
}
