//! The entry point of the `fuzz/` crate's content target: dag-pb and UnixFS
//! decoding, CIDs, and CAR streams on arbitrary bytes. Nothing may panic; a
//! dag-pb node that decodes must encode back to the same bytes (the form is
//! canonical, and CIDs depend on it); a CAR block that comes out must match
//! its CID.

use crate::content::car::CarReader;
use crate::content::cid::Cid;
use crate::content::dagpb::{PbNode, UnixFsData};

/// Most blocks read from one fuzz input's CAR stream.
const MAX_FUZZ_BLOCKS: usize = 64;

/// Runs every content decoder on `data`.
pub fn fuzz_decode(data: &[u8]) {
    if let Ok(node) = PbNode::decode(data) {
        assert_eq!(node.encode(), data, "dag-pb decode is not canonical");
        if let Some(inner) = &node.data {
            let _ = UnixFsData::decode(inner, 0);
        }
    }
    if let Ok(unixfs) = UnixFsData::decode(data, 0) {
        // Re-encoding must at least decode to the same value.
        let again = UnixFsData::decode(&unixfs.encode(), 0).expect("own encoding decodes");
        assert_eq!(again, unixfs, "UnixFS encode/decode differ");
    }
    if let Ok((cid, used)) = Cid::read_prefix(data) {
        assert_eq!(cid.to_bytes(), data[..used], "CID decode is not canonical");
        let text = cid.to_string();
        assert_eq!(
            text.parse::<Cid>().ok(),
            Some(cid),
            "CID text does not round-trip"
        );
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = text.parse::<Cid>();
    }
    if let Ok(mut car) = CarReader::new(data) {
        for _ in 0..MAX_FUZZ_BLOCKS {
            match car.next_block() {
                Ok(Some(block)) => assert!(block.cid().verifies(block.data())),
                _ => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn seeds_pass() {
        let seeds = seeds();
        for seed in &seeds {
            fuzz_decode(seed);
        }
        // `GRIDEDGE_WRITE_FUZZ_SEEDS=1 cargo test --lib content::fuzz`
        // refreshes the fuzzer's committed seeds.
        if std::env::var_os("GRIDEDGE_WRITE_FUZZ_SEEDS").is_some() {
            let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds/content_decode");
            std::fs::create_dir_all(dir).unwrap();
            let names = [
                "leaf-0",
                "leaf-1",
                "leaf-2",
                "file-node-1",
                "leaf-3",
                "leaf-4",
                "file-node-2",
                "file-root",
                "directory",
                "cid",
                "car",
            ];
            assert_eq!(names.len(), seeds.len());
            for (name, seed) in names.iter().zip(&seeds) {
                std::fs::write(format!("{dir}/{name}"), seed).unwrap();
            }
        }
    }

    /// Real encodings to start the fuzzer from (also written to
    /// `fuzz/seeds/content_decode/`).
    pub(crate) fn seeds() -> Vec<Vec<u8>> {
        use crate::content::builder::{Layout, build_file, directory_node};
        use crate::content::car::encode_header;
        use crate::content::cid::put_varint;
        let layout = Layout {
            chunk_bytes: 4,
            max_links: 3,
        };
        let (root, blocks) = build_file(b"hello, world, again", &layout);
        let (dir, _) = directory_node(vec![("a".into(), root)]).unwrap();
        let mut out: Vec<Vec<u8>> = blocks.iter().map(|b| b.data().to_vec()).collect();
        out.push(dir.data().to_vec());
        out.push(root.cid.to_bytes());
        let mut car = encode_header(&[dir.cid()]);
        for b in std::iter::once(&dir).chain(blocks.iter().rev()) {
            let cid = b.cid().to_bytes();
            put_varint(&mut car, (cid.len() + b.data().len()) as u64);
            car.extend_from_slice(&cid);
            car.extend_from_slice(b.data());
        }
        out.push(car);
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..400)) {
            fuzz_decode(&data);
        }

        #[test]
        fn mutated_seeds_never_panic(which in 0usize..16, at in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let seeds = seeds();
            let mut data = seeds[which % seeds.len()].clone();
            if !data.is_empty() {
                let i = at.index(data.len());
                data[i] = byte;
            }
            fuzz_decode(&data);
        }
    }
}
