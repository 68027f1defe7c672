//! `gridedge name …` and `gridedge chain …`: an owner's tools. They build
//! and sign operations here, with the owner's key, and submit them to the
//! running edge's admin API; the key never leaves this process. Every
//! answer is checked: a refused operation prints the edge's reason and
//! exits non-zero, with nothing changed.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use ed25519_dalek::SigningKey;
use serde::Deserialize;

use crate::admin::client::{AdminClient, ClientError};
use crate::admin::registry::{NameView, ReceiptView, StatusView};
use crate::registry::chain::{NameProof, NameProofError};
use crate::registry::codec::DecodeError;
use crate::registry::genesis::{DEVNET_GENESIS, Genesis, GenesisError};
use crate::registry::keys::{self, KeyError};
use crate::registry::model::{ContentCid, ModelError, Name, Owner, RecordSet, Zone};
use crate::registry::op::{OpError, Operation};
use crate::registry::params::ChainId;
use crate::registry::text::{DEFAULT_TTL_SECS, RecordSpec};

/// `gridedge name …`
#[derive(Debug, Subcommand)]
pub enum NameCommand {
    /// Make an owner key: the secret goes to a new file (never overwritten),
    /// the public key is printed.
    Keygen {
        /// Where to write the secret key.
        #[arg(long, default_value = "owner.key")]
        out: PathBuf,
    },
    /// Register a name (mining its proof of work) with records and content.
    Register {
        /// The name, e.g. `alice` or `alice.grid`.
        name: String,
        #[command(flatten)]
        key: KeyArg,
        #[command(flatten)]
        records: RecordArgs,
    },
    /// Replace a name's records and/or content. Without record options the
    /// records stay; without --content or --no-content the content stays.
    Set {
        name: String,
        #[command(flatten)]
        key: KeyArg,
        #[command(flatten)]
        records: RecordArgs,
        /// Remove the name's content.
        #[arg(long, conflicts_with = "content")]
        no_content: bool,
    },
    /// Give a name to another key.
    Transfer {
        name: String,
        #[command(flatten)]
        key: KeyArg,
        /// The new owner's public key (64 hex digits).
        #[arg(long)]
        to: String,
    },
    /// Extend a name's registration by one period.
    Renew {
        name: String,
        #[command(flatten)]
        key: KeyArg,
    },
    /// Show a name's state; with --proof, also its proof against the
    /// chain's tip, checked here, as hex for `name verify`.
    Show {
        name: String,
        #[arg(long)]
        proof: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check a proof (hex, or a file holding it) against the chain's
    /// genesis and sequencer, with no edge needed.
    Verify {
        /// The proof as hex, or a path to a file holding it.
        proof: String,
        /// The chain's genesis file; the devnet's compiled in by default.
        #[arg(long)]
        genesis: Option<PathBuf>,
    },
}

/// `gridedge chain …`
#[derive(Debug, Subcommand)]
pub enum ChainCommand {
    /// The chain's height, tip, root and parameters.
    Status,
    /// Seal empty blocks to move the height on (devnet sequencer only), as
    /// anvil's mine does; expires names in tests.
    Mine { count: u64 },
}

/// The owner's key file.
#[derive(Debug, Args)]
pub struct KeyArg {
    /// The owner's secret key file (from `name keygen`).
    #[arg(long, env = "GRIDEDGE_NAME_KEY")]
    key: PathBuf,
}

/// Records and content, from options or a file.
#[derive(Debug, Args, Default)]
pub struct RecordArgs {
    /// An IPv4 address for the name (repeatable).
    #[arg(long)]
    a: Vec<String>,
    /// An IPv6 address (repeatable).
    #[arg(long)]
    aaaa: Vec<String>,
    /// A TXT string (repeatable).
    #[arg(long)]
    txt: Vec<String>,
    /// An alias target (alone at the name).
    #[arg(long)]
    cname: Option<String>,
    /// A mail exchanger, `PREFERENCE HOST` (repeatable).
    #[arg(long)]
    mx: Vec<String>,
    /// A name server to delegate the name to (repeatable).
    #[arg(long)]
    ns: Vec<String>,
    /// Any record, `SUBNAME TYPE DATA` (`@` for the name itself), e.g.
    /// `www A 192.0.2.1` or `@ CAA 0 issue "letsencrypt.org"` (repeatable).
    #[arg(long)]
    record: Vec<String>,
    /// A TOML file of records: `records = [{ subname, type, ttl_secs, data }]`.
    #[arg(long)]
    records: Option<PathBuf>,
    /// TTL of the records given as options.
    #[arg(long, default_value_t = DEFAULT_TTL_SECS)]
    ttl: u32,
    /// The content (CID) the HTTP edge serves for the name.
    #[arg(long)]
    content: Option<String>,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The edge refused the request.
    #[error("the edge refused: {message} ({status})")]
    Refused { status: u16, message: String },
    /// The edge answered something unreadable.
    #[error("unexpected answer from the edge: {0}")]
    BadAnswer(String),
    #[error("key: {0}")]
    Key(#[from] KeyError),
    #[error("{what}: {source}")]
    Model { what: String, source: ModelError },
    #[error("building the operation: {0}")]
    Op(#[from] OpError),
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("proof: {0}")]
    Decode(#[from] DecodeError),
    #[error("the proof does not hold: {0}")]
    Proof(#[from] NameProofError),
    #[error(transparent)]
    Genesis(#[from] GenesisError),
    #[error("{0} is not registered")]
    NotFound(String),
    #[error("nothing to change: give records, --content or --no-content")]
    NothingToSet,
}

fn model(what: impl Into<String>) -> impl FnOnce(ModelError) -> NameError {
    let what = what.into();
    move |source| NameError::Model { what, source }
}

/// Runs a `name` command against the admin API at `admin`.
pub async fn run_name(cmd: NameCommand, admin: &AdminClient) -> Result<(), NameError> {
    match cmd {
        NameCommand::Keygen { out } => {
            let key = keys::generate_key(&mut rand::rngs::OsRng);
            keys::write_new_key_file(&out, &key)?;
            println!("public key: {}", Owner::of(&key));
            println!(
                "secret key written to {} (keep it: it is the only way to change your names)",
                out.display()
            );
            Ok(())
        }
        NameCommand::Register { name, key, records } => {
            let key = keys::read_key_file(&key.key)?;
            let status = status(admin).await?;
            let name = parse_name(&status, &name)?;
            let sequence = match get_name(admin, &name).await? {
                Some(view) if view.live => {
                    return Err(NameError::Refused {
                        status: 409,
                        message: format!("{} is registered to {}", view.fqdn, view.owner),
                    });
                }
                Some(view) => view.next_sequence,
                None => 1,
            };
            let set = records.record_set(None)?;
            let content = records.content()?;
            let chain = chain_id(&status)?;
            let difficulty = status.difficulty_bits;
            eprintln!("mining the registration ({difficulty} bits of work)…");
            let op = tokio::task::spawn_blocking(move || {
                Operation::register(&key, &chain, difficulty, name, sequence, set, content)
            })
            .await
            .expect("mining does not panic")?;
            submit(admin, &op, &status).await
        }
        NameCommand::Set {
            name,
            key,
            records,
            no_content,
        } => {
            let (key, status, name, view) = registered(admin, &key, &name).await?;
            if !records.has_records() && records.content.is_none() && !no_content {
                return Err(NameError::NothingToSet);
            }
            let set = records.record_set(Some(&view.records))?;
            let content = match (no_content, records.content()?) {
                (true, _) => None,
                (false, Some(cid)) => Some(cid),
                (false, None) => view
                    .content
                    .as_deref()
                    .map(ContentCid::parse)
                    .transpose()
                    .map_err(model("stored content"))?,
            };
            let op = Operation::update(
                &key,
                &chain_id(&status)?,
                name,
                view.next_sequence,
                set,
                content,
            )?;
            submit(admin, &op, &status).await
        }
        NameCommand::Transfer { name, key, to } => {
            let new_owner = Owner::from_hex(&to).map_err(model("--to"))?;
            let (key, status, name, view) = registered(admin, &key, &name).await?;
            let op = Operation::transfer(
                &key,
                &chain_id(&status)?,
                name,
                view.next_sequence,
                new_owner,
            )?;
            submit(admin, &op, &status).await
        }
        NameCommand::Renew { name, key } => {
            let (key, status, name, view) = registered(admin, &key, &name).await?;
            let op = Operation::renew(&key, &chain_id(&status)?, name, view.next_sequence)?;
            submit(admin, &op, &status).await
        }
        NameCommand::Show { name, proof, json } => {
            let status = status(admin).await?;
            let name = parse_name(&status, &name)?;
            let view = get_name(admin, &name).await?;
            if json {
                let text = match &view {
                    Some(v) => serde_json::to_string_pretty(v).expect("views serialise"),
                    None => "null".to_owned(),
                };
                println!("{text}");
            } else {
                match &view {
                    Some(v) => print_name(v),
                    None => println!("{} is not registered", status_fqdn(&status, &name)),
                }
            }
            if proof {
                let response = admin
                    .get(&format!("/registry/names/{}/proof", name.as_str()))
                    .await?;
                let bytes = expect_ok(response)?.body;
                let proof = NameProof::from_bytes(&bytes)?;
                let genesis = Genesis::from_toml_str(DEVNET_GENESIS)?;
                match proof.verify(&genesis.params, &genesis.header()) {
                    Ok(_) => eprintln!(
                        "proof checked against the devnet genesis: valid at height {}",
                        proof.header.height
                    ),
                    Err(e) => {
                        eprintln!("proof not checked here ({e}); use `name verify --genesis`")
                    }
                }
                println!("proof: {}", hex::encode(&bytes));
            }
            if view.is_none() && !proof {
                return Err(NameError::NotFound(status_fqdn(&status, &name)));
            }
            Ok(())
        }
        NameCommand::Verify { proof, genesis } => verify(&proof, genesis.as_deref()),
    }
}

/// Runs a `chain` command.
pub async fn run_chain(cmd: ChainCommand, admin: &AdminClient) -> Result<(), NameError> {
    match cmd {
        ChainCommand::Status => {
            let s = status(admin).await?;
            println!("chain:      {} ({})", s.chain_id, s.kind);
            println!("zone:       {}", s.zone);
            println!("height:     {}", s.height);
            println!("tip:        {}", s.tip_hash);
            println!("state root: {}", s.state_root);
            println!("names:      {}", s.names);
            println!(
                "sequencer:  {}{}",
                s.sequencer,
                if s.is_sequencer { " (this edge)" } else { "" }
            );
            println!("difficulty: {} bits", s.difficulty_bits);
            Ok(())
        }
        ChainCommand::Mine { count } => {
            let response = admin
                .post(&format!("/registry/mine?count={count}"), Vec::new())
                .await?;
            let receipt: ReceiptView = json(expect_ok(response)?)?;
            println!("height {} (block {})", receipt.height, receipt.block_hash);
            Ok(())
        }
    }
}

fn verify(proof: &str, genesis: Option<&Path>) -> Result<(), NameError> {
    let text = if Path::new(proof).is_file() {
        std::fs::read_to_string(proof).map_err(|e| NameError::File {
            path: proof.into(),
            message: e.to_string(),
        })?
    } else {
        proof.to_owned()
    };
    // `name show --proof` output works as is: its `proof:` line is taken.
    let text = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("proof: "))
        .unwrap_or(text.trim());
    let bytes = hex::decode(text).map_err(|e| NameError::File {
        path: "PROOF".into(),
        message: format!("not hex: {e}"),
    })?;
    let proof = NameProof::from_bytes(&bytes)?;
    let genesis = match genesis {
        Some(path) => Genesis::load(path)?,
        None => Genesis::from_toml_str(DEVNET_GENESIS)?,
    };
    let state = proof.verify(&genesis.params, &genesis.header())?;
    let at = format!(
        "height {} (state root {})",
        proof.header.height,
        hex::encode(proof.header.state_root)
    );
    match state {
        Some(s) => println!(
            "valid: {} is registered at {at}: owner {}, {} records, content {}, expires at height {}",
            proof.name,
            s.owner,
            s.records.len(),
            s.content
                .as_ref()
                .map_or("none".to_owned(), ToString::to_string),
            s.expiry_height
        ),
        None => println!("valid: {} is not registered at {at}", proof.name),
    }
    Ok(())
}

impl RecordArgs {
    /// Whether any record option or file is given.
    fn has_records(&self) -> bool {
        !(self.a.is_empty()
            && self.aaaa.is_empty()
            && self.txt.is_empty()
            && self.cname.is_none()
            && self.mx.is_empty()
            && self.ns.is_empty()
            && self.record.is_empty()
            && self.records.is_none())
    }

    fn content(&self) -> Result<Option<ContentCid>, NameError> {
        self.content
            .as_deref()
            .map(ContentCid::parse)
            .transpose()
            .map_err(model("--content"))
    }

    /// The records given, or `existing` when none are.
    fn record_set(&self, existing: Option<&[RecordSpec]>) -> Result<RecordSet, NameError> {
        let mut specs: Vec<RecordSpec> = Vec::new();
        if let Some(path) = &self.records {
            specs.extend(read_records_file(path)?);
        }
        let option = |rtype: &str, subname: &str, data: &str| RecordSpec {
            subname: subname.to_owned(),
            rtype: rtype.to_owned(),
            ttl_secs: Some(self.ttl),
            data: data.to_owned(),
        };
        specs.extend(self.a.iter().map(|d| option("A", "", d)));
        specs.extend(self.aaaa.iter().map(|d| option("AAAA", "", d)));
        specs.extend(self.txt.iter().map(|d| option("TXT", "", &quote_txt(d))));
        specs.extend(self.cname.iter().map(|d| option("CNAME", "", d)));
        specs.extend(self.mx.iter().map(|d| option("MX", "", d)));
        specs.extend(self.ns.iter().map(|d| option("NS", "", d)));
        for text in &self.record {
            let mut parts = text.trim().splitn(3, char::is_whitespace);
            let (Some(sub), Some(rtype), Some(data)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(NameError::File {
                    path: "--record".into(),
                    message: format!("{text:?} is not `SUBNAME TYPE DATA`"),
                });
            };
            let sub = if sub == "@" { "" } else { sub };
            specs.push(option(rtype, sub, data.trim()));
        }
        if !self.has_records() {
            specs = existing.map(<[RecordSpec]>::to_vec).unwrap_or_default();
        }
        let records = specs
            .iter()
            .map(|spec| {
                spec.to_record().map_err(model(format!(
                    "record `{} {} {}`",
                    spec.subname, spec.rtype, spec.data
                )))
            })
            .collect::<Result<Vec<_>, _>>()?;
        RecordSet::new(records).map_err(model("records"))
    }
}

/// A TXT option is one string of text; quote it for the parser so spaces
/// stay inside it.
fn quote_txt(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

fn read_records_file(path: &Path) -> Result<Vec<RecordSpec>, NameError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        records: Vec<RecordSpec>,
    }
    let err = |message: String| NameError::File {
        path: path.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let file: File =
        toml::from_str(&text).map_err(|e| err(e.to_string().trim_end().replace('\n', " ")))?;
    Ok(file.records)
}

fn parse_name(status: &StatusView, text: &str) -> Result<Name, NameError> {
    let zone = Zone::parse(&status.zone).map_err(model("the edge's zone"))?;
    let lower = text.to_ascii_lowercase();
    let bare = lower.strip_suffix('.').unwrap_or(&lower);
    let suffix = format!(".{}", zone.to_fqdn().trim_end_matches('.'));
    let label = bare.strip_suffix(&suffix).unwrap_or(bare);
    Name::parse(label).map_err(model(format!("name {text:?}")))
}

fn status_fqdn(status: &StatusView, name: &Name) -> String {
    format!("{}.{}", name, status.zone)
}

fn chain_id(status: &StatusView) -> Result<ChainId, NameError> {
    ChainId::new(&status.chain_id).map_err(|e| NameError::BadAnswer(e.to_string()))
}

async fn status(admin: &AdminClient) -> Result<StatusView, NameError> {
    json(expect_ok(admin.get("/registry").await?)?)
}

/// What an operation on a registered name needs: the owner's key, the
/// chain, the name and its current state (an error if not registered).
async fn registered(
    admin: &AdminClient,
    key: &KeyArg,
    text: &str,
) -> Result<(SigningKey, StatusView, Name, NameView), NameError> {
    let key = keys::read_key_file(&key.key)?;
    let status = status(admin).await?;
    let name = parse_name(&status, text)?;
    let view = get_name(admin, &name)
        .await?
        .ok_or_else(|| NameError::NotFound(status_fqdn(&status, &name)))?;
    Ok((key, status, name, view))
}

async fn get_name(admin: &AdminClient, name: &Name) -> Result<Option<NameView>, NameError> {
    let response = admin
        .get(&format!("/registry/names/{}", name.as_str()))
        .await?;
    if response.status == hyper::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    json(expect_ok(response)?).map(Some)
}

async fn submit(admin: &AdminClient, op: &Operation, status: &StatusView) -> Result<(), NameError> {
    let response = admin.post("/registry/ops", op.to_bytes()).await?;
    let receipt: ReceiptView = json(expect_ok(response)?)?;
    println!(
        "{} {}: accepted in block {} ({})",
        op.body.action.kind(),
        status_fqdn(status, &op.body.name),
        receipt.height,
        receipt.block_hash
    );
    Ok(())
}

fn expect_ok(
    response: crate::admin::client::Response,
) -> Result<crate::admin::client::Response, NameError> {
    if response.status.is_success() {
        return Ok(response);
    }
    #[derive(Deserialize)]
    struct ApiError {
        error: String,
    }
    let message = serde_json::from_slice::<ApiError>(&response.body)
        .map(|e| e.error)
        .unwrap_or_else(|_| response.text());
    Err(NameError::Refused {
        status: response.status.as_u16(),
        message,
    })
}

fn json<T: serde::de::DeserializeOwned>(
    response: crate::admin::client::Response,
) -> Result<T, NameError> {
    serde_json::from_slice(&response.body).map_err(|e| NameError::BadAnswer(e.to_string()))
}

fn print_name(v: &NameView) {
    println!("name:      {}", v.fqdn);
    println!("owner:     {}", v.owner);
    println!(
        "expires:   at height {}{}",
        v.expiry_height,
        if v.live { "" } else { " (expired)" }
    );
    println!("sequence:  {}", v.sequence);
    println!("content:   {}", v.content.as_deref().unwrap_or("none"));
    println!("records:");
    for r in &v.records {
        let sub = if r.subname.is_empty() {
            "@"
        } else {
            &r.subname
        };
        println!(
            "  {sub:<12} {:>6} {:<6} {}",
            r.ttl_secs.unwrap_or(DEFAULT_TTL_SECS),
            r.rtype,
            r.data
        );
    }
}
