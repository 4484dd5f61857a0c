//! `compare`: starts Respawn, the native baseline and Colyseus in turn
//! (pinned to core 0 with `taskset` when it exists), runs the same
//! scenarios against each, and writes a markdown section plus JSON.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::client::{Target, Transport};
use crate::run::{self, Report, RunArgs, StepArgs};

#[derive(clap::Args, Debug, Clone)]
pub struct CompareArgs {
    #[arg(long, default_value = "target/release/respawn")]
    pub respawn_bin: PathBuf,
    /// Another Respawn build (server `respawn-base`), such as the commit
    /// before a change, to measure the change side by side. It gets the
    /// same config without the keys newer than 2026-11 (`[net]
    /// address_*`).
    #[arg(long, default_value = "target/respawn-base")]
    pub base_bin: PathBuf,
    #[arg(long, default_value = "target/release/native-chat")]
    pub native_bin: PathBuf,
    /// Folder of the Colyseus server (`node server.js --port P`).
    #[arg(long, default_value = "tests/load/colyseus")]
    pub colyseus_dir: PathBuf,
    /// Signed modules Respawn serves (copied to a temporary folder).
    #[arg(long, default_value = "modules")]
    pub modules: PathBuf,
    /// Trusted keys folder for Respawn.
    #[arg(long, default_value = ".respawn/trust")]
    pub trust: PathBuf,
    /// Signing key for the hot-swap scenario.
    #[arg(long, default_value = ".respawn/dev.key")]
    pub key: PathBuf,
    /// Chat component signed anew for the hot-swap scenario.
    #[arg(long, default_value = "target/guests/chat.wasm")]
    pub chat_wasm: PathBuf,
    /// Servers to compare: `respawn`, `native`, `colyseus`, and Respawn
    /// variants (`respawn@<durability>`, `respawn-unobserved`,
    /// `respawn-stale`, `respawn-bare`, `respawn-base`).
    #[arg(long, value_delimiter = ',', default_value = "respawn,native,colyseus")]
    pub servers: Vec<String>,
    /// Scenarios to run (a: chat, b: step-up, c: wide, d: idle, e: swap,
    /// f: chat with a shadow run).
    #[arg(long, value_delimiter = ',', default_value = "a,b,c,d,e")]
    pub scenarios: Vec<String>,
    /// Transport for respawn and native (colyseus is always ws).
    #[arg(long, value_enum, default_value = "ws")]
    pub transport: Transport,
    #[arg(long, default_value = "target/load-compare.md")]
    pub out: PathBuf,
    #[arg(long, default_value = "target/load-compare.json")]
    pub json: PathBuf,
    /// Also put the markdown into this file, between the lines
    /// `<!-- load-compare:begin -->` and `<!-- load-compare:end -->`
    /// (`just load-compare` passes BENCHMARKS.md).
    #[arg(long)]
    pub splice_into: Option<PathBuf>,
    /// Splice into `--splice-into` even when a scenario failed (the
    /// tables say FAILED); by default a failed run leaves it alone.
    #[arg(long)]
    pub force: bool,
    #[arg(long, default_value_t = 1000)]
    pub chat_clients: usize,
    #[arg(long, default_value_t = 10)]
    pub room_size: usize,
    /// Messages/s per client in scenarios a and e.
    #[arg(long, default_value_t = 2.0)]
    pub chat_rate: f64,
    #[arg(long, default_value_t = 10.0)]
    pub chat_secs: f64,
    /// Scenario b starts at this many delivered frames/s.
    #[arg(long, default_value_t = 10_000.0)]
    pub step_start_delivered: f64,
    #[arg(long, default_value_t = 5.0)]
    pub step_secs: f64,
    #[arg(long, default_value_t = 10)]
    pub step_max: usize,
    #[arg(long, default_value_t = 5000)]
    pub wide_clients: usize,
    #[arg(long, default_value_t = 1.0)]
    pub wide_rate: f64,
    #[arg(long, default_value_t = 10.0)]
    pub wide_secs: f64,
    #[arg(long, default_value_t = 10_000)]
    pub idle_clients: usize,
    /// A second idle scenario this large (e.g. 19000), with --idle-source-ips.
    #[arg(long)]
    pub idle_max: Option<usize>,
    #[arg(long, default_value_t = 4)]
    pub idle_source_ips: u8,
    /// Seconds idle connections are held (RSS is read after them): past
    /// Respawn's default `rooms.sleep_after_ms` (10 s), so its quiet rooms
    /// have given their instances back, as a host's idle rooms would.
    #[arg(long, default_value_t = 15.0)]
    pub idle_secs: f64,
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    #[arg(long, default_value_t = 2.0)]
    pub drain: f64,
    /// Do not pin servers to core 0.
    #[arg(long)]
    pub no_pin: bool,
    /// Server read buffer per connection (Respawn's `net.read_buffer_bytes`
    /// and the native baseline's tungstenite buffer), the same for both.
    #[arg(long, default_value_t = 2048)]
    pub read_buffer: usize,
    /// Extra rounds of scenario (a), interleaved across the servers, whose
    /// median CPU per frame gives the ratios (one run on these noisy
    /// machines varies by ±20%).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Server write buffer per connection (Respawn's `net.write_buffer_bytes`).
    #[arg(long, default_value_t = 16384)]
    pub write_buffer: usize,
}

/// A server under test.
struct Server {
    child: Child,
    pid: u32,
    ws: SocketAddr,
    tcp: Option<SocketAddr>,
    admin: Option<SocketAddr>,
    tmp: PathBuf,
}

impl Server {
    async fn stop(mut self) {
        // SIGTERM first (Respawn saves rooms and exits), then kill.
        // SAFETY: signalling our own child by its pid.
        unsafe {
            libc::kill(self.pid as i32, libc::SIGTERM);
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

fn tmp_dir(name: &str) -> anyhow::Result<PathBuf> {
    let unix = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    let dir = std::env::temp_dir().join(format!("respawn-load-{name}-{}-{unix}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn has(cmd: &str) -> bool {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd} >/dev/null 2>&1"))
        .status()
        .is_ok_and(|s| s.success())
}

/// Starts `program args` (pinned to core 0 unless told not to) in `dir`,
/// and reads its stdout until `ready` says every address it needs is known.
async fn spawn(
    args: &CompareArgs,
    program: &Path,
    argv: &[String],
    dir: Option<&Path>,
    tmp: &Path,
    mut ready: impl FnMut(&str) -> bool,
) -> anyhow::Result<(Child, u32)> {
    let pin = !args.no_pin && has("taskset");
    let mut cmd = if pin {
        let mut c = Command::new("taskset");
        c.arg("-c").arg("0").arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    cmd.stderr(Stdio::from(std::fs::File::create(tmp.join("server.log"))?));
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    let mut child = cmd.spawn().with_context(|| format!("starting {}", program.display()))?;
    let pid = child.id().context("no pid")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let wait = async {
        while let Some(line) = lines.next_line().await? {
            if ready(&line) {
                return anyhow::Ok(());
            }
        }
        bail!(
            "{} exited before listening (see {})",
            program.display(),
            tmp.join("server.log").display()
        )
    };
    match tokio::time::timeout(Duration::from_secs(60), wait).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => bail!("{} did not print its listening lines within 60 s", program.display()),
    }
    // Keep draining stdout so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, pid))
}

fn listening(line: &str, kind: &str) -> Option<SocketAddr> {
    line.strip_prefix("listening ")?.strip_prefix(kind)?.trim().parse().ok()
}

async fn start_native(args: &CompareArgs) -> anyhow::Result<Server> {
    let tmp = tmp_dir("native")?;
    let argv = [
        "--ws".to_owned(),
        "127.0.0.1:0".to_owned(),
        "--tcp".to_owned(),
        "127.0.0.1:0".to_owned(),
        "--read-buffer".to_owned(),
        args.read_buffer.to_string(),
        "--write-buffer".to_owned(),
        args.write_buffer.to_string(),
    ];
    start_announcing(args, &args.native_bin, &argv, tmp, &["ws", "tcp"]).await
}

/// Starts a server that prints `listening <kind> <addr>` for each of
/// `kinds` (`ws` among them) once it accepts connections.
async fn start_announcing(
    args: &CompareArgs,
    program: &Path,
    argv: &[String],
    tmp: PathBuf,
    kinds: &[&'static str],
) -> anyhow::Result<Server> {
    let mut found = BTreeMap::new();
    let (child, pid) = spawn(args, program, argv, None, &tmp, |l| {
        for kind in kinds {
            if let Some(addr) = listening(l, kind) {
                found.entry(*kind).or_insert(addr);
            }
        }
        found.len() == kinds.len()
    })
    .await?;
    Ok(Server {
        child,
        pid,
        ws: *found.get("ws").context("no ws listener")?,
        tcp: found.get("tcp").copied(),
        admin: found.get("admin").copied(),
        tmp,
    })
}

/// The config Respawn is started with: loopback, free ports, no web site,
/// limits high enough for the scenarios.
pub fn respawn_config(modules: &Path, trust: &Path, state: &Path, buffers: (usize, usize)) -> String {
    let config = base_config(modules, trust, state, buffers);
    // The address limits would cap the harness, whose clients all come
    // from a few loopback addresses.
    config.replacen(
        "[rooms]",
        "address_rate_per_sec = 10000000\naddress_rate_burst = 10000000\n\
         address_joins_per_minute = 10000000\naddress_join_burst = 10000000\n\n[rooms]",
        1,
    )
}

/// [`respawn_config`] without the keys a build from before 2026-11 does
/// not know.
fn base_config(modules: &Path, trust: &Path, state: &Path, buffers: (usize, usize)) -> String {
    format!(
        r#"[net]
ws = "127.0.0.1:0"
tcp = "127.0.0.1:0"
web = "off"
read_buffer_bytes = {read}
write_buffer_bytes = {write}
max_connections = 25000
# The harness is one machine: every client shares a few addresses.
max_connections_per_address = 25000
max_parked_per_address = 25000
rate_per_sec = 100000
rate_burst = 100000

[rooms]
create_burst = 1000000
create_burst_per_address = 1000000

[admin]
listen = "127.0.0.1:0"

[modules]
dir = {modules:?}

[trust]
dir = {trust:?}

[state]
dir = {state:?}
"#,
        modules = modules.display().to_string(),
        trust = trust.display().to_string(),
        state = state.display().to_string(),
        read = buffers.0,
        write = buffers.1,
    )
}

/// `respawn@strict` → `Some("strict")`: Respawn at that durability level.
fn durability_of(server: &str) -> Option<&str> {
    server.strip_prefix("respawn@")
}

/// Respawn with its metrics, spans and heap sampling off: the cost of
/// observability is `respawn` against this, side by side.
const UNOBSERVED: &str = "respawn-unobserved";

/// Respawn keeping each room's instance across checkpoints
/// (`supervision.fresh_at_checkpoint = false`): the cost of going on fresh
/// is `respawn` against this.
const STALE: &str = "respawn-stale";

/// Respawn with every feature a player does not see at once turned off:
/// no journal (`durability = "off"`), no metrics, spans or heap sampling,
/// no fresh instance at checkpoints. What is left beyond the native
/// server is the sandbox, the room and the session (resume buffer, `seq`,
/// limits): the floor the CPU targets are measured against.
const BARE: &str = "respawn-bare";

/// Whether `server` is Respawn (at any durability level, unobserved, or
/// the base build).
fn is_respawn(server: &str) -> bool {
    server == "respawn"
        || server == "respawn-base"
        || server == UNOBSERVED
        || server == STALE
        || server == BARE
        || durability_of(server).is_some()
}

async fn start_respawn(args: &CompareArgs, server: &str) -> anyhow::Result<Server> {
    let base = server == "respawn-base";
    let durability = if server == BARE {
        Some("off")
    } else {
        durability_of(server)
    };
    let tmp = tmp_dir("respawn")?;
    let modules = tmp.join("modules");
    // The chat game only: the scenarios play nothing else, and another
    // game's compiled code (a JavaScript engine's, hundreds of MB while it
    // compiles) would count in the server's memory.
    std::fs::create_dir_all(&modules)?;
    let chat = args.modules.join("chat.wasm");
    std::fs::copy(&chat, modules.join("chat.wasm")).with_context(|| format!("copying {}", chat.display()))?;
    let trust = std::path::absolute(&args.trust)?;
    let config = tmp.join("respawn.toml");
    let make = if base { base_config } else { respawn_config };
    let mut text = make(
        &modules,
        &trust,
        &tmp.join("state"),
        (args.read_buffer, args.write_buffer),
    );
    if let Some(level) = durability {
        text += &format!("\n[storage]\ndurability = {level:?}\n");
    }
    if server == UNOBSERVED || server == BARE {
        text += "\n[observability]\nmetrics = false\nspans = false\nheap_profiling = false\n";
    }
    if server == STALE || server == BARE {
        text += "\n[supervision]\nfresh_at_checkpoint = false\n";
    }
    std::fs::write(&config, text)?;
    let argv = vec!["serve".to_owned(), "--config".to_owned(), config.display().to_string()];
    let bin = if base { &args.base_bin } else { &args.respawn_bin };
    start_announcing(args, bin, &argv, tmp, &["ws", "tcp", "admin"]).await
}

async fn start_colyseus(args: &CompareArgs) -> anyhow::Result<Server> {
    if !args.colyseus_dir.join("server.js").is_file() {
        bail!("skipped: {} has no server.js", args.colyseus_dir.display());
    }
    if !has("node") {
        bail!("skipped: node is not installed");
    }
    let tmp = tmp_dir("colyseus")?;
    let port = free_port()?;
    let argv = vec![
        "server.js".to_owned(),
        "--port".to_owned(),
        port.to_string(),
        "--room-size".to_owned(),
        args.room_size.min(256).to_string(),
    ];
    let node = PathBuf::from("node");
    let (child, pid) = spawn(args, &node, &argv, Some(&args.colyseus_dir), &tmp, |l| {
        l.trim().starts_with("listening")
    })
    .await?;
    Ok(Server {
        child,
        pid,
        ws: SocketAddr::from(([127, 0, 0, 1], port)),
        tcp: None,
        admin: None,
        tmp,
    })
}

#[derive(Serialize, Default)]
struct Machine {
    cpu: String,
    cores: usize,
    kernel: String,
    date: String,
}

fn sh(cmd: &str) -> String {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn machine() -> Machine {
    Machine {
        cpu: sh("lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1"),
        // All online CPUs, not just those this (pinned) process may use.
        // SAFETY: sysconf has no preconditions.
        cores: unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(0) as usize,
        kernel: sh("uname -r"),
        date: sh("date -u '+%Y-%m-%d %H:%M UTC'"),
    }
}

#[derive(Serialize, Default)]
struct Output {
    machine: Machine,
    /// scenario -> server -> report (or the reason it was skipped/failed).
    results: BTreeMap<String, BTreeMap<String, Result<Report, String>>>,
    steps: BTreeMap<String, Vec<Report>>,
    skipped: BTreeMap<String, String>,
    /// server -> the interleaved rounds of scenario (a).
    rounds: BTreeMap<String, Vec<Report>>,
}

struct Scenario {
    key: &'static str,
    title: String,
}

fn base_args(args: &CompareArgs, target: Target, transport: Transport, addr: SocketAddr, pid: u32) -> RunArgs {
    RunArgs {
        target,
        transport,
        addr,
        clients: args.chat_clients,
        room_size: args.room_size,
        game: "chat".into(),
        rate: args.chat_rate,
        payload_bytes: 64,
        warmup: args.warmup,
        secs: args.chat_secs,
        drain: args.drain,
        server_pid: Some(pid),
        source_ips: 1,
        json: None,
        label: String::new(),
        swap_at: None,
        swap_cmd: None,
        rollback_at: None,
        rollback_cmd: None,
        idle: false,
        connect_batch: 500,
        read_buffer: 8192,
        write_buffer: 8192,
    }
}

fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

/// Runs one scenario on a freshly started server (so memory and state do
/// not carry over between scenarios).
async fn scenario(
    args: &CompareArgs,
    server_name: &str,
    key: &str,
    out: &mut Output,
) -> anyhow::Result<Option<Report>> {
    let server = match server_name {
        name if is_respawn(name) => start_respawn(args, name).await?,
        "native" => start_native(args).await?,
        "colyseus" => start_colyseus(args).await?,
        other => bail!("unknown server {other}"),
    };
    let (target, transport) = match server_name {
        name if is_respawn(name) => (Target::Respawn, args.transport),
        "native" => (Target::Native, args.transport),
        _ => (Target::Colyseus, Transport::Ws),
    };
    let addr = match transport {
        Transport::Tcp => server.tcp.unwrap_or(server.ws),
        Transport::Ws => server.ws,
    };
    // Let the server settle (Respawn compiles its games at start).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut a = base_args(args, target, transport, addr, server.pid);
    a.label = format!("{key} {server_name}");
    let result = async {
        match key {
            "a" => run::run(&a).await.map(Some),
            "b" => {
                let members = args.room_size.min(args.chat_clients) as f64;
                let start_rate = args.step_start_delivered / (args.chat_clients as f64 * members);
                a.secs = args.step_secs;
                a.warmup = a.warmup.min(1.0);
                let s = StepArgs {
                    run: a,
                    start_rate,
                    factor: 1.5,
                    max_steps: args.step_max,
                    max_p99_ms: 50.0,
                };
                let r = run::step(&s).await?;
                out.steps.insert(server_name.to_owned(), r.steps.clone());
                match r.error {
                    Some(e) => Err(anyhow::anyhow!("the step-up stopped early: {e}")),
                    None => Ok(r.best),
                }
            }
            "c" => {
                a.clients = args.wide_clients;
                a.rate = args.wide_rate;
                a.secs = args.wide_secs;
                run::run(&a).await.map(Some)
            }
            "d" | "d-max" => {
                a.idle = true;
                a.secs = args.idle_secs;
                a.clients = args.idle_clients;
                if key == "d-max" {
                    a.clients = args.idle_max.unwrap_or(args.idle_clients);
                    a.source_ips = args.idle_source_ips;
                }
                run::run(&a).await.map(Some)
            }
            "e" => {
                let bin = std::path::absolute(&args.respawn_bin)?;
                let mods = server.tmp.join("modules");
                let unix = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
                let swap = format!(
                    "{bin} sign {wasm} --key {key} --name chat --version 99.0.0-load.{unix} -o {part} && mv {part} {dst}",
                    bin = shell_quote(&bin),
                    wasm = shell_quote(&std::path::absolute(&args.chat_wasm)?),
                    key = shell_quote(&std::path::absolute(&args.key)?),
                    part = shell_quote(&mods.join(".chat.wasm.part")),
                    dst = shell_quote(&mods.join("chat.wasm")),
                );
                let admin = server.admin.context("respawn printed no admin address")?;
                let rollback = format!(
                    "{bin} rollback chat --admin http://{admin} --token-file {token}",
                    bin = shell_quote(&bin),
                    token = shell_quote(&server.tmp.join("state").join("admin.token")),
                );
                a.swap_at = Some(a.secs / 3.0);
                a.swap_cmd = Some(swap);
                a.rollback_at = Some(a.secs * 2.0 / 3.0);
                a.rollback_cmd = Some(rollback);
                run::run(&a).await.map(Some)
            }
            "f" => {
                // Another build of chat (the same code as a newer version,
                // loaded while the game is pinned, so never promoted)
                // shadows the rooms for the whole window.
                let bin = std::path::absolute(&args.respawn_bin)?;
                let mods = server.tmp.join("modules");
                let version = "99.0.0-shadow";
                let admin = server.admin.context("respawn printed no admin address")?;
                let token = server.tmp.join("state").join("admin.token");
                let pinned = std::process::Command::new(&bin)
                    .args(["pin", "chat", "--admin", &format!("http://{admin}"), "--token-file"])
                    .arg(&token)
                    .output()?;
                if !pinned.status.success() {
                    bail!("pinning chat: {}", String::from_utf8_lossy(&pinned.stderr));
                }
                let part = mods.join(".chat-shadow.wasm.part");
                let signed = std::process::Command::new(&bin)
                    .arg("sign")
                    .arg(std::path::absolute(&args.chat_wasm)?)
                    .arg("--key")
                    .arg(std::path::absolute(&args.key)?)
                    .args(["--name", "chat", "--version", version, "-o"])
                    .arg(&part)
                    .output()?;
                if !signed.status.success() {
                    bail!("signing the shadow build: {}", String::from_utf8_lossy(&signed.stderr));
                }
                std::fs::rename(&part, mods.join("chat-shadow.wasm"))?;
                // Loaded (verified and compiled) before the window opens.
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                let shadow = format!(
                    "{bin} shadow chat {version} --rooms {rooms} --for {secs}s --admin http://{admin} --token-file {token}",
                    bin = shell_quote(&bin),
                    rooms = args.chat_clients.div_ceil(args.room_size),
                    secs = a.secs.ceil() as u64,
                    token = shell_quote(&token),
                );
                a.swap_at = Some(0.0);
                a.swap_cmd = Some(shadow);
                run::run(&a).await.map(Some)
            }
            _ => bail!("unknown scenario {key}"),
        }
    }
    .await;
    let log = server.tmp.join("server.log");
    let tmp = server.tmp.clone();
    server.stop().await;
    // A passing run leaves nothing behind; a failing one keeps its log.
    if matches!(&result, Ok(Some(r)) if r.passed) {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result.with_context(|| format!("server log: {}", log.display()))
}

pub async fn compare(args: &CompareArgs) -> anyhow::Result<bool> {
    // The servers inherit this process's open-file limit: raise it before
    // starting any, to what the largest scenario needs (up to the hard
    // limit, which only root can raise).
    let most = args
        .chat_clients
        .max(args.wide_clients)
        .max(args.idle_clients)
        .max(args.idle_max.unwrap_or(0));
    let limit = crate::procfs::raise_nofile(most as u64 + 1024);
    if limit < most as u64 + 64 {
        eprintln!(
            "warning: the open-file limit is {limit}, below the {most} connections of the largest scenario; \
             raise the hard limit (ulimit -Hn) first"
        );
    }
    let mut out = Output {
        machine: machine(),
        ..Default::default()
    };
    let mut keys: Vec<&str> = args.scenarios.iter().map(String::as_str).collect();
    if keys.contains(&"d") && args.idle_max.is_some() {
        let at = keys.iter().position(|k| *k == "d").unwrap_or(0);
        keys.insert(at + 1, "d-max");
    }
    let mut all_ok = true;
    for server_name in &args.servers {
        // Colyseus: find out once whether it can run at all.
        if server_name == "colyseus" {
            match start_colyseus(args).await {
                Ok(s) => s.stop().await,
                Err(e) => {
                    eprintln!("colyseus {e:#}");
                    out.skipped.insert(server_name.clone(), format!("{e:#}"));
                    continue;
                }
            }
        }
        for key in &keys {
            if (*key == "e" || *key == "f") && !is_respawn(server_name) {
                continue;
            }
            eprintln!("== scenario {key} on {server_name}");
            let r = scenario(args, server_name, key, &mut out).await;
            let entry = out.results.entry((*key).to_owned()).or_default();
            match r {
                Ok(Some(rep)) => {
                    rep.print();
                    all_ok &= rep.passed || *key == "b";
                    entry.insert(server_name.clone(), Ok(rep));
                }
                Ok(None) => {
                    entry.insert(server_name.clone(), Err("no step passed".into()));
                }
                Err(e) => {
                    eprintln!("scenario {key} on {server_name}: {e:#}");
                    all_ok = false;
                    entry.insert(server_name.clone(), Err(format!("{e:#}")));
                }
            }
        }
    }
    if keys.contains(&"a") {
        for round in 0..args.rounds {
            let live: Vec<String> = args
                .servers
                .iter()
                .filter(|n| !out.skipped.contains_key(*n))
                .cloned()
                .collect();
            for server_name in &live {
                eprintln!(
                    "== scenario a, round {} of {}, on {server_name}",
                    round + 1,
                    args.rounds
                );
                match scenario(args, server_name, "a", &mut out).await {
                    Ok(Some(rep)) => {
                        rep.print();
                        all_ok &= rep.passed;
                        out.rounds.entry(server_name.clone()).or_default().push(rep);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        eprintln!("scenario a round on {server_name}: {e:#}");
                        all_ok = false;
                    }
                }
            }
        }
    }
    let md = markdown(args, &out, &keys);
    for (path, text) in [(&args.out, md), (&args.json, serde_json::to_string_pretty(&out)?)] {
        if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(d)?;
        }
        std::fs::write(path, text)?;
    }
    println!("wrote {} and {}", args.out.display(), args.json.display());
    if let Some(file) = args.splice_into.as_ref().filter(|_| all_ok || args.force) {
        let md = std::fs::read_to_string(&args.out)?;
        let doc = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        std::fs::write(
            file,
            splice(&doc, &md).with_context(|| format!("in {}", file.display()))?,
        )?;
        println!("updated {}", file.display());
    }
    Ok(all_ok)
}

fn scenario_titles(args: &CompareArgs) -> Vec<Scenario> {
    vec![
        Scenario {
            key: "a",
            title: format!(
                "(a) chat: {} clients, rooms of {}, {} msg/s each ({:.0} delivered/s offered), {} s",
                args.chat_clients,
                args.room_size,
                args.chat_rate,
                args.chat_clients as f64 * args.room_size as f64 * args.chat_rate,
                args.chat_secs
            ),
        },
        Scenario {
            key: "b",
            title: format!(
                "(b) step-up: {} clients, rooms of {}, from {:.0} delivered/s ×1.5 until p99 > 50 ms or loss, {} s per step (highest passing step)",
                args.chat_clients, args.room_size, args.step_start_delivered, args.step_secs
            ),
        },
        Scenario {
            key: "c",
            title: format!(
                "(c) wide: {} clients, rooms of {}, {} msg/s each, {} s",
                args.wide_clients, args.room_size, args.wide_rate, args.wide_secs
            ),
        },
        Scenario {
            key: "d",
            title: format!("(d) idle: {} joined connections", args.idle_clients),
        },
        Scenario {
            key: "d-max",
            title: format!(
                "(d) idle: {} joined connections over {} source addresses",
                args.idle_max.unwrap_or(0),
                args.idle_source_ips
            ),
        },
        Scenario {
            key: "e",
            title: format!(
                "(e) Respawn only: chat as (a) with a hot swap at 1/3 and a rollback at 2/3 of the {} s window",
                args.chat_secs
            ),
        },
        Scenario {
            key: "f",
            title: format!(
                "(f) Respawn only: chat as (a) with every room shadowed by another build of chat for the {} s window",
                args.chat_secs
            ),
        },
    ]
}

type Metric = (&'static str, fn(&Report) -> f64, bool);

const BEGIN: &str = "<!-- load-compare:begin -->";
const END: &str = "<!-- load-compare:end -->";

/// `doc` with what lies between its BEGIN and END marker lines replaced
/// by `section`.
fn splice(doc: &str, section: &str) -> anyhow::Result<String> {
    let (Some(b), Some(e)) = (doc.find(BEGIN), doc.find(END)) else {
        bail!("no `{BEGIN}` … `{END}` lines to put the results between");
    };
    if e < b {
        bail!("`{END}` comes before `{BEGIN}`");
    }
    Ok(format!("{}{BEGIN}\n\n{}\n{}", &doc[..b], section.trim_end(), &doc[e..]))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The interleaved rounds of scenario (a): every round's CPU per frame
/// and p99, their medians, and the ratio of medians to Respawn's.
fn rounds_table(out: &Output, order: &[String]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    if out.rounds.is_empty() {
        return s;
    }
    let n = out.rounds.values().map(Vec::len).max().unwrap_or(0);
    let _ = writeln!(
        s,
        "#### (a) again: {n} interleaved rounds (each server in turn, restarted each time)
"
    );
    // In the order the servers were given.
    let names: Vec<&String> = order.iter().filter(|n| out.rounds.contains_key(*n)).collect();
    let _ = writeln!(
        s,
        "| metric | {} |\n|---|{}",
        names.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(" | "),
        "---|".repeat(names.len())
    );
    let cpu = |r: &Report| r.server.as_ref().map_or(f64::NAN, |u| u.cpu_us_per_delivered);
    let p99 = |r: &Report| r.latency.p99_ms;
    // Ratios are to the first server given (Respawn in a comparison with
    // its peers, `respawn@off` in one of durability levels).
    let base_name = names.first().map_or("respawn", |n| n.as_str());
    let base = out.rounds.get(base_name).map(|v| median(v.iter().map(cpu).collect()));
    let base_p99 = out.rounds.get(base_name).map(|v| median(v.iter().map(p99).collect()));
    let row = |label: &str, f: &dyn Fn(&[Report]) -> String| {
        let cells: Vec<String> = names.iter().map(|n| f(&out.rounds[*n])).collect();
        format!("| {label} | {} |\n", cells.join(" | "))
    };
    s += &row("result", &|v| {
        if v.iter().all(|r| r.passed) {
            "ok".into()
        } else {
            "FAILED".into()
        }
    });
    s += &row("CPU µs / delivered frame, each round", &|v| {
        v.iter()
            .map(|r| format!("{:.2}", cpu(r)))
            .collect::<Vec<_>>()
            .join(", ")
    });
    s += &row("**CPU µs / frame, median**", &|v| {
        let m = median(v.iter().map(cpu).collect());
        match base {
            Some(b) if b > 0.0 => format!("**{m:.2}** ({:.2}× {base_name}; {base_name} {:.2}× this)", m / b, b / m),
            _ => format!("**{m:.2}**"),
        }
    });
    s += &row("p99 ms, median", &|v| {
        let m = median(v.iter().map(p99).collect());
        match base_p99 {
            Some(b) if b > 0.0 => format!("{m:.2} ({:.2}×)", m / b),
            _ => format!("{m:.2}"),
        }
    });
    s += "\n";
    s
}

fn markdown(args: &CompareArgs, out: &Output, keys: &[&str]) -> String {
    use std::fmt::Write;
    let m = &out.machine;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "### Load comparison: Respawn vs native tokio-tungstenite vs Colyseus\n"
    );
    let _ = writeln!(
        s,
        "Machine: {} ({} cores), kernel {}, {}.\n",
        m.cpu, m.cores, m.kernel, m.date
    );
    let _ = writeln!(
        s,
        "Method: `respawn-load compare` (`just load-compare`). Each server runs alone{}, restarted for every scenario; \
         the harness runs on the other core with one generator thread. All traffic is on loopback over {}. \
         Clients join rooms `load-<k>` of the chat game and send 64-byte chat lines at the offered rate with ±50% jitter; \
         every line is broadcast to its room (sender included). Latency is send-to-receive per delivered frame; CPU is the \
         server's utime+stime over the measured window (from /proc); a run with any loss, duplicate, reordering or error \
         frame is FAILED. Ratios are server ÷ Respawn.\n",
        if args.no_pin {
            ""
        } else {
            " pinned to core 0 (`taskset -c 0`)"
        },
        match args.transport {
            Transport::Ws => "WebSocket",
            Transport::Tcp => "WebSocket (Colyseus) and TCP (Respawn, native)",
        }
    );
    for (name, why) in &out.skipped {
        let _ = writeln!(s, "{name}: {why}\n");
    }
    let servers: Vec<&String> = args.servers.iter().filter(|n| !out.skipped.contains_key(*n)).collect();
    let metrics: Vec<Metric> = vec![
        ("offered deliveries/s", |r| r.offered_deliveries_per_s, false),
        ("delivered frames/s", |r| r.delivered_per_s, true),
        ("lost", |r| r.lost as f64, false),
        ("dup + out-of-order", |r| (r.duplicated + r.out_of_order) as f64, false),
        (
            "error frames",
            |r| r.errors.values().sum::<u64>() as f64 + r.disconnects as f64,
            false,
        ),
        ("p50 ms", |r| r.latency.p50_ms, true),
        ("p99 ms", |r| r.latency.p99_ms, true),
        ("p99.9 ms", |r| r.latency.p99_ms.max(r.latency.p999_ms), true),
        ("max ms", |r| r.latency.max_ms, true),
        ("server CPU s", |r| r.server.as_ref().map_or(0.0, |s| s.cpu_s), true),
        (
            "server CPU µs / delivered frame",
            |r| r.server.as_ref().map_or(0.0, |s| s.cpu_us_per_delivered),
            true,
        ),
        (
            "server peak RSS MiB",
            |r| {
                r.server
                    .as_ref()
                    .map_or(0.0, |s| s.vm_hwm_kib.max(s.max_rss_kib) as f64 / 1024.0)
            },
            true,
        ),
        ("harness cores used", |r| r.harness.cores_used, false),
    ];
    let idle_metrics: Vec<Metric> = vec![
        (
            "RSS before MiB",
            |r| r.server.as_ref().map_or(0.0, |s| s.rss_before_kib as f64 / 1024.0),
            false,
        ),
        (
            "RSS joined MiB",
            |r| r.server.as_ref().map_or(0.0, |s| s.rss_after_kib as f64 / 1024.0),
            true,
        ),
        (
            "RSS per connection KiB",
            |r| r.server.as_ref().map_or(0.0, |s| s.rss_per_conn_kib),
            true,
        ),
        (
            "server CPU s while idle",
            |r| r.server.as_ref().map_or(0.0, |s| s.cpu_s),
            false,
        ),
        ("dropped connections", |r| r.disconnects as f64, false),
    ];
    for sc in scenario_titles(args) {
        if !keys.contains(&sc.key) {
            continue;
        }
        let Some(results) = out.results.get(sc.key) else {
            continue;
        };
        let _ = writeln!(s, "#### {}\n", sc.title);
        let cols: Vec<&&String> = servers.iter().filter(|n| results.contains_key(**n)).collect();
        let _ = write!(s, "| metric |");
        for c in &cols {
            let _ = write!(s, " {c} |");
        }
        let _ = writeln!(s);
        let _ = writeln!(s, "|---|{}", "---|".repeat(cols.len()));
        let _ = write!(s, "| result |");
        for c in &cols {
            let cell = match &results[**c] {
                Ok(r) if r.passed => "ok".to_owned(),
                Ok(r) => format!("FAILED: {}", r.failures.join("; ")),
                Err(e) => format!("not run: {}", e.lines().next().unwrap_or("")),
            };
            let _ = write!(s, " {cell} |");
        }
        let _ = writeln!(s);
        let ms = if sc.key.starts_with('d') {
            &idle_metrics
        } else {
            &metrics
        };
        if sc.key == "b" {
            let _ = write!(s, "| highest passing msgs/s per client |");
            for c in &cols {
                let cell = results[**c]
                    .as_ref()
                    .map_or("-".into(), |r| format!("{:.3}", r.rate_per_client));
                let _ = write!(s, " {cell} |");
            }
            let _ = writeln!(s);
        }
        let base_name = args.servers.first().map_or("respawn", String::as_str);
        let respawn = results.get(base_name).and_then(|r| r.as_ref().ok());
        for (name, f, ratio) in ms {
            let _ = write!(s, "| {name} |");
            for c in &cols {
                let cell = match &results[**c] {
                    Ok(r) => {
                        let v = f(r);
                        let mut cell = fmt_num(v);
                        if *ratio
                            && c.as_str() != base_name
                            && let Some(base) = respawn.map(f).filter(|b| *b > 0.0)
                        {
                            let _ = write!(cell, " ({:.2}×)", v / base);
                        }
                        cell
                    }
                    Err(_) => "-".into(),
                };
                let _ = write!(s, " {cell} |");
            }
            let _ = writeln!(s);
        }
        if sc.key == "e"
            && let Some(r) = respawn
        {
            for m in &r.marks {
                let _ = writeln!(
                    s,
                    "\n{} at {:.1} s ({}, command {:.0} ms): sends in the next 1 s: p99 {:.2} ms, max {:.2} ms, {} of {} delivered, {} lost.",
                    m.label,
                    m.at_s,
                    if m.command_ok { "ok" } else { "command FAILED" },
                    m.command_ms,
                    m.latency.p99_ms,
                    m.latency.max_ms,
                    m.received,
                    m.expected,
                    m.lost
                );
            }
            let _ = writeln!(s, "\n`swapped` frames received: {}.", r.swapped_frames);
        }
        let _ = writeln!(s);
    }
    if !out.steps.is_empty() {
        let _ = writeln!(s, "#### (b) every step\n\n{}", Report::TABLE_HEADER);
        for steps in out.steps.values() {
            for r in steps {
                let _ = writeln!(s, "{}", r.table_row());
            }
        }
        let _ = writeln!(s);
    }
    s += &rounds_table(out, &args.servers);
    s
}

fn fmt_num(v: f64) -> String {
    if (v == v.trunc() && v.abs() < 1e15) || v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_lines_and_config() {
        assert_eq!(
            listening("listening ws 127.0.0.1:7700", "ws"),
            Some("127.0.0.1:7700".parse().unwrap())
        );
        assert_eq!(listening("listening tcp 127.0.0.1:1", "ws"), None);
        let doc = "intro\n<!-- load-compare:begin -->\nold\n<!-- load-compare:end -->\nrest\n";
        let out = splice(doc, "## new\n").unwrap();
        assert_eq!(
            out,
            "intro\n<!-- load-compare:begin -->\n\n## new\n<!-- load-compare:end -->\nrest\n"
        );
        assert!(splice("no markers", "x").is_err());
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        let c = respawn_config(
            Path::new("/t/m"),
            Path::new("/r/trust"),
            Path::new("/t/s"),
            (4096, 16384),
        );
        let v: toml::Value = toml::from_str(&c).unwrap();
        assert_eq!(v["net"]["web"].as_str(), Some("off"));
        assert_eq!(v["modules"]["dir"].as_str(), Some("/t/m"));
    }
}
