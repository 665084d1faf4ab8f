//! `cloudhub`: Apiary's cloud hub, one glommio executor per core.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use clap::Parser;
use shards::{Config, Flags};

fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        // Colours only on a terminal, and never with NO_COLOR set.
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = Config::load(&flags)?;
    if flags.print_config {
        println!("{config:#?}");
        return Ok(());
    }
    // SIGTERM and SIGINT start a graceful shutdown; a second one ends the
    // process at once.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register_conditional_shutdown(signal, 1, stop.clone())
            .context("installing signal handlers")?;
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }
    let running = shards::server::start(config, stop).context("starting cloudhub")?;
    let show = |a: Option<std::net::SocketAddr>| a.map_or("off".to_owned(), |a| a.to_string());
    // One plain line for scripts and tests: where everything listens.
    println!(
        "cloudhub ready tls={} plaintext={} metrics={}",
        show(running.tls_addr),
        show(running.plain_addr),
        running.metrics_addr
    );
    running.wait();
    tracing::info!("cloudhub stopped");
    Ok(())
}
