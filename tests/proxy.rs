//! The HTTP proxy and its cache, end to end: a real `gridedge run`, an
//! origin server run by the test on loopback, and curl as the client (`-x`
//! for the forward proxy, `--proxytunnel` for CONNECT). What the cache
//! does is read from the origin's own request counts, never from timing.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use common::origin::{Origin, Seen, h};
use common::{Edge, EdgeBuilder};

/// The test origin's pages.
fn pages(req: &Seen, n: usize) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let body = |s: String| s.into_bytes();
    match req.path.as_str() {
        "/fresh" => (
            200,
            vec![h("Cache-Control", "max-age=300")],
            body(format!("fresh {n}")),
        ),
        "/nostore" => (
            200,
            vec![h("Cache-Control", "no-store")],
            body(format!("nostore {n}")),
        ),
        "/private" => (
            200,
            vec![h("Cache-Control", "private, max-age=300")],
            body(format!("private {n}")),
        ),
        "/etag" => {
            if req.headers.get("if-none-match").map(String::as_str) == Some("\"v1\"") {
                (
                    304,
                    vec![h("ETag", "\"v1\""), h("Cache-Control", "max-age=1")],
                    vec![],
                )
            } else {
                (
                    200,
                    vec![h("ETag", "\"v1\""), h("Cache-Control", "max-age=1")],
                    body(format!("etag {n}")),
                )
            }
        }
        "/vary" => {
            let lang = req
                .headers
                .get("accept-language")
                .cloned()
                .unwrap_or_default();
            (
                200,
                vec![
                    h("Cache-Control", "max-age=300"),
                    h("Vary", "Accept-Language"),
                ],
                body(format!("vary {lang} {n}")),
            )
        }
        "/swr" => (
            200,
            vec![h("Cache-Control", "max-age=1, stale-while-revalidate=60")],
            body(format!("swr {n}")),
        ),
        "/stale" => (
            200,
            vec![h("Cache-Control", "max-age=1, stale-if-error=600")],
            body(format!("stale {n}")),
        ),
        "/big" => (
            200,
            vec![h("Cache-Control", "max-age=300")],
            (0..100_000u32).map(|i| (i % 251) as u8).collect(),
        ),
        "/missing" => (404, vec![], body(format!("missing {n}"))),
        _ => (
            404,
            vec![h("Cache-Control", "no-store")],
            body("no such page".into()),
        ),
    }
}

struct Got {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

impl Got {
    fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// curl with `args`, the headers of the last response kept apart.
fn curl(args: &[&str]) -> Got {
    let dir = tempfile::tempdir().unwrap();
    let headers = dir.path().join("h");
    let out = Command::new("curl")
        .args(["-s", "--max-time", "20", "-D"])
        .arg(&headers)
        .args(args)
        .output()
        .expect("curl runs");
    let headers = std::fs::read_to_string(&headers).unwrap_or_default();
    // The last response's headers (after a CONNECT's or a 100's).
    let last = headers
        .split("\r\n\r\n")
        .filter(|b| b.starts_with("HTTP/"))
        .last()
        .unwrap_or_default()
        .to_owned();
    let status = last
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Got {
        status,
        headers: last,
        body: out.stdout,
    }
}

fn via(edge: &Edge, origin: &Origin, path: &str, extra: &[&str]) -> Got {
    let proxy = format!("http://{}", edge.proxy);
    let url = format!("http://{}{path}", origin.addr);
    let mut args = vec!["-x", proxy.as_str()];
    args.extend_from_slice(extra);
    args.push(url.as_str());
    curl(&args)
}

#[test]
fn the_forward_proxy_caches_as_rfc_9111_says() {
    let ip = "127.0.40.1";
    let origin = Origin::start(ip, pages);
    let edge = EdgeBuilder::new().ip(ip).start();

    // Fresh: one origin fetch, then hits with an Age.
    let first = via(&edge, &origin, "/fresh", &[]);
    assert_eq!((first.status, first.text().as_str()), (200, "fresh 1"));
    assert_eq!(first.header("x-cache-status").as_deref(), Some("MISS"));
    let second = via(&edge, &origin, "/fresh", &[]);
    assert_eq!(second.text(), "fresh 1");
    assert_eq!(second.header("x-cache-status").as_deref(), Some("HIT"));
    assert!(second.header("age").is_some(), "{}", second.headers);
    assert_eq!(origin.count("/fresh"), 1);
    // The origin was asked in origin form, with a Via.
    let seen = origin.last("/fresh");
    assert_eq!(
        seen.headers.get("via").map(String::as_str),
        Some("1.1 gridedge")
    );

    // no-store and private are never stored.
    for path in ["/nostore", "/private"] {
        via(&edge, &origin, path, &[]);
        let again = via(&edge, &origin, path, &[]);
        assert!(again.text().ends_with(" 2"), "{path}: {}", again.text());
        assert_eq!(origin.count(path), 2, "{path}");
    }

    // Vary: one stored response per Accept-Language.
    let en = via(&edge, &origin, "/vary", &["-H", "Accept-Language: en"]);
    let fr = via(&edge, &origin, "/vary", &["-H", "Accept-Language: fr"]);
    let en2 = via(&edge, &origin, "/vary", &["-H", "Accept-Language: en"]);
    let fr2 = via(&edge, &origin, "/vary", &["-H", "Accept-Language: fr"]);
    assert_eq!(en.text(), "vary en 1");
    assert_eq!(fr.text(), "vary fr 2");
    assert_eq!(en2.text(), en.text());
    assert_eq!(fr2.text(), fr.text());
    assert_eq!(origin.count("/vary"), 2);

    // Validation: once stale, the entry is revalidated with its ETag and
    // the origin's 304 refreshes it; the body comes from the cache.
    let v = via(&edge, &origin, "/etag", &[]);
    assert_eq!(v.text(), "etag 1");
    std::thread::sleep(Duration::from_millis(2100));
    let v = via(&edge, &origin, "/etag", &[]);
    assert_eq!(v.text(), "etag 1");
    assert_eq!(v.header("x-cache-status").as_deref(), Some("REVALIDATED"));
    assert_eq!(origin.count("/etag"), 2);
    assert_eq!(
        origin
            .last("/etag")
            .headers
            .get("if-none-match")
            .map(String::as_str),
        Some("\"v1\"")
    );
    // A client's own conditional request is answered from the cache.
    let c = via(&edge, &origin, "/etag", &["-H", "If-None-Match: \"v1\""]);
    assert_eq!(c.status, 304, "{}", c.headers);

    // Ranges are cut from the cached object.
    via(&edge, &origin, "/big", &[]);
    let r = via(&edge, &origin, "/big", &["-H", "Range: bytes=1000-1009"]);
    assert_eq!(r.status, 206, "{}", r.headers);
    let want: Vec<u8> = (1000..1010u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(r.body, want);
    assert_eq!(origin.count("/big"), 1);

    // A 404 is cached briefly (negative caching).
    via(&edge, &origin, "/missing", &[]);
    let m = via(&edge, &origin, "/missing", &[]);
    assert_eq!((m.status, m.text().as_str()), (404, "missing 1"));
    assert_eq!(origin.count("/missing"), 1);

    // A successful POST goes to the origin and invalidates the URL.
    let post = via(&edge, &origin, "/fresh", &["-X", "POST", "-d", "x=1"]);
    assert_eq!(post.status, 200);
    let after = via(&edge, &origin, "/fresh", &[]);
    assert_eq!(after.header("x-cache-status").as_deref(), Some("MISS"));
    assert_eq!(after.text(), "fresh 3");

    // Stale within stale-while-revalidate: served at once while one
    // background request refreshes it.
    assert_eq!(via(&edge, &origin, "/swr", &[]).text(), "swr 1");
    std::thread::sleep(Duration::from_millis(2100));
    let s = via(&edge, &origin, "/swr", &[]);
    assert_eq!(s.text(), "swr 1");
    assert_eq!(
        s.header("x-cache-status").as_deref(),
        Some("UPDATING"),
        "{}",
        s.headers
    );
    let start = std::time::Instant::now();
    while origin.count("/swr") < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no background refresh"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let s = via(&edge, &origin, "/swr", &[]);
    assert_eq!(s.text(), "swr 2");
    assert_eq!(s.header("x-cache-status").as_deref(), Some("HIT"));

    // The origin goes down: a stale entry within stale-if-error is served.
    let s = via(&edge, &origin, "/stale", &[]);
    assert_eq!(s.text(), "stale 1");
    std::thread::sleep(Duration::from_millis(1500));
    origin.down();
    let s = via(&edge, &origin, "/stale", &[]);
    assert_eq!(
        (s.status, s.text().as_str()),
        (200, "stale 1"),
        "{}",
        s.headers
    );
    // And what it never had is a 502.
    let gone = via(&edge, &origin, "/nostore", &[]);
    assert_eq!(gone.status, 502, "{}", gone.headers);

    assert!(
        edge.metric("gridedge_proxy_cache_total{result=\"HIT\"}") >= 5.0,
        "{}",
        edge.metrics()
    );
}

#[test]
fn the_cache_survives_kill_9() {
    let ip = "127.0.41.1";
    let origin = Origin::start(ip, pages);
    let mut edge = EdgeBuilder::new().ip(ip).start();
    assert_eq!(via(&edge, &origin, "/fresh", &[]).text(), "fresh 1");
    edge.kill9_and_restart();
    let hit = via(&edge, &origin, "/fresh", &[]);
    assert_eq!(hit.text(), "fresh 1");
    assert_eq!(hit.header("x-cache-status").as_deref(), Some("HIT"));
    assert_eq!(origin.count("/fresh"), 1);
    // A purge drops it.
    let purge = via(&edge, &origin, "/fresh", &["-X", "PURGE"]);
    assert_eq!(purge.status, 200, "{}", purge.headers);
    assert_eq!(via(&edge, &origin, "/fresh", &[]).text(), "fresh 2");
    // And so does the admin API's purge by URL.
    let purge = format!("/cache/purge?url=http://{}/fresh", origin.addr);
    let (status, body) = common::http(edge.admin, "POST", &purge, b"");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (status, _) = common::http(edge.admin, "POST", &purge, b"");
    assert_eq!(status, 404);
    assert_eq!(via(&edge, &origin, "/fresh", &[]).text(), "fresh 3");
}

#[test]
fn sites_connect_and_who_may_use_the_proxy() {
    let ip = "127.0.42.1";
    let origin = Origin::start(ip, pages);
    // A TCP echo server stands in for an HTTPS origin behind CONNECT.
    let echo = TcpListener::bind((ip, 0)).unwrap();
    let echo_addr = echo.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in echo.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = stream;
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    let edge = EdgeBuilder::new()
        .ip(ip)
        .edge(&format!(
            "proxy_allow = [\"127.0.0.1/32\"]\nconnect_ports = [{}]\n\
             [[edge.sites]]\nhost = \"www.site.test\"\norigin = \"{}\"",
            echo_addr.port(),
            origin.addr
        ))
        .start();

    // A configured site, as a reverse proxy, cached.
    let url = format!("http://{}/fresh", edge.proxy);
    let a = curl(&["-H", "Host: www.site.test", &url]);
    let b = curl(&["-H", "Host: www.site.test", &url]);
    assert_eq!((a.status, a.text().as_str()), (200, "fresh 1"));
    assert_eq!(b.header("x-cache-status").as_deref(), Some("HIT"));
    // The same over HTTP/2 in clear text (prior knowledge), from the cache.
    let h2 = curl(&["--http2-prior-knowledge", "-H", "Host: www.site.test", &url]);
    assert!(h2.headers.starts_with("HTTP/2 200"), "{}", h2.headers);
    assert_eq!(h2.header("x-cache-status").as_deref(), Some("HIT"));
    assert_eq!(h2.text(), "fresh 1");
    assert_eq!(
        origin
            .last("/fresh")
            .headers
            .get("host")
            .map(String::as_str),
        Some("www.site.test")
    );
    // A host it does not front.
    let other = curl(&["-H", "Host: elsewhere.test", &url]);
    assert_eq!(other.status, 404);
    assert!(other.text().contains("elsewhere.test"), "{}", other.text());

    // CONNECT to an allowed port is a tunnel.
    let mut s = TcpStream::connect(edge.proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "CONNECT {echo_addr} HTTP/1.1\r\nHost: {echo_addr}\r\n\r\n"
    )
    .unwrap();
    let mut head = [0u8; 39];
    s.read_exact(&mut head).unwrap();
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s.write_all(b"ping through the tunnel").unwrap();
    let mut back = [0u8; 23];
    s.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"ping through the tunnel");
    // To another port it is refused.
    let proxy = format!("http://{}", edge.proxy);
    let refused = curl(&["-p", "-x", &proxy, &format!("http://{}/fresh", origin.addr)]);
    assert_eq!(refused.status, 403, "{}", refused.headers);

    // A client outside proxy_allow gets 403, whatever it asks.
    let outside = curl(&[
        "--interface",
        "127.0.42.2",
        "-x",
        &proxy,
        &format!("http://{}/fresh", origin.addr),
    ]);
    assert_eq!(outside.status, 403, "{}", outside.headers);
    assert!(outside.text().contains("127.0.42.2"), "{}", outside.text());
    assert_eq!(origin.count("/fresh"), 1);
}
