//! `gridedge sim …`: the simulator's command line.
//!
//! The binary's `Command::Sim` carries a [`SimCommand`] and hands it to
//! [`run`], which resolves the raw flags into [`GossipOpts`] or
//! [`CoordsOpts`] once (as ripgrep resolves its flags), runs the experiment,
//! shows progress on stderr at most once a second of wall time, and prints
//! the report on stdout: a table, or with `--json` one JSON object whose
//! keys name each system and figure (`vivaldi.median_relative_error`,
//! `detection.median_s`, …).
//!
//! A run that breaks an invariant of the core, or panics, fails with an
//! error that names the seed replaying it.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::pgrid::{PGridOpts, PGridReport, run_pgrid};
use super::trust::{Adversary, TrustOpts, TrustReport, run_trust};
use super::{
    CoordsOpts, CoordsReport, GossipOpts, GossipReport, Progress, SimError, run_coords, run_gossip,
};
use crate::overlay::Preset;

/// The matrix `sim coords` reads when `--matrix` is not given: the
/// PlanetLab 490 median matrix kept with the tests, relative to the
/// repository root.
pub const DEFAULT_MATRIX: &str = "tests/data/latency/planetlab490-median-ms.txt";

/// `gridedge sim …`: run an experiment of the deterministic simulator.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum SimCommand {
    /// SWIM/Lifeguard at scale: detection time of crashes, false positives
    /// and messages per node per second.
    Gossip(GossipArgs),
    /// Vivaldi and Pharos coordinates against a measured RTT matrix.
    Coords(CoordsArgs),
    /// P-Grid: trie construction, lookup hops and success (also after a
    /// crash of many peers), proximity stretch, load balance under skewed
    /// keys, hop caching, prefix queries.
    Pgrid(PGridArgs),
    /// Reputation against malicious peers: PowerTrust, EigenTrust and no
    /// reputation side by side, for each kind of adversary.
    Trust(TrustArgs),
}

/// Flags of `gridedge sim trust`.
#[derive(Clone, Debug, clap::Args)]
pub struct TrustArgs {
    /// Number of peers.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(20..=1_000_000))]
    pub nodes: u32,
    /// Share of malicious peers, 0 to 0.9.
    #[arg(long, default_value_t = 0.3, value_parser = parse_fraction)]
    pub malicious: f64,
    /// Seed of everything random; the same seed replays the run.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Adversary kinds to run, one scenario each (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub kind: Vec<Adversary>,
    /// Holders per object.
    #[arg(long, default_value_t = 8)]
    pub holders: usize,
    /// Fetches per peer per simulated minute.
    #[arg(long, default_value_t = 2)]
    pub fetches_per_minute: usize,
    /// Simulated minutes of warm-up (traitors turn at its end).
    #[arg(long, default_value_t = 30)]
    pub warmup_min: u64,
    /// Simulated minutes measured after the warm-up.
    #[arg(long, default_value_t = 30)]
    pub measure_min: u64,
    /// Simulated minutes between aggregations of the global scores.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1440))]
    pub epoch_min: u64,
    /// Print the figures as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl TrustArgs {
    /// The experiment's options.
    pub fn opts(&self) -> TrustOpts {
        let mut o = TrustOpts::new(self.nodes as usize, self.seed);
        o.malicious = self.malicious.min(0.9);
        if !self.kind.is_empty() {
            o.kinds = self.kind.clone();
        }
        o.holders = self.holders.max(1);
        o.fetches_per_minute = self.fetches_per_minute;
        o.warmup_min = self.warmup_min;
        o.measure_min = self.measure_min;
        o.epoch_min = self.epoch_min;
        o
    }
}

/// Flags of `gridedge sim pgrid`.
#[derive(Clone, Debug, clap::Args)]
pub struct PGridArgs {
    /// Number of peers.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(2..=1_000_000))]
    pub nodes: u32,
    /// Seed of everything random; the same seed replays the run.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// RTT matrix in milliseconds; peers beyond its hosts are placed on
    /// them with jitter.
    #[arg(long, default_value = DEFAULT_MATRIX)]
    pub matrix: PathBuf,
    /// Keys stored; default 20 per peer.
    #[arg(long)]
    pub keys: Option<usize>,
    /// Zipf exponent of key clusters and of get popularity.
    #[arg(long, default_value_t = 1.0)]
    pub zipf: f64,
    /// Share of peers crashed for the success-after-crash figure.
    #[arg(long, default_value_t = 0.2, value_parser = parse_fraction)]
    pub churn: f64,
    /// Lookups per figure.
    #[arg(long, default_value_t = 10_000)]
    pub lookups: usize,
    /// Replicas wanted per leaf (sets each peer's storage share).
    #[arg(long, default_value_t = 8)]
    pub replicas: usize,
    /// References per level (refmax): 8 keep lookups above 99% right
    /// after 20% of peers crash, 4 do not at 10,000 peers.
    #[arg(long, default_value_t = 8)]
    pub refmax: usize,
    /// Longest path (maxl), at most 64.
    #[arg(long, default_value_t = 48, value_parser = clap::value_parser!(u8).range(1..=64))]
    pub maxl: u8,
    /// Recursion depth of exchanges (recmax).
    #[arg(long, default_value_t = 2)]
    pub recmax: u8,
    /// Entries in each peer's hop cache.
    #[arg(long, default_value_t = 64)]
    pub cache_entries: usize,
    /// Print the figures as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl PGridArgs {
    /// The experiment's options.
    pub fn opts(&self) -> PGridOpts {
        let mut o = PGridOpts::new(self.nodes as usize, self.seed);
        o.matrix = Some(self.matrix.clone());
        if let Some(keys) = self.keys {
            o.keys = keys;
        }
        o.zipf = self.zipf;
        o.churn = self.churn;
        o.lookups = self.lookups;
        o.replicas = self.replicas;
        o.refmax = self.refmax;
        o.maxl = self.maxl;
        o.recmax = self.recmax;
        o.cache_entries = self.cache_entries;
        o
    }
}

/// Protocol presets, as flag values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PresetArg {
    /// Data-centre constants (1 s probes, 0.5 s probe timeout).
    Lan,
    /// Internet constants (5 s probes, 3 s probe timeout).
    Wan,
}

impl From<PresetArg> for Preset {
    fn from(p: PresetArg) -> Self {
        match p {
            PresetArg::Lan => Preset::Lan,
            PresetArg::Wan => Preset::Wan,
        }
    }
}

/// Flags of `gridedge sim gossip`.
#[derive(Clone, Debug, clap::Args)]
pub struct GossipArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(2..=1_000_000))]
    pub nodes: u32,
    /// Seed of everything random; the same seed replays the run.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Probability that any packet is lost, 0 to 1.
    #[arg(long, default_value_t = 0.05, value_parser = parse_fraction)]
    pub loss: f64,
    /// Share of slow nodes, 0 to 1.
    #[arg(long, alias = "slow-fraction", default_value_t = 0.10, value_parser = parse_fraction)]
    pub slow: f64,
    /// A slow node handles each packet and timer late by up to this many
    /// milliseconds.
    #[arg(long, default_value_t = 500)]
    pub slow_delay_ms: u64,
    /// Simulated minutes, warm-up included.
    #[arg(long, default_value_t = 10.0, value_parser = parse_minutes)]
    pub minutes: f64,
    /// Simulated seconds before the first crash.
    #[arg(long, default_value_t = 60)]
    pub warmup_s: u64,
    /// Nodes crashed, evenly spaced between the warm-up and 60% of the run.
    #[arg(long, default_value_t = 5)]
    pub crashes: usize,
    /// Crashed nodes restart (empty, rejoining through one live node) this
    /// many simulated seconds after they crash; 0 keeps them down.
    #[arg(long, default_value_t = 0)]
    pub restart_after_s: u64,
    /// Cut the cluster in two halves for this many simulated seconds,
    /// starting halfway through the run; 0 for no partition.
    #[arg(long, default_value_t = 0)]
    pub partition_s: u64,
    /// Protocol constants.
    #[arg(long, value_enum, default_value_t = PresetArg::Lan)]
    pub preset: PresetArg,
    /// RTT matrix in milliseconds (whitespace separated, square); without
    /// it, 490 generated hosts of the network the preset is made for: a
    /// region (RTTs up to 25 ms) for lan, five continents for wan.
    #[arg(long)]
    pub matrix: Option<PathBuf>,
    /// Access delay range added per node when nodes outnumber the matrix's
    /// hosts, milliseconds.
    #[arg(long, default_value_t = 5.0)]
    pub jitter_ms: f64,
    /// Start by joining every node through an earlier one (push-pull)
    /// instead of from a formed member table; O(N^2) at start.
    #[arg(long)]
    pub cold_join: bool,
    /// Print the figures as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `gridedge sim coords`.
#[derive(Clone, Debug, clap::Args)]
pub struct CoordsArgs {
    /// The truth: a square RTT matrix in milliseconds.
    #[arg(long, default_value = DEFAULT_MATRIX)]
    pub matrix: PathBuf,
    /// A directory of time slices (`<name>_<t>` files of the matrix's size)
    /// replayed in order as the network's drifting delays.
    #[arg(long)]
    pub slices: Option<PathBuf>,
    /// Seed of everything random; the same seed replays the run.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Number of nodes; default one per host of the matrix.
    #[arg(long, value_parser = clap::value_parser!(u32).range(2..=1_000_000))]
    pub nodes: Option<u32>,
    /// Simulated minutes.
    #[arg(long, default_value_t = 30.0, value_parser = parse_minutes)]
    pub minutes: f64,
    /// SWIM probe interval, hence one RTT sample per node per interval.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub probe_interval_ms: u64,
    /// Pharos anchors (clusters); 0 disables Pharos.
    #[arg(long, default_value_t = 8)]
    pub landmarks: usize,
    /// Access delay range added per node when nodes outnumber hosts,
    /// milliseconds.
    #[arg(long, default_value_t = 2.0)]
    pub jitter_ms: f64,
    /// Probability that any packet is lost, 0 to 1.
    #[arg(long, default_value_t = 0.0, value_parser = parse_fraction)]
    pub loss: f64,
    /// Nearest-of-8 trials per node.
    #[arg(long, default_value_t = 50)]
    pub picks: usize,
    /// Print the figures as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Errors of `gridedge sim`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimCliError {
    /// The experiment failed: the operator's matrix, or a broken invariant
    /// of the core (whose message names the seed).
    #[error(transparent)]
    Sim(#[from] SimError),
    /// The simulation panicked: a bug in the core or the simulator.
    #[error("simulation panicked (replay with --seed {seed}): {message}")]
    Panicked {
        /// The seed that replays the run.
        seed: u64,
        /// The panic message.
        message: String,
    },
    /// The report could not be written to stdout.
    #[error("writing the report: {0}")]
    Output(#[from] std::io::Error),
    /// The report could not be serialised.
    #[error("serialising the report: {0}")]
    Json(#[from] serde_json::Error),
}

impl GossipArgs {
    /// The experiment's options.
    pub fn opts(&self) -> GossipOpts {
        GossipOpts {
            nodes: self.nodes as usize,
            seed: self.seed,
            duration: Duration::from_secs_f64(self.minutes * 60.0),
            warmup: Duration::from_secs(self.warmup_s),
            loss: self.loss,
            slow_fraction: self.slow,
            slow_delay: Duration::from_millis(self.slow_delay_ms),
            crashes: self.crashes,
            restart_after: (self.restart_after_s > 0)
                .then(|| Duration::from_secs(self.restart_after_s)),
            partition: (self.partition_s > 0).then(|| Duration::from_secs(self.partition_s)),
            preset: self.preset.into(),
            matrix: self.matrix.clone(),
            jitter_ms: self.jitter_ms,
            cold_join: self.cold_join,
        }
    }
}

impl CoordsArgs {
    /// The experiment's options.
    pub fn opts(&self) -> CoordsOpts {
        let mut o = CoordsOpts::new(self.matrix.clone());
        o.slices = self.slices.clone();
        o.seed = self.seed;
        o.nodes = self.nodes.map(|n| n as usize);
        o.duration = Duration::from_secs_f64(self.minutes * 60.0);
        o.probe_interval = Duration::from_millis(self.probe_interval_ms);
        o.landmarks = self.landmarks;
        o.jitter_ms = self.jitter_ms;
        o.loss = self.loss;
        o.picks = self.picks;
        o
    }
}

/// Runs `cmd`: progress on stderr, the report on stdout.
pub fn run(cmd: SimCommand) -> Result<(), SimCliError> {
    let mut ticker = ProgressLine::new();
    let stdout = std::io::stdout();
    match cmd {
        SimCommand::Gossip(args) => {
            let opts = args.opts();
            let report = guarded(opts.seed, || run_gossip(&opts, &mut |p| ticker.show(p)));
            ticker.finish();
            print_report::<GossipReport>(&mut stdout.lock(), &report?, args.json)
        }
        SimCommand::Coords(args) => {
            let opts = args.opts();
            let report = guarded(opts.seed, || run_coords(&opts, &mut |p| ticker.show(p)));
            ticker.finish();
            print_report::<CoordsReport>(&mut stdout.lock(), &report?, args.json)
        }
        SimCommand::Pgrid(args) => {
            let opts = args.opts();
            let report = guarded(opts.seed, || {
                run_pgrid(&opts, &mut |phase| eprintln!("sim pgrid: {phase}"))
            });
            print_report::<PGridReport>(&mut stdout.lock(), &report?, args.json)
        }
        SimCommand::Trust(args) => {
            let opts = args.opts();
            let report = guarded(opts.seed, || {
                run_trust(&opts, &mut |phase| eprintln!("sim trust: {phase}"))
            });
            print_report::<TrustReport>(&mut stdout.lock(), &report?, args.json)
        }
    }
}

/// Runs `f`, turning a panic into an error that names the seed.
fn guarded<R>(seed: u64, f: impl FnOnce() -> Result<R, SimError>) -> Result<R, SimCliError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => Ok(r?),
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".to_owned());
            Err(SimCliError::Panicked { seed, message })
        }
    }
}

fn print_report<R: std::fmt::Display + serde::Serialize>(
    out: &mut dyn Write,
    report: &R,
    json: bool,
) -> Result<(), SimCliError> {
    if json {
        serde_json::to_writer_pretty(&mut *out, report)?;
        writeln!(out)?;
    } else {
        writeln!(out, "{report}")?;
    }
    Ok(())
}

/// The progress line on stderr: at most once a second of wall time, over
/// itself (`\r`) on a terminal, one line each otherwise.
struct ProgressLine {
    // The CLI is a driver: reading the wall clock here is fine, the
    // simulation never sees it.
    started: Instant,
    last: Option<Instant>,
    terminal: bool,
    shown: bool,
}

/// Wall time between two progress lines.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

impl ProgressLine {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            last: None,
            terminal: std::io::stderr().is_terminal(),
            shown: false,
        }
    }

    fn show(&mut self, p: Progress) {
        let now = Instant::now();
        // Nothing for runs that finish within the first second.
        let due = match self.last {
            None => now.duration_since(self.started) >= PROGRESS_EVERY,
            Some(last) => now.duration_since(last) >= PROGRESS_EVERY,
        };
        if !due {
            return;
        }
        self.last = Some(now);
        self.shown = true;
        let line = progress_text(p, now.duration_since(self.started));
        let mut err = std::io::stderr().lock();
        // A failed write to stderr must not stop the simulation.
        let _ = if self.terminal {
            write!(err, "\r{line}\x1b[K")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
    }

    fn finish(&mut self) {
        if self.terminal && self.shown {
            let _ = writeln!(std::io::stderr());
        }
    }
}

fn progress_text(p: Progress, wall: Duration) -> String {
    let share = if p.total.is_zero() {
        1.0
    } else {
        p.simulated.as_secs_f64() / p.total.as_secs_f64()
    };
    format!(
        "simulated {:.0}/{:.0} s ({:.0}%), {} events, {:.0} s of wall time",
        p.simulated.as_secs_f64(),
        p.total.as_secs_f64(),
        share * 100.0,
        p.events,
        wall.as_secs_f64()
    )
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not between 0 and 1"))
    }
}

fn parse_minutes(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    // A week of simulated time is far beyond any experiment; the bound
    // keeps Duration arithmetic finite.
    if v > 0.0 && v <= 7.0 * 24.0 * 60.0 {
        Ok(v)
    } else {
        Err(format!("{v} minutes is not in (0, 10080]"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct T {
        #[command(subcommand)]
        c: SimCommand,
    }

    fn parse(args: &[&str]) -> Result<SimCommand, clap::Error> {
        T::try_parse_from(std::iter::once("sim").chain(args.iter().copied())).map(|t| t.c)
    }

    #[test]
    fn trust_flags() {
        let SimCommand::Trust(t) = parse(&[
            "trust",
            "--nodes",
            "10000",
            "--malicious",
            "0.2",
            "--kind",
            "liar,collude",
            "--json",
        ])
        .unwrap() else {
            panic!("not trust");
        };
        let o = t.opts();
        assert_eq!(o.nodes, 10_000);
        assert_eq!(o.malicious, 0.2);
        assert_eq!(o.kinds, vec![Adversary::Liar, Adversary::Collude]);
        assert!(t.json);
        assert!(parse(&["trust", "--malicious", "1.5"]).is_err());
    }

    #[test]
    fn gossip_flags() {
        let SimCommand::Gossip(g) = parse(&[
            "gossip",
            "--nodes",
            "1000",
            "--seed",
            "7",
            "--loss",
            "0.05",
            "--slow",
            "0.1",
            "--minutes",
            "10",
            "--preset",
            "wan",
            "--json",
        ])
        .unwrap() else {
            panic!("not gossip");
        };
        let o = g.opts();
        assert_eq!(o.nodes, 1000);
        assert_eq!(o.seed, 7);
        assert_eq!(o.loss, 0.05);
        assert_eq!(o.slow_fraction, 0.1);
        assert_eq!(o.duration, Duration::from_secs(600));
        assert_eq!(o.preset, Preset::Wan);
        assert!(g.json);
        assert!(o.restart_after.is_none() && o.partition.is_none());
        assert!(parse(&["gossip", "--loss", "1.5"]).is_err());
        assert!(parse(&["gossip", "--nodes", "1"]).is_err());
        assert!(parse(&["gossip", "--preset", "moon"]).is_err());
        assert!(parse(&["gossip", "--minutes", "0"]).is_err());
    }

    #[test]
    fn coords_flags_and_defaults() {
        let SimCommand::Coords(c) = parse(&["coords", "--seed", "3"]).unwrap() else {
            panic!("not coords");
        };
        let o = c.opts();
        assert_eq!(o.matrix, PathBuf::from(DEFAULT_MATRIX));
        assert_eq!(o.seed, 3);
        assert_eq!(o.nodes, None);
        assert!(!c.json);
        let SimCommand::Coords(c) = parse(&[
            "coords",
            "--matrix",
            "m.txt",
            "--nodes",
            "50",
            "--minutes",
            "1.5",
            "--json",
        ])
        .unwrap() else {
            panic!("not coords");
        };
        let o = c.opts();
        assert_eq!(o.matrix, PathBuf::from("m.txt"));
        assert_eq!(o.nodes, Some(50));
        assert_eq!(o.duration, Duration::from_secs(90));
        assert!(c.json);
    }

    #[test]
    fn json_keys_name_system_and_figure() {
        let g = GossipArgs {
            nodes: 10,
            seed: 5,
            loss: 0.0,
            slow: 0.0,
            slow_delay_ms: 0,
            minutes: 1.0,
            warmup_s: 20,
            crashes: 1,
            restart_after_s: 0,
            partition_s: 0,
            preset: PresetArg::Lan,
            matrix: None,
            jitter_ms: 1.0,
            cold_join: false,
            json: true,
        };
        let r = guarded(5, || run_gossip(&g.opts(), &mut |_| {})).unwrap();
        let mut out = Vec::new();
        print_report(&mut out, &r, true).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert!(v["detection"]["median_s"].is_number(), "{v}");
        assert!(v["messages"]["per_node_per_s"].is_number(), "{v}");
        assert_eq!(v["false_positives"]["count"], 0, "{v}");
        assert_eq!(v["seed"], 5);
    }

    #[test]
    fn a_panic_names_the_seed() {
        let e = guarded::<()>(42, || panic!("boom")).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("--seed 42") && text.contains("boom"),
            "{text}"
        );
    }
}
