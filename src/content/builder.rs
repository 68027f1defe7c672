//! Building UnixFS DAGs the way kubo does, so CIDs match `ipfs add
//! --cid-version=1 --raw-leaves`. Pure: chunks go in, blocks come out; the
//! importer does the reading and the storing.
//!
//! Files: fixed-size chunks become raw leaves, gathered under a *balanced*
//! tree of dag-pb file nodes with at most [`Layout::max_links`] children
//! each (kubo's and the JS importer's default layout): leaves are grouped
//! left to right in runs of 174 under a parent, those parents in runs of 174
//! under the next level, and so on until one node is left. A file of one
//! chunk is that raw leaf itself (`reduceSingleLeafToSelf`), and an empty
//! file is the raw leaf of zero bytes.
//!
//! The builder keeps one open run per level and closes a run as soon as it
//! is full, so a file of any size needs memory for at most
//! `max_links × depth` links: the same tree as batching level by level,
//! because a full run becomes the same parent either way, and only the
//! leftover runs at the end differ in when they are closed.
//!
//! Directories: one dag-pb node with UnixFS type Directory and a named link
//! per entry, sorted by name bytes. A directory whose links would pass
//! kubo's 256 KiB threshold is turned into a HAMT by kubo; this node does
//! not build HAMTs and refuses such a directory instead.

use crate::content::block::Block;
use crate::content::cid::{Cid, Codec};
use crate::content::dagpb::{MAX_BLOCK_BYTES, PbLink, PbNode, UnixFsData, sort_links};

/// kubo's default chunk size (`size-262144`).
pub const DEFAULT_CHUNK_BYTES: usize = 256 * 1024;
/// kubo's default `helpers.DefaultLinksPerBlock`: 174 links of about 46
/// bytes keep a file node under 8 KiB.
pub const DEFAULT_MAX_LINKS: usize = 174;
/// Most links a file node may have (the JS importer's 2025 profile uses
/// 1024); it bounds a node's size far below [`MAX_BLOCK_BYTES`].
pub const MAX_LINKS_LIMIT: usize = 1024;
/// Where kubo and the JS importer (`links-bytes` strategy) switch a
/// directory to a HAMT: the sum over entries of name bytes plus CID bytes.
pub const SHARD_THRESHOLD_BYTES: usize = 256 * 1024;

/// How files are cut into a DAG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Bytes per leaf; the last leaf may be shorter.
    pub chunk_bytes: usize,
    /// Most children of a file node.
    pub max_links: usize,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            max_links: DEFAULT_MAX_LINKS,
        }
    }
}

/// Why a layout or a directory cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The chunk size is 0 or above [`MAX_BLOCK_BYTES`].
    #[error("chunk size {chunk_bytes} is not in 1..={max}")]
    BadChunkSize {
        /// The size asked for.
        chunk_bytes: usize,
        /// The bound.
        max: usize,
    },
    /// The fan-out is below 2 (a tree would never close) or above
    /// [`MAX_LINKS_LIMIT`].
    #[error("max links {max_links} is not in 2..={max}")]
    BadMaxLinks {
        /// The fan-out asked for.
        max_links: usize,
        /// The bound.
        max: usize,
    },
    /// The directory is big enough that kubo would shard it.
    #[error(
        "directory links need {estimate} bytes, over the {max}-byte sharding threshold (HAMT directories are not supported)"
    )]
    NeedsSharding {
        /// The estimate (name bytes plus CID bytes over all entries).
        estimate: usize,
        /// The threshold.
        max: usize,
    },
    /// Two entries have the same name.
    #[error("directory has two entries named {name:?}")]
    DuplicateName {
        /// The name.
        name: String,
    },
}

impl Layout {
    /// Checks the bounds.
    pub fn validate(&self) -> Result<(), BuildError> {
        if self.chunk_bytes == 0 || self.chunk_bytes > MAX_BLOCK_BYTES {
            return Err(BuildError::BadChunkSize {
                chunk_bytes: self.chunk_bytes,
                max: MAX_BLOCK_BYTES,
            });
        }
        if self.max_links < 2 || self.max_links > MAX_LINKS_LIMIT {
            return Err(BuildError::BadMaxLinks {
                max_links: self.max_links,
                max: MAX_LINKS_LIMIT,
            });
        }
        Ok(())
    }
}

/// A finished node as its parent links to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Node {
    /// Its CID.
    pub cid: Cid,
    /// Cumulative size: the bytes of every block of its DAG (dag-pb Tsize).
    pub tsize: u64,
    /// File bytes below it (0 for a directory).
    pub filesize: u64,
}

/// Builds one file's DAG from its chunks, in order.
#[derive(Debug)]
pub struct FileBuilder {
    max_links: usize,
    /// `levels[0]` holds leaves, `levels[k]` nodes of height k; each is a
    /// run not yet closed, shorter than `max_links`.
    levels: Vec<Vec<Node>>,
    chunks: u64,
}

impl FileBuilder {
    /// A builder for `layout` (validated by the caller).
    pub fn new(layout: &Layout) -> FileBuilder {
        FileBuilder {
            max_links: layout.max_links,
            levels: vec![Vec::new()],
            chunks: 0,
        }
    }

    /// Adds the next chunk; the blocks that became complete go to `out`.
    pub fn push_chunk(&mut self, chunk: Vec<u8>, out: &mut Vec<Block>) {
        let len = chunk.len() as u64;
        let leaf = Block::new(Codec::Raw, chunk);
        let node = Node {
            cid: leaf.cid(),
            tsize: len,
            filesize: len,
        };
        out.push(leaf);
        self.chunks += 1;
        self.add(0, node, out);
    }

    fn add(&mut self, level: usize, node: Node, out: &mut Vec<Block>) {
        if self.levels.len() == level {
            self.levels.push(Vec::new());
        }
        self.levels[level].push(node);
        if self.levels[level].len() == self.max_links {
            let run = std::mem::take(&mut self.levels[level]);
            let parent = file_node(&run, out);
            self.add(level + 1, parent, out);
        }
    }

    /// Closes the open runs and returns the root; its block (if it is new)
    /// is the last one in `out`.
    pub fn finish(mut self, out: &mut Vec<Block>) -> Node {
        if self.chunks == 0 {
            // An empty file is one empty chunk, as both importers chunk it.
            self.push_chunk(Vec::new(), out);
        }
        let mut level = 0;
        loop {
            let higher = self.levels[level + 1..].iter().any(|run| !run.is_empty());
            let run = std::mem::take(&mut self.levels[level]);
            match run.len() {
                0 => {}
                // The last node standing is the root; at level 0 that is a
                // single-chunk file's leaf (kubo's reduce-to-self).
                1 if !higher => return run[0],
                _ => {
                    let parent = file_node(&run, out);
                    if self.levels.len() == level + 1 {
                        self.levels.push(Vec::new());
                    }
                    self.levels[level + 1].push(parent);
                }
            }
            level += 1;
        }
    }
}

/// A file node over `children`, as kubo writes it: links named "" with
/// their Tsize, UnixFS File with filesize and one blocksize per child.
fn file_node(children: &[Node], out: &mut Vec<Block>) -> Node {
    let filesize = children.iter().map(|c| c.filesize).sum();
    let data = UnixFsData::file(filesize, children.iter().map(|c| c.filesize).collect());
    let node = PbNode {
        links: children
            .iter()
            .map(|c| PbLink {
                cid: c.cid,
                name: Some(String::new()),
                tsize: Some(c.tsize),
            })
            .collect(),
        data: Some(data.encode()),
    };
    let bytes = node.encode();
    let tsize = bytes.len() as u64 + children.iter().map(|c| c.tsize).sum::<u64>();
    let block = Block::new(Codec::DagPb, bytes);
    let cid = block.cid();
    out.push(block);
    Node {
        cid,
        tsize,
        filesize,
    }
}

/// The directory node over `entries` (name, child). Names must be unique;
/// the caller checks that they are valid file names.
pub fn directory_node(entries: Vec<(String, Node)>) -> Result<(Block, Node), BuildError> {
    let estimate: usize = entries
        .iter()
        .map(|(name, node)| name.len() + node.cid.to_bytes().len())
        .sum();
    if estimate > SHARD_THRESHOLD_BYTES {
        return Err(BuildError::NeedsSharding {
            estimate,
            max: SHARD_THRESHOLD_BYTES,
        });
    }
    let children_tsize: u64 = entries.iter().map(|(_, n)| n.tsize).sum();
    let mut links: Vec<PbLink> = entries
        .into_iter()
        .map(|(name, node)| PbLink {
            cid: node.cid,
            name: Some(name),
            tsize: Some(node.tsize),
        })
        .collect();
    sort_links(&mut links);
    if let Some(pair) = links.windows(2).find(|w| w[0].name == w[1].name) {
        return Err(BuildError::DuplicateName {
            name: pair[0].name.clone().unwrap_or_default(),
        });
    }
    let bytes = PbNode {
        links,
        data: Some(UnixFsData::directory().encode()),
    }
    .encode();
    let tsize = bytes.len() as u64 + children_tsize;
    let block = Block::new(Codec::DagPb, bytes);
    let node = Node {
        cid: block.cid(),
        tsize,
        filesize: 0,
    };
    Ok((block, node))
}

/// Builds a whole file held in memory; for tests and small objects.
pub fn build_file(data: &[u8], layout: &Layout) -> (Node, Vec<Block>) {
    let mut builder = FileBuilder::new(layout);
    let mut out = Vec::new();
    for chunk in data.chunks(layout.chunk_bytes) {
        builder.push_chunk(chunk.to_vec(), &mut out);
    }
    let root = builder.finish(&mut out);
    (root, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::dagpb::DataType;
    use std::collections::HashMap;

    /// The tree shape, level by level, as the JS importer's balanced layout
    /// makes it: batch runs of `max` until one node is left.
    fn reference_shape(leaves: usize, max: usize) -> Vec<usize> {
        let mut shape = vec![leaves];
        let mut n = leaves;
        while n > 1 {
            n = n.div_ceil(max);
            shape.push(n);
        }
        shape
    }

    fn shape_of(root: Cid, blocks: &[Block]) -> Vec<usize> {
        let by_cid: HashMap<Cid, &Block> = blocks.iter().map(|b| (b.cid(), b)).collect();
        let mut level = vec![root];
        let mut shape = Vec::new();
        loop {
            shape.push(level.len());
            if level.iter().all(|c| c.codec() == Codec::Raw) {
                break;
            }
            let mut next = Vec::new();
            for cid in &level {
                let node = PbNode::decode(by_cid[cid].data()).unwrap();
                next.extend(node.links.iter().map(|l| l.cid));
            }
            level = next;
        }
        shape.reverse();
        shape
    }

    #[test]
    fn balanced_shapes_match_batching() {
        let layout = Layout {
            chunk_bytes: 1,
            max_links: 3,
        };
        for len in 1..=40usize {
            // Distinct bytes per position so no two leaves share a CID.
            let data: Vec<u8> = (0..len as u8).collect();
            let (root, blocks) = build_file(&data, &layout);
            assert_eq!(root.filesize, len as u64);
            assert_eq!(
                shape_of(root.cid, &blocks),
                reference_shape(len, 3),
                "{len} leaves"
            );
            let total: u64 = blocks.iter().map(|b| b.data().len() as u64).sum();
            assert_eq!(root.tsize, total, "Tsize counts every block once");
        }
    }

    #[test]
    fn single_and_empty_files_are_their_leaf() {
        let layout = Layout::default();
        let (root, blocks) = build_file(b"", &layout);
        assert_eq!(blocks.len(), 1);
        assert_eq!(root.cid.codec(), Codec::Raw);
        assert_eq!(
            root.cid.to_string(),
            "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
        );
        let (root, _) = build_file(&[7u8; DEFAULT_CHUNK_BYTES], &layout);
        assert_eq!(root.cid.codec(), Codec::Raw);
        let (root, blocks) = build_file(&[7u8; DEFAULT_CHUNK_BYTES + 1], &layout);
        assert_eq!(root.cid.codec(), Codec::DagPb);
        let node = PbNode::decode(blocks.last().unwrap().data()).unwrap();
        let data = UnixFsData::decode(node.data.as_deref().unwrap(), 0).unwrap();
        assert_eq!(data.kind, DataType::File);
        assert_eq!(data.filesize, Some(DEFAULT_CHUNK_BYTES as u64 + 1));
        assert_eq!(data.blocksizes, vec![DEFAULT_CHUNK_BYTES as u64, 1]);
    }

    #[test]
    fn directories_sort_and_refuse_duplicates_and_huge() {
        let leaf = |b: &[u8]| {
            let blk = Block::new(Codec::Raw, b.to_vec());
            Node {
                cid: blk.cid(),
                tsize: b.len() as u64,
                filesize: b.len() as u64,
            }
        };
        let (block, _) =
            directory_node(vec![("b".into(), leaf(b"1")), ("a".into(), leaf(b"2"))]).unwrap();
        let node = PbNode::decode(block.data()).unwrap();
        let names: Vec<_> = node.links.iter().map(|l| l.name.clone().unwrap()).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(matches!(
            directory_node(vec![("a".into(), leaf(b"1")), ("a".into(), leaf(b"2"))]),
            Err(BuildError::DuplicateName { .. })
        ));
        let many: Vec<_> = (0..7000).map(|i| (format!("{i:08}"), leaf(b"x"))).collect();
        assert!(matches!(
            directory_node(many),
            Err(BuildError::NeedsSharding { .. })
        ));
        assert_eq!(
            directory_node(vec![]).unwrap().0.cid().to_string(),
            "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354"
        );
    }
}
