//! An HTTP/1.1 origin server run by a test on loopback, for the proxy's
//! tests: it answers from a route function and records every request.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A request the origin saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    /// The client's address.
    pub from: std::net::IpAddr,
}

/// An HTTP/1.1 origin on loopback that answers from `route` and records
/// every request; `down()` closes its listener (connections refused).
pub struct Origin {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    down: Arc<AtomicBool>,
}

pub type Route = fn(&Seen, usize) -> (u16, Vec<(String, String)>, Vec<u8>);

impl Origin {
    pub fn start(ip: &str, route: Route) -> Origin {
        let listener = TcpListener::bind((ip, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let down = Arc::new(AtomicBool::new(false));
        let (s, d) = (seen.clone(), down.clone());
        std::thread::spawn(move || {
            while !d.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (s, d) = (s.clone(), d.clone());
                        std::thread::spawn(move || serve(stream, &s, &d, route));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Origin { addr, seen, down }
    }

    /// Requests from `ip`.
    pub fn count_from(&self, ip: std::net::IpAddr) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.from == ip)
            .count()
    }

    pub fn count(&self, path: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path == path)
            .count()
    }

    pub fn last(&self, path: &str) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|s| s.path == path)
            .cloned()
            .unwrap()
    }

    pub fn down(&self) {
        self.down.store(true, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn serve(stream: TcpStream, seen: &Mutex<Vec<Seen>>, down: &AtomicBool, route: Route) {
    stream.set_nonblocking(false).unwrap();
    let Ok(from) = stream.peer_addr().map(|a| a.ip()) else {
        return;
    };
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_owned();
        let path = parts.next().unwrap_or_default().to_owned();
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if down.load(Ordering::SeqCst) {
            // Down: kept-alive connections close unanswered too.
            return;
        }
        let request = Seen {
            method,
            path,
            headers,
            from,
        };
        let n = {
            let mut seen = seen.lock().unwrap();
            seen.push(request.clone());
            seen.iter().filter(|s| s.path == request.path).count()
        };
        let (status, headers, body) = route(&request, n);
        let mut out = format!("HTTP/1.1 {status} X\r\n");
        for (k, v) in &headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        if status != 304 {
            out.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        if request.method != "HEAD" && status != 304 {
            bytes.extend_from_slice(&body);
        }
        if writer.write_all(&bytes).is_err() {
            return;
        }
    }
}

pub fn h(k: &str, v: &str) -> (String, String) {
    (k.to_owned(), v.to_owned())
}
