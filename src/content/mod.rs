//! Content-addressed objects: CIDs, UnixFS DAGs as kubo builds them, the
//! on-disk block store, CAR files, and encryption of private objects.
//!
//! A file or directory imported here gets the CID that `ipfs add
//! --cid-version=1 --raw-leaves` gives it (256 KiB raw leaves under a
//! balanced dag-pb tree of at most 174 links per node, UnixFS directories),
//! so names are interchangeable with IPFS and any IPFS tool can check what
//! this node serves. `tests/content.rs` checks this against the reference
//! JavaScript importer.
//!
//! | file | holds |
//! | --- | --- |
//! | `cid.rs` | `Cid` (sha2-256, raw and dag-pb), varints, base32 and base58 |
//! | `block.rs` | `Block`: bytes with the CID they were checked against |
//! | `dagpb.rs` | the dag-pb and UnixFS protobufs, encoded and decoded by hand |
//! | `builder.rs` | the balanced file layout and directory nodes (pure) |
//! | `store.rs` | `BlockStore`: bounded, crash-safe, verifying, pins and LRU eviction |
//! | `import.rs` | `import_path`, `import_reader` |
//! | `read.rs` | `Reader` (streaming, verifying), `stat`, `list_dir`, `resolve_path`, `export_path` |
//! | `car.rs` | CAR v1 `export`, `import`, `CarReader` |
//! | `private.rs` | encrypted objects: the segment format, `import_private`, `open_private` |
//! | `fuzz.rs` | `fuzz_decode` for the fuzz crate |
//!
//! `cid.rs`, `block.rs`, `dagpb.rs` and `builder.rs` do no IO: the
//! verification and encoding logic stands apart from the files and the
//! network, as DESIGN.md asks. The store's API is synchronous; async
//! callers go through `spawn_blocking`.
//!
//! ```no_run
//! use gridedge::content::{self, BlockStore, ImportOptions};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (store, _report) = BlockStore::open("data/content".as_ref(), 10 << 30)?;
//! let root = content::import_path(&store, "site/".as_ref(), &ImportOptions::default())?;
//! let file = content::resolve_path(&store, &format!("{root}/index.html"))?;
//! let mut reader = content::Reader::new(&store, &file)?;
//! std::io::copy(&mut reader, &mut std::io::stdout())?;
//! content::car::export(&store, &root, std::fs::File::create("site.car")?)?;
//! # Ok(()) }
//! ```

pub mod block;
pub mod builder;
pub mod car;
pub mod cid;
pub mod dagpb;
pub mod fuzz;
pub mod import;
pub mod private;
pub mod read;
pub mod store;

pub use block::Block;
pub use builder::Layout;
pub use cid::Cid;
pub use fuzz::fuzz_decode;
pub use import::{ImportError, ImportOptions, import_path, import_reader};
pub use read::{DirEntry, Entry, ReadError, Reader, export_path, list_dir, resolve_path, stat};
pub use store::{BlockStore, OpenReport, StoreError};
