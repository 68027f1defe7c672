//! The devnet chain's rules: how the sequencer makes a block
//! ([`produce_block`]), how a follower checks one ([`verify_block`]), and a
//! [`NameProof`]: a name's state and tree proof anchored in a sealed header,
//! which anyone holding the genesis can check.
//!
//! Time and height are inputs; nothing here reads a clock or does IO.

use ed25519_dalek::{Signature, SigningKey};

use crate::registry::block::{Block, BlockHeader, MAX_OPS_PER_BLOCK, ops_digest};
use crate::registry::codec::{DecodeError, Hash, Reader, VERSION, Writer, check_input_len};
use crate::registry::model::{Name, NameState, Owner};
use crate::registry::op::{OpError, Operation};
use crate::registry::params::ChainParams;
use crate::registry::smt::{MAX_PROOF_BYTES, Proof, ProofError, verify};
use crate::registry::state::{RegistryState, Undo};

/// Why a block was refused. The fault is the block's maker (or whoever
/// tampered with it on the way); a follower keeps its last good state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BlockError {
    /// The block is not the next height.
    #[error("block at height {found}, expected {expected}")]
    HeightMismatch {
        /// The next height.
        expected: u64,
        /// The block's height.
        found: u64,
    },
    /// The block does not extend our tip: a fork, or a block from another
    /// chain.
    #[error("block {height} builds on {}, but our tip is {}", hex::encode(.found), hex::encode(.expected))]
    Fork {
        /// The block's height.
        height: u64,
        /// Our tip's hash.
        expected: Hash,
        /// The block's previous hash.
        found: Hash,
    },
    /// A second, different block at a height we already hold: the
    /// sequencer equivocated or the block was altered.
    #[error("block {height} is {}, but we hold {} at that height", hex::encode(.found), hex::encode(.held))]
    Conflict {
        /// The height.
        height: u64,
        /// The hash we hold.
        held: Hash,
        /// The hash offered.
        found: Hash,
    },
    /// The block's time is before its parent's.
    #[error("block {height} has time {time_unix_secs}, before its parent's {prev_time_unix_secs}")]
    TimeWentBackwards {
        /// The block's height.
        height: u64,
        /// The parent's time.
        prev_time_unix_secs: u64,
        /// The block's time.
        time_unix_secs: u64,
    },
    /// More operations than [`MAX_OPS_PER_BLOCK`].
    #[error("block {height} holds {count} operations, more than {max}")]
    TooManyOps {
        /// The block's height.
        height: u64,
        /// Operations held.
        count: usize,
        /// The bound.
        max: usize,
    },
    /// The seal is not the sequencer's signature over the header.
    #[error("block {height}: seal is not the sequencer's")]
    BadSeal {
        /// The block's height.
        height: u64,
    },
    /// The operations are not the ones the header commits to.
    #[error("block {height}: operations do not match the header's digest")]
    OpsDigestMismatch {
        /// The block's height.
        height: u64,
    },
    /// An operation breaks the rules.
    #[error("block {height}, operation {index}: {source}")]
    Op {
        /// The block's height.
        height: u64,
        /// Index of the operation in the block.
        index: usize,
        /// The rule broken.
        source: OpError,
    },
    /// Applying the operations gives a different state root than the header.
    #[error("block {height}: header state root {}, computed {}", hex::encode(.header), hex::encode(.computed))]
    StateRootMismatch {
        /// The block's height.
        height: u64,
        /// The header's root.
        header: Hash,
        /// The root computed.
        computed: Hash,
    },
    /// Producing a block with a key that is not the chain's sequencer.
    #[error("key {key} is not the chain's sequencer {sequencer}")]
    NotSequencer {
        /// The key given.
        key: Owner,
        /// The sequencer.
        sequencer: Owner,
    },
}

/// Makes, applies and seals the block after `prev` holding `ops`.
///
/// The state advances on success (the [`Undo`] takes it back, should
/// storing the block fail) and is unchanged on error. `time_unix_secs`
/// comes from the caller's clock; if it is before the parent's time it is
/// raised to it, so a clock step back does not stall the chain.
pub fn produce_block(
    params: &ChainParams,
    key: &SigningKey,
    prev: &BlockHeader,
    state: &mut RegistryState,
    ops: Vec<Operation>,
    time_unix_secs: u64,
) -> Result<(Block, Undo), BlockError> {
    let height = prev.height + 1;
    if Owner::of(key) != params.sequencer {
        return Err(BlockError::NotSequencer {
            key: Owner::of(key),
            sequencer: params.sequencer,
        });
    }
    if ops.len() > MAX_OPS_PER_BLOCK {
        return Err(BlockError::TooManyOps {
            height,
            count: ops.len(),
            max: MAX_OPS_PER_BLOCK,
        });
    }
    let undo = state
        .apply_ops(params, &ops, height)
        .map_err(|e| BlockError::Op {
            height,
            index: e.index,
            source: e.source,
        })?;
    let header = BlockHeader {
        height,
        prev_hash: prev.hash(),
        time_unix_secs: time_unix_secs.max(prev.time_unix_secs),
        ops_digest: ops_digest(&ops),
        state_root: state.root(),
    };
    let seal = header.seal(key, &params.chain_id);
    Ok((Block { header, ops, seal }, undo))
}

/// Checks `block` as the successor of `prev` and applies it to `state`,
/// which must be the state after `prev`: height, link, time, seal, the
/// operations' digest, every operation's signature and rules, and the state
/// root. The state advances on success (the [`Undo`] takes it back, should
/// storing the block fail) and is unchanged on error.
pub fn verify_block(
    params: &ChainParams,
    prev: &BlockHeader,
    block: &Block,
    state: &mut RegistryState,
) -> Result<Undo, BlockError> {
    let header = &block.header;
    let height = header.height;
    if height != prev.height + 1 {
        return Err(BlockError::HeightMismatch {
            expected: prev.height + 1,
            found: height,
        });
    }
    let prev_hash = prev.hash();
    if header.prev_hash != prev_hash {
        return Err(BlockError::Fork {
            height,
            expected: prev_hash,
            found: header.prev_hash,
        });
    }
    if header.time_unix_secs < prev.time_unix_secs {
        return Err(BlockError::TimeWentBackwards {
            height,
            prev_time_unix_secs: prev.time_unix_secs,
            time_unix_secs: header.time_unix_secs,
        });
    }
    if block.ops.len() > MAX_OPS_PER_BLOCK {
        return Err(BlockError::TooManyOps {
            height,
            count: block.ops.len(),
            max: MAX_OPS_PER_BLOCK,
        });
    }
    if !header.check_seal(&block.seal, &params.sequencer, &params.chain_id) {
        return Err(BlockError::BadSeal { height });
    }
    if ops_digest(&block.ops) != header.ops_digest {
        return Err(BlockError::OpsDigestMismatch { height });
    }
    let undo = state
        .apply_ops(params, &block.ops, height)
        .map_err(|e| BlockError::Op {
            height,
            index: e.index,
            source: e.source,
        })?;
    let computed = state.root();
    if computed != header.state_root {
        state.revert(undo);
        return Err(BlockError::StateRootMismatch {
            height,
            header: header.state_root,
            computed,
        });
    }
    Ok(undo)
}

/// Why a [`NameProof`] does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameProofError {
    /// A height-0 header that is not our genesis.
    #[error("proof is anchored at a genesis other than ours")]
    NotOurGenesis,
    /// A header above 0 without a valid sequencer seal.
    #[error("proof's header at height {height} is not sealed by the sequencer")]
    BadSeal {
        /// The header's height.
        height: u64,
    },
    /// The tree proof does not show the claimed state under the header's root.
    #[error("{name}: {source}")]
    Proof {
        /// The name.
        name: Name,
        /// What failed.
        source: ProofError,
    },
}

/// A name's state (or absence) with its tree proof, anchored in a header
/// and that header's seal: what `gridedge name show --proof` prints and
/// `gridedge name verify` checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameProof {
    /// The name.
    pub name: Name,
    /// The header whose state root the proof is against.
    pub header: BlockHeader,
    /// The header's seal; `None` for the genesis, which is checked against
    /// the verifier's own genesis instead.
    pub seal: Option<Signature>,
    /// The stored state, live or expired, or `None` if never registered.
    pub state: Option<NameState>,
    /// The tree proof.
    pub proof: Proof,
}

impl NameProof {
    /// Checks the anchor and the proof. Returns the state if the name is
    /// live at the header's height, `None` if it is absent or expired.
    pub fn verify(
        &self,
        params: &ChainParams,
        genesis: &BlockHeader,
    ) -> Result<Option<&NameState>, NameProofError> {
        if self.header.height == 0 {
            if &self.header != genesis {
                return Err(NameProofError::NotOurGenesis);
            }
        } else {
            let sealed = self.seal.is_some_and(|seal| {
                self.header
                    .check_seal(&seal, &params.sequencer, &params.chain_id)
            });
            if !sealed {
                return Err(NameProofError::BadSeal {
                    height: self.header.height,
                });
            }
        }
        verify(
            &self.header.state_root,
            &self.name,
            self.state.as_ref(),
            &self.proof,
        )
        .map_err(|source| NameProofError::Proof {
            name: self.name.clone(),
            source,
        })?;
        Ok(self
            .state
            .as_ref()
            .filter(|s| s.is_live(self.header.height)))
    }

    /// The canonical encoding: version, name, header, optional seal,
    /// optional state (length-prefixed), proof (length-prefixed).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(VERSION);
        w.bytes8(self.name.as_str().as_bytes());
        w.raw(&self.header.to_bytes());
        match &self.seal {
            None => w.u8(0),
            Some(seal) => {
                w.u8(1);
                w.raw(&seal.to_bytes());
            }
        }
        match &self.state {
            None => w.u8(0),
            Some(state) => {
                w.u8(1);
                w.bytes16(&state.to_bytes());
            }
        }
        w.bytes16(&self.proof.to_bytes());
        w.finish()
    }

    /// Decodes [`NameProof::to_bytes`] output, refusing anything else.
    pub fn from_bytes(data: &[u8]) -> Result<Self, DecodeError> {
        use crate::registry::block::HEADER_BYTES;
        use crate::registry::codec::MAX_NAME_STATE_BYTES;
        let max = 1 + 64 + 1 + HEADER_BYTES + 65 + 3 + MAX_NAME_STATE_BYTES + 2 + MAX_PROOF_BYTES;
        check_input_len("name proof", data, max)?;
        let mut r = Reader::new(data);
        r.version("name proof version")?;
        let name = r.text8("name proof name", Name::parse, Name::as_str)?;
        let header = BlockHeader::from_bytes(r.take("name proof header", 1 + HEADER_BYTES)?)?;
        let seal = if r.option_tag("name proof seal tag")? {
            Some(Signature::from_bytes(&r.array::<64>("name proof seal")?))
        } else {
            None
        };
        let state = if r.option_tag("name proof state tag")? {
            Some(NameState::from_bytes(
                r.bytes16("name proof state", MAX_NAME_STATE_BYTES)?,
            )?)
        } else {
            None
        };
        let proof = Proof::from_bytes(r.bytes16("name proof tree proof", MAX_PROOF_BYTES)?)?;
        r.finish("name proof")?;
        Ok(Self {
            name,
            header,
            seal,
            state,
            proof,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::state::tests::{a_record, params};

    fn genesis_header(state: &RegistryState) -> BlockHeader {
        BlockHeader {
            height: 0,
            prev_hash: [0; 32],
            time_unix_secs: 1000,
            ops_digest: ops_digest(&[]),
            state_root: state.root(),
        }
    }

    struct Fixture {
        p: ChainParams,
        sequencer: SigningKey,
        alice: SigningKey,
        genesis: BlockHeader,
        state: RegistryState,
        block: Block,
    }

    fn fixture() -> Fixture {
        let sequencer = SigningKey::from_bytes(&[9; 32]);
        let alice = SigningKey::from_bytes(&[1; 32]);
        let p = params(&sequencer);
        let state = RegistryState::new();
        let genesis = genesis_header(&state);
        let op = Operation::register(
            &alice,
            &p.chain_id,
            p.difficulty_bits,
            Name::parse("hello").unwrap(),
            1,
            a_record(1),
            None,
        )
        .unwrap();
        let mut producer = state.clone();
        let (block, _) =
            produce_block(&p, &sequencer, &genesis, &mut producer, vec![op], 1001).unwrap();
        Fixture {
            p,
            sequencer,
            alice,
            genesis,
            state,
            block,
        }
    }

    #[test]
    fn follower_accepts_a_produced_block() {
        let mut f = fixture();
        let _ = verify_block(&f.p, &f.genesis, &f.block, &mut f.state).unwrap();
        assert_eq!(f.state.root(), f.block.header.state_root);
    }

    #[test]
    fn tampered_blocks_are_refused_and_state_kept() {
        let f = fixture();
        let check = |block: &Block| {
            let mut state = f.state.clone();
            let err = verify_block(&f.p, &f.genesis, block, &mut state).unwrap_err();
            assert_eq!(state.root(), f.state.root(), "state changed on {err}");
            err
        };
        let mut b = f.block.clone();
        b.header.time_unix_secs += 1;
        assert_eq!(check(&b), BlockError::BadSeal { height: 1 });

        let mut b = f.block.clone();
        b.ops.clear();
        assert_eq!(check(&b), BlockError::OpsDigestMismatch { height: 1 });

        let mut b = f.block.clone();
        b.header.prev_hash = [7; 32];
        assert!(matches!(check(&b), BlockError::Fork { height: 1, .. }));

        let mut b = f.block.clone();
        b.header.height = 2;
        assert_eq!(
            check(&b),
            BlockError::HeightMismatch {
                expected: 1,
                found: 2
            }
        );

        // A validly sealed block whose root is wrong (a buggy or lying sequencer).
        let mut b = f.block.clone();
        b.header.state_root = [1; 32];
        b.seal = b.header.seal(&f.sequencer, &f.p.chain_id);
        assert!(matches!(
            check(&b),
            BlockError::StateRootMismatch { height: 1, .. }
        ));

        // A validly sealed block with an operation altered after signing.
        let mut b = f.block.clone();
        if let crate::registry::op::Action::Register { nonce, .. } = &mut b.ops[0].body.action {
            *nonce ^= 1;
        }
        b.header.ops_digest = ops_digest(&b.ops);
        b.seal = b.header.seal(&f.sequencer, &f.p.chain_id);
        assert!(matches!(
            check(&b),
            BlockError::Op {
                height: 1,
                index: 0,
                ..
            }
        ));

        // Sealed by someone else.
        let mut b = f.block.clone();
        b.seal = b.header.seal(&f.alice, &f.p.chain_id);
        assert_eq!(check(&b), BlockError::BadSeal { height: 1 });
    }

    #[test]
    fn only_the_sequencer_produces() {
        let mut f = fixture();
        let err = produce_block(&f.p, &f.alice, &f.genesis, &mut f.state, vec![], 1).unwrap_err();
        assert!(matches!(err, BlockError::NotSequencer { .. }));
    }

    #[test]
    fn name_proofs_round_trip_and_verify() {
        let mut f = fixture();
        let _ = verify_block(&f.p, &f.genesis, &f.block, &mut f.state).unwrap();
        let name = Name::parse("hello").unwrap();
        let (state, proof) = f.state.prove(&name);
        let bundle = NameProof {
            name: name.clone(),
            header: f.block.header.clone(),
            seal: Some(f.block.seal),
            state,
            proof,
        };
        let bytes = bundle.to_bytes();
        let decoded = NameProof::from_bytes(&bytes).unwrap();
        assert_eq!(decoded, bundle);
        assert_eq!(
            decoded.verify(&f.p, &f.genesis).unwrap().unwrap().sequence,
            1
        );
        // Every byte of the name, header and seal; a sample of the rest (the
        // tree proof's own byte-flip property test is in smt.rs).
        for i in (0..bytes.len()).filter(|i| *i < 200 || i % 5 == 0) {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            if let Ok(bad) = NameProof::from_bytes(&bad) {
                assert!(
                    bad.verify(&f.p, &f.genesis).is_err(),
                    "byte {i} flipped still verifies"
                );
            }
        }
    }
}
