//! The node's identity: an Ed25519 key pair kept in `DATA_DIR/node.key`,
//! made on first run and the same on every run after. Its public key names
//! the node to other edges (and becomes its libp2p PeerId).

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use rand::RngCore;

/// Why the identity could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The key file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The key file is not 32 bytes of hex-encoded secret key.
    #[error("{path}: not an Ed25519 secret key (expected 64 hex digits)")]
    Malformed { path: PathBuf },
}

/// The node's key pair.
pub struct Identity {
    key: SigningKey,
}

impl Identity {
    /// The Ed25519 secret, for the libp2p identity (the same key, so the
    /// PeerId names this node).
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// Loads `DATA_DIR/node.key`, or makes it if it does not exist.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, IdentityError> {
        let path = data_dir.join("node.key");
        let io = |source| IdentityError::Io {
            path: path.clone(),
            source,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let bytes: [u8; 32] = hex::decode(text.trim())
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| IdentityError::Malformed { path: path.clone() })?;
                Ok(Self {
                    key: SigningKey::from_bytes(&bytes),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut secret = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut secret);
                crate::fsutil::write_atomic(
                    &path,
                    format!("{}\n", hex::encode(secret)).as_bytes(),
                    true,
                )
                .map_err(io)?;
                Ok(Self {
                    key: SigningKey::from_bytes(&secret),
                })
            }
            Err(e) => Err(io(e)),
        }
    }

    /// The public key, hex-encoded: the node's name in logs and status.
    pub fn node_id(&self) -> String {
        hex::encode(self.key.verifying_key().as_bytes())
    }

    /// The signing key.
    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_stable() {
        let dir = tempfile::tempdir().unwrap();
        let a = Identity::load_or_create(dir.path()).unwrap().node_id();
        let b = Identity::load_or_create(dir.path()).unwrap().node_id();
        assert_eq!(a, b);
        std::fs::write(dir.path().join("node.key"), "zz").unwrap();
        let err = Identity::load_or_create(dir.path())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("node.key"), "{err}");
    }
}
