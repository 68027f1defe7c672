//! The registry end to end: the real binary, its `name` and `chain`
//! commands, dig, a second edge that follows the first, kill -9.

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::{Edge, EdgeBuilder, gridedge, http, ok, status};

/// The devnet genesis with a short registration period and little work,
/// so a test can expire names and register many quickly.
fn quick_genesis(dir: &std::path::Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/zones/genesis.toml"))
        .unwrap()
        .replace("difficulty_bits = 16", "difficulty_bits = 4")
        .replace(
            "registration_period_blocks = 100000",
            "registration_period_blocks = 20",
        );
    assert!(text.contains("registration_period_blocks = 20"));
    let path = dir.join("quick-genesis.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// An edge on the quick genesis; the directory holding the genesis lives as
/// long as the test keeps it.
fn quick_edge() -> (Edge, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let genesis = quick_genesis(dir.path());
    let edge = EdgeBuilder::new()
        .extra(&format!("[registry]\ngenesis = {genesis:?}"))
        .start();
    (edge, dir)
}

/// `gridedge name ARGS… --admin EDGE`.
fn name(edge: &Edge, args: &[&str]) -> Output {
    let mut all = vec!["name"];
    all.extend_from_slice(args);
    let url = edge.admin_url();
    all.extend_from_slice(&["--admin", &url]);
    gridedge(&all)
}

fn refused(out: Output) -> String {
    assert!(
        !out.status.success(),
        "command succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Makes a key file in `dir`; returns its path and public key.
fn keygen(edge: &Edge, file: &str) -> (String, String) {
    let path = edge.dir.path().join(file);
    let out = ok(name(edge, &["keygen", "--out", path.to_str().unwrap()]));
    let public = out
        .lines()
        .find_map(|l| l.strip_prefix("public key: "))
        .unwrap()
        .to_owned();
    (path.to_str().unwrap().to_owned(), public)
}

fn flags(dig_output: &str) -> String {
    dig_output
        .lines()
        .find_map(|l| l.split("flags: ").nth(1))
        .map(|f| f.split(';').next().unwrap().to_owned())
        .unwrap_or_default()
}

#[test]
fn the_sample_name_answers_authoritatively() {
    let edge = EdgeBuilder::new().start();
    let out = edge.dig(&["hello.grid", "A"]);
    assert_eq!(status(&out), "NOERROR", "{out}");
    assert!(flags(&out).contains("aa"), "{out}");
    assert_eq!(edge.dig_short(&["hello.grid", "A"]), ["127.0.0.1"]);
    assert_eq!(
        edge.dig_short(&["www.hello.grid", "A"]),
        ["hello.grid.", "127.0.0.1"]
    );
    // Unregistered name and empty subname: NXDOMAIN with the zone's SOA.
    for q in ["nobody.grid", "nothing.hello.grid"] {
        let out = edge.dig(&[q, "A"]);
        assert_eq!(status(&out), "NXDOMAIN", "{out}");
        assert!(out.contains("IN\tSOA\tgrid. hostmaster.grid."), "{out}");
    }
    // A type the name lacks: NODATA (NOERROR, no answer, SOA).
    let out = edge.dig(&["hello.grid", "MX"]);
    assert_eq!(status(&out), "NOERROR", "{out}");
    assert!(out.contains("ANSWER: 0"), "{out}");
    assert!(out.contains("SOA"), "{out}");
    // The zone's apex has an SOA whose serial is the height.
    assert_eq!(
        edge.dig_short(&["grid", "SOA"]),
        ["grid. hostmaster.grid. 0 1800 900 604800 60"]
    );
    // Registry answers do not depend on recursion being allowed.
    let out = common::dig(
        edge.dns,
        &["-b", "127.0.0.1", "hello.grid", "TXT", "+short"],
    );
    assert_eq!(out.trim(), "\"hello from the gridedge devnet\"");
}

#[test]
fn register_update_transfer_with_the_cli_and_see_it_in_dns() {
    let (edge, _genesis) = quick_edge();
    let (alice_key, _) = keygen(&edge, "alice.key");
    let (bob_key, bob) = keygen(&edge, "bob.key");

    // Keys are never overwritten.
    let again = refused(name(&edge, &["keygen", "--out", &alice_key]));
    assert!(again.contains("exists"), "{again}");

    ok(name(
        &edge,
        &[
            "register",
            "alice.grid",
            "--key",
            &alice_key,
            "--a",
            "192.0.2.1",
            "--txt",
            "v=spf1 -all",
            "--record",
            "www CNAME alice.grid.",
            "--mx",
            "10 mail.alice.grid.",
            "--record",
            "mail A 192.0.2.25",
            "--record",
            "@ CAA 0 issue \"letsencrypt.org\"",
        ],
    ));
    assert_eq!(edge.dig_short(&["alice.grid", "A"]), ["192.0.2.1"]);
    assert_eq!(edge.dig_short(&["alice.grid", "TXT"]), ["\"v=spf1 -all\""]);
    assert_eq!(
        edge.dig_short(&["alice.grid", "MX"]),
        ["10 mail.alice.grid."]
    );
    assert_eq!(edge.dig_short(&["mail.alice.grid", "A"]), ["192.0.2.25"]);
    assert_eq!(
        edge.dig_short(&["alice.grid", "CAA"]),
        ["0 issue \"letsencrypt.org\""]
    );
    assert_eq!(
        edge.dig_short(&["www.alice.grid", "A"]),
        ["alice.grid.", "192.0.2.1"]
    );
    // Registering a taken name is refused before any work is done.
    let taken = refused(name(
        &edge,
        &["register", "alice", "--key", &bob_key, "--a", "10.0.0.1"],
    ));
    assert!(taken.contains("registered to"), "{taken}");

    // Update: new address, content; records not named are replaced.
    ok(name(
        &edge,
        &["set", "alice", "--key", &alice_key, "--a", "192.0.2.2"],
    ));
    assert_eq!(edge.dig_short(&["alice.grid", "A"]), ["192.0.2.2"]);
    assert_eq!(status(&edge.dig(&["www.alice.grid", "A"])), "NXDOMAIN");

    // Content without an address: the edge's own public addresses.
    ok(name(
        &edge,
        &[
            "set",
            "alice",
            "--key",
            &alice_key,
            "--record",
            "@ TXT site",
            "--content",
            "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy",
        ],
    ));
    assert_eq!(edge.dig_short(&["alice.grid", "A"]), ["127.0.0.1"]);
    assert_eq!(edge.dig_short(&["alice.grid", "AAAA"]), ["::1"]);

    // Bad input: a clear error and no change.
    let bad = refused(name(
        &edge,
        &["set", "alice", "--key", &alice_key, "--a", "300.1.1.1"],
    ));
    assert!(bad.contains("300.1.1.1"), "{bad}");
    let bad = refused(name(
        &edge,
        &["set", "alice", "--key", &alice_key, "--record", "www"],
    ));
    assert!(bad.contains("SUBNAME TYPE DATA"), "{bad}");
    assert_eq!(edge.dig_short(&["alice.grid", "TXT"]), ["\"site\""]);

    // The proof verifies offline against the chain's genesis; a changed
    // byte does not.
    let shown = ok(name(&edge, &["show", "alice", "--proof"]));
    let proof = shown
        .lines()
        .find_map(|l| l.strip_prefix("proof: "))
        .unwrap()
        .to_owned();
    let quick = find_quick_genesis(&edge);
    let verified = ok(gridedge(&["name", "verify", &proof, "--genesis", &quick]));
    assert!(
        verified.starts_with("valid: alice is registered"),
        "{verified}"
    );
    let mut tampered = hex::decode(&proof).unwrap();
    let at = tampered.len() / 2;
    tampered[at] ^= 1;
    refused(gridedge(&[
        "name",
        "verify",
        &hex::encode(&tampered),
        "--genesis",
        &quick,
    ]));

    // Transfer: the old key is refused, the new one works.
    ok(name(
        &edge,
        &["transfer", "alice", "--key", &alice_key, "--to", &bob],
    ));
    let old = refused(name(
        &edge,
        &["set", "alice", "--key", &alice_key, "--a", "198.51.100.1"],
    ));
    assert!(old.contains("owned by"), "{old}");
    assert_eq!(edge.dig_short(&["alice.grid", "A"]), ["127.0.0.1"]);
    ok(name(
        &edge,
        &["set", "alice", "--key", &bob_key, "--a", "198.51.100.2"],
    ));
    assert_eq!(edge.dig_short(&["alice.grid", "A"]), ["198.51.100.2"]);

    let show = ok(name(&edge, &["show", "alice"]));
    assert!(show.contains(&format!("owner:     {bob}")), "{show}");
    assert_eq!(
        edge.metric("gridedge_registry_ops_total{kind=\"update\",result=\"accepted\"}"),
        3.0
    );
    assert_eq!(
        edge.metric("gridedge_registry_ops_total{kind=\"update\",result=\"wrong_owner\"}"),
        1.0
    );
}

/// The quick genesis file written next to the edge's directory.
fn find_quick_genesis(edge: &Edge) -> String {
    let config = std::fs::read_to_string(edge.dir.path().join("gridedge.toml")).unwrap();
    config
        .lines()
        .find_map(|l| l.strip_prefix("genesis = "))
        .map(|q| q.trim_matches('"').to_owned())
        .unwrap()
}

#[test]
fn names_expire_into_nxdomain_and_can_be_renewed_or_taken() {
    let (edge, _genesis) = quick_edge();
    let (key, _) = keygen(&edge, "owner.key");
    let (other, _) = keygen(&edge, "other.key");
    ok(name(
        &edge,
        &["register", "short", "--key", &key, "--a", "192.0.2.9"],
    ));
    ok(name(&edge, &["renew", "short", "--key", &key]));
    let mine = |n: &str| {
        ok(gridedge(&[
            "chain",
            "mine",
            n,
            "--admin",
            &edge.admin_url(),
        ]))
    };
    // Registered at height 1 for 20 blocks, renewed by 20 more: live until 41.
    mine("30");
    assert_eq!(edge.dig_short(&["short.grid", "A"]), ["192.0.2.9"]);
    mine("20");
    let out = edge.dig(&["short.grid", "A"]);
    assert_eq!(status(&out), "NXDOMAIN", "{out}");
    let late = refused(name(&edge, &["renew", "short", "--key", &key]));
    assert!(late.contains("expired"), "{late}");
    // Anyone may register an expired name.
    ok(name(
        &edge,
        &["register", "short", "--key", &other, "--a", "192.0.2.10"],
    ));
    assert_eq!(edge.dig_short(&["short.grid", "A"]), ["192.0.2.10"]);
}

#[test]
fn a_delegated_name_gets_a_referral_with_glue() {
    let (edge, _genesis) = quick_edge();
    let (key, _) = keygen(&edge, "k.key");
    ok(name(
        &edge,
        &[
            "register",
            "deleg",
            "--key",
            &key,
            "--record",
            "@ NS ns1.deleg.grid.",
            "--record",
            "@ NS ns.example.",
            "--record",
            "@ DS 12345 13 2 2bb183af5f22588179a53b0a98631fad1a292118aabbccddeeff001122334455",
            "--record",
            "ns1 A 192.0.2.53",
        ],
    ));
    let out = edge.dig(&["www.deleg.grid", "A"]);
    assert_eq!(status(&out), "NOERROR", "{out}");
    assert!(
        !flags(&out).contains("aa"),
        "a referral is not authoritative: {out}"
    );
    assert!(out.contains("ANSWER: 0"), "{out}");
    assert!(
        out.contains("deleg.grid.\t\t300\tIN\tNS\tns1.deleg.grid."),
        "{out}"
    );
    assert!(out.contains("IN\tDS\t12345 13 2"), "{out}");
    assert!(
        out.contains("ns1.deleg.grid.\t\t300\tIN\tA\t192.0.2.53"),
        "glue: {out}"
    );
    // DS at the cut is the parent's, answered authoritatively.
    let out = edge.dig(&["deleg.grid", "DS"]);
    assert!(flags(&out).contains("aa"), "{out}");
    assert!(out.contains("IN\tDS\t12345"), "{out}");
}

/// GET or POST on the admin API, asserting the status.
fn admin(edge: &Edge, method: &str, path: &str, body: &[u8], want: u16) -> Vec<u8> {
    let (code, body) = http(edge.admin, method, path, body);
    assert_eq!(
        code,
        want,
        "{method} {path}: {}",
        String::from_utf8_lossy(&body)
    );
    body
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_follower_answers_the_same_and_refuses_tampered_blocks() {
    let (sequencer, _genesis) = quick_edge();
    let (key, _) = keygen(&sequencer, "k.key");
    ok(name(
        &sequencer,
        &["register", "first", "--key", &key, "--a", "192.0.2.1"],
    ));

    let genesis = find_quick_genesis(&sequencer);
    // Slow pulls, so the test can feed blocks before the follower fetches.
    let follower = EdgeBuilder::new()
        .ip("127.0.0.2")
        .extra(&format!(
            "[registry]\ngenesis = {genesis:?}\nfollow = \"{}\"\nfollow_interval_ms = 4000",
            sequencer.admin_url()
        ))
        .start();
    wait_for("the follower to catch up", || {
        follower.dig_short(&["first.grid", "A"]) == ["192.0.2.1"]
    });
    // A follower takes no operations.
    let ro = refused(name(
        &follower,
        &["register", "nope", "--key", &key, "--a", "192.0.2.3"],
    ));
    assert!(ro.contains("follows the chain"), "{ro}");

    // A new block on the sequencer; feed the follower altered copies first.
    ok(name(
        &sequencer,
        &["set", "first", "--key", &key, "--a", "192.0.2.2"],
    ));
    let batch = admin(
        &sequencer,
        "GET",
        "/registry/blocks?since=1&max=1",
        b"",
        200,
    );
    let mut refused_count = 0;
    for at in [8, 20, 60, 100, batch.len() - 70, batch.len() - 1] {
        let mut bad = batch.clone();
        bad[at] ^= 0x40;
        let (code, body) = http(follower.admin, "POST", "/registry/blocks", &bad);
        assert!(
            code == 400 || code == 422,
            "byte {at} changed was accepted ({code}): {}",
            String::from_utf8_lossy(&body)
        );
        refused_count += u32::from(code == 422);
    }
    assert!(
        refused_count > 0,
        "every change failed to decode; none reached verification"
    );
    // The follower still serves the last good state.
    assert_eq!(follower.dig_short(&["first.grid", "A"]), ["192.0.2.1"]);
    assert!(follower.metric("gridedge_registry_blocks_refused_total") >= f64::from(refused_count));
    // The genuine block is taken, pushed or pulled.
    let (code, _) = http(follower.admin, "POST", "/registry/blocks", &batch);
    assert_eq!(code, 200);
    assert_eq!(follower.dig_short(&["first.grid", "A"]), ["192.0.2.2"]);

    // And later blocks arrive by the pull loop alone.
    ok(name(
        &sequencer,
        &["register", "second", "--key", &key, "--a", "192.0.2.4"],
    ));
    wait_for("the follower to pull", || {
        follower.dig_short(&["second.grid", "A"]) == ["192.0.2.4"]
    });
    let root = |e: &Edge| {
        let s = String::from_utf8(admin(e, "GET", "/registry", b"", 200)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        (
            v["height"].as_u64().unwrap(),
            v["state_root"].as_str().unwrap().to_owned(),
        )
    };
    assert_eq!(root(&sequencer), root(&follower));
}

#[test]
fn kill_minus_nine_during_registrations_loses_no_acknowledged_name() {
    let (mut edge, _genesis) = quick_edge();
    let (key, _) = keygen(&edge, "k.key");
    let mut acknowledged: Vec<String> = Vec::new();
    let mut n = 0;
    for round in 0..8 {
        // Registrations run in a thread; the edge is killed in the middle.
        let admin_url = edge.admin_url();
        let key = key.clone();
        let start = n;
        let worker = std::thread::spawn(move || {
            let mut done = Vec::new();
            for i in start..start + 40 {
                let label = format!("n{i}");
                let out = gridedge(&[
                    "name",
                    "register",
                    &label,
                    "--key",
                    &key,
                    "--a",
                    "192.0.2.1",
                    "--admin",
                    &admin_url,
                ]);
                if out.status.success() {
                    done.push(label);
                } else {
                    break;
                }
            }
            done
        });
        std::thread::sleep(Duration::from_millis(150 + 70 * round));
        edge.kill9_and_restart();
        let done = worker.join().unwrap();
        n += 40;
        acknowledged.extend(done);
        for label in &acknowledged {
            let (code, body) = http(edge.admin, "GET", &format!("/registry/names/{label}"), b"");
            assert_eq!(
                code,
                200,
                "round {round}: acknowledged {label} lost: {}",
                String::from_utf8_lossy(&body)
            );
        }
    }
    assert!(
        acknowledged.len() >= 8,
        "too few registrations got through: {}",
        acknowledged.len()
    );
    // The chain replays cleanly: every block verified on each start.
    assert!(!edge.log().contains("does not replay"), "{}", edge.log());
}

/// A registry name with content is served by the edge's proxy: the name's
/// CID from the gateway, paths inside it, cached like any response.
#[test]
fn a_name_with_content_is_served_through_the_proxy() {
    let (edge, _genesis) = quick_edge();
    let (key, _) = keygen(&edge, "site.key");
    let site = edge.dir.path().join("site");
    std::fs::create_dir_all(site.join("docs")).unwrap();
    std::fs::write(site.join("index.html"), "<h1>hello from the grid</h1>").unwrap();
    std::fs::write(site.join("docs/a.txt"), "a page inside").unwrap();
    let cid = common::put(&edge, &[site.to_str().unwrap(), "--pin"])[0].clone();
    ok(name(
        &edge,
        &["register", "site.grid", "--key", &key, "--content", &cid],
    ));
    let proxy = format!("http://{}", edge.proxy);
    let curl = |url: &str| -> (String, String) {
        let out = std::process::Command::new("curl")
            .args(["-s", "--max-time", "20", "-i", "-x", &proxy, url])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        (head.to_owned(), body.to_owned())
    };
    let (head, body) = curl("http://site.grid/");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "<h1>hello from the grid</h1>");
    let (head, body) = curl("http://site.grid/docs/a.txt");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "a page inside");
    let (head, _) = curl("http://site.grid/docs/a.txt");
    assert!(head.contains("X-Cache-Status: HIT"), "{head}");
    // A directory without its slash redirects within the name.
    let (head, _) = curl("http://site.grid/docs");
    assert!(head.contains("Location: /docs/"), "{head}");
    // By CID on any host, and names that have no content.
    let (head, body) = curl(&format!("http://localhost/ipfs/{cid}/docs/a.txt"));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "a page inside");
    let (head, body) = curl("http://nobody.grid/");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    assert!(body.contains("nobody is not registered"), "{body}");
    // Purge by CID: every response served from the DAG goes (by name and
    // by /ipfs/ path); its blocks stay, since `put` pinned them.
    let (code, body) = common::http(edge.admin, "POST", &format!("/cache/purge?cid={cid}"), b"");
    let purged: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(code, 200, "{purged}");
    assert!(purged["responses"].as_u64().unwrap() >= 3, "{purged}");
    assert_eq!(
        (&purged["blocks"], &purged["pinned"]),
        (&serde_json::json!(0), &serde_json::json!(true)),
        "{purged}"
    );
    for url in [
        "http://site.grid/docs/a.txt".to_owned(),
        format!("http://localhost/ipfs/{cid}/docs/a.txt"),
    ] {
        let (head, body) = curl(&url);
        assert!(head.contains("X-Cache-Status: MISS"), "{url}: {head}");
        assert_eq!(body, "a page inside");
    }
    let (code, body) = common::http(edge.admin, "POST", "/cache/purge?cid=nonsense", b"");
    assert_eq!(code, 400);
    assert!(String::from_utf8_lossy(&body).contains("nonsense"));
}

/// HTTPS for a registry name: the local CA issues its certificate on
/// demand, curl trusts it with the CA file, and the name's content comes
/// back through the proxy; a name this edge does not serve gets no
/// certificate.
#[test]
fn a_name_is_served_over_https_with_a_certificate_from_the_local_ca() {
    let dir = tempfile::tempdir().unwrap();
    let genesis = quick_genesis(dir.path());
    let edge = EdgeBuilder::new()
        .ip("127.0.45.1")
        .tls()
        .extra(&format!("[registry]\ngenesis = {genesis:?}"))
        .start();
    let (key, _) = keygen(&edge, "site.key");
    let site = edge.dir.path().join("site");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(site.join("index.html"), "<h1>over TLS</h1>").unwrap();
    let cid = common::put(&edge, &[site.to_str().unwrap()])[0].clone();
    ok(name(
        &edge,
        &["register", "tls.grid", "--key", &key, "--content", &cid],
    ));
    let ca = edge.data_dir().join("certs/ca.crt");
    let port = edge.https.port();
    let curl = |host: &str| {
        std::process::Command::new("curl")
            .args(["-s", "--max-time", "20", "--cacert"])
            .arg(&ca)
            .arg("--resolve")
            .arg(format!("{host}:{port}:127.0.45.1"))
            .arg(format!("https://{host}:{port}/"))
            .output()
            .unwrap()
    };
    let out = curl("tls.grid");
    assert!(
        out.status.success(),
        "curl: {:?}\n{}",
        out.status,
        edge.log()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "<h1>over TLS</h1>");
    // Issued once, then reused, and HTTP/2 when the client offers it (ALPN).
    let h2 = std::process::Command::new("curl")
        .args(["-s", "--http2", "-o", "/dev/null", "-w", "%{http_version}"])
        .args(["--max-time", "20", "--cacert"])
        .arg(&ca)
        .arg("--resolve")
        .arg(format!("tls.grid:{port}:127.0.45.1"))
        .arg(format!("https://tls.grid:{port}/"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&h2.stdout), "2", "{}", edge.log());
    assert_eq!(
        edge.log().matches("issued a certificate").count(),
        1,
        "{}",
        edge.log()
    );
    let out = curl("elsewhere.example");
    assert!(
        !out.status.success(),
        "a certificate for a name it does not serve"
    );
}
