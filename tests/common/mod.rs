//! Test harness: starts the real `gridedge` binary (and real Unbound) on
//! loopback ports, and queries them with real clients.

#![allow(dead_code)]

pub mod origin;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A port free for both UDP and TCP on `ip`.
pub fn free_port(ip: &str) -> u16 {
    let ip: IpAddr = ip.parse().unwrap();
    for _ in 0..100 {
        let udp = UdpSocket::bind((ip, 0)).unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind((ip, port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on {ip}");
}

/// A running edge; killed when dropped.
pub struct Edge {
    child: Child,
    config: PathBuf,
    pub dir: tempfile::TempDir,
    pub dns: SocketAddr,
    pub admin: SocketAddr,
    pub dot: SocketAddr,
    pub doh: SocketAddr,
    /// The HTTP gateway (`[edge] http_listen`).
    pub http: SocketAddr,
    /// The HTTP proxy (`[edge] proxy_listen`).
    pub proxy: SocketAddr,
    /// The HTTPS front (`[edge] https_listen`), on with `.tls()`.
    pub https: SocketAddr,
    /// The overlay's listen address (`[overlay] listen`), a multiaddr.
    pub overlay: String,
    log: PathBuf,
}

/// What to start an edge with.
pub struct EdgeBuilder {
    ip: String,
    zones: Vec<(String, String)>,
    extra: String,
    dns_extra: String,
    edge_extra: String,
    overlay_extra: String,
    tls: bool,
}

impl EdgeBuilder {
    pub fn new() -> Self {
        Self {
            ip: "127.0.0.1".into(),
            zones: Vec::new(),
            extra: String::new(),
            dns_extra: String::new(),
            edge_extra: String::new(),
            overlay_extra: String::new(),
            tls: false,
        }
    }
    /// The loopback address every listener binds (127.0.0.1 by default).
    pub fn ip(mut self, ip: &str) -> Self {
        self.ip = ip.into();
        self
    }
    /// Adds `zones/NAME` with `text`.
    pub fn zone(mut self, name: &str, text: &str) -> Self {
        self.zones.push((name.into(), text.into()));
        self
    }
    /// Extra keys for the `[dns]` table.
    pub fn dns(mut self, toml: &str) -> Self {
        self.dns_extra.push_str(toml);
        self.dns_extra.push('\n');
        self
    }
    /// Extra keys for the `[edge]` table.
    pub fn edge(mut self, toml: &str) -> Self {
        self.edge_extra.push_str(toml);
        self.edge_extra.push('\n');
        self
    }
    /// Extra keys for the `[overlay]` table (`bootstrap = [...]`).
    pub fn overlay(mut self, toml: &str) -> Self {
        self.overlay_extra.push_str(toml);
        self.overlay_extra.push('\n');
        self
    }
    /// Extra tables appended to the config.
    pub fn extra(mut self, toml: &str) -> Self {
        self.extra.push_str(toml);
        self.extra.push('\n');
        self
    }
    /// Makes a dev certificate and turns on DoT and DoH.
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }
    pub fn start(self) -> Edge {
        let dir = tempfile::tempdir().unwrap();
        let zones = dir.path().join("zones");
        std::fs::create_dir_all(&zones).unwrap();
        for (name, text) in &self.zones {
            std::fs::write(zones.join(name), text).unwrap();
        }
        let ip = &self.ip;
        let dns: SocketAddr = format!("{ip}:{}", free_port(ip)).parse().unwrap();
        let admin: SocketAddr = format!("{ip}:{}", free_port(ip)).parse().unwrap();
        let dot: SocketAddr = format!("{ip}:{}", free_port(ip)).parse().unwrap();
        let doh: SocketAddr = format!("{ip}:{}", free_port(ip)).parse().unwrap();
        let http: SocketAddr = format!("{ip}:{}", free_port(ip)).parse().unwrap();
        let proxy: SocketAddr = format!("{ip}:{}", free_port(ip)).parse().unwrap();
        let https: SocketAddr = format!("{ip}:{}", free_port(ip)).parse().unwrap();
        let overlay = format!("/ip4/{ip}/tcp/{}", free_port(ip));
        let data = dir.path().join("data");
        if self.tls {
            let out = gridedge(&["cert", "dev", "--data-dir", data.to_str().unwrap()]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let config = format!(
            "data_dir = {data:?}\n[log]\nlevel = \"info,gridedge=debug\"\n\
             [dns]\nlisten_udp = [\"{dns}\"]\nlisten_tcp = [\"{dns}\"]\n\
             listen_tls = [\"{dot}\"]\nlisten_https = [\"{doh}\"]\nzones_dir = {zones:?}\n{}\n\
             [admin]\nlisten = \"{admin}\"\n[edge]\nhttp_listen = \"{http}\"\nproxy_listen = \"{proxy}\"\nhttps_listen = \"{https}\"\n{}\n\
             [overlay]\nlisten = [\"{overlay}\"]\n{}\n{}",
            self.dns_extra, self.edge_extra, self.overlay_extra, self.extra
        );
        let config_path = dir.path().join("gridedge.toml");
        std::fs::write(&config_path, config).unwrap();
        let log = dir.path().join("edge.log");
        let child = spawn_edge(&config_path, &log);
        let mut edge = Edge {
            child,
            config: config_path,
            dir,
            dns,
            admin,
            dot,
            doh,
            http,
            proxy,
            https,
            overlay,
            log,
        };
        edge.wait_ready();
        edge
    }
}

fn spawn_edge(config: &Path, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_gridedge"))
        .args(["run", "--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

impl Edge {
    /// Kills the edge with SIGKILL (no chance to clean up), then starts it
    /// again on the same config and data, and waits until it is ready.
    pub fn kill9_and_restart(&mut self) {
        self.kill9();
        self.restart();
    }

    /// Kills the edge with SIGKILL and waits for it to be gone.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        // A marker so wait_ready looks for the new process's "ready".
        std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .and_then(|mut f| writeln!(f, "--- killed with SIGKILL ---"))
            .unwrap();
    }

    /// Starts a killed edge again on the same config and data, and waits
    /// until it is ready.
    pub fn restart(&mut self) {
        self.child = spawn_edge(&self.config, &self.log);
        self.wait_ready();
    }

    /// The config file the edge runs with.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The HTTP gateway's URL, for `--from`.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// The admin API's URL, for `--admin`.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin)
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("edge exited with {status}:\n{}", self.log());
            }
            let log = self.log();
            let since_restart = log
                .rsplit("--- killed with SIGKILL ---")
                .next()
                .unwrap_or("");
            if since_restart.contains("ready") && http_get(self.admin, "/health").is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("edge not ready after 20 s:\n{}", self.log());
    }

    /// What the edge logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `dig @edge -p PORT ARGS… +tries=1 +time=3`, stdout.
    pub fn dig(&self, args: &[&str]) -> String {
        dig(self.dns, args)
    }

    /// `dig +short` lines.
    pub fn dig_short(&self, args: &[&str]) -> Vec<String> {
        let mut a = args.to_vec();
        a.push("+short");
        self.dig(&a).lines().map(str::to_owned).collect()
    }

    /// The Prometheus text of `/metrics`.
    pub fn metrics(&self) -> String {
        http_get(self.admin, "/metrics").expect("metrics")
    }

    /// The value of one metric line (exact name with labels).
    pub fn metric(&self, name: &str) -> f64 {
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Sends SIGTERM and waits for the exit status and the full log.
    pub fn terminate(mut self) -> (std::process::ExitStatus, String) {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return (s, self.log());
            }
            assert!(Instant::now() < deadline, "no exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the gridedge binary with `args` to completion.
pub fn gridedge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gridedge"))
        .args(args)
        .output()
        .unwrap()
}

/// `dig @SERVER -p PORT ARGS… +tries=1 +time=3`, stdout.
pub fn dig(server: SocketAddr, args: &[&str]) -> String {
    let out = Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string(), "+tries=1", "+time=3"])
        .args(args)
        .output()
        .expect("dig is installed (scripts/test.sh installs dnsutils)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The status of a dig answer (NOERROR, NXDOMAIN, ...), or "TIMEOUT".
pub fn status(dig_output: &str) -> String {
    dig_output
        .lines()
        .find_map(|l| l.split("status: ").nth(1))
        .map(|s| s.split(',').next().unwrap().to_owned())
        .unwrap_or_else(|| "TIMEOUT".into())
}

/// A minimal HTTP/1.1 request: the status code and the body.
pub fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP response");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "chunked bodies are not handled here"
    );
    (code, raw[split + 4..].to_vec())
}

/// A minimal HTTP/1.1 GET; the body on 200.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    if !text.starts_with("HTTP/1.1 200") {
        return None;
    }
    text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())
}

/// A real Unbound on loopback serving `local_data` lines; killed on drop.
pub struct Unbound {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Unbound {
    pub fn start(ip: &str, local_zone: &str, local_data: &[&str]) -> Unbound {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port(ip);
        let data: String = local_data
            .iter()
            .map(|d| format!("  local-data: \"{d}\"\n"))
            .collect();
        let conf = format!(
            "server:\n  interface: {ip}\n  port: {port}\n  do-daemonize: no\n  use-syslog: no\n\
             logfile: \"\"\n  username: \"\"\n  chroot: \"\"\n  directory: \"{dir}\"\n  pidfile: \"\"\n\
             access-control: 127.0.0.0/8 allow\n  num-threads: 1\n  do-ip6: no\n\
             local-zone: \"{local_zone}\" static\n{data}\
             remote-control:\n  control-enable: no\n",
            dir = dir.path().display()
        );
        let conf_path = dir.path().join("unbound.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new(unbound_bin())
            .args(["-d", "-c", conf_path.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("unbound is installed (scripts/test.sh installs it)");
        let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while status(&dig(addr, &["+time=1", local_zone, "SOA"])) != "NOERROR" {
            assert!(Instant::now() < deadline, "unbound did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Unbound {
            child,
            addr,
            _dir: dir,
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Unbound {
    fn drop(&mut self) {
        self.kill();
    }
}

fn unbound_bin() -> &'static str {
    if Path::new("/usr/sbin/unbound").exists() {
        "/usr/sbin/unbound"
    } else {
        "unbound"
    }
}

/// The sample zone most tests serve.
pub const EXAMPLE_ZONE: &str = "$TTL 300
@       IN SOA  ns.example.test. hostmaster.example.test. 1 7200 3600 1209600 300
@       IN NS   ns
@       IN MX   10 mail
@       IN TXT  \"v=spf1 mx -all\"
ns      IN A    127.0.0.1
mail    IN A    127.0.0.1
www     IN A    127.0.0.1
www     IN AAAA ::1
web     IN CNAME www
alias   IN CNAME web
*.apps  IN A    127.0.0.2
";

/// Bytes that do not compress or repeat, so every leaf is distinct.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The stdout of a command that must succeed; its stderr in the panic.
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "command failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `gridedge put ARGS… --admin EDGE`: the output lines (CID, and the key
/// line of `--encrypt`).
pub fn put(edge: &Edge, args: &[&str]) -> Vec<String> {
    let mut all = vec!["put"];
    all.extend_from_slice(args);
    let url = edge.admin_url();
    all.extend_from_slice(&["--admin", &url]);
    ok(gridedge(&all)).lines().map(str::to_owned).collect()
}
