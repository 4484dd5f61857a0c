//! One simulated player: connects, joins its room, then sends chat lines at
//! the planned rate while accounting every line it receives.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::SinkExt;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::colyseus::ColyseusConn;
use crate::proto;
use crate::stats::{Stats, Tracker};
use crate::wire;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Respawn,
    Native,
    Colyseus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Ws,
    Tcp,
}

/// What every client shares.
pub struct Setup {
    pub target: Target,
    pub transport: Transport,
    pub addr: SocketAddr,
    pub game: String,
    pub room_size: usize,
    pub clients: usize,
    pub payload_bytes: usize,
    pub source_ips: u8,
    pub read_buffer: usize,
    pub write_buffer: usize,
    pub epoch: Instant,
}

impl Setup {
    pub fn room_of(&self, idx: usize) -> (usize, usize) {
        let base = idx / self.room_size * self.room_size;
        (base, self.room_size.min(self.clients - base))
    }

    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn local_ip(&self, idx: usize) -> Option<IpAddr> {
        if self.source_ips <= 1 || !self.addr.is_ipv4() {
            return None;
        }
        Some(IpAddr::V4(Ipv4Addr::new(
            127,
            0,
            0,
            1 + (idx % self.source_ips as usize) as u8,
        )))
    }
}

/// What the clients are told to do now.
#[derive(Clone)]
pub struct Plan {
    /// Messages per second per client (0: send nothing).
    pub rate: f64,
    pub send_from: Instant,
    pub send_until: Instant,
    pub stats: Arc<Stats>,
    /// Close the connection and end.
    pub stop: bool,
}

enum Conn {
    Ws(Box<WebSocketStream<TcpStream>>),
    Tcp {
        rd: OwnedReadHalf,
        buf: Vec<u8>,
        wr: BufWriter<OwnedWriteHalf>,
    },
    Colyseus(Box<ColyseusConn>),
}

/// A received frame: raw Respawn JSON, or a Colyseus chat line's text.
enum Incoming {
    Raw(String),
    Said(String),
}

async fn connect_tcp(setup: &Setup, idx: usize) -> anyhow::Result<TcpStream> {
    let socket = if setup.addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = setup.local_ip(idx) {
        socket
            .bind(SocketAddr::new(ip, 0))
            .with_context(|| format!("binding {ip}"))?;
    }
    let stream = socket
        .connect(setup.addr)
        .await
        .with_context(|| format!("connecting to {}", setup.addr))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

impl Conn {
    async fn open(setup: &Setup, idx: usize, room: &str, name: &str) -> anyhow::Result<Conn> {
        Ok(match (setup.target, setup.transport) {
            (Target::Colyseus, _) => Conn::Colyseus(Box::new(
                ColyseusConn::join(setup.addr, room, name, setup.local_ip(idx)).await?,
            )),
            (_, Transport::Ws) => {
                let stream = connect_tcp(setup, idx).await?;
                let config = WebSocketConfig::default()
                    .read_buffer_size(setup.read_buffer)
                    .write_buffer_size(setup.write_buffer)
                    .max_write_buffer_size((setup.write_buffer * 4).max(1 << 20));
                let url = format!("ws://{}/", setup.addr);
                let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
                    .await
                    .context("WebSocket handshake")?;
                Conn::Ws(Box::new(ws))
            }
            (_, Transport::Tcp) => {
                let (rd, wr) = connect_tcp(setup, idx).await?.into_split();
                Conn::Tcp {
                    rd,
                    buf: Vec::new(),
                    wr: BufWriter::with_capacity(setup.write_buffer, wr),
                }
            }
        })
    }

    /// Appends what arrived to `out`; false once the connection closed.
    /// Cancel-safe (used in `select!`): nothing read is lost if dropped.
    async fn recv(&mut self, out: &mut Vec<Incoming>) -> anyhow::Result<bool> {
        match self {
            Conn::Ws(ws) => wire::read_ws(ws, &mut |t| out.push(Incoming::Raw(t))).await,
            Conn::Tcp { rd, buf, .. } => wire::read_lines(rd, buf, &mut |l| out.push(Incoming::Raw(l))).await,
            // `next_said` must be cancel-safe for this select! loop.
            Conn::Colyseus(c) => match c.next_said().await? {
                Some(text) => {
                    out.push(Incoming::Said(text));
                    Ok(true)
                }
                None => Ok(false),
            },
        }
    }

    async fn send_raw(&mut self, frame: String) -> anyhow::Result<()> {
        match self {
            Conn::Ws(ws) => ws.send(Message::text(frame)).await?,
            Conn::Tcp { wr, .. } => {
                wr.write_all(frame.as_bytes()).await?;
                wr.write_all(b"\n").await?;
                wr.flush().await?;
            }
            Conn::Colyseus(_) => bail!("raw frames are not sent to Colyseus"),
        }
        Ok(())
    }

    async fn say(&mut self, text: &str) -> anyhow::Result<()> {
        match self {
            Conn::Colyseus(c) => c.say(text).await,
            _ => self.send_raw(proto::say_frame(text)).await,
        }
    }

    async fn close(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            match self {
                Conn::Ws(ws) => {
                    let _ = tokio_tungstenite::WebSocketStream::close(ws, None).await;
                }
                Conn::Tcp { wr, .. } => {
                    let _ = wr.shutdown().await;
                }
                Conn::Colyseus(_) => {}
            }
        })
        .await;
    }
}

/// TCP connections opened again because no welcome came within 10 s
/// (reported with the join time, so a slow server is not hidden).
pub static REOPENED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Waits for a frame of type `want`; an `error` frame fails.
async fn expect(conn: &mut Conn, want: &str, what: &str) -> anyhow::Result<()> {
    expect_within(conn, want, what, 30).await
}

/// [`expect`] within `secs` seconds.
async fn expect_within(conn: &mut Conn, want: &str, what: &str, secs: u64) -> anyhow::Result<()> {
    let mut inbox = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        for item in inbox.drain(..) {
            if let Incoming::Raw(raw) = item {
                let Some(f) = proto::parse_frame(&raw) else {
                    bail!("{what}: unreadable frame {raw}")
                };
                if f.ty == want {
                    return Ok(());
                }
                if f.ty == "error" {
                    bail!("{what}: error frame {raw}");
                }
            }
        }
        match tokio::time::timeout_at(deadline, conn.recv(&mut inbox)).await {
            Err(_) => bail!("{what}: no {want} within {secs} s"),
            Ok(Err(e)) => return Err(e.context(what.to_owned())),
            Ok(Ok(false)) => bail!("{what}: connection closed before {want}"),
            Ok(Ok(true)) => {}
        }
    }
}

/// Small, fast, per-client PRNG (xorshift64*) for send jitter.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Connects and joins; then plays the plans it is given until told to stop.
/// `joined` is told once the client sits in its room.
pub async fn run_client(
    setup: Arc<Setup>,
    idx: usize,
    joined: tokio::sync::mpsc::UnboundedSender<anyhow::Result<()>>,
    mut plans: watch::Receiver<Plan>,
) {
    let (base, members) = setup.room_of(idx);
    let room = format!("load-{}", base / setup.room_size);
    let name = format!("c{idx}");
    let conn = async {
        // Opening is set-up, not the measured path: a connection refused
        // while thousands connect at once (a full accept backlog) is tried
        // again, twice. So is one the server never welcomes: over TCP the
        // server speaks first, and a connection whose last handshake
        // packet the kernel dropped from a full backlog (after a SYN
        // cookie) is open on this side only, silent for good.
        // (Over WebSocket the server has answered the handshake, so a
        // missing welcome is a slow server: waited for, not reopened.)
        let open = || async {
            let mut conn = Conn::open(&setup, idx, &room, &name).await?;
            match conn {
                Conn::Tcp { .. } => {
                    if let Err(e) = expect_within(&mut conn, "welcome", "connect", 10).await {
                        REOPENED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        return Err(e);
                    }
                }
                Conn::Colyseus(_) => {}
                _ => expect(&mut conn, "welcome", "connect").await?,
            }
            anyhow::Ok(conn)
        };
        let mut opened = open().await;
        for attempt in 1..3 {
            if opened.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            opened = open().await;
        }
        let mut conn = opened?;
        if !matches!(conn, Conn::Colyseus(_)) {
            conn.send_raw(proto::join_frame(&setup.game, &room, &name)).await?;
            expect(&mut conn, "joined", "join").await?;
        }
        anyhow::Ok(conn)
    }
    .await;
    let mut conn = match conn {
        Ok(c) => c,
        Err(e) => {
            let _ = joined.send(Err(e.context(format!("client {idx}"))));
            return;
        }
    };
    let _ = joined.send(Ok(()));
    drop(joined);

    let mut tracker = Tracker::new(base, members);
    let mut rng = Rng::new(idx as u64 + 1);
    let mut inbox = Vec::new();
    let mut n = 0u64;
    let mut plan = plans.borrow_and_update().clone();
    let mut next_send = None;
    let schedule = |plan: &Plan, rng: &mut Rng| {
        (plan.rate > 0.0 && !plan.stop).then(|| {
            let start = plan.send_from.max(Instant::now());
            start + Duration::from_secs_f64(rng.unit() / plan.rate)
        })
    };
    next_send = next_send.or_else(|| schedule(&plan, &mut rng));
    loop {
        if plan.stop {
            break;
        }
        let send_at = next_send.filter(|t| *t < plan.send_until);
        let sleep_until = tokio::time::Instant::from_std(send_at.unwrap_or(plan.send_until));
        tokio::select! {
            r = conn.recv(&mut inbox) => {
                let now = setup.now_ns();
                match r {
                    Ok(true) => {}
                    Ok(false) | Err(_) => {
                        plan.stats.disconnects.fetch_add(1, Relaxed);
                        return;
                    }
                }
                for item in inbox.drain(..) {
                    match item {
                        Incoming::Said(text) => plan.stats.on_said(idx, &mut tracker, &text, now),
                        Incoming::Raw(raw) => {
                            if handle_raw(&raw, &plan.stats, idx, &mut tracker, now) {
                                let _ = conn.send_raw(r#"{"type":"pong"}"#.to_owned()).await;
                            }
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(sleep_until), if send_at.is_some() => {
                n += 1;
                let t = setup.now_ns();
                let text = proto::encode_payload(idx, n, t, setup.payload_bytes);
                if conn.say(&text).await.is_err() {
                    plan.stats.disconnects.fetch_add(1, Relaxed);
                    return;
                }
                plan.stats.on_send(t, members as u64);
                let jitter = 0.5 + rng.unit();
                next_send = next_send.map(|s| {
                    let next = s + Duration::from_secs_f64(jitter / plan.rate);
                    // Fell behind (generator overloaded): do not burst to catch up.
                    next.max(Instant::now())
                });
            }
            changed = plans.changed() => {
                if changed.is_err() {
                    break;
                }
                plan = plans.borrow_and_update().clone();
                next_send = schedule(&plan, &mut rng);
            }
        }
    }
    conn.close().await;
}

/// Accounts one raw frame; true if it was a TCP `ping` to answer.
fn handle_raw(raw: &str, stats: &Stats, idx: usize, tracker: &mut Tracker, now: u64) -> bool {
    let Some(f) = proto::parse_frame(raw) else {
        stats.on_error("unreadable_frame");
        return false;
    };
    match f.ty.as_ref() {
        "event" => {
            if let Some(d) = f.data
                && d.ty.as_deref() == Some("said")
            {
                match d.text {
                    Some(text) => stats.on_said(idx, tracker, &text, now),
                    None => stats.on_error("said_without_text"),
                }
            }
        }
        "error" => stats.on_error(f.code.as_deref().unwrap_or("error_without_code")),
        "swapped" => {
            stats.swapped.fetch_add(1, Relaxed);
        }
        "ping" => return true,
        "pong" | "ack" | "joined" | "welcome" => {}
        // restarted, kicked, shutdown, left...: a healthy run sees none.
        other => stats.on_error(&format!("frame:{other}")),
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_are_consecutive_blocks_and_the_last_may_be_short() {
        let setup = Setup {
            target: Target::Native,
            transport: Transport::Tcp,
            addr: "127.0.0.1:1".parse().unwrap(),
            game: "chat".into(),
            room_size: 10,
            clients: 25,
            payload_bytes: 64,
            source_ips: 4,
            read_buffer: 8192,
            write_buffer: 8192,
            epoch: Instant::now(),
        };
        assert_eq!(setup.room_of(0), (0, 10));
        assert_eq!(setup.room_of(19), (10, 10));
        assert_eq!(setup.room_of(24), (20, 5));
        assert_eq!(setup.local_ip(5), Some("127.0.0.2".parse().unwrap()));
        let mut r = Rng::new(1);
        assert!((0..1000).map(|_| r.unit()).all(|x| (0.0..1.0).contains(&x)));
    }
}
