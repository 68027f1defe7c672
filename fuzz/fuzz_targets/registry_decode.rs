//! Arbitrary bytes as every registry object a peer or client can send:
//! an operation, a block, a batch of blocks, a header, a name state, a tree
//! proof and a name proof. No decoder may panic, and each accepted value
//! must re-encode to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gridedge::registry::fuzz_decode(data);
});
