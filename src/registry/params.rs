//! The parameters of one registry chain: its id (which every signature
//! binds), its sequencer, the proof-of-work difficulty and the lifetimes of
//! names. They come from the genesis and never change along a chain.

use std::fmt;

use crate::registry::codec::{Writer, put_owner};
use crate::registry::model::Owner;

/// Longest chain id. It is hashed into every signature and proof of work, so
/// it stays short.
pub const MAX_CHAIN_ID_BYTES: usize = 64;

/// Highest proof-of-work difficulty. At 40 bits a register costs about 10^12
/// hashes, hours of a CPU; anything above would lock everyone out.
pub const MAX_DIFFICULTY_BITS: u8 = 40;

/// Why chain parameters are unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParamsError {
    /// The chain id is empty, too long, or has characters outside
    /// `[a-z0-9.-]`.
    #[error("chain id {id:?} must be 1 to 64 characters of a-z, 0-9, '.' and '-'")]
    BadChainId {
        /// The id given.
        id: String,
    },
    /// The difficulty is above [`MAX_DIFFICULTY_BITS`].
    #[error("difficulty of {bits} bits is above the maximum {max}")]
    DifficultyTooHigh {
        /// The difficulty given.
        bits: u8,
        /// The bound.
        max: u8,
    },
    /// A lifetime is zero, or the registration period exceeds the maximum
    /// lifetime.
    #[error(
        "registration period {period} blocks must be at least 1 and at most the maximum lifetime {max_lifetime}"
    )]
    BadLifetime {
        /// Blocks a registration or renewal adds.
        period: u64,
        /// Most blocks ahead a name may be paid for.
        max_lifetime: u64,
    },
}

/// The id of a chain, e.g. `gridedge-devnet-1`. Signatures and proofs of work
/// bind it, so operations cannot be replayed on another chain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChainId(String);

impl ChainId {
    /// Checks and wraps an id.
    pub fn new(id: &str) -> Result<Self, ParamsError> {
        let ok = !id.is_empty()
            && id.len() <= MAX_CHAIN_ID_BYTES
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !ok {
            return Err(ParamsError::BadChainId { id: id.to_owned() });
        }
        Ok(Self(id.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The rules of one chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainParams {
    /// The chain's id.
    pub chain_id: ChainId,
    /// The key that seals blocks.
    pub sequencer: Owner,
    /// Leading zero bits a register's work hash needs.
    pub difficulty_bits: u8,
    /// Blocks a registration lasts, and a renewal adds.
    pub registration_period_blocks: u64,
    /// Most blocks ahead of the current height an expiry may be.
    pub max_lifetime_blocks: u64,
}

impl ChainParams {
    /// Checks the parameters' ranges.
    pub fn validate(&self) -> Result<(), ParamsError> {
        if self.difficulty_bits > MAX_DIFFICULTY_BITS {
            return Err(ParamsError::DifficultyTooHigh {
                bits: self.difficulty_bits,
                max: MAX_DIFFICULTY_BITS,
            });
        }
        if self.registration_period_blocks == 0
            || self.registration_period_blocks > self.max_lifetime_blocks
        {
            return Err(ParamsError::BadLifetime {
                period: self.registration_period_blocks,
                max_lifetime: self.max_lifetime_blocks,
            });
        }
        Ok(())
    }

    /// The canonical encoding, hashed into the genesis digest.
    pub fn encode(&self, w: &mut Writer) {
        w.bytes8(self.chain_id.as_str().as_bytes());
        put_owner(w, &self.sequencer);
        w.u8(self.difficulty_bits);
        w.u64(self.registration_period_blocks);
        w.u64(self.max_lifetime_blocks);
    }
}
