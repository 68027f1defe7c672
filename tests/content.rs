//! The content layer end to end: CIDs against the reference IPFS importer
//! (ipfs-unixfs-importer from npm, run by node), round trips through the
//! block store and CAR files, kill -9 while writing, corruption, and
//! private objects.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use gridedge::content::car::{self, CarError, CarImportOptions};
use gridedge::content::private::{PrivateKey, import_private, open_private};
use gridedge::content::read::read_to_vec;
use gridedge::content::{
    BlockStore, Cid, Entry, ImportOptions, Layout, ReadError, Reader, StoreError, import_path,
    list_dir, resolve_path, stat,
};

const CHUNK: usize = 256 * 1024;

/// Deterministic bytes that do not repeat at chunk scale (xorshift64*), so
/// no two leaves share a CID unless a test wants them to.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

/// The reference importer's CIDs for `paths`; installs its locked npm
/// packages on first use. Without node and npm the test fails, loudly: a
/// conformance check that did not run must not pass.
fn reference_cids(extra_args: &[&str], paths: &[PathBuf]) -> Vec<String> {
    let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    if !js.join("node_modules/ipfs-unixfs-importer").exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&js)
            .status()
            .unwrap_or_else(|e| {
                panic!(
                    "FAILURE: cannot run npm ({e}); the conformance check against \
                     ipfs-unixfs-importer needs node and npm (or run `npm ci` in tests/js)"
                )
            });
        assert!(status.success(), "FAILURE: `npm ci` in tests/js failed");
    }
    let output = Command::new("node")
        .arg(js.join("unixfs-cids.mjs"))
        .args(extra_args)
        .args(paths)
        .output()
        .unwrap_or_else(|e| {
            panic!("FAILURE: cannot run node ({e}); the conformance check needs it")
        });
    assert!(
        output.status.success(),
        "node failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let cids: Vec<String> = text
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            v["cid"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(cids.len(), paths.len(), "node printed: {text}");
    cids
}

/// Reads every file under `path` back from the store by path resolution
/// and compares it with the disk.
fn assert_same_tree(store: &BlockStore, root: &Cid, path: &Path) {
    fn walk(store: &BlockStore, cid_path: &str, path: &Path) {
        let cid = resolve_path(store, cid_path).unwrap();
        if path.is_dir() {
            assert_eq!(stat(store, &cid).unwrap(), Entry::Directory);
            let mut names: Vec<String> = std::fs::read_dir(path)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| !n.starts_with('.'))
                .collect();
            names.sort();
            let listed: Vec<String> = list_dir(store, &cid)
                .unwrap()
                .into_iter()
                .map(|e| e.name)
                .collect();
            assert_eq!(listed, names, "{cid_path}");
            for name in names {
                walk(store, &format!("{cid_path}/{name}"), &path.join(name));
            }
        } else {
            let data = read_to_vec(store, &cid).unwrap();
            assert!(data == std::fs::read(path).unwrap(), "{cid_path} differs");
        }
    }
    walk(store, &root.to_string(), path);
}

#[test]
fn cids_match_the_reference_importer() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input");
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("one-byte", vec![b'x']),
        ("one-chunk", pseudo_random(CHUNK, 1)),
        ("one-chunk-plus-one", pseudo_random(CHUNK + 1, 2)),
        ("zeros", vec![0u8; 3 * CHUNK + 5]),
        // 174 leaves fill one node exactly; 177 need a second level.
        ("174-chunks", pseudo_random(174 * CHUNK, 3)),
        ("177-chunks", pseudo_random(176 * CHUNK + 123, 4)),
    ];
    let mut paths = Vec::new();
    for (name, data) in &files {
        let path = input.join(name);
        write(&path, data);
        paths.push(path);
    }
    // A folder: nested subfolders, an empty one, names whose byte order
    // differs from other orders, a multi-chunk file, a hidden file that
    // neither importer takes.
    let folder = input.join("folder");
    write(&folder.join("a.txt"), b"hello\n");
    write(&folder.join("B.txt"), b"upper\n");
    write(&folder.join("a b"), b"space\n");
    write(&folder.join("\u{e4}rger.txt"), "\u{e4}".as_bytes());
    write(&folder.join(".hidden"), b"not imported");
    write(
        &folder.join("sub/inner.bin"),
        &pseudo_random(2 * CHUNK + 77, 5),
    );
    write(&folder.join("sub/deeper/leaf.txt"), b"leaf");
    write(&folder.join("sub/deeper/even deeper/x"), b"");
    std::fs::create_dir_all(folder.join("sub/empty-dir")).unwrap();
    paths.push(folder.clone());
    std::fs::create_dir_all(input.join("empty-folder")).unwrap();
    paths.push(input.join("empty-folder"));

    let reference = reference_cids(&[], &paths);

    let (store, _) = BlockStore::open(&dir.path().join("store"), 1 << 30).unwrap();
    let mut mismatches = Vec::new();
    for (path, expected) in paths.iter().zip(&reference) {
        let ours = import_path(&store, path, &ImportOptions::default()).unwrap();
        if ours.to_string() != *expected {
            mismatches.push(format!(
                "{}: ours {ours}, reference {expected}",
                path.display()
            ));
        }
        assert_same_tree(&store, &ours, path);
    }
    assert!(
        mismatches.is_empty(),
        "CIDs differ:\n{}",
        mismatches.join("\n")
    );

    // The well-known CIDs, so the reference itself is checked too.
    assert_eq!(
        reference[0],
        "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
    );
    assert_eq!(
        reference.last().unwrap(),
        "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354"
    );
}

#[test]
fn deep_trees_match_the_reference_importer() {
    // A small chunk size and fan-out make trees four levels deep out of
    // little data, to check the layout where kubo's defaults would need
    // terabytes.
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for (i, len) in [1000usize, 3000, 3001, 9000, 27000, 27001, 50_123]
        .iter()
        .enumerate()
    {
        let path = dir.path().join(format!("file-{len}"));
        write(&path, &pseudo_random(*len, 100 + i as u64));
        paths.push(path);
    }
    let reference = reference_cids(&["--chunk-bytes", "1000", "--max-links", "3"], &paths);
    let (store, _) = BlockStore::open(&dir.path().join("store"), 1 << 30).unwrap();
    let opts = ImportOptions {
        layout: Layout {
            chunk_bytes: 1000,
            max_links: 3,
        },
        ..ImportOptions::default()
    };
    for (path, expected) in paths.iter().zip(&reference) {
        let ours = import_path(&store, path, &opts).unwrap();
        assert_eq!(ours.to_string(), *expected, "{}", path.display());
        let data = std::fs::read(path).unwrap();
        // Reads from every offset class: chunk edges, inside, the end.
        let offsets = [
            0,
            1,
            999,
            1000,
            1001,
            2999,
            3000,
            data.len() - 1,
            data.len(),
        ];
        for offset in offsets.into_iter().filter(|&o| o <= data.len()) {
            let mut reader = Reader::from_offset(&store, &ours, offset as u64).unwrap();
            let mut out = Vec::new();
            reader.read_to_end(&mut out).unwrap();
            assert!(out == data[offset..], "{} from {offset}", path.display());
        }
    }
}

#[test]
fn car_export_import_round_trip_and_refuse_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("site");
    write(&folder.join("index.html"), b"<h1>hi</h1>");
    write(
        &folder.join("img/big.bin"),
        &pseudo_random(3 * CHUNK + 10, 7),
    );
    write(&folder.join("img/zeros"), &vec![0u8; 2 * CHUNK]);
    let (a, _) = BlockStore::open(&dir.path().join("a"), 1 << 30).unwrap();
    let root = import_path(&a, &folder, &ImportOptions::default()).unwrap();

    let mut car_bytes = Vec::new();
    let summary = car::export(&a, &root, &mut car_bytes).unwrap();
    assert_eq!(summary.bytes, car_bytes.len() as u64);
    // root dir, img dir, big.bin node + 4 leaves, zeros node + 1 leaf
    // (two identical chunks, sent once), index.html.
    assert_eq!(summary.blocks, 10);
    let mut reader = car::CarReader::new(&car_bytes[..]).unwrap();
    assert_eq!(reader.roots(), &[root]);
    let first = reader.next_block().unwrap().unwrap();
    assert_eq!(first.cid(), root, "depth-first: the root comes first");

    let (b, _) = BlockStore::open(&dir.path().join("b"), 1 << 30).unwrap();
    let roots = car::import(&b, &car_bytes[..], &CarImportOptions { pin: true }).unwrap();
    assert_eq!(roots, vec![root]);
    assert_eq!(b.pins(), vec![root]);
    assert_same_tree(&b, &root, &folder);

    // One flipped bit in the last block's data: refused, naming the block.
    let mut bad = car_bytes.clone();
    let last = bad.len() - 3;
    bad[last] ^= 0x10;
    let (c, _) = BlockStore::open(&dir.path().join("c"), 1 << 30).unwrap();
    assert!(matches!(
        car::import(&c, &bad[..], &CarImportOptions::default()),
        Err(CarError::BadBlock { .. })
    ));
    // A CAR cut short.
    assert!(matches!(
        car::import(
            &c,
            &car_bytes[..car_bytes.len() - 7],
            &CarImportOptions::default()
        ),
        Err(CarError::Truncated { .. })
    ));
    // An incomplete DAG cannot be pinned, and export names what is missing.
    let (d, _) = BlockStore::open(&dir.path().join("d"), 1 << 30).unwrap();
    let mut partial = Vec::new();
    let mut reader = car::CarReader::new(&car_bytes[..]).unwrap();
    partial.extend(car::encode_header(&[root]));
    for _ in 0..3 {
        let block = reader.next_block().unwrap().unwrap();
        let cid = block.cid().to_bytes();
        gridedge::content::cid::put_varint(&mut partial, (cid.len() + block.data().len()) as u64);
        partial.extend(cid);
        partial.extend(block.data());
    }
    assert!(matches!(
        car::import(&d, &partial[..], &CarImportOptions { pin: true }),
        Err(CarError::Store(StoreError::Incomplete { .. }))
    ));
    assert!(matches!(
        car::export(&d, &root, std::io::sink()),
        Err(CarError::Store(StoreError::NotFound { .. }))
    ));
}

#[test]
fn a_corrupt_block_on_disk_is_an_error_not_data() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    let data = pseudo_random(3 * CHUNK, 9);
    write(&file, &data);
    let store_dir = dir.path().join("store");
    let root = {
        let (store, _) = BlockStore::open(&store_dir, 1 << 30).unwrap();
        import_path(&store, &file, &ImportOptions::default()).unwrap()
    };
    // Flip a byte in the second leaf's file.
    let leaf = Cid::hash_of(gridedge::content::cid::Codec::Raw, &data[CHUNK..2 * CHUNK]);
    let path = store_dir
        .join("blocks")
        .join(format!("{:02x}", leaf.digest()[0]))
        .join(leaf.to_string());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();

    let (store, _) = BlockStore::open(&store_dir, 1 << 30).unwrap();
    let mut reader = Reader::new(&store, &root).unwrap();
    let mut out = Vec::new();
    let err = reader.read_to_end(&mut out).unwrap_err();
    assert!(matches!(
        gridedge::content::read::unwrap_io(err),
        ReadError::Store(StoreError::Corrupt { .. })
    ));
    assert!(
        out.len() <= CHUNK,
        "nothing after the bad block was returned"
    );
    assert!(!path.exists());
    // Importing the file again repairs the store.
    import_path(&store, &file, &ImportOptions::default()).unwrap();
    assert!(read_to_vec(&store, &root).unwrap() == data);
}

#[test]
fn private_objects_are_noise_without_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = BlockStore::open(&dir.path().join("store"), 1 << 30).unwrap();
    let needle = b"the launch code is 0000 (attack at dawn)";
    let mut plaintext = Vec::new();
    while plaintext.len() < 3 * CHUNK {
        plaintext.extend_from_slice(needle);
        plaintext.push(b'\n');
    }
    let (cid, key) = import_private(&store, &plaintext[..], &ImportOptions::default()).unwrap();

    let contains = |hay: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    let blocks_with_needle = || {
        let mut hits = 0;
        for shard in std::fs::read_dir(dir.path().join("store/blocks")).unwrap() {
            for file in std::fs::read_dir(shard.unwrap().path()).unwrap() {
                if contains(&std::fs::read(file.unwrap().path()).unwrap()) {
                    hits += 1;
                }
            }
        }
        hits
    };
    assert!(store.stats().blocks >= 4);
    assert_eq!(blocks_with_needle(), 0, "a stored block holds plaintext");
    // The ciphertext as the store serves it is noise too.
    assert!(!contains(&read_to_vec(&store, &cid).unwrap()));

    let mut out = Vec::new();
    open_private(&store, &cid, &key)
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    assert!(out == plaintext);
    let wrong = PrivateKey::generate().unwrap();
    assert!(
        open_private(&store, &cid, &wrong)
            .unwrap()
            .read_to_end(&mut Vec::new())
            .is_err()
    );
    // The control: the same bytes imported in the clear are found, so the
    // scan above would have seen them.
    gridedge::content::import_reader(&store, &plaintext[..], &ImportOptions::default()).unwrap();
    assert!(blocks_with_needle() > 0);
}

/// Set in the child process of the kill -9 test: the store directory it
/// writes to.
const CHILD_ENV: &str = "GRIDEDGE_CONTENT_KILL_CHILD_DIR";

#[test]
fn kill_9_loses_no_acknowledged_block() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        // The child: write blocks forever, printing each CID once `put`
        // has returned (acknowledged); the parent kills it mid-stream.
        let (store, _) = BlockStore::open(Path::new(&dir), 1 << 30).unwrap();
        let seed: u64 = std::env::var("GRIDEDGE_CONTENT_KILL_SEED")
            .unwrap()
            .parse()
            .unwrap();
        for i in 0u64.. {
            let len = 1 + (i * 7919) as usize % CHUNK;
            let block = gridedge::content::Block::new(
                gridedge::content::cid::Codec::Raw,
                pseudo_random(len, seed * 1_000_003 + i),
            );
            store.put(&block).unwrap();
            println!("ACK {}", block.cid());
        }
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let mut acked: Vec<Cid> = Vec::new();
    for (round, kill_after) in [5usize, 17, 40].into_iter().enumerate() {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "kill_9_loses_no_acknowledged_block",
                "--exact",
                "--nocapture",
            ])
            .env(CHILD_ENV, &store_dir)
            .env("GRIDEDGE_CONTENT_KILL_SEED", round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut this_round = 0;
        while this_round < kill_after {
            let line = lines.next().expect("child stopped early").unwrap();
            if let Some(cid) = line.strip_prefix("ACK ") {
                acked.push(cid.parse().unwrap());
                this_round += 1;
            }
        }
        // SIGKILL while the child is in the middle of further writes.
        child.kill().unwrap();
        // Acknowledgements already in the pipe count too.
        for line in lines.map_while(Result::ok) {
            if let Some(cid) = line.strip_prefix("ACK ") {
                acked.push(cid.parse().unwrap());
            }
        }
        child.wait().unwrap();

        let (store, report) = BlockStore::open(&store_dir, 1 << 30).unwrap();
        for cid in &acked {
            let block = store
                .get(cid)
                .unwrap_or_else(|e| panic!("round {round}: acknowledged {cid} lost: {e}"));
            assert_eq!(block.cid(), *cid);
        }
        assert!(report.blocks >= acked.len());
        assert_eq!(
            std::fs::read_dir(store_dir.join("tmp")).unwrap().count(),
            0,
            "temp files are cleared at open"
        );
    }
}
