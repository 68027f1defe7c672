//! `gridedge sim trust`: reputation against peers that lie, from one seed.
//!
//! N peers hold objects (each object on [`TrustOpts::holders`] random
//! peers) and fetch them; a share of the peers is malicious, of one kind
//! per scenario ([`Adversary`]). The same peers, objects and fetch stream
//! run three times, once per system:
//!
//! - **none**: a fetch tries the holders nearest first, no reputation;
//! - **eigentrust**: the baseline (Kamvar et al. 2003): the walk over the
//!   direct trust matrix, teleporting to a fixed set of pre-trusted peers
//!   (the bootstrap peers);
//! - **powertrust**: the look-ahead walk over R·R, teleporting to power
//!   nodes re-ranked every epoch (the bootstrap peers at first).
//!
//! Every fetch goes through the real core ([`crate::overlay::trust`]):
//! the client ranks the holders with [`rank_candidates`] from their
//! standing and its own [`LocalTrust`], tries them in order, and records a
//! [`Feedback`] for each. Every epoch each peer reports its row and the
//! score managers run the walk: the managers of a peer are
//! [`TrustConfig::managers`] peers picked by the hash of its id (the
//! replicas of one P-Grid leaf, placed uniformly as P-Grid places them);
//! each round every manager takes the median of the managers' values for
//! each rater, skipping managers in bad standing. Liars and colluders also
//! forge as managers: they report the scores of their own kind high and of
//! honest peers as zero. The exact computation (same matrix, same power
//! nodes, no forgery, run to 1e-12) gives the error of the distributed one.
//!
//! Figures per system: the share of fetches after warm-up that went to a
//! malicious peer, the share that failed, honest and malicious peers in
//! bad standing at the end, rounds to converge, the distributed error, how
//! long a peer that turned bad kept being chosen, and the messages of
//! reputation per peer per minute.

use std::collections::BTreeMap;
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::overlay::NodeId;
use crate::overlay::load::Load;
use crate::overlay::trust::{
    Candidate, Credibility, Feedback, LocalTrust, Standing, TrustConfig, TrustRow, clear_majority,
    converge, iterate, look_ahead, power_nodes, rank_candidates, rater_weight, row_of, score_key,
};
use crate::sim::stats::percentile;
use crate::sim::{SimError, node_id};

/// A kind of malicious peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Adversary {
    /// Serves corrupt data (a wrong hash).
    Corrupt,
    /// Drops requests (the client times out).
    Drop,
    /// Serves correct data but lies in its ratings (honest peers bad, its
    /// own kind good) and as a score manager.
    Liar,
    /// A colluding group: serves corrupt data, rates its members up, rates
    /// honest peers down, and forges as score managers.
    Collude,
    /// Behaves well through the warm-up, then serves corrupt data.
    Traitor,
}

impl Adversary {
    /// All kinds, in report order.
    pub const ALL: [Adversary; 5] = [
        Adversary::Corrupt,
        Adversary::Drop,
        Adversary::Liar,
        Adversary::Collude,
        Adversary::Traitor,
    ];

    fn name(self) -> &'static str {
        match self {
            Adversary::Corrupt => "corrupt",
            Adversary::Drop => "drop",
            Adversary::Liar => "liar",
            Adversary::Collude => "collude",
            Adversary::Traitor => "traitor",
        }
    }

    /// Whether this kind lies about others (ratings, manager answers).
    fn forges(self) -> bool {
        matches!(self, Adversary::Liar | Adversary::Collude)
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct TrustOpts {
    pub nodes: usize,
    pub seed: u64,
    /// Share of malicious peers in each scenario.
    pub malicious: f64,
    pub kinds: Vec<Adversary>,
    /// Holders per object.
    pub holders: usize,
    /// Objects per peer.
    pub objects_per_peer: usize,
    /// Fetches per peer per simulated minute.
    pub fetches_per_minute: usize,
    /// Minutes before the figures count (and traitors turn).
    pub warmup_min: u64,
    /// Minutes measured after the warm-up.
    pub measure_min: u64,
    /// Minutes between aggregations.
    pub epoch_min: u64,
    pub config: TrustConfig,
}

impl TrustOpts {
    /// Defaults for `nodes` peers.
    pub fn new(nodes: usize, seed: u64) -> Self {
        Self {
            nodes,
            seed,
            malicious: 0.3,
            kinds: Adversary::ALL.to_vec(),
            holders: 8,
            objects_per_peer: 2,
            fetches_per_minute: 2,
            warmup_min: 30,
            measure_min: 30,
            epoch_min: 5,
            config: TrustConfig::default(),
        }
    }
}

/// Figures of one system in one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct SystemFigures {
    /// Fetches after warm-up by honest peers that asked a malicious peer.
    pub malicious_served_fraction: f64,
    /// Fetches after warm-up that no holder answered with good data.
    pub failed_fraction: f64,
    /// Holders asked per fetch after warm-up.
    pub attempts_per_fetch: f64,
    /// Honest peers in bad standing at the end.
    pub honest_filtered_fraction: f64,
    /// Malicious peers in bad standing at the end.
    pub malicious_filtered_fraction: f64,
    /// Rounds of the distributed walk per epoch (from the last epoch's
    /// scores), mean.
    pub rounds_per_epoch: f64,
    /// Rounds of the walk from uniform scores to converge on the final
    /// matrix (the exact computation, epsilon as configured).
    pub rounds_from_uniform: usize,
    /// RMS error of the distributed scores against the exact computation
    /// on the same matrix, scores scaled so that the mean is 1: mean over
    /// epochs, and the largest (an early epoch, while forging managers
    /// are not yet found out).
    pub rms_error: f64,
    pub rms_error_max: f64,
    /// Traitor scenarios: minutes after the turn that a traitor was still
    /// chosen, mean and 90th percentile over traitors (0: never again).
    pub turned_chosen_mean_min: Option<f64>,
    pub turned_chosen_p90_min: Option<f64>,
    /// Reputation messages sent per peer per minute (reports, look-ahead
    /// rows, manager values each round, standings, power-node offers,
    /// standing lookups).
    pub messages_per_peer_per_minute: f64,
}

/// One adversary kind, the three systems.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    pub malicious_peers: usize,
    pub none: SystemFigures,
    pub eigentrust: SystemFigures,
    pub powertrust: SystemFigures,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct TrustReport {
    pub nodes: usize,
    pub seed: u64,
    pub malicious: f64,
    pub holders: usize,
    pub warmup_min: u64,
    pub measure_min: u64,
    pub epoch_min: u64,
    /// By adversary kind: `corrupt.powertrust.malicious_served_fraction`.
    #[serde(flatten)]
    pub scenarios: BTreeMap<String, Scenario>,
    pub wall_time_s: f64,
}

impl std::fmt::Display for TrustReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "sim trust: {} peers, {:.0}% malicious, {} holders per object, seed {}, \
             {} min warm-up + {} min measured, epochs of {} min",
            self.nodes,
            self.malicious * 100.0,
            self.holders,
            self.seed,
            self.warmup_min,
            self.measure_min,
            self.epoch_min
        )?;
        writeln!(
            f,
            "{:<8} {:<10} {:>9} {:>7} {:>6} {:>9} {:>9} {:>7} {:>8} {:>13} {:>11} {:>8}",
            "kind",
            "system",
            "malicious",
            "failed",
            "tries",
            "honest-x",
            "malice-x",
            "rounds",
            "uniform",
            "rms/max",
            "turned min",
            "msg/min"
        )?;
        for (kind, s) in &self.scenarios {
            for (name, x) in [
                ("none", &s.none),
                ("eigentrust", &s.eigentrust),
                ("powertrust", &s.powertrust),
            ] {
                let turned = match (x.turned_chosen_mean_min, x.turned_chosen_p90_min) {
                    (Some(m), Some(p)) => format!("{m:.1}/{p:.0}"),
                    _ => "-".to_owned(),
                };
                writeln!(
                    f,
                    "{:<8} {:<10} {:>8.2}% {:>6.2}% {:>6.2} {:>8.2}% {:>8.2}% {:>7.1} {:>8} {:>13} {:>11} {:>8.0}",
                    kind,
                    name,
                    x.malicious_served_fraction * 100.0,
                    x.failed_fraction * 100.0,
                    x.attempts_per_fetch,
                    x.honest_filtered_fraction * 100.0,
                    x.malicious_filtered_fraction * 100.0,
                    x.rounds_per_epoch,
                    x.rounds_from_uniform,
                    format!("{:.3}/{:.3}", x.rms_error, x.rms_error_max),
                    turned,
                    x.messages_per_peer_per_minute,
                )?;
            }
        }
        write!(f, "{:.1} s of wall time", self.wall_time_s)
    }
}

/// Which reputation a run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum System {
    None,
    EigenTrust,
    PowerTrust,
}

/// The world a scenario runs in, the same for the three systems.
struct World {
    n: usize,
    kind: Adversary,
    malicious: Vec<bool>,
    /// The malicious peers, ascending.
    members: Vec<usize>,
    /// The bootstrap peers: honest, the first power nodes and EigenTrust's
    /// pre-trusted set.
    bootstrap: Vec<u32>,
    holders: Vec<Vec<u32>>,
    /// Manager candidates per peer, in preference order (2 × managers).
    manager_candidates: Vec<Vec<u32>>,
    /// A stable pseudo-RTT per (client, holder), for nearest-first order.
    rtt_seed: u64,
    seed: u64,
}

impl World {
    fn new(opts: &TrustOpts, kind: Adversary) -> Self {
        let n = opts.nodes.max(opts.config.power_nodes + 2);
        let mut rng = ChaCha8Rng::seed_from_u64(opts.seed ^ 0x7275_7374);
        let boot = opts.config.power_nodes.min(n / 2);
        let mut others: Vec<usize> = (boot..n).collect();
        others.shuffle(&mut rng);
        let bad = ((n as f64) * opts.malicious.clamp(0.0, 0.9)).round() as usize;
        let mut malicious = vec![false; n];
        for &i in others.iter().take(bad.min(others.len())) {
            malicious[i] = true;
        }
        let objects = n * opts.objects_per_peer.max(1);
        let h = opts.holders.clamp(1, n);
        let holders = (0..objects)
            .map(|_| {
                rand::seq::index::sample(&mut rng, n, h)
                    .into_iter()
                    .map(|i| i as u32)
                    .collect()
            })
            .collect();
        let want = (2 * opts.config.managers).min(n);
        let manager_candidates = (0..n)
            .map(|j| {
                let key = score_key(node_id(j));
                let mut r = ChaCha8Rng::from_seed(key);
                rand::seq::index::sample(&mut r, n, want)
                    .into_iter()
                    .map(|i| i as u32)
                    .collect()
            })
            .collect();
        Self {
            n,
            kind,
            members: (0..n).filter(|&i| malicious[i]).collect(),
            malicious,
            bootstrap: (0..boot as u32).collect(),
            holders,
            manager_candidates,
            rtt_seed: rng.r#gen(),
            seed: opts.seed,
        }
    }

    fn rtt_ms(&self, a: usize, b: usize) -> f64 {
        // Uncorrelated with malice: which holder is nearest is chance.
        let x = (a as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ (b as u64).wrapping_mul(0xc2b2_ae3d_27d4_eb4f)
            ^ self.rtt_seed;
        let x = (x ^ (x >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        5.0 + (x >> 40) as f64 / (1u64 << 24) as f64 * 200.0
    }

    /// What peer `j` does with a request at minute `t`.
    fn serve(&self, j: usize, t: u64, warmup_min: u64) -> Feedback {
        if !self.malicious[j] {
            return Feedback::Verified;
        }
        match self.kind {
            Adversary::Corrupt | Adversary::Collude => Feedback::WrongHash,
            Adversary::Drop => Feedback::Timeout,
            Adversary::Liar => Feedback::Verified,
            Adversary::Traitor if t < warmup_min => Feedback::Verified,
            Adversary::Traitor => Feedback::WrongHash,
        }
    }

    /// The row peer `i` reports: its real opinions, or the lie of its kind.
    fn reported_row(&self, i: usize, honest_row: TrustRow, rng: &mut ChaCha8Rng) -> TrustRow {
        if !self.malicious[i] || !self.kind.forges() {
            return honest_row;
        }
        let mut raw: Vec<(NodeId, f64, f64)> = Vec::new();
        for e in &honest_row.entries {
            let j = index(e.peer);
            let w = e.good + e.bad;
            if self.malicious[j] {
                raw.push((e.peer, w, 0.0));
            } else {
                raw.push((e.peer, 0.0, w));
            }
        }
        if self.kind == Adversary::Collude {
            // Rate up other members, as if from many good transfers.
            for _ in 0..16.min(self.members.len()) {
                let k = self.members[rng.gen_range(0..self.members.len())];
                if k != i {
                    raw.push((node_id(k), 1.0, 0.0));
                }
            }
        }
        row_of(raw)
    }
}

fn index(id: NodeId) -> usize {
    id.0 as usize - 1
}

/// Runs the experiment.
pub fn run_trust(
    opts: &TrustOpts,
    progress: &mut dyn FnMut(&str),
) -> Result<TrustReport, SimError> {
    let wall = Instant::now();
    let mut scenarios = BTreeMap::new();
    let mut kinds = opts.kinds.clone();
    kinds.sort();
    kinds.dedup();
    for kind in kinds {
        let world = World::new(opts, kind);
        let mut run = |system: System| {
            progress(&format!("{}: {}", kind.name(), system_name(system)));
            run_system(opts, &world, system)
        };
        let none = run(System::None);
        let eigentrust = run(System::EigenTrust);
        let powertrust = run(System::PowerTrust);
        scenarios.insert(
            kind.name().to_owned(),
            Scenario {
                malicious_peers: world.malicious.iter().filter(|&&m| m).count(),
                none,
                eigentrust,
                powertrust,
            },
        );
    }
    Ok(TrustReport {
        nodes: opts.nodes,
        seed: opts.seed,
        malicious: opts.malicious,
        holders: opts.holders,
        warmup_min: opts.warmup_min,
        measure_min: opts.measure_min,
        epoch_min: opts.epoch_min,
        scenarios,
        wall_time_s: wall.elapsed().as_secs_f64(),
    })
}

fn system_name(s: System) -> &'static str {
    match s {
        System::None => "none",
        System::EigenTrust => "eigentrust",
        System::PowerTrust => "powertrust",
    }
}

/// The global state one system's managers hold.
struct Global {
    /// Distributed scores (sum about one).
    scores: Vec<f64>,
    standing: Vec<Standing>,
    /// Teleport set: power nodes or pre-trusted peers.
    teleport: Vec<u32>,
    rounds: Vec<usize>,
    rms: Vec<f64>,
    rounds_from_uniform: usize,
    messages: f64,
}

fn run_system(opts: &TrustOpts, world: &World, system: System) -> SystemFigures {
    let n = world.n;
    let config = &opts.config;
    let mut local: Vec<LocalTrust> = (0..n).map(|_| LocalTrust::new(config.clone())).collect();
    let mut global = Global {
        scores: vec![1.0 / n as f64; n],
        standing: vec![Standing::Unknown; n],
        teleport: world.bootstrap.clone(),
        rounds: Vec::new(),
        rms: Vec::new(),
        rounds_from_uniform: 0,
        messages: 0.0,
    };
    // The fetch stream and the order of equal candidates are the same for
    // every system.
    let mut fetch_rng = ChaCha8Rng::seed_from_u64(world.seed ^ 0x6665_7463);
    let mut row_rng = ChaCha8Rng::seed_from_u64(world.seed ^ 0x726f_7773);
    let objects = world.holders.len();
    let (mut fetches, mut touched, mut failed, mut attempts) = (0u64, 0u64, 0u64, 0u64);
    let turned = world.kind == Adversary::Traitor;
    let mut last_chosen = vec![None::<u64>; n];
    let total_min = opts.warmup_min + opts.measure_min;
    let epoch = opts.epoch_min.max(1);
    let mut candidates: Vec<Candidate> = Vec::new();
    for t in 0..total_min {
        if system != System::None && t > 0 && t % epoch == 0 {
            aggregate(world, system, config, &local, &mut global, t, &mut row_rng);
        }
        let now_ms = t * 60_000;
        let measuring = t >= opts.warmup_min;
        for (c, mine) in local.iter_mut().enumerate() {
            for _ in 0..opts.fetches_per_minute {
                let o = fetch_rng.gen_range(0..objects);
                candidates.clear();
                for &h in &world.holders[o] {
                    let h = h as usize;
                    if h == c {
                        continue;
                    }
                    let reputation = system != System::None;
                    candidates.push(Candidate {
                        peer: node_id(h),
                        rtt_ms: world.rtt_ms(c, h),
                        load: Load::default(),
                        standing: if reputation {
                            global.standing[h]
                        } else {
                            Standing::Unknown
                        },
                        locally_bad: reputation && mine.locally_bad(now_ms, node_id(h)),
                    });
                }
                if candidates.is_empty() {
                    continue;
                }
                rank_candidates(&mut candidates);
                let counts = measuring && !world.malicious[c];
                let mut ok = false;
                let mut asked_bad = false;
                let mut tries = 0;
                for cand in &candidates {
                    let h = index(cand.peer);
                    tries += 1;
                    if world.malicious[h] {
                        asked_bad = true;
                        if turned && measuring {
                            last_chosen[h] = Some(t);
                        }
                    }
                    let feedback = world.serve(h, t, opts.warmup_min);
                    mine.record(now_ms, cand.peer, feedback);
                    if feedback.is_good() {
                        ok = true;
                        break;
                    }
                }
                if counts {
                    fetches += 1;
                    attempts += tries;
                    touched += u64::from(asked_bad);
                    failed += u64::from(!ok);
                }
            }
        }
    }
    let honest = (0..n).filter(|&i| !world.malicious[i]).count().max(1);
    let bad_count = (n - honest).max(1);
    let filtered = |m: bool| {
        (0..n)
            .filter(|&i| world.malicious[i] == m && !global.standing[i].usable())
            .count()
    };
    let mut turned_min: Vec<f64> = Vec::new();
    if turned {
        turned_min = (0..n)
            .filter(|&i| world.malicious[i])
            .map(|i| last_chosen[i].map_or(0.0, |t| (t + 1 - opts.warmup_min) as f64))
            .collect();
        turned_min.sort_by(f64::total_cmp);
    }
    let epochs = global.rounds.len().max(1) as f64;
    SystemFigures {
        malicious_served_fraction: touched as f64 / fetches.max(1) as f64,
        failed_fraction: failed as f64 / fetches.max(1) as f64,
        attempts_per_fetch: attempts as f64 / fetches.max(1) as f64,
        honest_filtered_fraction: filtered(false) as f64 / honest as f64,
        malicious_filtered_fraction: filtered(true) as f64 / bad_count as f64,
        rounds_per_epoch: global.rounds.iter().sum::<usize>() as f64 / epochs,
        rounds_from_uniform: global.rounds_from_uniform,
        rms_error: global.rms.iter().fold(0.0, |a, b| a + b) / epochs,
        rms_error_max: global.rms.iter().copied().fold(0.0, f64::max),
        turned_chosen_mean_min: turned
            .then(|| turned_min.iter().sum::<f64>() / turned_min.len().max(1) as f64),
        turned_chosen_p90_min: turned.then(|| percentile(&turned_min, 0.9)),
        messages_per_peer_per_minute: global.messages / n as f64 / total_min.max(1) as f64,
    }
}

/// One epoch of aggregation: reports, credibility of raters, the
/// distributed walk with forging managers, standings, new power nodes;
/// and the exact walk for the error.
fn aggregate(
    world: &World,
    system: System,
    config: &TrustConfig,
    local: &[LocalTrust],
    global: &mut Global,
    t: u64,
    row_rng: &mut ChaCha8Rng,
) {
    let n = world.n;
    let now_ms = t * 60_000;
    let r = config.managers.max(1) as f64;
    let mut rows: Vec<TrustRow> = (0..n)
        .map(|i| world.reported_row(i, local[i].report(now_ms), row_rng))
        .collect();
    let direct_nnz: usize = rows.iter().map(|r| r.entries.len()).sum();
    // Each row to its managers.
    let mut messages = n as f64 * r;

    // Each peer's usable managers: the first `managers` candidates not in
    // bad standing (a replica set drops peers in bad standing).
    let managers: Vec<Vec<u32>> = world
        .manager_candidates
        .iter()
        .map(|c| {
            let mut m: Vec<u32> = c
                .iter()
                .copied()
                .filter(|&p| global.standing[p as usize].usable())
                .take(config.managers)
                .collect();
            if m.is_empty() {
                m = c.iter().copied().take(config.managers).collect();
            }
            m
        })
        .collect();
    // Which way the median of each peer's managers goes: forged (toward
    // the forgers' kind) when the forging managers are at least half (the
    // lower middle of an even count is the smaller value, so a tie lets a
    // deflation through).
    let forging = |p: u32| world.malicious[p as usize] && world.kind.forges();
    let forged: Vec<Option<bool>> = (0..n)
        .map(|i| {
            let f = managers[i].iter().filter(|&&p| forging(p)).count();
            let h = managers[i].len() - f;
            if world.malicious[i] {
                (f > h).then_some(true)
            } else {
                (f > 0 && f >= h).then_some(false)
            }
        })
        .collect();

    // Raters in bad standing (last epoch) have no say, but their reports
    // are still checked for credibility (a liar stays found out).
    let reported = rows.clone();
    for (i, row) in rows.iter_mut().enumerate() {
        if !global.standing[i].usable() {
            *row = TrustRow::default();
        }
    }

    let walk: Vec<Vec<(NodeId, f64)>> = rows.iter().map(TrustRow::walk).collect();
    let matrix: Vec<Vec<(u32, f64)>> = match system {
        System::PowerTrust => (0..n)
            .map(|i| {
                // The rater fetches the rows of the peers it trusts.
                messages += 2.0 * walk[i].len() as f64;
                to_index(look_ahead(
                    &walk[i],
                    |k| Some(walk[index(k)].clone()),
                    config.max_row,
                ))
            })
            .collect(),
        _ => walk.iter().map(|w| to_index(w.clone())).collect(),
    };
    let nnz: usize = matrix.iter().map(Vec::len).sum();
    let teleport: Vec<(u32, f64)> = {
        let m = global.teleport.len().max(1) as f64;
        global.teleport.iter().map(|&p| (p, 1.0 / m)).collect()
    };

    // What a manager uses as a rater's score: the median of the rater's
    // managers.
    let median_view = |v: &[f64], out: &mut Vec<f64>| {
        let high = v.iter().copied().fold(0.0, f64::max);
        out.clear();
        out.extend((0..n).map(|i| match forged[i] {
            Some(true) => high,
            Some(false) => 0.0,
            None => v[i],
        }));
    };

    // The distributed walk, from last epoch's scores.
    let mut v = global.scores.clone();
    let mut seen = Vec::with_capacity(n);
    let mut next = vec![0.0; n];
    let mut rounds = 0;
    let messages_per_round = r * r * nnz as f64;
    while rounds < config.max_rounds {
        rounds += 1;
        median_view(&v, &mut seen);
        iterate(&matrix, &teleport, config.greedy_factor, &seen, &mut next);
        let change: f64 = v.iter().zip(&next).map(|(a, b)| (a - b).abs()).sum();
        std::mem::swap(&mut v, &mut next);
        messages += messages_per_round;
        if change < config.epsilon {
            break;
        }
    }
    global.rounds.push(rounds);

    // The exact walk on the same matrix and teleport set, no forgery.
    let uniform = vec![1.0 / n as f64; n];
    let (exact, _) = converge(
        &matrix,
        &teleport,
        config.greedy_factor,
        uniform.clone(),
        1e-12,
        10_000,
    );
    let (_, from_uniform) = converge(
        &matrix,
        &teleport,
        config.greedy_factor,
        uniform,
        config.epsilon,
        config.max_rounds,
    );
    global.rounds_from_uniform = from_uniform;
    let sum: f64 = v.iter().sum::<f64>().max(1e-300);
    global.rms.push(
        (v.iter()
            .zip(&exact)
            .map(|(d, e)| (n as f64 * (d / sum - e)).powi(2))
            .sum::<f64>()
            / n as f64)
            .sqrt(),
    );

    // Credibility: the managers of each peer count the opinions of it, one
    // vote per rater with a say, and tell each rater's managers whether it
    // agreed with the others (one more round of messages). Votes are not
    // weighted by score: liars that serve well gather trust they never
    // pass on, and would outweigh the honest raters they lie about.
    // Then standings: each credible rater's shares weighted by its score
    // as its managers hold it (colluders, whom nobody honest rates up,
    // weigh nothing), read back as the median of the managers' answers. A
    // liar is in bad standing itself.
    median_view(&v, &mut seen);
    let weight: Vec<f64> = seen
        .iter()
        .map(|&x| rater_weight(n as f64 * x / sum))
        .collect();
    let mut votes = vec![(0.0f64, 0.0f64); n];
    for row in &rows {
        for e in &row.entries {
            let v = &mut votes[index(e.peer)];
            if e.says_good() {
                v.0 += 1.0;
            } else {
                v.1 += 1.0;
            }
        }
    }
    messages += r * r * direct_nnz as f64;
    // Readers ask all managers of a peer; honest managers answer alike,
    // so a manager that disagrees with the others for most of the peers
    // it manages is caught forging (a false answer).
    let mut answered = vec![(0u32, 0u32); n];
    for j in 0..n {
        for &p in &managers[j] {
            let a = &mut answered[p as usize];
            a.0 += 1;
            a.1 += u32::from(forging(p) != forged[j].is_some());
        }
    }
    let caught = |p: usize| answered[p].0 >= 3 && 2 * answered[p].1 > answered[p].0;
    let cred: Vec<Credibility> = (0..n)
        .map(|i| match forged[i] {
            Some(forged_good) => Credibility::forged(forged_good),
            None => reported[i].credibility(|p| {
                let j = index(p);
                if let Some(f) = forged[j] {
                    return Some(f);
                }
                // The others' votes: without this rater's own, if it had
                // a say.
                let (mut g, mut b) = votes[j];
                if let Some(e) = rows[i].entries.iter().find(|e| e.peer == p) {
                    if e.says_good() {
                        g -= 1.0;
                    } else {
                        b -= 1.0;
                    }
                }
                clear_majority(g, b)
            }),
        })
        .collect();
    let liar: Vec<bool> = (0..n)
        .map(|i| caught(i) || cred[i].is_liar(config.min_credibility))
        .collect();
    let mut good = vec![0.0; n];
    let mut bad = vec![0.0; n];
    for (i, row) in rows.iter().enumerate() {
        if liar[i] {
            continue;
        }
        for e in &row.entries {
            let j = index(e.peer);
            good[j] += weight[i] * e.good;
            bad[j] += weight[i] * e.bad;
        }
    }
    messages += r * r * direct_nnz as f64;
    global.standing = (0..n)
        .map(|j| {
            let honest = if liar[j] {
                Standing::Bad
            } else {
                Standing::from_weights(good[j], bad[j], n as f64 * v[j] / sum, config.threshold)
            };
            let f = managers[j].iter().filter(|&&p| forging(p)).count();
            let h = managers[j].len() - f;
            let lie = if world.malicious[j] {
                Standing::Good(100.0)
            } else {
                Standing::Bad
            };
            let mut answers = vec![honest; h];
            answers.extend(std::iter::repeat_n(lie, f));
            Standing::median_of(&answers)
        })
        .collect();
    // Every peer looks up the standing of the peers it deals with.
    messages += r * direct_nnz as f64;
    global.scores = v.iter().map(|x| x / sum).collect();

    if system == System::PowerTrust {
        // Each manager offers its best managed peer; the merged ranking is
        // the next power nodes. A power node that fell is replaced.
        messages += n as f64;
        // A power node's opinions steer everyone's scores: it must be in
        // good standing, its ratings checkably credible, and its managers
        // of one voice (a split means some of them lie about it).
        // Power nodes that stay in good standing keep their place.
        let next = power_nodes(&global.scores, config.power_nodes, |i| {
            let f = managers[i].iter().filter(|&&p| forging(p)).count();
            let good = matches!(global.standing[i], Standing::Good(_));
            let sitting = global.teleport.contains(&(i as u32));
            good && (sitting
                || (cred[i].fit_for_power(config.power_node_credibility)
                    && (f == 0 || f == managers[i].len())))
        });
        if !next.is_empty() {
            global.teleport = next;
        }
    }
    global.messages += messages;
}

fn to_index(row: Vec<(NodeId, f64)>) -> Vec<(u32, f64)> {
    row.into_iter().map(|(p, w)| (index(p) as u32, w)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 400 peers, 30% malicious of each kind: reputation keeps fetches
    /// away from the malicious after warm-up and frames no honest peer;
    /// without it, fetches go to malicious peers about as often as they
    /// are holders. A failure names the seed.
    #[test]
    fn reputation_filters_every_kind_of_adversary() {
        let seed = 11;
        let mut opts = TrustOpts::new(400, seed);
        opts.malicious = 0.3;
        let report = run_trust(&opts, &mut |_| {}).unwrap();
        for (kind, s) in &report.scenarios {
            let ctx = format!("{kind} (replay: gridedge sim trust --nodes 400 --seed {seed})");
            assert!(
                (0.2..0.45).contains(&s.none.malicious_served_fraction),
                "{ctx}: no reputation {}",
                s.none.malicious_served_fraction
            );
            for (name, x) in [("eigentrust", &s.eigentrust), ("powertrust", &s.powertrust)] {
                // Traitors are chosen until found out, within an epoch or two.
                let bound = if kind == "traitor" { 0.10 } else { 0.01 };
                assert!(
                    x.malicious_served_fraction < bound,
                    "{ctx}: {name} served {} from malicious peers",
                    x.malicious_served_fraction
                );
                assert!(
                    x.honest_filtered_fraction < 0.02,
                    "{ctx}: {name} filtered {} of honest peers",
                    x.honest_filtered_fraction
                );
                assert!(
                    x.malicious_filtered_fraction > 0.9,
                    "{ctx}: {name} filtered only {} of malicious peers",
                    x.malicious_filtered_fraction
                );
                assert!(x.failed_fraction < 0.01, "{ctx}: {name} failed fetches");
                assert!(x.rounds_per_epoch >= 1.0 && x.messages_per_peer_per_minute > 0.0);
            }
            if kind == "traitor" {
                let (m, p) = (
                    s.powertrust.turned_chosen_mean_min.unwrap(),
                    s.none.turned_chosen_mean_min.unwrap(),
                );
                assert!(
                    m < 12.0 && p > 25.0,
                    "{ctx}: turned peers chosen {m} vs {p} min"
                );
            }
        }
        // The look-ahead walk converges in no more rounds than the plain one.
        let s = &report.scenarios["corrupt"];
        assert!(
            s.powertrust.rounds_from_uniform <= s.eigentrust.rounds_from_uniform,
            "{} vs {}",
            s.powertrust.rounds_from_uniform,
            s.eigentrust.rounds_from_uniform
        );
    }

    #[test]
    fn the_same_seed_replays_the_same_run() {
        let mut opts = TrustOpts::new(100, 3);
        opts.kinds = vec![Adversary::Collude];
        opts.warmup_min = 10;
        opts.measure_min = 10;
        let a = run_trust(&opts, &mut |_| {}).unwrap();
        let b = run_trust(&opts, &mut |_| {}).unwrap();
        let strip = |r: &TrustReport| {
            let mut v = serde_json::to_value(r).unwrap();
            v.as_object_mut().unwrap().remove("wall_time_s");
            v
        };
        assert_eq!(strip(&a), strip(&b));
    }
}
