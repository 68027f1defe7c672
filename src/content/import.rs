//! Importing files and directories into the store, as `ipfs add
//! --cid-version=1 --raw-leaves [-r]` would: same DAG, same root CID.
//!
//! The DAG is built by [`crate::content::builder`] (pure) while the bytes
//! are read; blocks go into the store through one [`Session`], so nothing
//! of an import is evicted before it is done, and the import is durable
//! (one round of directory fsyncs) before the root is returned. With
//! [`ImportOptions::pin`] (the default, as `ipfs add` pins) the root is
//! pinned before the session lets go of the blocks.
//!
//! Like `ipfs add -r`, hidden entries (names starting with `.`) are left
//! out unless [`ImportOptions::hidden`] is set. Symbolic links and other
//! special files are refused: kubo would store a symlink as a UnixFS
//! symlink node, which this node does not write.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::content::block::Block;
use crate::content::builder::{BuildError, FileBuilder, Layout, Node, directory_node};
use crate::content::cid::Cid;
use crate::content::store::{BlockStore, Session, StoreError};

/// Deepest directory nesting imported.
pub const MAX_IMPORT_DEPTH: usize = 256;
/// Most entries read from one directory. A directory that fits under the
/// 256 KiB sharding threshold has at most about 7,000 entries (37-byte CIDs
/// plus names); this bounds the listing before that check can run.
pub const MAX_DIR_ENTRIES: usize = 1 << 16;

/// How to import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportOptions {
    /// Chunk size and fan-out; the default is kubo's.
    pub layout: Layout,
    /// Include names starting with `.` (kubo's `--hidden`).
    pub hidden: bool,
    /// Pin the root.
    pub pin: bool,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            layout: Layout::default(),
            hidden: false,
            pin: true,
        }
    }
}

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// Reading the input failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The input path (empty for a reader).
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The layout is out of bounds, or a directory cannot be built.
    #[error("{path}: {source}")]
    Build {
        /// The input path.
        path: PathBuf,
        /// Why.
        source: BuildError,
    },
    /// A name is not UTF-8 (UnixFS names are strings).
    #[error("{path}: name is not UTF-8")]
    NotUtf8 {
        /// The path.
        path: PathBuf,
    },
    /// A symbolic link, socket, device or FIFO.
    #[error("{path}: not a regular file or directory")]
    Unsupported {
        /// The path.
        path: PathBuf,
    },
    /// The directory tree is deeper than [`MAX_IMPORT_DEPTH`].
    #[error("{path}: nested deeper than {max} directories")]
    TooDeep {
        /// The path.
        path: PathBuf,
        /// The bound.
        max: usize,
    },
    /// A directory has more than [`MAX_DIR_ENTRIES`] entries.
    #[error("{path}: more than {max} entries")]
    TooManyEntries {
        /// The directory.
        path: PathBuf,
        /// The bound.
        max: usize,
    },
}

/// Imports the file or directory at `path`; returns the root CID.
pub fn import_path(
    store: &BlockStore,
    path: &Path,
    opts: &ImportOptions,
) -> Result<Cid, ImportError> {
    opts.layout
        .validate()
        .map_err(|source| ImportError::Build {
            path: path.to_owned(),
            source,
        })?;
    let mut session = store.session();
    let root = import_entry(&mut session, path, opts, 0)?;
    finish(session, root.cid, opts)
}

/// Imports one file's bytes from `reader`; returns the root CID.
pub fn import_reader(
    store: &BlockStore,
    reader: impl Read,
    opts: &ImportOptions,
) -> Result<Cid, ImportError> {
    opts.layout
        .validate()
        .map_err(|source| ImportError::Build {
            path: PathBuf::new(),
            source,
        })?;
    let mut session = store.session();
    let root = import_file(&mut session, reader, Path::new(""), &opts.layout)?;
    finish(session, root.cid, opts)
}

fn finish(mut session: Session<'_>, root: Cid, opts: &ImportOptions) -> Result<Cid, ImportError> {
    session.commit()?;
    if opts.pin {
        session.store().pin(&root)?;
    }
    Ok(root)
}

fn import_entry(
    session: &mut Session<'_>,
    path: &Path,
    opts: &ImportOptions,
    depth: usize,
) -> Result<Node, ImportError> {
    let meta = std::fs::symlink_metadata(path).map_err(|source| ImportError::Io {
        action: "stat",
        path: path.to_owned(),
        source,
    })?;
    if meta.is_file() {
        let file = std::fs::File::open(path).map_err(|source| ImportError::Io {
            action: "open",
            path: path.to_owned(),
            source,
        })?;
        import_file(session, file, path, &opts.layout)
    } else if meta.is_dir() {
        if depth >= MAX_IMPORT_DEPTH {
            return Err(ImportError::TooDeep {
                path: path.to_owned(),
                max: MAX_IMPORT_DEPTH,
            });
        }
        import_dir(session, path, opts, depth)
    } else {
        Err(ImportError::Unsupported {
            path: path.to_owned(),
        })
    }
}

fn import_dir(
    session: &mut Session<'_>,
    path: &Path,
    opts: &ImportOptions,
    depth: usize,
) -> Result<Node, ImportError> {
    let io = |action| {
        move |source| ImportError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(path).map_err(io("list"))? {
        let entry = entry.map_err(io("list"))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            return Err(ImportError::NotUtf8 { path: entry.path() });
        };
        if !opts.hidden && name.starts_with('.') {
            continue;
        }
        if names.len() == MAX_DIR_ENTRIES {
            return Err(ImportError::TooManyEntries {
                path: path.to_owned(),
                max: MAX_DIR_ENTRIES,
            });
        }
        names.push(name.to_owned());
    }
    // Children in name order, so blocks are written in a stable order.
    names.sort();
    let mut entries = Vec::with_capacity(names.len());
    for name in names {
        let child = import_entry(session, &path.join(&name), opts, depth + 1)?;
        entries.push((name, child));
    }
    let (block, node) = directory_node(entries).map_err(|source| ImportError::Build {
        path: path.to_owned(),
        source,
    })?;
    session.put(&block)?;
    Ok(node)
}

/// Chunks `reader` and stores its DAG.
fn import_file(
    session: &mut Session<'_>,
    mut reader: impl Read,
    path: &Path,
    layout: &Layout,
) -> Result<Node, ImportError> {
    let mut builder = FileBuilder::new(layout);
    let mut out: Vec<Block> = Vec::new();
    loop {
        let chunk =
            read_chunk(&mut reader, layout.chunk_bytes).map_err(|source| ImportError::Io {
                action: "read",
                path: path.to_owned(),
                source,
            })?;
        let last = chunk.len() < layout.chunk_bytes;
        if !chunk.is_empty() {
            builder.push_chunk(chunk, &mut out);
        }
        for block in out.drain(..) {
            session.put(&block)?;
        }
        if last {
            break;
        }
    }
    let root = builder.finish(&mut out);
    for block in out.drain(..) {
        session.put(&block)?;
    }
    Ok(root)
}

/// Reads up to `len` bytes, fewer only at the end of the input (a reader
/// may return short reads anywhere; chunk boundaries must not follow them).
fn read_chunk(reader: &mut impl Read, len: usize) -> std::io::Result<Vec<u8>> {
    let mut chunk = Vec::with_capacity(len);
    reader.take(len as u64).read_to_end(&mut chunk)?;
    Ok(chunk)
}
