//! Arbitrary bytes as what reaches the HTTP side: a gateway request line
//! with its Accept and Range headers, and a peer's hello. No parser may
//! panic, and a satisfiable range must lie inside the object.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gridedge::edge::fuzz::fuzz_request(data);
});
