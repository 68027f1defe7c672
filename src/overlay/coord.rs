//! Network coordinates: Vivaldi with height, and the Pharos refinement.
//!
//! Vivaldi (Dabek et al., SIGCOMM 2004) places every node in a Euclidean
//! space plus a "height" (the access-link delay, section 5.4) so that the
//! distance between two coordinates predicts their RTT. The update rule,
//! error weighting, adjustment term and gravity follow serf's `coordinate`
//! package, which runs it in production (Ledlie et al., "Network Coordinates
//! in the Wild", NSDI 2007, for the latency filter and the adjustment).
//!
//! Pharos (Chen et al., "Pharos: accurate and decentralised network
//! coordinate system", IET Communications 2009) keeps two coordinates: a
//! global one fitted against every peer, and a local one fitted only against
//! peers of the same cluster, where short RTTs dominate and a single global
//! space fits them badly. Clusters are formed by nearest anchor (landmark).
//! [`estimate_rtt`] uses the local coordinates when both peers are in the
//! same cluster, and the global ones otherwise.
//!
//! Samples come from SWIM probe round trips and coordinates ride on acks, so
//! coordinates cost no packets of their own. Units are milliseconds.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::Rng;

use super::{NodeId, OverlayRng};

/// Dimensions of the Euclidean part of a coordinate on the wire, plus
/// height. Five: on the PlanetLab matrix (`sim coords`) Pharos in 5-D plus
/// height has a median relative error of 0.061 against 0.083 in 2-D, and
/// the nearest-of-8 pick is within 10% in 90% of picks against 85%; serf
/// uses 8. A [`VivaldiConfig::dimensions`] below this leaves the rest zero.
pub const DIM: usize = 5;

/// Largest absolute value of a coordinate component, in milliseconds.
/// Half the Earth's circumference at light speed in fibre is about 100 ms;
/// anything 1,000 times larger is a bug or a lie, and is rejected on decode.
pub const MAX_COORD_MS: f64 = 100_000.0;

/// Errors from coordinate updates.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CoordError {
    /// The RTT sample is not a positive, finite number below the maximum.
    #[error("RTT sample {rtt_ms} ms is outside (0, {max_ms}] ms")]
    AbsurdRtt {
        /// The rejected sample.
        rtt_ms: f64,
        /// The configured maximum.
        max_ms: f64,
    },
    /// The peer's coordinate is not finite or out of range.
    #[error("peer coordinate is not valid")]
    InvalidPeerCoordinate,
    /// The update produced a non-finite coordinate; it was reset.
    #[error("coordinate became invalid and was reset")]
    Reset,
}

/// Vivaldi settings (serf `coordinate.DefaultConfig`, in milliseconds).
#[derive(Clone, Debug)]
pub struct VivaldiConfig {
    /// Error estimate of a new coordinate, and its cap (serf: 1.5).
    pub error_max: f64,
    /// c_e, the weight of a new sample in the error estimate (Vivaldi 3.3).
    pub ce: f64,
    /// c_c, the fraction of the way a node moves toward its predicted
    /// position per sample (Vivaldi 3.3, "adaptive timestep").
    pub cc: f64,
    /// Samples in the adjustment term's window; 0 disables it.
    pub adjustment_window: usize,
    /// Smallest height, so two co-located nodes still predict a positive RTT.
    pub height_min_ms: f64,
    /// Samples per peer in the median latency filter (Ledlie et al. 4.1:
    /// a moving median of a few samples removes most outliers).
    pub latency_filter_size: usize,
    /// Maximum number of peers with a latency filter; least recently used
    /// is evicted.
    pub max_filter_peers: usize,
    /// ρ of the gravity toward the origin that stops drift (serf: 150 s).
    pub gravity_rho_ms: f64,
    /// Samples longer than this are discarded as absurd.
    pub max_rtt: Duration,
    /// Dimensions the coordinate moves in, at most [`DIM`]; the others stay
    /// zero. Plain Vivaldi as its paper measured it is 2 (`sim coords`
    /// compares against it).
    pub dimensions: usize,
}

impl Default for VivaldiConfig {
    fn default() -> Self {
        Self {
            error_max: 1.5,
            ce: 0.25,
            cc: 0.25,
            adjustment_window: 20,
            height_min_ms: 0.01,
            latency_filter_size: 3,
            max_filter_peers: 256,
            gravity_rho_ms: 150_000.0,
            max_rtt: Duration::from_secs(10),
            dimensions: DIM,
        }
    }
}

/// A Vivaldi coordinate: position, height, error estimate and adjustment.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Coordinate {
    /// Euclidean position, milliseconds.
    pub vec: [f64; DIM],
    /// Height: the delay of the node's access link, milliseconds.
    pub height_ms: f64,
    /// Confidence: the moving relative error of this node's predictions.
    pub error: f64,
    /// Adjustment term: the mean residual of recent samples, halved.
    pub adjustment_ms: f64,
}

impl Coordinate {
    /// A coordinate at the origin with the maximum error (no information).
    pub fn origin(config: &VivaldiConfig) -> Self {
        Self {
            vec: [0.0; DIM],
            height_ms: config.height_min_ms,
            error: config.error_max,
            adjustment_ms: 0.0,
        }
    }

    /// Whether every component is finite and in range; decode and update
    /// both check it, so a bad peer cannot poison our coordinate with NaN.
    pub fn is_valid(&self) -> bool {
        let ok = |x: f64| x.is_finite() && x.abs() <= MAX_COORD_MS;
        self.vec.iter().all(|&x| ok(x))
            && ok(self.height_ms)
            && self.height_ms >= 0.0
            && ok(self.adjustment_ms)
            && self.error.is_finite()
            && (0.0..=MAX_COORD_MS).contains(&self.error)
    }

    fn raw_distance_ms(&self, other: &Self) -> f64 {
        magnitude(&diff(&self.vec, &other.vec)) + self.height_ms + other.height_ms
    }

    /// Predicted RTT to `other`, in milliseconds.
    pub fn distance_ms(&self, other: &Self) -> f64 {
        let dist = self.raw_distance_ms(other);
        let adjusted = dist + self.adjustment_ms + other.adjustment_ms;
        // serf: the adjustment may only shrink a distance while it stays
        // positive; a negative prediction is meaningless.
        if adjusted > 0.0 { adjusted } else { dist }
    }
}

fn diff(a: &[f64; DIM], b: &[f64; DIM]) -> [f64; DIM] {
    std::array::from_fn(|i| a[i] - b[i])
}

fn magnitude(v: &[f64; DIM]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// One Vivaldi coordinate being fitted (serf's `coordinate.Client`).
#[derive(Clone, Debug)]
pub struct Vivaldi {
    coord: Coordinate,
    adjustment_samples: Vec<f64>,
    adjustment_index: usize,
}

impl Vivaldi {
    /// A fresh coordinate at the origin.
    pub fn new(config: &VivaldiConfig) -> Self {
        Self {
            coord: Coordinate::origin(config),
            adjustment_samples: vec![0.0; config.adjustment_window],
            adjustment_index: 0,
        }
    }

    /// The current coordinate.
    pub fn coordinate(&self) -> &Coordinate {
        &self.coord
    }

    /// Moves this coordinate by one RTT sample to a peer at `other`.
    pub fn update(
        &mut self,
        config: &VivaldiConfig,
        rng: &mut OverlayRng,
        other: &Coordinate,
        rtt_ms: f64,
    ) -> Result<(), CoordError> {
        if !other.is_valid() {
            return Err(CoordError::InvalidPeerCoordinate);
        }
        self.update_vivaldi(config, rng, other, rtt_ms);
        self.update_adjustment(other, rtt_ms);
        self.update_gravity(config, rng);
        if !self.coord.is_valid() {
            *self = Self::new(config);
            return Err(CoordError::Reset);
        }
        Ok(())
    }

    // Vivaldi section 3.3-3.4: the sample's weight balances our error
    // against the peer's, and the error estimate is an EWMA of relative error.
    fn update_vivaldi(
        &mut self,
        config: &VivaldiConfig,
        rng: &mut OverlayRng,
        other: &Coordinate,
        rtt_ms: f64,
    ) {
        const ZERO_MS: f64 = 1.0e-3;
        let rtt_ms = rtt_ms.max(ZERO_MS);
        let dist = self.coord.distance_ms(other);
        let wrongness = (dist - rtt_ms).abs() / rtt_ms;
        let total_error = (self.coord.error + other.error).max(1.0e-6);
        let weight = self.coord.error / total_error;
        self.coord.error =
            config.ce * weight * wrongness + self.coord.error * (1.0 - config.ce * weight);
        self.coord.error = self.coord.error.min(config.error_max);
        let force = config.cc * weight * (rtt_ms - dist);
        self.apply_force(config, rng, force, other);
    }

    fn update_adjustment(&mut self, other: &Coordinate, rtt_ms: f64) {
        let window = self.adjustment_samples.len();
        if window == 0 {
            return;
        }
        self.adjustment_samples[self.adjustment_index] = rtt_ms - self.coord.raw_distance_ms(other);
        self.adjustment_index = (self.adjustment_index + 1) % window;
        let sum: f64 = self.adjustment_samples.iter().sum();
        self.coord.adjustment_ms = sum / (2.0 * window as f64);
    }

    fn update_gravity(&mut self, config: &VivaldiConfig, rng: &mut OverlayRng) {
        let origin = Coordinate::origin(config);
        let dist = origin.distance_ms(&self.coord);
        let force = -(dist / config.gravity_rho_ms).powi(2);
        self.apply_force(config, rng, force, &origin);
    }

    // Vivaldi with height (section 5.4): the force moves the Euclidean part
    // along the unit vector and the height in proportion.
    fn apply_force(
        &mut self,
        config: &VivaldiConfig,
        rng: &mut OverlayRng,
        force: f64,
        other: &Coordinate,
    ) {
        let dims = config.dimensions.clamp(1, DIM);
        // Only the configured dimensions move; a peer that uses more of
        // them is seen by their projection.
        let mut d = diff(&self.coord.vec, &other.vec);
        d[dims..].fill(0.0);
        let mag = magnitude(&d);
        let unit: [f64; DIM] = if mag > 1.0e-6 {
            std::array::from_fn(|i| d[i] / mag)
        } else {
            // Two nodes on the same spot push apart in a random direction.
            let mut r = [0.0; DIM];
            r[..dims].fill_with(|| rng.gen_range(-0.5..0.5));
            let m = magnitude(&r).max(1.0e-9);
            std::array::from_fn(|i| r[i] / m)
        };
        for (x, u) in self.coord.vec.iter_mut().zip(unit) {
            *x += u * force;
        }
        if mag > 1.0e-6 {
            let h = self.coord.height_ms;
            self.coord.height_ms =
                ((h + other.height_ms) * force / mag + h).max(config.height_min_ms);
        }
    }
}

/// What a node tells its peers about its position: the global coordinate
/// and, under Pharos, its cluster and the coordinate inside it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PeerCoord {
    /// The coordinate fitted against every peer.
    pub global: Coordinate,
    /// The cluster (its anchor's id) and the coordinate fitted inside it.
    pub local: Option<(NodeId, Coordinate)>,
}

impl PeerCoord {
    /// Whether every coordinate in it is valid.
    pub fn is_valid(&self) -> bool {
        self.global.is_valid() && self.local.is_none_or(|(_, c)| c.is_valid())
    }
}

/// Predicted RTT between two peers, the figure peer selection ranks by.
///
/// Pharos rule: the local coordinates when both are in the same cluster,
/// the global ones otherwise.
pub fn estimate_rtt(a: &PeerCoord, b: &PeerCoord) -> Duration {
    let ms = match (a.local, b.local) {
        (Some((ca, la)), Some((cb, lb))) if ca == cb => la.distance_ms(&lb),
        _ => a.global.distance_ms(&b.global),
    };
    Duration::from_secs_f64(ms.clamp(0.0, MAX_COORD_MS) / 1000.0)
}

/// Predicted RTT using only the global (plain Vivaldi) coordinates.
pub fn estimate_rtt_global(a: &PeerCoord, b: &PeerCoord) -> Duration {
    Duration::from_secs_f64(a.global.distance_ms(&b.global).clamp(0.0, MAX_COORD_MS) / 1000.0)
}

#[derive(Clone, Debug)]
struct LatencyFilter {
    samples_ms: Vec<f64>,
    next: usize,
    last_used: u64,
}

/// A node's coordinate state: the latency filter, the global Vivaldi
/// coordinate and the Pharos cluster with its local coordinate.
#[derive(Clone, Debug)]
pub struct Coordinates {
    config: VivaldiConfig,
    self_id: NodeId,
    filters: BTreeMap<NodeId, LatencyFilter>,
    use_counter: u64,
    global: Vivaldi,
    /// Filtered RTT to each anchor, milliseconds; `None` until measured.
    landmark_rtt_ms: BTreeMap<NodeId, f64>,
    cluster: Option<NodeId>,
    local: Vivaldi,
    samples: u64,
}

impl Coordinates {
    /// Fresh state for node `self_id` with the given Pharos anchors.
    pub fn new(config: VivaldiConfig, self_id: NodeId, landmarks: &[NodeId]) -> Self {
        let landmark_rtt_ms = landmarks
            .iter()
            .map(|&l| (l, f64::INFINITY))
            .collect::<BTreeMap<_, _>>();
        // An anchor is the centre of its own cluster from the start.
        let cluster = landmark_rtt_ms.contains_key(&self_id).then_some(self_id);
        Self {
            global: Vivaldi::new(&config),
            local: Vivaldi::new(&config),
            config,
            self_id,
            filters: BTreeMap::new(),
            use_counter: 0,
            landmark_rtt_ms,
            cluster,
            samples: 0,
        }
    }

    /// What rides on our acks.
    pub fn peer_coord(&self) -> PeerCoord {
        PeerCoord {
            global: *self.global.coordinate(),
            local: self.cluster.map(|c| (c, *self.local.coordinate())),
        }
    }

    /// The cluster this node is in, if it has measured its anchors.
    pub fn cluster(&self) -> Option<NodeId> {
        self.cluster
    }

    /// Number of accepted RTT samples.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Feeds one RTT sample to `peer`, whose coordinates came on its ack.
    pub fn handle_sample(
        &mut self,
        rng: &mut OverlayRng,
        peer: NodeId,
        rtt: Duration,
        theirs: &PeerCoord,
    ) -> Result<(), CoordError> {
        let rtt_ms = rtt.as_secs_f64() * 1000.0;
        let max_ms = self.config.max_rtt.as_secs_f64() * 1000.0;
        if !(rtt_ms.is_finite() && rtt_ms > 0.0 && rtt_ms <= max_ms) {
            return Err(CoordError::AbsurdRtt { rtt_ms, max_ms });
        }
        if !theirs.is_valid() || peer == self.self_id {
            return Err(CoordError::InvalidPeerCoordinate);
        }
        let filtered_ms = self.filter(peer, rtt_ms);
        self.samples += 1;
        let result = self
            .global
            .update(&self.config, rng, &theirs.global, filtered_ms);
        if let Some(rtt) = self.landmark_rtt_ms.get_mut(&peer) {
            *rtt = filtered_ms;
            self.choose_cluster();
        }
        if let (Some(mine), Some((theirs_cluster, their_local))) = (self.cluster, theirs.local)
            && mine == theirs_cluster
        {
            self.local
                .update(&self.config, rng, &their_local, filtered_ms)?;
        }
        result
    }

    fn choose_cluster(&mut self) {
        if self.cluster == Some(self.self_id) {
            return;
        }
        let nearest = self
            .landmark_rtt_ms
            .iter()
            .filter(|(_, rtt)| rtt.is_finite())
            .min_by(|a, b| a.1.total_cmp(b.1))
            .map(|(&id, _)| id);
        if nearest != self.cluster {
            // A new cluster is a new space: the old local coordinate means
            // nothing there.
            self.cluster = nearest;
            self.local = Vivaldi::new(&self.config);
        }
    }

    // Ledlie et al. section 4.1: the median of the last few samples.
    fn filter(&mut self, peer: NodeId, rtt_ms: f64) -> f64 {
        self.use_counter += 1;
        let size = self.config.latency_filter_size.max(1);
        if !self.filters.contains_key(&peer) && self.filters.len() >= self.config.max_filter_peers {
            let lru = self
                .filters
                .iter()
                .min_by_key(|(_, f)| f.last_used)
                .map(|(&id, _)| id);
            if let Some(id) = lru {
                self.filters.remove(&id);
            }
        }
        if self.config.max_filter_peers == 0 {
            return rtt_ms;
        }
        let f = self.filters.entry(peer).or_insert_with(|| LatencyFilter {
            samples_ms: Vec::with_capacity(size),
            next: 0,
            last_used: 0,
        });
        f.last_used = self.use_counter;
        if f.samples_ms.len() < size {
            f.samples_ms.push(rtt_ms);
        } else {
            f.samples_ms[f.next] = rtt_ms;
        }
        f.next = (f.next + 1) % size;
        let mut sorted = f.samples_ms.clone();
        sorted.sort_by(f64::total_cmp);
        sorted[sorted.len() / 2]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn rng() -> OverlayRng {
        OverlayRng::seed_from_u64(7)
    }

    #[test]
    fn distance_has_heights_and_floor() {
        let cfg = VivaldiConfig::default();
        let mut a = Coordinate::origin(&cfg);
        let mut b = Coordinate::origin(&cfg);
        a.vec[0] = 3.0;
        b.vec[1] = 4.0;
        a.height_ms = 1.0;
        b.height_ms = 2.0;
        assert!((a.distance_ms(&b) - 8.0).abs() < 1e-9);
        a.adjustment_ms = -100.0;
        // A negative adjusted distance falls back to the raw one.
        assert!((a.distance_ms(&b) - 8.0).abs() < 1e-9);
    }

    #[test]
    fn absurd_samples_are_rejected() {
        let cfg = VivaldiConfig::default();
        let mut c = Coordinates::new(cfg.clone(), NodeId(1), &[]);
        let theirs = PeerCoord {
            global: Coordinate::origin(&cfg),
            local: None,
        };
        let mut r = rng();
        assert!(
            c.handle_sample(&mut r, NodeId(2), Duration::ZERO, &theirs)
                .is_err()
        );
        assert!(
            c.handle_sample(&mut r, NodeId(2), Duration::from_secs(3600), &theirs)
                .is_err()
        );
        let mut nan = theirs;
        nan.global.vec[0] = f64::NAN;
        assert!(
            c.handle_sample(&mut r, NodeId(2), Duration::from_millis(5), &nan)
                .is_err()
        );
        assert!(c.peer_coord().is_valid());
    }

    #[test]
    fn filter_takes_the_median() {
        let cfg = VivaldiConfig::default();
        let mut c = Coordinates::new(cfg, NodeId(1), &[]);
        assert_eq!(c.filter(NodeId(2), 10.0), 10.0);
        assert_eq!(c.filter(NodeId(2), 1000.0), 1000.0);
        assert_eq!(c.filter(NodeId(2), 12.0), 12.0);
        assert_eq!(c.filter(NodeId(2), 11.0), 12.0);
    }

    /// Nodes on a known plane (with access delays) must converge to a low
    /// error: serf's own test bound is a few percent on such a grid.
    #[test]
    fn vivaldi_converges_on_a_grid() {
        let cfg = VivaldiConfig::default();
        let n = 25;
        let pos: Vec<(f64, f64, f64)> = (0..n)
            .map(|i| {
                (
                    (i % 5) as f64 * 20.0,
                    (i / 5) as f64 * 20.0,
                    1.0 + (i % 3) as f64,
                )
            })
            .collect();
        let truth = |i: usize, j: usize| {
            let (xi, yi, hi) = pos[i];
            let (xj, yj, hj) = pos[j];
            ((xi - xj).powi(2) + (yi - yj).powi(2)).sqrt() + hi + hj
        };
        let mut nodes: Vec<Vivaldi> = (0..n).map(|_| Vivaldi::new(&cfg)).collect();
        let mut r = rng();
        for _ in 0..400 {
            for i in 0..n {
                let j = (i + r.gen_range(1..n)) % n;
                let other = *nodes[j].coordinate();
                nodes[i].update(&cfg, &mut r, &other, truth(i, j)).unwrap();
            }
        }
        let mut errs = Vec::new();
        for i in 0..n {
            for j in i + 1..n {
                let est = nodes[i].coordinate().distance_ms(nodes[j].coordinate());
                errs.push((est - truth(i, j)).abs() / truth(i, j));
            }
        }
        errs.sort_by(f64::total_cmp);
        let median = errs[errs.len() / 2];
        assert!(median < 0.05, "median relative error {median}");
    }

    #[test]
    fn pharos_uses_local_only_inside_a_cluster() {
        let cfg = VivaldiConfig::default();
        let mut g = Coordinate::origin(&cfg);
        g.vec[0] = 100.0;
        let mut l = Coordinate::origin(&cfg);
        l.vec[0] = 1.0;
        let a = PeerCoord {
            global: Coordinate::origin(&cfg),
            local: Some((NodeId(9), Coordinate::origin(&cfg))),
        };
        let b = PeerCoord {
            global: g,
            local: Some((NodeId(9), l)),
        };
        let c = PeerCoord {
            global: g,
            local: Some((NodeId(8), l)),
        };
        assert!(estimate_rtt(&a, &b) < Duration::from_millis(2));
        assert!(estimate_rtt(&a, &c) > Duration::from_millis(99));
    }
}
