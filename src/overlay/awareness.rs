//! Local health (Lifeguard section 4.1, "Local Health Aware Probe").
//!
//! A node that is itself slow (CPU starved, congested link) sees its probes
//! fail and would wrongly suspect healthy peers. Lifeguard counts evidence
//! of its own slowness in a saturating score and stretches its probe
//! interval and probe timeout by `score + 1`, so a struggling node slows
//! down instead of spreading false suspicions. memberlist `awareness.go`.

use std::time::Duration;

/// The local health score, in `0..max`.
#[derive(Clone, Debug)]
pub struct Awareness {
    max: u32,
    score: u32,
}

impl Awareness {
    /// A healthy node; the score saturates below `max` (memberlist's
    /// `AwarenessMaxMultiplier`, 8 by default).
    pub fn new(max: u32) -> Self {
        Self {
            max: max.max(1),
            score: 0,
        }
    }

    /// Adds `delta` (negative after a successful probe), saturating to
    /// `0..max`.
    pub fn apply_delta(&mut self, delta: i32) {
        let s = i64::from(self.score) + i64::from(delta);
        self.score = s.clamp(0, i64::from(self.max - 1)) as u32;
    }

    /// The current score; 0 is healthy.
    pub fn score(&self) -> u32 {
        self.score
    }

    /// `timeout` stretched by the score: `timeout * (score + 1)`.
    pub fn scale(&self, timeout: Duration) -> Duration {
        timeout * (self.score + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saturates_and_scales() {
        let mut a = Awareness::new(8);
        a.apply_delta(-1);
        assert_eq!(a.score(), 0);
        a.apply_delta(100);
        assert_eq!(a.score(), 7);
        assert_eq!(a.scale(Duration::from_secs(1)), Duration::from_secs(8));
        a.apply_delta(-3);
        assert_eq!(
            a.scale(Duration::from_millis(500)),
            Duration::from_millis(2500)
        );
    }
}
