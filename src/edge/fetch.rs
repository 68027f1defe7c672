//! The verifying fetcher: pulls a DAG (`?format=car`) or one block
//! (`?format=raw`) from another edge's gateway and trusts nothing it is
//! sent. Every block is hashed against its CID as it streams in
//! (`car::CarReader`), must be one the DAG so far links to (a peer cannot
//! slip in blocks nobody asked for), and the DAG must be complete when the
//! stream ends. Only then is the batch committed to the store.
//!
//! Errors say whose fault a failure was ([`Fault`]): a peer that sent wrong
//! data is a bad peer (the overlay will count it against its reputation),
//! one that is down or lacks the content is only unavailable, and either
//! way the caller moves on to the next holder.

use std::collections::HashSet;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::content::block::Block;
use crate::content::car::{CarError, CarReader};
use crate::content::cid::Codec;
use crate::content::dagpb::{MAX_BLOCK_BYTES, PbNode};
use crate::content::store::StoreError;
use crate::content::{BlockStore, Cid};

/// Most blocks a DAG being fetched may link to that have not arrived yet:
/// four million raw leaves is a terabyte, more than any store here holds.
const MAX_PENDING: usize = 4 << 20;

/// Most bytes of an error body kept for the message.
const MAX_ERROR_BODY_BYTES: usize = 4096;

/// Whose fault a failed fetch was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The peer sent something wrong: a block that is not what its CID
    /// says, one the DAG does not link to, a CAR cut short or malformed.
    Peer,
    /// The peer could not be reached, was too slow, or does not have it.
    Unavailable,
    /// This side: a bad URL or CID, or the local store failed.
    Local,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Fault::Peer => "the peer sent bad data",
            Fault::Unavailable => "the peer is unavailable",
            Fault::Local => "a local problem",
        })
    }
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The peer URL is not `http://HOST[:PORT][/PATH]`.
    #[error("`{url}` is not a peer URL like http://127.0.0.1:8080: {reason}")]
    BadUrl {
        /// What was given.
        url: String,
        /// Why.
        reason: &'static str,
    },
    /// No connection could be made.
    #[error("cannot reach {peer}: {source}")]
    Unreachable {
        /// The peer.
        peer: String,
        /// The OS error.
        source: io::Error,
    },
    /// The peer sent nothing for too long.
    #[error("{peer} sent nothing for {timeout:?} while {doing}")]
    Timeout {
        /// The peer.
        peer: String,
        /// What was being waited for.
        doing: &'static str,
        /// The bound.
        timeout: Duration,
    },
    /// The HTTP exchange broke (connection reset, malformed HTTP).
    #[error("{peer}: the HTTP exchange failed: {message}")]
    Http {
        /// The peer.
        peer: String,
        /// What hyper or the socket said.
        message: String,
    },
    /// The peer does not have it (404).
    #[error("{peer} does not have {cid}")]
    NotFound {
        /// The peer.
        peer: String,
        /// What was asked for.
        cid: Cid,
    },
    /// The peer answered another error status.
    #[error("{peer} answered {status}: {message}")]
    Status {
        /// The peer.
        peer: String,
        /// The status code.
        status: u16,
        /// The start of the body.
        message: String,
    },
    /// The answer is not the media type asked for.
    #[error("{peer} answered with Content-Type {content_type:?}, not {expected}")]
    WrongType {
        /// The peer.
        peer: String,
        /// What it sent.
        content_type: String,
        /// What was asked for.
        expected: &'static str,
    },
    /// The CAR is malformed, or a block in it does not match its CID.
    #[error("{peer} sent a bad CAR: {source}")]
    BadCar {
        /// The peer.
        peer: String,
        /// What is wrong (boxed: a CAR error is large and rare).
        source: Box<CarError>,
    },
    /// The CAR's root is not the CID asked for.
    #[error("{peer} sent a CAR for {got:?}, not {expected}")]
    WrongRoot {
        /// The peer.
        peer: String,
        /// What was asked for.
        expected: Cid,
        /// The CAR's roots.
        got: Vec<Cid>,
    },
    /// A block that no block received so far links to.
    #[error("{peer} sent block {cid}, which is not part of the DAG asked for")]
    Unexpected {
        /// The peer.
        peer: String,
        /// The block.
        cid: Cid,
    },
    /// A dag-pb block (its hash right) that does not decode.
    #[error("{peer} sent block {cid}, which is not a valid dag-pb node")]
    BadNode {
        /// The peer.
        peer: String,
        /// The block.
        cid: Cid,
    },
    /// The stream ended before the DAG was complete.
    #[error("{peer} ended the CAR with {missing} blocks of the DAG missing, e.g. {example}")]
    Incomplete {
        /// The peer.
        peer: String,
        /// How many.
        missing: usize,
        /// One of them.
        example: Cid,
    },
    /// A raw block does not match its CID.
    #[error("{peer} sent a block that does not match {cid}")]
    BadBlock {
        /// The peer.
        peer: String,
        /// What was asked for.
        cid: Cid,
    },
    /// The peer sent more than the bound.
    #[error("{peer} sent more than {max} bytes")]
    TooLarge {
        /// The peer.
        peer: String,
        /// The bound.
        max: u64,
    },
    /// The local store failed.
    #[error("the local store: {0}")]
    Store(#[from] StoreError),
}

impl FetchError {
    /// Whose fault it was.
    pub fn fault(&self) -> Fault {
        match self {
            FetchError::BadUrl { .. } | FetchError::Store(_) => Fault::Local,
            FetchError::Unreachable { .. }
            | FetchError::Timeout { .. }
            | FetchError::Http { .. }
            | FetchError::NotFound { .. }
            | FetchError::Status { .. } => Fault::Unavailable,
            FetchError::WrongType { .. }
            | FetchError::BadCar { .. }
            | FetchError::WrongRoot { .. }
            | FetchError::Unexpected { .. }
            | FetchError::BadNode { .. }
            | FetchError::Incomplete { .. }
            | FetchError::BadBlock { .. }
            | FetchError::TooLarge { .. } => Fault::Peer,
        }
    }
}

/// A peer edge's gateway: `http://HOST[:PORT][/PATH]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerUrl {
    /// `host:port`, for connecting and `Host:`.
    authority: String,
    /// A path prefix without a trailing `/` (usually empty).
    base: String,
    /// As given, for messages.
    text: String,
}

impl PeerUrl {
    /// Parses a peer URL. Only `http://`: the data plane checks every
    /// block by hash, so TLS would add privacy, not integrity (it comes with
    /// the edge's certificates later).
    pub fn parse(url: &str) -> Result<PeerUrl, FetchError> {
        let bad = |reason| FetchError::BadUrl {
            url: url.chars().take(256).collect(),
            reason,
        };
        let uri: Uri = url.parse().map_err(|_| bad("it does not parse as a URL"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => return Err(bad("https peers are not supported yet; use http://")),
            _ => return Err(bad("it must start with http://")),
        }
        let host = uri.host().ok_or_else(|| bad("it has no host"))?;
        let port = uri.port_u16().unwrap_or(80);
        if uri.query().is_some() {
            return Err(bad("it must not have a query"));
        }
        let authority = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(PeerUrl {
            authority,
            base: uri.path().trim_end_matches('/').to_owned(),
            text: url.trim_end_matches('/').to_owned(),
        })
    }
}

impl std::fmt::Display for PeerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// What a DAG fetch brought in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FetchSummary {
    /// Distinct blocks received and stored.
    pub blocks: u64,
    /// Bytes of those blocks.
    pub bytes: u64,
}

/// A callback told of every block's size as it is stored.
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// Fetches from peer gateways.
#[derive(Debug, Clone)]
pub struct Fetcher {
    idle_timeout: Duration,
    max_bytes: u64,
    only_if_cached: bool,
}

impl Fetcher {
    /// A fetcher that gives up on a peer silent for `idle_timeout` and
    /// takes at most `max_bytes` of CAR from one.
    pub fn new(idle_timeout: Duration, max_bytes: u64) -> Fetcher {
        Fetcher {
            idle_timeout,
            max_bytes,
            only_if_cached: false,
        }
    }

    /// Asks with `Cache-Control: only-if-cached` (RFC 9111 section
    /// 5.2.1.7): the peer answers from what it has and does not fetch on a
    /// miss itself, so an edge asking a holder starts no chain of fetches.
    pub fn only_if_cached(mut self) -> Fetcher {
        self.only_if_cached = true;
        self
    }

    /// Fetches the whole DAG under `root` from `peer` into `store`,
    /// verified block by block and complete, and pins it if asked.
    pub async fn fetch_dag(
        &self,
        peer: &PeerUrl,
        root: &Cid,
        store: Arc<BlockStore>,
        pin: bool,
        progress: Option<Progress>,
    ) -> Result<FetchSummary, FetchError> {
        let path = format!("{}/ipfs/{root}?format=car&dag-scope=all", peer.base);
        let response = self
            .get(
                peer,
                &path,
                "application/vnd.ipld.car; version=1; order=dfs; dups=n",
            )
            .await?;
        let response = self.check_status(peer, root, response).await?;
        check_type(peer, &response, "application/vnd.ipld.car")?;
        let body = self.body_stream(peer, response.into_body());
        let reader = SyncIoBridge::new(StreamReader::new(body));
        let peer_name = peer.to_string();
        let root = *root;
        let verified = tokio::task::spawn_blocking(move || {
            verify_car(&peer_name, reader, &root, &store, pin, progress)
        })
        .await;
        match verified {
            Ok(result) => result,
            Err(e) => Err(FetchError::Http {
                peer: peer.to_string(),
                message: format!("the verifier stopped: {e}"),
            }),
        }
    }

    /// Fetches one block from `peer` and checks it against `cid`.
    pub async fn fetch_block(&self, peer: &PeerUrl, cid: &Cid) -> Result<Block, FetchError> {
        let path = format!("{}/ipfs/{cid}?format=raw", peer.base);
        let response = self.get(peer, &path, "application/vnd.ipld.raw").await?;
        let response = self.check_status(peer, cid, response).await?;
        check_type(peer, &response, "application/vnd.ipld.raw")?;
        let mut body = self.body_stream(peer, response.into_body());
        let mut data = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| io_to_fetch(peer.to_string(), e))?;
            if data.len() + chunk.len() > MAX_BLOCK_BYTES {
                return Err(FetchError::TooLarge {
                    peer: peer.to_string(),
                    max: MAX_BLOCK_BYTES as u64,
                });
            }
            data.extend_from_slice(&chunk);
        }
        Block::verified(*cid, data).map_err(|_| FetchError::BadBlock {
            peer: peer.to_string(),
            cid: *cid,
        })
    }

    async fn get(
        &self,
        peer: &PeerUrl,
        path: &str,
        accept: &str,
    ) -> Result<Response<Incoming>, FetchError> {
        let timeout = |doing| FetchError::Timeout {
            peer: peer.to_string(),
            doing,
            timeout: self.idle_timeout,
        };
        let http = |e: &dyn std::fmt::Display| FetchError::Http {
            peer: peer.to_string(),
            message: e.to_string(),
        };
        let stream = tokio::time::timeout(
            self.idle_timeout,
            tokio::net::TcpStream::connect(&peer.authority),
        )
        .await
        .map_err(|_| timeout("connecting"))?
        .map_err(|source| FetchError::Unreachable {
            peer: peer.to_string(),
            source,
        })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| http(&e))?;
        // The connection task ends with the response body (or an error).
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut request = Request::get(path)
            .header(hyper::header::HOST, &peer.authority)
            .header(hyper::header::ACCEPT, accept);
        if self.only_if_cached {
            request = request.header(hyper::header::CACHE_CONTROL, "only-if-cached");
        }
        let request = request.body(Empty::<Bytes>::new()).map_err(|e| http(&e))?;
        tokio::time::timeout(self.idle_timeout, sender.send_request(request))
            .await
            .map_err(|_| timeout("waiting for the response"))?
            .map_err(|e| http(&e))
    }

    async fn check_status(
        &self,
        peer: &PeerUrl,
        cid: &Cid,
        response: Response<Incoming>,
    ) -> Result<Response<Incoming>, FetchError> {
        let status = response.status();
        if status == StatusCode::OK {
            return Ok(response);
        }
        if status == StatusCode::NOT_FOUND {
            return Err(FetchError::NotFound {
                peer: peer.to_string(),
                cid: *cid,
            });
        }
        // The start of the body says why; a slow or endless body is cut off.
        let mut body = self.body_stream(peer, response.into_body());
        let mut text = Vec::new();
        while let Some(Ok(chunk)) = body.next().await {
            text.extend_from_slice(&chunk);
            if text.len() >= MAX_ERROR_BODY_BYTES {
                text.truncate(MAX_ERROR_BODY_BYTES);
                break;
            }
        }
        Err(FetchError::Status {
            peer: peer.to_string(),
            status: status.as_u16(),
            message: String::from_utf8_lossy(&text).trim_end().to_owned(),
        })
    }

    /// The body's data as a stream of chunks, each awaited for at most the
    /// idle timeout, and cut off past `max_bytes`.
    fn body_stream(
        &self,
        peer: &PeerUrl,
        body: Incoming,
    ) -> impl futures_util::Stream<Item = io::Result<Bytes>> + Send + Unpin + 'static {
        let idle = self.idle_timeout;
        let max = self.max_bytes;
        let peer = peer.to_string();
        Box::pin(futures_util::stream::unfold(
            (body, 0u64, false),
            move |(mut body, seen, done)| {
                let peer = peer.clone();
                async move {
                    if done {
                        return None;
                    }
                    loop {
                        let frame = match tokio::time::timeout(idle, body.frame()).await {
                            Err(_) => {
                                let e = io::Error::new(
                                    io::ErrorKind::TimedOut,
                                    format!("{peer} sent nothing for {idle:?}"),
                                );
                                return Some((Err(e), (body, seen, true)));
                            }
                            Ok(None) => return None,
                            Ok(Some(Err(e))) => {
                                return Some((Err(io::Error::other(e)), (body, seen, true)));
                            }
                            Ok(Some(Ok(frame))) => frame,
                        };
                        let Ok(data) = frame.into_data() else {
                            continue; // trailers
                        };
                        let seen = seen + data.len() as u64;
                        if seen > max {
                            let e =
                                io::Error::new(io::ErrorKind::FileTooLarge, TooLargeMarker(max));
                            return Some((Err(e), (body, seen, true)));
                        }
                        return Some((Ok(data), (body, seen, false)));
                    }
                }
            },
        ))
    }
}

/// Marks the IO error `body_stream` raises past the byte bound.
#[derive(Debug)]
struct TooLargeMarker(u64);

impl std::fmt::Display for TooLargeMarker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "more than {} bytes", self.0)
    }
}

impl std::error::Error for TooLargeMarker {}

/// An IO error from the body stream, as a fetch error.
fn io_to_fetch(peer: String, e: io::Error) -> FetchError {
    if let Some(TooLargeMarker(max)) = e.get_ref().and_then(|i| i.downcast_ref()) {
        return FetchError::TooLarge { peer, max: *max };
    }
    // A timeout's message already says who was silent and for how long.
    FetchError::Http {
        peer,
        message: e.to_string(),
    }
}

fn check_type(
    peer: &PeerUrl,
    response: &Response<Incoming>,
    expected: &'static str,
) -> Result<(), FetchError> {
    let content_type = response
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim();
    if media.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(FetchError::WrongType {
            peer: peer.to_string(),
            content_type: content_type.chars().take(128).collect(),
            expected,
        })
    }
}

/// Reads a CAR, checking every block, and stores the DAG under `root` if
/// it arrives whole.
fn verify_car(
    peer: &str,
    reader: impl io::Read,
    root: &Cid,
    store: &BlockStore,
    pin: bool,
    progress: Option<Progress>,
) -> Result<FetchSummary, FetchError> {
    let car_err = |source: CarError| match source {
        CarError::Io(e) => io_to_fetch(peer.to_owned(), e),
        CarError::Store(e) => FetchError::Store(e),
        source => FetchError::BadCar {
            peer: peer.to_owned(),
            source: Box::new(source),
        },
    };
    let mut car = CarReader::new(reader).map_err(car_err)?;
    let root = root.to_v1();
    if car.roots().len() != 1 || car.roots()[0].to_v1() != root {
        return Err(FetchError::WrongRoot {
            peer: peer.to_owned(),
            expected: root,
            got: car.roots().to_vec(),
        });
    }
    // Blocks linked to and not yet seen; a block is taken only if it is one
    // of them, so the peer cannot fill the store with anything else.
    let mut pending = HashSet::from([root]);
    let mut received = HashSet::new();
    let mut summary = FetchSummary::default();
    let mut session = store.session();
    while let Some(block) = car.next_block().map_err(car_err)? {
        let cid = block.cid().to_v1();
        if received.contains(&cid) {
            continue;
        }
        if !pending.remove(&cid) {
            return Err(FetchError::Unexpected {
                peer: peer.to_owned(),
                cid,
            });
        }
        if cid.codec() == Codec::DagPb {
            let node = PbNode::decode(block.data()).map_err(|_| FetchError::BadNode {
                peer: peer.to_owned(),
                cid,
            })?;
            for link in node.links {
                let child = link.cid.to_v1();
                if !received.contains(&child) {
                    pending.insert(child);
                }
            }
            if pending.len() > MAX_PENDING {
                return Err(FetchError::TooLarge {
                    peer: peer.to_owned(),
                    max: MAX_PENDING as u64,
                });
            }
        }
        session.put(&block)?;
        received.insert(cid);
        summary.blocks += 1;
        summary.bytes += block.data().len() as u64;
        if let Some(progress) = &progress {
            progress(block.data().len() as u64);
        }
    }
    if let Some(example) = pending.iter().next() {
        return Err(FetchError::Incomplete {
            peer: peer.to_owned(),
            missing: pending.len(),
            example: *example,
        });
    }
    session.commit()?;
    if pin {
        store.pin(&root)?;
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_urls() {
        let p = PeerUrl::parse("http://127.0.0.1:8080/").unwrap();
        assert_eq!(p.authority, "127.0.0.1:8080");
        assert_eq!(p.base, "");
        let p = PeerUrl::parse("http://edge.example/gw").unwrap();
        assert_eq!(p.authority, "edge.example:80");
        assert_eq!(p.base, "/gw");
        let p = PeerUrl::parse("http://[::1]:9/").unwrap();
        assert_eq!(p.authority, "[::1]:9");
        for bad in ["https://x", "ftp://x", "x:80", "http://x/?a=b", ""] {
            assert!(
                matches!(PeerUrl::parse(bad), Err(FetchError::BadUrl { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_car_with_a_stranger_or_a_gap_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = BlockStore::open(dir.path(), 64 << 20).unwrap();
        let data = vec![7u8; 600 * 1024];
        let src_dir = tempfile::tempdir().unwrap();
        let (src, _) = BlockStore::open(src_dir.path(), 64 << 20).unwrap();
        let root = crate::content::import_reader(&src, &data[..], &Default::default()).unwrap();
        let mut car = Vec::new();
        crate::content::car::export(&src, &root, &mut car).unwrap();
        // Whole: accepted.
        let summary = verify_car("p", &car[..], &root, &store, true, None).unwrap();
        assert!(summary.blocks >= 2);
        // Another root: refused.
        let other = Cid::hash_of(Codec::Raw, b"other");
        assert!(matches!(
            verify_car("p", &car[..], &other, &store, false, None),
            Err(FetchError::WrongRoot { .. })
        ));
        // Cut after the header and first block: incomplete.
        let mut cut = crate::content::car::encode_header(&[root]);
        let mut r = CarReader::new(&car[..]).unwrap();
        let first = r.next_block().unwrap().unwrap();
        let cid_bytes = first.cid().to_bytes();
        crate::content::cid::put_varint(&mut cut, (cid_bytes.len() + first.data().len()) as u64);
        cut.extend_from_slice(&cid_bytes);
        cut.extend_from_slice(first.data());
        let err = verify_car("p", &cut[..], &root, &store, false, None).unwrap_err();
        assert!(matches!(err, FetchError::Incomplete { .. }), "{err}");
        assert_eq!(err.fault(), Fault::Peer);
        // A stranger block (valid hash, not linked): refused.
        let stranger = Block::new(Codec::Raw, b"not part of it".to_vec());
        let mut extra = cut.clone();
        let sb = stranger.cid().to_bytes();
        crate::content::cid::put_varint(&mut extra, (sb.len() + stranger.data().len()) as u64);
        extra.extend_from_slice(&sb);
        extra.extend_from_slice(stranger.data());
        let err = verify_car("p", &extra[..], &root, &store, false, None).unwrap_err();
        assert!(matches!(err, FetchError::Unexpected { .. }), "{err}");
    }
}
