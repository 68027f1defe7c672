//! Signed operations on names: register, update, transfer, renew.
//!
//! An [`Operation`] is an [`OpBody`] (name, sequence number, signer, action)
//! plus the signer's Ed25519 signature over a domain-separated message:
//! `"gridedge/registry/op/v1\0" || chain_id || body`. A register also
//! carries proof of work: `sha256("gridedge/registry/pow/v1\0" || chain_id ||
//! body)` must have at least `difficulty_bits` leading zero bits; the nonce
//! is the last field of the body, and the body includes the new owner, so
//! work cannot be moved to another key or name.
//!
//! This file builds, signs, mines and encodes operations and defines the
//! errors of the rules; `state.rs` applies the rules against the state.

use ed25519_dalek::{Signature, Signer, SigningKey};
use sha2::{Digest, Sha256};

use crate::registry::codec::{
    DecodeError, Hash, Reader, VERSION, Writer, check_input_len, get_content, get_owner,
    get_record_set, put_content, put_owner, put_record_set, sha256,
};
use crate::registry::model::{ContentCid, MAX_RECORD_SET_BYTES, Name, Owner, RecordSet};
use crate::registry::params::ChainId;

/// Largest encoded operation: a full record set plus 1 KiB for the name,
/// keys, counters, content CID and signature (which take about 300 bytes).
pub const MAX_OP_BYTES: usize = MAX_RECORD_SET_BYTES + 1024;

const OP_DOMAIN: &[u8] = b"gridedge/registry/op/v1\0";
const POW_DOMAIN: &[u8] = b"gridedge/registry/pow/v1\0";

/// Why an operation was refused. Every variant names the operation's name;
/// the fault is the submitter's, and resubmitting the same bytes never helps.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpError {
    /// The signature does not verify under the signer's key for this chain.
    #[error("{name}: bad signature")]
    BadSignature {
        /// The name operated on.
        name: Name,
    },
    /// The signer is not the name's current owner.
    #[error("{name}: signed by {signer}, but owned by {owner}")]
    WrongOwner {
        /// The name operated on.
        name: Name,
        /// The current owner.
        owner: Owner,
        /// Who signed.
        signer: Owner,
    },
    /// The sequence number was already used: a replay or a stale operation.
    #[error("{name}: sequence {sequence} already used (current {current})")]
    Replay {
        /// The name operated on.
        name: Name,
        /// The operation's sequence.
        sequence: u64,
        /// The name's current sequence.
        current: u64,
    },
    /// The sequence number skips ahead of the next expected one.
    #[error("{name}: sequence {sequence} skips ahead, expected {expected}")]
    SequenceGap {
        /// The name operated on.
        name: Name,
        /// The operation's sequence.
        sequence: u64,
        /// The sequence expected.
        expected: u64,
    },
    /// The name is expired; only a new register can take it.
    #[error("{name}: expired at height {expiry_height} (now {now_height})")]
    NameExpired {
        /// The name operated on.
        name: Name,
        /// The first height at which it was expired.
        expiry_height: u64,
        /// The height the operation was applied at.
        now_height: u64,
    },
    /// A register for a name that is live.
    #[error("{name}: already registered until height {expiry_height}")]
    NameTaken {
        /// The name operated on.
        name: Name,
        /// When it expires.
        expiry_height: u64,
    },
    /// An update, transfer or renew of a name never registered.
    #[error("{name}: not registered")]
    NameNotFound {
        /// The name operated on.
        name: Name,
    },
    /// A register whose work hash has too few leading zero bits.
    #[error("{name}: proof of work has {found_bits} leading zero bits, {required_bits} required")]
    InsufficientWork {
        /// The name operated on.
        name: Name,
        /// Bits the chain requires.
        required_bits: u8,
        /// Bits the operation has.
        found_bits: u32,
    },
    /// A renew would put the expiry further ahead than the chain allows.
    #[error("{name}: renewal to height {requested} is beyond the maximum {max_height}")]
    RenewTooFar {
        /// The name operated on.
        name: Name,
        /// The expiry the renewal would set.
        requested: u64,
        /// The furthest expiry allowed now.
        max_height: u64,
    },
    /// The encoded operation is larger than [`MAX_OP_BYTES`].
    #[error("{name}: operation of {len} bytes is larger than {max}")]
    TooLarge {
        /// The name operated on.
        name: Name,
        /// Encoded length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// Signing was asked with a key that is not the body's signer.
    #[error("{name}: signing key {key} is not the operation's signer {signer}")]
    SignerMismatch {
        /// The name operated on.
        name: Name,
        /// The key given.
        key: Owner,
        /// The body's signer.
        signer: Owner,
    },
    /// Mining gave up after the given number of attempts.
    #[error("{name}: no nonce met {required_bits} bits in {attempts} attempts")]
    WorkNotFound {
        /// The name operated on.
        name: Name,
        /// Bits the chain requires.
        required_bits: u8,
        /// Nonces tried.
        attempts: u64,
    },
}

impl OpError {
    /// A short stable label for metrics (`rejected{reason=...}`).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::BadSignature { .. } => "bad_signature",
            Self::WrongOwner { .. } => "wrong_owner",
            Self::Replay { .. } => "replay",
            Self::SequenceGap { .. } => "sequence_gap",
            Self::NameExpired { .. } => "expired",
            Self::NameTaken { .. } => "taken",
            Self::NameNotFound { .. } => "not_found",
            Self::InsufficientWork { .. } => "insufficient_work",
            Self::RenewTooFar { .. } => "renew_too_far",
            Self::TooLarge { .. } => "too_large",
            Self::SignerMismatch { .. } => "signer_mismatch",
            Self::WorkNotFound { .. } => "work_not_found",
        }
    }
}

/// What an operation does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Takes a free or expired name for the signer.
    Register {
        /// The initial records.
        records: RecordSet,
        /// The initial content.
        content: Option<ContentCid>,
        /// The proof-of-work nonce.
        nonce: u64,
    },
    /// Replaces the records and content.
    Update {
        /// The new records.
        records: RecordSet,
        /// The new content.
        content: Option<ContentCid>,
    },
    /// Gives the name to another key; records stay.
    Transfer {
        /// The new owner.
        new_owner: Owner,
    },
    /// Extends the expiry by one registration period.
    Renew,
}

impl Action {
    /// The action's name, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Register { .. } => "register",
            Self::Update { .. } => "update",
            Self::Transfer { .. } => "transfer",
            Self::Renew => "renew",
        }
    }
}

/// The signed part of an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpBody {
    /// The name operated on.
    pub name: Name,
    /// Must be the name's current sequence plus one (1 for a name never
    /// registered). A register of an expired name continues its sequence.
    pub sequence: u64,
    /// The signing key: the current owner, or for a register the new owner.
    pub signer: Owner,
    /// What to do.
    pub action: Action,
}

impl OpBody {
    fn encode(&self, w: &mut Writer) {
        w.bytes8(self.name.as_str().as_bytes());
        w.u64(self.sequence);
        put_owner(w, &self.signer);
        match &self.action {
            Action::Register {
                records,
                content,
                nonce,
            } => {
                w.u8(0);
                put_content(w, content.as_ref());
                put_record_set(w, records);
                // Last, so miners hash the prefix once (see `mine`).
                w.u64(*nonce);
            }
            Action::Update { records, content } => {
                w.u8(1);
                put_content(w, content.as_ref());
                put_record_set(w, records);
            }
            Action::Transfer { new_owner } => {
                w.u8(2);
                put_owner(w, new_owner);
            }
            Action::Renew => w.u8(3),
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let name = r.text8("op name", Name::parse, Name::as_str)?;
        let sequence = r.u64("op sequence")?;
        let signer = get_owner(r, "op signer")?;
        let offset = r.offset();
        let action = match r.u8("op action")? {
            0 => {
                let content = get_content(r)?;
                let records = get_record_set(r)?;
                Action::Register {
                    content,
                    records,
                    nonce: r.u64("register nonce")?,
                }
            }
            1 => Action::Update {
                content: get_content(r)?,
                records: get_record_set(r)?,
            },
            2 => Action::Transfer {
                new_owner: get_owner(r, "transfer new owner")?,
            },
            3 => Action::Renew,
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "op action",
                    offset,
                    tag: tag.into(),
                });
            }
        };
        Ok(Self {
            name,
            sequence,
            signer,
            action,
        })
    }

    /// The canonical encoding of the body alone.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode(&mut w);
        w.finish()
    }

    /// The message the signer signs on chain `chain`.
    pub fn signing_message(&self, chain: &ChainId) -> Vec<u8> {
        let mut w = Writer::new();
        w.raw(OP_DOMAIN);
        w.bytes8(chain.as_str().as_bytes());
        self.encode(&mut w);
        w.finish()
    }

    /// The proof-of-work hash on chain `chain`.
    pub fn work_hash(&self, chain: &ChainId) -> Hash {
        let mut w = Writer::new();
        w.bytes8(chain.as_str().as_bytes());
        self.encode(&mut w);
        sha256(&[POW_DOMAIN, &w.finish()])
    }

    /// Leading zero bits of the work hash (meaningful for a register).
    pub fn work_bits(&self, chain: &ChainId) -> u32 {
        leading_zero_bits(&self.work_hash(chain))
    }

    /// Searches nonces from `start` for one whose work hash meets
    /// `difficulty_bits`, trying at most `max_attempts`, and sets it. Only
    /// meaningful for a register; other actions are left as they are.
    pub fn mine(
        &mut self,
        chain: &ChainId,
        difficulty_bits: u8,
        start: u64,
        max_attempts: u64,
    ) -> Result<(), OpError> {
        let Action::Register { nonce, .. } = &mut self.action else {
            return Ok(());
        };
        *nonce = 0;
        let mut w = Writer::new();
        w.bytes8(chain.as_str().as_bytes());
        self.encode(&mut w);
        let mut bytes = w.finish();
        bytes.truncate(bytes.len() - 8);
        let mut prefix = Sha256::new();
        prefix.update(POW_DOMAIN);
        prefix.update(&bytes);
        for attempt in 0..max_attempts {
            let candidate = start.wrapping_add(attempt);
            let hash: Hash = prefix
                .clone()
                .chain_update(candidate.to_be_bytes())
                .finalize()
                .into();
            if leading_zero_bits(&hash) >= u32::from(difficulty_bits) {
                if let Action::Register { nonce, .. } = &mut self.action {
                    *nonce = candidate;
                }
                return Ok(());
            }
        }
        Err(OpError::WorkNotFound {
            name: self.name.clone(),
            required_bits: difficulty_bits,
            attempts: max_attempts,
        })
    }

    /// Signs the body with `key`, which must be the body's signer.
    pub fn sign(self, key: &SigningKey, chain: &ChainId) -> Result<Operation, OpError> {
        let key_owner = Owner::of(key);
        if key_owner != self.signer {
            return Err(OpError::SignerMismatch {
                name: self.name.clone(),
                key: key_owner,
                signer: self.signer,
            });
        }
        let signature = key.sign(&self.signing_message(chain));
        let op = Operation {
            body: self,
            signature,
        };
        let len = op.to_bytes().len();
        if len > MAX_OP_BYTES {
            return Err(OpError::TooLarge {
                name: op.body.name,
                len,
                max: MAX_OP_BYTES,
            });
        }
        Ok(op)
    }
}

/// Leading zero bits of a hash.
pub fn leading_zero_bits(hash: &Hash) -> u32 {
    let mut bits = 0;
    for byte in hash {
        bits += byte.leading_zeros();
        if *byte != 0 {
            break;
        }
    }
    bits
}

/// Nonces a client tries before giving up: 2^40 covers the highest
/// difficulty ([`crate::registry::params::MAX_DIFFICULTY_BITS`]) many times over.
pub const MAX_MINING_ATTEMPTS: u64 = 1 << 40;

/// A signed operation, as submitted, stored in blocks and sent to followers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// What was signed.
    pub body: OpBody,
    /// The signer's signature over [`OpBody::signing_message`].
    pub signature: Signature,
}

impl Operation {
    /// Builds, mines and signs a register of `name` for `key`'s owner.
    /// `sequence` is 1 for a name never registered, else the expired name's
    /// last sequence plus one.
    #[allow(clippy::too_many_arguments)]
    pub fn register(
        key: &SigningKey,
        chain: &ChainId,
        difficulty_bits: u8,
        name: Name,
        sequence: u64,
        records: RecordSet,
        content: Option<ContentCid>,
    ) -> Result<Self, OpError> {
        let mut body = OpBody {
            signer: Owner::of(key),
            name,
            sequence,
            action: Action::Register {
                records,
                content,
                nonce: 0,
            },
        };
        body.mine(chain, difficulty_bits, 0, MAX_MINING_ATTEMPTS)?;
        body.sign(key, chain)
    }

    /// Builds and signs an update of records and content.
    pub fn update(
        key: &SigningKey,
        chain: &ChainId,
        name: Name,
        sequence: u64,
        records: RecordSet,
        content: Option<ContentCid>,
    ) -> Result<Self, OpError> {
        let body = OpBody {
            signer: Owner::of(key),
            name,
            sequence,
            action: Action::Update { records, content },
        };
        body.sign(key, chain)
    }

    /// Builds and signs a transfer to `new_owner`.
    pub fn transfer(
        key: &SigningKey,
        chain: &ChainId,
        name: Name,
        sequence: u64,
        new_owner: Owner,
    ) -> Result<Self, OpError> {
        let body = OpBody {
            signer: Owner::of(key),
            name,
            sequence,
            action: Action::Transfer { new_owner },
        };
        body.sign(key, chain)
    }

    /// Builds and signs a renewal.
    pub fn renew(
        key: &SigningKey,
        chain: &ChainId,
        name: Name,
        sequence: u64,
    ) -> Result<Self, OpError> {
        let body = OpBody {
            signer: Owner::of(key),
            name,
            sequence,
            action: Action::Renew,
        };
        body.sign(key, chain)
    }

    /// Checks the signature against the body's signer on chain `chain`.
    /// Uses strict verification (no malleable or small-order forms).
    pub fn verify_signature(&self, chain: &ChainId) -> Result<(), OpError> {
        self.body
            .signer
            .key()
            .verify_strict(&self.body.signing_message(chain), &self.signature)
            .map_err(|_| OpError::BadSignature {
                name: self.body.name.clone(),
            })
    }

    /// The canonical encoding: version, body, 64-byte signature.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode(&mut w);
        w.finish()
    }

    /// Appends the canonical encoding to `w` (used inside blocks).
    pub fn encode(&self, w: &mut Writer) {
        w.u8(VERSION);
        self.body.encode(w);
        w.raw(&self.signature.to_bytes());
    }

    /// Decodes [`Operation::to_bytes`] output, refusing anything else.
    pub fn from_bytes(data: &[u8]) -> Result<Self, DecodeError> {
        check_input_len("operation", data, MAX_OP_BYTES)?;
        let mut r = Reader::new(data);
        let op = Self::decode(&mut r)?;
        r.finish("operation")?;
        Ok(op)
    }

    /// Decodes one operation from `r` (used inside blocks).
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let start = r.offset();
        r.version("op version")?;
        let body = OpBody::decode(r)?;
        let signature = Signature::from_bytes(&r.array::<64>("op signature")?);
        if r.offset() - start > MAX_OP_BYTES {
            return Err(DecodeError::TooLarge {
                what: "operation",
                offset: start,
                len: r.offset() - start,
                max: MAX_OP_BYTES,
            });
        }
        Ok(Self { body, signature })
    }

    /// The operation's id: `sha256` of its encoding.
    pub fn id(&self) -> Hash {
        sha256(&[&self.to_bytes()])
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::registry::codec::tests::{arb_name, arb_owner, arb_record_set};
    use proptest::prelude::*;

    pub(crate) fn chain() -> ChainId {
        ChainId::new("test-chain").unwrap()
    }

    fn arb_action() -> impl Strategy<Value = Action> {
        prop_oneof![
            (arb_record_set(), any::<u64>()).prop_map(|(records, nonce)| Action::Register {
                records,
                content: None,
                nonce
            }),
            arb_record_set().prop_map(|records| Action::Update {
                records,
                content: Some(ContentCid::parse("bafybeigdyrzt").unwrap())
            }),
            arb_owner().prop_map(|new_owner| Action::Transfer { new_owner }),
            Just(Action::Renew),
        ]
    }

    pub(crate) fn arb_op() -> impl Strategy<Value = Operation> {
        (arb_name(), any::<u64>(), any::<[u8; 32]>(), arb_action()).prop_map(
            |(name, sequence, seed, action)| {
                let key = SigningKey::from_bytes(&seed);
                OpBody {
                    name,
                    sequence,
                    signer: Owner::new(key.verifying_key()).unwrap(),
                    action,
                }
                .sign(&key, &chain())
                .unwrap()
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn op_round_trips_and_verifies(op in arb_op()) {
            let bytes = op.to_bytes();
            let decoded = Operation::from_bytes(&bytes).unwrap();
            prop_assert_eq!(&decoded, &op);
            decoded.verify_signature(&chain()).unwrap();
            prop_assert!(decoded.verify_signature(&ChainId::new("other").unwrap()).is_err());
        }

        #[test]
        fn mutated_op_bytes_never_panic_and_stay_canonical(op in arb_op(), pos in any::<prop::sample::Index>(), xor in 1u8..) {
            let mut bytes = op.to_bytes();
            let i = pos.index(bytes.len());
            bytes[i] ^= xor;
            if let Ok(decoded) = Operation::from_bytes(&bytes) {
                prop_assert_eq!(decoded.to_bytes(), bytes);
                prop_assert!(decoded.verify_signature(&chain()).is_err());
            }
        }
    }

    #[test]
    fn mining_meets_difficulty() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let name = Name::parse("mined").unwrap();
        let op =
            Operation::register(&key, &chain(), 10, name, 1, RecordSet::default(), None).unwrap();
        assert!(op.body.work_bits(&chain()) >= 10);
        op.verify_signature(&chain()).unwrap();
    }

    #[test]
    fn signing_with_another_key_is_refused() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let other = SigningKey::from_bytes(&[4; 32]);
        let body = OpBody {
            name: Name::parse("x").unwrap(),
            sequence: 1,
            signer: Owner::new(key.verifying_key()).unwrap(),
            action: Action::Renew,
        };
        assert!(matches!(
            body.sign(&other, &chain()),
            Err(OpError::SignerMismatch { .. })
        ));
    }

    #[test]
    fn oversize_record_count_is_refused_at_decode() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let op = Operation::update(
            &key,
            &chain(),
            Name::parse("x").unwrap(),
            2,
            RecordSet::default(),
            None,
        )
        .unwrap();
        let mut bytes = op.to_bytes();
        // The record count follows version, name, sequence, signer, tag, content tag.
        let at = 1 + 2 + 8 + 32 + 1 + 1;
        assert_eq!(&bytes[at..at + 2], &[0, 0]);
        bytes[at..at + 2].copy_from_slice(&65u16.to_be_bytes());
        assert_eq!(
            Operation::from_bytes(&bytes),
            Err(DecodeError::TooLarge {
                what: "record count",
                offset: at,
                len: 65,
                max: 64
            })
        );
        let huge = vec![0u8; MAX_OP_BYTES + 1];
        assert!(matches!(
            Operation::from_bytes(&huge),
            Err(DecodeError::TooLarge {
                what: "operation",
                ..
            })
        ));
    }

    #[test]
    fn leading_zero_bits_counts_across_bytes() {
        let mut h = [0u8; 32];
        h[2] = 0b0001_0000;
        assert_eq!(leading_zero_bits(&h), 19);
        assert_eq!(leading_zero_bits(&[0; 32]), 256);
    }
}
