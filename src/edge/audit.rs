//! Audits of the edges that hold web objects. A web object has no hash to
//! check a copy against, so this edge takes a holder's copies only once it
//! has seen one of them match the origin's: the first time a holder is
//! named for a miss, the miss goes to the origin and the holder's copy is
//! fetched beside it (only-if-cached) and compared; after that, one miss
//! in `AUDIT_ONE_IN` that a vouched holder would have served is audited
//! the same way, so a holder that turns bad is caught too. The holder
//! cannot tell an audit from an ordinary ask.
//!
//! A copy that differs from the origin's under the same validator (a
//! strong ETag, or the same Last-Modified where neither has an ETag) is a
//! lie: the holder is rated `WrongHash` in the overlay's reputation, and
//! this edge asks it nothing again. A copy that differs under another
//! validator is an older or newer version and proves nothing, nor does a
//! holder that no longer has it (504).

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use lru::LruCache;
use parking_lot::Mutex;
use pingora_http::RequestHeader;
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::net::Holder;
use crate::overlay::NodeId;

/// One miss in this many that a vouched holder would serve is audited.
pub const AUDIT_ONE_IN: u32 = 16;

/// Audits at once; a miss that finds none free is served without one.
const MAX_AUDITS: usize = 8;

/// Holders whose standing this edge remembers (the least recently named
/// are audited again when they come back).
const MAX_KNOWN: usize = 4096;

/// A holder whose audit found nothing (it had no copy, or another
/// version) is audited again after this long. (P-Grid also names the
/// peers responsible for a key among its holders, whether or not they
/// cached the URL; their audits find a 504.)
const RETEST_AFTER: Duration = Duration::from_secs(300);

/// The longest an audit's fetch from the holder may take.
const AUDIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a holder stands with this edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    /// Its first audit is under way.
    Auditing,
    /// Its audits found nothing yet; due again at this time.
    Untested(Instant),
    /// A copy of its matched the origin's.
    Vouched,
    /// A copy of its differed from the origin's under the same validator.
    Caught,
}

/// What the audits have found, per holder.
pub struct Audits {
    known: Mutex<LruCache<NodeId, Standing>>,
    permits: Arc<Semaphore>,
}

/// An audit that a miss carries out: it goes to the origin, and its
/// response is compared with `holder`'s copy afterwards.
pub struct Audit {
    /// The holder audited.
    pub holder: Holder,
    /// Whether it was vouched for before (a spot check).
    spot: bool,
    _permit: OwnedSemaphorePermit,
}

/// The outcome of an audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The holder's copy is the origin's, byte for byte.
    Verified,
    /// The holder's copy is not the origin's, under the same validator.
    Lie,
    /// Another version, or the holder has it no longer: no finding.
    Inconclusive,
    /// The holder could not be reached or broke off.
    Failed,
}

impl Verdict {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Verified => "verified",
            Verdict::Lie => "lie",
            Verdict::Inconclusive => "inconclusive",
            Verdict::Failed => "failed",
        }
    }
}

impl Default for Audits {
    fn default() -> Self {
        Audits {
            known: Mutex::new(LruCache::new(
                NonZeroUsize::new(MAX_KNOWN).expect("not zero"),
            )),
            permits: Arc::new(Semaphore::new(MAX_AUDITS)),
        }
    }
}

impl Audits {
    /// Of `holders` (ranked, nearest first): those this edge takes copies
    /// from, and perhaps one to audit on this miss, which then goes to the
    /// origin instead. A holder never audited (or due again) is audited
    /// first; `roll` (a random number) picks the spot checks. `may_audit`
    /// is false where the miss has no body to compare (HEAD).
    pub fn choose(
        &self,
        holders: Vec<Holder>,
        roll: u32,
        may_audit: bool,
    ) -> (Vec<Holder>, Option<Audit>) {
        let now = Instant::now();
        let mut known = self.known.lock();
        let mut vouched = Vec::new();
        let mut new = None;
        for holder in holders {
            match known.get(&holder.node) {
                Some(Standing::Vouched) => vouched.push(holder),
                Some(Standing::Untested(due)) if *due <= now && new.is_none() => new = Some(holder),
                None if new.is_none() => new = Some(holder),
                _ => {}
            }
        }
        let candidate = match new {
            Some(h) => Some((h, false)),
            None if roll.is_multiple_of(AUDIT_ONE_IN) => {
                vouched.first().cloned().map(|h| (h, true))
            }
            None => None,
        };
        if may_audit
            && let Some((holder, spot)) = candidate
            && let Ok(permit) = self.permits.clone().try_acquire_owned()
        {
            if !spot {
                known.put(holder.node, Standing::Auditing);
            }
            return (
                Vec::new(),
                Some(Audit {
                    holder,
                    spot,
                    _permit: permit,
                }),
            );
        }
        (vouched, None)
    }

    /// Records what `audit` found (and an audit that could not be carried
    /// out as `Inconclusive`): a holder never vouched for is audited again
    /// later unless it was caught.
    pub fn settle(&self, audit: Audit, verdict: Verdict) {
        let mut known = self.known.lock();
        match verdict {
            Verdict::Verified => {
                known.put(audit.holder.node, Standing::Vouched);
            }
            Verdict::Lie => {
                known.put(audit.holder.node, Standing::Caught);
            }
            Verdict::Inconclusive | Verdict::Failed if !audit.spot => {
                known.put(
                    audit.holder.node,
                    Standing::Untested(Instant::now() + RETEST_AFTER),
                );
            }
            Verdict::Inconclusive | Verdict::Failed => {}
        }
    }
}

/// A response as an audit compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    status: u16,
    etag: Option<String>,
    last_modified: Option<String>,
    digest: [u8; 32],
}

/// A response being read, hashed as its body passes.
pub struct Hashing {
    status: u16,
    etag: Option<String>,
    last_modified: Option<String>,
    length: Option<u64>,
    read: u64,
    hasher: Sha256,
}

impl Hashing {
    /// Starts on a response's status and headers.
    pub fn new(status: u16, headers: &http::HeaderMap) -> Hashing {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Hashing {
            status,
            etag: header("etag"),
            last_modified: header("last-modified"),
            length: header("content-length").and_then(|l| l.parse().ok()),
            read: 0,
            hasher: Sha256::new(),
        }
    }

    /// Takes in the next piece of the body.
    pub fn update(&mut self, chunk: &[u8]) {
        self.hasher.update(chunk);
        self.read += chunk.len() as u64;
    }

    /// The copy, once the response was read without error; none if its
    /// body fell short of its Content-Length.
    pub fn finish(self) -> Option<Copy> {
        self.length.is_none_or(|l| l == self.read).then(|| Copy {
            status: self.status,
            etag: self.etag,
            last_modified: self.last_modified,
            digest: self.hasher.finalize().into(),
        })
    }
}

/// Compares the origin's copy with a holder's.
pub fn judge(origin: &Copy, held: &Copy) -> Verdict {
    if held.status != origin.status {
        return Verdict::Inconclusive;
    }
    if held.digest == origin.digest {
        return Verdict::Verified;
    }
    let strong = |e: &Option<String>| e.as_ref().filter(|e| !e.starts_with("W/")).cloned();
    let same_version = match (strong(&origin.etag), strong(&held.etag)) {
        (Some(a), Some(b)) => a == b,
        _ if origin.etag.is_none() && held.etag.is_none() => {
            origin.last_modified.is_some() && origin.last_modified == held.last_modified
        }
        _ => false,
    };
    if same_version {
        Verdict::Lie
    } else {
        Verdict::Inconclusive
    }
}

/// Headers of the client's request not passed on to an audit's ask:
/// hop-by-hop, conditional and partial requests, the client's own cache
/// directives, and those the ask sets itself.
const NOT_PASSED: [&str; 17] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "range",
    "if-range",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
    "cache-control",
    "pragma",
];

/// Asks the holder's proxy at `addr` for `url` from its cache, with the
/// client's request's headers (so a Vary response picks the same variant),
/// from the address `source` if given, and hashes what it answers,
/// reading at most `max_bytes` of body.
pub async fn fetch(
    addr: SocketAddr,
    source: Option<std::net::IpAddr>,
    url: &str,
    authority: &str,
    client: &RequestHeader,
    max_bytes: u64,
) -> Result<Copy, String> {
    tokio::time::timeout(AUDIT_TIMEOUT, async {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        };
        let socket = socket.map_err(|e| format!("cannot make a socket: {e}"))?;
        if let Some(ip) = source.filter(|ip| ip.is_ipv4() == addr.is_ipv4()) {
            socket
                .bind(SocketAddr::new(ip, 0))
                .map_err(|e| format!("cannot bind {ip}: {e}"))?;
        }
        let tcp = socket
            .connect(addr)
            .await
            .map_err(|e| format!("cannot reach {addr}: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| format!("HTTP handshake with {addr}: {e}"))?;
        tokio::spawn(conn);
        let mut req = http::Request::builder().method(http::Method::GET).uri(url);
        for (name, value) in client.headers.iter() {
            if !NOT_PASSED.contains(&name.as_str()) {
                req = req.header(name, value);
            }
        }
        let req = req
            .header(http::header::HOST, authority)
            .header(http::header::CACHE_CONTROL, "only-if-cached")
            .header(http::header::VIA, "1.1 gridedge")
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("cannot build the ask for {url}: {e}"))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        let (parts, mut body) = resp.into_parts();
        let mut hashing = Hashing::new(parts.status.as_u16(), &parts.headers);
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("{addr} broke off: {e}"))?;
            if let Some(data) = frame.data_ref() {
                hashing.update(data);
                if hashing.read > max_bytes {
                    return Err(format!("{addr} sent more than {max_bytes} bytes"));
                }
            }
        }
        hashing
            .finish()
            .ok_or_else(|| format!("{addr} sent less than its Content-Length"))
    })
    .await
    .map_err(|_| format!("{addr} did not answer in {AUDIT_TIMEOUT:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(status: u16, etag: Option<&str>, lm: Option<&str>, body: &[u8]) -> Copy {
        Copy {
            status,
            etag: etag.map(str::to_owned),
            last_modified: lm.map(str::to_owned),
            digest: Sha256::digest(body).into(),
        }
    }

    #[test]
    fn a_different_body_under_the_same_validator_is_a_lie() {
        let lm = Some("Tue, 01 Dec 2026 00:00:00 GMT");
        let origin = copy(200, Some("\"v1\""), None, b"real");
        assert_eq!(
            judge(&origin, &copy(200, Some("\"v1\""), None, b"real")),
            Verdict::Verified
        );
        assert_eq!(
            judge(&origin, &copy(200, Some("\"v1\""), None, b"fake")),
            Verdict::Lie
        );
        // Another version, a weak validator, a 504: no finding.
        assert_eq!(
            judge(&origin, &copy(200, Some("\"v2\""), None, b"fake")),
            Verdict::Inconclusive
        );
        let weak = copy(200, Some("W/\"v1\""), None, b"real");
        assert_eq!(
            judge(&weak, &copy(200, Some("W/\"v1\""), None, b"gzip")),
            Verdict::Inconclusive
        );
        assert_eq!(
            judge(&origin, &copy(504, None, None, b"")),
            Verdict::Inconclusive
        );
        // Without ETags, the same Last-Modified is the same version.
        let dated = copy(200, None, lm, b"real");
        assert_eq!(judge(&dated, &copy(200, None, lm, b"fake")), Verdict::Lie);
        assert_eq!(
            judge(&dated, &copy(200, None, None, b"fake")),
            Verdict::Inconclusive
        );
        assert_eq!(
            judge(&copy(200, None, None, b"a"), &copy(200, None, None, b"b")),
            Verdict::Inconclusive
        );
    }

    fn holder(n: u8) -> Holder {
        Holder {
            node: NodeId(u64::from(n)),
            http: String::new(),
            proxy: Some("http://127.0.0.1:1".into()),
            rtt_ms: None,
            load: Default::default(),
        }
    }

    #[test]
    fn holders_are_taken_from_once_vouched_for_and_never_once_caught() {
        let audits = Audits::default();
        let (a, b) = (holder(1), holder(2));
        // New holders: the first is audited, and nothing is served from.
        let (serve, audit) = audits.choose(vec![a.clone(), b.clone()], 1, true);
        assert!(serve.is_empty());
        let audit = audit.unwrap();
        assert_eq!(audit.holder.node, a.node);
        // While it is audited, the next miss audits the other.
        let (serve, second) = audits.choose(vec![a.clone(), b.clone()], 1, true);
        assert!(serve.is_empty());
        let second = second.unwrap();
        assert_eq!(second.holder.node, b.node);
        audits.settle(audit, Verdict::Verified);
        audits.settle(second, Verdict::Lie);
        // Vouched for: served from; caught: never asked again.
        let (serve, audit) = audits.choose(vec![b.clone(), a.clone()], 1, true);
        assert!(audit.is_none());
        assert_eq!(serve.iter().map(|h| h.node).collect::<Vec<_>>(), [a.node]);
        // A spot check of a vouched holder: an inconclusive one keeps it.
        let (serve, spot) = audits.choose(vec![a.clone()], AUDIT_ONE_IN, true);
        assert!(serve.is_empty());
        audits.settle(spot.unwrap(), Verdict::Inconclusive);
        assert_eq!(audits.choose(vec![a.clone()], 1, true).0.len(), 1);
        // A new holder whose audit found nothing is not audited again
        // until it is due.
        let c = holder(3);
        let (_, audit) = audits.choose(vec![a.clone(), c.clone()], 1, true);
        assert_eq!(audit.as_ref().unwrap().holder.node, c.node);
        audits.settle(audit.unwrap(), Verdict::Inconclusive);
        let (serve, audit) = audits.choose(vec![c.clone(), a.clone()], 1, true);
        assert!(audit.is_none());
        assert_eq!(serve.iter().map(|h| h.node).collect::<Vec<_>>(), [a.node]);
        assert!(audits.choose(vec![c.clone()], 1, true).1.is_none());
        // No audit where there is no body (HEAD).
        let (serve, audit) = audits.choose(vec![holder(4), a.clone()], 1, false);
        assert!(audit.is_none());
        assert_eq!(serve.len(), 1);
    }
}
