//! `cloudcontrol`: Apiary's cloud controllers, feeding the cloudhub shards.

use anyhow::Context;
use clap::Parser;
use control::config::{Cli, Command, ControlConfig};

fn main() -> anyhow::Result<()> {
    one_malloc_arena();
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

/// glibc gives each thread that allocates under contention an arena of its
/// own, and every arena keeps its own high-water mark. cloudcontrol builds
/// each desired state (tens of thousands of parsed objects) on a blocking
/// thread and drops it on the loop's: with several arenas it held about
/// 500-580 MiB for a 10,000-node fleet, with one about 410 MiB
/// (`fleetbench fanout --nodes 10000`), at no cost in CPU measured. Its
/// threads seldom allocate at the same time. `MALLOC_ARENA_MAX`, when set,
/// is left to glibc.
#[cfg(target_env = "gnu")]
#[allow(unsafe_code)]
fn one_malloc_arena() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes an allocator setting; it is called
        // before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

#[cfg(not(target_env = "gnu"))]
fn one_malloc_arena() {}
