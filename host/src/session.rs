//! One player connection: reads requests, talks to at most one room at a
//! time, and writes the room's frames back. Transport-agnostic.

use crate::net::{Inbound, Transport};
use crate::protocol::{self, ErrorCode, ProtocolError, Request, ServerMsg};
use crate::room::{PlayerId, RoomHandle, Rooms, ToSession};
use bytes::Bytes;
use serde_json::value::RawValue;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long `leave` waits for the room to flush frames already queued for
/// the player before answering `left` anyway.
const LEAVE_FLUSH: Duration = Duration::from_secs(5);

/// The `server` string of `welcome`.
const SERVER: &str = concat!("respawn/", env!("CARGO_PKG_VERSION"));

/// The room a session is in.
struct Seat {
    room: RoomHandle,
    frames: mpsc::Receiver<ToSession>,
}

/// Whether the connection goes on after a step.
enum Flow {
    Continue,
    Close,
}

/// A player's connection and its place in a room.
pub struct Session<T: Transport> {
    transport: T,
    player: PlayerId,
    rooms: Arc<Rooms>,
    max_message_bytes: usize,
    seat: Option<Seat>,
}

impl<T: Transport> Session<T> {
    /// A session for a connected player.
    pub fn new(transport: T, player: PlayerId, rooms: Arc<Rooms>, max_message_bytes: usize) -> Self {
        Self {
            transport,
            player,
            rooms,
            max_message_bytes,
            seat: None,
        }
    }

    /// Serves the player until they disconnect; then leaves the room.
    pub async fn run(mut self) {
        let welcome = ServerMsg::Welcome {
            protocol: protocol::PROTOCOL_VERSION,
            server: SERVER,
            player: self.player,
        };
        if self.transport.send(welcome.encode()).await.is_ok() {
            while let Ok(Flow::Continue) = self.step().await {}
        }
        if let Some(seat) = self.seat.take() {
            let _ = seat.room.leave(self.player).await;
        }
        self.transport.close().await;
    }

    async fn step(&mut self) -> std::io::Result<Flow> {
        let from_room = async {
            match self.seat.as_mut() {
                Some(seat) => seat.frames.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            inbound = self.transport.recv() => match inbound {
                Some(Ok(frame)) => self.on_frame(frame).await,
                Some(Err(e)) => {
                    tracing::debug!(player = self.player, "connection error: {e}");
                    Ok(Flow::Close)
                }
                None => Ok(Flow::Close),
            },
            out = from_room => self.on_room_frame(out).await,
        }
    }

    async fn on_room_frame(&mut self, out: Option<ToSession>) -> std::io::Result<Flow> {
        match out {
            Some(ToSession::Frame(frame)) => self.transport.send(frame).await?,
            Some(ToSession::Removed(frame)) => {
                self.seat = None;
                self.transport.send(frame).await?;
            }
            None => {
                // The room dropped our queue without a last word: it was full.
                self.seat = None;
                let err = ProtocolError::new(
                    ErrorCode::SlowConsumer,
                    "too many undelivered frames; the connection is closed",
                );
                self.reply_error(&err, None, None).await?;
                return Ok(Flow::Close);
            }
        }
        Ok(Flow::Continue)
    }

    async fn on_frame(&mut self, frame: Inbound) -> std::io::Result<Flow> {
        let bytes = match frame {
            Inbound::Data(bytes) if bytes.len() <= self.max_message_bytes => bytes,
            Inbound::Data(_) | Inbound::TooLarge { .. } => {
                let err = ProtocolError::new(
                    ErrorCode::MessageTooLarge,
                    format!("messages are at most {} bytes", self.max_message_bytes),
                );
                self.reply_error(&err, None, None).await?;
                return Ok(Flow::Continue);
            }
        };
        match protocol::parse_request(&bytes) {
            Ok(request) => {
                let reference = request.reference().map(RawValue::to_owned);
                if let Err(refusal) = self.on_request(request, &bytes).await? {
                    self.reply_error(&refusal.error, refusal.reason.as_deref(), reference.as_deref())
                        .await?;
                }
            }
            Err(err) => self.reply_error(&err, None, None).await?,
        }
        Ok(Flow::Continue)
    }

    async fn reply_error(
        &mut self,
        err: &ProtocolError,
        reason: Option<&str>,
        reference: Option<&RawValue>,
    ) -> std::io::Result<()> {
        self.transport.send(protocol::error_frame(err, reason, reference)).await
    }

    async fn on_request(&mut self, request: Request<'_>, frame: &Bytes) -> std::io::Result<Result<(), Refusal>> {
        match request {
            Request::Ping { reference } => {
                self.transport.send(ServerMsg::Pong { reference }.encode()).await?;
            }
            Request::Join {
                game,
                room,
                name,
                reference,
            } => {
                if self.seat.is_some() {
                    return Ok(Err(Refusal::new(
                        ErrorCode::AlreadyJoined,
                        "already in a room; leave it first",
                    )));
                }
                match self.rooms.join(&game, &room, self.player, &name).await {
                    Ok((handle, joined, frames)) => {
                        self.seat = Some(Seat { room: handle, frames });
                        let msg = ServerMsg::Joined {
                            game: &game,
                            room: &room,
                            player: self.player,
                            version: &joined.version,
                            reference,
                        };
                        self.transport.send(msg.encode()).await?;
                    }
                    Err(e) => {
                        let (error, reason) = e.to_protocol();
                        return Ok(Err(Refusal {
                            error,
                            reason: reason.map(str::to_owned),
                        }));
                    }
                }
            }
            Request::Message { data, reference } => {
                let Some(seat) = &self.seat else {
                    return Ok(Err(Refusal::new(ErrorCode::NotJoined, "join a room first")));
                };
                let payload = subslice(frame, data.get());
                if seat
                    .room
                    .message(self.player, payload, reference.map(RawValue::to_owned))
                    .await
                    .is_err()
                {
                    self.seat = None;
                    return Ok(Err(Refusal::new(ErrorCode::RoomClosed, "the room has closed")));
                }
            }
            Request::Leave { reference } => {
                let Some(mut seat) = self.seat.take() else {
                    return Ok(Err(Refusal::new(ErrorCode::NotJoined, "not in a room")));
                };
                if seat.room.leave(self.player).await.is_ok() {
                    // Frames the room queued before it saw the leave still
                    // belong to the player; the queue ends once the room
                    // has dropped it.
                    let flush = async {
                        while let Some(ToSession::Frame(f) | ToSession::Removed(f)) = seat.frames.recv().await {
                            self.transport.send(f).await?;
                        }
                        std::io::Result::Ok(())
                    };
                    if let Ok(r) = tokio::time::timeout(LEAVE_FLUSH, flush).await {
                        r?;
                    }
                }
                self.transport.send(ServerMsg::Left { reference }.encode()).await?;
            }
        }
        Ok(Ok(()))
    }
}

/// A request the session refused, as the player will see it.
struct Refusal {
    error: ProtocolError,
    reason: Option<String>,
}

impl Refusal {
    fn new(code: ErrorCode, message: &str) -> Self {
        Self {
            error: ProtocolError::new(code, message),
            reason: None,
        }
    }
}

/// `part` as a zero-copy slice of `whole` when it lies inside it (as a
/// parsed field of the frame does), else a copy.
fn subslice(whole: &Bytes, part: &str) -> Bytes {
    let (start, end) = (whole.as_ptr() as usize, whole.as_ptr() as usize + whole.len());
    let p = part.as_ptr() as usize;
    if p >= start && p + part.len() <= end {
        whole.slice_ref(part.as_bytes())
    } else {
        Bytes::copy_from_slice(part.as_bytes())
    }
}
