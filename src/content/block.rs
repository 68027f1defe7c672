//! A block: bytes and the CID that names them, checked to match.
//!
//! A [`Block`] can only be made by hashing bytes or by checking bytes
//! against a claimed CID, so holding one proves that its CID names its
//! data; the store takes blocks, not (CID, bytes) pairs, and never hashes
//! twice.

use crate::content::cid::{Cid, Codec};
use crate::content::dagpb::MAX_BLOCK_BYTES;

/// Why bytes are not the block a CID names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BlockError {
    /// The bytes hash to another digest: corruption or a lying peer.
    #[error("block {cid}: data does not match its hash")]
    HashMismatch {
        /// The CID claimed.
        cid: Cid,
    },
    /// The block is larger than [`MAX_BLOCK_BYTES`].
    #[error("block {cid}: {len} bytes is more than the maximum {max}")]
    TooLarge {
        /// The CID claimed.
        cid: Cid,
        /// The length.
        len: usize,
        /// The bound.
        max: usize,
    },
}

/// Bytes with the CID that names them.
#[derive(Clone, PartialEq, Eq)]
pub struct Block {
    cid: Cid,
    data: Vec<u8>,
}

impl Block {
    /// Hashes `data` into a CIDv1 block of `codec`. Callers bound `data`
    /// (chunks and nodes this node builds are far below [`MAX_BLOCK_BYTES`]).
    pub fn new(codec: Codec, data: Vec<u8>) -> Block {
        Block {
            cid: Cid::hash_of(codec, &data),
            data,
        }
    }

    /// Checks that `data` is the block `cid` names.
    pub fn verified(cid: Cid, data: Vec<u8>) -> Result<Block, BlockError> {
        if data.len() > MAX_BLOCK_BYTES {
            return Err(BlockError::TooLarge {
                cid,
                len: data.len(),
                max: MAX_BLOCK_BYTES,
            });
        }
        if !cid.verifies(&data) {
            return Err(BlockError::HashMismatch { cid });
        }
        Ok(Block { cid, data })
    }

    /// The CID.
    pub fn cid(&self) -> Cid {
        self.cid
    }

    /// The bytes.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The bytes, owned.
    pub fn into_data(self) -> Vec<u8> {
        self.data
    }
}

impl std::fmt::Debug for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Block({}, {} bytes)", self.cid, self.data.len())
    }
}
