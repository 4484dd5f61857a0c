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
    /// A WebSocket URL, `ws://127.0.0.1:7700/` (or `wss://` with
    /// [`Options::tls`]).
    Ws(String),
    /// The TCP listener (TLS when [`Options::tls`] is set).
    Tcp(SocketAddr),
}

/// TLS to a host that serves it (`[tls]` in the host's config): the
/// certificates to trust and the name the host's certificate carries.
#[derive(Clone)]
pub struct Tls {
    connector: tokio_rustls::TlsConnector,
    server_name: String,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("server_name", &self.server_name).finish()
    }
}

impl Tls {
    /// Trusts the certificates of a PEM file (a private CA, or the host's
    /// own self-signed certificate) for a host named `server_name`.
    pub fn with_roots_pem(pem: &[u8], server_name: &str) -> std::io::Result<Self> {
        use rustls_pki_types::pem::PemObject;
        let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let mut roots = tokio_rustls::rustls::RootCertStore::empty();
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| invalid(format!("not a PEM certificate: {e}")))?;
            roots.add(cert).map_err(|e| invalid(e.to_string()))?;
        }
        let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            connector: tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)),
            server_name: server_name.to_owned(),
        })
    }

    pub(crate) fn connector(&self) -> &tokio_rustls::TlsConnector {
        &self.connector
    }

    pub(crate) fn server_name(&self) -> std::io::Result<rustls_pki_types::ServerName<'static>> {
        rustls_pki_types::ServerName::try_from(self.server_name.clone())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
    }
}

/// A future that fetches a fresh join ticket.
pub type TicketFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send>>;

/// Where join tickets come from: one ticket, or a function called before
/// every join (the first, and each rejoin after a seat was lost), since
/// tickets expire. A resume needs none.
#[derive(Clone)]
pub enum Ticket {
    /// The same ticket every time.
    Fixed(String),
    /// A fresh ticket each time, typically from the studio's account
    /// service.
    Fetch(std::sync::Arc<dyn Fn() -> TicketFuture + Send + Sync>),
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ticket::Fixed(_) => f.write_str("Ticket::Fixed(..)"),
            Ticket::Fetch(_) => f.write_str("Ticket::Fetch(..)"),
        }
    }
}

impl Ticket {
    async fn get(&self) -> Result<String, ClientError> {
        match self {
            Ticket::Fixed(t) => Ok(t.clone()),
            Ticket::Fetch(f) => f().await.map_err(ClientError::Ticket),
        }
    }
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
    /// TLS, for a `wss://` endpoint or a TCP listener that speaks it.
    pub tls: Option<Tls>,
    /// The join ticket, for a host that requires them.
    pub ticket: Option<Ticket>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            backoff: Backoff::default(),
            max_attempts: 20,
            handshake_timeout: Duration::from_secs(10),
            tls: None,
            ticket: None,
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
    /// The ticket function failed.
    #[error("fetching a join ticket: {0}")]
    Ticket(String),
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
        let mut conn = Conn::open(&endpoint, options.tls.as_ref()).await?;
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

    /// Joins a room; on success the client rejoins it after drops. With
    /// [`Options::ticket`] the join carries a ticket (and the host may
    /// answer `resumed`: this user's seat in the room, taken over from
    /// another connection).
    pub async fn join(&mut self, game: &str, room: &str, name: &str) -> Result<Value, ClientError> {
        let seat = Seat {
            game: game.into(),
            room: room.into(),
            name: name.into(),
        };
        let ticket = self.options.ticket.clone();
        let joined = Self::join_on(&mut self.conn, &seat, ticket.as_ref(), self.options.handshake_timeout).await?;
        self.seat = Some(seat);
        self.last_seq = 0;
        self.adopt_answer(&joined);
        Ok(joined)
    }

    async fn join_on(
        conn: &mut Conn,
        seat: &Seat,
        ticket: Option<&Ticket>,
        timeout: Duration,
    ) -> Result<Value, ClientError> {
        let mut join = json!({"type": "join", "game": seat.game, "room": seat.room, "name": seat.name});
        if let Some(ticket) = ticket {
            join["ticket"] = Value::String(ticket.get().await?);
        }
        conn.send(&join).await?;
        conn.expect_any_within(timeout, &["joined", "resumed"]).await
    }

    /// A join answered `resumed` plays as the seat it took over.
    fn adopt_answer(&mut self, answer: &Value) {
        if let Some(ServerFrame::Resumed { player, resume, .. }) = typed(answer) {
            self.player = player;
            self.token = resume;
        }
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
            let Ok(mut conn) = Conn::open(&self.endpoint, self.options.tls.as_ref()).await else {
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
                    let ticket = self.options.ticket.clone();
                    match Self::join_on(&mut conn, &seat, ticket.as_ref(), timeout).await {
                        Ok(joined) => {
                            self.adopt(conn, fresh);
                            self.adopt_answer(&joined);
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
