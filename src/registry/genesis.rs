//! The devnet genesis: chain parameters and initial names, read from a TOML
//! file (`zones/genesis.toml`), and block 0 built from them.
//!
//! Block 0 is not stored or sealed: every node builds it from the same file.
//! Its `prev_hash` is the genesis digest (a hash over the canonical encoding
//! of the parameters, time and names), so two files that differ in anything
//! give different chains, and block 1 names the genesis it builds on.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::registry::block::{BlockHeader, ops_digest};
use crate::registry::codec::{Hash, Writer, put_content, put_owner, put_record_set, sha256};
use crate::registry::model::{ContentCid, ModelError, Name, NameState, Owner, RecordSet};
use crate::registry::params::{ChainId, ChainParams, ParamsError};
use crate::registry::state::RegistryState;
use crate::registry::text::RecordSpec;

/// Most names a genesis may allocate: the genesis is read whole into memory
/// and hashed at every start.
pub const MAX_GENESIS_NAMES: usize = 10_000;

/// Largest genesis file read.
pub const MAX_GENESIS_FILE_BYTES: u64 = 16 * 1024 * 1024;

const GENESIS_DOMAIN: &[u8] = b"gridedge/registry/genesis/v1\0";

/// The devnet genesis used when the config names none: `zones/genesis.toml`
/// as it was at build time, so the edge runs from any directory.
pub const DEVNET_GENESIS: &str = include_str!("../../zones/genesis.toml");

/// Why a genesis file is unusable. Names the file (when read from one) and
/// the entry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GenesisError {
    /// The file could not be read.
    #[error("reading genesis {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_GENESIS_FILE_BYTES`].
    #[error("genesis {path} is {len} bytes, more than {max}")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        len: u64,
        /// The bound.
        max: u64,
    },
    /// The TOML does not parse or has unknown fields.
    #[error("genesis is not valid TOML for a genesis: {source}")]
    Toml {
        /// The parser's error, with line and column.
        source: toml::de::Error,
    },
    /// A chain parameter is out of range.
    #[error("genesis parameters: {source}")]
    Params {
        /// What is wrong.
        source: ParamsError,
    },
    /// The sequencer key is not a public key.
    #[error("genesis sequencer: {source}")]
    Sequencer {
        /// What is wrong.
        source: ModelError,
    },
    /// A name entry is invalid.
    #[error("genesis name entry {index} ({name:?}): {source}")]
    Name {
        /// Index among the `[[names]]` entries.
        index: usize,
        /// The name as written.
        name: String,
        /// What is wrong.
        source: ModelError,
    },
    /// A name appears twice.
    #[error("genesis name {name} appears more than once")]
    DuplicateName {
        /// The name.
        name: Name,
    },
    /// A name's expiry is 0 or beyond the maximum lifetime.
    #[error("genesis name {name}: expiry height {expiry_height} must be in 1..={max}")]
    BadExpiry {
        /// The name.
        name: Name,
        /// The expiry given.
        expiry_height: u64,
        /// The maximum lifetime.
        max: u64,
    },
    /// More names than [`MAX_GENESIS_NAMES`].
    #[error("genesis allocates {count} names, more than {max}")]
    TooManyNames {
        /// Names given.
        count: usize,
        /// The bound.
        max: usize,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGenesis {
    chain_id: String,
    sequencer: String,
    difficulty_bits: u8,
    registration_period_blocks: u64,
    max_lifetime_blocks: u64,
    time_unix_secs: u64,
    #[serde(default)]
    names: Vec<RawName>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawName {
    name: String,
    owner: String,
    expiry_height: u64,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    records: Vec<RecordSpec>,
}

/// A validated genesis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Genesis {
    /// The chain's parameters.
    pub params: ChainParams,
    /// Block 0's time, Unix seconds.
    pub time_unix_secs: u64,
    /// The initial names, sorted by name, each with sequence 0.
    pub names: Vec<(Name, NameState)>,
}

impl Genesis {
    /// Reads and validates a genesis file.
    pub fn load(path: &Path) -> Result<Self, GenesisError> {
        let read_err = |source| GenesisError::Read {
            path: path.to_owned(),
            source,
        };
        let len = std::fs::metadata(path).map_err(read_err)?.len();
        if len > MAX_GENESIS_FILE_BYTES {
            return Err(GenesisError::TooLarge {
                path: path.to_owned(),
                len,
                max: MAX_GENESIS_FILE_BYTES,
            });
        }
        let text = std::fs::read_to_string(path).map_err(read_err)?;
        Self::from_toml_str(&text)
    }

    /// Parses and validates genesis TOML.
    pub fn from_toml_str(text: &str) -> Result<Self, GenesisError> {
        let raw: RawGenesis =
            toml::from_str(text).map_err(|source| GenesisError::Toml { source })?;
        let params = ChainParams {
            chain_id: ChainId::new(&raw.chain_id)
                .map_err(|source| GenesisError::Params { source })?,
            sequencer: Owner::from_hex(&raw.sequencer)
                .map_err(|source| GenesisError::Sequencer { source })?,
            difficulty_bits: raw.difficulty_bits,
            registration_period_blocks: raw.registration_period_blocks,
            max_lifetime_blocks: raw.max_lifetime_blocks,
        };
        params
            .validate()
            .map_err(|source| GenesisError::Params { source })?;
        if raw.names.len() > MAX_GENESIS_NAMES {
            return Err(GenesisError::TooManyNames {
                count: raw.names.len(),
                max: MAX_GENESIS_NAMES,
            });
        }
        let mut names = Vec::with_capacity(raw.names.len());
        for (index, entry) in raw.names.into_iter().enumerate() {
            let bad = |source| GenesisError::Name {
                index,
                name: entry.name.clone(),
                source,
            };
            let name = Name::parse(&entry.name).map_err(bad)?;
            let records = entry
                .records
                .iter()
                .map(RecordSpec::to_record)
                .collect::<Result<Vec<_>, _>>()
                .and_then(RecordSet::new)
                .map_err(bad)?;
            let content = entry
                .content
                .as_deref()
                .map(ContentCid::parse)
                .transpose()
                .map_err(bad)?;
            let owner = Owner::from_hex(&entry.owner).map_err(bad)?;
            if entry.expiry_height == 0 || entry.expiry_height > params.max_lifetime_blocks {
                return Err(GenesisError::BadExpiry {
                    name,
                    expiry_height: entry.expiry_height,
                    max: params.max_lifetime_blocks,
                });
            }
            let state = NameState {
                owner,
                records,
                content,
                sequence: 0,
                expiry_height: entry.expiry_height,
            };
            names.push((name, state));
        }
        names.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(pair) = names.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(GenesisError::DuplicateName {
                name: pair[0].0.clone(),
            });
        }
        Ok(Self {
            params,
            time_unix_secs: raw.time_unix_secs,
            names,
        })
    }

    /// The hash over the canonical encoding of the whole genesis.
    pub fn digest(&self) -> Hash {
        let mut w = Writer::new();
        w.raw(GENESIS_DOMAIN);
        self.params.encode(&mut w);
        w.u64(self.time_unix_secs);
        w.u32(self.names.len() as u32);
        for (name, state) in &self.names {
            w.bytes8(name.as_str().as_bytes());
            put_owner(&mut w, &state.owner);
            w.u64(state.expiry_height);
            put_content(&mut w, state.content.as_ref());
            put_record_set(&mut w, &state.records);
        }
        sha256(&[&w.finish()])
    }

    /// The state at height 0.
    pub fn state(&self) -> RegistryState {
        RegistryState::from_states(self.names.iter().cloned())
    }

    /// Block 0's header: height 0, the digest as `prev_hash`, no operations,
    /// the state root of the initial names.
    pub fn header(&self) -> BlockHeader {
        BlockHeader {
            height: 0,
            prev_hash: self.digest(),
            time_unix_secs: self.time_unix_secs,
            ops_digest: ops_digest(&[]),
            state_root: self.state().root(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::keys::dev_key;
    use crate::registry::model::{RecordData, RecordType, Subname};

    /// The shipped sample genesis.
    pub(crate) const SAMPLE: &str = DEVNET_GENESIS;

    #[test]
    fn sample_genesis_parses_and_uses_the_dev_keys() {
        let genesis = Genesis::from_toml_str(SAMPLE).unwrap();
        assert_eq!(genesis.params.sequencer, Owner::of(&dev_key(0)));
        let (name, state) = &genesis.names[0];
        assert_eq!(name.as_str(), "hello");
        assert_eq!(state.owner, Owner::of(&dev_key(1)));
        let apex = Subname::apex();
        let a: Vec<_> = state.records.at(&apex, Some(RecordType::A)).collect();
        assert_eq!(a[0].data, RecordData::A(std::net::Ipv4Addr::LOCALHOST));
        assert_eq!(state.records.at(&apex, Some(RecordType::Txt)).count(), 1);
        let header = genesis.header();
        assert_eq!(header.prev_hash, genesis.digest());
        assert_eq!(header.state_root, genesis.state().root());
    }

    #[test]
    fn bad_genesis_is_refused_with_the_entry() {
        let bad_name = SAMPLE.replace("name = \"hello\"", "name = \"he llo\"");
        assert!(matches!(
            Genesis::from_toml_str(&bad_name),
            Err(GenesisError::Name { index: 0, .. })
        ));
        let unknown = format!("{SAMPLE}\nsurprise = 1\n");
        assert!(matches!(
            Genesis::from_toml_str(&unknown),
            Err(GenesisError::Toml { .. })
        ));
        let bad_ip = SAMPLE.replace("127.0.0.1", "127.0.0.1.5");
        assert!(matches!(
            Genesis::from_toml_str(&bad_ip),
            Err(GenesisError::Name { .. })
        ));
        let changed = SAMPLE.replace("time_unix_secs = 1767225600", "time_unix_secs = 1767225601");
        assert_ne!(
            Genesis::from_toml_str(&changed).unwrap().digest(),
            Genesis::from_toml_str(SAMPLE).unwrap().digest()
        );
    }
}
