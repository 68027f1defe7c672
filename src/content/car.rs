//! CAR v1 (<https://ipld.io/specs/transport/car/carv1/>): a DAG as one
//! stream, what the IPFS trustless gateway serves for `?format=car` and
//! what `ipfs dag import/export` read and write.
//!
//! ```text
//! varint(len(header)) | header | (varint(len(cid) + len(block)) | cid | block)*
//! ```
//!
//! The header is dag-cbor `{"roots": [cid…], "version": 1}`; the CBOR is
//! small enough to write and read by hand (map keys in dag-cbor order: by
//! length, then bytes; CIDs as tag 42 over a byte string with a leading
//! 0x00). [`export`] writes a DAG depth-first, parents before children and
//! left to right, each block once (the trustless gateway spec's
//! `order=dfs; dups=n`), so a client can verify it as it streams.
//! [`CarReader`] checks every block against its CID before handing it
//! out; [`import`] stores what it reads.

use std::collections::HashSet;
use std::io::{self, BufRead, BufReader, Read, Write};

use crate::content::block::{Block, BlockError};
use crate::content::cid::{Cid, CidError, Codec, MAX_CID_BYTES, put_varint};
use crate::content::dagpb::{DecodeError, MAX_BLOCK_BYTES, PbNode};
use crate::content::store::{BlockStore, StoreError};

/// Largest header accepted; a header of [`MAX_ROOTS`] CIDv1 is under 3 KiB.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Most roots accepted in a header.
pub const MAX_ROOTS: usize = 64;
/// Largest section: a CID and a block of [`MAX_BLOCK_BYTES`].
pub const MAX_SECTION_BYTES: usize = MAX_BLOCK_BYTES + MAX_CID_BYTES;

/// Why a CAR could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CarError {
    /// Reading or writing the stream failed.
    #[error("CAR stream: {0}")]
    Io(#[from] io::Error),
    /// The stream ended inside a header or section.
    #[error("CAR ends inside the {what} at byte {offset}")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Stream offset of it.
        offset: u64,
    },
    /// A length varint is malformed.
    #[error("bad varint in the {what} at byte {offset}")]
    BadVarint {
        /// What was being read.
        what: &'static str,
        /// Stream offset.
        offset: u64,
    },
    /// A header or section length is zero or above its bound.
    #[error("{what} length {len} at byte {offset} is not in 1..={max}")]
    BadLength {
        /// Header or section.
        what: &'static str,
        /// Stream offset.
        offset: u64,
        /// The length.
        len: u64,
        /// The bound.
        max: usize,
    },
    /// The header is not the dag-cbor map CAR v1 needs.
    #[error("CAR header at byte {offset}: {reason}")]
    BadHeader {
        /// Offset within the header.
        offset: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// The header's version is not 1 (CAR v2 starts with version 2).
    #[error("CAR version {version} is not supported (only 1)")]
    UnsupportedVersion {
        /// The version.
        version: u64,
    },
    /// A CID (in the header or a section) is not one this node accepts.
    #[error("CID at byte {offset}: {source}")]
    BadCid {
        /// Stream offset of the CID.
        offset: u64,
        /// Why.
        source: CidError,
    },
    /// A block does not match its CID.
    #[error("section at byte {offset}: {source}")]
    BadBlock {
        /// Stream offset of the section.
        offset: u64,
        /// Why.
        source: BlockError,
    },
    /// The store failed (import) or lacks a block of the DAG (export).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A dag-pb block of the DAG being exported does not decode.
    #[error("block {cid}: {source}")]
    BadNode {
        /// The block.
        cid: Cid,
        /// Why.
        source: DecodeError,
    },
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CarSummary {
    /// Blocks written.
    pub blocks: u64,
    /// Bytes written, header included.
    pub bytes: u64,
}

/// The CAR v1 header for `roots`.
pub fn encode_header(roots: &[Cid]) -> Vec<u8> {
    let mut cbor = Vec::with_capacity(32 + roots.len() * 42);
    cbor.push(0xa2); // map of 2
    cbor_head(&mut cbor, 3, 5);
    cbor.extend_from_slice(b"roots");
    cbor_head(&mut cbor, 4, roots.len() as u64);
    for root in roots {
        let bytes = root.to_bytes();
        cbor.extend_from_slice(&[0xd8, 42]); // tag 42: a CID
        cbor_head(&mut cbor, 2, bytes.len() as u64 + 1);
        cbor.push(0x00); // the multibase "identity" prefix dag-cbor puts first
        cbor.extend_from_slice(&bytes);
    }
    cbor_head(&mut cbor, 3, 7);
    cbor.extend_from_slice(b"version");
    cbor.push(0x01);
    let mut out = Vec::with_capacity(cbor.len() + 2);
    put_varint(&mut out, cbor.len() as u64);
    out.extend_from_slice(&cbor);
    out
}

/// A CBOR item head in its shortest form (dag-cbor requires it).
fn cbor_head(out: &mut Vec<u8>, major: u8, value: u64) {
    let m = major << 5;
    match value {
        0..=23 => out.push(m | value as u8),
        24..=0xff => out.extend_from_slice(&[m | 24, value as u8]),
        0x100..=0xffff => {
            out.push(m | 25);
            out.extend_from_slice(&(value as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(m | 26);
            out.extend_from_slice(&(value as u32).to_be_bytes());
        }
        _ => {
            out.push(m | 27);
            out.extend_from_slice(&value.to_be_bytes());
        }
    }
}

/// A reader of the little CBOR a CAR header holds.
struct Cbor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cbor<'a> {
    fn bad(&self, reason: &'static str) -> CarError {
        CarError::BadHeader {
            offset: self.pos,
            reason,
        }
    }

    /// Reads an item head: (major type, argument). Only definite lengths.
    fn head(&mut self) -> Result<(u8, u64), CarError> {
        let Some(&first) = self.data.get(self.pos) else {
            return Err(self.bad("ends early"));
        };
        self.pos += 1;
        let major = first >> 5;
        let info = first & 31;
        let extra = match info {
            0..=23 => return Ok((major, u64::from(info))),
            24 => 1,
            25 => 2,
            26 => 4,
            27 => 8,
            _ => return Err(self.bad("indefinite or reserved length")),
        };
        let Some(bytes) = self.data.get(self.pos..self.pos + extra) else {
            return Err(self.bad("ends early"));
        };
        self.pos += extra;
        let value = bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        Ok((major, value))
    }

    fn take(&mut self, len: u64) -> Result<&'a [u8], CarError> {
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| self.pos.checked_add(l))
            .filter(|&e| e <= self.data.len());
        let Some(end) = end else {
            return Err(self.bad("ends early"));
        };
        let out = &self.data[self.pos..end];
        self.pos = end;
        Ok(out)
    }
}

/// Reads a CAR v1 header's CBOR (without its length prefix).
pub fn decode_header(cbor: &[u8]) -> Result<Vec<Cid>, CarError> {
    let mut r = Cbor { data: cbor, pos: 0 };
    let (major, entries) = r.head()?;
    if major != 5 || entries > 2 {
        return Err(r.bad("not a map of at most two entries"));
    }
    let mut roots = None;
    let mut version = None;
    for _ in 0..entries {
        let (major, len) = r.head()?;
        if major != 3 {
            return Err(r.bad("map key is not a string"));
        }
        match r.take(len)? {
            b"version" if version.is_none() => {
                let (major, v) = r.head()?;
                if major != 0 {
                    return Err(r.bad("version is not an integer"));
                }
                version = Some(v);
            }
            b"roots" if roots.is_none() => {
                let (major, count) = r.head()?;
                if major != 4 {
                    return Err(r.bad("roots is not an array"));
                }
                if count > MAX_ROOTS as u64 {
                    return Err(r.bad("more than 64 roots"));
                }
                let mut list = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    let (major, tag) = r.head()?;
                    if (major, tag) != (6, 42) {
                        return Err(r.bad("root is not a CID (tag 42)"));
                    }
                    let (major, len) = r.head()?;
                    if major != 2 {
                        return Err(r.bad("CID is not a byte string"));
                    }
                    let at = r.pos;
                    let bytes = r.take(len)?;
                    let Some((&0, cid_bytes)) = bytes.split_first() else {
                        return Err(r.bad("CID lacks its 0x00 prefix"));
                    };
                    let cid = Cid::from_bytes(cid_bytes).map_err(|source| CarError::BadCid {
                        offset: at as u64,
                        source,
                    })?;
                    list.push(cid);
                }
                roots = Some(list);
            }
            _ => return Err(r.bad("unknown or repeated key")),
        }
    }
    if r.pos != cbor.len() {
        return Err(r.bad("bytes after the map"));
    }
    match version {
        Some(1) => {}
        Some(version) => return Err(CarError::UnsupportedVersion { version }),
        None => return Err(r.bad("no version")),
    }
    roots.ok_or_else(|| r.bad("no roots"))
}

/// Reads a CAR v1 stream block by block, checking each block's hash.
pub struct CarReader<R> {
    inner: BufReader<R>,
    offset: u64,
    roots: Vec<Cid>,
}

impl<R: Read> CarReader<R> {
    /// Reads the header.
    pub fn new(reader: R) -> Result<CarReader<R>, CarError> {
        let mut car = CarReader {
            inner: BufReader::new(reader),
            offset: 0,
            roots: Vec::new(),
        };
        let Some(len) = car.varint("header length")? else {
            return Err(CarError::Truncated {
                what: "header",
                offset: 0,
            });
        };
        if len == 0 || len > MAX_HEADER_BYTES as u64 {
            return Err(CarError::BadLength {
                what: "header",
                offset: 0,
                len,
                max: MAX_HEADER_BYTES,
            });
        }
        let header = car.exact(len as usize, "header")?;
        car.roots = decode_header(&header)?;
        Ok(car)
    }

    /// The header's roots.
    pub fn roots(&self) -> &[Cid] {
        &self.roots
    }

    /// The next block, checked; `None` at a clean end of the stream.
    pub fn next_block(&mut self) -> Result<Option<Block>, CarError> {
        let start = self.offset;
        let Some(len) = self.varint("section length")? else {
            return Ok(None);
        };
        if len == 0 || len > MAX_SECTION_BYTES as u64 {
            return Err(CarError::BadLength {
                what: "section",
                offset: start,
                len,
                max: MAX_SECTION_BYTES,
            });
        }
        let cid_at = self.offset;
        let section = self.exact(len as usize, "section")?;
        let (cid, used) = Cid::read_prefix(&section).map_err(|source| CarError::BadCid {
            offset: cid_at,
            source,
        })?;
        let mut data = section;
        data.drain(..used);
        let block = Block::verified(cid, data).map_err(|source| CarError::BadBlock {
            offset: start,
            source,
        })?;
        Ok(Some(block))
    }

    /// A varint, or `None` if the stream ends cleanly before it.
    fn varint(&mut self, what: &'static str) -> Result<Option<u64>, CarError> {
        let start = self.offset;
        let mut value = 0u64;
        for i in 0..9 {
            let byte = match self.inner.fill_buf()?.first() {
                Some(&b) => b,
                None if i == 0 => return Ok(None),
                None => {
                    return Err(CarError::Truncated {
                        what,
                        offset: start,
                    });
                }
            };
            self.inner.consume(1);
            self.offset += 1;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                if byte == 0 && i > 0 {
                    return Err(CarError::BadVarint {
                        what,
                        offset: start,
                    });
                }
                return Ok(Some(value));
            }
        }
        Err(CarError::BadVarint {
            what,
            offset: start,
        })
    }

    fn exact(&mut self, len: usize, what: &'static str) -> Result<Vec<u8>, CarError> {
        let start = self.offset;
        let mut buf = Vec::with_capacity(len);
        (&mut self.inner).take(len as u64).read_to_end(&mut buf)?;
        if buf.len() != len {
            return Err(CarError::Truncated {
                what,
                offset: start,
            });
        }
        self.offset += len as u64;
        Ok(buf)
    }
}

/// How to import a CAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CarImportOptions {
    /// Pin every root (each root's DAG must then be complete in the store).
    pub pin: bool,
}

/// Stores every block of a CAR v1 stream, each checked against its CID;
/// returns the header's roots. The blocks are durable when this returns.
pub fn import(
    store: &BlockStore,
    reader: impl Read,
    opts: &CarImportOptions,
) -> Result<Vec<Cid>, CarError> {
    let mut car = CarReader::new(reader)?;
    let mut session = store.session();
    while let Some(block) = car.next_block()? {
        session.put(&block)?;
    }
    session.commit()?;
    if opts.pin {
        for root in car.roots() {
            store.pin(root)?;
        }
    }
    Ok(car.roots().to_vec())
}

/// Writes the DAG under `root` as a CAR v1 stream with `root` as its one
/// root, depth-first, each block once. Every block is read (and so checked)
/// from the store; a missing one is an error.
pub fn export(
    store: &BlockStore,
    root: &Cid,
    mut writer: impl Write,
) -> Result<CarSummary, CarError> {
    let header = encode_header(&[*root]);
    writer.write_all(&header)?;
    let mut summary = CarSummary {
        blocks: 0,
        bytes: header.len() as u64,
    };
    let mut seen = HashSet::new();
    let mut stack = vec![*root];
    let mut prefix = Vec::with_capacity(10);
    while let Some(cid) = stack.pop() {
        // `seen` grows only with blocks read from the store: bounded by it.
        if !seen.insert(cid) {
            continue;
        }
        let block = store.get(&cid)?;
        if cid.codec() == Codec::DagPb {
            let node =
                PbNode::decode(block.data()).map_err(|source| CarError::BadNode { cid, source })?;
            stack.extend(node.links.iter().rev().map(|l| l.cid));
        }
        let cid_bytes = cid.to_bytes();
        prefix.clear();
        put_varint(&mut prefix, (cid_bytes.len() + block.data().len()) as u64);
        writer.write_all(&prefix)?;
        writer.write_all(&cid_bytes)?;
        writer.write_all(block.data())?;
        summary.blocks += 1;
        summary.bytes += (prefix.len() + cid_bytes.len() + block.data().len()) as u64;
    }
    writer.flush()?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn header_bytes_match_the_spec_example_shape() {
        let root = Cid::hash_of(Codec::DagPb, b"x");
        let header = encode_header(&[root]);
        // varint(len) a2 65 "roots" 81 d8 2a 58 25 00 <36 bytes> 67 "version" 01
        assert_eq!(header[0] as usize, header.len() - 1);
        assert_eq!(&header[1..8], &[0xa2, 0x65, b'r', b'o', b'o', b't', b's']);
        assert_eq!(&header[8..13], &[0x81, 0xd8, 0x2a, 0x58, 0x25]);
        assert_eq!(decode_header(&header[1..]).unwrap(), vec![root]);
    }

    #[test]
    fn version_two_and_junk_are_refused() {
        // The CARv2 pragma: {"version": 2}.
        let pragma = [0xa1, 0x67, b'v', b'e', b'r', b's', b'i', b'o', b'n', 0x02];
        assert!(matches!(
            decode_header(&pragma),
            Err(CarError::UnsupportedVersion { version: 2 })
        ));
        assert!(matches!(
            CarReader::new(&[0x0a, 0xa1][..]),
            Err(CarError::Truncated { .. })
        ));
        assert!(matches!(
            CarReader::new(&[0x00][..]),
            Err(CarError::BadLength { .. })
        ));
    }

    #[test]
    fn a_block_that_lies_is_refused() {
        let block = Block::new(Codec::Raw, b"hello".to_vec());
        let mut car = encode_header(&[block.cid()]);
        let cid = block.cid().to_bytes();
        put_varint(&mut car, (cid.len() + 5) as u64);
        car.extend_from_slice(&cid);
        car.extend_from_slice(b"jello");
        let mut reader = CarReader::new(&car[..]).unwrap();
        assert!(matches!(
            reader.next_block(),
            Err(CarError::BadBlock {
                source: BlockError::HashMismatch { .. },
                ..
            })
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_streams_never_panic(data in prop::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(mut reader) = CarReader::new(&data[..]) {
                while let Ok(Some(_)) = reader.next_block() {}
            }
        }

        #[test]
        fn headers_round_trip(digests in prop::collection::vec(any::<[u8; 32]>(), 0..5)) {
            let roots: Vec<Cid> = digests.into_iter().map(|d| Cid::v1(Codec::Raw, d)).collect();
            let header = encode_header(&roots);
            let reader = CarReader::new(&header[..]).unwrap();
            prop_assert_eq!(reader.roots(), &roots[..]);
        }
    }
}
