//! The registry's admin API: what the `name` commands, followers and
//! operators talk to. JSON for people and scripts; the canonical binary
//! encoding for operations, blocks and proofs, so what is signed or
//! verified is exactly what travels.
//!
//! | route | does |
//! | --- | --- |
//! | `GET /registry` | chain status: zone, chain id, difficulty, height, tip, root |
//! | `GET /registry/names?after=N&limit=L` | registered names, in order |
//! | `GET /registry/names/{name}` | one name's stored state (live or expired) |
//! | `GET /registry/names/{name}/proof` | the name's proof against the tip (binary) |
//! | `POST /registry/ops` | submit a signed operation (binary); answers once durable |
//! | `GET /registry/blocks?since=H&max=N` | blocks above H (binary batch), for followers |
//! | `POST /registry/blocks` | feed blocks (binary batch) to this node, verified first |
//! | `GET /registry/blocks/{height}` | one block, as JSON |
//! | `POST /registry/mine?count=N` | seal N empty blocks (devnet, sequencer only) |

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use crate::registry::block::{Block, decode_block_batch, encode_block_batch};
use crate::registry::codec::DecodeError;
use crate::registry::model::{Name, NameState};
use crate::registry::op::Operation;
use crate::registry::service::Registry;
use crate::registry::source::{Fault, MAX_BLOCKS_PER_FETCH, Receipt, RegistrySource, SourceError};
use crate::registry::text::RecordSpec;

/// A fetch stops adding blocks past this many bytes (it always holds one),
/// so a follower's response stays well under its read limit.
const MAX_FETCH_BYTES: usize = 16 << 20;

/// Most names one listing returns.
const MAX_LIST: usize = 1000;

/// The registry routes, under `/registry`.
pub fn routes(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/registry", get(status))
        .route("/registry/names", get(list_names))
        .route("/registry/names/{name}", get(show_name))
        .route("/registry/names/{name}/proof", get(proof))
        .route("/registry/ops", post(submit))
        .route(
            "/registry/blocks",
            get(blocks_since)
                .post(feed_blocks)
                .layer(DefaultBodyLimit::max(
                    crate::admin::client::MAX_RESPONSE_BYTES,
                )),
        )
        .route("/registry/blocks/{height}", get(show_block))
        .route("/registry/mine", post(mine))
        .with_state(registry)
}

/// An error as the API answers it: a status and `{"error", "reason"}`.
pub struct ApiError {
    status: StatusCode,
    reason: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            reason,
            message: message.into(),
        }
    }

    fn decode(what: &str, e: DecodeError) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed", format!("{what}: {e}"))
    }
}

impl From<SourceError> for ApiError {
    fn from(e: SourceError) -> Self {
        let (status, reason) = match (&e, e.fault()) {
            (SourceError::Rejected { source }, _) => (StatusCode::CONFLICT, source.reason()),
            (SourceError::ReadOnly, _) => (StatusCode::FORBIDDEN, "read_only"),
            (SourceError::BlockRefused { .. }, _) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "block_refused")
            }
            (_, Fault::Client) => (StatusCode::BAD_REQUEST, "bad_request"),
            (_, Fault::Peer) => (StatusCode::UNPROCESSABLE_ENTITY, "bad_peer_data"),
            (_, Fault::Local) => {
                tracing::error!(error = %e, "registry failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        Self::new(status, reason, e.to_string())
    }
}

impl IntoResponse for ApiError {
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

type ApiResult<T> = Result<T, ApiError>;

fn parse_name(text: &str) -> ApiResult<Name> {
    Name::parse(text).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_name",
            format!("{text:?}: {e}"),
        )
    })
}

/// `GET /registry`.
#[derive(Debug, Serialize, Deserialize)]
pub struct StatusView {
    pub kind: String,
    pub zone: String,
    pub chain_id: String,
    pub difficulty_bits: u8,
    pub registration_period_blocks: u64,
    pub height: u64,
    pub tip_hash: String,
    pub state_root: String,
    pub genesis_hash: String,
    pub sequencer: String,
    pub is_sequencer: bool,
    pub names: usize,
}

async fn status(State(registry): State<Arc<Registry>>) -> Json<StatusView> {
    let source = registry.read();
    let params = source.params();
    Json(StatusView {
        kind: source.kind().to_owned(),
        zone: registry.zone().to_fqdn(),
        chain_id: params.chain_id.as_str().to_owned(),
        difficulty_bits: params.difficulty_bits,
        registration_period_blocks: params.registration_period_blocks,
        height: source.height(),
        tip_hash: hex::encode(source.tip().hash()),
        state_root: hex::encode(source.root()),
        genesis_hash: hex::encode(source.genesis_header().hash()),
        sequencer: params.sequencer.to_string(),
        is_sequencer: source.is_sequencer(),
        names: source.state().len(),
    })
}

/// One name as the API shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct NameView {
    pub name: String,
    pub fqdn: String,
    pub owner: String,
    pub records: Vec<RecordSpec>,
    pub content: Option<String>,
    pub sequence: u64,
    pub expiry_height: u64,
    /// Whether the name is live at the current height.
    pub live: bool,
    /// The sequence the owner's next operation must carry.
    pub next_sequence: u64,
}

fn name_view(registry: &Registry, name: &Name, state: &NameState, height: u64) -> NameView {
    NameView {
        name: name.to_string(),
        fqdn: registry.zone().fqdn(name),
        owner: state.owner.to_string(),
        records: state
            .records
            .records()
            .iter()
            .map(RecordSpec::from_record)
            .collect(),
        content: state.content.as_ref().map(ToString::to_string),
        sequence: state.sequence,
        expiry_height: state.expiry_height,
        live: state.is_live(height),
        next_sequence: state.sequence + 1,
    }
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    after: Option<String>,
    limit: Option<usize>,
}

async fn list_names(
    State(registry): State<Arc<Registry>>,
    Query(q): Query<ListQuery>,
) -> Json<Vec<NameView>> {
    let source = registry.read();
    let height = source.height();
    let limit = q.limit.unwrap_or(100).min(MAX_LIST);
    let mut names: Vec<(&Name, &NameState)> = source
        .state()
        .iter()
        .filter(|(n, _)| q.after.as_deref().is_none_or(|a| n.as_str() > a))
        .collect();
    names.sort_by(|a, b| a.0.cmp(b.0));
    Json(
        names
            .into_iter()
            .take(limit)
            .map(|(n, s)| name_view(&registry, n, s, height))
            .collect(),
    )
}

async fn show_name(
    State(registry): State<Arc<Registry>>,
    Path(name): Path<String>,
) -> ApiResult<Json<NameView>> {
    let name = parse_name(&name)?;
    let source = registry.read();
    let state = source.get(&name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{} is not registered", registry.zone().fqdn(&name)),
        )
    })?;
    Ok(Json(name_view(&registry, &name, state, source.height())))
}

async fn proof(
    State(registry): State<Arc<Registry>>,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let name = parse_name(&name)?;
    let proof = registry.read().proof(&name)?;
    Ok(binary(proof.to_bytes()))
}

fn binary(bytes: Vec<u8>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/octet-stream")], bytes)
}

/// What a submit or mine answers once the block is durable.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReceiptView {
    pub height: u64,
    pub block_hash: String,
    pub op_ids: Vec<String>,
}

impl From<Receipt> for ReceiptView {
    fn from(r: Receipt) -> Self {
        Self {
            height: r.height,
            block_hash: hex::encode(r.block_hash),
            op_ids: r.op_ids.iter().map(hex::encode).collect(),
        }
    }
}

async fn submit(
    State(registry): State<Arc<Registry>>,
    body: Bytes,
) -> ApiResult<Json<ReceiptView>> {
    let op = Operation::from_bytes(&body).map_err(|e| ApiError::decode("operation", e))?;
    let receipt = registry.submit(op).await?;
    Ok(Json(receipt.into()))
}

#[derive(Debug, Deserialize)]
struct SinceQuery {
    since: u64,
    max: Option<usize>,
}

async fn blocks_since(
    State(registry): State<Arc<Registry>>,
    Query(q): Query<SinceQuery>,
) -> ApiResult<impl IntoResponse> {
    let max = q.max.unwrap_or(MAX_BLOCKS_PER_FETCH);
    let mut blocks = registry.read().blocks_since(q.since, max)?;
    let mut bytes = 0;
    let keep = blocks
        .iter()
        .take_while(|b| {
            bytes += b.to_bytes().len();
            bytes <= MAX_FETCH_BYTES
        })
        .count()
        .max(1);
    blocks.truncate(keep);
    Ok(binary(encode_block_batch(&blocks)))
}

/// What feeding blocks did.
#[derive(Debug, Serialize, Deserialize)]
pub struct FedView {
    pub applied: usize,
    pub height: u64,
}

async fn feed_blocks(
    State(registry): State<Arc<Registry>>,
    body: Bytes,
) -> ApiResult<Json<FedView>> {
    let blocks: Vec<Block> = decode_block_batch(&body, MAX_BLOCKS_PER_FETCH)
        .map_err(|e| ApiError::decode("block batch", e))?;
    let applied = registry.apply_blocks(blocks).await?;
    let height = registry.read().height();
    Ok(Json(FedView { applied, height }))
}

/// One block as JSON.
#[derive(Debug, Serialize, Deserialize)]
pub struct BlockView {
    pub height: u64,
    pub hash: String,
    pub prev_hash: String,
    pub time_unix_secs: u64,
    pub state_root: String,
    pub ops: Vec<OpView>,
}

/// One operation of a block.
#[derive(Debug, Serialize, Deserialize)]
pub struct OpView {
    pub id: String,
    pub kind: String,
    pub name: String,
    pub signer: String,
    pub sequence: u64,
}

async fn show_block(
    State(registry): State<Arc<Registry>>,
    Path(height): Path<u64>,
) -> ApiResult<Json<BlockView>> {
    let source = registry.read();
    if height == 0 || height > source.height() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no block {height}: blocks run from 1 to {} (0 is the genesis)",
                source.height()
            ),
        ));
    }
    let block = source
        .blocks_since(height - 1, 1)?
        .pop()
        .expect("a height at or below the tip is held");
    Ok(Json(BlockView {
        height: block.header.height,
        hash: hex::encode(block.hash()),
        prev_hash: hex::encode(block.header.prev_hash),
        time_unix_secs: block.header.time_unix_secs,
        state_root: hex::encode(block.header.state_root),
        ops: block
            .ops
            .iter()
            .map(|op| OpView {
                id: hex::encode(op.id()),
                kind: op.body.action.kind().to_owned(),
                name: op.body.name.to_string(),
                signer: op.body.signer.to_string(),
                sequence: op.body.sequence,
            })
            .collect(),
    }))
}

#[derive(Debug, Deserialize)]
struct MineQuery {
    count: u64,
}

async fn mine(
    State(registry): State<Arc<Registry>>,
    Query(q): Query<MineQuery>,
) -> ApiResult<Json<ReceiptView>> {
    Ok(Json(registry.mine(q.count).await?.into()))
}
