//! Private objects: the client encrypts a file before it is chunked, so the
//! blocks that reach the store and the overlay are noise to anyone without
//! the key. The key is random, made per object, returned to the user and
//! never stored.
//!
//! Format (a STREAM construction, as in age and Tink's streaming AEAD,
//! Hoang et al., "Online Authenticated-Encryption and its Nonce-Reuse
//! Misuse-Resistance", CRYPTO 2015):
//!
//! - The plaintext is cut into segments of [`SEGMENT_PLAINTEXT_BYTES`]
//!   (256 KiB − 16); the last one may be shorter, and is empty only when the
//!   whole plaintext is.
//! - Segment *i* is sealed with ChaCha20-Poly1305 (RFC 8439) under the
//!   object's 32-byte key, nonce = 11-byte big-endian *i* ‖ final flag
//!   (0x01 on the last segment, else 0x00), associated data
//!   `"gridedge private v1"`. A sealed segment is its ciphertext followed by
//!   the 16-byte tag, so a full one is exactly 256 KiB: one chunk, one block.
//! - The object is the concatenation of the sealed segments, imported as an
//!   ordinary UnixFS file; its CID names the ciphertext.
//!
//! Because the counter is in the nonce, segments cannot be reordered or
//! dropped; because the final flag is, the stream cannot be cut at a
//! segment boundary (the new last segment was sealed as not final) or
//! extended. A fresh random key per object means a (key, nonce) pair never
//! repeats. Decryption streams: it holds one segment at a time and returns
//! nothing of a segment that fails its tag.

use std::io::{self, Read};

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use crate::content::cid::Cid;
use crate::content::import::{ImportError, ImportOptions, import_reader};
use crate::content::read::{ReadError, Reader};
use crate::content::store::BlockStore;

/// The Poly1305 tag after each segment.
pub const TAG_BYTES: usize = 16;
/// Plaintext bytes per segment, chosen so a sealed segment is one 256 KiB
/// chunk.
pub const SEGMENT_PLAINTEXT_BYTES: usize = 256 * 1024 - TAG_BYTES;
/// A sealed full segment.
pub const SEGMENT_SEALED_BYTES: usize = SEGMENT_PLAINTEXT_BYTES + TAG_BYTES;
/// Associated data of every segment: the format and its version.
const AAD: &[u8] = b"gridedge private v1";

/// Why a private object could not be made or opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrivateError {
    /// The OS random source failed.
    #[error("no randomness for a key")]
    Random,
    /// A key in text form is not 64 hex digits.
    #[error("a key is 64 hex digits")]
    BadKey,
    /// A segment failed authentication: wrong key, or the object was
    /// altered, reordered, truncated or extended.
    #[error("segment {index} does not authenticate (wrong key, or altered or truncated data)")]
    Tampered {
        /// The segment's index.
        index: u64,
    },
    /// Importing the ciphertext failed.
    #[error(transparent)]
    Import(#[from] ImportError),
    /// Reading the ciphertext failed.
    #[error(transparent)]
    Read(#[from] ReadError),
}

/// An object's key. Its `Debug` does not print it.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKey([u8; 32]);

impl PrivateKey {
    /// A fresh key from the OS random source.
    pub fn generate() -> Result<PrivateKey, PrivateError> {
        let mut key = [0u8; 32];
        SystemRandom::new()
            .fill(&mut key)
            .map_err(|_| PrivateError::Random)?;
        Ok(PrivateKey(key))
    }

    /// The key from its bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> PrivateKey {
        PrivateKey(bytes)
    }

    /// The key as 64 lower-case hex digits, for the user to keep.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses [`PrivateKey::to_hex`]'s form.
    pub fn from_hex(text: &str) -> Result<PrivateKey, PrivateError> {
        let mut key = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut key).map_err(|_| PrivateError::BadKey)?;
        Ok(PrivateKey(key))
    }

    fn aead(&self) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &self.0).expect("32-byte key"))
    }
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivateKey(..)")
    }
}

fn nonce(index: u64, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[3..11].copy_from_slice(&index.to_be_bytes());
    n[11] = u8::from(last);
    Nonce::assume_unique_for_key(n)
}

/// Reads up to `len` bytes, fewer only at the end of `reader`.
fn fill(reader: &mut impl Read, buf: &mut Vec<u8>, len: usize) -> io::Result<()> {
    while buf.len() < len {
        let want = (len - buf.len()) as u64;
        let n = reader.take(want).read_to_end(buf)?;
        if n == 0 {
            break;
        }
    }
    Ok(())
}

/// Turns a plaintext stream into the sealed stream, one segment at a time.
pub struct Encryptor<R> {
    inner: R,
    key: LessSafeKey,
    index: u64,
    /// Plaintext read ahead: one segment plus one byte, to know whether the
    /// segment is the last.
    pending: Vec<u8>,
    out: Vec<u8>,
    pos: usize,
    done: bool,
}

impl<R: Read> Encryptor<R> {
    /// Encrypts `inner` under `key`.
    pub fn new(inner: R, key: &PrivateKey) -> Encryptor<R> {
        Encryptor {
            inner,
            key: key.aead(),
            index: 0,
            pending: Vec::with_capacity(SEGMENT_PLAINTEXT_BYTES + 1),
            out: Vec::new(),
            pos: 0,
            done: false,
        }
    }

    fn seal_next(&mut self) -> io::Result<()> {
        fill(
            &mut self.inner,
            &mut self.pending,
            SEGMENT_PLAINTEXT_BYTES + 1,
        )?;
        let last = self.pending.len() <= SEGMENT_PLAINTEXT_BYTES;
        let take = self.pending.len().min(SEGMENT_PLAINTEXT_BYTES);
        let mut segment: Vec<u8> = self.pending.drain(..take).collect();
        self.key
            .seal_in_place_append_tag(nonce(self.index, last), Aad::from(AAD), &mut segment)
            .map_err(|_| io::Error::other("seal failed"))?;
        self.index += 1;
        self.out = segment;
        self.pos = 0;
        self.done = last;
        Ok(())
    }
}

impl<R: Read> Read for Encryptor<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.out.len() {
            if self.done {
                return Ok(0);
            }
            self.seal_next()?;
        }
        let n = buf.len().min(self.out.len() - self.pos);
        buf[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Turns the sealed stream back into plaintext, checking every segment.
/// IO errors wrap a [`PrivateError`].
pub struct Decryptor<R> {
    inner: R,
    key: LessSafeKey,
    index: u64,
    pending: Vec<u8>,
    out: Vec<u8>,
    pos: usize,
    done: bool,
}

impl<R: Read> Decryptor<R> {
    /// Decrypts `inner` with `key`.
    pub fn new(inner: R, key: &PrivateKey) -> Decryptor<R> {
        Decryptor {
            inner,
            key: key.aead(),
            index: 0,
            pending: Vec::with_capacity(SEGMENT_SEALED_BYTES + 1),
            out: Vec::new(),
            pos: 0,
            done: false,
        }
    }

    fn open_next(&mut self) -> io::Result<()> {
        fill(&mut self.inner, &mut self.pending, SEGMENT_SEALED_BYTES + 1)?;
        let last = self.pending.len() <= SEGMENT_SEALED_BYTES;
        let take = self.pending.len().min(SEGMENT_SEALED_BYTES);
        let mut segment: Vec<u8> = self.pending.drain(..take).collect();
        let tampered = || io::Error::other(PrivateError::Tampered { index: self.index });
        // Under a tag's length, or empty after the first segment: cut short.
        if segment.len() < TAG_BYTES || (last && self.index > 0 && segment.len() == TAG_BYTES) {
            return Err(tampered());
        }
        let plain_len = self
            .key
            .open_in_place(nonce(self.index, last), Aad::from(AAD), &mut segment)
            .map_err(|_| tampered())?
            .len();
        segment.truncate(plain_len);
        self.index += 1;
        self.out = segment;
        self.pos = 0;
        self.done = last;
        Ok(())
    }
}

impl<R: Read> Read for Decryptor<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.out.len() {
            if self.done {
                return Ok(0);
            }
            self.open_next()?;
        }
        let n = buf.len().min(self.out.len() - self.pos);
        buf[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Encrypts `plaintext` under a fresh key and imports the ciphertext as a
/// file; returns its CID and the key (which only the caller now has).
pub fn import_private(
    store: &BlockStore,
    plaintext: impl Read,
    opts: &ImportOptions,
) -> Result<(Cid, PrivateKey), PrivateError> {
    let key = PrivateKey::generate()?;
    let cid = import_reader(store, Encryptor::new(plaintext, &key), opts)?;
    Ok((cid, key))
}

/// A reader of the plaintext of the private object `cid`.
pub fn open_private<'a>(
    store: &'a BlockStore,
    cid: &Cid,
    key: &PrivateKey,
) -> Result<Decryptor<Reader<'a>>, PrivateError> {
    Ok(Decryptor::new(Reader::new(store, cid)?, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal(plain: &[u8], key: &PrivateKey) -> Vec<u8> {
        let mut out = Vec::new();
        Encryptor::new(plain, key).read_to_end(&mut out).unwrap();
        out
    }

    fn open(sealed: &[u8], key: &PrivateKey) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        Decryptor::new(sealed, key).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn round_trips_at_segment_edges() {
        let key = PrivateKey::generate().unwrap();
        for len in [
            0,
            1,
            SEGMENT_PLAINTEXT_BYTES - 1,
            SEGMENT_PLAINTEXT_BYTES,
            SEGMENT_PLAINTEXT_BYTES + 1,
            3 * SEGMENT_PLAINTEXT_BYTES,
        ] {
            let plain: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let sealed = seal(&plain, &key);
            let segments = len.div_ceil(SEGMENT_PLAINTEXT_BYTES).max(1);
            assert_eq!(sealed.len(), len + segments * TAG_BYTES, "len {len}");
            assert_eq!(open(&sealed, &key).unwrap(), plain, "len {len}");
        }
    }

    #[test]
    fn truncation_reordering_and_wrong_keys_fail() {
        let key = PrivateKey::generate().unwrap();
        let plain = vec![9u8; 2 * SEGMENT_PLAINTEXT_BYTES + 100];
        let sealed = seal(&plain, &key);
        // Cut at a segment boundary.
        assert!(open(&sealed[..2 * SEGMENT_SEALED_BYTES], &key).is_err());
        assert!(open(&sealed[..SEGMENT_SEALED_BYTES], &key).is_err());
        // Cut inside the last segment.
        assert!(open(&sealed[..sealed.len() - 1], &key).is_err());
        // Swap the first two segments.
        let mut swapped = sealed[SEGMENT_SEALED_BYTES..2 * SEGMENT_SEALED_BYTES].to_vec();
        swapped.extend_from_slice(&sealed[..SEGMENT_SEALED_BYTES]);
        swapped.extend_from_slice(&sealed[2 * SEGMENT_SEALED_BYTES..]);
        assert!(open(&swapped, &key).is_err());
        // Extended with a copy of the last segment.
        let mut longer = sealed.clone();
        longer.extend_from_slice(&sealed[2 * SEGMENT_SEALED_BYTES..]);
        assert!(open(&longer, &key).is_err());
        // Wrong key, and the empty stream.
        assert!(open(&sealed, &PrivateKey::generate().unwrap()).is_err());
        assert!(open(&[], &key).is_err());
        let err = open(&sealed[..2 * SEGMENT_SEALED_BYTES], &key).unwrap_err();
        assert!(matches!(
            err.into_inner()
                .unwrap()
                .downcast::<PrivateError>()
                .map(|e| *e),
            Ok(PrivateError::Tampered { index: 1 })
        ));
    }

    #[test]
    fn keys_round_trip_as_hex_and_hide_in_debug() {
        let key = PrivateKey::generate().unwrap();
        assert_eq!(PrivateKey::from_hex(&key.to_hex()).unwrap(), key);
        assert_eq!(format!("{key:?}"), "PrivateKey(..)");
        assert!(PrivateKey::from_hex("abc").is_err());
    }
}
