//! Per-node load, carried in the header of every overlay packet.
//!
//! Peer selection (DESIGN.md, "An HTTP request") weighs predicted RTT
//! against how busy a holder is. Each packet a node sends carries its
//! current [`Load`], so every peer it talks to, and every peer it probes,
//! learns it for free. The edge feeds the [`LoadMeter`] as it serves.

use std::time::{Duration, Instant};

/// A node's load as its peers see it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Load {
    /// Requests this node is serving right now.
    pub requests_in_flight: u32,
    /// Bytes served per second, smoothed over about ten seconds.
    pub served_bytes_per_s: u64,
}

/// Measures the local node's [`Load`].
#[derive(Clone, Debug, Default)]
pub struct LoadMeter {
    in_flight: u32,
    rate_bytes_per_s: f64,
    last: Option<Instant>,
}

/// Time constant of the served-bytes EWMA: long enough to smooth bursts of
/// one large object, short enough that a hot holder shows up within seconds.
const RATE_TAU: Duration = Duration::from_secs(10);

impl LoadMeter {
    /// A request started.
    pub fn request_started(&mut self) {
        self.in_flight = self.in_flight.saturating_add(1);
    }

    /// A request finished.
    pub fn request_finished(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// `bytes` were served at `now`.
    pub fn record_served(&mut self, now: Instant, bytes: u64) {
        self.decay(now);
        self.rate_bytes_per_s += bytes as f64 / RATE_TAU.as_secs_f64();
    }

    // Exponential decay of a rate: an impulse of B bytes adds B/τ to the
    // rate, which then decays with e^(-t/τ); its integral is B again.
    fn decay(&mut self, now: Instant) {
        if let Some(last) = self.last {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.rate_bytes_per_s *= (-dt / RATE_TAU.as_secs_f64()).exp();
        }
        self.last = Some(now);
    }

    /// The load to advertise at `now`.
    pub fn load(&mut self, now: Instant) -> Load {
        self.decay(now);
        Load {
            requests_in_flight: self.in_flight,
            served_bytes_per_s: self.rate_bytes_per_s.round() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_tracks_a_steady_stream_and_decays() {
        let t0 = Instant::now();
        let mut m = LoadMeter::default();
        for s in 0..100 {
            m.record_served(t0 + Duration::from_secs(s), 1_000_000);
        }
        let l = m.load(t0 + Duration::from_secs(100));
        assert!(
            (900_000..=1_100_000).contains(&l.served_bytes_per_s),
            "{l:?}"
        );
        let later = m.load(t0 + Duration::from_secs(200));
        assert!(later.served_bytes_per_s < 100_000);
        m.request_started();
        m.request_started();
        m.request_finished();
        assert_eq!(m.load(t0 + Duration::from_secs(200)).requests_in_flight, 1);
    }
}
