//! Maps keyed by [`NodeId`], with a cheap keyed hash.
//!
//! Every piggybacked update looks up a member, so at 10,000 members the
//! lookup is the hot path of the whole overlay: a sorted table costs a dozen
//! dependent cache misses per lookup, SipHash a few hundred cycles. Ids are
//! already hashes of peers' keys, so a multiply-xorshift mix is enough
//! spread; the two mixing keys come from the node's seeded RNG, so a peer
//! grinding keys cannot aim collisions at every node (and a simulation
//! stays replayable).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

use rand::Rng;

use super::{NodeId, OverlayRng};

/// A map from peers to `V`.
pub type IdMap<V> = HashMap<NodeId, V, IdBuildHasher>;

/// An empty [`IdMap`] with keys drawn from `rng`.
pub fn id_map<V>(rng: &mut OverlayRng) -> IdMap<V> {
    HashMap::with_hasher(IdBuildHasher::new(rng))
}

/// The keyed hasher's builder.
#[derive(Clone, Copy, Debug)]
pub struct IdBuildHasher {
    k0: u64,
    k1: u64,
}

impl IdBuildHasher {
    /// Keys drawn from `rng`.
    pub fn new(rng: &mut OverlayRng) -> Self {
        Self {
            k0: rng.r#gen(),
            // Odd, so the multiplication is a bijection.
            k1: rng.r#gen::<u64>() | 1,
        }
    }
}

impl BuildHasher for IdBuildHasher {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher {
            k0: self.k0,
            k1: self.k1,
            h: 0,
        }
    }
}

/// Hashes the `u64` of a [`NodeId`]; other input is folded in the same way.
#[derive(Clone, Copy, Debug)]
pub struct IdHasher {
    k0: u64,
    k1: u64,
    h: u64,
}

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.h
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(b));
        }
    }

    fn write_u64(&mut self, x: u64) {
        // A round of a multiply-xorshift mixer (as in splitmix64's finaliser).
        let mut z = (self.h ^ x ^ self.k0).wrapping_mul(self.k1);
        z ^= z >> 32;
        self.h = z.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (z >> 29);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn sequential_ids_spread() {
        let mut rng = OverlayRng::seed_from_u64(1);
        let b = IdBuildHasher::new(&mut rng);
        let mut buckets = [0u32; 64];
        for i in 0..64_000u64 {
            let h = b.hash_one(NodeId(i));
            buckets[(h >> 58) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&c| (800..1200).contains(&c)),
            "{buckets:?}"
        );
    }
}
