//! Simulation tests: the real overlay core under a seeded virtual network,
//! with numeric bounds that have margin. Every failure prints the seed that
//! replays it (`GossipOpts { seed, .. }` / `CoordsOpts { seed, .. }`).
//!
//! Sizes are chosen to keep the whole file under ~30 s in a debug build on
//! two cores; the large runs are `#[ignore]`d and reported in the notes.

use std::path::PathBuf;
use std::time::Duration;

use gridedge::sim::{CoordsOpts, GossipOpts, run_coords, run_gossip};

fn seed() -> u64 {
    std::env::var("SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

fn planetlab() -> PathBuf {
    // The PlanetLab 490 median matrix (MIT licence), kept with the tests.
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/latency/planetlab490-median-ms.txt")
}

#[test]
fn gossip_detects_crashes_without_false_positives() {
    let seed = seed();
    let opts = GossipOpts {
        nodes: 40,
        seed,
        duration: Duration::from_secs(300),
        warmup: Duration::from_secs(30),
        crashes: 3,
        ..GossipOpts::default()
    };
    let r = run_gossip(&opts, &mut |_| {}).expect("generated matrix");
    let ctx = format!("replay with SIM_SEED={seed}:\n{r}");
    assert_eq!(r.detection.detected, 3, "{ctx}");
    // LAN preset, N = 40: min suspicion 4 * log10(40) * 1 s = 6.4 s, max
    // 6x that; every node must know within the max plus dissemination.
    assert!(r.detection.max_s < 60.0, "{ctx}");
    assert!(r.detection.median_s > 1.0, "{ctx}");
    assert_eq!(r.false_positives.count, 0, "{ctx}");
    // About 2 probe packets a second plus gossip; a blow-up means a storm.
    assert!(r.messages.per_node_per_s < 20.0, "{ctx}");
}

#[test]
fn gossip_is_replayable() {
    let opts = GossipOpts {
        nodes: 20,
        seed: seed(),
        duration: Duration::from_secs(90),
        warmup: Duration::from_secs(20),
        crashes: 1,
        ..GossipOpts::default()
    };
    let a = run_gossip(&opts, &mut |_| {}).unwrap();
    let b = run_gossip(&opts, &mut |_| {}).unwrap();
    assert_eq!(a.events, b.events, "seed {}", opts.seed);
    assert_eq!(
        serde_json::to_value(&a.detection).unwrap(),
        serde_json::to_value(&b.detection).unwrap(),
        "seed {}",
        opts.seed
    );
}

#[test]
fn cold_join_converges() {
    let seed = seed();
    let opts = GossipOpts {
        nodes: 30,
        seed,
        duration: Duration::from_secs(120),
        warmup: Duration::from_secs(60),
        loss: 0.0,
        slow_fraction: 0.0,
        crashes: 1,
        cold_join: true,
        ..GossipOpts::default()
    };
    let r = run_gossip(&opts, &mut |_| {}).unwrap();
    // Detection needs every live node to have learned the victim through
    // push-pull and gossip first.
    assert_eq!(r.detection.detected, 1, "replay with SIM_SEED={seed}:\n{r}");
    assert_eq!(
        r.false_positives.count, 0,
        "replay with SIM_SEED={seed}:\n{r}"
    );
}

#[test]
fn coords_on_planetlab_pharos_beats_vivaldi() {
    let matrix = planetlab();
    let seed = seed();
    let mut opts = CoordsOpts::new(matrix);
    opts.seed = seed;
    // 490 nodes for 10 simulated minutes: about 600 samples per node.
    opts.duration = Duration::from_secs(600);
    opts.picks = 10;
    let r = run_coords(&opts, &mut |_| {}).unwrap();
    let ctx = format!("replay with SIM_SEED={seed}:\n{r}");
    let (v, p) = (&r.vivaldi, &r.pharos);
    // Converged, plain Vivaldi on this matrix is near 0.09 median and
    // Pharos in 5-D near 0.065 (seeds 1 to 3); bounds leave room for the
    // shorter run and other seeds.
    assert!(v.median_relative_error < 0.15, "{ctx}");
    assert!(p.median_relative_error < 0.09, "{ctx}");
    assert!(p.p90_relative_error < 0.35, "{ctx}");
    assert!(p.median_relative_error < v.median_relative_error, "{ctx}");
    assert!(p.p90_relative_error < v.p90_relative_error, "{ctx}");
    assert!(
        p.nearest_of_8_within_10pct > v.nearest_of_8_within_10pct,
        "{ctx}"
    );
    assert!(
        p.nearest_of_8_within_10pct > r.random.nearest_of_8_within_10pct + 0.3,
        "{ctx}"
    );
}

/// The figures of the issue note: `cargo test --release -- --ignored`.
#[test]
#[ignore = "minutes of wall time; run in release for the report"]
fn coords_on_planetlab_full() {
    let matrix = planetlab();
    let seed = seed();
    let mut opts = CoordsOpts::new(matrix);
    opts.seed = seed;
    let r = run_coords(&opts, &mut |_| {}).unwrap();
    println!("{r}");
    let ctx = format!("replay with SIM_SEED={seed}:\n{r}");
    let (v, p) = (&r.vivaldi, &r.pharos);
    // The goals: at most 0.07 median and 0.30 at the 90th
    // percentile, and better than plain Vivaldi on every figure.
    assert!(p.median_relative_error <= 0.07, "{ctx}");
    assert!(p.p90_relative_error <= 0.30, "{ctx}");
    assert!(p.median_relative_error < v.median_relative_error, "{ctx}");
    assert!(p.p90_relative_error < v.p90_relative_error, "{ctx}");
    assert!(
        p.nearest_of_8_within_10pct > v.nearest_of_8_within_10pct,
        "{ctx}"
    );
}

#[test]
fn crashed_nodes_restart_and_rejoin() {
    let seed = seed();
    let opts = GossipOpts {
        nodes: 60,
        seed,
        duration: Duration::from_secs(240),
        warmup: Duration::from_secs(30),
        crashes: 3,
        restart_after: Some(Duration::from_secs(45)),
        ..GossipOpts::default()
    };
    let r = run_gossip(&opts, &mut |_| {}).unwrap();
    let ctx = format!("replay with SIM_SEED={seed}:\n{r}");
    assert_eq!(r.detection.detected, 3, "{ctx}");
    assert_eq!(r.rejoin.restarts, 3, "{ctx}");
    assert_eq!(r.rejoin.rejoined, 3, "{ctx}");
    // A restarted node learns from its join push-pull that it was declared
    // dead and refutes; its `alive` then spreads by gossip in a few rounds.
    assert!(r.rejoin.max_s < 20.0, "{ctx}");
    assert_eq!(r.false_positives.count, 0, "{ctx}");
    assert_eq!(r.views.stale, 0, "{ctx}");
}

#[test]
fn partition_longer_than_gossip_to_the_dead_heals() {
    let seed = seed();
    // LAN forgets dead members after 30 s; only reconnection (serf's) can
    // bring the halves together after a 90 s cut.
    let opts = GossipOpts {
        nodes: 60,
        seed,
        duration: Duration::from_secs(300),
        warmup: Duration::from_secs(30),
        crashes: 0,
        partition: Some(Duration::from_secs(90)),
        ..GossipOpts::default()
    };
    let r = run_gossip(&opts, &mut |_| {}).unwrap();
    let ctx = format!("replay with SIM_SEED={seed}:\n{r}");
    // Each side declares the other dead: 2 * 30 * 30 declarations at most
    // once each, and at least most of them.
    assert!(r.partition.dead_across >= 1000, "{ctx}");
    // Reconnection every 30 s: healed within a few intervals.
    assert!(r.partition.heal_s <= 120.0, "{ctx}");
    assert_eq!(r.views.stale, 0, "{ctx}");
    assert!(r.false_positives.count <= 2, "{ctx}");
}
