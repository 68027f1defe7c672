//! Latency matrices: loading, generating, and placing nodes on them.
//!
//! The file format is the one of `planetlab490-median-ms.txt`: a square
//! matrix of RTTs in milliseconds, whitespace separated, one row per line
//! (the PlanetLab time slices use tabs; both parse). For more nodes than
//! the matrix has hosts, nodes are placed on hosts round-robin with a small
//! per-node access delay (a "height"), so two nodes on one host still see a
//! positive RTT.

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Errors from loading a matrix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MatrixError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A field is not a number.
    #[error("{path}:{line}: field {field} is not a number")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based field.
        field: usize,
    },
    /// A row has the wrong number of fields.
    #[error("{path}:{line}: {len} fields, expected {expected}")]
    NotSquare {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// Fields found.
        len: usize,
        /// Fields expected (the number of rows).
        expected: usize,
    },
    /// An RTT is negative or not finite.
    #[error("{path}:{line}: RTT {rtt_ms} ms is not a finite non-negative number")]
    BadRtt {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// The value.
        rtt_ms: f64,
    },
    /// The matrix has fewer than two hosts.
    #[error("{path}: fewer than two hosts")]
    TooSmall {
        /// The file.
        path: PathBuf,
    },
    /// A slice directory holds no `*_<n>` files of the right size.
    #[error("{path}: no usable time slices")]
    NoSlices {
        /// The directory.
        path: PathBuf,
    },
}

/// A square matrix of RTTs between hosts, in milliseconds.
#[derive(Clone, Debug)]
pub struct LatencyMatrix {
    n: usize,
    rtt_ms: Vec<f32>,
}

impl LatencyMatrix {
    /// Parses a matrix file.
    pub fn load(path: &Path) -> Result<Self, MatrixError> {
        let text = std::fs::read_to_string(path).map_err(|source| MatrixError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    fn parse(text: &str, path: &Path) -> Result<Self, MatrixError> {
        let rows: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let n = rows.len();
        if n < 2 {
            return Err(MatrixError::TooSmall {
                path: path.to_owned(),
            });
        }
        let mut rtt_ms = Vec::with_capacity(n * n);
        for (i, row) in rows.iter().enumerate() {
            let before = rtt_ms.len();
            for (j, field) in row.split_whitespace().enumerate() {
                let v: f64 = field.parse().map_err(|_| MatrixError::Parse {
                    path: path.to_owned(),
                    line: i + 1,
                    field: j + 1,
                })?;
                if !v.is_finite() || v < 0.0 {
                    return Err(MatrixError::BadRtt {
                        path: path.to_owned(),
                        line: i + 1,
                        rtt_ms: v,
                    });
                }
                rtt_ms.push(v as f32);
            }
            let len = rtt_ms.len() - before;
            if len != n {
                return Err(MatrixError::NotSquare {
                    path: path.to_owned(),
                    line: i + 1,
                    len,
                    expected: n,
                });
            }
        }
        Ok(Self { n, rtt_ms })
    }

    /// Loads the time slices in `dir` (files named `<prefix>_<t>`), in
    /// order of `t`, keeping those with `hosts` hosts.
    pub fn load_slices(dir: &Path, hosts: usize) -> Result<Vec<Self>, MatrixError> {
        let io = |source| MatrixError::Io {
            path: dir.to_owned(),
            source,
        };
        let mut files: Vec<(u64, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            let t = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.rsplit_once('_'))
                .and_then(|(_, t)| t.parse::<u64>().ok());
            if let Some(t) = t {
                files.push((t, path));
            }
        }
        files.sort();
        let mut out = Vec::new();
        for (_, path) in files {
            let m = Self::load(&path)?;
            if m.hosts() == hosts {
                out.push(m);
            }
        }
        if out.is_empty() {
            return Err(MatrixError::NoSlices {
                path: dir.to_owned(),
            });
        }
        Ok(out)
    }

    /// A synthetic internet: hosts in a few continental clusters on a
    /// plane, RTT = distance + both access delays. For runs with no file.
    pub fn generate(hosts: usize, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6d61_7472_6978);
        // Continent centres in ms of RTT, roughly NA, EU, Asia, SA, Oceania.
        let centres = [
            (0.0, 0.0),
            (90.0, 10.0),
            (200.0, 40.0),
            (40.0, 120.0),
            (250.0, 150.0),
        ];
        let pos: Vec<(f64, f64, f64)> = (0..hosts)
            .map(|_| {
                let (cx, cy) = centres[rng.gen_range(0..centres.len())];
                (
                    cx + rng.gen_range(-30.0..30.0),
                    cy + rng.gen_range(-30.0..30.0),
                    rng.gen_range(0.5..10.0),
                )
            })
            .collect();
        Self::from_positions(&pos)
    }

    /// A synthetic region, the network a LAN preset is made for: an ISP's
    /// or a metro's hosts on a plane 15 ms of RTT across, with access
    /// delays of 0.1 to 2 ms, so RTTs run from under a millisecond to about
    /// 25 ms. For runs with no file.
    pub fn generate_region(hosts: usize, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7265_6769_6f6e);
        let pos: Vec<(f64, f64, f64)> = (0..hosts)
            .map(|_| {
                (
                    rng.gen_range(0.0..15.0),
                    rng.gen_range(0.0..15.0),
                    rng.gen_range(0.1..2.0),
                )
            })
            .collect();
        Self::from_positions(&pos)
    }

    /// RTT = distance on the plane + both access delays, for hosts at
    /// `(x, y, access)` in milliseconds.
    fn from_positions(pos: &[(f64, f64, f64)]) -> Self {
        let hosts = pos.len();
        let mut rtt_ms = vec![0.0f32; hosts * hosts];
        for i in 0..hosts {
            for j in 0..hosts {
                if i != j {
                    let (xi, yi, hi) = pos[i];
                    let (xj, yj, hj) = pos[j];
                    rtt_ms[i * hosts + j] =
                        (((xi - xj).powi(2) + (yi - yj).powi(2)).sqrt() + hi + hj) as f32;
                }
            }
        }
        Self { n: hosts, rtt_ms }
    }

    /// Number of hosts.
    pub fn hosts(&self) -> usize {
        self.n
    }

    /// RTT between hosts `a` and `b`, milliseconds.
    pub fn rtt_ms(&self, a: usize, b: usize) -> f64 {
        f64::from(self.rtt_ms[a * self.n + b])
    }
}

/// Where each simulated node sits: a host of the matrix and an access delay.
#[derive(Clone, Debug)]
pub struct Placement {
    host: Vec<u32>,
    access_ms: Vec<f32>,
}

impl Placement {
    /// Places `nodes` on `hosts` hosts: node i on host i when it fits (no
    /// jitter, so truth is the matrix itself), else on a random host with a
    /// random access delay in `[0, jitter_ms)` for every node.
    pub fn new(nodes: usize, hosts: usize, jitter_ms: f64, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0070_6c61_6365);
        if nodes <= hosts {
            return Self {
                host: (0..nodes as u32).collect(),
                access_ms: vec![0.0; nodes],
            };
        }
        let host = (0..nodes)
            .map(|i| {
                if i < hosts {
                    i as u32
                } else {
                    rng.gen_range(0..hosts as u32)
                }
            })
            .collect();
        let access_ms = (0..nodes)
            .map(|_| rng.gen_range(0.0..jitter_ms.max(f64::MIN_POSITIVE)) as f32)
            .collect();
        Self { host, access_ms }
    }

    /// The host of node `i`.
    pub fn host(&self, i: usize) -> usize {
        self.host[i] as usize
    }

    /// True RTT between nodes `a` and `b` on matrix `m`, milliseconds.
    pub fn rtt_ms(&self, m: &LatencyMatrix, a: usize, b: usize) -> f64 {
        if a == b {
            return 0.0;
        }
        m.rtt_ms(self.host(a), self.host(b))
            + f64::from(self.access_ms[a])
            + f64::from(self.access_ms[b])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let p = Path::new("t");
        let m = LatencyMatrix::parse("0 1.5\n1.5\t0\n", p).unwrap();
        assert_eq!(m.hosts(), 2);
        assert_eq!(m.rtt_ms(0, 1), 1.5);
        assert!(matches!(
            LatencyMatrix::parse("0 1\n1\n", p),
            Err(MatrixError::NotSquare { line: 2, .. })
        ));
        assert!(matches!(
            LatencyMatrix::parse("0 x\n1 0\n", p),
            Err(MatrixError::Parse { .. })
        ));
        assert!(matches!(
            LatencyMatrix::parse("0 -1\n1 0\n", p),
            Err(MatrixError::BadRtt { .. })
        ));
    }

    #[test]
    fn a_generated_region_is_a_few_ms_across_and_the_internet_is_not() {
        let max = |m: &LatencyMatrix| m.rtt_ms.iter().copied().fold(0.0f32, f32::max);
        let region = LatencyMatrix::generate_region(100, 1);
        assert!(region.rtt_ms.iter().all(|&r| r < 26.0), "{}", max(&region));
        assert!(max(&LatencyMatrix::generate(100, 1)) > 150.0);
    }

    #[test]
    fn placement_beyond_hosts_adds_access_delay() {
        let m = LatencyMatrix::generate(10, 1);
        let p = Placement::new(30, 10, 2.0, 1);
        assert_eq!(p.rtt_ms(&m, 3, 3), 0.0);
        for a in 0..30 {
            for b in 0..30 {
                if a != b {
                    assert!(p.rtt_ms(&m, a, b) > 0.0);
                }
            }
        }
    }
}
