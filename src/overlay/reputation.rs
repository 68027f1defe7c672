//! Reputation over the network: the node's part of the distributed
//! PowerTrust aggregation, scheduled in epochs, as a sans-IO component of
//! the [`Node`](super::Node).
//!
//! Epochs and rounds are slotted in wall-clock time, which the driver
//! hands in once (`unix_ms` at the node's start; the simulator gives a
//! virtual one), so every node runs round `r` of epoch `e` in the same
//! slot without a message to agree on it. In each epoch of `epoch_ms`:
//!
//! | slot | what |
//! | --- | --- |
//! | start | [`ScoreManager::begin_epoch`]; this node's opinions ([`super::trust::LocalTrust::report`]) as a `Report` to its own score managers and to the managers of every peer it rated |
//! | rounds `1..=ROUNDS`, `round_ms` each, after one report slot | [`ScoreManager::start_round`]: `Scores` batches to the managers of the rated peers; at the slot's end [`ScoreManager::end_round`] |
//! | with round 1 | the credibility check: [`ScoreManager::agreements`] to the managers of each rater |
//! | with round 3 | [`ScoreManager::liars`] to the managers of the peers each liar rated |
//! | after the rounds | a `StandingQuery` about the members to their managers, answered from [`ScoreManager::standing`] |
//! | one round later | the median of the managers' answers per peer ([`Standing::median_of`]) becomes the node's verdict on it; a manager whose answers contradict that median for most of the peers it answered about is caught forging ([`Reputation::poll_false_answer`]) |
//!
//! The managers of a peer are the P-Grid peers responsible for
//! [`score_key`] of it, as this node's routing state names them
//! ([`PGridDirectory`]). The power nodes are, for now, every member (the
//! walk's jump goes to all alike, as PageRank's does); PowerTrust's
//! election of power nodes by ranking runs in the simulator only.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::NodeId;
use super::pgrid::key_bits;
use super::pgrid_node::PGridNode;
use super::score_manager::{Directory, ScoreManager};
use super::trust::{Message, Standing, TrustConfig, TrustRow, score_key};
use super::wire::MAX_STANDING_PEERS;

/// Rounds of the walk per epoch: the walk converges in 7 to 9 rounds from
/// uniform scores (`sim trust`), and from the last epoch's in fewer.
pub const ROUNDS: u16 = 8;

/// Most managers named for one peer.
pub const MAX_MANAGERS: usize = 8;

/// Most messages queued to send; past it the oldest go (as loss would).
const MAX_OUT: usize = 4096;

/// Fewest answers checkable against the other managers' before a manager
/// can be caught: one contradiction may be a report it missed.
const MIN_CHECKED_ANSWERS: u32 = 3;

/// The managers of a peer as one node's P-Grid state names them: itself and
/// its replicas when it is responsible for the peer's score key, else the
/// references on the key's side at the level where key and path part.
pub struct PGridDirectory<'a> {
    pgrid: &'a PGridNode,
}

impl<'a> PGridDirectory<'a> {
    /// The directory over `pgrid`'s routing state.
    pub fn new(pgrid: &'a PGridNode) -> Self {
        Self { pgrid }
    }
}

impl Directory for PGridDirectory<'_> {
    fn managers(&self, peer: NodeId) -> Vec<NodeId> {
        let key = key_bits(&score_key(peer));
        let p = self.pgrid.peer();
        let mut managers: Vec<NodeId> = if p.responsible_for(key) {
            let mut all = p.replicas().to_vec();
            all.push(p.id());
            all
        } else {
            p.refs(p.path().common_with_key(key)).to_vec()
        };
        // The same order at every peer with the same view, so that the
        // bound keeps the same managers everywhere.
        managers.sort_unstable();
        managers.dedup();
        managers.truncate(MAX_MANAGERS);
        managers
    }
}

/// Where in its epoch the node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Send the report and begin the epoch.
    Report,
    /// Start round `r`.
    Round(u16),
    /// End round `r`.
    EndRound(u16),
    /// Ask the managers for standings.
    Query,
    /// Take the medians.
    Verdict,
}

/// One node's reputation component.
#[derive(Debug)]
pub struct Reputation {
    me: NodeId,
    manager: ScoreManager,
    epoch_ms: u64,
    round_ms: u64,
    /// Wall-clock ms at the node's ms 0.
    wall_at_start_ms: u64,
    epoch: u32,
    step: Step,
    /// When `step` is due, in the node's ms.
    due_ms: u64,
    /// Answers this epoch: peer to (manager, standing).
    answers: BTreeMap<NodeId, BTreeMap<NodeId, Standing>>,
    out: VecDeque<(NodeId, Message)>,
    verdicts: VecDeque<(NodeId, Standing)>,
    false_answers: VecDeque<NodeId>,
}

impl Reputation {
    /// A component for node `me` that starts at node ms 0 = wall-clock
    /// `wall_at_start_ms`, with epochs of `epoch_ms` and rounds of
    /// `round_ms` (`epoch_ms` must hold the report slot, the rounds and
    /// two more slots).
    pub fn new(
        me: NodeId,
        config: TrustConfig,
        wall_at_start_ms: u64,
        epoch_ms: u64,
        round_ms: u64,
    ) -> Self {
        let round_ms = round_ms.max(1);
        let epoch_ms = epoch_ms.max(round_ms * (u64::from(ROUNDS) + 4));
        let mut r = Self {
            me,
            manager: ScoreManager::new(me, config, 1, Vec::new()),
            epoch_ms,
            round_ms,
            wall_at_start_ms,
            epoch: 0,
            step: Step::Report,
            due_ms: 0,
            answers: BTreeMap::new(),
            out: VecDeque::new(),
            verdicts: VecDeque::new(),
            false_answers: VecDeque::new(),
        };
        // The first whole epoch from now.
        let epoch = wall_at_start_ms / epoch_ms + 1;
        r.epoch = epoch as u32;
        r.due_ms = epoch * epoch_ms - wall_at_start_ms;
        r
    }

    fn epoch_start_ms(&self, epoch: u32) -> u64 {
        (u64::from(epoch) * self.epoch_ms).saturating_sub(self.wall_at_start_ms)
    }

    /// When [`Reputation::handle_timeout`] is next due, node ms.
    pub fn poll_timeout(&self) -> u64 {
        self.due_ms
    }

    /// Runs the steps due at `now_ms`. `row` is this node's opinions,
    /// `members` the live members other than this node.
    pub fn handle_timeout(
        &mut self,
        now_ms: u64,
        pgrid: &PGridNode,
        row: impl FnOnce() -> TrustRow,
        members: &[NodeId],
    ) {
        let mut row = Some(row);
        // Bounded: at most every step of one epoch, then the next epoch.
        for _ in 0..u32::from(ROUNDS) * 2 + 4 {
            if now_ms < self.due_ms {
                return;
            }
            let dir = PGridDirectory::new(pgrid);
            let start = self.epoch_start_ms(self.epoch);
            match self.step {
                Step::Report => {
                    if now_ms >= start + self.epoch_ms {
                        // Slept past the epoch: skip to the current one.
                        let wall = self.wall_at_start_ms + now_ms;
                        self.epoch = (wall / self.epoch_ms) as u32 + 1;
                        self.due_ms = self.epoch_start_ms(self.epoch);
                        continue;
                    }
                    let mut power: Vec<NodeId> = members.to_vec();
                    power.push(self.me);
                    power.sort_unstable();
                    self.manager.begin_epoch(self.epoch, power);
                    self.answers.clear();
                    if let Some(row) = row.take() {
                        let row = row();
                        let mut to: BTreeSet<NodeId> = dir.managers(self.me).into_iter().collect();
                        for e in &row.entries {
                            to.extend(dir.managers(e.peer));
                        }
                        for m in to {
                            self.send(
                                m,
                                Message::Report {
                                    epoch: self.epoch,
                                    row: row.clone(),
                                },
                            );
                        }
                    }
                    self.step = Step::Round(1);
                    self.due_ms = start + self.round_ms;
                }
                Step::Round(r) => {
                    // The credibility check rides the first rounds: the
                    // reports are in by round 1, the agreements by 3.
                    if r == 1 {
                        for (to, entries) in self.manager.agreements(&dir) {
                            for chunk in entries.chunks(super::wire::MAX_SCORES) {
                                let epoch = self.epoch;
                                let entries = chunk.to_vec();
                                self.send(to, Message::Agreements { epoch, entries });
                            }
                        }
                    } else if r == 3 {
                        for (to, raters) in self.manager.liars(&dir) {
                            for chunk in raters.chunks(super::wire::MAX_SCORES) {
                                let epoch = self.epoch;
                                let raters = chunk.to_vec();
                                self.send(to, Message::Liars { epoch, raters });
                            }
                        }
                    }
                    for batch in self.manager.start_round(r, &dir) {
                        for chunk in batch.scores.chunks(super::wire::MAX_SCORES) {
                            self.send(
                                batch.to,
                                Message::Scores {
                                    epoch: batch.epoch,
                                    round: batch.round,
                                    scores: chunk.to_vec(),
                                },
                            );
                        }
                    }
                    self.step = Step::EndRound(r);
                    self.due_ms = start + self.round_ms * (u64::from(r) + 1);
                }
                Step::EndRound(r) => {
                    self.manager.end_round();
                    self.step = if r < ROUNDS {
                        Step::Round(r + 1)
                    } else {
                        Step::Query
                    };
                }
                Step::Query => {
                    let mut asks: BTreeMap<NodeId, Vec<NodeId>> = BTreeMap::new();
                    for &peer in members.iter().take(MAX_STANDING_PEERS) {
                        for m in dir.managers(peer) {
                            asks.entry(m).or_default().push(peer);
                        }
                    }
                    for (m, peers) in asks {
                        self.send(m, Message::StandingQuery { peers });
                    }
                    self.step = Step::Verdict;
                    self.due_ms = start + self.round_ms * (u64::from(ROUNDS) + 3);
                }
                Step::Verdict => {
                    self.take_verdicts();
                    self.epoch += 1;
                    self.step = Step::Report;
                    self.due_ms = self.epoch_start_ms(self.epoch);
                }
            }
        }
    }

    /// The median of the managers' answers becomes the verdict on each
    /// peer; a manager whose answers contradict the others' on most of the
    /// peers it answered for is caught forging them.
    fn take_verdicts(&mut self) {
        // Per manager: answers checkable against a majority of the others,
        // and those that contradict it.
        let mut checked: BTreeMap<NodeId, (u32, u32)> = BTreeMap::new();
        for (&peer, answers) in &self.answers {
            let all: Vec<Standing> = answers.values().copied().collect();
            self.verdicts.push_back((peer, Standing::median_of(&all)));
            // Unknown is a manager that missed the reports, not one that
            // contradicts them; and a contradiction needs a majority to
            // contradict: of two answers, neither is the odd one out.
            let known: Vec<Standing> = all
                .into_iter()
                .filter(|a| *a != Standing::Unknown)
                .collect();
            if known.len() < 3 {
                continue;
            }
            let majority = Standing::median_of(&known).usable();
            for (&m, &a) in answers {
                if a != Standing::Unknown {
                    let c = checked.entry(m).or_default();
                    c.0 += 1;
                    c.1 += u32::from(a.usable() != majority);
                }
            }
        }
        // Honest managers of a peer hold the same reports and answer
        // alike; one that contradicts the others on most of its answers
        // forges them (as `sim trust` catches forging managers).
        for (m, (n, wrong)) in checked {
            if m != self.me && n >= MIN_CHECKED_ANSWERS && 2 * wrong > n {
                self.false_answers.push_back(m);
            }
        }
    }

    /// A reputation message from `from` (authenticated by the transport).
    pub fn handle_message(
        &mut self,
        from: NodeId,
        message: Message,
        pgrid: &PGridNode,
        peers: usize,
    ) {
        let dir = PGridDirectory::new(pgrid);
        match message {
            Message::Report { epoch, row } => self.manager.handle_report(from, epoch, &row, &dir),
            Message::Scores {
                epoch,
                round,
                scores,
            } => self
                .manager
                .handle_scores(from, epoch, round, &scores, &dir),
            Message::StandingQuery { peers: asked } => {
                let standings: Vec<(NodeId, Standing)> = asked
                    .into_iter()
                    .take(MAX_STANDING_PEERS)
                    .filter_map(|p| Some((p, self.manager.standing(p, peers, &dir)?)))
                    .collect();
                if !standings.is_empty() {
                    self.send(from, Message::StandingAnswer { standings });
                }
            }
            Message::StandingAnswer { standings } => {
                if self.step != Step::Verdict {
                    return; // not asked this epoch, or too late
                }
                for (peer, standing) in standings.into_iter().take(MAX_STANDING_PEERS) {
                    // Only a manager of that peer may answer for it.
                    if dir.managers(peer).contains(&from) {
                        self.answers.entry(peer).or_default().insert(from, standing);
                    }
                }
            }
            Message::Agreements { epoch, entries } => {
                self.manager.handle_agreements(from, epoch, &entries, &dir)
            }
            Message::Liars { epoch, raters } => {
                self.manager.handle_liars(from, epoch, &raters, &dir)
            }
            // The look-ahead rows and power-node offers are the
            // simulator's for now.
            Message::RowRequest { .. } | Message::RowReply { .. } | Message::PowerOffer { .. } => {}
        }
    }

    fn send(&mut self, to: NodeId, message: Message) {
        if self.out.len() >= MAX_OUT {
            self.out.pop_front();
        }
        self.out.push_back((to, message));
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<(NodeId, Message)> {
        self.out.pop_front()
    }

    /// The next verdict of the managers on a peer.
    pub fn poll_verdict(&mut self) -> Option<(NodeId, Standing)> {
        self.verdicts.pop_front()
    }

    /// The next score manager caught answering falsely: the node rates it
    /// so ([`super::trust::Feedback::FalseAnswer`]) and stops using it.
    pub fn poll_false_answer(&mut self) -> Option<NodeId> {
        self.false_answers.pop_front()
    }

    /// The epoch under way or next.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlay::pgrid::PGridPeer;

    /// The managers caught when `answers` (peer, then manager and its
    /// answer) came back this epoch.
    fn caught(answers: &[(u64, &[(u64, Standing)])]) -> Vec<NodeId> {
        let mut r = Reputation::new(NodeId(1), TrustConfig::default(), 0, 60_000, 1_000);
        r.step = Step::Verdict;
        r.due_ms = 0;
        for &(peer, a) in answers {
            let a = a.iter().map(|&(m, s)| (NodeId(m), s)).collect();
            r.answers.insert(NodeId(peer), a);
        }
        let pgrid = PGridNode::new(PGridPeer::new(NodeId(1)), Default::default(), 500, 0);
        r.handle_timeout(0, &pgrid, TrustRow::default, &[]);
        assert_eq!(r.verdicts.len(), answers.len());
        std::iter::from_fn(|| r.poll_false_answer()).collect()
    }

    #[test]
    fn a_manager_that_contradicts_the_others_on_most_answers_is_caught() {
        let (good, bad, unknown) = (Standing::Good(1.0), Standing::Bad, Standing::Unknown);
        // Manager 12 calls every good peer bad; 13 missed the reports.
        let forged = [(10, good), (11, good), (12, bad), (13, unknown)];
        let answers: Vec<(u64, &[(u64, Standing)])> =
            (100..104).map(|p| (p, &forged[..])).collect();
        assert_eq!(caught(&answers), vec![NodeId(12)]);
        // One contradiction in four is a missed report, not a forgery.
        let honest = [(10, good), (11, good), (12, good)];
        let mut answers: Vec<(u64, &[(u64, Standing)])> =
            (100..103).map(|p| (p, &honest[..])).collect();
        answers.push((103, &forged[..]));
        assert!(caught(&answers).is_empty());
        // Two answers apiece: no majority to be contradicted.
        let split = [(10, good), (12, bad)];
        let answers: Vec<(u64, &[(u64, Standing)])> = (100..104).map(|p| (p, &split[..])).collect();
        assert!(caught(&answers).is_empty());
    }
}
