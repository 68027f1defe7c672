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
