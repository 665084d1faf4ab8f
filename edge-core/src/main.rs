//! `edgecore`: Apiary's edge daemon.
//!
//! `edgecore join` fetches the node's certificate and writes its
//! configuration; `edgecore run` runs the daemon on one monoio thread.
//!
//! Memory: the system allocator for now. A counting allocator (to measure
//! the ≤ 6 MB idle budget from inside) would be declared here as the
//! `#[global_allocator]`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use edge_core::config::{self, EdgeConfig};
use edge_core::daemon::{self, EdgeHooks};
use edge_core::join::{self, CertFiles};

#[derive(Parser, Debug)]
#[command(name = "edgecore", version, about = "Apiary's edge daemon")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Get this node's certificate from the cloud and write its configuration.
    Join {
        /// The join token (`cloudcontrol token`).
        #[arg(long)]
        token: String,
        /// cloudhub's address, host:port.
        #[arg(long)]
        cloud: String,
        /// The certificate bootstrap endpoint, host:port (default: the
        /// cloud's host, port 10002).
        #[arg(long)]
        cert_server: Option<String>,
        /// This node's name.
        #[arg(long)]
        node: String,
        /// Where certificates, the store and the configuration go.
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Run the daemon.
    Run {
        /// The configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EDGECORE_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal, and never with NO_COLOR set.
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
        .init();
    match Cli::parse().command {
        Command::Join {
            token,
            cloud,
            cert_server,
            node,
            data_dir,
        } => {
            let cert_server =
                cert_server.unwrap_or_else(|| format!("{}:10002", config::host_of(&cloud)));
            let files = CertFiles::under(&data_dir);
            join::join(&token, &cert_server, &node, &files).context("join")?;
            let mut c = EdgeConfig::default();
            c.database.data_source = data_dir.join("data");
            let hub = &mut c.modules.edge_hub;
            hub.server = cloud;
            hub.http_server = cert_server;
            hub.tls_ca_file = files.ca;
            hub.tls_cert_file = files.cert;
            hub.tls_private_key_file = files.key;
            c.modules.edged.hostname_override = node;
            let path = data_dir.join("edgecore.toml");
            edge_core::tls::write_file_atomic(&path, c.to_toml().as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            println!("edgecore joined; configuration in {}", path.display());
            Ok(())
        }
        Command::Run { config } => {
            let c = EdgeConfig::load(&config)?;
            daemon::run(c, EdgeHooks::default())?;
            Ok(())
        }
    }
}
