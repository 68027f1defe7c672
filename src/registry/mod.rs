//! The name registry: names, owners, records, signed operations, the devnet
//! chain and its on-disk log, the state tree and its proofs, and the chain
//! sources behind [`source::RegistrySource`].
//!
//! One concern per file:
//!
//! | file | holds |
//! | --- | --- |
//! | `model.rs` | `Name`, `Zone`, `Owner`, records, `RecordSet`, `NameState`, and the size limits |
//! | `text.rs` | record data in presentation format, `RecordSpec` for TOML/JSON |
//! | `codec.rs` | the canonical binary encoding and `DecodeError` |
//! | `params.rs` | `ChainParams` and `ChainId` |
//! | `op.rs` | signed operations, proof of work, `OpError` |
//! | `smt.rs` | the sparse Merkle tree, `Proof`, `verify` |
//! | `state.rs` | `RegistryState`: applying operations under the rules |
//! | `block.rs` | block headers, blocks, seals |
//! | `chain.rs` | `produce_block`, `verify_block`, `NameProof` |
//! | `genesis.rs` | the genesis file and block 0 |
//! | `keys.rs` | key generation, hex key files, the devnet dev keys |
//! | `store.rs` | the crash-safe block log |
//! | `source.rs` | `RegistrySource` and `DevnetSource` |
//! | `service.rs` | `Registry`: the source as the running edge shares it |
//! | `follow.rs` | a follower's pull loop against the sequencer's admin API |
//! | `client.rs` | the `name` and `chain` commands, over the admin API |
//! | `fuzz.rs` | `fuzz_decode` for the fuzz crate |
//!
//! Everything but `store.rs`, `genesis.rs` (file loading), `source.rs`,
//! `keys.rs` (key files) and the last three runtime files is pure: no IO,
//! no clock; heights and times are arguments. DNS answers for the zone
//! live in `src/dns/registry.rs`, the admin routes in
//! `src/admin/registry.rs`.

pub mod block;
pub mod chain;
pub mod client;
pub mod codec;
pub mod follow;
pub mod fuzz;
pub mod genesis;
pub mod keys;
pub mod model;
pub mod op;
pub mod params;
pub mod service;
pub mod smt;
pub mod source;
pub mod state;
pub mod store;
pub mod text;

pub use fuzz::fuzz_decode;
