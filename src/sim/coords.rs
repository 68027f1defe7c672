//! The coordinates experiment: how well Vivaldi and Pharos predict RTTs.
//!
//! Every node runs the real overlay [`crate::overlay::Node`]; RTT samples
//! come only from its SWIM probes, coordinates only from acks. At the end,
//! each node's coordinates are compared with the truth matrix:
//!
//! - relative error `|predicted - true| / true` over all pairs (Vivaldi
//!   section 5's metric), median and 90th percentile;
//! - for peer selection: from 8 random candidates, is the one predicted
//!   nearest within 10% of the truly nearest?
//!
//! "vivaldi" is plain Vivaldi as its paper measured it, 2-D plus height;
//! "pharos" is what `estimate_rtt` uses: local coordinates inside a
//! cluster, global across, in the [`DIM`](crate::overlay::coord::DIM)
//! dimensions the wire carries;
//! "vivaldi_5d" is that global coordinate alone, to tell what the dimensions
//! give from what the clusters give. The network is run twice from the
//! same seeds, once with coordinates moving in 2 dimensions and once in
//! all of them: the same probes, the same samples, the same truth.
//! Pharos anchors are chosen by the operator; here, as k-medoids of the
//! truth matrix, i.e. well-placed well-known nodes (one per dense region).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::SimError;
use super::matrix::{LatencyMatrix, Placement};
use super::net::{Latency, Network};
use super::stats::percentile;
use super::{Progress, node_id};
use crate::overlay::coord::estimate_rtt_global;
use crate::overlay::{Config, Event, PeerCoord, estimate_rtt};

/// Options of a coordinates run. Each field is a `gridedge sim coords` flag.
#[derive(Clone, Debug)]
pub struct CoordsOpts {
    /// The truth: a square RTT matrix in milliseconds (`--matrix`).
    pub matrix: PathBuf,
    /// A directory of time slices (`<name>_<t>` files of the same size)
    /// replayed in order as drifting truth for the network's delays; errors
    /// are still measured against `matrix` (`--slices`).
    pub slices: Option<PathBuf>,
    /// Seed of everything random (`--seed`).
    pub seed: u64,
    /// Number of nodes; default: one per host of the matrix (`--nodes`).
    pub nodes: Option<usize>,
    /// Simulated time (`--duration`).
    pub duration: Duration,
    /// SWIM probe interval: one RTT sample per node per interval
    /// (`--probe-interval`).
    pub probe_interval: Duration,
    /// Number of Pharos anchors, hence clusters; 0 disables Pharos
    /// (`--landmarks`).
    pub landmarks: usize,
    /// Access delay range added per node when nodes outnumber hosts,
    /// milliseconds (`--jitter-ms`).
    pub jitter_ms: f64,
    /// Packet loss (`--loss`).
    pub loss: f64,
    /// Nearest-of-8 trials per node (`--picks`).
    pub picks: usize,
}

impl CoordsOpts {
    /// Defaults for `matrix`.
    pub fn new(matrix: PathBuf) -> Self {
        Self {
            matrix,
            slices: None,
            seed: 1,
            nodes: None,
            duration: Duration::from_secs(1800),
            probe_interval: Duration::from_secs(1),
            landmarks: 8,
            jitter_ms: 2.0,
            loss: 0.0,
            picks: 50,
        }
    }
}

/// Accuracy figures of one coordinate system.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SystemFigures {
    /// Median relative error over all pairs.
    pub median_relative_error: f64,
    /// 90th percentile relative error over all pairs.
    pub p90_relative_error: f64,
    /// Share of nearest-of-8 picks within 10% of the truly nearest.
    pub nearest_of_8_within_10pct: f64,
}

/// The baseline of picking at random.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RandomFigures {
    /// Share of random picks among 8 within 10% of the truly nearest.
    pub nearest_of_8_within_10pct: f64,
}

/// The result of a coordinates run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CoordsReport {
    /// Nodes simulated.
    pub nodes: usize,
    /// Hosts in the truth matrix.
    pub hosts: usize,
    /// The seed that replays this run.
    pub seed: u64,
    /// Simulated seconds.
    pub duration_s: f64,
    /// Time slices replayed (1 = static truth).
    pub slices: usize,
    /// Pharos anchors.
    pub landmarks: usize,
    /// Nodes that had found their cluster at the end.
    pub clustered_nodes: usize,
    /// Share of evaluated pairs inside one cluster (where Pharos uses its
    /// local coordinates).
    pub same_cluster_pairs: f64,
    /// RTT samples per node.
    pub samples_per_node: f64,
    /// Plain Vivaldi: global coordinates in 2-D plus height.
    pub vivaldi: SystemFigures,
    /// The Pharos run's global coordinates alone, in 5-D plus height.
    pub vivaldi_5d: SystemFigures,
    /// Pharos (local inside a cluster, global across).
    pub pharos: SystemFigures,
    /// Random choice, for scale.
    pub random: RandomFigures,
    /// Wall-clock seconds the run took.
    pub wall_time_s: f64,
}

impl std::fmt::Display for CoordsReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "coords: {} nodes on {} hosts, seed {}, {:.0} s simulated, {} slice(s), {} anchors",
            self.nodes, self.hosts, self.seed, self.duration_s, self.slices, self.landmarks
        )?;
        writeln!(
            f,
            "{} nodes clustered, {:.1}% of pairs in one cluster, {:.0} samples per node",
            self.clustered_nodes,
            self.same_cluster_pairs * 100.0,
            self.samples_per_node
        )?;
        writeln!(
            f,
            "{:<10} {:>16} {:>16} {:>26}",
            "system", "median rel err", "p90 rel err", "nearest-of-8 within 10%"
        )?;
        for (name, s) in [
            ("vivaldi", &self.vivaldi),
            ("vivaldi_5d", &self.vivaldi_5d),
            ("pharos", &self.pharos),
        ] {
            writeln!(
                f,
                "{:<10} {:>16.4} {:>16.4} {:>26.3}",
                name, s.median_relative_error, s.p90_relative_error, s.nearest_of_8_within_10pct
            )?;
        }
        writeln!(
            f,
            "{:<10} {:>16} {:>16} {:>26.3}",
            "random", "-", "-", self.random.nearest_of_8_within_10pct
        )?;
        write!(f, "{:.1} s of wall time", self.wall_time_s)
    }
}

/// Runs a coordinates experiment; `progress` is called every simulated 10 s.
pub fn run_coords(
    opts: &CoordsOpts,
    progress: &mut dyn FnMut(Progress),
) -> Result<CoordsReport, SimError> {
    let wall = Instant::now();
    let truth = LatencyMatrix::load(&opts.matrix)?;
    let hosts = truth.hosts();
    let n = opts.nodes.unwrap_or(hosts).max(2);
    let placement = Placement::new(n, hosts, opts.jitter_ms, opts.seed);
    let slices = match &opts.slices {
        Some(dir) => LatencyMatrix::load_slices(dir, hosts)?,
        None => vec![truth.clone()],
    };
    let slice_count = slices.len();
    let latency = Latency {
        slice_period: opts.duration / slice_count as u32,
        slices,
        placement: placement.clone(),
    };
    let true_rtt = |a: usize, b: usize| placement.rtt_ms(&truth, a, b);

    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let ids: Vec<_> = (0..n).map(node_id).collect();
    let anchors = k_medoids(n, opts.landmarks.min(n), &true_rtt, &mut rng);
    let mut config = Config::wan();
    config.pgrid_exchange_interval = None;
    config.trust_epoch = None;
    config.probe_interval = opts.probe_interval;
    // Acks must be able to arrive within the probe period.
    config.probe_timeout = config.probe_timeout.min(opts.probe_interval.mul_f64(0.8));
    config.landmarks = anchors.iter().map(|&a| ids[a]).collect();

    let seeds: Vec<u64> = (0..n).map(|_| rng.r#gen()).collect();
    let mut plain_config = config.clone();
    plain_config.vivaldi.dimensions = 2;
    let run = Run {
        opts,
        ids: &ids,
        seeds: &seeds,
        latency: &latency,
    };
    let (plain, _) = run.fit(&plain_config, 0, progress)?;
    let (coords, samples) = run.fit(&config, 1, progress)?;
    let clustered_nodes = coords
        .iter()
        .filter(|c| c.is_some_and(|c| c.local.is_some()))
        .count();

    // Pairs: all of them up to 2,000 nodes, else a random million.
    let pairs: Vec<(usize, usize)> = if n <= 2000 {
        (0..n)
            .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
            .collect()
    } else {
        (0..1_000_000)
            .map(|_| {
                let i = rng.gen_range(0..n);
                (i, (i + rng.gen_range(1..n)) % n)
            })
            .collect()
    };
    // Each system: its coordinates and how it estimates an RTT from them.
    type Estimate = fn(&PeerCoord, &PeerCoord) -> Duration;
    let systems: [(&[Option<PeerCoord>], Estimate); 3] = [
        (&plain, estimate_rtt_global),
        (&coords, estimate_rtt_global),
        (&coords, estimate_rtt),
    ];
    let mut errors: [Vec<f64>; 3] = Default::default();
    let mut same = 0usize;
    for &(i, j) in &pairs {
        let t = true_rtt(i, j);
        if t <= 0.0 {
            continue;
        }
        for ((c, estimate), errs) in systems.iter().zip(&mut errors) {
            if let (Some(a), Some(b)) = (c[i], c[j]) {
                let e = estimate(&a, &b).as_secs_f64() * 1000.0;
                errs.push((e - t).abs() / t);
            }
        }
        if let (Some(a), Some(b)) = (coords[i], coords[j])
            && matches!((a.local, b.local), (Some((x, _)), Some((y, _))) if x == y)
        {
            same += 1;
        }
    }
    for errs in &mut errors {
        errs.sort_by(f64::total_cmp);
    }

    let (mut hits, mut hit_r, mut trials) = ([0u64; 3], 0u64, 0u64);
    let all: Vec<usize> = (0..n).collect();
    for i in 0..n {
        if coords[i].is_none() || plain[i].is_none() {
            continue;
        }
        for _ in 0..opts.picks {
            let cands: Vec<usize> = all
                .choose_multiple(&mut rng, 9)
                .copied()
                .filter(|&c| c != i && coords[c].is_some() && plain[c].is_some())
                .take(8)
                .collect();
            if cands.len() < 8 {
                continue;
            }
            let best = cands
                .iter()
                .map(|&c| true_rtt(i, c))
                .fold(f64::INFINITY, f64::min);
            let ok = |c: usize| true_rtt(i, c) <= best * 1.1;
            for ((c, estimate), hit) in systems.iter().zip(&mut hits) {
                let Some(me) = c[i] else { continue };
                let pick = cands
                    .iter()
                    .copied()
                    .min_by_key(|&x| c[x].map(|cx| estimate(&me, &cx)))
                    .unwrap_or(cands[0]);
                *hit += u64::from(ok(pick));
            }
            hit_r += u64::from(ok(cands[rng.gen_range(0..8)]));
            trials += 1;
        }
    }
    let share = |h: u64| h as f64 / trials.max(1) as f64;
    let figures = |s: usize| SystemFigures {
        median_relative_error: percentile(&errors[s], 0.5),
        p90_relative_error: percentile(&errors[s], 0.9),
        nearest_of_8_within_10pct: share(hits[s]),
    };
    let live = coords.iter().filter(|c| c.is_some()).count().max(1);
    Ok(CoordsReport {
        nodes: n,
        hosts,
        seed: opts.seed,
        duration_s: opts.duration.as_secs_f64(),
        slices: slice_count,
        landmarks: anchors.len(),
        clustered_nodes,
        same_cluster_pairs: same as f64 / errors[2].len().max(1) as f64,
        samples_per_node: samples as f64 / live as f64,
        vivaldi: figures(0),
        vivaldi_5d: figures(1),
        pharos: figures(2),
        random: RandomFigures {
            nearest_of_8_within_10pct: share(hit_r),
        },
        wall_time_s: wall.elapsed().as_secs_f64(),
    })
}

/// What the two runs of one experiment share.
struct Run<'a> {
    opts: &'a CoordsOpts,
    ids: &'a [crate::overlay::NodeId],
    seeds: &'a [u64],
    latency: &'a Latency,
}

impl Run<'_> {
    /// Runs the network with `config` from the shared seeds; returns each
    /// node's coordinates and the RTT samples taken. `pass` (0 or 1) places
    /// the progress within both runs.
    fn fit(
        &self,
        config: &Config,
        pass: u32,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(Vec<Option<PeerCoord>>, u64), SimError> {
        let opts = self.opts;
        let n = self.ids.len();
        let mut net = Network::new(self.ids.to_vec(), self.latency.clone(), opts.seed);
        net.loss = opts.loss.clamp(0.0, 1.0);
        let mut sink = |_: Duration, _: usize, _: Event| {};
        for i in 0..n {
            let now = net.now();
            net.start(i, config.clone(), self.seeds[i])
                .restore_formed(now, self.ids);
            net.flush(i, &mut sink);
        }
        let mut events = 0;
        let mut t = Duration::ZERO;
        while t < opts.duration {
            t = (t + Duration::from_secs(10)).min(opts.duration);
            events += net.run_until(t, &mut sink);
            progress(Progress {
                simulated: opts.duration * pass + t,
                total: opts.duration * 2,
                events,
            });
        }
        if net.decode_errors > 0 {
            return Err(SimError::UndecodablePackets {
                seed: opts.seed,
                count: net.decode_errors,
            });
        }
        let coords = (0..n)
            .map(|i| net.node(i).map(|node| node.coordinates()))
            .collect();
        let samples = (0..n)
            .filter_map(|i| net.node(i))
            .map(|node| node.coordinate_state().samples())
            .sum();
        Ok((coords, samples))
    }
}

/// `k` anchors as k-medoids of the RTT space (k-means++ seeding, then
/// alternating assignment and medoid update), over at most 1,000 nodes.
fn k_medoids(
    n: usize,
    k: usize,
    rtt: &dyn Fn(usize, usize) -> f64,
    rng: &mut ChaCha8Rng,
) -> Vec<usize> {
    if k == 0 {
        return Vec::new();
    }
    let mut pool: Vec<usize> = (0..n).collect();
    if n > 1000 {
        pool.shuffle(rng);
        pool.truncate(1000);
    }
    let mut medoids = vec![pool[rng.gen_range(0..pool.len())]];
    while medoids.len() < k {
        let d2: Vec<f64> = pool
            .iter()
            .map(|&p| {
                medoids
                    .iter()
                    .map(|&m| rtt(p, m))
                    .fold(f64::INFINITY, f64::min)
                    .powi(2)
            })
            .collect();
        let total: f64 = d2.iter().sum();
        if total <= 0.0 {
            break;
        }
        let mut x = rng.gen_range(0.0..total);
        let mut pick = pool[pool.len() - 1];
        for (&p, &d) in pool.iter().zip(&d2) {
            if x < d {
                pick = p;
                break;
            }
            x -= d;
        }
        if !medoids.contains(&pick) {
            medoids.push(pick);
        }
    }
    for _ in 0..20 {
        let mut clusters: Vec<Vec<usize>> = vec![Vec::new(); medoids.len()];
        for &p in &pool {
            let c = (0..medoids.len())
                .min_by(|&a, &b| rtt(p, medoids[a]).total_cmp(&rtt(p, medoids[b])))
                .unwrap_or(0);
            clusters[c].push(p);
        }
        let next: Vec<usize> = clusters
            .iter()
            .zip(&medoids)
            .map(|(members, &m)| {
                members
                    .iter()
                    .map(|&a| (members.iter().map(|&x| rtt(a, x)).sum::<f64>(), a))
                    .min_by(|x, y| x.0.total_cmp(&y.0))
                    .map_or(m, |(_, a)| a)
            })
            .collect();
        if next == medoids {
            break;
        }
        medoids = next;
    }
    medoids
}
