//! The canonical binary encoding of registry values.
//!
//! Every value has exactly one encoding: integers are fixed-width big-endian,
//! byte strings and lists carry a length prefix, options a 0/1 tag, records
//! are sorted. Top-level values (operations, blocks, name states, proofs)
//! start with a version byte. Decoding never panics; it refuses short input,
//! trailing bytes, oversize lengths and every non-canonical form with a
//! [`DecodeError`] that names the field and its byte offset. A successful
//! decode therefore re-encodes to the same bytes, which `fuzz_decode`
//! asserts.

use std::net::{Ipv4Addr, Ipv6Addr};

use sha2::{Digest, Sha256};

use crate::registry::model::{
    ContentCid, DomainName, MAX_RECORD_DATA_BYTES, MAX_RECORD_SET_BYTES, MAX_RECORDS, ModelError,
    NameState, Owner, Record, RecordData, RecordSet, RecordType, Subname,
};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// The encoding version this code writes and reads.
pub const VERSION: u8 = 1;

/// Largest encoded name state: the record set plus owner, counters and a
/// content CID, with headroom.
pub const MAX_NAME_STATE_BYTES: usize = MAX_RECORD_SET_BYTES + 512;

/// SHA-256 over the concatenation of `parts`.
pub fn sha256(parts: &[&[u8]]) -> Hash {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// Why bytes did not decode, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended inside a field.
    #[error("{what} at byte {offset}: input ends, {needed} more bytes needed")]
    Truncated {
        /// The field being read.
        what: &'static str,
        /// Byte offset of the field.
        offset: usize,
        /// Bytes missing.
        needed: usize,
    },
    /// Bytes remain after a complete value.
    #[error("{what}: {extra} trailing bytes at byte {offset}")]
    TrailingBytes {
        /// The value that was complete.
        what: &'static str,
        /// Byte offset of the first extra byte.
        offset: usize,
        /// How many bytes remain.
        extra: usize,
    },
    /// The input, a length or a count is above its bound.
    #[error("{what} at byte {offset}: {len} is more than the maximum {max}")]
    TooLarge {
        /// The field or value.
        what: &'static str,
        /// Byte offset of the field.
        offset: usize,
        /// The length or count found.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The version byte is not one this code reads.
    #[error("{what} at byte {offset}: version {found}, expected {expected}")]
    UnknownVersion {
        /// The value being read.
        what: &'static str,
        /// Byte offset of the version byte.
        offset: usize,
        /// The version found.
        found: u8,
        /// The version this code reads.
        expected: u8,
    },
    /// A tag names no known variant.
    #[error("{what} at byte {offset}: unknown tag {tag}")]
    UnknownTag {
        /// The field being read.
        what: &'static str,
        /// Byte offset of the tag.
        offset: usize,
        /// The tag found.
        tag: u16,
    },
    /// The bytes are well formed but not the one canonical encoding (records
    /// out of order or repeated, upper case, non-zero padding bits).
    #[error("{what} at byte {offset} is not in canonical form")]
    NonCanonical {
        /// The field being read.
        what: &'static str,
        /// Byte offset of the field.
        offset: usize,
    },
    /// A field decoded but its value breaks a registry rule.
    #[error("{what} at byte {offset}: {source}")]
    Invalid {
        /// The field being read.
        what: &'static str,
        /// Byte offset of the field.
        offset: usize,
        /// The rule broken.
        source: ModelError,
    },
}

/// Appends canonical fields to a buffer.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// The bytes written.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }

    /// One byte.
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    /// Two bytes, big-endian.
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// Four bytes, big-endian.
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// Eight bytes, big-endian.
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// Bytes with no prefix (fixed-size fields).
    pub fn raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes with a one-byte length prefix. Callers bound the length first.
    pub fn bytes8(&mut self, bytes: &[u8]) {
        debug_assert!(bytes.len() <= u8::MAX as usize);
        self.u8(bytes.len() as u8);
        self.raw(bytes);
    }

    /// Bytes with a two-byte length prefix. Callers bound the length first.
    pub fn bytes16(&mut self, bytes: &[u8]) {
        debug_assert!(bytes.len() <= u16::MAX as usize);
        self.u16(bytes.len() as u16);
        self.raw(bytes);
    }
}

/// Reads canonical fields from a byte slice, tracking the offset for errors.
#[derive(Debug)]
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `data`, reporting offsets from 0.
    pub fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            pos: 0,
            base: 0,
        }
    }

    /// The absolute offset of the next byte.
    pub fn offset(&self) -> usize {
        self.base + self.pos
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    /// The bytes between two offsets returned by [`Reader::offset`].
    pub fn span(&self, from: usize, to: usize) -> &'a [u8] {
        &self.data[from - self.base..to - self.base]
    }

    /// Fails unless everything was read.
    pub fn finish(&self, what: &'static str) -> Result<(), DecodeError> {
        if self.remaining() > 0 {
            return Err(DecodeError::TrailingBytes {
                what,
                offset: self.offset(),
                extra: self.remaining(),
            });
        }
        Ok(())
    }

    /// `len` raw bytes.
    pub fn take(&mut self, what: &'static str, len: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < len {
            return Err(DecodeError::Truncated {
                what,
                offset: self.offset(),
                needed: len - self.remaining(),
            });
        }
        let out = &self.data[self.pos..self.pos + len];
        self.pos += len;
        Ok(out)
    }

    /// A fixed-size array.
    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(what, N)?);
        Ok(out)
    }

    /// One byte.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    /// Two bytes, big-endian.
    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    /// Four bytes, big-endian.
    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    /// Eight bytes, big-endian.
    pub fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    /// Bytes with a one-byte length prefix, at most `max` long.
    pub fn bytes8(&mut self, what: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        let offset = self.offset();
        let len = self.u8(what)? as usize;
        if len > max {
            return Err(DecodeError::TooLarge {
                what,
                offset,
                len,
                max,
            });
        }
        self.take(what, len)
    }

    /// Bytes with a two-byte length prefix, at most `max` long.
    pub fn bytes16(&mut self, what: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        let offset = self.offset();
        let len = self.u16(what)? as usize;
        if len > max {
            return Err(DecodeError::TooLarge {
                what,
                offset,
                len,
                max,
            });
        }
        self.take(what, len)
    }

    /// A sub-reader over the next `len` bytes, reporting absolute offsets.
    pub fn sub(&mut self, what: &'static str, len: usize) -> Result<Reader<'a>, DecodeError> {
        let base = self.offset();
        let data = self.take(what, len)?;
        Ok(Reader { data, pos: 0, base })
    }

    /// An option tag: 0 for none, 1 for some; anything else is non-canonical.
    pub fn option_tag(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        let offset = self.offset();
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::NonCanonical { what, offset }),
        }
    }

    /// A version byte that must equal [`VERSION`].
    pub fn version(&mut self, what: &'static str) -> Result<(), DecodeError> {
        let offset = self.offset();
        let found = self.u8(what)?;
        if found != VERSION {
            return Err(DecodeError::UnknownVersion {
                what,
                offset,
                found,
                expected: VERSION,
            });
        }
        Ok(())
    }

    /// Text with a one-byte length prefix, parsed by `parse`; the parsed
    /// value must print back to the same text (so case and trailing dots are
    /// canonical).
    pub fn text8<T>(
        &mut self,
        what: &'static str,
        parse: impl FnOnce(&str) -> Result<T, ModelError>,
        canonical: impl FnOnce(&T) -> &str,
    ) -> Result<T, DecodeError> {
        let offset = self.offset();
        let bytes = self.bytes8(what, u8::MAX as usize)?;
        let text =
            std::str::from_utf8(bytes).map_err(|_| DecodeError::NonCanonical { what, offset })?;
        let value = parse(text).map_err(|source| DecodeError::Invalid {
            what,
            offset,
            source,
        })?;
        if canonical(&value) != text {
            return Err(DecodeError::NonCanonical { what, offset });
        }
        Ok(value)
    }
}

/// Checks an input's size before decoding starts, so a huge input is refused
/// without reading it.
pub fn check_input_len(what: &'static str, data: &[u8], max: usize) -> Result<(), DecodeError> {
    if data.len() > max {
        return Err(DecodeError::TooLarge {
            what,
            offset: 0,
            len: data.len(),
            max,
        });
    }
    Ok(())
}

/// Writes an owner key.
pub fn put_owner(w: &mut Writer, owner: &Owner) {
    w.raw(&owner.to_bytes());
}

/// Reads an owner key.
pub fn get_owner(r: &mut Reader<'_>, what: &'static str) -> Result<Owner, DecodeError> {
    let offset = r.offset();
    let bytes = r.array::<32>(what)?;
    Owner::from_bytes(&bytes).map_err(|source| DecodeError::Invalid {
        what,
        offset,
        source,
    })
}

fn put_domain(w: &mut Writer, name: &DomainName) {
    w.bytes8(name.as_str().as_bytes());
}

fn get_domain(r: &mut Reader<'_>, what: &'static str) -> Result<DomainName, DecodeError> {
    r.text8(what, DomainName::parse, DomainName::as_str)
}

fn encode_rdata(w: &mut Writer, data: &RecordData) {
    match data {
        RecordData::A(addr) => w.raw(&addr.octets()),
        RecordData::Aaaa(addr) => w.raw(&addr.octets()),
        RecordData::Cname(target) | RecordData::Ns(target) => put_domain(w, target),
        RecordData::Mx {
            preference,
            exchange,
        } => {
            w.u16(*preference);
            put_domain(w, exchange);
        }
        RecordData::Txt(strings) => {
            w.u8(strings.len() as u8);
            for s in strings {
                w.bytes8(s);
            }
        }
        RecordData::Srv {
            priority,
            weight,
            port,
            target,
        } => {
            w.u16(*priority);
            w.u16(*weight);
            w.u16(*port);
            put_domain(w, target);
        }
        RecordData::Caa { flags, tag, value } => {
            w.u8(*flags);
            w.bytes8(tag.as_bytes());
            w.bytes16(value);
        }
        RecordData::Tlsa {
            usage,
            selector,
            matching_type,
            data,
        } => {
            w.u8(*usage);
            w.u8(*selector);
            w.u8(*matching_type);
            w.bytes16(data);
        }
        RecordData::Ds {
            key_tag,
            algorithm,
            digest_type,
            digest,
        } => {
            w.u16(*key_tag);
            w.u8(*algorithm);
            w.u8(*digest_type);
            w.bytes16(digest);
        }
    }
}

/// The encoded length of a record's data, for the size bound. Counts
/// without writing, so that oversize data is measured before a two-byte
/// length prefix could overflow.
pub fn rdata_len(data: &RecordData) -> usize {
    match data {
        RecordData::Txt(strings) => 1 + strings.iter().map(|s| 1 + s.len()).sum::<usize>(),
        RecordData::Caa { tag, value, .. } => 1 + 1 + tag.len() + 2 + value.len(),
        RecordData::Tlsa { data, .. } => 3 + 2 + data.len(),
        RecordData::Ds { digest, .. } => 4 + 2 + digest.len(),
        other => {
            let mut w = Writer::new();
            encode_rdata(&mut w, other);
            w.finish().len()
        }
    }
}

fn decode_rdata(r: &mut Reader<'_>, rtype: RecordType) -> Result<RecordData, DecodeError> {
    let max = MAX_RECORD_DATA_BYTES;
    Ok(match rtype {
        RecordType::A => RecordData::A(Ipv4Addr::from(r.array::<4>("A address")?)),
        RecordType::Aaaa => RecordData::Aaaa(Ipv6Addr::from(r.array::<16>("AAAA address")?)),
        RecordType::Cname => RecordData::Cname(get_domain(r, "CNAME target")?),
        RecordType::Ns => RecordData::Ns(get_domain(r, "NS target")?),
        RecordType::Mx => RecordData::Mx {
            preference: r.u16("MX preference")?,
            exchange: get_domain(r, "MX exchange")?,
        },
        RecordType::Txt => {
            let count = r.u8("TXT string count")?;
            let mut strings = Vec::with_capacity(count as usize);
            for _ in 0..count {
                strings.push(r.bytes8("TXT string", u8::MAX as usize)?.to_vec());
            }
            RecordData::Txt(strings)
        }
        RecordType::Srv => RecordData::Srv {
            priority: r.u16("SRV priority")?,
            weight: r.u16("SRV weight")?,
            port: r.u16("SRV port")?,
            target: get_domain(r, "SRV target")?,
        },
        RecordType::Caa => {
            let flags = r.u8("CAA flags")?;
            let offset = r.offset();
            let tag = r.bytes8("CAA tag", u8::MAX as usize)?;
            let tag = String::from_utf8(tag.to_vec()).map_err(|_| DecodeError::NonCanonical {
                what: "CAA tag",
                offset,
            })?;
            RecordData::Caa {
                flags,
                tag,
                value: r.bytes16("CAA value", max)?.to_vec(),
            }
        }
        RecordType::Tlsa => RecordData::Tlsa {
            usage: r.u8("TLSA usage")?,
            selector: r.u8("TLSA selector")?,
            matching_type: r.u8("TLSA matching type")?,
            data: r.bytes16("TLSA data", max)?.to_vec(),
        },
        RecordType::Ds => RecordData::Ds {
            key_tag: r.u16("DS key tag")?,
            algorithm: r.u8("DS algorithm")?,
            digest_type: r.u8("DS digest type")?,
            digest: r.bytes16("DS digest", max)?.to_vec(),
        },
    })
}

/// The canonical encoding of one record: subname, TTL, type, then the data
/// with a two-byte length. Record sets sort by these bytes.
pub fn encode_record(record: &Record) -> Vec<u8> {
    let mut w = Writer::new();
    put_record(&mut w, record);
    w.finish()
}

fn put_record(w: &mut Writer, record: &Record) {
    w.bytes8(record.subname.as_str().as_bytes());
    w.u32(record.ttl_secs);
    w.u16(record.data.rtype().code());
    let mut rdata = Writer::new();
    encode_rdata(&mut rdata, &record.data);
    w.bytes16(&rdata.finish());
}

fn get_record(r: &mut Reader<'_>) -> Result<Record, DecodeError> {
    let subname = r.text8("record subname", Subname::parse, Subname::as_str)?;
    let ttl_secs = r.u32("record TTL")?;
    let offset = r.offset();
    let code = r.u16("record type")?;
    let rtype = RecordType::from_code(code).ok_or(DecodeError::UnknownTag {
        what: "record type",
        offset,
        tag: code,
    })?;
    let len_offset = r.offset();
    let len = r.u16("record data length")? as usize;
    if len > MAX_RECORD_DATA_BYTES {
        return Err(DecodeError::TooLarge {
            what: "record data",
            offset: len_offset,
            len,
            max: MAX_RECORD_DATA_BYTES,
        });
    }
    let mut rdata = r.sub("record data", len)?;
    let data = decode_rdata(&mut rdata, rtype)?;
    rdata.finish("record data")?;
    Ok(Record {
        subname,
        ttl_secs,
        data,
    })
}

/// Writes a record set: a two-byte count, then the records in order.
pub fn put_record_set(w: &mut Writer, set: &RecordSet) {
    w.u16(set.len() as u16);
    for record in set.records() {
        put_record(w, record);
    }
}

/// Reads a record set; the records must be in strictly increasing byte
/// order, and the set must pass [`RecordSet::new`].
pub fn get_record_set(r: &mut Reader<'_>) -> Result<RecordSet, DecodeError> {
    let start = r.offset();
    let count = r.u16("record count")? as usize;
    if count > MAX_RECORDS {
        return Err(DecodeError::TooLarge {
            what: "record count",
            offset: start,
            len: count,
            max: MAX_RECORDS,
        });
    }
    let mut records = Vec::with_capacity(count);
    let mut prev: Option<&[u8]> = None;
    for _ in 0..count {
        let from = r.offset();
        records.push(get_record(r)?);
        let bytes = r.span(from, r.offset());
        if prev.is_some_and(|p| p >= bytes) {
            return Err(DecodeError::NonCanonical {
                what: "record order",
                offset: from,
            });
        }
        prev = Some(bytes);
        if r.offset() - start > MAX_RECORD_SET_BYTES {
            return Err(DecodeError::TooLarge {
                what: "record set",
                offset: start,
                len: r.offset() - start,
                max: MAX_RECORD_SET_BYTES,
            });
        }
    }
    RecordSet::new(records).map_err(|source| DecodeError::Invalid {
        what: "record set",
        offset: start,
        source,
    })
}

/// Writes an optional content CID.
pub fn put_content(w: &mut Writer, content: Option<&ContentCid>) {
    match content {
        None => w.u8(0),
        Some(cid) => {
            w.u8(1);
            w.bytes8(cid.as_str().as_bytes());
        }
    }
}

/// Reads an optional content CID.
pub fn get_content(r: &mut Reader<'_>) -> Result<Option<ContentCid>, DecodeError> {
    if !r.option_tag("content tag")? {
        return Ok(None);
    }
    Ok(Some(r.text8(
        "content CID",
        ContentCid::parse,
        ContentCid::as_str,
    )?))
}

impl NameState {
    /// The canonical encoding, version byte first. The state tree commits to
    /// the SHA-256 of these bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(VERSION);
        put_owner(&mut w, &self.owner);
        w.u64(self.sequence);
        w.u64(self.expiry_height);
        put_content(&mut w, self.content.as_ref());
        put_record_set(&mut w, &self.records);
        w.finish()
    }

    /// Decodes [`NameState::to_bytes`] output, refusing anything else.
    pub fn from_bytes(data: &[u8]) -> Result<Self, DecodeError> {
        check_input_len("name state", data, MAX_NAME_STATE_BYTES)?;
        let mut r = Reader::new(data);
        r.version("name state version")?;
        let state = Self {
            owner: get_owner(&mut r, "owner")?,
            sequence: r.u64("sequence")?,
            expiry_height: r.u64("expiry height")?,
            content: get_content(&mut r)?,
            records: get_record_set(&mut r)?,
        };
        r.finish("name state")?;
        Ok(state)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::registry::model::{MAX_TTL_SECS, Name};
    use ed25519_dalek::SigningKey;
    use proptest::prelude::*;

    fn label() -> impl Strategy<Value = String> {
        "[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?"
    }

    pub(crate) fn arb_name() -> impl Strategy<Value = Name> {
        label().prop_map(|l| Name::parse(&l).unwrap())
    }

    fn arb_domain() -> impl Strategy<Value = DomainName> {
        prop::collection::vec(label(), 1..4)
            .prop_map(|ls| DomainName::parse(&ls.join(".")).unwrap())
    }

    fn arb_subname() -> impl Strategy<Value = Subname> {
        prop_oneof![
            Just(Subname::apex()),
            label().prop_map(|l| Subname::parse(&l).unwrap()),
            label().prop_map(|l| Subname::parse(&format!("_{l}")).unwrap()),
            label().prop_map(|l| Subname::parse(&format!("*.{l}")).unwrap()),
        ]
    }

    fn arb_data() -> impl Strategy<Value = RecordData> {
        prop_oneof![
            any::<u32>().prop_map(|a| RecordData::A(Ipv4Addr::from(a))),
            any::<u128>().prop_map(|a| RecordData::Aaaa(Ipv6Addr::from(a))),
            arb_domain().prop_map(RecordData::Ns),
            (any::<u16>(), arb_domain()).prop_map(|(preference, exchange)| RecordData::Mx {
                preference,
                exchange
            }),
            prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..3)
                .prop_map(RecordData::Txt),
            (any::<u16>(), any::<u16>(), any::<u16>(), arb_domain()).prop_map(
                |(priority, weight, port, target)| {
                    RecordData::Srv {
                        priority,
                        weight,
                        port,
                        target,
                    }
                }
            ),
            (
                any::<u8>(),
                "[a-z]{1,9}",
                prop::collection::vec(any::<u8>(), 0..20)
            )
                .prop_map(|(flags, tag, value)| RecordData::Caa { flags, tag, value }),
            (
                any::<u8>(),
                any::<u8>(),
                any::<u8>(),
                prop::collection::vec(any::<u8>(), 1..40)
            )
                .prop_map(|(usage, selector, matching_type, data)| RecordData::Tlsa {
                    usage,
                    selector,
                    matching_type,
                    data
                }),
            (
                any::<u16>(),
                any::<u8>(),
                any::<u8>(),
                prop::collection::vec(any::<u8>(), 1..40)
            )
                .prop_map(|(key_tag, algorithm, digest_type, mut digest)| {
                    // Known digest types have fixed lengths (validate).
                    match digest_type {
                        1 => digest.resize(20, 7),
                        2 => digest.resize(32, 7),
                        4 => digest.resize(48, 7),
                        _ => {}
                    }
                    RecordData::Ds {
                        key_tag,
                        algorithm,
                        digest_type,
                        digest,
                    }
                }),
        ]
    }

    pub(crate) fn arb_record_set() -> impl Strategy<Value = RecordSet> {
        prop::collection::vec(
            (arb_subname(), 0..=MAX_TTL_SECS, arb_data()).prop_map(|(subname, ttl_secs, data)| {
                Record {
                    subname,
                    ttl_secs,
                    data,
                }
            }),
            0..6,
        )
        .prop_map(|records| RecordSet::new(records).unwrap())
    }

    pub(crate) fn arb_owner() -> impl Strategy<Value = Owner> {
        any::<[u8; 32]>()
            .prop_map(|seed| Owner::new(SigningKey::from_bytes(&seed).verifying_key()).unwrap())
    }

    pub(crate) fn arb_state() -> impl Strategy<Value = NameState> {
        (
            arb_owner(),
            arb_record_set(),
            prop::option::of("[a-z2-7]{10,59}"),
            any::<u64>(),
            any::<u64>(),
        )
            .prop_map(
                |(owner, records, content, sequence, expiry_height)| NameState {
                    owner,
                    records,
                    content: content.map(|c| ContentCid::parse(&c).unwrap()),
                    sequence,
                    expiry_height,
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn name_state_round_trips(state in arb_state()) {
            let bytes = state.to_bytes();
            prop_assert_eq!(NameState::from_bytes(&bytes).unwrap(), state);
        }

        #[test]
        fn record_order_does_not_change_encoding(set in arb_record_set(), seed in any::<u64>()) {
            use rand::seq::SliceRandom;
            use rand::SeedableRng;
            let mut shuffled = set.records().to_vec();
            shuffled.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
            let again = RecordSet::new(shuffled).unwrap();
            let (mut a, mut b) = (Writer::new(), Writer::new());
            put_record_set(&mut a, &set);
            put_record_set(&mut b, &again);
            prop_assert_eq!(a.finish(), b.finish());
        }

        #[test]
        fn mutated_state_bytes_never_panic_and_stay_canonical(state in arb_state(), pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut bytes = state.to_bytes();
            let i = pos.index(bytes.len());
            bytes[i] = byte;
            if let Ok(decoded) = NameState::from_bytes(&bytes) {
                prop_assert_eq!(decoded.to_bytes(), bytes);
            }
        }
    }

    #[test]
    fn decode_errors_name_field_and_offset() {
        let state = NameState {
            owner: Owner::new(SigningKey::from_bytes(&[7; 32]).verifying_key()).unwrap(),
            records: RecordSet::default(),
            content: None,
            sequence: 1,
            expiry_height: 10,
        };
        let bytes = state.to_bytes();
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(
            NameState::from_bytes(&long),
            Err(DecodeError::TrailingBytes {
                what: "name state",
                offset: bytes.len(),
                extra: 1
            })
        );
        assert!(matches!(
            NameState::from_bytes(&bytes[..5]),
            Err(DecodeError::Truncated {
                what: "owner",
                offset: 1,
                ..
            })
        ));
        let mut v2 = bytes.clone();
        v2[0] = 2;
        assert!(matches!(
            NameState::from_bytes(&v2),
            Err(DecodeError::UnknownVersion { found: 2, .. })
        ));
        let mut tag = bytes.clone();
        tag[1 + 32 + 16] = 2;
        assert_eq!(
            NameState::from_bytes(&tag),
            Err(DecodeError::NonCanonical {
                what: "content tag",
                offset: 49
            })
        );
    }

    #[test]
    fn unsorted_or_upper_case_records_are_non_canonical() {
        let rec = |s: &str, a: u32| Record {
            subname: Subname::parse(s).unwrap(),
            ttl_secs: 60,
            data: RecordData::A(Ipv4Addr::from(a)),
        };
        let (r1, r2) = (encode_record(&rec("", 1)), encode_record(&rec("", 2)));
        let mut w = Writer::new();
        w.u16(2);
        w.raw(&r2);
        w.raw(&r1);
        let bytes = w.finish();
        assert!(matches!(
            get_record_set(&mut Reader::new(&bytes)),
            Err(DecodeError::NonCanonical {
                what: "record order",
                ..
            })
        ));
        let mut w = Writer::new();
        w.u16(1);
        w.raw(&encode_record(&rec("www", 1)));
        let mut bytes = w.finish();
        bytes[3] = b'W';
        assert!(matches!(
            get_record_set(&mut Reader::new(&bytes)),
            Err(DecodeError::NonCanonical {
                what: "record subname",
                offset: 2
            })
        ));
    }
}
