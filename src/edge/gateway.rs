//! The gateway: a pingora `HttpServerApp` that answers `/ipfs/<cid>[/path]`
//! from the block store, as the IPFS trustless gateway spec asks for raw
//! blocks and CARs, and as a path gateway does for files and directories.
//!
//! The store is synchronous, so every read runs on the blocking pool; a
//! body is streamed from there through a small bounded channel, so a large
//! file or DAG never sits in memory whole and a slow client slows the
//! reader instead of piling up chunks.

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::ShutdownWatch;
use pingora_http::ResponseHeader;
use tokio::sync::{Semaphore, mpsc};

use crate::admin::Metrics;
use crate::content::cid::{Codec, put_varint};
use crate::content::dagpb::PbNode;
use crate::content::read::{DirEntry, Entry, ReadError};
use crate::content::store::StoreError;
use crate::content::{BlockStore, Cid, Reader, car, list_dir, stat};
use crate::edge::mime;
use crate::edge::request::{self, DagScope, Format, GatewayRequest, RangeOutcome};
use crate::edge::retrieve::{self, RetrieveError, Retriever};

/// Immutable content may be cached for as long as HTTP caches allow: a
/// CID names the same bytes forever (the value kubo and the spec use).
const CACHE_IMMUTABLE: &str = "public, max-age=29030400, immutable";

/// Bytes per streamed chunk: a quarter of a leaf block, small enough that a
/// few in flight cost little, large enough to keep syscalls few.
const CHUNK_BYTES: usize = 64 * 1024;

/// Chunks queued between the blocking reader and the socket.
const QUEUE_CHUNKS: usize = 4;

/// Bytes read from the start of a file to guess its type.
const SNIFF_BYTES: usize = 512;

/// The content type of a CAR as this gateway writes it.
const CAR_CONTENT_TYPE: &str = "application/vnd.ipld.car; version=1; order=dfs; dups=n";

/// The gateway application pingora runs.
pub struct Gateway {
    store: Arc<BlockStore>,
    metrics: Arc<Metrics>,
    permits: Arc<Semaphore>,
    idle_timeout: Duration,
    retriever: Option<Arc<Retriever>>,
}

impl Gateway {
    /// A gateway over `store` that serves at most `max_concurrent`
    /// requests at once.
    /// With a `retriever`, an object not in the store is fetched from
    /// the edges that hold it first (unless the request says
    /// `Cache-Control: only-if-cached`, as edges asking each other do).
    pub fn new(
        store: Arc<BlockStore>,
        metrics: Arc<Metrics>,
        max_concurrent: usize,
        idle_timeout: Duration,
        retriever: Option<Arc<Retriever>>,
    ) -> Gateway {
        Gateway {
            store,
            metrics,
            permits: Arc::new(Semaphore::new(max_concurrent)),
            idle_timeout,
            retriever,
        }
    }
}

/// A response body.
enum Body {
    Empty,
    Bytes(Bytes),
    /// Chunks from a blocking producer; an error ends the connection
    /// without the body's proper end, so the client sees it is cut short.
    Stream(mpsc::Receiver<io::Result<Bytes>>),
}

/// A response and the route it counts under.
struct Reply {
    route: &'static str,
    header: ResponseHeader,
    body: Body,
}

impl Reply {
    fn new(route: &'static str, status: u16) -> Reply {
        Reply {
            route,
            header: ResponseHeader::build(status, Some(8)).expect("a valid status code"),
            body: Body::Empty,
        }
    }

    /// Sets a header; a value that cannot be a header value (never one
    /// this module builds) is left out rather than failing the response.
    fn set(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        let value: String = value.into();
        if let Err(e) = self.header.insert_header(name, value) {
            tracing::warn!(name, error = %e, "header left out");
        }
        self
    }

    fn body(mut self, body: Body) -> Reply {
        self.body = body;
        self
    }

    /// A text error: status and a message that says what is wrong.
    fn error(route: &'static str, status: u16, message: impl std::fmt::Display) -> Reply {
        let text = format!("{message}\n");
        Reply::new(route, status)
            .set("Content-Type", "text/plain; charset=utf-8")
            .set("Content-Length", text.len().to_string())
            .set("Cache-Control", "no-cache")
            .body(Body::Bytes(Bytes::from(text)))
    }

    /// The headers every content response carries.
    fn immutable(self, etag: String, ipfs_path: &str) -> Reply {
        self.set("ETag", etag)
            .set("Cache-Control", CACHE_IMMUTABLE)
            .set("X-Ipfs-Path", ipfs_path.to_owned())
            .set("X-Content-Type-Options", "nosniff")
    }
}

/// A read error as the client sees it.
fn read_error(route: &'static str, e: ReadError) -> Reply {
    let status = match &e {
        ReadError::Store(StoreError::NotFound { .. }) => 404,
        ReadError::NoSuchEntry { .. } | ReadError::NotADirectory { .. } => 404,
        ReadError::BadPath { .. } | ReadError::BadCid(_) => 400,
        ReadError::Sharded { .. } => 501,
        _ => {
            tracing::error!(error = %e, "gateway: reading the store failed");
            500
        }
    };
    let message = match &e {
        ReadError::Store(StoreError::NotFound { cid }) => {
            format!("block {cid} is not in this edge's store")
        }
        _ => e.to_string(),
    };
    Reply::error(route, status, message)
}

/// Runs store work on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ReadError> + Send + 'static,
) -> Result<T, ReadError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        // Only a panic in `f` gets here; answer 500 rather than crash.
        Err(e) => Err(ReadError::Io {
            action: "run",
            path: Default::default(),
            source: io::Error::other(e.to_string()),
        }),
    }
}

/// A `Write` that hands fixed-size chunks to the async side.
struct ChunkWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(CHUNK_BYTES),
        ));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK_BYTES {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Runs `produce` on the blocking pool, streaming what it writes.
fn stream_blocking(
    produce: impl FnOnce(&mut ChunkWriter) -> io::Result<()> + Send + 'static,
) -> Body {
    let (tx, rx) = mpsc::channel(QUEUE_CHUNKS);
    tokio::task::spawn_blocking(move || {
        let mut writer = ChunkWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK_BYTES),
        };
        let done = produce(&mut writer).and_then(|()| writer.send());
        if let Err(e) = done {
            if e.kind() != io::ErrorKind::BrokenPipe {
                tracing::warn!(error = %e, "gateway: response cut short");
            }
            let _ = tx.blocking_send(Err(e));
        }
    });
    Body::Stream(rx)
}

/// Where a request's path leads.
struct Resolved {
    /// The CID at the end of the path.
    cid: Cid,
    /// The directories passed through, the root first (what a client needs
    /// to verify the path).
    via: Vec<Cid>,
}

fn resolve(store: &BlockStore, req: &GatewayRequest) -> Result<Resolved, ReadError> {
    let mut cid = req.root;
    let mut via = Vec::with_capacity(req.path.len());
    for name in &req.path {
        let entries = list_dir(store, &cid)?;
        // Entries are sorted by name bytes (the decoder enforces it).
        let next = entries
            .binary_search_by(|e| e.name.as_bytes().cmp(name.as_bytes()))
            .map(|i| entries[i].cid)
            .map_err(|_| ReadError::NoSuchEntry {
                dir: cid,
                name: name.clone(),
            })?;
        via.push(cid);
        cid = next;
    }
    Ok(Resolved { cid, via })
}

/// Whether `If-None-Match` already names `etag`.
fn not_modified(if_none_match: Option<&str>, etag: &str) -> bool {
    if_none_match.is_some_and(|h| {
        h.split(',')
            .map(str::trim)
            .any(|t| t == "*" || t == etag || t.strip_prefix("W/").is_some_and(|w| w == etag))
    })
}

/// The request headers the handlers look at.
struct Headers {
    path_and_query: String,
    accept: Option<String>,
    range: Option<String>,
    if_none_match: Option<String>,
    /// `Cache-Control: only-if-cached`: answer from the store only.
    only_if_cached: bool,
}

impl Gateway {
    async fn answer(&self, method: &str, h: &Headers) -> Reply {
        let req = match request::parse(method, &h.path_and_query, h.accept.as_deref()) {
            Ok(req) => req,
            Err(e) => {
                let mut reply = Reply::error("other", e.status(), &e);
                if e.status() == 405 {
                    reply = reply.set("Allow", "GET, HEAD");
                }
                return reply;
            }
        };
        let Some(retriever) = self.retriever.as_ref().filter(|_| !h.only_if_cached) else {
            return self.serve(req, h).await;
        };
        let missing = !self.store.has(&req.root);
        if missing {
            match retriever.fetch(&req.root, false, None).await {
                Ok(_) | Err(RetrieveError::NoHolders { .. }) => {}
                // The holders failed: a gateway error (RFC 9110 15.6.3),
                // not a 404, since the object exists.
                Err(e) => return Reply::error("other", 502, &e),
            }
        }
        let reply = self.serve(req.clone(), h).await;
        // The root was here but a block under it was not (a fetch cut
        // short earlier): fetch the rest and answer again, once.
        if !missing
            && reply.header.status.as_u16() == 404
            && let Ok(retrieve::Retrieved::Peer { .. }) =
                retriever.fetch(&req.root, false, None).await
        {
            return self.serve(req, h).await;
        }
        reply
    }

    async fn serve(&self, req: GatewayRequest, h: &Headers) -> Reply {
        let path = h.path_and_query.split('?').next().unwrap_or("");
        match req.format {
            Format::Raw => self.raw(req, path, h).await,
            Format::Car => self.car(req, path, h).await,
            Format::Deserialized => self.deserialized(req, h).await,
        }
    }

    /// One block, as stored.
    async fn raw(&self, req: GatewayRequest, path: &str, h: &Headers) -> Reply {
        let store = self.store.clone();
        let block = blocking(move || {
            let end = resolve(&store, &req)?.cid;
            Ok(store.get(&end)?)
        })
        .await;
        let block = match block {
            Ok(block) => block,
            Err(e) => return read_error("raw", e),
        };
        let etag = format!("\"{}.raw\"", block.cid());
        if not_modified(h.if_none_match.as_deref(), &etag) {
            return Reply::new("raw", 304).immutable(etag, path);
        }
        let data = Bytes::from(block.into_data());
        Reply::new("raw", 200)
            .immutable(etag, path)
            .set("Content-Type", request::RAW_MEDIA_TYPE)
            .set("Content-Length", data.len().to_string())
            .set(
                "Content-Disposition",
                format!("attachment; filename=\"{}.bin\"", req_cid(path)),
            )
            .body(Body::Bytes(data))
    }

    /// A CAR of the path's blocks and the scope below its end.
    async fn car(&self, req: GatewayRequest, path: &str, h: &Headers) -> Reply {
        let store = self.store.clone();
        let scope = req.scope;
        let root = req.root;
        let planned = blocking(move || {
            let resolved = resolve(&store, &req)?;
            // A directory's entity is its own node; a file's is all of it.
            let whole = match scope {
                DagScope::All => true,
                DagScope::Block => false,
                DagScope::Entity => !matches!(stat(&store, &resolved.cid)?, Entry::Directory),
            };
            // Check the blocks are here before the 200 goes out: after it,
            // a missing block can only cut the stream.
            if whole {
                let walk = store.walk_dag(resolved.cid)?;
                if let Some(missing) = walk.missing.first() {
                    return Err(ReadError::Store(StoreError::NotFound { cid: *missing }));
                }
            } else if !store.has(&resolved.cid) {
                return Err(ReadError::Store(StoreError::NotFound { cid: resolved.cid }));
            }
            Ok((resolved, whole))
        })
        .await;
        let (resolved, whole) = match planned {
            Ok(p) => p,
            Err(e) => return read_error("car", e),
        };
        let etag = car_etag(&root, path, scope);
        if not_modified(h.if_none_match.as_deref(), &etag) {
            return Reply::new("car", 304).immutable(etag, path);
        }
        let store = self.store.clone();
        let body = stream_blocking(move |out| write_car(&store, root, resolved, whole, out));
        Reply::new("car", 200)
            .immutable(etag, path)
            .set("Content-Type", CAR_CONTENT_TYPE)
            .set("Transfer-Encoding", "chunked")
            .set(
                "Content-Disposition",
                format!("attachment; filename=\"{}.car\"", root),
            )
            .body(body)
    }

    /// A file's bytes (whole or a range), a directory's `index.html`, a
    /// listing, or a redirect to the directory's URL with a `/`.
    async fn deserialized(&self, req: GatewayRequest, h: &Headers) -> Reply {
        let store = self.store.clone();
        let trailing_slash = req.trailing_slash;
        let found = blocking(move || {
            let end = resolve(&store, &req)?.cid;
            let name = req.path.last().cloned();
            match stat(&store, &end)? {
                Entry::File { size } => Ok(Target::File {
                    cid: end,
                    size,
                    head: file_head(&store, &end)?,
                    name,
                }),
                Entry::Directory if !trailing_slash => Ok(Target::Redirect),
                Entry::Directory => {
                    let entries = list_dir(&store, &end)?;
                    let index = entries
                        .iter()
                        .find(|e| e.name == "index.html")
                        .map(|e| e.cid);
                    if let Some(index) = index
                        && let Entry::File { size } = stat(&store, &index)?
                    {
                        return Ok(Target::File {
                            cid: index,
                            size,
                            head: Vec::new(),
                            name: Some("index.html".into()),
                        });
                    }
                    Ok(Target::Listing { cid: end, entries })
                }
                Entry::Symlink { target } => Ok(Target::Symlink { target }),
            }
        })
        .await;
        let path = h.path_and_query.split('?').next().unwrap_or("");
        match found {
            Err(e) => read_error("file", e),
            Ok(Target::Redirect) => {
                let location = match h.path_and_query.split_once('?') {
                    Some((p, q)) => format!("{p}/?{q}"),
                    None => format!("{path}/"),
                };
                Reply::error("redirect", 301, format!("see {location}")).set("Location", location)
            }
            Ok(Target::Symlink { target }) => Reply::error(
                "file",
                501,
                format!(
                    "{path} is a symbolic link to {target:?}, which this gateway does not follow"
                ),
            ),
            Ok(Target::Listing { cid, entries }) => {
                let etag = format!("\"{cid}\"");
                if not_modified(h.if_none_match.as_deref(), &etag) {
                    return Reply::new("dir", 304).immutable(etag, path);
                }
                let html = Bytes::from(listing(path, &entries));
                Reply::new("dir", 200)
                    .immutable(etag, path)
                    .set("Content-Type", "text/html; charset=utf-8")
                    .set("Content-Length", html.len().to_string())
                    .body(Body::Bytes(html))
            }
            Ok(Target::File {
                cid,
                size,
                head,
                name,
            }) => self.file(cid, size, &head, name.as_deref(), path, h),
        }
    }

    fn file(
        &self,
        cid: Cid,
        size: u64,
        head: &[u8],
        name: Option<&str>,
        path: &str,
        h: &Headers,
    ) -> Reply {
        let etag = format!("\"{cid}\"");
        if not_modified(h.if_none_match.as_deref(), &etag) {
            return Reply::new("file", 304).immutable(etag, path);
        }
        let reply = Reply::new("file", 200)
            .immutable(etag, path)
            .set("Content-Type", mime::content_type(name, head))
            .set("Accept-Ranges", "bytes");
        let (mut reply, start, len) = match request::parse_range(h.range.as_deref(), size) {
            RangeOutcome::Full => (reply, 0, size),
            RangeOutcome::Partial { start, end } => {
                let mut reply = reply.set("Content-Range", format!("bytes {start}-{end}/{size}"));
                reply.header.set_status(206).expect("a valid status");
                (reply, start, end - start + 1)
            }
            RangeOutcome::Unsatisfiable => {
                return Reply::error("file", 416, format!("the file has {size} bytes"))
                    .set("Content-Range", format!("bytes */{size}"));
            }
        };
        reply = reply.set("Content-Length", len.to_string());
        if len == 0 {
            return reply;
        }
        let store = self.store.clone();
        reply.body(stream_blocking(move |out| {
            let reader = Reader::from_offset(&store, &cid, start).map_err(io::Error::other)?;
            let copied = io::copy(&mut reader.take(len), out)?;
            if copied != len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{cid}: {copied} of {len} bytes"),
                ));
            }
            Ok(())
        }))
    }
}

/// What a deserialized request found.
enum Target {
    File {
        cid: Cid,
        size: u64,
        /// The first bytes, to guess a type when the name does not tell.
        head: Vec<u8>,
        name: Option<String>,
    },
    Listing {
        cid: Cid,
        entries: Vec<DirEntry>,
    },
    Redirect,
    Symlink {
        target: String,
    },
}

/// The first bytes of a file (only the first leaf is read).
fn file_head(store: &BlockStore, cid: &Cid) -> Result<Vec<u8>, ReadError> {
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    Reader::new(store, cid)?
        .take(SNIFF_BYTES as u64)
        .read_to_end(&mut head)
        .map_err(crate::content::read::unwrap_io)?;
    Ok(head)
}

/// The CID segment of `/ipfs/<cid>/…`, for download names.
fn req_cid(path: &str) -> &str {
    path.strip_prefix("/ipfs/")
        .and_then(|p| p.split('/').next())
        .unwrap_or("block")
}

/// A CAR's ETag: the root plus a digest of the path and scope, since the
/// same root answers differently for each.
fn car_etag(root: &Cid, path: &str, scope: DagScope) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{path}\n{}", scope.name()).as_bytes());
    format!("\"{root}.car.{}\"", hex::encode(&digest[..8]))
}

/// Writes the CAR: header, the path's directories, then the end's block or
/// its whole DAG depth-first (parents first, left to right, each block
/// once), the order `car::import` and kubo's verifiers check as they read.
fn write_car(
    store: &BlockStore,
    root: Cid,
    resolved: Resolved,
    whole: bool,
    out: &mut impl Write,
) -> io::Result<()> {
    out.write_all(&car::encode_header(&[root]))?;
    let mut seen = HashSet::new();
    for cid in resolved.via {
        if seen.insert(cid) {
            let block = store.get(&cid).map_err(io::Error::other)?;
            section(cid, block.data(), out)?;
        }
    }
    let mut stack = vec![resolved.cid];
    while let Some(cid) = stack.pop() {
        if !seen.insert(cid) {
            continue;
        }
        let block = store.get(&cid).map_err(io::Error::other)?;
        if whole && cid.codec() == Codec::DagPb {
            let node = PbNode::decode(block.data()).map_err(io::Error::other)?;
            stack.extend(node.links.iter().rev().map(|l| l.cid));
        }
        section(cid, block.data(), out)?;
    }
    Ok(())
}

/// One CAR section: length, CID, block.
fn section(cid: Cid, data: &[u8], out: &mut impl Write) -> io::Result<()> {
    let cid_bytes = cid.to_bytes();
    let mut prefix = Vec::with_capacity(10);
    put_varint(&mut prefix, (cid_bytes.len() + data.len()) as u64);
    out.write_all(&prefix)?;
    out.write_all(&cid_bytes)?;
    out.write_all(data)
}

/// A small HTML page listing a directory, links relative to it.
fn listing(path: &str, entries: &[DirEntry]) -> String {
    let title = html_escape(path);
    let mut html = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head>\n\
         <body><h1>{title}</h1>\n<ul>\n"
    );
    for e in entries {
        let href = request::percent_encode(&e.name);
        let size = e.tsize.map(|s| format!(" ({s} bytes)")).unwrap_or_default();
        html.push_str(&format!(
            "<li><a href=\"{href}\">{}</a>{size} <small>{}</small></li>\n",
            html_escape(&e.name),
            e.cid
        ));
    }
    html.push_str("</ul>\n</body></html>\n");
    html
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// How a response went out.
enum Sent {
    /// Completely: the connection may be kept.
    Whole(u64),
    /// Cut short: the connection must be closed.
    Cut(u64),
}

async fn send(session: &mut ServerSession, reply: Reply, head: bool) -> Sent {
    if let Err(e) = session.write_response_header(Box::new(reply.header)).await {
        tracing::debug!(error = %e, "gateway: writing the header failed");
        return Sent::Cut(0);
    }
    if head {
        return Sent::Whole(0);
    }
    match reply.body {
        Body::Empty => Sent::Whole(0),
        Body::Bytes(data) => {
            let len = data.len() as u64;
            match session.write_response_body(data, true).await {
                Ok(()) => Sent::Whole(len),
                Err(_) => Sent::Cut(0),
            }
        }
        Body::Stream(mut rx) => {
            let mut sent = 0u64;
            while let Some(chunk) = rx.recv().await {
                let Ok(chunk) = chunk else {
                    return Sent::Cut(sent);
                };
                let len = chunk.len() as u64;
                if session.write_response_body(chunk, false).await.is_err() {
                    return Sent::Cut(sent);
                }
                sent += len;
            }
            Sent::Whole(sent)
        }
    }
}

#[async_trait]
impl HttpServerApp for Gateway {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        session.set_read_timeout(Some(self.idle_timeout));
        session.set_write_timeout(Some(self.idle_timeout));
        match session.read_request().await {
            Ok(true) => {}
            // The client closed, timed out or sent no HTTP: nothing to answer.
            Ok(false) | Err(_) => return None,
        }
        if *shutdown.borrow() {
            session.set_keepalive(None);
        } else {
            session.set_keepalive(Some(self.idle_timeout.as_secs()));
        }
        let req = session.req_header();
        let method = req.method.as_str().to_owned();
        let text = |name: &str| {
            req.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let headers = Headers {
            path_and_query: req
                .uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
            accept: text("accept"),
            range: text("range"),
            if_none_match: text("if-none-match"),
            only_if_cached: text("cache-control").is_some_and(|v| {
                v.split(',')
                    .any(|d| d.trim().eq_ignore_ascii_case("only-if-cached"))
            }),
        };
        let head = method == "HEAD";
        // A request with a body is not one the gateway takes; close rather
        // than read an unbounded body to keep the connection.
        if !session.is_body_empty() {
            session.set_keepalive(None);
        }
        // The permit is held until the body is sent: a streamed body is
        // where a request spends its time and holds a blocking thread.
        let permit = self.permits.clone().try_acquire_owned();
        let reply = match &permit {
            Ok(_) => {
                self.metrics.edge_inflight.inc();
                self.answer(&method, &headers).await
            }
            Err(_) => Reply::error("other", 503, "the edge is serving its maximum of requests")
                .set("Retry-After", "1"),
        };
        let route = reply.route;
        let status = reply.header.status.as_u16();
        let sent = send(&mut session, reply, head).await;
        if permit.is_ok() {
            self.metrics.edge_inflight.dec();
        }
        drop(permit);
        self.metrics.edge_request(route, status);
        let bytes = match sent {
            Sent::Whole(n) | Sent::Cut(n) => n,
        };
        self.metrics.edge_sent(route, bytes);
        if let Sent::Cut(_) = sent {
            // Dropping the session closes the connection mid-body.
            return None;
        }
        let persistent = HttpPersistentSettings::for_session(&session);
        match session.finish().await {
            Ok(Some(stream)) => Some(ReusedHttpStream::from_reusable_stream(stream, persistent)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_forms() {
        let etag = "\"bafy\"";
        assert!(not_modified(Some("\"bafy\""), etag));
        assert!(not_modified(Some("W/\"bafy\""), etag));
        assert!(not_modified(Some("\"x\", \"bafy\""), etag));
        assert!(not_modified(Some("*"), etag));
        assert!(!not_modified(Some("\"x\""), etag));
        assert!(!not_modified(None, etag));
    }

    #[test]
    fn listing_escapes_names() {
        let cid = Cid::hash_of(Codec::Raw, b"x");
        let html = listing(
            "/ipfs/x/",
            &[DirEntry {
                name: "<b>&\"".into(),
                cid,
                tsize: Some(3),
            }],
        );
        assert!(html.contains("&lt;b&gt;&amp;&quot;"), "{html}");
        assert!(html.contains("href=\"%3Cb%3E%26%22\""), "{html}");
    }
}
