//! Arbitrary bytes as content a peer or client can send: a dag-pb node,
//! UnixFS data, a binary or text CID, a CAR v1 stream. No decoder may
//! panic; an accepted dag-pb node or CID must re-encode to the same bytes,
//! and every block a CAR yields must match its CID.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gridedge::content::fuzz_decode(data);
});
