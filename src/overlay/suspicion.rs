//! A suspicion whose timeout shrinks with independent confirmations.
//!
//! Lifeguard section 4.2 ("Local Health Aware Suspicion"): a suspicion
//! starts with a long timeout `max`, and each distinct member that also
//! suspects the node shortens it, down to `min` after `k` confirmations:
//!
//! ```text
//! timeout(n) = max(min, max - (max - min) * log(n + 1) / log(k + 1))
//! ```
//!
//! A truly dead node is confirmed quickly by many probers and declared dead
//! after about `min`; a node suspected by one slow prober gets the full
//! `max` to refute. memberlist `suspicion.go`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::{Incarnation, NodeId};

/// A running suspicion of one member.
#[derive(Clone, Debug)]
pub struct Suspicion {
    /// The incarnation suspected; a higher alive refutes it.
    pub incarnation: Incarnation,
    start: Instant,
    min: Duration,
    max: Duration,
    k: u32,
    /// Distinct suspecters seen, bounded by `k + 1` (more change nothing).
    confirmations: BTreeSet<NodeId>,
    /// Whether a packet came straight from the suspect since this began.
    pub heard_from_suspect: bool,
    /// Whether the timeout ran out once and the suspect was pinged one
    /// last time; the next expiry is final.
    pub last_call: bool,
    /// Cached `start + timeout()`: the node asks for it after every packet.
    deadline: Instant,
}

impl Suspicion {
    /// A suspicion raised at `now` by `from`. The first suspecter does not
    /// count as a confirmation, as in memberlist.
    pub fn new(
        now: Instant,
        from: NodeId,
        incarnation: Incarnation,
        k: u32,
        min: Duration,
        max: Duration,
    ) -> Self {
        let mut confirmations = BTreeSet::new();
        confirmations.insert(from);
        // With k = 0 nothing can confirm, so the minimum applies at once.
        let max = if k == 0 { min } else { max.max(min) };
        Self {
            incarnation,
            start: now,
            min,
            max,
            k,
            confirmations,
            heard_from_suspect: false,
            last_call: false,
            deadline: now + max,
        }
    }

    /// Number of independent confirmations so far.
    pub fn confirmations(&self) -> u32 {
        self.confirmations.len() as u32 - 1
    }

    /// Records that `from` also suspects; true if it is a new confirmation
    /// (which is then worth re-gossiping).
    pub fn confirm(&mut self, from: NodeId) -> bool {
        if self.confirmations() >= self.k {
            return false;
        }
        let new = self.confirmations.insert(from);
        if new {
            self.deadline = self.start + self.timeout();
        }
        new
    }

    /// The timeout for `n` confirmations.
    pub fn timeout(&self) -> Duration {
        timeout(self.confirmations(), self.k, self.min, self.max)
    }

    /// When the member is to be declared dead.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The timeout ran out: give the suspect until `deadline` to answer a
    /// last ping. A confirmation after this ends the wait at once.
    pub fn call_last(&mut self, deadline: Instant) {
        self.last_call = true;
        self.deadline = deadline;
    }
}

/// Lifeguard's timeout for `n` of `k` confirmations between `min` and `max`.
pub fn timeout(n: u32, k: u32, min: Duration, max: Duration) -> Duration {
    if k == 0 {
        return min;
    }
    let frac = (f64::from(n) + 1.0).ln() / (f64::from(k) + 1.0).ln();
    let raw = max.as_secs_f64() - frac * (max.as_secs_f64() - min.as_secs_f64());
    // memberlist floors to milliseconds; keep that so timings match it.
    let raw = Duration::from_millis((raw * 1000.0).floor().max(0.0) as u64);
    raw.max(min)
}

/// The minimum suspicion timeout for a cluster of `n` members:
/// `mult * max(1, log10(n)) * probe_interval` (memberlist `suspicionTimeout`).
pub fn min_timeout(mult: u32, n: usize, probe_interval: Duration) -> Duration {
    let node_scale = (n.max(1) as f64).log10().max(1.0);
    // Millisecond resolution, as memberlist: keeps the value exact and stable.
    let ms = f64::from(mult) * node_scale * probe_interval.as_secs_f64() * 1000.0;
    Duration::from_millis(ms as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn timeout_table() {
        // k = 3, min 30 s, max 60 s: 60 - 30 * ln(n + 1) / ln 4, floored to ms.
        let min = Duration::from_secs(30);
        let max = Duration::from_secs(60);
        let want = [60_000, 45_000, 36_225, 30_000, 30_000];
        for (n, ms) in want.into_iter().enumerate() {
            assert_eq!(
                timeout(n as u32, 3, min, max),
                Duration::from_millis(ms),
                "n={n}"
            );
        }
        assert_eq!(
            min_timeout(4, 10_000, Duration::from_secs(1)),
            Duration::from_secs(16)
        );
        assert_eq!(
            min_timeout(4, 5, Duration::from_secs(1)),
            Duration::from_secs(4)
        );
    }

    #[test]
    fn confirmations_are_distinct_and_bounded() {
        let t0 = Instant::now();
        let min = Duration::from_secs(2);
        let max = Duration::from_secs(30);
        let mut s = Suspicion::new(t0, NodeId(1), 0, 3, min, max);
        assert_eq!(s.deadline(), t0 + max);
        assert!(!s.confirm(NodeId(1)));
        assert!(s.confirm(NodeId(2)));
        assert!(!s.confirm(NodeId(2)));
        assert!(s.confirm(NodeId(3)));
        assert!(s.confirm(NodeId(4)));
        assert!(
            !s.confirm(NodeId(5)),
            "more than k confirmations are ignored"
        );
        assert_eq!(s.deadline(), t0 + min);
        let s0 = Suspicion::new(t0, NodeId(1), 0, 0, min, max);
        assert_eq!(s0.deadline(), t0 + min);
    }

    proptest! {
        #[test]
        fn timeout_shrinks_monotonically_within_bounds(
            k in 1u32..20, min_ms in 1u64..100_000, mult in 1u32..10,
        ) {
            let min = Duration::from_millis(min_ms);
            let max = min * mult;
            let mut last = timeout(0, k, min, max);
            prop_assert!(last <= max);
            for n in 1..=k + 2 {
                let t = timeout(n, k, min, max);
                prop_assert!(t <= last && t >= min);
                last = t;
            }
            prop_assert_eq!(timeout(k, k, min, max), min);
        }
    }
}
