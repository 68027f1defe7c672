//! The entry point of the `fuzz/` crate's `edge_request` target: what a
//! client or another edge sends the HTTP side, on arbitrary bytes. The
//! input is split at newlines into a method, a path and query, an Accept,
//! and a Range header, and as a peer's hello; nothing may
//! panic, and what parses must be consistent (a satisfiable range lies
//! inside the object).

use crate::edge::request::{self, RangeOutcome};
use crate::net::behaviour::Hello;

/// Runs the gateway's request parsers and the hello decoder on `data`.
pub fn fuzz_request(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let method = lines.next().unwrap_or("");
    let path = lines.next().unwrap_or("/");
    let accept = lines.next();
    let range = lines.next();
    let _ = request::parse(method, path, accept);
    for size in [0u64, 1, 1000, u64::MAX] {
        if let RangeOutcome::Partial { start, end } = request::parse_range(range, size) {
            assert!(
                start <= end && end < size,
                "range {start}-{end} outside {size}"
            );
        }
    }
    let _ = serde_json::from_slice::<Hello>(data);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        /// The fuzz target's checks, on random lines of likely shapes.
        #[test]
        fn request_parsers_never_panic(
            method in "(GET|HEAD|POST|\\PC{0,6})",
            path in "/ipfs/[a-z2-7]{0,70}(/[^\n]{0,20})?(\\?[^\n]{0,30})?",
            accept in "[^\n]{0,40}",
            range in "bytes=[0-9]{0,20}-[0-9]{0,20}(,[0-9-]{0,8})?",
        ) {
            super::fuzz_request(format!("{method}\n{path}\n{accept}\n{range}").as_bytes());
        }
    }
}
