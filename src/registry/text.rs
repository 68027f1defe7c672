//! Records in text: the zone-file-like presentation of record data
//! (`127.0.0.1`, `10 mail.example.`, `0 issue "letsencrypt.org"`), and
//! [`RecordSpec`], the serde form of one record used by the genesis file,
//! the CLI's records file and the admin API.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::registry::model::{
    DomainName, MAX_TXT_STRING_BYTES, ModelError, Record, RecordData, RecordType, Subname,
};

/// TTL given to records whose spec names none: five minutes, so edits
/// propagate quickly on a devnet.
pub const DEFAULT_TTL_SECS: u32 = 300;

/// One record as text: where, how long, which type, and the data in
/// presentation format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordSpec {
    /// Owner-relative subname; `""` or `"@"` for the name itself.
    #[serde(default)]
    pub subname: String,
    /// Record type mnemonic (`A`, `TXT`, ...).
    #[serde(rename = "type")]
    pub rtype: String,
    /// TTL in seconds; [`DEFAULT_TTL_SECS`] when absent.
    #[serde(default)]
    pub ttl_secs: Option<u32>,
    /// The data in presentation format.
    pub data: String,
}

impl RecordSpec {
    /// Parses the spec into a record.
    pub fn to_record(&self) -> Result<Record, ModelError> {
        let rtype = RecordType::parse(&self.rtype)?;
        Ok(Record {
            subname: Subname::parse(&self.subname)?,
            ttl_secs: self.ttl_secs.unwrap_or(DEFAULT_TTL_SECS),
            data: RecordData::from_text(rtype, &self.data)?,
        })
    }

    /// The spec of a record.
    pub fn from_record(record: &Record) -> Self {
        Self {
            subname: record.subname.as_str().to_owned(),
            rtype: record.data.rtype().as_str().to_owned(),
            ttl_secs: Some(record.ttl_secs),
            data: record.data.to_string(),
        }
    }
}

fn bad(rtype: RecordType, reason: &'static str) -> ModelError {
    ModelError::BadRecordData { rtype, reason }
}

fn fields<const N: usize>(rtype: RecordType, text: &str) -> Result<[&str; N], ModelError> {
    let parts: Vec<&str> = text.split_whitespace().collect();
    parts
        .try_into()
        .map_err(|_| bad(rtype, "wrong number of fields"))
}

fn num<T: std::str::FromStr>(rtype: RecordType, text: &str) -> Result<T, ModelError> {
    text.parse()
        .map_err(|_| bad(rtype, "a number field is not a number in range"))
}

fn hex_field(rtype: RecordType, text: &str) -> Result<Vec<u8>, ModelError> {
    hex::decode(text).map_err(|_| bad(rtype, "binary field is not hex"))
}

/// Strips one pair of surrounding double quotes, if present.
fn unquote(text: &str) -> &str {
    text.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text)
}

impl RecordData {
    /// Parses record data in presentation format. TXT takes the whole text
    /// as one value (surrounding quotes stripped) and splits it into
    /// 255-byte character-strings; CAA is `flags tag "value"`; TLSA and DS
    /// take their binary field in hex.
    pub fn from_text(rtype: RecordType, text: &str) -> Result<Self, ModelError> {
        let text = text.trim();
        let domain = |t: &str| DomainName::parse(t);
        let data = match rtype {
            RecordType::A => Self::A(
                text.parse()
                    .map_err(|_| bad(rtype, "not an IPv4 address"))?,
            ),
            RecordType::Aaaa => Self::Aaaa(
                text.parse()
                    .map_err(|_| bad(rtype, "not an IPv6 address"))?,
            ),
            RecordType::Cname => Self::Cname(domain(text)?),
            RecordType::Ns => Self::Ns(domain(text)?),
            RecordType::Mx => {
                let [preference, exchange] = fields(rtype, text)?;
                Self::Mx {
                    preference: num(rtype, preference)?,
                    exchange: domain(exchange)?,
                }
            }
            RecordType::Txt => {
                let bytes = unquote(text).as_bytes();
                let strings = if bytes.is_empty() {
                    vec![Vec::new()]
                } else {
                    bytes
                        .chunks(MAX_TXT_STRING_BYTES)
                        .map(<[u8]>::to_vec)
                        .collect()
                };
                Self::Txt(strings)
            }
            RecordType::Srv => {
                let [priority, weight, port, target] = fields(rtype, text)?;
                Self::Srv {
                    priority: num(rtype, priority)?,
                    weight: num(rtype, weight)?,
                    port: num(rtype, port)?,
                    target: domain(target)?,
                }
            }
            RecordType::Caa => {
                let mut parts = text.splitn(3, char::is_whitespace);
                let (Some(flags), Some(tag), Some(value)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return Err(bad(rtype, "wrong number of fields"));
                };
                Self::Caa {
                    flags: num(rtype, flags)?,
                    tag: tag.to_ascii_lowercase(),
                    value: unquote(value.trim()).as_bytes().to_vec(),
                }
            }
            RecordType::Tlsa => {
                let [usage, selector, matching_type, data] = fields(rtype, text)?;
                Self::Tlsa {
                    usage: num(rtype, usage)?,
                    selector: num(rtype, selector)?,
                    matching_type: num(rtype, matching_type)?,
                    data: hex_field(rtype, data)?,
                }
            }
            RecordType::Ds => {
                let [key_tag, algorithm, digest_type, digest] = fields(rtype, text)?;
                Self::Ds {
                    key_tag: num(rtype, key_tag)?,
                    algorithm: num(rtype, algorithm)?,
                    digest_type: num(rtype, digest_type)?,
                    digest: hex_field(rtype, digest)?,
                }
            }
        };
        data.validate()?;
        Ok(data)
    }
}

fn write_quoted(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    f.write_str("\"")?;
    for &b in bytes {
        match b {
            b'"' | b'\\' => write!(f, "\\{}", b as char)?,
            0x20..=0x7e => write!(f, "{}", b as char)?,
            _ => write!(f, "\\{b:03}")?,
        }
    }
    f.write_str("\"")
}

impl fmt::Display for RecordData {
    /// Presentation format, as in a zone file (RFC 1035 §5.1).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::A(addr) => write!(f, "{addr}"),
            Self::Aaaa(addr) => write!(f, "{addr}"),
            Self::Cname(target) | Self::Ns(target) => write!(f, "{target}"),
            Self::Mx {
                preference,
                exchange,
            } => write!(f, "{preference} {exchange}"),
            Self::Txt(strings) => {
                for (i, s) in strings.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    write_quoted(f, s)?;
                }
                Ok(())
            }
            Self::Srv {
                priority,
                weight,
                port,
                target,
            } => write!(f, "{priority} {weight} {port} {target}"),
            Self::Caa { flags, tag, value } => {
                write!(f, "{flags} {tag} ")?;
                write_quoted(f, value)
            }
            Self::Tlsa {
                usage,
                selector,
                matching_type,
                data,
            } => write!(
                f,
                "{usage} {selector} {matching_type} {}",
                hex::encode(data)
            ),
            Self::Ds {
                key_tag,
                algorithm,
                digest_type,
                digest,
            } => write!(
                f,
                "{key_tag} {algorithm} {digest_type} {}",
                hex::encode(digest)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_type() {
        let cases = [
            ("A", "127.0.0.1", "127.0.0.1"),
            ("AAAA", "::1", "::1"),
            ("CNAME", "Example.COM", "example.com."),
            ("NS", "ns1.example.", "ns1.example."),
            ("MX", "10 mail.example.", "10 mail.example."),
            ("TXT", "\"v=spf1 -all\"", "\"v=spf1 -all\""),
            ("SRV", "0 5 443 web.example.", "0 5 443 web.example."),
            (
                "CAA",
                "0 issue \"letsencrypt.org\"",
                "0 issue \"letsencrypt.org\"",
            ),
            ("TLSA", "3 1 1 abcd", "3 1 1 abcd"),
            (
                "DS",
                "12345 13 1 00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff",
                "12345 13 1 00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff",
            ),
            ("DS", "1 8 9 00ff", "1 8 9 00ff"),
        ];
        for (rtype, text, shown) in cases {
            let data = RecordData::from_text(RecordType::parse(rtype).unwrap(), text).unwrap();
            assert_eq!(data.to_string(), shown, "{rtype}");
        }
    }

    #[test]
    fn long_txt_is_split_and_bad_input_is_refused() {
        let long = "x".repeat(600);
        let RecordData::Txt(strings) = RecordData::from_text(RecordType::Txt, &long).unwrap()
        else {
            panic!("not TXT");
        };
        assert_eq!(
            strings.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![255, 255, 90]
        );
        assert!(RecordData::from_text(RecordType::A, "300.0.0.1").is_err());
        assert!(RecordData::from_text(RecordType::Mx, "10").is_err());
        assert!(RecordData::from_text(RecordType::Ds, "1 2 3 zz").is_err());
        assert!(RecordType::parse("SOA").is_err());
    }
}
