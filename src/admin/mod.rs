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
    if let Some((store, max_put_bytes)) = content {
        app = app.merge(content::routes(store, metrics, max_put_bytes, retriever));
    }
    if let Some(cache) = http_cache {
        app = app.merge(cache_routes(cache));
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

/// `GET /cache`: what the proxy's cache holds; `POST /cache/purge?url=URL`
/// drops the cached response for a URL (every variant of it), as `curl
/// -X PURGE` through the proxy does.
fn cache_routes(cache: &'static crate::edge::cache::DiskCache) -> Router {
    #[derive(serde::Deserialize)]
    struct Purge {
        url: String,
    }
    Router::new()
        .route(
            "/cache",
            get(move || async move { axum::Json(cache.usage()) }),
        )
        .route(
            "/cache/purge",
            axum::routing::post(
                move |axum::extract::Query(q): axum::extract::Query<Purge>| async move {
                    let purged = tokio::task::spawn_blocking(move || {
                        crate::edge::proxy::purge(cache, &q.url)
                    })
                    .await
                    .unwrap_or(false);
                    let status = if purged {
                        axum::http::StatusCode::OK
                    } else {
                        axum::http::StatusCode::NOT_FOUND
                    };
                    (status, axum::Json(serde_json::json!({ "purged": purged })))
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
