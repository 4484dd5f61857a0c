//! The room's task: applies one input at a time to the guest and delivers
//! the guest's effects to players.

use super::registry::RoomKey;
use super::{JoinError, Joined, PlayerId, RoomCmd, Rooms, ToSession};
use crate::modules::GameModule;
use crate::protocol::{self, ErrorCode, ProtocolError, ServerMsg};
use crate::sandbox::{Effect, GuestFault, GuestInstance};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, Interval, MissedTickBehavior};

struct Member {
    outbound: mpsc::Sender<ToSession>,
    /// Kicked or too slow: receives nothing more, leaves after this batch.
    leaving: bool,
}

impl Member {
    /// Queues a frame unless the player is on the way out. A full queue
    /// makes the player leave: it is too slow to keep up.
    fn offer(&mut self, frame: ToSession) {
        if !self.leaving && self.outbound.try_send(frame).is_err() {
            self.leaving = true;
        }
    }
}

/// How long a prepared room waits for the commit-or-abort decision before
/// aborting on its own.
const SWAP_DECISION_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) struct RoomTask {
    rooms: Arc<Rooms>,
    key: RoomKey,
    id: u64,
    module: Arc<GameModule>,
    running: Arc<std::sync::Mutex<String>>,
    seed: u64,
    label: String,
    players: HashMap<PlayerId, Member>,
    last_now: u64,
    tick: Option<Interval>,
    empty_deadline: Option<Instant>,
}

/// Why the room loop stopped.
enum Stop {
    Empty,
    Fault(GuestFault),
    InboxClosed,
}

impl RoomTask {
    pub(super) fn new(
        rooms: Arc<Rooms>,
        key: RoomKey,
        id: u64,
        module: Arc<GameModule>,
        seed: u64,
        running: Arc<std::sync::Mutex<String>>,
    ) -> Self {
        let label = format!("{}/{}#{id}", key.game, key.room);
        Self {
            rooms,
            key,
            id,
            module,
            running,
            seed,
            label,
            players: HashMap::new(),
            last_now: 0,
            tick: None,
            empty_deadline: None,
        }
    }

    /// The room's clock for the next input: wall time, never going back.
    fn now(&mut self) -> u64 {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.last_now = self.last_now.max(wall);
        self.last_now
    }

    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<RoomCmd>) {
        let mut guest = match self.start().await {
            Ok(guest) => guest,
            Err(e) => {
                self.rooms.retire(&self.key, self.id);
                drain(&mut rx, &e).await;
                return;
            }
        };
        tracing::info!(room = %self.label, version = %self.module.version, seed = self.seed, "room opened");
        self.empty_deadline = Some(Instant::now() + self.rooms.config.rooms.linger());

        let stop = loop {
            let linger = async {
                match self.empty_deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let tick = async {
                match self.tick.as_mut() {
                    Some(interval) => interval.tick().await,
                    None => std::future::pending().await,
                }
            };
            let input = tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => Input::Cmd(cmd),
                    None => break Stop::InboxClosed,
                },
                _ = tick => Input::Tick,
                () = linger => break Stop::Empty,
            };
            let step = match input {
                Input::Cmd(cmd) => self.handle(&mut guest, cmd).await,
                Input::Tick => {
                    let now = self.now();
                    match guest.on_tick(now).await {
                        Ok(()) => self.settle(&mut guest).await,
                        Err(fault) => Err(Stop::Fault(fault)),
                    }
                }
            };
            if let Err(stop) = step {
                break stop;
            }
        };

        self.rooms.retire(&self.key, self.id);
        let closing = match stop {
            Stop::Empty | Stop::InboxClosed => {
                tracing::info!(room = %self.label, "room closed: empty");
                JoinError::Closed("the room closed".into())
            }
            Stop::Fault(fault) => {
                tracing::error!(room = %self.label, version = %self.module.version, kind = ?fault.kind, "guest fault, room closed: {}", fault.detail);
                let err = ProtocolError::new(
                    ErrorCode::GuestFault,
                    format!("the game failed ({:?}) and the room closed", fault.kind),
                );
                let frame = protocol::error_frame(&err, None, None);
                for (_, m) in self.players.drain() {
                    let _ = m.outbound.try_send(ToSession::Removed(frame.clone()));
                }
                JoinError::Closed("the room's game failed; try again".into())
            }
        };
        drain(&mut rx, &closing).await;
    }

    async fn start(&mut self) -> Result<GuestInstance, JoinError> {
        let now = self.now();
        let module = self.module.clone();
        let mut guest = self.instantiate(&module, now).await.map_err(|e| match e {
            StartError::NoCapacity => JoinError::NoCapacity,
            StartError::Failed(why) => JoinError::Closed(format!("the room could not start: {why}")),
        })?;
        self.apply_tick_request(&mut guest);
        Ok(guest)
    }

    /// A new instance of `module` for this room, initialised. Effects of
    /// `init` have no audience and are dropped; a tick request is kept for
    /// the caller to apply.
    async fn instantiate(&self, module: &GameModule, now: u64) -> Result<GuestInstance, StartError> {
        let rooms = &self.rooms;
        let mut guest = GuestInstance::new(&rooms.sandbox, &module.code, self.label.clone(), self.seed)
            .await
            .map_err(|e| {
                tracing::warn!(room = %self.label, version = %module.version, "cannot instantiate: {e:#}");
                if format!("{e:#}").contains("limit") {
                    StartError::NoCapacity
                } else {
                    StartError::Failed(format!("{e:#}"))
                }
            })?;
        let config = rooms.config.game_init_config(&self.key.game);
        match guest.init(now, &self.key.room, &config).await {
            Ok(Ok(())) => {}
            Ok(Err(why)) => {
                tracing::warn!(room = %self.label, version = %module.version, "init refused: {why}");
                return Err(StartError::Failed(format!("the game's init refused: {why}")));
            }
            Err(fault) => {
                tracing::error!(room = %self.label, version = %module.version, kind = ?fault.kind, "guest fault in init: {}", fault.detail);
                return Err(StartError::Failed(format!("the game's init failed ({:?})", fault.kind)));
            }
        }
        guest.take_effects().for_each(drop);
        Ok(guest)
    }

    /// Hot swap, between two inputs: snapshot the state, restore it into an
    /// instance of `module`, report, and switch only if told to commit.
    /// A room that cannot restore stays on its version and says why.
    async fn swap(
        &mut self,
        guest: &mut GuestInstance,
        module: Arc<GameModule>,
        ready: oneshot::Sender<Result<(), String>>,
        decision: oneshot::Receiver<bool>,
    ) -> Result<(), Stop> {
        if module.digest() == self.module.digest() {
            let _ = ready.send(Ok(()));
            let _ = decision.await;
            return Ok(());
        }
        let now = self.now();
        let state = match guest.snapshot(now).await {
            Ok(state) => state,
            Err(fault) => {
                let _ = ready.send(Err(format!(
                    "{}: snapshot trapped on {}",
                    self.label, self.module.version
                )));
                return Err(Stop::Fault(fault));
            }
        };
        let next = match self.prepare(&module, now, &state).await {
            Ok(next) => next,
            Err(why) => {
                tracing::warn!(room = %self.label, "cannot move to {}: {why}", module.version);
                let _ = ready.send(Err(format!("{}: {why}", self.label)));
                let _ = decision.await;
                return Ok(());
            }
        };
        if ready.send(Ok(())).is_err() {
            return Ok(());
        }
        let commit = matches!(
            tokio::time::timeout(SWAP_DECISION_TIMEOUT, decision).await,
            Ok(Ok(true))
        );
        if !commit {
            return Ok(());
        }
        let from = std::mem::replace(&mut self.module, module);
        *guest = next;
        *self.running.lock().unwrap_or_else(|p| p.into_inner()) = self.module.digest().to_owned();
        self.apply_tick_request(guest);
        tracing::info!(room = %self.label, from = %from.version, to = %self.module.version, "room migrated");
        let frame = ServerMsg::Swapped {
            from: &from.version.to_string(),
            version: &self.module.version.to_string(),
        }
        .encode();
        for m in self.players.values_mut() {
            m.offer(ToSession::Frame(frame.clone()));
        }
        self.settle(guest).await
    }

    /// An instance of `module` holding `state`, or why there cannot be one.
    async fn prepare(&self, module: &GameModule, now: u64, state: &[u8]) -> Result<GuestInstance, String> {
        let mut next = self.instantiate(module, now).await.map_err(|e| match e {
            StartError::NoCapacity => "no instance slot free".to_owned(),
            StartError::Failed(why) => why,
        })?;
        match next.restore(now, state).await {
            Ok(Ok(())) => {}
            Ok(Err(why)) => return Err(format!("{} refused the state: {why}", module.version)),
            Err(fault) => return Err(format!("restore trapped on {} ({:?})", module.version, fault.kind)),
        }
        next.take_effects().for_each(drop);
        Ok(next)
    }

    async fn handle(&mut self, guest: &mut GuestInstance, cmd: RoomCmd) -> Result<(), Stop> {
        match cmd {
            RoomCmd::Join {
                player,
                name,
                outbound,
                reply,
            } => {
                let max = self.rooms.config.rooms.max_players;
                if self.players.len() >= max {
                    let _ = reply.send(Err(JoinError::Full(max)));
                    return Ok(());
                }
                let now = self.now();
                let answer = guest.on_join(now, player, &name).await.map_err(Stop::Fault)?;
                let result = match answer {
                    Ok(()) => {
                        self.players.insert(
                            player,
                            Member {
                                outbound,
                                leaving: false,
                            },
                        );
                        self.empty_deadline = None;
                        Ok(Joined {
                            version: self.module.version.to_string(),
                        })
                    }
                    Err(rejection) => Err(JoinError::Refused {
                        code: rejection.code,
                        message: rejection.message,
                    }),
                };
                self.settle(guest).await?;
                if reply.send(result).is_err() {
                    // The session went away while joining.
                    self.remove(guest, player).await?;
                }
            }
            RoomCmd::Message {
                player,
                payload,
                reference,
            } => {
                if !self.players.contains_key(&player) {
                    // Kicked or dropped while the message was queued.
                    return Ok(());
                }
                let now = self.now();
                let answer = guest.on_message(now, player, &payload).await.map_err(Stop::Fault)?;
                self.deliver(guest);
                let reply = match (&answer, &reference) {
                    (Ok(()), Some(r)) => Some(ServerMsg::Ack { reference: r }.encode()),
                    (Ok(()), None) => None,
                    (Err(rej), r) => Some(protocol::error_frame(
                        &ProtocolError::new(ErrorCode::Rejected, rej.message.clone()),
                        Some(&rej.code),
                        r.as_deref(),
                    )),
                };
                if let Some(frame) = reply
                    && let Some(m) = self.players.get_mut(&player)
                {
                    m.offer(ToSession::Frame(frame));
                }
                self.settle(guest).await?;
            }
            RoomCmd::Leave { player } => self.remove(guest, player).await?,
            RoomCmd::Swap {
                module,
                ready,
                decision,
            } => self.swap(guest, module, ready, decision).await?,
        }
        Ok(())
    }

    /// Drops a player (its queue closes) and tells the guest.
    async fn remove(&mut self, guest: &mut GuestInstance, player: PlayerId) -> Result<(), Stop> {
        if let Some(m) = self.players.get_mut(&player) {
            m.leaving = true;
        }
        self.settle(guest).await
    }

    /// Delivers the effects of the last guest call, then lets every player
    /// marked as leaving (kicked, too slow, or gone) leave: each departure
    /// calls `on-leave`, whose effects are delivered in turn. Ends because
    /// every round removes a player.
    async fn settle(&mut self, guest: &mut GuestInstance) -> Result<(), Stop> {
        self.deliver(guest);
        while let Some(player) = self.players.iter().find(|(_, m)| m.leaving).map(|(id, _)| *id) {
            self.players.remove(&player);
            tracing::debug!(room = %self.label, player, "player left the room");
            let now = self.now();
            guest.on_leave(now, player).await.map_err(Stop::Fault)?;
            self.deliver(guest);
        }
        if self.players.is_empty() && self.empty_deadline.is_none() {
            self.empty_deadline = Some(Instant::now() + self.rooms.config.rooms.linger());
        }
        Ok(())
    }

    /// Queues the effects of the last guest call for their players.
    fn deliver(&mut self, guest: &mut GuestInstance) {
        for effect in guest.take_effects() {
            match effect {
                Effect::Send { to, payload } => {
                    if let Some(m) = self.players.get_mut(&to) {
                        m.offer(ToSession::Frame(protocol::event_frame(&payload)));
                    }
                }
                Effect::Broadcast { payload, except } => {
                    let frame = protocol::event_frame(&payload);
                    for (id, m) in &mut self.players {
                        if Some(*id) != except {
                            m.offer(ToSession::Frame(frame.clone()));
                        }
                    }
                }
                Effect::Kick { player, reason } => {
                    if let Some(m) = self.players.get_mut(&player) {
                        m.offer(ToSession::Removed(ServerMsg::Kicked { reason: &reason }.encode()));
                        m.leaving = true;
                    }
                }
            }
        }
        self.apply_tick_request(guest);
    }

    fn apply_tick_request(&mut self, guest: &mut GuestInstance) {
        let Some(ms) = guest.take_tick_request() else {
            return;
        };
        self.tick = (ms > 0).then(|| {
            let ms = ms.max(self.rooms.config.rooms.min_tick_ms);
            let period = Duration::from_millis(u64::from(ms));
            let mut interval = tokio::time::interval_at(Instant::now() + period, period);
            interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
            interval
        });
    }
}

/// Why an instance could not be made.
enum StartError {
    NoCapacity,
    Failed(String),
}

/// What woke the room.
enum Input {
    Cmd(RoomCmd),
    Tick,
}

/// After a room stops: refuse what is still queued so joiners retry a
/// fresh room.
async fn drain(rx: &mut mpsc::Receiver<RoomCmd>, why: &JoinError) {
    rx.close();
    while let Some(cmd) = rx.recv().await {
        if let RoomCmd::Join { reply, .. } = cmd {
            let _ = reply.send(Err(why.clone()));
        }
    }
}
