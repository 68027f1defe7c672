//! Owner and sequencer keys: generating them, writing and reading them as
//! hex, and the well-known devnet keys.
//!
//! The devnet keys are public on purpose, like anvil's well-known accounts:
//! dev key `i` has the secret `SHA-256("gridedge devnet dev key " + i)`,
//! with `i` in decimal. Key 0 seals the devnet chain; key 1 owns the
//! sample name `hello.grid` in `zones/genesis.toml`. Never use them outside a
//! devnet.

use ed25519_dalek::SigningKey;
use rand::CryptoRng;
use rand::RngCore;

use crate::registry::codec::sha256;

/// The text the devnet keys are derived from.
pub const DEV_KEY_SEED: &str = "gridedge devnet dev key ";

/// Why text is not a secret key.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The text is not 64 hex digits.
    #[error("a secret key is 64 hex digits; got {len} characters")]
    BadHex {
        /// Length of the text given (trimmed).
        len: usize,
    },
    /// The key file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::sync::Arc<std::io::Error>,
    },
}

/// Reads a key file: 64 hex digits of secret key.
pub fn read_key_file(path: &std::path::Path) -> Result<SigningKey, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_owned(),
        source: std::sync::Arc::new(source),
    })?;
    secret_from_hex(&text)
}

/// Writes `key` to a new key file readable by its owner only; an existing
/// file is never overwritten (it may hold the only copy of a name's key).
pub fn write_new_key_file(path: &std::path::Path, key: &SigningKey) -> Result<(), KeyError> {
    use std::io::Write;
    let io = |source| KeyError::Io {
        path: path.to_owned(),
        source: std::sync::Arc::new(source),
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(io)?;
    file.write_all(format!("{}\n", secret_to_hex(key)).as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io)
}

/// The well-known devnet key number `index`.
pub fn dev_key(index: u32) -> SigningKey {
    let secret = sha256(&[DEV_KEY_SEED.as_bytes(), index.to_string().as_bytes()]);
    SigningKey::from_bytes(&secret)
}

/// A fresh key from `rng` (the caller's OS RNG in the CLI, a seeded one in
/// tests).
pub fn generate_key<R: RngCore + CryptoRng>(rng: &mut R) -> SigningKey {
    SigningKey::generate(rng)
}

/// The secret key as 64 hex digits, the key file format.
pub fn secret_to_hex(key: &SigningKey) -> String {
    hex::encode(key.to_bytes())
}

/// Reads a secret key from 64 hex digits (surrounding whitespace ignored).
pub fn secret_from_hex(text: &str) -> Result<SigningKey, KeyError> {
    let text = text.trim();
    let mut secret = [0u8; 32];
    hex::decode_to_slice(text, &mut secret).map_err(|_| KeyError::BadHex { len: text.len() })?;
    Ok(SigningKey::from_bytes(&secret))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::model::Owner;
    use rand::SeedableRng;

    #[test]
    fn dev_keys_are_stable() {
        // These values are printed in zones/genesis.toml and the README.
        assert_eq!(
            secret_to_hex(&dev_key(0)),
            hex::encode(sha256(&[b"gridedge devnet dev key 0"]))
        );
        assert_ne!(dev_key(0).to_bytes(), dev_key(1).to_bytes());
    }

    #[test]
    fn hex_round_trips() {
        let key = generate_key(&mut rand_chacha::ChaCha20Rng::seed_from_u64(1));
        let back = secret_from_hex(&format!(" {}\n", secret_to_hex(&key))).unwrap();
        assert_eq!(Owner::of(&back), Owner::of(&key));
        assert!(matches!(
            secret_from_hex("abc"),
            Err(KeyError::BadHex { len: 3 })
        ));
    }

    #[test]
    #[ignore = "prints the dev keys for the docs"]
    fn print_dev_keys() {
        for i in 0..4 {
            println!(
                "dev key {i}: secret {} public {}",
                secret_to_hex(&dev_key(i)),
                Owner::of(&dev_key(i))
            );
        }
    }
}
