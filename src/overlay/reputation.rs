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
//! | after the rounds | a `StandingQuery` about the members to their managers, answered from [`ScoreManager::standing`] |
//! | one round later | the median of the managers' answers per peer ([`Standing::median_of`]) becomes the node's verdict on it |
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
                    for (&peer, answers) in &self.answers {
                        let all: Vec<Standing> = answers.values().copied().collect();
                        self.verdicts.push_back((peer, Standing::median_of(&all)));
                    }
                    self.epoch += 1;
                    self.step = Step::Report;
                    self.due_ms = self.epoch_start_ms(self.epoch);
                }
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
                    .filter_map(|p| Some((p, self.manager.standing(p, peers)?)))
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

    /// The epoch under way or next.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }
}
