//! The block store on disk: one file per block, bounded in bytes, crash-safe,
//! every read checked against the block's hash.
//!
//! Layout under the store's directory:
//!
//! ```text
//! LOCK                 held (flock) while a process has the store open
//! pins                 pinned roots, one CID per line, replaced atomically
//! blocks/<xx>/<cid>    a block's bytes; xx = first digest byte in hex
//! tmp/                 blocks being written; emptied at open
//! ```
//!
//! A write goes to `tmp/`, is fsynced, renamed into `blocks/<xx>/`, and the
//! shard directory is fsynced before the write is acknowledged, so after a
//! kill -9 or a power cut a block file is either whole or absent, and every
//! acknowledged block is there (a [`Session`] batches the directory fsyncs
//! into its [`Session::commit`]). A file that is there but damaged (bit rot,
//! a disk that lied about fsync) is caught when read: its bytes must hash
//! to its name, or it is deleted, dropped from the index and reported as
//! [`StoreError::Corrupt`], never served.
//!
//! [`BlockStore::open`] rebuilds the index from the directory names and
//! sizes only (no hashing, so opening is quick), bounded by
//! [`MAX_BLOCKS`]. Recency after a restart is the files' modification
//! order: the index does not persist reads.
//!
//! Eviction: when a write would pass `max_bytes`, the least recently used
//! blocks that are neither pinned nor held by an open [`Session`] are
//! deleted. Pinning a root pins every block of its DAG (reference counted
//! per root, so DAGs may share blocks); a session holds the blocks it writes
//! until it ends, so an import is never evicted from under itself before it
//! can be pinned.
//!
//! The API is synchronous and the store is `Sync`: async callers use
//! `spawn_blocking`. The index sits behind one mutex; file reads and the
//! hashing of blocks happen outside it.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use lru::LruCache;

use crate::content::block::Block;
use crate::content::cid::{Cid, Codec};
use crate::content::dagpb::{DecodeError, MAX_BLOCK_BYTES, PbNode};

/// Most blocks the store indexes. The index costs about 150 bytes of memory
/// per block, so this is about 600 MB of memory, and 1 TiB of 256 KiB
/// blocks; it also bounds the scan at open.
pub const MAX_BLOCKS: usize = 4 << 20;
/// Most pinned roots (the pins file is rewritten whole on every change).
pub const MAX_PINS: usize = 100_000;
/// Longest pins file accepted at open: `MAX_PINS` lines of a CID text.
const MAX_PINS_FILE_BYTES: u64 = (MAX_PINS as u64) * 100;

const PINS_FILE: &str = "pins";
const LOCK_FILE: &str = "LOCK";
const BLOCKS_DIR: &str = "blocks";
const TMP_DIR: &str = "tmp";

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// An IO call failed (the disk or the OS, not the data).
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Another process has the store open.
    #[error("{path} is in use by another process")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// The store does not hold the block.
    #[error("block {cid} is not in the store")]
    NotFound {
        /// The block.
        cid: Cid,
    },
    /// The block's file did not match its hash; it was deleted.
    #[error("block {cid} was corrupt on disk ({path}) and has been removed")]
    Corrupt {
        /// The block.
        cid: Cid,
        /// The file it was in.
        path: PathBuf,
    },
    /// A block is larger than the store may ever hold.
    #[error("block {cid} of {len} bytes is larger than {max}")]
    TooLarge {
        /// The block.
        cid: Cid,
        /// Its length.
        len: usize,
        /// The bound.
        max: u64,
    },
    /// No room: every block is pinned or held by a session.
    #[error(
        "store full: {needed} more bytes needed, {used} of {max} used by pinned or held blocks"
    )]
    Full {
        /// Bytes the write needed.
        needed: u64,
        /// Bytes in use.
        used: u64,
        /// The bound.
        max: u64,
    },
    /// The index would pass [`MAX_BLOCKS`] or the pins [`MAX_PINS`].
    #[error("store holds more than {max} {what}")]
    TooMany {
        /// Blocks or pins.
        what: &'static str,
        /// The bound.
        max: usize,
    },
    /// A pin's DAG is not all in the store.
    #[error("cannot pin {root}: {missing} blocks of its DAG are missing, e.g. {example}")]
    Incomplete {
        /// The root.
        root: Cid,
        /// How many blocks are missing.
        missing: usize,
        /// One of them.
        example: Cid,
    },
    /// A dag-pb block in a DAG being walked does not decode.
    #[error("block {cid} is not a valid dag-pb node: {source}")]
    BadNode {
        /// The block.
        cid: Cid,
        /// Why.
        source: DecodeError,
    },
    /// The pins file has a line that is not a CID.
    #[error("{path} line {line} is not a CID")]
    BadPinsFile {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// The configured bound is zero.
    #[error("max_bytes must be at least 1")]
    ZeroCapacity,
}

fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// What [`BlockStore::open`] found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Blocks indexed.
    pub blocks: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Leftover temporary files from interrupted writes, deleted.
    pub removed_temp_files: usize,
    /// Files under `blocks/` that are not named as a block, or are in the
    /// wrong shard or too large; left alone and not indexed.
    pub ignored_files: usize,
    /// Blocks evicted because the store was over `max_bytes` (a lowered
    /// bound).
    pub evicted: usize,
    /// Pinned roots whose DAG is not complete on disk.
    pub incomplete_pins: Vec<Cid>,
}

/// Counters for status pages and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    /// Blocks held.
    pub blocks: usize,
    /// Their bytes.
    pub used_bytes: u64,
    /// The bound.
    pub max_bytes: u64,
    /// Blocks that are pinned.
    pub pinned_blocks: usize,
    /// Pinned roots.
    pub pins: usize,
}

/// The index: which blocks exist, their sizes, and which may be evicted.
#[derive(Debug)]
struct Index {
    /// Blocks neither pinned nor held, least recently used first out.
    evictable: LruCache<Cid, u64>,
    /// Blocks pinned or held, with their sizes.
    kept: HashMap<Cid, u64>,
    /// How many pinned roots reach each block (present or not).
    pinned: HashMap<Cid, u32>,
    /// How many open sessions hold each block.
    held: HashMap<Cid, u32>,
    pins: BTreeSet<Cid>,
    used_bytes: u64,
}

impl Index {
    fn contains(&self, cid: &Cid) -> bool {
        self.kept.contains_key(cid) || self.evictable.contains(cid)
    }

    fn len(&self) -> usize {
        self.kept.len() + self.evictable.len()
    }

    fn is_kept(&self, cid: &Cid) -> bool {
        self.pinned.contains_key(cid) || self.held.contains_key(cid)
    }

    /// Moves a present block to where its pin and hold counts put it.
    fn reclassify(&mut self, cid: &Cid) {
        if self.is_kept(cid) {
            if let Some(size) = self.evictable.pop(cid) {
                self.kept.insert(*cid, size);
            }
        } else if let Some(size) = self.kept.remove(cid) {
            self.evictable.put(*cid, size);
        }
    }

    fn insert(&mut self, cid: Cid, size: u64) {
        if self.is_kept(&cid) {
            self.kept.insert(cid, size);
        } else {
            self.evictable.put(cid, size);
        }
        self.used_bytes += size;
    }

    fn remove(&mut self, cid: &Cid) -> Option<u64> {
        let size = self.kept.remove(cid).or_else(|| self.evictable.pop(cid))?;
        self.used_bytes -= size;
        Some(size)
    }
}

/// The on-disk block store. See the module doc.
#[derive(Debug)]
pub struct BlockStore {
    dir: PathBuf,
    max_bytes: u64,
    index: Mutex<Index>,
    tmp_counter: AtomicU64,
    /// Whether writes are fsynced; off only for a command's scratch store,
    /// whose contents die with the command.
    durable: bool,
    /// Held for the store's life: the OS drops the lock when the process
    /// dies, so a crash never leaves a stale lock behind.
    _lock: File,
}

impl BlockStore {
    /// A scratch store in `dir` for one command (`gridedge put` builds its
    /// CAR in one, `get` gathers verified blocks in one): the same checks,
    /// but no fsync, since nothing in it outlives the command and what the
    /// command keeps (the output file, the edge's store) is made durable
    /// there.
    pub fn open_scratch(dir: &Path, max_bytes: u64) -> Result<BlockStore, StoreError> {
        let (mut store, _) = Self::open(dir, max_bytes)?;
        store.durable = false;
        Ok(store)
    }

    /// Opens (creating if needed) the store in `dir`, bounded to `max_bytes`.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<(BlockStore, OpenReport), StoreError> {
        if max_bytes == 0 {
            return Err(StoreError::ZeroCapacity);
        }
        let blocks_dir = dir.join(BLOCKS_DIR);
        let tmp_dir = dir.join(TMP_DIR);
        std::fs::create_dir_all(&blocks_dir).map_err(io_err("create", &blocks_dir))?;
        std::fs::create_dir_all(&tmp_dir).map_err(io_err("create", &tmp_dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err("open", &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked { path: lock_path });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err("lock", &lock_path)(e)),
        }
        let mut report = OpenReport::default();

        // Interrupted writes: nothing in tmp/ was ever acknowledged.
        for entry in std::fs::read_dir(&tmp_dir).map_err(io_err("list", &tmp_dir))? {
            let entry = entry.map_err(io_err("list", &tmp_dir))?;
            let path = entry.path();
            std::fs::remove_file(&path).map_err(io_err("remove", &path))?;
            report.removed_temp_files += 1;
        }

        // Every shard exists from the start, so a write never has to create
        // (and fsync the parent of) a directory.
        for shard in 0..=255u8 {
            let path = blocks_dir.join(format!("{shard:02x}"));
            std::fs::create_dir_all(&path).map_err(io_err("create", &path))?;
        }
        sync_dir(&blocks_dir)?;
        sync_dir(dir)?;

        let mut found: Vec<(std::time::SystemTime, Cid, u64)> = Vec::new();
        for shard in 0..=255u8 {
            let shard_dir = blocks_dir.join(format!("{shard:02x}"));
            for entry in std::fs::read_dir(&shard_dir).map_err(io_err("list", &shard_dir))? {
                let entry = entry.map_err(io_err("list", &shard_dir))?;
                let name = entry.file_name();
                let cid = name.to_str().and_then(|n| n.parse::<Cid>().ok());
                let Some(cid) = cid.filter(|c| c.version() == 1 && c.digest()[0] == shard) else {
                    report.ignored_files += 1;
                    continue;
                };
                let meta = entry.metadata().map_err(io_err("stat", &entry.path()))?;
                if !meta.is_file() || meta.len() > MAX_BLOCK_BYTES as u64 {
                    report.ignored_files += 1;
                    continue;
                }
                if found.len() == MAX_BLOCKS {
                    return Err(StoreError::TooMany {
                        what: "blocks",
                        max: MAX_BLOCKS,
                    });
                }
                let mtime = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
                found.push((mtime, cid, meta.len()));
            }
        }
        found.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));

        let mut index = Index {
            evictable: LruCache::unbounded(),
            kept: HashMap::new(),
            pinned: HashMap::new(),
            held: HashMap::new(),
            pins: BTreeSet::new(),
            used_bytes: 0,
        };
        for (_, cid, size) in found {
            index.insert(cid, size);
        }
        let pins_path = dir.join(PINS_FILE);
        index.pins = read_pins(&pins_path)?;

        let store = BlockStore {
            dir: dir.to_owned(),
            max_bytes,
            index: Mutex::new(index),
            tmp_counter: AtomicU64::new(0),
            durable: true,
            _lock: lock,
        };

        let pins: Vec<Cid> = store.lock().pins.iter().copied().collect();
        for root in pins {
            let walk = store.walk_dag(root)?;
            if !walk.missing.is_empty() {
                tracing::warn!(%root, missing = walk.missing.len(), "pinned DAG is incomplete on disk");
                report.incomplete_pins.push(root);
            }
            let mut index = store.lock();
            for cid in walk.present.iter().chain(&walk.missing) {
                *index.pinned.entry(*cid).or_insert(0) += 1;
                index.reclassify(cid);
            }
        }

        {
            let mut index = store.lock();
            while index.used_bytes > max_bytes {
                let Some((cid, _)) = index.evictable.peek_lru().map(|(c, s)| (*c, *s)) else {
                    break;
                };
                store.delete(&mut index, &cid)?;
                report.evicted += 1;
            }
            report.blocks = index.len();
            report.bytes = index.used_bytes;
        }
        Ok((store, report))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        // A panic while holding the lock cannot leave the index half
        // updated in a way that matters more than losing the store would.
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn shard_dir(&self, cid: &Cid) -> PathBuf {
        self.dir
            .join(BLOCKS_DIR)
            .join(format!("{:02x}", cid.digest()[0]))
    }

    fn block_path(&self, cid: &Cid) -> PathBuf {
        self.shard_dir(cid).join(cid.to_string())
    }

    /// Whether the store holds `cid`.
    pub fn has(&self, cid: &Cid) -> bool {
        self.lock().contains(&cid.to_v1())
    }

    /// Counters.
    pub fn stats(&self) -> StoreStats {
        let index = self.lock();
        StoreStats {
            blocks: index.len(),
            used_bytes: index.used_bytes,
            max_bytes: self.max_bytes,
            pinned_blocks: index
                .kept
                .keys()
                .filter(|c| index.pinned.contains_key(c))
                .count(),
            pins: index.pins.len(),
        }
    }

    /// Reads a block and checks it against its hash. A block that fails the
    /// check is deleted and reported as [`StoreError::Corrupt`].
    pub fn get(&self, cid: &Cid) -> Result<Block, StoreError> {
        let key = cid.to_v1();
        {
            let mut index = self.lock();
            if index.evictable.get(&key).is_none() && !index.kept.contains_key(&key) {
                return Err(StoreError::NotFound { cid: *cid });
            }
        }
        let path = self.block_path(&key);
        let data = match read_bounded(&path) {
            Ok(data) => data,
            // Evicted between the index check and the read.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound { cid: *cid });
            }
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        match Block::verified(*cid, data) {
            Ok(block) => Ok(block),
            Err(_) => {
                tracing::warn!(%cid, path = %path.display(), "corrupt block removed");
                let mut index = self.lock();
                self.delete(&mut index, &key)?;
                Err(StoreError::Corrupt { cid: *cid, path })
            }
        }
    }

    fn delete(&self, index: &mut Index, cid: &Cid) -> Result<(), StoreError> {
        let path = self.block_path(cid);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove", &path)(e)),
        }
        index.remove(cid);
        Ok(())
    }

    /// Stores one block durably: when this returns, a kill -9 or power cut
    /// cannot lose it. Returns whether it was new.
    pub fn put(&self, block: &Block) -> Result<bool, StoreError> {
        let mut session = self.session();
        let new = session.put(block)?;
        session.commit()?;
        Ok(new)
    }

    /// Starts a batch of writes whose blocks are held (not evictable) until
    /// the session is dropped, with one round of directory fsyncs at
    /// [`Session::commit`].
    pub fn session(&self) -> Session<'_> {
        Session {
            store: self,
            held: HashSet::new(),
            dirty_shards: BTreeSet::new(),
        }
    }

    /// Pins `root` and its whole DAG, which must be in the store.
    pub fn pin(&self, root: &Cid) -> Result<(), StoreError> {
        let root = root.to_v1();
        if self.lock().pins.contains(&root) {
            return Ok(());
        }
        let walk = self.walk_dag(root)?;
        if let Some(example) = walk.missing.first() {
            return Err(StoreError::Incomplete {
                root,
                missing: walk.missing.len(),
                example: *example,
            });
        }
        let mut index = self.lock();
        if index.pins.contains(&root) {
            return Ok(());
        }
        if index.pins.len() >= MAX_PINS {
            return Err(StoreError::TooMany {
                what: "pins",
                max: MAX_PINS,
            });
        }
        // Unpinned blocks may have been evicted while we walked.
        let gone: Vec<Cid> = walk
            .present
            .iter()
            .filter(|c| !index.contains(c))
            .copied()
            .collect();
        if let Some(example) = gone.first() {
            return Err(StoreError::Incomplete {
                root,
                missing: gone.len(),
                example: *example,
            });
        }
        index.pins.insert(root);
        if let Err(e) = self.write_pins(&index.pins) {
            index.pins.remove(&root);
            return Err(e);
        }
        for cid in &walk.present {
            *index.pinned.entry(*cid).or_insert(0) += 1;
            index.reclassify(cid);
        }
        Ok(())
    }

    /// Unpins `root`; its blocks become evictable unless another pin or a
    /// session keeps them. Returns whether it was pinned.
    pub fn unpin(&self, root: &Cid) -> Result<bool, StoreError> {
        let root = root.to_v1();
        {
            let mut index = self.lock();
            if !index.pins.remove(&root) {
                return Ok(false);
            }
            if let Err(e) = self.write_pins(&index.pins) {
                index.pins.insert(root);
                return Err(e);
            }
        }
        // The walk reads pinned blocks, so it finds what the pin counted
        // unless a block went corrupt since; such a block's subtree stays
        // counted (kept) until the next open recounts.
        let walk = self.walk_dag(root)?;
        let mut index = self.lock();
        for cid in walk.present.iter().chain(&walk.missing) {
            if let Some(count) = index.pinned.get_mut(cid) {
                *count -= 1;
                if *count == 0 {
                    index.pinned.remove(cid);
                }
            }
            index.reclassify(cid);
        }
        Ok(true)
    }

    /// Deletes the blocks of `root`'s DAG that no pin and no session
    /// keeps (a purge); returns how many went. Blocks a pinned DAG shares
    /// stay.
    pub fn evict_dag(&self, root: &Cid) -> Result<usize, StoreError> {
        let walk = self.walk_dag(root.to_v1())?;
        let mut index = self.lock();
        let mut deleted = 0;
        for cid in &walk.present {
            if index.evictable.contains(cid) {
                self.delete(&mut index, cid)?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// The pinned roots.
    pub fn pins(&self) -> Vec<Cid> {
        self.lock().pins.iter().copied().collect()
    }

    fn write_pins(&self, pins: &BTreeSet<Cid>) -> Result<(), StoreError> {
        let mut text = String::with_capacity(pins.len() * 64);
        for pin in pins {
            text.push_str(&pin.to_string());
            text.push('\n');
        }
        let path = self.dir.join(PINS_FILE);
        crate::fsutil::write_atomic(&path, text.as_bytes(), false).map_err(io_err("write", &path))
    }

    /// Every distinct block of the DAG under `root`, split into those the
    /// store has and those it lacks. Reads (and so verifies) every dag-pb
    /// node; raw leaves have no links and are only looked up.
    pub fn walk_dag(&self, root: Cid) -> Result<DagWalk, StoreError> {
        let mut seen = HashSet::new();
        let mut walk = DagWalk::default();
        let mut stack = vec![root.to_v1()];
        while let Some(cid) = stack.pop() {
            if !seen.insert(cid) {
                continue;
            }
            // `seen` only grows with links read from blocks in the store,
            // so it is bounded by the store's contents.
            if cid.codec() == Codec::Raw {
                if self.has(&cid) {
                    walk.present.push(cid);
                } else {
                    walk.missing.push(cid);
                }
                continue;
            }
            let block = match self.get(&cid) {
                Ok(block) => block,
                Err(StoreError::NotFound { .. } | StoreError::Corrupt { .. }) => {
                    walk.missing.push(cid);
                    continue;
                }
                Err(e) => return Err(e),
            };
            walk.present.push(cid);
            let node = PbNode::decode(block.data())
                .map_err(|source| StoreError::BadNode { cid, source })?;
            stack.extend(node.links.iter().rev().map(|l| l.cid.to_v1()));
        }
        Ok(walk)
    }
}

/// The blocks of one DAG, as [`BlockStore::walk_dag`] found them.
#[derive(Debug, Default, Clone)]
pub struct DagWalk {
    /// Blocks the store has, in depth-first order.
    pub present: Vec<Cid>,
    /// Blocks it lacks (their subtrees are not walked).
    pub missing: Vec<Cid>,
}

/// A batch of writes; see [`BlockStore::session`].
#[derive(Debug)]
pub struct Session<'a> {
    store: &'a BlockStore,
    held: HashSet<Cid>,
    dirty_shards: BTreeSet<u8>,
}

impl Session<'_> {
    /// Writes a block (or holds the copy already there). Durable once
    /// [`Session::commit`] returns. Returns whether it was new.
    pub fn put(&mut self, block: &Block) -> Result<bool, StoreError> {
        let store = self.store;
        let cid = block.cid().to_v1();
        let len = block.data().len() as u64;
        if len > store.max_bytes || block.data().len() > MAX_BLOCK_BYTES {
            return Err(StoreError::TooLarge {
                cid,
                len: block.data().len(),
                max: store.max_bytes.min(MAX_BLOCK_BYTES as u64),
            });
        }
        if self.hold_if_present(&cid) {
            return Ok(false);
        }

        // Write and fsync outside the lock; only the rename needs it.
        let n = store.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let tmp = store
            .dir
            .join(TMP_DIR)
            .join(format!("{}-{n}.tmp", std::process::id()));
        let written = (|| {
            let mut file = File::create(&tmp)?;
            file.write_all(block.data())?;
            if store.durable {
                file.sync_all()?;
            }
            Ok::<(), std::io::Error>(())
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(io_err("write", &tmp)(e));
        }

        let mut index = store.lock();
        if index.contains(&cid) {
            // Another writer stored it meanwhile.
            drop(index);
            let _ = std::fs::remove_file(&tmp);
            self.hold_if_present(&cid);
            return Ok(false);
        }
        if index.len() >= MAX_BLOCKS {
            drop(index);
            let _ = std::fs::remove_file(&tmp);
            return Err(StoreError::TooMany {
                what: "blocks",
                max: MAX_BLOCKS,
            });
        }
        while index.used_bytes + len > store.max_bytes {
            let Some((victim, _)) = index.evictable.peek_lru().map(|(c, s)| (*c, *s)) else {
                let used = index.used_bytes;
                drop(index);
                let _ = std::fs::remove_file(&tmp);
                return Err(StoreError::Full {
                    needed: len,
                    used,
                    max: store.max_bytes,
                });
            };
            if let Err(e) = store.delete(&mut index, &victim) {
                drop(index);
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        }
        let path = store.block_path(&cid);
        if let Err(e) = std::fs::rename(&tmp, &path) {
            drop(index);
            let _ = std::fs::remove_file(&tmp);
            return Err(io_err("rename", &path)(e));
        }
        *index.held.entry(cid).or_insert(0) += 1;
        self.held.insert(cid);
        index.insert(cid, len);
        self.dirty_shards.insert(cid.digest()[0]);
        Ok(true)
    }

    /// Holds `cid` for this session if the store has it.
    fn hold_if_present(&mut self, cid: &Cid) -> bool {
        let mut index = self.store.lock();
        if !index.contains(cid) {
            return false;
        }
        if self.held.insert(*cid) {
            *index.held.entry(*cid).or_insert(0) += 1;
            index.reclassify(cid);
        }
        // A fresh use: most recently used if it is evictable later.
        index.evictable.promote(cid);
        true
    }

    /// Makes every block written so far durable (fsyncs the directories
    /// their renames changed). The blocks stay held until the session is
    /// dropped.
    pub fn commit(&mut self) -> Result<(), StoreError> {
        let shards = std::mem::take(&mut self.dirty_shards);
        if !self.store.durable {
            return Ok(());
        }
        for shard in shards {
            let dir = self.store.dir.join(BLOCKS_DIR).join(format!("{shard:02x}"));
            if let Err(e) = sync_dir(&dir) {
                self.dirty_shards.insert(shard);
                return Err(e);
            }
        }
        Ok(())
    }

    /// The store.
    pub fn store(&self) -> &BlockStore {
        self.store
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let mut index = self.store.lock();
        for cid in self.held.drain() {
            if let Some(count) = index.held.get_mut(&cid) {
                *count -= 1;
                if *count == 0 {
                    index.held.remove(&cid);
                }
            }
            index.reclassify(&cid);
        }
    }
}

fn read_pins(path: &Path) -> Result<BTreeSet<Cid>, StoreError> {
    let text = match std::fs::metadata(path) {
        Ok(meta) if meta.len() > MAX_PINS_FILE_BYTES => {
            return Err(StoreError::TooMany {
                what: "pins",
                max: MAX_PINS,
            });
        }
        Ok(_) => std::fs::read_to_string(path).map_err(io_err("read", path))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(e) => return Err(io_err("stat", path)(e)),
    };
    let mut pins = BTreeSet::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let cid: Cid = line.parse().map_err(|_| StoreError::BadPinsFile {
            path: path.to_owned(),
            line: i + 1,
        })?;
        pins.insert(cid.to_v1());
    }
    Ok(pins)
}

/// Reads a whole file of at most [`MAX_BLOCK_BYTES`] (+1, to notice a
/// longer one, which then fails its hash check).
fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    let file = File::open(path)?;
    let mut data = Vec::new();
    file.take(MAX_BLOCK_BYTES as u64 + 1)
        .read_to_end(&mut data)?;
    Ok(data)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    // A rename is durable only once its directory is; Unix only.
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync", dir))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::builder::{Layout, build_file};

    fn block(n: u32, len: usize) -> Block {
        let mut data = vec![0u8; len];
        data[..4].copy_from_slice(&n.to_be_bytes());
        Block::new(Codec::Raw, data)
    }

    #[test]
    fn put_get_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (store, report) = BlockStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(report.blocks, 0);
        let b = block(1, 100);
        assert!(store.put(&b).unwrap());
        assert!(!store.put(&b).unwrap());
        assert_eq!(store.get(&b.cid()).unwrap(), b);
        // A second process (here: a second open) is refused while open.
        assert!(matches!(
            BlockStore::open(dir.path(), 1 << 20),
            Err(StoreError::Locked { .. })
        ));
        drop(store);
        let (store, report) = BlockStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!((report.blocks, report.bytes), (1, 100));
        assert_eq!(store.get(&b.cid()).unwrap(), b);
    }

    #[test]
    fn a_purged_dag_goes_but_for_what_a_pin_keeps() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = BlockStore::open(dir.path(), 1 << 20).unwrap();
        let (loose, kept) = (block(1, 100), block(2, 100));
        store.put(&loose).unwrap();
        store.put(&kept).unwrap();
        store.pin(&kept.cid()).unwrap();
        assert_eq!(store.evict_dag(&loose.cid()).unwrap(), 1);
        assert!(!store.has(&loose.cid()));
        assert_eq!(store.evict_dag(&kept.cid()).unwrap(), 0);
        assert_eq!(store.get(&kept.cid()).unwrap(), kept);
        // Gone from disk too: a reopen does not bring it back.
        drop(store);
        let (store, report) = BlockStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(report.blocks, 1);
        assert!(!store.has(&loose.cid()));
    }

    #[test]
    fn evicts_least_recently_used_but_never_pinned_or_held() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = BlockStore::open(dir.path(), 1000).unwrap();
        let bs: Vec<Block> = (0..4).map(|i| block(i, 300)).collect();
        for b in &bs[..3] {
            store.put(b).unwrap();
        }
        // Use block 0, so block 1 is now the least recently used.
        store.get(&bs[0].cid()).unwrap();
        store.put(&bs[3]).unwrap();
        assert!(store.has(&bs[0].cid()));
        assert!(!store.has(&bs[1].cid()));
        assert_eq!(store.stats().used_bytes, 900);

        // Pin block 2: now 0 is evicted next, and when only pinned and held
        // blocks are left the store reports full.
        store.pin(&bs[2].cid()).unwrap();
        let mut session = store.session();
        session.put(&block(10, 300)).unwrap();
        assert!(!store.has(&bs[0].cid()));
        session.put(&block(11, 300)).unwrap();
        assert!(!store.has(&bs[3].cid()));
        assert!(matches!(
            session.put(&block(12, 300)),
            Err(StoreError::Full { .. })
        ));
        session.commit().unwrap();
        drop(session);
        store.put(&block(12, 300)).unwrap();
        assert!(store.has(&bs[2].cid()), "pinned block survives");
        // The pin survives a restart.
        drop(store);
        let (store, _) = BlockStore::open(dir.path(), 1000).unwrap();
        assert_eq!(store.pins(), vec![bs[2].cid()]);
        assert_eq!(store.stats().pinned_blocks, 1);
        assert!(store.unpin(&bs[2].cid()).unwrap());
        assert_eq!(store.stats().pinned_blocks, 0);
    }

    #[test]
    fn pin_covers_the_whole_dag_and_needs_it_complete() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = BlockStore::open(dir.path(), 10 << 20).unwrap();
        let layout = Layout {
            chunk_bytes: 100,
            max_links: 3,
        };
        let data: Vec<u8> = (0..2000u32).map(|i| (i * 7) as u8).collect();
        let (root, blocks) = build_file(&data, &layout);
        for b in &blocks[..blocks.len() - 2] {
            store.put(b).unwrap();
        }
        assert!(matches!(
            store.pin(&root.cid),
            Err(StoreError::Incomplete { .. })
        ));
        for b in &blocks {
            store.put(b).unwrap();
        }
        store.pin(&root.cid).unwrap();
        assert_eq!(store.stats().pinned_blocks, blocks.len());
        store.unpin(&root.cid).unwrap();
        assert_eq!(store.stats().pinned_blocks, 0);
    }

    #[test]
    fn corrupt_and_partial_files_are_never_served() {
        let dir = tempfile::tempdir().unwrap();
        let b = block(5, 1000);
        {
            let (store, _) = BlockStore::open(dir.path(), 1 << 20).unwrap();
            store.put(&b).unwrap();
            store.put(&block(6, 10)).unwrap();
        }
        // A torn temp file from a crash, a stray file, and a flipped bit.
        std::fs::write(dir.path().join("tmp/123-0.tmp"), b"half a blo").unwrap();
        std::fs::write(dir.path().join("blocks/00/not-a-cid"), b"x").unwrap();
        let path = dir
            .path()
            .join(BLOCKS_DIR)
            .join(format!("{:02x}", b.cid().digest()[0]))
            .join(b.cid().to_string());
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[500] ^= 1;
        std::fs::write(&path, bytes).unwrap();

        let (store, report) = BlockStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(report.removed_temp_files, 1);
        assert_eq!(report.ignored_files, 1);
        assert_eq!(report.blocks, 2);
        assert!(matches!(
            store.get(&b.cid()),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(!path.exists(), "a corrupt block is removed");
        assert!(matches!(
            store.get(&b.cid()),
            Err(StoreError::NotFound { .. })
        ));
        assert_eq!(store.stats().used_bytes, 10);
    }

    #[test]
    fn threads_share_one_store_within_its_bound() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<BlockStore>();
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = BlockStore::open(dir.path(), 20_000).unwrap();
        std::thread::scope(|scope| {
            for t in 0..4u32 {
                let store = &store;
                scope.spawn(move || {
                    for i in 0..50u32 {
                        // Threads write some of the same blocks.
                        let b = block((i % 30) * 10 + t % 2, 1000);
                        store.put(&b).unwrap();
                        match store.get(&b.cid()) {
                            Ok(got) => assert_eq!(got, b),
                            // Another thread's write may have evicted it.
                            Err(StoreError::NotFound { .. }) => {}
                            Err(e) => panic!("{e}"),
                        }
                    }
                });
            }
        });
        let stats = store.stats();
        assert!(stats.used_bytes <= 20_000);
        assert_eq!(stats.used_bytes, stats.blocks as u64 * 1000);
        drop(store);
        let (_, report) = BlockStore::open(dir.path(), 20_000).unwrap();
        assert_eq!(report.bytes, stats.used_bytes);
    }

    #[test]
    fn a_lowered_bound_evicts_at_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, _) = BlockStore::open(dir.path(), 1 << 20).unwrap();
            for i in 0..10 {
                store.put(&block(i, 100)).unwrap();
            }
        }
        let (store, report) = BlockStore::open(dir.path(), 550).unwrap();
        assert_eq!(report.evicted, 5);
        assert_eq!(store.stats().used_bytes, 500);
    }
}
