//! The content routes of the admin API: how `gridedge put` hands a DAG to
//! the running edge, whose process holds the block store's lock and so is
//! its only writer.
//!
//! | route | does |
//! | --- | --- |
//! | `POST /content?pin=true` | a CAR v1 body (streamed, at most `content.max_put_bytes`): every block checked against its CID, the DAG of each root complete, then stored (and pinned), then published to the overlay (this edge announced as a holder, the CID put at the responsible peers, which fetch and keep it) |
//! | `GET /overlay/status` | the overlay's members, coordinates, reputation and this node's P-Grid path, as JSON (`gridedge status`, `gridedge peers`) |

use std::io;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::admin::Metrics;
use crate::content::BlockStore;
use crate::content::car::{self, CarError, CarImportOptions};
use crate::content::store::StoreError;
use crate::edge::retrieve::Retriever;

/// What the content routes share.
#[derive(Clone)]
struct ContentState {
    store: Arc<BlockStore>,
    metrics: Arc<Metrics>,
    max_put_bytes: u64,
    retriever: Option<Arc<Retriever>>,
}

/// The content and overlay routes; `retriever` is `None` when the overlay
/// is off (puts stay local).
pub fn routes(
    store: Arc<BlockStore>,
    metrics: Arc<Metrics>,
    max_put_bytes: u64,
    retriever: Option<Arc<Retriever>>,
) -> Router {
    Router::new()
        .route("/content", post(put))
        .route("/overlay/status", get(overlay_status))
        // The body is streamed and bounded below, not buffered by axum.
        .layer(DefaultBodyLimit::disable())
        .with_state(ContentState {
            store,
            metrics,
            max_put_bytes,
            retriever,
        })
}

async fn overlay_status(State(state): State<ContentState>) -> Response {
    let Some(retriever) = &state.retriever else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the overlay is off (overlay.listen is empty)\n",
        )
            .into_response();
    };
    match retriever.overlay().status().await {
        Ok(status) => Json(status).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct PutQuery {
    #[serde(default)]
    pin: bool,
}

/// The answer to a put.
#[derive(Debug, Serialize, Deserialize)]
pub struct PutReply {
    /// The CAR's roots, now stored whole.
    pub roots: Vec<String>,
    /// Whether they were pinned.
    pub pinned: bool,
    /// Whether every root was published to the overlay (false when the
    /// overlay is off or its lookup failed; the object is stored here
    /// either way).
    #[serde(default)]
    pub published: bool,
}

/// A refusal: status, `{"error", "reason"}`.
struct PutError {
    status: StatusCode,
    reason: &'static str,
    message: String,
}

impl IntoResponse for PutError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body<'a> {
            error: &'a str,
            reason: &'a str,
        }
        let body = Body {
            error: &self.message,
            reason: self.reason,
        };
        (self.status, Json(body)).into_response()
    }
}

/// Marks the IO error raised when the body passes the bound.
#[derive(Debug)]
struct TooLarge(u64);

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the CAR is larger than content.max_put_bytes ({} bytes)",
            self.0
        )
    }
}

impl std::error::Error for TooLarge {}

fn put_error(e: CarError) -> PutError {
    let (status, reason) = match &e {
        CarError::Io(io) if io.get_ref().is_some_and(|i| i.is::<TooLarge>()) => {
            (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
        }
        CarError::Io(_) => (StatusCode::BAD_REQUEST, "body"),
        CarError::Store(StoreError::Full { .. } | StoreError::TooMany { .. }) => {
            (StatusCode::INSUFFICIENT_STORAGE, "store_full")
        }
        CarError::Store(StoreError::Incomplete { .. }) => {
            (StatusCode::UNPROCESSABLE_ENTITY, "incomplete")
        }
        CarError::Store(_) => {
            tracing::error!(error = %e, "content put: the store failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal")
        }
        _ => (StatusCode::UNPROCESSABLE_ENTITY, "bad_car"),
    };
    PutError {
        status,
        reason,
        message: e.to_string(),
    }
}

async fn put(
    State(state): State<ContentState>,
    Query(query): Query<PutQuery>,
    body: Body,
) -> Result<Json<PutReply>, PutError> {
    let max = state.max_put_bytes;
    let mut seen = 0u64;
    let chunks = body.into_data_stream().map(move |chunk| {
        let chunk = chunk.map_err(io::Error::other)?;
        seen += chunk.len() as u64;
        if seen > max {
            return Err(io::Error::new(io::ErrorKind::FileTooLarge, TooLarge(max)));
        }
        Ok(chunk)
    });
    let reader = SyncIoBridge::new(StreamReader::new(chunks));
    let store = state.store.clone();
    let pin = query.pin;
    let stored = tokio::task::spawn_blocking(move || {
        let roots = car::import(&store, reader, &CarImportOptions { pin: false })?;
        // A put stands for whole objects: a DAG with holes could not be
        // served, so it is refused (its blocks stay, unpinned, for eviction).
        for root in &roots {
            let walk = store.walk_dag(*root).map_err(CarError::Store)?;
            if let Some(example) = walk.missing.first() {
                return Err(CarError::Store(StoreError::Incomplete {
                    root: *root,
                    missing: walk.missing.len(),
                    example: *example,
                }));
            }
        }
        if pin {
            for root in &roots {
                store.pin(root)?;
            }
        }
        Ok(roots)
    })
    .await;
    let result = match stored {
        Ok(result) => result,
        Err(e) => Err(CarError::Io(io::Error::other(e.to_string()))),
    };
    match result {
        Ok(roots) => {
            state.metrics.content_put("stored");
            let mut published = state.retriever.is_some();
            for root in &roots {
                tracing::info!(%root, pinned = pin, "content put");
                if let Some(retriever) = &state.retriever
                    && let Err(e) = retriever.publish(root).await
                {
                    tracing::warn!(%root, error = %e, "content put: not published to the overlay");
                    published = false;
                }
            }
            Ok(Json(PutReply {
                roots: roots.iter().map(ToString::to_string).collect(),
                pinned: pin,
                published,
            }))
        }
        Err(e) => {
            let e = put_error(e);
            state.metrics.content_put(e.reason);
            Err(e)
        }
    }
}
