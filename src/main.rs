//! The gridedge binary: parse the command line, load the config, run.

use anyhow::Context;
use clap::Parser;
use gridedge::admin::client::AdminClient;
use gridedge::cli::{CertCommand, Cli, Command};
use gridedge::config::{Config, RawConfig};
use tokio_util::sync::CancellationToken;

/// mimalloc: the proxy allocates per request (headers, buffers), and
/// glibc's malloc took a tenth of its CPU time on cache hits in
/// `benches/http.sh`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut raw = match &cli.config {
        Some(path) => RawConfig::load(path)?,
        None => RawConfig::default(),
    };
    // Overrides apply before validation, so paths derived from the data
    // directory follow it.
    if let Command::Run {
        data_dir: Some(dir),
        ..
    }
    | Command::Cert(CertCommand::Dev {
        data_dir: Some(dir),
        ..
    }) = &cli.command
    {
        raw.data_dir = dir.clone();
    }
    let mut config = raw.validate(std::path::Path::new("."))?;
    match cli.command {
        Command::Run { json_logs, .. } => {
            config.log.json |= json_logs;
            init_logging(&config);
            let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
            runtime.block_on(async {
                let shutdown = CancellationToken::new();
                gridedge::daemon::cancel_on_signal(shutdown.clone());
                gridedge::daemon::run(config, shutdown).await
            })?;
        }
        Command::Cert(CertCommand::Dev { names, .. }) => {
            let paths = gridedge::cert::dev(&config.data_dir, &names)?;
            println!("CA certificate:     {}", paths.ca_cert.display());
            println!("server certificate: {}", paths.server_cert.display());
            println!("server key:         {}", paths.server_key.display());
            println!("Trust the CA to use DoT and DoH without warnings (see README).");
        }
        Command::CheckConfig => println!("{config:#?}"),
        Command::Sim(command) => gridedge::sim::cli::run(command)?,
        Command::Name { command, admin } => {
            let admin = admin_client(admin.as_deref(), &config)?;
            let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
            runtime.block_on(gridedge::registry::client::run_name(*command, &admin))?;
        }
        Command::Put {
            path,
            encrypt,
            pin,
            admin,
        } => {
            let admin = admin_client(admin.as_deref(), &config)?;
            let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
            let outcome =
                runtime.block_on(gridedge::edge::client::put(&path, encrypt, pin, &admin))?;
            println!("{}", outcome.cid);
            if let Some(key) = outcome.key {
                println!("key: {}", key.to_hex());
                eprintln!(
                    "The key is shown this once and stored nowhere: keep it, or the object is lost."
                );
            }
        }
        Command::Get {
            cid,
            output,
            from,
            key,
        } => {
            let sources = if from.is_empty() {
                config
                    .edge
                    .http_listen
                    .map(|addr| vec![format!("http://{addr}")])
                    .unwrap_or_default()
            } else {
                from
            };
            let output = match output {
                Some(path) if path.as_os_str() == "-" => gridedge::edge::client::Output::Stdout,
                Some(path) => gridedge::edge::client::Output::Path(path),
                None => gridedge::edge::client::Output::Path(cid.clone().into()),
            };
            let fetcher = gridedge::edge::Fetcher::new(config.edge.fetch_timeout, u64::MAX);
            let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
            let bytes = runtime.block_on(gridedge::edge::client::get(
                &cid,
                &sources,
                &output,
                key.as_deref(),
                &fetcher,
            ))?;
            if let gridedge::edge::client::Output::Path(path) = output {
                eprintln!(
                    "{cid}: {bytes} bytes verified, written to {}",
                    path.display()
                );
            }
        }
        Command::Status { admin, json } => show_overlay(admin.as_deref(), json, false, &config)?,
        Command::Peers { admin, json } => show_overlay(admin.as_deref(), json, true, &config)?,
        Command::Chain { command, admin } => {
            let admin = admin_client(admin.as_deref(), &config)?;
            let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
            runtime.block_on(gridedge::registry::client::run_chain(command, &admin))?;
        }
    }
    Ok(())
}

/// `gridedge status` and `gridedge peers`: the overlay's state from the
/// running edge's admin API.
fn show_overlay(
    admin: Option<&str>,
    json: bool,
    peers: bool,
    config: &Config,
) -> anyhow::Result<()> {
    let admin = admin_client(admin, config)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    let response = runtime.block_on(admin.get("/overlay/status"))?;
    if !response.status.is_success() {
        anyhow::bail!("the edge answered {}: {}", response.status, response.text());
    }
    let status: gridedge::net::Status = serde_json::from_slice(&response.body)
        .context("the edge's /overlay/status is not a status")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else if peers {
        print!("{}", gridedge::net::show::render_peers(&status));
    } else {
        print!("{}", gridedge::net::show::render_status(&status));
    }
    Ok(())
}

/// The admin API to talk to: `--admin`, else the config's listener.
fn admin_client(url: Option<&str>, config: &Config) -> anyhow::Result<AdminClient> {
    match (url, config.admin.listen) {
        (Some(url), _) => Ok(AdminClient::new(url)?),
        (None, Some(addr)) => Ok(AdminClient::for_addr(addr)),
        (None, None) => anyhow::bail!("admin.listen is off in the config; give --admin URL"),
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if config.log.json {
        builder.json().init();
    } else {
        builder.init();
    }
}
