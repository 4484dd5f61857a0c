//! One load run (or a step-up series of windows) and its report.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::client::{self, Plan, Setup, Target, Transport};
use crate::procfs;
use crate::stats::{Stats, Window};

pub const MAX_SECS: f64 = 600.0;
pub const MAX_CLIENTS: usize = 25_000;

/// Options shared by `run` and `step`.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Which server speaks on --addr.
    #[arg(long, value_enum)]
    pub target: Target,
    /// Transport (colyseus: ws only).
    #[arg(long, value_enum, default_value = "ws")]
    pub transport: Transport,
    /// Server address; loopback only (127.0.0.0/8 or ::1).
    #[arg(long)]
    pub addr: SocketAddr,
    /// Simulated players (at most 25000).
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// Players per room; rooms are named load-<k>.
    #[arg(long, default_value_t = 10)]
    pub room_size: usize,
    /// Game to join.
    #[arg(long, default_value = "chat")]
    pub game: String,
    /// Messages per second per client (intervals jittered ±50%).
    #[arg(long, default_value_t = 2.0)]
    pub rate: f64,
    /// Chat text size in bytes.
    #[arg(long, default_value_t = 64)]
    pub payload_bytes: usize,
    /// Seconds of sending before the measured window.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Length of the measured window in seconds (required, at most 600).
    #[arg(long)]
    pub secs: f64,
    /// Seconds to wait for in-flight frames after sending stops.
    #[arg(long, default_value_t = 2.0)]
    pub drain: f64,
    /// Server process to read CPU time and memory of (/proc).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Spread client sockets over 127.0.0.1 ..= 127.0.0.K.
    #[arg(long, default_value_t = 1)]
    pub source_ips: u8,
    /// Write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Label for the report row.
    #[arg(long, default_value = "")]
    pub label: String,
    /// Seconds into the measured window to run --swap-cmd.
    #[arg(long, requires = "swap_cmd")]
    pub swap_at: Option<f64>,
    /// Shell command doing a hot swap.
    #[arg(long)]
    pub swap_cmd: Option<String>,
    /// Seconds into the measured window to run --rollback-cmd.
    #[arg(long, requires = "rollback_cmd")]
    pub rollback_at: Option<f64>,
    /// Shell command doing a rollback.
    #[arg(long)]
    pub rollback_cmd: Option<String>,
    /// Connect and join only, send nothing; report server RSS per connection.
    #[arg(long)]
    pub idle: bool,
    /// Connections opened (and joined) per batch.
    #[arg(long, default_value_t = 500)]
    pub connect_batch: usize,
    /// WebSocket read buffer of each client.
    #[arg(long, default_value_t = 8192)]
    pub read_buffer: usize,
    /// WebSocket write buffer of each client.
    #[arg(long, default_value_t = 8192)]
    pub write_buffer: usize,
}

impl RunArgs {
    pub fn validate(&self) -> anyhow::Result<()> {
        if !self.addr.ip().is_loopback() {
            bail!(
                "refusing target {}: the load harness only drives loopback servers (127.0.0.0/8 or ::1)",
                self.addr
            );
        }
        if !(self.secs > 0.0 && self.secs <= MAX_SECS) {
            bail!("--secs must be in (0, {MAX_SECS}]");
        }
        for (name, v) in [("--warmup", self.warmup), ("--drain", self.drain)] {
            if !(0.0..=120.0).contains(&v) {
                bail!("{name} must be in [0, 120]");
            }
        }
        if self.clients == 0 || self.clients > MAX_CLIENTS {
            bail!("--clients must be in 1..={MAX_CLIENTS}");
        }
        if self.room_size == 0 {
            bail!("--room-size must be at least 1");
        }
        if !(self.rate.is_finite() && self.rate >= 0.0 && self.rate <= 1000.0) {
            bail!("--rate must be in [0, 1000]");
        }
        if self.target == Target::Colyseus && self.transport != Transport::Ws {
            bail!("colyseus is driven over ws only");
        }
        if self.source_ips == 0 || self.source_ips > 250 {
            bail!("--source-ips must be in 1..=250");
        }
        for at in [self.swap_at, self.rollback_at].into_iter().flatten() {
            if !(0.0..self.secs).contains(&at) {
                bail!(
                    "--swap-at/--rollback-at must fall inside the measured window (0..{})",
                    self.secs
                );
            }
        }
        Ok(())
    }
}

#[derive(Serialize, Debug, Clone, Default)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    fn of(h: &hdrhistogram::Histogram<u64>) -> Latency {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Latency {
            count: h.len(),
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: h.max() as f64 / 1000.0,
        }
    }
}

#[derive(Serialize, Debug, Clone, Default)]
pub struct ServerUsage {
    pub pid: u32,
    pub cpu_s: f64,
    /// Server CPU per delivered frame, in µs.
    pub cpu_us_per_delivered: f64,
    pub cpu_cores: f64,
    pub vm_hwm_kib: u64,
    pub max_rss_kib: u64,
    /// Idle runs: RSS before the first connection and after all joined.
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub rss_per_conn_kib: f64,
}

#[derive(Serialize, Debug, Clone, Default)]
pub struct HarnessUsage {
    pub threads: usize,
    pub cpu_s: f64,
    pub cores_used: f64,
    /// The harness used over 90% of its threads' cores: the numbers may
    /// show the generator's limit, not the server's.
    pub generator_bound: bool,
}

#[derive(Serialize, Debug, Clone, Default)]
pub struct MarkReport {
    pub label: String,
    pub at_s: f64,
    pub command: String,
    pub command_ok: bool,
    pub command_ms: f64,
    pub command_output: String,
    pub expected: u64,
    pub received: u64,
    pub lost: u64,
    pub latency: Latency,
}

#[derive(Serialize, Debug, Clone, Default)]
pub struct Report {
    pub label: String,
    pub target: String,
    pub transport: String,
    pub clients: usize,
    pub room_size: usize,
    pub rate_per_client: f64,
    pub payload_bytes: usize,
    pub idle: bool,
    pub secs: f64,
    pub offered_sends_per_s: f64,
    pub offered_deliveries_per_s: f64,
    pub sent: u64,
    pub sent_per_s: f64,
    /// Fewer than 90% of the offered sends went out (generator CPU or the
    /// server's backpressure held them back).
    pub behind_offered: bool,
    pub expected: u64,
    pub delivered: u64,
    pub delivered_per_s: f64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub foreign: u64,
    pub bad_payload: u64,
    pub disconnects: u64,
    pub swapped_frames: u64,
    pub errors: BTreeMap<String, u64>,
    pub latency: Latency,
    /// Latency of the frames sent in each second of the window, in order.
    pub latency_by_second: Vec<Latency>,
    /// Cores the server used in each second of the window (empty without
    /// `--server-pid`; `None` for a second the harness could not read on
    /// time).
    pub server_cores_by_second: Vec<Option<f64>>,
    /// Cores the harness itself used in each second of the window.
    pub harness_cores_by_second: Vec<Option<f64>>,
    /// When the server's process could no longer be read, if it could
    /// not: it exited during the window (its CPU figures stop there).
    pub server_exited: Option<String>,
    pub server: Option<ServerUsage>,
    pub harness: HarnessUsage,
    pub marks: Vec<MarkReport>,
    pub passed: bool,
    pub failures: Vec<String>,
}

/// One line of per-second figures, `-` for a second without one.
fn print_by_second(label: &str, values: impl Iterator<Item = Option<f64>>, decimals: usize) {
    let shown: Vec<_> = values
        .map(|v| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}")))
        .collect();
    println!("{label}: {}", shown.join(" "));
}

impl Report {
    pub const TABLE_HEADER: &str = "| label | target | clients | room | offered sends/s | offered deliv/s | sent/s | delivered/s | lost | dup | ooo | errors | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | server CPU s | CPU µs/frame | server peak RSS MiB | harness cores | result |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|";

    pub fn table_row(&self) -> String {
        let s = self.server.clone().unwrap_or_default();
        let errors: u64 = self.errors.values().sum();
        format!(
            "| {} | {}/{} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {:.2}{} | {} |",
            self.label,
            self.target,
            self.transport,
            self.clients,
            self.room_size,
            self.offered_sends_per_s,
            self.offered_deliveries_per_s,
            self.sent_per_s,
            self.delivered_per_s,
            self.lost,
            self.duplicated,
            self.out_of_order,
            errors + self.disconnects,
            self.latency.p50_ms,
            self.latency.p90_ms,
            self.latency.p99_ms,
            self.latency.p999_ms,
            self.latency.max_ms,
            self.server.as_ref().map_or("-".into(), |s| format!("{:.2}", s.cpu_s)),
            self.server
                .as_ref()
                .map_or("-".into(), |s| format!("{:.1}", s.cpu_us_per_delivered)),
            self.server.as_ref().map_or("-".into(), |_| format!(
                "{:.1}",
                s.vm_hwm_kib.max(s.max_rss_kib) as f64 / 1024.0
            )),
            self.harness.cores_used,
            if self.harness.generator_bound {
                " (generator-bound)"
            } else {
                ""
            },
            if self.passed { "ok" } else { "FAILED" },
        )
    }

    fn judge(&mut self) {
        let mut f = Vec::new();
        if let Some(when) = &self.server_exited {
            f.push(format!(
                "the server's process could not be read {when}: it exited (or `--server-pid` is wrong)"
            ));
        }
        if self.lost > 0 {
            f.push(format!("{} lost", self.lost));
        }
        if self.duplicated > 0 {
            f.push(format!("{} duplicated", self.duplicated));
        }
        if self.out_of_order > 0 {
            f.push(format!("{} out of order", self.out_of_order));
        }
        if self.foreign > 0 {
            f.push(format!("{} lines from another room", self.foreign));
        }
        if self.bad_payload > 0 {
            f.push(format!("{} unreadable payloads", self.bad_payload));
        }
        if self.disconnects > 0 {
            f.push(format!("{} connections dropped", self.disconnects));
        }
        for (code, n) in &self.errors {
            f.push(format!("{n} error frames {code}"));
        }
        for m in &self.marks {
            if !m.command_ok {
                f.push(format!("{} command failed: {}", m.label, m.command_output.trim()));
            }
        }
        if !self.idle && self.sent == 0 {
            f.push("nothing was sent in the measured window".into());
        }
        self.passed = f.is_empty();
        self.failures = f;
    }

    pub fn print(&self) {
        println!("{}", Self::TABLE_HEADER);
        println!("{}", self.table_row());
        if !self.idle && self.latency_by_second.len() > 1 {
            // A second with nothing delivered (a stall) is not 0 ms.
            let p99 = self.latency_by_second.iter().map(|l| (l.count > 0).then_some(l.p99_ms));
            print_by_second("p99 ms by second of sending", p99, 1);
            for (who, cores) in [
                ("server", &self.server_cores_by_second),
                ("harness", &self.harness_cores_by_second),
            ] {
                if !cores.is_empty() {
                    print_by_second(&format!("{who} cores used by second"), cores.iter().copied(), 2);
                }
            }
        }
        if let Some(s) = &self.server
            && self.idle
        {
            println!(
                "idle: server RSS {} KiB before, {} KiB after {} joined connections: {:.1} KiB per connection",
                s.rss_before_kib, s.rss_after_kib, self.clients, s.rss_per_conn_kib
            );
        }
        for m in &self.marks {
            println!(
                "{} at {:.1}s ({}, {:.0} ms): next 1 s of sends: p99 {:.2} ms, max {:.2} ms, expected {}, received {}, lost {}",
                m.label,
                m.at_s,
                if m.command_ok { "ok" } else { "FAILED" },
                m.command_ms,
                m.latency.p99_ms,
                m.latency.max_ms,
                m.expected,
                m.received,
                m.lost
            );
        }
        if self.behind_offered {
            println!(
                "note: sent {:.0}/s of {:.0}/s offered (generator limit or server backpressure)",
                self.sent_per_s, self.offered_sends_per_s
            );
        }
        if self.swapped_frames > 0 {
            println!("swapped frames received: {}", self.swapped_frames);
        }
        if !self.passed {
            println!("FAILED: {}", self.failures.join("; "));
        }
    }
}

/// Connected, joined clients and the channel that steers them.
pub struct Fleet {
    pub setup: Arc<Setup>,
    plans: watch::Sender<Plan>,
    tasks: tokio::task::JoinSet<()>,
    rss_before_kib: u64,
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

impl Fleet {
    /// Connects every client in batches and waits for all to have joined.
    pub async fn connect(args: &RunArgs) -> anyhow::Result<Fleet> {
        args.validate()?;
        let limit = procfs::raise_nofile(args.clients as u64 + 1024);
        if limit < args.clients as u64 + 64 {
            bail!(
                "open-file limit {limit} is too low for {} clients (ulimit -n)",
                args.clients
            );
        }
        let setup = Arc::new(Setup {
            target: args.target,
            transport: args.transport,
            addr: args.addr,
            game: args.game.clone(),
            room_size: args.room_size,
            clients: args.clients,
            payload_bytes: args.payload_bytes,
            source_ips: args.source_ips,
            read_buffer: args.read_buffer,
            write_buffer: args.write_buffer,
            epoch: Instant::now(),
        });
        let rss_before_kib = args
            .server_pid
            .and_then(|p| procfs::mem(p).ok())
            .map_or(0, |m| m.vm_rss_kib);
        let now = Instant::now();
        let (plans, _) = watch::channel(Plan {
            rate: 0.0,
            send_from: now,
            send_until: now,
            stats: Arc::new(Stats::new(Window::new(0, 0, 1), vec![])),
            stop: false,
        });
        let mut tasks = tokio::task::JoinSet::new();
        let (joined_tx, mut joined_rx) = mpsc::unbounded_channel();
        let batch = args.connect_batch.max(1);
        let started = Instant::now();
        let mut fleet = Fleet {
            setup: setup.clone(),
            plans,
            tasks: tokio::task::JoinSet::new(),
            rss_before_kib,
        };
        for first in (0..args.clients).step_by(batch) {
            let last = (first + batch).min(args.clients);
            for idx in first..last {
                tasks.spawn(client::run_client(
                    setup.clone(),
                    idx,
                    joined_tx.clone(),
                    fleet.plans.subscribe(),
                ));
            }
            for _ in first..last {
                match tokio::time::timeout(Duration::from_secs(60), joined_rx.recv()).await {
                    Ok(Some(Ok(()))) => {}
                    Ok(Some(Err(e))) => {
                        fleet.tasks = tasks;
                        fleet.stop().await;
                        return Err(e.context("a client could not connect and join"));
                    }
                    Ok(None) | Err(_) => {
                        fleet.tasks = tasks;
                        fleet.stop().await;
                        bail!("clients did not join within 60 s of their batch");
                    }
                }
            }
        }
        eprintln!(
            "{} clients joined in {:.2} s ({} TCP connections reopened for want of a welcome)",
            args.clients,
            started.elapsed().as_secs_f64(),
            crate::client::REOPENED.load(std::sync::atomic::Ordering::Relaxed)
        );
        fleet.tasks = tasks;
        Ok(fleet)
    }

    pub async fn stop(&mut self) {
        let now = Instant::now();
        let stats = self.plans.borrow().stats.clone();
        self.plans.send_replace(Plan {
            rate: 0.0,
            send_from: now,
            send_until: now,
            stats,
            stop: true,
        });
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        self.tasks.abort_all();
    }

    /// One measured window at `rate` messages/s per client: warm-up, window,
    /// drain; then the report.
    pub async fn window(&mut self, args: &RunArgs, rate: f64) -> anyhow::Result<Report> {
        let setup = self.setup.clone();
        let start = Instant::now();
        let win_start = start + secs(args.warmup);
        let win_end = win_start + secs(args.secs);
        let ns = |t: Instant| t.duration_since(setup.epoch).as_nanos() as u64;
        let shards = 16;
        let mut commands = Vec::new();
        let mut marks = Vec::new();
        for (label, at, cmd) in [
            ("swap", args.swap_at, &args.swap_cmd),
            ("rollback", args.rollback_at, &args.rollback_cmd),
        ] {
            if let (Some(at), Some(cmd)) = (at, cmd) {
                let t = win_start + secs(at);
                marks.push((label.to_owned(), Window::new(ns(t), ns(t + secs(1.0)), shards)));
                commands.push((label, at, t, cmd.clone()));
            }
        }
        let stats = Arc::new(Stats::new(Window::timed(ns(win_start), ns(win_end), shards), marks));
        self.plans.send_replace(Plan {
            rate: if args.idle { 0.0 } else { rate },
            send_from: start,
            send_until: win_end,
            stats: stats.clone(),
            stop: false,
        });
        let command_tasks: Vec<_> = commands
            .into_iter()
            .map(|(label, at, t, cmd)| {
                tokio::spawn(async move {
                    tokio::time::sleep_until(t.into()).await;
                    let began = Instant::now();
                    let out = tokio::process::Command::new("sh").arg("-c").arg(&cmd).output().await;
                    let ms = began.elapsed().as_secs_f64() * 1000.0;
                    let (ok, output) = match out {
                        Ok(o) => (
                            o.status.success(),
                            format!(
                                "{}{}",
                                String::from_utf8_lossy(&o.stdout),
                                String::from_utf8_lossy(&o.stderr)
                            ),
                        ),
                        Err(e) => (false, e.to_string()),
                    };
                    eprintln!(
                        "{label} at {at:.1}s: {} in {ms:.0} ms: {}",
                        if ok { "ok" } else { "FAILED" },
                        output.trim()
                    );
                    (label, at, cmd, ok, ms, output)
                })
            })
            .collect();

        // RSS sampler over the whole run.
        let pid = args.server_pid;
        let (sampler_stop, mut sampler_rx) = watch::channel(false);
        let sampler = tokio::spawn(async move {
            let mut max = 0;
            let Some(pid) = pid else { return 0 };
            loop {
                if let Ok(m) = procfs::mem(pid) {
                    max = max.max(m.vm_rss_kib);
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    _ = sampler_rx.changed() => return max,
                }
            }
        });

        tokio::time::sleep_until(win_start.into()).await;
        let t0 = Instant::now();
        // CPU read at the window's start, at each second of it and at its
        // end: the totals, and how busy each second was. A slow second's
        // p99 beside its CPU tells a saturated server from a stalled
        // generator.
        let (mut server_cpu, mut self_cpu) = (Vec::new(), Vec::new());
        // A server whose /proc entry is gone (it exited, and is not our
        // child kept as a zombie) fails the run; the report still says
        // what the clients saw.
        let mut server_exited = None;
        let mut next = win_start;
        loop {
            let at = t0.elapsed().as_secs_f64();
            if let Some(p) = pid
                && server_exited.is_none()
            {
                match procfs::cpu_seconds(Some(p)) {
                    Ok(cpu) => server_cpu.push((at, cpu)),
                    Err(e) => server_exited = Some(format!("{at:.1} s into the window ({e:#})")),
                }
            }
            self_cpu.push((at, procfs::cpu_seconds(None)?));
            if next >= win_end {
                break;
            }
            next = (next + Duration::from_secs(1)).min(win_end);
            tokio::time::sleep_until(next.into()).await;
        }
        let measured = t0.elapsed().as_secs_f64();
        let server_cpu0 = server_cpu.first().map(|r| r.1);
        let server_cpu1 = server_cpu.last().map(|r| r.1);
        let self_cpu0 = self_cpu.first().map_or(0.0, |r| r.1);
        let self_cpu1 = self_cpu.last().map_or(0.0, |r| r.1);
        let settled_mem = if args.idle {
            pid.and_then(|p| procfs::mem(p).ok())
        } else {
            None
        };
        tokio::time::sleep_until((win_end + secs(args.drain)).into()).await;
        let _ = sampler_stop.send(true);
        let max_rss = sampler.await.unwrap_or(0);

        let mut marks = Vec::new();
        for t in command_tasks {
            let (label, at, cmd, ok, ms, output) = t.await.context("command task")?;
            let w = &stats.marks.iter().find(|(l, _)| l == label).expect("mark").1;
            marks.push(MarkReport {
                label: label.to_owned(),
                at_s: at,
                command: cmd,
                command_ok: ok,
                command_ms: ms,
                command_output: output.chars().take(2000).collect(),
                expected: w.expected.load(Relaxed),
                received: w.fresh.load(Relaxed),
                lost: w.lost(),
                latency: Latency::of(&w.histogram()),
            });
        }

        let w = &stats.window;
        let delivered = w.fresh.load(Relaxed);
        let server = pid.map(|pid| {
            let cpu_s = server_cpu1.unwrap_or(0.0) - server_cpu0.unwrap_or(0.0);
            let mem = procfs::mem(pid).unwrap_or_default();
            let after = settled_mem.map_or(0, |m| m.vm_rss_kib);
            ServerUsage {
                pid,
                cpu_s,
                cpu_us_per_delivered: if delivered > 0 {
                    cpu_s * 1e6 / delivered as f64
                } else {
                    0.0
                },
                cpu_cores: cpu_s / measured,
                vm_hwm_kib: mem.vm_hwm_kib,
                max_rss_kib: max_rss.max(mem.vm_rss_kib),
                rss_before_kib: if args.idle { self.rss_before_kib } else { 0 },
                rss_after_kib: after,
                rss_per_conn_kib: if args.idle {
                    after.saturating_sub(self.rss_before_kib) as f64 / args.clients as f64
                } else {
                    0.0
                },
            }
        });
        let threads = tokio::runtime::Handle::current().metrics().num_workers();
        let harness_cpu = self_cpu1 - self_cpu0;
        let cores_used = harness_cpu / measured;
        let offered_sends = if args.idle { 0.0 } else { rate * args.clients as f64 };
        let offered_deliveries: f64 = if args.idle {
            0.0
        } else {
            (0..args.clients)
                .step_by(args.room_size)
                .map(|b| setup.room_of(b).1.pow(2) as f64 * rate)
                .sum()
        };
        let mut report = Report {
            label: args.label.clone(),
            target: format!("{:?}", args.target).to_lowercase(),
            transport: format!("{:?}", args.transport).to_lowercase(),
            clients: args.clients,
            room_size: args.room_size,
            rate_per_client: if args.idle { 0.0 } else { rate },
            payload_bytes: args.payload_bytes,
            idle: args.idle,
            secs: args.secs,
            offered_sends_per_s: offered_sends,
            offered_deliveries_per_s: offered_deliveries,
            sent: w.sent.load(Relaxed),
            sent_per_s: w.sent.load(Relaxed) as f64 / args.secs,
            behind_offered: w.sent.load(Relaxed) as f64 / args.secs < 0.9 * offered_sends,
            expected: w.expected.load(Relaxed),
            delivered,
            delivered_per_s: delivered as f64 / args.secs,
            lost: w.lost(),
            duplicated: stats.duplicated.load(Relaxed),
            out_of_order: stats.out_of_order.load(Relaxed),
            foreign: stats.foreign.load(Relaxed),
            bad_payload: stats.bad_payload.load(Relaxed),
            disconnects: stats.disconnects.load(Relaxed),
            swapped_frames: stats.swapped.load(Relaxed),
            errors: stats.errors(),
            latency: Latency::of(&w.histogram()),
            latency_by_second: w.by_second(Latency::of),
            server_cores_by_second: procfs::cores_between(&server_cpu),
            server_exited,
            harness_cores_by_second: procfs::cores_between(&self_cpu),
            server,
            harness: HarnessUsage {
                threads,
                cpu_s: harness_cpu,
                cores_used,
                generator_bound: cores_used > 0.9 * threads as f64,
            },
            marks,
            passed: false,
            failures: vec![],
        };
        report.judge();
        Ok(report)
    }
}

/// `run`: connect, one window, stop.
pub async fn run(args: &RunArgs) -> anyhow::Result<Report> {
    let mut fleet = Fleet::connect(args).await?;
    let r = fleet.window(args, args.rate).await;
    fleet.stop().await;
    r
}

#[derive(clap::Args, Debug, Clone)]
pub struct StepArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// First step's messages/s per client.
    #[arg(long, default_value_t = 1.0)]
    pub start_rate: f64,
    /// Rate multiplier between steps.
    #[arg(long, default_value_t = 1.5)]
    pub factor: f64,
    /// Most steps to run.
    #[arg(long, default_value_t = 10)]
    pub max_steps: usize,
    /// A step fails once its p99 is above this (ms).
    #[arg(long, default_value_t = 50.0)]
    pub max_p99_ms: f64,
}

#[derive(Serialize, Debug, Clone, Default)]
pub struct StepReport {
    pub steps: Vec<Report>,
    /// The highest step that passed.
    pub best: Option<Report>,
    /// The harness's own error that ended the climb early (/proc it could
    /// not read, a swap or rollback command's task that failed); the steps
    /// before it are kept above.
    pub error: Option<String>,
}

/// `step`: the same connections, windows at rising rates until one fails.
/// A window that errors ends the climb with the steps so far kept, and
/// the error in [`StepReport::error`].
pub async fn step(args: &StepArgs) -> anyhow::Result<StepReport> {
    if !(args.factor > 1.0 && args.max_steps >= 1 && args.max_steps <= 30 && args.start_rate > 0.0) {
        bail!("--factor must be > 1, --max-steps in 1..=30, --start-rate > 0");
    }
    let mut fleet = Fleet::connect(&args.run).await?;
    println!("{}", Report::TABLE_HEADER);
    let out = climb(args, &mut fleet).await;
    fleet.stop().await;
    Ok(out)
}

/// What measures one step: the fleet of clients (a stand-in in tests).
trait Measure {
    async fn window(&mut self, run: &RunArgs, rate: f64) -> anyhow::Result<Report>;
}

impl Measure for Fleet {
    async fn window(&mut self, run: &RunArgs, rate: f64) -> anyhow::Result<Report> {
        Fleet::window(self, run, rate).await
    }
}

/// The steps themselves, each window measured by `measure`.
async fn climb(args: &StepArgs, measure: &mut impl Measure) -> StepReport {
    let mut out = StepReport::default();
    let mut rate = args.start_rate;
    for i in 0..args.max_steps {
        if rate > 1000.0 {
            break;
        }
        let mut run = args.run.clone();
        run.label = format!("{} step {} @{:.3}/s", args.run.label, i + 1, rate)
            .trim()
            .to_owned();
        let mut r = match measure.window(&run, rate).await {
            Ok(r) => r,
            // The caller reports it (`step` exits with it, `compare`
            // fails the round with it).
            Err(e) => {
                out.error = Some(format!("{e:#}"));
                break;
            }
        };
        if r.latency.p99_ms > args.max_p99_ms {
            r.failures
                .push(format!("p99 {:.2} ms > {} ms", r.latency.p99_ms, args.max_p99_ms));
            r.passed = false;
        }
        println!("{}", r.table_row());
        let passed = r.passed;
        out.steps.push(r.clone());
        if !passed {
            println!("stopped: {}", r.failures.join("; "));
            break;
        }
        out.best = Some(r);
        rate *= args.factor;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        run: RunArgs,
    }

    fn args(line: &str) -> RunArgs {
        T::parse_from(std::iter::once("t").chain(line.split_whitespace())).run
    }

    #[test]
    fn a_server_that_exits_in_the_window_fails_the_run() {
        let mut report = Report {
            sent: 10,
            ..Report::default()
        };
        report.judge();
        assert!(report.passed, "{:?}", report.failures);
        report.server_exited = Some("3.0 s into the window (reading /proc/1/stat)".into());
        report.judge();
        assert!(!report.passed);
        assert!(report.failures[0].contains("exited"), "{:?}", report.failures);
    }

    #[tokio::test]
    async fn a_harness_error_mid_climb_keeps_the_steps_before_it() {
        let step_args = StepArgs {
            run: args("--target native --addr 127.0.0.1:1 --secs 1"),
            start_rate: 1.0,
            factor: 2.0,
            max_steps: 10,
            max_p99_ms: 50.0,
        };
        /// Passes every step but the third, which errors.
        struct Fails3rd(Vec<f64>);
        impl Measure for Fails3rd {
            async fn window(&mut self, run: &RunArgs, rate: f64) -> anyhow::Result<Report> {
                self.0.push(rate);
                if self.0.len() == 3 {
                    anyhow::bail!("cannot read /proc/self/stat");
                }
                let mut r = Report {
                    label: run.label.clone(),
                    rate_per_client: rate,
                    sent: 10,
                    ..Report::default()
                };
                r.judge();
                Ok(r)
            }
        }
        let mut windows = Fails3rd(Vec::new());
        let out = climb(&step_args, &mut windows).await;
        assert_eq!(windows.0, [1.0, 2.0, 4.0]);
        assert_eq!(out.steps.len(), 2);
        assert_eq!(out.best.as_ref().map(|b| b.rate_per_client), Some(2.0));
        assert!(
            out.error.as_deref().is_some_and(|e| e.contains("/proc/self/stat")),
            "{:?}",
            out.error
        );
    }

    #[test]
    fn only_loopback_and_bounded_runs_are_accepted() {
        let ok = |extra: &str| args(&format!("--target native --secs 5 {extra}")).validate();
        assert!(ok("--addr 127.0.0.1:7700").is_ok());
        assert!(ok("--addr 127.3.2.1:7700").is_ok());
        assert!(ok("--addr [::1]:7700").is_ok());
        let e = ok("--addr 10.0.0.1:7700").unwrap_err().to_string();
        assert!(e.contains("loopback"), "{e}");
        assert!(ok("--addr 0.0.0.0:7700").is_err());
        assert!(ok("--addr 127.0.0.1:1 --clients 25001").is_err());
        assert!(ok("--addr 127.0.0.1:1 --swap-at 9 --swap-cmd true").is_err());
        assert!(
            args("--target native --addr 127.0.0.1:1 --secs 601")
                .validate()
                .is_err()
        );
        assert!(
            args("--target colyseus --transport tcp --addr 127.0.0.1:1 --secs 1")
                .validate()
                .is_err()
        );
    }
}
