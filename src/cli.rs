//! The command line (clap). Raw flags only; `main.rs` turns them into a
//! `Config` and runs the chosen command.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// gridedge: a DNS resolver, CDN edge and P2P overlay peer in one binary.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// Config file (TOML); without it, the compiled-in defaults.
    #[arg(long, short, global = true, env = "GRIDEDGE_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the edge: DNS, the registry, admin.
    Run {
        /// Override `data_dir` of the config.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Log as JSON lines (overrides `log.format`).
        #[arg(long)]
        json_logs: bool,
    },
    /// Make certificates.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Check a config file and print the settings it results in.
    CheckConfig,
    /// Register and manage names of the registry, through the running
    /// edge's admin API.
    Name {
        #[command(subcommand)]
        command: Box<crate::registry::client::NameCommand>,
        /// The edge's admin API; by default the config's `admin.listen`.
        #[arg(long, global = true)]
        admin: Option<String>,
    },
    /// Add a file or folder to the running edge; prints its CID.
    Put {
        /// The file or folder.
        path: PathBuf,
        /// Encrypt the file first under a fresh key, printed once and
        /// stored nowhere: without it the object is noise.
        #[arg(long)]
        encrypt: bool,
        /// Pin it on the edge, so eviction never drops it.
        #[arg(long)]
        pin: bool,
        /// The edge's admin API; by default the config's `admin.listen`.
        #[arg(long)]
        admin: Option<String>,
    },
    /// Fetch a file or folder by CID, checking every block, and write it.
    Get {
        /// The object's CID.
        cid: String,
        /// Where to write it (must not exist); `-` for standard output
        /// (files only). By default ./CID.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// A peer edge's gateway to fetch from, e.g. http://127.0.0.1:8080;
        /// repeat for more, tried in order. By default the local edge's
        /// gateway (`edge.http_listen`).
        #[arg(long = "from", value_name = "URL")]
        from: Vec<String>,
        /// The key `put --encrypt` printed, to decrypt a private object.
        #[arg(long)]
        key: Option<String>,
    },
    /// This edge in the overlay: its id, coordinate, P-Grid path and
    /// references, members by state.
    Status {
        /// The edge's admin API; by default the config's `admin.listen`.
        #[arg(long)]
        admin: Option<String>,
        /// Print the admin API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// The overlay's members as this edge sees them: state, predicted RTT,
    /// load, reputation, gateway.
    Peers {
        /// The edge's admin API; by default the config's `admin.listen`.
        #[arg(long)]
        admin: Option<String>,
        /// Print the admin API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Simulate the overlay with thousands of nodes on one thread, from a
    /// seed: gossip liveness, network coordinates.
    #[command(subcommand)]
    Sim(crate::sim::cli::SimCommand),
    /// The registry chain: status, and mining empty blocks on a devnet.
    Chain {
        #[command(subcommand)]
        command: crate::registry::client::ChainCommand,
        /// The edge's admin API; by default the config's `admin.listen`.
        #[arg(long, global = true)]
        admin: Option<String>,
    },
}

/// `gridedge cert …`
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Make a local development CA (once) and a server certificate signed by
    /// it for localhost, 127.0.0.1, ::1 and the given names, under
    /// DATA_DIR/certs.
    Dev {
        /// Extra DNS names or IP addresses for the server certificate.
        names: Vec<String>,
        /// Override `data_dir` of the config.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}
