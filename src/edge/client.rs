//! `gridedge put` and `gridedge get`: the client side of moving objects.
//!
//! `put` imports a file or folder into a temporary store of its own (the
//! daemon holds the real store's lock and stays its only writer), writes
//! the DAG as a CAR and streams it to the edge's admin API, which checks
//! every block again before storing it. With `--encrypt` the file is
//! sealed before import, under a fresh key that is printed once and kept
//! nowhere.
//!
//! `get` fetches a DAG from the local edge's gateway, or from the peers
//! given with `--from`, in order, the next when one fails; every block is
//! checked against its CID by [`Fetcher`] before it is kept, in a temporary
//! store, and only a complete, verified object is written out.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::admin::client::{AdminClient, ClientError};
use crate::admin::content::PutReply;
use crate::content::car::CarError;
use crate::content::private::{PrivateError, PrivateKey};
use crate::content::read::{ReadError, unwrap_io};
use crate::content::{BlockStore, Cid, ImportError, ImportOptions, StoreError};
use crate::edge::fetch::{Fault, FetchError, Fetcher, PeerUrl};

/// The temporary store's bound: it holds one object, and nothing in it is
/// evicted (everything is pinned), so this only guards against a runaway.
const TEMP_STORE_BYTES: u64 = 1 << 50;

/// A put may take this long, plus [`UPLOAD_SECS_PER_GIB`] per GiB.
const UPLOAD_BASE: Duration = Duration::from_secs(60);
/// Seconds an upload may take per GiB: the edge fsyncs every block, which
/// on a slow disk runs at a few tens of MiB/s.
const UPLOAD_SECS_PER_GIB: u64 = 120;

/// Why `put` or `get` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// The temporary store or file could not be made.
    #[error("cannot make a temporary directory under {path}: {source}")]
    Temp {
        /// Where.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The local (temporary) store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Importing the file or folder failed.
    #[error(transparent)]
    Import(#[from] ImportError),
    /// Encrypting or decrypting failed (a wrong key, altered data).
    #[error(transparent)]
    Private(#[from] PrivateError),
    /// Writing the CAR failed.
    #[error(transparent)]
    Car(#[from] CarError),
    /// `--encrypt` was given a directory.
    #[error("{path} is a directory; --encrypt seals one file (make an archive of it first)")]
    EncryptDirectory {
        /// The path.
        path: PathBuf,
    },
    /// The admin API could not be reached.
    #[error(transparent)]
    Admin(#[from] ClientError),
    /// The edge refused the object.
    #[error("the edge refused the object ({status}): {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// What it said.
        message: String,
    },
    /// The CID does not parse.
    #[error("{text:?} is not a CID: {reason}")]
    BadCid {
        /// What was given.
        text: String,
        /// Why.
        reason: String,
    },
    /// A `--from` URL is malformed.
    #[error(transparent)]
    BadUrl(Box<FetchError>),
    /// No `--from` was given and the config has no gateway to ask.
    #[error("edge.http_listen is off in the config; give --from URL")]
    NoSource,
    /// Every source failed.
    #[error("no source delivered {cid}:\n{}", failures.join("\n"))]
    AllFailed {
        /// The object.
        cid: Cid,
        /// One line per source: URL, error, whose fault.
        failures: Vec<String>,
    },
    /// The output exists already.
    #[error("{path} exists; give another -o PATH or remove it")]
    Exists {
        /// The path.
        path: PathBuf,
    },
    /// Reading the fetched object failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Writing the output failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A directory under the system's temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> Result<TempDir, TransferError> {
        let base = std::env::temp_dir();
        let name = format!(
            "gridedge-{what}-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        );
        let path = base.join(name);
        std::fs::create_dir(&path).map_err(|source| TransferError::Temp { path: base, source })?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What `put` did.
#[derive(Debug)]
pub struct PutOutcome {
    /// The object's CID.
    pub cid: Cid,
    /// For `--encrypt`: the key, which exists nowhere else.
    pub key: Option<PrivateKey>,
    /// Whether the edge pinned it.
    pub pinned: bool,
}

/// `gridedge put`: imports `path`, sends it to the edge behind `admin`.
pub async fn put(
    path: &Path,
    encrypt: bool,
    pin: bool,
    admin: &AdminClient,
) -> Result<PutOutcome, TransferError> {
    let temp = TempDir::new("put")?;
    let store_dir = temp.0.join("store");
    let car_path = temp.0.join("object.car");
    let source = path.to_owned();
    let car_file = car_path.clone();
    let (cid, key) = tokio::task::spawn_blocking(move || {
        let store = BlockStore::open_scratch(&store_dir, TEMP_STORE_BYTES)?;
        let opts = ImportOptions {
            pin: true,
            ..ImportOptions::default()
        };
        let (cid, key) = if encrypt {
            if source.is_dir() {
                return Err(TransferError::EncryptDirectory { path: source });
            }
            let file = std::fs::File::open(&source).map_err(|e| {
                TransferError::Import(ImportError::Io {
                    action: "open",
                    path: source.clone(),
                    source: e,
                })
            })?;
            let (cid, key) = crate::content::private::import_private(&store, file, &opts)?;
            (cid, Some(key))
        } else {
            (crate::content::import_path(&store, &source, &opts)?, None)
        };
        let out = std::fs::File::create(&car_file).map_err(|source| TransferError::Write {
            path: car_file.clone(),
            source,
        })?;
        let mut out = std::io::BufWriter::new(out);
        crate::content::car::export(&store, &cid, &mut out)?;
        out.flush().map_err(|source| TransferError::Write {
            path: car_file.clone(),
            source,
        })?;
        Ok((cid, key))
    })
    .await
    .expect("the import does not panic")?;
    let car_len = std::fs::metadata(&car_path).map(|m| m.len()).unwrap_or(0);
    let timeout = UPLOAD_BASE + Duration::from_secs(UPLOAD_SECS_PER_GIB * (car_len >> 30));
    let response = admin
        .post_file(&format!("/content?pin={pin}"), &car_path, timeout)
        .await?;
    if !response.status.is_success() {
        let message = serde_json::from_slice::<serde_json::Value>(&response.body)
            .ok()
            .and_then(|v| v.get("error")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| response.text());
        return Err(TransferError::Refused {
            status: response.status.as_u16(),
            message,
        });
    }
    let reply: Option<PutReply> = serde_json::from_slice(&response.body).ok();
    Ok(PutOutcome {
        cid,
        key,
        pinned: reply.is_some_and(|r| r.pinned),
    })
}

/// Where `get` writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A new file or directory at this path.
    Path(PathBuf),
    /// Standard output (files only).
    Stdout,
}

/// `gridedge get`: fetches `cid` from `sources` in order, verified, and
/// writes it to `output` (decrypted with `key` if given).
pub async fn get(
    cid: &str,
    sources: &[String],
    output: &Output,
    key: Option<&str>,
    fetcher: &Fetcher,
) -> Result<u64, TransferError> {
    let root: Cid =
        cid.parse()
            .map_err(|e: crate::content::cid::CidError| TransferError::BadCid {
                text: cid.chars().take(128).collect(),
                reason: e.to_string(),
            })?;
    let key = key.map(PrivateKey::from_hex).transpose()?;
    if sources.is_empty() {
        return Err(TransferError::NoSource);
    }
    let peers = sources
        .iter()
        .map(|s| PeerUrl::parse(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TransferError::BadUrl(Box::new(e)))?;
    if let Output::Path(path) = output
        && path.symlink_metadata().is_ok()
    {
        return Err(TransferError::Exists { path: path.clone() });
    }

    let temp = TempDir::new("get")?;
    let store = BlockStore::open_scratch(&temp.0.join("store"), TEMP_STORE_BYTES)?;
    let store = Arc::new(store);
    let bar = progress_bar();
    let mut failures = Vec::new();
    let mut fetched = None;
    for peer in &peers {
        if let Some(bar) = &bar {
            bar.set_message(format!("{root} from {peer}"));
        }
        let progress = bar
            .clone()
            .map(|b| Arc::new(move |n: u64| b.inc(n)) as crate::edge::fetch::Progress);
        match fetcher
            .fetch_dag(peer, &root, store.clone(), true, progress)
            .await
        {
            Ok(summary) => {
                fetched = Some(summary);
                break;
            }
            Err(e) => {
                let line = format!("{peer}: {e} ({})", e.fault());
                if e.fault() == Fault::Local {
                    return Err(TransferError::AllFailed {
                        cid: root,
                        failures: vec![line],
                    });
                }
                if let Some(bar) = &bar {
                    bar.suspend(|| eprintln!("gridedge get: {line}; trying the next source"));
                } else {
                    eprintln!("gridedge get: {line}; trying the next source");
                }
                failures.push(line);
            }
        }
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let Some(summary) = fetched else {
        return Err(TransferError::AllFailed {
            cid: root,
            failures,
        });
    };
    let output = output.clone();
    tokio::task::spawn_blocking(move || write_out(&store, &root, &output, key.as_ref()))
        .await
        .expect("writing out does not panic")?;
    Ok(summary.bytes)
}

/// A spinner with bytes and rate on stderr, only for a person watching.
fn progress_bar() -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {msg} {bytes} ({bytes_per_sec}, {elapsed})",
        )
        .expect("a valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    Some(bar)
}

/// Writes the verified object out: to a temporary name beside the target,
/// renamed into place when whole, so a failure (a wrong key) leaves no
/// half-written output.
fn write_out(
    store: &BlockStore,
    root: &Cid,
    output: &Output,
    key: Option<&PrivateKey>,
) -> Result<(), TransferError> {
    let path = match output {
        Output::Stdout => {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            let write = |e: std::io::Error| TransferError::Write {
                path: "-".into(),
                source: e,
            };
            match key {
                Some(key) => {
                    let mut plain = crate::content::private::open_private(store, root, key)?;
                    std::io::copy(&mut plain, &mut out).map_err(private_io)?;
                }
                None => {
                    let mut reader = crate::content::Reader::new(store, root)?;
                    std::io::copy(&mut reader, &mut out).map_err(|e| match unwrap_io(e) {
                        ReadError::Io { source, .. } => write(source),
                        other => TransferError::Read(other),
                    })?;
                }
            }
            return out.flush().map_err(write);
        }
        Output::Path(path) => path,
    };
    let mut partial = path.as_os_str().to_owned();
    partial.push(".gridedge-partial");
    let partial = PathBuf::from(partial);
    let written = match key {
        Some(key) => (|| {
            let mut plain = crate::content::private::open_private(store, root, key)?;
            let mut file =
                std::fs::File::create_new(&partial).map_err(|source| TransferError::Write {
                    path: partial.clone(),
                    source,
                })?;
            std::io::copy(&mut plain, &mut file).map_err(private_io)?;
            file.sync_all().map_err(|source| TransferError::Write {
                path: partial.clone(),
                source,
            })
        })(),
        None => crate::content::export_path(store, root, &partial).map_err(TransferError::Read),
    };
    if let Err(e) = written {
        let _ = std::fs::remove_file(&partial).or_else(|_| std::fs::remove_dir_all(&partial));
        return Err(e);
    }
    if path.symlink_metadata().is_ok() {
        let _ = std::fs::remove_file(&partial).or_else(|_| std::fs::remove_dir_all(&partial));
        return Err(TransferError::Exists { path: path.clone() });
    }
    std::fs::rename(&partial, path).map_err(|source| TransferError::Write {
        path: path.clone(),
        source,
    })
}

/// An IO error from a decrypting reader: the `PrivateError` inside (a
/// wrong key, altered data) or the write that failed.
fn private_io(e: std::io::Error) -> TransferError {
    match e.get_ref().map(|i| i.is::<PrivateError>()) {
        Some(true) => TransferError::Private(
            *e.into_inner()
                .expect("checked above")
                .downcast::<PrivateError>()
                .expect("checked above"),
        ),
        _ => TransferError::Read(unwrap_io(e)),
    }
}
