//! `cloudcontrol`: Apiary's cloud controllers, feeding the cloudhub shards.

use anyhow::Context;
use clap::Parser;
use control::config::{Cli, Command, ControlConfig};

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colours only on a terminal, and never with NO_COLOR set.
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Token { data_dir, ttl }) => {
            let ttl = control::pki::token::parse_duration(&ttl).map_err(anyhow::Error::msg)?;
            let ca = control::pki::certs::Ca::load_or_create(&data_dir)?;
            let tokens = control::pki::token::Tokens::load(&data_dir, ca.der())?;
            println!("{}", tokens.issue(clock::unix_ms() / 1000, ttl));
            Ok(())
        }
        Some(Command::Get {
            what,
            data_dir,
            status_dir,
        }) => {
            let dir = status_dir.unwrap_or_else(|| data_dir.join("status"));
            let table = control::observed::status::StatusDir::new(&dir)
                .table(&what)
                .with_context(|| {
                    format!("unknown resource type {what:?}: use nodes, pods or devices")
                })?;
            print!("{table}");
            Ok(())
        }
        Some(Command::Crds) => {
            print!("{}", control::crd::crds_yaml());
            Ok(())
        }
        Some(Command::Run(args)) => run(&args),
        None => run(&cli.run),
    }
}

fn run(args: &control::config::RunArgs) -> anyhow::Result<()> {
    let cfg = ControlConfig::from_args(args).map_err(anyhow::Error::msg)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(control::process::run(cfg))?;
    Ok(())
}
