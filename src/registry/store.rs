//! The devnet block log on disk: append-only, one file, crash-safe.
//!
//! Layout: a 40-byte file header (`GRIDREG` magic, a format byte, the hash
//! of the chain's genesis header), then one frame per block from height 1:
//! `len: u32 BE | checksum: 8 bytes | payload: len bytes`, where the payload
//! is [`Block::to_bytes`] and the checksum is the first 8 bytes of
//! `sha256(len || payload)` (so a garbled length is caught too).
//!
//! [`BlockStore::append`] writes the frame and `fsync`s before it returns,
//! so a block acknowledged to a client survives `kill -9` and power loss.
//! [`BlockStore::open`] scans the log: a bad frame with no valid frame after
//! it is a torn tail from a crash mid-append and is cut off (reported in
//! [`Recovery`]); a bad frame followed by a valid one is corruption in the
//! middle and is an error naming its offset, never silently dropped. A
//! corrupt *last* frame cannot be told from a torn write; it is cut, like
//! LevelDB and etcd do, and the cut is reported for the daemon to log.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::registry::block::{Block, MAX_BLOCK_BYTES};
use crate::registry::codec::{DecodeError, Hash, sha256};

/// The log's file name inside the data directory.
pub const LOG_FILE_NAME: &str = "blocks.log";

const MAGIC: &[u8; 8] = b"GRIDREG\x01";
const FILE_HEADER_BYTES: u64 = 8 + 32;
const FRAME_HEADER_BYTES: usize = 4 + 8;

/// Why the log could not be opened, read or appended to.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// An IO call failed (the disk or the OS, not the data).
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file does not start with the log's magic.
    #[error("{path} is not a gridedge block log")]
    NotABlockLog {
        /// The file.
        path: PathBuf,
    },
    /// The log belongs to a chain with another genesis.
    #[error("{path} holds chain {}, but the genesis gives {}", hex::encode(.found), hex::encode(.expected))]
    ChainMismatch {
        /// The file.
        path: PathBuf,
        /// The genesis hash expected.
        expected: Hash,
        /// The genesis hash in the file.
        found: Hash,
    },
    /// A frame in the middle of the log is damaged: a later frame is intact,
    /// so this is not a torn append. Restore the file or re-sync the chain.
    #[error("{path}: corrupt frame at byte {offset} ({what}) with intact frames after it")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Byte offset of the frame.
        offset: u64,
        /// What is wrong with it.
        what: &'static str,
    },
    /// A frame's checksum holds but its block does not decode.
    #[error("{path}: block at byte {offset} does not decode: {source}")]
    BadBlock {
        /// The file.
        path: PathBuf,
        /// Byte offset of the frame.
        offset: u64,
        /// The decode error (its offsets are within the block).
        source: DecodeError,
    },
    /// Blocks are not at consecutive heights.
    #[error("{path}: block at byte {offset} has height {found}, expected {expected}")]
    HeightGap {
        /// The file.
        path: PathBuf,
        /// Byte offset of the frame.
        offset: u64,
        /// The height expected.
        expected: u64,
        /// The height found.
        found: u64,
    },
    /// An append that is not the next height.
    #[error("append of height {found}, but the next height is {expected}")]
    NotNext {
        /// The next height.
        expected: u64,
        /// The height given.
        found: u64,
    },
    /// A block to append is larger than [`MAX_BLOCK_BYTES`].
    #[error("block of {len} bytes is larger than {max}")]
    TooLarge {
        /// Encoded length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// An earlier append failed and could not be rolled back; reopen the log.
    #[error("{path}: an earlier write failed; reopen the log to recover")]
    Poisoned {
        /// The file.
        path: PathBuf,
    },
    /// A read of a height the log does not hold.
    #[error("no block at height {height}; the log holds 1..={tip}")]
    NoSuchHeight {
        /// The height asked for.
        height: u64,
        /// The highest height held.
        tip: u64,
    },
}

/// What [`BlockStore::open`] repaired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Recovery {
    /// Where a torn tail was cut, if one was.
    pub truncated_at: Option<u64>,
    /// How many bytes were cut.
    pub cut_bytes: u64,
}

/// An open block log.
#[derive(Debug)]
pub struct BlockStore {
    path: PathBuf,
    file: File,
    /// Byte offset of each block's frame; index 0 is height 1.
    offsets: Vec<u64>,
    end: u64,
    poisoned: bool,
}

/// The store, the blocks it holds (for replay), and what was repaired.
#[derive(Debug)]
pub struct Opened {
    /// The store, ready to append.
    pub store: BlockStore,
    /// Every block, from height 1.
    pub blocks: Vec<Block>,
    /// What was repaired.
    pub recovery: Recovery,
}

fn checksum(len: &[u8; 4], payload: &[u8]) -> [u8; 8] {
    let hash = sha256(&[len, payload]);
    let mut out = [0u8; 8];
    out.copy_from_slice(&hash[..8]);
    out
}

/// The frame at `pos`, if a whole valid one is there; else why not.
fn frame_at(data: &[u8], pos: usize) -> Result<&[u8], &'static str> {
    let rest = &data[pos..];
    if rest.len() < FRAME_HEADER_BYTES {
        return Err("frame header cut short");
    }
    let len_bytes: [u8; 4] = rest[..4].try_into().expect("4 bytes");
    let len = u32::from_be_bytes(len_bytes) as usize;
    if len == 0 || len > MAX_BLOCK_BYTES {
        return Err("length out of range");
    }
    if rest.len() < FRAME_HEADER_BYTES + len {
        return Err("frame cut short");
    }
    let payload = &rest[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + len];
    if rest[4..12] != checksum(&len_bytes, payload) {
        return Err("checksum mismatch");
    }
    Ok(payload)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    // Makes a new file's directory entry durable; only possible on Unix.
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
fn read_exact_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

impl BlockStore {
    /// Opens (or creates) the log at `path` for the chain whose genesis
    /// header hash is `chain`, cutting a torn tail and returning every block.
    pub fn open(path: &Path, chain: &Hash) -> Result<Opened, StoreError> {
        let io = |action| {
            move |source| StoreError::Io {
                action,
                path: path.to_owned(),
                source,
            }
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io("opening"))?;
        let data = std::fs::read(path).map_err(io("reading"))?;
        let mut recovery = Recovery::default();
        if (data.len() as u64) < FILE_HEADER_BYTES {
            // A new file, or one whose creation crashed before the header
            // was synced: nothing in it was ever acknowledged.
            let mut header = Vec::with_capacity(FILE_HEADER_BYTES as usize);
            header.extend_from_slice(MAGIC);
            header.extend_from_slice(chain);
            file.set_len(0).map_err(io("truncating"))?;
            (&file)
                .write_all(&header)
                .map_err(io("writing header of"))?;
            file.sync_all().map_err(io("syncing"))?;
            if let Some(dir) = path.parent() {
                sync_dir(dir).map_err(io("syncing directory of"))?;
            }
            if !data.is_empty() {
                recovery = Recovery {
                    truncated_at: Some(0),
                    cut_bytes: data.len() as u64,
                };
            }
            return Ok(Opened {
                store: Self {
                    path: path.to_owned(),
                    file,
                    offsets: Vec::new(),
                    end: FILE_HEADER_BYTES,
                    poisoned: false,
                },
                blocks: Vec::new(),
                recovery,
            });
        }
        if &data[..8] != MAGIC {
            return Err(StoreError::NotABlockLog {
                path: path.to_owned(),
            });
        }
        let found: Hash = data[8..40].try_into().expect("32 bytes");
        if &found != chain {
            return Err(StoreError::ChainMismatch {
                path: path.to_owned(),
                expected: *chain,
                found,
            });
        }
        let mut pos = FILE_HEADER_BYTES as usize;
        let mut offsets = Vec::new();
        let mut blocks = Vec::new();
        while pos < data.len() {
            let payload = match frame_at(&data, pos) {
                Ok(payload) => payload,
                Err(what) => {
                    if (pos + 1..data.len()).any(|q| frame_at(&data, q).is_ok()) {
                        return Err(StoreError::Corrupt {
                            path: path.to_owned(),
                            offset: pos as u64,
                            what,
                        });
                    }
                    break;
                }
            };
            let block = Block::from_bytes(payload).map_err(|source| StoreError::BadBlock {
                path: path.to_owned(),
                offset: pos as u64,
                source,
            })?;
            let expected = offsets.len() as u64 + 1;
            if block.header.height != expected {
                return Err(StoreError::HeightGap {
                    path: path.to_owned(),
                    offset: pos as u64,
                    expected,
                    found: block.header.height,
                });
            }
            offsets.push(pos as u64);
            blocks.push(block);
            pos += FRAME_HEADER_BYTES + payload.len();
        }
        if pos < data.len() {
            file.set_len(pos as u64)
                .map_err(io("truncating torn tail of"))?;
            file.sync_all().map_err(io("syncing"))?;
            recovery = Recovery {
                truncated_at: Some(pos as u64),
                cut_bytes: (data.len() - pos) as u64,
            };
        }
        Ok(Opened {
            store: Self {
                path: path.to_owned(),
                file,
                offsets,
                end: pos as u64,
                poisoned: false,
            },
            blocks,
            recovery,
        })
    }

    /// The highest height held (0 when only the genesis exists).
    pub fn tip_height(&self) -> u64 {
        self.offsets.len() as u64
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends the next block and `fsync`s it. When this returns `Ok`, the
    /// block survives a crash. On error nothing was appended (or, if even
    /// the rollback failed, the store refuses further appends).
    pub fn append(&mut self, block: &Block) -> Result<(), StoreError> {
        self.append_all(std::slice::from_ref(block))
    }

    /// Appends consecutive blocks with one `fsync` at the end; all of them
    /// survive a crash once this returns `Ok`. On error none was appended.
    pub fn append_all(&mut self, blocks: &[Block]) -> Result<(), StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned {
                path: self.path.clone(),
            });
        }
        let mut frames = Vec::new();
        let mut offsets = Vec::with_capacity(blocks.len());
        for (i, block) in blocks.iter().enumerate() {
            let expected = self.tip_height() + 1 + i as u64;
            if block.header.height != expected {
                return Err(StoreError::NotNext {
                    expected,
                    found: block.header.height,
                });
            }
            let payload = block.to_bytes();
            if payload.len() > MAX_BLOCK_BYTES {
                return Err(StoreError::TooLarge {
                    len: payload.len(),
                    max: MAX_BLOCK_BYTES,
                });
            }
            offsets.push(self.end + frames.len() as u64);
            let len = (payload.len() as u32).to_be_bytes();
            frames.extend_from_slice(&len);
            frames.extend_from_slice(&checksum(&len, &payload));
            frames.extend_from_slice(&payload);
        }
        let frame = frames;
        let result = (&self.file)
            .seek(SeekFrom::Start(self.end))
            .and_then(|_| (&self.file).write_all(&frame))
            .and_then(|()| self.file.sync_data());
        if let Err(source) = result {
            // Cut whatever part of the frame reached the file, so the next
            // append does not land after garbage.
            if self
                .file
                .set_len(self.end)
                .and_then(|()| self.file.sync_data())
                .is_err()
            {
                self.poisoned = true;
            }
            return Err(StoreError::Io {
                action: "appending to",
                path: self.path.clone(),
                source,
            });
        }
        self.offsets.extend(offsets);
        self.end += frame.len() as u64;
        Ok(())
    }

    /// Reads the block at `height` (1-based) back from disk.
    pub fn read(&self, height: u64) -> Result<Block, StoreError> {
        let tip = self.tip_height();
        if height == 0 || height > tip {
            return Err(StoreError::NoSuchHeight { height, tip });
        }
        let offset = self.offsets[(height - 1) as usize];
        let next = self
            .offsets
            .get(height as usize)
            .copied()
            .unwrap_or(self.end);
        let mut frame = vec![0u8; (next - offset) as usize];
        read_exact_at(&self.file, &mut frame, offset).map_err(|source| StoreError::Io {
            action: "reading",
            path: self.path.clone(),
            source,
        })?;
        let payload = frame_at(&frame, 0).map_err(|what| StoreError::Corrupt {
            path: self.path.clone(),
            offset,
            what,
        })?;
        Block::from_bytes(payload).map_err(|source| StoreError::BadBlock {
            path: self.path.clone(),
            offset,
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::block::{BlockHeader, ops_digest};
    use ed25519_dalek::Signature;
    use rand::{Rng, SeedableRng};

    const CHAIN: Hash = [42; 32];

    fn block(height: u64) -> Block {
        Block {
            header: BlockHeader {
                height,
                prev_hash: [height as u8; 32],
                time_unix_secs: height,
                ops_digest: ops_digest(&[]),
                state_root: [7; 32],
            },
            ops: Vec::new(),
            seal: Signature::from_bytes(&[height as u8; 64]),
        }
    }

    fn log_with(dir: &Path, n: u64) -> (PathBuf, Vec<u64>) {
        let path = dir.join(LOG_FILE_NAME);
        let mut store = BlockStore::open(&path, &CHAIN).unwrap().store;
        let mut ends = vec![store.end];
        for h in 1..=n {
            store.append(&block(h)).unwrap();
            ends.push(store.end);
        }
        (path, ends)
    }

    #[test]
    fn appends_survive_reopen_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = log_with(dir.path(), 5);
        let opened = BlockStore::open(&path, &CHAIN).unwrap();
        assert_eq!(opened.recovery, Recovery::default());
        assert_eq!(opened.blocks, (1..=5).map(block).collect::<Vec<_>>());
        assert_eq!(opened.store.read(3).unwrap(), block(3));
        assert!(matches!(
            opened.store.read(6),
            Err(StoreError::NoSuchHeight { height: 6, tip: 5 })
        ));
        let mut store = opened.store;
        assert!(matches!(
            store.append(&block(7)),
            Err(StoreError::NotNext {
                expected: 6,
                found: 7
            })
        ));
        assert!(matches!(
            BlockStore::open(&path, &[1; 32]),
            Err(StoreError::ChainMismatch { .. })
        ));
    }

    /// Many simulated crashes mid-append: the last frame is cut short,
    /// garbled, or followed by junk. Every acknowledged block must survive,
    /// the torn bytes must be cut, and appending must work afterwards.
    #[test]
    fn torn_tails_are_cut_and_acknowledged_blocks_survive() {
        let dir = tempfile::tempdir().unwrap();
        let (base, ends) = log_with(dir.path(), 6);
        let pristine = std::fs::read(&base).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x5eed);
        for round in 0..300 {
            let acked = rng.gen_range(0..=6usize);
            let mut data = pristine[..ends[acked] as usize].to_vec();
            let next_frame = &pristine
                [ends[acked] as usize..ends.get(acked + 1).copied().unwrap_or(ends[6]) as usize];
            match rng.gen_range(0..3) {
                // Cut short somewhere inside the next frame.
                0 if !next_frame.is_empty() => {
                    data.extend_from_slice(&next_frame[..rng.gen_range(1..next_frame.len())])
                }
                // Whole next frame, with garbled bytes.
                1 if !next_frame.is_empty() => {
                    let mut torn = next_frame.to_vec();
                    for _ in 0..rng.gen_range(1..4) {
                        let i = rng.gen_range(0..torn.len());
                        torn[i] ^= rng.gen_range(1..=255u8);
                    }
                    data.extend_from_slice(&torn);
                }
                // Random junk (zeros or noise) as a file system may leave.
                _ => {
                    let n = rng.gen_range(1..300);
                    if rng.gen_bool(0.5) {
                        data.extend(std::iter::repeat_n(0u8, n));
                    } else {
                        data.extend((0..n).map(|_| rng.r#gen::<u8>()));
                    }
                }
            }
            let path = dir.path().join(format!("torn-{round}.log"));
            std::fs::write(&path, &data).unwrap();
            let opened =
                BlockStore::open(&path, &CHAIN).unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert_eq!(opened.blocks.len(), acked, "round {round}");
            assert_eq!(
                opened.recovery.truncated_at,
                Some(ends[acked]),
                "round {round}"
            );
            assert_eq!(std::fs::metadata(&path).unwrap().len(), ends[acked]);
            let mut store = opened.store;
            store.append(&block(acked as u64 + 1)).unwrap();
            drop(store);
            assert_eq!(
                BlockStore::open(&path, &CHAIN).unwrap().blocks.len(),
                acked + 1
            );
            std::fs::remove_file(&path).unwrap();
        }
    }

    #[test]
    fn corrupt_middle_is_an_error_naming_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let (base, ends) = log_with(dir.path(), 6);
        let pristine = std::fs::read(&base).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for round in 0..100 {
            // Damage a frame that has an intact frame after it.
            let victim = rng.gen_range(0..5usize);
            let (start, end) = (ends[victim] as usize, ends[victim + 1] as usize);
            let mut data = pristine.clone();
            let i = rng.gen_range(start..end);
            data[i] ^= rng.gen_range(1..=255u8);
            let path = dir.path().join(format!("corrupt-{round}.log"));
            std::fs::write(&path, &data).unwrap();
            match BlockStore::open(&path, &CHAIN) {
                Err(StoreError::Corrupt { offset, .. }) => {
                    assert_eq!(offset, start as u64, "round {round}")
                }
                other => panic!("round {round}: byte {i} of frame {victim}: {other:?}"),
            }
            // Nothing was cut.
            assert_eq!(std::fs::read(&path).unwrap(), data);
        }
        let mut data = pristine.clone();
        data[0] = b'X';
        std::fs::write(&base, &data).unwrap();
        assert!(matches!(
            BlockStore::open(&base, &CHAIN),
            Err(StoreError::NotABlockLog { .. })
        ));
    }

    #[test]
    fn a_torn_file_header_is_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE_NAME);
        std::fs::write(&path, &MAGIC[..5]).unwrap();
        let opened = BlockStore::open(&path, &CHAIN).unwrap();
        assert_eq!(opened.recovery.cut_bytes, 5);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), FILE_HEADER_BYTES);
    }
}
