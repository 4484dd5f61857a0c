//! The `respawn` command: serve games, sign and inspect modules, and drive
//! a running host (status, rollback, promote, pin).

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use respawn::cli::{self, AdminClient};
use respawn::config::{Config, LogFormat};
use serde_json::json;
use std::path::PathBuf;

/// jemalloc, for its sampling heap profiler (`/debug/pprof/heap`); also
/// every C library's `malloc` (SQLite's), so the heap profile is whole.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its start: profiling built in but inactive
/// until the host turns it on (`observability.heap_profiling`), one
/// sample per 512 KiB allocated on average.
#[repr(transparent)]
pub struct MallocConf(*const std::ffi::c_char);
// SAFETY: a pointer to a static, immutable C string.
unsafe impl Sync for MallocConf {}

/// Read by jemalloc by this name (unprefixed build).
#[unsafe(export_name = "malloc_conf")]
pub static MALLOC_CONF: MallocConf = MallocConf(c"prof:true,prof_active:false,lg_prof_sample:19".as_ptr());

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
    /// Start a game project in Rust, JavaScript, TypeScript or C: its
    /// logic, a unit test, and the build; sign it like any guest.
    New {
        /// The game's name (1 to 32 of a-z 0-9 - _, starting with a letter).
        name: String,
        /// The language.
        #[arg(long, value_enum, default_value = "rust")]
        lang: cli::new::Lang,
        /// Where to create it (default: ./<name>); must not exist or be empty.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The guest SDK folder of a Respawn checkout (default: the one
        /// this binary was built from).
        #[arg(long)]
        sdk: Option<PathBuf>,
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
    /// List the live rooms (of one game): version, players, queues, calls,
    /// faults, memory.
    Rooms {
        /// Only this game's rooms.
        game: Option<String>,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Show one room: its players and their queues, calls, faults,
    /// restarts, memory, journal.
    Room {
        /// The game.
        game: String,
        /// The room.
        room: String,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Remove a player from a room, telling them why (audited).
    Kick {
        /// The game.
        game: String,
        /// The room.
        room: String,
        /// The player's id (see `respawn room`).
        player: u64,
        /// Why (told to the player, and audited).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        target: Target,
    },
    /// Close a room, telling its players why; its state is dropped
    /// (audited).
    Close {
        /// The game.
        game: String,
        /// The room.
        room: String,
        /// Why (told to the players, and audited).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        target: Target,
    },
    /// Send everyone in a room a system message (audited).
    Say {
        /// The game.
        game: String,
        /// The room.
        room: String,
        /// The message.
        message: String,
        #[command(flatten)]
        target: Target,
    },
    /// A live view of games, versions, rooms, players, frames/s, call
    /// p50/p99, faults and restarts, redrawn every --interval.
    Top {
        /// Print one table (two readings --interval apart) and exit.
        #[arg(long)]
        once: bool,
        /// Time between readings: `1s`, `500ms`... (at least 100 ms).
        #[arg(long, default_value = "1s")]
        interval: String,
        #[command(flatten)]
        target: Target,
    },
    /// Profile one room's guest code for a few seconds; writes a profile
    /// for the Firefox profiler (profiler.firefox.com).
    Profile {
        /// The game.
        game: String,
        /// The room.
        room: String,
        /// How long, in seconds (1 to 60).
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Where to write it.
        #[arg(long, short, default_value = "guest-profile.json")]
        out: PathBuf,
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

/// The log on stderr: lines for people, or one JSON object per line with
/// the spans it happened in (`observability.log_format`).
fn init_logging(format: LogFormat) {
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,cranelift=warn,wasmtime=warn"))
    };
    match format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter())
            .with_writer(std::io::stderr)
            .init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_env_filter(filter())
            .with_writer(std::io::stderr)
            .init(),
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    // `serve` logs as its config says; the other commands for people.
    if !matches!(cli.command, Command::Serve { .. }) {
        init_logging(LogFormat::Text);
    }
    run_command(cli.command)
}

/// Loads the config and serves until a signal stops the host.
fn serve(config: Option<PathBuf>, modules: Option<PathBuf>, allow_unsigned: bool) -> anyhow::Result<()> {
    let mut config = load_config(config.as_ref())?;
    init_logging(config.observability.log_format);
    if let Some(dir) = modules {
        config.modules.dir = dir;
    }
    config.trust.allow_unsigned |= allow_unsigned;
    // Held until the host exits: dropping it flushes what is queued.
    let _crash_events = match &config.observability.sentry {
        Some(sentry) => Some(respawn::crash_events::init(sentry)?),
        None => None,
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        if config.observability.heap_profiling {
            respawn::admin::start_heap_profiling().await;
        }
        respawn::server::run(config, shutdown_signal()).await
    })
}

fn run_command(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve {
            config,
            modules,
            allow_unsigned,
        } => serve(config, modules, allow_unsigned),
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
        Command::New { name, lang, dir, sdk } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let files = cli::new::scaffold(&name, lang, &dir, sdk.as_deref())?;
            println!("created {} ({} files)", dir.display(), files.len());
            println!("next: cd {} && {}", dir.display(), cli::new::next_steps(lang));
            Ok(())
        }
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
        Command::Rooms { game, json, target } => {
            let path = match &game {
                Some(g) => format!("/debug/rooms?game={g}"),
                None => "/debug/rooms".into(),
            };
            let r = client(&target)?.get(&path)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                cli::print_rooms(&r);
            }
            Ok(())
        }
        Command::Room {
            game,
            room,
            json,
            target,
        } => {
            let r = client(&target)?.get(&format!("/debug/rooms/{game}/{room}"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                cli::print_room(&r);
            }
            Ok(())
        }
        Command::Kick {
            game,
            room,
            player,
            reason,
            target,
        } => {
            client(&target)?.post(
                &format!("/rooms/{game}/{room}/kick"),
                json!({"player": player, "reason": reason}),
            )?;
            println!("{game}/{room}: player {player} kicked");
            Ok(())
        }
        Command::Close {
            game,
            room,
            reason,
            target,
        } => {
            let r = client(&target)?.post(&format!("/rooms/{game}/{room}/close"), json!({"reason": reason}))?;
            println!("{game}/{room}: closed, {} players told", r["players"]);
            Ok(())
        }
        Command::Say {
            game,
            room,
            message,
            target,
        } => {
            let r = client(&target)?.post(&format!("/rooms/{game}/{room}/say"), json!({"message": message}))?;
            println!("{game}/{room}: told {} players", r["players"]);
            Ok(())
        }
        Command::Top { once, interval, target } => {
            let ms = cli::parse_duration_ms(&interval)?;
            if ms < 100 {
                anyhow::bail!("--interval is at least 100ms");
            }
            cli::top::top(&client(&target)?, std::time::Duration::from_millis(ms), once)
        }
        Command::Profile {
            game,
            room,
            seconds,
            out,
            target,
        } => {
            println!("profiling {game}/{room} for {seconds} s...");
            let profile =
                client(&target)?.get_bytes(&format!("/debug/rooms/{game}/{room}/profile?seconds={seconds}"))?;
            std::fs::write(&out, &profile).with_context(|| format!("writing {}", out.display()))?;
            println!(
                "{}: {} bytes; open it at https://profiler.firefox.com",
                out.display(),
                profile.len()
            );
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
