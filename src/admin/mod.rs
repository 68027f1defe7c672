//! The admin listener: `/health` for load balancers and supervisors,
//! `/metrics` in Prometheus text format, the registry's API
//! (`registry.rs`) and `POST /content` for `gridedge put` (`content.rs`). Loopback by default: it accepts registry operations
//! and blocks, so it is for the operator and the edge's peers, not the
//! world.

pub mod client;
pub mod content;
pub mod metrics;
pub mod registry;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

pub use metrics::Metrics;

/// Binds the admin listener and serves it until `shutdown` is cancelled.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    registry: Option<Arc<crate::registry::service::Registry>>,
    content: Option<(Arc<crate::content::BlockStore>, u64)>,
    retriever: Option<Arc<crate::edge::retrieve::Retriever>>,
    http_cache: Option<&'static crate::edge::cache::DiskCache>,
    shutdown: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "admin listening");
    let mut app = Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/metrics", get(render_metrics))
        .with_state(metrics.clone());
    if let Some(registry) = registry {
        app = app.merge(registry::routes(registry));
    }
    let store = content.as_ref().map(|(store, _)| store.clone());
    if let Some((store, max_put_bytes)) = content {
        app = app.merge(content::routes(store, metrics, max_put_bytes, retriever));
    }
    if let Some(cache) = http_cache {
        app = app.merge(cache_routes(cache, store));
    }
    Ok(tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "admin listener failed");
        }
    }))
}

/// `GET /cache`: what the proxy's cache holds. `POST /cache/purge?url=URL`
/// drops the cached response for a URL (every variant of it), as `curl -X
/// PURGE` through the proxy does; `POST /cache/purge?cid=CID` drops every
/// response served from that DAG (registry names, `/ipfs/` paths) and the
/// DAG's blocks from the block store, but for blocks a pin keeps.
fn cache_routes(
    cache: &'static crate::edge::cache::DiskCache,
    store: Option<Arc<crate::content::BlockStore>>,
) -> Router {
    use axum::http::StatusCode;
    #[derive(serde::Deserialize)]
    struct Purge {
        url: Option<String>,
        cid: Option<String>,
    }
    let purge = move |q: Purge| -> (StatusCode, serde_json::Value) {
        match (q.url, q.cid) {
            (Some(url), None) => {
                let purged = crate::edge::proxy::purge(cache, &url);
                let status = if purged {
                    StatusCode::OK
                } else {
                    StatusCode::NOT_FOUND
                };
                (status, serde_json::json!({ "purged": purged }))
            }
            (None, Some(text)) => {
                let cid = match text.parse::<crate::content::Cid>() {
                    Ok(cid) => cid,
                    Err(e) => {
                        return (
                            StatusCode::BAD_REQUEST,
                            serde_json::json!({ "error": format!("cid `{text}`: {e}") }),
                        );
                    }
                };
                let responses = crate::edge::proxy::purge_cid(cache, &cid);
                let blocks = match store.as_ref().map(|s| s.evict_dag(&cid)).transpose() {
                    Ok(blocks) => blocks.unwrap_or(0),
                    Err(e) => {
                        return (
                            StatusCode::INTERNAL_SERVER_ERROR,
                            serde_json::json!({ "error": e.to_string() }),
                        );
                    }
                };
                let pinned = store
                    .as_ref()
                    .is_some_and(|s| s.pins().contains(&cid.to_v1()));
                let status = if responses + blocks > 0 {
                    StatusCode::OK
                } else {
                    StatusCode::NOT_FOUND
                };
                let body = serde_json::json!({
                    "responses": responses,
                    "blocks": blocks,
                    "pinned": pinned,
                });
                (status, body)
            }
            _ => (
                StatusCode::BAD_REQUEST,
                serde_json::json!({ "error": "give one of url= and cid=" }),
            ),
        }
    };
    Router::new()
        .route(
            "/cache",
            get(move || async move { axum::Json(cache.usage()) }),
        )
        .route(
            "/cache/purge",
            axum::routing::post(
                move |axum::extract::Query(q): axum::extract::Query<Purge>| async move {
                    let (status, body) = tokio::task::spawn_blocking(move || purge(q))
                        .await
                        .unwrap_or((
                            StatusCode::INTERNAL_SERVER_ERROR,
                            serde_json::json!({ "error": "the purge failed" }),
                        ));
                    (status, axum::Json(body))
                },
            ),
        )
}

async fn render_metrics(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.encode(),
    )
}
