//! The `respawn` command: serve games, sign and inspect modules, and drive
//! a running host (status, rollback, promote, pin).

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use respawn::cli::{self, AdminClient};
use respawn::config::Config;
use serde_json::json;
use std::path::PathBuf;

/// Respawn game host.
#[derive(Parser)]
#[command(name = "respawn", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// How the operator commands find a running host.
#[derive(Args)]
struct Target {
    /// The host's config file (for the admin address and the token file).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Admin API base URL; overrides the config.
    #[arg(long)]
    admin: Option<String>,
    /// Admin token file; defaults to `<state.dir>/admin.token`.
    #[arg(long)]
    token_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve players: load the signed games of the modules folder and listen.
    Serve {
        /// TOML config file; every key has a default.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Overrides `modules.dir`.
        #[arg(long)]
        modules: Option<PathBuf>,
        /// Development only: load unsigned modules (warns on every load).
        #[arg(long)]
        allow_unsigned: bool,
    },
    /// Create a signing key pair: <out>.key (secret) and <out>.pub.
    Keygen {
        /// Path without extension.
        #[arg(long, short, default_value = "respawn")]
        out: PathBuf,
        /// Comment in the public key line.
        #[arg(long, default_value = "respawn")]
        comment: String,
    },
    /// Sign a module: a core wasm32-wasip1 module is componentized first,
    /// then the manifest is embedded and the whole is signed.
    Sign {
        /// Core module or component.
        input: PathBuf,
        /// Secret key file (from `respawn keygen`, or wasmsign2's).
        #[arg(long, short)]
        key: PathBuf,
        /// Game name.
        #[arg(long)]
        name: String,
        /// Semantic version.
        #[arg(long)]
        version: String,
        /// Author (defaults to the key's fingerprint).
        #[arg(long)]
        author: Option<String>,
        /// Release notes.
        #[arg(long)]
        notes: Option<String>,
        /// Output file (defaults to overwriting the input).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Check a module's signature against trusted public keys.
    Verify {
        /// The module.
        file: PathBuf,
        /// Public key files or folders of *.pub files.
        #[arg(long, required = true)]
        trust: Vec<PathBuf>,
        /// Check the signature only, not whether the host would load the
        /// file (manifest, component of the game world).
        #[arg(long)]
        signature_only: bool,
    },
    /// Show a module's kind, manifest and signature section (not verified).
    Inspect {
        /// The module.
        file: PathBuf,
    },
    /// Turn a core wasm32-wasip1 module built with the guest SDK into a
    /// component (unsigned; `sign` does this too).
    Component {
        /// The core module.
        input: PathBuf,
        /// Where to write the component.
        #[arg(long, short)]
        output: PathBuf,
    },
    /// Replay a crash capsule offline: does the fault reproduce (exit 0),
    /// or not (1)? With --module, does that version (the fix) take every
    /// input (0) or fault too (1)? Exit 2: a usage error; 3: nothing ran
    /// (a bad capsule, or a module that does not verify or is another
    /// game's); 4: the original module produced other outputs than the
    /// room did (a host bug).
    Replay {
        /// The capsule file (`<state>/capsules/*.capsule`).
        capsule: PathBuf,
        /// Public key files or folders of *.pub files the module must be
        /// signed by.
        #[arg(long, required = true)]
        trust: Vec<PathBuf>,
        /// Replay the same inputs on this signed module instead (a fix).
        #[arg(long)]
        module: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show each game, its versions, which is active, rooms per version.
    Status {
        #[command(flatten)]
        target: Target,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// Go back to the previous version (or --to one), migrating live rooms.
    Rollback {
        /// The game.
        game: String,
        /// The version to go back to.
        #[arg(long)]
        to: Option<String>,
        /// Go back even if the hot-fix gate finds that version still
        /// failing on recent crash capsules (audited).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Make a loaded version active, migrating live rooms; or start a
    /// canary of it (--canary), or end the running canary by promoting it
    /// to every room (--full).
    Promote {
        /// The game.
        game: String,
        /// The version (the canary's, with --full).
        version: String,
        /// Promote even if the hot-fix gate finds it still failing on
        /// recent crash capsules (audited).
        #[arg(long)]
        force: bool,
        /// Send this percent of newly created rooms to the version; every
        /// other room stays put until probation decides.
        #[arg(long, conflicts_with = "full")]
        canary: Option<u8>,
        /// End the running canary now: every room moves to it.
        #[arg(long)]
        full: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Feed a loaded version copies of live rooms' inputs (from each
    /// room's checkpoint) and compare its outputs with the active
    /// version's, without players seeing it; prints per room the first
    /// diverging input and any fault.
    Shadow {
        /// The game.
        game: String,
        /// The candidate version (loaded, not active).
        version: String,
        /// Live rooms to shadow at most.
        #[arg(long, default_value_t = 10)]
        rooms: usize,
        /// How long: `60s`, `5m`, or seconds.
        #[arg(long = "for", default_value = "60s")]
        duration: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Stop promoting updates of a game (they still load), optionally
    /// promoting a version first.
    Pin {
        /// The game.
        game: String,
        /// Promote this version before pinning.
        #[arg(long)]
        version: Option<String>,
        /// Promote it even if the hot-fix gate refuses it (audited).
        #[arg(long, requires = "version")]
        force: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Promote updates of a game again.
    Unpin {
        /// The game.
        game: String,
        #[command(flatten)]
        target: Target,
    },
    /// Ban a user id (a ticket's `sub`): kicked from every room now, its
    /// tickets refused until the ban ends. Survives restarts; audited.
    Ban {
        /// The user id.
        user: String,
        /// Why (told to the user, and audited).
        #[arg(long)]
        reason: String,
        /// How long: `30m`, `12h`, `7d`, or seconds; forever if left out.
        #[arg(long = "for")]
        duration: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Lift a user's ban.
    Unban {
        /// The user id.
        user: String,
        #[command(flatten)]
        target: Target,
    },
    /// List the bans in force.
    Bans {
        #[command(flatten)]
        target: Target,
    },
    /// Talk to the TCP port from a terminal (what `nc` does): each line you
    /// type is sent, each line the host sends is printed.
    Connect {
        /// The host's TCP listener.
        #[arg(default_value = "127.0.0.1:7701")]
        addr: String,
    },
}

fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    Ok(match path {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    })
}

fn client(t: &Target) -> anyhow::Result<AdminClient> {
    AdminClient::new(&load_config(t.config.as_ref())?, t.admin.clone(), t.token_file.clone())
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line with the whole chain of causes; no backtrace for
            // what is an operator's mistake, not a crash.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,cranelift=warn,wasmtime=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Serve {
            config,
            modules,
            allow_unsigned,
        } => {
            let mut config = load_config(config.as_ref())?;
            if let Some(dir) = modules {
                config.modules.dir = dir;
            }
            config.trust.allow_unsigned |= allow_unsigned;
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(respawn::server::run(config, shutdown_signal()))
        }
        Command::Keygen { out, comment } => cli::keygen(&out, &comment),
        Command::Connect { addr } => {
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(cli::connect(&addr))
        }
        Command::Sign {
            input,
            key,
            name,
            version,
            author,
            notes,
            output,
        } => cli::sign(&cli::SignRequest {
            input: &input,
            key: &key,
            name: &name,
            version: &version,
            author: author.as_deref(),
            notes: notes.as_deref(),
            output: output.as_deref(),
        }),
        Command::Verify {
            file,
            trust,
            signature_only,
        } => cli::verify(&file, &trust, signature_only),
        Command::Inspect { file } => cli::inspect(&file),
        Command::Replay {
            capsule,
            trust,
            module,
            json,
        } => std::process::exit(i32::from(cli::replay(&capsule, &trust, module.as_deref(), json))),
        Command::Component { input, output } => {
            let bytes = std::fs::read(&input).with_context(|| format!("reading {}", input.display()))?;
            let component = respawn::modules::componentize::componentize(&bytes)
                .with_context(|| format!("componentizing {}", input.display()))?;
            // Leave an identical output untouched so build tools can rely on
            // its modification time.
            if std::fs::read(&output).is_ok_and(|old| old == component) {
                println!("{}: unchanged", output.display());
                return Ok(());
            }
            std::fs::write(&output, &component).with_context(|| format!("writing {}", output.display()))?;
            println!("{}: component, {} bytes", output.display(), component.len());
            Ok(())
        }
        Command::Status { target, json } => {
            let status = client(&target)?.get("/status")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                cli::print_status(&status);
            }
            Ok(())
        }
        Command::Rollback {
            game,
            to,
            force,
            target,
        } => {
            let r = client(&target)?.post(
                &format!("/games/{game}/rollback"),
                json!({"version": to, "force": force}),
            )?;
            if r["state"] == "rolled_back" {
                println!(
                    "{game}: canary of {} rolled back, {} rooms moved back to {}",
                    r["version"].as_str().unwrap_or("?"),
                    r["rooms"],
                    r["active"].as_str().unwrap_or("?")
                );
                return Ok(());
            }
            println!(
                "{game}: {} -> {} (flip {:.1} us, {} rooms migrated in {:.2} ms)",
                r["from"].as_str().unwrap_or("-"),
                r["to"].as_str().unwrap_or("?"),
                r["flip_us"].as_f64().unwrap_or(0.0),
                r["rooms"],
                r["migrate_ms"].as_f64().unwrap_or(0.0)
            );
            Ok(())
        }
        Command::Promote {
            game,
            version,
            force,
            canary,
            full,
            target,
        } => {
            let r = client(&target)?.post(
                &format!("/games/{game}/promote"),
                json!({"version": version, "force": force, "canary": canary, "full": full}),
            )?;
            if let Some(state) = r["state"].as_str() {
                println!(
                    "{game}: canary of {} ({}% of new rooms) {state}{}",
                    r["version"].as_str().unwrap_or("?"),
                    r["percent"],
                    if state == "started" {
                        String::new()
                    } else {
                        format!(", {} rooms moved", r["rooms"])
                    }
                );
                return Ok(());
            }
            println!(
                "{game}: {} -> {} ({} rooms migrated)",
                r["from"].as_str().unwrap_or("-"),
                r["to"].as_str().unwrap_or("?"),
                r["rooms"]
            );
            Ok(())
        }
        Command::Pin {
            game,
            version,
            force,
            target,
        } => {
            client(&target)?.post(
                &format!("/games/{game}/pin"),
                json!({"version": version, "force": force}),
            )?;
            println!("{game}: pinned");
            Ok(())
        }
        Command::Unpin { game, target } => {
            client(&target)?.post(&format!("/games/{game}/unpin"), json!({}))?;
            println!("{game}: unpinned");
            Ok(())
        }
        Command::Shadow {
            game,
            version,
            rooms,
            duration,
            json,
            target,
        } => {
            let secs = cli::parse_duration(&duration)?;
            let report = client(&target)?.post(
                &format!("/games/{game}/shadow"),
                json!({"version": version, "rooms": rooms, "secs": secs}),
            )?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                cli::print_shadow(&report);
            }
            Ok(())
        }
        Command::Ban {
            user,
            reason,
            duration,
            target,
        } => {
            let seconds = duration.as_deref().map(cli::parse_duration).transpose()?;
            let r = client(&target)?.post(
                "/bans",
                json!({"user": user, "reason": reason, "duration_secs": seconds}),
            )?;
            println!(
                "{user}: banned {} ({} rooms told to remove them)",
                match r["ban"]["until_ms"].as_u64() {
                    Some(until) => format!("until {}", cli::format_time(until)),
                    None => "with no end".to_owned(),
                },
                r["rooms"]
            );
            Ok(())
        }
        Command::Unban { user, target } => {
            let r = client(&target)?.post("/unban", json!({"user": user}))?;
            if r["lifted"].as_bool() == Some(true) {
                println!("{user}: ban lifted");
            } else {
                println!("{user}: was not banned");
            }
            Ok(())
        }
        Command::Bans { target } => {
            let r = client(&target)?.get("/bans")?;
            cli::print_bans(&r);
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
