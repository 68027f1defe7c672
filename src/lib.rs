//! gridedge: a DNS resolver, CDN edge and P2P overlay peer in one binary.
//!
//! See `../shared/DESIGN.md` for the map. `main.rs` is thin; everything a
//! test or another binary may want lives in this library.

pub mod admin;
pub mod cert;
pub mod cli;
pub mod config;
pub mod content;
pub mod daemon;
pub mod dns;
pub mod edge;
pub mod fsutil;
pub mod identity;
pub mod net;
pub mod overlay;
pub mod registry;
pub mod sim;
