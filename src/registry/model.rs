//! The registry's nouns: a [`Name`] under a registry [`Zone`], its [`Owner`],
//! its [`RecordSet`] of DNS records, its optional [`ContentCid`], and the
//! [`NameState`] that the state tree commits to.
//!
//! Every constructor validates, so a value of these types is always within
//! the limits below; the codec and the operation rules rely on that. The
//! limits are protocol constants: changing one changes which operations are
//! valid, so it needs a new encoding version.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use ed25519_dalek::VerifyingKey;

/// Longest DNS label, RFC 1035 §2.3.4.
pub const MAX_LABEL_BYTES: usize = 63;

/// Longest domain name in text form without the trailing dot, RFC 1035
/// §2.3.4 (255 octets on the wire is 253 characters of text).
pub const MAX_DOMAIN_NAME_BYTES: usize = 253;

/// Longest owner-relative subname (`www`, `_dmarc`, `_443._tcp.www`). The
/// full name is subname + name + zone and must stay under 253 characters;
/// 128 leaves 125 for the name label and a zone suffix of several labels.
pub const MAX_SUBNAME_BYTES: usize = 128;

/// Most records in one name's set. The set is served and proved whole, so it
/// bounds the size of a state leaf; 64 covers an apex with addresses, mail,
/// SPF/DMARC/DKIM TXT, SRV, CAA, TLSA and a delegation with room to spare.
pub const MAX_RECORDS: usize = 64;

/// Largest encoded RDATA of one record. Fits a TXT with a 4096-bit DKIM key
/// and TLSA or DS with any standard digest; TLSA with a full certificate
/// (matching type 0) does not fit and should use a SHA-256 digest instead.
pub const MAX_RECORD_DATA_BYTES: usize = 1024;

/// Largest encoded record set. Keeps a register or update operation, a state
/// leaf and its proof, and a full DNS answer for the name well under the
/// 64 KiB of one DNS-over-TCP message.
pub const MAX_RECORD_SET_BYTES: usize = 8 * 1024;

/// Longest character-string inside a TXT record, RFC 1035 §3.3.
pub const MAX_TXT_STRING_BYTES: usize = 255;

/// Longest CAA property tag, RFC 8659 §4.1 (1 to 15 alphanumerics).
pub const MAX_CAA_TAG_BYTES: usize = 15;

/// Largest TTL a record may carry: one week. RFC 2181 §8 allows 2^31-1, but a
/// shorter bound means a transfer or update reaches every cache within a week.
pub const MAX_TTL_SECS: u32 = 7 * 24 * 3600;

/// Longest content CID string. A CIDv1 of a SHA-256 in base32 is 59
/// characters; 128 leaves room for longer multihashes and other bases.
pub const MAX_CONTENT_CID_BYTES: usize = 128;

/// An error in a registry value: a bad label, a record out of bounds, a
/// malformed key. Says what was wrong and, where there is one, where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A label (a name, or a part of a subname or domain name) is empty.
    #[error("empty label in {what}")]
    EmptyLabel {
        /// Which kind of name held the label.
        what: &'static str,
    },
    /// A label is longer than DNS allows.
    #[error("label of {len} bytes in {what} is longer than {max}")]
    LabelTooLong {
        /// Which kind of name held the label.
        what: &'static str,
        /// The label's length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// A label holds a character outside letters, digits and hyphen (and
    /// underscore, where allowed).
    #[error("character {ch:?} at byte {index} of label {label:?} in {what} is not allowed")]
    BadLabelChar {
        /// Which kind of name held the label.
        what: &'static str,
        /// The label.
        label: String,
        /// Byte offset in the label.
        index: usize,
        /// The offending character.
        ch: char,
    },
    /// A label starts or ends with a hyphen (RFC 952, RFC 1123 §2.1).
    #[error("label {label:?} in {what} starts or ends with a hyphen")]
    HyphenAtEdge {
        /// Which kind of name held the label.
        what: &'static str,
        /// The label.
        label: String,
    },
    /// A whole name is longer than its bound.
    #[error("{what} of {len} bytes is longer than {max}")]
    NameTooLong {
        /// Which kind of name.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// A fully qualified name does not end in the registry zone.
    #[error("{fqdn:?} is not a name under zone {zone:?}")]
    NotInZone {
        /// The name asked for.
        fqdn: String,
        /// The zone suffix.
        zone: String,
    },
    /// Bytes that should be an Ed25519 public key are not one, or a weak one.
    #[error("not a usable Ed25519 public key")]
    BadOwnerKey,
    /// A content CID is empty, too long, or not alphanumeric.
    #[error("content CID is invalid: {reason}")]
    BadContentCid {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A record's TTL is above the bound.
    #[error("record {index}: TTL {ttl} s is above the maximum {max} s")]
    TtlTooLarge {
        /// Index of the record in the set as given.
        index: usize,
        /// The TTL.
        ttl: u32,
        /// The bound.
        max: u32,
    },
    /// A record's data breaks a rule of its type.
    #[error("{rtype} record data is invalid: {reason}")]
    BadRecordData {
        /// The record type.
        rtype: RecordType,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A record's encoded data is larger than the bound.
    #[error("record {index}: data of {len} bytes is larger than {max}")]
    RecordDataTooLarge {
        /// Index of the record in the set as given.
        index: usize,
        /// Encoded length of the data.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// A record set holds more records than the bound.
    #[error("record set holds {count} records, more than {max}")]
    TooManyRecords {
        /// Records given.
        count: usize,
        /// The bound.
        max: usize,
    },
    /// A record set's encoding is larger than the bound.
    #[error("record set encodes to {len} bytes, more than {max}")]
    RecordSetTooLarge {
        /// Encoded length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// A CNAME shares its subname with another record (RFC 1034 §3.6.2).
    #[error("CNAME at subname {subname:?} must be the only record there")]
    CnameConflict {
        /// The subname.
        subname: String,
    },
    /// A record type name or number is not one the registry carries.
    #[error("record type {found:?} is not supported")]
    UnknownRecordType {
        /// What was given.
        found: String,
    },
}

/// A registry zone: the configured suffix names live under, such as `grid.`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Zone {
    labels: Vec<String>,
}

impl Zone {
    /// Parses a zone suffix such as `grid.` or `grid` (case-insensitive).
    pub fn parse(suffix: &str) -> Result<Self, ModelError> {
        let text = suffix
            .strip_suffix('.')
            .unwrap_or(suffix)
            .to_ascii_lowercase();
        let domain = DomainName::parse(&text)?;
        if domain.is_root() {
            return Err(ModelError::EmptyLabel { what: "zone" });
        }
        Ok(Self {
            labels: domain.0.split('.').map(str::to_owned).collect(),
        })
    }

    /// The zone as text with a trailing dot, e.g. `grid.`.
    pub fn to_fqdn(&self) -> String {
        format!("{}.", self.labels.join("."))
    }

    /// Splits a fully qualified query name (`www.hello.grid.`) into the
    /// registry [`Name`] (`hello`) and the owner-relative [`Subname`]
    /// (`www`). Case-insensitive; the trailing dot is optional.
    pub fn split(&self, fqdn: &str) -> Result<(Name, Subname), ModelError> {
        let text = fqdn.strip_suffix('.').unwrap_or(fqdn).to_ascii_lowercase();
        let labels: Vec<&str> = if text.is_empty() {
            Vec::new()
        } else {
            text.split('.').collect()
        };
        let not_in_zone = || ModelError::NotInZone {
            fqdn: fqdn.to_owned(),
            zone: self.to_fqdn(),
        };
        if labels.len() <= self.labels.len() {
            return Err(not_in_zone());
        }
        let split = labels.len() - self.labels.len();
        if labels[split..]
            .iter()
            .zip(&self.labels)
            .any(|(a, b)| a != b)
        {
            return Err(not_in_zone());
        }
        let name = Name::parse(labels[split - 1])?;
        let subname = Subname::parse(&labels[..split - 1].join("."))?;
        Ok((name, subname))
    }

    /// The fully qualified form of `name` in this zone, e.g. `hello.grid.`.
    pub fn fqdn(&self, name: &Name) -> String {
        format!("{}.{}", name, self.to_fqdn())
    }
}

/// Checks one LDH label. `underscore` also allows `_` (service labels such as
/// `_dmarc`, RFC 8552); names themselves never take it.
fn check_label(what: &'static str, label: &str, underscore: bool) -> Result<(), ModelError> {
    if label.is_empty() {
        return Err(ModelError::EmptyLabel { what });
    }
    if label.len() > MAX_LABEL_BYTES {
        return Err(ModelError::LabelTooLong {
            what,
            len: label.len(),
            max: MAX_LABEL_BYTES,
        });
    }
    for (index, ch) in label.char_indices() {
        let ok = ch.is_ascii_lowercase()
            || ch.is_ascii_digit()
            || ch == '-'
            || (underscore && ch == '_');
        if !ok {
            return Err(ModelError::BadLabelChar {
                what,
                label: label.to_owned(),
                index,
                ch,
            });
        }
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(ModelError::HyphenAtEdge {
            what,
            label: label.to_owned(),
        });
    }
    Ok(())
}

/// A registered name: one LDH label under the registry zone, kept in lower
/// case (`hello` of `hello.grid.`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(String);

impl Name {
    /// Parses a label, folding it to lower case; rejects anything that is not
    /// letters, digits and inner hyphens, or longer than 63 bytes.
    pub fn parse(label: &str) -> Result<Self, ModelError> {
        let lower = label.to_ascii_lowercase();
        check_label("name", &lower, false)?;
        Ok(Self(lower))
    }

    /// The label as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a record sits relative to its name: `""` is the name itself, `www`
/// is `www.<name>`, `_dmarc` is `_dmarc.<name>`. A leading `*` label is a
/// wildcard (RFC 4592).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Subname(String);

impl Subname {
    /// The name itself.
    pub fn apex() -> Self {
        Self(String::new())
    }

    /// Parses a relative name (`""`, `www`, `_443._tcp`, `*.dev`), folding it
    /// to lower case. `@` is accepted for the apex, as in zone files.
    pub fn parse(text: &str) -> Result<Self, ModelError> {
        let lower = text.to_ascii_lowercase();
        if lower.is_empty() || lower == "@" {
            return Ok(Self::apex());
        }
        if lower.len() > MAX_SUBNAME_BYTES {
            return Err(ModelError::NameTooLong {
                what: "subname",
                len: lower.len(),
                max: MAX_SUBNAME_BYTES,
            });
        }
        for (i, label) in lower.split('.').enumerate() {
            if i == 0 && label == "*" {
                continue;
            }
            check_label("subname", label, true)?;
        }
        Ok(Self(lower))
    }

    /// The subname as text (`""` for the apex).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is the name itself.
    pub fn is_apex(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Subname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("@")
        } else {
            f.write_str(&self.0)
        }
    }
}

/// An absolute domain name a record points at (a CNAME, NS, MX or SRV
/// target). Kept lower case without the trailing dot; the root is `""`
/// (a null MX, RFC 7505, or "no service" SRV, RFC 2782).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomainName(String);

impl DomainName {
    /// Parses an absolute name; the trailing dot is optional, case folds.
    pub fn parse(text: &str) -> Result<Self, ModelError> {
        let lower = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
        if lower.is_empty() {
            return Ok(Self(lower));
        }
        if lower.len() > MAX_DOMAIN_NAME_BYTES {
            return Err(ModelError::NameTooLong {
                what: "domain name",
                len: lower.len(),
                max: MAX_DOMAIN_NAME_BYTES,
            });
        }
        for label in lower.split('.') {
            check_label("domain name", label, true)?;
        }
        Ok(Self(lower))
    }

    /// The name as text without the trailing dot (`""` for the root).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is the root name.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.", self.0)
    }
}

/// The key that owns a name: an Ed25519 public key, kept in its 32-byte
/// compressed form (checked to be a usable key when made). Operations on
/// the name must be signed by it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Owner([u8; 32]);

impl Owner {
    /// Wraps a public key, refusing weak (small-order) keys that would let
    /// anyone forge signatures.
    pub fn new(key: VerifyingKey) -> Result<Self, ModelError> {
        if key.is_weak() {
            return Err(ModelError::BadOwnerKey);
        }
        Ok(Self(key.to_bytes()))
    }

    /// The public key of a secret key. Infallible: a key derived from a
    /// clamped secret scalar is never of small order.
    pub fn of(key: &ed25519_dalek::SigningKey) -> Self {
        Self(key.verifying_key().to_bytes())
    }

    /// Parses the 32-byte compressed public key.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, ModelError> {
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| ModelError::BadOwnerKey)?;
        Self::new(key)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(text: &str) -> Result<Self, ModelError> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut bytes).map_err(|_| ModelError::BadOwnerKey)?;
        Self::from_bytes(&bytes)
    }

    /// The 32-byte compressed public key.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    /// The public key, for verifying signatures.
    pub fn key(&self) -> VerifyingKey {
        VerifyingKey::from_bytes(&self.0).expect("checked when the owner was made")
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.to_bytes()))
    }
}

impl fmt::Debug for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Owner({self})")
    }
}

/// The content a name points the HTTP edge at: a CID in its string form.
/// Only its shape is checked here (bounded, alphanumeric); `src/content/`
/// parses it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContentCid(String);

impl ContentCid {
    /// Checks the shape of a CID string: 1 to 128 ASCII alphanumerics, which
    /// covers multibase base32 and base58btc CIDs.
    pub fn parse(text: &str) -> Result<Self, ModelError> {
        if text.is_empty() {
            return Err(ModelError::BadContentCid { reason: "empty" });
        }
        if text.len() > MAX_CONTENT_CID_BYTES {
            return Err(ModelError::BadContentCid {
                reason: "longer than 128 bytes",
            });
        }
        if !text.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(ModelError::BadContentCid {
                reason: "not ASCII alphanumeric",
            });
        }
        Ok(Self(text.to_owned()))
    }

    /// The CID string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ContentCid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The DNS record types the registry carries, with their RFC type numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum RecordType {
    /// IPv4 address, RFC 1035.
    A,
    /// Delegation to name servers, RFC 1035.
    Ns,
    /// Alias, RFC 1035.
    Cname,
    /// Mail exchanger, RFC 1035.
    Mx,
    /// Text, RFC 1035.
    Txt,
    /// IPv6 address, RFC 3596.
    Aaaa,
    /// Service location, RFC 2782.
    Srv,
    /// Delegation signer, RFC 4034.
    Ds,
    /// DANE TLS association, RFC 6698.
    Tlsa,
    /// Certification authority authorization, RFC 8659.
    Caa,
}

impl RecordType {
    /// Every supported type, in type-number order.
    pub const ALL: [RecordType; 10] = [
        Self::A,
        Self::Ns,
        Self::Cname,
        Self::Mx,
        Self::Txt,
        Self::Aaaa,
        Self::Srv,
        Self::Ds,
        Self::Tlsa,
        Self::Caa,
    ];

    /// The RR type number (RFC 1035 §3.2.2 and the IANA registry).
    pub fn code(self) -> u16 {
        match self {
            Self::A => 1,
            Self::Ns => 2,
            Self::Cname => 5,
            Self::Mx => 15,
            Self::Txt => 16,
            Self::Aaaa => 28,
            Self::Srv => 33,
            Self::Ds => 43,
            Self::Tlsa => 52,
            Self::Caa => 257,
        }
    }

    /// The type for an RR type number, if supported.
    pub fn from_code(code: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.code() == code)
    }

    /// The mnemonic, e.g. `AAAA`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::A => "A",
            Self::Ns => "NS",
            Self::Cname => "CNAME",
            Self::Mx => "MX",
            Self::Txt => "TXT",
            Self::Aaaa => "AAAA",
            Self::Srv => "SRV",
            Self::Ds => "DS",
            Self::Tlsa => "TLSA",
            Self::Caa => "CAA",
        }
    }

    /// Parses a mnemonic, case-insensitive.
    pub fn parse(text: &str) -> Result<Self, ModelError> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(text))
            .ok_or_else(|| ModelError::UnknownRecordType {
                found: text.to_owned(),
            })
    }
}

impl fmt::Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The data of one record, by type. Field names follow the RFCs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RecordData {
    /// An IPv4 address.
    A(Ipv4Addr),
    /// An IPv6 address.
    Aaaa(Ipv6Addr),
    /// The canonical name this subname is an alias of.
    Cname(DomainName),
    /// A name server the subname is delegated to.
    Ns(DomainName),
    /// A mail exchanger.
    Mx {
        /// Lower is preferred.
        preference: u16,
        /// The exchanger's host name (root for a null MX).
        exchange: DomainName,
    },
    /// One or more character-strings of up to 255 bytes each.
    Txt(Vec<Vec<u8>>),
    /// A service location.
    Srv {
        /// Lower is tried first.
        priority: u16,
        /// Share among equal priorities.
        weight: u16,
        /// The service port.
        port: u16,
        /// The host (root for "no service").
        target: DomainName,
    },
    /// A CA authorization property.
    Caa {
        /// Flags; bit 128 is issuer-critical.
        flags: u8,
        /// The property tag (`issue`, `issuewild`, `iodef`), lower case.
        tag: String,
        /// The property value.
        value: Vec<u8>,
    },
    /// A DANE TLS association.
    Tlsa {
        /// Certificate usage.
        usage: u8,
        /// Selector.
        selector: u8,
        /// Matching type.
        matching_type: u8,
        /// Association data.
        data: Vec<u8>,
    },
    /// A delegation signer digest.
    Ds {
        /// The key tag of the referenced DNSKEY.
        key_tag: u16,
        /// The DNSKEY algorithm.
        algorithm: u8,
        /// The digest algorithm.
        digest_type: u8,
        /// The digest.
        digest: Vec<u8>,
    },
}

impl RecordData {
    /// The record's type.
    pub fn rtype(&self) -> RecordType {
        match self {
            Self::A(_) => RecordType::A,
            Self::Aaaa(_) => RecordType::Aaaa,
            Self::Cname(_) => RecordType::Cname,
            Self::Ns(_) => RecordType::Ns,
            Self::Mx { .. } => RecordType::Mx,
            Self::Txt(_) => RecordType::Txt,
            Self::Srv { .. } => RecordType::Srv,
            Self::Caa { .. } => RecordType::Caa,
            Self::Tlsa { .. } => RecordType::Tlsa,
            Self::Ds { .. } => RecordType::Ds,
        }
    }

    /// Checks the rules of the type that the Rust types alone do not.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |reason| {
            Err(ModelError::BadRecordData {
                rtype: self.rtype(),
                reason,
            })
        };
        match self {
            Self::Cname(target) | Self::Ns(target) if target.is_root() => bad("target is the root"),
            Self::Txt(strings) if strings.is_empty() => bad("no character-strings"),
            Self::Txt(strings) if strings.len() > u8::MAX as usize => {
                bad("more than 255 character-strings")
            }
            Self::Txt(strings) if strings.iter().any(|s| s.len() > MAX_TXT_STRING_BYTES) => {
                bad("a character-string is longer than 255 bytes")
            }
            Self::Caa { tag, .. }
                if tag.is_empty()
                    || tag.len() > MAX_CAA_TAG_BYTES
                    || !tag
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) =>
            {
                bad("tag must be 1 to 15 lower-case letters or digits")
            }
            Self::Tlsa { data, .. } if data.is_empty() => bad("empty association data"),
            Self::Ds { digest, .. } if digest.is_empty() => bad("empty digest"),
            // RFC 4034 (SHA-1), 4509 (SHA-256), 6605 (SHA-384): resolvers
            // reject a DS whose digest length does not fit its type.
            Self::Ds {
                digest_type: 1,
                digest,
                ..
            } if digest.len() != 20 => bad("a SHA-1 digest (type 1) is 20 bytes"),
            Self::Ds {
                digest_type: 2,
                digest,
                ..
            } if digest.len() != 32 => bad("a SHA-256 digest (type 2) is 32 bytes"),
            Self::Ds {
                digest_type: 4,
                digest,
                ..
            } if digest.len() != 48 => bad("a SHA-384 digest (type 4) is 48 bytes"),
            _ => Ok(()),
        }
    }
}

/// One DNS record of a name: where it sits, how long it may be cached, and
/// its data.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Record {
    /// Owner-relative subname (`""` for the name itself).
    pub subname: Subname,
    /// Time to live in seconds.
    pub ttl_secs: u32,
    /// The data, which also gives the type.
    pub data: RecordData,
}

/// A name's records: a bounded set, kept sorted by canonical encoding so
/// that equal sets encode to equal bytes. Construct with [`RecordSet::new`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct RecordSet {
    records: Vec<Record>,
}

impl RecordSet {
    /// Validates and sorts records into a set; exact duplicates are merged.
    /// Rejects a set over [`MAX_RECORDS`], a record over
    /// [`MAX_RECORD_DATA_BYTES`] or [`MAX_TTL_SECS`], an encoding over
    /// [`MAX_RECORD_SET_BYTES`], and a CNAME beside other records.
    pub fn new(records: Vec<Record>) -> Result<Self, ModelError> {
        if records.len() > MAX_RECORDS {
            return Err(ModelError::TooManyRecords {
                count: records.len(),
                max: MAX_RECORDS,
            });
        }
        let mut keyed = Vec::with_capacity(records.len());
        for (index, record) in records.into_iter().enumerate() {
            record.data.validate()?;
            if record.ttl_secs > MAX_TTL_SECS {
                return Err(ModelError::TtlTooLarge {
                    index,
                    ttl: record.ttl_secs,
                    max: MAX_TTL_SECS,
                });
            }
            let rdata_len = crate::registry::codec::rdata_len(&record.data);
            if rdata_len > MAX_RECORD_DATA_BYTES {
                return Err(ModelError::RecordDataTooLarge {
                    index,
                    len: rdata_len,
                    max: MAX_RECORD_DATA_BYTES,
                });
            }
            keyed.push((crate::registry::codec::encode_record(&record), record));
        }
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        keyed.dedup_by(|a, b| a.0 == b.0);
        let len = 2 + keyed.iter().map(|(bytes, _)| bytes.len()).sum::<usize>();
        if len > MAX_RECORD_SET_BYTES {
            return Err(ModelError::RecordSetTooLarge {
                len,
                max: MAX_RECORD_SET_BYTES,
            });
        }
        let records: Vec<Record> = keyed.into_iter().map(|(_, r)| r).collect();
        for cname in records
            .iter()
            .filter(|r| r.data.rtype() == RecordType::Cname)
        {
            if records
                .iter()
                .filter(|r| r.subname == cname.subname)
                .count()
                > 1
            {
                return Err(ModelError::CnameConflict {
                    subname: cname.subname.as_str().to_owned(),
                });
            }
        }
        Ok(Self { records })
    }

    /// The records, in canonical order.
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// The records at one subname, optionally of one type.
    pub fn at<'a>(
        &'a self,
        subname: &'a Subname,
        rtype: Option<RecordType>,
    ) -> impl Iterator<Item = &'a Record> + 'a {
        self.records
            .iter()
            .filter(move |r| &r.subname == subname && rtype.is_none_or(|t| r.data.rtype() == t))
    }

    /// Whether the set holds no records.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }
}

/// What the registry holds for one name, and what the state tree commits to.
///
/// A name is live while the chain height is below `expiry_height`; an expired
/// state stays in the tree (so its sequence number still guards against
/// replays) until the name is registered again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameState {
    /// The key that may change the name.
    pub owner: Owner,
    /// The name's DNS records.
    pub records: RecordSet,
    /// What the HTTP edge serves for the name, if anything.
    pub content: Option<ContentCid>,
    /// The sequence number of the last operation applied to the name; the
    /// next must carry `sequence + 1`.
    pub sequence: u64,
    /// The first height at which the name is expired.
    pub expiry_height: u64,
}

impl NameState {
    /// Whether the name is live at `height`.
    pub fn is_live(&self, height: u64) -> bool {
        height < self.expiry_height
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fold_case_and_reject_bad_labels() {
        assert_eq!(Name::parse("Hello").unwrap().as_str(), "hello");
        assert!(Name::parse("").is_err());
        assert!(Name::parse("-a").is_err());
        assert!(Name::parse("a-").is_err());
        assert!(Name::parse("a_b").is_err());
        assert!(Name::parse("a.b").is_err());
        assert!(Name::parse(&"a".repeat(64)).is_err());
        assert!(Name::parse(&"a".repeat(63)).is_ok());
        assert!(Name::parse("xn--bcher-kva").is_ok());
    }

    #[test]
    fn zone_splits_query_names() {
        let zone = Zone::parse("grid.").unwrap();
        let (name, sub) = zone.split("WWW.Hello.grid.").unwrap();
        assert_eq!((name.as_str(), sub.as_str()), ("hello", "www"));
        let (name, sub) = zone.split("hello.grid").unwrap();
        assert_eq!((name.as_str(), sub.is_apex()), ("hello", true));
        assert!(matches!(
            zone.split("grid."),
            Err(ModelError::NotInZone { .. })
        ));
        assert!(matches!(
            zone.split("hello.example."),
            Err(ModelError::NotInZone { .. })
        ));
        assert_eq!(zone.fqdn(&name), "hello.grid.");
    }

    #[test]
    fn cname_must_stand_alone() {
        let cname = Record {
            subname: Subname::parse("www").unwrap(),
            ttl_secs: 60,
            data: RecordData::Cname(DomainName::parse("example.com.").unwrap()),
        };
        let a = Record {
            subname: Subname::parse("www").unwrap(),
            ttl_secs: 60,
            data: RecordData::A(Ipv4Addr::LOCALHOST),
        };
        assert!(RecordSet::new(vec![cname.clone()]).is_ok());
        assert!(matches!(
            RecordSet::new(vec![cname, a]),
            Err(ModelError::CnameConflict { .. })
        ));
    }

    #[test]
    fn record_set_limits() {
        let many: Vec<Record> = (0..=MAX_RECORDS)
            .map(|i| Record {
                subname: Subname::apex(),
                ttl_secs: 60,
                data: RecordData::A(Ipv4Addr::from(i as u32)),
            })
            .collect();
        assert!(matches!(
            RecordSet::new(many),
            Err(ModelError::TooManyRecords { .. })
        ));
        let big = Record {
            subname: Subname::apex(),
            ttl_secs: 60,
            data: RecordData::Txt(vec![vec![b'x'; 255]; 5]),
        };
        assert!(matches!(
            RecordSet::new(vec![big]),
            Err(ModelError::RecordDataTooLarge { .. })
        ));
        let long_ttl = Record {
            subname: Subname::apex(),
            ttl_secs: MAX_TTL_SECS + 1,
            data: RecordData::A(Ipv4Addr::LOCALHOST),
        };
        assert!(matches!(
            RecordSet::new(vec![long_ttl]),
            Err(ModelError::TtlTooLarge { .. })
        ));
    }
}
