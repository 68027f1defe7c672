//! Arbitrary bytes through the request path of the DNS handler: parsing,
//! the ACL and rate limit decisions, local zones, and response encoding.
//! Anything from a UDP datagram or a TCP frame can look like this, so no
//! input may panic, hang, or allocate without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gridedge::dns::fuzz::handle_request_bytes(data);
});
