//! The HTTP edge end to end: the real binary's gateway on pingora, `put`
//! through the admin API, `get` from peers that serve good, bad or no data,
//! curl and the library's own verifying fetcher as clients.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{EdgeBuilder, gridedge, ok, pseudo_random, put};
use gridedge::content::car::CarReader;
use gridedge::content::{BlockStore, Cid};
use gridedge::edge::Fetcher;
use gridedge::edge::fetch::{Fault, FetchError, PeerUrl};

/// A 3-leaf file, a nested folder and a site with an index.
fn sample(dir: &Path) -> (PathBuf, Vec<u8>, PathBuf, PathBuf) {
    let file = dir.join("big.bin");
    let data = pseudo_random(700 * 1024, 7);
    std::fs::write(&file, &data).unwrap();
    let folder = dir.join("folder");
    std::fs::create_dir_all(folder.join("sub")).unwrap();
    std::fs::write(folder.join("a.txt"), b"file a\n").unwrap();
    std::fs::write(folder.join("sub/hello.txt"), b"hello from inside\n").unwrap();
    std::fs::write(folder.join("sub/data.bin"), pseudo_random(300 * 1024, 9)).unwrap();
    let site = dir.join("site");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(site.join("index.html"), b"<h1>home</h1>\n").unwrap();
    std::fs::write(site.join("style.css"), b"h1{}\n").unwrap();
    (file, data, folder, site)
}

/// `curl -s -i ARGS… URL`: status, lower-cased headers, body.
fn curl(args: &[&str], url: &str) -> (u16, String, Vec<u8>) {
    let out = Command::new("curl")
        .args(["-s", "-i", "--max-time", "10"])
        .args(args)
        .arg(url)
        .output()
        .expect("curl is installed (scripts/test.sh installs it)");
    assert!(out.status.success(), "curl {url} failed: {out:?}");
    let raw = out.stdout;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP response");
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head, raw[split + 4..].to_vec())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .map(str::trim)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The files of a tree, relative path -> bytes.
fn tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(root).unwrap().display().to_string();
                out.push((rel, std::fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn the_gateway_serves_blocks_cars_files_folders_and_ranges() {
    let edge = EdgeBuilder::new().start();
    let dir = tempfile::tempdir().unwrap();
    let (file, data, folder, site) = sample(dir.path());
    let file_cid = put(&edge, &[file.to_str().unwrap(), "--pin"])[0].clone();
    let folder_cid = put(&edge, &[folder.to_str().unwrap()])[0].clone();
    let site_cid = put(&edge, &[site.to_str().unwrap()])[0].clone();
    let base = edge.http_url();

    // The file, whole: the bytes, the CID as ETag, cacheable forever.
    let (status, head, body) = curl(&[], &format!("{base}/ipfs/{file_cid}"));
    assert_eq!(status, 200, "{head}");
    assert!(body == data, "the file's bytes differ");
    assert_eq!(
        header(&head, "etag"),
        Some(format!("\"{file_cid}\"").as_str())
    );
    assert_eq!(
        header(&head, "cache-control"),
        Some("public, max-age=29030400, immutable")
    );
    assert_eq!(header(&head, "content-length"), Some("716800"));
    // A range across a leaf boundary (256 KiB).
    let (status, head, body) = curl(
        &["-H", "Range: bytes=262000-262999"],
        &format!("{base}/ipfs/{file_cid}"),
    );
    assert_eq!(status, 206, "{head}");
    assert_eq!(body, &data[262000..263000]);
    assert_eq!(
        header(&head, "content-range"),
        Some("bytes 262000-262999/716800")
    );
    let (status, head, body) = curl(
        &["-H", "Range: bytes=-10"],
        &format!("{base}/ipfs/{file_cid}"),
    );
    assert_eq!(
        (status, body.as_slice()),
        (206, &data[data.len() - 10..]),
        "{head}"
    );
    let (status, head, _) = curl(
        &["-H", "Range: bytes=716800-"],
        &format!("{base}/ipfs/{file_cid}"),
    );
    assert_eq!(status, 416, "{head}");
    assert_eq!(header(&head, "content-range"), Some("bytes */716800"));
    // If-None-Match with the ETag: 304.
    let (status, _, body) = curl(
        &["-H", &format!("If-None-Match: \"{file_cid}\"")],
        &format!("{base}/ipfs/{file_cid}"),
    );
    assert_eq!((status, body.len()), (304, 0));
    // HEAD: the headers, no body.
    let (status, head, body) = curl(&["-I"], &format!("{base}/ipfs/{file_cid}"));
    assert_eq!((status, body.len()), (200, 0), "{head}");
    assert_eq!(header(&head, "content-length"), Some("716800"));

    // A path inside a folder; a type from the extension.
    let (status, head, body) = curl(&[], &format!("{base}/ipfs/{folder_cid}/sub/hello.txt"));
    assert_eq!(
        (status, body.as_slice()),
        (200, &b"hello from inside\n"[..])
    );
    assert_eq!(
        header(&head, "content-type"),
        Some("text/plain; charset=utf-8")
    );
    // A folder without its slash is redirected; with it, listed.
    let (status, head, _) = curl(&[], &format!("{base}/ipfs/{folder_cid}"));
    assert_eq!(status, 301);
    assert_eq!(
        header(&head, "location"),
        Some(format!("/ipfs/{folder_cid}/").to_ascii_lowercase().as_str())
    );
    let (status, _, body) = curl(&[], &format!("{base}/ipfs/{folder_cid}/"));
    let listing = String::from_utf8(body).unwrap();
    assert_eq!(status, 200);
    assert!(
        listing.contains("href=\"a.txt\"") && listing.contains("href=\"sub\""),
        "{listing}"
    );
    // A site's folder serves its index.html.
    let (status, head, body) = curl(&[], &format!("{base}/ipfs/{site_cid}/"));
    assert_eq!((status, body.as_slice()), (200, &b"<h1>home</h1>\n"[..]));
    assert_eq!(
        header(&head, "content-type"),
        Some("text/html; charset=utf-8")
    );

    // Raw and CAR through the verifying fetcher (a real HTTP client).
    let rt = runtime();
    let fetcher = Fetcher::new(Duration::from_secs(10), u64::MAX);
    let peer = PeerUrl::parse(&base).unwrap();
    let root: Cid = file_cid.parse().unwrap();
    let block = rt.block_on(fetcher.fetch_block(&peer, &root)).unwrap();
    assert_eq!(block.cid(), root);
    let store_dir = tempfile::tempdir().unwrap();
    let (store, _) = BlockStore::open(store_dir.path(), 64 << 20).unwrap();
    let store = Arc::new(store);
    let folder_root: Cid = folder_cid.parse().unwrap();
    let summary = rt
        .block_on(fetcher.fetch_dag(&peer, &folder_root, store.clone(), false, None))
        .unwrap();
    assert!(summary.blocks >= 6, "{summary:?}");
    let hello =
        gridedge::content::resolve_path(&store, &format!("{folder_cid}/sub/hello.txt")).unwrap();
    assert_eq!(
        gridedge::content::read::read_to_vec(&store, &hello).unwrap(),
        b"hello from inside\n"
    );
    // The CAR with curl: Accept header, a path, dag-scope=block.
    let (status, head, body) = curl(
        &["-H", "Accept: application/vnd.ipld.car"],
        &format!("{base}/ipfs/{folder_cid}/sub/hello.txt?dag-scope=block"),
    );
    assert_eq!(status, 200, "{head}");
    assert!(
        header(&head, "content-type")
            .unwrap()
            .starts_with("application/vnd.ipld.car")
    );
    let mut car = CarReader::new(&body[..]).unwrap();
    assert_eq!(car.roots(), [folder_root]);
    let mut blocks = Vec::new();
    while let Some(b) = car.next_block().unwrap() {
        blocks.push(b.cid());
    }
    // The folder, sub, and the file: what it takes to verify the path.
    assert_eq!(blocks.len(), 3, "{blocks:?}");
    assert_eq!(blocks[0], folder_root);
    assert_eq!(blocks[2], hello);
    let (status, head, body) = curl(&[], &format!("{base}/ipfs/{file_cid}?format=raw"));
    assert_eq!(status, 200);
    assert_eq!(
        header(&head, "content-type"),
        Some("application/vnd.ipld.raw")
    );
    assert!(root.verifies(&body));

    // Errors: not here, not a CID, not a method, not a route, no entry.
    let absent = Cid::hash_of(gridedge::content::cid::Codec::Raw, b"nobody stored this");
    let (status, _, body) = curl(&[], &format!("{base}/ipfs/{absent}"));
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&body).contains("not in this edge's store"));
    let (status, _, body) = curl(&[], &format!("{base}/ipfs/bafynotacid"));
    assert_eq!(status, 400);
    assert!(
        String::from_utf8_lossy(&body).contains("not a valid CID"),
        "{body:?}"
    );
    let (status, head, _) = curl(&["-X", "POST"], &format!("{base}/ipfs/{file_cid}"));
    assert_eq!(status, 405);
    // curl's output was lower-cased above.
    assert_eq!(header(&head, "allow"), Some("get, head"));
    let (status, _, _) = curl(&[], &format!("{base}/ipfs/{folder_cid}/nothing.txt"));
    assert_eq!(status, 404);
    let (status, _, _) = curl(&[], &format!("{base}/"));
    assert_eq!(status, 404);
    let (status, _, _) = curl(&[], &format!("{base}/ipfs/{file_cid}?format=tar"));
    assert_eq!(status, 400);
    let err = rt
        .block_on(fetcher.fetch_block(&peer, &absent))
        .unwrap_err();
    assert!(matches!(err, FetchError::NotFound { .. }), "{err}");
    assert_eq!(err.fault(), Fault::Unavailable);

    // Requests and bytes are counted by route and status.
    assert!(edge.metric("gridedge_edge_requests_total{route=\"file\",status=\"200\"}") >= 3.0);
    assert!(edge.metric("gridedge_edge_requests_total{route=\"other\",status=\"400\"}") >= 1.0);
    assert!(edge.metric("gridedge_edge_sent_bytes_total{route=\"file\"}") >= 716800.0);
    assert!(edge.metric("gridedge_content_puts_total{result=\"stored\"}") >= 3.0);
}

#[test]
fn get_writes_what_put_stored() {
    let edge = EdgeBuilder::new().start();
    let dir = tempfile::tempdir().unwrap();
    let (file, data, folder, _) = sample(dir.path());
    let file_cid = put(&edge, &[file.to_str().unwrap()])[0].clone();
    let folder_cid = put(&edge, &[folder.to_str().unwrap(), "--pin"])[0].clone();

    let out = dir.path().join("out.bin");
    ok(gridedge(&[
        "get",
        &file_cid,
        "-o",
        out.to_str().unwrap(),
        "--from",
        &edge.http_url(),
    ]));
    assert!(std::fs::read(&out).unwrap() == data);
    // Without --from: the gateway of the config's edge.
    let out_dir = dir.path().join("out-folder");
    ok(gridedge(&[
        "--config",
        edge.config_path().to_str().unwrap(),
        "get",
        &folder_cid,
        "-o",
        out_dir.to_str().unwrap(),
    ]));
    assert_eq!(tree(&out_dir), tree(&folder));
    // An existing output is not overwritten.
    let again = gridedge(&[
        "get",
        &file_cid,
        "-o",
        out.to_str().unwrap(),
        "--from",
        &edge.http_url(),
    ]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));
    // To stdout: a file, not a folder.
    let folder_out = gridedge(&["get", &folder_cid, "-o", "-", "--from", &edge.http_url()]);
    assert!(!folder_out.status.success());
    assert!(
        String::from_utf8_lossy(&folder_out.stderr).contains("not a file"),
        "{}",
        String::from_utf8_lossy(&folder_out.stderr)
    );
    let piped = gridedge(&["get", &file_cid, "-o", "-", "--from", &edge.http_url()]);
    assert!(piped.status.success());
    assert!(piped.stdout == data);
}

/// A one-connection-at-a-time HTTP server that answers every request with
/// `body` as a CAR; stops when dropped.
struct FakePeer {
    addr: SocketAddr,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakePeer {
    fn start(body: Vec<u8>) -> FakePeer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !flag.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                let Ok((mut s, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.ipld.car; version=1\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(&body);
            }
        });
        FakePeer {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for FakePeer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn a_peer_that_sends_a_wrong_block_is_refused_and_the_next_serves() {
    let edge = EdgeBuilder::new().start();
    let dir = tempfile::tempdir().unwrap();
    let (file, data, _, _) = sample(dir.path());
    let cid = put(&edge, &[file.to_str().unwrap()])[0].clone();
    // The true CAR from the edge, with one byte of the last block flipped.
    let (status, _, mut car) = curl(&[], &format!("{}/ipfs/{cid}?format=car", edge.http_url()));
    assert_eq!(status, 200);
    let last = car.len() - 1;
    car[last] ^= 0x01;
    let liar = FakePeer::start(car);
    // A port nobody listens on.
    let dead = format!("http://127.0.0.1:{}", common::free_port("127.0.0.1"));

    let out = dir.path().join("out.bin");
    let got = gridedge(&[
        "get",
        &cid,
        "-o",
        out.to_str().unwrap(),
        "--from",
        &dead,
        "--from",
        &liar.url(),
        "--from",
        &edge.http_url(),
    ]);
    let stderr = String::from_utf8_lossy(&got.stderr);
    assert!(got.status.success(), "{stderr}");
    assert!(std::fs::read(&out).unwrap() == data);
    assert!(
        stderr.contains("cannot reach") && stderr.contains("the peer is unavailable"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&liar.url())
            && stderr.contains("sent a bad CAR")
            && stderr.contains("the peer sent bad data"),
        "{stderr}"
    );

    // The liar alone: refused, nothing written.
    let out2 = dir.path().join("out2.bin");
    let got = gridedge(&[
        "get",
        &cid,
        "-o",
        out2.to_str().unwrap(),
        "--from",
        &liar.url(),
    ]);
    let stderr = String::from_utf8_lossy(&got.stderr);
    assert!(!got.status.success());
    assert!(stderr.contains("does not match"), "{stderr}");
    assert!(!out2.exists());
    assert!(!dir.path().join("out2.bin.gridedge-partial").exists());
}

#[test]
fn an_encrypted_put_is_noise_without_its_key() {
    let edge = EdgeBuilder::new().start();
    let dir = tempfile::tempdir().unwrap();
    let secret = "the launch code is 0000, do not tell anyone. ".repeat(20_000);
    let file = dir.path().join("secret.txt");
    std::fs::write(&file, &secret).unwrap();
    let lines = put(&edge, &[file.to_str().unwrap(), "--encrypt", "--pin"]);
    let cid = lines[0].clone();
    let key = lines[1]
        .strip_prefix("key: ")
        .expect("a key line")
        .to_owned();
    assert_eq!(key.len(), 64);

    // Neither the gateway nor the store's files hold the plaintext.
    let (_, _, served) = curl(&[], &format!("{}/ipfs/{cid}", edge.http_url()));
    let needle = b"launch code";
    assert!(!served.windows(needle.len()).any(|w| w == needle));
    let mut stack = vec![edge.data_dir().join("content")];
    let mut files = 0;
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files += 1;
                let bytes = std::fs::read(&p).unwrap();
                assert!(!bytes.windows(needle.len()).any(|w| w == needle), "{p:?}");
            }
        }
    }
    assert!(files >= 4, "{files} files in the store");

    let out = dir.path().join("plain.txt");
    ok(gridedge(&[
        "get",
        &cid,
        "-o",
        out.to_str().unwrap(),
        "--from",
        &edge.http_url(),
        "--key",
        &key,
    ]));
    assert!(std::fs::read_to_string(&out).unwrap() == secret);
    // A wrong key: refused, nothing left behind.
    let wrong = "11".repeat(32);
    let out2 = dir.path().join("wrong.txt");
    let got = gridedge(&[
        "get",
        &cid,
        "-o",
        out2.to_str().unwrap(),
        "--from",
        &edge.http_url(),
        "--key",
        &wrong,
    ]);
    assert!(!got.status.success());
    assert!(String::from_utf8_lossy(&got.stderr).contains("does not authenticate"));
    assert!(!out2.exists());
}

#[test]
fn two_edges_and_a_clean_shutdown() {
    let a = EdgeBuilder::new().start();
    let b = EdgeBuilder::new().ip("127.0.0.2").start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("note.txt");
    std::fs::write(&file, b"from edge A to edge B\n").unwrap();
    let cid = put(&a, &[file.to_str().unwrap()])[0].clone();
    // B does not have it; a get that asks B first moves on to A.
    let (status, _, _) = curl(&[], &format!("{}/ipfs/{cid}", b.http_url()));
    assert_eq!(status, 404);
    let out = dir.path().join("note-copy.txt");
    let got = gridedge(&[
        "get",
        &cid,
        "-o",
        out.to_str().unwrap(),
        "--from",
        &b.http_url(),
        "--from",
        &a.http_url(),
    ]);
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert!(String::from_utf8_lossy(&got.stderr).contains("does not have"));
    // Handing it to B with put makes B serve the same CID.
    let again = put(&b, &[out.to_str().unwrap()])[0].clone();
    assert_eq!(again, cid);
    let (status, _, body) = curl(&[], &format!("{}/ipfs/{cid}", b.http_url()));
    assert_eq!(
        (status, body.as_slice()),
        (200, &b"from edge A to edge B\n"[..])
    );

    // SIGTERM stops the gateway with the rest, promptly and cleanly.
    let http = a.http;
    let started = Instant::now();
    let (status, log) = a.terminate();
    assert!(status.success(), "{log}");
    assert!(started.elapsed() < Duration::from_secs(8), "{log}");
    assert!(log.contains("stopped"), "{log}");
    assert!(std::net::TcpStream::connect_timeout(&http, Duration::from_millis(500)).is_err());
}

#[test]
fn requests_past_the_bound_get_503_until_one_finishes() {
    let edge = EdgeBuilder::new()
        .edge("max_concurrent_requests = 1")
        .start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("large.bin");
    // Larger than loopback socket buffers, so a client that reads nothing
    // keeps its request (and the one permit) busy.
    std::fs::write(&file, pseudo_random(16 << 20, 3)).unwrap();
    let cid = put(&edge, &[file.to_str().unwrap()])[0].clone();
    let mut stalled = std::net::TcpStream::connect(edge.http).unwrap();
    write!(stalled, "GET /ipfs/{cid} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, head, _) = curl(&[], &format!("{}/ipfs/{cid}?format=raw", edge.http_url()));
        if status == 503 {
            assert_eq!(header(&head, "retry-after"), Some("1"));
            break;
        }
        assert!(Instant::now() < deadline, "never 503: {status}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(edge.metric("gridedge_edge_inflight"), 1.0);
    // The stalled client goes; its permit comes back.
    drop(stalled);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, _) = curl(&[], &format!("{}/ipfs/{cid}?format=raw", edge.http_url()));
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {status} after the client left"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
