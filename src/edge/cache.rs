//! The HTTP cache's storage: pingora-cache's `Storage` over files on disk,
//! with the most recently used small bodies also in memory.
//!
//! Each entry is two files under the cache directory, named by the hex of
//! pingora's combined key (primary key plus variance):
//!
//! - `<key>.<gen>.body`, the response body;
//! - `<key>.meta`, the `CacheMeta` (pingora's own serialisation) and which
//!   body generation it belongs to.
//!
//! A fill writes its body to a `.part` file and only a finished fill is
//! fsynced and renamed into place, then its meta; so a partial or failed
//! transfer never replaces a good copy, and after a kill -9 an entry is
//! either the old one or the new one. Entries are evicted least recently
//! used past the disk bound; the memory tier is a bounded LRU of bodies.
//! At open, the index is rebuilt from the meta files, oldest first; a meta
//! whose body is missing or of the wrong length, stray `.part` files and
//! bodies no meta names are removed.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use lru::LruCache;
use parking_lot::Mutex;
use pingora_cache::CacheMeta;
use pingora_cache::key::{CacheHashKey, CacheKey, CompactCacheKey};
use pingora_cache::storage::{
    HandleHit, HandleMiss, HitHandler, MissFinishType, MissHandler, PurgeOutcome, PurgeTarget,
    PurgeType, Storage,
};
use pingora_cache::trace::SpanHandle;
use pingora_core::{Error, ErrorType, Result};

/// The first bytes of a meta file (and its format's version).
const META_MAGIC: &[u8; 8] = b"GEHTTP1\n";

/// Bytes a body read hands on at a time.
const READ_CHUNK: usize = 64 * 1024;

/// Bodies up to this share of the memory bound are kept in memory too.
const MEMORY_OBJECT_SHARE: u64 = 16;

/// Parsed response headers kept for hits (about a kilobyte each). pingora
/// stores a header zstd-compressed; decompressing and parsing it took a
/// tenth of the proxy's CPU time on small hits in `benches/http.sh`.
const PARSED_HEADERS: usize = 16 * 1024;

/// pingora's serialisation of an empty response header: a meta is built
/// from an entry's internal part and this, and the parsed header put in.
fn empty_header() -> &'static [u8] {
    static EMPTY: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| {
        let header = pingora_http::ResponseHeader::build(200, Some(0)).expect("a valid status");
        let now = std::time::SystemTime::now();
        CacheMeta::new(now, now, 0, 0, header)
            .serialize()
            .expect("an empty header serialises")
            .1
    })
}

/// The bounds of a cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of bodies on disk.
    pub disk_bytes: u64,
    /// Bytes of bodies in memory.
    pub memory_bytes: u64,
    /// The largest body stored; a larger response is served, not stored.
    pub max_object_bytes: u64,
}

struct Entry {
    generation: u64,
    size: u64,
    /// The serialised meta (a few hundred bytes), so a hit from memory
    /// touches no file.
    meta: Arc<SerialMeta>,
}

struct State {
    /// Every entry on disk, least recently used first.
    disk: LruCache<String, Entry>,
    disk_bytes: u64,
    /// Bodies also held in memory.
    memory: LruCache<String, Bytes>,
    memory_bytes: u64,
    /// Parsed headers of recent hits, with the meta they were parsed from
    /// (used only while the entry still has that very meta).
    headers: LruCache<String, (Arc<SerialMeta>, pingora_http::ResponseHeader)>,
}

/// What a cache holds now.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Usage {
    /// Entries on disk.
    pub entries: usize,
    /// Bytes of bodies on disk.
    pub disk_bytes: u64,
    /// Bytes of bodies in memory.
    pub memory_bytes: u64,
}

/// The cache storage. pingora wants it `'static`: the edge leaks one per
/// process (`DiskCache::open(..).leak()`).
pub struct DiskCache {
    dir: PathBuf,
    limits: Limits,
    state: Mutex<State>,
    next_generation: AtomicU64,
}

impl DiskCache {
    /// Opens (creating) the cache under `dir` and rebuilds its index.
    pub fn open(dir: &Path, limits: Limits) -> io::Result<DiskCache> {
        std::fs::create_dir_all(dir)?;
        let mut metas = Vec::new();
        let mut bodies = Vec::new();
        for item in std::fs::read_dir(dir)? {
            let item = item?;
            let name = item.file_name().to_string_lossy().into_owned();
            if name.ends_with(".part") {
                let _ = std::fs::remove_file(item.path());
            } else if let Some(key) = name.strip_suffix(".meta") {
                let modified = item.metadata()?.modified()?;
                metas.push((modified, key.to_owned()));
            } else if name.ends_with(".body") {
                bodies.push(name);
            }
        }
        metas.sort();
        let mut disk = LruCache::unbounded();
        let mut disk_bytes = 0;
        let mut max_generation = 0;
        let mut kept = std::collections::HashSet::new();
        for (_, key) in metas {
            let meta_path = dir.join(format!("{key}.meta"));
            let entry = std::fs::read(&meta_path).ok().and_then(|bytes| {
                parse_meta(&bytes).map(|(generation, size, internal, header)| Entry {
                    generation,
                    size,
                    meta: Arc::new((internal.to_vec(), header.to_vec())),
                })
            });
            let body = entry
                .as_ref()
                .map(|e| dir.join(body_name(&key, e.generation)));
            match (entry, body) {
                (Some(entry), Some(body))
                    if std::fs::metadata(&body).is_ok_and(|m| m.len() == entry.size) =>
                {
                    max_generation = max_generation.max(entry.generation);
                    disk_bytes += entry.size;
                    kept.insert(body_name(&key, entry.generation));
                    disk.put(key, entry);
                }
                _ => {
                    tracing::warn!(path = %meta_path.display(), "HTTP cache: dropping an entry whose meta or body is damaged");
                    let _ = std::fs::remove_file(&meta_path);
                }
            }
        }
        for name in bodies {
            if !kept.contains(&name) {
                let _ = std::fs::remove_file(dir.join(name));
            }
        }
        let cache = DiskCache {
            dir: dir.to_owned(),
            limits,
            state: Mutex::new(State {
                disk,
                disk_bytes,
                memory: LruCache::unbounded(),
                memory_bytes: 0,
                headers: LruCache::new(
                    std::num::NonZeroUsize::new(PARSED_HEADERS).expect("not zero"),
                ),
            }),
            next_generation: AtomicU64::new(max_generation + 1),
        };
        cache.evict();
        Ok(cache)
    }

    /// Makes the cache `'static`, as pingora's cache wants its storage.
    pub fn leak(self) -> &'static DiskCache {
        Box::leak(Box::new(self))
    }

    /// The bounds.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// What the cache holds now.
    pub fn usage(&self) -> Usage {
        let state = self.state.lock();
        Usage {
            entries: state.disk.len(),
            disk_bytes: state.disk_bytes,
            memory_bytes: state.memory_bytes,
        }
    }

    /// Removes the entry under `key` (the hex combined key); whether
    /// there was one.
    pub fn remove(&self, key: &str) -> bool {
        let removed = {
            let mut state = self.state.lock();
            if let Some(body) = state.memory.pop(key) {
                state.memory_bytes -= body.len() as u64;
            }
            let removed = state.disk.pop(key);
            if let Some(e) = &removed {
                state.disk_bytes -= e.size;
            }
            removed
        };
        match removed {
            Some(entry) => {
                let _ = std::fs::remove_file(self.dir.join(format!("{key}.meta")));
                let _ = std::fs::remove_file(self.dir.join(body_name(key, entry.generation)));
                true
            }
            None => false,
        }
    }

    /// Removes every entry whose meta `matches`; how many there were.
    /// (Reads every entry's meta: for the admin API, not the request path.)
    pub fn remove_where(&self, matches: impl Fn(&CacheMeta) -> bool) -> usize {
        let entries: Vec<(String, Arc<SerialMeta>)> = {
            let state = self.state.lock();
            state
                .disk
                .iter()
                .map(|(k, e)| (k.clone(), e.meta.clone()))
                .collect()
        };
        entries
            .into_iter()
            .filter(|(_, meta)| CacheMeta::deserialize(&meta.0, &meta.1).is_ok_and(|m| matches(&m)))
            .filter(|(key, _)| self.remove(key))
            .count()
    }

    /// Evicts least recently used entries past the bounds.
    fn evict(&self) {
        let mut gone = Vec::new();
        {
            let mut state = self.state.lock();
            while state.disk_bytes > self.limits.disk_bytes {
                let Some((key, entry)) = state.disk.pop_lru() else {
                    break;
                };
                state.disk_bytes -= entry.size;
                if let Some(body) = state.memory.pop(&key) {
                    state.memory_bytes -= body.len() as u64;
                }
                gone.push((key, entry.generation));
            }
            while state.memory_bytes > self.limits.memory_bytes {
                let Some((_, body)) = state.memory.pop_lru() else {
                    break;
                };
                state.memory_bytes -= body.len() as u64;
            }
        }
        for (key, generation) in gone {
            let _ = std::fs::remove_file(self.dir.join(format!("{key}.meta")));
            let _ = std::fs::remove_file(self.dir.join(body_name(&key, generation)));
        }
    }

    fn remember_in_memory(&self, key: &str, body: Bytes) {
        if body.len() as u64 > self.limits.memory_bytes / MEMORY_OBJECT_SHARE {
            return;
        }
        {
            let mut state = self.state.lock();
            state.memory_bytes += body.len() as u64;
            if let Some(old) = state.memory.put(key.to_owned(), body) {
                state.memory_bytes -= old.len() as u64;
            }
        }
        self.evict();
    }

    fn write_meta(&self, key: &str, generation: u64, size: u64, meta: &SerialMeta) -> Result<()> {
        let (internal, header) = meta;
        let mut bytes = Vec::with_capacity(32 + internal.len() + header.len());
        bytes.extend_from_slice(META_MAGIC);
        bytes.extend_from_slice(&generation.to_be_bytes());
        bytes.extend_from_slice(&size.to_be_bytes());
        bytes.extend_from_slice(&(internal.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&(header.len() as u32).to_be_bytes());
        bytes.extend_from_slice(internal);
        bytes.extend_from_slice(header);
        crate::fsutil::write_atomic(&self.dir.join(format!("{key}.meta")), &bytes, false)
            .map_err(|e| io_error("cannot write a cache entry's meta", e))
    }
}

/// A `CacheMeta` as pingora serialises it: internal fields, header blob.
type SerialMeta = (Vec<u8>, Vec<u8>);

fn body_name(key: &str, generation: u64) -> String {
    format!("{key}.{generation}.body")
}

/// generation, body size, pingora's internal meta, its header blob.
fn parse_meta(bytes: &[u8]) -> Option<(u64, u64, &[u8], &[u8])> {
    let rest = bytes.strip_prefix(META_MAGIC.as_slice())?;
    if rest.len() < 24 {
        return None;
    }
    let generation = u64::from_be_bytes(rest[0..8].try_into().ok()?);
    let size = u64::from_be_bytes(rest[8..16].try_into().ok()?);
    let internal_len = u32::from_be_bytes(rest[16..20].try_into().ok()?) as usize;
    let header_len = u32::from_be_bytes(rest[20..24].try_into().ok()?) as usize;
    let rest = &rest[24..];
    if rest.len() != internal_len.checked_add(header_len)? {
        return None;
    }
    Some((
        generation,
        size,
        &rest[..internal_len],
        &rest[internal_len..],
    ))
}

/// Runs `f` on the blocking pool (the store's files are synchronous).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::because(ErrorType::InternalError, "cache task failed", e))
}

fn io_error(context: &'static str, e: io::Error) -> Box<Error> {
    Error::because(ErrorType::InternalError, context, e)
}

#[async_trait]
impl Storage for DiskCache {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let hash = key.combined();
        let (known, in_memory, parsed) = {
            let mut state = self.state.lock();
            let known = state
                .disk
                .get(&hash)
                .map(|e| (e.generation, e.size, e.meta.clone()));
            let parsed = match (&known, state.headers.get(&hash)) {
                (Some((_, _, serial)), Some((from, header))) if Arc::ptr_eq(serial, from) => {
                    Some(header.clone())
                }
                _ => None,
            };
            (known, state.memory.get(&hash).cloned(), parsed)
        };
        let Some((generation, size, serial)) = known else {
            return Ok(None);
        };
        let meta = match parsed {
            Some(header) => {
                let mut meta = CacheMeta::deserialize(&serial.0, empty_header())?;
                *meta.response_header_mut() = header;
                meta
            }
            None => {
                let meta = CacheMeta::deserialize(&serial.0, &serial.1)?;
                let header = meta.response_header().clone();
                self.state
                    .lock()
                    .headers
                    .put(hash.clone(), (serial, header));
                meta
            }
        };
        let hit = |body| Hit {
            body: Some(body),
            size,
            pos: 0,
            end: size,
            seek_to: None,
        };
        if let Some(body) = in_memory {
            return Ok(Some((meta, Box::new(hit(HitBody::Memory(body))))));
        }
        let this = self;
        let body = blocking(move || -> Result<Option<HitBody>> {
            let path = this.dir.join(body_name(&hash, generation));
            let mut file = match std::fs::File::open(&path) {
                Ok(f) => f,
                // Evicted or replaced since: a miss.
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(io_error("cannot open a cached body", e)),
            };
            if size <= this.limits.memory_bytes / MEMORY_OBJECT_SHARE {
                let mut all = Vec::with_capacity(size as usize);
                file.read_to_end(&mut all)
                    .map_err(|e| io_error("cannot read a cached body", e))?;
                let all = Bytes::from(all);
                this.remember_in_memory(&hash, all.clone());
                Ok(Some(HitBody::Memory(all)))
            } else {
                Ok(Some(HitBody::File(file)))
            }
        })
        .await??;
        Ok(body.map(|body| (meta, Box::new(hit(body)) as HitHandler)))
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        let hash = key.combined();
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let part = self.dir.join(format!("{hash}.{generation}.part"));
        let file = {
            let part = part.clone();
            blocking(move || std::fs::File::create(part))
                .await?
                .map_err(|e| io_error("cannot create a cache fill", e))?
        };
        Ok(Box::new(Fill {
            cache: self,
            key: hash,
            generation,
            meta: meta.serialize()?,
            part,
            file: Some(file),
            written: 0,
            memory: Some(Vec::new()),
        }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        _purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let key: &CompactCacheKey = target.key();
        let hash = key.combined();
        let this = self;
        let removed = blocking(move || this.remove(&hash)).await?;
        Ok(if removed {
            PurgeOutcome::Purged(None)
        } else {
            PurgeOutcome::NotFound
        })
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        let hash = key.combined();
        let known = self
            .state
            .lock()
            .disk
            .get(&hash)
            .map(|e| (e.generation, e.size));
        let Some((generation, size)) = known else {
            return Ok(false);
        };
        let meta = Arc::new(meta.serialize()?);
        let this = self;
        let written = meta.clone();
        let key = hash.clone();
        blocking(move || this.write_meta(&key, generation, size, &written)).await??;
        if let Some(entry) = self.state.lock().disk.peek_mut(&hash)
            && entry.generation == generation
        {
            entry.meta = meta;
        }
        Ok(true)
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync + 'static) {
        self
    }
}

enum HitBody {
    Memory(Bytes),
    File(std::fs::File),
}

/// A cached body being read, whole or a range of it.
struct Hit {
    body: Option<HitBody>,
    size: u64,
    pos: u64,
    end: u64,
    seek_to: Option<u64>,
}

#[async_trait]
impl HandleHit for Hit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let want = (self.end - self.pos).min(READ_CHUNK as u64) as usize;
        match self.body.take() {
            None => Ok(None),
            Some(HitBody::Memory(all)) => {
                let chunk = all.slice(self.pos as usize..self.pos as usize + want);
                self.pos += want as u64;
                self.body = Some(HitBody::Memory(all));
                Ok(Some(chunk))
            }
            Some(HitBody::File(mut file)) => {
                let seek_to = self.seek_to.take();
                let (file, chunk) = blocking(move || -> io::Result<_> {
                    if let Some(at) = seek_to {
                        file.seek(SeekFrom::Start(at))?;
                    }
                    let mut chunk = vec![0; want];
                    file.read_exact(&mut chunk)?;
                    Ok((file, chunk))
                })
                .await?
                .map_err(|e| io_error("cannot read a cached body", e))?;
                self.pos += want as u64;
                self.body = Some(HitBody::File(file));
                Ok(Some(Bytes::from(chunk)))
            }
        }
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        let (start, end) = (start as u64, end.map_or(self.size, |e| e as u64));
        if start >= self.size || end > self.size || start > end {
            return Err(Error::explain(
                ErrorType::InternalError,
                "seek past the end of a cached body",
            ));
        }
        self.pos = start;
        self.end = end;
        self.seek_to = Some(start);
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn std::any::Any + Send + Sync) {
        self
    }
}

/// A body being stored. Dropped without `finish`, it leaves nothing behind.
struct Fill {
    cache: &'static DiskCache,
    key: String,
    generation: u64,
    meta: SerialMeta,
    part: PathBuf,
    file: Option<std::fs::File>,
    written: u64,
    /// The body, while it is small enough for the memory tier.
    memory: Option<Vec<u8>>,
}

#[async_trait]
impl HandleMiss for Fill {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        self.written += data.len() as u64;
        if self.written > self.cache.limits.max_object_bytes {
            return Err(Error::explain(
                ErrorType::InternalError,
                "the response is larger than the cache's largest object",
            ));
        }
        if let Some(memory) = &mut self.memory {
            if self.written <= self.cache.limits.memory_bytes / MEMORY_OBJECT_SHARE {
                memory.extend_from_slice(&data);
            } else {
                self.memory = None;
            }
        }
        let Some(mut file) = self.file.take() else {
            return Err(Error::explain(
                ErrorType::InternalError,
                "a cache fill failed earlier",
            ));
        };
        let file = blocking(move || file.write_all(&data).map(|()| file))
            .await?
            .map_err(|e| io_error("cannot write a cache fill", e))?;
        self.file = Some(file);
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<MissFinishType> {
        let Some(file) = self.file.take() else {
            return Err(Error::explain(
                ErrorType::InternalError,
                "a cache fill failed earlier",
            ));
        };
        let cache = self.cache;
        let key = self.key.clone();
        let generation = self.generation;
        let size = self.written;
        let part = self.part.clone();
        let meta = std::mem::take(&mut self.meta);
        let old = blocking(move || -> Result<Option<u64>> {
            file.sync_all()
                .map_err(|e| io_error("cannot sync a cache fill", e))?;
            drop(file);
            std::fs::rename(&part, cache.dir.join(body_name(&key, generation)))
                .map_err(|e| io_error("cannot store a cache fill", e))?;
            // The meta is written after the body is in place, and durable
            // with its directory (write_atomic syncs the directory).
            cache.write_meta(&key, generation, size, &meta)?;
            let mut state = cache.state.lock();
            state.disk_bytes += size;
            let old = state.disk.put(
                key.clone(),
                Entry {
                    generation,
                    size,
                    meta: Arc::new(meta),
                },
            );
            if let Some(old) = &old {
                state.disk_bytes -= old.size;
            }
            if let Some(body) = state.memory.pop(&key) {
                state.memory_bytes -= body.len() as u64;
            }
            Ok(old.map(|e| e.generation))
        })
        .await??;
        // The fill is in place: nothing for Drop to clean.
        self.part = PathBuf::new();
        if let Some(old) = old {
            let _ = std::fs::remove_file(cache.dir.join(body_name(&self.key, old)));
        }
        if let Some(memory) = self.memory.take() {
            cache.remember_in_memory(&self.key, Bytes::from(memory));
        }
        cache.evict();
        Ok(MissFinishType::Created(size as usize))
    }
}

impl Drop for Fill {
    fn drop(&mut self) {
        if !self.part.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.part);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_cache::trace::Span;
    use pingora_http::ResponseHeader;
    use std::time::{Duration, SystemTime};

    fn meta() -> CacheMeta {
        let header = ResponseHeader::build(200, None).unwrap();
        let now = SystemTime::now();
        CacheMeta::new(now + Duration::from_secs(60), now, 0, 0, header)
    }

    fn limits() -> Limits {
        Limits {
            disk_bytes: 1 << 20,
            memory_bytes: 1 << 20,
            max_object_bytes: 512 << 10,
        }
    }

    async fn fill(cache: &'static DiskCache, key: &CacheKey, body: &[u8]) {
        let span = Span::inactive().handle();
        let mut miss = cache.get_miss_handler(key, &meta(), &span).await.unwrap();
        for chunk in body.chunks(1000) {
            miss.write_body(Bytes::copy_from_slice(chunk), false)
                .await
                .unwrap();
        }
        miss.finish().await.unwrap();
    }

    async fn read(cache: &'static DiskCache, key: &CacheKey) -> Option<Vec<u8>> {
        let span = Span::inactive().handle();
        let (_, mut hit) = cache.lookup(key, &span).await.unwrap()?;
        let mut out = Vec::new();
        while let Some(b) = hit.read_body().await.unwrap() {
            out.extend_from_slice(&b);
        }
        Some(out)
    }

    #[tokio::test]
    async fn fills_survive_reopening_and_failed_fills_leave_the_old_copy() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(dir.path(), limits()).unwrap().leak();
        let key = CacheKey::new("http://a/x", "");
        let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        fill(cache, &key, &body).await;
        assert_eq!(read(cache, &key).await.unwrap(), body);
        // A fill dropped before its end changes nothing.
        let span = Span::inactive().handle();
        let mut miss = cache.get_miss_handler(&key, &meta(), &span).await.unwrap();
        miss.write_body(Bytes::from_static(b"partial"), false)
            .await
            .unwrap();
        drop(miss);
        assert_eq!(read(cache, &key).await.unwrap(), body);
        // From disk alone, and with a range.
        let reopened = DiskCache::open(
            dir.path(),
            Limits {
                memory_bytes: 0,
                ..limits()
            },
        )
        .unwrap()
        .leak();
        assert_eq!(reopened.usage().entries, 1);
        let (_, mut hit) = reopened.lookup(&key, &span).await.unwrap().unwrap();
        hit.seek(1000, Some(1010)).unwrap();
        let part = hit.read_body().await.unwrap().unwrap();
        assert_eq!(&part[..], &body[1000..1010]);
        assert!(hit.read_body().await.unwrap().is_none());
        // Nothing but the entry's two files is left.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[tokio::test]
    async fn evicts_least_recently_used_past_the_disk_bound_and_refuses_large_objects() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(
            dir.path(),
            Limits {
                disk_bytes: 250_000,
                ..limits()
            },
        )
        .unwrap()
        .leak();
        let keys: Vec<_> = (0..3).map(|i| CacheKey::new(format!("k{i}"), "")).collect();
        fill(cache, &keys[0], &[1; 100_000]).await;
        fill(cache, &keys[1], &[2; 100_000]).await;
        assert!(read(cache, &keys[0]).await.is_some());
        fill(cache, &keys[2], &[3; 100_000]).await;
        assert!(
            read(cache, &keys[1]).await.is_none(),
            "the least recently used stays"
        );
        assert!(read(cache, &keys[0]).await.is_some());
        assert!(read(cache, &keys[2]).await.is_some());
        assert!(cache.usage().disk_bytes <= 250_000);
        let span = Span::inactive().handle();
        let big = CacheKey::new("big", "");
        let mut miss = cache.get_miss_handler(&big, &meta(), &span).await.unwrap();
        let err = miss.write_body(Bytes::from(vec![0; 600 << 10]), true).await;
        assert!(err.is_err());
        drop(miss);
        assert!(read(cache, &big).await.is_none());
    }

    #[test]
    fn a_damaged_meta_or_truncated_body_is_dropped_at_open() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ab.meta"), b"nonsense").unwrap();
        std::fs::write(dir.path().join("ab.3.body"), b"x").unwrap();
        std::fs::write(dir.path().join("cd.4.part"), b"x").unwrap();
        let cache = DiskCache::open(dir.path(), limits()).unwrap();
        assert_eq!(cache.usage().entries, 0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
