//! dag-pb nodes and the UnixFS data inside them, encoded and decoded by hand.
//!
//! dag-pb (<https://ipld.io/specs/codecs/dag-pb/spec/>) is two protobuf
//! messages:
//!
//! ```text
//! message PBLink { optional bytes Hash = 1; optional string Name = 2; optional uint64 Tsize = 3; }
//! message PBNode { repeated PBLink Links = 2; optional bytes Data = 1; }
//! ```
//!
//! The spec fixes one byte form, and that is what makes CIDs reproducible:
//! links are written before data (field 2 before field 1, for historical
//! reasons), link fields in the order Hash, Name, Tsize, each at most once,
//! links sorted by name. The decoder enforces the same rules as the
//! reference decoders (go-codec-dagpb, js @ipld/dag-pb): no unknown fields,
//! no repeated fields, a Hash in every link, the right wire types.
//!
//! UnixFS (<https://specs.ipfs.tech/unixfs/>) is the protobuf in `Data`:
//!
//! ```text
//! message Data { required DataType Type = 1; optional bytes Data = 2; optional uint64 filesize = 3;
//!                repeated uint64 blocksizes = 4; optional uint64 hashType = 5; optional uint64 fanout = 6;
//!                optional uint32 mode = 7; optional UnixTime mtime = 8; }
//! ```
//!
//! Its decoder is a plain proto2 decoder (kubo's is): any field order,
//! unknown fields skipped, `blocksizes` packed or not. Both decoders are
//! pure, bounded by the block they are given, and never panic; errors say
//! which field at which byte.

use crate::content::cid::{Cid, CidError};

/// Largest block this node stores, reads or sends. Bitswap and kubo's
/// `ipfs block put` allow 2 MiB (boxo's `BlockSizeLimit`, raised from 1 MiB
/// in 2024); our own blocks are at most a 256 KiB leaf or a directory just
/// under the 256 KiB sharding threshold.
pub const MAX_BLOCK_BYTES: usize = 2 * 1024 * 1024;

/// UnixFS node types (`Data.Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    /// Raw bytes in `Data` (old-style leaves).
    Raw,
    /// A directory: named links.
    Directory,
    /// A file: inline `Data` followed by the children's bytes.
    File,
    /// Metadata (unused by anything current).
    Metadata,
    /// A symbolic link; `Data` is the target.
    Symlink,
    /// A HAMT-sharded directory.
    HamtShard,
}

impl DataType {
    fn code(self) -> u64 {
        match self {
            DataType::Raw => 0,
            DataType::Directory => 1,
            DataType::File => 2,
            DataType::Metadata => 3,
            DataType::Symlink => 4,
            DataType::HamtShard => 5,
        }
    }

    fn from_code(code: u64) -> Option<DataType> {
        Some(match code {
            0 => DataType::Raw,
            1 => DataType::Directory,
            2 => DataType::File,
            3 => DataType::Metadata,
            4 => DataType::Symlink,
            5 => DataType::HamtShard,
            _ => return None,
        })
    }
}

/// Why bytes are not a dag-pb node or UnixFS data, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended inside a field.
    #[error("{what} at byte {offset}: input ends early")]
    Truncated {
        /// The field being read.
        what: &'static str,
        /// Byte offset of the field.
        offset: usize,
    },
    /// A varint is longer than 10 bytes, overflows 64 bits or is not minimal.
    #[error("{what} at byte {offset}: bad varint")]
    BadVarint {
        /// The field being read.
        what: &'static str,
        /// Byte offset of the varint.
        offset: usize,
    },
    /// A field number or wire type the message does not have, or one not
    /// allowed where it is (dag-pb's fixed order).
    #[error("{what} at byte {offset}: unexpected field {field} (wire type {wire_type})")]
    UnexpectedField {
        /// The message being read.
        what: &'static str,
        /// Byte offset of the field's key.
        offset: usize,
        /// The field number.
        field: u64,
        /// The wire type.
        wire_type: u8,
    },
    /// A required field is absent.
    #[error("{what} at byte {offset}: missing {field}")]
    Missing {
        /// The message being read.
        what: &'static str,
        /// Byte offset of the message.
        offset: usize,
        /// The field.
        field: &'static str,
    },
    /// A link's hash is not a CID we accept.
    #[error("link hash at byte {offset}: {source}")]
    BadCid {
        /// Byte offset of the hash.
        offset: usize,
        /// Why.
        source: CidError,
    },
    /// A link name is not UTF-8.
    #[error("link name at byte {offset} is not UTF-8")]
    BadName {
        /// Byte offset of the name.
        offset: usize,
    },
    /// Links are not sorted by name (the dag-pb canonical order).
    #[error("link at byte {offset} is out of name order")]
    Unsorted {
        /// Byte offset of the link.
        offset: usize,
    },
    /// The UnixFS type is not one of the six.
    #[error("UnixFS Type at byte {offset}: unknown type {code}")]
    UnknownType {
        /// Byte offset of the field.
        offset: usize,
        /// The code found.
        code: u64,
    },
    /// The block is larger than [`MAX_BLOCK_BYTES`].
    #[error("block of {len} bytes is larger than {max}")]
    TooLarge {
        /// The length.
        len: usize,
        /// The bound.
        max: usize,
    },
}

/// One link of a dag-pb node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PbLink {
    /// The child.
    pub cid: Cid,
    /// The name: a directory entry's name, `Some("")` for a file's chunks as
    /// every importer writes them, `None` when the field is absent.
    pub name: Option<String>,
    /// The cumulative size of the child's DAG (its blocks' bytes), if given.
    pub tsize: Option<u64>,
}

/// A dag-pb node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PbNode {
    /// The links, in order.
    pub links: Vec<PbLink>,
    /// The data, if present (UnixFS: always).
    pub data: Option<Vec<u8>>,
}

/// The UnixFS `Data` message; fields this node does not use (`hashType`,
/// `fanout`, `mode`, `mtime`) are kept only as far as telling them apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixFsData {
    /// The node type.
    pub kind: DataType,
    /// Inline bytes: file content, or a symlink's target.
    pub data: Option<Vec<u8>>,
    /// A file's total size.
    pub filesize: Option<u64>,
    /// The size of each child's file bytes, one per link.
    pub blocksizes: Vec<u64>,
}

impl UnixFsData {
    /// A file node with no inline data (what the balanced layout writes).
    pub fn file(filesize: u64, blocksizes: Vec<u64>) -> UnixFsData {
        UnixFsData {
            kind: DataType::File,
            data: None,
            filesize: Some(filesize),
            blocksizes,
        }
    }

    /// A directory node.
    pub fn directory() -> UnixFsData {
        UnixFsData {
            kind: DataType::Directory,
            data: None,
            filesize: None,
            blocksizes: Vec::new(),
        }
    }

    /// The protobuf bytes, fields in number order as kubo and the JS
    /// importer write them; repeated `blocksizes` unpacked (proto2).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + 10 * self.blocksizes.len());
        put_key(&mut out, 1, WIRE_VARINT);
        put_uvarint(&mut out, self.kind.code());
        if let Some(data) = &self.data {
            put_key(&mut out, 2, WIRE_LEN);
            put_bytes(&mut out, data);
        }
        if let Some(size) = self.filesize {
            put_key(&mut out, 3, WIRE_VARINT);
            put_uvarint(&mut out, size);
        }
        for &size in &self.blocksizes {
            put_key(&mut out, 4, WIRE_VARINT);
            put_uvarint(&mut out, size);
        }
        out
    }

    /// Reads UnixFS data; `base` is the offset of `bytes` inside the block,
    /// for error messages.
    pub fn decode(bytes: &[u8], base: usize) -> Result<UnixFsData, DecodeError> {
        const WHAT: &str = "UnixFS Data";
        let mut r = PbReader {
            data: bytes,
            pos: 0,
            base,
        };
        let mut kind = None;
        let mut data = None;
        let mut filesize = None;
        let mut blocksizes = Vec::new();
        while !r.done() {
            let key_at = r.offset();
            let (field, wire_type) = r.key(WHAT)?;
            match (field, wire_type) {
                (1, WIRE_VARINT) => {
                    let code = r.varint("UnixFS Type")?;
                    kind = Some(DataType::from_code(code).ok_or(DecodeError::UnknownType {
                        offset: key_at,
                        code,
                    })?);
                }
                (2, WIRE_LEN) => data = Some(r.bytes("UnixFS Data.Data")?.to_vec()),
                (3, WIRE_VARINT) => filesize = Some(r.varint("UnixFS filesize")?),
                (4, WIRE_VARINT) => blocksizes.push(r.varint("UnixFS blocksizes")?),
                (4, WIRE_LEN) => {
                    // Packed form: a proto3 writer may produce it.
                    let packed = r.bytes("UnixFS blocksizes")?;
                    let mut inner = PbReader {
                        data: packed,
                        pos: 0,
                        base: r.offset() - packed.len(),
                    };
                    while !inner.done() {
                        blocksizes.push(inner.varint("UnixFS blocksizes")?);
                    }
                }
                (_, WIRE_VARINT) if field > 4 => {
                    r.varint("UnixFS field")?;
                }
                (_, WIRE_LEN) if field > 4 => {
                    r.bytes("UnixFS field")?;
                }
                (_, WIRE_FIXED64) if field > 4 => {
                    r.take("UnixFS field", 8)?;
                }
                (_, WIRE_FIXED32) if field > 4 => {
                    r.take("UnixFS field", 4)?;
                }
                _ => {
                    return Err(DecodeError::UnexpectedField {
                        what: WHAT,
                        offset: key_at,
                        field,
                        wire_type,
                    });
                }
            }
        }
        let kind = kind.ok_or(DecodeError::Missing {
            what: WHAT,
            offset: base,
            field: "Type",
        })?;
        Ok(UnixFsData {
            kind,
            data,
            filesize,
            blocksizes,
        })
    }
}

const WIRE_VARINT: u8 = 0;
const WIRE_FIXED64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_FIXED32: u8 = 5;

fn put_uvarint(out: &mut Vec<u8>, v: u64) {
    crate::content::cid::put_varint(out, v);
}

fn put_key(out: &mut Vec<u8>, field: u64, wire_type: u8) {
    put_uvarint(out, (field << 3) | u64::from(wire_type));
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_uvarint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

impl PbNode {
    /// The canonical dag-pb bytes. Links are written in the order given;
    /// callers that build directories sort them first ([`sort_links`]).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut link = Vec::new();
        for l in &self.links {
            link.clear();
            put_key(&mut link, 1, WIRE_LEN);
            put_bytes(&mut link, &l.cid.to_bytes());
            if let Some(name) = &l.name {
                put_key(&mut link, 2, WIRE_LEN);
                put_bytes(&mut link, name.as_bytes());
            }
            if let Some(tsize) = l.tsize {
                put_key(&mut link, 3, WIRE_VARINT);
                put_uvarint(&mut link, tsize);
            }
            put_key(&mut out, 2, WIRE_LEN);
            put_bytes(&mut out, &link);
        }
        if let Some(data) = &self.data {
            put_key(&mut out, 1, WIRE_LEN);
            put_bytes(&mut out, data);
        }
        out
    }

    /// Reads a dag-pb node under the spec's strict rules.
    pub fn decode(bytes: &[u8]) -> Result<PbNode, DecodeError> {
        if bytes.len() > MAX_BLOCK_BYTES {
            return Err(DecodeError::TooLarge {
                len: bytes.len(),
                max: MAX_BLOCK_BYTES,
            });
        }
        let mut r = PbReader {
            data: bytes,
            pos: 0,
            base: 0,
        };
        let mut node = PbNode::default();
        while !r.done() {
            let key_at = r.offset();
            let (field, wire_type) = r.key("PBNode")?;
            match (field, wire_type) {
                (2, WIRE_LEN) if node.data.is_none() => {
                    let link_at = r.offset();
                    let body = r.bytes("PBNode.Links")?;
                    let link = decode_link(body, r.offset() - body.len())?;
                    if let Some(prev) = node.links.last()
                        && name_key(prev) > name_key(&link)
                    {
                        return Err(DecodeError::Unsorted { offset: link_at });
                    }
                    node.links.push(link);
                }
                (1, WIRE_LEN) if node.data.is_none() => {
                    node.data = Some(r.bytes("PBNode.Data")?.to_vec());
                }
                _ => {
                    return Err(DecodeError::UnexpectedField {
                        what: "PBNode",
                        offset: key_at,
                        field,
                        wire_type,
                    });
                }
            }
        }
        Ok(node)
    }
}

fn name_key(link: &PbLink) -> &[u8] {
    link.name.as_deref().unwrap_or("").as_bytes()
}

/// Sorts links into dag-pb order: by name bytes, stable for equal names
/// (what `@ipld/dag-pb`'s `prepare` and go-merkledag do).
pub fn sort_links(links: &mut [PbLink]) {
    links.sort_by(|a, b| name_key(a).cmp(name_key(b)));
}

fn decode_link(bytes: &[u8], base: usize) -> Result<PbLink, DecodeError> {
    const WHAT: &str = "PBLink";
    let mut r = PbReader {
        data: bytes,
        pos: 0,
        base,
    };
    let mut cid = None;
    let mut name = None;
    let mut tsize = None;
    // The spec's field order: each field at most once, Hash < Name < Tsize.
    let mut last_field = 0;
    while !r.done() {
        let key_at = r.offset();
        let (field, wire_type) = r.key(WHAT)?;
        let unexpected = DecodeError::UnexpectedField {
            what: WHAT,
            offset: key_at,
            field,
            wire_type,
        };
        if field <= last_field {
            return Err(unexpected);
        }
        last_field = field;
        match (field, wire_type) {
            (1, WIRE_LEN) => {
                let hash_at = r.offset();
                let hash = r.bytes("PBLink.Hash")?;
                cid = Some(Cid::from_bytes(hash).map_err(|source| DecodeError::BadCid {
                    offset: hash_at,
                    source,
                })?);
            }
            (2, WIRE_LEN) => {
                let name_at = r.offset();
                let raw = r.bytes("PBLink.Name")?;
                name = Some(
                    std::str::from_utf8(raw)
                        .map_err(|_| DecodeError::BadName { offset: name_at })?
                        .to_owned(),
                );
            }
            (3, WIRE_VARINT) => tsize = Some(r.varint("PBLink.Tsize")?),
            _ => return Err(unexpected),
        }
    }
    let cid = cid.ok_or(DecodeError::Missing {
        what: WHAT,
        offset: base,
        field: "Hash",
    })?;
    Ok(PbLink { cid, name, tsize })
}

/// A protobuf reader over one message, with offsets for errors.
struct PbReader<'a> {
    data: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> PbReader<'a> {
    fn done(&self) -> bool {
        self.pos >= self.data.len()
    }

    fn offset(&self) -> usize {
        self.base + self.pos
    }

    fn varint(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let start = self.offset();
        let mut value: u64 = 0;
        for i in 0..10 {
            let Some(&byte) = self.data.get(self.pos) else {
                return Err(DecodeError::Truncated {
                    what,
                    offset: start,
                });
            };
            self.pos += 1;
            let bits = u64::from(byte & 0x7f);
            // The tenth byte may only carry the 64th bit.
            if i == 9 && bits > 1 {
                return Err(DecodeError::BadVarint {
                    what,
                    offset: start,
                });
            }
            value |= bits << (7 * i);
            if byte & 0x80 == 0 {
                // A final zero group is a longer form of a smaller number:
                // refused, so that a decoded node encodes back to its bytes.
                if byte == 0 && i > 0 {
                    return Err(DecodeError::BadVarint {
                        what,
                        offset: start,
                    });
                }
                return Ok(value);
            }
        }
        Err(DecodeError::BadVarint {
            what,
            offset: start,
        })
    }

    fn key(&mut self, what: &'static str) -> Result<(u64, u8), DecodeError> {
        let key = self.varint(what)?;
        Ok((key >> 3, (key & 7) as u8))
    }

    fn take(&mut self, what: &'static str, len: usize) -> Result<&'a [u8], DecodeError> {
        let start = self.offset();
        let end = self.pos.checked_add(len).filter(|&e| e <= self.data.len());
        let Some(end) = end else {
            return Err(DecodeError::Truncated {
                what,
                offset: start,
            });
        };
        let out = &self.data[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.varint(what)?;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        self.take(what, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::cid::Codec;
    use proptest::prelude::*;

    #[test]
    fn empty_directory_bytes() {
        let node = PbNode {
            links: vec![],
            data: Some(UnixFsData::directory().encode()),
        };
        assert_eq!(node.encode(), [0x0a, 0x02, 0x08, 0x01]);
        assert_eq!(PbNode::decode(&node.encode()).unwrap(), node);
    }

    #[test]
    fn strict_rules() {
        // Data before Links is refused.
        let link = PbLink {
            cid: Cid::hash_of(Codec::Raw, b"x"),
            name: Some("a".into()),
            tsize: Some(1),
        };
        let good = PbNode {
            links: vec![link.clone()],
            data: Some(vec![8, 1]),
        }
        .encode();
        let mut bad = vec![0x0a, 0x02, 0x08, 0x01];
        bad.extend_from_slice(&good[..good.len() - 4]);
        assert!(matches!(
            PbNode::decode(&bad),
            Err(DecodeError::UnexpectedField { field: 2, .. })
        ));
        // Unsorted links.
        let b = PbLink {
            name: Some("b".into()),
            ..link.clone()
        };
        let unsorted = PbNode {
            links: vec![b, link.clone()],
            data: None,
        }
        .encode();
        assert!(matches!(
            PbNode::decode(&unsorted),
            Err(DecodeError::Unsorted { .. })
        ));
        // A link without a hash.
        assert!(matches!(
            PbNode::decode(&[0x12, 0x02, 0x18, 0x01]),
            Err(DecodeError::Missing { field: "Hash", .. })
        ));
        // Truncated length.
        assert!(matches!(
            PbNode::decode(&[0x0a, 0x05, 0x08]),
            Err(DecodeError::Truncated { .. })
        ));
        // An unknown UnixFS type names its offset.
        assert!(matches!(
            UnixFsData::decode(&[0x08, 0x09], 7),
            Err(DecodeError::UnknownType { offset: 7, code: 9 })
        ));
        // An overlong varint.
        assert!(matches!(
            UnixFsData::decode(
                &[
                    0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f
                ],
                0
            ),
            Err(DecodeError::BadVarint { .. })
        ));
    }

    #[test]
    fn packed_blocksizes_are_read() {
        let data = [0x08, 0x02, 0x18, 0x05, 0x22, 0x02, 0x02, 0x03];
        let d = UnixFsData::decode(&data, 0).unwrap();
        assert_eq!(d.blocksizes, vec![2, 3]);
        assert_eq!(d.filesize, Some(5));
    }

    fn arb_link() -> impl Strategy<Value = PbLink> {
        (
            any::<[u8; 32]>(),
            any::<bool>(),
            prop::option::of("[a-z.]{0,8}"),
            prop::option::of(any::<u64>()),
        )
            .prop_map(|(digest, raw, name, tsize)| PbLink {
                cid: Cid::v1(if raw { Codec::Raw } else { Codec::DagPb }, digest),
                name,
                tsize,
            })
    }

    proptest! {
        #[test]
        fn node_round_trips(mut links in prop::collection::vec(arb_link(), 0..8),
                            data in prop::option::of(prop::collection::vec(any::<u8>(), 0..40))) {
            sort_links(&mut links);
            let node = PbNode { links, data };
            let bytes = node.encode();
            prop_assert_eq!(PbNode::decode(&bytes).unwrap(), node);
        }

        #[test]
        fn unixfs_round_trips(kind in 0u64..6, data in prop::option::of(prop::collection::vec(any::<u8>(), 0..40)),
                              filesize in prop::option::of(any::<u64>()),
                              blocksizes in prop::collection::vec(any::<u64>(), 0..10)) {
            let d = UnixFsData { kind: DataType::from_code(kind).unwrap(), data, filesize, blocksizes };
            prop_assert_eq!(UnixFsData::decode(&d.encode(), 0).unwrap(), d);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(node) = PbNode::decode(&data) {
                // What decodes is canonical: it encodes back to the same bytes.
                prop_assert_eq!(node.encode(), data.clone());
            }
            let _ = UnixFsData::decode(&data, 0);
        }
    }
}
