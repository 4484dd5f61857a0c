//! The native baseline: a plain tokio-tungstenite + TCP chat server that
//! speaks exactly Respawn's frames for the `chat` game, so the load harness
//! drives it unchanged. It is meant as the practical native limit, not a
//! strawman: one task per connection, rooms in a shared map, each message's
//! `data` encoded once and only prefixed with the recipient's `seq`, a
//! bounded outbound queue per connection, and every queued frame written
//! before one flush.

#[path = "../wire.rs"]
mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Parser;
use futures_util::SinkExt;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

#[derive(Parser, Debug, Clone)]
#[command(about = "Native tokio-tungstenite chat server speaking Respawn's chat frames (load baseline)")]
struct Args {
    /// WebSocket listen address (127.0.0.1 only; port 0 picks one).
    #[arg(long)]
    ws: Option<SocketAddr>,
    /// TCP (newline-delimited JSON) listen address (127.0.0.1 only).
    #[arg(long)]
    tcp: Option<SocketAddr>,
    /// tungstenite read buffer size.
    #[arg(long, default_value_t = 8192)]
    read_buffer: usize,
    /// tungstenite write buffer size (frames are written out past it, or on flush).
    #[arg(long, default_value_t = 8192)]
    write_buffer: usize,
    /// tungstenite max write buffer size (a write past it fails).
    #[arg(long, default_value_t = 1 << 20)]
    max_write_buffer: usize,
    /// Largest accepted client frame.
    #[arg(long, default_value_t = 65536)]
    max_message_bytes: usize,
    /// Room frames queued per connection before it is closed as a slow consumer.
    #[arg(long, default_value_t = 256)]
    outbound_queue: usize,
    /// Tokio worker threads (default: the CPUs this process may run on).
    #[arg(long)]
    threads: Option<usize>,
}

/// One room frame body (the `data` of an `event`), shared by every recipient.
type Body = Arc<str>;

struct Member {
    id: u64,
    tx: mpsc::Sender<Body>,
}

#[derive(Default)]
struct Room {
    members: Mutex<Vec<Member>>,
}

struct Server {
    args: Args,
    ws_config: WebSocketConfig,
    next_id: AtomicU64,
    rooms: Mutex<HashMap<String, Arc<Room>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn check_loopback(addr: &SocketAddr) -> anyhow::Result<()> {
    if !addr.ip().is_loopback() {
        bail!("refusing to listen on {addr}: native-chat listens on loopback (127.0.0.1) only");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.ws.is_none() && args.tcp.is_none() {
        bail!("give --ws and/or --tcp");
    }
    for a in args.ws.iter().chain(args.tcp.iter()) {
        check_loopback(a)?;
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        rt.worker_threads(n.max(1));
    }
    rt.enable_all().build()?.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(args.read_buffer)
        .write_buffer_size(args.write_buffer)
        .max_write_buffer_size(args.max_write_buffer.max(args.write_buffer + args.max_message_bytes))
        .max_message_size(Some(4 * args.max_message_bytes.max(1 << 18)))
        .max_frame_size(Some(4 * args.max_message_bytes.max(1 << 18)));
    let server = Arc::new(Server {
        args: args.clone(),
        ws_config,
        next_id: AtomicU64::new(1),
        rooms: Mutex::new(HashMap::new()),
    });
    let mut tasks = Vec::new();
    for (kind, addr) in [("ws", args.ws), ("tcp", args.tcp)] {
        let Some(addr) = addr else { continue };
        // Respawn's default `net.listen_backlog`, set the way Respawn sets
        // it (tokio's `bind` fixes 128).
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr).with_context(|| format!("binding {kind} {addr}"))?;
        let listener = socket.listen(4096)?;
        println!("listening {kind} {}", listener.local_addr()?);
        let server = server.clone();
        let ws = kind == "ws";
        tasks.push(tokio::spawn(async move {
            loop {
                let (stream, _) = match listener.accept().await {
                    Ok(s) => s,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        eprintln!("accept: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let server = server.clone();
                tokio::spawn(async move {
                    let _ = stream.set_nodelay(true);
                    let io = if ws {
                        match tokio_tungstenite::accept_async_with_config(stream, Some(server.ws_config)).await {
                            Ok(ws) => Io::Ws(Box::new(ws)),
                            Err(_) => return,
                        }
                    } else {
                        let (rd, wr) = stream.into_split();
                        Io::Tcp {
                            rd,
                            buf: Vec::new(),
                            wr: BufWriter::with_capacity(server.args.write_buffer, wr),
                        }
                    };
                    Connection::new(server, io).run().await;
                });
            }
        }));
    }
    use std::io::Write;
    std::io::stdout().flush()?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = futures_util::future::join_all(tasks) => {}
    }
    Ok(())
}

enum Io {
    Ws(Box<WebSocketStream<TcpStream>>),
    Tcp {
        rd: OwnedReadHalf,
        buf: Vec<u8>,
        wr: BufWriter<OwnedWriteHalf>,
    },
}

impl Io {
    /// Reads what is available and appends whole frames to `out`; false at
    /// end of stream. Cancel-safe: nothing is lost if the future is dropped.
    async fn recv(&mut self, out: &mut Vec<String>, max: usize) -> anyhow::Result<bool> {
        match self {
            Io::Ws(ws) => wire::read_ws(ws, &mut |t| out.push(t)).await,
            Io::Tcp { rd, buf, .. } => {
                let open = wire::read_lines(rd, buf, &mut |l| out.push(l)).await?;
                if buf.len() > max {
                    bail!("line too long");
                }
                Ok(open)
            }
        }
    }

    /// Queues `frames` and flushes once.
    async fn write(&mut self, frames: impl IntoIterator<Item = String>) -> anyhow::Result<()> {
        match self {
            Io::Ws(ws) => {
                for f in frames {
                    ws.feed(Message::text(f)).await?;
                }
                ws.flush().await?;
            }
            Io::Tcp { wr, .. } => {
                for f in frames {
                    wr.write_all(f.as_bytes()).await?;
                    wr.write_all(b"\n").await?;
                }
                wr.flush().await?;
            }
        }
        Ok(())
    }

    async fn close(&mut self) {
        match self {
            Io::Ws(ws) => {
                let _ = (**ws).close(None).await;
            }
            Io::Tcp { wr, .. } => {
                let _ = wr.shutdown().await;
            }
        }
    }
}

#[derive(Deserialize)]
struct Request {
    #[serde(rename = "type")]
    ty: String,
    game: Option<String>,
    room: Option<String>,
    name: Option<String>,
    data: Option<serde_json::Value>,
    #[serde(rename = "ref")]
    reference: Option<serde_json::Value>,
}

#[derive(Serialize)]
struct Said<'a> {
    #[serde(rename = "type")]
    ty: &'static str,
    id: u64,
    from: &'a str,
    text: &'a str,
    at: u64,
}

struct Seat {
    room: Arc<Room>,
    room_name: String,
    name: String,
    rx: mpsc::Receiver<Body>,
}

struct Connection {
    server: Arc<Server>,
    io: Io,
    id: u64,
    seq: u64,
    seat: Option<Seat>,
}

enum Step {
    Frames(anyhow::Result<bool>),
    Room(Option<Body>),
}

impl Connection {
    fn new(server: Arc<Server>, io: Io) -> Self {
        let id = server.next_id.fetch_add(1, Ordering::Relaxed);
        Connection {
            server,
            io,
            id,
            seq: 0,
            seat: None,
        }
    }

    async fn run(mut self) {
        let welcome = format!(
            r#"{{"type":"welcome","protocol":1,"server":"native-chat","player":{},"resume":"x","idle_timeout_ms":60000,"resume_grace_ms":30000}}"#,
            self.id
        );
        if self.io.write([welcome]).await.is_ok() {
            let _ = self.serve().await;
        }
        self.leave_room();
        self.io.close().await;
    }

    async fn serve(&mut self) -> anyhow::Result<()> {
        let max = self.server.args.max_message_bytes;
        let mut inbound = Vec::new();
        let mut outbound = Vec::new();
        loop {
            let step = {
                let io = &mut self.io;
                let inbound = &mut inbound;
                match self.seat.as_mut() {
                    Some(seat) => tokio::select! {
                        r = io.recv(inbound, max) => Step::Frames(r),
                        b = seat.rx.recv() => Step::Room(b),
                    },
                    None => Step::Frames(io.recv(inbound, max).await),
                }
            };
            match step {
                Step::Frames(r) => {
                    if !r? {
                        return Ok(());
                    }
                    for frame in std::mem::take(&mut inbound) {
                        self.handle(&frame, max, &mut outbound);
                    }
                    if !outbound.is_empty() {
                        self.io.write(outbound.drain(..)).await?;
                    }
                }
                Step::Room(None) => {
                    // Dropped from the room by a broadcaster: too slow.
                    self.seat = None;
                    let e = r#"{"type":"error","code":"slow_consumer","message":"too many frames queued"}"#;
                    self.io.write([e.to_owned()]).await?;
                    return Ok(());
                }
                Step::Room(Some(body)) => {
                    self.push_room_frame(&body, &mut outbound);
                    if let Some(seat) = self.seat.as_mut() {
                        while outbound.len() < 256 {
                            match seat.rx.try_recv() {
                                Ok(b) => {
                                    self.seq += 1;
                                    outbound.push(room_frame(self.seq, &b));
                                }
                                Err(_) => break,
                            }
                        }
                    }
                    self.io.write(outbound.drain(..)).await?;
                }
            }
        }
    }

    fn push_room_frame(&mut self, body: &str, out: &mut Vec<String>) {
        self.seq += 1;
        out.push(room_frame(self.seq, body));
    }

    fn handle(&mut self, frame: &str, max: usize, out: &mut Vec<String>) {
        if frame.len() > max {
            out.push(error("message_too_large", "frame too large", None));
            return;
        }
        let req: Request = match serde_json::from_str(frame) {
            Ok(r) => r,
            Err(e) if e.is_data() => {
                out.push(error("bad_request", "not a request", None));
                return;
            }
            Err(_) => {
                out.push(error("invalid_json", "not JSON", None));
                return;
            }
        };
        let r = req.reference.as_ref();
        match req.ty.as_str() {
            "ping" => out.push(r#"{"type":"pong"}"#.to_owned()),
            "pong" => {}
            "join" => {
                if self.seat.is_some() {
                    return out.push(error("already_joined", "already in a room", r));
                }
                if req.game.as_deref() != Some("chat") {
                    return out.push(error("unknown_game", "loaded games: chat", r));
                }
                let room_name = req.room.unwrap_or_else(|| "lobby".to_owned());
                let name = req.name.unwrap_or_default();
                if name.is_empty() || name.chars().count() > 32 || name.chars().any(char::is_control) {
                    return out.push(error("invalid_name", "bad name", r));
                }
                if room_name.is_empty()
                    || room_name.len() > 64
                    || !room_name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                {
                    return out.push(error("invalid_room", "bad room", r));
                }
                let (tx, rx) = mpsc::channel(self.server.args.outbound_queue.max(1));
                let room = {
                    let mut rooms = lock(&self.server.rooms);
                    let room = rooms.entry(room_name.clone()).or_default().clone();
                    lock(&room.members).push(Member { id: self.id, tx });
                    room
                };
                out.push(
                    serde_json::json!({"type":"joined","game":"chat","room":room_name,"player":self.id,"version":"native"})
                        .to_string(),
                );
                self.push_room_frame(r#"{"type":"welcome","members":[],"history":[]}"#, out);
                self.seat = Some(Seat {
                    room,
                    room_name,
                    name,
                    rx,
                });
            }
            "message" => {
                let Some(seat) = self.seat.as_ref() else {
                    return out.push(error("not_joined", "join a room first", r));
                };
                let Some(text) = req.data.as_ref().and_then(|d| d.get("say")).and_then(|s| s.as_str()) else {
                    return out.push(error("rejected", "say something", r));
                };
                let text = text.trim();
                if text.is_empty() || text.chars().count() > 500 {
                    return out.push(error("rejected", "empty or too long", r));
                }
                let said = Said {
                    ty: "said",
                    id: self.id,
                    from: &seat.name,
                    text,
                    at: now_ms(),
                };
                let body: Body = match serde_json::to_string(&said) {
                    Ok(s) => s.into(),
                    Err(_) => return,
                };
                broadcast(&seat.room, &body);
                if let Some(r) = r {
                    self.seq += 1;
                    out.push(format!(r#"{{"seq":{},"type":"ack","ref":{r}}}"#, self.seq));
                }
            }
            "leave" => {
                if self.seat.is_none() {
                    return out.push(error("not_joined", "not in a room", r));
                }
                self.leave_room();
                if let Some(mut seat) = self.seat.take() {
                    while let Ok(b) = seat.rx.try_recv() {
                        self.seq += 1;
                        out.push(room_frame(self.seq, &b));
                    }
                }
                out.push(r#"{"type":"left"}"#.to_owned());
            }
            _ => out.push(error("bad_request", "unknown type", r)),
        }
    }

    /// Takes this connection out of its room (the seat stays, to drain it).
    fn leave_room(&mut self) {
        let Some(seat) = self.seat.as_ref() else { return };
        let mut rooms = lock(&self.server.rooms);
        let mut members = lock(&seat.room.members);
        members.retain(|m| m.id != self.id);
        if members.is_empty() && rooms.get(&seat.room_name).is_some_and(|r| Arc::ptr_eq(r, &seat.room)) {
            rooms.remove(&seat.room_name);
        }
    }
}

/// Hands `body` to every member; a member whose queue is full is dropped
/// from the room (its connection then closes with `slow_consumer`).
fn broadcast(room: &Room, body: &Body) {
    let mut members = lock(&room.members);
    let mut slow = Vec::new();
    for m in members.iter() {
        if let Err(mpsc::error::TrySendError::Full(_)) = m.tx.try_send(body.clone()) {
            slow.push(m.id);
        }
    }
    if !slow.is_empty() {
        members.retain(|m| !slow.contains(&m.id));
    }
}

fn room_frame(seq: u64, body: &str) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(body.len() + 40);
    s.push_str(r#"{"seq":"#);
    let _ = write!(s, "{seq}");
    s.push_str(r#","type":"event","data":"#);
    s.push_str(body);
    s.push('}');
    s
}

fn error(code: &str, message: &str, reference: Option<&serde_json::Value>) -> String {
    let mut v = serde_json::json!({"type":"error","code":code,"message":message});
    if let Some(r) = reference {
        v["ref"] = r.clone();
    }
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_frames_prefix_the_seq_to_the_shared_body() {
        let body = r#"{"type":"said","id":3,"from":"a","text":"hi","at":5}"#;
        let f = room_frame(7, body);
        assert_eq!(
            f,
            r#"{"seq":7,"type":"event","data":{"type":"said","id":3,"from":"a","text":"hi","at":5}}"#
        );
        let v: serde_json::Value = serde_json::from_str(&f).unwrap();
        assert_eq!(v["data"]["text"], "hi");
    }

    #[test]
    fn only_loopback_is_served() {
        assert!(check_loopback(&"127.0.0.1:0".parse().unwrap()).is_ok());
        assert!(check_loopback(&"0.0.0.0:80".parse().unwrap()).is_err());
    }
}
