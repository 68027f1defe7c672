//! Local authoritative zones: every `*.zone` file (RFC 1035 master format)
//! in the zones directory becomes one zone, answered by hickory-server's
//! in-memory zone handler (AA answers, NXDOMAIN and NODATA with the SOA,
//! wildcards, CNAME chains inside the zone).
//!
//! A broken file is reported with its path and line and skipped, so one bad
//! zone never takes the others down.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hickory_proto::rr::{LowerName, Name};
use hickory_proto::serialize::txt::Parser;
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};

/// Why a zone file was skipped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ZoneError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file does not parse; `line` is where the parser first failed.
    #[error("{path}:{line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// The file parses but is not a zone (no SOA at its origin, say).
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The zones that loaded and the errors of the files that did not.
pub struct LoadedZones {
    pub catalog: Catalog,
    pub origins: Vec<LowerName>,
    pub errors: Vec<ZoneError>,
}

/// Loads every `*.zone` file under `dir`, sorted by name. A missing
/// directory means no local zones.
pub fn load_dir(dir: &Path) -> LoadedZones {
    let mut loaded = LoadedZones {
        catalog: Catalog::new(),
        origins: Vec::new(),
        errors: Vec::new(),
    };
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "zone"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => {
            loaded.errors.push(ZoneError::Read {
                path: dir.to_owned(),
                source,
            });
            Vec::new()
        }
    };
    paths.sort();
    for path in paths {
        match load_file(&path) {
            Ok(handler) => {
                let origin = handler.origin().clone();
                loaded
                    .catalog
                    .upsert(origin.clone(), vec![Arc::new(handler)]);
                loaded.origins.push(origin);
            }
            Err(e) => loaded.errors.push(e),
        }
    }
    loaded
}

/// Loads one zone file; its origin is the file name without `.zone`
/// unless the file sets `$ORIGIN`.
pub fn load_file(path: &Path) -> Result<InMemoryZoneHandler, ZoneError> {
    let text = std::fs::read_to_string(path).map_err(|source| ZoneError::Read {
        path: path.to_owned(),
        source,
    })?;
    let origin = path
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| Name::from_ascii(s).ok());
    let parse = |text: &str| Parser::new(text, Some(path.to_owned()), origin.clone()).parse();
    let (origin, records) = parse(&text).map_err(|e| {
        let message = e.to_string();
        ZoneError::Parse {
            path: path.to_owned(),
            line: error_line(&text, &message, parse_fails_with(&parse)),
            message,
        }
    })?;
    InMemoryZoneHandler::new(origin, records, ZoneType::Primary, AxfrPolicy::Deny).map_err(
        |message| ZoneError::Invalid {
            path: path.to_owned(),
            message,
        },
    )
}

fn parse_fails_with<'a, T, E: std::fmt::Display>(
    parse: &'a impl Fn(&str) -> Result<T, E>,
) -> impl Fn(&str) -> Option<String> + 'a {
    move |text| parse(text).err().map(|e| e.to_string())
}

/// hickory's zone parser does not report positions, so find the line: the
/// shortest prefix of whole lines that fails with the same error. Prefixes
/// before the bad line parse (or fail differently, inside parentheses), and
/// once the bad line is in, the same error comes back.
fn error_line(text: &str, message: &str, fails: impl Fn(&str) -> Option<String>) -> usize {
    let ends: Vec<usize> = text
        .match_indices('\n')
        .map(|(i, _)| i + 1)
        .chain(std::iter::once(text.len()))
        .collect();
    let same = |n: usize| fails(&text[..ends[n - 1]]).as_deref() == Some(message);
    // Binary search for the first n (1-based) where the prefix of n lines
    // fails the same way; `same(ends.len())` holds since it is the whole text.
    let (mut lo, mut hi) = (1, ends.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if same(mid) { hi = mid } else { lo = mid + 1 }
    }
    lo
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broken_zone_names_file_and_line_and_others_load() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("good.test.zone"),
            "@ 3600 IN SOA ns.good.test. admin.good.test. 1 7200 3600 1209600 300\n\
             @ 3600 IN NS ns\nns 3600 IN A 127.0.0.1\nwww 300 IN A 10.0.0.1\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("bad.test.zone"),
            "@ 3600 IN SOA ns.bad.test. admin.bad.test. 1 7200 3600 1209600 300\n\
             @ 3600 IN NS ns\nns 3600 IN A 127.0.0.1\nwww 300 IN A 10.0.0.300\nok 300 IN A 10.0.0.2\n",
        )
        .unwrap();
        let loaded = load_dir(dir.path());
        assert_eq!(loaded.origins.len(), 1);
        assert_eq!(loaded.errors.len(), 1);
        let msg = loaded.errors[0].to_string();
        assert!(msg.contains("bad.test.zone:4:"), "{msg}");
    }

    #[test]
    fn zone_without_soa_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nosoa.test.zone");
        std::fs::write(&path, "www 300 IN A 10.0.0.1\n").unwrap();
        let err = load_file(&path).err().unwrap().to_string();
        assert!(err.contains("SOA"), "{err}");
    }
}
