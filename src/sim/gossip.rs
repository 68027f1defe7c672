//! The gossip experiment: failure detection time, false positives and
//! message cost of SWIM/Lifeguard at a given cluster size.
//!
//! A cluster of `nodes` runs under packet loss, with a share of slow nodes;
//! after a warm-up, `crashes` nodes crash at evenly spaced times. For each
//! crash the experiment measures how long until every live node has marked
//! the crashed node dead; any live node marked dead by anyone is a false
//! positive. Optionally, crashed nodes restart empty and rejoin
//! (`restart_after`), and the cluster is cut in two halves for a while
//! (`partition`); the report then says how long the rejoins took and
//! whether every node's view healed. `gridedge sim gossip` prints the
//! [`GossipReport`].

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
use crate::overlay::swim::MembershipEvent;
use crate::overlay::{Config, Event, Preset};

/// Options of a gossip run. Each field is a `gridedge sim gossip` flag.
#[derive(Clone, Debug)]
pub struct GossipOpts {
    /// Number of nodes (`--nodes`).
    pub nodes: usize,
    /// Seed of everything random; the same seed replays the run (`--seed`).
    pub seed: u64,
    /// Simulated time, warm-up included (`--duration`).
    pub duration: Duration,
    /// Time before the first crash, for the cluster to settle (`--warmup`).
    pub warmup: Duration,
    /// Probability that any packet is lost (`--loss`).
    pub loss: f64,
    /// Share of nodes that are slow (`--slow-fraction`).
    pub slow_fraction: f64,
    /// A slow node runs only at wake-ups spaced by uniform random gaps of
    /// up to `slow_delay`, handling what came due since in order, so each
    /// packet and timer is late by less than that (`--slow-delay`).
    pub slow_delay: Duration,
    /// Number of nodes crashed, at evenly spaced times between the warm-up
    /// and 60% of the duration (`--crashes`).
    pub crashes: usize,
    /// Crashed nodes restart this long after their crash, empty, joining
    /// through one random live node (`--restart-after-s`).
    pub restart_after: Option<Duration>,
    /// The two halves of the cluster (by index) cannot reach each other
    /// for this long, from half the duration on (`--partition-s`).
    pub partition: Option<Duration>,
    /// LAN or WAN protocol constants (`--preset`).
    pub preset: Preset,
    /// Latency matrix file (`--matrix`); `None` generates 490 hosts of
    /// the network the preset is made for: a region of RTTs up to 25 ms
    /// for LAN, an internet of five continents for WAN. LAN constants
    /// (a 500 ms probe timeout) over 300 ms paths with slow nodes would
    /// measure a misconfiguration: thousands of suspicions an hour.
    pub matrix: Option<PathBuf>,
    /// Access delay range added per node when nodes outnumber the matrix's
    /// hosts, milliseconds (`--jitter-ms`).
    pub jitter_ms: f64,
    /// Start every node by joining through a random earlier node with
    /// push-pull, instead of from a formed member table (`--cold-join`).
    /// Costs O(N^2) gossip at start; meant for N up to a few thousand.
    pub cold_join: bool,
}

impl Default for GossipOpts {
    fn default() -> Self {
        Self {
            nodes: 100,
            seed: 1,
            duration: Duration::from_secs(600),
            warmup: Duration::from_secs(60),
            loss: 0.05,
            slow_fraction: 0.10,
            slow_delay: Duration::from_millis(500),
            crashes: 5,
            restart_after: None,
            partition: None,
            preset: Preset::Lan,
            matrix: None,
            jitter_ms: 5.0,
            cold_join: false,
        }
    }
}

/// Detection time figures.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Detection {
    /// Crashes injected.
    pub crashes: usize,
    /// Crashes that every live node marked dead before the end.
    pub detected: usize,
    /// Median over crashes of the time until every live node marked the
    /// crashed node dead, seconds.
    pub median_s: f64,
    /// Maximum of the same, seconds.
    pub max_s: f64,
    /// Median over crashes of the time until the first node marked it
    /// dead, seconds.
    pub first_median_s: f64,
}

/// False positive figures: live nodes wrongly suspected or declared dead.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FalsePositives {
    /// Times any node declared a live node dead.
    pub count: u64,
    /// Distinct live nodes declared dead by someone.
    pub members: usize,
    /// Times any node suspected a live node (refuted in time: not a false
    /// positive, but the cost of loss and slowness).
    pub suspicions: u64,
    /// Times a node refuted a suspicion of itself.
    pub refutations: u64,
}

/// Restart figures: crashed nodes that came back empty and rejoined.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Rejoin {
    /// Nodes restarted.
    pub restarts: usize,
    /// Restarted nodes that every live node which had marked them dead
    /// saw alive again before the end.
    pub rejoined: usize,
    /// Median over restarts of the time until the last of those nodes saw
    /// it alive again, seconds.
    pub median_s: f64,
    /// Maximum of the same, seconds.
    pub max_s: f64,
}

/// Partition figures.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PartitionFigures {
    /// How long the halves were cut apart, seconds (0: no partition).
    pub duration_s: f64,
    /// Dead declarations across the cut while it lasted, or raised by then
    /// and expiring before the longest suspicion could end after the heal
    /// (expected, and not counted as false positives).
    pub dead_across: u64,
    /// Time from the heal until every live node saw every live node as
    /// live, checked every 10 simulated seconds; NaN if it never did.
    pub heal_s: f64,
}

/// Whether every live node's view holds every other live node as live at
/// the end of the run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Views {
    /// (observer, subject) pairs of live nodes checked (all pairs up to
    /// 2,000 nodes, else a random 10^6).
    pub pairs_checked: u64,
    /// Pairs where the observer holds the subject dead, left or unknown.
    pub stale: u64,
}

/// Message cost figures.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Messages {
    /// Packets sent per live node per simulated second, after warm-up.
    pub per_node_per_s: f64,
    /// Bytes sent per live node per simulated second, after warm-up.
    pub bytes_per_node_per_s: f64,
}

/// The result of a gossip run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct GossipReport {
    /// Nodes simulated.
    pub nodes: usize,
    /// The seed that replays this run.
    pub seed: u64,
    /// Simulated seconds.
    pub duration_s: f64,
    /// Packet loss.
    pub loss: f64,
    /// Share of slow nodes.
    pub slow_fraction: f64,
    /// Protocol preset.
    pub preset: Preset,
    /// Detection time of crashes.
    pub detection: Detection,
    /// False positives.
    pub false_positives: FalsePositives,
    /// Restarts of crashed nodes.
    pub rejoin: Rejoin,
    /// The partition.
    pub partition: PartitionFigures,
    /// Views at the end.
    pub views: Views,
    /// Message cost.
    pub messages: Messages,
    /// Simulator events processed.
    pub events: u64,
    /// Wall-clock seconds the run took.
    pub wall_time_s: f64,
}

impl std::fmt::Display for GossipReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = &self.detection;
        let fp = &self.false_positives;
        writeln!(
            f,
            "gossip: {} nodes, {:?} preset, seed {}, {:.0} s simulated, loss {:.1}%, slow {:.1}%",
            self.nodes,
            self.preset,
            self.seed,
            self.duration_s,
            self.loss * 100.0,
            self.slow_fraction * 100.0
        )?;
        writeln!(f, "{:<40} {:>12}", "figure", "value")?;
        let rj = &self.rejoin;
        let pt = &self.partition;
        let mut rows: Vec<(&str, String)> = vec![
            ("crashes detected", format!("{}/{}", d.detected, d.crashes)),
            (
                "detection, all nodes, median (s)",
                format!("{:.2}", d.median_s),
            ),
            ("detection, all nodes, max (s)", format!("{:.2}", d.max_s)),
            (
                "detection, first node, median (s)",
                format!("{:.2}", d.first_median_s),
            ),
            ("false positives (dead declarations)", fp.count.to_string()),
            ("false positives (distinct members)", fp.members.to_string()),
            ("suspicions of live members", fp.suspicions.to_string()),
            ("refutations", fp.refutations.to_string()),
        ];
        if rj.restarts > 0 {
            rows.push((
                "restarts rejoined",
                format!("{}/{}", rj.rejoined, rj.restarts),
            ));
            rows.push((
                "rejoin, all nodes, median (s)",
                format!("{:.2}", rj.median_s),
            ));
            rows.push(("rejoin, all nodes, max (s)", format!("{:.2}", rj.max_s)));
        }
        if pt.duration_s > 0.0 {
            rows.push(("partition (s)", format!("{:.0}", pt.duration_s)));
            rows.push((
                "dead declarations across the cut",
                pt.dead_across.to_string(),
            ));
            rows.push(("partition healed after (s)", format!("{:.0}", pt.heal_s)));
        }
        rows.push((
            "stale views at the end",
            format!("{}/{}", self.views.stale, self.views.pairs_checked),
        ));
        rows.push((
            "messages / node / s",
            format!("{:.2}", self.messages.per_node_per_s),
        ));
        rows.push((
            "bytes / node / s",
            format!("{:.0}", self.messages.bytes_per_node_per_s),
        ));
        for (k, v) in rows {
            writeln!(f, "{k:<40} {v:>12}")?;
        }
        write!(
            f,
            "{} events in {:.1} s of wall time",
            self.events, self.wall_time_s
        )
    }
}

/// Something the experiment does to the cluster at a given time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    /// Crash number `c` happens.
    Crash(usize),
    /// The victim of crash `c` restarts.
    Restart(usize),
    /// The halves are cut apart.
    Cut,
    /// The cut heals.
    Heal,
}

/// Runs a gossip experiment; `progress` is called every simulated 10 s.
pub fn run_gossip(
    opts: &GossipOpts,
    progress: &mut dyn FnMut(Progress),
) -> Result<GossipReport, SimError> {
    // Wall time is reported, never used by the simulation.
    let wall = Instant::now();
    let n = opts.nodes.max(2);
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let matrix = match &opts.matrix {
        Some(p) => LatencyMatrix::load(p)?,
        None => match opts.preset {
            Preset::Lan => LatencyMatrix::generate_region(490, opts.seed),
            Preset::Wan => LatencyMatrix::generate(490, opts.seed),
        },
    };
    let placement = Placement::new(n, matrix.hosts(), opts.jitter_ms, opts.seed);
    let latency = Latency {
        slices: vec![matrix],
        slice_period: Duration::ZERO,
        placement,
    };
    let ids: Vec<_> = (0..n).map(node_id).collect();
    let mut net = Network::new(ids.clone(), latency, opts.seed);
    net.loss = opts.loss.clamp(0.0, 1.0);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    let slow_count = ((n as f64) * opts.slow_fraction.clamp(0.0, 1.0)).round() as usize;
    for &i in &order[..slow_count] {
        net.slow[i] = opts.slow_delay;
    }
    // Crash victims are drawn from all nodes, slow ones included.
    let crashes = opts.crashes.min(n - 2);
    let victims: Vec<usize> = {
        let mut v: Vec<usize> = (0..n).collect();
        v.shuffle(&mut rng);
        v.truncate(crashes);
        v
    };
    // SWIM alone: P-Grid's exchanges would add their own packets to the
    // figures this measures.
    let mut config = Config::preset(opts.preset);
    config.pgrid_exchange_interval = None;
    config.trust_epoch = None;
    let mut sink = |_: Duration, _: usize, _: Event| {};
    for i in 0..n {
        let seed = rng.r#gen();
        let now = net.now();
        let node = net.start(i, config.clone(), seed);
        if !opts.cold_join {
            node.restore_formed(now, &ids);
        } else if i > 0 {
            node.join(now, &[ids[rng.gen_range(0..i)]]);
        }
        net.flush(i, &mut sink);
    }

    let end = opts.duration.max(opts.warmup + Duration::from_secs(1));
    let last_crash = opts.warmup.max(end.mul_f64(0.6));
    let crash_times: Vec<Duration> = (0..crashes)
        .map(|k| {
            if crashes == 1 {
                opts.warmup
            } else {
                opts.warmup + (last_crash - opts.warmup).mul_f64(k as f64 / (crashes - 1) as f64)
            }
        })
        .collect();
    let mut actions: Vec<(Duration, Action)> = Vec::new();
    for (c, &tc) in crash_times.iter().enumerate() {
        actions.push((tc, Action::Crash(c)));
        if let Some(after) = opts.restart_after
            && tc + after < end
        {
            actions.push((tc + after, Action::Restart(c)));
        }
    }
    let cut = opts.partition.map(|d| {
        let from = (end / 2).max(opts.warmup);
        (from, (from + d).min(end))
    });
    if let Some((from, to)) = cut {
        actions.push((from, Action::Cut));
        actions.push((to, Action::Heal));
    }
    actions.sort();
    // The two sides of the cut: by index, so each half has its share of
    // slow nodes and victims.
    let side = |i: usize| u8::from(i >= n / 2);

    // crashed_at[i]: when node i crashed (None while it runs).
    // dead_seen[c][observer]: when the observer marked crash c's victim
    // dead. back_seen[c][observer]: when it saw it alive again after its
    // restart.
    let mut crashed_at: Vec<Option<Duration>> = vec![None; n];
    let mut restarted_at: Vec<Option<Duration>> = vec![None; crashes];
    let mut dead_seen: Vec<Vec<Option<Duration>>> = vec![vec![None; n]; crashes];
    let mut back_seen: Vec<Vec<Option<Duration>>> = vec![vec![None; n]; crashes];
    let victim_crash: std::collections::HashMap<usize, usize> =
        victims.iter().enumerate().map(|(c, &v)| (v, c)).collect();
    let mut fp_count = 0u64;
    let mut fp_members = std::collections::BTreeSet::new();
    let mut suspicions = 0u64;
    let mut refutations = 0u64;
    let mut dead_across = 0u64;
    // Dead declarations across the cut are expected while it lasts, and
    // after the heal for as long as a suspicion raised during it can run
    // (the maximum suspicion timeout) plus time for the news to spread.
    let suspicion_max =
        crate::overlay::suspicion::min_timeout(config.suspicion_mult, n, config.probe_interval)
            * config.suspicion_max_timeout_mult;
    let across_window = cut.map(|(from, to)| (from, to + suspicion_max + Duration::from_secs(30)));
    let mut events = 0u64;
    let mut traffic_at_warmup = None;
    let mut healed_at: Option<Duration> = None;
    let mut heal_took: Option<Duration> = None;
    let track_views = (opts.restart_after.is_some() || cut.is_some()) && n <= 2000;

    let step = Duration::from_secs(10);
    let mut t = Duration::ZERO;
    let mut next_action = 0;
    while t < end {
        let mut until = (t + step).min(end);
        if let Some(&(at, _)) = actions.get(next_action) {
            until = until.min(at);
        }
        if traffic_at_warmup.is_none() && until >= opts.warmup {
            until = opts.warmup;
        }
        events += net.run_until(until, &mut |at, observer, e| {
            let Event::Membership(m) = e else {
                return;
            };
            match m {
                MembershipEvent::Failed { id } | MembershipEvent::Left { id } => {
                    let Some(subject) = net_index(&ids, id) else {
                        return;
                    };
                    let crash = victim_crash.get(&subject).copied();
                    match (crashed_at[subject], crash) {
                        (Some(_), Some(c)) => {
                            dead_seen[c][observer].get_or_insert(at);
                        }
                        // A restarted node, declared dead by an observer
                        // that had not yet declared its previous life
                        // dead: that is the crash's detection, late.
                        (None, Some(c))
                            if restarted_at[c].is_some() && dead_seen[c][observer].is_none() =>
                        {
                            dead_seen[c][observer] = Some(at);
                        }
                        _ if across_window.is_some_and(|(a, b)| a <= at && at <= b)
                            && side(subject) != side(observer) =>
                        {
                            dead_across += 1
                        }
                        _ => {
                            fp_count += 1;
                            fp_members.insert(subject);
                        }
                    }
                }
                MembershipEvent::Joined { id } => {
                    if let Some(subject) = net_index(&ids, id)
                        && let Some(&c) = victim_crash.get(&subject)
                        && restarted_at[c].is_some()
                        && crashed_at[subject].is_none()
                    {
                        back_seen[c][observer].get_or_insert(at);
                    }
                }
                MembershipEvent::Suspected { id }
                    if net_index(&ids, id).is_some_and(|s| crashed_at[s].is_none()) =>
                {
                    suspicions += 1;
                }
                MembershipEvent::SelfRefuted { .. } => refutations += 1,
                _ => {}
            }
        });
        t = until;
        if traffic_at_warmup.is_none() && t >= opts.warmup {
            traffic_at_warmup = Some(net.traffic);
        }
        while let Some(&(at, action)) = actions.get(next_action) {
            if at > t {
                break;
            }
            next_action += 1;
            match action {
                Action::Crash(c) => {
                    let v = victims[c];
                    net.crash(v);
                    crashed_at[v] = Some(t);
                }
                Action::Restart(c) => {
                    let v = victims[c];
                    let seed = rng.r#gen();
                    let live: Vec<usize> = (0..n)
                        .filter(|&i| crashed_at[i].is_none() && i != v)
                        .collect();
                    let now = net.now();
                    let through = ids[live[rng.gen_range(0..live.len())]];
                    net.start(v, config.clone(), seed).join(now, &[through]);
                    net.flush(v, &mut sink);
                    crashed_at[v] = None;
                    restarted_at[c] = Some(t);
                }
                Action::Cut => {
                    for i in 0..n {
                        net.group[i] = side(i);
                    }
                }
                Action::Heal => {
                    net.group.fill(0);
                    healed_at = Some(t);
                }
            }
        }
        if track_views
            && let Some(h) = healed_at
            && heal_took.is_none()
            && stale_views(&net, &crashed_at, &mut rng).1 == 0
        {
            heal_took = Some(t - h);
        }
        progress(Progress {
            simulated: t,
            total: end,
            events,
        });
    }

    if net.decode_errors > 0 {
        return Err(SimError::UndecodablePackets {
            seed: opts.seed,
            count: net.decode_errors,
        });
    }

    // Detection: over observers alive at the end.
    let mut all = Vec::new();
    let mut first = Vec::new();
    let mut rejoin = Vec::new();
    for (c, &v) in victims.iter().enumerate() {
        // Every crash happens: crash times end at 60% of the run.
        let tc = crash_times[c];
        let mut worst = Duration::ZERO;
        let mut earliest: Option<Duration> = None;
        let mut complete = true;
        let mut back_worst = Duration::ZERO;
        let mut back_complete = true;
        for (o, seen) in dead_seen[c].iter().enumerate() {
            if crashed_at[o].is_some() || o == v {
                continue;
            }
            match seen {
                Some(at) => {
                    worst = worst.max(*at - tc);
                    earliest = Some(earliest.map_or(*at - tc, |e| e.min(*at - tc)));
                    if let Some(r) = restarted_at[c] {
                        match back_seen[c][o] {
                            Some(b) => back_worst = back_worst.max(b.saturating_sub(r)),
                            None => back_complete = false,
                        }
                    }
                }
                None => complete = false,
            }
        }
        if complete {
            all.push(worst.as_secs_f64());
        }
        if let Some(e) = earliest {
            first.push(e.as_secs_f64());
        }
        if restarted_at[c].is_some() && back_complete {
            rejoin.push(back_worst.as_secs_f64());
        }
    }
    let (pairs_checked, stale) = stale_views(&net, &crashed_at, &mut rng);
    let live = crashed_at.iter().filter(|c| c.is_none()).count().max(1);
    let base = traffic_at_warmup.unwrap_or_default();
    let secs = (end - opts.warmup.min(end)).as_secs_f64().max(1e-9);
    let packets = (net.traffic.packets - base.packets) as f64;
    let bytes = (net.traffic.bytes - base.bytes) as f64;
    let all_sorted = sorted(all);
    let rejoin_sorted = sorted(rejoin);
    Ok(GossipReport {
        nodes: n,
        seed: opts.seed,
        duration_s: end.as_secs_f64(),
        loss: opts.loss,
        slow_fraction: opts.slow_fraction,
        preset: opts.preset,
        detection: Detection {
            crashes,
            detected: all_sorted.len(),
            median_s: percentile(&all_sorted, 0.5),
            max_s: all_sorted.last().copied().unwrap_or(f64::NAN),
            first_median_s: percentile(&sorted(first), 0.5),
        },
        false_positives: FalsePositives {
            count: fp_count,
            members: fp_members.len(),
            suspicions,
            refutations,
        },
        rejoin: Rejoin {
            restarts: restarted_at.iter().filter(|r| r.is_some()).count(),
            rejoined: rejoin_sorted.len(),
            median_s: percentile(&rejoin_sorted, 0.5),
            max_s: rejoin_sorted.last().copied().unwrap_or(f64::NAN),
        },
        partition: PartitionFigures {
            duration_s: cut.map_or(0.0, |(a, b)| (b - a).as_secs_f64()),
            dead_across,
            heal_s: heal_took.map_or(f64::NAN, |d| d.as_secs_f64()),
        },
        views: Views {
            pairs_checked,
            stale,
        },
        messages: Messages {
            per_node_per_s: packets / live as f64 / secs,
            bytes_per_node_per_s: bytes / live as f64 / secs,
        },
        events,
        wall_time_s: wall.elapsed().as_secs_f64(),
    })
}

/// Pairs of live nodes checked, and those where the observer does not hold
/// the subject as alive or suspect: all pairs up to 2,000 nodes, else a
/// random million.
fn stale_views(net: &Network, crashed_at: &[Option<Duration>], rng: &mut ChaCha8Rng) -> (u64, u64) {
    let n = net.len();
    let live: Vec<usize> = (0..n).filter(|&i| crashed_at[i].is_none()).collect();
    let mut checked = 0u64;
    let mut stale = 0u64;
    let mut check = |o: usize, s: usize| {
        if let Some(node) = net.node(o) {
            checked += 1;
            let ok = node
                .member(net.id(s))
                .is_some_and(|(state, _)| state.is_live());
            stale += u64::from(!ok);
        }
    };
    if n <= 2000 {
        for &o in &live {
            for &s in &live {
                if o != s {
                    check(o, s);
                }
            }
        }
    } else if live.len() >= 2 {
        for _ in 0..1_000_000 {
            let o = live[rng.gen_range(0..live.len())];
            let s = live[rng.gen_range(0..live.len())];
            if o != s {
                check(o, s);
            }
        }
    }
    (checked, stale)
}

fn net_index(ids: &[crate::overlay::NodeId], id: crate::overlay::NodeId) -> Option<usize> {
    // Ids are generated in ascending order of index (see `node_id`).
    ids.binary_search(&id).ok()
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}
