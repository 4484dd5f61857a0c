//! The `respawn` command.

use anyhow::Context;
use clap::{Parser, Subcommand};
use respawn::config::Config;
use std::path::PathBuf;

/// Respawn game host.
#[derive(Parser)]
#[command(name = "respawn", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve players: load the games of the modules folder and listen.
    Serve {
        /// TOML config file; every key has a default.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Overrides `modules.dir`.
        #[arg(long)]
        modules: Option<PathBuf>,
    },
    /// Turn a core wasm32-wasip1 module built with the guest SDK into a
    /// component the host can load.
    Component {
        /// The core module.
        input: PathBuf,
        /// Where to write the component.
        #[arg(long, short)]
        output: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,cranelift=warn,wasmtime=warn")
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Serve { config, modules } => {
            let mut config = match config {
                Some(path) => Config::load(&path)?,
                None => Config::default(),
            };
            if let Some(dir) = modules {
                config.modules.dir = dir;
            }
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(respawn::server::run(config, shutdown_signal()))
        }
        Command::Component { input, output } => {
            let bytes =
                std::fs::read(&input).with_context(|| format!("reading {}", input.display()))?;
            let component = respawn::modules::componentize::componentize(&bytes)
                .with_context(|| format!("componentizing {}", input.display()))?;
            std::fs::write(&output, &component)
                .with_context(|| format!("writing {}", output.display()))?;
            println!("{}: component, {} bytes", output.display(), component.len());
            Ok(())
        }
    }
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
