//! `respawn-load`: drives Respawn, the native baseline (`native-chat`) and
//! Colyseus with the same chat workload on loopback, and reports delivered
//! frames, loss, latency and CPU/memory per server. See tests/load/README.md.

mod client;
mod colyseus;
mod compare;
mod fleet;
mod procfs;
mod proto;
mod recovery;
mod run;
mod stats;
mod wire;

use std::path::Path;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Loopback load harness for Respawn, a native baseline and Colyseus")]
struct Cli {
    /// Tokio worker threads for the generator.
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// One measured window at a fixed offered rate.
    Run(run::RunArgs),
    /// Rising rates on the same connections until p99 > 50 ms or loss.
    Step(run::StepArgs),
    /// Start each server in turn and run the comparison scenarios.
    Compare(compare::CompareArgs),
    /// Fill rooms, kill -9 the host, and time their recovery at restart.
    Recovery(recovery::RecoveryArgs),
    /// A fleet on NATS JetStream: replicated `strict` against SQLite, and
    /// the failover of a killed node's rooms.
    Fleet(fleet::FleetArgs),
}

fn write_json(path: Option<&Path>, value: &impl serde::Serialize) -> anyhow::Result<()> {
    if let Some(path) = path {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(value)?)?;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()?;
    let ok = rt.block_on(async {
        match cli.command {
            Command::Run(args) => {
                let report = run::run(&args).await?;
                report.print();
                write_json(args.json.as_deref(), &report)?;
                anyhow::Ok(report.passed)
            }
            Command::Step(args) => {
                let report = run::step(&args).await?;
                match &report.best {
                    Some(b) => println!(
                        "highest passing step: {:.3} msgs/s per client, {:.0} delivered/s, p99 {:.2} ms",
                        b.rate_per_client, b.delivered_per_s, b.latency.p99_ms
                    ),
                    None => println!("no step passed"),
                }
                write_json(args.run.json.as_deref(), &report)?;
                if let Some(e) = &report.error {
                    anyhow::bail!("the climb stopped early: {e}");
                }
                anyhow::Ok(report.best.is_some())
            }
            Command::Compare(args) => compare::compare(&args).await,
            Command::Recovery(args) => recovery::recovery(&args).await,
            Command::Fleet(args) => fleet::fleet(&args).await,
        }
    })?;
    // Client tasks may linger on closing sockets: do not wait for them.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}
