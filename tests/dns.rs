//! The DNS service end to end: the real binary, queried with dig and with
//! hickory's client, forwarding to a real Unbound.

mod common;

use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use common::{EXAMPLE_ZONE, Edge, EdgeBuilder, Unbound, dig, gridedge, status};

fn example_edge() -> Edge {
    EdgeBuilder::new()
        .zone("example.test.zone", EXAMPLE_ZONE)
        .dns("[dns.forward]\nupstreams = []")
        .start()
}

#[test]
fn local_zone_answers() {
    let edge = example_edge();
    let out = edge.dig(&["www.example.test", "A"]);
    assert_eq!(status(&out), "NOERROR", "{out}");
    assert!(out.contains("flags: qr aa"), "authoritative: {out}");
    assert_eq!(edge.dig_short(&["www.example.test", "A"]), ["127.0.0.1"]);
    assert_eq!(edge.dig_short(&["www.example.test", "AAAA"]), ["::1"]);
    assert_eq!(
        edge.dig_short(&["example.test", "MX"]),
        ["10 mail.example.test."]
    );
    assert_eq!(
        edge.dig_short(&["example.test", "TXT"]),
        ["\"v=spf1 mx -all\""]
    );
    // A CNAME chain inside the zone is followed to the address.
    assert_eq!(
        edge.dig_short(&["alias.example.test", "A"]),
        ["web.example.test.", "www.example.test.", "127.0.0.1"]
    );
    // Wildcards.
    assert_eq!(
        edge.dig_short(&["anything.apps.example.test"]),
        ["127.0.0.2"]
    );
    assert_eq!(edge.dig_short(&["a.b.apps.example.test"]), ["127.0.0.2"]);
    // NXDOMAIN and NODATA carry the SOA in the authority section.
    let nx = edge.dig(&["missing.example.test", "A"]);
    assert_eq!(status(&nx), "NXDOMAIN", "{nx}");
    assert!(nx.contains("AUTHORITY: 1") && nx.contains("SOA"), "{nx}");
    let nodata = edge.dig(&["www.example.test", "MX"]);
    assert_eq!(status(&nodata), "NOERROR", "{nodata}");
    assert!(
        nodata.contains("ANSWER: 0") && nodata.contains("SOA"),
        "{nodata}"
    );
    // Over TCP too.
    assert_eq!(edge.dig_short(&["+tcp", "www.example.test"]), ["127.0.0.1"]);
    // Metrics count them by type and rcode.
    assert!(edge.metric("gridedge_dns_queries_total{qtype=\"A\",rcode=\"NXDOMAIN\"}") >= 1.0);
}

#[test]
fn hickory_client_gets_the_same_answers() {
    use gridedge::config::parse_upstream;
    use gridedge::dns::forward::Forwarder;
    use hickory_proto::op::{Query, ResponseCode};
    use hickory_proto::rr::{Name, RData, RecordType};

    let edge = example_edge();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for scheme in ["udp", "tcp"] {
        let mut config = gridedge::config::Config::default().dns.forward;
        config.upstreams = vec![parse_upstream(&format!("{scheme}://{}", edge.dns)).unwrap()];
        let client = Forwarder::new(&config).unwrap();
        let q = |name: &str, t| Query::query(Name::from_ascii(name).unwrap(), t);
        let (a, _) = runtime
            .block_on(client.resolve(q("www.example.test.", RecordType::A)))
            .unwrap();
        assert_eq!(a.rcode, ResponseCode::NoError);
        assert!(matches!(&a.answers[0].data, RData::A(ip) if ip.0.octets() == [127, 0, 0, 1]));
        let (nx, _) = runtime
            .block_on(client.resolve(q("nope.example.test.", RecordType::A)))
            .unwrap();
        assert_eq!(nx.rcode, ResponseCode::NXDomain, "{scheme}");
        assert!(
            nx.authorities
                .iter()
                .any(|r| r.record_type() == RecordType::SOA)
        );
    }
}

#[test]
fn forwarding_caches_serves_stale_then_servfails() {
    let mut upstream = Unbound::start(
        "127.0.0.2",
        "upstream.test.",
        &[
            "upstream.test. 3600 IN SOA ns.upstream.test. h.upstream.test. 1 3600 600 86400 2",
            "short.upstream.test. 2 IN A 192.0.2.1",
            "long.upstream.test. 3600 IN A 192.0.2.2",
        ],
    );
    let edge = EdgeBuilder::new()
        .dns(&format!(
            "[dns.forward]\nupstreams = [\"udp://{}\"]\ntimeout_ms = 300\nattempts = 1\n\
             [dns.cache]\nstale_window_secs = 4\nstale_answer_ttl_secs = 30",
            upstream.addr
        ))
        .start();
    let t0 = Instant::now();
    assert_eq!(edge.dig_short(&["short.upstream.test"]), ["192.0.2.1"]);
    assert_eq!(edge.dig_short(&["long.upstream.test"]), ["192.0.2.2"]);
    let nx = edge.dig(&["nx.upstream.test"]);
    assert_eq!(status(&nx), "NXDOMAIN", "{nx}");
    assert!(nx.contains("flags: qr rd ra"), "{nx}");
    let hit = edge.dig(&["long.upstream.test"]);
    assert_eq!(status(&hit), "NOERROR");
    assert!(edge.metric("gridedge_dns_cache_total{result=\"hit\"}") >= 1.0);

    upstream.kill();
    // Fresh entries still answer, negative ones too.
    assert_eq!(edge.dig_short(&["long.upstream.test"]), ["192.0.2.2"]);
    assert_eq!(status(&edge.dig(&["nx.upstream.test"])), "NXDOMAIN");
    // The 2 s answer expires; within the 4 s window it is served stale
    // with the stale TTL (RFC 8767).
    sleep_until(t0 + Duration::from_millis(3_000));
    let stale = edge.dig(&["short.upstream.test"]);
    assert_eq!(status(&stale), "NOERROR", "{stale}");
    assert!(stale.contains("30\tIN\tA\t192.0.2.1"), "{stale}");
    assert!(edge.metric("gridedge_dns_cache_total{result=\"stale\"}") >= 1.0);
    // Past expiry plus the window: nothing left to serve.
    sleep_until(t0 + Duration::from_millis(7_500));
    let gone = edge.dig(&["short.upstream.test"]);
    assert_eq!(status(&gone), "SERVFAIL", "{gone}");
    // A name never seen: SERVFAIL, and the edge keeps serving.
    assert_eq!(status(&edge.dig(&["new.upstream.test"])), "SERVFAIL");
    assert!(edge.metric("gridedge_dns_upstream_errors_total") >= 1.0);
    assert_eq!(edge.dig_short(&["long.upstream.test"]), ["192.0.2.2"]);
}

fn sleep_until(t: Instant) {
    if let Some(d) = t.checked_duration_since(Instant::now()) {
        std::thread::sleep(d);
    }
}

#[test]
fn recursion_refused_outside_allowed_networks() {
    let upstream = Unbound::start(
        "127.0.0.2",
        "upstream.test.",
        &[
            "upstream.test. 3600 IN SOA ns.upstream.test. h.upstream.test. 1 3600 600 86400 2",
            "a.upstream.test. 300 IN A 192.0.2.1",
        ],
    );
    let edge = EdgeBuilder::new()
        .zone("example.test.zone", EXAMPLE_ZONE)
        .dns(&format!(
            "allow_recursion = [\"127.0.0.1/32\"]\n[dns.forward]\nupstreams = [\"udp://{}\"]",
            upstream.addr
        ))
        .start();
    assert_eq!(edge.dig_short(&["a.upstream.test"]), ["192.0.2.1"]);
    // From a second loopback address outside the allowed network.
    let refused = edge.dig(&["-b", "127.0.0.3", "a.upstream.test"]);
    assert_eq!(status(&refused), "REFUSED", "{refused}");
    let refused = edge.dig(&["-b", "127.0.0.3", "+tcp", "other.upstream.test"]);
    assert_eq!(status(&refused), "REFUSED", "{refused}");
    // Authoritative data is still public.
    let local = edge.dig(&["-b", "127.0.0.3", "www.example.test"]);
    assert_eq!(status(&local), "NOERROR", "{local}");
}

#[test]
fn dot_and_doh_answer() {
    let edge = EdgeBuilder::new()
        .zone("example.test.zone", EXAMPLE_ZONE)
        .dns("[dns.forward]\nupstreams = []")
        .tls()
        .start();
    let ca = edge.data_dir().join("certs/ca.crt");
    let ca_arg = format!("+tls-ca={}", ca.display());
    let dot = dig(
        edge.dot,
        &[
            "+tls",
            &ca_arg,
            "+tls-hostname=localhost",
            "www.example.test",
        ],
    );
    assert_eq!(status(&dot), "NOERROR", "{dot}\n{}", edge.log());
    assert!(dot.contains("127.0.0.1") && dot.contains("(TLS)"), "{dot}");
    for method in ["+https", "+https-get"] {
        let doh = dig(
            edge.doh,
            &[
                method,
                &ca_arg,
                "+tls-hostname=localhost",
                "www.example.test",
            ],
        );
        assert_eq!(status(&doh), "NOERROR", "{method}: {doh}\n{}", edge.log());
        assert!(doh.contains("(HTTPS"), "{doh}");
    }
    // Without trusting the CA the handshake must fail: it is a real check.
    let untrusted = dig(
        edge.dot,
        &["+tls", "+tls-hostname=localhost", "www.example.test"],
    );
    assert_ne!(status(&untrusted), "NOERROR", "{untrusted}");

    // hickory's DoT and DoH clients, trusting the dev CA.
    use gridedge::config::parse_upstream;
    use gridedge::dns::forward::Forwarder;
    use hickory_proto::op::{Query, ResponseCode};
    use hickory_proto::rr::{Name, RecordType};
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for url in [
        format!("tls://{}#localhost", edge.dot),
        format!("https://{}/dns-query#localhost", edge.doh),
    ] {
        let mut config = gridedge::config::Config::default().dns.forward;
        config.upstreams = vec![parse_upstream(&url).unwrap()];
        config.upstream_ca = Some(ca.clone());
        let client = Forwarder::new(&config).unwrap();
        let query = Query::query(
            Name::from_ascii("www.example.test.").unwrap(),
            RecordType::A,
        );
        let (answer, _) = runtime.block_on(client.resolve(query)).unwrap();
        assert_eq!(answer.rcode, ResponseCode::NoError, "{url}");
        assert_eq!(answer.answers.len(), 1, "{url}");
    }
}

#[test]
fn garbage_does_not_stop_it() {
    let edge = example_edge();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let query = {
        use hickory_proto::op::{Message, Query};
        use hickory_proto::rr::{Name, RecordType};
        let mut m = Message::query();
        m.add_query(Query::query(
            Name::from_ascii("www.example.test.").unwrap(),
            RecordType::A,
        ));
        m.to_vec().unwrap()
    };
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..2_000 {
        let len = (next() % 600) as usize;
        let mut packet: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if i % 3 == 0 {
            // A valid query cut short, or with bytes flipped.
            packet = query[..(next() as usize % query.len())].to_vec();
        }
        udp.send_to(&packet, edge.dns).unwrap();
    }
    // A frame that claims 65535 bytes, one over the limit, and one that
    // stops in the middle.
    for frame in [
        vec![0xff, 0xff, 1, 2, 3],
        vec![0x40, 0x01, 0],
        vec![0, 40, 1, 2],
    ] {
        let mut tcp = TcpStream::connect(edge.dns).unwrap();
        tcp.write_all(&frame).unwrap();
        drop(tcp);
    }
    assert_eq!(edge.dig_short(&["www.example.test"]), ["127.0.0.1"]);
    assert_eq!(edge.dig_short(&["+tcp", "www.example.test"]), ["127.0.0.1"]);
    // Malformed but with a good header: FORMERR, not silence.
    let mut bad = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    bad.extend_from_slice(&[0x3f, b'x']);
    // A fresh socket: the first one's buffer is full of replies to garbage.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    udp.send_to(&bad, edge.dns).unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = loop {
        let r = udp.recv_from(&mut buf).unwrap();
        if buf[0] == 0x12 && buf[1] == 0x34 {
            break r;
        }
    };
    assert!(n >= 12);
    assert_eq!(buf[3] & 0x0f, 1, "FORMERR");
}

#[test]
fn large_answers_truncate_over_udp_and_come_whole_over_tcp() {
    let mut zone = EXAMPLE_ZONE.to_owned();
    for i in 0..60 {
        zone.push_str(&format!(
            "big IN TXT \"record number {i:03} with padding to make the answer large\"\n"
        ));
    }
    let edge = EdgeBuilder::new()
        .zone("example.test.zone", &zone)
        .dns("[dns.forward]\nupstreams = []")
        .start();
    let udp = edge.dig(&["+ignore", "+bufsize=1232", "big.example.test", "TXT"]);
    assert!(udp.contains(" tc"), "truncated: {udp}");
    let whole = edge.dig_short(&["big.example.test", "TXT"]);
    assert_eq!(whole.len(), 60, "dig retried over TCP");
}

#[test]
fn broken_zone_is_reported_and_others_serve() {
    let edge = EdgeBuilder::new()
        .zone("example.test.zone", EXAMPLE_ZONE)
        .zone(
            "broken.test.zone",
            "$TTL 300\n@ IN SOA ns.broken.test. h.broken.test. 1 2 3 4 5\nwww IN A 300.1.1.1\n",
        )
        .dns("[dns.forward]\nupstreams = []")
        .start();
    assert!(edge.log().contains("broken.test.zone:3"), "{}", edge.log());
    assert_eq!(edge.dig_short(&["www.example.test"]), ["127.0.0.1"]);
}

#[test]
fn bad_config_is_rejected_with_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[dns]\nlisten_udpp = []\n").unwrap();
    let out = gridedge(&["run", "--config", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("listen_udpp") && err.contains("bad.toml"),
        "{err}"
    );
    std::fs::write(&path, "[dns.forward]\nupstreams = [\"ftp://1.2.3.4\"]\n").unwrap();
    let out = gridedge(&["run", "--config", path.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("dns.forward.upstreams"), "{err}");
}

#[test]
fn sigterm_stops_cleanly() {
    let edge = example_edge();
    assert!(edge.data_dir().join("node.key").exists());
    let (status, log) = edge.terminate();
    assert!(status.success(), "{status}\n{log}");
    assert!(log.contains("stopped"), "{log}");
}

#[test]
fn shipped_config_runs() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = gridedge(&[
        "check-config",
        "--config",
        root.join("config/gridedge.toml").to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("127.0.0.1:5300"));
}
