//! The state tree: a sparse Merkle tree over `sha256(name)` whose leaves
//! commit to `sha256(NameState::to_bytes())`, with inclusion and
//! non-existence proofs against its root.
//!
//! The tree is the compacted form used by Diem's Jellyfish tree: a subtree
//! that holds one leaf is represented by that leaf, so a proof is as deep as
//! the leaf's shortest unique prefix (about log2(n) levels), not 256. Empty
//! subtrees hash to 32 zero bytes. Since the shape depends only on the set of
//! keys, the root is independent of insertion order.
//!
//! Hashes are domain-separated: `leaf = sha256(0x00 || key || value_hash)`,
//! `branch = sha256(0x01 || left || right)`.
//!
//! A [`Proof`] lists the siblings from the root down, omitting empty ones
//! with a bitmap, and ends in a terminal: the queried leaf itself (inclusion),
//! an empty subtree, or another leaf whose key shares the path (both prove
//! non-existence). [`verify`] needs only the root, the name and the claimed
//! state; it does no IO.

use crate::registry::codec::{DecodeError, Hash, Reader, VERSION, Writer, check_input_len, sha256};
use crate::registry::model::{Name, NameState};

/// The hash of an empty subtree.
pub const EMPTY_HASH: Hash = [0; 32];

/// Deepest possible proof: one sibling per key bit.
pub const MAX_PROOF_DEPTH: usize = 256;

/// Largest encoded proof: version, depth, bitmap, every sibling, and an
/// other-leaf terminal.
pub const MAX_PROOF_BYTES: usize = 1 + 2 + MAX_PROOF_DEPTH / 8 + MAX_PROOF_DEPTH * 32 + 1 + 64;

const LEAF_TAG: u8 = 0x00;
const BRANCH_TAG: u8 = 0x01;

/// The tree key of a name: `sha256` of its label.
pub fn name_key(name: &Name) -> Hash {
    sha256(&[name.as_str().as_bytes()])
}

/// What a leaf commits to for a state: `sha256` of its canonical encoding.
pub fn value_hash(state: &NameState) -> Hash {
    sha256(&[&state.to_bytes()])
}

fn leaf_hash(key: &Hash, value_hash: &Hash) -> Hash {
    sha256(&[&[LEAF_TAG], key, value_hash])
}

fn branch_hash(left: &Hash, right: &Hash) -> Hash {
    sha256(&[&[BRANCH_TAG], left, right])
}

/// Bit `depth` of `key`, most significant first; `true` means right.
fn bit(key: &Hash, depth: usize) -> bool {
    key[depth / 8] >> (7 - depth % 8) & 1 == 1
}

/// Why a proof does not prove what was claimed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// An inclusion proof was given for an absent claim, or the reverse.
    #[error("proof is a {proof} proof but the claim is {claim}")]
    KindMismatch {
        /// What the proof proves (`inclusion` or `non-existence`).
        proof: &'static str,
        /// What was claimed (`present` or `absent`).
        claim: &'static str,
    },
    /// A non-existence proof ends in a leaf for the queried key itself.
    #[error("non-existence proof ends in the queried key's own leaf")]
    TerminalIsTarget,
    /// A non-existence proof ends in a leaf that is not on the key's path.
    #[error("non-existence proof ends in a leaf off the key's path at depth {depth}")]
    TerminalOffPath {
        /// The proof's depth.
        depth: usize,
    },
    /// The proof leads to a different root.
    #[error("proof computes root {computed}, expected {expected}")]
    RootMismatch {
        /// The root asked for, hex.
        expected: String,
        /// The root the proof computes, hex.
        computed: String,
    },
}

/// Where a proof's path ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Terminal {
    /// At the queried key's own leaf: the claim must be a state.
    Included,
    /// At an empty subtree: the key is absent.
    Empty,
    /// At another key's leaf sharing the path: the key is absent.
    Leaf {
        /// The other leaf's key.
        key: Hash,
        /// The other leaf's value hash.
        value_hash: Hash,
    },
}

/// A compact Merkle proof for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// Sibling hashes from the root down; `None` for an empty sibling.
    pub siblings: Vec<Option<Hash>>,
    /// Where the path ends.
    pub terminal: Terminal,
}

impl Proof {
    /// The canonical encoding: version, depth (u16), a presence bitmap (one
    /// bit per level, most significant first, zero padding), the present
    /// siblings, then the terminal (tag 0 included, 1 empty, 2 leaf with key
    /// and value hash).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(VERSION);
        w.u16(self.siblings.len() as u16);
        let mut bitmap = vec![0u8; self.siblings.len().div_ceil(8)];
        for (i, sibling) in self.siblings.iter().enumerate() {
            if sibling.is_some() {
                bitmap[i / 8] |= 0x80 >> (i % 8);
            }
        }
        w.raw(&bitmap);
        for sibling in self.siblings.iter().flatten() {
            w.raw(sibling);
        }
        match &self.terminal {
            Terminal::Included => w.u8(0),
            Terminal::Empty => w.u8(1),
            Terminal::Leaf { key, value_hash } => {
                w.u8(2);
                w.raw(key);
                w.raw(value_hash);
            }
        }
        w.finish()
    }

    /// Decodes [`Proof::to_bytes`] output, refusing anything else (including
    /// set padding bits and present siblings that equal the empty hash).
    pub fn from_bytes(data: &[u8]) -> Result<Self, DecodeError> {
        check_input_len("proof", data, MAX_PROOF_BYTES)?;
        let mut r = Reader::new(data);
        r.version("proof version")?;
        let offset = r.offset();
        let depth = r.u16("proof depth")? as usize;
        if depth > MAX_PROOF_DEPTH {
            return Err(DecodeError::TooLarge {
                what: "proof depth",
                offset,
                len: depth,
                max: MAX_PROOF_DEPTH,
            });
        }
        let offset = r.offset();
        let bitmap = r.take("proof bitmap", depth.div_ceil(8))?;
        if !depth.is_multiple_of(8) && bitmap[depth / 8] & (0xff >> (depth % 8)) != 0 {
            return Err(DecodeError::NonCanonical {
                what: "proof bitmap padding",
                offset: offset + depth / 8,
            });
        }
        let mut siblings = Vec::with_capacity(depth);
        for i in 0..depth {
            if bitmap[i / 8] & (0x80 >> (i % 8)) == 0 {
                siblings.push(None);
                continue;
            }
            let offset = r.offset();
            let hash = r.array::<32>("proof sibling")?;
            if hash == EMPTY_HASH {
                return Err(DecodeError::NonCanonical {
                    what: "proof sibling",
                    offset,
                });
            }
            siblings.push(Some(hash));
        }
        let offset = r.offset();
        let terminal = match r.u8("proof terminal")? {
            0 => Terminal::Included,
            1 => Terminal::Empty,
            2 => Terminal::Leaf {
                key: r.array("proof terminal key")?,
                value_hash: r.array("proof terminal value hash")?,
            },
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "proof terminal",
                    offset,
                    tag: tag.into(),
                });
            }
        };
        r.finish("proof")?;
        Ok(Self { siblings, terminal })
    }
}

/// Checks that `proof` shows `name` holding `state` (or, for `None`, holding
/// nothing) in the tree with root `root`.
pub fn verify(
    root: &Hash,
    name: &Name,
    state: Option<&NameState>,
    proof: &Proof,
) -> Result<(), ProofError> {
    verify_key(root, &name_key(name), state.map(value_hash).as_ref(), proof)
}

/// [`verify`] on a raw tree key and value hash.
pub fn verify_key(
    root: &Hash,
    key: &Hash,
    value: Option<&Hash>,
    proof: &Proof,
) -> Result<(), ProofError> {
    let depth = proof.siblings.len();
    let mut node = match (&proof.terminal, value) {
        (Terminal::Included, Some(value)) => leaf_hash(key, value),
        (Terminal::Included, None) => {
            return Err(ProofError::KindMismatch {
                proof: "inclusion",
                claim: "absent",
            });
        }
        (_, Some(_)) => {
            return Err(ProofError::KindMismatch {
                proof: "non-existence",
                claim: "present",
            });
        }
        (Terminal::Empty, None) => EMPTY_HASH,
        (
            Terminal::Leaf {
                key: other,
                value_hash,
            },
            None,
        ) => {
            if other == key {
                return Err(ProofError::TerminalIsTarget);
            }
            if (0..depth).any(|i| bit(other, i) != bit(key, i)) {
                return Err(ProofError::TerminalOffPath { depth });
            }
            leaf_hash(other, value_hash)
        }
    };
    for (i, sibling) in proof.siblings.iter().enumerate().rev() {
        let sibling = sibling.unwrap_or(EMPTY_HASH);
        node = if bit(key, i) {
            branch_hash(&sibling, &node)
        } else {
            branch_hash(&node, &sibling)
        };
    }
    if &node != root {
        return Err(ProofError::RootMismatch {
            expected: hex::encode(root),
            computed: hex::encode(node),
        });
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum Node {
    Leaf {
        key: Hash,
        value_hash: Hash,
    },
    Branch {
        hash: Hash,
        left: Option<Box<Node>>,
        right: Option<Box<Node>>,
    },
}

impl Node {
    fn hash(&self) -> Hash {
        match self {
            Node::Leaf { key, value_hash } => leaf_hash(key, value_hash),
            Node::Branch { hash, .. } => *hash,
        }
    }

    fn branch(left: Option<Box<Node>>, right: Option<Box<Node>>) -> Box<Node> {
        let hash = branch_hash(&opt_hash(&left), &opt_hash(&right));
        Box::new(Node::Branch { hash, left, right })
    }
}

fn opt_hash(node: &Option<Box<Node>>) -> Hash {
    node.as_ref().map_or(EMPTY_HASH, |n| n.hash())
}

/// The tree itself: an in-memory compacted sparse Merkle tree. Branches cache
/// their hash, so an update rehashes one path.
#[derive(Debug, Clone, Default)]
pub struct Smt {
    root: Option<Box<Node>>,
    len: usize,
}

impl Smt {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a tree from leaves in one pass (two hashes per leaf), faster
    /// than inserting one by one. A key given twice keeps its last value.
    pub fn from_leaves(leaves: impl IntoIterator<Item = (Hash, Hash)>) -> Self {
        let mut leaves: Vec<(Hash, Hash)> = leaves.into_iter().collect();
        // Stable sort, then keep the last of equal keys.
        leaves.sort_by_key(|a| a.0);
        let mut unique: Vec<(Hash, Hash)> = Vec::with_capacity(leaves.len());
        for leaf in leaves {
            match unique.last_mut() {
                Some(last) if last.0 == leaf.0 => *last = leaf,
                _ => unique.push(leaf),
            }
        }
        let len = unique.len();
        Self {
            root: build(&unique, 0),
            len,
        }
    }

    /// The root hash; [`EMPTY_HASH`] for an empty tree.
    pub fn root(&self) -> Hash {
        opt_hash(&self.root)
    }

    /// Number of leaves.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the tree has no leaves.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sets the value hash of `key`.
    pub fn insert(&mut self, key: Hash, value_hash: Hash) {
        let (root, added) = insert(self.root.take(), 0, key, value_hash);
        self.root = Some(root);
        self.len += usize::from(added);
    }

    /// Removes `key`; returns whether it was present.
    pub fn remove(&mut self, key: &Hash) -> bool {
        let (root, removed) = remove(self.root.take(), 0, key);
        self.root = root;
        self.len -= usize::from(removed);
        removed
    }

    /// The proof for `key`, of inclusion if present, else of non-existence.
    pub fn prove(&self, key: &Hash) -> Proof {
        let mut siblings = Vec::new();
        let mut node = &self.root;
        let mut depth = 0;
        loop {
            match node.as_deref() {
                None => {
                    return Proof {
                        siblings,
                        terminal: Terminal::Empty,
                    };
                }
                Some(Node::Leaf { key: k, value_hash }) => {
                    let terminal = if k == key {
                        Terminal::Included
                    } else {
                        Terminal::Leaf {
                            key: *k,
                            value_hash: *value_hash,
                        }
                    };
                    return Proof { siblings, terminal };
                }
                Some(Node::Branch { left, right, .. }) => {
                    let (next, other) = if bit(key, depth) {
                        (right, left)
                    } else {
                        (left, right)
                    };
                    siblings.push(other.as_ref().map(|n| n.hash()));
                    node = next;
                    depth += 1;
                }
            }
        }
    }
}

fn build(leaves: &[(Hash, Hash)], depth: usize) -> Option<Box<Node>> {
    match leaves {
        [] => None,
        [(key, value_hash)] => Some(Box::new(Node::Leaf {
            key: *key,
            value_hash: *value_hash,
        })),
        _ => {
            let split = leaves.partition_point(|(k, _)| !bit(k, depth));
            Some(Node::branch(
                build(&leaves[..split], depth + 1),
                build(&leaves[split..], depth + 1),
            ))
        }
    }
}

/// Inserts under `node` at `depth`; returns the new subtree and whether a
/// leaf was added (rather than replaced).
fn insert(node: Option<Box<Node>>, depth: usize, key: Hash, value_hash: Hash) -> (Box<Node>, bool) {
    match node.map(|n| *n) {
        None => (Box::new(Node::Leaf { key, value_hash }), true),
        Some(Node::Leaf { key: k, .. }) if k == key => {
            (Box::new(Node::Leaf { key, value_hash }), false)
        }
        Some(Node::Leaf {
            key: old_key,
            value_hash: old_value,
        }) => {
            let old = Box::new(Node::Leaf {
                key: old_key,
                value_hash: old_value,
            });
            let new = Box::new(Node::Leaf { key, value_hash });
            (split(old, &old_key, new, &key, depth), true)
        }
        Some(Node::Branch { left, right, .. }) => {
            if bit(&key, depth) {
                let (right, added) = insert(right, depth + 1, key, value_hash);
                (Node::branch(left, Some(right)), added)
            } else {
                let (left, added) = insert(left, depth + 1, key, value_hash);
                (Node::branch(Some(left), right), added)
            }
        }
    }
}

/// The subtree at `depth` holding two leaves with distinct keys.
fn split(a: Box<Node>, a_key: &Hash, b: Box<Node>, b_key: &Hash, depth: usize) -> Box<Node> {
    match (bit(a_key, depth), bit(b_key, depth)) {
        (false, true) => Node::branch(Some(a), Some(b)),
        (true, false) => Node::branch(Some(b), Some(a)),
        (false, false) => Node::branch(Some(split(a, a_key, b, b_key, depth + 1)), None),
        (true, true) => Node::branch(None, Some(split(a, a_key, b, b_key, depth + 1))),
    }
}

/// Removes `key` under `node` at `depth`, collapsing a branch left with a
/// single leaf into that leaf so the shape stays canonical.
fn remove(node: Option<Box<Node>>, depth: usize, key: &Hash) -> (Option<Box<Node>>, bool) {
    let Some(node) = node else {
        return (None, false);
    };
    match *node {
        Node::Leaf { key: k, .. } if &k == key => (None, true),
        Node::Leaf { .. } => (Some(node), false),
        Node::Branch { left, right, .. } => {
            let (left, right, removed) = if bit(key, depth) {
                let (right, removed) = remove(right, depth + 1, key);
                (left, right, removed)
            } else {
                let (left, removed) = remove(left, depth + 1, key);
                (left, right, removed)
            };
            let node = match (left, right) {
                (None, None) => None,
                (Some(only), None) | (None, Some(only)) if matches!(*only, Node::Leaf { .. }) => {
                    Some(only)
                }
                (left, right) => Some(Node::branch(left, right)),
            };
            (node, removed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::codec::tests::{arb_name, arb_state};
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::seq::SliceRandom;

    fn keys(n: usize, seed: u64) -> Vec<(Hash, Hash)> {
        (0..n as u64)
            .map(|i| {
                (
                    sha256(&[&seed.to_be_bytes(), &i.to_be_bytes()]),
                    sha256(&[&i.to_be_bytes()]),
                )
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn root_is_independent_of_insertion_order(n in 0usize..60, seed in any::<u64>(), removals in 0usize..10) {
            let leaves = keys(n + removals, seed);
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let mut shuffled = leaves.clone();
            shuffled.shuffle(&mut rng);
            let mut tree = Smt::new();
            for (k, v) in &shuffled {
                tree.insert(*k, *v);
            }
            // Overwrite some with garbage and then restore: updates are idempotent.
            for (k, _) in shuffled.iter().take(5) {
                tree.insert(*k, [9; 32]);
            }
            for (k, v) in shuffled.iter().take(5) {
                tree.insert(*k, *v);
            }
            for (k, _) in &leaves[n..] {
                prop_assert!(tree.remove(k));
            }
            let bulk = Smt::from_leaves(leaves[..n].iter().copied());
            prop_assert_eq!(tree.root(), bulk.root());
            prop_assert_eq!(tree.len(), n);
            if n == 0 {
                prop_assert_eq!(tree.root(), EMPTY_HASH);
            }
        }

        #[test]
        fn every_proof_verifies_and_no_byte_can_change(
            names in prop::collection::btree_set(arb_name(), 1..24),
            states in prop::collection::vec(arb_state(), 24),
            absent in arb_name(),
            flip in any::<prop::sample::Index>(),
            xor in 1u8..,
        ) {
            let entries: Vec<_> = names.iter().cloned().zip(states.iter().cloned()).collect();
            let tree = Smt::from_leaves(entries.iter().map(|(n, s)| (name_key(n), value_hash(s))));
            let root = tree.root();
            let mut claims: Vec<(Name, Option<NameState>)> =
                entries.iter().map(|(n, s)| (n.clone(), Some(s.clone()))).collect();
            if !names.contains(&absent) {
                claims.push((absent, None));
            }
            for (name, state) in &claims {
                let proof = tree.prove(&name_key(name));
                verify(&root, name, state.as_ref(), &proof).unwrap();
                let bytes = proof.to_bytes();
                prop_assert_eq!(Proof::from_bytes(&bytes), Ok(proof.clone()));
                // Any single-byte change of the proof is refused.
                let mut bad = bytes.clone();
                let i = flip.index(bad.len());
                bad[i] ^= xor;
                if let Ok(bad) = Proof::from_bytes(&bad) {
                    prop_assert!(verify(&root, name, state.as_ref(), &bad).is_err(), "byte {} changed", i);
                }
                // Any single-byte change of the value is refused.
                match state {
                    Some(state) => {
                        let mut value = state.to_bytes();
                        let i = flip.index(value.len());
                        value[i] ^= xor;
                        if let Ok(other) = NameState::from_bytes(&value) {
                            prop_assert!(verify(&root, name, Some(&other), &proof).is_err());
                        }
                        prop_assert!(verify(&root, name, None, &proof).is_err());
                    }
                    None => {
                        prop_assert!(verify(&root, name, Some(&states[0]), &proof).is_err());
                    }
                }
            }
        }
    }

    #[test]
    fn proofs_in_an_empty_and_a_single_leaf_tree() {
        let tree = Smt::new();
        let name = Name::parse("hello").unwrap();
        let proof = tree.prove(&name_key(&name));
        assert_eq!(proof.terminal, Terminal::Empty);
        verify(&EMPTY_HASH, &name, None, &proof).unwrap();

        let mut tree = Smt::new();
        tree.insert(name_key(&Name::parse("other").unwrap()), [1; 32]);
        let proof = tree.prove(&name_key(&name));
        assert!(matches!(proof.terminal, Terminal::Leaf { .. }));
        assert!(proof.siblings.is_empty());
        verify(&tree.root(), &name, None, &proof).unwrap();
    }

    #[test]
    fn decode_rejects_non_canonical_proofs() {
        let leaves = keys(50, 1);
        let tree = Smt::from_leaves(leaves.iter().copied());
        let proof = tree.prove(&leaves[0].0);
        let bytes = proof.to_bytes();
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(
            Proof::from_bytes(&trailing),
            Err(DecodeError::TrailingBytes { .. })
        ));
        let depth = proof.siblings.len();
        if !depth.is_multiple_of(8) {
            let mut padded = bytes.clone();
            padded[3 + depth / 8] |= 1;
            assert!(matches!(
                Proof::from_bytes(&padded),
                Err(DecodeError::NonCanonical {
                    what: "proof bitmap padding",
                    ..
                })
            ));
        }
    }

    /// Proof size and verify time at 1,000,000 names. Run with
    /// `cargo test --release -- --ignored --nocapture proof_size_at_a_million`.
    #[test]
    #[ignore = "bench: builds a 1M-leaf tree"]
    fn proof_size_at_a_million_names() {
        use std::time::Instant;
        const N: usize = 1_000_000;
        let leaves = keys(N, 7);
        let started = Instant::now();
        let mut tree = Smt::from_leaves(leaves.iter().copied());
        let build = started.elapsed();
        let root = tree.root();
        let samples = 10_000;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let picks: Vec<&(Hash, Hash)> = leaves.choose_multiple(&mut rng, samples).collect();
        let proofs: Vec<(Hash, Hash, Vec<u8>)> = picks
            .iter()
            .map(|(k, v)| (*k, *v, tree.prove(k).to_bytes()))
            .collect();
        let sizes: Vec<usize> = proofs.iter().map(|p| p.2.len()).collect();
        let started = Instant::now();
        for (k, v, bytes) in &proofs {
            let proof = Proof::from_bytes(bytes).unwrap();
            verify_key(&root, k, Some(v), &proof).unwrap();
        }
        let verify_each = started.elapsed() / samples as u32;
        let absent: Vec<Hash> = (0..samples as u64)
            .map(|i| sha256(&[b"absent", &i.to_be_bytes()]))
            .collect();
        let absent_sizes: Vec<usize> = absent
            .iter()
            .map(|k| tree.prove(k).to_bytes().len())
            .collect();
        let started = Instant::now();
        for (i, (k, _, _)) in proofs.iter().enumerate().take(1000) {
            tree.insert(*k, sha256(&[&(i as u64).to_be_bytes()]));
        }
        let update_each = started.elapsed() / 1000;
        let mean = |v: &[usize]| v.iter().sum::<usize>() as f64 / v.len() as f64;
        println!(
            "n={N} build={build:?} inclusion proof bytes mean={:.0} max={} non-existence mean={:.0} max={} verify(decode+check)={verify_each:?} update={update_each:?}",
            mean(&sizes),
            sizes.iter().max().unwrap(),
            mean(&absent_sizes),
            absent_sizes.iter().max().unwrap(),
        );
    }
}
