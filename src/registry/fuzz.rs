//! The entry point of the `fuzz/` crate's registry target: runs every
//! registry decoder on arbitrary bytes. A decoder must never panic, and
//! whatever it accepts must re-encode to the same bytes (the encoding is
//! canonical); a violation panics here, which the fuzzer reports.

use crate::registry::block::{Block, BlockHeader, decode_block_batch, encode_block_batch};
use crate::registry::chain::NameProof;
use crate::registry::model::NameState;
use crate::registry::op::Operation;
use crate::registry::smt::Proof;

/// Decodes `data` as an operation, a block, a block batch, a header, a name state, a tree
/// proof and a name proof, checking that each accepted value round-trips.
pub fn fuzz_decode(data: &[u8]) {
    if let Ok(op) = Operation::from_bytes(data) {
        assert_eq!(op.to_bytes(), data, "operation decode is not canonical");
    }
    if let Ok(block) = Block::from_bytes(data) {
        assert_eq!(block.to_bytes(), data, "block decode is not canonical");
    }
    if let Ok(blocks) = decode_block_batch(data, 8) {
        assert_eq!(
            encode_block_batch(&blocks),
            data,
            "block batch decode is not canonical"
        );
    }
    if let Ok(header) = BlockHeader::from_bytes(data) {
        assert_eq!(header.to_bytes(), data, "header decode is not canonical");
    }
    if let Ok(state) = NameState::from_bytes(data) {
        assert_eq!(state.to_bytes(), data, "name state decode is not canonical");
    }
    if let Ok(proof) = Proof::from_bytes(data) {
        assert_eq!(proof.to_bytes(), data, "proof decode is not canonical");
    }
    if let Ok(proof) = NameProof::from_bytes(data) {
        assert_eq!(proof.to_bytes(), data, "name proof decode is not canonical");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..400)) {
            fuzz_decode(&data);
        }

        #[test]
        fn near_valid_bytes_never_panic(version in 0u8..3, rest in prop::collection::vec(any::<u8>(), 0..200)) {
            let mut data = vec![version];
            data.extend(rest);
            fuzz_decode(&data);
        }
    }
}
