//! Content identifiers (CIDs) as IPFS makes them, for sha2-256 only.
//!
//! Binary form, from the multiformats specs (<https://github.com/multiformats/cid>):
//!
//! - CIDv1: `varint(1) | varint(codec) | multihash`, where the multihash is
//!   `varint(0x12) | varint(32) | sha256 digest`;
//! - CIDv0: the bare multihash `0x12 0x20 | digest`, always dag-pb.
//!
//! Text form: CIDv1 is multibase base32 lower case without padding, with the
//! prefix `b` (what kubo prints for `--cid-version=1`); CIDv0 is base58btc
//! (`Qm…`). We only make CIDv1, but read CIDv0 because DAGs built by other
//! tools link with it.
//!
//! Other hash functions (and the identity "hash") are refused: every block
//! this node holds must be checkable against its name, and sha2-256 is what
//! every IPFS implementation writes by default.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// The multicodec of a raw block: bytes with no links (file leaves).
pub const CODEC_RAW: u64 = 0x55;
/// The multicodec of a dag-pb block (UnixFS files and directories).
pub const CODEC_DAG_PB: u64 = 0x70;
/// The multihash code of sha2-256.
pub const MULTIHASH_SHA2_256: u64 = 0x12;
/// Length of a sha2-256 digest.
pub const DIGEST_BYTES: usize = 32;
/// Longest binary CID this module writes or reads: 1 + 1 + 2 + 32 bytes
/// (version, codec varints of at most 2 bytes for the codecs we accept, the
/// multihash header and digest), rounded up.
pub const MAX_CID_BYTES: usize = 40;
/// Longest CID text accepted by [`Cid::from_str`]: base32 of 40 bytes is 64
/// characters, base58 of 34 bytes is at most 47; 96 leaves room and still
/// bounds the work on hostile input.
pub const MAX_CID_TEXT_BYTES: usize = 96;

/// Why bytes or text are not a CID this node can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CidError {
    /// The input ended inside the CID.
    #[error("CID cut short at byte {offset}")]
    Truncated {
        /// Byte offset where more input was needed.
        offset: usize,
    },
    /// A varint is longer than 9 bytes, overflows or is not minimal.
    #[error("bad varint at byte {offset}")]
    BadVarint {
        /// Byte offset of the varint.
        offset: usize,
    },
    /// The CID version is not 0 or 1.
    #[error("CID version {version} is not supported")]
    UnsupportedVersion {
        /// The version found.
        version: u64,
    },
    /// The codec is neither raw nor dag-pb.
    #[error("codec 0x{codec:x} is not supported (only raw 0x55 and dag-pb 0x70)")]
    UnsupportedCodec {
        /// The codec found.
        codec: u64,
    },
    /// The hash is not a 32-byte sha2-256.
    #[error("multihash 0x{code:x} of {len} bytes is not supported (only sha2-256)")]
    UnsupportedHash {
        /// The multihash code.
        code: u64,
        /// The digest length.
        len: u64,
    },
    /// Bytes remain after a CID that should fill the input.
    #[error("{extra} bytes after the CID")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
    /// The text is empty, too long, or its multibase prefix is not `b` or `Qm`.
    #[error("CID text: {reason}")]
    BadText {
        /// What is wrong.
        reason: &'static str,
    },
    /// A character is outside the alphabet of the text's multibase.
    #[error("CID text: character {index} is not in the {base} alphabet")]
    BadCharacter {
        /// Index of the character.
        index: usize,
        /// The multibase.
        base: &'static str,
    },
}

/// A content identifier: version, codec and sha2-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cid {
    version: u8,
    codec: u64,
    digest: [u8; DIGEST_BYTES],
}

impl Cid {
    /// The CIDv1 of `data` under `codec` (raw or dag-pb).
    pub fn hash_of(codec: Codec, data: &[u8]) -> Cid {
        Cid::v1(codec, Sha256::digest(data).into())
    }

    /// A CIDv1 from its parts.
    pub fn v1(codec: Codec, digest: [u8; DIGEST_BYTES]) -> Cid {
        Cid {
            version: 1,
            codec: codec.code(),
            digest,
        }
    }

    /// The CID version, 0 or 1.
    pub fn version(&self) -> u8 {
        self.version
    }

    /// The codec of the block this CID names.
    pub fn codec(&self) -> Codec {
        // Constructors only admit the two codecs.
        if self.codec == CODEC_RAW {
            Codec::Raw
        } else {
            Codec::DagPb
        }
    }

    /// The sha2-256 digest of the block.
    pub fn digest(&self) -> &[u8; DIGEST_BYTES] {
        &self.digest
    }

    /// Whether `data` is the block this CID names. Pure: callers do the IO.
    pub fn verifies(&self, data: &[u8]) -> bool {
        let digest: [u8; DIGEST_BYTES] = Sha256::digest(data).into();
        digest == self.digest
    }

    /// The same content named as CIDv1 (CIDv0 becomes dag-pb v1).
    pub fn to_v1(&self) -> Cid {
        Cid {
            version: 1,
            ..*self
        }
    }

    /// The binary form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAX_CID_BYTES);
        if self.version == 1 {
            put_varint(&mut out, 1);
            put_varint(&mut out, self.codec);
        }
        put_varint(&mut out, MULTIHASH_SHA2_256);
        put_varint(&mut out, DIGEST_BYTES as u64);
        out.extend_from_slice(&self.digest);
        out
    }

    /// Reads a CID that fills `data` exactly.
    pub fn from_bytes(data: &[u8]) -> Result<Cid, CidError> {
        let (cid, used) = Cid::read_prefix(data)?;
        if used != data.len() {
            return Err(CidError::TrailingBytes {
                extra: data.len() - used,
            });
        }
        Ok(cid)
    }

    /// Reads a CID at the start of `data`; returns it and its length (CAR
    /// sections put the block right after the CID, with no length between).
    pub fn read_prefix(data: &[u8]) -> Result<(Cid, usize), CidError> {
        let mut pos = 0;
        // A CIDv0 is a bare sha2-256 multihash; 0x12 is not a valid CID
        // version, so the first byte tells the two apart.
        if data.first() == Some(&0x12) {
            let digest = read_digest(data, &mut pos)?;
            return Ok((
                Cid {
                    version: 0,
                    codec: CODEC_DAG_PB,
                    digest,
                },
                pos,
            ));
        }
        let version = read_varint(data, &mut pos)?;
        if version != 1 {
            return Err(CidError::UnsupportedVersion { version });
        }
        let codec = read_varint(data, &mut pos)?;
        if codec != CODEC_RAW && codec != CODEC_DAG_PB {
            return Err(CidError::UnsupportedCodec { codec });
        }
        let digest = read_digest(data, &mut pos)?;
        Ok((
            Cid {
                version: 1,
                codec,
                digest,
            },
            pos,
        ))
    }
}

fn read_digest(data: &[u8], pos: &mut usize) -> Result<[u8; DIGEST_BYTES], CidError> {
    let code = read_varint(data, pos)?;
    let len = read_varint(data, pos)?;
    if code != MULTIHASH_SHA2_256 || len != DIGEST_BYTES as u64 {
        return Err(CidError::UnsupportedHash { code, len });
    }
    let Some(bytes) = data.get(*pos..*pos + DIGEST_BYTES) else {
        return Err(CidError::Truncated { offset: data.len() });
    };
    *pos += DIGEST_BYTES;
    Ok(bytes.try_into().expect("32 bytes"))
}

/// The two codecs this node stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// Raw bytes, no links.
    Raw,
    /// dag-pb: a protobuf node with links and UnixFS data.
    DagPb,
}

impl Codec {
    /// The multicodec number.
    pub fn code(self) -> u64 {
        match self {
            Codec::Raw => CODEC_RAW,
            Codec::DagPb => CODEC_DAG_PB,
        }
    }
}

impl fmt::Display for Cid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.version == 0 {
            f.write_str(&base58_encode(&self.to_bytes()))
        } else {
            f.write_str("b")?;
            f.write_str(&base32_encode(&self.to_bytes()))
        }
    }
}

impl fmt::Debug for Cid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cid({self})")
    }
}

impl FromStr for Cid {
    type Err = CidError;

    fn from_str(text: &str) -> Result<Cid, CidError> {
        if text.is_empty() {
            return Err(CidError::BadText { reason: "empty" });
        }
        if text.len() > MAX_CID_TEXT_BYTES {
            return Err(CidError::BadText {
                reason: "longer than 96 characters",
            });
        }
        let bytes = if let Some(rest) = text.strip_prefix('b') {
            base32_decode(rest)?
        } else if text.len() == 46 && text.starts_with("Qm") {
            base58_decode(text)?
        } else {
            return Err(CidError::BadText {
                reason: "not base32 (prefix b) or a CIDv0 (Qm…)",
            });
        };
        let cid = Cid::from_bytes(&bytes)?;
        if text.starts_with('b') && cid.version == 0 {
            return Err(CidError::BadText {
                reason: "a CIDv0 is written in base58btc",
            });
        }
        Ok(cid)
    }
}

/// Appends an unsigned LEB128 varint (the multiformats unsigned-varint).
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a minimal unsigned varint of at most 9 bytes (the multiformats
/// limit: 63 bits) at `*pos`, advancing it.
pub fn read_varint(data: &[u8], pos: &mut usize) -> Result<u64, CidError> {
    let start = *pos;
    let mut value: u64 = 0;
    for i in 0..9 {
        let Some(&byte) = data.get(start + i) else {
            return Err(CidError::Truncated { offset: data.len() });
        };
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            // A trailing zero group is a longer encoding of a smaller value.
            if byte == 0 && i > 0 {
                return Err(CidError::BadVarint { offset: start });
            }
            *pos = start + i + 1;
            return Ok(value);
        }
    }
    Err(CidError::BadVarint { offset: start })
}

const BASE32_ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// RFC 4648 base32, lower case, no padding.
pub fn base32_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(5) * 8);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for &byte in data {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(BASE32_ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(BASE32_ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Decodes [`base32_encode`]'s form; refuses other characters and non-zero
/// padding bits, so one byte string has one text.
pub fn base32_decode(text: &str) -> Result<Vec<u8>, CidError> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for (index, c) in text.bytes().enumerate() {
        let v = match c {
            b'a'..=b'z' => c - b'a',
            b'2'..=b'7' => c - b'2' + 26,
            _ => {
                return Err(CidError::BadCharacter {
                    index,
                    base: "base32",
                });
            }
        };
        buffer = (buffer << 5) | u32::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
        buffer &= (1 << bits) - 1;
    }
    if bits >= 5 || buffer != 0 {
        return Err(CidError::BadText {
            reason: "base32 has leftover bits",
        });
    }
    Ok(out)
}

const BASE58_ALPHABET: &[u8; 58] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

/// Bitcoin base58 (multibase base58btc without the `z` prefix: CIDv0 has none).
pub fn base58_encode(data: &[u8]) -> String {
    let zeros = data.iter().take_while(|&&b| b == 0).count();
    // Little-endian base-58 digits; inputs are at most a few dozen bytes.
    let mut digits: Vec<u8> = Vec::with_capacity(data.len() * 138 / 100 + 1);
    for &byte in &data[zeros..] {
        let mut carry = u32::from(byte);
        for d in digits.iter_mut() {
            carry += u32::from(*d) << 8;
            *d = (carry % 58) as u8;
            carry /= 58;
        }
        while carry > 0 {
            digits.push((carry % 58) as u8);
            carry /= 58;
        }
    }
    let mut out = String::with_capacity(zeros + digits.len());
    out.extend(std::iter::repeat_n('1', zeros));
    out.extend(
        digits
            .iter()
            .rev()
            .map(|&d| BASE58_ALPHABET[d as usize] as char),
    );
    out
}

/// Decodes base58btc.
pub fn base58_decode(text: &str) -> Result<Vec<u8>, CidError> {
    let zeros = text.bytes().take_while(|&b| b == b'1').count();
    let mut bytes: Vec<u8> = Vec::with_capacity(text.len());
    for (index, c) in text.bytes().enumerate().skip(zeros) {
        let Some(v) = BASE58_ALPHABET.iter().position(|&a| a == c) else {
            return Err(CidError::BadCharacter {
                index,
                base: "base58btc",
            });
        };
        let mut carry = v as u32;
        for b in bytes.iter_mut() {
            carry += u32::from(*b) * 58;
            *b = carry as u8;
            carry >>= 8;
        }
        while carry > 0 {
            bytes.push(carry as u8);
            carry >>= 8;
        }
    }
    let mut out = vec![0u8; zeros];
    out.extend(bytes.iter().rev());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_cids() {
        // `ipfs add --cid-version=1 --raw-leaves` of an empty file, and
        // `ipfs object new unixfs-dir` as CIDv1; both well-known constants.
        assert_eq!(
            Cid::hash_of(Codec::Raw, b"").to_string(),
            "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
        );
        assert_eq!(
            Cid::hash_of(Codec::DagPb, &[0x0a, 0x02, 0x08, 0x01]).to_string(),
            "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354"
        );
        // The empty directory as CIDv0, as kubo prints it by default.
        let v0: Cid = "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"
            .parse()
            .unwrap();
        assert_eq!(v0.version(), 0);
        assert_eq!(v0.codec(), Codec::DagPb);
        assert_eq!(
            v0.to_v1().to_string(),
            "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354"
        );
        assert_eq!(
            v0.to_string(),
            "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"
        );
    }

    #[test]
    fn refuses_what_it_cannot_check() {
        // identity multihash
        let mut b = vec![1, 0x55, 0x00, 3, b'a', b'b', b'c'];
        assert!(matches!(
            Cid::from_bytes(&b),
            Err(CidError::UnsupportedHash { code: 0, len: 3 })
        ));
        // dag-cbor
        b = vec![1, 0x71, 0x12, 0x20];
        b.extend([0u8; 32]);
        assert!(matches!(
            Cid::from_bytes(&b),
            Err(CidError::UnsupportedCodec { codec: 0x71 })
        ));
        assert!(matches!(
            "bAFK".parse::<Cid>(),
            Err(CidError::BadCharacter { .. })
        ));
        assert!(matches!(
            "zabc".parse::<Cid>(),
            Err(CidError::BadText { .. })
        ));
        // a non-minimal varint
        assert!(matches!(
            read_varint(&[0x81, 0x00], &mut 0),
            Err(CidError::BadVarint { offset: 0 })
        ));
    }

    proptest! {
        #[test]
        fn text_and_binary_round_trip(digest in any::<[u8; 32]>(), raw in any::<bool>()) {
            let codec = if raw { Codec::Raw } else { Codec::DagPb };
            let cid = Cid::v1(codec, digest);
            prop_assert_eq!(Cid::from_bytes(&cid.to_bytes()).unwrap(), cid);
            prop_assert_eq!(cid.to_string().parse::<Cid>().unwrap(), cid);
        }

        #[test]
        fn base58_round_trips(data in prop::collection::vec(any::<u8>(), 0..40)) {
            prop_assert_eq!(base58_decode(&base58_encode(&data)).unwrap(), data);
        }

        #[test]
        fn base32_round_trips(data in prop::collection::vec(any::<u8>(), 0..40)) {
            prop_assert_eq!(base32_decode(&base32_encode(&data)).unwrap(), data);
        }

        #[test]
        fn arbitrary_input_never_panics(data in prop::collection::vec(any::<u8>(), 0..60), text in "\\PC{0,100}") {
            let _ = Cid::read_prefix(&data);
            let _ = text.parse::<Cid>();
        }

        #[test]
        fn varints_round_trip(v in 0u64..(1 << 63)) {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            let mut pos = 0;
            prop_assert_eq!(read_varint(&out, &mut pos).unwrap(), v);
            prop_assert_eq!(pos, out.len());
        }
    }
}
