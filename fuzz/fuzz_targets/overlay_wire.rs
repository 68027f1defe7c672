//! Arbitrary bytes as an overlay packet from a peer: the wire decoder must
//! never panic or allocate beyond the bytes given, and whatever decodes must
//! re-encode to the same bytes (the encoding is canonical).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gridedge::overlay::wire::fuzz_decode(data);
});
