//! `respawn-load recovery`: how long a host takes to bring back its rooms
//! after `kill -9`. Fills N chat rooms (one player each, some messages
//! acknowledged), kills the host with SIGKILL, starts it again on the same
//! state folder and reports the time until it listens again and the
//! recovery time the host logs.

use crate::compare::respawn_config;
use anyhow::{Context, bail};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

#[derive(clap::Args, Debug, Clone)]
pub struct RecoveryArgs {
    #[arg(long, default_value = "target/release/respawn")]
    pub respawn_bin: PathBuf,
    /// Signed modules (must include `chat`).
    #[arg(long, default_value = "modules")]
    pub modules: PathBuf,
    #[arg(long, default_value = ".respawn/trust")]
    pub trust: PathBuf,
    /// Rooms to fill and recover.
    #[arg(long, default_value_t = 1000)]
    pub rooms: usize,
    /// Acknowledged messages per room before the kill.
    #[arg(long, default_value_t = 10)]
    pub inputs: usize,
    /// `storage.durability` of the host.
    #[arg(long, default_value = "strict")]
    pub durability: String,
}

struct Host {
    child: Child,
    tcp: std::net::SocketAddr,
}

fn start(args: &RecoveryArgs, config: &Path, log: &Path) -> anyhow::Result<(Host, Duration)> {
    let started = Instant::now();
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    let mut child = Command::new(&args.respawn_bin)
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", args.respawn_bin.display()))?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let tcp = loop {
        let Some(line) = lines.next().transpose()? else {
            bail!("the host exited before listening");
        };
        if let Some(addr) = line.strip_prefix("listening tcp ") {
            break addr.trim().parse()?;
        }
    };
    let took = started.elapsed();
    std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
    Ok((Host { child, tcp }, took))
}

/// One player: joins its room and has `inputs` messages acknowledged.
pub async fn fill(addr: std::net::SocketAddr, room: usize, inputs: usize) -> anyhow::Result<()> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (r, mut w) = stream.into_split();
    let mut r = tokio::io::BufReader::new(r).lines();
    let join = format!(r#"{{"type":"join","game":"chat","room":"r{room}","name":"p{room}"}}"#);
    w.write_all(format!("{join}\n").as_bytes()).await?;
    let mut acked = 0;
    let mut joined = false;
    while acked < inputs {
        let Some(line) = r.next_line().await? else {
            bail!("room {room}: the host closed the connection");
        };
        let frame: serde_json::Value = serde_json::from_str(&line)?;
        match frame["type"].as_str() {
            Some("joined") if !joined => {
                joined = true;
                for i in 0..inputs {
                    let msg = format!(r#"{{"type":"message","data":{{"say":"line {i}"}},"ref":{i}}}"#);
                    w.write_all(format!("{msg}\n").as_bytes()).await?;
                }
            }
            Some("ack") => acked += 1,
            Some("error") => bail!("room {room}: {frame}"),
            _ => {}
        }
    }
    // Keep the connection (and so the seat) until the kill.
    std::mem::forget((r, w));
    Ok(())
}

pub async fn recovery(args: &RecoveryArgs) -> anyhow::Result<bool> {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    let tmp = std::env::temp_dir().join(format!("respawn-load-recovery-{}-{unix}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let modules = tmp.join("modules");
    std::fs::create_dir_all(&modules)?;
    for e in std::fs::read_dir(&args.modules)? {
        let e = e?;
        std::fs::copy(e.path(), modules.join(e.file_name()))?;
    }
    let trust = std::path::absolute(&args.trust)?;
    let config = tmp.join("respawn.toml");
    // Seats wait for their players as long as a run takes.
    let text = respawn_config(&modules, &trust, &tmp.join("state"), (8192, 0)).replacen(
        "[net]\n",
        "[net]\nresume_grace_ms = 600000\n",
        1,
    ) + &format!(
        "\n[storage]\ndurability = {:?}\n\n[sandbox]\nmax_instances = {}\n",
        args.durability,
        (args.rooms * 2 + 16).max(64)
    );
    std::fs::write(&config, text)?;
    let log = tmp.join("host.log");
    let (mut host, first) = start(args, &config, &log)?;
    eprintln!(
        "host up in {:.0} ms; filling {} rooms",
        first.as_secs_f64() * 1e3,
        args.rooms
    );
    let filled = Instant::now();
    let mut tasks = Vec::new();
    for room in 0..args.rooms {
        tasks.push(tokio::spawn(fill(host.tcp, room, args.inputs)));
        if room % 100 == 99 {
            tokio::task::yield_now().await;
        }
    }
    for t in tasks {
        t.await??;
    }
    eprintln!(
        "{} rooms x {} acknowledged messages in {:.1} s; kill -9",
        args.rooms,
        args.inputs,
        filled.elapsed().as_secs_f64()
    );
    host.child.kill()?;
    host.child.wait()?;
    let (mut again, listening) = start(args, &config, &log)?;
    let text = std::fs::read_to_string(&log)?;
    let logged = text
        .lines()
        .rev()
        .find(|l| l.contains("rooms recovered from the database"))
        .map(str::to_owned)
        .unwrap_or_default();
    let field = |name: &str| -> Option<u64> {
        logged
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
    };
    let shown = |v: Option<u64>| v.map_or_else(|| "(not logged)".to_owned(), |n| n.to_string());
    let rooms: Option<u64> = field("rooms");
    let (rooms_text, seats, ms) = (shown(rooms), shown(field("seats")), shown(field("ms")));
    println!(
        "recovery of {} rooms ({} inputs each, durability {}): rooms back {}, seats parked {}, \
         recovery {} ms (logged), start to listening {:.0} ms (the first start took {:.0} ms)",
        args.rooms,
        args.inputs,
        args.durability,
        rooms_text,
        seats,
        ms,
        listening.as_secs_f64() * 1e3,
        first.as_secs_f64() * 1e3,
    );
    again.child.kill()?;
    again.child.wait()?;
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(rooms == Some(args.rooms as u64))
}
