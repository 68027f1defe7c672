//! What a gateway request asks for, parsed from the method, the path and
//! query, and the `Accept` and `Range` headers. Pure: no IO, so every rule
//! of the trustless gateway spec that lives here is unit tested.
//!
//! <https://specs.ipfs.tech/http-gateways/trustless-gateway/> and, for the
//! deserialized responses, <https://specs.ipfs.tech/http-gateways/path-gateway/>.

use crate::content::Cid;
use crate::content::cid::CidError;
use crate::content::read::{MAX_PATH_BYTES, MAX_PATH_DEPTH};

/// The media type of a single raw block.
pub const RAW_MEDIA_TYPE: &str = "application/vnd.ipld.raw";
/// The media type of a CAR stream.
pub const CAR_MEDIA_TYPE: &str = "application/vnd.ipld.car";

/// What shape the answer takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One block, as stored (`?format=raw`).
    Raw,
    /// A CAR v1 stream of blocks (`?format=car`).
    Car,
    /// The file's bytes, or a directory's index or listing.
    Deserialized,
}

/// Which blocks a CAR holds below the path's end (`dag-scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DagScope {
    /// The whole DAG under it (the default).
    All,
    /// What it takes to read the entity: a whole file, a directory's own
    /// node.
    Entity,
    /// Its block only.
    Block,
}

impl DagScope {
    /// The spec's name, for ETags.
    pub fn name(self) -> &'static str {
        match self {
            DagScope::All => "all",
            DagScope::Entity => "entity",
            DagScope::Block => "block",
        }
    }
}

/// A request the gateway can answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayRequest {
    /// The CID after `/ipfs/`.
    pub root: Cid,
    /// The path inside it, percent-decoded, one name per element.
    pub path: Vec<String>,
    /// The request path ends in `/` (a directory is served only so, so that
    /// relative links in it resolve).
    pub trailing_slash: bool,
    /// The answer's shape.
    pub format: Format,
    /// For CAR: which blocks.
    pub scope: DagScope,
    /// HEAD: headers only.
    pub head: bool,
}

/// Why a request cannot be answered; each maps to one status code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// Only GET and HEAD are served (405).
    #[error("method {method} is not allowed; the gateway serves GET and HEAD")]
    MethodNotAllowed {
        /// The method asked for.
        method: String,
    },
    /// The path is not under `/ipfs/` (404).
    #[error("no such route {path:?}; content is under /ipfs/<cid>")]
    NoRoute {
        /// The path.
        path: String,
    },
    /// The CID does not parse (400).
    #[error("{text:?} is not a valid CID: {source}")]
    BadCid {
        /// What was given.
        text: String,
        /// Why it is not a CID.
        source: CidError,
    },
    /// The path is malformed (400).
    #[error("bad path: {reason}")]
    BadPath {
        /// Why.
        reason: &'static str,
    },
    /// `format` names no format this gateway has (400).
    #[error("format={value:?} is not supported; use raw or car, or leave it out")]
    BadFormat {
        /// The value.
        value: String,
    },
    /// `dag-scope` names no scope (400).
    #[error("dag-scope={value:?} is not one of all, entity, block")]
    BadScope {
        /// The value.
        value: String,
    },
    /// A CAR parameter this gateway does not implement (400), so a client
    /// never gets something other than what it asked for.
    #[error("{param} is not supported by this gateway")]
    Unsupported {
        /// The parameter.
        param: &'static str,
    },
}

impl RequestError {
    /// The HTTP status for it.
    pub fn status(&self) -> u16 {
        match self {
            RequestError::MethodNotAllowed { .. } => 405,
            RequestError::NoRoute { .. } => 404,
            _ => 400,
        }
    }
}

/// Parses a request line and its content negotiation headers.
pub fn parse(
    method: &str,
    path_and_query: &str,
    accept: Option<&str>,
) -> Result<GatewayRequest, RequestError> {
    let head = match method {
        "GET" => false,
        "HEAD" => true,
        _ => {
            return Err(RequestError::MethodNotAllowed {
                method: method.chars().take(32).collect(),
            });
        }
    };
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    if path.len() > MAX_PATH_BYTES {
        return Err(RequestError::BadPath {
            reason: "longer than 4096 bytes",
        });
    }
    let Some(rest) = path.strip_prefix("/ipfs/") else {
        return Err(RequestError::NoRoute {
            path: path.chars().take(256).collect(),
        });
    };
    let trailing_slash = rest.ends_with('/');
    let mut segments = rest.split('/').filter(|s| !s.is_empty());
    let Some(cid_text) = segments.next() else {
        return Err(RequestError::BadPath {
            reason: "no CID after /ipfs/",
        });
    };
    let root: Cid = cid_text.parse().map_err(|source| RequestError::BadCid {
        text: cid_text.chars().take(128).collect(),
        source,
    })?;
    let mut names = Vec::new();
    for segment in segments {
        if names.len() >= MAX_PATH_DEPTH {
            return Err(RequestError::BadPath {
                reason: "more than 256 names deep",
            });
        }
        let name = percent_decode(segment).ok_or(RequestError::BadPath {
            reason: "bad percent-encoding or not UTF-8",
        })?;
        if name == "." || name == ".." || name.contains('/') || name.contains('\0') {
            return Err(RequestError::BadPath {
                reason: "`.`, `..`, and `/` or NUL inside a name are not allowed",
            });
        }
        names.push(name);
    }

    let mut format = None;
    let mut scope = DagScope::All;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value).unwrap_or_default();
        match key {
            "format" => {
                format = Some(match value.as_str() {
                    "raw" => Format::Raw,
                    "car" => Format::Car,
                    _ => {
                        return Err(RequestError::BadFormat {
                            value: value.chars().take(64).collect(),
                        });
                    }
                })
            }
            "dag-scope" => {
                scope = match value.as_str() {
                    "all" => DagScope::All,
                    "entity" => DagScope::Entity,
                    "block" => DagScope::Block,
                    _ => {
                        return Err(RequestError::BadScope {
                            value: value.chars().take(64).collect(),
                        });
                    }
                }
            }
            "entity-bytes" => {
                return Err(RequestError::Unsupported {
                    param: "entity-bytes",
                });
            }
            // Unknown parameters are ignored, as the path gateway spec does
            // (a download's `filename=`, cache busters).
            _ => {}
        }
    }
    // The query parameter wins over Accept (path gateway spec, "format").
    let format = format
        .or_else(|| accept.and_then(format_from_accept))
        .unwrap_or(Format::Deserialized);
    Ok(GatewayRequest {
        root,
        path: names,
        trailing_slash,
        format,
        scope,
        head,
    })
}

/// The verifiable format an `Accept` header asks for, if any. The first
/// listed of raw and CAR wins; a CAR of a version other than 1 is not one
/// this gateway makes, so it is not taken.
fn format_from_accept(accept: &str) -> Option<Format> {
    for item in accept.split(',') {
        let mut parts = item.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        if media == RAW_MEDIA_TYPE {
            return Some(Format::Raw);
        }
        if media == CAR_MEDIA_TYPE {
            let v1 = parts.all(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                !k.trim().eq_ignore_ascii_case("version") || v.trim() == "1"
            });
            if v1 {
                return Some(Format::Car);
            }
        }
    }
    None
}

/// Decodes `%XX` escapes; `None` for a malformed escape or bytes that are
/// not UTF-8.
pub fn percent_decode(text: &str) -> Option<String> {
    if !text.contains('%') {
        return Some(text.to_owned());
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Escapes a name for use in a URL path (RFC 3986 unreserved characters
/// are kept).
pub fn percent_encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What a `Range` header makes of a body of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeOutcome {
    /// No range, or one this gateway answers whole (several ranges, a unit
    /// other than bytes, junk): RFC 9110 section 14.2 lets a server ignore
    /// the header.
    Full,
    /// Bytes `start..=end`.
    Partial {
        /// First byte.
        start: u64,
        /// Last byte, inclusive.
        end: u64,
    },
    /// A well-formed range that lies past the end (416).
    Unsatisfiable,
}

/// Evaluates a `Range` header against a body of `size` bytes (RFC 9110
/// section 14.1.2): `bytes=a-b`, `bytes=a-`, `bytes=-n`.
pub fn parse_range(header: Option<&str>, size: u64) -> RangeOutcome {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeOutcome::Full;
    };
    if spec.contains(',') {
        return RangeOutcome::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeOutcome::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    let number = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    if first.is_empty() {
        // A suffix: the last n bytes.
        let Some(n) = number(last) else {
            return RangeOutcome::Full;
        };
        if n == 0 || size == 0 {
            return RangeOutcome::Unsatisfiable;
        }
        return RangeOutcome::Partial {
            start: size.saturating_sub(n),
            end: size - 1,
        };
    }
    let Some(start) = number(first) else {
        return RangeOutcome::Full;
    };
    let end = if last.is_empty() {
        None
    } else {
        match number(last) {
            Some(end) if end >= start => Some(end),
            _ => return RangeOutcome::Full,
        }
    };
    if start >= size {
        return RangeOutcome::Unsatisfiable;
    }
    RangeOutcome::Partial {
        start,
        end: end.map_or(size - 1, |e| e.min(size - 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::cid::Codec;

    fn cid() -> Cid {
        Cid::hash_of(Codec::Raw, b"hello")
    }

    #[test]
    fn formats_from_query_and_accept() {
        let c = cid();
        let p = |q: &str, accept| parse("GET", &format!("/ipfs/{c}{q}"), accept).unwrap();
        assert_eq!(p("", None).format, Format::Deserialized);
        assert_eq!(p("?format=raw", None).format, Format::Raw);
        assert_eq!(p("?format=car", None).format, Format::Car);
        assert_eq!(p("", Some(RAW_MEDIA_TYPE)).format, Format::Raw);
        assert_eq!(
            p("", Some("application/vnd.ipld.car; version=1; order=dfs")).format,
            Format::Car
        );
        assert_eq!(
            p("", Some("application/vnd.ipld.car; version=2")).format,
            Format::Deserialized
        );
        assert_eq!(
            p("", Some("text/html, application/vnd.ipld.raw;q=0.9")).format,
            Format::Raw
        );
        // The query wins over Accept.
        assert_eq!(p("?format=car", Some(RAW_MEDIA_TYPE)).format, Format::Car);
        assert_eq!(
            p("?format=car&dag-scope=block", None).scope,
            DagScope::Block
        );
        assert!(p("", None).path.is_empty());
        assert!(!p("", None).head);
    }

    #[test]
    fn paths_are_split_and_decoded() {
        let c = cid();
        let r = parse("HEAD", &format!("/ipfs/{c}/a%20b/c.txt"), None).unwrap();
        assert_eq!(r.path, ["a b", "c.txt"]);
        assert!(r.head);
        assert!(!r.trailing_slash);
        assert!(
            parse("GET", &format!("/ipfs/{c}/dir/"), None)
                .unwrap()
                .trailing_slash
        );
    }

    #[test]
    fn errors_map_to_statuses() {
        let c = cid();
        let status = |m, p: &str| parse(m, p, None).unwrap_err().status();
        assert_eq!(status("POST", &format!("/ipfs/{c}")), 405);
        assert_eq!(status("GET", "/ipns/x"), 404);
        assert_eq!(status("GET", "/ipfs/"), 400);
        assert_eq!(status("GET", "/ipfs/bafynotacid"), 400);
        assert_eq!(status("GET", &format!("/ipfs/{c}?format=tar")), 400);
        assert_eq!(status("GET", &format!("/ipfs/{c}/%zz")), 400);
        assert_eq!(status("GET", &format!("/ipfs/{c}/..")), 400);
        assert_eq!(status("GET", &format!("/ipfs/{c}/a%2Fb")), 400);
        assert_eq!(
            status("GET", &format!("/ipfs/{c}?format=car&dag-scope=x")),
            400
        );
        assert_eq!(
            status("GET", &format!("/ipfs/{c}?format=car&entity-bytes=0:1")),
            400
        );
        let err = parse("GET", "/ipfs/Qmnope", None).unwrap_err();
        assert!(err.to_string().contains("not a valid CID"), "{err}");
    }

    #[test]
    fn ranges() {
        use RangeOutcome::*;
        assert_eq!(parse_range(None, 10), Full);
        assert_eq!(
            parse_range(Some("bytes=0-3"), 10),
            Partial { start: 0, end: 3 }
        );
        assert_eq!(
            parse_range(Some("bytes=4-"), 10),
            Partial { start: 4, end: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=-3"), 10),
            Partial { start: 7, end: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=-30"), 10),
            Partial { start: 0, end: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=5-50"), 10),
            Partial { start: 5, end: 9 }
        );
        assert_eq!(parse_range(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-0"), 0), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-1,3-4"), 10), Full);
        assert_eq!(parse_range(Some("bytes=5-2"), 10), Full);
        assert_eq!(parse_range(Some("items=0-1"), 10), Full);
        assert_eq!(parse_range(Some("bytes=x-1"), 10), Full);
    }

    #[test]
    fn percent_round_trip() {
        for name in ["plain.txt", "a b", "ü/?#%", ""] {
            assert_eq!(percent_decode(&percent_encode(name)).unwrap(), name);
        }
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%ff"), None);
    }
}
