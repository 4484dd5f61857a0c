//! A client of the Respawn player protocol for bots, load generators and
//! tests: WebSocket or newline-delimited JSON over TCP, with the same
//! reconnect policy as the JavaScript client — exponential backoff with
//! full jitter, then `resume` with the seat's token, or a fresh `join` of
//! the same room when the seat is gone.
//!
//! ```no_run
//! # async fn demo() -> Result<(), respawn_client::ClientError> {
//! use respawn_client::{Client, Endpoint};
//! let mut c = Client::connect(Endpoint::Tcp("127.0.0.1:7701".parse().unwrap()), Default::default()).await?;
//! c.join("chat", "lobby", "bot").await?;
//! c.send(serde_json::json!({"type": "message", "data": {"say": "hi"}})).await?;
//! let frame = c.recv().await?;
//! # Ok(()) }
//! ```

mod backoff;
mod conn;

pub use backoff::Backoff;

use conn::Conn;
use rand::{Rng, SeedableRng, TryRng};
pub use respawn_protocol::{ErrorCode, ServerFrame};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

/// Where the host listens.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// A WebSocket URL, `ws://127.0.0.1:7700/`.
    Ws(String),
    /// The TCP listener.
    Tcp(SocketAddr),
}

/// How the client behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// Delays between reconnect attempts.
    pub backoff: Backoff,
    /// Attempts before [`ClientError::GaveUp`].
    pub max_attempts: u32,
    /// How long to wait for a frame the protocol promises (welcome,
    /// joined, resumed).
    pub handshake_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            backoff: Backoff::default(),
            max_attempts: 20,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// Why the client stopped.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket failed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// The host answered with an error frame.
    #[error("host refused ({code}): {frame}")]
    Refused {
        /// The error code.
        code: String,
        /// The whole frame.
        frame: Value,
    },
    /// The host broke the protocol (no welcome, invalid JSON...).
    #[error("protocol: {0}")]
    Protocol(String),
    /// Every reconnect attempt failed.
    #[error("gave up after {0} reconnect attempts")]
    GaveUp(u32),
}

/// The seat to get back after a reconnect.
#[derive(Debug, Clone)]
struct Seat {
    game: String,
    room: String,
    name: String,
}

/// A player connection that survives drops.
pub struct Client {
    endpoint: Endpoint,
    options: Options,
    conn: Conn,
    player: u64,
    token: String,
    seat: Option<Seat>,
    rng: rand::rngs::ChaCha8Rng,
    /// Frames read while handshaking that belong to the caller.
    pending: VecDeque<Value>,
    reconnects: u64,
    resumes: u64,
    /// The `seq` of the last room frame returned, for a resume to ask for
    /// what a dropped connection swallowed.
    last_seq: u64,
}

impl Client {
    /// Connects and reads the welcome.
    pub async fn connect(endpoint: Endpoint, options: Options) -> Result<Self, ClientError> {
        let mut seed = [0u8; 32];
        let _ = rand::rngs::SysRng.try_fill_bytes(&mut seed);
        let mut conn = Conn::open(&endpoint).await?;
        let welcome = conn.expect_within(options.handshake_timeout, "welcome").await?;
        let (player, token) = seat_of(&welcome)?;
        Ok(Self {
            player,
            token,
            endpoint,
            options,
            conn,
            seat: None,
            rng: rand::rngs::ChaCha8Rng::from_seed(seed),
            pending: VecDeque::new(),
            reconnects: 0,
            resumes: 0,
            last_seq: 0,
        })
    }

    /// This player's id (it changes only when a seat could not be resumed).
    pub fn player(&self) -> u64 {
        self.player
    }

    /// Reconnects made, and how many of them resumed the seat.
    pub fn reconnects(&self) -> (u64, u64) {
        (self.reconnects, self.resumes)
    }

    /// Joins a room; on success the client rejoins it after drops.
    pub async fn join(&mut self, game: &str, room: &str, name: &str) -> Result<Value, ClientError> {
        let seat = Seat {
            game: game.into(),
            room: room.into(),
            name: name.into(),
        };
        let joined = Self::join_on(&mut self.conn, &seat, self.options.handshake_timeout).await?;
        self.seat = Some(seat);
        self.last_seq = 0;
        Ok(joined)
    }

    async fn join_on(conn: &mut Conn, seat: &Seat, timeout: Duration) -> Result<Value, ClientError> {
        conn.send(&json!({"type": "join", "game": seat.game, "room": seat.room, "name": seat.name}))
            .await?;
        conn.expect_within(timeout, "joined").await
    }

    /// Sends a request. A connection that fails is replaced first (see
    /// [`Client::recv`]) and the request sent on the new one.
    pub async fn send(&mut self, request: Value) -> Result<(), ClientError> {
        if self.conn.send(&request).await.is_ok() {
            return Ok(());
        }
        let reconnected = self.reconnect().await?;
        // `recv` reports the reconnect before anything else.
        self.pending.push_front(reconnected);
        self.conn.send(&request).await.map_err(ClientError::Io)
    }

    /// The next frame from the host. Heartbeats are answered here and not
    /// returned. When the connection drops, the client reconnects, resumes
    /// its seat (or joins its room again) and returns a synthetic
    /// `{"type": "reconnected", "resumed": bool}` frame before anything
    /// else (with the host's `replayed` and `lost` counts after a resume).
    pub async fn recv(&mut self) -> Result<Value, ClientError> {
        if let Some(frame) = self.pending.pop_front() {
            return Ok(frame);
        }
        loop {
            match self.conn.recv().await {
                Some(Ok(frame)) => {
                    let typed = typed(&frame);
                    if typed == Some(ServerFrame::Ping) {
                        let _ = self.conn.send(&json!({"type": "pong"})).await;
                        continue;
                    }
                    if let Some(typed) = typed {
                        if let Some(seq) = typed.seq() {
                            self.last_seq = seq;
                        }
                        if typed.ends_seat() {
                            self.seat = None;
                        }
                    }
                    return Ok(frame);
                }
                Some(Err(_)) | None => return self.reconnect().await,
            }
        }
    }

    /// Cuts the connection without a goodbye, as a network failure would;
    /// the next [`Client::recv`] or [`Client::send`] reconnects.
    pub async fn drop_connection(&mut self) {
        self.conn.abort().await;
    }

    /// Leaves the room (at once, no grace period) and closes the
    /// connection.
    pub async fn close(mut self) {
        if self.seat.is_some() && self.conn.send(&json!({"type": "leave"})).await.is_ok() {
            let timeout = self.options.handshake_timeout;
            let _ = tokio::time::timeout(timeout, async {
                while let Some(Ok(frame)) = self.conn.recv().await {
                    if matches!(typed(&frame), Some(ServerFrame::Left { .. })) {
                        break;
                    }
                }
            })
            .await;
        }
        self.conn.close().await;
    }

    /// Reconnects with backoff, then resumes or rejoins.
    async fn reconnect(&mut self) -> Result<Value, ClientError> {
        for attempt in 0..self.options.max_attempts {
            let unit = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            tokio::time::sleep(self.options.backoff.delay(attempt, unit)).await;
            let Ok(mut conn) = Conn::open(&self.endpoint).await else {
                continue;
            };
            let timeout = self.options.handshake_timeout;
            let Ok(welcome) = conn.expect_within(timeout, "welcome").await else {
                continue;
            };
            let Ok(fresh) = seat_of(&welcome) else {
                continue;
            };
            let Some(seat) = self.seat.clone() else {
                self.adopt(conn, fresh);
                return Ok(json!({"type": "reconnected", "resumed": false}));
            };
            if conn
                .send(&json!({"type": "resume", "token": self.token, "last_seq": self.last_seq}))
                .await
                .is_err()
            {
                continue;
            }
            match conn.expect_within(timeout, "resumed").await {
                Ok(resumed) => {
                    let Some(ServerFrame::Resumed {
                        player,
                        resume,
                        replayed,
                        lost,
                        rewound,
                        ..
                    }) = typed(&resumed)
                    else {
                        return Err(ClientError::Protocol(format!(
                            "a `resumed` frame without its fields: {resumed}"
                        )));
                    };
                    self.conn = conn;
                    self.player = player;
                    self.token = resume;
                    // The host crashed and came back without the last
                    // frames seen (below `strict`): numbering goes on
                    // from its count.
                    self.last_seq = self.last_seq.saturating_sub(rewound);
                    self.reconnects += 1;
                    self.resumes += 1;
                    return Ok(json!({
                        "type": "reconnected",
                        "resumed": true,
                        "replayed": replayed,
                        "lost": lost,
                        "rewound": rewound,
                    }));
                }
                Err(ClientError::Refused { code, .. }) if code == "resume_failed" => {
                    match Self::join_on(&mut conn, &seat, timeout).await {
                        Ok(joined) => {
                            self.adopt(conn, fresh);
                            self.last_seq = 0;
                            self.pending.push_back(joined);
                            return Ok(json!({"type": "reconnected", "resumed": false}));
                        }
                        Err(ClientError::Refused { code, frame }) => {
                            self.seat = None;
                            return Err(ClientError::Refused { code, frame });
                        }
                        Err(_) => continue,
                    }
                }
                Err(_) => continue,
            }
        }
        Err(ClientError::GaveUp(self.options.max_attempts))
    }

    fn adopt(&mut self, conn: Conn, (player, token): (u64, String)) {
        self.conn = conn;
        self.player = player;
        self.token = token;
        self.reconnects += 1;
    }
}

/// A frame as the host's typed frame, if it is one (any frame of a host
/// speaking this protocol is; an unknown type reads as `Unknown`).
pub(crate) fn typed(frame: &Value) -> Option<ServerFrame> {
    ServerFrame::deserialize(frame).ok()
}

/// The player id and resume token a `welcome` gives.
fn seat_of(welcome: &Value) -> Result<(u64, String), ClientError> {
    match typed(welcome) {
        Some(ServerFrame::Welcome { player, resume, .. }) => Ok((player, resume)),
        _ => Err(ClientError::Protocol(format!(
            "a `welcome` without its fields: {welcome}"
        ))),
    }
}
