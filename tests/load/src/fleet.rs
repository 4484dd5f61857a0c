//! `respawn-load fleet`: what a fleet on NATS JetStream costs and how fast
//! it heals, on one machine. Starts a three-server JetStream cluster on
//! loopback, then:
//!
//! 1. **Replicated `strict`**: players each in their own chat room send a
//!    message, wait for its `ack`, and send the next, for a few seconds;
//!    against a host on SQLite and a fleet node on JetStream (three
//!    copies), alternated over several rounds: acks/s, ack p50/p99, and the
//!    host's CPU per ack.
//! 2. **Failover**: three nodes; rooms filled on one (one player each, some
//!    inputs acknowledged), that node killed (`kill -9`); the time until
//!    the survivors serve every room, polled on their admin APIs.
//! 3. **Scale**: the same ping-pong at the default durability (`journal`)
//!    on a fleet of one node and on a fleet of three with the players
//!    spread over them: messages/s, p99, CPU of hosts and NATS per message.
//! 4. **Routing**: what reaching a room on another node costs both ways
//!    this project could have gone: a join that follows `room_elsewhere`
//!    against a join on the owner (the redirect, paid once per join), and
//!    a request-reply over core NATS at the same concurrency (the hop that
//!    forwarding would add to every message).

// The end-to-end tests' NATS cluster (its cut-able proxy is not used here).
#[allow(dead_code)]
#[path = "../../src/nats.rs"]
mod nats;

use crate::compare::respawn_config;
use crate::procfs;
use crate::stats::new_histogram;
use anyhow::{Context, bail};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

#[derive(clap::Args, Debug, Clone)]
pub struct FleetArgs {
    #[arg(long, default_value = "target/release/respawn")]
    pub respawn_bin: PathBuf,
    /// Signed modules (must include `chat`).
    #[arg(long, default_value = "modules")]
    pub modules: PathBuf,
    #[arg(long, default_value = ".respawn/trust")]
    pub trust: PathBuf,
    /// Rooms on the node that is killed.
    #[arg(long, default_value_t = 1000)]
    pub rooms: usize,
    /// Acknowledged messages per room before the kill.
    #[arg(long, default_value_t = 10)]
    pub inputs: usize,
    /// Players (one per room) in the `strict` comparison.
    #[arg(long, default_value_t = 100)]
    pub players: usize,
    /// Seconds per measured round of the comparison.
    #[arg(long, default_value_t = 5)]
    pub secs: u64,
    /// Rounds of the comparison (each runs both setups).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// The fleet's timing (`cluster.heartbeat_ms`; lease and death follow
    /// at 3 and 6 heartbeats).
    #[arg(long, default_value_t = 200)]
    pub heartbeat_ms: u64,
    /// Keep the hosts' folders (configs, logs) instead of deleting them.
    #[arg(long)]
    pub keep: bool,
}

/// A host process and the addresses it printed.
struct Host {
    child: Child,
    tcp: SocketAddr,
    admin: SocketAddr,
    token: String,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(bin: &Path, dir: &Path, config: &str) -> anyhow::Result<Host> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("respawn.toml");
    std::fs::write(&path, config)?;
    let log = std::fs::File::create(dir.join("host.log"))?;
    let mut child = Command::new(bin)
        .args(["serve", "--config"])
        .arg(&path)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let (mut tcp, mut admin) = (None, None);
    while admin.is_none() || tcp.is_none() {
        let Some(line) = lines.next().transpose()? else {
            bail!(
                "the host exited before listening; see {}",
                dir.join("host.log").display()
            );
        };
        if let Some(a) = line.strip_prefix("listening tcp ") {
            tcp = Some(a.trim().parse()?);
        }
        if let Some(a) = line.strip_prefix("listening admin ") {
            admin = Some(a.trim().parse()?);
        }
    }
    std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
    let token = std::fs::read_to_string(dir.join("state").join("admin.token"))?
        .trim()
        .to_owned();
    Ok(Host {
        child,
        tcp: tcp.context("no tcp")?,
        admin: admin.context("no admin")?,
        token,
    })
}

impl Host {
    /// Rooms the host serves, from `GET /status`.
    fn rooms(&self) -> u64 {
        let Ok(mut s) = std::net::TcpStream::connect(self.admin) else {
            return 0;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let req = format!(
            "GET /status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            self.token
        );
        let mut text = String::new();
        if s.write_all(req.as_bytes()).is_err() || s.read_to_string(&mut text).is_err() {
            return 0;
        }
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
        serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["runtime"]["rooms"].as_u64())
            .unwrap_or(0)
    }
}

/// A host's config: the load harness's, at `durability`, with `cluster`
/// when given.
fn config(
    args: &FleetArgs,
    dir: &Path,
    modules: &Path,
    durability: &str,
    cluster: Option<String>,
) -> anyhow::Result<String> {
    let trust = std::path::absolute(&args.trust)?;
    let mut text = respawn_config(modules, &trust, &dir.join("state"), (8192, 0)).replacen(
        "[net]\n",
        "[net]\nresume_grace_ms = 600000\n",
        1,
    );
    text += &format!(
        "\n[storage]\ndurability = {durability:?}\n\n[sandbox]\nmax_instances = {}\n",
        (args.rooms.max(args.players) * 2 + 16).max(64)
    );
    if let Some(c) = cluster {
        text += &c;
    }
    Ok(text)
}

fn cluster_section(args: &FleetArgs, node: &str, prefix: &str, nats: &nats::Nats) -> String {
    let hb = args.heartbeat_ms;
    format!(
        "\n[cluster]\nnode = {node:?}\nurls = {}\nprefix = {prefix:?}\nheartbeat_ms = {hb}\nlease_ms = {}\ndead_after_ms = {}\n",
        nats.toml_urls(),
        hb * 3,
        hb * 6
    )
}

/// One player's round: join its own chat room, then send, await the ack,
/// send again, until `until`. Returns each ack's latency in µs.
async fn ping_pong(addr: SocketAddr, room: String, until: Instant) -> anyhow::Result<Vec<u64>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (r, mut w) = stream.into_split();
    let mut r = tokio::io::BufReader::new(r).lines();
    let join = format!(r#"{{"type":"join","game":"chat","room":"{room}","name":"p"}}"#);
    w.write_all(format!("{join}\n").as_bytes()).await?;
    loop {
        let line = r.next_line().await?.context("closed before joining")?;
        if line.contains(r#""type":"joined""#) {
            break;
        }
        if line.contains(r#""type":"error""#) {
            bail!("join refused: {line}");
        }
    }
    let mut out = Vec::new();
    let mut n = 0u64;
    while Instant::now() < until {
        n += 1;
        let sent = Instant::now();
        let msg = format!(r#"{{"type":"message","data":{{"say":"m{n}"}},"ref":{n}}}"#);
        w.write_all(format!("{msg}\n").as_bytes()).await?;
        loop {
            let line = r.next_line().await?.context("closed mid-round")?;
            if line.contains(r#""type":"ack""#) {
                break;
            }
            if line.contains(r#""type":"error""#) {
                bail!("refused: {line}");
            }
        }
        out.push(sent.elapsed().as_micros() as u64);
    }
    Ok(out)
}

/// CPU seconds of `pids` together.
fn cpu_of(pids: &[u32]) -> anyhow::Result<f64> {
    pids.iter().map(|p| procfs::cpu_seconds(Some(*p))).sum()
}

/// One measured round's figures.
#[derive(Default, Clone, Copy)]
struct Round {
    acks_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    host_us_per_ack: f64,
    nats_us_per_ack: f64,
}

impl Round {
    /// The round's markdown row.
    fn row(&self, round: usize, label: &str) -> String {
        format!(
            "| {round} | {label} | {:.0} | {:.2} | {:.2} | {:.0} | {:.0} |",
            self.acks_per_s, self.p50_ms, self.p99_ms, self.host_us_per_ack, self.nats_us_per_ack
        )
    }

    /// Adds `other` into this sum of rounds.
    fn add(&mut self, other: &Round) {
        self.acks_per_s += other.acks_per_s;
        self.p50_ms += other.p50_ms;
        self.p99_ms += other.p99_ms;
        self.host_us_per_ack += other.host_us_per_ack;
        self.nats_us_per_ack += other.nats_us_per_ack;
    }
}

/// One measured round against `hosts`, players spread over them (the NATS
/// servers `nats` counted too).
async fn round(args: &FleetArgs, hosts: &[&Host], nats: &[u32], tag: &str) -> anyhow::Result<Round> {
    let pids: Vec<u32> = hosts.iter().map(|h| h.child.id()).collect();
    let cpu0 = cpu_of(&pids)?;
    let nats0 = cpu_of(nats)?;
    let started = Instant::now();
    let until = started + Duration::from_secs(args.secs);
    let tasks: Vec<_> = (0..args.players)
        .map(|i| tokio::spawn(ping_pong(hosts[i % hosts.len()].tcp, format!("{tag}-{i}"), until)))
        .collect();
    let mut hist = new_histogram();
    let mut acks = 0u64;
    for t in tasks {
        for us in t.await?? {
            acks += 1;
            let _ = hist.record(us.max(1));
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu_of(&pids)? - cpu0;
    let nats_cpu = cpu_of(nats)? - nats0;
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1e3;
    let per_ack = |s: f64| s * 1e6 / acks.max(1) as f64;
    Ok(Round {
        acks_per_s: acks as f64 / secs,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        host_us_per_ack: per_ack(cpu),
        nats_us_per_ack: per_ack(nats_cpu),
    })
}

pub async fn fleet(args: &FleetArgs) -> anyhow::Result<bool> {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    let tmp = std::env::temp_dir().join(format!("respawn-load-fleet-{}-{unix}", std::process::id()));
    let modules = tmp.join("modules");
    std::fs::create_dir_all(&modules)?;
    for e in std::fs::read_dir(&args.modules)? {
        let e = e?;
        if e.file_name() == "chat.wasm" {
            std::fs::copy(e.path(), modules.join(e.file_name()))?;
        }
    }
    let nats = nats::Nats::cluster(3);
    eprintln!("NATS JetStream cluster of 3 up: {}", nats.urls.join(", "));

    // 1. strict on SQLite against strict on JetStream (three copies).
    println!(
        "| round | storage | acks/s | ack p50 ms | ack p99 ms | host CPU µs/ack | NATS CPU µs/ack |\n| --- | --- | --- | --- | --- | --- | --- |"
    );
    let mut sums = [Round::default(); 2];
    for r in 0..args.rounds {
        for (k, kind) in ["SQLite (one host)", "JetStream R3 (fleet node)"].iter().enumerate() {
            let dir = tmp.join(format!("round{r}-{k}"));
            let cluster = (k == 1).then(|| cluster_section(args, "solo", &format!("round{r}"), &nats));
            let host = start(
                &args.respawn_bin,
                &dir,
                &config(args, &dir, &modules, "strict", cluster)?,
            )?;
            let got = round(args, &[&host], &nats.pids(), &format!("r{r}k{k}")).await?;
            println!("{}", got.row(r + 1, kind));
            sums[k].add(&got);
        }
    }
    let n = args.rounds.max(1) as f64;
    let (a, b) = (sums[0], sums[1]);
    println!(
        "\nmeans over {} rounds of {} s, {} players: SQLite {:.0} acks/s (p99 {:.2} ms, host {:.0} µs CPU/ack); \
         JetStream R3 {:.0} acks/s (p99 {:.2} ms, host {:.0} + NATS {:.0} µs CPU/ack): {:.2}x the throughput, {:.2}x the p99\n",
        args.rounds,
        args.secs,
        args.players,
        a.acks_per_s / n,
        a.p99_ms / n,
        a.host_us_per_ack / n,
        b.acks_per_s / n,
        b.p99_ms / n,
        b.host_us_per_ack / n,
        b.nats_us_per_ack / n,
        b.acks_per_s / a.acks_per_s.max(1e-9),
        b.p99_ms / a.p99_ms.max(1e-9),
    );

    // 2. Failover of a killed node's rooms.
    let mut nodes = Vec::new();
    for node in ["a", "b", "c"] {
        let dir = tmp.join(format!("node-{node}"));
        let cluster = Some(cluster_section(args, node, "failover", &nats));
        nodes.push(start(
            &args.respawn_bin,
            &dir,
            &config(args, &dir, &modules, "strict", cluster)?,
        )?);
    }
    // Every node hears the others before rooms are made.
    tokio::time::sleep(Duration::from_millis(args.heartbeat_ms * 4)).await;
    let filled = Instant::now();
    let mut tasks = Vec::new();
    for room in 0..args.rooms {
        tasks.push(tokio::spawn(crate::recovery::fill(nodes[0].tcp, room, args.inputs)));
    }
    for t in tasks {
        t.await??;
    }
    eprintln!(
        "{} rooms x {} acknowledged messages on node a in {:.1} s; kill -9 a",
        args.rooms,
        args.inputs,
        filled.elapsed().as_secs_f64()
    );
    let killed = Instant::now();
    nodes[0].child.kill()?;
    nodes[0].child.wait()?;
    let (mut first, mut all) = (None, None);
    while killed.elapsed() < Duration::from_secs(60) {
        let serving = nodes[1].rooms() + nodes[2].rooms();
        if serving > 0 && first.is_none() {
            first = Some(killed.elapsed());
        }
        if serving as usize >= args.rooms {
            all = Some(killed.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let dead_after = Duration::from_millis(args.heartbeat_ms * 6);
    let shown = |d: Option<Duration>| {
        d.map_or("(not within 60 s)".to_owned(), |d| {
            format!("{:.0} ms", d.as_secs_f64() * 1e3)
        })
    };
    println!(
        "failover of {} rooms ({} inputs each, strict) after kill -9 of their node: first room serving again {}, \
         all {} (death noticed after dead_after_ms = {} ms, heartbeat {} ms); split b {} / c {}",
        args.rooms,
        args.inputs,
        shown(first),
        shown(all),
        dead_after.as_millis(),
        args.heartbeat_ms,
        nodes[1].rooms(),
        nodes[2].rooms(),
    );
    drop(nodes);
    scale(args, &tmp, &modules, &nats).await?;
    if args.keep {
        eprintln!("the hosts' folders are kept in {}", tmp.display());
    } else {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(all.is_some())
}

/// Parts 3 and 4: a fleet of one against a fleet of three, then the routing
/// costs on the three.
async fn scale(args: &FleetArgs, tmp: &Path, modules: &Path, nats: &nats::Nats) -> anyhow::Result<()> {
    println!(
        "\n| round | fleet | msgs/s | p50 ms | p99 ms | hosts CPU µs/msg | NATS CPU µs/msg |\n| --- | --- | --- | --- | --- | --- | --- |"
    );
    let start_fleet = |n: usize, tag: &str| -> anyhow::Result<Vec<Host>> {
        ["a", "b", "c"][..n]
            .iter()
            .map(|node| {
                let dir = tmp.join(format!("{tag}-{node}"));
                let cluster = Some(cluster_section(args, node, tag, nats));
                start(
                    &args.respawn_bin,
                    &dir,
                    &config(args, &dir, modules, "journal", cluster)?,
                )
            })
            .collect()
    };
    let mut sums = [Round::default(); 2];
    let mut three = Vec::new();
    for r in 0..args.rounds.max(1) {
        for (k, n) in [1, 3].into_iter().enumerate() {
            let hosts = start_fleet(n, &format!("scale{r}n{n}"))?;
            tokio::time::sleep(Duration::from_millis(args.heartbeat_ms * 4)).await;
            let refs: Vec<&Host> = hosts.iter().collect();
            let got = round(args, &refs, &nats.pids(), &format!("s{r}n{n}")).await?;
            println!("{}", got.row(r + 1, if n == 1 { "1 node" } else { "3 nodes" }));
            sums[k].add(&got);
            if n == 3 {
                three = hosts;
            }
        }
    }
    let n = args.rounds.max(1) as f64;
    let (one, many) = (sums[0], sums[1]);
    println!(
        "\nmeans over {} rounds, {} players at `journal`: one node {:.0} msgs/s (p99 {:.2} ms, hosts {:.0} + NATS {:.0} µs CPU/msg); \
         three nodes {:.0} msgs/s (p99 {:.2} ms, hosts {:.0} + NATS {:.0} µs CPU/msg): {:.2}x the messages/s\n",
        args.rounds.max(1),
        args.players,
        one.acks_per_s / n,
        one.p99_ms / n,
        one.host_us_per_ack / n,
        one.nats_us_per_ack / n,
        many.acks_per_s / n,
        many.p99_ms / n,
        many.host_us_per_ack / n,
        many.nats_us_per_ack / n,
        many.acks_per_s / one.acks_per_s.max(1e-9),
    );
    routing(args, &three, nats).await
}

/// 4.: a join through a redirect against a join on the owner, and a core
/// NATS request-reply at the players' concurrency.
async fn routing(args: &FleetArgs, three: &[Host], nats: &nats::Nats) -> anyhow::Result<()> {
    let joins = 200;
    // Rooms owned by node b, each held by a player there.
    let mut holders = Vec::new();
    for i in 0..joins {
        holders.push(hold(three[1].tcp, &format!("route-{i}")).await?);
    }
    let (mut direct, mut redirected) = (new_histogram(), new_histogram());
    for i in 0..joins {
        let room = format!("route-{i}");
        let t = Instant::now();
        drop(hold(three[1].tcp, &room).await?);
        let _ = direct.record(t.elapsed().as_micros().max(1) as u64);
        let t = Instant::now();
        drop(hold_following(three[0].tcp, &room).await?);
        let _ = redirected.record(t.elapsed().as_micros().max(1) as u64);
    }
    drop(holders);
    // The hop forwarding would add: request-reply over core NATS, one
    // responder per node, closed loop per player.
    let client = async_nats::connect(nats.urls[0].as_str()).await?;
    let responder = async_nats::connect(nats.urls[1].as_str()).await?;
    let mut sub = responder.subscribe("bench.forward").await?;
    let replier = tokio::spawn(async move {
        use futures_util::StreamExt;
        while let Some(m) = sub.next().await {
            if let Some(reply) = m.reply {
                let _ = responder.publish(reply, m.payload).await;
            }
        }
    });
    // The subscription reaches the other servers of the NATS cluster a
    // moment later.
    let ready = Instant::now();
    while client.request("bench.forward", "probe".into()).await.is_err() {
        if ready.elapsed() > Duration::from_secs(10) {
            bail!("the forwarding responder never became reachable");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let nats0 = cpu_of(&nats.pids())?;
    let started = Instant::now();
    let until = started + Duration::from_secs(args.secs);
    let tasks: Vec<_> = (0..args.players)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let payload = format!(r#"{{"type":"message","data":{{"say":"m{i}"}},"ref":{i}}}"#);
                let mut out = Vec::new();
                while Instant::now() < until {
                    let t = Instant::now();
                    client.request("bench.forward", payload.clone().into()).await?;
                    out.push(t.elapsed().as_micros() as u64);
                }
                Ok::<_, anyhow::Error>(out)
            })
        })
        .collect();
    let mut hop = new_histogram();
    for t in tasks {
        for us in t.await?? {
            let _ = hop.record(us.max(1));
        }
    }
    let hops = hop.len();
    let secs = started.elapsed().as_secs_f64();
    let nats_us = (cpu_of(&nats.pids())? - nats0) * 1e6 / hops.max(1) as f64;
    replier.abort();
    let ms = |h: &hdrhistogram::Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1e3;
    println!(
        "routing: a join on the owner p50 {:.2} ms / p99 {:.2} ms; a join through `room_elsewhere` p50 {:.2} ms / p99 {:.2} ms \
         ({} joins, paid once per join). A forwarding hop (core NATS request-reply, {} players closed-loop): \
         {:.0}/s, p50 {:.2} ms / p99 {:.2} ms, NATS {:.0} µs CPU each (paid on every message, twice for a broadcast's way back)",
        ms(&direct, 0.5),
        ms(&direct, 0.99),
        ms(&redirected, 0.5),
        ms(&redirected, 0.99),
        joins,
        args.players,
        hops as f64 / secs,
        ms(&hop, 0.5),
        ms(&hop, 0.99),
        nats_us
    );
    Ok(())
}

/// A player joined to `room` on `addr`, its connection kept open.
async fn hold(addr: SocketAddr, room: &str) -> anyhow::Result<tokio::net::TcpStream> {
    match join_on(addr, room).await? {
        Joined::Here(stream) => Ok(stream),
        Joined::Elsewhere(tcp) => bail!("room {room} is on {tcp}, not on {addr}"),
    }
}

/// A player joined to `room`, starting at `addr` and following one
/// `room_elsewhere`.
async fn hold_following(addr: SocketAddr, room: &str) -> anyhow::Result<tokio::net::TcpStream> {
    match join_on(addr, room).await? {
        Joined::Here(stream) => Ok(stream),
        Joined::Elsewhere(tcp) => hold(tcp, room).await,
    }
}

enum Joined {
    Here(tokio::net::TcpStream),
    Elsewhere(SocketAddr),
}

async fn join_on(addr: SocketAddr, room: &str) -> anyhow::Result<Joined> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let join = format!("{{\"type\":\"join\",\"game\":\"chat\",\"room\":\"{room}\",\"name\":\"p\"}}\n");
    stream.write_all(join.as_bytes()).await?;
    let mut r = tokio::io::BufReader::new(&mut stream);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            bail!("closed before joining {room}");
        }
        let v: serde_json::Value = serde_json::from_str(&line)?;
        match v["type"].as_str() {
            Some("joined") => break,
            Some("error") if v["code"] == "room_elsewhere" => {
                let tcp = v["node"]["tcp"]
                    .as_str()
                    .context("room_elsewhere without a tcp address")?;
                return Ok(Joined::Elsewhere(tcp.parse()?));
            }
            Some("error") => bail!("join refused: {line}"),
            _ => {}
        }
    }
    drop(r);
    Ok(Joined::Here(stream))
}
