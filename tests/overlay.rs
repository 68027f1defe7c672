//! Edges that meet for real: several `gridedge run` processes on
//! 127.0.x.y find each other from one bootstrap address over libp2p, agree
//! on membership, and put and get objects across the overlay: replicas
//! keep an object when the edges holding it are killed with SIGKILL, a
//! holder that serves corrupt blocks is rated down and avoided, and a
//! private object's blocks on other edges hold no plaintext.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Edge, EdgeBuilder, gridedge, ok, pseudo_random, put};
use gridedge::net::Status;

/// `gridedge get CID -o OUT --from EDGE's gateway`, which fetches from the
/// overlay on a miss.
fn get(edge: &Edge, cid: &str, out: &Path) -> Output {
    let url = edge.http_url();
    gridedge(&["get", cid, "-o", out.to_str().unwrap(), "--from", &url])
}

fn status(edge: &Edge) -> Option<Status> {
    let out = gridedge(&["status", "--json", "--admin", &edge.admin_url()]);
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    start.elapsed()
}

/// Whether `edge` has the whole object itself: the gateway is asked with
/// `Cache-Control: only-if-cached`, as edges ask each other, so it does
/// not fetch on a miss.
fn holds(addr: SocketAddr, cid: &str) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET /ipfs/{cid}?format=car HTTP/1.1\r\nHost: {addr}\r\n\
         Cache-Control: only-if-cached\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    let _ = s.read_to_end(&mut response);
    // A CAR streamed whole ends with its last block; a cut one is not a
    // 200 that ended cleanly, but a store missing blocks answers 404 first.
    response.starts_with(b"HTTP/1.1 200")
}

/// Starts `n` edges on `127.0.NET.1..=n`, every one after the first
/// bootstrapping from the first's overlay address only.
fn cluster(net: u8, n: u8, overlay: &str) -> Vec<Edge> {
    cluster_with(net, n, overlay, "")
}

/// `cluster`, with extra `[edge]` keys for every edge.
fn cluster_with(net: u8, n: u8, overlay: &str, edge: &str) -> Vec<Edge> {
    let first = EdgeBuilder::new()
        .ip(&format!("127.0.{net}.1"))
        .overlay(overlay)
        .edge(edge)
        .start();
    let bootstrap = format!("bootstrap = [\"{}\"]", first.overlay);
    let mut edges = vec![first];
    for i in 2..=n {
        edges.push(
            EdgeBuilder::new()
                .ip(&format!("127.0.{net}.{i}"))
                .overlay(&bootstrap)
                .overlay(overlay)
                .edge(edge)
                .start(),
        );
    }
    edges
}

/// Waits until every edge sees every other alive with its gateway known;
/// returns how long that took.
/// On a timeout it says what each edge saw: a flake under load is then
/// told from a bug.
fn converge(edges: &[Edge]) -> Duration {
    let want = edges.len() - 1;
    let start = Instant::now();
    loop {
        let views: Vec<Option<Status>> = edges.iter().map(status).collect();
        let done = views.iter().all(|v| {
            v.as_ref().is_some_and(|s| {
                s.members
                    .iter()
                    .filter(|m| m.state == "alive" && m.http.is_some())
                    .count()
                    == want
            })
        });
        if done {
            return start.elapsed();
        }
        if start.elapsed() > Duration::from_secs(60) {
            let seen: Vec<String> = views
                .iter()
                .map(|v| match v {
                    None => "no status".to_string(),
                    Some(s) => s
                        .members
                        .iter()
                        .map(|m| format!("{}:{}:{}", m.node_id, m.state, m.http.is_some()))
                        .collect::<Vec<_>>()
                        .join(" "),
                })
                .collect();
            panic!(
                "timed out after 60s waiting for membership to converge; each edge's view \
                 (id:state:gateway known): {seen:#?}"
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn tree_equal(a: &Path, b: &Path) {
    let mut names_a: Vec<_> = std::fs::read_dir(a)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let mut names_b: Vec<_> = std::fs::read_dir(b)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names_a.sort();
    names_b.sort();
    assert_eq!(names_a, names_b, "{} vs {}", a.display(), b.display());
    for name in names_a {
        let (x, y) = (a.join(&name), b.join(&name));
        if x.is_dir() {
            tree_equal(&x, &y);
        } else {
            assert_eq!(
                std::fs::read(&x).unwrap(),
                std::fs::read(&y).unwrap(),
                "{}",
                x.display()
            );
        }
    }
}

/// Every file under `dir`, read whole.
fn files_under(dir: &Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries {
        let path = e.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else if let Ok(data) = std::fs::read(&path) {
            out.push(data);
        }
    }
    out
}

#[test]
fn seven_edges_meet_share_objects_and_survive_the_loss_of_holders() {
    let mut edges = cluster(21, 7, "");
    let took = converge(&edges);
    eprintln!("7 edges converged on membership in {took:?}");
    for e in &edges {
        let s = status(e).unwrap();
        assert_eq!(s.counters.decode_errors, 0, "{}", e.log());
        assert!(
            s.pgrid.exchanges > 0,
            "no P-Grid exchange yet on {}",
            s.node_id
        );
    }

    // A file and a folder put on one edge come out identical everywhere.
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("data.bin");
    let data = pseudo_random(3 * 1024 * 1024 + 123, 1);
    std::fs::write(&file, &data).unwrap();
    let folder = work.path().join("site");
    std::fs::create_dir_all(folder.join("img/deep")).unwrap();
    std::fs::write(folder.join("index.html"), b"<h1>gridedge</h1>\n").unwrap();
    std::fs::write(folder.join("img/a.bin"), pseudo_random(300 * 1024, 2)).unwrap();
    std::fs::write(folder.join("img/deep/b.txt"), b"deep\n").unwrap();
    let file_cid = put(&edges[0], &[file.to_str().unwrap(), "--pin"])[0].clone();
    let dir_cid = put(&edges[0], &[folder.to_str().unwrap(), "--pin"])[0].clone();
    for (i, e) in edges.iter().enumerate().skip(1) {
        let out = work.path().join(format!("file-{i}"));
        ok(get(e, &file_cid, &out));
        assert!(
            std::fs::read(&out).unwrap() == data,
            "edge {i}: file differs"
        );
        let out = work.path().join(format!("dir-{i}"));
        ok(get(e, &dir_cid, &out));
        tree_equal(&folder, &out);
        assert!(
            holds(e.http, &file_cid),
            "edge {i} did not keep what it fetched"
        );
    }

    // A new object: the origin and the replicas that keep it hold it.
    let kept = work.path().join("kept.bin");
    let kept_data = pseudo_random(600 * 1024, 3);
    std::fs::write(&kept, &kept_data).unwrap();
    let kept_cid = put(&edges[0], &[kept.to_str().unwrap(), "--pin"])[0].clone();
    let holders = || -> Vec<usize> {
        (0..edges.len())
            .filter(|&i| holds(edges[i].http, &kept_cid))
            .collect()
    };
    // Replication 3: three keepers chosen by rendezvous hashing over the
    // path's peers, the origin among the candidates; so the origin and at
    // least two others.
    wait_for(
        "the replicas to keep the object",
        Duration::from_secs(30),
        || {
            let h = holders();
            h.contains(&0) && h.len() >= 3
        },
    );
    let holding = holders();
    eprintln!("held by edges {holding:?}");
    // Kill -9 every holder but one keeper, the origin among them.
    let survivor = *holding.iter().find(|&&i| i != 0).unwrap();
    let killed: Vec<usize> = holding.iter().copied().filter(|&i| i != survivor).collect();
    for &i in &killed {
        edges[i].kill9();
    }
    let asker = (0..edges.len())
        .find(|i| !holding.contains(i))
        .expect("an edge that does not hold it");
    let out = work.path().join("kept-after-kill");
    ok(get(&edges[asker], &kept_cid, &out));
    assert!(std::fs::read(&out).unwrap() == kept_data);
    // Restarted, the killed edges still hold everything they had.
    for &i in &killed {
        edges[i].restart();
    }
    for &i in &killed {
        assert!(holds(edges[i].http, &kept_cid), "edge {i} lost the object");
        assert!(holds(edges[i].http, &file_cid), "edge {i} lost the file");
    }

    // A private object: its blocks on another edge are noise.
    let secret = work.path().join("secret.txt");
    let plaintext = b"the plaintext of a private object, which no edge may see".repeat(64);
    std::fs::write(&secret, &plaintext).unwrap();
    let lines = put(&edges[1], &["--encrypt", secret.to_str().unwrap()]);
    let (cid, key) = (&lines[0], lines[1].trim_start_matches("key: "));
    let reader = &edges[asker];
    let out = work.path().join("secret-noise");
    ok(get(reader, cid, &out));
    let noise = std::fs::read(&out).unwrap();
    assert!(!noise.windows(32).any(|w| plaintext.starts_with(w)));
    let needle = &plaintext[..32];
    for block in files_under(&reader.data_dir().join("content")) {
        assert!(
            !block.windows(needle.len()).any(|w| w == needle),
            "plaintext found in a block on the other edge"
        );
    }
    let url = reader.http_url();
    let out = work.path().join("secret-clear");
    ok(gridedge(&[
        "get",
        cid,
        "-o",
        out.to_str().unwrap(),
        "--from",
        &url,
        "--key",
        key,
    ]));
    assert_eq!(std::fs::read(&out).unwrap(), plaintext);
}

/// A CAR server that answers every request with the real CAR of the object
/// it was given, one byte of its last block flipped; counts requests.
fn corrupt_server(ip: &str, car: Vec<u8>, hits: Arc<AtomicUsize>) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut bad = car;
    let last = bad.len() - 1;
    bad[last] ^= 0x55;
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            hits.fetch_add(1, Ordering::SeqCst);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.ipld.car; version=1\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                bad.len()
            );
            let _ = stream.write_all(&bad);
        }
    });
    addr
}

fn fetch_car(edge: &Edge, cid: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(edge.http).unwrap();
    write!(
        s,
        "GET /ipfs/{cid}?format=car HTTP/1.1\r\nHost: x\r\nCache-Control: only-if-cached\r\n\
         Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    s.read_to_end(&mut response).unwrap();
    let at = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(response.starts_with(b"HTTP/1.1 200"));
    response[at..].to_vec()
}

/// A peer of the overlay, run by this test with the library, that
/// announces itself as a holder of every object and serves corrupt blocks:
/// the edge that fetches is not fooled, rates it down, and stops asking it.
#[test]
fn a_holder_that_serves_corrupt_blocks_is_rated_down_and_avoided() {
    // Replication 1 keeps the honest copies few, so the liar is often the
    // nearest holder named.
    let started = Instant::now();
    let edges = cluster(22, 3, "replication = 1\ntrust_epoch_secs = 20");
    converge(&edges);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let work = tempfile::tempdir().unwrap();
    // The liar's CAR server serves the first object's CAR, corrupted, for
    // every request; every object's fetch from it fails verification.
    let first = work.path().join("obj-0");
    std::fs::write(&first, pseudo_random(20_000, 100)).unwrap();
    let first_cid = put(&edges[0], &[first.to_str().unwrap()])[0].clone();
    let car = fetch_car(&edges[0], &first_cid);
    let server = corrupt_server("127.0.22.9", car, hits.clone());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let liar = outsider(
        &runtime,
        "127.0.22.9",
        &edges,
        format!("http://{server}"),
        None,
        &shutdown,
    );
    let liar_id = liar.overlay.node_id().to_string();
    let reader = &edges[2];
    // The liar is new: the first time an edge sees it named as a holder,
    // it asks it first, once (exploration), for a get or for a replica it
    // keeps, and rates it down on the corrupt blocks. Objects go in at
    // edge 0 and out at the reader until some edge has asked the liar;
    // every get still returns the right bytes.
    let next_object = |i: u64| {
        let path = work.path().join(format!("obj-{}", i + 1));
        let data = pseudo_random(20_000, 101 + i);
        std::fs::write(&path, &data).unwrap();
        let cid = put(&edges[0], &[path.to_str().unwrap()])[0].clone();
        let key = gridedge::net::content_key(&cid.parse().unwrap());
        runtime.block_on(liar.overlay.announce(key)).unwrap();
        let out = work.path().join(format!("got-{i}"));
        ok(get(reader, &cid, &out));
        assert!(std::fs::read(&out).unwrap() == data, "object {i} differs");
    };
    let mut objects = 0u64;
    while hits.load(Ordering::SeqCst) == 0 {
        assert!(
            objects < 200,
            "the liar was never asked in 200 objects ({:?} after the start); the reader's fetches:\n{}",
            started.elapsed(),
            reader
                .log()
                .lines()
                .filter(|l| l.contains("holder") || l.contains("standing"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        next_object(objects);
        objects += 1;
    }
    let caught_at = objects;
    eprintln!(
        "the liar was first asked by object {caught_at} ({:?} after the start)",
        started.elapsed()
    );
    // The catching edge's opinion reaches the liar's score managers, and
    // their verdict every edge: within a few reputation epochs of 20 s,
    // every edge holds the liar in bad standing, and no honest edge.
    let took = every_edge_sees(
        &edges,
        "every edge to hold the liar in bad standing",
        // Generous: a starved machine (the suite runs tests side by side
        // on 2 cores) can miss a round's slot and so a whole epoch.
        Duration::from_secs(180),
        |m| m.node_id == liar_id && m.standing == "bad",
    );
    eprintln!("every edge held the liar in bad standing {took:?} after it was caught");
    for e in &edges {
        let s = status(e).unwrap();
        for m in s.members.iter().filter(|m| m.node_id != liar_id) {
            assert_ne!(
                m.standing, "bad",
                "honest {} in bad standing at {}",
                m.node_id, s.node_id
            );
        }
    }
    // From then on no edge asks it: five more objects, each announced by
    // the liar, go in and out without a request reaching it.
    let asked = hits.load(Ordering::SeqCst);
    for i in objects..objects + 5 {
        next_object(i);
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        asked,
        "the liar was asked after every edge held it in bad standing"
    );
    shutdown.cancel();
    runtime.block_on(liar.task).unwrap();
}

/// Starts an overlay peer run by this test with the library, as an edge
/// whose gateway (`http`) and proxy (`proxy`) are the test's servers, with
/// replication 1 and 20 s reputation epochs, and waits until every edge
/// sees it.
fn outsider(
    runtime: &tokio::runtime::Runtime,
    ip: &str,
    edges: &[Edge],
    http: String,
    proxy: Option<String>,
    shutdown: &tokio_util::sync::CancellationToken,
) -> gridedge::net::Started {
    let started = runtime.block_on(async {
        let mut secret = [0u8; 32];
        secret[0] = 0x1f;
        let config = gridedge::net::NetConfig {
            listen: vec![format!("/ip4/{ip}/tcp/0").parse().unwrap()],
            bootstrap: vec![edges[0].overlay.parse().unwrap()],
            preset: gridedge::overlay::Preset::Lan,
            limits: gridedge::net::behaviour::Limits {
                max_connections: 64,
                max_connections_per_peer: 2,
                request_timeout: Duration::from_secs(10),
                max_streams: 64,
            },
            http_url: Some(http),
            proxy_url: proxy,
            replication: 1,
            keep_replicas: false,
            // The edges' trust_epoch_secs in the tests that use it.
            trust_epoch: Some(Duration::from_secs(20)),
        };
        gridedge::net::Overlay::start(config, secret, shutdown.clone())
            .await
            .unwrap()
    });
    let id = started.overlay.node_id().to_string();
    every_edge_sees(
        edges,
        "the edges to see the outsider",
        Duration::from_secs(60),
        |m| m.node_id == id && m.state == "alive" && m.http.is_some(),
    );
    started
}

/// Waits until every edge's status lists a member for which `member`
/// holds; how long that took.
fn every_edge_sees(
    edges: &[Edge],
    what: &str,
    limit: Duration,
    member: impl Fn(&gridedge::net::MemberView) -> bool,
) -> Duration {
    wait_for(what, limit, || {
        edges
            .iter()
            .all(|e| status(e).is_some_and(|s| s.members.iter().any(&member)))
    })
}

/// Web pages for the proxy tests: stable per path (an ETag of the path),
/// fresh for five minutes; `/slow...` pages take three seconds.
fn page(req: &common::origin::Seen, _n: usize) -> (u16, Vec<(String, String)>, Vec<u8>) {
    use common::origin::h;
    // Origin-form from edges; absolute-form at a proxy.
    let path = match req.path.strip_prefix("http://") {
        Some(rest) => &rest[rest.find('/').unwrap_or(rest.len())..],
        None => req.path.as_str(),
    };
    if path.starts_with("/slow") {
        std::thread::sleep(Duration::from_secs(3));
    }
    let headers = vec![
        h("Cache-Control", "max-age=300"),
        h("ETag", &format!("\"{}\"", path.trim_start_matches('/'))),
    ];
    (200, headers, format!("{path} from the origin").into_bytes())
}

/// `curl -x edge's proxy http://origin/path`: the body.
fn via(edge: &Edge, origin: SocketAddr, path: &str) -> String {
    let out = std::process::Command::new("curl")
        .args(["-s", "--max-time", "20", "-x"])
        .arg(format!("http://{}", edge.proxy))
        .arg(format!("http://{origin}{path}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `curl -x edge's proxy ARGS URL`: the status code.
fn status_via(edge: &Edge, url: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "20",
        ])
        .args(args)
        .arg("-x")
        .arg(format!("http://{}", edge.proxy))
        .arg(url)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const PEER_FETCHES: &str = "gridedge_proxy_peer_fetches_total";
const AUDITS_VERIFIED: &str = "gridedge_proxy_audits_total{result=\"verified\"}";

/// Audits this edge started, whatever they found.
fn audits(edge: &Edge) -> f64 {
    edge.metrics()
        .lines()
        .filter(|l| l.starts_with("gridedge_proxy_audits_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A web page one edge's proxy fetched from the origin is served to the
/// other edges from that edge's cache, through the overlay (the holder it
/// announced under the URL's key), not from the origin again, once each
/// has audited it; an edge that misses while another is fetching waits
/// for that fetch; a holder that has lost a page answers 504 to
/// only-if-cached and the asker goes on to the origin. The edges serve
/// only 127.0.0.1 as clients: each other they serve as members of the
/// overlay, and only from their caches.
#[test]
fn a_page_cached_at_one_edge_is_served_to_the_others_from_it() {
    use common::origin::Origin;
    let edges = cluster_with(23, 3, "", "proxy_allow = [\"127.0.0.1/32\"]");
    converge(&edges);
    let origin = Origin::start("127.0.23.9", page);
    let o = origin.addr;
    // An edge takes copies only from holders it has audited: the first
    // time it sees one named, it goes to the origin and compares the
    // holder's copy with the origin's.
    let mut n = 0;
    let took = wait_for(
        "edges 1 and 2 to vouch for a holder",
        Duration::from_secs(60),
        || {
            n += 1;
            let path = format!("/warm{n}");
            for edge in &edges {
                assert_eq!(via(edge, o, &path), format!("{path} from the origin"));
            }
            edges[1..].iter().all(|e| e.metric(AUDITS_VERIFIED) >= 1.0)
        },
    );
    eprintln!("edges 1 and 2 vouched for a holder after {n} pages ({took:?})");
    // An address that is no member's gets nothing, even from the cache.
    let stranger = status_via(
        &edges[0],
        &format!("http://{o}/warm1"),
        &[
            "--interface",
            "127.0.23.50",
            "-H",
            "Cache-Control: only-if-cached",
        ],
    );
    assert_eq!(stranger, "403");
    // Then edge 1 takes a page that edge 0 fetched from it, and the origin
    // is asked once. (One miss in 16 is a spot check instead, which goes to
    // the origin: the next page then.)
    let mut n = 0;
    wait_for(
        "edge 1 to get a page from edge 0",
        Duration::from_secs(30),
        || {
            n += 1;
            let path = format!("/a{n}");
            assert_eq!(via(&edges[0], o, &path), format!("{path} from the origin"));
            let fetched = edges[1].metric(PEER_FETCHES);
            assert_eq!(via(&edges[1], o, &path), format!("{path} from the origin"));
            // (An audit asks no holder for the client.)
            let from_peer = edges[1].metric(PEER_FETCHES) > fetched;
            if from_peer {
                assert_eq!(origin.count(&path), 1, "edge 1 went to the origin as well");
            }
            from_peer
        },
    );
    // An edge that misses while a holder is still fetching waits for that
    // fetch: edge 0 announced itself as it began, and the ask waits on its
    // cache lock. The origin takes three seconds and is asked once.
    let mut waited = false;
    for n in 1..=3 {
        let path = format!("/slow{n}");
        let first = {
            let (edge, path) = (edges[0].proxy, path.clone());
            std::thread::spawn(move || {
                let out = std::process::Command::new("curl")
                    .args(["-s", "--max-time", "20", "-x"])
                    .arg(format!("http://{edge}"))
                    .arg(format!("http://{o}{path}"))
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout).into_owned()
            })
        };
        std::thread::sleep(Duration::from_secs(1));
        let fetched = edges[1].metric(PEER_FETCHES);
        assert_eq!(via(&edges[1], o, &path), format!("{path} from the origin"));
        assert_eq!(first.join().unwrap(), format!("{path} from the origin"));
        if edges[1].metric(PEER_FETCHES) == fetched {
            eprintln!("edge 1 did not ask edge 0 for {path} (a spot check?)");
            continue;
        }
        assert_eq!(
            origin.count(&path),
            1,
            "the origin was asked for {path} twice"
        );
        waited = true;
        break;
    }
    assert!(waited, "edge 1 never asked edge 0 while it was fetching");
    // Purged where it is cached, the edges stay named holders for a
    // while: edge 2 asks them, gets 504s, and goes on to the origin.
    let path = "/b";
    assert_eq!(via(&edges[0], o, path), "/b from the origin");
    assert_eq!(via(&edges[1], o, path), "/b from the origin");
    for edge in &edges[..2] {
        let purged = status_via(edge, &format!("http://{o}{path}"), &["-X", "PURGE"]);
        assert_eq!(purged, "200");
    }
    let asked = origin.count(path);
    let (fetched, audited) = (edges[2].metric(PEER_FETCHES), audits(&edges[2]));
    assert_eq!(via(&edges[2], o, path), "/b from the origin");
    // For the client, or for an audit (which settles in the background).
    wait_for(
        "edge 2 to have asked a holder",
        Duration::from_secs(15),
        || edges[2].metric(PEER_FETCHES) + audits(&edges[2]) > fetched + audited,
    );
    assert_eq!(origin.count(path), asked + 1);
}

/// A peer of the overlay that announces itself as a holder of every page
/// and serves its own bodies under the origin's validators: the edge that
/// audits it catches it before any client gets a lying copy, rates it
/// down, and asks it nothing again, while it takes pages from an honest
/// holder it vouched for.
#[test]
fn a_holder_that_lies_about_web_pages_is_caught_and_avoided() {
    use common::origin::{Origin, Seen};
    fn lie(req: &Seen, n: usize) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let (status, headers, body) = page(req, n);
        let mut body = body;
        body.splice(0..0, b"(not) ".iter().copied());
        (status, headers, body)
    }
    // The outsider runs with replication 1: so do the edges, so its
    // announcements reach the peers responsible for the keys.
    let edges = cluster(24, 2, "replication = 1\ntrust_epoch_secs = 20");
    converge(&edges);
    let origin = Origin::start("127.0.24.9", page);
    let liar_proxy = Origin::start("127.0.24.8", lie);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let liar = outsider(
        &runtime,
        "127.0.24.8",
        &edges,
        format!("http://{}", liar_proxy.addr),
        Some(format!("http://{}", liar_proxy.addr)),
        &shutdown,
    );
    let o = origin.addr;
    // Asks from edge 1 (edges ask from their proxy's address). Edge 0 may
    // audit the liar too, when P-Grid names it (a responsible peer is
    // named among the holders of the keys it is responsible for).
    let liar_hits = || liar_proxy.count_from(edges[1].proxy.ip());
    let page_at = |n: usize| {
        let path = format!("/p{n}");
        assert_eq!(via(&edges[0], o, &path), format!("{path} from the origin"));
        let key = gridedge::edge::proxy::url_key(&format!("http://{o}{path}"));
        runtime.block_on(liar.overlay.announce(key)).unwrap();
        // Whoever edge 1 asks, its client gets the origin's page.
        assert_eq!(via(&edges[1], o, &path), format!("{path} from the origin"));
    };
    let lies = "gridedge_proxy_audits_total{result=\"lie\"}";
    // Until the liar's own place in the trie settles, its announcements
    // may land where the edges do not look: pages until it is caught.
    let started = Instant::now();
    let mut n = 0;
    while edges[1].metric(lies) < 1.0 {
        n += 1;
        assert!(
            started.elapsed() < Duration::from_secs(120) && n < 900,
            "the liar was not caught in {n} pages (asked {} times)\n{}\n{}",
            liar_hits(),
            edges[1]
                .metrics()
                .lines()
                .filter(|l| l.starts_with("gridedge_proxy"))
                .collect::<Vec<_>>()
                .join("\n"),
            edges[1].log()
        );
        page_at(n);
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "edge 1 caught the liar at page {n} ({:?}), after {} asks",
        started.elapsed(),
        liar_hits()
    );
    assert!(liar_hits() >= 1);
    // From then on it is not asked, for a copy or for an audit, though it
    // announces every page; edge 1 takes pages from edge 0 instead.
    let asked = liar_hits();
    let fetched = edges[1].metric(PEER_FETCHES);
    for n in n + 1..=n + 5 {
        page_at(n);
    }
    let proxy_metrics = || {
        edges[1]
            .metrics()
            .lines()
            .filter(|l| l.starts_with("gridedge_proxy") && !l.contains("bucket"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        liar_hits(),
        asked,
        "edge 1 asked the liar after it caught it\n{}",
        proxy_metrics()
    );
    assert!(
        edges[1].metric(PEER_FETCHES) > fetched && edges[1].metric(AUDITS_VERIFIED) >= 1.0,
        "edge 1 took no page from edge 0\n{}\n{}",
        proxy_metrics(),
        edges[1].log()
    );
    shutdown.cancel();
    runtime.block_on(liar.task).unwrap();
}
