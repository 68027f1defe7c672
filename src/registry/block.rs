//! Devnet blocks: a [`BlockHeader`] (height, previous hash, time, digest of
//! the operations, state root after them), the operations, and the
//! sequencer's seal over the header. This file holds the types, their
//! canonical encoding, hashing and sealing; `chain.rs` holds the rules.
//!
//! The block hash is `sha256("gridedge/registry/block/v1\0" || header)`; the
//! seal is the sequencer's Ed25519 signature over
//! `"gridedge/registry/seal/v1\0" || chain_id || header`. Both cover the
//! header only; the header commits to the operations through `ops_digest`,
//! so a header alone (with its seal) anchors a state root for proofs.

use ed25519_dalek::{Signature, Signer, SigningKey};

use crate::registry::codec::{DecodeError, Hash, Reader, VERSION, Writer, check_input_len, sha256};
use crate::registry::model::Owner;
use crate::registry::op::{MAX_OP_BYTES, Operation};
use crate::registry::params::ChainId;

/// Most operations in one block. Bounds a block to about 1.2 MiB and the
/// work of verifying one (128 signature checks) so a follower stays
/// responsive while it catches up.
pub const MAX_OPS_PER_BLOCK: usize = 128;

/// Encoded size of a header without its version byte.
pub const HEADER_BYTES: usize = 8 + 32 + 8 + 32 + 32;

/// Largest encoded block.
pub const MAX_BLOCK_BYTES: usize = 1 + HEADER_BYTES + 2 + MAX_OPS_PER_BLOCK * MAX_OP_BYTES + 64;

const BLOCK_DOMAIN: &[u8] = b"gridedge/registry/block/v1\0";
const SEAL_DOMAIN: &[u8] = b"gridedge/registry/seal/v1\0";
const OPS_DOMAIN: &[u8] = b"gridedge/registry/ops/v1\0";

/// What a block commits to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockHeader {
    /// Position in the chain; the genesis is 0.
    pub height: u64,
    /// Hash of the previous header (for the genesis, the genesis digest).
    pub prev_hash: Hash,
    /// When the sequencer made the block, Unix seconds, non-decreasing.
    pub time_unix_secs: u64,
    /// [`ops_digest`] of the block's operations.
    pub ops_digest: Hash,
    /// The state root after the block's operations.
    pub state_root: Hash,
}

impl BlockHeader {
    fn encode(&self, w: &mut Writer) {
        w.u64(self.height);
        w.raw(&self.prev_hash);
        w.u64(self.time_unix_secs);
        w.raw(&self.ops_digest);
        w.raw(&self.state_root);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            height: r.u64("header height")?,
            prev_hash: r.array("header prev hash")?,
            time_unix_secs: r.u64("header time")?,
            ops_digest: r.array("header ops digest")?,
            state_root: r.array("header state root")?,
        })
    }

    /// The canonical encoding: version then fields.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(VERSION);
        self.encode(&mut w);
        w.finish()
    }

    /// Decodes [`BlockHeader::to_bytes`] output, refusing anything else.
    pub fn from_bytes(data: &[u8]) -> Result<Self, DecodeError> {
        check_input_len("header", data, 1 + HEADER_BYTES)?;
        let mut r = Reader::new(data);
        r.version("header version")?;
        let header = Self::decode(&mut r)?;
        r.finish("header")?;
        Ok(header)
    }

    /// The block hash.
    pub fn hash(&self) -> Hash {
        sha256(&[BLOCK_DOMAIN, &self.to_bytes()])
    }

    fn seal_message(&self, chain: &ChainId) -> Vec<u8> {
        let mut w = Writer::new();
        w.raw(SEAL_DOMAIN);
        w.bytes8(chain.as_str().as_bytes());
        w.raw(&self.to_bytes());
        w.finish()
    }

    /// The sequencer's seal over this header.
    pub fn seal(&self, key: &SigningKey, chain: &ChainId) -> Signature {
        key.sign(&self.seal_message(chain))
    }

    /// Whether `seal` is `sequencer`'s seal over this header on `chain`.
    pub fn check_seal(&self, seal: &Signature, sequencer: &Owner, chain: &ChainId) -> bool {
        sequencer
            .key()
            .verify_strict(&self.seal_message(chain), seal)
            .is_ok()
    }
}

/// The digest a header commits its operations with.
pub fn ops_digest(ops: &[Operation]) -> Hash {
    let mut w = Writer::new();
    w.raw(OPS_DOMAIN);
    w.u16(ops.len() as u16);
    for op in ops {
        op.encode(&mut w);
    }
    sha256(&[&w.finish()])
}

/// A sealed block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// What the block commits to.
    pub header: BlockHeader,
    /// The operations, applied in order at the block's height.
    pub ops: Vec<Operation>,
    /// The sequencer's seal over the header.
    pub seal: Signature,
}

impl Block {
    /// The block hash (of the header).
    pub fn hash(&self) -> Hash {
        self.header.hash()
    }

    /// The canonical encoding: version, header, op count (u16), operations,
    /// 64-byte seal.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(VERSION);
        self.header.encode(&mut w);
        w.u16(self.ops.len() as u16);
        for op in &self.ops {
            op.encode(&mut w);
        }
        w.raw(&self.seal.to_bytes());
        w.finish()
    }

    /// Decodes [`Block::to_bytes`] output, refusing anything else. Checks
    /// only the encoding; `chain::verify_block` checks the rules.
    pub fn from_bytes(data: &[u8]) -> Result<Self, DecodeError> {
        check_input_len("block", data, MAX_BLOCK_BYTES)?;
        let mut r = Reader::new(data);
        let block = Self::decode(&mut r)?;
        r.finish("block")?;
        Ok(block)
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.version("block version")?;
        let header = BlockHeader::decode(r)?;
        let offset = r.offset();
        let count = r.u16("block op count")? as usize;
        if count > MAX_OPS_PER_BLOCK {
            return Err(DecodeError::TooLarge {
                what: "block op count",
                offset,
                len: count,
                max: MAX_OPS_PER_BLOCK,
            });
        }
        let mut ops = Vec::with_capacity(count);
        for _ in 0..count {
            ops.push(Operation::decode(r)?);
        }
        let seal = Signature::from_bytes(&r.array::<64>("block seal")?);
        Ok(Self { header, ops, seal })
    }
}

/// Encodes blocks for a follower's fetch (the admin API's response body):
/// version, count (u16), then each block with a four-byte length.
pub fn encode_block_batch(blocks: &[Block]) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(VERSION);
    w.u16(blocks.len() as u16);
    for block in blocks {
        let bytes = block.to_bytes();
        w.u32(bytes.len() as u32);
        w.raw(&bytes);
    }
    w.finish()
}

/// Decodes [`encode_block_batch`] output holding at most `max_blocks`
/// blocks, refusing anything else.
pub fn decode_block_batch(data: &[u8], max_blocks: usize) -> Result<Vec<Block>, DecodeError> {
    let mut r = Reader::new(data);
    r.version("block batch version")?;
    let offset = r.offset();
    let count = r.u16("block batch count")? as usize;
    if count > max_blocks {
        return Err(DecodeError::TooLarge {
            what: "block batch count",
            offset,
            len: count,
            max: max_blocks,
        });
    }
    let mut blocks = Vec::with_capacity(count);
    for _ in 0..count {
        let offset = r.offset();
        let len = r.u32("block length")? as usize;
        if len > MAX_BLOCK_BYTES {
            return Err(DecodeError::TooLarge {
                what: "block length",
                offset,
                len,
                max: MAX_BLOCK_BYTES,
            });
        }
        let mut block = r.sub("block", len)?;
        blocks.push(Block::decode(&mut block)?);
        block.finish("block")?;
    }
    r.finish("block batch")?;
    Ok(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::op::tests::{arb_op, chain};
    use proptest::prelude::*;

    fn arb_block() -> impl Strategy<Value = Block> {
        (
            any::<u64>(),
            any::<[u8; 32]>(),
            any::<u64>(),
            any::<[u8; 32]>(),
            prop::collection::vec(arb_op(), 0..4),
        )
            .prop_map(|(height, prev_hash, time_unix_secs, state_root, ops)| {
                let header = BlockHeader {
                    height,
                    prev_hash,
                    time_unix_secs,
                    ops_digest: ops_digest(&ops),
                    state_root,
                };
                let seal = header.seal(&SigningKey::from_bytes(&[5; 32]), &chain());
                Block { header, ops, seal }
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn block_round_trips(block in arb_block()) {
            let bytes = block.to_bytes();
            prop_assert_eq!(Block::from_bytes(&bytes).unwrap(), block.clone());
            let header = block.header.to_bytes();
            prop_assert_eq!(BlockHeader::from_bytes(&header).unwrap(), block.header);
        }

        #[test]
        fn block_batch_round_trips(blocks in prop::collection::vec(arb_block(), 0..3)) {
            let bytes = encode_block_batch(&blocks);
            prop_assert_eq!(decode_block_batch(&bytes, 3).unwrap(), blocks.clone());
            if !blocks.is_empty() {
                prop_assert!(decode_block_batch(&bytes, blocks.len() - 1).is_err());
            }
        }

        #[test]
        fn mutated_block_bytes_never_panic_and_stay_canonical(block in arb_block(), pos in any::<prop::sample::Index>(), xor in 1u8..) {
            let mut bytes = block.to_bytes();
            let i = pos.index(bytes.len());
            bytes[i] ^= xor;
            if let Ok(decoded) = Block::from_bytes(&bytes) {
                prop_assert_eq!(decoded.to_bytes(), bytes);
            }
        }
    }

    #[test]
    fn seal_binds_header_and_chain() {
        let key = SigningKey::from_bytes(&[5; 32]);
        let sequencer = Owner::of(&key);
        let header = BlockHeader {
            height: 1,
            prev_hash: [1; 32],
            time_unix_secs: 2,
            ops_digest: ops_digest(&[]),
            state_root: [3; 32],
        };
        let seal = header.seal(&key, &chain());
        assert!(header.check_seal(&seal, &sequencer, &chain()));
        assert!(!header.check_seal(&seal, &sequencer, &ChainId::new("other").unwrap()));
        let mut other = header.clone();
        other.time_unix_secs = 3;
        assert!(!other.check_seal(&seal, &sequencer, &chain()));
    }
}
