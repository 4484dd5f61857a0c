//! One player connection: reads requests, talks to at most one room at a
//! time, writes the room's frames back, and keeps the connection honest
//! (heartbeats, idle timeout, rate limit, write timeout). Transport-agnostic.

mod control;
mod liveness;
pub mod rate;
mod resume;
mod seat;

use control::{Control, ControlTx, Controls};
use liveness::{Due, Liveness};
pub use rate::TokenBucket;
pub use resume::Resumes;

use crate::auth::Auth;
use crate::config::NetConfig;
use crate::net::admission::ConnectionPermit;
use crate::net::{Inbound, Transport};
use crate::protocol::{self, ErrorCode, ProtocolError, Request, ServerMsg};
use crate::room::{JoinError, PlayerId, Rooms, ToSession};
use bytes::Bytes;
use rate::SharedAllowance;
pub(crate) use seat::Seat;
use serde_json::value::RawValue;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

/// How long `leave` waits for the room to flush frames already queued for
/// the player before answering `left` anyway.
const LEAVE_FLUSH: Duration = Duration::from_secs(5);

/// How long a dead connection's last requests are looked for.
const SALVAGE_TIME: Duration = Duration::from_millis(50);

/// How long a slow consumer's `slow_consumer` frame may take to write: it
/// gets through only if the socket takes it about at once.
const SLOW_CONSUMER_GOODBYE: Duration = Duration::from_millis(200);

/// Room frames written before one flush.
const MAX_BATCH: usize = 64;

const SHUTDOWN_MESSAGE: &str = "the host is shutting down; reconnect later";

/// The `server` string of `welcome`.
pub const SERVER: &str = concat!("respawn/", env!("CARGO_PKG_VERSION"));

/// What every session shares.
pub struct Sessions {
    /// The rooms players join.
    pub rooms: Arc<Rooms>,
    /// Seats kept for dropped players.
    pub resumes: Arc<Resumes>,
    /// Limits and timeouts of connections.
    pub net: NetConfig,
    /// Every live session's control channel.
    controls: Controls,
    next_player: AtomicU64,
    /// Rooms one connection may create: per second, burst.
    room_creations: (f64, f64),
    /// Every seat's replay buffer together (`net.replay_budget_mib`).
    replay_budget: Arc<crate::budget::Budget>,
    /// Tickets, bans and per-user limits.
    pub auth: Arc<Auth>,
}

impl Sessions {
    /// Shared state for the sessions of one host.
    /// Fails only without the operating system's random source, which
    /// resume tokens need.
    /// Player ids start at `first_player` (above every id the database
    /// has seen, so a restarted host never reuses one).
    pub fn new(rooms: Arc<Rooms>, net: NetConfig, first_player: u64, auth: Arc<Auth>) -> io::Result<Arc<Self>> {
        let room_creations = (
            f64::from(rooms.config.rooms.create_per_minute) / 60.0,
            f64::from(rooms.config.rooms.create_burst),
        );
        Ok(Arc::new(Self {
            room_creations,
            replay_budget: crate::budget::Budget::new(net.replay_budget_mib << 20),
            // A resume waits for a live holder as long as one of its
            // writes may take, and a little more.
            resumes: Resumes::new(net.resume_grace(), net.write_timeout() + Duration::from_secs(1))?,
            rooms,
            net,
            controls: Controls::default(),
            next_player: AtomicU64::new(first_player.max(1)),
            auth,
        }))
    }

    /// Above every player id handed out so far.
    pub fn next_player(&self) -> u64 {
        self.next_player.load(Ordering::Relaxed)
    }

    /// New players get ids above `player`: a room adopted from another
    /// node has its players' ids, which this node's must not repeat.
    pub fn reserve_players_above(&self, player: u64) {
        self.next_player.fetch_max(player.saturating_add(1), Ordering::Relaxed);
    }

    /// Parks the seats of rooms recovered at start until their players
    /// resume (or the grace period ends and they leave).
    pub fn park_recovered(
        &self,
        seats: Vec<crate::room::RecoveredSeat>,
        admission: &Arc<crate::net::admission::Admission>,
    ) {
        for s in seats {
            let Some(handle) = self.rooms.handle(&s.game, &s.room) else {
                continue;
            };
            let mut seat = Seat::new(
                handle,
                s.frames,
                s.game,
                s.room,
                self.net.outbound_queue,
                self.replay_budget.clone(),
            )
            .recovered(s.seq, &s.missed);
            // A user banned since keeps no seat.
            let banned = s.user.as_deref().is_some_and(|u| self.auth.bans.check(u).is_some());
            seat.user = s.user;
            match admission.park_recovered().filter(|_| !banned) {
                Some(place) => self.resumes.park_recovered(s.token_hash, s.player, seat, place),
                None => {
                    let player = s.player;
                    tokio::spawn(async move { seat.leave(player).await });
                }
            }
        }
    }

    /// Tells every live session, and every one that starts from now on,
    /// that the host is shutting down.
    pub fn shutdown(&self) {
        self.controls.shutdown();
    }

    /// Whether the host is shutting down.
    pub fn closing(&self) -> bool {
        self.controls.closing()
    }
}

/// Whether the connection goes on after a step, and why not.
enum Flow {
    Continue,
    Close(End),
}

/// Why a connection ended, which decides what happens to its seat.
enum End {
    /// Lost or timed out: the seat is kept for a resume.
    Dropped,
    /// The player or the host ended it: the seat is given up.
    Done,
    /// Another connection took the seat.
    Superseded,
    /// The player stopped reading: the seat is given up and the
    /// connection reset, with what was queued for it discarded.
    Aborted,
}

/// A player's connection and its place in a room.
pub struct Session<T: Transport> {
    transport: T,
    hub: Arc<Sessions>,
    player: PlayerId,
    token: String,
    connection: u64,
    control_tx: ControlTx,
    control_rx: crate::mailbox::Receiver<Control>,
    seat: Option<Seat>,
    bucket: TokenBucket,
    /// Rooms this connection may still create.
    creations: TokenBucket,
    /// The joins and frames the player's user may still make over all its
    /// connections, once it joined with a ticket.
    user_allowance: Option<SharedAllowance>,
    /// The connection's place, with its source address.
    permit: ConnectionPermit,
    liveness: Liveness,
    /// Fires at the liveness deadline. One timer, re-armed only when it
    /// fires: hearing from the player just moves `liveness.heard`, so a
    /// busy connection arms no timer per frame.
    timer: Pin<Box<Sleep>>,
    /// Room frames written since everything else last had a turn.
    room_streak: usize,
    /// The streak reached a full batch: the next turn looks at everything
    /// else first.
    others_first: bool,
}

impl<T: Transport> Session<T> {
    /// A session for an admitted player connection, with a fresh player
    /// id.
    pub fn new(transport: T, hub: Arc<Sessions>, permit: ConnectionPermit) -> Self {
        let player = hub.next_player.fetch_add(1, Ordering::Relaxed);
        let (control_tx, control_rx) = crate::mailbox::unbounded();
        let token = hub.resumes.register(player, control_tx.clone());
        let connection = hub.controls.enlist(control_tx.clone());
        let now = Instant::now();
        Self {
            transport,
            player,
            token,
            connection,
            control_tx,
            control_rx,
            seat: None,
            bucket: TokenBucket::new(hub.net.rate_per_sec, hub.net.rate_burst, now.into_std()),
            creations: TokenBucket::with_rate(hub.room_creations.0, hub.room_creations.1, now.into_std()),
            user_allowance: None,
            permit,
            liveness: Liveness::new(now, hub.net.heartbeat(), hub.net.idle_timeout()),
            timer: Box::pin(tokio::time::sleep_until(
                now + hub.net.heartbeat().min(hub.net.idle_timeout()),
            )),
            room_streak: 0,
            others_first: false,
            hub,
        }
    }

    /// This connection's player id.
    pub fn player(&self) -> PlayerId {
        self.player
    }

    /// Serves the player until they disconnect; then parks or gives up the
    /// seat.
    ///
    /// Not an `async fn`: one moves its arguments into the future and then
    /// into the body's own locals, which would hold the whole session
    /// twice in every connection's task.
    #[allow(clippy::manual_async_fn)] // on purpose: see above
    pub fn run(mut self) -> impl Future<Output = ()> {
        async move {
            // The target it had when the server logged it.
            tracing::debug!(target: "respawn::server", "player connected");
            let end = self.serve().await;
            // Built apart from its await: a temporary of the await's
            // statement would keep room for the unboxed future (a whole
            // session) in this one.
            let finish = Box::pin(self.finish(end));
            finish.await;
            tracing::debug!(target: "respawn::server", "player disconnected");
        }
    }

    /// The connection's life, from the welcome to its end.
    async fn serve(&mut self) -> End {
        let welcome = ServerMsg::Welcome {
            protocol: protocol::PROTOCOL_VERSION,
            server: SERVER,
            player: self.player,
            resume: &self.token,
            idle_timeout_ms: self.hub.net.idle_timeout_ms,
            resume_grace_ms: self.hub.net.resume_grace_ms,
        }
        .encode();
        match Box::pin(self.send(welcome)).await {
            Ok(()) => loop {
                match self.step().await {
                    Ok(Flow::Continue) => {}
                    Ok(Flow::Close(end)) => break end,
                    // A full queue at shutdown is the shutdown's last word
                    // not fitting: say goodbye rather than cut the player.
                    Err(e) if is_overflow(&e) && self.hub.rooms.closing() => {
                        self.seat = None;
                        if let Flow::Close(end) = Box::pin(self.say_goodbye()).await {
                            break end;
                        }
                    }
                    Err(e) if is_overflow(&e) => break Box::pin(self.cut_slow_consumer()).await,
                    Err(e) => {
                        tracing::debug!(player = self.player, "connection lost: {e}");
                        Box::pin(self.salvage()).await;
                        break End::Dropped;
                    }
                }
            },
            Err(_) => End::Dropped,
        }
    }

    /// After the connection's end: the seat parked for a resume or given
    /// up, the take-over channel closed, the socket closed (boxed by
    /// `run`, so a live connection's task does not carry it).
    async fn finish(mut self, end: End) {
        let resumes = self.hub.resumes.clone();
        let aborted = matches!(end, End::Aborted);
        match (end, self.seat.take()) {
            (End::Dropped, Some(seat)) if !self.hub.closing() => match self.permit.admission().park(self.permit.ip()) {
                Some(place) => resumes.park(&self.token, self.player, seat, place),
                // Too many seats kept already, in total or for this address.
                None => {
                    resumes.forget(&self.token);
                    seat.leave(self.player).await;
                }
            },
            (_, Some(seat)) => {
                resumes.forget(&self.token);
                seat.leave(self.player).await;
            }
            (End::Superseded, None) => {}
            (_, None) => resumes.forget(&self.token),
        }
        // Only now stop listening for take-overs: a resume racing with this
        // end finds the seat parked.
        self.hub.controls.delist(self.connection);
        self.control_rx.close();
        // Requests that came in meanwhile are dropped unanswered, so the
        // resume behind each looks for the parked seat at once.
        while self.control_rx.try_recv().is_ok() {}
        // Closing flushes; a player who stopped reading gets no longer
        // than any other write.
        if !aborted {
            let _ = tokio::time::timeout(self.hub.net.write_timeout(), self.transport.close()).await;
        }
    }

    /// The connection is dead (a write failed) or given up (another
    /// connection resumed its seat), but requests the player sent before
    /// may still be readable. Messages among them go to the room (their
    /// replies wait in the seat for the resume); nothing is written.
    /// Bounded in frames and time.
    async fn salvage(&mut self) {
        if self.seat.is_none() {
            return;
        }
        let until = Instant::now() + SALVAGE_TIME;
        for _ in 0..self.hub.net.outbound_queue {
            let inbound = match tokio::time::timeout_at(until, self.transport.recv()).await {
                Ok(Some(Ok(inbound))) => inbound,
                _ => return,
            };
            // The same limits as a live connection's frames.
            let Ok(frame) = self.screen(inbound, Instant::now()) else {
                continue;
            };
            let Some(seat) = &self.seat else {
                return;
            };
            match protocol::parse_request(&frame) {
                Ok(Request::Message { data, reference }) => {
                    let payload = subslice(&frame, data.get());
                    let reference = reference.map(RawValue::to_owned);
                    let forwarded = tokio::time::timeout_at(until, seat.room.message(self.player, payload, reference));
                    if !matches!(forwarded.await, Ok(Ok(()))) {
                        return;
                    }
                }
                Ok(Request::Leave { .. }) => {
                    if let Some(seat) = self.seat.take() {
                        let _ = tokio::time::timeout_at(until, seat.leave(self.player)).await;
                    }
                    return;
                }
                _ => {}
            }
        }
    }

    /// Writes a frame, or fails if the player does not read it in time
    /// (or, seated, its room gives the seat up meanwhile).
    async fn send(&mut self, frame: Utf8Bytes) -> io::Result<()> {
        let overflow = self.seat.as_ref().map(|s| &s.overflow);
        until(self.hub.net.write_timeout(), overflow, self.transport.send(frame)).await
    }

    /// Queues a frame to write with the next flush (bounded like a send).
    async fn feed(&mut self, frame: Utf8Bytes) -> io::Result<()> {
        let overflow = self.seat.as_ref().map(|s| &s.overflow);
        until(self.hub.net.write_timeout(), overflow, self.transport.feed(frame)).await
    }

    /// Writes what was fed, or fails if the player does not read it in time.
    async fn flush(&mut self) -> io::Result<()> {
        let overflow = self.seat.as_ref().map(|s| &s.overflow);
        until(self.hub.net.write_timeout(), overflow, self.transport.flush()).await
    }

    /// The room gave this player up because its queue overflowed: what is
    /// queued is discarded, the player is told why if the socket still
    /// takes a frame at once, and the connection is reset so the kernel
    /// drops its unsent bytes too.
    async fn cut_slow_consumer(&mut self) -> End {
        self.seat = None;
        tracing::debug!(player = self.player, "slow consumer cut off");
        crate::metrics::METRICS.slow_consumers.inc();
        let err = ProtocolError::new(
            ErrorCode::SlowConsumer,
            "too many undelivered frames; the connection is closed",
        );
        let goodbye = self.transport.send(protocol::error_frame(&err, None, None));
        let _ = crate::bounded::bounded(goodbye, || Instant::now() + SLOW_CONSUMER_GOODBYE).await;
        self.transport.abort();
        End::Aborted
    }

    /// Tells the player the host is shutting down (best effort) and ends
    /// the connection.
    async fn say_goodbye(&mut self) -> Flow {
        let bye = ServerMsg::Shutdown {
            message: SHUTDOWN_MESSAGE,
        };
        let _ = self.send(bye.encode()).await;
        Flow::Close(End::Done)
    }

    /// The timer fired: time the connection out, or ping it, or (it heard
    /// from the player since it was armed) just re-arm it.
    async fn on_timer(&mut self) -> io::Result<Flow> {
        let now = Instant::now();
        match self.liveness.due(now) {
            Due::Idle => {
                let err = ProtocolError::new(
                    ErrorCode::IdleTimeout,
                    format!(
                        "nothing received for {} ms; send `ping` to stay connected",
                        self.hub.net.idle_timeout_ms
                    ),
                );
                let _ = self.reply_error(&err, None, None).await;
                return Ok(Flow::Close(End::Dropped));
            }
            Due::Ping => {
                self.liveness.pinged(now);
                let overflow = self.seat.as_ref().map(|s| &s.overflow);
                until(self.hub.net.write_timeout(), overflow, self.transport.heartbeat()).await?;
            }
            Due::Nothing => {}
        }
        let deadline = self.liveness.deadline();
        self.timer.as_mut().reset(deadline);
        Ok(Flow::Continue)
    }

    async fn step(&mut self) -> io::Result<Flow> {
        // After a full batch of room frames the others get a turn first,
        // so a busy room cannot hold up the player's requests, a resume's
        // take-over, the shutdown or the liveness timer.
        if std::mem::take(&mut self.others_first) {
            tokio::select! {
                biased;
                Some(control) = self.control_rx.recv() => return Box::pin(self.on_control(control)).await,
                inbound = self.transport.recv() => return Box::pin(self.on_inbound(inbound)).await,
                () = self.timer.as_mut() => return Box::pin(self.on_timer()).await,
                () = std::future::ready(()) => {}
            }
        }
        let from_room = async {
            match self.seat.as_mut() {
                Some(seat) => seat.next().await,
                None => std::future::pending().await,
            }
        };
        // Biased: most wake-ups are room frames, so after the control
        // channel (rarely ready, cheap to look at) their branch comes
        // first and the others are polled only when it has nothing.
        tokio::select! {
            biased;
            Some(control) = self.control_rx.recv() => Box::pin(self.on_control(control)).await,
            out = from_room => self.on_room_frame(out).await,
            // Boxed, like every path but the room's frames: a task's future
            // is as large as the largest state it can reach, and the
            // player's requests (one per message, not per frame), the
            // timer and the control channel would make it several KiB for
            // every connection.
            inbound = self.transport.recv() => Box::pin(self.on_inbound(inbound)).await,
            () = self.timer.as_mut() => Box::pin(self.on_timer()).await,
        }
    }

    async fn on_inbound(&mut self, inbound: Option<io::Result<Inbound>>) -> io::Result<Flow> {
        match inbound {
            Some(Ok(frame)) => {
                let now = Instant::now();
                self.liveness.heard(now);
                self.on_frame(frame, now).await
            }
            Some(Err(e)) => {
                tracing::debug!(player = self.player, "connection error: {e}");
                Ok(Flow::Close(End::Dropped))
            }
            None => Ok(Flow::Close(End::Dropped)),
        }
    }

    async fn on_control(&mut self, control: Control) -> io::Result<Flow> {
        let takeover = match control {
            Control::Takeover(takeover) => *takeover,
            Control::Shutdown => {
                return Ok(self.say_goodbye().await);
            }
        };
        // The resume behind it gave up waiting already: nothing to do.
        if takeover.reply.is_closed() {
            return Ok(Flow::Continue);
        }
        // Nothing to hand over (or not the seat asked for: a second join
        // of this user wants its seat in one room): this connection goes
        // on, the take-over fails.
        let wanted = |seat: &Seat| {
            takeover
                .room
                .as_ref()
                .is_none_or(|(g, r)| (&seat.game, &seat.room_name) == (g, r))
        };
        if !self.seat.as_ref().is_some_and(wanted) {
            // This connection keeps its token (the one it has now: it may
            // have resumed another seat since the request was sent).
            self.hub.resumes.relist(
                &crate::storage::token_hash(&self.token),
                self.player,
                self.control_tx.clone(),
            );
            let _ = takeover.reply.send(None);
            return Ok(Flow::Continue);
        }
        // What this connection got before it was given up still counts: a
        // client that cut it and resumed at once has its last requests here.
        self.salvage().await;
        match takeover.reply.send(self.seat.take()) {
            Ok(()) => {
                let err = ProtocolError::new(ErrorCode::Superseded, "another connection resumed this seat");
                let _ = self.reply_error(&err, None, None).await;
                Ok(Flow::Close(End::Superseded))
            }
            // The resume gave up waiting: keep the seat.
            Err(seat) => {
                self.seat = seat;
                Ok(Flow::Continue)
            }
        }
    }

    async fn on_room_frame(&mut self, out: Option<ToSession>) -> io::Result<Flow> {
        match out {
            // Room frames come only while seated (`step` reads them from
            // the seat), so there is always a seat to number them.
            // Everything the room has queued goes out with one flush.
            Some(ToSession::Frame(frame)) => {
                // One deadline for the whole batch: a reader that takes
                // each frame just in time cannot stretch a turn beyond it.
                let deadline = Instant::now() + self.hub.net.write_timeout();
                if let Some(seat) = self.seat.as_mut() {
                    if seat.given_up() {
                        return Err(overflowed());
                    }
                    let mut next = Some(frame);
                    let mut batch = 0;
                    while let Some(frame) = next.take() {
                        let frame = seat.replay.stamp(&frame);
                        until(deadline, Some(&seat.overflow), self.transport.feed(frame)).await?;
                        batch += 1;
                        if batch < MAX_BATCH {
                            next = seat.try_next_frame();
                        }
                    }
                    // However the frames come (a full batch, or a few at
                    // every wake-up), the rest gets a turn every
                    // MAX_BATCH of them.
                    self.room_streak += batch;
                    if self.room_streak >= MAX_BATCH {
                        self.room_streak = 0;
                        self.others_first = true;
                    }
                    until(deadline, Some(&seat.overflow), self.transport.flush()).await?;
                }
            }
            // A reply outside the room's numbered story.
            Some(ToSession::Notice(frame)) => Box::pin(self.send(frame)).await?,
            // A last word (kicked, the room closed) ends the seat (boxed:
            // rare, and it reads the player's requests first).
            Some(ToSession::Removed(frame)) => return Box::pin(self.on_removed(frame)).await,
            // The room moved to another node: the seat is that node's
            // now (parked there for a resume), nothing is kept here.
            Some(ToSession::Moved(frame)) => {
                self.seat = None;
                let _ = Box::pin(self.send(frame)).await;
                return Ok(Flow::Close(End::Done));
            }
            // The room has saved its state and closed; the seat is gone
            // with it, without the game seeing the player leave. (A full
            // queue may have kept the last word from arriving.)
            Some(ToSession::Shutdown) | None if self.hub.rooms.closing() => {
                self.seat = None;
                return Ok(Box::pin(self.say_goodbye()).await);
            }
            // The room dropped our queue without a last word: it was full.
            Some(ToSession::Shutdown) | None => return Err(overflowed()),
        }
        Ok(Flow::Continue)
    }

    /// The room's last word for this seat (kicked, the room closed) ends
    /// the seat, unless the connection is already gone: then the seat is
    /// parked with the last word still in it, for the resume to deliver.
    /// The requests the player sent before are handled first, in order.
    async fn on_removed(&mut self, frame: Utf8Bytes) -> io::Result<Flow> {
        loop {
            let polled = crate::bounded::poll_once(std::pin::pin!(self.transport.recv())).await;
            match polled {
                Poll::Pending => break,
                Poll::Ready(Some(Ok(inbound))) => {
                    if let Flow::Close(end) = self.on_inbound(Some(Ok(inbound))).await? {
                        return Ok(Flow::Close(end));
                    }
                }
                Poll::Ready(_) => {
                    if let Some(seat) = self.seat.as_mut() {
                        seat.put_back(ToSession::Removed(frame));
                    }
                    return Ok(Flow::Close(End::Dropped));
                }
            }
        }
        if let Some(mut seat) = self.seat.take() {
            self.send(seat.replay.stamp(&frame)).await?;
        }
        Ok(Flow::Continue)
    }

    /// A frame's bytes if it is within the size and rate limits, or the
    /// error that refuses it (`None` for a heartbeat: nothing to do).
    fn screen(&mut self, frame: Inbound, now: Instant) -> Result<Bytes, Option<ProtocolError>> {
        let max = self.hub.net.max_message_bytes;
        let bytes = match frame {
            Inbound::Heartbeat => return Err(None),
            Inbound::Data(bytes) if bytes.len() <= max => bytes,
            Inbound::Data(_) | Inbound::TooLarge { .. } => {
                return Err(Some(ProtocolError::new(
                    ErrorCode::MessageTooLarge,
                    format!("messages are at most {max} bytes"),
                )));
            }
        };
        let now = now.into_std();
        if !self.bucket.take(now) {
            return Err(Some(ProtocolError::new(
                ErrorCode::RateLimited,
                format!(
                    "more than {} frames per second (burst {}); this one was dropped",
                    self.hub.net.rate_per_sec, self.hub.net.rate_burst
                ),
            )));
        }
        if !crate::lock(self.permit.allowance()).frame(now) {
            return Err(Some(ProtocolError::new(
                ErrorCode::RateLimited,
                format!(
                    "your address sent more than {} frames per second (burst {}); this one was dropped",
                    self.hub.net.address_rate_per_sec, self.hub.net.address_rate_burst
                ),
            )));
        }
        if let Some(user) = &self.user_allowance
            && !crate::lock(user).frame(now)
        {
            let auth = &self.hub.auth.config;
            return Err(Some(ProtocolError::new(
                ErrorCode::RateLimited,
                format!(
                    "your account sent more than {} frames per second (burst {}) over all its connections; \
                     this one was dropped",
                    auth.user_rate_per_sec, auth.user_rate_burst
                ),
            )));
        }
        Ok(bytes)
    }

    async fn on_frame(&mut self, frame: Inbound, now: Instant) -> io::Result<Flow> {
        let bytes = match self.screen(frame, now) {
            Ok(bytes) => bytes,
            Err(refusal) => {
                if let Some(err) = refusal {
                    self.reply_error(&err, None, None).await?;
                }
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
            Err(err) => {
                let reference = protocol::reference_of(&bytes);
                self.reply_error(&err, None, reference.as_deref()).await?
            }
        }
        Ok(Flow::Continue)
    }

    /// Keeps the seat under this connection's new token, so a resume
    /// after a restart finds it; under `strict`, before the player learns
    /// the token.
    async fn save_seat(&self, seat: &Seat) {
        let Some(store) = &self.hub.rooms.store else { return };
        if !store.level().checkpoints() {
            return;
        }
        let op = crate::storage::Op::Seat(crate::storage::StoredSeat {
            key: crate::storage::RoomRef {
                game: seat.game.clone(),
                room: seat.room_name.clone(),
            },
            player: self.player,
            token_hash: crate::storage::token_hash(&self.token),
        });
        if let Ok(ticket) = store.submit(op)
            && store.level() == crate::config::Durability::Strict
        {
            store.wait(ticket, self.hub.net.write_timeout()).await;
        }
    }

    /// A `join`: the ticket checked (when there is one, or one is
    /// required), the address's and the user's join rates, then the room.
    /// A user who already sits in the room takes that seat over.
    async fn join(
        &mut self,
        game: String,
        room: String,
        name: Option<String>,
        ticket: Option<String>,
        reference: Option<&RawValue>,
    ) -> io::Result<Result<(), Refusal>> {
        let now = std::time::Instant::now();
        if !crate::lock(self.permit.allowance()).join(now) {
            return Ok(Err(Refusal::new(
                ErrorCode::TooManyJoins,
                "too many joins from your address; try again in a minute",
            )));
        }
        let verified = match self.hub.auth.admit(ticket.as_deref(), &game, &room) {
            Ok(verified) => verified,
            Err(e) => return Ok(Err(Refusal::from(e.to_protocol()))),
        };
        // The account service's name for the player wins over the
        // request's, so nobody plays under a name a ticket did not give.
        let name = match verified.as_ref().and_then(|v| v.name.clone()).or(name) {
            Some(name) => name,
            None => {
                return Ok(Err(Refusal::new(
                    ErrorCode::BadRequest,
                    "`join` needs `name` (the ticket names no player)",
                )));
            }
        };
        if let Err(e) = protocol::check_name(&name) {
            return Ok(Err(Refusal::from(e)));
        }
        let user = verified.map(|v| crate::auth::User {
            id: v.user,
            claims: v.claims,
        });
        // The connection's frames count against the user it joins as now
        // (none without a ticket).
        self.user_allowance = user.as_ref().map(|u| self.hub.auth.allowance(&u.id));
        if let Some(allowance) = &self.user_allowance
            && !crate::lock(allowance).join(now)
        {
            return Ok(Err(Refusal::new(
                ErrorCode::TooManyJoins,
                "too many joins for your account; try again in a minute",
            )));
        }
        let (creations, permit) = (&mut self.creations, &self.permit);
        let mut may_create =
            || creations.take(std::time::Instant::now()) && permit.admission().create_room(permit.ip());
        let seat_hash = self
            .hub
            .rooms
            .store
            .as_ref()
            .map(|_| crate::storage::token_hash(&self.token));
        let joiner = crate::room::Joiner {
            player: self.player,
            name: &name,
            user: user.as_ref(),
            seat: seat_hash.as_deref(),
        };
        let joined = self.hub.rooms.join(&game, &room, joiner, &mut may_create).await;
        let (handle, joined, frames) = match joined {
            Ok(ok) => ok,
            // One seat per user: this connection takes the other's over
            // (the room named the player holding it).
            Err(JoinError::Seated(holder)) => {
                let room = (game, room);
                return match self.hub.resumes.claim_player(holder, &room).await {
                    // The new connection has seen nothing: it gets every
                    // frame the seat still keeps.
                    Some((player, seat)) => self.take_seat(player, seat, Some(0), reference).await,
                    None => Ok(Err(Refusal::new(
                        ErrorCode::AlreadyJoined,
                        "you already have a seat in this room, on a connection that could not hand it over",
                    ))),
                };
            }
            Err(JoinError::Elsewhere(node)) => {
                let msg = format!("the room {game}/{room} lives on node {}: join there", node.id);
                self.send(protocol::elsewhere_frame(&msg, &node, reference)).await?;
                return Ok(Ok(()));
            }
            Err(e) => {
                let (error, reason) = e.to_protocol();
                return Ok(Err(Refusal {
                    error,
                    reason: reason.map(str::to_owned),
                }));
            }
        };
        let msg = ServerMsg::Joined {
            game: &game,
            room: &room,
            player: self.player,
            version: &joined.version,
            user: user.as_ref().map(|u| u.id.as_str()),
            name: &name,
            reference,
        }
        .encode();
        let mut seat = Seat::new(
            handle,
            frames,
            game,
            room,
            self.hub.net.outbound_queue,
            self.hub.replay_budget.clone(),
        );
        if let Some(user) = user {
            // Banned while the join was on its way: the room may have
            // taken the kick before the player.
            if let Some(ban) = self.hub.auth.bans.check(&user.id) {
                seat.leave(self.player).await;
                return Ok(Err(Refusal::from(crate::auth::AuthError::Banned(ban).to_protocol())));
            }
            seat.user = Some(user.id);
        }
        self.seat = Some(seat);
        self.send(msg).await?;
        Ok(Ok(()))
    }

    /// Takes over a seat given up by another connection (a resume, or a
    /// second join of the same user): the player plays as the seat's
    /// player under a new token, and gets what it missed after `last_seq`.
    async fn take_seat(
        &mut self,
        player: PlayerId,
        seat: Seat,
        last_seq: Option<u64>,
        reference: Option<&RawValue>,
    ) -> io::Result<Result<(), Refusal>> {
        // Banned since the seat was joined (a kick that did not reach the
        // room, or a seat recovered from before the ban): it ends here.
        if let Some(ban) = seat.user.as_deref().and_then(|u| self.hub.auth.bans.check(u)) {
            seat.leave(player).await;
            return Ok(Err(Refusal::from(crate::auth::AuthError::Banned(ban).to_protocol())));
        }
        self.token = self.hub.resumes.rekey(&self.token, player, self.control_tx.clone());
        self.player = player;
        self.user_allowance = seat.user.as_deref().map(|u| self.hub.auth.allowance(u));
        self.save_seat(&seat).await;
        let seq = seat.replay.seq();
        let (replay, lost, rewound) = match last_seq {
            // Ahead of the room: a crash undid what it saw.
            Some(last) if last > seq => (Vec::new(), 0, last - seq),
            Some(last) => {
                let (replay, lost) = seat.replay.since(last);
                (replay, lost, 0)
            }
            None => (Vec::new(), 0, 0),
        };
        tracing::debug!(player, last_seq = ?last_seq, seq, replayed = replay.len(), lost, rewound, "seat resumed");
        crate::metrics::METRICS.resume("resumed");
        let msg = ServerMsg::Resumed {
            player,
            game: &seat.game,
            room: &seat.room_name,
            version: &seat.room.version(),
            resume: &self.token,
            replayed: replay.len(),
            lost,
            rewound,
            user: seat.user.as_deref(),
            reference,
        }
        .encode();
        self.seat = Some(seat);
        self.feed(msg).await?;
        for frame in replay {
            self.feed(frame).await?;
        }
        self.flush().await?;
        Ok(Ok(()))
    }

    async fn reply_error(
        &mut self,
        err: &ProtocolError,
        reason: Option<&str>,
        reference: Option<&RawValue>,
    ) -> io::Result<()> {
        self.send(protocol::error_frame(err, reason, reference)).await
    }

    async fn on_request(&mut self, request: Request<'_>, frame: &Bytes) -> io::Result<Result<(), Refusal>> {
        match request {
            Request::Ping { reference } => {
                self.send(ServerMsg::Pong { reference }.encode()).await?;
            }
            Request::Pong => {}
            Request::Join {
                game,
                room,
                name,
                ticket,
                reference,
            } => {
                if self.seat.is_some() {
                    return Ok(Err(Refusal::new(
                        ErrorCode::AlreadyJoined,
                        "already in a room; leave it first",
                    )));
                }
                // Boxed, like every rare request: a connection's task
                // would otherwise be as large as its largest request's
                // future for its whole life (the idle memory per player).
                return Box::pin(self.join(game, room, name, ticket, reference)).await;
            }
            Request::Resume {
                token,
                last_seq,
                reference,
            } => {
                return Box::pin(self.resume(token, last_seq, reference)).await;
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
            Request::Leave { reference } => return Box::pin(self.leave(reference)).await,
        }
        Ok(Ok(()))
    }

    /// Takes over the seat `token` names: parked here, held by another live
    /// connection here, or found elsewhere in the fleet (then the player is
    /// sent there).
    async fn resume(
        &mut self,
        token: String,
        last_seq: Option<u64>,
        reference: Option<&RawValue>,
    ) -> io::Result<Result<(), Refusal>> {
        if self.seat.is_some() {
            return Ok(Err(Refusal::new(
                ErrorCode::AlreadyJoined,
                "already in a room; resume on a fresh connection",
            )));
        }
        let mut claimed = self.hub.resumes.claim(&token).await;
        if claimed.is_none()
            && let Some(cluster) = self.hub.rooms.cluster()
        {
            match cluster.locate_seat(&crate::storage::token_hash(&token)).await {
                Ok(Some((room, crate::cluster::Place::Elsewhere(node)))) => {
                    let msg = format!(
                        "the seat's room {}/{} lives on node {}: resume there",
                        room.game, room.room, node.id
                    );
                    self.send(protocol::elsewhere_frame(&msg, &node, reference)).await?;
                    return Ok(Ok(()));
                }
                // Adopted here just now: the seat is parked.
                Ok(Some((_, crate::cluster::Place::Here))) => claimed = self.hub.resumes.claim(&token).await,
                Ok(None) => {}
                // The seat may well exist: the player must not
                // give it up and join afresh.
                Err(e) => {
                    tracing::warn!("cannot look the seat up in the fleet: {e}");
                    return Ok(Err(Refusal::new(
                        ErrorCode::StorageUnavailable,
                        "the fleet cannot find your seat right now (a node is changing hands); resume again shortly, on any node",
                    )));
                }
            }
        }
        let Some((player, seat)) = claimed else {
            crate::metrics::METRICS.resume("failed");
            return Ok(Err(Refusal::new(
                ErrorCode::ResumeFailed,
                "no seat to resume: the token is unknown or its grace period is over; join again",
            )));
        };
        self.take_seat(player, seat, last_seq, reference).await
    }

    /// Leaves the room: what it queued before it saw the leave still goes
    /// out, then `left`.
    async fn leave(&mut self, reference: Option<&RawValue>) -> io::Result<Result<(), Refusal>> {
        let Some(mut seat) = self.seat.take() else {
            return Ok(Err(Refusal::new(ErrorCode::NotJoined, "not in a room")));
        };
        if seat.room.leave(self.player).await.is_ok() {
            // Frames the room queued before it saw the leave still
            // belong to the player; the queue ends once the room
            // has dropped it.
            let flush = async {
                while let Some(frame @ (ToSession::Frame(_) | ToSession::Removed(_) | ToSession::Notice(_))) =
                    seat.next().await
                {
                    let f = match frame {
                        ToSession::Notice(f) => f,
                        ToSession::Frame(f) | ToSession::Removed(f) => seat.replay.stamp(&f),
                        ToSession::Shutdown | ToSession::Moved(_) => continue,
                    };
                    self.feed(f).await?;
                    if seat.is_empty() {
                        self.flush().await?;
                    }
                }
                self.flush().await
            };
            if let Ok(r) = tokio::time::timeout(LEAVE_FLUSH, flush).await {
                r?;
            }
        }
        self.send(ServerMsg::Left { reference }.encode()).await?;
        Ok(Ok(()))
    }
}

/// When a write must be done by: a time from now, or a fixed instant
/// shared by a batch of writes.
trait Deadline {
    fn at(self) -> Instant;
}

impl Deadline for Duration {
    fn at(self) -> Instant {
        Instant::now() + self
    }
}

impl Deadline for Instant {
    fn at(self) -> Instant {
        self
    }
}

/// Runs a write, failing it if the player has not taken it by `deadline`
/// or the room gives the seat up meanwhile (`overflow`). A write that
/// finishes at once arms no timer and looks at no signal.
async fn until(
    deadline: impl Deadline,
    overflow: Option<&CancellationToken>,
    write: impl Future<Output = io::Result<()>>,
) -> io::Result<()> {
    let mut write = std::pin::pin!(write);
    if let Poll::Ready(done) = crate::bounded::poll_once(write.as_mut()).await {
        return done;
    }
    // Boxed: allocated only for a write that waits, so the future every
    // connection holds does not carry a timer and a cancellation waiter.
    let stop = Box::pin(stopped(deadline.at(), overflow));
    tokio::select! {
        biased;
        done = write => done,
        err = stop => Err(err),
    }
}

/// Why a waiting write is given up: the player did not take it by
/// `deadline`, or the room gave the seat up (`overflow`).
async fn stopped(deadline: Instant, overflow: Option<&CancellationToken>) -> io::Error {
    let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "the player stopped reading");
    match overflow {
        Some(overflow) => tokio::select! {
            () = tokio::time::sleep_until(deadline) => timed_out(),
            () = overflow.cancelled() => overflowed(),
        },
        None => {
            tokio::time::sleep_until(deadline).await;
            timed_out()
        }
    }
}

/// The room gave the seat up for a full queue (see [`is_overflow`]).
#[derive(Debug, thiserror::Error)]
#[error("the player's queue overflowed")]
struct Overflowed;

fn overflowed() -> io::Error {
    io::Error::other(Overflowed)
}

/// Whether a failed write means the seat was given up for a full queue,
/// rather than a dead or timed-out connection.
fn is_overflow(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Overflowed>())
}

/// A request the session refused, as the player will see it.
struct Refusal {
    error: ProtocolError,
    reason: Option<String>,
}

impl From<ProtocolError> for Refusal {
    fn from(error: ProtocolError) -> Self {
        Self { error, reason: None }
    }
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
