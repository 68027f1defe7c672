//! Reading UnixFS out of the store: a streaming file [`Reader`], directory
//! listings, path resolution (`<cid>/a/b.txt`, what the HTTP gateway asks)
//! and export of a file or directory tree to disk.
//!
//! Every block comes through [`BlockStore::get`], which checks its hash, so
//! what a reader returns is what the root CID names. The structure is
//! checked as well: a file node's `blocksizes` must match its children and
//! its `filesize` its content, so a DAG that is authentic but malformed
//! ends in an error rather than in a short or padded file.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::content::cid::{Cid, CidError, Codec};
use crate::content::dagpb::{DataType, DecodeError, PbNode, UnixFsData};
use crate::content::store::{BlockStore, StoreError};

/// Deepest file DAG a reader follows. kubo's balanced layout reaches depth
/// 5 at 174^5 chunks (40 PB); trickle DAGs from other tools go deeper, and
/// 64 leaves room for them while bounding a hostile one.
pub const MAX_DAG_DEPTH: usize = 64;
/// Deepest directory nesting that path resolution and export follow.
pub const MAX_PATH_DEPTH: usize = 256;
/// Longest path accepted for resolution.
pub const MAX_PATH_BYTES: usize = 4096;

/// Why content could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The store failed or lacks a block.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A dag-pb block or its UnixFS data does not decode.
    #[error("block {cid}: {source}")]
    Decode {
        /// The block.
        cid: Cid,
        /// Why.
        source: DecodeError,
    },
    /// A dag-pb block has no UnixFS data.
    #[error("block {cid} is dag-pb without UnixFS data")]
    NotUnixFs {
        /// The block.
        cid: Cid,
    },
    /// A file was expected.
    #[error("{cid} is a {kind:?}, not a file")]
    NotAFile {
        /// The node.
        cid: Cid,
        /// What it is.
        kind: DataType,
    },
    /// A directory was expected.
    #[error("{cid} is not a directory")]
    NotADirectory {
        /// The node.
        cid: Cid,
    },
    /// A HAMT-sharded directory (not supported yet).
    #[error("{cid} is a HAMT-sharded directory, which this node cannot read")]
    Sharded {
        /// The node.
        cid: Cid,
    },
    /// A path component names no entry.
    #[error("no entry {name:?} in directory {dir}")]
    NoSuchEntry {
        /// The directory.
        dir: Cid,
        /// The name.
        name: String,
    },
    /// The path is malformed (empty, too long, bad CID, `.` or `..`).
    #[error("bad path: {reason}")]
    BadPath {
        /// Why.
        reason: &'static str,
    },
    /// The path's CID does not parse.
    #[error("bad CID in path: {0}")]
    BadCid(#[from] CidError),
    /// The sizes a file node declares do not match its content.
    #[error("block {cid}: declares {expected} bytes but holds {found}")]
    SizeMismatch {
        /// The node.
        cid: Cid,
        /// Size declared by the parent or the node.
        expected: u64,
        /// Size found.
        found: u64,
    },
    /// The DAG or directory tree is deeper than the bound.
    #[error("{cid} lies deeper than {max} levels")]
    TooDeep {
        /// Where the bound was hit.
        cid: Cid,
        /// The bound.
        max: usize,
    },
    /// A directory entry's name cannot be a file name on disk.
    #[error("directory {dir} has an entry named {name:?}, which is not a safe file name")]
    UnsafeName {
        /// The directory.
        dir: Cid,
        /// The name.
        name: String,
    },
    /// Writing an export failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// What a CID names, as far as UnixFS goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A file of this many bytes.
    File {
        /// Its size.
        size: u64,
    },
    /// A directory.
    Directory,
    /// A symbolic link (not followed).
    Symlink {
        /// The target.
        target: String,
    },
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The name.
    pub name: String,
    /// The child.
    pub cid: Cid,
    /// The child's DAG size (Tsize), as the directory states it.
    pub tsize: Option<u64>,
}

/// A decoded node: raw bytes or dag-pb with its UnixFS data.
enum Decoded {
    Raw(Vec<u8>),
    Pb(PbNode, UnixFsData),
}

fn load(store: &BlockStore, cid: &Cid) -> Result<Decoded, ReadError> {
    let block = store.get(cid)?;
    if cid.codec() == Codec::Raw {
        return Ok(Decoded::Raw(block.into_data()));
    }
    let node =
        PbNode::decode(block.data()).map_err(|source| ReadError::Decode { cid: *cid, source })?;
    let Some(data) = &node.data else {
        return Err(ReadError::NotUnixFs { cid: *cid });
    };
    let unixfs =
        UnixFsData::decode(data, 0).map_err(|source| ReadError::Decode { cid: *cid, source })?;
    Ok(Decoded::Pb(node, unixfs))
}

/// What `cid` is: a file and its size, a directory, or a symlink.
pub fn stat(store: &BlockStore, cid: &Cid) -> Result<Entry, ReadError> {
    match load(store, cid)? {
        Decoded::Raw(data) => Ok(Entry::File {
            size: data.len() as u64,
        }),
        Decoded::Pb(node, unixfs) => match unixfs.kind {
            DataType::File | DataType::Raw => Ok(Entry::File {
                size: file_size(cid, &node, &unixfs)?,
            }),
            DataType::Directory => Ok(Entry::Directory),
            DataType::HamtShard => Err(ReadError::Sharded { cid: *cid }),
            DataType::Symlink => Ok(Entry::Symlink {
                target: String::from_utf8_lossy(unixfs.data.as_deref().unwrap_or_default())
                    .into_owned(),
            }),
            kind @ DataType::Metadata => Err(ReadError::NotAFile { cid: *cid, kind }),
        },
    }
}

/// The size a file node declares, checked against its parts.
fn file_size(cid: &Cid, node: &PbNode, unixfs: &UnixFsData) -> Result<u64, ReadError> {
    let inline = unixfs.data.as_ref().map_or(0, |d| d.len() as u64);
    if unixfs.blocksizes.len() != node.links.len() {
        return Err(ReadError::SizeMismatch {
            cid: *cid,
            expected: node.links.len() as u64,
            found: unixfs.blocksizes.len() as u64,
        });
    }
    let sum = unixfs
        .blocksizes
        .iter()
        .try_fold(inline, |acc, &s| acc.checked_add(s))
        .ok_or(ReadError::SizeMismatch {
            cid: *cid,
            expected: u64::MAX,
            found: u64::MAX,
        })?;
    match unixfs.filesize {
        Some(size) if size != sum => Err(ReadError::SizeMismatch {
            cid: *cid,
            expected: size,
            found: sum,
        }),
        _ => Ok(sum),
    }
}

/// The entries of the directory `cid`, in the directory's (name) order.
pub fn list_dir(store: &BlockStore, cid: &Cid) -> Result<Vec<DirEntry>, ReadError> {
    match load(store, cid)? {
        Decoded::Pb(node, unixfs) => match unixfs.kind {
            DataType::Directory => Ok(node
                .links
                .into_iter()
                .map(|l| DirEntry {
                    name: l.name.unwrap_or_default(),
                    cid: l.cid,
                    tsize: l.tsize,
                })
                .collect()),
            DataType::HamtShard => Err(ReadError::Sharded { cid: *cid }),
            _ => Err(ReadError::NotADirectory { cid: *cid }),
        },
        Decoded::Raw(_) => Err(ReadError::NotADirectory { cid: *cid }),
    }
}

/// Resolves `<cid>[/name…]` (an optional leading `/ipfs/` is allowed) to
/// the CID it names.
pub fn resolve_path(store: &BlockStore, path: &str) -> Result<Cid, ReadError> {
    if path.len() > MAX_PATH_BYTES {
        return Err(ReadError::BadPath {
            reason: "longer than 4096 bytes",
        });
    }
    let path = path.strip_prefix("/ipfs/").unwrap_or(path);
    let mut parts = path.split('/').filter(|p| !p.is_empty());
    let Some(first) = parts.next() else {
        return Err(ReadError::BadPath { reason: "empty" });
    };
    let mut cid: Cid = first.parse()?;
    for (depth, name) in parts.enumerate() {
        if depth >= MAX_PATH_DEPTH {
            return Err(ReadError::TooDeep {
                cid,
                max: MAX_PATH_DEPTH,
            });
        }
        if name == "." || name == ".." {
            return Err(ReadError::BadPath {
                reason: "`.` and `..` are not allowed",
            });
        }
        let entries = list_dir(store, &cid)?;
        // Entries are sorted by name bytes (the decoder enforces it).
        let found = entries
            .binary_search_by(|e| e.name.as_bytes().cmp(name.as_bytes()))
            .map(|i| entries[i].cid);
        cid = found.map_err(|_| ReadError::NoSuchEntry {
            dir: cid,
            name: name.to_owned(),
        })?;
    }
    Ok(cid)
}

/// One pending part of a file: a child to fetch, with the size its parent
/// declared for it (checked when it arrives).
struct Pending {
    cid: Cid,
    size: u64,
    depth: usize,
}

/// Streams a file's bytes, fetching and checking one block at a time.
/// IO errors wrap a [`ReadError`] (`io::Error::into_inner` gives it back).
pub struct Reader<'a> {
    store: &'a BlockStore,
    /// Children still to read, the next on top.
    stack: Vec<Pending>,
    buf: Vec<u8>,
    pos: usize,
    /// Bytes still to skip before the first byte returned.
    skip: u64,
    size: u64,
}

impl<'a> Reader<'a> {
    /// A reader of the file `cid` from its start.
    pub fn new(store: &'a BlockStore, cid: &Cid) -> Result<Reader<'a>, ReadError> {
        Reader::from_offset(store, cid, 0)
    }

    /// A reader of the file `cid` from byte `offset` (for HTTP ranges):
    /// whole subtrees before it are skipped without being fetched.
    pub fn from_offset(
        store: &'a BlockStore,
        cid: &Cid,
        offset: u64,
    ) -> Result<Reader<'a>, ReadError> {
        let size = match stat(store, cid)? {
            Entry::File { size } => size,
            Entry::Directory => {
                return Err(ReadError::NotAFile {
                    cid: *cid,
                    kind: DataType::Directory,
                });
            }
            Entry::Symlink { .. } => {
                return Err(ReadError::NotAFile {
                    cid: *cid,
                    kind: DataType::Symlink,
                });
            }
        };
        Ok(Reader {
            store,
            stack: vec![Pending {
                cid: *cid,
                size,
                depth: 0,
            }],
            buf: Vec::new(),
            pos: 0,
            skip: offset.min(size),
            size,
        })
    }

    /// The file's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Fills `buf` with the next bytes; false at the end.
    fn advance(&mut self) -> Result<bool, ReadError> {
        while let Some(next) = self.stack.pop() {
            if next.size <= self.skip && next.size > 0 {
                self.skip -= next.size;
                continue;
            }
            let (mut bytes, found) = match load(self.store, &next.cid)? {
                Decoded::Raw(data) => {
                    let len = data.len() as u64;
                    (data, len)
                }
                Decoded::Pb(node, unixfs) => {
                    if !matches!(unixfs.kind, DataType::File | DataType::Raw) {
                        return Err(ReadError::NotAFile {
                            cid: next.cid,
                            kind: unixfs.kind,
                        });
                    }
                    let size = file_size(&next.cid, &node, &unixfs)?;
                    if !node.links.is_empty() && next.depth + 1 >= MAX_DAG_DEPTH {
                        return Err(ReadError::TooDeep {
                            cid: next.cid,
                            max: MAX_DAG_DEPTH,
                        });
                    }
                    for (link, &child_size) in node.links.iter().zip(&unixfs.blocksizes).rev() {
                        self.stack.push(Pending {
                            cid: link.cid,
                            size: child_size,
                            depth: next.depth + 1,
                        });
                    }
                    (unixfs.data.unwrap_or_default(), size)
                }
            };
            if found != next.size {
                return Err(ReadError::SizeMismatch {
                    cid: next.cid,
                    expected: next.size,
                    found,
                });
            }
            let skip = (self.skip as usize).min(bytes.len());
            self.skip -= skip as u64;
            if skip > 0 {
                bytes.drain(..skip);
            }
            if !bytes.is_empty() {
                self.buf = bytes;
                self.pos = 0;
                return Ok(true);
            }
        }
        Ok(false)
    }
}

impl Read for Reader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        while self.pos == self.buf.len() {
            if !self.advance().map_err(io::Error::other)? {
                return Ok(0);
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Reads a whole file into memory; for tests and small files.
pub fn read_to_vec(store: &BlockStore, cid: &Cid) -> Result<Vec<u8>, ReadError> {
    let mut reader = Reader::new(store, cid)?;
    let mut out = Vec::new();
    reader.read_to_end(&mut out).map_err(unwrap_io)?;
    Ok(out)
}

/// Turns an IO error from a [`Reader`] back into the [`ReadError`] inside.
pub fn unwrap_io(e: io::Error) -> ReadError {
    match e.get_ref().map(|inner| inner.is::<ReadError>()) {
        Some(true) => *e
            .into_inner()
            .expect("checked above")
            .downcast::<ReadError>()
            .expect("checked above"),
        _ => ReadError::Io {
            action: "read",
            path: PathBuf::new(),
            source: e,
        },
    }
}

/// Whether `name` can be created inside a directory without escaping it.
fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\0'])
        && !(cfg!(windows) && name.contains('\\'))
}

/// Writes the file or directory tree `cid` to `dest` (which must not
/// exist). Names that could escape `dest` are refused; symlinks are skipped.
pub fn export_path(store: &BlockStore, cid: &Cid, dest: &Path) -> Result<(), ReadError> {
    export_at(store, cid, dest, 0)
}

fn export_at(store: &BlockStore, cid: &Cid, dest: &Path, depth: usize) -> Result<(), ReadError> {
    if depth > MAX_PATH_DEPTH {
        return Err(ReadError::TooDeep {
            cid: *cid,
            max: MAX_PATH_DEPTH,
        });
    }
    let io = |action, path: &Path| {
        let path = path.to_owned();
        move |source| ReadError::Io {
            action,
            path,
            source,
        }
    };
    match stat(store, cid)? {
        Entry::File { .. } => {
            let mut reader = Reader::new(store, cid)?;
            let mut file = std::fs::File::create_new(dest).map_err(io("create", dest))?;
            io::copy(&mut reader, &mut file).map_err(|e| match unwrap_io(e) {
                ReadError::Io { source, .. } => ReadError::Io {
                    action: "write",
                    path: dest.to_owned(),
                    source,
                },
                other => other,
            })?;
            Ok(())
        }
        Entry::Directory => {
            std::fs::create_dir(dest).map_err(io("create", dest))?;
            for entry in list_dir(store, cid)? {
                if !safe_name(&entry.name) {
                    return Err(ReadError::UnsafeName {
                        dir: *cid,
                        name: entry.name,
                    });
                }
                export_at(store, &entry.cid, &dest.join(&entry.name), depth + 1)?;
            }
            Ok(())
        }
        Entry::Symlink { .. } => Ok(()),
    }
}
