//! The registry state: every name's [`NameState`], and the state tree that
//! commits to them. Operations are applied here under the chain's rules, at
//! a height the caller hands in; nothing here reads a clock or does IO.
//!
//! Expired names stay in the state (and the tree) so that their sequence
//! number keeps guarding against replays of old operations; [`RegistryState::lookup`]
//! hides them, and a proof of an expired state shows its expiry height.

use std::collections::BTreeMap;

use crate::registry::codec::Hash;
use crate::registry::model::{Name, NameState};
use crate::registry::op::{Action, MAX_OP_BYTES, OpError, Operation};
use crate::registry::params::ChainParams;
use crate::registry::smt::{Proof, Smt, name_key, value_hash};

/// What [`RegistryState::apply_ops`] changed, to undo it with
/// [`RegistryState::revert`].
#[derive(Debug, Default)]
#[must_use = "an undo log that is dropped cannot be reverted"]
pub struct Undo {
    previous: Vec<(Name, Option<NameState>)>,
}

/// An operation refused inside a batch, with its index.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("operation {index}: {source}")]
pub struct BatchError {
    /// Index of the refused operation in the batch.
    pub index: usize,
    /// Why it was refused.
    pub source: OpError,
}

/// Names and their states, with the state tree.
#[derive(Debug, Clone, Default)]
pub struct RegistryState {
    names: BTreeMap<Name, NameState>,
    tree: Smt,
}

impl RegistryState {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry holding `states` (the genesis allocations); a name given
    /// twice keeps the last.
    pub fn from_states(states: impl IntoIterator<Item = (Name, NameState)>) -> Self {
        let names: BTreeMap<Name, NameState> = states.into_iter().collect();
        let tree = Smt::from_leaves(names.iter().map(|(n, s)| (name_key(n), value_hash(s))));
        Self { names, tree }
    }

    /// The state root.
    pub fn root(&self) -> Hash {
        self.tree.root()
    }

    /// Number of names held, expired ones included.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether no name is held.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The stored state of `name`, live or expired.
    pub fn get(&self, name: &Name) -> Option<&NameState> {
        self.names.get(name)
    }

    /// The state of `name` if it is live at `height`.
    pub fn lookup(&self, name: &Name, height: u64) -> Option<&NameState> {
        self.names.get(name).filter(|s| s.is_live(height))
    }

    /// Every stored name and state, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&Name, &NameState)> {
        self.names.iter()
    }

    /// The stored state of `name` (live or expired, or none) and its proof
    /// against [`RegistryState::root`].
    pub fn prove(&self, name: &Name) -> (Option<NameState>, Proof) {
        (
            self.names.get(name).cloned(),
            self.tree.prove(&name_key(name)),
        )
    }

    /// Checks `op` against the state at `height` and returns the state the
    /// name would have after it. Cheap checks come first, the signature last.
    pub fn check_op(
        &self,
        params: &ChainParams,
        op: &Operation,
        height: u64,
    ) -> Result<NameState, OpError> {
        check_op(params, self.names.get(&op.body.name), op, height)
    }

    /// Applies one operation, or changes nothing.
    pub fn apply_op(
        &mut self,
        params: &ChainParams,
        op: &Operation,
        height: u64,
    ) -> Result<(), OpError> {
        let next = self.check_op(params, op, height)?;
        self.tree.insert(name_key(&op.body.name), value_hash(&next));
        self.names.insert(op.body.name.clone(), next);
        Ok(())
    }

    /// Applies a batch of operations at `height`, in order, all or nothing:
    /// on error nothing changed. Later operations see earlier ones' effects.
    pub fn apply_ops(
        &mut self,
        params: &ChainParams,
        ops: &[Operation],
        height: u64,
    ) -> Result<Undo, BatchError> {
        let mut staged: BTreeMap<&Name, NameState> = BTreeMap::new();
        for (index, op) in ops.iter().enumerate() {
            let name = &op.body.name;
            let current = staged.get(name).or_else(|| self.names.get(name));
            let next = check_op(params, current, op, height)
                .map_err(|source| BatchError { index, source })?;
            staged.insert(name, next);
        }
        let mut undo = Undo::default();
        for (name, next) in staged {
            self.tree.insert(name_key(name), value_hash(&next));
            let previous = self.names.insert(name.clone(), next);
            undo.previous.push((name.clone(), previous));
        }
        Ok(undo)
    }

    /// Undoes an [`RegistryState::apply_ops`] (the last one applied).
    pub fn revert(&mut self, undo: Undo) {
        for (name, previous) in undo.previous.into_iter().rev() {
            let key = name_key(&name);
            match previous {
                Some(state) => {
                    self.tree.insert(key, value_hash(&state));
                    self.names.insert(name, state);
                }
                None => {
                    self.tree.remove(&key);
                    self.names.remove(&name);
                }
            }
        }
    }
}

fn check_sequence(op: &Operation, current: u64) -> Result<(), OpError> {
    let sequence = op.body.sequence;
    if sequence <= current {
        return Err(OpError::Replay {
            name: op.body.name.clone(),
            sequence,
            current,
        });
    }
    if sequence != current + 1 {
        return Err(OpError::SequenceGap {
            name: op.body.name.clone(),
            sequence,
            expected: current + 1,
        });
    }
    Ok(())
}

fn check_op(
    params: &ChainParams,
    current: Option<&NameState>,
    op: &Operation,
    height: u64,
) -> Result<NameState, OpError> {
    let body = &op.body;
    let name = &body.name;
    let len = op.to_bytes().len();
    if len > MAX_OP_BYTES {
        return Err(OpError::TooLarge {
            name: name.clone(),
            len,
            max: MAX_OP_BYTES,
        });
    }
    if let Action::Register {
        records, content, ..
    } = &body.action
    {
        if let Some(state) = current.filter(|s| s.is_live(height)) {
            return Err(OpError::NameTaken {
                name: name.clone(),
                expiry_height: state.expiry_height,
            });
        }
        check_sequence(op, current.map_or(0, |s| s.sequence))?;
        let found_bits = body.work_bits(&params.chain_id);
        if found_bits < u32::from(params.difficulty_bits) {
            return Err(OpError::InsufficientWork {
                name: name.clone(),
                required_bits: params.difficulty_bits,
                found_bits,
            });
        }
        op.verify_signature(&params.chain_id)?;
        return Ok(NameState {
            owner: body.signer,
            records: records.clone(),
            content: content.clone(),
            sequence: body.sequence,
            expiry_height: height.saturating_add(params.registration_period_blocks),
        });
    }
    let Some(current) = current else {
        return Err(OpError::NameNotFound { name: name.clone() });
    };
    if !current.is_live(height) {
        return Err(OpError::NameExpired {
            name: name.clone(),
            expiry_height: current.expiry_height,
            now_height: height,
        });
    }
    if body.signer != current.owner {
        return Err(OpError::WrongOwner {
            name: name.clone(),
            owner: current.owner,
            signer: body.signer,
        });
    }
    check_sequence(op, current.sequence)?;
    let mut next = current.clone();
    next.sequence = body.sequence;
    match &body.action {
        Action::Update { records, content } => {
            next.records = records.clone();
            next.content = content.clone();
        }
        Action::Transfer { new_owner } => next.owner = *new_owner,
        Action::Renew => {
            let requested = current
                .expiry_height
                .saturating_add(params.registration_period_blocks);
            let max_height = height.saturating_add(params.max_lifetime_blocks);
            if requested > max_height {
                return Err(OpError::RenewTooFar {
                    name: name.clone(),
                    requested,
                    max_height,
                });
            }
            next.expiry_height = requested;
        }
        Action::Register { .. } => unreachable!("handled above"),
    }
    op.verify_signature(&params.chain_id)?;
    Ok(next)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::registry::model::{Owner, Record, RecordData, RecordSet, Subname};
    use crate::registry::op::OpBody;
    use crate::registry::op::tests::chain;
    use crate::registry::smt::verify;
    use ed25519_dalek::SigningKey;
    use std::net::Ipv4Addr;

    pub(crate) fn params(sequencer: &SigningKey) -> ChainParams {
        ChainParams {
            chain_id: chain(),
            sequencer: Owner::of(sequencer),
            difficulty_bits: 4,
            registration_period_blocks: 100,
            max_lifetime_blocks: 250,
        }
    }

    pub(crate) fn a_record(last: u8) -> RecordSet {
        RecordSet::new(vec![Record {
            subname: Subname::apex(),
            ttl_secs: 300,
            data: RecordData::A(Ipv4Addr::new(127, 0, 0, last)),
        }])
        .unwrap()
    }

    fn setup() -> (ChainParams, RegistryState, SigningKey, SigningKey, Name) {
        let alice = SigningKey::from_bytes(&[1; 32]);
        let bob = SigningKey::from_bytes(&[2; 32]);
        let p = params(&SigningKey::from_bytes(&[9; 32]));
        let mut state = RegistryState::new();
        let name = Name::parse("hello").unwrap();
        let op = Operation::register(
            &alice,
            &p.chain_id,
            p.difficulty_bits,
            name.clone(),
            1,
            a_record(1),
            None,
        )
        .unwrap();
        state.apply_op(&p, &op, 10).unwrap();
        (p, state, alice, bob, name)
    }

    #[test]
    fn register_update_and_lookup() {
        let (p, mut state, alice, _, name) = setup();
        let got = state.lookup(&name, 10).unwrap();
        assert_eq!((got.sequence, got.expiry_height), (1, 110));
        assert_eq!(got.owner, Owner::of(&alice));
        let op =
            Operation::update(&alice, &p.chain_id, name.clone(), 2, a_record(2), None).unwrap();
        state.apply_op(&p, &op, 11).unwrap();
        assert_eq!(state.lookup(&name, 11).unwrap().records, a_record(2));
        let (value, proof) = state.prove(&name);
        verify(&state.root(), &name, value.as_ref(), &proof).unwrap();
    }

    #[test]
    fn replay_is_refused() {
        let (p, mut state, alice, _, name) = setup();
        let op =
            Operation::update(&alice, &p.chain_id, name.clone(), 2, a_record(2), None).unwrap();
        state.apply_op(&p, &op, 11).unwrap();
        assert_eq!(
            state.apply_op(&p, &op, 12),
            Err(OpError::Replay {
                name: name.clone(),
                sequence: 2,
                current: 2
            })
        );
        let skip =
            Operation::update(&alice, &p.chain_id, name.clone(), 5, a_record(2), None).unwrap();
        assert!(matches!(
            state.apply_op(&p, &skip, 12),
            Err(OpError::SequenceGap { expected: 3, .. })
        ));
    }

    #[test]
    fn bad_signature_is_refused() {
        let (p, mut state, alice, _, name) = setup();
        let mut op =
            Operation::update(&alice, &p.chain_id, name.clone(), 2, a_record(2), None).unwrap();
        op.body.action = Action::Update {
            records: a_record(66),
            content: None,
        };
        assert_eq!(
            state.apply_op(&p, &op, 11),
            Err(OpError::BadSignature { name })
        );
    }

    #[test]
    fn transfer_then_old_key_is_refused() {
        let (p, mut state, alice, bob, name) = setup();
        let op =
            Operation::transfer(&alice, &p.chain_id, name.clone(), 2, Owner::of(&bob)).unwrap();
        state.apply_op(&p, &op, 11).unwrap();
        let old =
            Operation::update(&alice, &p.chain_id, name.clone(), 3, a_record(3), None).unwrap();
        assert_eq!(
            state.apply_op(&p, &old, 12),
            Err(OpError::WrongOwner {
                name: name.clone(),
                owner: Owner::of(&bob),
                signer: Owner::of(&alice)
            })
        );
        let new = Operation::update(&bob, &p.chain_id, name.clone(), 3, a_record(3), None).unwrap();
        state.apply_op(&p, &new, 12).unwrap();
        // A forged body claiming to be bob but signed by alice fails the signature.
        let mut forged =
            Operation::update(&alice, &p.chain_id, name.clone(), 4, a_record(4), None).unwrap();
        forged.body.signer = Owner::of(&bob);
        assert_eq!(
            state.apply_op(&p, &forged, 13),
            Err(OpError::BadSignature { name })
        );
    }

    #[test]
    fn expiry_hides_name_and_refuses_ops_until_reregistered() {
        let (p, mut state, alice, bob, name) = setup();
        assert!(state.lookup(&name, 109).is_some());
        assert!(state.lookup(&name, 110).is_none());
        let late =
            Operation::update(&alice, &p.chain_id, name.clone(), 2, a_record(2), None).unwrap();
        assert_eq!(
            state.apply_op(&p, &late, 110),
            Err(OpError::NameExpired {
                name: name.clone(),
                expiry_height: 110,
                now_height: 110
            })
        );
        // Someone else takes it; the sequence continues so alice's old ops stay replays.
        let stale = Operation::register(
            &bob,
            &p.chain_id,
            p.difficulty_bits,
            name.clone(),
            1,
            a_record(5),
            None,
        )
        .unwrap();
        assert!(matches!(
            state.apply_op(&p, &stale, 110),
            Err(OpError::Replay { .. })
        ));
        let take = Operation::register(
            &bob,
            &p.chain_id,
            p.difficulty_bits,
            name.clone(),
            2,
            a_record(5),
            None,
        )
        .unwrap();
        state.apply_op(&p, &take, 110).unwrap();
        assert_eq!(state.lookup(&name, 110).unwrap().owner, Owner::of(&bob));
    }

    #[test]
    fn register_rules() {
        let (p, mut state, _, bob, name) = setup();
        let taken = Operation::register(
            &bob,
            &p.chain_id,
            p.difficulty_bits,
            name.clone(),
            2,
            a_record(5),
            None,
        )
        .unwrap();
        assert!(matches!(
            state.apply_op(&p, &taken, 20),
            Err(OpError::NameTaken {
                expiry_height: 110,
                ..
            })
        ));
        let other = Name::parse("other").unwrap();
        let mut body = OpBody {
            name: other.clone(),
            sequence: 1,
            signer: Owner::of(&bob),
            action: Action::Register {
                records: a_record(1),
                content: None,
                nonce: 0,
            },
        };
        // Find a nonce that fails the difficulty.
        let nonce = (0..).find(|n| {
            if let Action::Register { nonce, .. } = &mut body.action {
                *nonce = *n;
            }
            body.work_bits(&p.chain_id) < 4
        });
        assert!(nonce.is_some());
        let weak = body.sign(&bob, &p.chain_id).unwrap();
        assert!(matches!(
            state.apply_op(&p, &weak, 20),
            Err(OpError::InsufficientWork {
                required_bits: 4,
                ..
            })
        ));
        let renew = Operation::renew(&bob, &p.chain_id, other.clone(), 1).unwrap();
        assert_eq!(
            state.apply_op(&p, &renew, 20),
            Err(OpError::NameNotFound { name: other })
        );
    }

    #[test]
    fn renew_extends_up_to_the_lifetime() {
        let (p, mut state, alice, _, name) = setup();
        let renew = Operation::renew(&alice, &p.chain_id, name.clone(), 2).unwrap();
        state.apply_op(&p, &renew, 50).unwrap();
        assert_eq!(state.get(&name).unwrap().expiry_height, 210);
        let again = Operation::renew(&alice, &p.chain_id, name.clone(), 3).unwrap();
        assert_eq!(
            state.apply_op(&p, &again, 50),
            Err(OpError::RenewTooFar {
                name,
                requested: 310,
                max_height: 300
            })
        );
    }

    #[test]
    fn batches_are_all_or_nothing_and_revert() {
        let (p, mut state, alice, bob, name) = setup();
        let root = state.root();
        let new = Name::parse("fresh").unwrap();
        let ops = vec![
            Operation::update(&alice, &p.chain_id, name.clone(), 2, a_record(2), None).unwrap(),
            Operation::register(
                &bob,
                &p.chain_id,
                p.difficulty_bits,
                new.clone(),
                1,
                a_record(3),
                None,
            )
            .unwrap(),
            Operation::update(&alice, &p.chain_id, name.clone(), 3, a_record(4), None).unwrap(),
        ];
        let mut bad = ops.clone();
        bad.push(
            Operation::update(&alice, &p.chain_id, name.clone(), 3, a_record(4), None).unwrap(),
        );
        let err = state.apply_ops(&p, &bad, 11).unwrap_err();
        assert_eq!(err.index, 3);
        assert!(matches!(err.source, OpError::Replay { .. }));
        assert_eq!(state.root(), root);
        let undo = state.apply_ops(&p, &ops, 11).unwrap();
        assert_eq!(state.get(&name).unwrap().sequence, 3);
        assert!(state.get(&new).is_some());
        state.revert(undo);
        assert_eq!(state.root(), root);
        assert!(state.get(&new).is_none());
    }
}
